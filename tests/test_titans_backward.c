/* tests/test_titans_backward.c -- the backward of the Titans linear memory
 * (seqk_titans_backward), on every backend, against the float64 reverse
 * token loop of tests/ref/ref_titans_backward.c (itself checked against
 * finite differences by test_titans_backward_ref): T = 1, T prime, T not a
 * multiple of the mini-batch, mini-batch sizes 1, 7 and 64, K != V, odd
 * head dims, several batches and heads, varlen with empty and length-1
 * sequences, with and without the initial state (random positions, Mhat NaN
 * where pos = 0: it must not be read) and dstate_out, the L2 norm on and
 * off, gates at the ends of their ranges (eta and alpha exactly 0 and 1
 * sprinkled in), long sequences (T = 65536; T = 8192 with the segment
 * states checkpointed); determinism (two runs, 1, 2 and 3 threads); T = 0;
 * the workspace query as an upper bound; one check per validation rule
 * (status, message, outputs untouched).
 *
 * Tolerance: every gradient tensor within ||x - ref|| / ||ref|| <= 1e-4 (NaN
 * never passes), every output NaN-poisoned before the call and one element
 * past its end too (it must stay NaN).
 *
 * Every case runs on every backend (the CUDA one too, gpu/titans_backward.cu,
 * which takes every shape the CPU does), with the same reference and
 * tolerance, except that under the CUDA emulator (tools/cuda_emu/run.sh,
 * which sets EMU_ORDER) the cases of more than EMU_HEAVY_ROWS token rows x
 * heads (T = 65536, 8192, 6000) run on the CPU backend only: the emulator
 * runs each GPU thread as a fiber and pays ~0.1 ms per barrier, and these
 * walk thousands of segments; the checkpointed path is then covered by a
 * short case with a wide state (K = V = 512). The validation rules (host
 * arrays) run on the CPU.
 */
#include "fixtures.h"
#include "ref/ref_titans_backward.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL 1e-4

typedef struct {
    int64_t B, T, H, K, V, b;
    int with_s0, with_dso;
    const int32_t *cu;
    int64_t N;
    double elo, ehi, alo, ahi, thmax; /* gate ranges: eta, alpha, theta in [0, thmax] */
    int threads;                      /* CPU thread count for the case (0: the default) */
} bcase;

static int64_t nseq(const bcase *c) { return c->cu ? c->N : c->B; }
static int64_t efl(const bcase *c) { return 3 * c->K * c->V + 8; }
static double case_scale(const bcase *c) { return 1.0 / sqrt((double)c->K); }

