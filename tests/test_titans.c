/* tests/test_titans.c -- the Titans linear memory (seqk_titans), both modes,
 * on every backend, against the float64 token loop of tests/ref/ref_titans.c;
 * recurrent == parallel; split == whole through the state (splits at and
 * inside mini-batch boundaries, across modes, decoding in place);
 * long-sequence stability; validation rules; the state-size and workspace
 * queries. */
#include "fixtures.h"
#include "ref/ref_titans.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL 1e-5

typedef struct {
    int64_t B, T, H, K, V, b;
    int with_s0; /* random initial state and positions (Mhat NaN where pos = 0) */
    const int32_t *cu;
    int64_t N;
    double elo, ehi;  /* eta range */
    double alo, ahi;  /* alpha range */
    double thmax;     /* theta in [0, thmax] */
    int threads;      /* CPU thread count for the case (0: the default) */
} tcase;

static int64_t nseq(const tcase *c) { return c->cu ? c->N : c->B; }
static int64_t efl(const tcase *c) { return 3 * c->K * c->V + 8; }

/* Host inputs of one case, and (after reference) the reference's outputs. */
typedef struct {
    float *q, *k, *v, *eta, *theta, *alpha, *s0;
    double *ro, *rs; /* o and the final state, float64 */
    size_t nq, nv, ng, ns;
} inputs;

/* Gates in their ranges, with the ends of the ranges (exact 0 and 1 where
 * the range reaches them) sprinkled in. */
static void make_gates(const tcase *c, inputs *in)
{
    const size_t n = in->ng + 1;
    th_fill(in->eta, n, c->elo, c->ehi);
    th_fill(in->alpha, n, c->alo, c->ahi);
    th_fill(in->theta, n, 0, c->thmax);
    for (size_t i = 0; i < n; i++) {
        if (i % 7 == 3) in->eta[i] = (float)c->elo;
        if (i % 5 == 1) in->eta[i] = (float)c->ehi;
        if (i % 6 == 2) in->alpha[i] = (float)c->alo;
        if (i % 9 == 4) in->alpha[i] = (float)c->ahi;
        if (i % 11 == 5) in->theta[i] = 0.0f;
        if (i % 13 == 6) in->theta[i] = (float)c->thmax;
    }
}

/* A random state: M, S, Mhat in [-0.5, 0.5], pos in [0, b); where pos = 0
 * Mhat is NaN (it must not be read), the reserved floats always. */
static void make_state(const tcase *c, float *s)
{
    const int64_t KV = c->K * c->V, E = efl(c);
    for (int64_t nh = 0; nh < nseq(c) * c->H; nh++) {
        float *blk = s + nh * E;
        th_fill(blk, (size_t)(3 * KV), -0.5, 0.5);
        const int64_t pos = th_randint(0, c->b - 1);
        if (pos == 0)
            for (int64_t i = 0; i < KV; i++) blk[2 * KV + i] = NAN;
        blk[3 * KV] = (float)pos;
        for (int i = 1; i < 8; i++) blk[3 * KV + i] = NAN;
    }
}

/* The random inputs of case c, allocated in h, each array one element longer
 * than it needs. unit_keys: keys of norm 1 exactly (long sequences), else
 * tf_delta_keys. */
static void make_inputs(tf_arrays *h, const tcase *c, int l2, bool unit_keys, inputs *in)
{
    const int64_t rows = c->B * c->T;
    in->nq = (size_t)(rows * c->H * c->K);
    in->nv = (size_t)(rows * c->H * c->V);
    in->ng = (size_t)(rows * c->H);
    in->ns = (size_t)(nseq(c) * c->H * efl(c));
    in->q = tf_random(h, in->nq + 1, -1, 1);
    in->k = tf_floats(h, in->nq + 1);
    tf_delta_keys(in->k, rows * c->H, c->K, l2);
    in->v = tf_random(h, in->nv + 1, -1, 1);
    in->eta = tf_floats(h, in->ng + 1), in->theta = tf_floats(h, in->ng + 1);
    in->alpha = tf_floats(h, in->ng + 1);
    make_gates(c, in);
    in->s0 = tf_floats(h, in->ns + 1);
    make_state(c, in->s0);
    if (unit_keys) tf_unit_rows(in->k, rows * c->H, c->K);
    in->ro = in->rs = NULL;
}

static double case_scale(const tcase *c) { return 1.0 / sqrt((double)c->K); }

/* The float64 reference's o and final state for in, allocated in h. */
static void reference(tf_arrays *h, const tcase *c, int l2, inputs *in)
{
    in->ro = tf_doubles(h, in->nv + 1), in->rs = tf_doubles(h, in->ns + 1);
    ref_titans(c->B, c->T, c->H, c->K, c->V, case_scale(c), l2, c->b, in->q, in->k, in->v,
               in->eta, in->theta, in->alpha, c->with_s0 ? in->s0 : NULL, in->ro, in->rs, c->cu,
               c->N);
}

