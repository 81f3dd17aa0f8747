/*
 * scan/linear_recurrent.c -- the recurrent mode of the linear-state engine
 * (DESIGN 3.1), CPU: token by token,
 *
 *   S_t = a_t S_{t-1} + phi(k_t) v_t^T          (K x V)
 *   o_t = S_t^T (scale phi(q_t))                 (V)
 *   normaliser: z_t = a_t z_{t-1} + phi(k_t),  o_t /= scale phi(q_t) . z_t + eps
 *
 * Work items: (sequence, group of heads, group of state columns; see
 * plan_items); columns of S are independent. An item walks its tokens in
 * blocks of up to TB tokens, and within a block its heads one by one:
 *
 *   pack     q~_u = scale phi(q_u) A_u,  k~_u = phi(k_u) / A_u   (u in the block)
 *   tiles    for every 4-row x 16-column tile of the head's state slice
 *            (the first row of tiles stores o's partial sums, the others add):
 *              hold the tile in registers through the whole block,
 *              S += k~_u v_u^T ; o_u += S^T q~_u           (u = 0 .. nt-1)
 *   unpack   o rows (divided by the normaliser's denominator)
 *
 * while the next block's rows are prefetched a few lines per tile,
 * so the state is read and written once per block instead of once per token,
 * and a token costs the tile 16 FMAs and no state traffic.
 *
 * The decay is deferred within a block: with A_u = a_{u0+1} ... a_u (the first
 * token's decay a_{u0} is applied to the tile when it is loaded) the block
 * holds S'_u = S_u / A_u, for which S'_u = S'_{u-1} + (k_u / A_u) v_u^T and
 * o_u = S'_u^T (A_u q_u); the tile is scaled by A_{last} when it is stored. A
 * block ends before the token that would take |log A_u| past LOG_A_MAX, so
 * A_u and 1 / A_u stay below e^LOG_A_MAX and nothing overflows (positive
 * log-gates, a growing state, are kept in range too); a very small gate
 * simply starts a new block, where it is applied as a plain multiplication.
 * Rounding: S'_u's error is relative to max(|old terms| / A_u, |new terms|),
 * i.e. after the scaling by A_u relative to the state's own terms, as in the
 * plain update.
 *
 * The state is updated in place in s_out when given (after copying s_in
 * there), so a decode step with s_in == s_out touches nothing else; the
 * packed block lives on the stack, so the step allocates nothing. Without
 * s_out the item's slice lives in the workspace.
 */
#include "linear_state.h"

#include "../core/vmath.h"

#include <string.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

enum {
    CG = 64,           /* state columns per work item */
    TR = 4, TC = 16,   /* rows x columns of a register tile */
    TB = 32,           /* most tokens per block */
    SCRATCH = 16384    /* floats of packed block on the stack (64 KiB) */
};
_Static_assert(SCRATCH >= 2 * (SEQK__LIN_MAX_K + CG), "a block holds at least one token");
#define LOG_A_MAX 16.0f /* a block keeps |log A_u| <= LOG_A_MAX */

/* The packed block of one item: nt <= TB tokens. */
typedef struct block {
    int64_t nt, K, w;  /* tokens, rows, columns (w <= CG) */
    const float *qs;   /* [nt, K]   A_u scale phi(q_u) */
    const float *ks;   /* [nt, K]   phi(k_u) v_scale_u / A_u */
    const float *vs;   /* [nt, w]   v_u's columns of the item */
    float *os;         /* [nt, w]   o_u's columns, accumulated over row tiles */
    float pre, post;   /* the tile is scaled by pre when loaded, by post when stored */
} block;

/* The tile of rows [i0, i0 + r), columns [j0, j0 + c) (r <= TR, c <= TC) of
 * the item's slice S (rows ldS apart) through the block; plain C for the
 * edges of the slice and for builds without AVX2. */
