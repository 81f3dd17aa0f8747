/* tests/ref/ref_linear.c -- see ref_linear.h. Double precision, token loops. */
#include "ref_linear.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static double feature(double x, int elu1) { return !elu1 ? x : (x > 0 ? x + 1.0 : exp(x)); }

void ref_linear_state(int64_t B, int64_t T, int64_t H, int64_t K, int64_t V, double scale,
                      int normalize, int elu1, ref_decay decay, const float *q, const float *k,
                      const float *v, const float *s0, const float *z0, double *o,
                      double *s_fin, double *z_fin, const int32_t *cu, int64_t N)
{
    if (!cu) N = B;
    double *S = malloc(sizeof(double) * (size_t)(K * V)), *z = malloc(sizeof(double) * (size_t)K);
    for (int64_t n = 0; n < N; n++)
        for (int64_t h = 0; h < H; h++) {
            for (int64_t i = 0; i < K * V; i++) S[i] = s0 ? s0[(n * H + h) * K * V + i] : 0.0;
            for (int64_t i = 0; i < K; i++) z[i] = z0 ? z0[(n * H + h) * K + i] : 0.0;
            int64_t start = cu ? cu[n] : n * T, end = cu ? cu[n + 1] : (n + 1) * T;
            for (int64_t r = start; r < end; r++) {
                double a = 1.0;
                if (decay.kind == 1) a = decay.gamma[h];
                if (decay.kind == 2) a = exp((double)decay.g[r * H + h]);
                const float *qt = q + (r * H + h) * K, *kt = k + (r * H + h) * K;
                const float *vt = v + (r * H + h) * V;
                for (int64_t i = 0; i < K; i++) {
                    double ki = feature(kt[i], elu1);
                    for (int64_t j = 0; j < V; j++) S[i * V + j] = a * S[i * V + j] + ki * vt[j];
                    z[i] = a * z[i] + ki;
                }
                double den = 0.0;
                for (int64_t i = 0; i < K; i++) den += scale * feature(qt[i], elu1) * z[i];
                for (int64_t j = 0; j < V; j++) {
                    double s = 0.0;
                    for (int64_t i = 0; i < K; i++) s += scale * feature(qt[i], elu1) * S[i * V + j];
                    o[(r * H + h) * V + j] = normalize ? s / (den + 1e-6) : s;
                }
            }
            if (s_fin) memcpy(s_fin + (n * H + h) * K * V, S, sizeof(double) * (size_t)(K * V));
            if (z_fin) memcpy(z_fin + (n * H + h) * K, z, sizeof(double) * (size_t)K);
        }
    free(S);
    free(z);
}

void ref_mamba2(int64_t B, int64_t T, int64_t H, int64_t P, int64_t G, int64_t Nst, int softplus,
                const float *x, const float *dt, const float *A, const float *Bm, const float *Cm,
                const float *D, const float *dt_bias, const float *s0, double *y, double *s_fin,
                const int32_t *cu, int64_t N)
{
    if (!cu) N = B;
    double *hs = malloc(sizeof(double) * (size_t)(Nst * P));
    for (int64_t n = 0; n < N; n++)
        for (int64_t h = 0; h < H; h++) {
            const int64_t grp = h / (H / G);
            for (int64_t i = 0; i < Nst * P; i++) hs[i] = s0 ? s0[(n * H + h) * Nst * P + i] : 0.0;
            int64_t start = cu ? cu[n] : n * T, end = cu ? cu[n + 1] : (n + 1) * T;
            for (int64_t r = start; r < end; r++) {
                double d = (double)dt[r * H + h] + (dt_bias ? dt_bias[h] : 0.0);
                if (softplus) d = log1p(exp(d));
                const double decay = exp(d * A[h]);
                const float *xt = x + (r * H + h) * P;
                const float *bt = Bm + (r * G + grp) * Nst, *ct = Cm + (r * G + grp) * Nst;
                for (int64_t s = 0; s < Nst; s++)
                    for (int64_t p = 0; p < P; p++)
                        hs[s * P + p] = decay * hs[s * P + p] + d * bt[s] * xt[p];
                for (int64_t p = 0; p < P; p++) {
                    double acc = D ? (double)D[h] * xt[p] : 0.0;
                    for (int64_t s = 0; s < Nst; s++) acc += hs[s * P + p] * ct[s];
                    y[(r * H + h) * P + p] = acc;
                }
            }
            if (s_fin) memcpy(s_fin + (n * H + h) * Nst * P, hs, sizeof(double) * (size_t)(Nst * P));
        }
    free(hs);
}
