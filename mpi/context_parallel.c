/*
 * mpi/context_parallel.c -- the linear-state family (linear attention,
 * retention, gated retention, Mamba2) and DeltaNet / gated DeltaNet with one
 * sequence split over the ranks of an MPI communicator, forward and
 * backward, composed from the public single-process calls of seqk.h.
 *
 * The math (docs/context-parallel.md). Per (batch entry, head) the state
 * after a slice is an affine function of the state before it:
 *
 *   S_out = M S_in + C
 *
 *   linear-state family: M = prod_t a_t = exp(sum of the slice's log-
 *     decays), a scalar (1 for linear attention, gamma^T for retention,
 *     exp(sum g) for gated retention, exp(sum dt A) for Mamba2);
 *     C = the slice's final state from a zero initial state. The linear-
 *     attention normaliser z (z_out = z_in + sum phi(k)) is one more
 *     column of C (its M is 1 too).
 *   DeltaNet: M = prod_t exp(g_t) (I - beta_t k_t k_t^T), a K x K matrix,
 *     and C the final state from zero.
 *
 * Both come from one library call on the slice with extra value columns
 * (the columns of the state evolve independently: a value column only
 * enters its own state column; the L2-norm flag only changes q and k):
 * values [v | 0] from the initial state [S0 | 1] end in [C | M 1]; for
 * DeltaNet values [0 | v] from [I | S0] end in [M | C] (S0 = 0, or the
 * user's initial state on rank 0). So M is the decay the library itself
 * applies to a state, gates, floors and float rounding included.
 * (DeltaNet's ranks > 0 then skip the second pass: deltanet_correct.)
 *
 * Maps compose as (M2, C2) o (M1, C1) = (M2 M1, M2 C1 + C2) (1 first), an
 * associative operator: an exclusive scan over the ranks (recursive
 * doubling, in double) gives rank r the composition of ranks 0 .. r-1.
 * Rank 0's map is replaced by the constant (0, its final state from the
 * user's initial state), so the scanned C is rank r's incoming state
 * S_in(r) directly. Each rank then runs its slice again from S_in(r): its
 * outputs and its final state are those of the whole-sequence call.
 *
 * Backward: a slice's gradient of its initial state is affine in the
 * gradient of its final state, dS_in = M^T dS_out + g (M^T = M for the
 * scalar decays; DeltaNet: the transpose), with g the library backward's
 * dstate_in for dS_out = 0 from the slice's correct S_in (it depends on
 * the outputs' gradients only). The same scan, over the ranks in reverse
 * order, with the last rank's map replaced by the constant (0, its dS_in
 * from the user's dstate_out), gives each rank its dS_out; the library
 * backward with (S_in, dS_out, dout) then gives the slice's gradients.
 * Mamba2's per-head gradients (dA, dD, ddt_bias) are sums over tokens:
 * summed over the ranks (MPI_Allreduce in double).
 */
#include "common.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef enum cp_kind { CP_LINATTN, CP_RETENTION, CP_GATED, CP_MAMBA2, CP_DELTANET } cp_kind;

/* One call's arguments, named as the linear-state engine's: Mamba2's
 * C, B, x, dt map to q, k, v, g with K = Nst, V = P, Hqk = G. */
typedef struct cp_op {
    const char *fn;
    cp_kind kind;
    seqk_context *ctx;
    MPI_Comm comm;
    seqk_mode mode;
    int64_t B, T, H, Hqk, K, V, chunk;
    float scale;
    unsigned flags;
    const float *q, *k, *v, *g, *beta, *gamma, *A, *D, *dt_bias;
} cp_op;

/* Gradients of one backward call (Mamba2: dq = dCm, dk = dBm, dv = dx,
 * dg = ddt). */
typedef struct cp_grads {
    float *dq, *dk, *dv, *dg, *dbeta, *dA, *dD, *ddt_bias, *ds_in, *dz_in;
} cp_grads;

enum { WANT_S = 1, WANT_Z = 2, WANT_DS = 4, WANT_DZ = 8 };

static bool normalised(const cp_op *op)
{
    return op->kind == CP_LINATTN && (op->flags & SEQK_LINATTN_NORMALIZE);
}

/* ---- the library calls on the local slice ------------------------------------- */

/* The forward on the slice, values v of width Vx (V, or wider for the
 * transition, run_transition). */
static seqk_status local_forward(const cp_op *op, const float *v, int64_t Vx, const float *s_in,
                                 const float *z_in, float *o, float *s_out, float *z_out)
{
    switch (op->kind) {
    case CP_LINATTN:
        return seqk_linear_attention(op->ctx, op->mode, op->B, op->T, op->H, op->K, Vx,
                                     op->scale, op->flags, op->q, op->k, v, o, s_in, s_out, z_in,
                                     z_out, NULL, 0, op->chunk);
    case CP_RETENTION:
        return seqk_retention(op->ctx, op->mode, op->B, op->T, op->H, op->K, Vx, op->scale,
                              op->gamma, op->q, op->k, v, o, s_in, s_out, NULL, 0, op->chunk);
    case CP_GATED:
        return seqk_gated_retention(op->ctx, op->mode, op->B, op->T, op->H, op->K, Vx,
                                    op->scale, op->q, op->k, v, op->g, o, s_in, s_out, NULL, 0,
                                    op->chunk);
    case CP_MAMBA2:
        return seqk_mamba2(op->ctx, op->mode, op->B, op->T, op->H, Vx, op->Hqk, op->K,
                           op->flags, v, op->g, op->A, op->k, op->q, op->D, op->dt_bias, o, s_in,
                           s_out, NULL, 0, op->chunk);
    case CP_DELTANET:
        return seqk_deltanet(op->ctx, op->mode, op->B, op->T, op->H, op->K, Vx, op->scale,
                             op->flags, op->q, op->k, v, op->beta, op->g, o, s_in, s_out, NULL, 0,
                             op->chunk);
    }
    return seqk__fail(SEQK_ERROR_INTERNAL, "%s: unknown op", op->fn);
}

