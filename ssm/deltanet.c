/*
 * ssm/deltanet.c -- DeltaNet and gated DeltaNet (DESIGN 3.3), CPU; the
 * validation and dispatch of seqk_deltanet.
 *
 * Per sequence and head, with S a K x V state, a_t = exp(g_t) (1 without g),
 * q~ = scale * q (L2-normalised first with the flag), k~ = k (normalised):
 *
 *   S_t = a_t S_{t-1} + k~_t delta_t^T,   delta_t = beta_t (v_t - a_t S_{t-1}^T k~_t)
 *   o_t = S_t^T q~_t = a_t S_{t-1}^T q~_t + (k~_t . q~_t) delta_t
 *
 * Recurrent mode. Columns of S are independent (delta_t's column j needs only
 * column j of S), so the work items are (sequence, head, block of VB state
 * columns), as in scan/linear_recurrent.c. Per token an item needs
 * x = S_{t-1}^T k~ and y = S_{t-1}^T q~ (two reductions over the K rows)
 * before it can form delta_t, and then the rank-1 update. The update of token
 * t is therefore deferred into the pass of token t+1: one pass per token over
 * the K x VB slice does, row by row,
 *
 *   row_i = a_{t-1} row_i + k~_{t-1,i} delta_{t-1}      (the pending update)
 *   x += k~_{t,i} row_i,   y += q~_{t,i} row_i
 *
 * and a last pass applies the final pending update: T tokens cost T + 1
 * passes (a decoding step two: one read, one read-modify-write), 6 K V
 * flops per token (AVX2: four ymm of a 32-column row per pass). The slice is
 * updated in place in state_out (after copying state_in there), so a
 * decoding step with state_in == state_out allocates nothing; an item of at
 * least LOCAL_MIN_T tokens with K <= 128 works on a contiguous copy on the
 * stack instead (rows V floats apart thrash L1's sets; measured ~1.35x
 * faster at K = V = 128) and writes it back at the end; without state_out
 * the slice lives in the workspace.
 *
 * Parallel (chunked) mode, per chunk of L tokens (G the cumulative log-gate
 * in the chunk, Gamma_ij = exp(G_i - G_j) for i >= j only, S0 the state
 * before the chunk):
 *
 *   A    = strict_lower(diag(beta) (K K^T .* Gamma)),   T = (I + A)^-1
 *   U    = T diag(beta) V,   W = T diag(beta exp(G)) K    (independent of S0)
 *   Vnew = U - W S0
 *   O    = diag(exp(G)) Q S0 + ((Q K^T) .* Gamma .* M_causal) Vnew
 *   S_next = exp(G_L) S0 + (diag(exp(G_L - G)) K)^T Vnew
 *
 * built from the shared chunk stages of scan/chunk.c: seqk__chunk_load (G,
 * Q~, exp(G) Q~, K~, exp(G_L - G) K~, with the L2 norm), seqk__chunk_output
 * and seqk__chunk_local_state with Vnew in place of V; the products K K^T,
 * T V, T K and W S0 are seqk__sgemm calls (K K^T, T V and T K through
 * seqk__sgemm_causal, which skips the triangle that is not needed or is 0). T comes from forward substitution,
 * row by row: T_i = e_i - sum_{j<i} A_ij T_j (an axpy of earlier rows, which
 * vectorises). Vnew depends on S0, so the chunks of one (sequence, head) run
 * in order. Two drivers:
 *   fused  (at least as many (sequence, head) pairs as threads): one
 *          (sequence, group of heads) per work item (seqk__lin_head_group:
 *          the group's rows share pages), a chunk's heads in turn, everything
 *          of a chunk and the group's states in the thread's scratch;
 *   split  (fewer pairs than threads): stage 1 computes U and W of every
 *          chunk in parallel (they do not depend on S0) into the workspace;
 *          stage 2 splits the state's V columns into blocks: given U and W,
 *          the columns of Vnew, O and S are independent, so each (pair, column
 *          block) walks its chunks on its own K x vw slice of the state
 *          (Vnew_blk = U_blk - W S0_blk, then the output and local-state
 *          stages on vw columns); both stages in cache-sized windows of
 *          chunks (the slices kept from one window to the next), so that
 *          stage 2 finds U and W in cache.
 */
#include "../core/gemm.h"
#include "../core/dtype.h"
#include "../core/vmath.h"
#include "../gpu/gpu.h"
#include "../scan/chunk.h"
#include "deltanet.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#if defined(__GNUC__)
#define DN_INLINE static inline __attribute__((always_inline))
#else
#define DN_INLINE static inline
#endif

static const char FN[] = "seqk_deltanet";

enum {
    VB = 32,       /* state columns per recurrent work item */
    STRIP = 32,    /* columns per pass of the recurrent kernel (four ymm per row) */
    MIN_VW = 16,   /* narrowest column block of the split chunked driver */
    LOCAL_FLOATS = 128 * VB, /* a recurrent item of >= LOCAL_MIN_T tokens keeps its slice */
    LOCAL_MIN_T = 8,         /* contiguous on the stack when it fits (K <= 128) */
    PREFETCH_T = 4           /* the recurrent mode prefetches q, k, v this many tokens ahead */
};

/* The problem: the linear-state description (q, k, v, g, o, states, sizes,
 * flags: SEQK__LIN_L2NORM) plus beta [B*T, H]. */
typedef struct {
    seqk__lin lin;
    const float *beta;
} dn_problem;

static size_t rnd8(size_t n) { return (n + 7) / 8 * 8; }

/* ---- recurrent mode --------------------------------------------------------- */

/* q~ = scale q, k~ = k (both L2-normalised with SEQK__LIN_L2NORM) into qv, kv;
 * returns k~ . q~. */
static float token_qk(const seqk__lin *P, const float *q, const float *k, float *qv, float *kv)
{
    const int64_t K = P->K;
    float fq, fk;
    seqk__lin_qk_factors(P, q, k, &fq, &fk);
    float kq = 0.0f;
    int64_t i = 0;
#ifdef __AVX2__
    const __m256 vq = _mm256_set1_ps(fq), vk = _mm256_set1_ps(fk);
    __m256 acc = _mm256_setzero_ps();
    for (; i + 8 <= K; i += 8) {
        const __m256 x = _mm256_mul_ps(vq, _mm256_loadu_ps(q + i));
        const __m256 y = _mm256_mul_ps(vk, _mm256_loadu_ps(k + i));
        _mm256_storeu_ps(qv + i, x), _mm256_storeu_ps(kv + i, y);
        acc = _mm256_fmadd_ps(x, y, acc);
    }
    kq = seqk__hsum8(acc);
#endif
    for (; i < K; i++) {
        qv[i] = fq * q[i];
        kv[i] = fk * k[i];
        kq += kv[i] * qv[i];
    }
    return kq;
}

