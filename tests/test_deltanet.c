/* tests/test_deltanet.c -- DeltaNet and gated DeltaNet (seqk_deltanet), both
 * modes, on every backend, against the float64 token loop of
 * tests/ref/ref_deltanet.c; recurrent == parallel; split == whole through the
 * state (and decoding in place); long-sequence stability; validation rules;
 * the workspace query as an upper bound. */
#include "fixtures.h"
#include "ref/ref_deltanet.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL 1e-5

typedef struct {
    int64_t B, T, H, K, V;
    int with_s0;
    const int32_t *cu;
    int64_t N;
    int64_t chunk;
    double glo, ghi;  /* log-gate range of the gated variant */
    unsigned flags;   /* SEQK_DELTANET_ALLOW_NEG_EIGVAL: beta in [0, 2] */
    int threads;      /* CPU thread count for the case (0: the default) */
} dcase;

/* Host inputs of one case, and the reference's outputs for them. */
typedef struct {
    float *q, *k, *v, *beta, *g, *s0;
    double *ro, *rs; /* o and the final state, float64 */
    size_t nq, nv, ng, ns;
} inputs;

static double case_scale(const dcase *c) { return 1.0 / sqrt((double)c->K); }

/* The random inputs of case c and the float64 reference's outputs for them
 * (gated or not, q and k L2-normalised in the kernel or not), allocated in h,
 * each array one element longer than it needs. unit_keys: keys of norm 1
 * exactly (long sequences), else tf_delta_keys. */
static void make_case(tf_arrays *h, const dcase *c, int gated, int l2, bool unit_keys, inputs *in)
{
    const int64_t N = c->cu ? c->N : c->B, rows = c->B * c->T;
    in->nq = (size_t)(rows * c->H * c->K);
    in->nv = (size_t)(rows * c->H * c->V);
    in->ng = (size_t)(rows * c->H);
    in->ns = (size_t)(N * c->H * c->K * c->V);
    in->q = tf_random(h, in->nq + 1, -1, 1);
    in->k = tf_floats(h, in->nq + 1);
    tf_delta_keys(in->k, rows * c->H, c->K, l2);
    in->v = tf_random(h, in->nv + 1, -1, 1);
    in->beta = tf_floats(h, in->ng + 1);
    tf_delta_beta(in->beta, in->ng + 1, (c->flags & SEQK_DELTANET_ALLOW_NEG_EIGVAL) != 0);
    in->g = tf_random(h, in->ng + 1, c->glo, c->ghi);
    in->s0 = tf_random(h, in->ns + 1, -0.5, 0.5);
    if (unit_keys) tf_unit_rows(in->k, rows * c->H, c->K);
    in->ro = tf_doubles(h, in->nv + 1);
    in->rs = tf_doubles(h, in->ns + 1);
    ref_deltanet(c->B, c->T, c->H, c->K, c->V, case_scale(c), l2, in->q, in->k, in->v, in->beta,
                 gated ? in->g : NULL, c->with_s0 ? in->s0 : NULL, in->ro, in->rs, c->cu, c->N);
}

/* Backend copies of the inputs and outputs of one call. */
typedef struct {
    float *q, *k, *v, *beta, *g, *s0, *o, *s1;
    int32_t *cu;
} dev;

/* Uploads the inputs into d's backend; o and s1 poisoned. */
static void upload(tf_arrays *d, const dcase *c, const inputs *in, dev *x)
{
    const int64_t N = c->cu ? c->N : c->B;
    x->q = tf_upload(d, in->q, in->nq * 4 + 4), x->k = tf_upload(d, in->k, in->nq * 4 + 4);
    x->v = tf_upload(d, in->v, in->nv * 4 + 4), x->beta = tf_upload(d, in->beta, in->ng * 4 + 4);
    x->g = tf_upload(d, in->g, in->ng * 4 + 4), x->s0 = tf_upload(d, in->s0, in->ns * 4 + 4);
    x->o = tf_poisoned(d, in->nv + 1), x->s1 = tf_poisoned(d, in->ns + 1);
    x->cu = c->cu ? tf_upload(d, c->cu, (size_t)(N + 1) * 4) : NULL;
}

