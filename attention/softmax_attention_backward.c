/*
 * attention/softmax_attention_backward.c -- the backward of softmax attention
 * (DESIGN 3.5, 3.7): FlashAttention-2's backward on the CPU, then the
 * validation and dispatch of seqk_attention_parallel_backward (the CUDA side
 * is gpu/softmax_attention_backward.cu).
 *
 * The math, per head, from the forward's output o and log-sum-exp lse (scores
 * in log2 units: scale2 = scale log2(e), lse2 = lse log2(e), so exp becomes
 * exp2):
 *
 *   D[t]    = dout[t] . o[t]                         (pass 0)
 *   p[t,s]  = 2^(scale2 q[t].k[s] - lse2[t])         (s in S(t); recomputed)
 *   dv[s]   = sum_t p[t,s] dout[t]
 *   ds[t,s] = p[t,s] (dout[t] . v[s] - D[t])
 *   dk[s]   = scale sum_t ds[t,s] q[t],   dq[t] = scale sum_s ds[t,s] k[s]
 *
 * In tiles, never storing T x T, with no reduction whose order depends on the
 * threads (every output element is summed by one task in a fixed order: the
 * result is the same bits for any thread count):
 *
 *   pass 0: D and lse2 per (batch entry, query head, token) into the
 *           workspace, parallel over tokens;
 *   pass 1: dK, dV. One task per (sequence, key/value head, tile of BK1
 *           keys); K_j^T and V_j^T formed once per task; for the query heads
 *           of the group in order, and their query tiles of BQ1 in order
 *           (causal: from the tile of the first key on),
 *             S    = Q_i K_j^T             [BQ1 x BK1], query-major
 *             P    = 2^(scale2 S - lse2)   (masked: 0 above the diagonal)
 *             dV  += P^T dO_i
 *             dP   = dO_i V_j^T
 *             dS   = P .* (dP - D)
 *             dK  += dS^T Q_i
 *           then dk = scale dK, dv = dV;
 *   pass 2: dQ. One task per (sequence, query head, tile of BQ2 queries);
 *           over the key tiles of BK2 in order (causal: up to the tile's last
 *           query), with the same P and dS recomputed query-major,
 *             dQ += dS K_j,   dq = scale dQ.
 *
 * Recomputing P and dP in both passes costs 7 tile products instead of FA2's
 * 5, in exchange for no atomics and no per-thread dQ copies to sum. When the
 * (batch entry, sequence, key/value head) items alone keep every thread busy
 * (at least 2 per thread), one fused pass runs instead: one task per item
 * walks its key tiles in order through pass 1's loop and adds
 * dQ_i += dS_ij K_j straight into dq (the item owns those rows), 5 products
 * per tile. Both forms use one tile grid (BK keys x BQ queries) and sum every
 * dq element over the same key tiles in the same order, with the same
 * products (each element of S and dP is one FMA chain over K or V, and
 * pass 1's transposed products read the same elements in the same order):
 * the choice, which depends on the thread count, changes no bit of the
 * result (the tests check 1 against 2 threads on a shape that runs fused on
 * one and in two passes on the other).
 *
 * The products are core/gemm.h's seqk__sgemm, reading q, k, v, dout in place
 * (token rows Hq*K or Hkv*K floats apart). Pass 1 forms its key tile's K_j^T,
 * V_j^T and K_j rows once, so that the right operands of S, dP and dQ are in
 * the sgemm's panel shape and read in place; only dO_i and Q_i as right
 * operands (of dV and dK) are packed, and only when their rows lie more than
 * the sgemm's in-place limit apart (K or V = 128 with 8 heads). Causal: tiles
 * wholly above the diagonal are never visited; on the diagonal tile p is
 * masked to 0.
 */
#include "../core/gemm.h"
#include "../core/dtype.h"
#include "../core/internal.h"
#include "../core/vmath.h"
#include "../gpu/gpu.h"
#include "softmax_attention.h"

#include <immintrin.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#if !defined(__AVX2__) || !defined(__FMA__)
#error "attention/softmax_attention_backward.c needs AVX2 and FMA (-mavx2 -mfma)"
#endif

/* One tile grid for both passes (the fused pass's dQ sums then run over the
 * same key tiles in the same order as pass 2's: the same bits). Pass 1's
 * products have BK rows (a multiple of 6, the register tile's height) and
 * BQ columns (a multiple of 16, its width); pass 2's the other way round. */
#ifndef SEQK_ATTN_BWD_BK
#define SEQK_ATTN_BWD_BK 96
#endif
#ifndef SEQK_ATTN_BWD_BQ
#define SEQK_ATTN_BWD_BQ 96
#endif
#define BK1 SEQK_ATTN_BWD_BK /* keys per tile */
#define BQ1 SEQK_ATTN_BWD_BQ /* queries per tile */
#define BQ2 BQ1
#define BK2 BK1

#define LOG2E_F 1.44269504088896340736f

static const char FN_BWD[] = "seqk_attention_parallel_backward";