static double *to_doubles(tf_arrays *h, const float *x, size_t n)
{
    double *d = tf_doubles(h, n + 1);
    for (size_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}

/* Host inputs of one case and the reference gradients. */
typedef struct {
    float *q, *k, *v, *eta, *theta, *alpha, *s0, *dout, *dso;
    double *rq, *rk, *rv, *reta, *rtheta, *ralpha, *rs;
    size_t nq, nv, ng, ns;
} binputs;

/* Gates in their ranges with the ends (exact 0 and 1 where the range
 * reaches them) sprinkled in, as tests/test_titans.c does. */
static void make_gates(const bcase *c, binputs *in)
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

/* A random state: M, S, Mhat in [-0.5, 0.5], pos in [0, b); Mhat NaN where
 * pos = 0 (not read), the reserved floats NaN. */
static void make_state(const bcase *c, float *s)
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

static void make_case(tf_arrays *h, const bcase *c, int l2, bool unit_keys, binputs *in)
{
    const int64_t rows = c->B * c->T;
    in->nq = (size_t)(rows * c->H * c->K);
    in->nv = (size_t)(rows * c->H * c->V);
    in->ng = (size_t)(rows * c->H);
    in->ns = (size_t)(nseq(c) * c->H * efl(c));
    in->q = tf_random(h, in->nq + 1, -1, 1);
    in->k = tf_floats(h, in->nq + 1);
    tf_delta_keys(in->k, rows * c->H, c->K, l2);
    if (unit_keys) tf_unit_rows(in->k, rows * c->H, c->K);
    in->v = tf_random(h, in->nv + 1, -1, 1);
    in->eta = tf_floats(h, in->ng + 1), in->theta = tf_floats(h, in->ng + 1);
    in->alpha = tf_floats(h, in->ng + 1);
    make_gates(c, in);
    in->s0 = tf_floats(h, in->ns + 1);
    make_state(c, in->s0);
    in->dout = tf_random(h, in->nv + 1, -1, 1);
    in->dso = tf_random(h, in->ns + 1, -1, 1); /* pos and reserved: ignored */
    tf_arrays t = tf_arrays_on(NULL);
    const double *q = to_doubles(&t, in->q, in->nq), *k = to_doubles(&t, in->k, in->nq);
    const double *v = to_doubles(&t, in->v, in->nv), *eta = to_doubles(&t, in->eta, in->ng);
    const double *th = to_doubles(&t, in->theta, in->ng);
    const double *al = to_doubles(&t, in->alpha, in->ng), *s0 = to_doubles(&t, in->s0, in->ns);
    const double *dout = to_doubles(&t, in->dout, in->nv), *dso = to_doubles(&t, in->dso, in->ns);
    in->rq = tf_doubles(h, in->nq + 1), in->rk = tf_doubles(h, in->nq + 1);
    in->rv = tf_doubles(h, in->nv + 1), in->reta = tf_doubles(h, in->ng + 1);
    in->rtheta = tf_doubles(h, in->ng + 1), in->ralpha = tf_doubles(h, in->ng + 1);
    in->rs = tf_doubles(h, in->ns + 1);
    ref_titans_backward64(c->B, c->T, c->H, c->K, c->V, case_scale(c), l2, c->b, q, k, v, eta, th,
                          al, c->with_s0 ? s0 : NULL, dout, c->with_dso ? dso : NULL, in->rq,
                          in->rk, in->rv, in->reta, in->rtheta, in->ralpha, in->rs, c->cu, c->N);
    tf_arrays_free(&t);
}

/* Backend copies of one call's inputs and (poisoned, one past the end) outputs. */
typedef struct {
    float *q, *k, *v, *eta, *theta, *alpha, *s0, *dout, *dso;
    float *dq, *dk, *dv, *deta, *dtheta, *dalpha, *ds;
    int32_t *cu;
} bdev;

static void upload(tf_arrays *d, const bcase *c, const binputs *in, bdev *x)
{
    x->q = tf_upload(d, in->q, in->nq * 4 + 4), x->k = tf_upload(d, in->k, in->nq * 4 + 4);
    x->v = tf_upload(d, in->v, in->nv * 4 + 4), x->eta = tf_upload(d, in->eta, in->ng * 4 + 4);
    x->theta = tf_upload(d, in->theta, in->ng * 4 + 4);
    x->alpha = tf_upload(d, in->alpha, in->ng * 4 + 4);
    x->s0 = tf_upload(d, in->s0, in->ns * 4 + 4);
    x->dout = tf_upload(d, in->dout, in->nv * 4 + 4);
    x->dso = tf_upload(d, in->dso, in->ns * 4 + 4);
    x->dq = tf_poisoned(d, in->nq + 1), x->dk = tf_poisoned(d, in->nq + 1);
    x->dv = tf_poisoned(d, in->nv + 1), x->deta = tf_poisoned(d, in->ng + 1);
    x->dtheta = tf_poisoned(d, in->ng + 1), x->dalpha = tf_poisoned(d, in->ng + 1);
    x->ds = tf_poisoned(d, in->ns + 1);
    x->cu = c->cu ? tf_upload(d, c->cu, (size_t)(c->N + 1) * 4) : NULL;
}

static seqk_status call(seqk_context *ctx, const bcase *c, int l2, const bdev *x)
{
    return seqk_titans_backward(ctx, c->B, c->T, c->H, c->K, c->V, (float)case_scale(c),
                                l2 ? SEQK_TITANS_L2NORM_QK : 0u, c->b, x->q, x->k, x->v, x->eta,
                                x->theta, x->alpha, c->with_s0 ? x->s0 : NULL, x->dout,
                                c->with_dso ? x->dso : NULL, x->dq, x->dk, x->dv, x->deta,
                                x->dtheta, x->dalpha, x->ds, x->cu, c->N);
}

static void describe(const bcase *c, int l2, const char *be, const char *extra, char *buf,
                     size_t n)
{
    snprintf(buf, n,
             "%s titans_backward%s B=%lld T=%lld H=%lld K=%lld V=%lld b=%lld%s%s%s%s "
             "eta~U[%g,%g] alpha~U[%g,%g] theta<=%g%s",
             be, l2 ? " l2norm" : "", (long long)c->B, (long long)c->T, (long long)c->H,
             (long long)c->K, (long long)c->V, (long long)c->b, c->with_s0 ? " s0" : "",
             c->with_dso ? " dstate_out" : "", c->cu ? " varlen" : "",
             c->threads ? " threads" : "", c->elo, c->ehi, c->alo, c->ahi, c->thmax, extra);
}

/* more than this many token rows x heads: CPU backend only under the emulator */
enum { EMU_HEAVY_ROWS = 4096 };

/* th_skipped, or a case too long for the CUDA emulator (reported as skipped). */
static bool skip_case(th_backend *be, const bcase *c, const char *what)
{
    if (th_skipped(be, what)) return true;
    if (be->backend == SEQK_BACKEND_CPU || !getenv("EMU_ORDER") ||
        c->B * c->T * c->H <= EMU_HEAVY_ROWS)
        return false;
    th_skip("%s: %lld rows x heads, CPU backend only under the CUDA emulator", what,
            (long long)(c->B * c->T * c->H));
    return true;
}

static void run_case(th_backend *be, const bcase *c, int l2, bool unit_keys, const char *extra)
{
    char what[400];
    describe(c, l2, be->name, extra, what, sizeof what);
    if (skip_case(be, c, what)) return;
    tf_arrays h = tf_arrays_on(NULL), d = tf_arrays_on(be);
    binputs in;
    make_case(&h, c, l2, unit_keys, &in);
    bdev x;
    upload(&d, c, &in, &x);
    th_set_threads(be, c->threads);
    const seqk_status st = call(be->ctx, c, l2, &x);
    th_set_threads(be, 0);
    if (th_check_status(st, SEQK_SUCCESS, what)) {
        float *host = tf_floats(&h, in.nq + in.nv + in.ns + 1);
        tf_check_result(be, host, x.dq, in.nq, in.rq, TOL, true, what, "dq");
        th_check(tf_all_finite(host, in.nq), "%s: dq finite", what);
        tf_check_result(be, host, x.dk, in.nq, in.rk, TOL, true, what, "dk");
        tf_check_result(be, host, x.dv, in.nv, in.rv, TOL, true, what, "dv");
        tf_check_result(be, host, x.deta, in.ng, in.reta, TOL, true, what, "deta");
        tf_check_result(be, host, x.dtheta, in.ng, in.rtheta, TOL, true, what, "dtheta");
        tf_check_result(be, host, x.dalpha, in.ng, in.ralpha, TOL, true, what, "dalpha");
        tf_check_result(be, host, x.ds, in.ns, in.rs, TOL, true, what, "dstate_in");
        th_check(tf_all_finite(host, in.ns), "%s: dstate_in finite", what);
        /* pos and the reserved floats of dstate_in: 0 exactly */
        bool zero = true;
        for (int64_t nh = 0; nh < nseq(c) * c->H; nh++)
            for (int i = 0; i < 8; i++) zero &= host[nh * efl(c) + 3 * c->K * c->V + i] == 0.0f;
        th_check(zero, "%s: dstate_in pos and reserved floats are 0", what);
    }
    tf_arrays_free(&d);
    tf_arrays_free(&h);
}

/* ---- determinism ------------------------------------------------------------------ */

/* Two runs, and 2 vs 1 vs 3 threads (CPU): every output bit-identical. */
static void determinism(th_backend *be, const bcase *c)
{
    char what[400];
    describe(c, 1, be->name, " determinism", what, sizeof what);
    if (skip_case(be, c, what)) return;
    tf_arrays h = tf_arrays_on(NULL), d = tf_arrays_on(be);
    binputs in;
    make_case(&h, c, 1, false, &in);
    const size_t tot = 2 * in.nq + in.nv + 3 * in.ng + in.ns;
    enum { RUNS = 4 };
    float *runs[RUNS];
    const int threads[RUNS] = {2, 2, 1, 3};
    for (int r = 0; r < RUNS; r++) {
        bdev x;
        upload(&d, c, &in, &x);
        th_set_threads(be, threads[r]);
        th_check_status(call(be->ctx, c, 1, &x), SEQK_SUCCESS, what);
        float *o = runs[r] = tf_floats(&h, tot);
        const struct { const float *p; size_t n; } parts[] = {
            {x.dq, in.nq},   {x.dk, in.nq},     {x.dv, in.nv},     {x.deta, in.ng},
            {x.dtheta, in.ng}, {x.dalpha, in.ng}, {x.ds, in.ns}};
        for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
            th_download(be, o, parts[i].p, parts[i].n * sizeof(float));
            o += parts[i].n;
        }
        tf_arrays_free(&d);
    }
    th_set_threads(be, 0);
    th_check(memcmp(runs[0], runs[1], tot * sizeof(float)) == 0, "%s: two runs bit-identical",
             what);
    th_check(memcmp(runs[0], runs[2], tot * sizeof(float)) == 0,
             "%s: 1 vs 2 threads bit-identical", what);
    th_check(memcmp(runs[0], runs[3], tot * sizeof(float)) == 0,
             "%s: 3 vs 2 threads bit-identical", what);
    tf_arrays_free(&h);
}

