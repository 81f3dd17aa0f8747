/* tests/test_dtype_native.c -- the native bf16 / f16 path of the linear-state
 * forwards (seqk.h, "Dtypes": linear attention, retention, gated retention
 * and Mamba2 in the parallel mode on a CUDA context: operands rounded to the
 * dtype inside the op, products with fp32 accumulation, fp32 states) and of
 * DeltaNet / gated DeltaNet (seqk_deltanet_ex, parallel mode, L2 norm on and
 * off), in all three dtypes on every backend (the CPU runs the converting
 * path: the same bound must hold there).
 *
 * Per case and dtype: the inputs that take the dtype are rounded to it first
 * (tests/fixtures.c, from double), so that the float64 reference (tests/ref)
 * of those rounded inputs measures the kernel, not the input rounding. Then
 *   - o (y) against that reference rounded to the dtype:
 *     ||o - ref|| / ||ref|| <= NATIVE_TOL_ULPS u (u = 2^-8 bf16, 2^-11 f16;
 *     fp32: F32_TOL);
 *   - the final state (fp32) against the reference's: STATE_TOL_ULPS u
 *     (fp32: F32_TOL; DeltaNet, whose native state recurrence is fp32 on
 *     exact inputs: F32_TOL in every dtype);
 *   - outputs poisoned before the call, nothing written past their ends.
 * Shapes (DESIGN 5): T = 1, T prime (37), T a multiple of the chunk, T not a
 * multiple (100 in chunks of 32), T shorter than a chunk, K != V, odd head
 * dims (5 x 7, 33 x 17), the default chunk with K = V = 64, several batches
 * and heads, Mamba2 groups, varlen with empty and length-1 sequences,
 * initial state present and absent, gates near 0 ([-0.01, 0]), moderate
 * ([-1, 0]) and near -20 ([-20, -19]); the elu+1 feature map. DeltaNet:
 * plain and gated (the three gate ranges), L2 norm on (raw keys in [-3, 3])
 * and off (keys of norm 0.6 .. 1, rounded), beta in [0, 1] with its edges
 * (tests/fixtures.c), on the same shapes (and a 288-token chunk, wider than
 * the native kernels' 256-thread blocks). DeltaNet's native path is routed
 * by SEQK__DN_NATIVE (ssm/deltanet.c); while that is off its CUDA cases run
 * the converting path, within the same bounds.
 * Validation where the native path brings rules of its own: overlaps are
 * measured in the dtype's bytes (a bf16 o right after q in one buffer is
 * accepted; one element of overlap is rejected, o untouched); the
 * normaliser and the recurrent mode stay on the converting path (their
 * outputs are the fp32 op's rounded, bit for bit); a caller workspace of
 * exactly the _ex query's size works.
 * Backward (the native backward of the four linear-state ops and of DeltaNet
 * on CUDA, the converting one on the CPU): the same cases with dout
 * (rounded) and, with an initial state, dstate_out; dq, dk, dv (dCm, dBm,
 * dx) against the float64 gradients of the rounded inputs
 * (tests/ref/ref_linear_backward.c, tests/ref/ref_deltanet_backward.c)
 * rounded to the dtype, BWD_TOL_ULPS u; the fp32 gradients (dstate_in, dg;
 * Mamba2's ddt, dA, dD, ddt_bias; dA and ddt_bias against the norm of their
 * summands) BWD_F32OUT_TOL_ULPS u, DeltaNet's (dstate_in, dg, dbeta)
 * DN_BWD_F32OUT_TOL_ULPS u; fp32 calls F32_BWD_TOL; nothing written past any
 * output; a caller workspace of exactly the backward _ex query's size once
 * per op. DeltaNet's backward is routed to the native path by
 * ssm/deltanet_backward.c; without that routing its CUDA cases run the
 * converting path, within the same bounds.
 * Prints the worst error per backend and dtype, linear state and DeltaNet
 * apart, and per backward op.
 */
#include "fixtures.h"
#include "ref/ref_deltanet.h"
#include "ref/ref_deltanet_backward.h"
#include "ref/ref_linear.h"
#include "ref/ref_linear_backward.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The bounds stated in seqk.h ("Dtypes", native path). */
#define NATIVE_TOL_ULPS 3.0
#define STATE_TOL_ULPS 2.0
#define F32_TOL 1e-5

enum { OP_LINATTN, OP_LINATTN_ELU, OP_RETNET, OP_GATED, OP_MAMBA2,
       OP_DN, OP_DN_L2, OP_GDN, OP_GDN_L2, NOPS };
static const char *OPNAME[NOPS] = {"linear_attention", "linear_attention elu1", "retention",
                                   "gated_retention", "mamba2", "deltanet", "deltanet l2norm",
                                   "gated_deltanet", "gated_deltanet l2norm"};

static int is_dn(int op) { return op >= OP_DN; }
static int dn_gated(int op) { return op == OP_GDN || op == OP_GDN_L2; }
static int dn_l2(int op) { return op == OP_DN_L2 || op == OP_GDN_L2; }

typedef struct ncase {
    int op;
    int64_t B, T, H, G, K, V, N, chunk;
    const int32_t *cu;
    int state;       /* an initial state */
    double glo, ghi; /* gated retention's log-gates; Mamba2's dt range */
} ncase;

static const seqk_dtype DTYPES[3] = {SEQK_DTYPE_F32, SEQK_DTYPE_BF16, SEQK_DTYPE_F16};
static double worst[2][3], worst_state[2][3]; /* [cpu, cuda][dtype], in u (fp32: absolute) */
static double worst_dn[2][3], worst_dn_state[2][3]; /* the same over the DeltaNet cases */

/* T = 37: 4 sequences of 0, 1, 19 and 17 tokens */
static const int32_t CU37[5] = {0, 0, 1, 20, 37};

