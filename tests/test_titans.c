/* tests/test_titans.c -- the Titans linear memory (seqk_titans), both modes,
 * on every backend, against the float64 token loop of tests/ref/ref_titans.c;
 * recurrent == parallel; split == whole through the state (splits at and
 * inside mini-batch boundaries, across modes, decoding in place);
 * long-sequence stability; validation rules; the state-size and workspace
 * queries. */
#include "harness.h"
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

/* Host inputs of one case. */
typedef struct {
    float *q, *k, *v, *eta, *theta, *alpha, *s0;
    size_t nq, nv, ng, ns;
} inputs;

/* Keys: with the in-kernel L2 norm any scale; without it, unit-norm rows
 * scaled into [0.6, 1]. */
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

static void make_inputs(const tcase *c, int l2, inputs *in)
{
    const int64_t rows = c->B * c->T;
    in->nq = (size_t)(rows * c->H * c->K);
    in->nv = (size_t)(rows * c->H * c->V);
    in->ng = (size_t)(rows * c->H);
    in->ns = (size_t)(nseq(c) * c->H * efl(c));
    in->q = th_floats(in->nq + 1), in->k = th_floats(in->nq + 1), in->v = th_floats(in->nv + 1);
    in->eta = th_floats(in->ng + 1), in->theta = th_floats(in->ng + 1);
    in->alpha = th_floats(in->ng + 1), in->s0 = th_floats(in->ns + 1);
    th_fill(in->q, in->nq + 1, -1, 1);
    make_keys(in->k, rows * c->H, c->K, l2);
    th_fill(in->v, in->nv + 1, -1, 1);
    make_gates(c, in);
    make_state(c, in->s0);
}

static void free_inputs(inputs *in)
{
    free(in->q), free(in->k), free(in->v), free(in->eta), free(in->theta), free(in->alpha);
    free(in->s0);
}

/* Backend copies of the inputs and outputs of one call. */
typedef struct {
    float *q, *k, *v, *eta, *theta, *alpha, *s0, *o, *s1;
    int32_t *cu;
} dev;

static void upload(th_backend *be, const tcase *c, const inputs *in, dev *d)
{
    d->q = th_upload(be, in->q, in->nq * 4 + 4), d->k = th_upload(be, in->k, in->nq * 4 + 4);
    d->v = th_upload(be, in->v, in->nv * 4 + 4);
    d->eta = th_upload(be, in->eta, in->ng * 4 + 4);
    d->theta = th_upload(be, in->theta, in->ng * 4 + 4);
    d->alpha = th_upload(be, in->alpha, in->ng * 4 + 4);
    d->s0 = th_upload(be, in->s0, in->ns * 4 + 4);
    d->o = th_poisoned(be, in->nv + 1), d->s1 = th_poisoned(be, in->ns + 1);
    d->cu = c->cu ? th_upload(be, c->cu, (size_t)(nseq(c) + 1) * 4) : NULL;
}

static void release(th_backend *be, dev *d)
{
    th_free(be, d->q), th_free(be, d->k), th_free(be, d->v), th_free(be, d->eta);
    th_free(be, d->theta), th_free(be, d->alpha), th_free(be, d->s0), th_free(be, d->o);
    th_free(be, d->s1);
    if (d->cu) th_free(be, d->cu);
}

static double case_scale(const tcase *c) { return 1.0 / sqrt((double)c->K); }

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

static void set_threads(th_backend *be, int n)
{
    if (be->backend == SEQK_BACKEND_CPU) seqk_context_set_threads(be->ctx, n);
}

static seqk_status call(th_backend *be, const tcase *c, seqk_mode mode, int l2, const dev *d,
                        const float *s_in, float *s_out)
{
    return seqk_titans(be->ctx, mode, c->B, c->T, c->H, c->K, c->V, (float)case_scale(c),
                       l2 ? SEQK_TITANS_L2NORM_QK : 0u, c->b, d->q, d->k, d->v, d->eta, d->theta,
                       d->alpha, d->o, s_in, s_out, d->cu, c->N);
}

