/*
 * attention/softmax_attention.c -- softmax attention (DESIGN 3.5): the
 * parallel mode (FlashAttention-style tiles with the online softmax) and the
 * recurrent mode (one decoding step over a caller-owned KV cache), CPU
 * backend, then the validation and dispatch of both public functions.
 *
 * The math, per query row t of one head (scores in log2 units: the scale is
 * folded with log2(e) into q, so exp becomes exp2):
 *
 *   s_j   = scale * log2(e) * q_t . k_j              for the keys j of t
 *   m     = max_j s_j,   l = sum_j 2^(s_j - m)
 *   o_t   = sum_j 2^(s_j - m) v_j / l,   lse_t = ln(2) * (m + log2 l)
 *
 * Online over key tiles: m' = max(m, max of the tile), alpha = 2^(m - m'),
 * l' = alpha l + sum_tile 2^(s - m'), acc' = alpha acc + P V; divide once at
 * the end. The T x T score matrix is never stored: one tile of BC keys by BR
 * queries at a time, per thread.
 *
 * CPU parallel mode, in passes over groups of key/value heads (as many as
 * fit a 32 MiB budget of the workspace):
 *   1. pack each head's keys and values once (rows of one head lie Hkv*K
 *      floats apart in k and v: 4 KiB strides alias in L1, every row sits on
 *      its own page; packed, a key tile is one contiguous stream):
 *        kp  [Tp/QR][K][QR]   keys, QR rows interleaved (the QK^T kernel's
 *                             broadcasts read one stream)
 *        vp  [Vp/PW][Tp][PW]  values blocked by PW columns, Vp = V rounded
 *                             up to PW (zero columns)
 *      each sequence starting at a multiple of QR, zero rows after it;
 *   2. OpenMP over (query tile, query head) of those heads, the heaviest
 *      causal tiles first, dynamic; per thread, for one tile of BR queries:
 *        qp  [BR/QW][K][QW]   scaled queries, transposed, blocked by QW
 *        s   [BC][BR]         scores then probabilities of one key tile,
 *                             key-major (S^T): the softmax over keys runs
 *                             down columns, i.e. across SIMD lanes of queries
 *        acc [BR][Vp]         output accumulator; m, l, alpha [BR]
 *      over key tiles of BC keys; causal: tiles past the last query are never
 *      visited and each group of QG queries stops at its own last query.
 * QK^T micro-kernel: QR keys x QW queries in 12 AVX registers, over K: the
 * 6 x 16 register tile of core/gemm.h (seqk__sgemm_6x16).
 * PV micro-kernel:   PR queries x PW values, over keys: with AVX-512 8 x 32
 * in 16 zmm registers, else the 6 x 16 ymm tile.
 * Queries are handled in groups of QG (a multiple of QW, PR and 8).
 *
 * CPU decode: append, then split each batch entry's cache by token ranges
 * (Flash-Decoding); an item streams its ranges' whole K then V rows in tiles
 * of DT tokens, with per-head online-softmax partials in the workspace,
 * merged by log-sum-exp (see the decode section).
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
#ifdef _OPENMP
#include <omp.h>
#endif

#if !defined(__AVX2__) || !defined(__FMA__)
#error "attention/softmax_attention.c needs AVX2 and FMA (-mavx2 -mfma)"
#endif

#define BR 96 /* queries per tile */
#define BC 60 /* keys per tile (a multiple of QR) */
#define QR 6  /* keys per QK^T micro-kernel */
#define QW 16 /* queries per QK^T micro-kernel (2 vectors) */
#define QG 48 /* query granularity: a multiple of QW, PR and 8 */
#ifdef __AVX512F__
#define PR 8  /* queries per PV micro-kernel */
#define PW 32 /* values per PV micro-kernel (2 zmm) */
#else
#define PR 6  /* queries per PV micro-kernel */
#define PW 16 /* values per PV micro-kernel (2 ymm) */
#endif

#define LOG2E_F 1.44269504088896340736f
#define LN2_D 0.69314718055994530942

/* ------------------------------------------------------------------------ */
/* exp2 for arguments <= 0                                                   */
/* ------------------------------------------------------------------------ */

/* 2^x for x <= 0 (scores minus their running max): core/vmath.h's
 * seqk__exp2_8_inrange after a clamp. x < -125 (and -inf) gives 2^-125, i.e.
 * 0 for all purposes here; callers that need an exact 0 (masked keys) mask
 * the result. */
static inline __m256 exp2_neg(__m256 x)
{
    return seqk__exp2_8_inrange(_mm256_max_ps(x, _mm256_set1_ps(-125.0f)));
}