static int64_t ceil_div64(int64_t n, int64_t d) { return (n + d - 1) / d; }
static size_t al16(int64_t n) { return seqk__align_up((size_t)n, 16); }
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* ------------------------------------------------------------------------ */
/* The problem and its workspace                                             */
/* ------------------------------------------------------------------------ */

typedef struct bwd_args {
    int64_t B, T, Hq, Hkv, K, V;
    int64_t N;          /* sequences per batch entry (1 without varlen) */
    float scale, scale2; /* scale, scale * log2(e) */
    bool causal;
    const float *q, *k, *v, *o, *lse, *dout;
    float *dq, *dk, *dv;
    int32_t seq1[2];    /* {0, T} without varlen */
    const int32_t *seq; /* [N+1] sequence boundaries (host) */
    /* workspace */
    float *lse2, *D;        /* [B, Hq, T] (+ padding) */
    int64_t *kt_before;     /* [N+1] key tiles (BK1) before sequence n */
    int64_t *qt_before;     /* [N+1] query tiles (BQ2) before sequence n */
    int64_t *ne_before;     /* [N+1] non-empty sequences before sequence n */
    float *scratch;         /* per thread */
    size_t per_thread;      /* floats */
} bwd_args;

/* Floats of the sgemm packing buffer for every product of both passes. */
static size_t pack_floats(int64_t K, int64_t V)
{
    size_t m = seqk__sgemm_pack_floats(BQ1, BK1, K);     /* S = Q K^T */
    size_t x = seqk__sgemm_pack_floats(BK1, V, BQ1);     /* dV += P^T dO */
    m = x > m ? x : m;
    x = seqk__sgemm_pack_floats(BQ1, BK1, V);            /* dP = dO V^T */
    m = x > m ? x : m;
    x = seqk__sgemm_pack_floats(BK1, K, BQ1);            /* dK += dS^T Q */
    m = x > m ? x : m;
    x = seqk__sgemm_pack_floats(BQ2, BK2, K);            /* S = Q K^T */
    m = x > m ? x : m;
    x = seqk__sgemm_pack_floats(BQ2, BK2, V);            /* dP = dO V^T */
    m = x > m ? x : m;
    x = seqk__sgemm_pack_floats(BQ2, K, BK2);            /* dQ += dS K */
    return x > m ? x : m;
}

/* One thread's scratch, pass 1: S, dP [BQ1][BK1], dK [BK1][K], dV [BK1][V],
 * the key tile's K_j^T [K][BK1], V_j^T [V][BK1] and K_j [BK1][K];
 * pass 2: S, dP [BQ2][BK2], dQ [BQ2][K]; then the packing buffer. */
static size_t scratch_floats(int64_t K, int64_t V)
{
    const size_t p1 = 2 * al16(BK1 * BQ1) + al16(BK1 * K) + al16(BK1 * V) +
                      2 * al16(K * BK1) + al16(V * BK1);
    const size_t p2 = 2 * al16(BQ2 * BK2) + al16(BQ2 * K);
    return (p1 > p2 ? p1 : p2) + al16((int64_t)pack_floats(K, V));
}

static size_t cpu_backward_workspace(int nt, int64_t B, int64_t T, int64_t Hq, int64_t K,
                                     int64_t V, int64_t nseq)
{
    size_t floats = 2 * al16(B * Hq * T + 16);
    floats += (size_t)nt * scratch_floats(K, V);
    size_t bytes = floats * sizeof(float);
    bytes += 3 * seqk__align_up((size_t)(nseq + 1) * sizeof(int64_t), 64);
    return bytes + 64; /* room to align the start */
}