static void tile_generic(const block *b, int64_t i0, int64_t r, int64_t j0, int64_t c, float *S,
                         int64_t ldS)
{
    const bool first = i0 == 0; /* the first row tile starts o's sums */
    float s[TR][TC];
    for (int64_t i = 0; i < r; i++)
        for (int64_t j = 0; j < c; j++) s[i][j] = b->pre * S[(i0 + i) * ldS + j0 + j];
    for (int64_t u = 0; u < b->nt; u++) {
        const float *q = b->qs + u * b->K + i0, *k = b->ks + u * b->K + i0;
        const float *v = b->vs + u * b->w + j0;
        float *o = b->os + u * b->w + j0;
        if (first)
            for (int64_t j = 0; j < c; j++) o[j] = 0.0f;
        for (int64_t i = 0; i < r; i++)
            for (int64_t j = 0; j < c; j++) {
                s[i][j] += k[i] * v[j];
                o[j] += q[i] * s[i][j];
            }
    }
    for (int64_t i = 0; i < r; i++)
        for (int64_t j = 0; j < c; j++) S[(i0 + i) * ldS + j0 + j] = b->post * s[i][j];
}

#ifdef __AVX2__
/* The full TR x TC tile at (i0, j0), in 8 registers. */
static void tile_4x16(const block *b, int64_t i0, int64_t j0, float *S, int64_t ldS, bool scaled)
{
    float *s0 = S + i0 * ldS + j0, *s1 = s0 + ldS, *s2 = s1 + ldS, *s3 = s2 + ldS;
    __m256 a0 = _mm256_loadu_ps(s0), a1 = _mm256_loadu_ps(s0 + 8);
    __m256 b0 = _mm256_loadu_ps(s1), b1 = _mm256_loadu_ps(s1 + 8);
    __m256 c0 = _mm256_loadu_ps(s2), c1 = _mm256_loadu_ps(s2 + 8);
    __m256 d0 = _mm256_loadu_ps(s3), d1 = _mm256_loadu_ps(s3 + 8);
    if (scaled) {
        const __m256 f = _mm256_set1_ps(b->pre);
        a0 = _mm256_mul_ps(f, a0), a1 = _mm256_mul_ps(f, a1), b0 = _mm256_mul_ps(f, b0);
        b1 = _mm256_mul_ps(f, b1), c0 = _mm256_mul_ps(f, c0), c1 = _mm256_mul_ps(f, c1);
        d0 = _mm256_mul_ps(f, d0), d1 = _mm256_mul_ps(f, d1);
    }
    const float *q = b->qs + i0, *k = b->ks + i0, *v = b->vs + j0;
    float *o = b->os + j0;
    const bool first = i0 == 0; /* the first row tile starts o's sums (os is not cleared) */
    for (int64_t u = 0; u < b->nt; u++, q += b->K, k += b->K, v += b->w, o += b->w) {
        __m256 v0 = _mm256_loadu_ps(v), v1 = _mm256_loadu_ps(v + 8);
        /* v in two registers, loaded once: without this the compiler folds the
         * load into each of the eight FMAs below (eight loads instead of two) */
        __asm__("" : "+x"(v0), "+x"(v1));
        __m256 x = _mm256_broadcast_ss(k);
        a0 = _mm256_fmadd_ps(x, v0, a0), a1 = _mm256_fmadd_ps(x, v1, a1);
        x = _mm256_broadcast_ss(k + 1);
        b0 = _mm256_fmadd_ps(x, v0, b0), b1 = _mm256_fmadd_ps(x, v1, b1);
        x = _mm256_broadcast_ss(k + 2);
        c0 = _mm256_fmadd_ps(x, v0, c0), c1 = _mm256_fmadd_ps(x, v1, c1);
        x = _mm256_broadcast_ss(k + 3);
        d0 = _mm256_fmadd_ps(x, v0, d0), d1 = _mm256_fmadd_ps(x, v1, d1);
        /* o += q0 row0 + q1 row1 + q2 row2 + q3 row3: one chain of four FMAs
         * per vector (no extra multiply or add; the chains of consecutive
         * tokens are independent, so they overlap) */
        __m256 e0 = first ? _mm256_setzero_ps() : _mm256_loadu_ps(o);
        __m256 e1 = first ? _mm256_setzero_ps() : _mm256_loadu_ps(o + 8);
        x = _mm256_broadcast_ss(q);
        e0 = _mm256_fmadd_ps(x, a0, e0), e1 = _mm256_fmadd_ps(x, a1, e1);
        x = _mm256_broadcast_ss(q + 1);
        e0 = _mm256_fmadd_ps(x, b0, e0), e1 = _mm256_fmadd_ps(x, b1, e1);
        x = _mm256_broadcast_ss(q + 2);
        e0 = _mm256_fmadd_ps(x, c0, e0), e1 = _mm256_fmadd_ps(x, c1, e1);
        x = _mm256_broadcast_ss(q + 3);
        e0 = _mm256_fmadd_ps(x, d0, e0), e1 = _mm256_fmadd_ps(x, d1, e1);
        _mm256_storeu_ps(o, e0), _mm256_storeu_ps(o + 8, e1);
    }
    if (scaled) {
        const __m256 f = _mm256_set1_ps(b->post);
        a0 = _mm256_mul_ps(f, a0), a1 = _mm256_mul_ps(f, a1), b0 = _mm256_mul_ps(f, b0);
        b1 = _mm256_mul_ps(f, b1), c0 = _mm256_mul_ps(f, c0), c1 = _mm256_mul_ps(f, c1);
        d0 = _mm256_mul_ps(f, d0), d1 = _mm256_mul_ps(f, d1);
    }
    _mm256_storeu_ps(s0, a0), _mm256_storeu_ps(s0 + 8, a1), _mm256_storeu_ps(s1, b0);
    _mm256_storeu_ps(s1 + 8, b1), _mm256_storeu_ps(s2, c0), _mm256_storeu_ps(s2 + 8, c1);
    _mm256_storeu_ps(s3, d0), _mm256_storeu_ps(s3 + 8, d1);
}
#endif

