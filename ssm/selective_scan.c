/*
 * ssm/selective_scan.c -- the Mamba selective scan (Mamba1), DESIGN 3.2:
 * CPU backend, validation, dispatch (gpu/selective_scan.cu is the CUDA one).
 *
 *   dt_t[d]  = softplus(dt_raw_t[d] + dt_bias[d])            (optional softplus)
 *   h_t[d,n] = exp(dt_t[d] A[d,n]) h_{t-1}[d,n] + dt_t[d] B_t[g,n] u_t[d]
 *   y_t[d]   = sum_n C_t[g,n] h_t[d,n] + Dskip[d] u_t[d],  then * silu(z_t[d])
 *
 * Work items are (sequence, tile of CW = 16 channels of one group; 8 when
 * that leaves fewer than 32 items, whatever the thread count); items run in parallel
 * (OpenMP, dynamic). An item keeps its state transposed, [Nst][16]: state
 * index n major, channels across the SS_VL lanes of a vector (one 16-lane
 * vector per tile with AVX-512, two 8-lane ones otherwise; the last vector
 * of a tile may be partial: masked loads and stores, zero padding that
 * stays zero). So everything per token and channel -- softplus, dt u, the
 * D skip, the silu gate -- is vectorised across channels, B_t[n] and
 * C_t[n] are broadcasts, the reduction over n is a sum of vectors (no
 * horizontal sums), and the decay exp(dt A) is seqk__exp2_8 / _16(dt * A log2 e)
 * (ss_decay; the update h = a h + b is ss_step: both in ssm/sscan_vec.h,
 * shared with the backward's recomputation of h)
 * with A log2 e formed once per item (the main cost: one exp per state
 * element and token; a check per token, against the least and greatest
 * A log2 e of each channel, lets the usual token skip the exp's range
 * clamp, two of its ~13 instructions). The rows of one item are D floats
 * apart (a new page every few tokens, where the hardware prefetchers
 * stop): the rows PF tokens ahead are prefetched.
 *
 * Recurrent mode: token by token; per token and state index, the two
 * vectors of decays are formed, the state updated and reduced with C in one
 * pass (the state stays in L1).
 *
 * Parallel mode: the scan primitive over time chunks of TC tokens
 * (DESIGN 3.2: h is never stored for every token): per chunk, (1) the
 * coefficients a = exp(dt A) and inputs b = dt B u, [TC][Nst][16], are
 * formed in a per-thread scratch of 2 x 8 KiB (L1; TC = 8 tokens at
 * Nst = 16), with no dependency between tokens; (2) seqk__scan_rows runs
 * h = a h + b over the chunk in place of b, carrying the chunk-end state;
 * (3) y = C h + skip, gated, is reduced from the scratch. Both modes do the
 * same arithmetic in the same order (their outputs agree bit for bit); the
 * parallel mode's extra loads and stores through the scratch make it about
 * 0.8x the recurrent mode's speed on one core: on a CPU the recurrent walk,
 * whose exps are independent of the state and overlap out of order, is
 * the faster form once there are enough channels for the threads.
 *
 * The kernels are written once over a vector type of SS_VL lanes
 * (ssm/sscan_vec.h): AVX-512 (16 lanes) or AVX2 + FMA (8 lanes) intrinsics
 * when the build has them, plain loops otherwise (the same algorithm, lane
 * by lane). Every lane does the same operations in the same order at either
 * width, so y and the states are bit-identical between an AVX-512 and an
 * AVX2 build.
 */
#include "selective_scan.h"
#include "../core/dtype.h"
#include "sscan_vec.h"
#include "../scan/scan.h"
#include "../gpu/gpu.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* tunables (overridable at compile time) */
#ifndef SEQK_SSCAN_PF
#define SEQK_SSCAN_PF 8 /* tokens ahead to prefetch */
#endif
#ifndef SEQK_SSCAN_CHUNK_FLOATS
#define SEQK_SSCAN_CHUNK_FLOATS 2048 /* floats of a (and of b) per chunk, parallel mode */
#endif

enum {
    CW = 16,       /* channels per work item (one 16-lane or two 8-lane vectors) */
    MAX_NV = CW / SS_VL, /* vectors per item at most: 1 (AVX-512) or 2 */
    MAX_NST = SEQK__SSCAN_MAX_NST, /* ssm/selective_scan.h */
    PF = SEQK_SSCAN_PF,
    CHUNK_FLOATS = SEQK_SSCAN_CHUNK_FLOATS,
    MAX_TC = 64 /* most tokens per chunk */
};