static seqk_status local_backward(const cp_op *op, const float *s_in, const float *z_in,
                                  const float *dout, const float *ds_out, const float *dz_out,
                                  const cp_grads *G)
{
    switch (op->kind) {
    case CP_LINATTN:
        return seqk_linear_attention_backward(op->ctx, op->B, op->T, op->H, op->K, op->V,
                                              op->scale, op->flags, op->q, op->k, op->v, dout,
                                              s_in, z_in, ds_out, dz_out, G->dq, G->dk, G->dv,
                                              G->ds_in, G->dz_in, NULL, 0, op->chunk);
    case CP_RETENTION:
        return seqk_retention_backward(op->ctx, op->B, op->T, op->H, op->K, op->V, op->scale,
                                       op->gamma, op->q, op->k, op->v, dout, s_in, ds_out, G->dq,
                                       G->dk, G->dv, G->ds_in, NULL, 0, op->chunk);
    case CP_GATED:
        return seqk_gated_retention_backward(op->ctx, op->B, op->T, op->H, op->K, op->V,
                                             op->scale, op->q, op->k, op->v, op->g, dout, s_in,
                                             ds_out, G->dq, G->dk, G->dv, G->dg, G->ds_in, NULL,
                                             0, op->chunk);
    case CP_MAMBA2:
        return seqk_mamba2_backward(op->ctx, op->B, op->T, op->H, op->V, op->Hqk, op->K,
                                    op->flags, op->v, op->g, op->A, op->k, op->q, op->D,
                                    op->dt_bias, s_in, dout, ds_out, G->dv, G->dg, G->dA, G->dk,
                                    G->dq, G->dD, G->ddt_bias, G->ds_in, NULL, 0, op->chunk);
    case CP_DELTANET:
        return seqk_deltanet_backward(op->ctx, op->B, op->T, op->H, op->K, op->V, op->scale,
                                      op->flags, op->q, op->k, op->v, op->beta, op->g, s_in, dout,
                                      ds_out, G->dq, G->dk, G->dv, G->dbeta, G->dg, G->ds_in,
                                      NULL, 0, op->chunk);
    }
    return seqk__fail(SEQK_ERROR_INTERNAL, "%s: unknown op", op->fn);
}

/* ---- transitions ---------------------------------------------------------------- */

/* Elements of the scan: per (b, h) the map (M, C), M m x m (m = 1 or K),
 * C K x W, packed [M | C] in double. */
typedef struct cp_elems {
    int64_t n, m, K, W, E; /* E = m m + K W doubles per element */
} cp_elems;

/* out = e2 o e1 (e1 applied first): M = M2 M1, C = M2 C1 + C2. */
static void compose(const cp_elems *L, const double *e1, const double *e2, double *out)
{
    const int64_t m = L->m, K = L->K, W = L->W, mm = m * m;
    for (int64_t n = 0; n < L->n; n++, e1 += L->E, e2 += L->E, out += L->E) {
        if (m == 1) {
            out[0] = e2[0] * e1[0];
            for (int64_t i = 0; i < K * W; i++) out[1 + i] = e2[0] * e1[1 + i] + e2[1 + i];
            continue;
        }
        for (int64_t i = 0; i < K; i++) {
            double *mo = out + i * K, *co = out + mm + i * W;
            for (int64_t j = 0; j < K; j++) mo[j] = 0.0;
            for (int64_t j = 0; j < W; j++) co[j] = e2[mm + i * W + j];
            for (int64_t l = 0; l < K; l++) {
                const double s = e2[i * K + l];
                if (s == 0.0) continue;
                for (int64_t j = 0; j < K; j++) mo[j] += s * e1[l * K + j];
                for (int64_t j = 0; j < W; j++) co[j] += s * e1[mm + l * W + j];
            }
        }
    }
}

/*
 * Exclusive scan of the elements over the ranks (in reverse rank order
 * with `reverse`): io holds this rank's element and receives the
 * composition of the elements of the ranks before it (have = false on the
 * first rank: io is then unchanged). Recursive doubling: in round d = 1, 2,
 * 4, .. each rank sends its inclusive prefix to the rank d after it and
 * composes what it receives from the rank d before it; ceil(log2 P) rounds,
 * at most one element array sent per rank and round. work: 3 n E doubles.
 */
static seqk_status exscan(const char *fn, const seqkm_comm *c, bool reverse, const cp_elems *L,
                          double *io, double *work, bool *have)
{
    const size_t total = (size_t)(L->n * L->E);
    const int64_t bytes = (int64_t)(total * sizeof(double));
    double *incl = work, *recv = work + total, *tmp = work + 2 * total;
    const int p = reverse ? c->size - 1 - c->rank : c->rank;
    memcpy(incl, io, total * sizeof(double));
    *have = false;
    for (int d = 1; d < c->size; d *= 2) {
        const int to = p + d < c->size ? (reverse ? c->size - 1 - (p + d) : p + d) : MPI_PROC_NULL;
        const int from = p - d >= 0 ? (reverse ? c->size - 1 - (p - d) : p - d) : MPI_PROC_NULL;
        seqk_status st = seqkm_sendrecv(fn, c, incl, bytes, to, recv, bytes, from);
        if (st) return st;
        if (from == MPI_PROC_NULL) continue;
        if (*have) {
            compose(L, recv, io, tmp);
            memcpy(io, tmp, total * sizeof(double));
        } else {
            memcpy(io, recv, total * sizeof(double));
            *have = true;
        }
        compose(L, recv, incl, tmp);
        memcpy(incl, tmp, total * sizeof(double));
    }
    return SEQK_SUCCESS;
}

