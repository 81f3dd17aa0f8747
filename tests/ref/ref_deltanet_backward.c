/* tests/ref/ref_deltanet_backward.c -- see ref_deltanet_backward.h. Double
 * precision, token loops. */
#include "ref_deltanet_backward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* x~ = f x with f = 1 / sqrt(sum x^2 + 1e-6) (l2norm) or 1; returns the norm
 * (1 without l2norm). */
static double norm_row(int64_t K, int l2norm, const double *x, double *xt)
{
    double nrm = 1.0;
    if (l2norm) {
        double s = 0.0;
        for (int64_t i = 0; i < K; i++) s += x[i] * x[i];
        nrm = sqrt(s + 1e-6);
    }
    for (int64_t i = 0; i < K; i++) xt[i] = x[i] / nrm;
    return nrm;
}

static void seq_range(const int32_t *cu, int64_t T, int64_t n, int64_t *start, int64_t *end)
{
    *start = cu ? cu[n] : n * T;
    *end = cu ? cu[n + 1] : (n + 1) * T;
}

void ref_deltanet64(int64_t B, int64_t T, int64_t H, int64_t K, int64_t V, double scale,
                    int l2norm, const double *q, const double *k, const double *v,
                    const double *beta, const double *g, const double *s0, double *o,
                    double *s_fin, const int32_t *cu, int64_t N)
{
    if (!cu) N = B;
    double *S = malloc(sizeof(double) * (size_t)(K * V));
    double *qt = malloc(sizeof(double) * (size_t)K), *kt = malloc(sizeof(double) * (size_t)K);
    double *u = malloc(sizeof(double) * (size_t)V);
    for (int64_t n = 0; n < N; n++)
        for (int64_t h = 0; h < H; h++) {
            for (int64_t i = 0; i < K * V; i++) S[i] = s0 ? s0[(n * H + h) * K * V + i] : 0.0;
            int64_t start, end;
            seq_range(cu, T, n, &start, &end);
            for (int64_t r = start; r < end; r++) {
                norm_row(K, l2norm, q + (r * H + h) * K, qt);
                norm_row(K, l2norm, k + (r * H + h) * K, kt);
                const double *vr = v + (r * H + h) * V;
                const double a = g ? exp(g[r * H + h]) : 1.0, b = beta[r * H + h];
                for (int64_t i = 0; i < K * V; i++) S[i] *= a;
                for (int64_t j = 0; j < V; j++) {
                    double s = 0.0;
                    for (int64_t i = 0; i < K; i++) s += S[i * V + j] * kt[i];
                    u[j] = vr[j] - s;
                }
                for (int64_t i = 0; i < K; i++)
                    for (int64_t j = 0; j < V; j++) S[i * V + j] += b * kt[i] * u[j];
                for (int64_t j = 0; j < V; j++) {
                    double s = 0.0;
                    for (int64_t i = 0; i < K; i++) s += S[i * V + j] * scale * qt[i];
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

void ref_deltanet_backward64(int64_t B, int64_t T, int64_t H, int64_t K, int64_t V,
                             double scale, int l2norm, const double *q, const double *k,
                             const double *v, const double *beta, const double *g,
                             const double *s0, const double *dout, const double *ds_out,
                             double *dq, double *dk, double *dv, double *dbeta, double *dg,
                             double *ds_in, const int32_t *cu, int64_t N)
{
    if (!cu) N = B;
    const size_t KV = (size_t)(K * V);
    int64_t maxlen = 0;
    for (int64_t n = 0; n < N; n++) {
        int64_t start, end;
        seq_range(cu, T, n, &start, &end);
        if (end - start > maxlen) maxlen = end - start;
    }
    /* the states S_0 .. S_len of one (sequence, head) */
    double *St = malloc(sizeof(double) * KV * (size_t)(maxlen + 1));
    double *dS = malloc(sizeof(double) * KV), *Sp = malloc(sizeof(double) * KV);
    double *qt = malloc(sizeof(double) * (size_t)K), *kt = malloc(sizeof(double) * (size_t)K);
    double *dqt = malloc(sizeof(double) * (size_t)K), *dkt = malloc(sizeof(double) * (size_t)K);
    double *u = malloc(sizeof(double) * (size_t)V), *e = malloc(sizeof(double) * (size_t)V);
    for (int64_t n = 0; n < N; n++)
        for (int64_t h = 0; h < H; h++) {
            int64_t start, end;
            seq_range(cu, T, n, &start, &end);
            const int64_t len = end - start;
            /* forward, keeping every state */
            for (size_t i = 0; i < KV; i++) St[i] = s0 ? s0[(size_t)(n * H + h) * KV + i] : 0.0;
            for (int64_t t = 0; t < len; t++) {
                const int64_t r = start + t;
                norm_row(K, l2norm, k + (r * H + h) * K, kt);
                const double *vr = v + (r * H + h) * V;
                const double a = g ? exp(g[r * H + h]) : 1.0, b = beta[r * H + h];
                const double *S0 = St + (size_t)t * KV;
                double *S1 = St + (size_t)(t + 1) * KV;
                for (size_t i = 0; i < KV; i++) S1[i] = a * S0[i];
                for (int64_t j = 0; j < V; j++) {
                    double s = 0.0;
                    for (int64_t i = 0; i < K; i++) s += S1[i * V + j] * kt[i];
                    u[j] = vr[j] - s;
                }
                for (int64_t i = 0; i < K; i++)
                    for (int64_t j = 0; j < V; j++) S1[i * V + j] += b * kt[i] * u[j];
            }
            /* reverse */
            for (size_t i = 0; i < KV; i++)
                dS[i] = ds_out ? ds_out[(size_t)(n * H + h) * KV + i] : 0.0;
            for (int64_t t = len - 1; t >= 0; t--) {
                const int64_t r = start + t;
                const double nq = norm_row(K, l2norm, q + (r * H + h) * K, qt);
                const double nk = norm_row(K, l2norm, k + (r * H + h) * K, kt);
                const double *vr = v + (r * H + h) * V, *dor = dout + (r * H + h) * V;
                const double a = g ? exp(g[r * H + h]) : 1.0, b = beta[r * H + h];
                const double *Sprev = St + (size_t)t * KV, *Scur = St + (size_t)(t + 1) * KV;
                /* o_t = S_t^T (scale q~): dq~ (of q~ before the scale) and dS_t */
                for (int64_t i = 0; i < K; i++) {
                    double s = 0.0;
                    for (int64_t j = 0; j < V; j++) s += Scur[i * V + j] * dor[j];
                    dqt[i] = scale * s;
                }
                for (int64_t i = 0; i < K; i++)
                    for (int64_t j = 0; j < V; j++) dS[i * V + j] += scale * qt[i] * dor[j];
                /* S_t = S' + beta k~ u^T, u = v - S'^T k~ */
                for (size_t i = 0; i < KV; i++) Sp[i] = a * Sprev[i];
                for (int64_t j = 0; j < V; j++) {
                    double s = 0.0, w = 0.0;
                    for (int64_t i = 0; i < K; i++) {
                        s += Sp[i * V + j] * kt[i];
                        w += dS[i * V + j] * kt[i];
                    }
                    u[j] = vr[j] - s;
                    e[j] = w;
                }
                double db = 0.0;
                for (int64_t j = 0; j < V; j++) {
                    dv[(r * H + h) * V + j] = b * e[j];
                    db += e[j] * u[j];
                }
                dbeta[r * H + h] = db;
                for (int64_t i = 0; i < K; i++) {
                    double s = 0.0;
                    for (int64_t j = 0; j < V; j++) s += dS[i * V + j] * u[j] - Sp[i * V + j] * e[j];
                    dkt[i] = b * s;
                }
                /* dS' = (I - beta k~ k~^T) dS */
                for (int64_t i = 0; i < K; i++)
                    for (int64_t j = 0; j < V; j++) dS[i * V + j] -= b * kt[i] * e[j];
                if (dg) {
                    double s = 0.0;
                    for (size_t i = 0; i < KV; i++) s += dS[i] * Sp[i];
                    dg[r * H + h] = s;
                }
                for (size_t i = 0; i < KV; i++) dS[i] *= a;
                /* through the L2 norm */
                double pq = 0.0, pk = 0.0;
                for (int64_t i = 0; i < K; i++) pq += qt[i] * dqt[i], pk += kt[i] * dkt[i];
                for (int64_t i = 0; i < K; i++) {
                    dq[(r * H + h) * K + i] = l2norm ? (dqt[i] - qt[i] * pq) / nq : dqt[i];
                    dk[(r * H + h) * K + i] = l2norm ? (dkt[i] - kt[i] * pk) / nk : dkt[i];
                }
            }
            if (ds_in) memcpy(ds_in + (size_t)(n * H + h) * KV, dS, sizeof(double) * KV);
        }
    free(St);
    free(dS);
    free(Sp);
    free(qt);
    free(kt);
    free(dqt);
    free(dkt);
    free(u);
    free(e);
}