/*
 * One pass over a K x w strip of the state (w <= STRIP, rows ldS apart; AVX2
 * for w = 32 and 16):
 *   upd: row_i = ap row_i + kp_i dp      (dec: with the decay ap, else ap = 1)
 *   rd:  x = sum_i k_i row_i, y = sum_i q_i row_i   (after the update)
 * Called with constant upd / dec / rd so that each combination compiles to
 * its own loop.
 */
DN_INLINE void strip_pass(int64_t K, int64_t w, float *S, int64_t ldS, bool upd, bool dec,
                          float ap, const float *kp, const float *dp, bool rd, const float *k,
                          const float *q, float *x, float *y)
{
#ifdef __AVX2__
    if (w == 32) {
        const __m256 va = _mm256_set1_ps(ap);
        __m256 x0 = _mm256_setzero_ps(), x1 = x0, x2 = x0, x3 = x0, y0 = x0, y1 = x0, y2 = x0, y3 = x0;
        for (int64_t i = 0; i < K; i++) {
            float *row = S + i * ldS;
            __m256 r0 = _mm256_loadu_ps(row), r1 = _mm256_loadu_ps(row + 8);
            __m256 r2 = _mm256_loadu_ps(row + 16), r3 = _mm256_loadu_ps(row + 24);
            if (upd) {
                const __m256 kpi = _mm256_broadcast_ss(kp + i);
                if (dec) {
                    r0 = _mm256_mul_ps(va, r0), r1 = _mm256_mul_ps(va, r1);
                    r2 = _mm256_mul_ps(va, r2), r3 = _mm256_mul_ps(va, r3);
                }
                r0 = _mm256_fmadd_ps(kpi, _mm256_loadu_ps(dp), r0);
                r1 = _mm256_fmadd_ps(kpi, _mm256_loadu_ps(dp + 8), r1);
                r2 = _mm256_fmadd_ps(kpi, _mm256_loadu_ps(dp + 16), r2);
                r3 = _mm256_fmadd_ps(kpi, _mm256_loadu_ps(dp + 24), r3);
                _mm256_storeu_ps(row, r0), _mm256_storeu_ps(row + 8, r1);
                _mm256_storeu_ps(row + 16, r2), _mm256_storeu_ps(row + 24, r3);
            }
            if (rd) {
                const __m256 ki = _mm256_broadcast_ss(k + i), qi = _mm256_broadcast_ss(q + i);
                x0 = _mm256_fmadd_ps(ki, r0, x0), x1 = _mm256_fmadd_ps(ki, r1, x1);
                x2 = _mm256_fmadd_ps(ki, r2, x2), x3 = _mm256_fmadd_ps(ki, r3, x3);
                y0 = _mm256_fmadd_ps(qi, r0, y0), y1 = _mm256_fmadd_ps(qi, r1, y1);
                y2 = _mm256_fmadd_ps(qi, r2, y2), y3 = _mm256_fmadd_ps(qi, r3, y3);
            }
        }
        if (rd) {
            _mm256_storeu_ps(x, x0), _mm256_storeu_ps(x + 8, x1);
            _mm256_storeu_ps(x + 16, x2), _mm256_storeu_ps(x + 24, x3);
            _mm256_storeu_ps(y, y0), _mm256_storeu_ps(y + 8, y1);
            _mm256_storeu_ps(y + 16, y2), _mm256_storeu_ps(y + 24, y3);
        }
        return;
    }
    if (w == 16) {
        const __m256 va = _mm256_set1_ps(ap);
        __m256 d0 = _mm256_setzero_ps(), d1 = d0, x0 = d0, x1 = d0, y0 = d0, y1 = d0;
        if (upd) d0 = _mm256_loadu_ps(dp), d1 = _mm256_loadu_ps(dp + 8);
        for (int64_t i = 0; i < K; i++) {
            float *row = S + i * ldS;
            __m256 r0 = _mm256_loadu_ps(row), r1 = _mm256_loadu_ps(row + 8);
            if (upd) {
                const __m256 kpi = _mm256_set1_ps(kp[i]);
                if (dec) r0 = _mm256_mul_ps(va, r0), r1 = _mm256_mul_ps(va, r1);
                r0 = _mm256_fmadd_ps(kpi, d0, r0), r1 = _mm256_fmadd_ps(kpi, d1, r1);
                _mm256_storeu_ps(row, r0), _mm256_storeu_ps(row + 8, r1);
            }
            if (rd) {
                const __m256 ki = _mm256_set1_ps(k[i]), qi = _mm256_set1_ps(q[i]);
                x0 = _mm256_fmadd_ps(ki, r0, x0), x1 = _mm256_fmadd_ps(ki, r1, x1);
                y0 = _mm256_fmadd_ps(qi, r0, y0), y1 = _mm256_fmadd_ps(qi, r1, y1);
            }
        }
        if (rd) {
            _mm256_storeu_ps(x, x0), _mm256_storeu_ps(x + 8, x1);
            _mm256_storeu_ps(y, y0), _mm256_storeu_ps(y + 8, y1);
        }
        return;
    }
#endif
    if (rd)
        for (int64_t j = 0; j < w; j++) x[j] = y[j] = 0.0f;
    for (int64_t i = 0; i < K; i++) {
        float *row = S + i * ldS;
        for (int64_t j = 0; j < w; j++) {
            float r = row[j];
            if (upd) {
                r = (dec ? ap * r : r) + kp[i] * dp[j];
                row[j] = r;
            }
            if (rd) {
                x[j] += k[i] * r;
                y[j] += q[i] * r;
            }
        }
    }
}

/* strip_pass with the flags as compile-time constants. */
static void strip_dispatch(int64_t K, int64_t w, float *S, int64_t ldS, bool upd, bool dec,
                           float ap, const float *kp, const float *dp, bool rd, const float *k,
                           const float *q, float *x, float *y)
{
    if (upd && dec && rd) strip_pass(K, w, S, ldS, true, true, ap, kp, dp, true, k, q, x, y);
    else if (upd && !dec && rd) strip_pass(K, w, S, ldS, true, false, ap, kp, dp, true, k, q, x, y);
    else if (!upd && rd) strip_pass(K, w, S, ldS, false, false, ap, kp, dp, true, k, q, x, y);
    else if (upd && dec) strip_pass(K, w, S, ldS, true, true, ap, kp, dp, false, k, q, x, y);
    else if (upd) strip_pass(K, w, S, ldS, true, false, ap, kp, dp, false, k, q, x, y);
}

static size_t recurrent_workspace(const seqk__lin *P, int threads)
{
    if (P->s_out) return 0; /* the state lives in state_out */
    return (size_t)(P->K * VB) * (size_t)threads * sizeof(float);
}