/* ---- dtype buffers ------------------------------------------------------------- */

/* x [n] (already dtype values) on the backend in dtype, plus one sentinel. */
static void *up_dt(th_backend *be, seqk_dtype dt, const float *x, size_t n)
{
    if (dt == SEQK_DTYPE_F32) {
        float *t = th_floats(n + 1);
        memcpy(t, x, n * 4);
        t[n] = NAN;
        void *d = th_upload(be, t, (n + 1) * 4);
        free(t);
        return d;
    }
    uint16_t *e = th_malloc((n + 1) * 2);
    for (size_t i = 0; i < n; i++) e[i] = tf_dt_encode(dt, x[i]);
    e[n] = 0xffffu;
    void *d = th_upload(be, e, (n + 1) * 2);
    free(e);
    return d;
}

/* A poisoned dtype output of n elements (+ sentinel). */
static void *poisoned_dt(th_backend *be, seqk_dtype dt, size_t n)
{
    if (dt == SEQK_DTYPE_F32) return th_poisoned(be, n + 1);
    uint16_t *e = th_malloc((n + 1) * 2);
    memset(e, 0xff, (n + 1) * 2);
    void *d = th_upload(be, e, (n + 1) * 2);
    free(e);
    return d;
}

/* The n values of a dtype output, widened, into out; whether the sentinel
 * past them is still poison. */
static bool down_dt(th_backend *be, seqk_dtype dt, const void *d, size_t n, float *out)
{
    if (dt == SEQK_DTYPE_F32) {
        float *t = th_floats(n + 1);
        th_download(be, t, d, (n + 1) * 4);
        memcpy(out, t, n * 4);
        const bool ok = isnan(t[n]);
        free(t);
        return ok;
    }
    uint16_t *e = th_malloc((n + 1) * 2);
    th_download(be, e, d, (n + 1) * 2);
    for (size_t i = 0; i < n; i++) out[i] = (float)tf_dt_decode(dt, e[i]);
    const bool ok = e[n] == 0xffffu;
    free(e);
    return ok;
}

static void round_all(seqk_dtype dt, float *x, size_t n)
{
    if (dt != SEQK_DTYPE_F32)
        for (size_t i = 0; i < n; i++) x[i] = (float)tf_dt_round(dt, x[i]);
}

/* ---- one case ---------------------------------------------------------------------- */

typedef struct inputs {
    size_t rows, nq, nv, nt, ns;
    float *q, *k, *v, *g, *gamma, *s0;              /* linear state (q = Cm, k = Bm, v = x) */
    float *beta;                                    /* DeltaNet */
    float *dt, *A, *D, *dt_bias;                    /* Mamba2 */
    double *ro, *rs;
} inputs;

static void make_inputs(const ncase *c, seqk_dtype dt, inputs *in)
{
    const int64_t Hqk = c->op == OP_MAMBA2 ? c->G : c->H;
    memset(in, 0, sizeof *in);
    in->rows = (size_t)(c->B * c->T);
    in->nq = in->rows * (size_t)(Hqk * c->K), in->nv = in->rows * (size_t)(c->H * c->V);
    in->nt = in->rows * (size_t)c->H, in->ns = (size_t)(c->N * c->H * c->K * c->V);
    th_seed(7000 + (uint64_t)(c->op * 131 + c->T * 7 + c->K * 3 + c->V + c->state));
    in->q = th_floats(in->nq + 1), in->k = th_floats(in->nq + 1), in->v = th_floats(in->nv + 1);
    th_fill(in->q, in->nq, -1, 1), th_fill(in->k, in->nq, -1, 1), th_fill(in->v, in->nv, -1, 1);
    if (is_dn(c->op)) /* keys of norm 0.6 .. 1 (x 3 unnormalised with the L2 norm) */
        tf_delta_keys(in->k, (int64_t)in->rows * c->H, c->K, dn_l2(c->op));
    round_all(dt, in->q, in->nq), round_all(dt, in->k, in->nq), round_all(dt, in->v, in->nv);
    in->g = th_floats(in->nt + 1);
    th_fill(in->g, in->nt, c->glo, c->ghi);
    in->gamma = th_floats((size_t)c->H);
    for (int64_t h = 0; h < c->H; h++) in->gamma[h] = (float)(1.0 - ldexp(1.0, (int)(-2 - h)));
    if (c->state) {
        in->s0 = th_floats(in->ns + 1);
        th_fill(in->s0, in->ns, -0.5, 0.5);
    }
    if (c->op == OP_MAMBA2) {
        in->dt = in->g; /* raw dt, softplus'd with the bias */
        in->A = th_floats((size_t)c->H), in->D = th_floats((size_t)c->H);
        in->dt_bias = th_floats((size_t)c->H);
        th_fill(in->A, (size_t)c->H, -1.0, -0.1), th_fill(in->D, (size_t)c->H, -1, 1);
        th_fill(in->dt_bias, (size_t)c->H, -0.5, 0.5);
    }
    in->ro = th_doubles(in->nv + 1), in->rs = th_doubles(in->ns + 1);
    if (is_dn(c->op)) {
        in->beta = th_floats(in->nt + 1);
        tf_delta_beta(in->beta, in->nt + 1, 0);
        ref_deltanet(c->B, c->T, c->H, c->K, c->V, 1.0 / sqrt((double)c->K), dn_l2(c->op), in->q,
                     in->k, in->v, in->beta, dn_gated(c->op) ? in->g : NULL, in->s0, in->ro,
                     in->rs, c->cu, c->N);
        return;
    }
    const double scale = c->op == OP_MAMBA2 ? 1.0 : 1.0 / sqrt((double)c->K);
    if (c->op == OP_MAMBA2) {
        ref_mamba2(c->B, c->T, c->H, c->V, c->G, c->K, 1, in->v, in->dt, in->A, in->k, in->q,
                   in->D, in->dt_bias, in->s0, in->ro, in->rs, c->cu, c->N);
        return;
    }
    ref_decay dec = {0, NULL, NULL};
    if (c->op == OP_RETNET) dec.kind = 1, dec.gamma = in->gamma;
    if (c->op == OP_GATED) dec.kind = 2, dec.g = in->g;
    ref_linear_state(c->B, c->T, c->H, c->K, c->V, scale, 0, c->op == OP_LINATTN_ELU, dec, in->q,
                     in->k, in->v, in->s0, NULL, in->ro, in->rs, NULL, c->cu, c->N);
}