/* ---- workspace ------------------------------------------------------------------- */

/* A caller workspace of exactly the queried size runs. */
static void workspace_bound(th_backend *be, const bcase *c, int threads)
{
    char what[400];
    describe(c, 0, be->name, " workspace bound", what, sizeof what);
    if (skip_case(be, c, what)) return;
    th_set_threads(be, threads);
    tf_arrays h = tf_arrays_on(NULL), d = tf_arrays_on(be);
    binputs in;
    make_case(&h, c, 0, false, &in);
    size_t bytes = 0;
    seqk_status st = seqk_titans_backward_workspace_size(be->ctx, c->B, c->T, c->H, c->K, c->V,
                                                         c->b, c->cu ? c->N : 0, &bytes);
    if (th_check_status(st, SEQK_SUCCESS, what)) {
        void *buf = tf_workspace_begin(be, bytes);
        bdev x;
        upload(&d, c, &in, &x);
        char w2[480];
        snprintf(w2, sizeof w2, "%s (%zu bytes)", what, bytes);
        if (th_check_status(call(be->ctx, c, 0, &x), SEQK_SUCCESS, w2))
            tf_check_result(be, tf_floats(&h, in.nq + 1), x.dk, in.nq, in.rk, TOL, true, w2, "dk");
        tf_workspace_end(be, buf);
        tf_arrays_free(&d);
    }
    th_set_threads(be, 0);
    tf_arrays_free(&h);
}