/* Packs per (b, h) the map: M from m_scalar (m = 1; NULL: 0) or the K x K
 * block of src_m (row stride ld_m, transposed with `transpose`; NULL: 0),
 * C from the K x V block of src_c (row stride ld_c) and, W = V + 1, the
 * column z [K]. */
static void pack(const cp_elems *L, const double *m_scalar, const float *src_m, int64_t ld_m,
                 bool transpose, const float *src_c, int64_t ld_c, int64_t V, const float *z,
                 double *e)
{
    const int64_t K = L->K, mm = L->m * L->m;
    for (int64_t n = 0; n < L->n; n++, e += L->E) {
        if (L->m == 1) e[0] = m_scalar ? m_scalar[n] : 0.0;
        else
            for (int64_t i = 0; i < K; i++)
                for (int64_t j = 0; j < K; j++)
                    e[i * K + j] = !src_m                 ? 0.0
                                   : transpose ? (double)src_m[n * K * ld_m + j * ld_m + i]
                                               : (double)src_m[n * K * ld_m + i * ld_m + j];
        for (int64_t i = 0; i < K; i++) {
            for (int64_t j = 0; j < V; j++)
                e[mm + i * L->W + j] = (double)src_c[n * K * ld_c + i * ld_c + j];
            if (L->W > V) e[mm + i * L->W + V] = (double)z[n * K + i];
        }
    }
}

/* The C parts of the elements as a state [n, K, V] and z [n, K] (W = V + 1). */
static void unpack_c(const cp_elems *L, const double *e, int64_t V, float *s, float *z)
{
    const int64_t K = L->K, mm = L->m * L->m;
    for (int64_t n = 0; n < L->n; n++, e += L->E)
        for (int64_t i = 0; i < K; i++) {
            for (int64_t j = 0; j < V; j++) s[(n * K + i) * V + j] = (float)e[mm + i * L->W + j];
            if (z) z[n * K + i] = (float)e[mm + i * L->W + V];
        }
}

/* ---- shared steps of the forward and backward drivers ------------------------------ */

typedef struct cp_run {
    seqkm_comm c;
    int64_t *Ts, want_any;
    int last;
    cp_elems L;
    int64_t Vx, cv; /* the transition's value columns; v's first column in them */
    /* scratch */
    float *o_s, *s_loc, *z_loc, *s_in, *z_in, *vx, *sx_in;
    double *elem, *work, *decay;
} cp_run;

static void run_free(cp_run *R)
{
    free(R->Ts);
    free(R->o_s);
    free(R->s_loc);
    free(R->z_loc);
    free(R->s_in);
    free(R->z_in);
    free(R->vx);
    free(R->sx_in);
    free(R->elem);
    free(R->work);
    free(R->decay);
}

/* Entry checks, the agreement of the arguments over the ranks (want: this
 * rank's WANT_* mask). */
static seqk_status run_begin(const cp_op *op, cp_run *R, int64_t want)
{
    memset(R, 0, sizeof *R);
    seqk_status st = seqkm_begin(op->fn, op->ctx, op->comm, &R->c);
    if (R->c.comm == MPI_COMM_NULL) return st; /* no communicator to agree over */
    if (!st && !(st = seqk__check_min(op->fn, "B", op->B, 1)) &&
        !(st = seqk__check_min(op->fn, "T", op->T, 0)) &&
        !(st = seqk__check_min(op->fn, "H", op->H, 1)) &&
        !(st = seqk__check_min(op->fn, "K", op->K, 1)))
        st = seqk__check_min(op->fn, "V", op->V, 1);
    seqkm_desc d = {.T = op->T, .want = want};
    seqkm_desc_add(&d, "B", op->B);
    seqkm_desc_add(&d, "H", op->H);
    seqkm_desc_add(&d, "K", op->K);
    seqkm_desc_add(&d, "V", op->V);
    seqkm_desc_add(&d, "groups", op->Hqk);
    seqkm_desc_add(&d, "chunk", op->chunk);
    seqkm_desc_add(&d, "mode", (int64_t)op->mode);
    seqkm_desc_add(&d, "flags", (int64_t)op->flags);
    uint32_t sb;
    memcpy(&sb, &op->scale, sizeof sb);
    seqkm_desc_add(&d, "scale (bits)", (int64_t)sb);
    /* whether a per-token array is given: said by the ranks that have tokens */
    seqkm_desc_add(&d, "g given", op->T > 0 ? op->g != NULL : SEQKM_ANY);
    seqkm_desc_add(&d, "gamma given", op->gamma != NULL);
    seqkm_desc_add(&d, "D given", op->D != NULL);
    seqkm_desc_add(&d, "dt_bias given", op->dt_bias != NULL);
    if (!st) st = seqkm_alloc(op->fn, "the ranks' lengths", (size_t)R->c.size * sizeof(int64_t),
                              (void **)&R->Ts);
    st = seqkm_agree_args(op->fn, &R->c, &d, st, R->Ts, &R->want_any);
    if (st) return st;
    R->last = R->c.size - 1;
    const bool delta = op->kind == CP_DELTANET;
    R->L = (cp_elems){.n = op->B * op->H, .m = delta ? op->K : 1, .K = op->K,
                      .W = op->V + (normalised(op) ? 1 : 0)};
    R->L.E = R->L.m * R->L.m + R->L.K * R->L.W;
    const int64_t nS = op->B * op->H * op->K * op->V; /* the broadcast final state */
    return seqkm_check_message(op->fn, "the transitions",
                               8 * (R->L.n * R->L.E > nS ? R->L.n * R->L.E : nS));
}

