/* tests/ref/ref_attention.c -- see ref_attention.h. Two passes per query
 * row: the scores (kept in a row buffer), then the
 * probabilities exp(s - lse) and their weighted sum of values. */
#include "ref_attention.h"

#include <math.h>
#include <stdlib.h>

void ref_attention(int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t K, int64_t V,
                   double scale, int causal, const float *q, const float *k, const float *v,
                   double *o, double *lse, const int32_t *cu, int64_t N)
{
    const int64_t nseq = cu ? N : B;
    const int64_t group = Hq / Hkv;
    double *s = malloc((size_t)(T > 0 ? T : 1) * sizeof(double));
    if (!s) abort();
    for (int64_t n = 0; n < nseq; n++) {
        /* rows [r0, r1) of the [B*T] token array; b = batch entry for lse */
        const int64_t b = cu ? 0 : n;
        const int64_t r0 = cu ? cu[n] : n * T, r1 = cu ? cu[n + 1] : (n + 1) * T;
        for (int64_t h = 0; h < Hq; h++) {
            const int64_t g = h / group;
            for (int64_t t = r0; t < r1; t++) {
                const int64_t send = causal ? t + 1 : r1;
                double mx = -INFINITY;
                for (int64_t u = r0; u < send; u++) {
                    double d = 0;
                    for (int64_t c = 0; c < K; c++)
                        d += (double)q[(t * Hq + h) * K + c] * (double)k[(u * Hkv + g) * K + c];
                    s[u - r0] = scale * d;
                    if (s[u - r0] > mx) mx = s[u - r0];
                }
                double sum = 0;
                for (int64_t u = r0; u < send; u++) sum += exp(s[u - r0] - mx);
                const double l = mx + log(sum);
                for (int64_t u = r0; u < send; u++) s[u - r0] = exp(s[u - r0] - l);
                for (int64_t c = 0; c < V; c++) {
                    double acc = 0;
                    for (int64_t u = r0; u < send; u++)
                        acc += s[u - r0] * (double)v[(u * Hkv + g) * V + c];
                    o[(t * Hq + h) * V + c] = acc;
                }
                if (lse) lse[(b * Hq + h) * T + (t - b * T)] = l;
            }
        }
    }
    free(s);
}