static const char FN[] = "seqk_selective_scan";

/* ---- the problem and its work items ------------------------------------------------ */

typedef struct {
    int64_t B, T, D, Nst, G, N;
    const int32_t *cu; /* host cu_seqlens or NULL */
    unsigned flags;
    const float *u, *dt, *A, *Bm, *Cm, *Dskip, *z, *dt_bias;
    float *y;
    const float *s_in;
    float *s_out;
} sscan;

/* Sequence n's channels [d0, d0 + w) (one group, g), rows [r0, r0 + len). */
typedef struct {
    int64_t n, d0, w, g, r0, len;
    int nv;            /* vectors: 1 .. MAX_NV */
    int lanes[MAX_NV]; /* channels in each vector (the last may be partial) */
} item;

/* Per item constants, zero-padded to whole vectors: A log2(e) transposed,
 * [Nst][SS_VL nv]; its least and greatest value per channel; dt_bias and
 * Dskip, [SS_VL nv]. */
typedef struct {
    _Alignas(64) float At[MAX_NST * CW];
    _Alignas(64) float amin[CW];
    _Alignas(64) float amax[CW];
    _Alignas(64) float bias[CW];
    _Alignas(64) float skip[CW];
} item_consts;

static item make_item(const sscan *P, int64_t n, int64_t d0, int64_t w)
{
    item I;
    I.n = n, I.d0 = d0, I.w = w, I.g = d0 / (P->D / P->G);
    I.r0 = P->cu ? P->cu[n] : n * P->T;
    I.len = P->cu ? (int64_t)P->cu[n + 1] - P->cu[n] : P->T;
    I.nv = (int)((w + SS_VL - 1) / SS_VL);
    for (int v = 0; v < MAX_NV; v++) {
        const int64_t l = w - (int64_t)SS_VL * v;
        I.lanes[v] = (int)(l < 0 ? 0 : l > SS_VL ? SS_VL : l);
    }
    return I;
}

static void load_consts(const sscan *P, const item *I, item_consts *K)
{
    const int64_t Ns = P->Nst, W = (int64_t)SS_VL * I->nv;
    const float log2e = 1.44269504088896341f;
    for (int64_t s = 0; s < Ns; s++)
        for (int64_t j = 0; j < W; j++)
            K->At[s * W + j] = j < I->w && P->A ? P->A[(I->d0 + j) * Ns + s] * log2e : 0.0f;
    for (int64_t j = 0; j < W; j++) {
        float lo = K->At[j], hi = K->At[j];
        for (int64_t s = 1; s < Ns; s++) {
            const float x = K->At[s * W + j];
            lo = x < lo ? x : lo;
            hi = x > hi ? x : hi;
        }
        K->amin[j] = lo, K->amax[j] = hi;
        K->bias[j] = j < I->w && P->dt_bias ? P->dt_bias[I->d0 + j] : 0.0f;
        K->skip[j] = j < I->w && P->Dskip ? P->Dskip[I->d0 + j] : 0.0f;
    }
}

/* The item's state, transposed into h [Nst][SS_VL nv] (zeros without state_in
 * and in the padding lanes), and back. */
static void load_state(const sscan *P, const item *I, float *h)
{
    const int64_t Ns = P->Nst, W = (int64_t)SS_VL * I->nv;
    const float *src = P->s_in ? P->s_in + (I->n * P->D + I->d0) * Ns : NULL;
    for (int64_t s = 0; s < Ns; s++)
        for (int64_t j = 0; j < W; j++) h[s * W + j] = src && j < I->w ? src[j * Ns + s] : 0.0f;
}

static void store_state(const sscan *P, const item *I, const float *h)
{
    if (!P->s_out) return;
    const int64_t Ns = P->Nst, W = (int64_t)SS_VL * I->nv;
    float *dst = P->s_out + (I->n * P->D + I->d0) * Ns;
    for (int64_t j = 0; j < I->w; j++)
        for (int64_t s = 0; s < Ns; s++) dst[j * Ns + s] = h[s * W + j];
}