/* Scratch shared by both drivers. */
static seqk_status run_alloc(const cp_op *op, cp_run *R)
{
    const size_t nS = (size_t)(op->B * op->H * op->K), ne = (size_t)(R->L.n * R->L.E);
    const bool delta = op->kind == CP_DELTANET;
    R->Vx = op->V + (delta ? op->K : 1);
    R->cv = delta ? op->K : 0;
    const size_t nx = (size_t)(op->B * op->T * op->H * R->Vx), Vx = (size_t)R->Vx;
    const char *fn = op->fn;
    seqk_status st;
    if ((st = seqkm_alloc(fn, "the slice's output", nx * 4, (void **)&R->o_s)) ||
        (st = seqkm_alloc(fn, "the transition's values", nx * 4, (void **)&R->vx)) ||
        (st = seqkm_alloc(fn, "the transition's state", nS * Vx * 4, (void **)&R->sx_in)) ||
        (st = seqkm_alloc(fn, "the slice's state", nS * Vx * 4, (void **)&R->s_loc)) ||
        (st = seqkm_alloc(fn, "the incoming state", nS * (size_t)op->V * 4,
                          (void **)&R->s_in)) ||
        (st = seqkm_alloc(fn, "the normaliser states", nS * 4, (void **)&R->z_loc)) ||
        (st = seqkm_alloc(fn, "the normaliser states", nS * 4, (void **)&R->z_in)) ||
        (st = seqkm_alloc(fn, "the scan", ne * 8, (void **)&R->elem)) ||
        (st = seqkm_alloc(fn, "the scan", 3 * ne * 8, (void **)&R->work)) ||
        (st = seqkm_alloc(fn, "the decays", (size_t)R->L.n * 8, (void **)&R->decay)))
        return st;
    return SEQK_SUCCESS;
}

/*
 * The transition (M, C) of the local slice, from one library call with
 * extra value columns (the columns of the state evolve independently):
 *   decay family: values [v | 0], initial state [S0 | 1] -> final [C | M 1]
 *   DeltaNet:     values [0 | v], initial state [I | S0] -> final [M | C]
 * (S0: the user's initial state on rank 0, else 0), so that M is exactly
 * the decay or product the library applies to a state (its own rounding
 * of the gates included: a decay of 1 - 1e-6 compounded over 2^18 tokens
 * in float chunk decays is 1e-5 away from the exact one). Rank 0's map is
 * the constant (0, C); R->o_s [B,T,H,Vx] holds its outputs in the columns
 * [R->cv, R->cv + V); R->s_loc [n,K,Vx] the final state.
 */
static seqk_status run_transition(const cp_op *op, cp_run *R, const float *state_in,
                                  const float *z_in)
{
    const bool nz = normalised(op), delta = op->kind == CP_DELTANET;
    const int64_t K = op->K, V = op->V, Vx = R->Vx, cv = R->cv, rows = op->B * op->T * op->H;
    for (int64_t r = 0; r < rows; r++)
        memcpy(R->vx + r * Vx + cv, op->v + r * V, (size_t)V * sizeof(float)); /* rest: 0 */
    const float *s0 = R->c.rank == 0 ? state_in : NULL;
    for (int64_t n = 0; n < R->L.n; n++)
        for (int64_t i = 0; i < K; i++) {
            float *row = R->sx_in + (n * K + i) * Vx;
            if (delta) row[i] = 1.0f;
            else row[V] = 1.0f;
            if (s0) memcpy(row + cv, s0 + (n * K + i) * V, (size_t)V * sizeof(float));
        }
    seqk_status st = local_forward(op, R->vx, Vx, R->sx_in, R->c.rank == 0 && nz ? z_in : NULL,
                                   R->o_s, R->s_loc, nz ? R->z_loc : NULL);
    if (st) return st;
    if (!delta)
        for (int64_t n = 0; n < R->L.n; n++) R->decay[n] = R->s_loc[n * K * Vx + V];
    if (R->c.rank == 0)
        pack(&R->L, NULL, NULL, 0, false, R->s_loc + cv, Vx, V, R->z_loc, R->elem);
    else
        pack(&R->L, delta ? NULL : R->decay, delta ? R->s_loc : NULL, Vx, false, R->s_loc + cv,
             Vx, V, R->z_loc, R->elem);
    return SEQK_SUCCESS;
}

/* The forward scan: R->s_in (and R->z_in) = the state entering this rank's
 * slice (ranks > 0). */
static seqk_status run_forward_scan(const cp_op *op, cp_run *R)
{
    bool have = false;
    seqk_status st = exscan(op->fn, &R->c, false, &R->L, R->elem, R->work, &have);
    if (st) return st;
    if (have) unpack_c(&R->L, R->elem, op->V, R->s_in, normalised(op) ? R->z_in : NULL);
    return SEQK_SUCCESS;
}

/*
 * DeltaNet on a rank > 0 without a second pass: the transition call ran
 * from [I | 0], so its state at token t was [P_t | C_t] (P_t the product of
 * the slice's maps up to t) and its output [P_t^T q~_t | C_t^T q~_t]; from
 * S_in the state is P_t S_in + C_t, hence
 *   o_t = C_t^T q~_t + S_in^T (P_t^T q~_t),   S_out = P_T S_in + C_T
 * (a K x V product per token; the final state in double, through the
 * transition's initial-state buffer, which is free by then).
 */