static inline float hmax8(__m256 x)
{
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* ------------------------------------------------------------------------ */
/* Parallel mode, CPU: micro-kernels                                         */
/* ------------------------------------------------------------------------ */

/* The QK^T micro-kernel (and the PV one without AVX-512) is the register
 * tile seqk__sgemm_6x16 (core/gemm.h): its 6 left-operand rows are 6
 * adjacent floats (QR keys interleaved in kt, or PR queries of a row of s),
 * their elements QR or BR floats apart; its right operand is rows of
 * QW = 16 floats (QK^T) or PW (PV). */

/* s[r][0..QW) = sum_d kt[d][r] * qp[d][0..QW) for the QR = 6 keys r of one
 * block (kt [K][QR], interleaved); qp is one QW-block; s has row stride BR. */
__attribute__((noinline)) static void qk_kernel(const float *restrict qp,
                                                const float *restrict kt, int64_t K,
                                                float *restrict s)
{
    const float *const keys[QR] = {kt, kt + 1, kt + 2, kt + 3, kt + 4, kt + 5};
    __m256 c[QR][2];
    for (int r = 0; r < QR; r++) c[r][0] = c[r][1] = _mm256_setzero_ps();
    seqk__sgemm_6x16(K, keys, QR, qp, QW, c);
    for (int r = 0; r < QR; r++) {
        _mm256_store_ps(s + r * BR, c[r][0]);
        _mm256_store_ps(s + r * BR + 8, c[r][1]);
    }
}

/* acc[r][0..PW) = alpha[r] * acc[r][0..PW) + sum_{j<kn} p[j][r] * v[j][0..PW)
 * for the PR queries r of one block; p (row stride BR) starts at the
 * block's first query, v (row stride PW) and acc (row stride Vp) at the value
 * block. Each sum runs in the order j = 0, 1, .. with one FMA per term, on
 * either tile (the same bits). */
#ifdef __AVX512F__
/* AVX-512: PR = 8 queries x PW = 32 values, seqk__sgemm_8x32 (core/gemm.h). */
__attribute__((noinline)) static void pv_kernel(const float *restrict p, int64_t kn,
                                                const float *restrict v, int64_t Vp,
                                                float *restrict acc,
                                                const float *restrict alpha)
{
    const float *const queries[PR] = {p, p + 1, p + 2, p + 3, p + 4, p + 5, p + 6, p + 7};
    __m512 c[PR][2];
    for (int r = 0; r < PR; r++) {
        const __m512 a = _mm512_set1_ps(alpha[r]);
        c[r][0] = _mm512_mul_ps(a, _mm512_load_ps(acc + r * Vp));
        c[r][1] = _mm512_mul_ps(a, _mm512_load_ps(acc + r * Vp + 16));
    }
    seqk__sgemm_8x32(kn, queries, BR, v, PW, c);
    for (int r = 0; r < PR; r++) {
        _mm512_store_ps(acc + r * Vp, c[r][0]);
        _mm512_store_ps(acc + r * Vp + 16, c[r][1]);
    }
}
#else
/* AVX2: PR = 6 queries x PW = 16 values, seqk__sgemm_6x16 (core/gemm.h). */
__attribute__((noinline)) static void pv_kernel(const float *restrict p, int64_t kn,
                                                const float *restrict v, int64_t Vp,
                                                float *restrict acc,
                                                const float *restrict alpha)
{
    const float *const queries[PR] = {p, p + 1, p + 2, p + 3, p + 4, p + 5};
    __m256 c[PR][2];
    for (int r = 0; r < PR; r++) {
        const __m256 a = _mm256_broadcast_ss(alpha + r);
        c[r][0] = _mm256_mul_ps(a, _mm256_load_ps(acc + r * Vp));
        c[r][1] = _mm256_mul_ps(a, _mm256_load_ps(acc + r * Vp + 8));
    }
    seqk__sgemm_6x16(kn, queries, BR, v, PW, c);
    for (int r = 0; r < PR; r++) {
        _mm256_store_ps(acc + r * Vp, c[r][0]);
        _mm256_store_ps(acc + r * Vp + 8, c[r][1]);
    }
}
#endif

/* ------------------------------------------------------------------------ */
/* Parallel mode, CPU: one query tile of one head                            */
/* ------------------------------------------------------------------------ */

typedef struct attn_args {
    int64_t B, T, Hq, Hkv, K, V, Vp;
    int64_t N;                   /* sequences per batch entry (1 without varlen) */
    float scale2;                /* scale * log2(e) */
    bool causal;
    const float *q, *k, *v;
    float *o, *lse;
    const int32_t *cu;           /* host cu_seqlens or NULL */
    int32_t seq1[2];             /* {0, T} without varlen */
    const int32_t *seq;          /* [N+1] sequence boundaries: cu, or seq1 */
    const int64_t *tiles_before; /* [N+1] query tiles before sequence n */
    const int64_t *prow0;        /* [N+1] packed row of sequence n's first token */
    int64_t Tp;                  /* rows of a packed head */
} attn_args;

typedef struct tile_scratch {
    float *qp, *s, *acc, *m, *l, *alpha;
} tile_scratch;

static size_t al16(int64_t n) { return seqk__align_up((size_t)n, 16); }

/* Floats of one thread's tile scratch (each piece 64-byte aligned). */
static size_t scratch_floats(int64_t K, int64_t Vp)
{
    return al16(BR * K) + al16(BC * BR) + al16(BR * Vp) + 3 * al16(BR);
}

static tile_scratch scratch_at(float *base, int64_t K, int64_t Vp)
{
    tile_scratch w;
    w.qp = base;
    w.s = w.qp + al16(BR * K);
    w.acc = w.s + al16(BC * BR);
    w.m = w.acc + al16(BR * Vp);
    w.l = w.m + al16(BR);
    w.alpha = w.l + al16(BR);
    return w;
}

/* Floats of one packed key/value head: kp [Tp/QR][K][QR], vp [Vp/PW][Tp][PW]. */
static size_t packed_head_floats(int64_t Tp, int64_t K, int64_t Vp)
{
    return al16(Tp * K) + al16(Tp * Vp);
}

/* Online-softmax update of one key tile, vectorised across queries: for the
 * nI queries (multiple of 8) of the tile and its kn keys, turn scores into
 * probabilities 2^(s - m') in place, update m, l and set alpha = 2^(m - m').
 * With `masked`, key j is hidden from query i when j + rel > i (causal
 * diagonal; rel = key tile start - query tile start) and gets p = 0. */
static void softmax_tile(float *restrict s, int64_t kn, int64_t nI, bool masked, int64_t rel,
                         float *restrict m, float *restrict l, float *restrict alpha)
{
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    for (int64_t i0 = 0; i0 < nI; i0 += 8) {
        const __m256i iv = _mm256_add_epi32(_mm256_set1_epi32((int)i0),
                                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        const __m256 mold = _mm256_load_ps(m + i0);
        __m256 mx = mold;
        if (masked) {
            for (int64_t j = 0; j < kn; j++) {
                const __m256 hide = _mm256_castsi256_ps(
                    _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(j + rel)), iv));
                mx = _mm256_max_ps(mx, _mm256_blendv_ps(_mm256_load_ps(s + j * BR + i0), ninf,
                                                        hide));
            }
        } else {
            int64_t j = 0;
            __m256 mx2 = ninf;
            for (; j + 1 < kn; j += 2) {
                mx = _mm256_max_ps(mx, _mm256_load_ps(s + j * BR + i0));
                mx2 = _mm256_max_ps(mx2, _mm256_load_ps(s + (j + 1) * BR + i0));
            }
            if (j < kn) mx = _mm256_max_ps(mx, _mm256_load_ps(s + j * BR + i0));
            mx = _mm256_max_ps(mx, mx2);
        }
        __m256 sum = _mm256_setzero_ps(), sum2 = sum;
        if (masked) {
            for (int64_t j = 0; j < kn; j++) {
                const __m256 hide = _mm256_castsi256_ps(
                    _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(j + rel)), iv));
                __m256 p = exp2_neg(_mm256_sub_ps(_mm256_load_ps(s + j * BR + i0), mx));
                p = _mm256_andnot_ps(hide, p);
                _mm256_store_ps(s + j * BR + i0, p);
                sum = _mm256_add_ps(sum, p);
            }
        } else {
            int64_t j = 0;
            for (; j + 1 < kn; j += 2) {
                const __m256 p0 = exp2_neg(_mm256_sub_ps(_mm256_load_ps(s + j * BR + i0), mx));
                const __m256 p1 =
                    exp2_neg(_mm256_sub_ps(_mm256_load_ps(s + (j + 1) * BR + i0), mx));
                _mm256_store_ps(s + j * BR + i0, p0);
                _mm256_store_ps(s + (j + 1) * BR + i0, p1);
                sum = _mm256_add_ps(sum, p0);
                sum2 = _mm256_add_ps(sum2, p1);
            }
            if (j < kn) {
                const __m256 p0 = exp2_neg(_mm256_sub_ps(_mm256_load_ps(s + j * BR + i0), mx));
                _mm256_store_ps(s + j * BR + i0, p0);
                sum = _mm256_add_ps(sum, p0);
            }
        }
        const __m256 a = exp2_neg(_mm256_sub_ps(mold, mx)); /* mold = -inf: ~0, acc is 0 */
        _mm256_store_ps(alpha + i0, a);
        _mm256_store_ps(l + i0, _mm256_fmadd_ps(_mm256_load_ps(l + i0), a,
                                                _mm256_add_ps(sum, sum2)));
        _mm256_store_ps(m + i0, mx);
    }
}

/* Packs tokens [t0, t1) of the key/value heads g0 .. g0+gn-1 (flattened
 * b * Hkv + hk), head hl at packed + hl * per_head: keys into kp
 * [Tp/QR][K][QR] (blocks of QR rows, interleaved, so that the QK^T kernel
 * reads one stream) and values into vp [Vp/PW][Tp][PW] (blocked by PW
 * columns, zero columns up to Vp). Each sequence starts at a packed row
 * prow0[n] (a multiple of QR; tiles start at multiples of BC from it) and is
 * followed by zero rows up to the next multiple of QR. In place, the rows of
 * one head lie Hkv*K floats apart: 4 KiB strides alias in L1 and put every
 * row on its own page, which defeats the prefetchers and the TLB; packed, a
 * key tile is one contiguous stream. */
static void pack_heads(const attn_args *a, int64_t g0, int64_t gn, int64_t t0, int64_t t1,
                       float *packed, size_t per_head)
{
    const int64_t K = a->K, V = a->V, Vp = a->Vp, Tp = a->Tp, Hkv = a->Hkv;
    int64_t n = 0; /* the sequence of t0: last n with seq[n] <= t0 */
    {
        int64_t lo = 0, hi = a->N - 1;
        while (lo < hi) {
            const int64_t mid = (lo + hi + 1) / 2;
            if (a->seq[mid] <= t0)
                lo = mid;
            else
                hi = mid - 1;
        }
        n = lo;
    }
    for (int64_t t = t0; t < t1; t++) {
        while (t >= a->seq[n + 1]) n++;
        const int64_t r = a->prow0[n] + (t - a->seq[n]);
        const bool last = t + 1 == a->seq[n + 1];
        /* The pass's heads one after the other: for one batch entry their
         * rows are contiguous in k and v. */
        for (int64_t hl = 0; hl < gn; hl++) {
            const int64_t b = (g0 + hl) / Hkv, hk = (g0 + hl) % Hkv;
            float *kp = packed + (size_t)hl * per_head, *vp = kp + al16(Tp * K);
            const float *ks = a->k + ((b * a->T + t) * Hkv + hk) * K;
            float *kd = kp + (r / QR) * QR * K + r % QR;
            for (int64_t d = 0; d < K; d++) kd[d * QR] = ks[d];
            const float *src = a->v + ((b * a->T + t) * Hkv + hk) * V;
            float *vd = vp + r * PW;
            int64_t c = 0;
            for (; c + PW <= V; c += PW)
                for (int64_t x = 0; x < PW; x += 8)
                    _mm256_store_ps(vd + (c / PW) * Tp * PW + x, _mm256_loadu_ps(src + c + x));
            if (c < V)
                for (int64_t x = 0; x < PW; x++)
                    vd[(c / PW) * Tp * PW + x] = c + x < V ? src[c + x] : 0.0f;
            if (last) /* the sequence's zero rows up to a multiple of QR */
                for (int64_t z = r + 1; z < a->prow0[n + 1]; z++) {
                    float *kz = kp + (z / QR) * QR * K + z % QR;
                    for (int64_t d = 0; d < K; d++) kz[d * QR] = 0.0f;
                    for (int64_t x = 0; x < Vp; x += PW)
                        memset(vp + (x / PW) * Tp * PW + z * PW, 0, PW * sizeof(float));
                }
        }
    }
}