static unsigned call_flags(const dcase *c, int l2)
{
    return c->flags | (l2 ? SEQK_DELTANET_L2NORM_QK : 0u);
}

static void describe(const dcase *c, int gated, int l2, const char *be, const char *mode,
                     char *buf, size_t n)
{
    snprintf(buf, n,
             "%s deltanet%s%s%s %s B=%lld T=%lld H=%lld K=%lld V=%lld chunk=%lld%s%s%s g~U[%g,%g]",
             be, gated ? " gated" : " plain", l2 ? " l2norm" : "",
             (c->flags & SEQK_DELTANET_ALLOW_NEG_EIGVAL) ? " beta<=2" : "", mode, (long long)c->B,
             (long long)c->T, (long long)c->H, (long long)c->K, (long long)c->V,
             (long long)c->chunk, c->with_s0 ? " s0" : "", c->cu ? " varlen" : "",
             c->threads ? " threads" : "", gated ? c->glo : 0.0, gated ? c->ghi : 0.0);
}

/* Both modes against the reference, and against each other. */
static void run_case(th_backend *be, const dcase *c, int gated, int l2)
{
    char what[320];
    describe(c, gated, l2, be->name, "both modes", what, sizeof what);
    if (th_skipped(be, what)) return;
    tf_arrays h = tf_arrays_on(NULL), d = tf_arrays_on(be);
    inputs in;
    make_case(&h, c, gated, l2, false, &in);
    float *out[2] = {tf_floats(&h, in.nv + 1), tf_floats(&h, in.nv + 1)};
    float *st = tf_floats(&h, in.ns + 1);
    th_set_threads(be, c->threads);
    for (int m = 0; m < 2; m++) {
        const seqk_mode mode = m ? SEQK_MODE_PARALLEL : SEQK_MODE_RECURRENT;
        describe(c, gated, l2, be->name, th_mode_name(mode), what, sizeof what);
        dev x;
        upload(&d, c, &in, &x);
        seqk_status s = seqk_deltanet(be->ctx, mode, c->B, c->T, c->H, c->K, c->V,
                                      (float)case_scale(c), call_flags(c, l2), x.q, x.k, x.v,
                                      x.beta, gated ? x.g : NULL, x.o, c->with_s0 ? x.s0 : NULL,
                                      x.s1, x.cu, c->N, c->chunk);
        if (th_check_status(s, SEQK_SUCCESS, what)) {
            tf_check_result(be, out[m], x.o, in.nv, in.ro, TOL, true, what, "o");
            tf_check_result(be, st, x.s1, in.ns, in.rs, TOL, true, what, "final state");
        } else {
            th_poison(out[m], in.nv + 1);
        }
        tf_arrays_free(&d);
    }
    th_set_threads(be, 0);
    describe(c, gated, l2, be->name, "recurrent vs parallel", what, sizeof what);
    th_check_close_f(out[0], out[1], in.nv, TOL, "%s", what);
    tf_arrays_free(&h);
}

/* ---- split == whole, and decoding in place ------------------------------------ */

/* B = 1, the tokens in the parts of tf_split_plan(s, m1, m2, decode),
 * chained through the state; compared with the reference of the whole. */