/* ---- T = 0 ---------------------------------------------------------------------- */

/* No tokens: dstate_in = dstate_out mapped through the state: with pos 0
 * (no state_in) dM_0 = dM_fin + dMhat_fin (Mhat_fin = M_0), dS_0 = dS_fin,
 * dMhat_in = 0; with pos != 0 dMhat_in = dMhat_fin. */
/* One T = 0 call on be (s0, dso: host arrays or NULL); dstate_in into ds. */
static seqk_status zero_call(th_backend *be, const float *s0, const float *dso, float *ds, size_t ns)
{
    enum { H = 2, K = 3, V = 4 };
    tf_arrays d = tf_arrays_on(be);
    const float *s0d = s0 ? tf_upload(&d, s0, ns * sizeof(float)) : NULL;
    const float *dsod = dso ? tf_upload(&d, dso, ns * sizeof(float)) : NULL;
    float *dsd = tf_poisoned(&d, ns);
    const seqk_status st =
        seqk_titans_backward(be->ctx, 2, 0, H, K, V, 0.5f, 0, 4, NULL, NULL, NULL, NULL, NULL,
                             NULL, s0d, NULL, dsod, NULL, NULL, NULL, NULL, NULL, NULL, dsd, NULL, 0);
    th_download(be, ds, dsd, ns * sizeof(float));
    tf_arrays_free(&d);
    return st;
}

static void zero_tokens(th_backend *be)
{
    enum { H = 2, K = 3, V = 4, KV = K * V, E = 3 * KV + 8, NS = 2 * H * E };
    float dso[NS], ds[NS], s0[NS];
    for (int i = 0; i < NS; i++) dso[i] = (float)(i % 17) - 3.0f, s0[i] = 0.25f;
    th_check_status(zero_call(be, NULL, dso, ds, NS), SEQK_SUCCESS, "T = 0");
    bool ok = true;
    for (int nh = 0; nh < 2 * H; nh++) {
        const float *g = dso + nh * E, *d = ds + nh * E;
        for (int i = 0; i < KV; i++) {
            ok &= d[i] == g[i] + g[2 * KV + i];
            ok &= d[KV + i] == g[KV + i];
            ok &= d[2 * KV + i] == 0.0f;
        }
        for (int i = 0; i < 8; i++) ok &= d[3 * KV + i] == 0.0f;
    }
    th_check(ok, "%s T = 0: dstate_in = [dM_fin + dMhat_fin | dS_fin | 0 | 0]", be->name);
    for (int nh = 0; nh < 2 * H; nh++) s0[nh * E + 3 * KV] = (float)(nh % 2 ? 3 : 0);
    th_check_status(zero_call(be, s0, dso, ds, NS), SEQK_SUCCESS, "T = 0 with positions");
    ok = true;
    for (int nh = 0; nh < 2 * H; nh++) {
        const float *g = dso + nh * E, *d = ds + nh * E;
        const bool p0 = nh % 2 == 0;
        for (int i = 0; i < KV; i++) {
            ok &= d[i] == (p0 ? g[i] + g[2 * KV + i] : g[i]);
            ok &= d[KV + i] == g[KV + i];
            ok &= d[2 * KV + i] == (p0 ? 0.0f : g[2 * KV + i]);
        }
    }
    th_check(ok, "%s T = 0 with positions: dMhat_in = dMhat_fin where pos != 0", be->name);
    th_check_status(zero_call(be, NULL, NULL, ds, NS), SEQK_SUCCESS, "T = 0 without dstate_out");
    bool zero = true;
    for (int i = 0; i < NS; i++) zero &= ds[i] == 0.0f;
    th_check(zero, "%s T = 0 without dstate_out: dstate_in = 0", be->name);
}