static void deltanet_correct(const cp_op *op, const cp_run *R, float *o, float *fin)
{
    const int64_t K = op->K, V = op->V, Vx = R->Vx, H = op->H;
    for (int64_t r = 0; r < op->B * op->T * H; r++) {
        const float *x = R->o_s + r * Vx, *S = R->s_in + ((r / (op->T * H)) * H + r % H) * K * V;
        float *y = o + r * V;
        for (int64_t j = 0; j < V; j++) y[j] = x[K + j];
        for (int64_t i = 0; i < K; i++)
            for (int64_t j = 0; j < V; j++) y[j] += x[i] * S[i * V + j];
    }
    if (!fin) return;
    for (int64_t n = 0; n < R->L.n; n++)
        for (int64_t i = 0; i < K; i++)
            for (int64_t j = 0; j < V; j++) {
                const float *row = R->s_loc + (n * K + i) * Vx;
                double acc = row[K + j];
                for (int64_t l = 0; l < K; l++) acc += (double)row[l] * R->s_in[(n * K + l) * V + j];
                R->sx_in[(n * K + i) * V + j] = (float)acc; /* fin may be s_in */
            }
    memcpy(fin, R->sx_in, (size_t)(R->L.n * K * V) * sizeof(float));
}

/* ---- forward driver ---------------------------------------------------------------------- */

static seqk_status cp_forward(const cp_op *op, float *o, const float *state_in, float *state_out,
                              const float *z_in, float *z_out)
{
    const char *fn = op->fn;
    cp_run R;
    const int64_t want = (state_out ? WANT_S : 0) | (z_out ? WANT_Z : 0);
    seqk_status st = run_begin(op, &R, want);
    if (st) {
        run_free(&R);
        return st;
    }
    const bool nz = normalised(op);
    const size_t no = (size_t)(op->B * op->T * op->H * op->V), nS = (size_t)(R.L.n * op->K);
    /* 1. scratch, the transition (the library checks every input), the outputs */
    st = run_alloc(op, &R);
    if (!st) st = run_transition(op, &R, state_in, z_in);
    if (!st && no) st = seqk__check_ptr(fn, "o", o);
    if (!st) {
        const size_t qb = (size_t)(op->B * op->T * op->Hqk * op->K) * 4, gb = (size_t)(op->B * op->T * op->H) * 4;
        const seqk__arg outs[3] = {{"o", o, no * 4}, {"state_out", state_out, nS * op->V * 4},
                                   {"z_out", z_out, nS * 4}};
        const seqk__arg ins[5] = {{"q", op->q, qb}, {"k", op->k, qb}, {"v", op->v, no * 4},
                                  {"g", op->g, op->g ? gb : 0}, {"beta", op->beta, op->beta ? gb : 0}};
        st = seqk__check_disjoint(fn, outs, 3, ins, 5);
    }
    if ((st = seqkm_agree(fn, &R.c, st))) goto done;
    /* 2. the incoming states */
    if ((st = run_forward_scan(op, &R))) goto done;
    /* 3. the slice from its incoming state */
    float *fin = R.c.rank == R.last ? R.s_in : NULL, *zfin = R.c.rank == R.last && nz ? R.z_loc : NULL;
    if (R.c.rank == 0) { /* its transition was its whole computation */
        for (int64_t r = 0; r < op->B * op->T * op->H; r++)
            memcpy(o + r * op->V, R.o_s + r * R.Vx + R.cv, (size_t)op->V * sizeof(float));
        if (fin)
            for (size_t i = 0; i < nS; i++)
                memcpy(fin + i * op->V, R.s_loc + i * R.Vx + R.cv, (size_t)op->V * sizeof(float));
    } else if (op->kind == CP_DELTANET) {
        deltanet_correct(op, &R, o, fin);
    } else {
        st = local_forward(op, op->v, op->V, R.s_in, nz ? R.z_in : NULL, o, fin, zfin);
    }
    if ((st = seqkm_agree(fn, &R.c, st))) goto done;
    /* 4. the final state of the whole sequence, from the last rank */
    if (R.want_any & WANT_S) {
        if ((st = seqkm_bcast_floats(fn, &R.c, R.s_in, (int64_t)nS * op->V, R.last))) goto done;
        if (state_out) memcpy(state_out, R.s_in, nS * op->V * sizeof(float));
    }
    if (R.want_any & WANT_Z) {
        if ((st = seqkm_bcast_floats(fn, &R.c, R.z_loc, (int64_t)nS, R.last))) goto done;
        if (z_out) memcpy(z_out, R.z_loc, nS * sizeof(float));
    }
done:
    run_free(&R);
    return st;
}

/* ---- backward driver ----------------------------------------------------------------------- */

/* Sizes of the gradients of one call. */
static void grad_sizes(const cp_op *op, size_t *nq, size_t *nv, size_t *ng)
{
    *nq = (size_t)(op->B * op->T * op->Hqk * op->K);
    *nv = (size_t)(op->B * op->T * op->H * op->V);
    *ng = (size_t)(op->B * op->T * op->H);
}

