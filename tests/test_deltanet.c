/* tests/test_deltanet.c -- DeltaNet and gated DeltaNet (seqk_deltanet), both
 * modes, on every backend, against the float64 token loop of
 * tests/ref/ref_deltanet.c; recurrent == parallel; split == whole through the
 * state (and decoding in place); long-sequence stability; validation rules;
 * the workspace query as an upper bound. */
#include "harness.h"
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

/* Host inputs of one case. */
typedef struct {
    float *q, *k, *v, *beta, *g, *s0;
    size_t nq, nv, ng, ns;
} inputs;

/* Keys: with the in-kernel L2 norm any scale; without it, unit-norm rows
 * scaled into [0.6, 1] (the stable regime of the delta rule). */
static void make_keys(float *k, int64_t rows, int64_t K, int l2)
{
    th_fill(k, (size_t)(rows * K), -1, 1);
    if (l2) {
        for (int64_t i = 0; i < rows * K; i++) k[i] *= 3.0f;
        return;
    }
    for (int64_t r = 0; r < rows; r++) {
        double s = 0.0;
        for (int64_t i = 0; i < K; i++) s += (double)k[r * K + i] * k[r * K + i];
        const double f = th_uniform(0.6, 1.0) / sqrt(s + 1e-30);
        for (int64_t i = 0; i < K; i++) k[r * K + i] = (float)(k[r * K + i] * f);
    }
}

static void make_beta(float *beta, size_t n, int neg)
{
    const double hi = neg ? 2.0 : 1.0;
    th_fill(beta, n, 0, hi);
    for (size_t i = 0; i < n; i++) {
        if (i % 7 == 3) beta[i] = 0.0f; /* the edges of the range */
        if (i % 5 == 1) beta[i] = (float)hi;
        if (neg && i % 11 == 2) beta[i] = 1.0f;
    }
}

static void make_inputs(const dcase *c, int l2, inputs *in)
{
    const int64_t N = c->cu ? c->N : c->B, rows = c->B * c->T;
    in->nq = (size_t)(rows * c->H * c->K);
    in->nv = (size_t)(rows * c->H * c->V);
    in->ng = (size_t)(rows * c->H);
    in->ns = (size_t)(N * c->H * c->K * c->V);
    in->q = th_floats(in->nq + 1), in->k = th_floats(in->nq + 1), in->v = th_floats(in->nv + 1);
    in->beta = th_floats(in->ng + 1), in->g = th_floats(in->ng + 1), in->s0 = th_floats(in->ns + 1);
    th_fill(in->q, in->nq + 1, -1, 1);
    make_keys(in->k, rows * c->H, c->K, l2);
    th_fill(in->v, in->nv + 1, -1, 1);
    make_beta(in->beta, in->ng + 1, (c->flags & SEQK_DELTANET_ALLOW_NEG_EIGVAL) != 0);
    th_fill(in->g, in->ng + 1, c->glo, c->ghi);
    th_fill(in->s0, in->ns + 1, -0.5, 0.5);
}

static void free_inputs(inputs *in)
{
    free(in->q), free(in->k), free(in->v), free(in->beta), free(in->g), free(in->s0);
}

/* Backend copies of the inputs and outputs of one call. */
typedef struct {
    float *q, *k, *v, *beta, *g, *s0, *o, *s1;
    int32_t *cu;
} dev;

static void upload(th_backend *be, const dcase *c, const inputs *in, dev *d)
{
    const int64_t N = c->cu ? c->N : c->B;
    d->q = th_upload(be, in->q, in->nq * 4 + 4), d->k = th_upload(be, in->k, in->nq * 4 + 4);
    d->v = th_upload(be, in->v, in->nv * 4 + 4), d->beta = th_upload(be, in->beta, in->ng * 4 + 4);
    d->g = th_upload(be, in->g, in->ng * 4 + 4), d->s0 = th_upload(be, in->s0, in->ns * 4 + 4);
    d->o = th_poisoned(be, in->nv + 1), d->s1 = th_poisoned(be, in->ns + 1);
    d->cu = c->cu ? th_upload(be, c->cu, (size_t)(N + 1) * 4) : NULL;
}