static int64_t clamp64(int64_t x, int64_t lo, int64_t hi)
{
    return x < lo ? lo : x > hi ? hi : x;
}

/* Queries [qs, qs+qn) of query head h (token indices within batch entry b),
 * whose sequence is tokens [s0, s1), packed from row p0 of kp, vp (its
 * packed key/value head). */
static void attn_tile(const attn_args *a, const tile_scratch *w, const float *kp,
                      const float *vp, int64_t p0, int64_t b, int64_t h, int64_t s0, int64_t s1,
                      int64_t qs, int64_t qn)
{
    const int64_t K = a->K, V = a->V, Vp = a->Vp, Hq = a->Hq, Tp = a->Tp;
    const int64_t nI = (qn + QG - 1) / QG * QG; /* queries computed */

    /* Pack the scaled queries, transposed, blocked by QW (zeros past qn). */
    for (int64_t ib = 0; ib < nI / QW; ib++) {
        float *dst = w->qp + ib * K * QW;
        for (int64_t c = 0; c < QW; c++) {
            const int64_t i = ib * QW + c;
            if (i < qn) {
                const float *src = a->q + ((b * a->T + qs + i) * Hq + h) * K;
                for (int64_t d = 0; d < K; d++) dst[d * QW + c] = src[d] * a->scale2;
            } else {
                for (int64_t d = 0; d < K; d++) dst[d * QW + c] = 0.0f;
            }
        }
    }
    for (int64_t i = 0; i < nI; i++) {
        w->m[i] = -INFINITY;
        w->l[i] = 0.0f;
    }
    memset(w->acc, 0, (size_t)(nI * Vp) * sizeof(float));

    const int64_t kend = a->causal ? (qs + qn < s1 ? qs + qn : s1) : s1;
    for (int64_t ks = s0; ks < kend; ks += BC) {
        const int64_t kn = kend - ks < BC ? kend - ks : BC;
        const int64_t pr = p0 + (ks - s0); /* packed row of the tile, a multiple of QR */
        const float *kt = kp + pr * K;
        /* Keys of the tile that each group of QG queries sees: all kn, or
         * with the causal mask those up to the group's last query (0: the
         * group skips the tile, no scores, no update). Key rows are computed
         * up to a multiple of QR; rows past the group's count belong to the
         * next keys, the next sequence or the zero padding: finite, unused. */
        int64_t jn[BR / QG];
        for (int64_t g = 0; g < nI / QG; g++) {
            jn[g] = kn;
            if (a->causal) {
                const int64_t lim = qs + (g + 1) * QG - ks;
                jn[g] = lim < 0 ? 0 : lim < kn ? lim : kn;
            }
        }
        for (int64_t g = 0; g < nI / QG; g++) {
            if (jn[g] == 0) continue;
            const int64_t nJ = (jn[g] + QR - 1) / QR * QR;
            /* S^T = K Q^T for the group. */
            for (int64_t ib = g * (QG / QW); ib < (g + 1) * (QG / QW); ib++)
                for (int64_t jb = 0; jb < nJ / QR; jb++)
                    qk_kernel(w->qp + ib * K * QW, kt + jb * QR * K, K,
                              w->s + jb * QR * BR + ib * QW);
            /* Online softmax; causal mask only where a key follows a query. */
            const int64_t i0 = g * QG;
            const bool masked = a->causal && ks + jn[g] - 1 > qs + i0;
            softmax_tile(w->s + i0, jn[g], QG, masked, ks - qs - i0, w->m + i0, w->l + i0,
                         w->alpha + i0);
        }
        /* acc = alpha acc + P V. Causal: a block of PR queries runs the
         * kernel over the keys all of its rows see, then adds the keys that
         * only its later rows see row by row: a masked key's p = 0 never
         * multiplies its value row (0 * NaN or inf would reach queries that
         * do not see it), and keys no row of the block sees are skipped. */
        for (int64_t v0 = 0; v0 < Vp; v0 += PW)
            for (int64_t g = 0; g < nI / QG; g++)
                for (int64_t i0 = g * QG; jn[g] && i0 < (g + 1) * QG; i0 += PR) {
                    const float *vt = vp + (v0 / PW) * Tp * PW + pr * PW;
                    float *acc = w->acc + i0 * Vp + v0;
                    const int64_t d = qs + i0 - ks; /* row r sees keys j <= d + r */
                    const int64_t lo = a->causal ? clamp64(d + 1, 0, jn[g]) : jn[g];
                    const int64_t hi = a->causal ? clamp64(d + PR, 0, jn[g]) : jn[g];
                    pv_kernel(w->s + i0, lo, vt, Vp, acc, w->alpha + i0);
                    for (int64_t j = lo; j < hi; j++)
                        for (int64_t r = j - d; r < PR; r++) {
                            const __m256 p = _mm256_broadcast_ss(w->s + j * BR + i0 + r);
                            float *c = acc + r * Vp;
                            for (int64_t x = 0; x < PW; x += 8)
                                _mm256_store_ps(c + x,
                                                _mm256_fmadd_ps(p, _mm256_load_ps(vt + j * PW + x),
                                                                _mm256_load_ps(c + x)));
                        }
                }
    }

    /* Divide once; write o and lse. */
    for (int64_t i = 0; i < qn; i++) {
        const float inv = 1.0f / w->l[i];
        float *dst = a->o + ((b * a->T + qs + i) * Hq + h) * V;
        const float *src = w->acc + i * Vp;
        for (int64_t c = 0; c < V; c++) dst[c] = src[c] * inv;
    }
    if (a->lse) {
        float *dst = a->lse + (b * Hq + h) * a->T + qs;
        for (int64_t i = 0; i < qn; i++)
            dst[i] = (float)(LN2_D * ((double)w->m[i] + log2((double)w->l[i])));
    }
}

static int64_t ceil_div64(int64_t n, int64_t d) { return (n + d - 1) / d; }

/* Key/value heads packed at a time: as many as fit PACK_BUDGET bytes (at
 * least one), so that the workspace stays bounded for long sequences, spread
 * evenly over the passes. Tp is an upper bound of the packed rows per head. */
#define PACK_BUDGET ((size_t)32 << 20)
static int64_t heads_per_pass(int64_t B, int64_t Tp, int64_t Hkv, int64_t K, int64_t Vp)
{
    const size_t head = packed_head_floats(Tp, K, Vp) * sizeof(float);
    int64_t g = (int64_t)(PACK_BUDGET / head);
    if (g < 1) g = 1;
    if (g >= B * Hkv) return B * Hkv;
    const int64_t passes = (B * Hkv + g - 1) / g;
    return (B * Hkv + passes - 1) / passes; /* passes of equal size */
}

/* Packed rows per head, an upper bound: each of the N sequences (1 without
 * varlen) padded to a multiple of QR. */
static int64_t packed_rows_bound(int64_t T, bool varlen, int64_t N)
{
    return T + (varlen ? N : 1) * (QR - 1);
}

static size_t cpu_parallel_workspace(const seqk_context *ctx, int64_t B, int64_t T, int64_t Hkv,
                                     int64_t K, int64_t V, bool varlen, int64_t N)
{
    const int64_t Vp = ceil_div64(V, PW) * PW, Tp = packed_rows_bound(T, varlen, N);
    size_t bytes = (size_t)seqk__threads(ctx) * scratch_floats(K, Vp) * sizeof(float);
    bytes += (size_t)heads_per_pass(B, Tp, Hkv, K, Vp) * packed_head_floats(Tp, K, Vp) *
             sizeof(float);
    bytes += 2 * seqk__align_up((size_t)((varlen ? N : 1) + 1) * sizeof(int64_t), 64);
    return bytes + 64; /* room to align the start */
}