static void split_equals_whole(th_backend *be, const dcase *c, int gated, int l2, int64_t s,
                               seqk_mode m1, seqk_mode m2, int64_t decode)
{
    char what[320], mode[96];
    tf_segment seg[TF_SPLIT_MAX];
    const int nseg = tf_split_plan(c->T, s, m1, m2, decode, seg, mode, sizeof mode);
    describe(c, gated, l2, be->name, mode, what, sizeof what);
    if (th_skipped(be, what)) return;
    tf_arrays h = tf_arrays_on(NULL), d = tf_arrays_on(be);
    inputs in;
    make_case(&h, c, gated, l2, false, &in); /* c->B = 1 */
    dev x;
    upload(&d, c, &in, &x);
    const int64_t H = c->H, K = c->K, V = c->V;
    float *mid = tf_poisoned(&d, in.ns);
    seqk_status st = SEQK_SUCCESS;
    for (int i = 0; i < nseg && !st; i++) {
        const int64_t t = seg[i].t0;
        st = seqk_deltanet(be->ctx, seg[i].mode, 1, seg[i].t1 - t, H, K, V, (float)case_scale(c),
                           call_flags(c, l2), x.q + t * H * K, x.k + t * H * K, x.v + t * H * V,
                           x.beta + t * H, gated ? x.g + t * H : NULL, x.o + t * H * V,
                           i ? mid : (c->with_s0 ? x.s0 : NULL), mid, NULL, 0, c->chunk);
    }
    if (th_check_status(st, SEQK_SUCCESS, what)) {
        tf_check_result(be, tf_floats(&h, in.nv), x.o, in.nv, in.ro, TOL, false, what, "o");
        tf_check_result(be, tf_floats(&h, in.ns), mid, in.ns, in.rs, TOL, false, what,
                        "final state");
    }
    tf_arrays_free(&d);
    tf_arrays_free(&h);
}

/* ---- stability ------------------------------------------------------------------ */

/* A long sequence with unit-norm keys, beta in [0, 1]: no inf/NaN, and within
 * TOL of the reference in both modes. gate: 0 none, 1 near 0, 2 near -20. */
static void stability(th_backend *be, int gate)
{
    const dcase c = {1, 65536, 2, 16, 16, 1, NULL, 0, 64, gate == 1 ? -0.02 : -21.0,
                     gate == 1 ? 0.0 : -19.0, 0, 0};
    char what[320];
    describe(&c, gate != 0, 0, be->name, "stability T=65536", what, sizeof what);
    if (th_skipped(be, what)) return;
    tf_arrays h = tf_arrays_on(NULL), d = tf_arrays_on(be);
    inputs in;
    make_case(&h, &c, gate != 0, 0, true, &in);
    float *o = tf_floats(&h, in.nv), *sf = tf_floats(&h, in.ns);
    for (int m = 0; m < 2; m++) {
        const seqk_mode mode = m ? SEQK_MODE_PARALLEL : SEQK_MODE_RECURRENT;
        describe(&c, gate != 0, 0, be->name, m ? "stability T=65536 parallel" :
                 "stability T=65536 recurrent", what, sizeof what);
        dev x;
        upload(&d, &c, &in, &x);
        seqk_status st = seqk_deltanet(be->ctx, mode, 1, c.T, c.H, c.K, c.V,
                                       (float)case_scale(&c), 0, x.q, x.k, x.v, x.beta,
                                       gate ? x.g : NULL, x.o, x.s0, x.s1, NULL, 0, c.chunk);
        if (th_check_status(st, SEQK_SUCCESS, what)) {
            tf_check_result(be, o, x.o, in.nv, in.ro, TOL, false, what, "o");
            tf_check_result(be, sf, x.s1, in.ns, in.rs, TOL, false, what, "final state");
            th_check(tf_all_finite(o, in.nv) && tf_all_finite(sf, in.ns), "%s: no inf/NaN", what);
        }
        tf_arrays_free(&d);
    }
    tf_arrays_free(&h);
}

/* ---- workspace ------------------------------------------------------------------- */