static void release(th_backend *be, dev *d)
{
    th_free(be, d->q), th_free(be, d->k), th_free(be, d->v), th_free(be, d->beta);
    th_free(be, d->g), th_free(be, d->s0), th_free(be, d->o), th_free(be, d->s1);
    if (d->cu) th_free(be, d->cu);
}

static unsigned call_flags(const dcase *c, int l2)
{
    return c->flags | (l2 ? SEQK_DELTANET_L2NORM_QK : 0u);
}

static double case_scale(const dcase *c) { return 1.0 / sqrt((double)c->K); }

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

static void set_threads(th_backend *be, int n)
{
    if (be->backend == SEQK_BACKEND_CPU) seqk_context_set_threads(be->ctx, n);
}

/* Both modes against the reference, and against each other. */
static void run_case(th_backend *be, const dcase *c, int gated, int l2)
{
    char what[320];
    describe(c, gated, l2, be->name, "both modes", what, sizeof what);
    if (!be->ctx) {
        th_skip("%s: %s", what, be->skip_reason);
        return;
    }
    inputs in;
    make_inputs(c, l2, &in);
    double *ro = th_doubles(in.nv + 1), *rs = th_doubles(in.ns + 1);
    ref_deltanet(c->B, c->T, c->H, c->K, c->V, case_scale(c), l2, in.q, in.k, in.v, in.beta,
                 gated ? in.g : NULL, c->with_s0 ? in.s0 : NULL, ro, rs, c->cu, c->N);
    float *out[2] = {th_floats(in.nv + 1), th_floats(in.nv + 1)};
    float *st = th_floats(in.ns + 1);
    set_threads(be, c->threads);
    for (int m = 0; m < 2; m++) {
        const seqk_mode mode = m ? SEQK_MODE_PARALLEL : SEQK_MODE_RECURRENT;
        describe(c, gated, l2, be->name, m ? "parallel" : "recurrent", what, sizeof what);
        dev d;
        upload(be, c, &in, &d);
        seqk_status s = seqk_deltanet(be->ctx, mode, c->B, c->T, c->H, c->K, c->V,
                                      (float)case_scale(c), call_flags(c, l2), d.q, d.k, d.v,
                                      d.beta, gated ? d.g : NULL, d.o, c->with_s0 ? d.s0 : NULL,
                                      d.s1, d.cu, c->N, c->chunk);
        if (th_check_status(s, SEQK_SUCCESS, what)) {
            th_download(be, out[m], d.o, (in.nv + 1) * 4);
            th_download(be, st, d.s1, (in.ns + 1) * 4);
            th_check_close(out[m], ro, in.nv, TOL, "%s: o", what);
            th_check(isnan(out[m][in.nv]), "%s: nothing written past o", what);
            th_check_close(st, rs, in.ns, TOL, "%s: final state", what);
            th_check(isnan(st[in.ns]), "%s: nothing written past the state", what);
        } else {
            th_poison(out[m], in.nv + 1);
        }
        release(be, &d);
    }
    set_threads(be, 0);
    describe(c, gated, l2, be->name, "recurrent vs parallel", what, sizeof what);
    th_check_close_f(out[0], out[1], in.nv, TOL, "%s", what);
    free(out[0]), free(out[1]), free(st), free(ro), free(rs);
    free_inputs(&in);
}

/* ---- split == whole, and decoding in place ------------------------------------ */

/* Tokens [0, s) in mode m1 writing the state, then [s, T) in mode m2 from it,
 * with B = 1; the last `decode` tokens of the second part one at a time with
 * state_in == state_out. Compared with the reference of the whole. */