static seqk_status cpu_attention_parallel(const char *fn, seqk_context *ctx, attn_args *a)
{
    const bool varlen = a->cu != NULL;
    const int nt = seqk__threads(ctx);
    void *raw = NULL;
    seqk_status st = seqk__workspace(
        fn, ctx, cpu_parallel_workspace(ctx, a->B, a->T, a->Hkv, a->K, a->V, varlen, a->N), &raw);
    if (st) return st;
    if (!varlen) {
        a->N = 1; /* one sequence per batch entry */
        a->seq1[0] = 0;
        a->seq1[1] = (int32_t)a->T;
        a->seq = a->seq1;
    } else {
        a->seq = a->cu;
    }
    const int64_t Tpb = packed_rows_bound(a->T, varlen, a->N);
    const int64_t G = heads_per_pass(a->B, Tpb, a->Hkv, a->K, a->Vp);
    const size_t per_thread = scratch_floats(a->K, a->Vp);
    const size_t per_head = packed_head_floats(Tpb, a->K, a->Vp);
    float *base = (float *)(((uintptr_t)raw + 63) & ~(uintptr_t)63);
    float *packed = base + (size_t)nt * per_thread;
    int64_t *tb = (int64_t *)(packed + (size_t)G * per_head);
    int64_t *p0 = tb + seqk__align_up((size_t)(a->N + 1), 8);
    tb[0] = 0;
    p0[0] = 0;
    for (int64_t n = 0; n < a->N; n++) {
        const int64_t len = (int64_t)a->seq[n + 1] - a->seq[n];
        tb[n + 1] = tb[n] + ceil_div64(len, BR);
        p0[n + 1] = p0[n] + ceil_div64(len, QR) * QR;
    }
    a->tiles_before = tb;
    a->prow0 = p0;
    a->Tp = p0[a->N];
    const int64_t ntiles = tb[a->N]; /* query tiles per batch entry */
    const int64_t group = a->Hq / a->Hkv;
    const int64_t pack_rows = 64; /* tokens per packing task */
    const int64_t row_tasks = ceil_div64(a->T, pack_rows);

    /* Passes over groups of G key/value heads: pack them, then run every
     * query tile of every query head that reads them. */
    for (int64_t g0 = 0; g0 < a->B * a->Hkv; g0 += G) {
        const int64_t gn = a->B * a->Hkv - g0 < G ? a->B * a->Hkv - g0 : G;
        const int64_t ntasks = ntiles * gn * group;
        const int64_t most = ntasks > row_tasks ? ntasks : row_tasks;
        const int use = most < nt ? (int)most : nt;
#pragma omp parallel num_threads(use)
        {
#ifdef _OPENMP
            const int tid = omp_get_thread_num();
#else
            const int tid = 0;
#endif
#pragma omp for schedule(static)
            for (int64_t pt = 0; pt < row_tasks; pt++) {
                const int64_t t0 = pt * pack_rows;
                pack_heads(a, g0, gn, t0, t0 + pack_rows < a->T ? t0 + pack_rows : a->T, packed,
                           per_head);
            }
            const tile_scratch w = scratch_at(base + (size_t)tid * per_thread, a->K, a->Vp);
            /* Heaviest tiles first (causal: each sequence's last query tiles),
             * then dynamic. */
#pragma omp for schedule(dynamic, 1)
            for (int64_t task = 0; task < ntasks; task++) {
                const int64_t r = task / (gn * group), rest = task % (gn * group);
                const int64_t hl = rest / group, bh = g0 + hl;
                const int64_t b = bh / a->Hkv, h = (bh % a->Hkv) * group + rest % group;
                int64_t lo = 0, hi = a->N - 1; /* last n with tiles_before[n] <= r */
                while (lo < hi) {
                    const int64_t mid = (lo + hi + 1) / 2;
                    if (a->tiles_before[mid] <= r)
                        lo = mid;
                    else
                        hi = mid - 1;
                }
                const int64_t local = r - a->tiles_before[lo];
                const int64_t count = a->tiles_before[lo + 1] - a->tiles_before[lo];
                const int64_t tile = a->causal ? count - 1 - local : local;
                const int64_t s0 = a->seq[lo], s1 = a->seq[lo + 1];
                const int64_t qs = s0 + tile * BR;
                const int64_t qn = s1 - qs < BR ? s1 - qs : BR;
                const float *kp = packed + (size_t)hl * per_head;
                attn_tile(a, &w, kp, kp + al16(a->Tp * a->K), a->prow0[lo], b, h, s0, s1, qs,
                          qn);
            }
        }
    }
    return SEQK_SUCCESS;
}

/* ------------------------------------------------------------------------ */
/* Recurrent mode (decode), CPU: split by tokens, no allocation              */
/* ------------------------------------------------------------------------ */

/* The cache is [B, max_len, Hkv, D]: one token's keys (values) for all heads
 * are one contiguous block of Hkv*D floats, while one head's rows are Hkv*D
 * floats apart (a 4 KiB page per row at Hkv = 8, D = 128). A work item that
 * walks one head through the cache starts a new page at every row, where the
 * hardware prefetchers stop: it reached a quarter of copy bandwidth, software
 * prefetching or not. So the cache of each batch entry is split by TOKEN
 * ranges instead (Flash-Decoding, split-K): an item = (b, tokens [t0, t1))
 * walks its tokens in order and handles every head of each token, i.e. it
 * streams contiguous memory: tiles of DT whole K rows (all Hkv heads), then
 * the same DT whole V rows. Per query head (GQA: kv head h / (Hq/Hkv)) it
 * keeps online-softmax partials in the log2 domain: running max m, sum l and
 * the unnormalised o[V], in the context's workspace (no allocation per step;
 * seqk_attention_decode_workspace_size gives the bound). A second pass merges
 * the partials of each (b, h) by their log-sum-exp into o and lse.
 * Ranges per batch entry: enough for DITEMS items per thread over the batch,
 * each at least DMIN tokens (the merge and the per-item setup stay small
 * against the stream); the count depends on max_len, not cache_len, so the
 * workspace bound holds for every step. When that leaves fewer items than
 * DITEMS per thread (short caches, where the cache sits in the CPU's caches
 * anyway), items also split the kv heads into blocks, each a contiguous part
 * of every row. */

#define DT 64      /* tokens per decode tile */
#define DMIN 256   /* fewest tokens per range (a multiple of DT) */
#define DITEMS 4   /* items per thread aimed at */

static float dot(const float *restrict x, const float *restrict y, int64_t n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = s0;
    int64_t d = 0;
    for (; d + 16 <= n; d += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + d), _mm256_loadu_ps(y + d), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + d + 8), _mm256_loadu_ps(y + d + 8), s1);
    }
    if (d + 8 <= n) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + d), _mm256_loadu_ps(y + d), s0);
        d += 8;
    }
    float s = seqk__hsum8(_mm256_add_ps(s0, s1));
    for (; d < n; d++) s += x[d] * y[d];
    return s;
}

/* y = a * y + p * x over n floats (a = 1 skips the rescale). */
static void scale_axpy(float *restrict y, float a, float p, const float *restrict x, int64_t n)
{
    const __m256 va = _mm256_set1_ps(a), vp = _mm256_set1_ps(p);
    int64_t c = 0;
    for (; c + 8 <= n; c += 8)
        _mm256_storeu_ps(y + c, _mm256_fmadd_ps(vp, _mm256_loadu_ps(x + c),
                                                _mm256_mul_ps(va, _mm256_loadu_ps(y + c))));
    for (; c < n; c++) y[c] = a * y[c] + p * x[c];
}

typedef struct decode_args {
    int64_t B, Hq, Hkv, K, V, max_len;
    float scale2;
    const float *q;
    const float *k_cache, *v_cache;
    const int32_t *cache_len;
    float *o, *lse;
} decode_args;

/* Token ranges per batch entry (>= 1), from the thread count and max_len. */
static int64_t decode_ranges(int nt, int64_t B, int64_t max_len)
{
    const int64_t want = ceil_div64((int64_t)DITEMS * nt, B);
    const int64_t most = ceil_div64(max_len, DMIN);
    const int64_t r = want < most ? want : most;
    return r > 1 ? r : 1;
}

/* Workspace layout: partial o [B, R, Hq, V], m and l [B, R, Hq], then per
 * thread the scores of a tile [Hq, DT] and the rescale factors [Hq]. */