/* Backend copies of the inputs and outputs of one call. */
typedef struct {
    float *q, *k, *v, *eta, *theta, *alpha, *s0, *o, *s1;
    int32_t *cu;
} dev;

/* Uploads the inputs into d's backend; o and s1 poisoned. */
static void upload(tf_arrays *d, const tcase *c, const inputs *in, dev *x)
{
    const size_t bq = in->nq * 4 + 4, bg = in->ng * 4 + 4;
    x->q = tf_upload(d, in->q, bq), x->k = tf_upload(d, in->k, bq);
    x->v = tf_upload(d, in->v, in->nv * 4 + 4);
    x->eta = tf_upload(d, in->eta, bg), x->theta = tf_upload(d, in->theta, bg);
    x->alpha = tf_upload(d, in->alpha, bg), x->s0 = tf_upload(d, in->s0, in->ns * 4 + 4);
    x->o = tf_poisoned(d, in->nv + 1), x->s1 = tf_poisoned(d, in->ns + 1);
    x->cu = c->cu ? tf_upload(d, c->cu, (size_t)(nseq(c) + 1) * 4) : NULL;
}

static void describe(const tcase *c, int l2, const char *be, const char *mode, char *buf,
                     size_t n)
{
    snprintf(buf, n,
             "%s titans%s %s b=%lld B=%lld T=%lld H=%lld K=%lld V=%lld%s%s%s eta~U[%g,%g] "
             "alpha~U[%g,%g] theta<=%g",
             be, l2 ? " l2norm" : "", mode, (long long)c->b, (long long)c->B, (long long)c->T,
             (long long)c->H, (long long)c->K, (long long)c->V, c->with_s0 ? " s0" : "",
             c->cu ? " varlen" : "", c->threads ? " threads" : "", c->elo, c->ehi, c->alo,
             c->ahi, c->thmax);
}

static seqk_status call(th_backend *be, const tcase *c, seqk_mode mode, int l2, const dev *x,
                        const float *s_in, float *s_out)
{
    return seqk_titans(be->ctx, mode, c->B, c->T, c->H, c->K, c->V, (float)case_scale(c),
                       l2 ? SEQK_TITANS_L2NORM_QK : 0u, c->b, x->q, x->k, x->v, x->eta, x->theta,
                       x->alpha, x->o, s_in, s_out, x->cu, c->N);
}

/* Both modes against the reference, and against each other. */
static void run_case(th_backend *be, const tcase *c, int l2)
{
    char what[400];
    describe(c, l2, be->name, "both modes", what, sizeof what);
    if (th_skipped(be, what)) return;
    tf_arrays h = tf_arrays_on(NULL), d = tf_arrays_on(be);
    inputs in;
    make_inputs(&h, c, l2, false, &in);
    reference(&h, c, l2, &in);
    float *out[2] = {tf_floats(&h, in.nv + 1), tf_floats(&h, in.nv + 1)};
    float *st = tf_floats(&h, in.ns + 1);
    th_set_threads(be, c->threads);
    for (int m = 0; m < 2; m++) {
        const seqk_mode mode = m ? SEQK_MODE_PARALLEL : SEQK_MODE_RECURRENT;
        describe(c, l2, be->name, th_mode_name(mode), what, sizeof what);
        dev x;
        upload(&d, c, &in, &x);
        seqk_status s = call(be, c, mode, l2, &x, c->with_s0 ? x.s0 : NULL, x.s1);
        if (th_check_status(s, SEQK_SUCCESS, what)) {
            tf_check_result(be, out[m], x.o, in.nv, in.ro, TOL, true, what, "o");
            tf_check_result(be, st, x.s1, in.ns, in.rs, TOL, true, what, "final state");
        } else {
            th_poison(out[m], in.nv + 1);
        }
        tf_arrays_free(&d);
    }
    th_set_threads(be, 0);
    describe(c, l2, be->name, "recurrent vs parallel", what, sizeof what);
    th_check_close_f(out[0], out[1], in.nv, TOL, "%s", what);
    tf_arrays_free(&h);
}

/* ---- split == whole, and decoding in place ------------------------------------ */

/* B = 1, the tokens in the parts of tf_split_plan(s, m1, m2, decode),
 * chained through the state in place; compared with the reference of the
 * whole. */