static void free_inputs(inputs *in)
{
    free(in->q), free(in->k), free(in->v), free(in->g), free(in->gamma), free(in->s0);
    free(in->A), free(in->D), free(in->dt_bias), free(in->ro), free(in->rs), free(in->beta);
}

/* Device arrays of one call. */
typedef struct dev {
    void *q, *k, *v, *o;
    float *g, *gamma, *s0, *s1, *A, *D, *dt_bias, *beta;
    int32_t *cu;
} dev;

static seqk_status call(th_backend *be, seqk_dtype dt, const ncase *c, seqk_mode mode,
                        unsigned flags, const dev *d)
{
    seqk_context *ctx = be->ctx;
    const float scale = c->op == OP_MAMBA2 ? 1.0f : (float)(1.0 / sqrt((double)c->K));
    const int64_t N = c->N;
    switch (c->op) {
    case OP_LINATTN:
    case OP_LINATTN_ELU:
        return seqk_linear_attention_ex(ctx, dt, mode, c->B, c->T, c->H, c->K, c->V, scale,
                                        flags | (c->op == OP_LINATTN_ELU ? SEQK_LINATTN_ELU1 : 0u),
                                        d->q, d->k, d->v, d->o, d->s0, d->s1, NULL, NULL, d->cu, N,
                                        c->chunk);
    case OP_RETNET:
        return seqk_retention_ex(ctx, dt, mode, c->B, c->T, c->H, c->K, c->V, scale, d->gamma,
                                 d->q, d->k, d->v, d->o, d->s0, d->s1, d->cu, N, c->chunk);
    case OP_GATED:
        return seqk_gated_retention_ex(ctx, dt, mode, c->B, c->T, c->H, c->K, c->V, scale, d->q,
                                       d->k, d->v, d->g, d->o, d->s0, d->s1, d->cu, N, c->chunk);
    case OP_DN:
    case OP_DN_L2:
    case OP_GDN:
    case OP_GDN_L2:
        return seqk_deltanet_ex(ctx, dt, mode, c->B, c->T, c->H, c->K, c->V, scale,
                                flags | (dn_l2(c->op) ? SEQK_DELTANET_L2NORM_QK : 0u), d->q, d->k,
                                d->v, d->beta, dn_gated(c->op) ? d->g : NULL, d->o, d->s0, d->s1,
                                d->cu, N, c->chunk);
    default:
        return seqk_mamba2_ex(ctx, dt, mode, c->B, c->T, c->H, c->V, c->G, c->K,
                              SEQK_MAMBA2_DT_SOFTPLUS, d->v, d->g, d->A, d->k, d->q, d->D,
                              d->dt_bias, d->o, d->s0, d->s1, d->cu, N, c->chunk);
    }
}

static void upload(th_backend *be, seqk_dtype dt, const ncase *c, const inputs *in, dev *d)
{
    memset(d, 0, sizeof *d);
    d->q = up_dt(be, dt, in->q, in->nq), d->k = up_dt(be, dt, in->k, in->nq);
    d->v = up_dt(be, dt, in->v, in->nv), d->o = poisoned_dt(be, dt, in->nv);
    d->g = th_upload(be, in->g, (in->nt + 1) * 4);
    d->gamma = th_upload(be, in->gamma, (size_t)c->H * 4);
    if (in->s0) d->s0 = th_upload(be, in->s0, in->ns * 4);
    d->s1 = th_poisoned(be, in->ns + 1);
    if (in->A) {
        d->A = th_upload(be, in->A, (size_t)c->H * 4), d->D = th_upload(be, in->D, (size_t)c->H * 4);
        d->dt_bias = th_upload(be, in->dt_bias, (size_t)c->H * 4);
    }
    if (in->beta) d->beta = th_upload(be, in->beta, (in->nt + 1) * 4);
    if (c->cu) d->cu = th_upload(be, c->cu, (size_t)(c->N + 1) * 4);
}

static void release(th_backend *be, dev *d)
{
    void *all[13] = {d->q, d->k,  d->v, d->o,       d->g,  d->gamma, d->s0,
                     d->s1, d->A, d->D, d->dt_bias, d->cu, d->beta};
    for (int i = 0; i < 13; i++)
        if (all[i]) th_free(be, all[i]);
}

static size_t query(th_backend *be, seqk_dtype dt, const ncase *c)
{
    size_t bytes = 0;
    const seqk_status st =
        is_dn(c->op)
            ? seqk_deltanet_workspace_size_ex(be->ctx, dt, SEQK_MODE_PARALLEL, c->B, c->T, c->H,
                                              c->K, c->V, c->cu ? c->N : 0, c->chunk, &bytes)
            : seqk_linear_state_workspace_size_ex(be->ctx, dt, SEQK_MODE_PARALLEL, c->B, c->T,
                                                  c->H, c->K, c->V, c->cu ? c->N : 0, c->chunk,
                                                  &bytes);
    th_check_status(st, SEQK_SUCCESS, "workspace query");
    return bytes;
}

