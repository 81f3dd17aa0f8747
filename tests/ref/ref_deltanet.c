/* tests/ref/ref_deltanet.c -- see ref_deltanet.h. Double precision, token loop. */
#include "ref_deltanet.h"
#include "ref_common.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void ref_deltanet(int64_t B, int64_t T, int64_t H, int64_t K, int64_t V, double scale,
                  int l2norm, const float *q, const float *k, const float *v, const float *beta,
                  const float *g, const float *s0, double *o, double *s_fin, const int32_t *cu,
                  int64_t N)
{
    if (!cu) N = B;
    double *S = malloc(sizeof(double) * (size_t)(K * V));
    double *qt = malloc(sizeof(double) * (size_t)K), *kt = malloc(sizeof(double) * (size_t)K);
    double *u = malloc(sizeof(double) * (size_t)V);
    for (int64_t n = 0; n < N; n++)
        for (int64_t h = 0; h < H; h++) {
            for (int64_t i = 0; i < K * V; i++) S[i] = s0 ? s0[(n * H + h) * K * V + i] : 0.0;
            const int64_t start = cu ? cu[n] : n * T, end = cu ? cu[n + 1] : (n + 1) * T;
            for (int64_t r = start; r < end; r++) {
                ref_qk_tilde(K, scale, l2norm, q + (r * H + h) * K, k + (r * H + h) * K, qt, kt);
                const float *vr = v + (r * H + h) * V;
                const double a = g ? exp((double)g[r * H + h]) : 1.0;
                const double b = beta[r * H + h];
                /* S' = a S;  u = S'^T k */
                for (int64_t i = 0; i < K * V; i++) S[i] *= a;
                for (int64_t j = 0; j < V; j++) {
                    double s = 0.0;
                    for (int64_t i = 0; i < K; i++) s += S[i * V + j] * kt[i];
                    u[j] = s;
                }
                /* S = S' + beta k (v - u)^T */
                for (int64_t i = 0; i < K; i++)
                    for (int64_t j = 0; j < V; j++) S[i * V + j] += b * kt[i] * (vr[j] - u[j]);
                /* o = S^T q~ */
                for (int64_t j = 0; j < V; j++) {
                    double s = 0.0;
                    for (int64_t i = 0; i < K; i++) s += S[i * V + j] * qt[i];
                    o[(r * H + h) * V + j] = s;
                }
            }
            if (s_fin) memcpy(s_fin + (n * H + h) * K * V, S, sizeof(double) * (size_t)(K * V));
        }
    free(S);
    free(qt);
    free(kt);
    free(u);
}