static void split_equals_whole(th_backend *be, const tcase *c, int l2, int64_t s, seqk_mode m1,
                               seqk_mode m2, int64_t decode)
{
    char what[400], mode[128];
    tf_segment seg[TF_SPLIT_MAX];
    const int nseg = tf_split_plan(c->T, s, m1, m2, decode, seg, mode, sizeof mode);
    describe(c, l2, be->name, mode, what, sizeof what);
    if (th_skipped(be, what)) return;
    tf_arrays h = tf_arrays_on(NULL), d = tf_arrays_on(be);
    inputs in;
    make_inputs(&h, c, l2, false, &in);
    reference(&h, c, l2, &in); /* c->B = 1, no cu */
    dev x;
    upload(&d, c, &in, &x);
    const int64_t H = c->H, K = c->K, V = c->V;
    const unsigned fl = l2 ? SEQK_TITANS_L2NORM_QK : 0u;
    const float sc = (float)case_scale(c);
    seqk_status st = SEQK_SUCCESS;
    for (int i = 0; i < nseg && !st; i++) {
        const int64_t t = seg[i].t0;
        st = seqk_titans(be->ctx, seg[i].mode, 1, seg[i].t1 - t, H, K, V, sc, fl, c->b,
                         x.q + t * H * K, x.k + t * H * K, x.v + t * H * V, x.eta + t * H,
                         x.theta + t * H, x.alpha + t * H, x.o + t * H * V,
                         i ? x.s1 : (c->with_s0 ? x.s0 : NULL), x.s1, NULL, 0);
    }
    if (th_check_status(st, SEQK_SUCCESS, what)) {
        tf_check_result(be, tf_floats(&h, in.nv), x.o, in.nv, in.ro, TOL, false, what, "o");
        tf_check_result(be, tf_floats(&h, in.ns), x.s1, in.ns, in.rs, TOL, false, what,
                        "final state");
    }
    tf_arrays_free(&d);
    tf_arrays_free(&h);
}

/* ---- stability -------------------------------------------------------------------- */

/* T = 65536, unit-norm keys, gates at the ends of their ranges. The regimes
 * are those whose exact (float64) dynamics stay bounded: momentum near 1
 * without forgetting needs a small theta, and a large mini-batch with a large
 * theta takes many steps from one stale gradient and diverges in any
 * precision. */
static void stability(th_backend *be, const tcase *c)
{
    char what[400];
    describe(c, 0, be->name, "stability", what, sizeof what);
    if (th_skipped(be, what)) return;
    tf_arrays h = tf_arrays_on(NULL), d = tf_arrays_on(be);
    inputs in;
    make_inputs(&h, c, 0, true, &in);
    reference(&h, c, 0, &in); /* c->B = 1, s0, no cu */
    float *o = tf_floats(&h, in.nv), *sf = tf_floats(&h, in.ns);
    const int64_t E = efl(c);
    for (int m = 0; m < 2; m++) {
        const seqk_mode mode = m ? SEQK_MODE_PARALLEL : SEQK_MODE_RECURRENT;
        describe(c, 0, be->name, m ? "stability parallel" : "stability recurrent", what,
                 sizeof what);
        dev x;
        upload(&d, c, &in, &x);
        seqk_status st = call(be, c, mode, 0, &x, x.s0, x.s1);
        if (th_check_status(st, SEQK_SUCCESS, what)) {
            tf_check_result(be, o, x.o, in.nv, in.ro, TOL, false, what, "o");
            tf_check_result(be, sf, x.s1, in.ns, in.rs, TOL, false, what, "final state");
            bool finite = tf_all_finite(o, in.nv);
            for (int64_t nh = 0; nh < nseq(c) * c->H; nh++) /* M, S, Mhat of each head */
                finite &= tf_all_finite(sf + nh * E, (size_t)(3 * c->K * c->V));
            th_check(finite, "%s: no inf/NaN", what);
        }
        tf_arrays_free(&d);
    }
    tf_arrays_free(&h);
}

/* ---- workspace ------------------------------------------------------------------- */

/* The queried size is enough: a caller buffer of exactly that size runs
 * (without state_out: the largest workspace). */
static void workspace_bound(th_backend *be, const tcase *c, int threads)
{
    char what[400];
    describe(c, 1, be->name, "workspace bound", what, sizeof what);
    if (th_skipped(be, what)) return;
    th_set_threads(be, threads);
    tf_arrays h = tf_arrays_on(NULL), d = tf_arrays_on(be);
    inputs in;
    make_inputs(&h, c, 1, false, &in);
    for (int m = 0; m < 2; m++) {
        const seqk_mode mode = m ? SEQK_MODE_PARALLEL : SEQK_MODE_RECURRENT;
        size_t bytes = 0;
        seqk_status st = seqk_titans_workspace_size(be->ctx, mode, c->B, c->T, c->H, c->K, c->V,
                                                    c->b, c->cu ? c->N : 0, &bytes);
        if (!th_check_status(st, SEQK_SUCCESS, what)) continue;
        void *buf = tf_workspace_begin(be, bytes);
        dev x;
        upload(&d, c, &in, &x);
        st = call(be, c, mode, 1, &x, x.s0, NULL);
        char w2[500];
        snprintf(w2, sizeof w2, "%s %s (%zu bytes)", what, th_mode_name(mode), bytes);
        th_check_status(st, SEQK_SUCCESS, w2);
        tf_workspace_end(be, buf);
        tf_arrays_free(&d);
    }
    th_set_threads(be, 0);
    tf_arrays_free(&h);
}

/* ---- an empty call ---------------------------------------------------------------- */