/* One item: tokens of sequence n, head h, state columns [c0, c0 + width). */
static void recurrent_item(const dn_problem *D, int64_t n, int64_t h, int64_t c0, int64_t width,
                           float *slice)
{
    const seqk__lin *P = &D->lin;
    const int64_t H = P->H, K = P->K, V = P->V, KV = K * V;
    const bool dec = P->g != NULL;
    float qv[SEQK__LIN_MAX_K], kbuf[2][SEQK__LIN_MAX_K];
    float x[VB], y[VB], dp[VB];
    int64_t r0, len;
    seqk__lin_seq(P, n, &r0, &len);
    /* the K x width slice of the state and its row stride */
    float *S;
    int64_t ldS;
    const float *Sin = P->s_in ? P->s_in + (n * H + h) * KV + c0 : NULL;
    float *Sout = P->s_out ? P->s_out + (n * H + h) * KV + c0 : NULL;
    float loc[LOCAL_FLOATS];
    if (Sout && (len < LOCAL_MIN_T || K * width > LOCAL_FLOATS)) {
        S = Sout;
        ldS = V;
    } else if (Sout) {
        S = loc;
        ldS = width;
    } else {
        S = slice;
        ldS = width;
    }
    if (Sin != S)
        for (int64_t i = 0; i < K; i++) {
            if (Sin) memcpy(S + i * ldS, Sin + i * V, (size_t)width * sizeof(float));
            else memset(S + i * ldS, 0, (size_t)width * sizeof(float));
        }
    bool pending = false; /* an update (ap, kp, dp) not yet applied to S */
    float ap = 1.0f;
    const float *kp = NULL;
    for (int64_t t = 0; t < len; t++) {
        const int64_t r = r0 + t;
        float *kv = kbuf[t & 1];
        if (t + PREFETCH_T < len) { /* rows of later tokens sit in other pages: no hardware
                                       * prefetch; o's too (a store that misses stalls the pass) */
            const int64_t rp = (r + PREFETCH_T) * H + h;
            seqk__prefetch_floats(P->q + rp * K, K);
            seqk__prefetch_floats(P->k + rp * K, K);
            seqk__prefetch_floats(P->v + rp * V + c0, width);
            seqk__prefetch_rows(P->o + rp * V + c0, width, true);
        }
        const float kq = token_qk(P, P->q + (r * H + h) * K, P->k + (r * H + h) * K, qv, kv);
        const float a = dec ? expf(P->g[r * H + h]) : 1.0f;
        const float b = D->beta[r * H + h];
        const float *v = P->v + (r * H + h) * V + c0;
        float *o = P->o + (r * H + h) * V + c0;
        for (int64_t j0 = 0; j0 < width; j0 += STRIP) {
            const int64_t w = width - j0 < STRIP ? width - j0 : STRIP;
            strip_dispatch(K, w, S + j0, ldS, pending, dec, ap, kp, dp + j0, true, kv, qv, x + j0,
                           y + j0);
        }
        /* x = S_{t-1}^T k~, y = S_{t-1}^T q~ */
        for (int64_t j = 0; j < width; j++) {
            const float d = b * (v[j] - a * x[j]);
            o[j] = a * y[j] + kq * d;
            dp[j] = d;
        }
        pending = true, ap = a, kp = kv;
    }
    if (pending)
        for (int64_t j0 = 0; j0 < width; j0 += STRIP) {
            const int64_t w = width - j0 < STRIP ? width - j0 : STRIP;
            strip_dispatch(K, w, S + j0, ldS, true, dec, ap, kp, dp + j0, false, NULL, NULL, NULL,
                           NULL);
        }
    if (S == loc)
        for (int64_t i = 0; i < K; i++) memcpy(Sout + i * V, S + i * ldS, (size_t)width * sizeof(float));
}

static seqk_status deltanet_recurrent(seqk_context *ctx, const dn_problem *D)
{
    const seqk__lin *P = &D->lin;
    const int threads = seqk__threads(ctx);
    const size_t ws_bytes = recurrent_workspace(P, threads);
    float *ws = NULL;
    seqk_status st = seqk__workspace(FN, ctx, ws_bytes, (void **)&ws);
    if (st) return st;
    const int64_t H = P->H, nvb = (P->V + VB - 1) / VB;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int64_t item = 0; item < P->N * H * nvb; item++) {
        const int64_t n = item / (H * nvb), h = (item / nvb) % H, vb = item % nvb;
        const int64_t c0 = vb * VB, width = P->V - c0 < VB ? P->V - c0 : VB;
        float *slice = ws ? ws + (size_t)(P->K * VB) * (size_t)seqk__omp_thread() : NULL;
        recurrent_item(D, n, h, c0, width, slice);
    }
    return SEQK_SUCCESS;
}

/* ---- parallel (chunked) mode ---------------------------------------------------- */

/* Per-thread scratch: the chunk stages' scratch, then beta [L], T [L,L], U [L,V],
 * W [L,K] and the packing of this file's products. */
typedef struct {
    seqk__chunk_scratch cs;
    float *beta, *Tm, *U, *W, *pack;
} dn_scratch;

static size_t dn_pack_floats(int64_t L, int64_t K, int64_t V)
{
    size_t m = seqk__sgemm_pack_floats(L, L, K), x;
    if ((x = seqk__sgemm_pack_floats(L, V, L)) > m) m = x;
    if ((x = seqk__sgemm_pack_floats(L, K, L)) > m) m = x;
    if ((x = seqk__sgemm_pack_floats(L, V, K)) > m) m = x;
    return m;
}

static size_t dn_scratch_floats(int64_t L, int64_t K, int64_t V)
{
    const size_t l = (size_t)L, k = (size_t)K, v = (size_t)V;
    return rnd8(seqk__chunk_scratch_floats(L, K, V)) + rnd8(l) + rnd8(l * l) + rnd8(l * v) +
           rnd8(l * k) + rnd8(dn_pack_floats(L, K, V));
}

static void dn_scratch_init(dn_scratch *w, float *base, int64_t L, int64_t K, int64_t V)
{
    const size_t l = (size_t)L, k = (size_t)K, v = (size_t)V;
    seqk__chunk_scratch_init(&w->cs, base, L, K, V);
    float *p = base + rnd8(seqk__chunk_scratch_floats(L, K, V));
    w->beta = p, p += rnd8(l);
    w->Tm = p, p += rnd8(l * l);
    w->U = p, p += rnd8(l * v);
    w->W = p, p += rnd8(l * k);
    w->pack = p;
}

/* Tm (holding K~ K~^T on entry) -> T = (I + A)^-1 with
 * A_ij = beta_i (K~ K~^T)_ij exp(G_i - G_j) for j < i (0 elsewhere), lower
 * unit triangular, zero above the diagonal. Row by row:
 * T_i = e_i - sum_{j<i} A_ij T_j, where T_j is nonzero in columns <= j only.
 * (Also the backward's, ssm/deltanet_backward.c.) */
