/* tests/ref/ref_sscan_backward.c -- see ref_sscan_backward.h. */
#include "ref_sscan_backward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void seq_rows(const ref_ss_problem *p, int64_t n, int64_t *r0, int64_t *r1)
{
    *r0 = p->cu ? p->cu[n] : n * p->T;
    *r1 = p->cu ? p->cu[n + 1] : (n + 1) * p->T;
}

static double step_of(const ref_ss_problem *p, int64_t r, int64_t d, double *x)
{
    const double v = p->dt[r * p->D + d] + (p->dt_bias ? p->dt_bias[d] : 0.0);
    if (x) *x = v;
    return p->softplus ? (v > 30.0 ? v + log1p(exp(-v)) : log1p(exp(v))) : v;
}

static double sigm(double x) { return 1.0 / (1.0 + exp(-x)); }

void ref_ss_forward_d(const ref_ss_problem *p, double *y, double *s_fin)
{
    const int64_t D = p->D, Ns = p->Nst, G = p->G;
    double *h = malloc((size_t)Ns * sizeof(double));
    for (int64_t n = 0; n < p->N; n++)
        for (int64_t d = 0; d < D; d++) {
            const int64_t g = d / (D / G);
            for (int64_t s = 0; s < Ns; s++) h[s] = p->s0 ? p->s0[(n * D + d) * Ns + s] : 0.0;
            int64_t r0, r1;
            seq_rows(p, n, &r0, &r1);
            for (int64_t r = r0; r < r1; r++) {
                const double dl = step_of(p, r, d, NULL), uv = p->u[r * D + d];
                double acc = 0.0;
                for (int64_t s = 0; s < Ns; s++) {
                    const int64_t bc = (r * G + g) * Ns + s;
                    h[s] = exp(dl * p->A[d * Ns + s]) * h[s] + dl * p->Bm[bc] * uv;
                    acc += p->Cm[bc] * h[s];
                }
                if (p->Dskip) acc += p->Dskip[d] * uv;
                if (p->z) acc *= p->z[r * D + d] * sigm(p->z[r * D + d]);
                if (y) y[r * D + d] = acc;
            }
            if (s_fin)
                for (int64_t s = 0; s < Ns; s++) s_fin[(n * D + d) * Ns + s] = h[s];
        }
    free(h);
}

double ref_ss_loss_d(const ref_ss_problem *p, const double *dy, const double *dstate_out)
{
    const int64_t rows = p->B * p->T, ns = p->N * p->D * p->Nst;
    double *y = malloc((size_t)(rows * p->D + 1) * sizeof(double));
    double *sf = malloc((size_t)(ns + 1) * sizeof(double));
    ref_ss_forward_d(p, y, sf);
    double L = 0.0;
    for (int64_t i = 0; i < rows * p->D; i++) L += dy[i] * y[i];
    if (dstate_out)
        for (int64_t i = 0; i < ns; i++) L += dstate_out[i] * sf[i];
    free(y);
    free(sf);
    return L;
}

void ref_ss_backward_d(const ref_ss_problem *p, const double *dy, const double *dstate_out,
                       double *du, double *ddt, double *dA, double *dBm, double *dCm,
                       double *dDskip, double *dz, double *ddt_bias, double *ds0)
{
    const int64_t D = p->D, Ns = p->Nst, G = p->G, rows = p->B * p->T;
    memset(dBm, 0, (size_t)(rows * G * Ns) * sizeof(double));
    memset(dCm, 0, (size_t)(rows * G * Ns) * sizeof(double));
    memset(dA, 0, (size_t)(D * Ns) * sizeof(double));
    for (int64_t d = 0; d < D; d++) dDskip[d] = ddt_bias[d] = 0.0;
    int64_t Lmax = 0;
    for (int64_t n = 0; n < p->N; n++) {
        int64_t r0, r1;
        seq_rows(p, n, &r0, &r1);
        if (r1 - r0 > Lmax) Lmax = r1 - r0;
    }
    /* hs[i][s]: the state after token i of the sequence (hs[0]: before) */
    double *hs = malloc((size_t)((Lmax + 1) * Ns) * sizeof(double));
    double *lam = malloc((size_t)Ns * sizeof(double)), *mu = malloc((size_t)Ns * sizeof(double));
    for (int64_t n = 0; n < p->N; n++)
        for (int64_t d = 0; d < D; d++) {
            const int64_t g = d / (D / G);
            int64_t r0, r1;
            seq_rows(p, n, &r0, &r1);
            for (int64_t s = 0; s < Ns; s++) hs[s] = p->s0 ? p->s0[(n * D + d) * Ns + s] : 0.0;
            for (int64_t r = r0; r < r1; r++) {
                const double dl = step_of(p, r, d, NULL), uv = p->u[r * D + d];
                const double *hp = hs + (r - r0) * Ns;
                double *hc = hs + (r - r0 + 1) * Ns;
                for (int64_t s = 0; s < Ns; s++)
                    hc[s] = exp(dl * p->A[d * Ns + s]) * hp[s] +
                            dl * p->Bm[(r * G + g) * Ns + s] * uv;
            }
            for (int64_t s = 0; s < Ns; s++)
                mu[s] = dstate_out ? dstate_out[(n * D + d) * Ns + s] : 0.0;
            for (int64_t r = r1 - 1; r >= r0; r--) {
                double x;
                const double dl = step_of(p, r, d, &x), uv = p->u[r * D + d];
                const double dyv = dy[r * D + d];
                const double *hp = hs + (r - r0) * Ns, *hc = hs + (r - r0 + 1) * Ns;
                const double *Bt = p->Bm + (r * G + g) * Ns, *Ct = p->Cm + (r * G + g) * Ns;
                double gy = dyv;
                if (p->z) {
                    const double zv = p->z[r * D + d], sg = sigm(zv);
                    double yp = p->Dskip ? p->Dskip[d] * uv : 0.0;
                    for (int64_t s = 0; s < Ns; s++) yp += Ct[s] * hc[s];
                    gy = dyv * zv * sg;
                    dz[r * D + d] = dyv * yp * sg * (1.0 + zv * (1.0 - sg));
                }
                double dstep = 0.0, sb = 0.0;
                for (int64_t s = 0; s < Ns; s++) {
                    const double a = exp(dl * p->A[d * Ns + s]);
                    lam[s] = Ct[s] * gy + mu[s];
                    dCm[(r * G + g) * Ns + s] += gy * hc[s];
                    dBm[(r * G + g) * Ns + s] += lam[s] * dl * uv;
                    dstep += lam[s] * (p->A[d * Ns + s] * a * hp[s] + Bt[s] * uv);
                    dA[d * Ns + s] += lam[s] * dl * a * hp[s];
                    sb += Bt[s] * lam[s];
                    mu[s] = a * lam[s];
                }
                du[r * D + d] = dl * sb + (p->Dskip ? p->Dskip[d] * gy : 0.0);
                const double dd = p->softplus ? dstep * sigm(x) : dstep;
                ddt[r * D + d] = dd;
                ddt_bias[d] += dd;
                dDskip[d] += gy * uv;
            }
            if (ds0)
                for (int64_t s = 0; s < Ns; s++) ds0[(n * D + d) * Ns + s] = mu[s];
        }
    free(hs);
    free(lam);
    free(mu);
}