/* T = 0 on every backend, both modes: the state passes through (Mhat = M
 * where pos = 0, the positions kept, the reserved floats written as 0), in
 * place too. */
enum { EC_H = 2, EC_K = 3, EC_V = 5, EC_E = 3 * EC_K * EC_V + 8, EC_NS = EC_H * EC_E };

static void empty_call(th_backend *be)
{
    for (int m = 0; m < 2; m++)
        for (int inplace = 0; inplace < 2; inplace++) {
            char what[200];
            snprintf(what, sizeof what, "%s titans T = 0 (%s%s) passes the state through",
                     be->name, m ? "parallel" : "recurrent", inplace ? ", in place" : "");
            if (th_skipped(be, what)) continue;
            const int64_t KV = EC_K * EC_V;
            float s0[EC_NS], s1[EC_NS];
            for (int i = 0; i < EC_NS; i++) s0[i] = (float)i;
            s0[3 * KV] = 0.0f;        /* head 0: pos 0 */
            s0[EC_E + 3 * KV] = 2.0f; /* head 1: pos 2 */
            for (int i = 1; i < 8; i++) s0[3 * KV + i] = s0[EC_E + 3 * KV + i] = NAN;
            tf_arrays d = tf_arrays_on(be);
            float *d0 = tf_upload(&d, s0, sizeof s0);
            float *d1 = inplace ? d0 : tf_poisoned(&d, EC_NS);
            const seqk_mode mode = m ? SEQK_MODE_PARALLEL : SEQK_MODE_RECURRENT;
            const seqk_status st = seqk_titans(be->ctx, mode, 1, 0, EC_H, EC_K, EC_V, 1.0f, 0, 4,
                                               NULL, NULL, NULL, NULL, NULL, NULL, NULL, d0, d1,
                                               NULL, 0);
            if (th_check_status(st, SEQK_SUCCESS, what)) {
                th_download(be, s1, d1, sizeof s1);
                bool ok = true;
                for (int64_t i = 0; i < 3 * KV; i++) {
                    const float want0 = i < 2 * KV ? s0[i] : s0[i - 2 * KV];
                    ok &= s1[i] == want0 && s1[EC_E + i] == s0[EC_E + i];
                }
                ok &= s1[3 * KV] == 0.0f && s1[EC_E + 3 * KV] == 2.0f;
                for (int i = 1; i < 8; i++)
                    ok &= s1[3 * KV + i] == 0.0f && s1[EC_E + 3 * KV + i] == 0.0f;
                th_check(ok, "%s", what);
            }
            tf_arrays_free(&d);
        }
}

/* ---- validation ------------------------------------------------------------------ */

