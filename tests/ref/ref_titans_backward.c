/* tests/ref/ref_titans_backward.c -- see ref_titans_backward.h. Double
 * precision, token loops. */
#include "ref_titans_backward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* xt = x / r with r = sqrt(sum x^2 + 1e-6) (l2norm) or 1; returns r. */
static double tb_norm(int64_t K, int l2norm, const double *x, double *xt)
{
    double r = 1.0;
    if (l2norm) {
        double s = 0.0;
        for (int64_t i = 0; i < K; i++) s += x[i] * x[i];
        r = sqrt(s + 1e-6);
    }
    for (int64_t i = 0; i < K; i++) xt[i] = x[i] / r;
    return r;
}

static void tb_range(const int32_t *cu, int64_t T, int64_t n, int64_t *start, int64_t *end)
{
    *start = cu ? cu[n] : n * T;
    *end = cu ? cu[n + 1] : (n + 1) * T;
}

static double *tb_alloc(size_t n)
{
    double *p = calloc(n ? n : 1, sizeof(double));
    if (!p) abort();
    return p;
}

void ref_titans64(int64_t B, int64_t T, int64_t H, int64_t K, int64_t V, double scale,
                  int l2norm, int64_t b, const double *q, const double *k, const double *v,
                  const double *eta, const double *theta, const double *alpha, const double *s0,
                  double *o, double *s_fin, const int32_t *cu, int64_t N)
{
    if (!cu) N = B;
    const int64_t KV = K * V, E = 3 * KV + 8;
    double *M = tb_alloc((size_t)(3 * KV)), *S = M + KV, *Mh = M + 2 * KV;
    double *qt = tb_alloc((size_t)K), *kt = tb_alloc((size_t)K), *e = tb_alloc((size_t)V);
    for (int64_t n = 0; n < N; n++)
        for (int64_t h = 0; h < H; h++) {
            const double *blk = s0 ? s0 + (n * H + h) * E : NULL;
            int64_t pos = blk ? (int64_t)blk[3 * KV] : 0;
            for (int64_t i = 0; i < KV; i++) {
                M[i] = blk ? blk[i] : 0.0;
                S[i] = blk ? blk[KV + i] : 0.0;
                Mh[i] = blk && pos != 0 ? blk[2 * KV + i] : 0.0;
            }
            int64_t start, end;
            tb_range(cu, T, n, &start, &end);
            for (int64_t r = start; r < end; r++) {
                const int64_t rh = r * H + h;
                tb_norm(K, l2norm, q + rh * K, qt);
                tb_norm(K, l2norm, k + rh * K, kt);
                for (int64_t i = 0; i < K; i++) qt[i] *= scale;
                if (pos == 0) memcpy(Mh, M, sizeof(double) * (size_t)KV);
                for (int64_t j = 0; j < V; j++) {
                    double s = 0.0;
                    for (int64_t i = 0; i < K; i++) s += Mh[i * V + j] * kt[i];
                    e[j] = s - v[rh * V + j];
                }
                const double et = eta[rh], th = theta[rh], a = 1.0 - alpha[rh];
                for (int64_t i = 0; i < K; i++)
                    for (int64_t j = 0; j < V; j++) {
                        S[i * V + j] = et * S[i * V + j] - th * kt[i] * e[j];
                        M[i * V + j] = a * M[i * V + j] + S[i * V + j];
                    }
                for (int64_t j = 0; j < V; j++) {
                    double s = 0.0;
                    for (int64_t i = 0; i < K; i++) s += M[i * V + j] * qt[i];
                    o[rh * V + j] = s;
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
    free(e);
}

void ref_titans_backward64(int64_t B, int64_t T, int64_t H, int64_t K, int64_t V, double scale,
                           int l2norm, int64_t b, const double *q, const double *k,
                           const double *v, const double *eta, const double *theta,
                           const double *alpha, const double *s0, const double *dout,
                           const double *ds_out, double *dq, double *dk, double *dv,
                           double *deta, double *dtheta, double *dalpha, double *ds_in,
                           const int32_t *cu, int64_t N)
{
    if (!cu) N = B;
    const int64_t KV = K * V, E = 3 * KV + 8;
    int64_t maxlen = 0;
    for (int64_t n = 0; n < N; n++) {
        int64_t start, end;
        tb_range(cu, T, n, &start, &end);
        if (end - start > maxlen) maxlen = end - start;
    }
    const size_t L1 = (size_t)(maxlen + 1);
    /* per token of the sequence: M_{t-1}, S_{t-1}, Mhat_t (then M_t at the
     * end), n(q), k~, the norms, e_t, whether t starts a mini-batch */
    double *Mp = tb_alloc(L1 * (size_t)KV), *Sp = tb_alloc(L1 * (size_t)KV);
    double *Hp = tb_alloc(L1 * (size_t)KV);
    double *qt = tb_alloc(L1 * (size_t)K), *kt = tb_alloc(L1 * (size_t)K);
    double *rq = tb_alloc(L1), *rk = tb_alloc(L1), *et = tb_alloc(L1 * (size_t)V);
    int *starts = calloc(L1, sizeof(int));
    double *dM = tb_alloc((size_t)KV), *dS = tb_alloc((size_t)KV), *dH = tb_alloc((size_t)KV);
    double *G = tb_alloc((size_t)KV), *Hc = tb_alloc((size_t)KV);
    double *dqt = tb_alloc((size_t)K), *dkt = tb_alloc((size_t)K), *z = tb_alloc((size_t)K);
    double *w = tb_alloc((size_t)V);
    if (!starts) abort();
    for (int64_t n = 0; n < N; n++)
        for (int64_t h = 0; h < H; h++) {
            const double *blk = s0 ? s0 + (n * H + h) * E : NULL;
            const int64_t pos0 = blk ? (int64_t)blk[3 * KV] : 0;
            int64_t start, end;
            tb_range(cu, T, n, &start, &end);
            const int64_t len = end - start;
            /* forward, keeping what the reverse loop reads */
            double *M = Mp, *S = Sp; /* slot 0: the state in */
            for (int64_t i = 0; i < KV; i++) {
                M[i] = blk ? blk[i] : 0.0;
                S[i] = blk ? blk[KV + i] : 0.0;
                Hc[i] = blk && pos0 != 0 ? blk[2 * KV + i] : 0.0;
            }
            int64_t pos = pos0;
            for (int64_t t = 0; t < len; t++) {
                const int64_t rh = (start + t) * H + h;
                double *q_t = qt + t * K, *k_t = kt + t * K, *e_t = et + t * V;
                rq[t] = tb_norm(K, l2norm, q + rh * K, q_t); /* n(q); q~ = scale n(q) */
                rk[t] = tb_norm(K, l2norm, k + rh * K, k_t);
                const double *Mo = Mp + t * KV, *So = Sp + t * KV;
                double *Mn = Mp + (t + 1) * KV, *Sn = Sp + (t + 1) * KV;
                starts[t] = pos == 0;
                if (pos == 0) memcpy(Hc, Mo, sizeof(double) * (size_t)KV);
                memcpy(Hp + t * KV, Hc, sizeof(double) * (size_t)KV);
                for (int64_t j = 0; j < V; j++) {
                    double s = 0.0;
                    for (int64_t i = 0; i < K; i++) s += Hc[i * V + j] * k_t[i];
                    e_t[j] = s - v[rh * V + j];
                }
                const double a = 1.0 - alpha[rh];
                for (int64_t i = 0; i < K; i++)
                    for (int64_t j = 0; j < V; j++) {
                        Sn[i * V + j] = eta[rh] * So[i * V + j] - theta[rh] * k_t[i] * e_t[j];
                        Mn[i * V + j] = a * Mo[i * V + j] + Sn[i * V + j];
                    }
                pos = (pos + 1) % b;
            }
            /* the adjoint of the final state */
            const double *dblk = ds_out ? ds_out + (n * H + h) * E : NULL;
            for (int64_t i = 0; i < KV; i++) {
                dM[i] = dblk ? dblk[i] : 0.0;
                dS[i] = dblk ? dblk[KV + i] : 0.0;
                const double dmh = dblk ? dblk[2 * KV + i] : 0.0;
                if (pos == 0) { /* Mhat_fin = M_fin */
                    dM[i] += dmh;
                    dH[i] = 0.0;
                } else {        /* Mhat_fin = the current mini-batch's Mhat */
                    dH[i] = dmh;
                }
            }
            /* the reverse token loop */
            for (int64_t t = len - 1; t >= 0; t--) {
                const int64_t rh = (start + t) * H + h;
                const double *q_t = qt + t * K, *k_t = kt + t * K, *e_t = et + t * V;
                const double *Mo = Mp + t * KV, *So = Sp + t * KV, *Mn = Mp + (t + 1) * KV;
                const double *Ht = Hp + t * KV, *dO = dout + rh * V;
                /* o_t = M_t^T q~_t */
                for (int64_t i = 0; i < K; i++) {
                    double s = 0.0;
                    for (int64_t j = 0; j < V; j++) {
                        dM[i * V + j] += scale * q_t[i] * dO[j];
                        s += Mn[i * V + j] * dO[j];
                    }
                    dqt[i] = s;
                }
                /* M_t = a_t M_{t-1} + S_t;  S_t = eta_t S_{t-1} - theta_t k~ e^T */
                double da = 0.0, de_ = 0.0;
                for (int64_t i = 0; i < KV; i++) {
                    G[i] = dS[i] + dM[i];
                    da += dM[i] * Mo[i];
                    de_ += G[i] * So[i];
                }
                dalpha[rh] = -da;
                deta[rh] = de_;
                const double th = theta[rh];
                for (int64_t j = 0; j < V; j++) {
                    double s = 0.0;
                    for (int64_t i = 0; i < K; i++) s += G[i * V + j] * k_t[i];
                    w[j] = s; /* de_t = -theta w */
                    dv[rh * V + j] = th * s;
                }
                double dth = 0.0;
                for (int64_t i = 0; i < K; i++) {
                    double s = 0.0, hs = 0.0;
                    for (int64_t j = 0; j < V; j++) {
                        s += G[i * V + j] * e_t[j];
                        hs += Ht[i * V + j] * w[j];
                    }
                    z[i] = s;
                    dth -= k_t[i] * s;
                    dkt[i] = -th * hs - th * s; /* Mhat de - theta z, de = -theta w */
                }
                dtheta[rh] = dth;
                for (int64_t i = 0; i < K; i++)
                    for (int64_t j = 0; j < V; j++) dH[i * V + j] -= th * k_t[i] * w[j];
                const double a = 1.0 - alpha[rh];
                for (int64_t i = 0; i < KV; i++) {
                    dM[i] *= a;
                    dS[i] = eta[rh] * G[i];
                }
                if (starts[t]) { /* Mhat_t = M_{t-1} */
                    for (int64_t i = 0; i < KV; i++) {
                        dM[i] += dH[i];
                        dH[i] = 0.0;
                    }
                }
                /* through the norms: q~ = scale n(q), k~ = n(k) */
                double pq = 0.0, pk = 0.0;
                for (int64_t i = 0; i < K; i++) {
                    pq += q_t[i] * scale * dqt[i];
                    pk += k_t[i] * dkt[i];
                }
                for (int64_t i = 0; i < K; i++) {
                    if (l2norm) {
                        dq[rh * K + i] = (scale * dqt[i] - q_t[i] * pq) / rq[t];
                        dk[rh * K + i] = (dkt[i] - k_t[i] * pk) / rk[t];
                    } else {
                        dq[rh * K + i] = scale * dqt[i];
                        dk[rh * K + i] = dkt[i];
                    }
                }
            }
            if (ds_in) {
                double *dst = ds_in + (n * H + h) * E;
                for (int64_t i = 0; i < KV; i++) {
                    dst[i] = dM[i];
                    dst[KV + i] = dS[i];
                    dst[2 * KV + i] = pos0 != 0 ? dH[i] : 0.0;
                }
                for (int i = 0; i < 8; i++) dst[3 * KV + i] = 0.0;
            }
        }
    free(Mp);
    free(Sp);
    free(Hp);
    free(qt);
    free(kt);
    free(rq);
    free(rk);
    free(et);
    free(starts);
    free(dM);
    free(dS);
    free(dH);
    free(G);
    free(Hc);
    free(dqt);
    free(dkt);
    free(z);
    free(w);
}
