/* tests/test_deltanet_backward.c -- the backward of DeltaNet and gated DeltaNet
 * (seqk_deltanet_backward), on every backend, against the float64 reverse
 * token loop of tests/ref/ref_deltanet_backward.c; that reference first
 * against central finite differences of its float64 forward; long sequences
 * (finite, and the checkpointed recomputation); determinism (two runs, 1 vs 2
 * threads); T = 0; the workspace query as an upper bound; validation rules.
 *
 * Tolerance: every gradient tensor within ||x - ref|| / ||ref|| <= 1e-4 (NaN
 * never passes; dg included, also under gates near -20 where dg ~ 1e-9),
 * every output NaN-poisoned before the call and one element past its end
 * too (it must stay NaN).
 *
 * Every case runs on every backend (the CUDA one too, gpu/deltanet_backward.cu),
 * except that under the CUDA emulator (tools/cuda_emu/run.sh, which sets
 * EMU_ORDER) the long sequences run on the CPU backend only: the emulator
 * runs each GPU thread as a fiber and has no timing or numerics of its own
 * to show there.
 */
#include "fixtures.h"
#include "ref/ref_deltanet_backward.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL 1e-4
#define FD_TOL 1e-6

typedef struct {
    int64_t B, T, H, K, V;
    int with_s0, with_dso;
    const int32_t *cu;
    int64_t N;
    int64_t chunk;
    double glo, ghi; /* log-gate range of the gated variant */
    unsigned flags;  /* SEQK_DELTANET_ALLOW_NEG_EIGVAL: beta in [0, 2] */
    int threads;     /* CPU thread count for the case (0: the default) */
} bcase;

static int64_t nseq(const bcase *c) { return c->cu ? c->N : c->B; }
static double case_scale(const bcase *c) { return 1.0 / sqrt((double)c->K); }