static void split_equals_whole(th_backend *be, const dcase *c, int gated, int l2, int64_t s,
                               seqk_mode m1, seqk_mode m2, int64_t decode)
{
    char what[320], mode[96];
    snprintf(mode, sizeof mode, "split at %lld (%s then %s, %lld decoded in place)", (long long)s,
             m1 == SEQK_MODE_PARALLEL ? "parallel" : "recurrent",
             m2 == SEQK_MODE_PARALLEL ? "parallel" : "recurrent", (long long)decode);
    describe(c, gated, l2, be->name, mode, what, sizeof what);
    if (!be->ctx) {
        th_skip("%s: %s", what, be->skip_reason);
        return;
    }
    inputs in;
    make_inputs(c, l2, &in);
    double *ro = th_doubles(in.nv + 1), *rs = th_doubles(in.ns + 1);
    ref_deltanet(1, c->T, c->H, c->K, c->V, case_scale(c), l2, in.q, in.k, in.v, in.beta,
                 gated ? in.g : NULL, c->with_s0 ? in.s0 : NULL, ro, rs, NULL, 0);
    dev d;
    upload(be, c, &in, &d);
    const int64_t H = c->H, K = c->K, V = c->V;
    const float scale = (float)case_scale(c);
    const unsigned fl = call_flags(c, l2);
    float *mid = th_poisoned(be, in.ns);
    /* first part */
    seqk_status st = seqk_deltanet(be->ctx, m1, 1, s, H, K, V, scale, fl, d.q, d.k, d.v, d.beta,
                                   gated ? d.g : NULL, d.o, c->with_s0 ? d.s0 : NULL, mid, NULL,
                                   0, c->chunk);
    /* second part, then the decoded tail in place in mid */
    const int64_t t2 = c->T - decode;
    if (!st && t2 > s)
        st = seqk_deltanet(be->ctx, m2, 1, t2 - s, H, K, V, scale, fl, d.q + s * H * K,
                           d.k + s * H * K, d.v + s * H * V, d.beta + s * H,
                           gated ? d.g + s * H : NULL, d.o + s * H * V, mid, mid, NULL, 0,
                           c->chunk);
    for (int64_t t = t2 > s ? t2 : s; !st && t < c->T; t++)
        st = seqk_deltanet(be->ctx, SEQK_MODE_RECURRENT, 1, 1, H, K, V, scale, fl,
                           d.q + t * H * K, d.k + t * H * K, d.v + t * H * V, d.beta + t * H,
                           gated ? d.g + t * H : NULL, d.o + t * H * V, mid, mid, NULL, 0, 0);
    if (th_check_status(st, SEQK_SUCCESS, what)) {
        float *o = th_floats(in.nv), *sf = th_floats(in.ns);
        th_download(be, o, d.o, in.nv * 4);
        th_download(be, sf, mid, in.ns * 4);
        th_check_close(o, ro, in.nv, TOL, "%s: o", what);
        th_check_close(sf, rs, in.ns, TOL, "%s: final state", what);
        free(o), free(sf);
    }
    th_free(be, mid);
    release(be, &d);
    free(ro), free(rs);
    free_inputs(&in);
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
    if (!be->ctx) {
        th_skip("%s: %s", what, be->skip_reason);
        return;
    }
    inputs in;
    make_inputs(&c, 0, &in);
    /* unit-norm keys exactly (make_keys scales them into [0.6, 1]) */
    for (int64_t r = 0; r < c.T * c.H; r++) {
        double s = 0.0;
        for (int64_t i = 0; i < c.K; i++) s += (double)in.k[r * c.K + i] * in.k[r * c.K + i];
        for (int64_t i = 0; i < c.K; i++) in.k[r * c.K + i] = (float)(in.k[r * c.K + i] / sqrt(s));
    }
    double *ro = th_doubles(in.nv), *rs = th_doubles(in.ns);
    ref_deltanet(1, c.T, c.H, c.K, c.V, case_scale(&c), 0, in.q, in.k, in.v, in.beta,
                 gate ? in.g : NULL, in.s0, ro, rs, NULL, 0);
    float *o = th_floats(in.nv), *sf = th_floats(in.ns);
    for (int m = 0; m < 2; m++) {
        const seqk_mode mode = m ? SEQK_MODE_PARALLEL : SEQK_MODE_RECURRENT;
        describe(&c, gate != 0, 0, be->name, m ? "stability T=65536 parallel" :
                 "stability T=65536 recurrent", what, sizeof what);
        dev d;
        upload(be, &c, &in, &d);
        seqk_status st = seqk_deltanet(be->ctx, mode, 1, c.T, c.H, c.K, c.V,
                                       (float)case_scale(&c), 0, d.q, d.k, d.v, d.beta,
                                       gate ? d.g : NULL, d.o, d.s0, d.s1, NULL, 0, c.chunk);
        if (th_check_status(st, SEQK_SUCCESS, what)) {
            th_download(be, o, d.o, in.nv * 4);
            th_download(be, sf, d.s1, in.ns * 4);
            bool finite = true;
            for (size_t i = 0; i < in.nv; i++) finite &= isfinite(o[i]) != 0;
            for (size_t i = 0; i < in.ns; i++) finite &= isfinite(sf[i]) != 0;
            th_check(finite, "%s: no inf/NaN", what);
            th_check_close(o, ro, in.nv, TOL, "%s: o", what);
            th_check_close(sf, rs, in.ns, TOL, "%s: final state", what);
        }
        release(be, &d);
    }
    free(o), free(sf), free(ro), free(rs);
    free_inputs(&in);
}