void seqk__dn_forward_substitution(float *Tm, int64_t L, const float *beta, const float *G,
                                   const float *Gl, float *arow)
{
    for (int64_t i = 0; i < L; i++) {
        float *ti = Tm + i * L;
        /* arow = A_i. (j < i): never exponentiate above the diagonal */
        int64_t j = 0;
        const float bi = beta[i];
        if (G) {
#ifdef __AVX2__
            const __m256 vg = _mm256_set1_ps(G[i]), vgl = _mm256_set1_ps(Gl[i]);
            const __m256 vb = _mm256_set1_ps(bi);
            for (; j + 8 <= i; j += 8) { /* seqk__exp_gates, multiplied in */
                const __m256 d = seqk__exp8_2(_mm256_sub_ps(vg, _mm256_loadu_ps(G + j)),
                                              _mm256_sub_ps(vgl, _mm256_loadu_ps(Gl + j)));
                _mm256_storeu_ps(arow + j, _mm256_mul_ps(_mm256_mul_ps(vb, _mm256_loadu_ps(ti + j)), d));
            }
#endif
            if (j < i) { /* the last i - j < 8 */
                float e[8];
                seqk__exp_gates(G + j, Gl + j, i - j, G[i], Gl[i], -1.0f, e);
                for (int64_t t = 0; j < i; j++, t++) arow[j] = bi * ti[j] * e[t];
            }
        } else {
            for (; j < i; j++) arow[j] = bi * ti[j];
        }
        /* T_i = e_i - sum_{j<i} arow_j T_j. T_j is 0 in columns > j, so a
         * block of columns [c0, c0 + w) takes rows j in [c0, i) only, and
         * the sum is exactly 0 from column i on; accumulated in registers,
         * four vectors of a row at a time. */
        int64_t c0 = 0;
#ifdef __AVX2__
        for (; c0 + 32 <= L; c0 += 32) {
            __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
            for (j = c0; j < i; j++) {
                const __m256 x = _mm256_set1_ps(arow[j]);
                const float *tj = Tm + j * L + c0;
                s0 = _mm256_fnmadd_ps(x, _mm256_loadu_ps(tj), s0);
                s1 = _mm256_fnmadd_ps(x, _mm256_loadu_ps(tj + 8), s1);
                s2 = _mm256_fnmadd_ps(x, _mm256_loadu_ps(tj + 16), s2);
                s3 = _mm256_fnmadd_ps(x, _mm256_loadu_ps(tj + 24), s3);
            }
            _mm256_storeu_ps(ti + c0, s0), _mm256_storeu_ps(ti + c0 + 8, s1);
            _mm256_storeu_ps(ti + c0 + 16, s2), _mm256_storeu_ps(ti + c0 + 24, s3);
        }
        for (; c0 + 8 <= L; c0 += 8) {
            __m256 s0 = _mm256_setzero_ps();
            for (j = c0; j < i; j++)
                s0 = _mm256_fnmadd_ps(_mm256_set1_ps(arow[j]), _mm256_loadu_ps(Tm + j * L + c0), s0);
            _mm256_storeu_ps(ti + c0, s0);
        }
#endif
        for (int64_t c = c0; c < L; c++) {
            float sc = 0.0f;
            for (j = c; j < i; j++) sc -= arow[j] * Tm[j * L + c];
            ti[c] = sc;
        }
        ti[i] = 1.0f;
    }
}

/* For the loaded chunk cv (tokens [r0, r0 + L) of head h): U [L,V] (rows ldu
 * apart) = T diag(beta) V and W [L,K] = T diag(beta exp(G)) K~. Uses w->beta,
 * w->Tm, w->pack (and w->cs.den as a row buffer). Neither depends on S0. */
static void chunk_uw(const dn_problem *D, const seqk__chunk_view *cv, int64_t r0, int64_t h,
                     dn_scratch *w, float *U, int64_t ldu, float *W)
{
    const seqk__lin *P = &D->lin;
    const int64_t L = cv->L, K = P->K, V = P->V;
    for (int64_t i = 0; i < L; i++) w->beta[i] = D->beta[(r0 + i) * P->H + h];
    /* Tm = K~ K~^T, then T */
    seqk__sgemm_causal(SEQK__GEMM_LOWER_C, false, true, L, L, K, 1.0f, cv->Kc, K, cv->Kc, K, 0.0f,
                       w->Tm, L, w->pack); /* the substitution reads j < i only */
    seqk__dn_forward_substitution(w->Tm, L, w->beta, cv->G, cv->Gl, w->cs.den);
    /* T diag(beta): scale column j by beta_j (T is zero above the diagonal) */
    for (int64_t i = 0; i < L; i++)
        for (int64_t j = 0; j <= i; j++) w->Tm[i * L + j] *= w->beta[j];
    /* U = (T diag(beta)) V, straight from the input rows */
    seqk__sgemm_causal(SEQK__GEMM_LOWER_A, false, false, L, V, L, 1.0f, w->Tm, L, cv->Vv, cv->ldv,
                       0.0f, U, ldu, w->pack);
    /* W = (T diag(beta) diag(exp(G))) K~; exp(G_j) <= 1 for g <= 0 */
    if (cv->G) {
        float *eg = w->cs.den;
        seqk__exp_gates(cv->G, cv->Gl, L, 0.0f, 0.0f, 1.0f, eg);
        for (int64_t i = 0; i < L; i++)
            for (int64_t j = 0; j <= i; j++) w->Tm[i * L + j] *= eg[j];
    }
    seqk__sgemm_causal(SEQK__GEMM_LOWER_A, false, false, L, K, L, 1.0f, w->Tm, L, cv->Kc, K, 0.0f, W,
                       K, w->pack);
}

/* The S0-dependent part of a chunk on the state columns [v0, v0 + vw): Sb is
 * the K x vw slice of S0 (contiguous, rows vw apart; s_zero: S0 = 0, Sb holds
 * zeros), U the chunk's U (rows ldu apart, already offset to column v0),
 * overwritten by Vnew; W the chunk's W. Writes o and leaves S_next in Sb. */