/* ---- validation ------------------------------------------------------------------ */

enum { VT = 10, VH = 2, VK = 4, VV = 3, VE = 3 * VK * VV + 8 };
/* every output of a validation call, filled with TF_UNTOUCHED before it */
static struct {
    float dq[VT * VH * VK], dk[VT * VH * VK], dv[VT * VH * VV], deta[VT * VH], dtheta[VT * VH],
        dalpha[VT * VH], ds[2 * VH * VE];
} vo;

static void validation(seqk_context *ctx)
{
    enum { B = 1, T = VT, H = VH, K = VK, V = VV, E = VE };
    float q[T * H * K], k[T * H * K], v[T * H * V], eta[T * H], theta[T * H], alpha[T * H],
        dout[T * H * V], s[2 * H * E];
    for (size_t i = 0; i < sizeof q / 4; i++) q[i] = k[i] = 0.1f;
    for (size_t i = 0; i < sizeof v / 4; i++) v[i] = dout[i] = 0.2f;
    for (size_t i = 0; i < sizeof eta / 4; i++) eta[i] = 0.9f, theta[i] = 0.1f, alpha[i] = 0.05f;
    for (size_t i = 0; i < sizeof s / 4; i++) s[i] = 0.01f;
    for (int nh = 0; nh < 2 * H; nh++) s[nh * E + 3 * K * V] = 1.0f;
    const float *o = (const float *)&vo;
    const size_t no = sizeof vo / sizeof(float);
    const seqk_status INV = SEQK_ERROR_INVALID_ARGUMENT;
#define RESET() tf_fill_untouched((float *)&vo, no)
#define CALL(B_, T_, H_, K_, scale_, flags_, b_, ...) \
    seqk_titans_backward(ctx, B_, T_, H_, K_, V, scale_, flags_, b_, __VA_ARGS__)
#define OUTS vo.dq, vo.dk, vo.dv, vo.deta, vo.dtheta, vo.dalpha, vo.ds
#define OK_ARGS q, k, v, eta, theta, alpha, NULL, dout, NULL, OUTS
#define EXPECT(got, want, needle, rule) \
    (RESET(), tf_expect_rejected(got, want, needle, rule, o, no, NULL, 0))
    EXPECT(CALL(B, T, 0, K, 1, 0, 4, OK_ARGS, NULL, 0), INV, "H=0", "H=0");
    EXPECT(CALL(B, -1, H, K, 1, 0, 4, OK_ARGS, NULL, 0), INV, "T=-1", "T=-1");
    EXPECT(CALL(B, T, H, 2000, 1, 0, 4, OK_ARGS, NULL, 0), SEQK_ERROR_UNSUPPORTED, "K=2000",
           "K too large");
    EXPECT(CALL(B, T, H, K, 1, 0, 0, OK_ARGS, NULL, 0), INV, "minibatch=0", "minibatch=0");
    EXPECT(CALL(B, T, H, K, 1, 0, 2000, OK_ARGS, NULL, 0), INV, "minibatch=2000",
           "minibatch=2000");
    EXPECT(CALL(B, T, H, K, NAN, 0, 4, OK_ARGS, NULL, 0), INV, "scale=nan", "scale NaN");
    EXPECT(CALL(B, T, H, K, 1, 0x10, 4, OK_ARGS, NULL, 0), INV, "flags=0x10", "unknown flags");
    /* each required pointer NULL */
    const float *ins[7] = {q, k, v, eta, theta, alpha, dout};
    float *outs[6] = {vo.dq, vo.dk, vo.dv, vo.deta, vo.dtheta, vo.dalpha};
    static const char *in_names[7] = {"q", "k", "v", "eta", "theta", "alpha", "dout"};
    static const char *out_names[6] = {"dq", "dk", "dv", "deta", "dtheta", "dalpha"};
    for (int i = 0; i < 13; i++) {
        const float *a[7];
        float *b[6];
        memcpy(a, ins, sizeof a), memcpy(b, outs, sizeof b);
        const char *name = i < 7 ? in_names[i] : out_names[i - 7];
        if (i < 7) a[i] = NULL;
        else b[i - 7] = NULL;
        char needle[64], rule[64];
        snprintf(needle, sizeof needle, "%s is NULL", name);
        snprintf(rule, sizeof rule, "%s NULL", name);
        EXPECT(CALL(B, T, H, K, 1, 0, 4, a[0], a[1], a[2], a[3], a[4], a[5], NULL, a[6], NULL,
                    b[0], b[1], b[2], b[3], b[4], b[5], vo.ds, NULL, 0),
               INV, needle, rule);
    }
    /* overlaps */
    EXPECT(CALL(B, T, H, K, 1, 0, 4, q, k, v, eta, theta, alpha, NULL, dout, NULL, (float *)q,
                vo.dk, vo.dv, vo.deta, vo.dtheta, vo.dalpha, vo.ds, NULL, 0),
           INV, "dq=", "dq overlapping q");
    EXPECT(CALL(B, T, H, K, 1, 0, 4, q, k, v, eta, theta, alpha, NULL, dout, NULL, vo.dq,
                vo.dq + 1, vo.dv, vo.deta, vo.dtheta, vo.dalpha, vo.ds, NULL, 0),
           INV, "overlaps dq", "dk overlapping dq");
    EXPECT(CALL(B, T, H, K, 1, 0, 4, q, k, v, eta, theta, alpha, NULL, dout, NULL, vo.dq, vo.dk,
                (float *)dout, vo.deta, vo.dtheta, vo.dalpha, vo.ds, NULL, 0),
           INV, "overlaps dout", "dv overlapping dout");
    EXPECT(CALL(B, T, H, K, 1, 0, 4, q, k, v, eta, theta, alpha, NULL, dout, NULL, vo.dq, vo.dk,
                vo.dv, vo.deta, (float *)eta, vo.dalpha, vo.ds, NULL, 0),
           INV, "overlaps eta", "dtheta overlapping eta");
    EXPECT(CALL(B, T, H, K, 1, 0, 4, q, k, v, eta, theta, alpha, NULL, dout, NULL, vo.dq, vo.dk,
                vo.dv, vo.deta, vo.dtheta, vo.deta + 3, vo.ds, NULL, 0),
           INV, "overlaps deta", "dalpha overlapping deta");
    EXPECT(CALL(B, T, H, K, 1, 0, 4, q, k, v, eta, theta, alpha, NULL, dout, s, vo.dq, vo.dk,
                vo.dv, vo.deta, vo.dtheta, vo.dalpha, s + 1, NULL, 0),
           INV, "overlaps dstate_out", "dstate_in overlapping dstate_out");
    EXPECT(CALL(B, T, H, K, 1, 0, 4, q, k, v, eta, theta, alpha, s, dout, NULL, vo.dq, vo.dk,
                vo.dv, vo.deta, vo.dtheta, vo.dalpha, s, NULL, 0),
           INV, "overlaps state_in", "dstate_in = state_in");
    /* the gates' ranges and the positions */
    eta[17] = 1.5f;
    EXPECT(CALL(B, T, H, K, 1, 0, 4, OK_ARGS, NULL, 0), INV,
           "seqk_titans_backward: eta[17]=1.5, must be in [0, 1]", "eta above 1");
    eta[17] = NAN;
    EXPECT(CALL(B, T, H, K, 1, 0, 4, OK_ARGS, NULL, 0), INV, "eta[17]=nan", "eta NaN");
    eta[17] = 0.9f;
    theta[5] = -1.0f;
    EXPECT(CALL(B, T, H, K, 1, 0, 4, OK_ARGS, NULL, 0), INV,
           "theta[5]=-1, must be finite and >= 0", "theta negative");
    theta[5] = INFINITY;
    EXPECT(CALL(B, T, H, K, 1, 0, 4, OK_ARGS, NULL, 0), INV, "theta[5]=inf", "theta inf");
    theta[5] = 0.1f;
    alpha[11] = -0.5f;
    EXPECT(CALL(B, T, H, K, 1, 0, 4, OK_ARGS, NULL, 0), INV, "alpha[11]=-0.5, must be in [0, 1]",
           "alpha negative");
    alpha[11] = 0.05f;
    s[E + 3 * K * V] = 4.0f; /* sequence 0, head 1: pos = b */
    EXPECT(CALL(B, T, H, K, 1, 0, 4, q, k, v, eta, theta, alpha, s, dout, NULL, OUTS, NULL, 0),
           INV, "state_in position of sequence 0, head 1", "pos = minibatch");
    s[E + 3 * K * V] = 1.5f;
    EXPECT(CALL(B, T, H, K, 1, 0, 4, q, k, v, eta, theta, alpha, s, dout, NULL, OUTS, NULL, 0),
           INV, "= 1.5, must be an integer", "fractional pos");
    s[E + 3 * K * V] = 1.0f;
    const int32_t cu_bad[3] = {0, 6, 5}, cu_end[3] = {0, 2, 4};
    EXPECT(CALL(B, T, H, K, 1, 0, 4, OK_ARGS, cu_bad, 2), INV,
           "cu_seqlens[2]=5 < cu_seqlens[1]=6", "cu_seqlens decreasing");
    EXPECT(CALL(B, T, H, K, 1, 0, 4, OK_ARGS, cu_end, 2), INV, "must equal T=10",
           "cu_seqlens[N] != T");
    /* the same arguments pass (with and without state and varlen) */
    RESET();
    th_check_status(CALL(B, T, H, K, 1, 0, 4, OK_ARGS, NULL, 0), SEQK_SUCCESS,
                    "validation: the valid call");
    RESET();
    const int32_t cu_ok[3] = {0, 4, 10};
    th_check_status(CALL(B, T, H, K, 1, 0, 4, q, k, v, eta, theta, alpha, s, dout, NULL, OUTS,
                         cu_ok, 2),
                    SEQK_SUCCESS, "validation: the valid varlen call with state_in");
    size_t bytes = 0;
    th_check_status(seqk_titans_backward_workspace_size(ctx, B, T, H, K, V, 4, 0, NULL), INV,
                    "validation: workspace size with bytes NULL");
    th_check(strstr(seqk_last_error(), "bytes is NULL") != NULL,
             "validation: workspace size message names bytes: %s", seqk_last_error());
    th_check_status(seqk_titans_backward_workspace_size(ctx, B, T, H, K, V, 0, 0, &bytes), INV,
                    "validation: workspace size with minibatch 0");
    th_check_status(seqk_titans_backward_workspace_size(ctx, B, T, H, K, V, 4, 0, &bytes),
                    SEQK_SUCCESS, "workspace size");
#undef EXPECT
#undef OK_ARGS
#undef OUTS
#undef CALL
#undef RESET
}