typedef struct decode_ws {
    float *po, *pm, *pl, *scratch;
    size_t per_thread; /* floats */
} decode_ws;

static size_t al64(size_t bytes) { return seqk__align_up(bytes, 64); }

static size_t cpu_decode_workspace(int nt, int64_t B, int64_t Hq, int64_t V, int64_t max_len)
{
    const size_t parts = (size_t)(B * decode_ranges(nt, B, max_len) * Hq);
    return al64(parts * (size_t)V * sizeof(float)) + 2 * al64(parts * sizeof(float)) +
           (size_t)nt * al64((size_t)(Hq * (DT + 1)) * sizeof(float)) + 64;
}

static decode_ws decode_ws_at(void *raw, int64_t B, int64_t Hq, int64_t V, int64_t R)
{
    char *p = (char *)(((uintptr_t)raw + 63) & ~(uintptr_t)63);
    const size_t parts = (size_t)(B * R * Hq);
    decode_ws w;
    w.po = (float *)p;
    p += al64(parts * (size_t)V * sizeof(float));
    w.pm = (float *)p;
    p += al64(parts * sizeof(float));
    w.pl = (float *)p;
    p += al64(parts * sizeof(float));
    w.scratch = (float *)p;
    w.per_thread = al64((size_t)(Hq * (DT + 1)) * sizeof(float)) / sizeof(float);
    return w;
}

/* Tokens [t0, t1) of batch entry b, kv heads [hk0, hk1) (all of them unless
 * the cache is short): partials (unnormalised o, m, l, log2 domain) of their
 * query heads into po [Hq, V], pm, pl [Hq]. sc is
 * this thread's scratch: scores [Hq][DT] (32-byte aligned rows), then
 * alpha [Hq]. */
static void decode_range(const decode_args *a, int64_t b, int64_t t0, int64_t t1, int64_t hk0,
                         int64_t hk1, float *po, float *pm, float *pl, float *sc)
{
    const int64_t K = a->K, V = a->V, Hq = a->Hq, Hkv = a->Hkv, G = Hq / Hkv;
    const float *qb = a->q + b * Hq * K;
    float *alpha = sc + Hq * DT;
    for (int64_t h = hk0 * G; h < hk1 * G; h++) {
        pm[h] = -INFINITY;
        pl[h] = 0.0f;
    }
    memset(po + hk0 * G * V, 0, (size_t)((hk1 - hk0) * G * V) * sizeof(float));
    for (int64_t s0 = t0; s0 < t1; s0 += DT) {
        const int64_t tn = t1 - s0 < DT ? t1 - s0 : DT;
        const int64_t tn8 = (tn + 7) / 8 * 8;
        /* scores: the tile's K rows in order, all heads of each */
        const float *kt = a->k_cache + (b * a->max_len + s0) * Hkv * K;
        for (int64_t j = 0; j < tn; j++) {
            const float *krow = kt + j * Hkv * K;
            for (int64_t hk = hk0; hk < hk1; hk++)
                for (int64_t g = 0; g < G; g++) {
                    const int64_t h = hk * G + g;
                    sc[h * DT + j] = dot(qb + h * K, krow + hk * K, K) * a->scale2;
                }
        }
        /* online softmax per query head over the tile */
        for (int64_t h = hk0 * G; h < hk1 * G; h++) {
            float *s = sc + h * DT;
            for (int64_t j = tn; j < tn8; j++) s[j] = -INFINITY;
            __m256 mx = _mm256_set1_ps(pm[h]);
            for (int64_t j = 0; j < tn8; j += 8) mx = _mm256_max_ps(mx, _mm256_load_ps(s + j));
            const float mnew = hmax8(mx);
            mx = _mm256_set1_ps(mnew);
            __m256 sum = _mm256_setzero_ps();
            for (int64_t j = 0; j < tn8; j += 8) {
                const __m256 x = _mm256_load_ps(s + j);
                __m256 p = exp2_neg(_mm256_sub_ps(x, mx));
                /* exact 0 for the -inf padding */
                p = _mm256_and_ps(p, _mm256_cmp_ps(x, _mm256_set1_ps(-INFINITY), _CMP_NEQ_OQ));
                _mm256_store_ps(s + j, p);
                sum = _mm256_add_ps(sum, p);
            }
            alpha[h] = pm[h] == -INFINITY ? 0.0f : exp2f(pm[h] - mnew);
            pl[h] = pl[h] * alpha[h] + seqk__hsum8(sum);
            pm[h] = mnew;
        }
        /* o += p v: the tile's V rows in order, all heads of each */
        const float *vt = a->v_cache + (b * a->max_len + s0) * Hkv * V;
        for (int64_t j = 0; j < tn; j++) {
            const float *vrow = vt + j * Hkv * V;
            for (int64_t hk = hk0; hk < hk1; hk++)
                for (int64_t g = 0; g < G; g++) {
                    const int64_t h = hk * G + g;
                    scale_axpy(po + h * V, j == 0 ? alpha[h] : 1.0f, sc[h * DT + j],
                               vrow + hk * V, V);
                }
        }
    }
}

/* Tokens per range for a cache of L tokens split R ways (a multiple of DT,
 * >= DMIN; the last ranges may be short or empty). */
static int64_t range_len(int64_t L, int64_t R)
{
    const int64_t c = ceil_div64(ceil_div64(L, R), DT) * DT;
    return c > DMIN ? c : DMIN;
}

/* o[b, h] and lse[b, h] from the partials of b's ranges (log-sum-exp). */
static void decode_merge(const decode_args *a, const decode_ws *w, int64_t R, int64_t b,
                         int64_t h)
{
    const int64_t Hq = a->Hq, V = a->V;
    const int64_t L = (int64_t)a->cache_len[b] + 1;
    const int64_t nr = ceil_div64(L, range_len(L, R));
    const size_t p0 = (size_t)(b * R * Hq + h); /* range r: p0 + r * Hq */
    float m = -INFINITY;
    for (int64_t r = 0; r < nr; r++) m = fmaxf(m, w->pm[p0 + (size_t)(r * Hq)]);
    float l = 0.0f;
    float *orow = a->o + (b * Hq + h) * V;
    memset(orow, 0, (size_t)V * sizeof(float));
    for (int64_t r = 0; r < nr; r++) {
        const size_t p = p0 + (size_t)(r * Hq);
        const float c = exp2f(w->pm[p] - m);
        l += c * w->pl[p];
        scale_axpy(orow, 1.0f, c, w->po + p * (size_t)V, V);
    }
    const float inv = 1.0f / l;
    for (int64_t c = 0; c < V; c++) orow[c] *= inv;
    if (a->lse) a->lse[b * Hq + h] = (float)(LN2_D * ((double)m + log2((double)l)));
}

static seqk_status cpu_attention_decode(const char *fn, seqk_context *ctx, const decode_args *a,
                                        const float *k_new, const float *v_new, float *k_cache,
                                        float *v_cache)
{
    const int64_t B = a->B, Hq = a->Hq, Hkv = a->Hkv, K = a->K, V = a->V;
    const int nt = seqk__threads(ctx);
    void *raw = NULL;
    seqk_status st =
        seqk__workspace(fn, ctx, cpu_decode_workspace(nt, B, Hq, V, a->max_len), &raw);
    if (st) return st;
    /* Append the new token's keys and values at position cache_len[b]. */
    for (int64_t b = 0; b < B; b++) {
        const int64_t p = a->cache_len[b];
        memcpy(k_cache + (b * a->max_len + p) * Hkv * K, k_new + b * Hkv * K,
               (size_t)(Hkv * K) * sizeof(float));
        memcpy(v_cache + (b * a->max_len + p) * Hkv * V, v_new + b * Hkv * V,
               (size_t)(Hkv * V) * sizeof(float));
    }
    const int64_t R = decode_ranges(nt, B, a->max_len);
    const decode_ws w = decode_ws_at(raw, B, Hq, V, R);
    /* Few ranges in all (short caches): also split the kv heads, S ways. */
    const int64_t want = ceil_div64((int64_t)DITEMS * nt, B * R);
    const int64_t S = want < Hkv ? want : Hkv, hs = ceil_div64(Hkv, S);
    const int64_t items = B * R * S;
    const int use = items < nt ? (int)items : nt;
#pragma omp parallel num_threads(use) if (use > 1)
    {
        float *sc = w.scratch + (size_t)seqk__omp_thread() * w.per_thread;
#pragma omp for schedule(dynamic, 1)
        for (int64_t it = 0; it < items; it++) {
            const int64_t b = it / (R * S), r = it / S % R, hk0 = it % S * hs;
            const int64_t hk1 = hk0 + hs < Hkv ? hk0 + hs : Hkv;
            const int64_t L = (int64_t)a->cache_len[b] + 1, c = range_len(L, R);
            const int64_t t0 = r * c, t1 = t0 + c < L ? t0 + c : L;
            if (t0 >= L || hk0 >= Hkv) continue; /* the merge skips it */
            const size_t p = (size_t)((b * R + r) * Hq);
            decode_range(a, b, t0, t1, hk0, hk1, w.po + p * (size_t)V, w.pm + p, w.pl + p, sc);
        }
#pragma omp for schedule(static)
        for (int64_t bh = 0; bh < B * Hq; bh++) decode_merge(a, &w, R, bh / Hq, bh % Hq);
    }
    return SEQK_SUCCESS;
}