static void run_case(th_backend *be, const ncase *c, seqk_dtype dt, int with_ws)
{
    char what[256];
    snprintf(what, sizeof what,
             "%s: %s %s B=%lld T=%lld H=%lld K=%lld V=%lld chunk=%lld%s%s g=[%g,%g]%s", be->name,
             OPNAME[c->op], seqk_dtype_string(dt), (long long)c->B, (long long)c->T,
             (long long)c->H, (long long)c->K, (long long)c->V, (long long)c->chunk,
             c->cu ? " varlen" : "", c->state ? " state" : "", c->glo, c->ghi,
             with_ws ? " (caller workspace of the queried size)" : "");
    if (th_skipped(be, what)) return;
    inputs in;
    make_inputs(c, dt, &in);
    dev d;
    upload(be, dt, c, &in, &d);
    void *ws = with_ws ? tf_workspace_begin(be, query(be, dt, c)) : NULL;
    const seqk_status st = call(be, dt, c, SEQK_MODE_PARALLEL, 0u, &d);
    if (with_ws) tf_workspace_end(be, ws);
    if (th_check_status(st, SEQK_SUCCESS, what)) {
        float *o = th_floats(in.nv + 1), *s = th_floats(in.ns + 1);
        const bool o_end = down_dt(be, dt, d.o, in.nv, o);
        th_download(be, s, d.s1, (in.ns + 1) * 4);
        th_check(o_end && isnan(s[in.ns]), "%s: nothing written past o / state_out", what);
        const int bi = be->backend == SEQK_BACKEND_CUDA;
        if (dt == SEQK_DTYPE_F32) {
            const double e = th_rel_err(o, in.ro, in.nv), es = th_rel_err(s, in.rs, in.ns);
            double *w = is_dn(c->op) ? worst_dn[bi] : worst[bi];
            double *ws_ = is_dn(c->op) ? worst_dn_state[bi] : worst_state[bi];
            if (e > w[dt]) w[dt] = e;
            if (es > ws_[dt]) ws_[dt] = es;
            th_check(e <= F32_TOL, "%s: o against float64: %.3g (tol %.3g)", what, e, F32_TOL);
            th_check(es <= F32_TOL, "%s: final state against float64: %.3g (tol %.3g)", what, es,
                     F32_TOL);
        } else {
            for (size_t i = 0; i < in.nv; i++) in.ro[i] = tf_dt_round(dt, in.ro[i]);
            const double u = tf_dt_unit(dt);
            const double e = th_rel_err(o, in.ro, in.nv) / u, es = th_rel_err(s, in.rs, in.ns) / u;
            double *w = is_dn(c->op) ? worst_dn[bi] : worst[bi];
            double *ws_ = is_dn(c->op) ? worst_dn_state[bi] : worst_state[bi];
            if (e > w[dt]) w[dt] = e;
            if (es > ws_[dt]) ws_[dt] = es;
            th_check(e <= NATIVE_TOL_ULPS, "%s: o against float64: %.3g u (tol %.3g u)", what, e,
                     NATIVE_TOL_ULPS);
            if (is_dn(c->op)) /* fp32 throughout: the fp32 op's bound */
                th_check(es * u <= F32_TOL, "%s: final state against float64: %.3g (tol %.3g)",
                         what, es * u, F32_TOL);
            else
                th_check(es <= STATE_TOL_ULPS,
                         "%s: final state against float64: %.3g u (tol %.3g u)", what, es,
                         STATE_TOL_ULPS);
        }
        free(o), free(s);
    }
    release(be, &d);
    free_inputs(&in);
}

/* ---- backward (linear-state ops) ------------------------------------------------------ */

/* The bounds stated in seqk.h ("Dtypes", native backward) for the dtype
 * gradients (dq, dk, dv; dCm, dBm, dx) and the fp32 ones (dstate_in, dg;
 * Mamba2's ddt, dA, dD, ddt_bias), in u, relative in norm; fp32 runs:
 * F32_BWD_TOL. */
#define BWD_TOL_ULPS 3.0
#define BWD_F32OUT_TOL_ULPS 2.0
/* DeltaNet's fp32 gradients (dstate_in, dg, dbeta): three roundings per term
 * (seqk.h, "Native DeltaNet backward") */
#define DN_BWD_F32OUT_TOL_ULPS 3.0
#define F32_BWD_TOL 1e-4

enum { BOP_LINATTN, BOP_RETNET, BOP_GATED, BOP_MAMBA2, BOP_DN, BOP_DN_L2, BOP_GDN,
       BOP_GDN_L2, NBOPS };
static const char *BOPNAME[NBOPS] = {"linear_attention", "retention", "gated_retention",
                                     "mamba2", "deltanet", "deltanet l2norm", "gated_deltanet",
                                     "gated_deltanet l2norm"};
static int bop_of(int op)
{
    if (is_dn(op)) return BOP_DN + (op - OP_DN);
    return op == OP_RETNET ? BOP_RETNET : op == OP_GATED ? BOP_GATED
                                        : op == OP_MAMBA2 ? BOP_MAMBA2 : BOP_LINATTN;
}
/* DeltaNet's dbeta (fp32) apart: [cpu, cuda][dtype] */
static double worst_dbeta[2][3];
/* [cpu, cuda][op][dtype]: dtype gradients in u, fp32 gradients in u (fp32: absolute) */
static double worst_b[2][NBOPS][3], worst_bf[2][NBOPS][3];

/* A backward output: its device array, count, dtype (or fp32), reference
 * and, for Mamba2's per-head sums over tokens dA and ddt_bias, the size of
 * their summands (sum_t |term_t| per head: the error is measured against its
 * norm, as the bound holds for each summand; they cancel to a sum a few
 * times smaller). */
typedef struct bout {
    const char *name;
    void *d;
    size_t n;
    int in_dtype;
    double *ref;
    double *scale; /* [n] or NULL: the reference's own norm */
} bout;