int main(int argc, char **argv)
{
    th_backend *be;
    int nb = th_init(argc, argv, &be);
    th_seed(29);
    const int32_t *cu1 = tf_cu_133, *cu2 = tf_cu_91; /* empty and length-1 sequences */
    static const int64_t bs[] = {1, 7, 64};
    /* shapes, run for every b and with the L2 norm on and off */
    const bcase shapes[] = {
        /* B  T    H  K   V  b s0 dso cu   N  eta     alpha   theta thr */
        {1, 1, 1, 8, 8, 0, 0, 0, NULL, 0, 0.5, 1, 0, 0.2, 0.5, 0},    /* T = 1 */
        {2, 1, 3, 16, 12, 0, 1, 1, NULL, 0, 0.5, 1, 0, 0.2, 0.5, 0},  /* T = 1 with the states */
        {1, 37, 2, 16, 16, 0, 1, 1, NULL, 0, 0.5, 1, 0, 0.2, 0.5, 0}, /* T prime */
        {2, 131, 3, 17, 9, 0, 1, 0, NULL, 0, 0.5, 1, 0, 0.2, 0.5, 0}, /* odd dims, K != V */
        {1, 150, 2, 32, 48, 0, 0, 1, NULL, 0, 0.0, 1, 0, 1, 0.5, 0},  /* eta, alpha over [0, 1] */
        {1, 133, 2, 24, 40, 0, 1, 1, cu1, 5, 0.5, 1, 0, 0.2, 0.5, 0}, /* varlen */
        {1, 91, 1, 20, 67, 0, 0, 1, cu2, 3, 0.5, 1, 0, 0.2, 0.5, 2},  /* varlen, odd V, 2 thr */
        {3, 70, 4, 8, 8, 0, 1, 1, NULL, 0, 0.5, 1, 0, 0.2, 0.5, 3},   /* batches and heads, 3 thr */
    };
    for (int i = 0; i < nb; i++)
        for (size_t j = 0; j < sizeof shapes / sizeof shapes[0]; j++)
            for (size_t bi = 0; bi < sizeof bs / sizeof bs[0]; bi++)
                for (int l2 = 0; l2 < 2; l2++) {
                    bcase c = shapes[j];
                    c.b = bs[bi];
                    run_case(&be[i], &c, l2, false, "");
                }
    /* gates near the stability limits of seqk.h (head dim 64; the ends of
     * the ranges sprinkled in) */
    const bcase edges[] = {
        {1, 200, 2, 64, 64, 16, 1, 1, NULL, 0, 0.0, 1e-3, 0.999, 1, 1.0, 0},  /* eta ~ 0, alpha ~ 1 */
        {1, 200, 2, 64, 64, 1, 1, 1, NULL, 0, 0.999, 1, 0, 1e-3, 0.01, 0},    /* eta ~ 1, alpha ~ 0 */
        {1, 200, 2, 64, 64, 64, 1, 1, NULL, 0, 0.999, 1, 0.999, 1, 0.5, 0},   /* both ~ 1 */
        {1, 200, 2, 64, 64, 1, 1, 1, NULL, 0, 0.0, 1e-3, 0, 1e-3, 1.0, 0},    /* both ~ 0, theta 1 */
        {1, 200, 2, 64, 64, 16, 1, 1, NULL, 0, 0.999, 1, 0, 1e-3, 1e-3, 0},   /* momentum, b 16 */
        {1, 200, 2, 64, 64, 64, 1, 1, NULL, 0, 0.5, 1, 0, 0.2, 0.25, 0},      /* b 64, theta 1/4 */
    };
    for (int i = 0; i < nb; i++)
        for (size_t j = 0; j < sizeof edges / sizeof edges[0]; j++)
            run_case(&be[i], &edges[j], (int)(j & 1), false, " gate edges");
    /* long sequences (unit-norm keys): finite and within TOL; the second keeps
     * checkpoints (2049 segments of 8 KiB of state and 0.5 KiB of errors > 16 MiB) */
    const bcase lng[] = {
        {1, 65536, 1, 8, 8, 16, 1, 1, NULL, 0, 0.0, 1e-3, 0.0, 1e-3, 1.0, 0},
        {1, 8192, 1, 32, 32, 4, 1, 1, NULL, 0, 0.5, 1, 0, 0.2, 0.5, 0},
    };
    /* checkpointed in few tokens: 2 MiB of state per segment, 9 segments (b = 2,
     * T = 16, +1 for the state's position) > 16 MiB: groups of R = 3 */
    const bcase wide = {1, 16, 1, 512, 512, 2, 1, 1, NULL, 0, 0.5, 1, 0, 0.2, 0.5, 0};
    for (int i = 0; i < nb; i++) {
        run_case(&be[i], &lng[0], 0, true, " long");
        run_case(&be[i], &lng[1], 1, true, " long, checkpointed");
        run_case(&be[i], &wide, 1, true, " wide state, checkpointed");
    }
    /* more (sequence, head) items than the CUDA grid's 1024 blocks: blocks take
     * a second item */
    const bcase many = {1030, 2, 1, 4, 4, 2, 1, 1, NULL, 0, 0.5, 1, 0, 0.2, 0.5, 0};
    for (int i = 0; i < nb; i++) run_case(&be[i], &many, 1, false, " more items than blocks");
    bcase det = shapes[5];
    det.b = 7;
    bcase det2 = shapes[3];
    det2.b = 64;
    /* varlen whose sequences keep all their states (1001 segments of 8.25 KiB
     * with their errors: 8.3 MiB < 16 MiB) while T alone would be checkpointed
     * (3001 segments: 24.8 MiB): the query covers both */
    static const int32_t cu3[4] = {0, 2000, 4000, 6000};
    const bcase wcase = {1, 6000, 1, 32, 32, 2, 1, 1, cu3, 3, 0.5, 1, 0, 0.2, 0.5, 0};
    for (int i = 0; i < nb; i++) {
        workspace_bound(&be[i], &wcase, 1);
        determinism(&be[i], &det);
        determinism(&be[i], &det2);
        bcase w2 = shapes[5];
        w2.b = 7;
        workspace_bound(&be[i], &w2, 2);
        workspace_bound(&be[i], &lng[1], 2);
        /* the same with a wide state, short enough for the emulator: T = 16
         * alone would be checkpointed (9 segments of 2 MiB: 6 states and 3
         * errors kept, 12.6 MB), the sequence of 12 keeps all its 7 (14.7 MB) */
        static const int32_t cu4[3] = {0, 12, 16};
        const bcase wv = {1, 16, 1, 512, 512, 2, 1, 1, cu4, 2, 0.5, 1, 0, 0.2, 0.5, 0};
        workspace_bound(&be[i], &wv, 1);
    }
    for (int i = 0; i < nb; i++) {
        if (!be[i].ctx) continue;
        zero_tokens(&be[i]);
        if (be[i].backend == SEQK_BACKEND_CPU) validation(be[i].ctx);
    }
    return th_finish();
}