/* The cache lines of n floats from p. */
SS_INLINE void prefetch_floats(const float *p, int64_t n)
{
    const uintptr_t a = (uintptr_t)p, last = a + (uintptr_t)(n - 1) * sizeof(float);
    for (uintptr_t q = a & ~(uintptr_t)63; q <= last; q += 64) prefetch_line((const void *)q);
}

/* Everything row r of the item reads or writes. */
static void prefetch_row(const sscan *P, const item *I, int64_t r)
{
    const int64_t o = r * P->D + I->d0, bc = (r * P->G + I->g) * P->Nst;
    prefetch_floats(P->u + o, I->w);
    prefetch_floats(P->dt + o, I->w);
    if (P->z) prefetch_floats(P->z + o, I->w);
    prefetch_floats(P->y + o, I->w);
    prefetch_floats(P->Bm + bc, P->Nst);
    prefetch_floats(P->Cm + bc, P->Nst);
}

/* Per token and vector v of the item: the step dt, dt u, the skip D u and the gate. */
typedef struct {
    vf dt, du, skip, gate;
} token_in;

SS_INLINE token_in load_token(const sscan *P, const item *I, const item_consts *K, int64_t r,
                              int v)
{
    const int64_t o = r * P->D + I->d0 + SS_VL * v;
    const int lanes = I->lanes[v];
    token_in t;
    vf x = v_add(v_load_n(P->dt + o, lanes), v_load(K->bias + SS_VL * v));
    if (P->flags & SEQK_SSCAN_DT_SOFTPLUS) x = v_softplus(x);
    const vf u = v_load_n(P->u + o, lanes);
    t.dt = x;
    t.du = v_mul(x, u);
    t.skip = v_mul(v_load(K->skip + SS_VL * v), u);
    t.gate = P->z ? v_silu(v_load_n(P->z + o, lanes)) : v_set1(1.0f);
    return t;
}

SS_INLINE void store_y(const sscan *P, const item *I, int64_t r, int v, vf acc, const vf skip,
                       const vf gate)
{
    v_store_n(P->y + r * P->D + I->d0 + SS_VL * v, v_mul(v_add(acc, skip), gate), I->lanes[v]);
}

/* ---- recurrent mode ----------------------------------------------------------- */

/* One token of the recurrent walk: h [Nst][SS_VL NV] updated in place, y
 * written. CLAMP 0 when every dt A of the token is known to be in the range
 * of seqk__exp2_8_inrange (the usual case: the check costs a few
 * instructions per token, the clamp two per state element). */
SS_INLINE void token_recurrent(const sscan *P, const item *I, const item_consts *K, float *h,
                               const token_in *t, int64_t r, const int NV, const int CLAMP)
{
    const int64_t Ns = P->Nst, W = SS_VL * NV;
    const float *Bt = P->Bm + (r * P->G + I->g) * Ns, *Ct = P->Cm + (r * P->G + I->g) * Ns;
    vf acc[MAX_NV];
    for (int v = 0; v < NV; v++) acc[v] = v_zero();
    for (int64_t s = 0; s < Ns; s++) {
        const vf bs = v_bcast(Bt + s), cs = v_bcast(Ct + s);
        for (int v = 0; v < NV; v++) {
            float *hp = h + s * W + SS_VL * v;
            const vf a = ss_decay(t[v].dt, v_load(K->At + s * W + SS_VL * v), CLAMP);
            const vf hv = ss_step(a, v_load(hp), v_mul(t[v].du, bs));
            v_store(hp, hv);
            acc[v] = v_fma(cs, hv, acc[v]);
        }
    }
    for (int v = 0; v < NV; v++) store_y(P, I, r, v, acc[v], t[v].skip, t[v].gate);
}

/* The token's inputs for its NV vectors; returns whether no clamp is needed. */
SS_INLINE int load_tokens(const sscan *P, const item *I, const item_consts *K, int64_t r,
                          token_in *t, const int NV)
{
    int safe = 1;
    for (int v = 0; v < NV; v++) {
        t[v] = load_token(P, I, K, r, v);
        safe &= v_exp2_safe(t[v].dt, v_load(K->amin + SS_VL * v), v_load(K->amax + SS_VL * v));
    }
    return safe;
}

/* The item's tokens, state h [Nst][SS_VL NV] in place; NV is 1 or 2 (a constant
 * after inlining, so that the per-vector values live in registers). */