static double *to_doubles(tf_arrays *h, const float *x, size_t n)
{
    double *d = tf_doubles(h, n + 1);
    for (size_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}

/* Host inputs of one case and the reference gradients. */
typedef struct {
    float *q, *k, *v, *beta, *g, *s0, *dout, *dso;
    double *rq, *rk, *rv, *rbeta, *rg, *rs; /* reference gradients */
    size_t nq, nv, ng, ns;
} binputs;

/* Random inputs (unit_keys: every key row of norm 1, else tf_delta_keys) and
 * the float64 reference's gradients for them. */
static void make_case(tf_arrays *h, const bcase *c, int gated, int l2, bool unit_keys, binputs *in)
{
    const int64_t rows = c->B * c->T;
    in->nq = (size_t)(rows * c->H * c->K);
    in->nv = (size_t)(rows * c->H * c->V);
    in->ng = (size_t)(rows * c->H);
    in->ns = (size_t)(nseq(c) * c->H * c->K * c->V);
    in->q = tf_random(h, in->nq + 1, -1, 1);
    in->k = tf_floats(h, in->nq + 1);
    tf_delta_keys(in->k, rows * c->H, c->K, l2);
    if (unit_keys) tf_unit_rows(in->k, rows * c->H, c->K);
    in->v = tf_random(h, in->nv + 1, -1, 1);
    in->beta = tf_floats(h, in->ng + 1);
    tf_delta_beta(in->beta, in->ng + 1, (c->flags & SEQK_DELTANET_ALLOW_NEG_EIGVAL) != 0);
    in->g = tf_random(h, in->ng + 1, c->glo, c->ghi);
    in->s0 = tf_random(h, in->ns + 1, -0.5, 0.5);
    in->dout = tf_random(h, in->nv + 1, -1, 1);
    in->dso = tf_random(h, in->ns + 1, -1, 1);
    tf_arrays t = tf_arrays_on(NULL);
    const double *q = to_doubles(&t, in->q, in->nq), *k = to_doubles(&t, in->k, in->nq);
    const double *v = to_doubles(&t, in->v, in->nv), *b = to_doubles(&t, in->beta, in->ng);
    const double *g = to_doubles(&t, in->g, in->ng), *s0 = to_doubles(&t, in->s0, in->ns);
    const double *dout = to_doubles(&t, in->dout, in->nv), *dso = to_doubles(&t, in->dso, in->ns);
    in->rq = tf_doubles(h, in->nq + 1), in->rk = tf_doubles(h, in->nq + 1);
    in->rv = tf_doubles(h, in->nv + 1), in->rbeta = tf_doubles(h, in->ng + 1);
    in->rg = tf_doubles(h, in->ng + 1), in->rs = tf_doubles(h, in->ns + 1);
    ref_deltanet_backward64(c->B, c->T, c->H, c->K, c->V, case_scale(c), l2, q, k, v, b,
                            gated ? g : NULL, c->with_s0 ? s0 : NULL, dout,
                            c->with_dso ? dso : NULL, in->rq, in->rk, in->rv, in->rbeta,
                            gated ? in->rg : NULL, in->rs, c->cu, c->N);
    tf_arrays_free(&t);
}

/* Backend copies of one call's inputs and (poisoned, one past the end)
 * outputs. */
typedef struct {
    float *q, *k, *v, *beta, *g, *s0, *dout, *dso;
    float *dq, *dk, *dv, *dbeta, *dg, *ds;
    int32_t *cu;
} bdev;

static void upload(tf_arrays *d, const bcase *c, const binputs *in, bdev *x)
{
    x->q = tf_upload(d, in->q, in->nq * 4 + 4), x->k = tf_upload(d, in->k, in->nq * 4 + 4);
    x->v = tf_upload(d, in->v, in->nv * 4 + 4), x->beta = tf_upload(d, in->beta, in->ng * 4 + 4);
    x->g = tf_upload(d, in->g, in->ng * 4 + 4), x->s0 = tf_upload(d, in->s0, in->ns * 4 + 4);
    x->dout = tf_upload(d, in->dout, in->nv * 4 + 4);
    x->dso = tf_upload(d, in->dso, in->ns * 4 + 4);
    x->dq = tf_poisoned(d, in->nq + 1), x->dk = tf_poisoned(d, in->nq + 1);
    x->dv = tf_poisoned(d, in->nv + 1), x->dbeta = tf_poisoned(d, in->ng + 1);
    x->dg = tf_poisoned(d, in->ng + 1), x->ds = tf_poisoned(d, in->ns + 1);
    x->cu = c->cu ? tf_upload(d, c->cu, (size_t)(c->N + 1) * 4) : NULL;
}

static unsigned call_flags(const bcase *c, int l2)
{
    return c->flags | (l2 ? SEQK_DELTANET_L2NORM_QK : 0u);
}

static seqk_status call(seqk_context *ctx, const bcase *c, int gated, int l2, const bdev *x)
{
    return seqk_deltanet_backward(ctx, c->B, c->T, c->H, c->K, c->V, (float)case_scale(c),
                                  call_flags(c, l2), x->q, x->k, x->v, x->beta,
                                  gated ? x->g : NULL, c->with_s0 ? x->s0 : NULL, x->dout,
                                  c->with_dso ? x->dso : NULL, x->dq, x->dk, x->dv, x->dbeta,
                                  gated ? x->dg : NULL, x->ds, x->cu, c->N, c->chunk);
}

static void describe(const bcase *c, int gated, int l2, const char *be, const char *extra,
                     char *buf, size_t n)
{
    snprintf(buf, n,
             "%s deltanet_backward%s%s%s B=%lld T=%lld H=%lld K=%lld V=%lld chunk=%lld%s%s%s%s "
             "g~U[%g,%g]%s",
             be, gated ? " gated" : " plain", l2 ? " l2norm" : "",
             (c->flags & SEQK_DELTANET_ALLOW_NEG_EIGVAL) ? " beta<=2" : "", (long long)c->B,
             (long long)c->T, (long long)c->H, (long long)c->K, (long long)c->V,
             (long long)c->chunk, c->with_s0 ? " s0" : "", c->with_dso ? " dstate_out" : "",
             c->cu ? " varlen" : "", c->threads ? " threads" : "", gated ? c->glo : 0.0,
             gated ? c->ghi : 0.0, extra);
}

/* Under the CUDA emulator, the long cases run on the CPU backend only. */
static bool heavy_skipped(const th_backend *be, bool heavy, const char *what)
{
    if (!heavy || be->backend == SEQK_BACKEND_CPU || !getenv("EMU_ORDER")) return false;
    th_skip("%s: long case, CPU backend only under the CUDA emulator", what);
    return true;
}

/* more than this many token rows x heads make a case long (under the emulator) */
enum { HEAVY_ROWS = 16384 };

static bool is_heavy(const bcase *c) { return c->B * c->T * c->H > HEAVY_ROWS; }

/* Every gradient against the reference. */
static void run_case(th_backend *be, const bcase *c, int gated, int l2, bool unit_keys,
                     const char *extra)
{
    char what[400];
    describe(c, gated, l2, be->name, extra, what, sizeof what);
    if (th_skipped(be, what) || heavy_skipped(be, is_heavy(c), what)) return;
    tf_arrays h = tf_arrays_on(NULL), d = tf_arrays_on(be);
    binputs in;
    make_case(&h, c, gated, l2, unit_keys, &in);
    bdev x;
    upload(&d, c, &in, &x);
    th_set_threads(be, c->threads);
    const seqk_status st = call(be->ctx, c, gated, l2, &x);
    th_set_threads(be, 0);
    if (th_check_status(st, SEQK_SUCCESS, what)) {
        float *host = tf_floats(&h, in.nq + in.nv + in.ns + 1);
        tf_check_result(be, host, x.dq, in.nq, in.rq, TOL, true, what, "dq");
        th_check(tf_all_finite(host, in.nq), "%s: dq finite", what);
        tf_check_result(be, host, x.dk, in.nq, in.rk, TOL, true, what, "dk");
        tf_check_result(be, host, x.dv, in.nv, in.rv, TOL, true, what, "dv");
        tf_check_result(be, host, x.dbeta, in.ng, in.rbeta, TOL, true, what, "dbeta");
        if (gated) tf_check_result(be, host, x.dg, in.ng, in.rg, TOL, true, what, "dg");
        tf_check_result(be, host, x.ds, in.ns, in.rs, TOL, true, what, "dstate_in");
        th_check(tf_all_finite(host, in.ns), "%s: dstate_in finite", what);
    }
    tf_arrays_free(&d);
    tf_arrays_free(&h);
}

/* ---- determinism ------------------------------------------------------------------ */

/* Two runs, and 1 vs 2 threads (the case's threads when it names them:
 * the chunk-parallel walk when the pairs are fewer) (CPU): every output
 * bit-identical. */
static void determinism(th_backend *be, const bcase *c)
{
    char what[400];
    describe(c, 1, 1, be->name, " determinism", what, sizeof what);
    if (th_skipped(be, what)) return;
    tf_arrays h = tf_arrays_on(NULL), d = tf_arrays_on(be);
    binputs in;
    make_case(&h, c, 1, 1, false, &in);
    const size_t tot = 2 * in.nq + in.nv + 2 * in.ng + in.ns;
    float *runs[3];
    const int threads[3] = {c->threads ? c->threads : 2, c->threads ? c->threads : 2, 1};
    for (int r = 0; r < 3; r++) {
        bdev x;
        upload(&d, c, &in, &x);
        th_set_threads(be, threads[r]);
        th_check_status(call(be->ctx, c, 1, 1, &x), SEQK_SUCCESS, what);
        float *o = runs[r] = tf_floats(&h, tot);
        const struct { const float *p; size_t n; } parts[] = {
            {x.dq, in.nq}, {x.dk, in.nq}, {x.dv, in.nv}, {x.dbeta, in.ng}, {x.dg, in.ng},
            {x.ds, in.ns}};
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
             "%s: 1 vs %d threads bit-identical", what, threads[0]);
    tf_arrays_free(&h);
}

/* ---- workspace ------------------------------------------------------------------- */

/* A caller workspace of exactly the queried size runs. */
static void workspace_bound(th_backend *be, const bcase *c, int threads)
{
    char what[400];
    describe(c, 1, 0, be->name, " workspace bound", what, sizeof what);
    if (th_skipped(be, what) || heavy_skipped(be, is_heavy(c), what)) return;
    th_set_threads(be, threads);
    tf_arrays h = tf_arrays_on(NULL), d = tf_arrays_on(be);
    binputs in;
    make_case(&h, c, 1, 0, false, &in);
    size_t bytes = 0;
    seqk_status st = seqk_deltanet_backward_workspace_size(be->ctx, c->B, c->T, c->H, c->K, c->V,
                                                           c->cu ? c->N : 0, c->chunk, &bytes);
    if (th_check_status(st, SEQK_SUCCESS, what)) {
        void *buf = tf_workspace_begin(be, bytes);
        bdev x;
        upload(&d, c, &in, &x);
        char w2[480];
        snprintf(w2, sizeof w2, "%s (%zu bytes)", what, bytes);
        if (th_check_status(call(be->ctx, c, 1, 0, &x), SEQK_SUCCESS, w2))
            tf_check_result(be, tf_floats(&h, in.nq + 1), x.dk, in.nq, in.rk, TOL, true, w2, "dk");
        tf_workspace_end(be, buf);
        tf_arrays_free(&d);
    }
    th_set_threads(be, 0);
    tf_arrays_free(&h);
}

/* ---- T = 0 ---------------------------------------------------------------------- */

static void zero_tokens(seqk_context *ctx)
{
    enum { H = 2, K = 3, V = 4, NS = 2 * H * K * V };
    float dso[NS], ds[NS];
    for (int i = 0; i < NS; i++) dso[i] = (float)i, ds[i] = NAN;
    seqk_status st = seqk_deltanet_backward(ctx, 2, 0, H, K, V, 0.5f, 0, NULL, NULL, NULL, NULL,
                                            NULL, NULL, NULL, dso, NULL, NULL, NULL, NULL, NULL,
                                            ds, NULL, 0, 0);
    th_check_status(st, SEQK_SUCCESS, "T = 0");
    bool same = true;
    for (int i = 0; i < NS; i++) same &= ds[i] == dso[i];
    th_check(same, "T = 0: dstate_in = dstate_out");
    for (int i = 0; i < NS; i++) ds[i] = NAN;
    st = seqk_deltanet_backward(ctx, 2, 0, H, K, V, 0.5f, 0, NULL, NULL, NULL, NULL, NULL, NULL,
                                NULL, NULL, NULL, NULL, NULL, NULL, NULL, ds, NULL, 0, 0);
    th_check_status(st, SEQK_SUCCESS, "T = 0 without dstate_out");
    bool zero = true;
    for (int i = 0; i < NS; i++) zero &= ds[i] == 0.0f;
    th_check(zero, "T = 0 without dstate_out: dstate_in = 0");
}

/* ---- the reference against finite differences ------------------------------------------ */

typedef struct {
    int64_t B, T, H, K, V;
    int l2, gated, s0, dso;
    const int32_t *cu;
    int64_t N;
    double bhi;
} fdcase;

/* L = <dout, o> + <dso, s_fin> of the float64 forward. */
static double fd_loss(const fdcase *f, double *const x[7], const double *dout, const double *dso,
                      double *o, double *sf)
{
    const double scale = 0.7;
    ref_deltanet64(f->B, f->T, f->H, f->K, f->V, scale, f->l2, x[0], x[1], x[2], x[3],
                   f->gated ? x[4] : NULL, f->s0 ? x[5] : NULL, o, sf, f->cu, f->N);
    const int64_t N = f->cu ? f->N : f->B;
    const size_t nv = (size_t)(f->B * f->T * f->H * f->V), ns = (size_t)(N * f->H * f->K * f->V);
    double s = 0.0;
    for (size_t i = 0; i < nv; i++) s += dout[i] * o[i];
    if (f->dso)
        for (size_t i = 0; i < ns; i++) s += dso[i] * sf[i];
    return s;
}

static void fd_case(const fdcase *f)
{
    const int64_t N = f->cu ? f->N : f->B, rows = f->B * f->T;
    const size_t n[6] = {(size_t)(rows * f->H * f->K), (size_t)(rows * f->H * f->K),
                         (size_t)(rows * f->H * f->V), (size_t)(rows * f->H),
                         (size_t)(rows * f->H), (size_t)(N * f->H * f->K * f->V)};
    const char *names[6] = {"dq", "dk", "dv", "dbeta", "dg", "dstate_in"};
    tf_arrays h = tf_arrays_on(NULL);
    double *x[7], *gr[6], *fd[6];
    for (int i = 0; i < 6; i++) {
        x[i] = tf_doubles(&h, n[i] + 1);
        gr[i] = tf_doubles(&h, n[i] + 1);
        fd[i] = tf_doubles(&h, n[i] + 1);
    }
    x[6] = NULL;
    for (size_t i = 0; i < n[0]; i++) x[0][i] = th_uniform(-1, 1);
    for (int64_t r = 0; r < rows * f->H; r++) { /* keys of norm <= 1 without the L2 norm */
        double s = 0.0;
        for (int64_t i = 0; i < f->K; i++) {
            const double e = th_uniform(-1, 1);
            x[1][r * f->K + i] = e;
            s += e * e;
        }
        const double to = f->l2 ? 2.0 : th_uniform(0.6, 1.0);
        for (int64_t i = 0; i < f->K; i++) x[1][r * f->K + i] *= to / sqrt(s);
    }
    for (size_t i = 0; i < n[2]; i++) x[2][i] = th_uniform(-1, 1);
    for (size_t i = 0; i < n[3]; i++) x[3][i] = th_uniform(0.05, f->bhi);
    for (size_t i = 0; i < n[4]; i++) x[4][i] = th_uniform(-1.0, -0.01);
    for (size_t i = 0; i < n[5]; i++) x[5][i] = th_uniform(-0.5, 0.5);
    double *dout = tf_doubles(&h, n[2]), *dso = tf_doubles(&h, n[5]);
    for (size_t i = 0; i < n[2]; i++) dout[i] = th_uniform(-1, 1);
    for (size_t i = 0; i < n[5]; i++) dso[i] = th_uniform(-1, 1);
    double *o = tf_doubles(&h, n[2]), *sf = tf_doubles(&h, n[5]);
    const double scale = 0.7;
    ref_deltanet_backward64(f->B, f->T, f->H, f->K, f->V, scale, f->l2, x[0], x[1], x[2], x[3],
                            f->gated ? x[4] : NULL, f->s0 ? x[5] : NULL, dout,
                            f->dso ? dso : NULL, gr[0], gr[1], gr[2], gr[3],
                            f->gated ? gr[4] : NULL, gr[5], f->cu, f->N);
    const double eps = 1e-5;
    for (int a = 0; a < 6; a++) {
        if ((a == 4 && !f->gated) || (a == 5 && !f->s0)) continue;
        for (size_t i = 0; i < n[a]; i++) {
            const double x0 = x[a][i];
            x[a][i] = x0 + eps;
            const double lp = fd_loss(f, x, dout, dso, o, sf);
            x[a][i] = x0 - eps;
            const double lm = fd_loss(f, x, dout, dso, o, sf);
            x[a][i] = x0;
            fd[a][i] = (lp - lm) / (2 * eps);
        }
        double num = 0.0, den = 0.0;
        for (size_t i = 0; i < n[a]; i++) {
            num += (gr[a][i] - fd[a][i]) * (gr[a][i] - fd[a][i]);
            den += fd[a][i] * fd[a][i];
        }
        const double rel = den > 0 ? sqrt(num / den) : sqrt(num);
        th_check(rel <= FD_TOL && den > 0,
                 "reference vs finite differences: B=%lld T=%lld H=%lld K=%lld V=%lld%s%s%s%s%s "
                 "beta<=%g: %s rel err %.3g",
                 (long long)f->B, (long long)f->T, (long long)f->H, (long long)f->K,
                 (long long)f->V, f->gated ? " gated" : "", f->l2 ? " l2norm" : "",
                 f->s0 ? " s0" : "", f->dso ? " dstate_out" : "", f->cu ? " varlen" : "", f->bhi,
                 names[a], rel);
    }
    tf_arrays_free(&h);
}

static void reference_checks(void)
{
    static const int32_t cu[5] = {0, 3, 3, 4, 9}; /* lengths 3, 0, 1, 5 */
    for (int gated = 0; gated < 2; gated++)
        for (int l2 = 0; l2 < 2; l2++) {
            const fdcase a = {1, 9, 1, 4, 3, l2, gated, 1, 1, NULL, 0, 1.0};
            const fdcase b = {2, 5, 2, 3, 4, l2, gated, gated, !gated, NULL, 0, 1.0};
            const fdcase v = {1, 9, 2, 4, 2, l2, gated, 1, 1, cu, 4, 2.0};
            fd_case(&a);
            fd_case(&b);
            fd_case(&v);
        }
}

/* ---- validation ------------------------------------------------------------------ */

enum { VB_ = 1, VT = 10, VH = 2, VK = 4, VV = 3 };
/* every output of a validation call, filled with TF_UNTOUCHED before it */
static struct {
    float dq[VT * VH * VK], dk[VT * VH * VK], dv[VT * VH * VV], dbeta[VT * VH], dg[VT * VH],
        ds[2 * VH * VK * VV];
} vo;

static void validation(seqk_context *ctx)
{
    enum { B = VB_, T = VT, H = VH, K = VK, V = VV };
    float q[T * H * K], k[T * H * K], v[T * H * V], beta[T * H], g[T * H], dout[T * H * V],
        s[2 * H * K * V];
    for (size_t i = 0; i < sizeof q / 4; i++) q[i] = k[i] = 0.1f;
    for (size_t i = 0; i < sizeof v / 4; i++) v[i] = dout[i] = 0.2f;
    for (size_t i = 0; i < sizeof beta / 4; i++) beta[i] = 0.5f, g[i] = -0.1f;
    for (size_t i = 0; i < sizeof s / 4; i++) s[i] = 0.01f;
    const float *o = (const float *)&vo;
    const size_t no = sizeof vo / sizeof(float);
    const seqk_status INV = SEQK_ERROR_INVALID_ARGUMENT;
#define RESET() tf_fill_untouched((float *)&vo, no)
#define CALL(B_, T_, H_, K_, ...) seqk_deltanet_backward(ctx, B_, T_, H_, K_, V, __VA_ARGS__)
#define OK_ARGS q, k, v, beta, g, NULL, dout, NULL, vo.dq, vo.dk, vo.dv, vo.dbeta, vo.dg, vo.ds
#define EXPECT(got, want, needle, rule) \
    (RESET(), tf_expect_rejected(got, want, needle, rule, o, no, NULL, 0))
    EXPECT(CALL(B, T, 0, K, 1, 0, OK_ARGS, NULL, 0, 0), INV, "H=0", "H=0");
    EXPECT(CALL(B, T, H, 2000, 1, 0, OK_ARGS, NULL, 0, 0), SEQK_ERROR_UNSUPPORTED, "K=2000",
           "K too large");
    EXPECT(CALL(B, T, H, K, 1, 0, OK_ARGS, NULL, 0, 4096), INV, "chunk=4096", "chunk=4096");
    EXPECT(CALL(B, T, H, K, NAN, 0, OK_ARGS, NULL, 0, 0), INV, "scale=nan", "scale NaN");
    EXPECT(CALL(B, T, H, K, 1, 0x10, OK_ARGS, NULL, 0, 0), INV, "flags=0x10", "unknown flags");
    EXPECT(CALL(B, T, H, K, 1, 0, NULL, k, v, beta, g, NULL, dout, NULL, vo.dq, vo.dk, vo.dv,
                vo.dbeta, vo.dg, vo.ds, NULL, 0, 0),
           INV, "q is NULL", "q NULL");
    EXPECT(CALL(B, T, H, K, 1, 0, q, k, v, NULL, g, NULL, dout, NULL, vo.dq, vo.dk, vo.dv,
                vo.dbeta, vo.dg, vo.ds, NULL, 0, 0),
           INV, "beta is NULL", "beta NULL");
    EXPECT(CALL(B, T, H, K, 1, 0, q, k, v, beta, g, NULL, NULL, NULL, vo.dq, vo.dk, vo.dv,
                vo.dbeta, vo.dg, vo.ds, NULL, 0, 0),
           INV, "dout is NULL", "dout NULL");
    EXPECT(CALL(B, T, H, K, 1, 0, q, k, v, beta, g, NULL, dout, NULL, NULL, vo.dk, vo.dv,
                vo.dbeta, vo.dg, vo.ds, NULL, 0, 0),
           INV, "dq is NULL", "dq NULL");
    EXPECT(CALL(B, T, H, K, 1, 0, q, k, v, beta, g, NULL, dout, NULL, vo.dq, NULL, vo.dv,
                vo.dbeta, vo.dg, vo.ds, NULL, 0, 0),
           INV, "dk is NULL", "dk NULL");
    EXPECT(CALL(B, T, H, K, 1, 0, q, k, v, beta, g, NULL, dout, NULL, vo.dq, vo.dk, NULL,
                vo.dbeta, vo.dg, vo.ds, NULL, 0, 0),
           INV, "dv is NULL", "dv NULL");
    EXPECT(CALL(B, T, H, K, 1, 0, q, k, v, beta, g, NULL, dout, NULL, vo.dq, vo.dk, vo.dv, NULL,
                vo.dg, vo.ds, NULL, 0, 0),
           INV, "dbeta is NULL", "dbeta NULL");
    EXPECT(CALL(B, T, H, K, 1, 0, q, k, v, beta, g, NULL, dout, NULL, vo.dq, vo.dk, vo.dv,
                vo.dbeta, NULL, vo.ds, NULL, 0, 0),
           INV, "dg is NULL, required when g is given", "dg NULL with g");
    EXPECT(CALL(B, T, H, K, 1, 0, q, k, v, beta, NULL, NULL, dout, NULL, vo.dq, vo.dk, vo.dv,
                vo.dbeta, vo.dg, vo.ds, NULL, 0, 0),
           INV, "must be NULL when g is NULL", "dg without g");
    EXPECT(CALL(B, T, H, K, 1, 0, q, k, v, beta, g, NULL, dout, NULL, (float *)q, vo.dk, vo.dv,
                vo.dbeta, vo.dg, vo.ds, NULL, 0, 0),
           INV, "overlaps q", "dq overlapping q");
    EXPECT(CALL(B, T, H, K, 1, 0, q, k, v, beta, g, NULL, dout, NULL, vo.dq, vo.dq + 1, vo.dv,
                vo.dbeta, vo.dg, vo.ds, NULL, 0, 0),
           INV, "overlaps dq", "dk overlapping dq");
    EXPECT(CALL(B, T, H, K, 1, 0, q, k, v, beta, g, NULL, dout, NULL, vo.dq, vo.dk,
                (float *)dout, vo.dbeta, vo.dg, vo.ds, NULL, 0, 0),
           INV, "overlaps dout", "dv overlapping dout");
    EXPECT(CALL(B, T, H, K, 1, 0, q, k, v, beta, g, NULL, dout, s, vo.dq, vo.dk, vo.dv, vo.dbeta,
                vo.dg, s + 1, NULL, 0, 0),
           INV, "overlaps dstate_out", "dstate_in overlapping dstate_out");
    EXPECT(CALL(B, T, H, K, 1, 0, q, k, v, beta, g, s, dout, NULL, vo.dq, vo.dk, vo.dv, vo.dbeta,
                vo.dg, s, NULL, 0, 0),
           INV, "overlaps state_in", "dstate_in = state_in");
    /* beta's range */
    beta[17] = 1.5f;
    EXPECT(CALL(B, T, H, K, 1, 0, OK_ARGS, NULL, 0, 0), INV,
           "seqk_deltanet_backward: beta[17]=1.5, must be in [0, 1]", "beta above 1");
    beta[17] = 2.5f;
    EXPECT(CALL(B, T, H, K, 1, SEQK_DELTANET_ALLOW_NEG_EIGVAL, OK_ARGS, NULL, 0, 0), INV,
           "beta[17]=2.5, must be in [0, 2]", "beta above 2 with the flag");
    beta[17] = NAN;
    EXPECT(CALL(B, T, H, K, 1, 0, OK_ARGS, NULL, 0, 0), INV, "beta[17]=nan", "beta NaN");
    beta[17] = 0.5f;
    const int32_t cu_bad[3] = {0, 6, 5}, cu_end[3] = {0, 2, 4};
    EXPECT(CALL(B, T, H, K, 1, 0, OK_ARGS, cu_bad, 2, 0), INV, "cu_seqlens[2]=5 < cu_seqlens[1]=6",
           "cu_seqlens decreasing");
    EXPECT(CALL(B, T, H, K, 1, 0, OK_ARGS, cu_end, 2, 0), INV, "must equal T=10",
           "cu_seqlens[N] != T");
    EXPECT(CALL(2, T / 2, H, K, 1, 0, OK_ARGS, cu_end, 2, 0), INV, "B=2 with cu_seqlens",
           "B=2 with cu_seqlens");
    /* the same arguments pass */
    RESET();
    th_check_status(CALL(B, T, H, K, 1, 0, OK_ARGS, NULL, 0, 0), SEQK_SUCCESS,
                    "validation: the valid call");
    size_t bytes = 0;
    th_check_status(seqk_deltanet_backward_workspace_size(ctx, B, T, H, K, V, 0, 0, NULL), INV,
                    "validation: workspace size with bytes NULL");
    th_check(strstr(seqk_last_error(), "bytes is NULL") != NULL,
             "validation: workspace size message names bytes: %s", seqk_last_error());
    th_check_status(seqk_deltanet_backward_workspace_size(ctx, B, T, H, K, V, 0, 0, &bytes),
                    SEQK_SUCCESS, "workspace size");
#undef EXPECT
#undef OK_ARGS
#undef CALL
#undef RESET
}

int main(int argc, char **argv)
{
    th_backend *be;
    int nb = th_init(argc, argv, &be);
    th_seed(23);
    reference_checks();
    const int32_t *cu1 = tf_cu_133, *cu2 = tf_cu_91; /* empty and length-1 sequences */
    const unsigned NEG = SEQK_DELTANET_ALLOW_NEG_EIGVAL;
    const bcase cases[] = {
        /* B  T    H  K   V  s0 dso cu  N chunk glo  ghi flags threads */
        {1, 1, 1, 8, 8, 0, 0, NULL, 0, 0, -0.05, 0, 0, 0},        /* T = 1 */
        {2, 1, 3, 16, 12, 1, 1, NULL, 0, 0, -0.05, 0, 0, 0},      /* T = 1 with the states */
        {1, 37, 2, 16, 16, 1, 1, NULL, 0, 0, -0.05, 0, 0, 0},     /* T prime < chunk */
        {2, 131, 3, 17, 9, 1, 0, NULL, 0, 0, -0.5, 0, 0, 0},      /* T prime, odd dims, K != V */
        {1, 150, 2, 32, 32, 1, 1, NULL, 0, 16, -0.02, 0, 0, 0},   /* gates near 0 */
        {1, 150, 2, 32, 32, 1, 1, NULL, 0, 16, -21, -19, 0, 0},   /* gates near -20 */
        {1, 100, 1, 64, 48, 0, 1, NULL, 0, 64, -0.1, 0, 0, 0},    /* chunk 64, no state_in */
        {1, 133, 2, 24, 40, 1, 1, cu1, 5, 32, -0.3, 0, 0, 0},     /* varlen */
        {1, 91, 2, 20, 67, 0, 1, cu2, 3, 16, -0.3, 0, 0, 2},      /* varlen, odd V, 2 threads */
        {4, 100, 4, 8, 8, 1, 1, NULL, 0, 7, -1, 0, 0, 0},         /* several batches and heads */
        {1, 160, 2, 32, 48, 1, 1, NULL, 0, 16, -0.1, 0, NEG, 0},  /* beta in [0, 2] */
        {1, 64, 1, 33, 35, 1, 1, NULL, 0, 1, -0.2, 0, 0, 0},      /* chunk 1 */
        {1, 97, 3, 5, 3, 1, 0, NULL, 0, 16, -0.5, 0, 0, 2},       /* tiny dims, 2 threads */
        /* fewer (sequence, head) pairs than threads: the chunk-parallel walk */
        {1, 131, 1, 17, 40, 1, 1, NULL, 0, 16, -0.5, 0, 0, 3},    /* 3 column blocks (16 16 8) */
        {1, 133, 1, 24, 40, 1, 1, cu1, 5, 32, -0.3, 0, 0, 8},     /* varlen, 5 pairs, 8 threads */
        {1, 100, 1, 64, 48, 0, 0, NULL, 0, 16, -0.1, 0, 0, 2},    /* no states given */
        {1, 70, 1, 8, 8, 1, 1, NULL, 0, 16, -0.2, 0, 0, 4},       /* V = 8: one column block */
    };
    for (int i = 0; i < nb; i++)
        for (size_t j = 0; j < sizeof cases / sizeof cases[0]; j++)
            for (int gated = 0; gated < 2; gated++)
                for (int l2 = 0; l2 < 2; l2++) run_case(&be[i], &cases[j], gated, l2, false, "");
    /* long sequences, unit-norm keys: finite and within TOL; the last one
     * keeps checkpoints (4096 chunk states of 4 KiB > 8 MiB) */
    const bcase lng[] = {
        {1, 65536, 2, 16, 16, 1, 1, NULL, 0, 64, -0.02, 0, 0, 0},
        {1, 65536, 2, 16, 16, 1, 1, NULL, 0, 64, -21, -19, 0, 0},
        {1, 8192, 1, 32, 32, 1, 1, NULL, 0, 2, -0.05, 0, 0, 0},
    };
    for (int i = 0; i < nb; i++) {
        run_case(&be[i], &lng[0], 0, 0, true, " long");
        run_case(&be[i], &lng[0], 1, 0, true, " long");
        run_case(&be[i], &lng[1], 1, 0, true, " long");
        run_case(&be[i], &lng[2], 1, 1, true, " long, checkpointed");
    }
    const bcase det = {1, 133, 3, 24, 40, 1, 1, cu1, 5, 16, -0.3, 0, 0, 0};
    /* varlen whose sequences keep all their states (2000 chunks of 4 KiB)
     * while T alone would be checkpointed: the query covers both */
    static const int32_t cu3[4] = {0, 2000, 4000, 6000};
    const bcase wcase = {1, 6000, 1, 32, 32, 1, 1, cu3, 3, 1, -0.05, 0, 0, 0};
    for (int i = 0; i < nb; i++) {
        workspace_bound(&be[i], &wcase, 1);
        determinism(&be[i], &det);
        determinism(&be[i], &cases[3]);
        /* every case that names its threads: with fewer pairs than them the
         * chunk-parallel walk, against one thread's per-pair walk */
        /* (and their queried workspaces: varlen queries of it among them) */
        for (size_t j = 0; j < sizeof cases / sizeof cases[0]; j++)
            if (cases[j].threads) {
                determinism(&be[i], &cases[j]);
                workspace_bound(&be[i], &cases[j], cases[j].threads);
            }
        workspace_bound(&be[i], &cases[7], 2);
        workspace_bound(&be[i], &cases[9], 1);
        workspace_bound(&be[i], &lng[2], 2);
    }
    for (int i = 0; i < nb; i++)
        if (be[i].backend == SEQK_BACKEND_CPU && be[i].ctx) {
            zero_tokens(be[i].ctx);
            validation(be[i].ctx);
        }
    return th_finish();
}