/* ---- workspace ------------------------------------------------------------------- */

/* The queried size is enough: a caller buffer of exactly that size runs. */
static void workspace_bound(th_backend *be, const dcase *c, int threads)
{
    char what[320];
    describe(c, 1, 1, be->name, "workspace bound", what, sizeof what);
    if (!be->ctx) {
        th_skip("%s: %s", what, be->skip_reason);
        return;
    }
    set_threads(be, threads);
    inputs in;
    make_inputs(c, 1, &in);
    for (int m = 0; m < 2; m++) {
        const seqk_mode mode = m ? SEQK_MODE_PARALLEL : SEQK_MODE_RECURRENT;
        size_t bytes = 0;
        seqk_status st = seqk_deltanet_workspace_size(be->ctx, mode, c->B, c->T, c->H, c->K, c->V,
                                                      c->cu ? c->N : 0, c->chunk, &bytes);
        if (!th_check_status(st, SEQK_SUCCESS, what)) continue;
        void *buf = NULL;
        if (bytes) buf = th_upload(be, NULL, bytes);
        seqk_context_set_workspace(be->ctx, buf, bytes);
        dev d;
        upload(be, c, &in, &d);
        /* no state_out: the recurrent mode's largest workspace */
        st = seqk_deltanet(be->ctx, mode, c->B, c->T, c->H, c->K, c->V, (float)case_scale(c),
                           SEQK_DELTANET_L2NORM_QK, d.q, d.k, d.v, d.beta, d.g, d.o, d.s0, NULL,
                           d.cu, c->N, c->chunk);
        char w2[400];
        snprintf(w2, sizeof w2, "%s %s (%zu bytes)", what, m ? "parallel" : "recurrent", bytes);
        th_check_status(st, SEQK_SUCCESS, w2);
        seqk_context_set_workspace(be->ctx, NULL, 0);
        if (buf) th_free(be, buf);
        release(be, &d);
    }
    set_threads(be, 0);
    free_inputs(&in);
}

/* ---- validation ------------------------------------------------------------------ */

static void expect(seqk_status got, seqk_status want, const char *needle, const char *rule,
                   const float *o, size_t n, const float *s, size_t ns)
{
    char what[200];
    snprintf(what, sizeof what, "validation: %s", rule);
    th_check_status(got, want, what);
    th_check(strstr(seqk_last_error(), needle) != NULL, "validation: %s: message names '%s': %s",
             rule, needle, seqk_last_error());
    bool untouched = true;
    for (size_t i = 0; i < n; i++) untouched &= o[i] == 7.0f;
    for (size_t i = 0; i < ns; i++) untouched &= s[i] == 7.0f;
    th_check(untouched, "validation: %s: outputs untouched", rule);
}