static void chunk_apply(const dn_problem *D, const seqk__chunk_view *cv, int64_t r0, int64_t h,
                        int64_t v0, int64_t vw, float *U, int64_t ldu, const float *W, float *Sb,
                        bool s_zero, dn_scratch *w)
{
    const seqk__lin *P = &D->lin;
    const int64_t L = cv->L, K = P->K, H = P->H, V = P->V;
    /* Vnew = U - W S0 */
    if (!s_zero) seqk__sgemm(false, false, L, vw, K, -1.0f, W, K, Sb, vw, 1.0f, U, ldu, w->pack);
    /* O = diag(exp(G)) Q~ S0 + ((Q~ K~^T) .* Gamma) Vnew */
    seqk__chunk_output(cv, K, vw, 0, U, ldu, s_zero ? NULL : Sb, P->o + (r0 * H + h) * V + v0,
                       H * V, &w->cs);
    /* S_next = exp(G_L) S0 + Kd^T Vnew */
    seqk__chunk_local_state(cv, K, vw, false, U, ldu, w->cs.U, w->cs.pack);
    const int64_t E = K * vw;
    if (s_zero) {
        memcpy(Sb, w->cs.U, (size_t)E * sizeof(float));
    } else {
        const float a = cv->a;
        int64_t e = 0;
#ifdef __AVX2__
        const __m256 va = _mm256_set1_ps(a);
        for (; e + 8 <= E; e += 8)
            _mm256_storeu_ps(Sb + e, _mm256_fmadd_ps(va, _mm256_loadu_ps(Sb + e),
                                                     _mm256_loadu_ps(w->cs.U + e)));
#endif
        for (; e < E; e++) Sb[e] = a * Sb[e] + w->cs.U[e];
    }
}

/* The K x vw slice [v0, v0 + vw) of the initial state of (n, h) into Sb
 * (rows vw apart; zeros without state_in), and back into state_out. */
static void load_slice(const seqk__lin *P, int64_t n, int64_t h, int64_t v0, int64_t vw, float *Sb)
{
    const int64_t K = P->K, V = P->V;
    const float *src = P->s_in ? P->s_in + (n * P->H + h) * K * V + v0 : NULL;
    for (int64_t i = 0; i < K; i++) {
        if (src) memcpy(Sb + i * vw, src + i * V, (size_t)vw * sizeof(float));
        else memset(Sb + i * vw, 0, (size_t)vw * sizeof(float));
    }
}

static void store_slice(const seqk__lin *P, int64_t n, int64_t h, int64_t v0, int64_t vw,
                        const float *Sb)
{
    if (!P->s_out) return;
    const int64_t K = P->K, V = P->V;
    float *dst = P->s_out + (n * P->H + h) * K * V + v0;
    for (int64_t i = 0; i < K; i++) memcpy(dst + i * V, Sb + i * vw, (size_t)vw * sizeof(float));
}

/* Fused driver: one (sequence, group of heads h0 .. h0+nh-1), all V columns,
 * chunks in order and within a chunk the heads in order (their rows share
 * pages: seqk__lin_head_group), head h's state in states[h - h0] (K V floats
 * each). */
static void run_fused(const dn_problem *D, int64_t n, int64_t h0, int64_t nh, dn_scratch *w,
                      float *states)
{
    const seqk__lin *P = &D->lin;
    const int64_t Lc = P->chunk, V = P->V, KV = P->K * P->V;
    int64_t r0, len;
    seqk__lin_seq(P, n, &r0, &len);
    for (int64_t h = h0; h < h0 + nh; h++) load_slice(P, n, h, 0, V, states + (h - h0) * KV);
    seqk__chunk_fetch f;
    seqk__chunk_fetch_begin(&f);
    for (int64_t c0 = 0; c0 < len; c0 += Lc) {
        const int64_t L = len - c0 < Lc ? len - c0 : Lc;
        /* the next chunk's rows (o's for writing) while this one computes */
        const int64_t next = len - c0 - L < Lc ? len - c0 - L : Lc;
        seqk__chunk_fetch_step(&f, P, NULL, SEQK__FETCH_Q | SEQK__FETCH_K | SEQK__FETCH_V |
                                                SEQK__FETCH_O,
                               0, r0 + c0 + L, next, h0, nh);
        for (int64_t h = h0; h < h0 + nh; h++) {
            seqk__chunk_view cv;
            seqk__chunk_load(P, r0 + c0, L, h, &w->cs, &cv);
            chunk_uw(D, &cv, r0 + c0, h, w, w->U, V, w->W);
            chunk_apply(D, &cv, r0 + c0, h, 0, V, w->U, V, w->W, states + (h - h0) * KV,
                        c0 == 0 && P->s_in == NULL, w);
        }
    }
    seqk__chunk_fetch_end(&f);
    for (int64_t h = h0; h < h0 + nh; h++) store_slice(P, n, h, 0, V, states + (h - h0) * KV);
}

/* Floats of the split driver's per-chunk U [L,V] and W [L,K]. */
static size_t uw_floats(const seqk__lin *P) { return rnd8((size_t)(P->chunk * (P->K + P->V))); }

/* The split driver walks windows of chunks whose U and W take about this
 * many bytes per thread (at least a chunk per thread), so that stage 2
 * finds what stage 1 wrote still in cache (as the linear-state engine's
 * staged driver, scan/chunk.c). */
#ifndef SEQK__DN_FWD_WINDOW_BYTES
#define SEQK__DN_FWD_WINDOW_BYTES ((size_t)512 << 10)
#endif

typedef struct {
    int64_t nchunks; /* chunks of all sequences */
    seqk__chunk_windows win; /* split: its windows of chunks */
    int64_t nvb, vw; /* column blocks of the split driver and their width */
    int64_t hg;      /* heads per item of the fused driver */
    bool split;
    size_t scratch;  /* floats per thread (the fused driver: then its hg states) */
} dn_plan;

/* The split driver runs when there are fewer (sequence, head) pairs than
 * threads (and columns enough to split); P->N is the number of sequences. */
static bool use_split(const seqk__lin *P, int threads)
{
    return threads > 1 && P->N * P->H < threads && P->V >= 2 * MIN_VW;
}

/* Floats of one thread's scratch: the chunk's, then (fused driver) the
 * states of a head group. */
static size_t thread_floats(const seqk__lin *P, int threads, int64_t hg)
{
    return rnd8(dn_scratch_floats(P->chunk, P->K, P->V)) +
           (use_split(P, threads) ? 0 : rnd8((size_t)(hg * P->K * P->V)));
}

static dn_plan make_plan(const seqk__lin *P, int threads)
{
    dn_plan pl;
    pl.nchunks = 0;
    for (int64_t n = 0; n < P->N; n++) {
        int64_t r0, len;
        seqk__lin_seq(P, n, &r0, &len);
        pl.nchunks += (len + P->chunk - 1) / P->chunk;
    }
    pl.split = use_split(P, threads);
    pl.nvb = 1, pl.vw = P->V;
    pl.hg = pl.split ? 1 : seqk__lin_head_group(P, threads, 1);
    pl.scratch = thread_floats(P, threads, pl.hg);
    if (pl.split) {
        int64_t nvb = (threads + P->N * P->H - 1) / (P->N * P->H);
        int64_t vw = (P->V + nvb - 1) / nvb;
        vw = (vw + MIN_VW - 1) / MIN_VW * MIN_VW; /* whole sgemm panels */
        pl.vw = vw;
        pl.nvb = (P->V + vw - 1) / vw;
    }
    /* windows: as many chunks as keep U and W within the bytes per thread,
     * at least one per thread; P->stage_bytes, when set, is the window's
     * bytes instead (the tests') */
    pl.win = seqk__chunk_windows_plan(
        pl.nchunks, P->stage_bytes ? P->stage_bytes : (size_t)threads * SEQK__DN_FWD_WINDOW_BYTES,
        (size_t)P->H * uw_floats(P) * sizeof(float),
        P->stage_bytes ? 1 : (threads + P->H - 1) / P->H);
    return pl;
}