/* The block through every tile of the K x w slice S (rows ldS apart),
 * fetching per_tile lines of the next block before each tile. */
static void run_block(const block *b, float *S, int64_t ldS, bool scaled, seqk__lin_prefetch *pf,
                      int64_t per_tile)
{
    for (int64_t j0 = 0; j0 < b->w; j0 += TC) {
        const int64_t c = b->w - j0 < TC ? b->w - j0 : TC;
        for (int64_t i0 = 0; i0 < b->K; i0 += TR) {
            const int64_t r = b->K - i0 < TR ? b->K - i0 : TR;
            seqk__lin_prefetch_next(pf, per_tile);
#ifdef __AVX2__
            if (r == TR && c == TC) {
                tile_4x16(b, i0, j0, S, ldS, scaled);
                continue;
            }
#endif
            tile_generic(b, i0, r, j0, c, S, ldS);
        }
    }
}

/* How a call is cut into work items: (sequence, group of hg consecutive
 * heads (seqk__lin_head_group), group of cw state columns). An item walks its
 * tokens block by block and, within a block, its heads one after the other,
 * so that the rows it reads share their pages and lines. With the normaliser
 * an item owns whole heads (cw = V, hg = 1): z is shared by all columns and
 * may be updated in place. */
typedef struct items {
    int64_t cw, ncg, hg, nhg;
} items;

static items plan_items(const seqk__lin *P, int threads)
{
    items it;
    const bool norm = (P->flags & SEQK__LIN_NORMALIZE) != 0;
    it.cw = norm || P->V <= 2 * CG ? P->V : CG;
    it.ncg = (P->V + it.cw - 1) / it.cw;
    it.hg = norm ? 1 : seqk__lin_head_group(P, threads, it.ncg);
    it.nhg = (P->H + it.hg - 1) / it.hg;
    return it;
}