static void validation(seqk_context *ctx)
{
    enum { B = 1, T = 10, H = 2, K = 4, V = 3, E = 3 * K * V + 8 };
    float q[B * T * H * K], k[B * T * H * K], v[B * T * H * V], eta[B * T * H],
        theta[B * T * H], alpha[B * T * H], o[B * T * H * V], s[B * H * E], s2[2 * H * E],
        sin_[B * H * E];
    for (size_t i = 0; i < sizeof q / 4; i++) q[i] = k[i] = 0.1f;
    for (size_t i = 0; i < sizeof v / 4; i++) v[i] = 0.2f;
    for (size_t i = 0; i < sizeof eta / 4; i++) eta[i] = 0.9f, theta[i] = 0.1f, alpha[i] = 0.05f;
    for (size_t i = 0; i < sizeof sin_ / 4; i++) sin_[i] = 0.0f;
    const size_t no = sizeof o / 4, ns = sizeof s / 4;
#define RESET() \
    (tf_fill_untouched(o, no), tf_fill_untouched(s, ns), tf_fill_untouched(s2, sizeof s2 / 4))
#define expect tf_expect_rejected
    const seqk_status INV = SEQK_ERROR_INVALID_ARGUMENT;
    const seqk_mode PAR = SEQK_MODE_PARALLEL, REC = SEQK_MODE_RECURRENT;
    /* the gates' ranges and the state's positions, in both modes */
    for (int m = 0; m < 2; m++) {
        const seqk_mode mode = m ? PAR : REC;
        eta[17] = 1.5f;
        RESET();
        expect(seqk_titans(ctx, mode, B, T, H, K, V, 1, 0, 4, q, k, v, eta, theta, alpha, o,
                           NULL, s, NULL, 0),
               INV, "seqk_titans: eta[17]=1.5, must be in [0, 1]", "eta above 1", o, no, s, ns);
        eta[17] = -0.25f;
        RESET();
        expect(seqk_titans(ctx, mode, B, T, H, K, V, 1, 0, 4, q, k, v, eta, theta, alpha, o,
                           NULL, s, NULL, 0),
               INV, "eta[17]=-0.25, must be in [0, 1]", "eta negative", o, no, s, ns);
        eta[17] = NAN;
        RESET();
        expect(seqk_titans(ctx, mode, B, T, H, K, V, 1, 0, 4, q, k, v, eta, theta, alpha, o,
                           NULL, s, NULL, 0),
               INV, "eta[17]=nan", "eta NaN", o, no, s, ns);
        eta[17] = 0.9f;
        alpha[3] = 1.0001f;
        RESET();
        expect(seqk_titans(ctx, mode, B, T, H, K, V, 1, 0, 4, q, k, v, eta, theta, alpha, o,
                           NULL, s, NULL, 0),
               INV, "seqk_titans: alpha[3]=1.0001, must be in [0, 1]", "alpha above 1", o, no, s,
               ns);
        alpha[3] = NAN;
        RESET();
        expect(seqk_titans(ctx, mode, B, T, H, K, V, 1, 0, 4, q, k, v, eta, theta, alpha, o,
                           NULL, s, NULL, 0),
               INV, "alpha[3]=nan", "alpha NaN", o, no, s, ns);
        alpha[3] = 0.05f;
        theta[5] = -1.0f;
        RESET();
        expect(seqk_titans(ctx, mode, B, T, H, K, V, 1, 0, 4, q, k, v, eta, theta, alpha, o,
                           NULL, s, NULL, 0),
               INV, "seqk_titans: theta[5]=-1, must be finite and >= 0", "theta negative", o, no,
               s, ns);
        theta[5] = INFINITY;
        RESET();
        expect(seqk_titans(ctx, mode, B, T, H, K, V, 1, 0, 4, q, k, v, eta, theta, alpha, o,
                           NULL, s, NULL, 0),
               INV, "theta[5]=inf, must be finite and >= 0", "theta inf", o, no, s, ns);
        theta[5] = 0.1f;
        const float badpos[] = {2.5f, -1.0f, 4.0f, NAN};
        const char *badmsg[] = {"= 2.5, must be an integer in [0, minibatch=4)", "= -1, must be",
                                "= 4, must be", "= nan, must be"};
        for (int i = 0; i < 4; i++) {
            sin_[E + 3 * K * V] = badpos[i];
            RESET();
            char rule[80];
            snprintf(rule, sizeof rule, "state_in position %g", (double)badpos[i]);
            expect(seqk_titans(ctx, mode, B, T, H, K, V, 1, 0, 4, q, k, v, eta, theta, alpha, o,
                               sin_, s, NULL, 0),
                   INV, badmsg[i], rule, o, no, s, ns);
            th_check(strstr(seqk_last_error(), "state_in position of sequence 0, head 1") != NULL,
                     "validation: %s names the sequence and head: %s", rule, seqk_last_error());
        }
        sin_[E + 3 * K * V] = 3.0f;
        th_check_status(seqk_titans(ctx, mode, B, T, H, K, V, 1, 0, 4, q, k, v, eta, theta, alpha,
                                    o, sin_, s, NULL, 0),
                        SEQK_SUCCESS, "validation: state_in position 3 with minibatch 4");
        sin_[E + 3 * K * V] = 0.0f;
    }
    eta[0] = 0.0f, eta[1] = 1.0f, alpha[0] = 0.0f, alpha[1] = 1.0f, theta[0] = 0.0f;
    RESET();
    th_check_status(seqk_titans(ctx, PAR, B, T, H, K, V, 1, 0, 4, q, k, v, eta, theta, alpha, o,
                                NULL, s, NULL, 0),
                    SEQK_SUCCESS, "validation: the ends of the gates' ranges are allowed");
    RESET();
    expect(seqk_titans(ctx, PAR, B, T, H, K, V, 1, 0, 0, q, k, v, eta, theta, alpha, o, NULL, s,
                       NULL, 0),
           INV, "seqk_titans: minibatch=0, must be in [1, 1024]", "minibatch=0", o, no, s, ns);
    RESET();
    expect(seqk_titans(ctx, REC, B, T, H, K, V, 1, 0, 2000, q, k, v, eta, theta, alpha, o, NULL,
                       s, NULL, 0),
           INV, "minibatch=2000", "minibatch=2000", o, no, s, ns);
    RESET();
    expect(seqk_titans(ctx, (seqk_mode)5, B, T, H, K, V, 1, 0, 4, q, k, v, eta, theta, alpha, o,
                       NULL, s, NULL, 0),
           INV, "mode=5", "mode=5", o, no, s, ns);
    RESET();
    expect(seqk_titans(ctx, PAR, B, T, 0, K, V, 1, 0, 4, q, k, v, eta, theta, alpha, o, NULL, s,
                       NULL, 0),
           INV, "H=0", "H=0", o, no, s, ns);
    RESET();
    expect(seqk_titans(ctx, PAR, B, T, H, 2000, V, 1, 0, 4, q, k, v, eta, theta, alpha, o, NULL,
                       s, NULL, 0),
           SEQK_ERROR_UNSUPPORTED, "K=2000", "K too large", o, no, s, ns);
    RESET();
    expect(seqk_titans(ctx, PAR, B, T, H, K, V, NAN, 0, 4, q, k, v, eta, theta, alpha, o, NULL, s,
                       NULL, 0),
           INV, "scale=nan", "scale NaN", o, no, s, ns);
    RESET();
    expect(seqk_titans(ctx, PAR, B, T, H, K, V, 1, 0x10, 4, q, k, v, eta, theta, alpha, o, NULL,
                       s, NULL, 0),
           INV, "flags=0x10", "unknown flags", o, no, s, ns);
    const struct { int which; const char *msg; } nulls[] = {
        {0, "q is NULL"}, {1, "k is NULL"}, {2, "v is NULL"}, {3, "eta is NULL"},
        {4, "theta is NULL"}, {5, "alpha is NULL"}, {6, "o is NULL"}};
    for (size_t i = 0; i < sizeof nulls / sizeof nulls[0]; i++) {
        const int w = nulls[i].which;
        RESET();
        expect(seqk_titans(ctx, i % 2 ? REC : PAR, B, T, H, K, V, 1, 0, 4, w == 0 ? NULL : q,
                           w == 1 ? NULL : k, w == 2 ? NULL : v, w == 3 ? NULL : eta,
                           w == 4 ? NULL : theta, w == 5 ? NULL : alpha, w == 6 ? NULL : o, NULL,
                           s, NULL, 0),
               INV, nulls[i].msg, nulls[i].msg, o, no, s, ns);
    }
    RESET();
    expect(seqk_titans(ctx, PAR, B, T, H, K, V, 1, 0, 4, q, k, v, eta, theta, alpha, (float *)v,
                       NULL, s, NULL, 0),
           INV, "overlaps v", "o overlapping v", o, no, s, ns);
    RESET();
    expect(seqk_titans(ctx, PAR, B, T, H, K, V, 1, 0, 4, q, k, v, eta, theta, alpha,
                       (float *)theta, NULL, s, NULL, 0),
           INV, "overlaps theta", "o overlapping theta", o, no, s, ns);
    RESET();
    expect(seqk_titans(ctx, PAR, B, T, H, K, V, 1, 0, 4, q, k, v, eta, theta, alpha, o, s2,
                       s2 + 1, NULL, 0),
           INV, "partially overlaps state_in", "state_out partially overlapping state_in", o, no,
           s, ns);
    RESET();
    expect(seqk_titans(ctx, REC, B, T, H, K, V, 1, 0, 4, q, k, v, eta, theta, alpha, o, NULL,
                       o + 1, NULL, 0),
           INV, "overlaps o", "state_out overlapping o", o, no, s, ns);
    const int32_t cu_bad[3] = {0, 6, 5};
    RESET();
    expect(seqk_titans(ctx, PAR, B, T, H, K, V, 1, 0, 4, q, k, v, eta, theta, alpha, o, NULL, s2,
                       cu_bad, 2),
           INV, "cu_seqlens[2]=5 < cu_seqlens[1]=6", "cu_seqlens decreasing", o, no, s2,
           sizeof s2 / 4);
    const int32_t cu_end[3] = {0, 2, 4};
    RESET();
    expect(seqk_titans(ctx, REC, B, T, H, K, V, 1, 0, 4, q, k, v, eta, theta, alpha, o, NULL, s2,
                       cu_end, 2),
           INV, "must equal T=10", "cu_seqlens[N] != T", o, no, s2, sizeof s2 / 4);
    RESET();
    expect(seqk_titans(ctx, REC, 2, T / 2, H, K, V, 1, 0, 4, q, k, v, eta, theta, alpha, o, NULL,
                       s2, cu_end, 2),
           INV, "B=2 with cu_seqlens", "B=2 with cu_seqlens", o, no, s2, sizeof s2 / 4);
    /* the queries */
    size_t bytes = 0, fl = 0;
    th_check_status(seqk_titans_workspace_size(ctx, PAR, B, T, H, K, V, 4, 0, NULL), INV,
                    "validation: workspace size with bytes NULL");
    th_check(strstr(seqk_last_error(), "bytes is NULL") != NULL,
             "validation: workspace size message names bytes: %s", seqk_last_error());
    th_check_status(seqk_titans_workspace_size(ctx, PAR, B, T, H, K, V, 0, 0, &bytes), INV,
                    "validation: workspace size with minibatch 0");
    th_check_status(seqk_titans_workspace_size(ctx, PAR, B, T, H, K, V, 4, 0, &bytes),
                    SEQK_SUCCESS, "workspace size");
    th_check_status(seqk_titans_state_size(K, V, &fl), SEQK_SUCCESS, "state size");
    th_check(fl == (size_t)E, "state size: %zu floats, want 3*K*V+8 = %d", fl, (int)E);
    th_check_status(seqk_titans_state_size(0, V, &fl), INV, "validation: state size with K=0");
    th_check(strstr(seqk_last_error(), "K=0") != NULL, "validation: state size names K: %s",
             seqk_last_error());
    th_check_status(seqk_titans_state_size(K, V, NULL), INV,
                    "validation: state size with floats NULL");
    th_check_status(seqk_titans_state_size(INT64_MAX / 2, 4, &fl), INV,
                    "validation: state size overflow");
    /* T = 0: the state passes through (Mhat = M where pos = 0), in both modes */
    for (int m = 0; m < 2; m++) {
        RESET();
        for (size_t i = 0; i < ns; i++) s2[i] = (float)i;
        s2[3 * K * V] = 0.0f;         /* head 0: pos 0 */
        s2[E + 3 * K * V] = 2.0f;     /* head 1: pos 2 */
        for (int i = 1; i < 8; i++) s2[3 * K * V + i] = s2[E + 3 * K * V + i] = NAN;
        th_check_status(seqk_titans(ctx, m ? PAR : REC, B, 0, H, K, V, 1, 0, 4, NULL, NULL, NULL,
                                    NULL, NULL, NULL, NULL, s2, s, NULL, 0),
                        SEQK_SUCCESS, "T = 0");
        bool ok = true;
        for (int64_t i = 0; i < 3 * K * V; i++) {
            const float want0 = i < 2 * K * V ? s2[i] : s2[i - 2 * K * V];
            ok &= s[i] == want0 && s[E + i] == s2[E + i];
        }
        ok &= s[3 * K * V] == 0.0f && s[E + 3 * K * V] == 2.0f;
        for (int i = 1; i < 8; i++) ok &= s[3 * K * V + i] == 0.0f && s[E + 3 * K * V + i] == 0.0f;
        th_check(ok, "T = 0 (%s) passes the state through (Mhat = M at pos 0, reserved 0)",
                 m ? "parallel" : "recurrent");
    }
#undef expect
#undef RESET
}