/* ||x - ref|| / ||scale|| */
static double err_against(const float *x, const double *ref, const double *scale, size_t n)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        num += (x[i] - ref[i]) * (x[i] - ref[i]);
        den += scale[i] * scale[i];
    }
    return den > 0.0 ? sqrt(num / den) : sqrt(num);
}

static void run_bwd_case(th_backend *be, const ncase *c, seqk_dtype dt, int with_ws)
{
    char what[256];
    snprintf(what, sizeof what,
             "%s: %s backward %s B=%lld T=%lld H=%lld G=%lld K=%lld V=%lld chunk=%lld%s%s g=[%g,%g]%s",
             be->name, OPNAME[c->op], seqk_dtype_string(dt), (long long)c->B, (long long)c->T,
             (long long)c->H, (long long)c->G, (long long)c->K, (long long)c->V,
             (long long)c->chunk, c->cu ? " varlen" : "", c->state ? " state" : "", c->glo,
             c->ghi, with_ws ? " (caller workspace of the queried size)" : "");
    if (th_skipped(be, what)) return;
    inputs in;
    make_inputs(c, dt, &in);
    const int m2 = c->op == OP_MAMBA2, bop = bop_of(c->op);
    const int64_t G = m2 ? c->G : c->H;
    float *dout = th_floats(in.nv + 1), *dsT = NULL;
    th_fill(dout, in.nv, -1, 1);
    round_all(dt, dout, in.nv);
    if (c->state) {
        dsT = th_floats(in.ns + 1);
        th_fill(dsT, in.ns, -0.5, 0.5);
    }
    /* references (float64 of the rounded inputs) */
    double *rq = th_doubles(in.nq + 1), *rk = th_doubles(in.nq + 1), *rv = th_doubles(in.nv + 1);
    double *rs0 = th_doubles(in.ns + 1), *rg = th_doubles(in.nt + 1);
    double *rA = th_doubles((size_t)c->H), *rD = th_doubles((size_t)c->H);
    double *rb = th_doubles((size_t)c->H), *sA = th_doubles((size_t)c->H);
    double *sb = th_doubles((size_t)c->H);
    double *rA_dbeta = th_doubles(in.nt + 1); /* DeltaNet's dbeta */
    const double scale = m2 ? 1.0 : 1.0 / sqrt((double)c->K);
    if (m2) {
        const ref_mamba2_scales sc = {NULL, NULL, NULL, sA};
        ref_mamba2_backward(c->B, c->T, c->H, c->V, c->G, c->K, 1, in.v, in.dt, in.A, in.k, in.q,
                            in.D, in.dt_bias, in.s0, dout, dsT, rv, rg, rA, rk, rq, rD, rb, rs0,
                            &sc, c->cu, c->N);
        for (int64_t h = 0; h < c->H; h++) {
            sb[h] = 0.0;
            for (size_t r = 0; r < in.rows; r++) sb[h] += fabs(rg[r * (size_t)c->H + (size_t)h]);
        }
    }
    else if (is_dn(c->op)) {
        /* the float64 reference takes double inputs (the rounded values) */
        double *q = th_doubles(in.nq + 1), *k = th_doubles(in.nq + 1), *v = th_doubles(in.nv + 1);
        double *bt = th_doubles(in.nt + 1), *g = th_doubles(in.nt + 1);
        double *s0 = in.s0 ? th_doubles(in.ns + 1) : NULL, *ds = dsT ? th_doubles(in.ns + 1) : NULL;
        double *dO = th_doubles(in.nv + 1);
        for (size_t i = 0; i < in.nq; i++) q[i] = in.q[i], k[i] = in.k[i];
        for (size_t i = 0; i < in.nv; i++) v[i] = in.v[i], dO[i] = dout[i];
        for (size_t i = 0; i < in.nt; i++) bt[i] = in.beta[i], g[i] = in.g[i];
        for (size_t i = 0; s0 && i < in.ns; i++) s0[i] = in.s0[i];
        for (size_t i = 0; ds && i < in.ns; i++) ds[i] = dsT[i];
        ref_deltanet_backward64(c->B, c->T, c->H, c->K, c->V, scale, dn_l2(c->op), q, k, v, bt,
                                dn_gated(c->op) ? g : NULL, s0, dO, ds, rq, rk, rv, rA_dbeta,
                                rg, rs0, c->cu, c->N);
        free(q), free(k), free(v), free(bt), free(g), free(s0), free(ds), free(dO);
    }
    else if (c->op == OP_RETNET)
        ref_retention_backward(c->B, c->T, c->H, c->K, c->V, scale, in.gamma, in.q, in.k, in.v,
                               dout, in.s0, dsT, rq, rk, rv, rs0, c->cu, c->N);
    else if (c->op == OP_GATED)
        ref_gated_retention_backward(c->B, c->T, c->H, c->K, c->V, scale, in.q, in.k, in.v, in.g,
                                     dout, in.s0, dsT, rq, rk, rv, rg, NULL, rs0, c->cu, c->N);
    else
        ref_linear_attention_backward(c->B, c->T, c->H, c->K, c->V, scale, 0,
                                      c->op == OP_LINATTN_ELU, in.q, in.k, in.v, dout, in.s0, NULL,
                                      dsT, NULL, rq, rk, rv, rs0, NULL, NULL, NULL, c->cu, c->N);
    /* device arrays */
    dev d;
    upload(be, dt, c, &in, &d);
    void *ddout = up_dt(be, dt, dout, in.nv);
    float *ddsT = dsT ? th_upload(be, dsT, in.ns * 4) : NULL;
    bout o[8];
    int no = 0;
    o[no++] = (bout){m2 ? "dCm" : "dq", poisoned_dt(be, dt, in.nq), in.nq, 1, rq, NULL};
    o[no++] = (bout){m2 ? "dBm" : "dk", poisoned_dt(be, dt, in.nq), in.nq, 1, rk, NULL};
    o[no++] = (bout){m2 ? "dx" : "dv", poisoned_dt(be, dt, in.nv), in.nv, 1, rv, NULL};
    o[no++] = (bout){"dstate_in", th_poisoned(be, in.ns + 1), in.ns, 0, rs0, NULL};
    if (c->op == OP_GATED || m2 || dn_gated(c->op))
        o[no++] = (bout){m2 ? "ddt" : "dg", th_poisoned(be, in.nt + 1), in.nt, 0, rg, NULL};
    if (is_dn(c->op))
        o[no++] = (bout){"dbeta", th_poisoned(be, in.nt + 1), in.nt, 0, rA_dbeta, NULL};
    if (m2) {
        const size_t nh = (size_t)c->H;
        o[no++] = (bout){"dA", th_poisoned(be, nh + 1), nh, 0, rA, sA};
        o[no++] = (bout){"dD", th_poisoned(be, nh + 1), nh, 0, rD, NULL};
        o[no++] = (bout){"ddt_bias", th_poisoned(be, nh + 1), nh, 0, rb, sb};
    }
    void *ws = NULL;
    if (with_ws) {
        size_t bytes = 0;
        th_check_status(is_dn(c->op) ? seqk_deltanet_backward_workspace_size_ex(
                                           be->ctx, dt, c->B, c->T, c->H, c->K, c->V,
                                           c->cu ? c->N : 0, c->chunk, &bytes)
                                     : seqk_linear_state_backward_workspace_size_ex(
                                           be->ctx, dt, c->B, c->T, c->H, G, c->K, c->V,
                                           c->cu ? c->N : 0, c->chunk, &bytes),
                        SEQK_SUCCESS, "backward workspace query");
        ws = tf_workspace_begin(be, bytes);
    }
    seqk_context *ctx = be->ctx;
    const float fscale = (float)scale;
    seqk_status st;
    if (is_dn(c->op)) {
        const int gated = dn_gated(c->op);
        st = seqk_deltanet_backward_ex(ctx, dt, c->B, c->T, c->H, c->K, c->V, fscale,
                                       dn_l2(c->op) ? SEQK_DELTANET_L2NORM_QK : 0u, d.q, d.k, d.v,
                                       d.beta, gated ? d.g : NULL, d.s0, ddout, ddsT, o[0].d,
                                       o[1].d, o[2].d, o[gated ? 5 : 4].d, gated ? o[4].d : NULL,
                                       o[3].d, d.cu, c->N, c->chunk);
    } else if (m2)
        st = seqk_mamba2_backward_ex(ctx, dt, c->B, c->T, c->H, c->V, c->G, c->K,
                                     SEQK_MAMBA2_DT_SOFTPLUS, d.v, d.g, d.A, d.k, d.q, d.D,
                                     d.dt_bias, d.s0, ddout, ddsT, o[2].d, o[4].d, o[5].d, o[1].d,
                                     o[0].d, o[6].d, o[7].d, o[3].d, d.cu, c->N, c->chunk);
    else if (c->op == OP_RETNET)
        st = seqk_retention_backward_ex(ctx, dt, c->B, c->T, c->H, c->K, c->V, fscale, d.gamma,
                                        d.q, d.k, d.v, ddout, d.s0, ddsT, o[0].d, o[1].d, o[2].d,
                                        o[3].d, d.cu, c->N, c->chunk);
    else if (c->op == OP_GATED)
        st = seqk_gated_retention_backward_ex(ctx, dt, c->B, c->T, c->H, c->K, c->V, fscale, d.q,
                                              d.k, d.v, d.g, ddout, d.s0, ddsT, o[0].d, o[1].d,
                                              o[2].d, o[4].d, o[3].d, d.cu, c->N, c->chunk);
    else
        st = seqk_linear_attention_backward_ex(
            ctx, dt, c->B, c->T, c->H, c->K, c->V, fscale,
            c->op == OP_LINATTN_ELU ? SEQK_LINATTN_ELU1 : 0u, d.q, d.k, d.v, ddout, d.s0, NULL,
            ddsT, NULL, o[0].d, o[1].d, o[2].d, o[3].d, NULL, d.cu, c->N, c->chunk);
    if (with_ws) tf_workspace_end(be, ws);
    if (th_check_status(st, SEQK_SUCCESS, what)) {
        const int bi = be->backend == SEQK_BACKEND_CUDA;
        const double u = tf_dt_unit(dt);
        for (int j = 0; j < no; j++) {
            float *x = th_floats(o[j].n + 1);
            bool end_ok;
            if (o[j].in_dtype) {
                end_ok = down_dt(be, dt, o[j].d, o[j].n, x);
                if (dt != SEQK_DTYPE_F32)
                    for (size_t i = 0; i < o[j].n; i++) o[j].ref[i] = tf_dt_round(dt, o[j].ref[i]);
            } else {
                th_download(be, x, o[j].d, (o[j].n + 1) * 4);
                end_ok = isnan(x[o[j].n]);
            }
            th_check(end_ok, "%s: nothing written past %s", what, o[j].name);
            const double e = o[j].scale ? err_against(x, o[j].ref, o[j].scale, o[j].n)
                                        : th_rel_err(x, o[j].ref, o[j].n);
            if (dt == SEQK_DTYPE_F32) {
                double *w = o[j].in_dtype ? &worst_b[bi][bop][0] : &worst_bf[bi][bop][0];
                if (!strcmp(o[j].name, "dbeta")) w = &worst_dbeta[bi][0];
                if (e > *w) *w = e;
                th_check(e <= F32_BWD_TOL, "%s: %s against float64: %.3g (tol %.3g)", what,
                         o[j].name, e, F32_BWD_TOL);
            } else {
                const double eu = e / u;
                const double tol = o[j].in_dtype      ? BWD_TOL_ULPS
                                   : is_dn(c->op) ? DN_BWD_F32OUT_TOL_ULPS
                                                  : BWD_F32OUT_TOL_ULPS;
                double *w = o[j].in_dtype ? &worst_b[bi][bop][dt] : &worst_bf[bi][bop][dt];
                if (!strcmp(o[j].name, "dbeta")) w = &worst_dbeta[bi][dt];
                if (eu > *w) *w = eu;
                th_check(eu <= tol, "%s: %s against float64: %.3g u (tol %.3g u)", what,
                         o[j].name, eu, tol);
            }
            free(x);
            th_free(be, o[j].d);
        }
    } else {
        for (int j = 0; j < no; j++) th_free(be, o[j].d);
    }
    th_free(be, ddout);
    if (ddsT) th_free(be, ddsT);
    release(be, &d);
    free(rq), free(rk), free(rv), free(rs0), free(rg), free(rA), free(rD), free(rb), free(sA);
    free(sb), free(rA_dbeta);
    free(dout), free(dsT);
    free_inputs(&in);
}