/* ------------------------------------------------------------------------ */
/* Validation and dispatch                                                   */
/* ------------------------------------------------------------------------ */

static const char FN_PAR[] = "seqk_attention_parallel";
static const char FN_DEC[] = "seqk_attention_decode";

/* Checks shared by both modes: dimensions, heads, scale, backend limits. */
static seqk_status check_heads(const char *fn, seqk_context *ctx, int64_t B, int64_t Hq,
                               int64_t Hkv, int64_t K, int64_t V)
{
    seqk_status st;
    if ((st = seqk__check_ctx(fn, ctx))) return st;
    if ((st = seqk__check_min(fn, "B", B, 1))) return st;
    if ((st = seqk__check_min(fn, "Hq", Hq, 1))) return st;
    if ((st = seqk__check_min(fn, "Hkv", Hkv, 1))) return st;
    if ((st = seqk__check_min(fn, "K", K, 1))) return st;
    if ((st = seqk__check_min(fn, "V", V, 1))) return st;
    if (Hq % Hkv)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                          "%s: Hq=%" PRId64 " is not a multiple of Hkv=%" PRId64, fn, Hq, Hkv);
    return seqk__attn_check_head_dims(fn, ctx, K, V, BC);
}

seqk_status seqk__attn_check_head_dims(const char *fn, const seqk_context *ctx, int64_t K,
                                       int64_t V, int tile)
{
    if (ctx->backend == SEQK_BACKEND_CUDA) {
#if SEQK__HAVE_CUDA
        if (K > SEQK__CUDA_ATTN_MAX_DIM)
            return seqk__fail(SEQK_ERROR_UNSUPPORTED,
                              "%s: K=%" PRId64 ", the CUDA backend takes K <= %d", fn, K,
                              SEQK__CUDA_ATTN_MAX_DIM);
        if (V > SEQK__CUDA_ATTN_MAX_DIM)
            return seqk__fail(SEQK_ERROR_UNSUPPORTED,
                              "%s: V=%" PRId64 ", the CUDA backend takes V <= %d", fn, V,
                              SEQK__CUDA_ATTN_MAX_DIM);
#endif
    } else if (K > INT32_MAX / tile || V > INT32_MAX / tile) {
        return seqk__fail(SEQK_ERROR_UNSUPPORTED,
                          "%s: K=%" PRId64 ", V=%" PRId64 ": head dimensions above %d are not "
                          "supported",
                          fn, K, V, INT32_MAX / tile);
    }
    return SEQK_SUCCESS;
}

static seqk_status check_parallel_sizes(const char *fn, seqk_context *ctx, int64_t B, int64_t T,
                                        int64_t Hq, int64_t Hkv, int64_t K, int64_t V,
                                        unsigned flags, bool varlen, int64_t N)
{
    seqk_status st;
    if ((st = check_heads(fn, ctx, B, Hq, Hkv, K, V))) return st;
    if ((st = seqk__check_min(fn, "T", T, 0))) return st;
    if ((st = seqk__check_flags(fn, flags, SEQK_ATTN_CAUSAL))) return st;
    const int64_t qd[4] = {B, T, Hq, K}, kd[4] = {B, T, Hkv, K};
    const int64_t vd[4] = {B, T, Hkv, V}, od[4] = {B, T, Hq, V};
    if ((st = seqk__check_numel(fn, "q [B,T,Hq,K]", 4, qd, sizeof(float), NULL))) return st;
    if ((st = seqk__check_numel(fn, "k [B,T,Hkv,K]", 4, kd, sizeof(float), NULL))) return st;
    if ((st = seqk__check_numel(fn, "v [B,T,Hkv,V]", 4, vd, sizeof(float), NULL))) return st;
    if ((st = seqk__check_numel(fn, "o [B,T,Hq,V]", 4, od, sizeof(float), NULL))) return st;
    if (varlen && (st = seqk__check_varlen_sizes(fn, B, N, T))) return st;
    return SEQK_SUCCESS;
}

seqk_status seqk_attention_parallel_workspace_size(seqk_context *ctx, int64_t B, int64_t T,
                                                   int64_t Hq, int64_t Hkv, int64_t K, int64_t V,
                                                   unsigned flags, int64_t N, size_t *bytes)
{
    static const char fn[] = "seqk_attention_parallel_workspace_size";
    seqk_status st = check_parallel_sizes(fn, ctx, B, T, Hq, Hkv, K, V, flags, N > 0, N);
    if (st == SEQK_SUCCESS) st = seqk__check_ptr(fn, "bytes", bytes);
    if (st != SEQK_SUCCESS) return st;
    *bytes = ctx->backend == SEQK_BACKEND_CPU
                 ? cpu_parallel_workspace(ctx, N > 0 ? 1 : B, T, Hkv, K, V, N > 0, N)
                 : 0;
    return SEQK_SUCCESS;
}

static bool overlaps(const void *p, int64_t pn, const void *q, int64_t qn)
{
    return seqk__overlap(p, (size_t)pn * sizeof(float), q, (size_t)qn * sizeof(float));
}