static seqk_status cp_backward(const cp_op *op, const float *state_in, const float *z_in,
                               const float *dout, const float *dstate_out, const float *dz_out,
                               const cp_grads *user)
{
    const char *fn = op->fn;
    cp_run R;
    const bool nz = normalised(op);
    const int64_t want = (user->ds_in ? WANT_DS : 0) | (user->dz_in ? WANT_DZ : 0);
    seqk_status st = run_begin(op, &R, want);
    if (st) {
        run_free(&R);
        return st;
    }
    size_t nq, nv, ng;
    grad_sizes(op, &nq, &nv, &ng);
    const size_t nS = (size_t)(R.L.n * op->K), nH = (size_t)op->H;
    const bool mamba = op->kind == CP_MAMBA2;
    float *gbuf = NULL, *ds_g = NULL, *dz_g = NULL, *ds_out = NULL, *dz_out_s = NULL;
    double *red = NULL;
    cp_grads S = {0}; /* scratch gradients of the first backward */
    /* 1. scratch, the transition (inputs checked by the library), the outputs */
    st = run_alloc(op, &R);
    if (!st) st = seqkm_alloc(fn, "the scratch gradients", (2 * nq + nv + 2 * ng + 3 * nH) * 4,
                              (void **)&gbuf);
    if (!st) st = seqkm_alloc(fn, "the state gradients", 4 * nS * (size_t)(op->V + 1) * 4,
                              (void **)&ds_g);
    if (!st) st = seqkm_alloc(fn, "the per-head sums", 3 * nH * 8, (void **)&red);
    if (!st) {
        dz_g = ds_g + nS * op->V;
        ds_out = dz_g + nS;
        dz_out_s = ds_out + nS * op->V;
        S.dq = gbuf, S.dk = gbuf + nq, S.dv = gbuf + 2 * nq;
        S.dg = user->dg ? gbuf + 2 * nq + nv : NULL;
        S.dbeta = user->dbeta ? gbuf + 2 * nq + nv + ng : NULL;
        S.dA = user->dA ? gbuf + 2 * nq + nv + 2 * ng : NULL;
        S.dD = user->dD ? gbuf + 2 * nq + nv + 2 * ng + nH : NULL;
        S.ddt_bias = user->ddt_bias ? gbuf + 2 * nq + nv + 2 * ng + 2 * nH : NULL;
        S.ds_in = ds_g;
        S.dz_in = nz ? dz_g : NULL;
        st = run_transition(op, &R, state_in, z_in);
    }
    if (!st && nv) {
        const char *names[3] = {"dq", "dk", "dv"};
        const float *ptrs[3] = {user->dq, user->dk, user->dv};
        for (int i = 0; i < 3 && !st; i++) st = seqk__check_ptr(fn, names[i], ptrs[i]);
    }
    if (!st) {
        const size_t qb = nq * 4, gb = ng * 4;
        const seqk__arg outs[10] = {{"dq", user->dq, qb},           {"dk", user->dk, qb},
                                    {"dv", user->dv, nv * 4},       {"dg", user->dg, gb},
                                    {"dbeta", user->dbeta, gb},     {"dA", user->dA, nH * 4},
                                    {"dD", user->dD, nH * 4},       {"ddt_bias", user->ddt_bias, nH * 4},
                                    {"dstate_in", user->ds_in, nS * op->V * 4},
                                    {"dz_in", user->dz_in, nS * 4}};
        const seqk__arg ins[6] = {{"q", op->q, qb},         {"k", op->k, qb},
                                  {"v", op->v, nv * 4},     {"dout", dout, nv * 4},
                                  {"g", op->g, op->g ? gb : 0}, {"beta", op->beta, op->beta ? gb : 0}};
        st = seqk__check_disjoint(fn, outs, 10, ins, 6);
    }
    if ((st = seqkm_agree(fn, &R.c, st))) goto done;
    /* 2. the incoming states */
    if ((st = run_forward_scan(op, &R))) goto done;
    const float *s_in = R.c.rank == 0 ? state_in : R.s_in;
    const float *zs_in = !nz ? NULL : R.c.rank == 0 ? z_in : R.z_in;
    /* 3. g: the slice's dS_in for dS_out = 0 (the last rank: from the user's
     * dS_out, which makes its map the constant of the reverse scan) */
    const bool last = R.c.rank == R.last;
    st = local_backward(op, s_in, zs_in, dout, last ? dstate_out : NULL,
                        last && nz ? dz_out : NULL, &S);
    if ((st = seqkm_agree(fn, &R.c, st))) goto done;
    /* 4. the gradients of the outgoing states, by the reverse scan */
    if (last) {
        pack(&R.L, NULL, NULL, 0, false, ds_g, op->V, op->V, dz_g, R.elem);
    } else { /* M^T: the decay, or the transpose of M in the transition's state [M | C] */
        const bool delta = op->kind == CP_DELTANET;
        pack(&R.L, delta ? NULL : R.decay, delta ? R.s_loc : NULL, R.Vx, true, ds_g, op->V,
             op->V, dz_g, R.elem);
    }
    bool have = false;
    if ((st = exscan(fn, &R.c, true, &R.L, R.elem, R.work, &have))) goto done;
    if (have) unpack_c(&R.L, R.elem, op->V, ds_out, nz ? dz_out_s : NULL);
    /* 5. the slice's gradients from (S_in, dS_out, dout) */
    cp_grads U = *user;
    U.ds_in = ds_g; /* rank 0's goes to every rank that asks for it */
    U.dz_in = nz ? dz_g : NULL;
    if (last) {
        const struct {
            float *dst;
            const float *src;
            size_t n;
        } cp[8] = {{user->dq, S.dq, nq},        {user->dk, S.dk, nq},     {user->dv, S.dv, nv},
                   {user->dg, S.dg, ng},        {user->dbeta, S.dbeta, ng}, {user->dA, S.dA, nH},
                   {user->dD, S.dD, nH},        {user->ddt_bias, S.ddt_bias, nH}};
        for (int i = 0; i < 8; i++)
            if (cp[i].dst && cp[i].n) memcpy(cp[i].dst, cp[i].src, cp[i].n * sizeof(float));
    } else {
        st = local_backward(op, s_in, zs_in, dout, ds_out, nz ? dz_out_s : NULL, &U);
    }
    if ((st = seqkm_agree(fn, &R.c, st))) goto done;
    /* 6. Mamba2's per-head sums over all tokens */
    if (mamba) {
        float *hs[3] = {user->dA, user->dD, user->ddt_bias};
        for (int i = 0; i < 3; i++)
            for (size_t h = 0; h < nH; h++) red[i * nH + h] = hs[i] && op->T ? hs[i][h] : 0.0;
        if ((st = seqkm_allreduce_sum(fn, &R.c, red, (int64_t)(3 * nH)))) goto done;
        for (int i = 0; i < 3; i++)
            if (hs[i])
                for (size_t h = 0; h < nH; h++) hs[i][h] = (float)red[i * nH + h];
    }
    /* 7. the gradient of rank 0's initial state, to every rank that asks */
    if (R.want_any & WANT_DS) {
        if ((st = seqkm_bcast_floats(fn, &R.c, ds_g, (int64_t)nS * op->V, 0))) goto done;
        if (user->ds_in) memcpy(user->ds_in, ds_g, nS * op->V * sizeof(float));
    }
    if (R.want_any & WANT_DZ) {
        if ((st = seqkm_bcast_floats(fn, &R.c, dz_g, (int64_t)nS, 0))) goto done;
        if (user->dz_in) memcpy(user->dz_in, dz_g, nS * sizeof(float));
    }
done:
    free(gbuf);
    free(ds_g);
    free(red);
    run_free(&R);
    return st;
}