/* ---- validation and routing ----------------------------------------------------------- */

/* An upload of n uint16 values 0x3c00 (1.0 in f16; 1.875 in bf16). */
static void *ones16(th_backend *be, size_t n)
{
    uint16_t *e = th_malloc(n * 2);
    for (size_t i = 0; i < n; i++) e[i] = 0x3c00u;
    void *d = th_upload(be, e, n * 2);
    free(e);
    return d;
}

static void check_rules(th_backend *be)
{
    if (th_skipped(be, "native path: validation")) return;
    const seqk_dtype dt = SEQK_DTYPE_BF16;
    char what[160];
    for (int op = 0; op < 2; op++) {
        const ncase c = {op ? OP_GDN_L2 : OP_GATED, 2, 37, 3, 3, 5, 7, 2, 16, NULL, 1, -1, 0};
        inputs in;
        make_inputs(&c, dt, &in);
        /* overlaps in the dtype's bytes: o right after q (one buffer) is fine,
         * o one element into q is rejected with o untouched */
        {
            const size_t n = 2 * in.nq + in.nv + 1;
            for (int shift = 0; shift < 2; shift++) {
                uint16_t *buf = ones16(be, n);
                dev d;
                upload(be, dt, &c, &in, &d);
                th_free(be, d.q), th_free(be, d.o);
                d.q = buf;
                d.o = buf + in.nq - shift; /* 0: adjacent; 1: the last element of q */
                snprintf(what, sizeof what, "%s: %s bf16 o %s q", be->name, OPNAME[c.op],
                         shift ? "overlapping the last element of" : "right after");
                const seqk_status st = call(be, dt, &c, SEQK_MODE_PARALLEL, 0u, &d);
                if (!shift) {
                    th_check_status(st, SEQK_SUCCESS, what);
                } else {
                    uint16_t *x = th_malloc(n * 2);
                    th_download(be, x, buf, n * 2);
                    bool same = true;
                    for (size_t i = 0; i < n; i++) same = same && x[i] == 0x3c00u;
                    th_check(st == SEQK_ERROR_INVALID_ARGUMENT &&
                                 strstr(seqk_last_error(), "overlaps") && same,
                             "%s: rejected (%s), untouched", what, seqk_last_error());
                    free(x);
                }
                d.o = NULL;
                release(be, &d);
            }
        }
        /* NULL o with tokens */
        {
            dev d;
            upload(be, dt, &c, &in, &d);
            void *o = d.o;
            d.o = NULL;
            const seqk_status st = call(be, dt, &c, SEQK_MODE_PARALLEL, 0u, &d);
            th_check(st == SEQK_ERROR_INVALID_ARGUMENT && strstr(seqk_last_error(), "o is NULL"),
                     "%s: %s bf16 o = NULL rejected (%s)", be->name, OPNAME[c.op],
                     seqk_last_error());
            d.o = o;
            release(be, &d);
        }
        free_inputs(&in);
    }
    /* the converting path keeps the normaliser and the recurrent mode: their
     * outputs are the fp32 op's rounded, bit for bit */
    for (int k = 0; k < 3; k++) {
        const ncase cl = {k == 2 ? OP_GDN_L2 : k ? OP_GATED : OP_LINATTN, 2, 37, 3, 3, 5, 7, 2, 16,
                          NULL, 1, -1, 0};
        const unsigned flags = k ? 0u : SEQK_LINATTN_NORMALIZE;
        const seqk_mode mode = k ? SEQK_MODE_RECURRENT : SEQK_MODE_PARALLEL;
        inputs i2;
        make_inputs(&cl, dt, &i2);
        dev d32, d16;
        upload(be, SEQK_DTYPE_F32, &cl, &i2, &d32);
        upload(be, dt, &cl, &i2, &d16);
        snprintf(what, sizeof what,
                 "%s: bf16 %s %s: the converting path (fp32 op's output rounded)", be->name,
                 OPNAME[cl.op], k ? "recurrent mode" : "normaliser");
        seqk_status st = call(be, SEQK_DTYPE_F32, &cl, mode, flags, &d32);
        if (!st) st = call(be, dt, &cl, mode, flags, &d16);
        if (th_check_status(st, SEQK_SUCCESS, what)) {
            float *a = th_floats(i2.nv + 1), *b = th_floats(i2.nv + 1);
            down_dt(be, SEQK_DTYPE_F32, d32.o, i2.nv, a);
            down_dt(be, dt, d16.o, i2.nv, b);
            size_t diff = 0;
            for (size_t i = 0; i < i2.nv; i++) diff += (float)tf_dt_round(dt, a[i]) != b[i];
            th_check(diff == 0, "%s: %zu of %zu differ", what, diff, i2.nv);
            free(a), free(b);
        }
        release(be, &d32), release(be, &d16);
        free_inputs(&i2);
    }
}