static void validation(seqk_context *ctx)
{
    enum { B = 1, T = 10, H = 2, K = 4, V = 3 };
    float q[B * T * H * K], k[B * T * H * K], v[B * T * H * V], beta[B * T * H], g[B * T * H],
        o[B * T * H * V], s[B * H * K * V], s2[2 * H * K * V];
    for (size_t i = 0; i < sizeof q / 4; i++) q[i] = k[i] = 0.1f;
    for (size_t i = 0; i < sizeof v / 4; i++) v[i] = 0.2f;
    for (size_t i = 0; i < sizeof beta / 4; i++) beta[i] = 0.5f, g[i] = -0.1f;
    const size_t no = sizeof o / 4, ns = sizeof s / 4;
#define RESET()                                                            \
    do {                                                                   \
        for (size_t i_ = 0; i_ < no; i_++) o[i_] = 7.0f;                   \
        for (size_t i_ = 0; i_ < ns; i_++) s[i_] = 7.0f;                   \
        for (size_t i_ = 0; i_ < sizeof s2 / 4; i_++) s2[i_] = 7.0f;       \
    } while (0)
    const seqk_status INV = SEQK_ERROR_INVALID_ARGUMENT;
    const seqk_mode PAR = SEQK_MODE_PARALLEL, REC = SEQK_MODE_RECURRENT;
    const unsigned NEG = SEQK_DELTANET_ALLOW_NEG_EIGVAL;
    /* beta's range, in both modes */
    for (int m = 0; m < 2; m++) {
        const seqk_mode mode = m ? PAR : REC;
        beta[17] = 1.5f;
        RESET();
        expect(seqk_deltanet(ctx, mode, B, T, H, K, V, 1, 0, q, k, v, beta, g, o, NULL, s, NULL,
                             0, 0),
               INV, "seqk_deltanet: beta[17]=1.5, must be in [0, 1] (SEQK_DELTANET_ALLOW_NEG_EIGVAL allows [0, 2])",
               "beta above 1", o, no, s, ns);
        beta[17] = 2.5f;
        RESET();
        expect(seqk_deltanet(ctx, mode, B, T, H, K, V, 1, NEG, q, k, v, beta, g, o, NULL, s, NULL,
                             0, 0),
               INV, "beta[17]=2.5, must be in [0, 2]", "beta above 2 with the flag", o, no, s,
               ns);
        beta[17] = 0.5f;
        beta[3] = -0.25f;
        RESET();
        expect(seqk_deltanet(ctx, mode, B, T, H, K, V, 1, NEG, q, k, v, beta, g, o, NULL, s, NULL,
                             0, 0),
               INV, "beta[3]=-0.25", "beta negative", o, no, s, ns);
        beta[3] = NAN;
        RESET();
        expect(seqk_deltanet(ctx, mode, B, T, H, K, V, 1, 0, q, k, v, beta, NULL, o, NULL, s, NULL,
                             0, 0),
               INV, "beta[3]=nan", "beta NaN", o, no, s, ns);
        beta[3] = 2.0f;
        RESET();
        expect(seqk_deltanet(ctx, mode, B, T, H, K, V, 1, 0, q, k, v, beta, NULL, o, NULL, s, NULL,
                             0, 0),
               INV, "beta[3]=2, must be in [0, 1]", "beta = 2 without the flag", o, no, s, ns);
        th_check_status(seqk_deltanet(ctx, mode, B, T, H, K, V, 1, NEG, q, k, v, beta, NULL, o,
                                      NULL, s, NULL, 0, 0),
                        SEQK_SUCCESS, "validation: beta = 2 with SEQK_DELTANET_ALLOW_NEG_EIGVAL");
        beta[3] = 0.5f;
    }
    RESET();
    expect(seqk_deltanet(ctx, (seqk_mode)5, B, T, H, K, V, 1, 0, q, k, v, beta, g, o, NULL, s,
                         NULL, 0, 0),
           INV, "mode=5", "mode=5", o, no, s, ns);
    RESET();
    expect(seqk_deltanet(ctx, PAR, B, T, 0, K, V, 1, 0, q, k, v, beta, g, o, NULL, s, NULL, 0, 0),
           INV, "H=0", "H=0", o, no, s, ns);
    RESET();
    expect(seqk_deltanet(ctx, PAR, B, T, H, 2000, V, 1, 0, q, k, v, beta, g, o, NULL, s, NULL, 0,
                         0),
           SEQK_ERROR_UNSUPPORTED, "K=2000", "K too large", o, no, s, ns);
    RESET();
    expect(seqk_deltanet(ctx, PAR, B, T, H, K, V, 1, 0, q, k, v, beta, g, o, NULL, s, NULL, 0,
                         4096),
           INV, "chunk=4096", "chunk=4096", o, no, s, ns);
    RESET();
    expect(seqk_deltanet(ctx, PAR, B, T, H, K, V, NAN, 0, q, k, v, beta, g, o, NULL, s, NULL, 0,
                         0),
           INV, "scale=nan", "scale NaN", o, no, s, ns);
    RESET();
    expect(seqk_deltanet(ctx, PAR, B, T, H, K, V, 1, 0x10, q, k, v, beta, g, o, NULL, s, NULL, 0,
                         0),
           INV, "flags=0x10", "unknown flags", o, no, s, ns);
    RESET();
    expect(seqk_deltanet(ctx, PAR, B, T, H, K, V, 1, 0, NULL, k, v, beta, g, o, NULL, s, NULL, 0,
                         0),
           INV, "q is NULL", "q NULL", o, no, s, ns);
    RESET();
    expect(seqk_deltanet(ctx, REC, B, T, H, K, V, 1, 0, q, k, v, NULL, g, o, NULL, s, NULL, 0, 0),
           INV, "beta is NULL", "beta NULL", o, no, s, ns);
    RESET();
    expect(seqk_deltanet(ctx, PAR, B, T, H, K, V, 1, 0, q, k, v, beta, g, NULL, NULL, s, NULL, 0,
                         0),
           INV, "o is NULL", "o NULL", o, no, s, ns);
    RESET();
    expect(seqk_deltanet(ctx, PAR, B, T, H, K, V, 1, 0, q, k, v, beta, g, (float *)v, NULL, s,
                         NULL, 0, 0),
           INV, "overlaps v", "o overlapping v", o, no, s, ns);
    RESET();
    expect(seqk_deltanet(ctx, PAR, B, T, H, K, V, 1, 0, q, k, v, beta, g, (float *)beta, NULL, s,
                         NULL, 0, 0),
           INV, "overlaps beta", "o overlapping beta", o, no, s, ns);
    RESET();
    expect(seqk_deltanet(ctx, PAR, B, T, H, K, V, 1, 0, q, k, v, beta, g, o, s2, s2 + 1, NULL, 0,
                         0),
           INV, "partially overlaps state_in", "state_out partially overlapping state_in", o, no,
           s, ns);
    const int32_t cu_bad[3] = {0, 6, 5};
    RESET();
    expect(seqk_deltanet(ctx, PAR, B, T, H, K, V, 1, 0, q, k, v, beta, g, o, NULL, s2, cu_bad, 2,
                         0),
           INV, "cu_seqlens[2]=5 < cu_seqlens[1]=6", "cu_seqlens decreasing", o, no, s2,
           sizeof s2 / 4);
    const int32_t cu_end[3] = {0, 2, 4};
    RESET();
    expect(seqk_deltanet(ctx, REC, B, T, H, K, V, 1, 0, q, k, v, beta, g, o, NULL, s2, cu_end, 2,
                         0),
           INV, "must equal T=10", "cu_seqlens[N] != T", o, no, s2, sizeof s2 / 4);
    RESET();
    expect(seqk_deltanet(ctx, REC, 2, T / 2, H, K, V, 1, 0, q, k, v, beta, g, o, NULL, s2, cu_end,
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
#undef RESET
}

int main(int argc, char **argv)
{
    th_backend *be;
    int nb = th_init(argc, argv, &be);
    th_seed(11);
    static const int32_t cu1[] = {0, 0, 1, 70, 70, 133}; /* empty and length-1 sequences */
    static const int32_t cu2[] = {0, 90, 90, 91};
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