/* The split driver's shared arrays: U and W of a window's chunks
 * [min(nchunks, fit), H], the state slices [N, H, nvb, K vw], first [N+1]. */
static size_t split_floats(const seqk__lin *P, const dn_plan *pl)
{
    const size_t w = (size_t)(pl->nchunks < pl->win.fit ? pl->nchunks : pl->win.fit);
    return w * (size_t)P->H * uw_floats(P) +
           rnd8((size_t)(P->N * P->H * pl->nvb) * (size_t)(P->K * pl->vw)) +
           rnd8((size_t)(P->N + 1) * 2);
}

static size_t chunked_workspace(const seqk__lin *P, int threads)
{
    const dn_plan pl = make_plan(P, threads);
    size_t floats = pl.scratch * (size_t)threads;
    if (pl.split) floats += split_floats(P, &pl);
    return floats * sizeof(float);
}

static seqk_status deltanet_chunked(seqk_context *ctx, const dn_problem *D)
{
    const seqk__lin *P = &D->lin;
    const int threads = seqk__threads(ctx);
    const dn_plan pl = make_plan(P, threads);
    float *ws = NULL;
    seqk_status st = seqk__workspace(FN, ctx, chunked_workspace(P, threads), (void **)&ws);
    if (st) return st;
    const int64_t H = P->H, Lc = P->chunk, K = P->K, V = P->V;

    if (!pl.split) {
#pragma omp parallel num_threads(threads)
        {
            dn_scratch w;
            float *mine = ws + pl.scratch * (size_t)seqk__omp_thread();
            dn_scratch_init(&w, mine, Lc, K, V);
            float *states = mine + rnd8(dn_scratch_floats(Lc, K, V));
            const int64_t ng = (H + pl.hg - 1) / pl.hg; /* head groups */
#pragma omp for schedule(dynamic, 1)
            for (int64_t item = 0; item < P->N * ng; item++) {
                const int64_t n = item / ng, h0 = item % ng * pl.hg;
                run_fused(D, n, h0, H - h0 < pl.hg ? H - h0 : pl.hg, &w, states);
            }
        }
        return SEQK_SUCCESS;
    }

    /* split: chunk c of sequence n has global index first[n] + c; windows of
     * wch chunks [c0, c1) in order, each through both stages, U and W of its
     * chunks in uw, each (sequence, head, column block)'s state slice kept
     * in slices from one window to the next */
    const size_t per = uw_floats(P);
    const size_t wmax = (size_t)(pl.nchunks < pl.win.fit ? pl.nchunks : pl.win.fit);
    const size_t slice = (size_t)(K * pl.vw);
    float *uw = ws + pl.scratch * (size_t)threads; /* [wch, H]: U [L,V] then W [L,K] */
    float *slices = uw + wmax * (size_t)H * per;  /* [N, H, nvb]: K x vw */
    int64_t *first = (int64_t *)(slices + rnd8((size_t)(P->N * H * pl.nvb) * slice)); /* [N+1] */
    first[0] = 0;
    for (int64_t n = 0; n < P->N; n++) {
        int64_t r0, len;
        seqk__lin_seq(P, n, &r0, &len);
        first[n + 1] = first[n] + (len + Lc - 1) / Lc;
    }
#pragma omp parallel num_threads(threads)
    {
        dn_scratch w;
        dn_scratch_init(&w, ws + pl.scratch * (size_t)seqk__omp_thread(), Lc, K, V);
        const int64_t wch = pl.win.wch, nwin = pl.win.nwin;
        for (int64_t iw = 0; iw < nwin; iw++) {
            const int64_t c0 = iw * wch, c1 = c0 + wch < pl.nchunks ? c0 + wch : pl.nchunks;
            const int64_t i0 = c0 * H;
            /* (1) U and W of every chunk */
#pragma omp for schedule(dynamic, 1)
            for (int64_t ch = i0; ch < c1 * H; ch++) {
                const int64_t c = ch / H, h = ch % H, n = seqk__chunk_seq(first, P->N, c);
                int64_t r0, len;
                seqk__lin_seq(P, n, &r0, &len);
                const int64_t t0 = (c - first[n]) * Lc, L = len - t0 < Lc ? len - t0 : Lc;
                seqk__chunk_view cv;
                seqk__chunk_load(P, r0 + t0, L, h, &w.cs, &cv);
                float *U = uw + (size_t)(ch - i0) * per;
                chunk_uw(D, &cv, r0 + t0, h, &w, U, V, U + L * V);
            }
            /* (2) per (sequence, head, column block): its chunks of the
             * window in order (an empty sequence's state_out in the last) */
#pragma omp for schedule(dynamic, 1)
            for (int64_t item = 0; item < P->N * H * pl.nvb; item++) {
                const int64_t n = item / (H * pl.nvb), h = (item / pl.nvb) % H, vb = item % pl.nvb;
                const int64_t v0 = vb * pl.vw, vw = V - v0 < pl.vw ? V - v0 : pl.vw;
                const int64_t s0 = first[n] > c0 ? first[n] : c0;
                const int64_t s1 = first[n + 1] < c1 ? first[n + 1] : c1;
                float *Sb = slices + (size_t)item * slice;
                if (first[n] == first[n + 1]) {
                    if (iw == nwin - 1) {
                        load_slice(P, n, h, v0, vw, Sb);
                        store_slice(P, n, h, v0, vw, Sb);
                    }
                    continue;
                }
                if (s1 <= s0) continue;
                int64_t r0, len;
                seqk__lin_seq(P, n, &r0, &len);
                if (s0 == first[n]) load_slice(P, n, h, v0, vw, Sb);
                for (int64_t c = s0; c < s1; c++) {
                    const int64_t t0 = (c - first[n]) * Lc, L = len - t0 < Lc ? len - t0 : Lc;
                    seqk__chunk_view cv;
                    seqk__chunk_load(P, r0 + t0, L, h, &w.cs, &cv);
                    float *U = uw + (size_t)(c * H + h - i0) * per;
                    chunk_apply(D, &cv, r0 + t0, h, v0, vw, U + v0, V, U + L * V, Sb,
                                c == first[n] && P->s_in == NULL, &w);
                }
                if (s1 == first[n + 1]) store_slice(P, n, h, v0, vw, Sb);
            }
        }
    }
    return SEQK_SUCCESS;
}