/* Last n with before[n] <= x (before non-decreasing, before[0] = 0). */
static int64_t find_seq(const int64_t *before, int64_t N, int64_t x)
{
    int64_t lo = 0, hi = N - 1;
    while (lo < hi) {
        const int64_t mid = (lo + hi + 1) / 2;
        if (before[mid] <= x)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

/* ------------------------------------------------------------------------ */
/* Pass 0: D = dout . o and lse2 = lse log2(e)                               */
/* ------------------------------------------------------------------------ */

static void prepare(const bwd_args *a)
{
    const int64_t T = a->T, Hq = a->Hq, V = a->V, rows = a->B * T;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t b = r / T, t = r % T;
        for (int64_t h = 0; h < Hq; h++) {
            const size_t i = (size_t)((b * Hq + h) * T + t);
            a->D[i] = seqk__dot(a->dout + (r * Hq + h) * V, a->o + (r * Hq + h) * V, V);
            a->lse2[i] = a->lse[i] * LOG2E_F;
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Probabilities and dS of one tile                                          */
/* ------------------------------------------------------------------------ */

/* p .* x, and in a masked tile 0 where p = 0 (a masked entry: 0 times a
 * NaN or inf dp - D, from a value row or an output the query does not see,
 * must not reach its gradients). */
static inline __m256 ds_of(__m256 p, __m256 x, bool masked)
{
    const __m256 ds = _mm256_mul_ps(p, x);
    return masked ? _mm256_and_ps(ds, _mm256_cmp_ps(p, _mm256_setzero_ps(), _CMP_NEQ_UQ)) : ds;
}

/* Query-major tile (both passes): rows r < qn are queries qs + r with lse2[r],
 * columns c < kn (rounded up to 8) keys ks + c; masked: 0 where
 * c > rel + r (rel = qs - ks). */
static void probs_querymajor(float *restrict s, int64_t ld, int64_t qn, int64_t kn,
                             const float *restrict lse2, float scale2, bool masked, int64_t rel)
{
    const __m256 sc = _mm256_set1_ps(scale2);
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int64_t r = 0; r < qn; r++) {
        float *row = s + r * ld;
        const __m256 l = _mm256_set1_ps(lse2[r]);
        const __m256i qv = _mm256_set1_epi32((int)(rel + r));
        for (int64_t c = 0; c < kn; c += 8) {
            __m256 p = seqk__exp2_8(_mm256_fmsub_ps(_mm256_load_ps(row + c), sc, l));
            if (masked) {
                const __m256i key = _mm256_add_epi32(_mm256_set1_epi32((int)c), lanes);
                p = _mm256_andnot_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(key, qv)), p);
            }
            _mm256_store_ps(row + c, p);
        }
    }
}

/* Query-major: dp <- p .* (dp - D[r]). */
static void ds_querymajor(const float *restrict p, float *restrict dp, int64_t ld, int64_t qn,
                          int64_t kn, const float *restrict D, bool masked)
{
    for (int64_t r = 0; r < qn; r++) {
        const __m256 d = _mm256_set1_ps(D[r]);
        for (int64_t c = 0; c < kn; c += 8) {
            const __m256 x = _mm256_sub_ps(_mm256_load_ps(dp + r * ld + c), d);
            _mm256_store_ps(dp + r * ld + c, ds_of(_mm256_load_ps(p + r * ld + c), x, masked));
        }
    }
}

/* True when the n rows of w floats at x (row stride ld) are all finite
 * (x - x is 0, or NaN for NaN and inf; 8 lanes at a time: a diagonal
 * tile's check costs ~2% of its products). */
static bool rows_finite(const float *x, int64_t n, int64_t ld, int64_t w)
{
    __m256 bad = _mm256_setzero_ps();
    for (int64_t r = 0; r < n; r++) {
        const float *row = x + r * ld;
        int64_t d = 0;
        for (; d + 8 <= w; d += 8) {
            const __m256 v = _mm256_loadu_ps(row + d);
            bad = _mm256_or_ps(bad, _mm256_sub_ps(v, v));
        }
        for (; d < w; d++)
            if (!isfinite(row[d])) return false;
    }
    return _mm256_movemask_ps(_mm256_cmp_ps(bad, bad, _CMP_UNORD_Q)) == 0;
}

/* The product of a masked tile whose right operand holds a NaN or inf, row
 * by row over the unmasked entries only: C[r] = beta C[r] + sum_c A(r, c)
 * B[c] over columns c <= r + off (lower) or c >= r + off (upper), A(r, c) =
 * a[r ars + c acs], n columns of B and C. The tile's zeros are never
 * multiplied (0 * NaN would reach rows that do not see that column). Only
 * diagonal tiles with non-finite inputs take it: finite ones run the sgemm. */
static void masked_product(int64_t m, int64_t kk, int64_t n, const float *a, int64_t ars,
                           int64_t acs, const float *b, int64_t ldb, float beta, float *c,
                           int64_t ldc, bool lower, int64_t off)
{
    for (int64_t r = 0; r < m; r++) {
        float *cr = c + r * ldc;
        for (int64_t x = 0; x < n; x++) cr[x] = beta == 0.0f ? 0.0f : cr[x];
        const int64_t c0 = lower ? 0 : max64(r + off, 0), c1 = lower ? min64(r + off + 1, kk) : kk;
        for (int64_t j = c0; j < c1; j++) {
            const float w = a[r * ars + j * acs];
            for (int64_t x = 0; x < n; x++) cr[x] = fmaf(w, b[j * ldb + x], cr[x]);
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Pass 1: dK, dV of one key tile                                            */
/* ------------------------------------------------------------------------ */

/* Keys [ks, ks + kn) of sequence [s0, s1) of batch entry b, key/value head hk. */
static void dkdv_tile(const bwd_args *a, float *w, int64_t b, int64_t hk, int64_t n, int64_t ks,
                      int64_t kn, bool fused)
{
    const int64_t T = a->T, Hq = a->Hq, Hkv = a->Hkv, K = a->K, V = a->V;
    const int64_t s0 = a->seq[n], s1 = a->seq[n + 1];
    float *S = w, *dP = S + al16(BK1 * BQ1), *dK = dP + al16(BK1 * BQ1);
    float *dV = dK + al16(BK1 * K), *KT = dV + al16(BK1 * V), *VT = KT + al16(K * BK1);
    float *Kj = VT + al16(V * BK1), *pack = Kj + al16(K * BK1);
    const float *kj = a->k + ((b * T + ks) * Hkv + hk) * K;
    const float *vj = a->v + ((b * T + ks) * Hkv + hk) * V;
    memset(dK, 0, (size_t)(kn * K) * sizeof(float));
    memset(dV, 0, (size_t)(kn * V) * sizeof(float));
    /* the key tile's operands, once for all its query tiles: K_j^T and V_j^T
     * (the right operands of S and dP, read in place by the sgemm: no
     * transposed packing per query tile) and K_j's rows together (dQ's) */
    seqk__transpose(kn, K, kj, Hkv * K, KT, BK1);
    seqk__transpose(kn, V, vj, Hkv * V, VT, BK1);
    if (fused)
        for (int64_t r = 0; r < kn; r++)
            memcpy(Kj + r * K, kj + r * Hkv * K, (size_t)K * sizeof(float));
    const int64_t group = Hq / Hkv;
    /* causal: the first query tile that sees key ks */
    const int64_t i0 = a->causal ? (ks - s0) / BQ1 : 0;
    for (int64_t hg = 0; hg < group; hg++) {
        const int64_t h = hk * group + hg;
        const float *lse2 = a->lse2 + (b * Hq + h) * T, *D = a->D + (b * Hq + h) * T;
        for (int64_t qs = s0 + i0 * BQ1; qs < s1; qs += BQ1) {
            const int64_t qn = min64(BQ1, s1 - qs);
            const float *qi = a->q + ((b * T + qs) * Hq + h) * K;
            const float *doi = a->dout + ((b * T + qs) * Hq + h) * V;
            /* the diagonal crosses this tile: some key follows some query */
            const bool masked = a->causal && ks + kn - 1 > qs;
            /* a masked tile's right operands with a NaN or inf: the product
             * row by row over the unmasked entries (key r is seen by the
             * queries c >= r + ks - qs) */
            const bool slow_do = masked && !rows_finite(doi, qn, Hq * V, V);
            const bool slow_q = masked && !rows_finite(qi, qn, Hq * K, K);
            /* query-major, as pass 2: S = Q_i K_j^T, P; dV += P^T dO_i */
            seqk__sgemm(false, false, qn, kn, K, 1.0f, qi, Hq * K, KT, BK1, 0.0f, S, BK1, pack);
            probs_querymajor(S, BK1, qn, kn, lse2 + qs, a->scale2, masked, qs - ks);
            if (slow_do)
                masked_product(kn, qn, V, S, 1, BK1, doi, Hq * V, 1.0f, dV, V, false, ks - qs);
            else
                seqk__sgemm(true, false, kn, V, qn, 1.0f, S, BK1, doi, Hq * V, 1.0f, dV, V, pack);
            /* dP = dO_i V_j^T, dS = P .* (dP - D); dK += dS^T Q_i */
            seqk__sgemm(false, false, qn, kn, V, 1.0f, doi, Hq * V, VT, BK1, 0.0f, dP, BK1, pack);
            ds_querymajor(S, dP, BK1, qn, kn, D + qs, masked);
            if (slow_q)
                masked_product(kn, qn, K, dP, 1, BK1, qi, Hq * K, 1.0f, dK, K, false, ks - qs);
            else
                seqk__sgemm(true, false, kn, K, qn, 1.0f, dP, BK1, qi, Hq * K, 1.0f, dK, K, pack);
            /* fused: dQ_i += dS K_j, summed in the output in pass 2's order
             * (key tiles from the sequence's first; unscaled until the end) */
            float *dqi = a->dq + ((b * T + qs) * Hq + h) * K;
            const float beta = ks == s0 ? 0.0f : 1.0f;
            if (fused && masked && !rows_finite(kj, kn, Hkv * K, K))
                masked_product(qn, kn, K, dP, BK1, 1, Kj, K, beta, dqi, Hq * K, true, qs - ks);
            else if (fused)
                seqk__sgemm(false, false, qn, K, kn, 1.0f, dP, BK1, Kj, K, beta, dqi, Hq * K, pack);
        }
    }
    for (int64_t r = 0; r < kn; r++) {
        float *dk = a->dk + ((b * T + ks + r) * Hkv + hk) * K;
        float *dv = a->dv + ((b * T + ks + r) * Hkv + hk) * V;
        for (int64_t d = 0; d < K; d++) dk[d] = a->scale * dK[r * K + d];
        memcpy(dv, dV + r * V, (size_t)V * sizeof(float));
    }
}

/* ------------------------------------------------------------------------ */
/* Pass 2: dQ of one query tile                                              */
/* ------------------------------------------------------------------------ */

/* Queries [qs, qs + qn) of sequence [s0, s1) of batch entry b, query head h. */
static void dq_tile(const bwd_args *a, float *w, int64_t b, int64_t h, int64_t s0, int64_t s1,
                    int64_t qs, int64_t qn)
{
    const int64_t T = a->T, Hq = a->Hq, Hkv = a->Hkv, K = a->K, V = a->V;
    float *S = w, *dP = S + al16(BQ2 * BK2), *dQ = dP + al16(BQ2 * BK2);
    float *pack = dQ + al16(BQ2 * K);
    const int64_t hk = h / (Hq / Hkv);
    const float *qi = a->q + ((b * T + qs) * Hq + h) * K;
    const float *doi = a->dout + ((b * T + qs) * Hq + h) * V;
    const float *lse2 = a->lse2 + (b * Hq + h) * T + qs, *D = a->D + (b * Hq + h) * T + qs;
    const int64_t kend = a->causal ? min64(qs + qn, s1) : s1;
    for (int64_t ks = s0; ks < kend; ks += BK2) {
        const int64_t kn = min64(BK2, kend - ks);
        const float *kj = a->k + ((b * T + ks) * Hkv + hk) * K;
        const float *vj = a->v + ((b * T + ks) * Hkv + hk) * V;
        const bool masked = a->causal && ks + kn - 1 > qs;
        seqk__sgemm(false, true, qn, kn, K, 1.0f, qi, Hq * K, kj, Hkv * K, 0.0f, S, BK2, pack);
        probs_querymajor(S, BK2, qn, kn, lse2, a->scale2, masked, qs - ks);
        seqk__sgemm(false, true, qn, kn, V, 1.0f, doi, Hq * V, vj, Hkv * V, 0.0f, dP, BK2, pack);
        ds_querymajor(S, dP, BK2, qn, kn, D, masked);
        const float beta = ks == s0 ? 0.0f : 1.0f;
        if (masked && !rows_finite(kj, kn, Hkv * K, K)) /* see dkdv_tile */
            masked_product(qn, kn, K, dP, BK2, 1, kj, Hkv * K, beta, dQ, K, true, qs - ks);
        else
            seqk__sgemm(false, false, qn, K, kn, 1.0f, dP, BK2, kj, Hkv * K, beta, dQ, K, pack);
    }
    for (int64_t r = 0; r < qn; r++) {
        float *dq = a->dq + ((b * T + qs + r) * Hq + h) * K;
        for (int64_t d = 0; d < K; d++) dq[d] = a->scale * dQ[r * K + d];
    }
}

/* ------------------------------------------------------------------------ */
/* The CPU backward                                                          */
/* ------------------------------------------------------------------------ */

static seqk_status cpu_backward(const char *fn, seqk_context *ctx, bwd_args *a,
                                const int32_t *cu_host)
{
    const int nt = seqk__threads(ctx);
    if (!cu_host) {
        a->N = 1;
        a->seq1[0] = 0;
        a->seq1[1] = (int32_t)a->T;
        a->seq = a->seq1;
    } else {
        a->seq = cu_host;
    }
    void *raw = NULL;
    seqk_status st = seqk__workspace(
        fn, ctx, cpu_backward_workspace(nt, a->B, a->T, a->Hq, a->K, a->V, a->N), &raw);
    if (st) return st;
    float *base = (float *)(((uintptr_t)raw + 63) & ~(uintptr_t)63);
    const size_t nl = al16(a->B * a->Hq * a->T + 16);
    a->lse2 = base;
    a->D = base + nl;
    a->per_thread = scratch_floats(a->K, a->V);
    a->scratch = base + 2 * nl;
    a->kt_before = (int64_t *)(a->scratch + (size_t)nt * a->per_thread);
    a->qt_before = a->kt_before + seqk__align_up((size_t)(a->N + 1), 8);
    a->ne_before = a->qt_before + seqk__align_up((size_t)(a->N + 1), 8);
    /* padding past the last row: read by the vector loops, never used */
    for (int i = 0; i < 16; i++) a->lse2[a->B * a->Hq * a->T + i] = a->D[a->B * a->Hq * a->T + i] = 0;
    a->kt_before[0] = a->qt_before[0] = a->ne_before[0] = 0;
    for (int64_t n = 0; n < a->N; n++) {
        const int64_t len = (int64_t)a->seq[n + 1] - a->seq[n];
        a->kt_before[n + 1] = a->kt_before[n] + ceil_div64(len, BK1);
        a->qt_before[n + 1] = a->qt_before[n] + ceil_div64(len, BQ2);
        a->ne_before[n + 1] = a->ne_before[n] + (len > 0);
    }
    const int64_t nk1 = a->kt_before[a->N], nq2 = a->qt_before[a->N];
    /* Fused (one pass, 5 products per tile) when the (batch entry, sequence,
     * key/value head) items keep every thread busy; else two passes (7
     * products) over tiles. Both sum every element in the same order: the
     * choice does not change a bit of the result. */
    const int64_t items = a->B * a->Hkv * a->ne_before[a->N];
    const bool fused = items >= 2 * (int64_t)nt;
    const int64_t tasks1 = fused ? items : a->B * a->Hkv * nk1;
    const int64_t tasks2 = fused ? 0 : a->B * a->Hq * nq2;
    const int64_t most = max64(max64(tasks1, tasks2), a->B * a->T);
    const int use = most < nt ? (int)most : nt;
#pragma omp parallel num_threads(use) if (use > 1)
    {
        float *w = a->scratch + (size_t)seqk__omp_thread() * a->per_thread;
        prepare(a); /* ends with the loop's barrier */
        if (fused) {
            /* One task per (sequence, batch entry, key/value head): all its
             * key tiles in order, then dq = scale dQ for its query heads. */
            const int64_t group = a->Hq / a->Hkv;
#pragma omp for schedule(dynamic, 1)
            for (int64_t task = 0; task < tasks1; task++) {
                const int64_t bh = task % (a->B * a->Hkv), b = bh / a->Hkv, hk = bh % a->Hkv;
                /* the (task / (B Hkv))-th non-empty sequence: the last n with
                 * that many non-empty ones before it */
                const int64_t n = find_seq(a->ne_before, a->N, task / (a->B * a->Hkv));
                const int64_t s0 = a->seq[n], s1 = a->seq[n + 1];
                for (int64_t ks = s0; ks < s1; ks += BK1)
                    dkdv_tile(a, w, b, hk, n, ks, min64(BK1, s1 - ks), true);
                for (int64_t t = s0; t < s1; t++) {
                    float *dq = a->dq + ((b * a->T + t) * a->Hq + hk * group) * a->K;
                    for (int64_t d = 0; d < group * a->K; d++) dq[d] = a->scale * dq[d];
                }
            }
        } else {
            /* Pass 1, causal: a sequence's first key tiles see the most
             * queries: the tiles of each sequence are numbered from its first. */
#pragma omp for schedule(dynamic, 1)
            for (int64_t task = 0; task < tasks1; task++) {
                const int64_t r = task / (a->B * a->Hkv), bh = task % (a->B * a->Hkv);
                const int64_t b = bh / a->Hkv, hk = bh % a->Hkv;
                const int64_t n = find_seq(a->kt_before, a->N, r);
                const int64_t s0 = a->seq[n], s1 = a->seq[n + 1];
                const int64_t ks = s0 + (r - a->kt_before[n]) * BK1;
                dkdv_tile(a, w, b, hk, n, ks, min64(BK1, s1 - ks), false);
            }
            /* Pass 2, causal: the last query tiles of each sequence first. */
#pragma omp for schedule(dynamic, 1)
            for (int64_t task = 0; task < tasks2; task++) {
                const int64_t r = task / (a->B * a->Hq), bh = task % (a->B * a->Hq);
                const int64_t b = bh / a->Hq, h = bh % a->Hq;
                const int64_t n = find_seq(a->qt_before, a->N, r);
                const int64_t s0 = a->seq[n], s1 = a->seq[n + 1];
                const int64_t count = a->qt_before[n + 1] - a->qt_before[n];
                const int64_t local = r - a->qt_before[n];
                const int64_t tile = a->causal ? count - 1 - local : local;
                const int64_t qs = s0 + tile * BQ2;
                dq_tile(a, w, b, h, s0, s1, qs, min64(BQ2, s1 - qs));
            }
        }
    }
    return SEQK_SUCCESS;
}

/* ------------------------------------------------------------------------ */
/* Validation and dispatch                                                   */
/* ------------------------------------------------------------------------ */

/* Sizes, heads, flags and backend limits (the forward's rules). */
static seqk_status check_sizes(const char *fn, seqk_context *ctx, int64_t B, int64_t T,
                               int64_t Hq, int64_t Hkv, int64_t K, int64_t V, unsigned flags,
                               bool varlen, int64_t N)
{
    seqk_status st;
    if ((st = seqk__check_ctx(fn, ctx))) return st;
    if ((st = seqk__check_min(fn, "B", B, 1))) return st;
    if ((st = seqk__check_min(fn, "T", T, 0))) return st;
    if ((st = seqk__check_min(fn, "Hq", Hq, 1))) return st;
    if ((st = seqk__check_min(fn, "Hkv", Hkv, 1))) return st;
    if ((st = seqk__check_min(fn, "K", K, 1))) return st;
    if ((st = seqk__check_min(fn, "V", V, 1))) return st;
    if (Hq % Hkv)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                          "%s: Hq=%" PRId64 " is not a multiple of Hkv=%" PRId64, fn, Hq, Hkv);
    if ((st = seqk__check_flags(fn, flags, SEQK_ATTN_CAUSAL))) return st;
    if ((st = seqk__check_backend_built(fn, ctx))) return st;
    if ((st = seqk__attn_check_head_dims(fn, ctx, K, V, BK1))) return st;
    const int64_t qd[4] = {B, T, Hq, K}, kd[4] = {B, T, Hkv, K};
    const int64_t vd[4] = {B, T, Hkv, V}, od[4] = {B, T, Hq, V}, ld[3] = {B, Hq, T};
    if ((st = seqk__check_numel(fn, "q [B,T,Hq,K]", 4, qd, sizeof(float), NULL))) return st;
    if ((st = seqk__check_numel(fn, "k [B,T,Hkv,K]", 4, kd, sizeof(float), NULL))) return st;
    if ((st = seqk__check_numel(fn, "v [B,T,Hkv,V]", 4, vd, sizeof(float), NULL))) return st;
    if ((st = seqk__check_numel(fn, "o [B,T,Hq,V]", 4, od, sizeof(float), NULL))) return st;
    if ((st = seqk__check_numel(fn, "lse [B,Hq,T]", 3, ld, sizeof(float), NULL))) return st;
    if (T > INT32_MAX)
        return seqk__fail(SEQK_ERROR_UNSUPPORTED, "%s: T=%" PRId64 ", must be <= %d", fn, T,
                          INT32_MAX);
    if (varlen && (st = seqk__check_varlen_sizes(fn, B, N, T))) return st;
    return SEQK_SUCCESS;
}

seqk_status seqk_attention_parallel_backward_workspace_size(seqk_context *ctx, int64_t B,
                                                            int64_t T, int64_t Hq, int64_t Hkv,
                                                            int64_t K, int64_t V, unsigned flags,
                                                            int64_t N, size_t *bytes)
{
    static const char fn[] = "seqk_attention_parallel_backward_workspace_size";
    seqk_status st = check_sizes(fn, ctx, B, T, Hq, Hkv, K, V, flags, N > 0, N);
    if (st == SEQK_SUCCESS) st = seqk__check_ptr(fn, "bytes", bytes);
    if (st != SEQK_SUCCESS) return st;
    *bytes = 0;
    if (ctx->backend == SEQK_BACKEND_CPU)
        *bytes = cpu_backward_workspace(seqk__threads(ctx), B, T, Hq, K, V, N > 0 ? N : 1);
#if SEQK__HAVE_CUDA
    if (ctx->backend == SEQK_BACKEND_CUDA)
        *bytes = seqk__cuda_attention_backward_workspace_size(B, T, Hq);
#endif
    return SEQK_SUCCESS;
}

/* One named array of n floats. */
typedef struct named {
    const char *name;
    const void *p;
    int64_t n;
} named;

static seqk_status attention_parallel_backward_f32(seqk_context *ctx, int64_t B, int64_t T,
                                                   int64_t Hq, int64_t Hkv, int64_t K, int64_t V,
                                                   float scale, unsigned flags, const float *q,
                                                   const float *k, const float *v, const float *o,
                                                   const float *lse, const float *dout, float *dq,
                                                   float *dk, float *dv, const int32_t *cu_seqlens,
                                                   int64_t N)
{
    const char *fn = FN_BWD;
    const bool varlen = cu_seqlens != NULL;
    seqk_status st = check_sizes(fn, ctx, B, T, Hq, Hkv, K, V, flags, varlen, N);
    if (st) return st;
    if ((st = seqk__check_scale(fn, scale))) return st;
    if (T > 0) {
        const int64_t nq = B * T * Hq * K, nk = B * T * Hkv * K, nv = B * T * Hkv * V;
        const int64_t no = B * T * Hq * V, nl = B * Hq * T;
        const named in[6] = {{"q", q, nq},   {"k", k, nk},   {"v", v, nv},
                             {"o", o, no},   {"lse", lse, nl}, {"dout", dout, no}};
        const named out[3] = {{"dq", dq, nq}, {"dk", dk, nk}, {"dv", dv, nv}};
        for (int i = 0; i < 6; i++)
            if ((st = seqk__check_ptr(fn, in[i].name, in[i].p))) return st;
        for (int i = 0; i < 3; i++)
            if ((st = seqk__check_ptr(fn, out[i].name, out[i].p))) return st;
        for (int i = 0; i < 3; i++) {
            const size_t bi = (size_t)out[i].n * sizeof(float);
            for (int j = 0; j < 6; j++)
                if (seqk__overlap(out[i].p, bi, in[j].p, (size_t)in[j].n * sizeof(float)))
                    return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: %s=%p overlaps input %s=%p",
                                      fn, out[i].name, out[i].p, in[j].name, in[j].p);
            for (int j = 0; j < i; j++)
                if (seqk__overlap(out[i].p, bi, out[j].p, (size_t)out[j].n * sizeof(float)))
                    return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                                      "%s: %s=%p overlaps output %s=%p", fn, out[i].name,
                                      out[i].p, out[j].name, out[j].p);
        }
    }
    int32_t *cu_host = NULL;
    if (varlen && (st = seqk__copy_cu_seqlens(fn, ctx, cu_seqlens, N, B, T, &cu_host))) return st;
    if (T > 0) {
        switch (ctx->backend) {
        case SEQK_BACKEND_CPU: {
            bwd_args a = {.B = B, .T = T, .Hq = Hq, .Hkv = Hkv, .K = K, .V = V,
                          .N = varlen ? N : 1, .scale = scale, .scale2 = scale * LOG2E_F,
                          .causal = (flags & SEQK_ATTN_CAUSAL) != 0, .q = q, .k = k, .v = v,
                          .o = o, .lse = lse, .dout = dout, .dq = dq, .dk = dk, .dv = dv};
            st = cpu_backward(fn, ctx, &a, cu_host);
            break;
        }
        case SEQK_BACKEND_CUDA:
#if SEQK__HAVE_CUDA
            st = seqk__cuda_attention_parallel_backward(ctx, B, T, Hq, Hkv, K, V, scale, flags, q,
                                                        k, v, o, lse, dout, dq, dk, dv,
                                                        cu_seqlens, cu_host, N);
#else
            st = seqk__fail(SEQK_ERROR_NOT_COMPILED, "%s: no CUDA backend in this build", fn);
#endif
            break;
        default:
            st = seqk__fail(SEQK_ERROR_INTERNAL, "%s: context has backend=%d", fn,
                            (int)ctx->backend);
        }
    }
    free(cu_host);
    return st;
}

/* ---- dtypes (seqk.h, "Dtypes"): the _ex entry points ---------------------- */

seqk_status seqk_attention_parallel_backward_ex(seqk_context *ctx, seqk_dtype dtype, int64_t B,
                                                int64_t T, int64_t Hq, int64_t Hkv, int64_t K,
                                                int64_t V, float scale, unsigned flags,
                                                const void *q, const void *k, const void *v,
                                                const void *o, const float *lse, const void *dout,
                                                void *dq, void *dk, void *dv,
                                                const int32_t *cu_seqlens, int64_t N)
{
    if (dtype == SEQK_DTYPE_F32)
        return attention_parallel_backward_f32(ctx, B, T, Hq, Hkv, K, V, scale, flags, q, k, v,
                                               o, lse, dout, dq, dk, dv, cu_seqlens, N);
    const int64_t nq = seqk__dt_numel(B, T, Hq, K), nk = seqk__dt_numel(B, T, Hkv, K);
    const int64_t nv = seqk__dt_numel(B, T, Hkv, V), no = seqk__dt_numel(B, T, Hq, V);
    seqk__dt_tensor t[] = {
        {"q", q, nq, SEQK__DT_IN, 0, NULL},
        {"k", k, nk, SEQK__DT_IN, 0, NULL},
        {"v", v, nv, SEQK__DT_IN, 0, NULL},
        {"o", o, no, SEQK__DT_IN, 0, NULL},
        {"dout", dout, no, SEQK__DT_IN, 0, NULL},
        {"dq", dq, nq, SEQK__DT_OUT, 0, NULL},
        {"dk", dk, nk, SEQK__DT_OUT, 0, NULL},
        {"dv", dv, nv, SEQK__DT_OUT, 0, NULL}};
    size_t ws = 0;
    const seqk_status qs =
        seqk_attention_parallel_backward_workspace_size(ctx, B, T, Hq, Hkv, K, V, flags,
                                                        cu_seqlens ? N : 0, &ws);
    seqk__dt_call c;
    seqk_status st = seqk__dt_begin(&c, "seqk_attention_parallel_backward_ex", ctx, dtype, t, 8,
                                    seqk__dt_ws(qs, ws));
    if (st) return st;
    st = attention_parallel_backward_f32(ctx, B, T, Hq, Hkv, K, V, scale, flags, t[0].f, t[1].f,
                                         t[2].f, t[3].f, lse, t[4].f, t[5].f, t[6].f, t[7].f,
                                         cu_seqlens, N);
    return seqk__dt_end(&c, st);
}

seqk_status seqk_attention_parallel_backward(seqk_context *ctx, int64_t B, int64_t T, int64_t Hq,
                                             int64_t Hkv, int64_t K, int64_t V, float scale,
                                             unsigned flags, const float *q, const float *k,
                                             const float *v, const float *o, const float *lse,
                                             const float *dout, float *dq, float *dk, float *dv,
                                             const int32_t *cu_seqlens, int64_t N)
{
    return seqk_attention_parallel_backward_ex(ctx, SEQK_DTYPE_F32, B, T, Hq, Hkv, K, V, scale,
                                               flags, q, k, v, o, lse, dout, dq, dk, dv,
                                               cu_seqlens, N);
}

seqk_status seqk_attention_parallel_backward_workspace_size_ex(seqk_context *ctx, seqk_dtype dtype,
                                                               int64_t B, int64_t T, int64_t Hq,
                                                               int64_t Hkv, int64_t K, int64_t V,
                                                               unsigned flags, int64_t N,
                                                               size_t *bytes)
{
    static const char fn[] = "seqk_attention_parallel_backward_workspace_size_ex";
    seqk_status st = seqk__dt_check(fn, dtype);
    if (!st) st = seqk_attention_parallel_backward_workspace_size(ctx, B, T, Hq, Hkv, K, V,
                                                                  flags, N, bytes);
    if (st) return st;
    const int64_t nq = seqk__dt_numel(B, T, Hq, K), nk = seqk__dt_numel(B, T, Hkv, K);
    const int64_t nv = seqk__dt_numel(B, T, Hkv, V), no = seqk__dt_numel(B, T, Hq, V);
    const int64_t n[] = {nq, nk, nv, no, no, nq, nk, nv};
    return seqk__dt_workspace_size(fn, dtype, n, 8, bytes);
}
