/*
 * scan/linear_recurrent.c -- the recurrent mode of the linear-state engine
 * (DESIGN 3.1), CPU: token by token,
 *
 *   S_t = a_t S_{t-1} + phi(k_t) v_t^T          (K x V)
 *   o_t = S_t^T (scale phi(q_t))                 (V)
 *   normaliser: z_t = a_t z_{t-1} + phi(k_t),  o_t /= scale phi(q_t) . z_t + eps
 *
 * Columns of S are independent, so the work items are (sequence, head,
 * block of VB state columns); one item walks its tokens with its K x VB slice
 * of the state in L1, and the update and the output are one pass over the
 * slice's rows: row_i = a row_i + k_i v ; o += q_i row_i.
 *
 * The state is updated in place in s_out when given (after copying s_in
 * there), so a decode step with s_in == s_out touches nothing else and
 * allocates nothing. Without s_out the slice lives in the workspace.
 */
#include "linear_state.h"

#include "../core/vmath.h"

#include <string.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

enum { VB = 32, /* state columns per work item */
       PF = 4 /* tokens ahead to prefetch */ };

/* A decay is applied to the state lazily: the item keeps S = c S' and
 * updates S' += (k / c) v^T, o = c S'^T q, which saves a multiply per state
 * element and token; c is folded into S' when it leaves [1/FOLD, FOLD]. */
#define FOLD 1e12f

/* One token on one K x w slice (w <= VB, rows ldS apart):
 * row_i = a row_i + kv_i * v (a = 1 without decay); o = oscale sum_i qv_i row_i. */
SEQK_NOINLINE static void token_step(int64_t K, int64_t w, float a, bool decay, const float *qv,
                       const float *kv, const float *v, float *S, int64_t ldS, float *o,
                       float oscale)
{
#ifdef __AVX2__
    if (w == VB) {
        const __m256 v0 = _mm256_loadu_ps(v), v1 = _mm256_loadu_ps(v + 8),
                     v2 = _mm256_loadu_ps(v + 16), v3 = _mm256_loadu_ps(v + 24);
        const __m256 va = _mm256_set1_ps(a);
        __m256 o0 = _mm256_setzero_ps(), o1 = o0, o2 = o0, o3 = o0;
        for (int64_t i = 0; i < K; i++) {
            float *row = S + i * ldS;
            const __m256 ki = _mm256_set1_ps(kv[i]), qi = _mm256_set1_ps(qv[i]);
            __m256 r0 = _mm256_loadu_ps(row), r1 = _mm256_loadu_ps(row + 8),
                   r2 = _mm256_loadu_ps(row + 16), r3 = _mm256_loadu_ps(row + 24);
            if (decay) {
                r0 = _mm256_mul_ps(va, r0), r1 = _mm256_mul_ps(va, r1);
                r2 = _mm256_mul_ps(va, r2), r3 = _mm256_mul_ps(va, r3);
            }
            r0 = _mm256_fmadd_ps(ki, v0, r0), r1 = _mm256_fmadd_ps(ki, v1, r1);
            r2 = _mm256_fmadd_ps(ki, v2, r2), r3 = _mm256_fmadd_ps(ki, v3, r3);
            _mm256_storeu_ps(row, r0), _mm256_storeu_ps(row + 8, r1);
            _mm256_storeu_ps(row + 16, r2), _mm256_storeu_ps(row + 24, r3);
            o0 = _mm256_fmadd_ps(qi, r0, o0), o1 = _mm256_fmadd_ps(qi, r1, o1);
            o2 = _mm256_fmadd_ps(qi, r2, o2), o3 = _mm256_fmadd_ps(qi, r3, o3);
        }
        const __m256 os = _mm256_set1_ps(oscale);
        _mm256_storeu_ps(o, _mm256_mul_ps(os, o0)), _mm256_storeu_ps(o + 8, _mm256_mul_ps(os, o1));
        _mm256_storeu_ps(o + 16, _mm256_mul_ps(os, o2));
        _mm256_storeu_ps(o + 24, _mm256_mul_ps(os, o3));
        return;
    }
#endif
    for (int64_t j = 0; j < w; j++) o[j] = 0.0f;
    for (int64_t i = 0; i < K; i++) {
        float *row = S + i * ldS;
        for (int64_t j = 0; j < w; j++) {
            row[j] = (decay ? a * row[j] : row[j]) + kv[i] * v[j];
            o[j] += qv[i] * row[j];
        }
    }
    for (int64_t j = 0; j < w; j++) o[j] *= oscale;
}

/* dst = f * phi(src) over n floats (phi: SEQK__LIN_ELU1 or the identity). */
static void phi_row(float *dst, const float *src, int64_t n, float f, unsigned flags)
{
    int64_t i = 0;
#ifdef __AVX2__
    const __m256 vf = _mm256_set1_ps(f), one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(src + i);
        if (flags & SEQK__LIN_ELU1)
            x = _mm256_blendv_ps(seqk__exp8(_mm256_min_ps(x, zero)), _mm256_add_ps(x, one),
                                 _mm256_cmp_ps(x, zero, _CMP_GT_OQ));
        _mm256_storeu_ps(dst + i, _mm256_mul_ps(vf, x));
    }
#endif
    for (; i < n; i++) dst[i] = f * seqk__lin_phi(src[i], flags);
}

/* S (K x w, rows ldS apart) *= c. */
static void scale_slice(float *S, int64_t K, int64_t w, int64_t ldS, float c)
{
    for (int64_t i = 0; i < K; i++)
        for (int64_t j = 0; j < w; j++) S[i * ldS + j] *= c;
}