/* ---- validation and dispatch ------------------------------------------------------ */

static const unsigned KNOWN_FLAGS = SEQK_DELTANET_L2NORM_QK | SEQK_DELTANET_ALLOW_NEG_EIGVAL;

static size_t fbytes(int64_t rows, int64_t width) { return (size_t)(rows * width) * sizeof(float); }

/* beta[i] in [0, 1] ([0, 2] with SEQK_DELTANET_ALLOW_NEG_EIGVAL), host memory;
 * messages name fn (also the backward's check, ssm/deltanet.h). */
void seqk__dn_lin(seqk__lin *P, int64_t B, int64_t T, int64_t H, int64_t K, int64_t V,
                  int64_t N, int64_t chunk, const int32_t *cu_host, float scale, unsigned flags,
                  const float *q, const float *k, const float *v, const float *g,
                  const float *s_in)
{
    P->B = B, P->T = T, P->H = H, P->Hqk = H, P->K = K, P->V = V, P->N = N;
    P->chunk = chunk;
    P->cu = cu_host;
    P->scale = scale;
    P->flags = (flags & SEQK_DELTANET_L2NORM_QK) ? SEQK__LIN_L2NORM : 0u;
    P->q = q, P->k = k, P->v = v, P->g = g, P->s_in = s_in;
}

seqk_status seqk__dn_check_beta(const char *fn, const float *beta, int64_t n, unsigned flags)
{
    if (flags & SEQK_DELTANET_ALLOW_NEG_EIGVAL)
        return seqk__check_values(fn, "beta", beta, n, 0.0f, 2.0f,
                                  "in [0, 2] (SEQK_DELTANET_ALLOW_NEG_EIGVAL is set)");
    return seqk__check_values(fn, "beta", beta, n, 0.0f, 1.0f,
                              "in [0, 1] (SEQK_DELTANET_ALLOW_NEG_EIGVAL allows [0, 2])");
}

/* SEQK__DN_NATIVE 1 routes seqk_deltanet_ex's bf16 / f16 parallel mode on a
 * CUDA context to gpu/deltanet.cu's native path (issue #21 phase 3; seqk.h,
 * "Native DeltaNet"); 0 keeps the converting path there (a build switch for
 * comparisons; tests/test_dtype.c counts DeltaNet's parallel forward on
 * CUDA as native). */
#ifndef SEQK__DN_NATIVE
#define SEQK__DN_NATIVE 1
#endif

/* Whether seqk_deltanet_ex runs natively in dtype (gpu/deltanet.cu's native
 * path: a CUDA context, bf16 / f16, the parallel mode; seqk.h, "Dtypes")
 * rather than through the converting path. */
static bool deltanet_native(const seqk_context *ctx, seqk_dtype dtype, seqk_mode mode)
{
    return SEQK__DN_NATIVE && seqk__lin_native(ctx, dtype, (int)mode, 0u);
}

/* The forward in fp32, or natively in a reduced dtype (deltanet_native): q,
 * k, v, o hold elements of dtype (their sizes and overlaps are measured in
 * its bytes). */
static seqk_status deltanet_run(seqk_context *ctx, seqk_dtype dtype, seqk_mode mode, int64_t B,
                                int64_t T, int64_t H, int64_t K, int64_t V, float scale,
                                unsigned flags, const void *q, const void *k, const void *v,
                                const float *beta, const float *g, void *o,
                                const float *state_in, float *state_out,
                                const int32_t *cu_seqlens, int64_t N, int64_t chunk)
{
    const bool varlen = cu_seqlens != NULL;
    seqk_status st = seqk__lin_check_sizes(FN, ctx, (int)mode, B, T, H, K, V, N, varlen, chunk);
    if (st) return st;
    if ((st = seqk__check_flags(FN, flags, KNOWN_FLAGS))) return st;
    if ((st = seqk__check_scale(FN, scale))) return st;
    if (!varlen) N = B;
    const int64_t rows = B * T;
    const size_t es = seqk_dtype_size(dtype); /* q, k, v, o */
    const size_t ob = (size_t)(rows * H * V) * es, qb = (size_t)(rows * H * K) * es;
    if (rows > 0) {
        const struct { const void *p; const char *name; } req[] = {
            {q, "q"}, {k, "k"}, {v, "v"}, {beta, "beta"}, {o, "o"}};
        for (size_t i = 0; i < sizeof req / sizeof req[0]; i++)
            if ((st = seqk__check_ptr(FN, req[i].name, req[i].p))) return st;
        const struct { const void *p; size_t bytes; const char *name; } in[] = {
            {q, qb, "q"}, {k, qb, "k"}, {v, ob, "v"},
            {beta, fbytes(rows, H), "beta"}, {g, fbytes(rows, H), "g"}};
        for (size_t i = 0; i < sizeof in / sizeof in[0]; i++)
            if (in[i].p && seqk__overlap(o, ob, in[i].p, in[i].bytes))
                return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: o=%p overlaps %s=%p", FN,
                                  (void *)o, in[i].name, in[i].p);
    }
    const size_t sb = fbytes(N * H, K * V);
    if ((st = seqk__check_state_io(FN, state_in, state_out, sb, "o", o, ob)))
        return st;
    if ((st = seqk__check_backend_built(FN, ctx))) return st;
    int32_t *cu_host = NULL;
    if (varlen) {
        if ((st = seqk__copy_cu_seqlens(FN, ctx, cu_seqlens, N, B, T, &cu_host))) return st;
    }
    /* the gates' values: read on the CPU; not checked on CUDA (see seqk.h) */
    if (ctx->backend == SEQK_BACKEND_CPU && rows > 0 &&
        ((st = seqk__dn_check_beta(FN, beta, rows * H, flags)) ||
         (g && (st = seqk__check_log_gates(FN, "g", g, rows * H))))) {
        free(cu_host);
        return st;
    }
    dn_problem D;
    memset(&D, 0, sizeof D);
    seqk__lin *P = &D.lin;
    const int64_t L = seqk__lin_chunk(ctx->backend, SEQK_CHUNKED_DELTANET, chunk, K, V);
    seqk__dn_lin(P, B, T, H, K, V, N, L, cu_host, scale, flags, (const float *)q,
                 (const float *)k, (const float *)v, g, state_in);
    P->o = (float *)o, P->s_out = state_out;
    P->dtype = dtype;
    D.beta = beta;
    if (dtype != SEQK_DTYPE_F32 && !deltanet_native(ctx, dtype, mode)) {
        st = seqk__fail(SEQK_ERROR_INTERNAL, "%s: %s outside the native path", FN,
                        seqk_dtype_string(dtype));
    } else if (ctx->backend == SEQK_BACKEND_CPU) {
        st = mode == SEQK_MODE_RECURRENT ? deltanet_recurrent(ctx, &D) : deltanet_chunked(ctx, &D);
    } else {
#if SEQK__HAVE_CUDA
        st = seqk__cuda_deltanet(ctx, (int)mode, P, beta, cu_seqlens);
#else
        st = SEQK_ERROR_INTERNAL;
#endif
    }
    free(cu_host);
    return st;
}