SS_INLINE void walk_recurrent(const sscan *P, const item *I, const item_consts *K, float *h,
                              const int NV)
{
    const int64_t end = I->r0 + I->len;
    for (int64_t r = I->r0; r < end; r++) {
        if (r + PF < end) prefetch_row(P, I, r + PF);
        token_in t[MAX_NV];
        if (load_tokens(P, I, K, r, t, NV)) token_recurrent(P, I, K, h, t, r, NV, 0);
        else token_recurrent(P, I, K, h, t, r, NV, 1);
    }
}

static void item_recurrent(const sscan *P, const item *I)
{
    item_consts K;
    _Alignas(64) float h[MAX_NST * CW];
    load_consts(P, I, &K);
    load_state(P, I, h);
    if (I->len > 0) prefetch_row(P, I, I->r0);
    if (I->nv == 2) walk_recurrent(P, I, &K, h, MAX_NV); /* 8 lanes only */
    else walk_recurrent(P, I, &K, h, 1);
    store_state(P, I, h);
}

/* ---- parallel mode -------------------------------------------------------------- */

/* Tokens per chunk for E = Nst * SS_VL nv state floats per token. */
static int64_t chunk_tokens(int64_t E)
{
    const int64_t tc = CHUNK_FLOATS / E;
    return tc < 1 ? 1 : tc > MAX_TC ? MAX_TC : tc;
}

/* Per-thread scratch (floats): a and b of a chunk, the skip and gate
 * vectors of its tokens, the carried state; 16 floats of alignment slack. */
static size_t scratch_floats(int64_t Nst)
{
    const int64_t E = Nst * CW; /* the most state floats of an item */
    /* chunk_tokens(E) * E <= max(CHUNK_FLOATS, E) for every E */
    const int64_t ab = CHUNK_FLOATS > E ? CHUNK_FLOATS : E;
    return (size_t)(2 * ab + 2 * MAX_TC * CW + E + 16);
}

/* Row i of a chunk: a = exp(dt A), b = dt B u, [Nst][SS_VL NV] each. */
SS_INLINE void chunk_row(int64_t Ns, const item_consts *K, const token_in *t, const float *Bt,
                         float *ai, float *bi, const int NV, const int CLAMP)
{
    const int64_t W = SS_VL * NV;
    for (int64_t s = 0; s < Ns; s++) {
        const vf bs = v_bcast(Bt + s);
        for (int v = 0; v < NV; v++) {
            const int64_t e = s * W + SS_VL * v;
            v_store(ai + e, ss_decay(t[v].dt, v_load(K->At + e), CLAMP));
            v_store(bi + e, v_mul(t[v].du, bs));
        }
    }
}

SS_INLINE void walk_parallel(const sscan *P, const item *I, const item_consts *K, float *carry,
                             float *scratch, const int NV)
{
    const int64_t Ns = P->Nst, GN = P->G * Ns, W = SS_VL * NV, E = Ns * W;
    const int64_t tc = chunk_tokens(E), end = I->r0 + I->len;
    float *a = scratch, *b = a + tc * E, *sk = b + tc * E, *gt = sk + tc * W;
    for (int64_t c0 = I->r0; c0 < end; c0 += tc) {
        const int64_t L = end - c0 < tc ? end - c0 : tc;
        /* (1) a = exp(dt A), b = dt B u for the chunk; its skips and gates */
        for (int64_t i = 0; i < L; i++) {
            const int64_t r = c0 + i;
            if (r + PF < end) prefetch_row(P, I, r + PF);
            token_in t[MAX_NV];
            const int safe = load_tokens(P, I, K, r, t, NV);
            for (int v = 0; v < NV; v++) {
                v_store(sk + i * W + SS_VL * v, t[v].skip);
                v_store(gt + i * W + SS_VL * v, t[v].gate);
            }
            const float *Bt = P->Bm + r * GN + I->g * Ns;
            if (safe) chunk_row(Ns, K, t, Bt, a + i * E, b + i * E, NV, 0);
            else chunk_row(Ns, K, t, Bt, a + i * E, b + i * E, NV, 1);
        }
        /* (2) h over the chunk, in place of b, from the carried state */
        seqk__scan_rows(L, E, 1, 0, a, E, b, E, b, E, carry);
        /* (3) y = C h + skip, gated */
        for (int64_t i = 0; i < L; i++) {
            const int64_t r = c0 + i;
            const float *Ct = P->Cm + r * GN + I->g * Ns, *hi = b + i * E;
            vf acc[MAX_NV];
            for (int v = 0; v < NV; v++) acc[v] = v_zero();
            for (int64_t s = 0; s < Ns; s++) {
                const vf cs = v_bcast(Ct + s);
                for (int v = 0; v < NV; v++)
                    acc[v] = v_fma(cs, v_load(hi + s * W + SS_VL * v), acc[v]);
            }
            for (int v = 0; v < NV; v++)
                store_y(P, I, r, v, acc[v], v_load(sk + i * W + SS_VL * v),
                        v_load(gt + i * W + SS_VL * v));
        }
    }
}