/* The queried size is enough: a caller buffer of exactly that size runs. */
static void workspace_bound(th_backend *be, const dcase *c, int threads)
{
    char what[320];
    describe(c, 1, 1, be->name, "workspace bound", what, sizeof what);
    if (th_skipped(be, what)) return;
    th_set_threads(be, threads);
    tf_arrays h = tf_arrays_on(NULL), d = tf_arrays_on(be);
    inputs in;
    make_case(&h, c, 1, 1, false, &in);
    for (int m = 0; m < 2; m++) {
        const seqk_mode mode = m ? SEQK_MODE_PARALLEL : SEQK_MODE_RECURRENT;
        size_t bytes = 0;
        seqk_status st = seqk_deltanet_workspace_size(be->ctx, mode, c->B, c->T, c->H, c->K, c->V,
                                                      c->cu ? c->N : 0, c->chunk, &bytes);
        if (!th_check_status(st, SEQK_SUCCESS, what)) continue;
        void *buf = tf_workspace_begin(be, bytes);
        dev x;
        upload(&d, c, &in, &x);
        /* no state_out: the recurrent mode's largest workspace */
        st = seqk_deltanet(be->ctx, mode, c->B, c->T, c->H, c->K, c->V, (float)case_scale(c),
                           SEQK_DELTANET_L2NORM_QK, x.q, x.k, x.v, x.beta, x.g, x.o, x.s0, NULL,
                           x.cu, c->N, c->chunk);
        char w2[400];
        snprintf(w2, sizeof w2, "%s %s (%zu bytes)", what, th_mode_name(mode), bytes);
        th_check_status(st, SEQK_SUCCESS, w2);
        tf_workspace_end(be, buf);
        tf_arrays_free(&d);
    }
    th_set_threads(be, 0);
    tf_arrays_free(&h);
}

/* ---- validation ------------------------------------------------------------------ */