/* Both modes against the reference, and against each other. */
static void run_case(th_backend *be, const tcase *c, int l2)
{
    char what[400];
    describe(c, l2, be->name, "both modes", what, sizeof what);
    if (!be->ctx) {
        th_skip("%s: %s", what, be->skip_reason);
        return;
    }
    inputs in;
    make_inputs(c, l2, &in);
    double *ro = th_doubles(in.nv + 1), *rs = th_doubles(in.ns + 1);
    ref_titans(c->B, c->T, c->H, c->K, c->V, case_scale(c), l2, c->b, in.q, in.k, in.v, in.eta,
               in.theta, in.alpha, c->with_s0 ? in.s0 : NULL, ro, rs, c->cu, c->N);
    float *out[2] = {th_floats(in.nv + 1), th_floats(in.nv + 1)};
    float *st = th_floats(in.ns + 1);
    set_threads(be, c->threads);
    for (int m = 0; m < 2; m++) {
        const seqk_mode mode = m ? SEQK_MODE_PARALLEL : SEQK_MODE_RECURRENT;
        describe(c, l2, be->name, m ? "parallel" : "recurrent", what, sizeof what);
        dev d;
        upload(be, c, &in, &d);
        seqk_status s = call(be, c, mode, l2, &d, c->with_s0 ? d.s0 : NULL, d.s1);
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
    describe(c, l2, be->name, "recurrent vs parallel", what, sizeof what);
    th_check_close_f(out[0], out[1], in.nv, TOL, "%s", what);
    free(out[0]), free(out[1]), free(st), free(ro), free(rs);
    free_inputs(&in);
}

/* ---- split == whole, and decoding in place ------------------------------------ */

/* B = 1: tokens [0, s) in mode m1 from the initial state into state A, then
 * [s, T - decode) in mode m2 in place on A (state_in == state_out), then the
 * last `decode` tokens one at a time, recurrent, in place. Compared with the
 * reference of the whole. */
static void split_equals_whole(th_backend *be, const tcase *c, int l2, int64_t s, seqk_mode m1,
                               seqk_mode m2, int64_t decode)
{
    char what[400], mode[128];
    snprintf(mode, sizeof mode, "split at %lld (%s then %s in place, %lld decoded in place)",
             (long long)s, m1 == SEQK_MODE_PARALLEL ? "parallel" : "recurrent",
             m2 == SEQK_MODE_PARALLEL ? "parallel" : "recurrent", (long long)decode);
    describe(c, l2, be->name, mode, what, sizeof what);
    if (!be->ctx) {
        th_skip("%s: %s", what, be->skip_reason);
        return;
    }
    inputs in;
    make_inputs(c, l2, &in);
    double *ro = th_doubles(in.nv), *rs = th_doubles(in.ns);
    ref_titans(1, c->T, c->H, c->K, c->V, case_scale(c), l2, c->b, in.q, in.k, in.v, in.eta,
               in.theta, in.alpha, c->with_s0 ? in.s0 : NULL, ro, rs, NULL, 0);
    dev d;
    upload(be, c, &in, &d);
    const int64_t H = c->H, K = c->K, V = c->V;
    const unsigned fl = l2 ? SEQK_TITANS_L2NORM_QK : 0u;
    const float sc = (float)case_scale(c);
    /* part 1 */
    seqk_status st = seqk_titans(be->ctx, m1, 1, s, H, K, V, sc, fl, c->b, d.q, d.k, d.v, d.eta,
                                 d.theta, d.alpha, d.o, c->with_s0 ? d.s0 : NULL, d.s1, NULL, 0);
    /* part 2, in place */
    const int64_t e2 = c->T - decode;
    if (!st)
        st = seqk_titans(be->ctx, m2, 1, e2 - s, H, K, V, sc, fl, c->b, d.q + s * H * K,
                         d.k + s * H * K, d.v + s * H * V, d.eta + s * H, d.theta + s * H,
                         d.alpha + s * H, d.o + s * H * V, d.s1, d.s1, NULL, 0);
    for (int64_t t = e2; t < c->T && !st; t++)
        st = seqk_titans(be->ctx, SEQK_MODE_RECURRENT, 1, 1, H, K, V, sc, fl, c->b,
                         d.q + t * H * K, d.k + t * H * K, d.v + t * H * V, d.eta + t * H,
                         d.theta + t * H, d.alpha + t * H, d.o + t * H * V, d.s1, d.s1, NULL, 0);
    if (th_check_status(st, SEQK_SUCCESS, what)) {
        float *o = th_floats(in.nv), *sf = th_floats(in.ns);
        th_download(be, o, d.o, in.nv * 4);
        th_download(be, sf, d.s1, in.ns * 4);
        th_check_close(o, ro, in.nv, TOL, "%s: o", what);
        th_check_close(sf, rs, in.ns, TOL, "%s: final state", what);
        free(o), free(sf);
    }
    release(be, &d);
    free(ro), free(rs);
    free_inputs(&in);
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
    if (!be->ctx) {
        th_skip("%s: %s", what, be->skip_reason);
        return;
    }
    inputs in;
    make_inputs(c, 0, &in);
    for (int64_t r = 0; r < c->T * c->H; r++) { /* unit-norm keys exactly */
        double s = 0.0;
        for (int64_t i = 0; i < c->K; i++) s += (double)in.k[r * c->K + i] * in.k[r * c->K + i];
        for (int64_t i = 0; i < c->K; i++) in.k[r * c->K + i] = (float)(in.k[r * c->K + i] / sqrt(s));
    }
    double *ro = th_doubles(in.nv), *rs = th_doubles(in.ns);
    ref_titans(1, c->T, c->H, c->K, c->V, case_scale(c), 0, c->b, in.q, in.k, in.v, in.eta,
               in.theta, in.alpha, in.s0, ro, rs, NULL, 0);
    float *o = th_floats(in.nv), *sf = th_floats(in.ns);
    for (int m = 0; m < 2; m++) {
        const seqk_mode mode = m ? SEQK_MODE_PARALLEL : SEQK_MODE_RECURRENT;
        describe(c, 0, be->name, m ? "stability parallel" : "stability recurrent", what,
                 sizeof what);
        dev d;
        upload(be, c, &in, &d);
        seqk_status st = call(be, c, mode, 0, &d, d.s0, d.s1);
        if (th_check_status(st, SEQK_SUCCESS, what)) {
            th_download(be, o, d.o, in.nv * 4);
            th_download(be, sf, d.s1, in.ns * 4);
            bool finite = true;
            for (size_t i = 0; i < in.nv; i++) finite &= isfinite(o[i]) != 0;
            for (size_t i = 0; i < in.ns; i++)
                finite &= (i % (size_t)efl(c)) >= (size_t)(3 * c->K * c->V) || isfinite(sf[i]);
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

/* The queried size is enough: a caller buffer of exactly that size runs
 * (without state_out: the largest workspace). */
static void workspace_bound(th_backend *be, const tcase *c, int threads)
{
    char what[400];
    describe(c, 1, be->name, "workspace bound", what, sizeof what);
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
        seqk_status st = seqk_titans_workspace_size(be->ctx, mode, c->B, c->T, c->H, c->K, c->V,
                                                    c->b, c->cu ? c->N : 0, &bytes);
        if (!th_check_status(st, SEQK_SUCCESS, what)) continue;
        void *buf = NULL;
        if (bytes) buf = th_upload(be, NULL, bytes);
        seqk_context_set_workspace(be->ctx, buf, bytes);
        dev d;
        upload(be, c, &in, &d);
        st = call(be, c, mode, 1, &d, d.s0, NULL);
        char w2[500];
        snprintf(w2, sizeof w2, "%s %s (%zu bytes)", what, m ? "parallel" : "recurrent", bytes);
        th_check_status(st, SEQK_SUCCESS, w2);
        seqk_context_set_workspace(be->ctx, NULL, 0);
        if (buf) th_free(be, buf);
        release(be, &d);
    }
    set_threads(be, 0);
    free_inputs(&in);
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
            if (!be->ctx) {
                th_skip("%s: %s", what, be->skip_reason);
                continue;
            }
            const int64_t KV = EC_K * EC_V;
            float s0[EC_NS], s1[EC_NS];
            for (int i = 0; i < EC_NS; i++) s0[i] = (float)i;
            s0[3 * KV] = 0.0f;        /* head 0: pos 0 */
            s0[EC_E + 3 * KV] = 2.0f; /* head 1: pos 2 */
            for (int i = 1; i < 8; i++) s0[3 * KV + i] = s0[EC_E + 3 * KV + i] = NAN;
            float *d0 = th_upload(be, s0, sizeof s0);
            float *d1 = inplace ? d0 : th_poisoned(be, EC_NS);
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
            if (!inplace) th_free(be, d1);
            th_free(be, d0);
        }
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
    enum { B = 1, T = 10, H = 2, K = 4, V = 3, E = 3 * K * V + 8 };
    float q[B * T * H * K], k[B * T * H * K], v[B * T * H * V], eta[B * T * H],
        theta[B * T * H], alpha[B * T * H], o[B * T * H * V], s[B * H * E], s2[2 * H * E],
        sin_[B * H * E];
    for (size_t i = 0; i < sizeof q / 4; i++) q[i] = k[i] = 0.1f;
    for (size_t i = 0; i < sizeof v / 4; i++) v[i] = 0.2f;
    for (size_t i = 0; i < sizeof eta / 4; i++) eta[i] = 0.9f, theta[i] = 0.1f, alpha[i] = 0.05f;
    for (size_t i = 0; i < sizeof sin_ / 4; i++) sin_[i] = 0.0f;
    const size_t no = sizeof o / 4, ns = sizeof s / 4;
#define RESET()                                                            \
    do {                                                                   \
        for (size_t i_ = 0; i_ < no; i_++) o[i_] = 7.0f;                   \
        for (size_t i_ = 0; i_ < ns; i_++) s[i_] = 7.0f;                   \
        for (size_t i_ = 0; i_ < sizeof s2 / 4; i_++) s2[i_] = 7.0f;       \
    } while (0)
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
#undef RESET
}

int main(int argc, char **argv)
{
    th_backend *be;
    int nb = th_init(argc, argv, &be);
    th_seed(23);
    static const int32_t cu1[] = {0, 0, 1, 70, 70, 133}; /* empty and length-1 sequences */
    static const int32_t cu2[] = {0, 90, 90, 91};
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