static void item_parallel(const sscan *P, const item *I, float *scratch)
{
    item_consts K;
    /* 64-byte aligned scratch: the carry first, then the chunk */
    float *base = (float *)(((uintptr_t)scratch + 63) & ~(uintptr_t)63);
    float *carry = base, *chunk = base + P->Nst * CW;
    load_consts(P, I, &K);
    load_state(P, I, carry);
    if (I->len > 0) prefetch_row(P, I, I->r0);
    if (I->nv == 2) walk_parallel(P, I, &K, carry, chunk, MAX_NV); /* 8 lanes only */
    else walk_parallel(P, I, &K, carry, chunk, 1);
    store_state(P, I, carry);
}

/* ---- validation and dispatch -------------------------------------------------------- */

seqk_status seqk__sscan_check_dims(const char *fn, int64_t B, int64_t T, int64_t D, int64_t Nst,
                                   int64_t G)
{
    seqk_status st;
    if ((st = seqk__check_min(fn, "B", B, 1))) return st;
    if ((st = seqk__check_min(fn, "T", T, 0))) return st;
    if ((st = seqk__check_min(fn, "D", D, 1))) return st;
    if ((st = seqk__check_min(fn, "Nst", Nst, 1))) return st;
    if (Nst > SEQK__SSCAN_MAX_NST)
        return seqk__fail(SEQK_ERROR_UNSUPPORTED, "%s: Nst=%" PRId64 ", at most %d is supported",
                          fn, Nst, SEQK__SSCAN_MAX_NST);
    if ((st = seqk__check_range(fn, "G", G, 1, D))) return st;
    if (D % G)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                          "%s: D=%" PRId64 " is not a multiple of G=%" PRId64, fn, D, G);
    return SEQK_SUCCESS;
}