static void validation(seqk_context *ctx)
{
    enum { B = 1, T = 10, H = 2, K = 4, V = 3 };
    float q[B * T * H * K], k[B * T * H * K], v[B * T * H * V], beta[B * T * H], g[B * T * H],
        o[B * T * H * V], s[B * H * K * V], s2[2 * H * K * V];
    for (size_t i = 0; i < sizeof q / 4; i++) q[i] = k[i] = 0.1f;
    for (size_t i = 0; i < sizeof v / 4; i++) v[i] = 0.2f;
    for (size_t i = 0; i < sizeof beta / 4; i++) beta[i] = 0.5f, g[i] = -0.1f;
    const size_t no = sizeof o / 4, ns = sizeof s / 4;
#define RESET() \
    (tf_fill_untouched(o, no), tf_fill_untouched(s, ns), tf_fill_untouched(s2, sizeof s2 / 4))
#define EXPECT tf_expect_rejected
    const seqk_status INV = SEQK_ERROR_INVALID_ARGUMENT;
    const seqk_mode PAR = SEQK_MODE_PARALLEL, REC = SEQK_MODE_RECURRENT;
    const unsigned NEG = SEQK_DELTANET_ALLOW_NEG_EIGVAL;
    /* beta's range, in both modes */
    for (int m = 0; m < 2; m++) {
        const seqk_mode mode = m ? PAR : REC;
        beta[17] = 1.5f;
        RESET();
        EXPECT(seqk_deltanet(ctx, mode, B, T, H, K, V, 1, 0, q, k, v, beta, g, o, NULL, s, NULL,
                             0, 0),
               INV, "seqk_deltanet: beta[17]=1.5, must be in [0, 1] (SEQK_DELTANET_ALLOW_NEG_EIGVAL allows [0, 2])",
               "beta above 1", o, no, s, ns);
        beta[17] = 2.5f;
        RESET();
        EXPECT(seqk_deltanet(ctx, mode, B, T, H, K, V, 1, NEG, q, k, v, beta, g, o, NULL, s, NULL,
                             0, 0),
               INV, "beta[17]=2.5, must be in [0, 2]", "beta above 2 with the flag", o, no, s,
               ns);
        beta[17] = 0.5f;
        beta[3] = -0.25f;
        RESET();
        EXPECT(seqk_deltanet(ctx, mode, B, T, H, K, V, 1, NEG, q, k, v, beta, g, o, NULL, s, NULL,
                             0, 0),
               INV, "beta[3]=-0.25", "beta negative", o, no, s, ns);
        beta[3] = NAN;
        RESET();
        EXPECT(seqk_deltanet(ctx, mode, B, T, H, K, V, 1, 0, q, k, v, beta, NULL, o, NULL, s, NULL,
                             0, 0),
               INV, "beta[3]=nan", "beta NaN", o, no, s, ns);
        beta[3] = 2.0f;
        RESET();
        EXPECT(seqk_deltanet(ctx, mode, B, T, H, K, V, 1, 0, q, k, v, beta, NULL, o, NULL, s, NULL,
                             0, 0),
               INV, "beta[3]=2, must be in [0, 1]", "beta = 2 without the flag", o, no, s, ns);
        th_check_status(seqk_deltanet(ctx, mode, B, T, H, K, V, 1, NEG, q, k, v, beta, NULL, o,
                                      NULL, s, NULL, 0, 0),
                        SEQK_SUCCESS, "validation: beta = 2 with SEQK_DELTANET_ALLOW_NEG_EIGVAL");
        beta[3] = 0.5f;
    }
    RESET();
    EXPECT(seqk_deltanet(ctx, (seqk_mode)5, B, T, H, K, V, 1, 0, q, k, v, beta, g, o, NULL, s,
                         NULL, 0, 0),
           INV, "mode=5", "mode=5", o, no, s, ns);
    RESET();
    EXPECT(seqk_deltanet(ctx, PAR, B, T, 0, K, V, 1, 0, q, k, v, beta, g, o, NULL, s, NULL, 0, 0),
           INV, "H=0", "H=0", o, no, s, ns);
    RESET();
    EXPECT(seqk_deltanet(ctx, PAR, B, T, H, 2000, V, 1, 0, q, k, v, beta, g, o, NULL, s, NULL, 0,
                         0),
           SEQK_ERROR_UNSUPPORTED, "K=2000", "K too large", o, no, s, ns);
    RESET();
    EXPECT(seqk_deltanet(ctx, PAR, B, T, H, K, V, 1, 0, q, k, v, beta, g, o, NULL, s, NULL, 0,
                         4096),
           INV, "chunk=4096", "chunk=4096", o, no, s, ns);
    RESET();
    EXPECT(seqk_deltanet(ctx, PAR, B, T, H, K, V, NAN, 0, q, k, v, beta, g, o, NULL, s, NULL, 0,
                         0),
           INV, "scale=nan", "scale NaN", o, no, s, ns);
    RESET();
    EXPECT(seqk_deltanet(ctx, PAR, B, T, H, K, V, 1, 0x10, q, k, v, beta, g, o, NULL, s, NULL, 0,
                         0),
           INV, "flags=0x10", "unknown flags", o, no, s, ns);
    RESET();
    EXPECT(seqk_deltanet(ctx, PAR, B, T, H, K, V, 1, 0, NULL, k, v, beta, g, o, NULL, s, NULL, 0,
                         0),
           INV, "q is NULL", "q NULL", o, no, s, ns);
    RESET();
    EXPECT(seqk_deltanet(ctx, REC, B, T, H, K, V, 1, 0, q, k, v, NULL, g, o, NULL, s, NULL, 0, 0),
           INV, "beta is NULL", "beta NULL", o, no, s, ns);
    RESET();
    EXPECT(seqk_deltanet(ctx, PAR, B, T, H, K, V, 1, 0, q, k, v, beta, g, NULL, NULL, s, NULL, 0,
                         0),
           INV, "o is NULL", "o NULL", o, no, s, ns);
    RESET();
    EXPECT(seqk_deltanet(ctx, PAR, B, T, H, K, V, 1, 0, q, k, v, beta, g, (float *)v, NULL, s,
                         NULL, 0, 0),
           INV, "overlaps v", "o overlapping v", o, no, s, ns);
    RESET();
    EXPECT(seqk_deltanet(ctx, PAR, B, T, H, K, V, 1, 0, q, k, v, beta, g, (float *)beta, NULL, s,
                         NULL, 0, 0),
           INV, "overlaps beta", "o overlapping beta", o, no, s, ns);
    RESET();
    EXPECT(seqk_deltanet(ctx, PAR, B, T, H, K, V, 1, 0, q, k, v, beta, g, o, s2, s2 + 1, NULL, 0,
                         0),
           INV, "partially overlaps state_in", "state_out partially overlapping state_in", o, no,
           s, ns);
    const int32_t cu_bad[3] = {0, 6, 5};
    RESET();
    EXPECT(seqk_deltanet(ctx, PAR, B, T, H, K, V, 1, 0, q, k, v, beta, g, o, NULL, s2, cu_bad, 2,
                         0),
           INV, "cu_seqlens[2]=5 < cu_seqlens[1]=6", "cu_seqlens decreasing", o, no, s2,
           sizeof s2 / 4);
    const int32_t cu_end[3] = {0, 2, 4};
    RESET();
    EXPECT(seqk_deltanet(ctx, REC, B, T, H, K, V, 1, 0, q, k, v, beta, g, o, NULL, s2, cu_end, 2,
                         0),
           INV, "must equal T=10", "cu_seqlens[N] != T", o, no, s2, sizeof s2 / 4);
    RESET();
    EXPECT(seqk_deltanet(ctx, REC, 2, T / 2, H, K, V, 1, 0, q, k, v, beta, g, o, NULL, s2, cu_end,
                         2, 0),
           INV, "B=2 with cu_seqlens", "B=2 with cu_seqlens", o, no, s2, sizeof s2 / 4);
    size_t bytes = 0;
    th_check_status(seqk_deltanet_workspace_size(ctx, PAR, B, T, H, K, V, 0, 0, NULL),
                    INV, "validation: workspace size with bytes NULL");
    th_check(strstr(seqk_last_error(), "bytes is NULL") != NULL,
             "validation: workspace size message names bytes: %s", seqk_last_error());
    th_check_status(seqk_deltanet_workspace_size(ctx, PAR, B, T, H, K, V, 0, 0, &bytes),
                    SEQK_SUCCESS, "workspace size");
    /* T = 0: nothing but the state (copied) */
    RESET();
    for (size_t i = 0; i < ns; i++) s2[i] = (float)i;
    th_check_status(seqk_deltanet(ctx, PAR, B, 0, H, K, V, 1, 0, NULL, NULL, NULL, NULL, NULL,
                                  NULL, s2, s, NULL, 0, 0),
                    SEQK_SUCCESS, "T = 0");
    bool copied = true;
    for (size_t i = 0; i < ns; i++) copied &= s[i] == (float)i;
    th_check(copied, "T = 0 copies state_in to state_out");
#undef EXPECT
#undef RESET
}