seqk_status seqk_deltanet_workspace_size(seqk_context *ctx, seqk_mode mode, int64_t B, int64_t T,
                                         int64_t H, int64_t K, int64_t V, int64_t N,
                                         int64_t chunk, size_t *bytes)
{
    static const char fn[] = "seqk_deltanet_workspace_size";
    seqk_status st = seqk__lin_check_sizes(fn, ctx, (int)mode, B, T, H, K, V, N, N > 0, chunk);
    if (!st) st = seqk__check_ptr(fn, "bytes", bytes);
    if (st) return st;
    seqk__lin P;
    memset(&P, 0, sizeof P);
    P.B = B, P.T = T, P.H = H, P.Hqk = H, P.K = K, P.V = V, P.N = N > 0 ? N : B;
    P.chunk = seqk__lin_chunk(ctx->backend, SEQK_CHUNKED_DELTANET, chunk, K, V);
#if SEQK__HAVE_CUDA
    if (ctx->backend == SEQK_BACKEND_CUDA) {
        *bytes = seqk__cuda_deltanet_workspace(&P, (int)mode) + 256;
        return SEQK_SUCCESS;
    }
#endif
    const int threads = seqk__threads(ctx);
    size_t w;
    if (mode == SEQK_MODE_RECURRENT) {
        w = recurrent_workspace(&P, threads); /* the bound: state_out absent */
    } else {
        /* per-thread scratch, plus the split driver's arrays whenever it may
         * run, for as many chunks as there can be (varlen: at most one
         * partial chunk per sequence more than T / chunk; the arrays grow
         * with the chunks up to a window's) */
        dn_plan pl = make_plan(&P, threads);
        pl.nchunks = N > 0 ? (T + P.chunk - 1) / P.chunk + N : B * ((T + P.chunk - 1) / P.chunk);
        w = pl.scratch * (size_t)threads;
        if (pl.split) w += split_floats(&P, &pl);
        w *= sizeof(float);
    }
    *bytes = w + 256;
    return SEQK_SUCCESS;
}

/* ---- dtypes (seqk.h, "Dtypes"): the _ex entry points ---------------------- */

seqk_status seqk_deltanet_ex(seqk_context *ctx, seqk_dtype dtype, seqk_mode mode, int64_t B,
                             int64_t T, int64_t H, int64_t K, int64_t V, float scale,
                             unsigned flags, const void *q, const void *k, const void *v,
                             const float *beta, const float *g, void *o, const float *state_in,
                             float *state_out, const int32_t *cu_seqlens, int64_t N, int64_t chunk)
{
    if (dtype == SEQK_DTYPE_F32 || deltanet_native(ctx, dtype, mode))
        return deltanet_run(ctx, dtype, mode, B, T, H, K, V, scale, flags, q, k, v, beta, g, o,
                            state_in, state_out, cu_seqlens, N, chunk);
    const int64_t nk = seqk__dt_numel(B, T, H, K), nv = seqk__dt_numel(B, T, H, V);
    seqk__dt_tensor t[] = {
        {"q", q, nk, SEQK__DT_IN, 0, NULL},
        {"k", k, nk, SEQK__DT_IN, 0, NULL},
        {"v", v, nv, SEQK__DT_IN, 0, NULL},
        {"o", o, nv, SEQK__DT_OUT, 0, NULL}};
    size_t ws = 0;
    const seqk_status qs =
        seqk_deltanet_workspace_size(ctx, mode, B, T, H, K, V, cu_seqlens ? N : 0, chunk, &ws);
    seqk__dt_call c;
    seqk_status st = seqk__dt_begin(&c, "seqk_deltanet_ex", ctx, dtype, t, 4,
                                    seqk__dt_ws(qs, ws));
    if (st) return st;
    st = deltanet_run(ctx, SEQK_DTYPE_F32, mode, B, T, H, K, V, scale, flags, t[0].f, t[1].f,
                      t[2].f, beta, g, t[3].f, state_in, state_out, cu_seqlens, N, chunk);
    return seqk__dt_end(&c, st);
}

seqk_status seqk_deltanet(seqk_context *ctx, seqk_mode mode, int64_t B, int64_t T, int64_t H,
                          int64_t K, int64_t V, float scale, unsigned flags, const float *q,
                          const float *k, const float *v, const float *beta, const float *g,
                          float *o, const float *state_in, float *state_out,
                          const int32_t *cu_seqlens, int64_t N, int64_t chunk)
{
    return seqk_deltanet_ex(ctx, SEQK_DTYPE_F32, mode, B, T, H, K, V, scale, flags, q, k, v,
                            beta, g, o, state_in, state_out, cu_seqlens, N, chunk);
}

seqk_status seqk_deltanet_workspace_size_ex(seqk_context *ctx, seqk_dtype dtype, seqk_mode mode,
                                            int64_t B, int64_t T, int64_t H, int64_t K, int64_t V,
                                            int64_t N, int64_t chunk, size_t *bytes)
{
    static const char fn[] = "seqk_deltanet_workspace_size_ex";
    seqk_status st = seqk__dt_check(fn, dtype);
    if (!st) st = seqk_deltanet_workspace_size(ctx, mode, B, T, H, K, V, N, chunk, bytes);
    if (st) return st;
    const int64_t nk = seqk__dt_numel(B, T, H, K), nv = seqk__dt_numel(B, T, H, V);
    const int64_t n[] = {nk, nk, nv, nv};
    if ((st = seqk__dt_workspace_size(fn, dtype, n, 4, bytes))) return st;
#if SEQK__HAVE_CUDA
    if (deltanet_native(ctx, dtype, mode)) {
        /* the native path (gpu/deltanet.cu) takes no copies: its own bytes,
         * or the converting path's answer if larger (an upper bound) */
        seqk__lin P;
        memset(&P, 0, sizeof P);
        P.B = B, P.T = T, P.H = H, P.Hqk = H, P.K = K, P.V = V, P.N = N > 0 ? N : B;
        P.chunk = seqk__lin_chunk(ctx->backend, SEQK_CHUNKED_DELTANET, chunk, K, V);
        P.dtype = dtype;
        const size_t native = seqk__cuda_deltanet_workspace(&P, (int)mode) + 256;
        if (native > *bytes) *bytes = native;
    }
#endif
    return SEQK_SUCCESS;
}