int main(int argc, char **argv)
{
    th_backend *be;
    int nb = th_init(argc, argv, &be);
    th_seed(23);
    const int32_t *cu1 = tf_cu_133, *cu2 = tf_cu_91; /* empty and length-1 sequences */
    static const int64_t bs[] = {1, 4, 16, 64};
    /* shapes, run for every b */
    const tcase shapes[] = {
        /* B  T    H  K    V  b s0 cu   N  eta        alpha       theta thr */
        {1, 1, 1, 8, 8, 0, 0, NULL, 0, 0.5, 1, 0, 0.2, 0.5, 0},      /* T = 1 */
        {2, 1, 3, 16, 12, 0, 1, NULL, 0, 0.5, 1, 0, 0.2, 0.5, 0},    /* T = 1 with a state */
        {2, 131, 3, 17, 9, 0, 1, NULL, 0, 0.5, 1, 0, 0.2, 0.5, 0},   /* T not a multiple, odd dims, K != V */
        {1, 150, 2, 32, 48, 0, 1, NULL, 0, 0.0, 1, 0, 1, 0.5, 0},    /* eta, alpha over [0, 1] */
        {1, 100, 1, 64, 40, 0, 1, NULL, 0, 0.5, 1, 0, 0.2, 0.5, 4},  /* one head: split over V */
        {1, 133, 2, 24, 40, 0, 1, cu1, 5, 0.5, 1, 0, 0.2, 0.5, 0},   /* varlen */
        {1, 91, 1, 20, 67, 0, 1, cu2, 3, 0.5, 1, 0, 0.2, 0.5, 8},    /* varlen, odd V, split */
        {3, 70, 4, 8, 8, 0, 1, NULL, 0, 0.5, 1, 0, 0.2, 0.5, 0},     /* several batches and heads */
    };
    for (int i = 0; i < nb; i++)
        for (size_t j = 0; j < sizeof shapes / sizeof shapes[0]; j++)
            for (size_t bi = 0; bi < sizeof bs / sizeof bs[0]; bi++)
                for (int l2 = 0; l2 < 2; l2++) {
                    tcase c = shapes[j];
                    c.b = bs[bi];
                    run_case(&be[i], &c, l2);
                }
    /* head dim 128, gates at the ends of their ranges */
    const tcase edges[] = {
        {1, 200, 2, 128, 128, 16, 1, NULL, 0, 0.0, 1e-3, 0.999, 1, 1.0, 0}, /* eta ~ 0, alpha ~ 1 */
        {1, 200, 2, 128, 128, 16, 1, NULL, 0, 0.999, 1, 0, 1e-3, 0.01, 0},  /* eta ~ 1, alpha ~ 0 */
        {1, 200, 2, 128, 128, 64, 1, NULL, 0, 0.999, 1, 0.999, 1, 0.5, 0},  /* both ~ 1 */
        {1, 200, 2, 128, 128, 1, 1, NULL, 0, 0.0, 1e-3, 0, 1e-3, 1.0, 0},   /* both ~ 0, theta up to 1 */
    };
    for (int i = 0; i < nb; i++)
        for (size_t j = 0; j < sizeof edges / sizeof edges[0]; j++) run_case(&be[i], &edges[j], j & 1);
    /* wide keys: the CUDA kernels' narrower column blocks (16 and 8 columns in the
     * recurrent kernel for K > 256 and K > 512; 16 in the parallel mode's state pass
     * when 32 columns of 3 K + b floats pass 160 KB) */
    const tcase wide[] = {
        {1, 40, 1, 520, 20, 16, 1, NULL, 0, 0.5, 1, 0, 0.2, 0.5, 0},
        {1, 70, 2, 300, 33, 64, 1, NULL, 0, 0.5, 1, 0, 0.2, 0.5, 0},
    };
    for (int i = 0; i < nb; i++)
        for (size_t j = 0; j < sizeof wide / sizeof wide[0]; j++)
            for (int l2 = 0; l2 < 2; l2++) run_case(&be[i], &wide[j], l2);
    /* split == whole: at and inside mini-batch boundaries, across modes */
    for (int i = 0; i < nb; i++)
        for (size_t bi = 0; bi < sizeof bs / sizeof bs[0]; bi++) {
            const int64_t b = bs[bi];
            tcase c = {1, 150, 2, 16, 24, b, 1, NULL, 0, 0.5, 1, 0, 0.2, 0.5, 0};
            const int64_t at = b * (64 / b > 1 ? 64 / b : 1);      /* a mini-batch boundary */
            const int64_t inside = b > 1 ? 64 + b / 2 + 1 : 65;     /* inside one */
            split_equals_whole(&be[i], &c, 0, at, SEQK_MODE_PARALLEL, SEQK_MODE_RECURRENT, 0);
            split_equals_whole(&be[i], &c, 1, inside, SEQK_MODE_PARALLEL, SEQK_MODE_PARALLEL, 5);
            split_equals_whole(&be[i], &c, 0, inside, SEQK_MODE_RECURRENT, SEQK_MODE_PARALLEL, 3);
            split_equals_whole(&be[i], &c, 1, 3, SEQK_MODE_RECURRENT, SEQK_MODE_PARALLEL, 0);
            c.with_s0 = 0;
            split_equals_whole(&be[i], &c, 0, inside, SEQK_MODE_PARALLEL, SEQK_MODE_PARALLEL, 0);
        }
    /* stability: T = 65536 */
    const tcase stab[] = {
        /* B  T      H  K  V  b   s0 cu  N  eta          alpha        theta */
        {1, 65536, 2, 8, 8, 1, 1, NULL, 0, 0.0, 1e-3, 0.0, 1e-3, 1.0, 0},
        {1, 65536, 2, 8, 8, 1, 1, NULL, 0, 0.0, 1e-3, 0.99, 1.0, 1.0, 0},
        {1, 65536, 2, 8, 8, 1, 1, NULL, 0, 0.99, 1.0, 0.99, 1.0, 1.0, 0},
        {1, 65536, 2, 8, 8, 1, 1, NULL, 0, 0.99, 1.0, 0.0, 1e-3, 0.01, 0},
        {1, 65536, 2, 8, 8, 16, 1, NULL, 0, 0.0, 1e-3, 0.0, 1e-3, 1.0, 0},
        {1, 65536, 2, 8, 8, 16, 1, NULL, 0, 0.99, 1.0, 0.99, 1.0, 1.0, 0},
        {1, 65536, 2, 8, 8, 16, 1, NULL, 0, 0.99, 1.0, 0.0, 1e-3, 1e-3, 0},
        {1, 65536, 2, 8, 8, 64, 1, NULL, 0, 0.0, 1e-3, 0.99, 1.0, 1.0, 0},
        {1, 65536, 2, 8, 8, 64, 1, NULL, 0, 0.0, 1e-3, 0.0, 1e-3, 0.25, 0},
        {1, 65536, 2, 8, 8, 64, 1, NULL, 0, 0.99, 1.0, 0.99, 1.0, 0.25, 0},
        {1, 65536, 2, 8, 8, 64, 1, NULL, 0, 0.99, 1.0, 0.0, 1e-3, 1e-3, 0},
    };
    for (int i = 0; i < nb; i++)
        for (size_t j = 0; j < sizeof stab / sizeof stab[0]; j++) stability(&be[i], &stab[j]);
    for (int i = 0; i < nb; i++) {
        tcase w1 = shapes[4], w2 = shapes[6], w3 = shapes[7];
        w1.b = 16, w2.b = 4, w3.b = 64;
        workspace_bound(&be[i], &w1, 0);
        workspace_bound(&be[i], &w2, 8);
        workspace_bound(&be[i], &w3, 3);
    }
    for (int i = 0; i < nb; i++) empty_call(&be[i]);
    /* validation: the rules every backend shares are checked on the CPU (the
     * gates' ranges and the positions are not checked on CUDA, see seqk.h) */
    for (int i = 0; i < nb; i++)
        if (be[i].backend == SEQK_BACKEND_CPU && be[i].ctx) validation(be[i].ctx);
    return th_finish();
}