int main(int argc, char **argv)
{
    th_backend *be;
    int nb = th_init(argc, argv, &be);
    th_seed(11);
    const int32_t *cu1 = tf_cu_133, *cu2 = tf_cu_91; /* empty and length-1 sequences */
    const unsigned NEG = SEQK_DELTANET_ALLOW_NEG_EIGVAL;
    const dcase cases[] = {
        /* B  T    H  K    V    s0 cu   N chunk glo    ghi flags threads */
        {1, 1, 1, 8, 8, 0, NULL, 0, 0, -0.05, 0, 0, 0},          /* T = 1 */
        {2, 1, 3, 16, 12, 1, NULL, 0, 0, -0.05, 0, 0, 0},        /* T = 1 with a state */
        {1, 37, 2, 16, 16, 1, NULL, 0, 0, -0.05, 0, 0, 0},       /* T < chunk */
        {2, 131, 3, 17, 9, 1, NULL, 0, 0, -0.5, 0, 0, 0},        /* T not a multiple, odd dims, K != V */
        {1, 150, 2, 64, 64, 1, NULL, 0, 64, -0.02, 0, 0, 0},     /* head dim 64, gates near 0 */
        {1, 150, 2, 64, 64, 1, NULL, 0, 64, -21, -19, 0, 0},     /* gates near -20 */
        {1, 130, 2, 128, 128, 1, NULL, 0, 0, -0.05, 0, 0, 0},    /* head dim 128 */
        {1, 100, 1, 64, 128, 1, NULL, 0, 32, -0.1, 0, 0, 0},     /* K != V, one head: split over V */
        {1, 100, 1, 128, 64, 1, NULL, 0, 0, -0.1, 0, 0, 0},      /* K > V, one head */
        {1, 133, 2, 24, 40, 1, cu1, 5, 32, -0.3, 0, 0, 0},       /* varlen */
        {1, 133, 1, 24, 40, 0, cu1, 5, 32, -0.3, 0, 0, 8},       /* varlen, split over V (8 threads) */
        {1, 91, 2, 20, 67, 1, cu2, 3, 16, -0.3, 0, 0, 8},        /* varlen, odd V, split */
        {4, 100, 4, 8, 8, 1, NULL, 0, 7, -1, 0, 0, 0},           /* several batches and heads */
        {1, 160, 2, 32, 48, 1, NULL, 0, 16, -0.1, 0, NEG, 0},    /* beta in [0, 2] */
        {1, 120, 1, 32, 48, 1, NULL, 0, 32, -0.1, 0, NEG, 4},    /* beta in [0, 2], split */
        {1, 64, 1, 33, 35, 1, NULL, 0, 1, -0.2, 0, 0, 0},        /* chunk 1 */
    };
    for (int i = 0; i < nb; i++)
        for (size_t j = 0; j < sizeof cases / sizeof cases[0]; j++)
            for (int gated = 0; gated < 2; gated++)
                for (int l2 = 0; l2 < 2; l2++) run_case(&be[i], &cases[j], gated, l2);
    const dcase split = {1, 150, 2, 16, 24, 1, NULL, 0, 32, -0.2, 0, 0, 0};
    const dcase split1 = {1, 150, 1, 32, 40, 1, NULL, 0, 32, -0.2, 0, 0, 0};
    for (int i = 0; i < nb; i++)
        for (int gated = 0; gated < 2; gated++) {
            split_equals_whole(&be[i], &split, gated, 1, 70, SEQK_MODE_PARALLEL,
                               SEQK_MODE_RECURRENT, 0); /* inside a chunk */
            split_equals_whole(&be[i], &split, gated, 0, 64, SEQK_MODE_PARALLEL,
                               SEQK_MODE_RECURRENT, 0); /* at a chunk boundary */
            split_equals_whole(&be[i], &split1, gated, 1, 64, SEQK_MODE_PARALLEL,
                               SEQK_MODE_PARALLEL, 5);
            split_equals_whole(&be[i], &split1, gated, 0, 45, SEQK_MODE_RECURRENT,
                               SEQK_MODE_PARALLEL, 3);
        }
    for (int i = 0; i < nb; i++)
        for (int gate = 0; gate < 3; gate++) stability(&be[i], gate);
    for (int i = 0; i < nb; i++) {
        workspace_bound(&be[i], &cases[7], 0);
        workspace_bound(&be[i], &cases[10], 8);
        workspace_bound(&be[i], &cases[12], 3);
    }
    for (int i = 0; i < nb; i++)
        if (be[i].backend == SEQK_BACKEND_CPU && be[i].ctx) validation(be[i].ctx);
    return th_finish();
}