static seqk_status selective_scan_f32(seqk_context *ctx, seqk_mode mode, int64_t B, int64_t T,
                                      int64_t D, int64_t Nst, int64_t G, unsigned flags,
                                      const float *u, const float *dt, const float *A,
                                      const float *Bm, const float *Cm, const float *Dskip,
                                      const float *z, const float *dt_bias, float *y,
                                      const float *state_in, float *state_out,
                                      const int32_t *cu_seqlens, int64_t N)
{
    seqk_status st;
    if ((st = seqk__check_ctx(FN, ctx))) return st;
    if (mode != SEQK_MODE_RECURRENT && mode != SEQK_MODE_PARALLEL)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: mode=%d is not a seqk_mode", FN,
                          (int)mode);
    if ((st = seqk__sscan_check_dims(FN, B, T, D, Nst, G))) return st;
    if ((st = seqk__check_flags(FN, flags, SEQK_SSCAN_DT_SOFTPLUS))) return st;
    const int64_t d_bc[4] = {B, T, G, Nst}, d_s[3] = {cu_seqlens ? N : B, D, Nst};
    const int64_t d_u[3] = {B, T, D};
    if ((st = seqk__check_numel(FN, "u [B,T,D]", 3, d_u, sizeof(float), NULL))) return st;
    if ((st = seqk__check_numel(FN, "Bm [B,T,G,Nst]", 4, d_bc, sizeof(float), NULL))) return st;
    if (cu_seqlens && (st = seqk__check_min(FN, "N", N, 1))) return st;
    if ((st = seqk__check_numel(FN, "state [N,D,Nst]", 3, d_s, sizeof(float), NULL))) return st;
    if (!cu_seqlens) N = B;
    const int64_t rows = B * T;
    if (rows > 0) {
        const struct { const void *p; const char *name; } req[] = {
            {u, "u"}, {dt, "dt"}, {A, "A"}, {Bm, "Bm"}, {Cm, "Cm"}, {y, "y"}};
        for (size_t i = 0; i < sizeof req / sizeof req[0]; i++)
            if ((st = seqk__check_ptr(FN, req[i].name, req[i].p))) return st;
        const size_t yb = (size_t)(rows * D) * sizeof(float), bcb = (size_t)(rows * G * Nst) * 4;
        const struct { const void *p; size_t bytes; const char *name; } in[] = {
            {u, yb, "u"}, {dt, yb, "dt"}, {z, yb, "z"}, {Bm, bcb, "Bm"}, {Cm, bcb, "Cm"},
            {A, (size_t)(D * Nst) * 4, "A"}, {Dskip, (size_t)D * 4, "Dskip"},
            {dt_bias, (size_t)D * 4, "dt_bias"}};
        for (size_t i = 0; i < sizeof in / sizeof in[0]; i++)
            if (in[i].p && seqk__overlap(y, yb, in[i].p, in[i].bytes))
                return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: y=%p overlaps %s=%p", FN,
                                  (void *)y, in[i].name, in[i].p);
    }
    const size_t sb = (size_t)(N * D * Nst) * sizeof(float);
    if ((st = seqk__check_state_io(FN, state_in, state_out, sb, "y", y,
                                   (size_t)(rows * D) * sizeof(float))))
        return st;
    if ((st = seqk__check_backend_built(FN, ctx))) return st;
    /* the gates' values: read on the CPU; not checked on CUDA (see seqk.h) */
    if (ctx->backend == SEQK_BACKEND_CPU && rows > 0 &&
        (st = seqk__check_dt_gates(FN, dt, dt_bias, A, D * Nst, rows, D)))
        return st;
    int32_t *cu_host = NULL;
    if (cu_seqlens) {
        if ((st = seqk__copy_cu_seqlens(FN, ctx, cu_seqlens, N, B, T, &cu_host))) return st;
    }
    if (ctx->backend != SEQK_BACKEND_CPU) {
#if SEQK__HAVE_CUDA
        st = seqk__cuda_selective_scan(ctx, (int)mode, B, T, D, Nst, G, flags, u, dt, A, Bm, Cm,
                                       Dskip, z, dt_bias, y, state_in, state_out, cu_seqlens,
                                       cu_host, N);
#else
        st = SEQK_ERROR_INTERNAL;
#endif
        free(cu_host);
        return st;
    }
    const sscan P = {B, T, D, Nst, G, N, cu_host, flags, u, dt, A, Bm, Cm, Dskip, z, dt_bias,
                     y, state_in, state_out};
    const int threads = seqk__threads(ctx);
    /* items: (sequence, tile of <= tw channels inside one group); 8-channel
     * tiles when 16-channel ones would give few items. The choice depends on
     * the shape only, never on the thread count: the tile width changes the
     * float order of the parallel mode, and results must be bit-identical
     * across thread counts (tests/test_determinism.c) */
    const int64_t per_group = D / G;
    int64_t tw = CW, tiles = (per_group + tw - 1) / tw;
    if (N * G * tiles < 32 && per_group > 8) tw = 8, tiles = (per_group + 7) / 8;
    const int64_t items = N * G * tiles;
    float *ws = NULL;
    if (mode == SEQK_MODE_PARALLEL &&
        (st = seqk__workspace(FN, ctx, scratch_floats(Nst) * (size_t)threads * sizeof(float),
                              (void **)&ws))) {
        free(cu_host);
        return st;
    }
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int64_t it = 0; it < items; it++) {
        const int64_t n = it / (G * tiles), gt = it % (G * tiles);
        const int64_t d0 = (gt / tiles) * per_group + (gt % tiles) * tw;
        const int64_t gend = (gt / tiles + 1) * per_group;
        const item I = make_item(&P, n, d0, gend - d0 < tw ? gend - d0 : tw);
        if (mode == SEQK_MODE_RECURRENT) item_recurrent(&P, &I);
        else item_parallel(&P, &I, ws + scratch_floats(Nst) * (size_t)seqk__omp_thread());
    }
    free(cu_host);
    return SEQK_SUCCESS;
}

