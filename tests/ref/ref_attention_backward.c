/* tests/ref/ref_attention_backward.c -- see ref_attention_backward.h. Per
 * query row: the scores into a row buffer, the softmax row, then the
 * gradient terms, straight from the formulas (O(T^2) memory-free loops). */
#include "ref_attention_backward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The softmax row p[u - r0] over keys [r0, send) of query row t, head h. */
static void softmax_row(int64_t Hq, int64_t Hkv, int64_t K, double scale, const double *q,
                        const double *k, int64_t t, int64_t h, int64_t g, int64_t r0,
                        int64_t send, double *p)
{
    double mx = -INFINITY;
    for (int64_t u = r0; u < send; u++) {
        double d = 0;
        for (int64_t c = 0; c < K; c++) d += q[(t * Hq + h) * K + c] * k[(u * Hkv + g) * K + c];
        p[u - r0] = scale * d;
        if (p[u - r0] > mx) mx = p[u - r0];
    }
    double sum = 0;
    for (int64_t u = r0; u < send; u++) {
        p[u - r0] = exp(p[u - r0] - mx);
        sum += p[u - r0];
    }
    for (int64_t u = r0; u < send; u++) p[u - r0] /= sum;
}

void ref_attention_forward64(int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t K, int64_t V,
                             double scale, int causal, const double *q, const double *k,
                             const double *v, double *o, const int32_t *cu, int64_t N)
{
    const int64_t nseq = cu ? N : B, group = Hq / Hkv;
    double *p = malloc((size_t)(T > 0 ? T : 1) * sizeof(double));
    if (!p) abort();
    for (int64_t n = 0; n < nseq; n++) {
        const int64_t r0 = cu ? cu[n] : n * T, r1 = cu ? cu[n + 1] : (n + 1) * T;
        for (int64_t h = 0; h < Hq; h++) {
            const int64_t g = h / group;
            for (int64_t t = r0; t < r1; t++) {
                const int64_t send = causal ? t + 1 : r1;
                softmax_row(Hq, Hkv, K, scale, q, k, t, h, g, r0, send, p);
                for (int64_t c = 0; c < V; c++) {
                    double acc = 0;
                    for (int64_t u = r0; u < send; u++) acc += p[u - r0] * v[(u * Hkv + g) * V + c];
                    o[(t * Hq + h) * V + c] = acc;
                }
            }
        }
    }
    free(p);
}

void ref_attention_backward(int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t K, int64_t V,
                            double scale, int causal, const double *q, const double *k,
                            const double *v, const double *dout, double *dq, double *dk,
                            double *dv, const int32_t *cu, int64_t N)
{
    const int64_t nseq = cu ? N : B, group = Hq / Hkv;
    memset(dq, 0, (size_t)(B * T * Hq * K) * sizeof(double));
    memset(dk, 0, (size_t)(B * T * Hkv * K) * sizeof(double));
    memset(dv, 0, (size_t)(B * T * Hkv * V) * sizeof(double));
    double *p = malloc((size_t)(T > 0 ? T : 1) * sizeof(double));
    double *gr = malloc((size_t)(T > 0 ? T : 1) * sizeof(double));
    if (!p || !gr) abort();
    for (int64_t n = 0; n < nseq; n++) {
        const int64_t r0 = cu ? cu[n] : n * T, r1 = cu ? cu[n + 1] : (n + 1) * T;
        for (int64_t h = 0; h < Hq; h++) {
            const int64_t g = h / group;
            for (int64_t t = r0; t < r1; t++) {
                const int64_t send = causal ? t + 1 : r1;
                const double *dot = dout + (t * Hq + h) * V;
                softmax_row(Hq, Hkv, K, scale, q, k, t, h, g, r0, send, p);
                /* g[t,u] = dout[t] . v[u]; the row's mean under p */
                double mean = 0;
                for (int64_t u = r0; u < send; u++) {
                    double d = 0;
                    for (int64_t c = 0; c < V; c++) d += dot[c] * v[(u * Hkv + g) * V + c];
                    gr[u - r0] = d;
                    mean += p[u - r0] * d;
                }
                for (int64_t u = r0; u < send; u++) {
                    const double pu = p[u - r0], ds = pu * (gr[u - r0] - mean);
                    for (int64_t c = 0; c < V; c++) dv[(u * Hkv + g) * V + c] += pu * dot[c];
                    for (int64_t c = 0; c < K; c++) {
                        dq[(t * Hq + h) * K + c] += scale * ds * k[(u * Hkv + g) * K + c];
                        dk[(u * Hkv + g) * K + c] += scale * ds * q[(t * Hq + h) * K + c];
                    }
                }
            }
        }
    }
    free(p);
    free(gr);
}
