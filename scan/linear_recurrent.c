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

/* One token on one K x w slice (w <= VB, rows ldS apart):
 * row_i = a row_i + kv_i * v; o = sum_i qv_i row_i. */
static void token_step(int64_t K, int64_t w, float a, bool decay, const float *qv,
                       const float *kv, const float *v, float *S, int64_t ldS, float *o)
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
        _mm256_storeu_ps(o, o0), _mm256_storeu_ps(o + 8, o1);
        _mm256_storeu_ps(o + 16, o2), _mm256_storeu_ps(o + 24, o3);
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
        for (int64_t t = 0; t < len; t++) {
            const int64_t r = r0 + t;
            const float *q = P->q + (r * P->Hqk + hq) * K, *k = P->k + (r * P->Hqk + hq) * K;
            const float *v = P->v + (r * H + h) * V + c0;
            float *o = P->o + (r * H + h) * V + c0;
            if (t + PF < len) {
                /* rows of one head are H*K floats apart: a new page every few tokens,
                 * where the hardware prefetcher stops; fetch a few tokens ahead */
                const int64_t rp = r + PF;
                seqk__prefetch_floats(P->q + (rp * P->Hqk + hq) * K, K);
                seqk__prefetch_floats(P->k + (rp * P->Hqk + hq) * K, K);
                seqk__prefetch_floats(P->v + (rp * H + h) * V + c0, width);
                seqk__prefetch_floats(P->o + (rp * H + h) * V + c0, width);
            }
            const float a = decay ? expf(seqk__lin_logdecay(P, r, h)) : 1.0f;
            const float vs = P->v_scale ? P->v_scale[r * H + h] : 1.0f;
            /* (SEQK__LIN_L2NORM never reaches this mode: DeltaNet and Titans,
             * which set it, have recurrent kernels of their own) */
            const float qf = P->scale, kf = vs;
            for (int64_t i = 0; i < K; i++) {
                qv[i] = qf * seqk__lin_phi(q[i], P->flags);
                kv[i] = kf * seqk__lin_phi(k[i], P->flags); /* v_scale folded into k: (s k) v^T = k (s v)^T */
            }
            if (!norm) {
                for (int64_t j0 = 0; j0 < width; j0 += VB)
                    token_step(K, width - j0 < VB ? width - j0 : VB, a, decay, qv, kv, v + j0,
                               S + j0, ldS, o + j0);
            } else {
                float den = 0.0f;
                for (int64_t i = 0; i < K; i++) {
                    z[i] = (decay ? a * z[i] : z[i]) + seqk__lin_phi(k[i], P->flags);
                    den += qv[i] * z[i];
                }
                for (int64_t j0 = 0; j0 < width; j0 += VB)
                    token_step(K, width - j0 < VB ? width - j0 : VB, a, decay, qv, kv, v + j0,
                               S + j0, ldS, o + j0);
                const float inv = 1.0f / (den + SEQK__LIN_EPS);
                for (int64_t j = 0; j < V; j++) o[j] *= inv;
            }
        }
        if (norm && P->z_out) memcpy(P->z_out + (n * H + h) * K, z, (size_t)K * sizeof(float));
    }
    return SEQK_SUCCESS;
}