/* ---- entry points ----------------------------------------------------------------------------- */

seqk_status seqk_mpi_linear_attention(seqk_context *ctx, MPI_Comm comm, seqk_mode mode, int64_t B,
                                      int64_t T, int64_t H, int64_t K, int64_t V, float scale,
                                      unsigned flags, const float *q, const float *k,
                                      const float *v, float *o, const float *state_in,
                                      float *state_out, const float *z_in, float *z_out,
                                      int64_t chunk)
{
    const cp_op op = {.fn = "seqk_mpi_linear_attention", .kind = CP_LINATTN, .ctx = ctx,
                      .comm = comm, .mode = mode, .B = B, .T = T, .H = H, .Hqk = H, .K = K,
                      .V = V, .chunk = chunk, .scale = scale, .flags = flags, .q = q, .k = k,
                      .v = v};
    return cp_forward(&op, o, state_in, state_out, z_in, z_out);
}

seqk_status seqk_mpi_retention(seqk_context *ctx, MPI_Comm comm, seqk_mode mode, int64_t B,
                               int64_t T, int64_t H, int64_t K, int64_t V, float scale,
                               const float *gamma, const float *q, const float *k, const float *v,
                               float *o, const float *state_in, float *state_out, int64_t chunk)
{
    const cp_op op = {.fn = "seqk_mpi_retention", .kind = CP_RETENTION, .ctx = ctx, .comm = comm,
                      .mode = mode, .B = B, .T = T, .H = H, .Hqk = H, .K = K, .V = V,
                      .chunk = chunk, .scale = scale, .gamma = gamma, .q = q, .k = k, .v = v};
    return cp_forward(&op, o, state_in, state_out, NULL, NULL);
}

seqk_status seqk_mpi_gated_retention(seqk_context *ctx, MPI_Comm comm, seqk_mode mode, int64_t B,
                                     int64_t T, int64_t H, int64_t K, int64_t V, float scale,
                                     const float *q, const float *k, const float *v,
                                     const float *g, float *o, const float *state_in,
                                     float *state_out, int64_t chunk)
{
    const cp_op op = {.fn = "seqk_mpi_gated_retention", .kind = CP_GATED, .ctx = ctx,
                      .comm = comm, .mode = mode, .B = B, .T = T, .H = H, .Hqk = H, .K = K,
                      .V = V, .chunk = chunk, .scale = scale, .q = q, .k = k, .v = v, .g = g};
    return cp_forward(&op, o, state_in, state_out, NULL, NULL);
}

seqk_status seqk_mpi_mamba2(seqk_context *ctx, MPI_Comm comm, seqk_mode mode, int64_t B,
                            int64_t T, int64_t H, int64_t P, int64_t G, int64_t Nst,
                            unsigned flags, const float *x, const float *dt, const float *A,
                            const float *Bm, const float *Cm, const float *D,
                            const float *dt_bias, float *y, const float *state_in,
                            float *state_out, int64_t chunk)
{
    const cp_op op = {.fn = "seqk_mpi_mamba2", .kind = CP_MAMBA2, .ctx = ctx, .comm = comm,
                      .mode = mode, .B = B, .T = T, .H = H, .Hqk = G, .K = Nst, .V = P,
                      .chunk = chunk, .scale = 1.0f, .flags = flags, .q = Cm, .k = Bm, .v = x,
                      .g = dt, .A = A, .D = D, .dt_bias = dt_bias};
    return cp_forward(&op, y, state_in, state_out, NULL, NULL);
}

seqk_status seqk_mpi_deltanet(seqk_context *ctx, MPI_Comm comm, seqk_mode mode, int64_t B,
                              int64_t T, int64_t H, int64_t K, int64_t V, float scale,
                              unsigned flags, const float *q, const float *k, const float *v,
                              const float *beta, const float *g, float *o,
                              const float *state_in, float *state_out, int64_t chunk)
{
    const cp_op op = {.fn = "seqk_mpi_deltanet", .kind = CP_DELTANET, .ctx = ctx, .comm = comm,
                      .mode = mode, .B = B, .T = T, .H = H, .Hqk = H, .K = K, .V = V,
                      .chunk = chunk, .scale = scale, .flags = flags, .q = q, .k = k, .v = v,
                      .g = g, .beta = beta};
    return cp_forward(&op, o, state_in, state_out, NULL, NULL);
}