static seqk_status attention_parallel_f32(seqk_context *ctx, int64_t B, int64_t T, int64_t Hq,
                                          int64_t Hkv, int64_t K, int64_t V, float scale,
                                          unsigned flags, const float *q, const float *k,
                                          const float *v, float *o, float *lse,
                                          const int32_t *cu_seqlens, int64_t N)
{
    const char *fn = FN_PAR;
    const bool varlen = cu_seqlens != NULL;
    seqk_status st = check_parallel_sizes(fn, ctx, B, T, Hq, Hkv, K, V, flags, varlen, N);
    if (st) return st;
    if ((st = seqk__check_scale(fn, scale))) return st;
    if (!varlen) N = B;
    const int64_t nq = B * T * Hq * K, nk = B * T * Hkv * K, nv = B * T * Hkv * V;
    const int64_t no = B * T * Hq * V, nl = B * Hq * T;
    if (T > 0) {
        if ((st = seqk__check_ptr(fn, "q", q))) return st;
        if ((st = seqk__check_ptr(fn, "k", k))) return st;
        if ((st = seqk__check_ptr(fn, "v", v))) return st;
        if ((st = seqk__check_ptr(fn, "o", o))) return st;
        if (overlaps(o, no, q, nq) || overlaps(o, no, k, nk) || overlaps(o, no, v, nv))
            return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                              "%s: o=%p overlaps an input (q, k or v)", fn, (void *)o);
        if (lse && (overlaps(lse, nl, o, no) || overlaps(lse, nl, q, nq) ||
                    overlaps(lse, nl, k, nk) || overlaps(lse, nl, v, nv)))
            return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                              "%s: lse=%p overlaps o, q, k or v", fn, (void *)lse);
    }
    int32_t *cu_host = NULL;
    if (varlen) {
        if ((st = seqk__copy_cu_seqlens(fn, ctx, cu_seqlens, N, B, T, &cu_host))) return st;
    }
    if (T > 0) {
        switch (ctx->backend) {
        case SEQK_BACKEND_CPU: {
            attn_args a = {.B = B, .T = T, .Hq = Hq, .Hkv = Hkv, .K = K, .V = V,
                           .Vp = ceil_div64(V, PW) * PW, .N = varlen ? N : 1,
                           .scale2 = scale * LOG2E_F,
                           .causal = (flags & SEQK_ATTN_CAUSAL) != 0, .q = q, .k = k, .v = v,
                           .o = o, .lse = lse, .cu = cu_host};
            st = cpu_attention_parallel(fn, ctx, &a);
            break;
        }
        case SEQK_BACKEND_CUDA:
#if SEQK__HAVE_CUDA
            st = seqk__cuda_attention_parallel(ctx, B, T, Hq, Hkv, K, V, scale, flags, q, k, v, o,
                                               lse, cu_seqlens, cu_host, N);
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

static seqk_status check_decode_sizes(const char *fn, seqk_context *ctx, int64_t B, int64_t Hq,
                                      int64_t Hkv, int64_t K, int64_t V, int64_t max_len)
{
    seqk_status st;
    if ((st = check_heads(fn, ctx, B, Hq, Hkv, K, V))) return st;
    if ((st = seqk__check_min(fn, "max_len", max_len, 1))) return st;
    if (max_len > INT32_MAX)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                          "%s: max_len=%" PRId64 ", must be <= %d (cache_len is int32)", fn,
                          max_len, INT32_MAX);
    const int64_t kd[4] = {B, max_len, Hkv, K}, vd[4] = {B, max_len, Hkv, V};
    const int64_t qd[3] = {B, Hq, K}, od[3] = {B, Hq, V};
    if ((st = seqk__check_numel(fn, "k_cache [B,max_len,Hkv,K]", 4, kd, sizeof(float), NULL)))
        return st;
    if ((st = seqk__check_numel(fn, "v_cache [B,max_len,Hkv,V]", 4, vd, sizeof(float), NULL)))
        return st;
    if ((st = seqk__check_numel(fn, "q [B,Hq,K]", 3, qd, sizeof(float), NULL))) return st;
    if ((st = seqk__check_numel(fn, "o [B,Hq,V]", 3, od, sizeof(float), NULL))) return st;
    return SEQK_SUCCESS;
}

seqk_status seqk_attention_decode_workspace_size(seqk_context *ctx, int64_t B, int64_t Hq,
                                                 int64_t Hkv, int64_t K, int64_t V,
                                                 int64_t max_len, size_t *bytes)
{
    static const char fn[] = "seqk_attention_decode_workspace_size";
    seqk_status st = check_decode_sizes(fn, ctx, B, Hq, Hkv, K, V, max_len);
    if (st == SEQK_SUCCESS) st = seqk__check_ptr(fn, "bytes", bytes);
    if (st != SEQK_SUCCESS) return st;
    *bytes = 0;
    if (ctx->backend == SEQK_BACKEND_CPU)
        *bytes = cpu_decode_workspace(seqk__threads(ctx), B, Hq, V, max_len);
#if SEQK__HAVE_CUDA
    if (ctx->backend == SEQK_BACKEND_CUDA)
        *bytes = seqk__cuda_attention_decode_workspace_size(B, Hq, V, max_len);
#endif
    return SEQK_SUCCESS;
}

static seqk_status check_cache_len(const char *fn, const int32_t *len, int64_t B, int64_t max_len)
{
    for (int64_t b = 0; b < B; b++) {
        if (len[b] < 0)
            return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                              "%s: cache_len[%" PRId64 "]=%d, must be >= 0", fn, b, (int)len[b]);
        if (len[b] >= max_len)
            return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                              "%s: cache_len[%" PRId64 "]=%d, must be < max_len=%" PRId64
                              " (no room in the cache for the new token)",
                              fn, b, (int)len[b], max_len);
    }
    return SEQK_SUCCESS;
}

static seqk_status attention_decode_f32(seqk_context *ctx, int64_t B, int64_t Hq, int64_t Hkv,
                                        int64_t K, int64_t V, int64_t max_len, float scale,
                                        const float *q, const float *k_new, const float *v_new,
                                        float *k_cache, float *v_cache, const int32_t *cache_len,
                                        float *o, float *lse)
{
    const char *fn = FN_DEC;
    seqk_status st = check_decode_sizes(fn, ctx, B, Hq, Hkv, K, V, max_len);
    if (st) return st;
    if ((st = seqk__check_scale(fn, scale))) return st;
    if ((st = seqk__check_ptr(fn, "q", q))) return st;
    if ((st = seqk__check_ptr(fn, "k_new", k_new))) return st;
    if ((st = seqk__check_ptr(fn, "v_new", v_new))) return st;
    if ((st = seqk__check_ptr(fn, "k_cache", k_cache))) return st;
    if ((st = seqk__check_ptr(fn, "v_cache", v_cache))) return st;
    if ((st = seqk__check_ptr(fn, "cache_len", cache_len))) return st;
    if ((st = seqk__check_ptr(fn, "o", o))) return st;
    const int64_t nkc = B * max_len * Hkv * K, nvc = B * max_len * Hkv * V;
    const int64_t no = B * Hq * V, nq = B * Hq * K;
    if (overlaps(k_cache, nkc, v_cache, nvc))
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: k_cache=%p overlaps v_cache=%p", fn,
                          (void *)k_cache, (void *)v_cache);
    if (overlaps(o, no, k_cache, nkc) || overlaps(o, no, v_cache, nvc) ||
        overlaps(o, no, q, nq) || overlaps(o, no, k_new, B * Hkv * K) ||
        overlaps(o, no, v_new, B * Hkv * V))
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                          "%s: o=%p overlaps an input or the cache", fn, (void *)o);
    if (lse && (overlaps(lse, B * Hq, o, no) || overlaps(lse, B * Hq, k_cache, nkc) ||
                overlaps(lse, B * Hq, v_cache, nvc)))
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: lse=%p overlaps o or the cache", fn,
                          (void *)lse);
    switch (ctx->backend) {
    case SEQK_BACKEND_CPU: {
        if ((st = check_cache_len(fn, cache_len, B, max_len))) return st;
        const decode_args a = {.B = B, .Hq = Hq, .Hkv = Hkv, .K = K, .V = V, .max_len = max_len,
                               .scale2 = scale * LOG2E_F, .q = q, .k_cache = k_cache,
                               .v_cache = v_cache, .cache_len = cache_len, .o = o, .lse = lse};
        return cpu_attention_decode(fn, ctx, &a, k_new, v_new, k_cache, v_cache);
    }
    case SEQK_BACKEND_CUDA: {
#if SEQK__HAVE_CUDA
        int32_t *len_host = malloc((size_t)B * sizeof(int32_t));
        if (!len_host)
            return seqk__fail(SEQK_ERROR_OUT_OF_MEMORY, "%s: cannot allocate cache_len copy",
                              fn);
        st = seqk_memcpy(ctx, len_host, cache_len, (size_t)B * sizeof(int32_t),
                         SEQK_COPY_BACKEND_TO_HOST);
        if (st == SEQK_SUCCESS) st = check_cache_len(fn, len_host, B, max_len);
        if (st == SEQK_SUCCESS)
            st = seqk__cuda_attention_decode(ctx, B, Hq, Hkv, K, V, max_len, scale, q, k_new,
                                             v_new, k_cache, v_cache, cache_len, len_host, o,
                                             lse);
        free(len_host);
        return st;
#else
        return seqk__fail(SEQK_ERROR_NOT_COMPILED, "%s: no CUDA backend in this build", fn);
#endif
    }
    }
    return seqk__fail(SEQK_ERROR_INTERNAL, "%s: context has backend=%d", fn, (int)ctx->backend);
}

/* ---- dtypes (seqk.h, "Dtypes"): the _ex entry points ---------------------- */

seqk_status seqk_attention_parallel_ex(seqk_context *ctx, seqk_dtype dtype, int64_t B, int64_t T,
                                       int64_t Hq, int64_t Hkv, int64_t K, int64_t V, float scale,
                                       unsigned flags, const void *q, const void *k, const void *v,
                                       void *o, float *lse, const int32_t *cu_seqlens, int64_t N)
{
    if (dtype == SEQK_DTYPE_F32)
        return attention_parallel_f32(ctx, B, T, Hq, Hkv, K, V, scale, flags, q, k, v, o, lse,
                                      cu_seqlens, N);
    const int64_t nq = seqk__dt_numel(B, T, Hq, K), nk = seqk__dt_numel(B, T, Hkv, K);
    const int64_t nv = seqk__dt_numel(B, T, Hkv, V), no = seqk__dt_numel(B, T, Hq, V);
    seqk__dt_tensor t[] = {
        {"q", q, nq, SEQK__DT_IN, 0, NULL},
        {"k", k, nk, SEQK__DT_IN, 0, NULL},
        {"v", v, nv, SEQK__DT_IN, 0, NULL},
        {"o", o, no, SEQK__DT_OUT, 0, NULL}};
    size_t ws = 0;
    const seqk_status qs =
        seqk_attention_parallel_workspace_size(ctx, B, T, Hq, Hkv, K, V, flags,
                                               cu_seqlens ? N : 0, &ws);
    seqk__dt_call c;
    seqk_status st = seqk__dt_begin(&c, "seqk_attention_parallel_ex", ctx, dtype, t, 4,
                                    seqk__dt_ws(qs, ws));
    if (st) return st;
    st = attention_parallel_f32(ctx, B, T, Hq, Hkv, K, V, scale, flags, t[0].f, t[1].f, t[2].f,
                                t[3].f, lse, cu_seqlens, N);
    return seqk__dt_end(&c, st);
}

