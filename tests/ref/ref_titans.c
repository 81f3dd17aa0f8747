/* tests/ref/ref_titans.c -- see ref_titans.h. Double precision, token loop. */
#include "ref_titans.h"
#include "ref_common.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void ref_titans(int64_t B, int64_t T, int64_t H, int64_t K, int64_t V, double scale, int l2norm,
                int64_t b, const float *q, const float *k, const float *v, const float *eta,
                const float *theta, const float *alpha, const float *s0, double *o,
                double *s_fin, const int32_t *cu, int64_t N)
{
    if (!cu) N = B;
    const int64_t KV = K * V, E = 3 * KV + 8;
    double *M = malloc(sizeof(double) * (size_t)(3 * KV));
    double *S = M + KV, *Mh = M + 2 * KV;
    double *qt = malloc(sizeof(double) * (size_t)K), *kt = malloc(sizeof(double) * (size_t)K);
    double *err = malloc(sizeof(double) * (size_t)V);
    for (int64_t n = 0; n < N; n++)
        for (int64_t h = 0; h < H; h++) {
            const float *blk = s0 ? s0 + (n * H + h) * E : NULL;
            int64_t pos = blk ? (int64_t)blk[3 * KV] : 0;
            for (int64_t i = 0; i < KV; i++) {
                M[i] = blk ? blk[i] : 0.0;
                S[i] = blk ? blk[KV + i] : 0.0;
                Mh[i] = blk && pos != 0 ? blk[2 * KV + i] : 0.0;
            }
            const int64_t start = cu ? cu[n] : n * T, end = cu ? cu[n + 1] : (n + 1) * T;
            for (int64_t r = start; r < end; r++) {
                ref_qk_tilde(K, scale, l2norm, q + (r * H + h) * K, k + (r * H + h) * K, qt, kt);
                const float *vr = v + (r * H + h) * V;
                if (pos == 0) memcpy(Mh, M, sizeof(double) * (size_t)KV);
                /* err = Mhat^T k - v */
                for (int64_t j = 0; j < V; j++) {
                    double s = 0.0;
                    for (int64_t i = 0; i < K; i++) s += Mh[i * V + j] * kt[i];
                    err[j] = s - vr[j];
                }
                const double e = eta[r * H + h], th = theta[r * H + h];
                const double a = 1.0 - (double)alpha[r * H + h];
                for (int64_t i = 0; i < K; i++)
                    for (int64_t j = 0; j < V; j++) {
                        S[i * V + j] = e * S[i * V + j] - th * kt[i] * err[j];
                        M[i * V + j] = a * M[i * V + j] + S[i * V + j];
                    }
                for (int64_t j = 0; j < V; j++) {
                    double s = 0.0;
                    for (int64_t i = 0; i < K; i++) s += M[i * V + j] * qt[i];
                    o[(r * H + h) * V + j] = s;
                }
                pos = (pos + 1) % b;
            }
            if (s_fin) {
                double *dst = s_fin + (n * H + h) * E;
                if (pos == 0) memcpy(Mh, M, sizeof(double) * (size_t)KV);
                memcpy(dst, M, sizeof(double) * (size_t)(3 * KV));
                dst[3 * KV] = (double)pos;
                for (int i = 1; i < 8; i++) dst[3 * KV + i] = 0.0;
            }
        }
    free(M);
    free(qt);
    free(kt);
    free(err);
}