seqk_status seqk_mpi_linear_attention_backward(
    seqk_context *ctx, MPI_Comm comm, int64_t B, int64_t T, int64_t H, int64_t K, int64_t V,
    float scale, unsigned flags, const float *q, const float *k, const float *v,
    const float *dout, const float *state_in, const float *z_in, const float *dstate_out,
    const float *dz_out, float *dq, float *dk, float *dv, float *dstate_in, float *dz_in,
    int64_t chunk)
{
    const cp_op op = {.fn = "seqk_mpi_linear_attention_backward", .kind = CP_LINATTN,
                      .ctx = ctx, .comm = comm, .mode = SEQK_MODE_PARALLEL, .B = B, .T = T,
                      .H = H, .Hqk = H, .K = K, .V = V, .chunk = chunk, .scale = scale,
                      .flags = flags, .q = q, .k = k, .v = v};
    const cp_grads G = {.dq = dq, .dk = dk, .dv = dv, .ds_in = dstate_in, .dz_in = dz_in};
    return cp_backward(&op, state_in, z_in, dout, dstate_out, dz_out, &G);
}

seqk_status seqk_mpi_retention_backward(seqk_context *ctx, MPI_Comm comm, int64_t B, int64_t T,
                                        int64_t H, int64_t K, int64_t V, float scale,
                                        const float *gamma, const float *q, const float *k,
                                        const float *v, const float *dout,
                                        const float *state_in, const float *dstate_out,
                                        float *dq, float *dk, float *dv, float *dstate_in,
                                        int64_t chunk)
{
    const cp_op op = {.fn = "seqk_mpi_retention_backward", .kind = CP_RETENTION, .ctx = ctx,
                      .comm = comm, .mode = SEQK_MODE_PARALLEL, .B = B, .T = T, .H = H,
                      .Hqk = H, .K = K, .V = V, .chunk = chunk, .scale = scale, .gamma = gamma,
                      .q = q, .k = k, .v = v};
    const cp_grads G = {.dq = dq, .dk = dk, .dv = dv, .ds_in = dstate_in};
    return cp_backward(&op, state_in, NULL, dout, dstate_out, NULL, &G);
}

seqk_status seqk_mpi_gated_retention_backward(seqk_context *ctx, MPI_Comm comm, int64_t B,
                                              int64_t T, int64_t H, int64_t K, int64_t V,
                                              float scale, const float *q, const float *k,
                                              const float *v, const float *g, const float *dout,
                                              const float *state_in, const float *dstate_out,
                                              float *dq, float *dk, float *dv, float *dg,
                                              float *dstate_in, int64_t chunk)
{
    const cp_op op = {.fn = "seqk_mpi_gated_retention_backward", .kind = CP_GATED, .ctx = ctx,
                      .comm = comm, .mode = SEQK_MODE_PARALLEL, .B = B, .T = T, .H = H,
                      .Hqk = H, .K = K, .V = V, .chunk = chunk, .scale = scale, .q = q, .k = k,
                      .v = v, .g = g};
    const cp_grads G = {.dq = dq, .dk = dk, .dv = dv, .dg = dg, .ds_in = dstate_in};
    return cp_backward(&op, state_in, NULL, dout, dstate_out, NULL, &G);
}

seqk_status seqk_mpi_mamba2_backward(seqk_context *ctx, MPI_Comm comm, int64_t B, int64_t T,
                                     int64_t H, int64_t P, int64_t G, int64_t Nst, unsigned flags,
                                     const float *x, const float *dt, const float *A,
                                     const float *Bm, const float *Cm, const float *D,
                                     const float *dt_bias, const float *state_in, const float *dy,
                                     const float *dstate_out, float *dx, float *ddt, float *dA,
                                     float *dBm, float *dCm, float *dD, float *ddt_bias,
                                     float *dstate_in, int64_t chunk)
{
    const cp_op op = {.fn = "seqk_mpi_mamba2_backward", .kind = CP_MAMBA2, .ctx = ctx,
                      .comm = comm, .mode = SEQK_MODE_PARALLEL, .B = B, .T = T, .H = H,
                      .Hqk = G, .K = Nst, .V = P, .chunk = chunk, .scale = 1.0f, .flags = flags,
                      .q = Cm, .k = Bm, .v = x, .g = dt, .A = A, .D = D, .dt_bias = dt_bias};
    const cp_grads Gr = {.dq = dCm, .dk = dBm, .dv = dx, .dg = ddt, .dA = dA, .dD = dD,
                         .ddt_bias = ddt_bias, .ds_in = dstate_in};
    return cp_backward(&op, state_in, NULL, dy, dstate_out, NULL, &Gr);
}

seqk_status seqk_mpi_deltanet_backward(seqk_context *ctx, MPI_Comm comm, int64_t B, int64_t T,
                                       int64_t H, int64_t K, int64_t V, float scale,
                                       unsigned flags, const float *q, const float *k,
                                       const float *v, const float *beta, const float *g,
                                       const float *state_in, const float *dout,
                                       const float *dstate_out, float *dq, float *dk, float *dv,
                                       float *dbeta, float *dg, float *dstate_in, int64_t chunk)
{
    const cp_op op = {.fn = "seqk_mpi_deltanet_backward", .kind = CP_DELTANET, .ctx = ctx,
                      .comm = comm, .mode = SEQK_MODE_PARALLEL, .B = B, .T = T, .H = H,
                      .Hqk = H, .K = K, .V = V, .chunk = chunk, .scale = scale, .flags = flags,
                      .q = q, .k = k, .v = v, .g = g, .beta = beta};
    const cp_grads G = {.dq = dq, .dk = dk, .dv = dv, .dg = dg, .dbeta = dbeta,
                        .ds_in = dstate_in};
    return cp_backward(&op, state_in, NULL, dout, dstate_out, NULL, &G);
}