int main(int argc, char **argv)
{
    th_backend *bes;
    const int nb = th_init(argc, argv, &bes);
    /* shapes: {B, T, H, G, K, V, N, chunk, cu} */
    const ncase shapes[] = {
        {0, 2, 1, 3, 3, 5, 7, 2, 16, NULL, 1, 0, 0},     /* T = 1 */
        {0, 2, 37, 3, 3, 5, 7, 2, 16, NULL, 1, 0, 0},    /* T prime, K != V, odd dims */
        {0, 1, 11, 2, 2, 8, 4, 1, 16, NULL, 0, 0, 0},    /* T shorter than a chunk */
        {0, 1, 64, 2, 1, 16, 8, 1, 32, NULL, 1, 0, 0},   /* T a multiple of the chunk */
        {0, 3, 100, 2, 2, 33, 17, 3, 32, NULL, 1, 0, 0}, /* not a multiple; odd dims */
        {0, 1, 130, 1, 1, 64, 64, 1, 0, NULL, 1, 0, 0},  /* the default chunk, 64 x 64 */
        {0, 1, 300, 1, 1, 16, 8, 1, 288, NULL, 1, 0, 0}, /* a chunk wider than a block */
        {0, 1, 37, 3, 3, 5, 7, 4, 16, CU37, 1, 0, 0},    /* varlen: empty, length 1 */
        {0, 1, 37, 2, 2, 6, 9, 4, 8, CU37, 0, 0, 0},     /* varlen, no state */
    };
    const double gates[3][2] = {{-0.01, 0.0}, {-1.0, 0.0}, {-20.0, -19.0}};
    enum { MAXC = 512 };
    ncase *cases = th_malloc(MAXC * sizeof *cases);
    int nc = 0;
    const int ns = (int)(sizeof shapes / sizeof shapes[0]);
    for (int s = 0; s < ns; s++)
        for (int op = 0; op < NOPS; op++) {
            const int ng = op == OP_GATED || dn_gated(op) ? 3 : 1;
            for (int gi = 0; gi < ng; gi++) {
                ncase c = shapes[s];
                c.op = op;
                if (op == OP_GATED || dn_gated(op)) c.glo = gates[gi][0], c.ghi = gates[gi][1];
                if (op == OP_MAMBA2) {
                    c.glo = -1.0, c.ghi = 1.0;         /* raw dt */
                    c.H = 2 * c.H, c.G = c.H / 2 > 1 ? 2 : 1; /* groups */
                    if (c.H % c.G) c.G = 1;
                }
                cases[nc++] = c;
            }
        }
    for (int b = 0; b < nb; b++) {
        for (int i = 0; i < nc; i++)
            for (int d = 0; d < 3; d++) run_case(&bes[b], &cases[i], DTYPES[d], 0);
        /* a caller workspace of exactly the queried size, once per op */
        for (int i = 0; i < nc / ns; i++) /* the last shape's cases: every op */
            for (int d = 1; d < 3; d++) run_case(&bes[b], &cases[nc - 1 - i], DTYPES[d], 1);
        /* the backwards */
        for (int i = 0; i < nc; i++)
            for (int d = 0; d < 3; d++) run_bwd_case(&bes[b], &cases[i], DTYPES[d], 0);
        for (int i = 0; i < nc / ns; i++)
            for (int d = 1; d < 3; d++) run_bwd_case(&bes[b], &cases[nc - 1 - i], DTYPES[d], 1);
        check_rules(&bes[b]);
    }
    for (int bi = 0; bi < 2; bi++)
        for (int dn = 0; dn < 2; dn++) {
            const double *w = dn ? worst_dn[bi] : worst[bi];
            const double *s = dn ? worst_dn_state[bi] : worst_state[bi];
            printf("%s, %s: worst o against float64: f32 %.3g, bf16 %.3g u, f16 %.3g u "
                   "(tol %.3g u); final state: f32 %.3g, bf16 %.3g u, f16 %.3g u (tol %.3g u)\n",
                   bi ? "cuda" : "cpu", dn ? "deltanet" : "linear state", w[0], w[1], w[2],
                   NATIVE_TOL_ULPS, s[0], s[1], s[2], STATE_TOL_ULPS);
        }
    for (int bi = 0; bi < 2; bi++)
        for (int op = 0; op < NBOPS; op++)
            printf("%s, %s backward: worst dtype gradients against float64: f32 %.3g, bf16 %.3g u, "
                   "f16 %.3g u (tol %.3g u); fp32 gradients: f32 %.3g, bf16 %.3g u, f16 %.3g u "
                   "(tol %.3g u)\n",
                   bi ? "cuda" : "cpu", BOPNAME[op], worst_b[bi][op][0], worst_b[bi][op][1],
                   worst_b[bi][op][2], BWD_TOL_ULPS, worst_bf[bi][op][0], worst_bf[bi][op][1],
                   worst_bf[bi][op][2],
                   op >= BOP_DN ? DN_BWD_F32OUT_TOL_ULPS : BWD_F32OUT_TOL_ULPS);
    for (int bi = 0; bi < 2; bi++)
        printf("%s, deltanet backward dbeta (all four DeltaNet ops): f32 %.3g, bf16 %.3g u, "
               "f16 %.3g u (tol %.3g u)\n",
               bi ? "cuda" : "cpu", worst_dbeta[bi][0], worst_dbeta[bi][1], worst_dbeta[bi][2],
               DN_BWD_F32OUT_TOL_ULPS);
    free(cases);
    return th_finish();
}