size_t seqk__lin_recurrent_workspace(const seqk__lin *P, int threads)
{
    /* per thread: the state slices of an item's heads, only when s_out is absent */
    if (P->s_out) return 0;
    const items it = plan_items(P, threads);
    return (size_t)(it.hg * P->K * it.cw) * (size_t)threads * sizeof(float);
}

seqk_status seqk__lin_recurrent(seqk_context *ctx, const seqk__lin *P)
{
    static const char fn[] = "seqk (recurrent linear-state engine)";
    const int threads = seqk__threads(ctx);
    const size_t ws_bytes = seqk__lin_recurrent_workspace(P, threads);
    float *ws = NULL;
    seqk_status st = seqk__workspace(fn, ctx, P->ws_offset + ws_bytes, (void **)&ws);
    if (st) return st;
    if (ws) ws = (float *)((char *)ws + P->ws_offset);
    const int64_t H = P->H, K = P->K, V = P->V, KV = K * V, Hqk = P->Hqk, hpq = H / Hqk;
    const bool norm = (P->flags & SEQK__LIN_NORMALIZE) != 0;
    const bool decay = P->g || P->log_gamma;
    const items it = plan_items(P, threads);
    const size_t per = ws_bytes / sizeof(float) / (size_t)threads;

#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int64_t item = 0; item < P->N * it.nhg * it.ncg; item++) {
        const int64_t n = item / (it.nhg * it.ncg), hgi = (item / it.ncg) % it.nhg;
        const int64_t h0 = hgi * it.hg, nh = H - h0 < it.hg ? H - h0 : it.hg; /* heads h0 .. h0+nh-1 */
        const int64_t c0 = (item % it.ncg) * it.cw, w = V - c0 < it.cw ? V - c0 : it.cw; /* columns */
        /* the packed block: tokens per block as the stack buffer allows */
        float scratch[SCRATCH];
        float z[SEQK__LIN_MAX_K], inv_den[TB]; /* normaliser: z, 1 / denominator per token */
        int64_t tb = SCRATCH / (2 * K + 2 * CG); /* >= 7: K <= SEQK__LIN_MAX_K */
        if (tb > TB) tb = TB;
        float *qs = scratch, *ks = qs + tb * K, *vs = ks + tb * K, *os = vs + tb * CG;
        float *slices = ws ? ws + per * (size_t)seqk__omp_thread() : NULL;
        int64_t r0, len;
        seqk__lin_seq(P, n, &r0, &len);
        /* head h's K x w slice of the state is at state(h), rows ldS apart */
        const int64_t ldS = P->s_out ? V : w;
#define STATE(h) (P->s_out ? P->s_out + (n * H + (h)) * KV + c0 : slices + ((h) - h0) * K * w)
        for (int64_t h = h0; h < h0 + nh; h++) {
            float *S = STATE(h);
            const float *Sin = P->s_in ? P->s_in + (n * H + h) * KV + c0 : NULL;
            if (Sin != S)
                for (int64_t i = 0; i < K; i++) {
                    if (Sin) memcpy(S + i * ldS, Sin + i * V, (size_t)w * sizeof(float));
                    else memset(S + i * ldS, 0, (size_t)w * sizeof(float));
                }
        }
        if (norm) { /* (one head per item) */
            if (P->z_in) memcpy(z, P->z_in + (n * H + h0) * K, (size_t)K * sizeof(float));
            else memset(z, 0, (size_t)K * sizeof(float));
        }
        const int64_t hq0 = h0 / hpq, nhq = (h0 + nh - 1) / hpq - hq0 + 1; /* q/k heads read */
        for (int64_t t0 = 0; t0 < len; t0 += tb) {
            const int64_t nb = len - t0 < tb ? len - t0 : tb; /* tokens of this block */
            /* the next block's rows, fetched while this one runs */
            const int64_t t1 = r0 + t0 + nb, next = len - t0 - nb < tb ? len - t0 - nb : tb;
            seqk__lin_prefetch pf;
            seqk__lin_prefetch_init(&pf, P, t1, next, hq0, nhq * K, h0, c0, (nh - 1) * V + w);
            const int64_t tiles = nh * ((K + TR - 1) / TR) * ((w + TC - 1) / TC);
            const int64_t per_tile = (seqk__lin_prefetch_lines(&pf) + tiles - 1) / tiles;
            for (int64_t h = h0; h < h0 + nh; h++) {
                const int64_t hq = h / hpq;
                float *S = STATE(h);
                for (int64_t u0 = 0; u0 < nb;) {
                    /* a run of tokens: the first one's decay is applied on
                     * load, the others' deferred while |log A| <= LOG_A_MAX */
                    float A[TB], la = 0.0f;
                    const int64_t ru = r0 + t0 + u0;
                    const float pre = decay ? expf(seqk__lin_logdecay(P, ru, h)) : 1.0f;
                    int64_t nt = 1;
                    A[0] = 1.0f;
                    for (; u0 + nt < nb; nt++) {
                        const float l = decay ? seqk__lin_logdecay(P, ru + nt, h) : 0.0f;
                        if (!(fabsf(la + l) <= LOG_A_MAX)) break; /* (a NaN gate breaks too) */
                        la += l;
                        A[nt] = expf(la);
                    }
                    for (int64_t u = 0; u < nt; u++) {
                        const int64_t r = ru + u;
                        const float *q = P->q + (r * Hqk + hq) * K, *k = P->k + (r * Hqk + hq) * K;
                        const float vsc = P->v_scale ? P->v_scale[r * H + h] : 1.0f;
                        /* (SEQK__LIN_L2NORM never reaches this mode: DeltaNet and
                         * Titans, which set it, have recurrent kernels of their own;
                         * v_scale is folded into k: (s k) v^T = k (s v)^T) */
                        seqk__lin_phi_row(q, K, P->scale * A[u], P->flags, qs + u * K);
                        seqk__lin_phi_row(k, K, vsc / A[u], P->flags, ks + u * K);
                        if (norm) {
                            const float a = decay ? expf(seqk__lin_logdecay(P, r, h)) : 1.0f;
                            float den = 0.0f;
                            for (int64_t i = 0; i < K; i++) {
                                z[i] = a * z[i] + seqk__lin_phi(k[i], P->flags);
                                den += P->scale * seqk__lin_phi(q[i], P->flags) * z[i];
                            }
                            inv_den[u] = 1.0f / (den + SEQK__LIN_EPS);
                        }
                    }
                    /* the item's columns CG at a time: v in, o out */
                    for (int64_t j0 = 0; j0 < w; j0 += CG) {
                        const int64_t c = w - j0 < CG ? w - j0 : CG;
                        for (int64_t u = 0; u < nt; u++) {
                            memcpy(vs + u * c, P->v + ((ru + u) * H + h) * V + c0 + j0,
                                   (size_t)c * sizeof(float));
                        }
                        const block b = {nt, K, c, qs, ks, vs, os, pre, A[nt - 1]};
                        run_block(&b, S + j0, ldS, decay, &pf, per_tile);
                        for (int64_t u = 0; u < nt; u++) {
                            float *o = P->o + ((ru + u) * H + h) * V + c0 + j0;
                            const float f = norm ? inv_den[u] : 1.0f;
                            for (int64_t j = 0; j < c; j++) o[j] = f * os[u * c + j];
                        }
                    }
                    u0 += nt;
                }
            }
        }
#undef STATE
        if (norm && P->z_out) memcpy(P->z_out + (n * H + h0) * K, z, (size_t)K * sizeof(float));
    }
    return SEQK_SUCCESS;
}