seqk_status seqk_selective_scan_workspace_size(seqk_context *ctx, seqk_mode mode, int64_t B,
                                               int64_t T, int64_t D, int64_t Nst, int64_t G,
                                               int64_t N, size_t *bytes)
{
    static const char fn[] = "seqk_selective_scan_workspace_size";
    seqk_status st;
    if ((st = seqk__check_ctx(fn, ctx))) return st;
    if (mode != SEQK_MODE_RECURRENT && mode != SEQK_MODE_PARALLEL)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: mode=%d is not a seqk_mode", fn,
                          (int)mode);
    if ((st = seqk__sscan_check_dims(fn, B, T, D, Nst, G))) return st;
    if ((st = seqk__check_min(fn, "N", N, 0))) return st;
    if ((st = seqk__check_ptr(fn, "bytes", bytes))) return st;
    const int64_t d_u[3] = {B, T, D}, d_s[3] = {N > 0 ? N : B, D, Nst};
    if ((st = seqk__check_numel(fn, "u [B,T,D]", 3, d_u, sizeof(float), NULL))) return st;
    if ((st = seqk__check_numel(fn, "state [N,D,Nst]", 3, d_s, sizeof(float), NULL))) return st;
#if SEQK__HAVE_CUDA
    if (ctx->backend == SEQK_BACKEND_CUDA) {
        *bytes = seqk__cuda_selective_scan_workspace((int)mode, B, T, D, Nst, N > 0 ? N : B);
        return SEQK_SUCCESS;
    }
#endif
    *bytes = mode == SEQK_MODE_PARALLEL
                 ? scratch_floats(Nst) * (size_t)seqk__threads(ctx) * sizeof(float)
                 : 0;
    return SEQK_SUCCESS;
}

/* ---- dtypes (seqk.h, "Dtypes"): the _ex entry points ---------------------- */

seqk_status seqk_selective_scan_ex(seqk_context *ctx, seqk_dtype dtype, seqk_mode mode, int64_t B,
                                   int64_t T, int64_t D, int64_t Nst, int64_t G, unsigned flags,
                                   const void *u, const float *dt, const float *A, const void *Bm,
                                   const void *Cm, const float *Dskip, const void *z,
                                   const float *dt_bias, void *y, const float *state_in,
                                   float *state_out, const int32_t *cu_seqlens, int64_t N)
{
    if (dtype == SEQK_DTYPE_F32)
        return selective_scan_f32(ctx, mode, B, T, D, Nst, G, flags, u, dt, A, Bm, Cm, Dskip, z,
                                  dt_bias, y, state_in, state_out, cu_seqlens, N);
    const int64_t nu = seqk__dt_numel(B, T, D, 1), nb = seqk__dt_numel(B, T, G, Nst);
    seqk__dt_tensor t[] = {
        {"u", u, nu, SEQK__DT_IN, 0, NULL},
        {"Bm", Bm, nb, SEQK__DT_IN, 0, NULL},
        {"Cm", Cm, nb, SEQK__DT_IN, 0, NULL},
        {"z", z, nu, SEQK__DT_IN, 0, NULL},
        {"y", y, nu, SEQK__DT_OUT, 0, NULL}};
    size_t ws = 0;
    const seqk_status qs =
        seqk_selective_scan_workspace_size(ctx, mode, B, T, D, Nst, G, cu_seqlens ? N : 0, &ws);
    seqk__dt_call c;
    seqk_status st = seqk__dt_begin(&c, "seqk_selective_scan_ex", ctx, dtype, t, 5,
                                    seqk__dt_ws(qs, ws));
    if (st) return st;
    st = selective_scan_f32(ctx, mode, B, T, D, Nst, G, flags, t[0].f, dt, A, t[1].f, t[2].f,
                            Dskip, t[3].f, dt_bias, t[4].f, state_in, state_out, cu_seqlens, N);
    return seqk__dt_end(&c, st);
}

seqk_status seqk_selective_scan(seqk_context *ctx, seqk_mode mode, int64_t B, int64_t T, int64_t D,
                                int64_t Nst, int64_t G, unsigned flags, const float *u,
                                const float *dt, const float *A, const float *Bm, const float *Cm,
                                const float *Dskip, const float *z, const float *dt_bias, float *y,
                                const float *state_in, float *state_out, const int32_t *cu_seqlens,
                                int64_t N)
{
    return seqk_selective_scan_ex(ctx, SEQK_DTYPE_F32, mode, B, T, D, Nst, G, flags, u, dt, A,
                                  Bm, Cm, Dskip, z, dt_bias, y, state_in, state_out, cu_seqlens,
                                  N);
}