size_t seqk__lin_recurrent_workspace(const seqk__lin *P, int threads)
{
    /* per thread: the state slice, only when s_out is absent */
    if (P->s_out) return 0;
    const int64_t w = (P->flags & SEQK__LIN_NORMALIZE) ? P->V : VB;
    return (size_t)(P->K * w) * (size_t)threads * sizeof(float);
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
    const int64_t H = P->H, K = P->K, V = P->V, KV = K * V;
    const bool norm = (P->flags & SEQK__LIN_NORMALIZE) != 0;
    const bool decay = P->g || P->log_gamma;
    /* With the normaliser one item owns a whole head, so that z is walked once. */
    const int64_t nvb = norm ? 1 : (V + VB - 1) / VB;
    const size_t per = ws_bytes / sizeof(float) / (size_t)threads;

#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int64_t item = 0; item < P->N * H * nvb; item++) {
        const int64_t n = item / (H * nvb), h = (item / nvb) % H, vb = item % nvb;
        const int64_t hq = h / (H / P->Hqk);
        float qv[SEQK__LIN_MAX_K], kv[SEQK__LIN_MAX_K], z[SEQK__LIN_MAX_K]; /* phi(q), phi(k), z */
        float *slice = ws ? ws + per * (size_t)seqk__omp_thread() : NULL;
        int64_t r0, len;
        seqk__lin_seq(P, n, &r0, &len);
        const int64_t c0 = norm ? 0 : vb * VB;            /* first column of the item */
        const int64_t width = norm ? V : (V - c0 < VB ? V - c0 : VB);
        /* the K x width slice of the state and its row stride */
        float *S;
        int64_t ldS;
        const float *Sin = P->s_in ? P->s_in + (n * H + h) * KV + c0 : NULL;
        if (P->s_out) {
            S = P->s_out + (n * H + h) * KV + c0;
            ldS = V;
            if (Sin != S)
                for (int64_t i = 0; i < K; i++) {
                    if (Sin) memcpy(S + i * V, Sin + i * V, (size_t)width * sizeof(float));
                    else memset(S + i * V, 0, (size_t)width * sizeof(float));
                }
        } else {
            S = slice;
            ldS = width;
            for (int64_t i = 0; i < K; i++) {
                if (Sin) memcpy(S + i * width, Sin + i * V, (size_t)width * sizeof(float));
                else memset(S + i * width, 0, (size_t)width * sizeof(float));
            }
        }
        if (norm) {
            if (P->z_in) memcpy(z, P->z_in + (n * H + h) * K, (size_t)K * sizeof(float));
            else memset(z, 0, (size_t)K * sizeof(float));
        }
        /* the decay deferred in c (S = c S'), for items of more than two tokens */
        const bool lazy = decay && !norm && len > 2;
        float c = 1.0f;
        for (int64_t t = 0; t < len; t++) {
            const int64_t r = r0 + t;
            const float *q = P->q + (r * P->Hqk + hq) * K, *k = P->k + (r * P->Hqk + hq) * K;
            const float *v = P->v + (r * H + h) * V + c0;
            float *o = P->o + (r * H + h) * V + c0;
            if (t + PF < len)
                seqk__lin_prefetch_token(P, r + PF, h, c0, width, P->o + ((r + PF) * H + h) * V + c0);
            float a = decay ? expf(seqk__lin_logdecay(P, r, h)) : 1.0f;
            const float vs = P->v_scale ? P->v_scale[r * H + h] : 1.0f;
            /* qv = scale phi(q), kv = v_scale phi(k) (v_scale folded into k: (s k) v^T = k (s v)^T),
             * both over their L2 norms with SEQK__LIN_L2NORM */
            phi_row(qv, q, K, 1.0f, P->flags);
            phi_row(kv, k, K, 1.0f, P->flags);
            float rq = 1.0f, rk = 1.0f;
            if (P->flags & SEQK__LIN_L2NORM) {
                rq = 1.0f / sqrtf(seqk__dot(qv, qv, K) + SEQK__LIN_L2NORM_EPS);
                rk = 1.0f / sqrtf(seqk__dot(kv, kv, K) + SEQK__LIN_L2NORM_EPS);
            }
            float kf = vs * rk, oscale = 1.0f;
            bool step_decay = decay;
            if (lazy) {
                c *= a;
                if (c < 1.0f / FOLD || c > FOLD) { /* fold: S' = c S' + k v^T */
                    a = c, c = 1.0f;
                } else { /* S' += (k / c) v^T, o = c S'^T q */
                    step_decay = false, kf /= c, oscale = c;
                }
            }
            const float qf = P->scale * rq;
            for (int64_t i = 0; i < K; i++) qv[i] *= qf, kv[i] *= kf;
            if (!norm) {
                for (int64_t j0 = 0; j0 < width; j0 += VB)
                    token_step(K, width - j0 < VB ? width - j0 : VB, a, step_decay, qv, kv, v + j0,
                               S + j0, ldS, o + j0, oscale);
            } else {
                float den = 0.0f;
                for (int64_t i = 0; i < K; i++) {
                    z[i] = (decay ? a * z[i] : z[i]) + rk * seqk__lin_phi(k[i], P->flags);
                    den += qv[i] * z[i];
                }
                for (int64_t j0 = 0; j0 < width; j0 += VB)
                    token_step(K, width - j0 < VB ? width - j0 : VB, a, decay, qv, kv, v + j0,
                               S + j0, ldS, o + j0, 1.0f);
                const float inv = 1.0f / (den + SEQK__LIN_EPS);
                for (int64_t j = 0; j < V; j++) o[j] *= inv;
            }
        }
        if (c != 1.0f) scale_slice(S, K, width, ldS, c);
        if (norm && P->z_out) memcpy(P->z_out + (n * H + h) * K, z, (size_t)K * sizeof(float));
    }
    return SEQK_SUCCESS;
}