seqk_status seqk_attention_parallel(seqk_context *ctx, int64_t B, int64_t T, int64_t Hq,
                                    int64_t Hkv, int64_t K, int64_t V, float scale, unsigned flags,
                                    const float *q, const float *k, const float *v, float *o,
                                    float *lse, const int32_t *cu_seqlens, int64_t N)
{
    return seqk_attention_parallel_ex(ctx, SEQK_DTYPE_F32, B, T, Hq, Hkv, K, V, scale, flags, q,
                                      k, v, o, lse, cu_seqlens, N);
}

seqk_status seqk_attention_parallel_workspace_size_ex(seqk_context *ctx, seqk_dtype dtype,
                                                      int64_t B, int64_t T, int64_t Hq,
                                                      int64_t Hkv, int64_t K, int64_t V,
                                                      unsigned flags, int64_t N, size_t *bytes)
{
    static const char fn[] = "seqk_attention_parallel_workspace_size_ex";
    seqk_status st = seqk__dt_check(fn, dtype);
    if (!st) st = seqk_attention_parallel_workspace_size(ctx, B, T, Hq, Hkv, K, V, flags, N,
                                                         bytes);
    if (st) return st;
    const int64_t nq = seqk__dt_numel(B, T, Hq, K), nk = seqk__dt_numel(B, T, Hkv, K);
    const int64_t nv = seqk__dt_numel(B, T, Hkv, V), no = seqk__dt_numel(B, T, Hq, V);
    const int64_t n[] = {nq, nk, nv, no};
    return seqk__dt_workspace_size(fn, dtype, n, 4, bytes);
}

/* After a reduced-dtype decode step (the fp32 op appended to the fp32
 * copies of the caches): the new token's keys and values, already in the
 * dtype, copied into the caller's caches at cache_len[b] (exactly what
 * rounding the fp32 append would store). cache_len was checked by the op. */
static seqk_status decode_append(seqk_context *ctx, seqk_dtype dtype, int64_t B, int64_t Hkv,
                                 int64_t K, int64_t V, int64_t max_len, const void *k_new,
                                 const void *v_new, void *k_cache, void *v_cache,
                                 const int32_t *cache_len)
{
    static const char fn[] = "seqk_attention_decode_ex";
    int32_t *len = malloc((size_t)B * sizeof(int32_t));
    if (!len)
        return seqk__fail(SEQK_ERROR_OUT_OF_MEMORY, "%s: cannot allocate %" PRId64 " ints", fn, B);
    seqk_status st = seqk_memcpy(ctx, len, cache_len, (size_t)B * sizeof(int32_t),
                                 SEQK_COPY_BACKEND_TO_HOST);
    const size_t es = seqk_dtype_size(dtype), kb = (size_t)(Hkv * K) * es,
                 vb = (size_t)(Hkv * V) * es;
    for (int64_t b = 0; b < B && !st; b++) {
        const size_t row = (size_t)(b * max_len + len[b]);
        st = seqk_memcpy(ctx, (char *)k_cache + row * kb, (const char *)k_new + (size_t)b * kb,
                         kb, SEQK_COPY_BACKEND_TO_BACKEND);
        if (!st)
            st = seqk_memcpy(ctx, (char *)v_cache + row * vb,
                             (const char *)v_new + (size_t)b * vb, vb,
                             SEQK_COPY_BACKEND_TO_BACKEND);
    }
    free(len);
    return st;
}

seqk_status seqk_attention_decode_ex(seqk_context *ctx, seqk_dtype dtype, int64_t B, int64_t Hq,
                                     int64_t Hkv, int64_t K, int64_t V, int64_t max_len,
                                     float scale, const void *q, const void *k_new,
                                     const void *v_new, void *k_cache, void *v_cache,
                                     const int32_t *cache_len, void *o, float *lse)
{
    if (dtype == SEQK_DTYPE_F32)
        return attention_decode_f32(ctx, B, Hq, Hkv, K, V, max_len, scale, q, k_new, v_new,
                                    k_cache, v_cache, cache_len, o, lse);
    const int64_t nq = seqk__dt_numel(B, Hq, K, 1), nk = seqk__dt_numel(B, Hkv, K, 1);
    const int64_t nv = seqk__dt_numel(B, Hkv, V, 1), no = seqk__dt_numel(B, Hq, V, 1);
    const int64_t nkc = seqk__dt_numel(B, max_len, Hkv, K);
    const int64_t nvc = seqk__dt_numel(B, max_len, Hkv, V);
    seqk__dt_tensor t[] = {
        {"q", q, nq, SEQK__DT_IN, 0, NULL},
        {"k_new", k_new, nk, SEQK__DT_IN, 0, NULL},
        {"v_new", v_new, nv, SEQK__DT_IN, 0, NULL},
        {"k_cache", k_cache, nkc, SEQK__DT_IN_WRITTEN, 0, NULL},
        {"v_cache", v_cache, nvc, SEQK__DT_IN_WRITTEN, 0, NULL},
        {"o", o, no, SEQK__DT_OUT, 0, NULL}};
    size_t ws = 0;
    const seqk_status qs =
        seqk_attention_decode_workspace_size(ctx, B, Hq, Hkv, K, V, max_len, &ws);
    seqk__dt_call c;
    seqk_status st = seqk__dt_begin(&c, "seqk_attention_decode_ex", ctx, dtype, t, 6,
                                    seqk__dt_ws(qs, ws));
    if (st) return st;
    st = attention_decode_f32(ctx, B, Hq, Hkv, K, V, max_len, scale, t[0].f, t[1].f, t[2].f,
                              t[3].f, t[4].f, cache_len, t[5].f, lse);
    st = seqk__dt_end(&c, st);
    if (!st)
        st = decode_append(ctx, dtype, B, Hkv, K, V, max_len, k_new, v_new, k_cache, v_cache,
                           cache_len);
    return st;
}

seqk_status seqk_attention_decode(seqk_context *ctx, int64_t B, int64_t Hq, int64_t Hkv, int64_t K,
                                  int64_t V, int64_t max_len, float scale, const float *q,
                                  const float *k_new, const float *v_new, float *k_cache,
                                  float *v_cache, const int32_t *cache_len, float *o, float *lse)
{
    return seqk_attention_decode_ex(ctx, SEQK_DTYPE_F32, B, Hq, Hkv, K, V, max_len, scale, q,
                                    k_new, v_new, k_cache, v_cache, cache_len, o, lse);
}

seqk_status seqk_attention_decode_workspace_size_ex(seqk_context *ctx, seqk_dtype dtype, int64_t B,
                                                    int64_t Hq, int64_t Hkv, int64_t K, int64_t V,
                                                    int64_t max_len, size_t *bytes)
{
    static const char fn[] = "seqk_attention_decode_workspace_size_ex";
    seqk_status st = seqk__dt_check(fn, dtype);
    if (!st) st = seqk_attention_decode_workspace_size(ctx, B, Hq, Hkv, K, V, max_len, bytes);
    if (st) return st;
    const int64_t nq = seqk__dt_numel(B, Hq, K, 1), nk = seqk__dt_numel(B, Hkv, K, 1);
    const int64_t nv = seqk__dt_numel(B, Hkv, V, 1), no = seqk__dt_numel(B, Hq, V, 1);
    const int64_t nkc = seqk__dt_numel(B, max_len, Hkv, K);
    const int64_t nvc = seqk__dt_numel(B, max_len, Hkv, V);
    const int64_t n[] = {nq, nk, nv, no, nkc, nvc};
    return seqk__dt_workspace_size(fn, dtype, n, 6, bytes);
}
