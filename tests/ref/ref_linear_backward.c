/* tests/ref/ref_linear_backward.c -- see ref_linear_backward.h. Double
 * precision, token loops. */
#include "ref_linear_backward.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { REF_LIN_SEG = 128 }; /* tokens between checkpoints of the state */

static void *ref_alloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p) {
        fprintf(stderr, "ref_linear_backward: out of memory\n");
        exit(1);
    }
    return p;
}

static double *dbl(size_t n) { return ref_alloc(n, sizeof(double)); }

/* A double copy of x[n], or NULL when x is NULL. */
static double *dup_d(const float *x, size_t n)
{
    if (!x) return NULL;
    double *y = dbl(n);
    for (size_t i = 0; i < n; i++) y[i] = x[i];
    return y;
}

static double dot(const double *a, const double *b, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static double norm2(const double *a, int64_t n) { return sqrt(dot(a, a, n)); }

static void seq_bounds(const ref_lin_shape *sh, int64_t n, int64_t *start, int64_t *end)
{
    *start = sh->cu ? sh->cu[n] : n * sh->T;
    *end = sh->cu ? sh->cu[n + 1] : (n + 1) * sh->T;
}

/* S <- a S + k v^T, z <- a z + k (one token). */
static void step(int64_t K, int64_t V, double a, const double *k, const double *v, double *S,
                 double *z)
{
    for (int64_t i = 0; i < K; i++) {
        for (int64_t j = 0; j < V; j++) S[i * V + j] = a * S[i * V + j] + k[i] * v[j];
        z[i] = a * z[i] + k[i];
    }
}

void ref_lin_backward(const ref_lin_shape *sh, const double *q, const double *k, const double *v,
                      const double *la, const double *s0, const double *z0, const double *dout,
                      const double *dsT, const double *dzT, double *dq, double *dk, double *dv,
                      double *dla, double *ds0, double *dz0, const ref_lin_terms *terms)
{
    double *gterm = terms ? terms->gterm : NULL, *qterm = terms ? terms->qterm : NULL,
           *kterm = terms ? terms->kterm : NULL;
    const int64_t H = sh->H, K = sh->K, V = sh->V, KV = K * V;
    const int64_t N = sh->cu ? sh->N : sh->B;
    const int norm = sh->normalize;
    int64_t maxlen = 0;
    for (int64_t n = 0; n < N; n++) {
        int64_t s, e;
        seq_bounds(sh, n, &s, &e);
        if (e - s > maxlen) maxlen = e - s;
    }
    const int64_t maxseg = (maxlen + REF_LIN_SEG - 1) / REF_LIN_SEG + 1;
    double *ckS = dbl((size_t)(maxseg * KV)), *ckz = dbl((size_t)(maxseg * K));
    double *Sb = dbl((size_t)((REF_LIN_SEG + 1) * KV)), *zb = dbl((size_t)((REF_LIN_SEG + 1) * K));
    double *dS = dbl((size_t)KV), *dz = dbl((size_t)K), *num = dbl((size_t)V),
           *dnum = dbl((size_t)V), *gq = dbl((size_t)K), *gk = dbl((size_t)K);
    for (int64_t n = 0; n < N; n++)
        for (int64_t h = 0; h < H; h++) {
            int64_t start, end;
            seq_bounds(sh, n, &start, &end);
            const int64_t len = end - start, nseg = (len + REF_LIN_SEG - 1) / REF_LIN_SEG;
            /* forward: the state before every REF_LIN_SEG-th token */
            double *S = Sb, *z = zb;
            for (int64_t i = 0; i < KV; i++) S[i] = s0 ? s0[(n * H + h) * KV + i] : 0.0;
            for (int64_t i = 0; i < K; i++) z[i] = norm && z0 ? z0[(n * H + h) * K + i] : 0.0;
            for (int64_t t = 0; t < len; t++) {
                const int64_t r = start + t;
                if (t % REF_LIN_SEG == 0) {
                    memcpy(ckS + (t / REF_LIN_SEG) * KV, S, sizeof(double) * (size_t)KV);
                    memcpy(ckz + (t / REF_LIN_SEG) * K, z, sizeof(double) * (size_t)K);
                }
                step(K, V, la ? exp(la[r * H + h]) : 1.0, k + (r * H + h) * K,
                     v + (r * H + h) * V, S, z);
            }
            /* backward */
            for (int64_t i = 0; i < KV; i++) dS[i] = dsT ? dsT[(n * H + h) * KV + i] : 0.0;
            for (int64_t i = 0; i < K; i++) dz[i] = norm && dzT ? dzT[(n * H + h) * K + i] : 0.0;
            for (int64_t sg = nseg - 1; sg >= 0; sg--) {
                const int64_t t0 = sg * REF_LIN_SEG;
                const int64_t t1 = t0 + REF_LIN_SEG < len ? t0 + REF_LIN_SEG : len;
                memcpy(Sb, ckS + sg * KV, sizeof(double) * (size_t)KV);
                memcpy(zb, ckz + sg * K, sizeof(double) * (size_t)K);
                for (int64_t j = 0; j < t1 - t0; j++) {
                    const int64_t r = start + t0 + j;
                    memcpy(Sb + (j + 1) * KV, Sb + j * KV, sizeof(double) * (size_t)KV);
                    memcpy(zb + (j + 1) * K, zb + j * K, sizeof(double) * (size_t)K);
                    step(K, V, la ? exp(la[r * H + h]) : 1.0, k + (r * H + h) * K,
                         v + (r * H + h) * V, Sb + (j + 1) * KV, zb + (j + 1) * K);
                }
                for (int64_t j = t1 - t0 - 1; j >= 0; j--) {
                    const int64_t r = start + t0 + j, rh = r * H + h;
                    const double a = la ? exp(la[rh]) : 1.0;
                    const double *St = Sb + (j + 1) * KV, *Sp = Sb + j * KV;
                    const double *zt = zb + (j + 1) * K, *zp = zb + j * K;
                    const double *qt = q + rh * K, *kt = k + rh * K, *vt = v + rh * V;
                    const double *dot_ = dout + rh * V;
                    for (int64_t c = 0; c < V; c++) {
                        double s = 0.0;
                        for (int64_t i = 0; i < K; i++) s += St[i * V + c] * qt[i];
                        num[c] = s;
                    }
                    double dden = 0.0;
                    if (norm) {
                        const double den = dot(qt, zt, K) + 1e-6;
                        for (int64_t c = 0; c < V; c++) dnum[c] = dot_[c] / den;
                        dden = -dot(dot_, num, V) / (den * den);
                    } else {
                        for (int64_t c = 0; c < V; c++) dnum[c] = dot_[c];
                    }
                    /* dS, dz: the gradients at S_t, z_t */
                    for (int64_t i = 0; i < K; i++)
                        for (int64_t c = 0; c < V; c++) dS[i * V + c] += qt[i] * dnum[c];
                    if (norm)
                        for (int64_t i = 0; i < K; i++) dz[i] += dden * qt[i];
                    double sq_sd = 0.0, sq_dv = 0.0; /* |S_t dnum|^2, |dS v|^2 */
                    for (int64_t i = 0; i < K; i++) {
                        double s = 0.0, u = 0.0;
                        for (int64_t c = 0; c < V; c++) {
                            s += St[i * V + c] * dnum[c];
                            u += dS[i * V + c] * vt[c];
                        }
                        gq[i] = s + dden * zt[i];
                        gk[i] = u + dz[i];
                        sq_sd += s * s;
                        sq_dv += u * u;
                    }
                    if (qterm) qterm[rh] = sqrt(sq_sd) + fabs(dden) * norm2(zt, K);
                    if (kterm) kterm[rh] = sqrt(sq_dv) + norm2(dz, K);
                    if (dq) memcpy(dq + rh * K, gq, sizeof(double) * (size_t)K);
                    if (dk) memcpy(dk + rh * K, gk, sizeof(double) * (size_t)K);
                    if (dv)
                        for (int64_t c = 0; c < V; c++) {
                            double s = 0.0;
                            for (int64_t i = 0; i < K; i++) s += dS[i * V + c] * kt[i];
                            dv[rh * V + c] = s;
                        }
                    if (dla) dla[rh] = a * (dot(Sp, dS, KV) + (norm ? dot(zp, dz, K) : 0.0));
                    if (gterm) gterm[rh] = norm2(qt, K) * norm2(gq, K) + norm2(kt, K) * norm2(gk, K);
                    for (int64_t i = 0; i < KV; i++) dS[i] *= a;
                    for (int64_t i = 0; i < K; i++) dz[i] *= a;
                }
            }
            if (ds0) memcpy(ds0 + (n * H + h) * KV, dS, sizeof(double) * (size_t)KV);
            if (dz0) memcpy(dz0 + (n * H + h) * K, dz, sizeof(double) * (size_t)K);
        }
    free(ckS);
    free(ckz);
    free(Sb);
    free(zb);
    free(dS);
    free(dz);
    free(num);
    free(dnum);
    free(gq);
    free(gk);
}

void ref_lin_gate_by_design_formula(const ref_lin_shape *sh, const double *q, const double *k,
                                    const double *v, const double *la, const double *s0,
                                    const double *z0, const double *dq, const double *dk,
                                    const double *dsT, const double *dzT, double *dla)
{
    const int64_t H = sh->H, K = sh->K, V = sh->V, KV = K * V;
    const int64_t N = sh->cu ? sh->N : sh->B;
    const int norm = sh->normalize;
    double *S = dbl((size_t)KV), *z = dbl((size_t)K);
    for (int64_t n = 0; n < N; n++)
        for (int64_t h = 0; h < H; h++) {
            int64_t start, end;
            seq_bounds(sh, n, &start, &end);
            for (int64_t i = 0; i < KV; i++) S[i] = s0 ? s0[(n * H + h) * KV + i] : 0.0;
            for (int64_t i = 0; i < K; i++) z[i] = norm && z0 ? z0[(n * H + h) * K + i] : 0.0;
            for (int64_t r = start; r < end; r++)
                step(K, V, la ? exp(la[r * H + h]) : 1.0, k + (r * H + h) * K,
                     v + (r * H + h) * V, S, z);
            double acc = dsT ? dot(S, dsT + (n * H + h) * KV, KV) : 0.0;
            if (norm && dzT) acc += dot(z, dzT + (n * H + h) * K, K);
            for (int64_t r = end - 1; r >= start; r--) {
                const int64_t rh = r * H + h;
                acc += dot(q + rh * K, dq + rh * K, K) - dot(k + rh * K, dk + rh * K, K);
                dla[rh] = acc;
            }
        }
    free(S);
    free(z);
}

/* ---- the public ops' chains ------------------------------------------------------- */

static double feature(double x, int elu1) { return !elu1 ? x : (x > 0 ? x + 1.0 : exp(x)); }
static double dfeature(double x, int elu1) { return !elu1 ? 1.0 : (x > 0 ? 1.0 : exp(x)); }

void ref_linear_attention_backward(int64_t B, int64_t T, int64_t H, int64_t K, int64_t V,
                                   double scale, int normalize, int elu1, const float *q,
                                   const float *k, const float *v, const float *dout,
                                   const float *s0, const float *z0, const float *dsT,
                                   const float *dzT, double *dq, double *dk, double *dv,
                                   double *ds0, double *dz0, double *qterm, double *kterm,
                                   const int32_t *cu, int64_t N)
{
    const ref_lin_shape sh = {B, T, H, K, V, cu, cu ? N : B, normalize};
    const size_t nq = (size_t)(B * T * H * K), nv = (size_t)(B * T * H * V);
    const size_t ns = (size_t)(sh.N * H * K * V), nz = (size_t)(sh.N * H * K);
    double *qt = dbl(nq), *kt = dbl(nq), *gq = dbl(nq), *gk = dbl(nq);
    for (size_t i = 0; i < nq; i++) {
        qt[i] = scale * feature(q[i], elu1);
        kt[i] = feature(k[i], elu1);
    }
    double *vd = dup_d(v, nv), *dod = dup_d(dout, nv), *s0d = dup_d(s0, ns), *dsd = dup_d(dsT, ns);
    double *z0d = normalize ? dup_d(z0, nz) : NULL, *dzd = normalize ? dup_d(dzT, nz) : NULL;
    const ref_lin_terms terms = {NULL, qterm, kterm};
    ref_lin_backward(&sh, qt, kt, vd, NULL, s0d, z0d, dod, dsd, dzd, gq, gk, dv, NULL, ds0,
                     normalize ? dz0 : NULL, &terms);
    if (qterm)
        for (int64_t i = 0; i < B * T * H; i++) qterm[i] *= fabs(scale);
    for (size_t i = 0; i < nq; i++) {
        dq[i] = scale * dfeature(q[i], elu1) * gq[i];
        dk[i] = dfeature(k[i], elu1) * gk[i];
    }
    free(qt), free(kt), free(gq), free(gk), free(vd), free(dod), free(s0d), free(dsd);
    free(z0d), free(dzd);
}

/* The log-decays of retention and gated retention, [rows,H]. */
static void run_decayed(int64_t B, int64_t T, int64_t H, int64_t K, int64_t V, double scale,
                        const double *la, const float *q, const float *k, const float *v,
                        const float *dout, const float *s0, const float *dsT, double *dq,
                        double *dk, double *dv, double *dla, double *gterm, double *ds0,
                        const int32_t *cu, int64_t N)
{
    const ref_lin_shape sh = {B, T, H, K, V, cu, cu ? N : B, 0};
    const size_t nq = (size_t)(B * T * H * K), nv = (size_t)(B * T * H * V);
    const size_t ns = (size_t)(sh.N * H * K * V);
    double *qt = dbl(nq), *kt = dup_d(k, nq);
    for (size_t i = 0; i < nq; i++) qt[i] = scale * q[i];
    double *vd = dup_d(v, nv), *dod = dup_d(dout, nv), *s0d = dup_d(s0, ns), *dsd = dup_d(dsT, ns);
    const ref_lin_terms terms = {gterm, NULL, NULL};
    ref_lin_backward(&sh, qt, kt, vd, la, s0d, NULL, dod, dsd, NULL, dq, dk, dv, dla, ds0, NULL,
                     &terms);
    for (size_t i = 0; i < nq; i++) dq[i] *= scale;
    free(qt), free(kt), free(vd), free(dod), free(s0d), free(dsd);
}

void ref_retention_backward(int64_t B, int64_t T, int64_t H, int64_t K, int64_t V, double scale,
                            const float *gamma, const float *q, const float *k, const float *v,
                            const float *dout, const float *s0, const float *dsT, double *dq,
                            double *dk, double *dv, double *ds0, const int32_t *cu, int64_t N)
{
    const int64_t rows = B * T;
    double *la = dbl((size_t)(rows * H));
    for (int64_t r = 0; r < rows; r++)
        for (int64_t h = 0; h < H; h++)
            la[r * H + h] = gamma ? log((double)gamma[h]) : log1p(-ldexp(1.0, (int)(-5 - h)));
    run_decayed(B, T, H, K, V, scale, la, q, k, v, dout, s0, dsT, dq, dk, dv, NULL, NULL, ds0, cu,
                N);
    free(la);
}

void ref_gated_retention_backward(int64_t B, int64_t T, int64_t H, int64_t K, int64_t V,
                                  double scale, const float *q, const float *k, const float *v,
                                  const float *g, const float *dout, const float *s0,
                                  const float *dsT, double *dq, double *dk, double *dv, double *dg,
                                  double *gterm, double *ds0, const int32_t *cu, int64_t N)
{
    double *la = dup_d(g, (size_t)(B * T * H));
    run_decayed(B, T, H, K, V, scale, la, q, k, v, dout, s0, dsT, dq, dk, dv, dg, gterm, ds0, cu,
                N);
    free(la);
}

void ref_mamba2_backward(int64_t B, int64_t T, int64_t H, int64_t P, int64_t G, int64_t Nst,
                         int softplus, const float *x, const float *dt, const float *A,
                         const float *Bm, const float *Cm, const float *D, const float *dt_bias,
                         const float *s0, const float *dy, const float *dsT, double *dx,
                         double *ddt, double *dA, double *dBm, double *dCm, double *dD,
                         double *ddt_bias, double *ds0, const ref_mamba2_scales *sc,
                         const int32_t *cu, int64_t N)
{
    const ref_lin_shape sh = {B, T, H, Nst, P, cu, cu ? N : B, 0};
    const int64_t rows = B * T, hpg = H / G;
    const size_t nq = (size_t)(rows * H * Nst), nx = (size_t)(rows * H * P),
                 nh = (size_t)(rows * H), ns = (size_t)(sh.N * H * Nst * P);
    double *qt = dbl(nq), *kt = dbl(nq), *vt = dbl(nx), *la = dbl(nh);
    double *dtp = dbl(nh), *sig = dbl(nh);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t h = 0; h < H; h++) {
            const int64_t rh = r * H + h, grp = h / hpg;
            const double d = (double)dt[rh] + (dt_bias ? (double)dt_bias[h] : 0.0);
            dtp[rh] = softplus ? log1p(exp(d)) : d;
            sig[rh] = softplus ? 1.0 / (1.0 + exp(-d)) : 1.0;
            la[rh] = dtp[rh] * A[h];
            for (int64_t i = 0; i < Nst; i++) {
                qt[rh * Nst + i] = Cm[(r * G + grp) * Nst + i];
                kt[rh * Nst + i] = Bm[(r * G + grp) * Nst + i];
            }
            for (int64_t p = 0; p < P; p++) vt[rh * P + p] = dtp[rh] * x[rh * P + p];
        }
    double *dyd = dup_d(dy, nx), *s0d = dup_d(s0, ns), *dsd = dup_d(dsT, ns);
    double *gq = dbl(nq), *gk = dbl(nq), *gv = dbl(nx), *gla = dbl(nh), *gterm = dbl(nh);
    const ref_lin_terms terms = {gterm, NULL, NULL};
    ref_lin_backward(&sh, qt, kt, vt, la, s0d, NULL, dyd, dsd, NULL, gq, gk, gv, gla, ds0, NULL,
                     &terms);
    for (int64_t h = 0; h < H; h++) {
        dA[h] = 0.0;
        if (dD) dD[h] = 0.0;
        if (ddt_bias) ddt_bias[h] = 0.0;
        if (sc && sc->dA) sc->dA[h] = 0.0;
        if (sc && sc->dA_abs) sc->dA_abs[h] = 0.0;
        if (sc && sc->ddt_bias) sc->ddt_bias[h] = 0.0;
    }
    memset(dBm, 0, sizeof(double) * (size_t)(rows * G * Nst));
    memset(dCm, 0, sizeof(double) * (size_t)(rows * G * Nst));
    for (int64_t r = 0; r < rows; r++)
        for (int64_t h = 0; h < H; h++) {
            const int64_t rh = r * H + h, grp = h / hpg;
            double xdv = 0.0, xdy = 0.0;
            for (int64_t p = 0; p < P; p++) {
                const double xp = x[rh * P + p];
                dx[rh * P + p] = dtp[rh] * gv[rh * P + p] + (D ? (double)D[h] * dyd[rh * P + p] : 0.0);
                xdv += xp * gv[rh * P + p];
                xdy += xp * dyd[rh * P + p];
            }
            const double g = sig[rh] * (xdv + (double)A[h] * gla[rh]);
            ddt[rh] = g;
            dA[h] += dtp[rh] * gla[rh];
            if (dD) dD[h] += xdy;
            if (ddt_bias) ddt_bias[h] += g;
            for (int64_t i = 0; i < Nst; i++) {
                dCm[(r * G + grp) * Nst + i] += gq[rh * Nst + i];
                dBm[(r * G + grp) * Nst + i] += gk[rh * Nst + i];
            }
            if (sc) {
                const double e = sig[rh] * fabs((double)A[h]) * gterm[rh];
                if (sc->ddt) sc->ddt[rh] = e;
                if (sc->dA) sc->dA[h] += dtp[rh] * gterm[rh];
                if (sc->dA_abs) sc->dA_abs[h] += fabs(dtp[rh] * gla[rh]);
                if (sc->ddt_bias) sc->ddt_bias[h] += e;
            }
        }
    free(qt), free(kt), free(vt), free(la), free(dtp), free(sig), free(dyd), free(s0d);
    free(dsd), free(gq), free(gk), free(gv), free(gla), free(gterm);
}
