/* tests/test_titans_backward_ref.c -- the float64 backward of the Titans
 * linear memory (tests/ref/ref_titans_backward.c, derived in
 * docs/titans-backward.md) against central finite differences of its float64
 * forward, and that forward against tests/ref's ref_titans. No library call:
 * a backend-independent check that uses the harness only for reporting, as
 * the other backward tests' finite-difference checks do (the library's
 * seqk_titans_backward does not exist yet, issue #16).
 *
 * Cases: tiny shapes (T <= 11, K, V <= 4), mini-batch sizes 1, 3, 4 with T
 * not a multiple of b, with and without the initial state (its pos not 0
 * for some (sequence, head), so that a call starts inside a mini-batch) and
 * the gradient of the final state, the L2 norm of q and k on and off, varlen
 * with an empty and a length-1 sequence.
 *
 * Tolerance: every gradient tensor within ||g - fd|| / ||fd|| <= 1e-7 (the
 * max elementwise error, against the largest |fd|, is printed too); the
 * double forward equals ref_titans to 1e-13.
 */
#include "harness.h"
#include "ref/ref_titans.h"
#include "ref/ref_titans_backward.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define FD_TOL 1e-7
#define FD_EPS 1e-5

typedef struct {
    int64_t B, T, H, K, V;
    int64_t b;
    int l2, s0, dso;
    const int32_t *cu;
    int64_t N;
} fdcase;

enum { NX = 7 }; /* q, k, v, eta, theta, alpha, s0 */

typedef struct {
    const fdcase *f;
    double scale;
    double *x[NX];
    size_t n[NX];
    double *dout, *dso, *o, *sf;
    size_t nv, ns;
} fdctx;

/* L = <dout, o> + <dso, s_fin> of the float64 forward (dso's pos and
 * reserved entries are 0). */
static double fd_loss(fdctx *c)
{
    const fdcase *f = c->f;
    ref_titans64(f->B, f->T, f->H, f->K, f->V, c->scale, f->l2, f->b, c->x[0], c->x[1], c->x[2],
                 c->x[3], c->x[4], c->x[5], f->s0 ? c->x[6] : NULL, c->o, c->sf, f->cu, f->N);
    double s = 0.0;
    for (size_t i = 0; i < c->nv; i++) s += c->dout[i] * c->o[i];
    if (f->dso)
        for (size_t i = 0; i < c->ns; i++) s += c->dso[i] * c->sf[i];
    return s;
}

static void describe(const fdcase *f, char *buf, size_t len)
{
    snprintf(buf, len, "B=%lld T=%lld H=%lld K=%lld V=%lld b=%lld%s%s%s%s",
             (long long)f->B, (long long)f->T, (long long)f->H, (long long)f->K,
             (long long)f->V, (long long)f->b, f->l2 ? " l2norm" : "", f->s0 ? " s0" : "",
             f->dso ? " dstate_out" : "", f->cu ? " varlen" : "");
}

/* The double forward against ref_titans on float inputs (the same values). */
static void forward_check(fdctx *c, const char *what)
{
    const fdcase *f = c->f;
    float *xf[NX];
    for (int a = 0; a < NX; a++) {
        xf[a] = th_floats(c->n[a] + 1);
        for (size_t i = 0; i < c->n[a]; i++) xf[a][i] = (float)c->x[a][i];
    }
    double *x64[NX];
    for (int a = 0; a < NX; a++) {
        x64[a] = th_doubles(c->n[a] + 1);
        for (size_t i = 0; i < c->n[a]; i++) x64[a][i] = xf[a][i];
    }
    double *o1 = th_doubles(c->nv + 1), *o2 = th_doubles(c->nv + 1);
    double *s1 = th_doubles(c->ns + 1), *s2 = th_doubles(c->ns + 1);
    ref_titans(f->B, f->T, f->H, f->K, f->V, c->scale, f->l2, f->b, xf[0], xf[1], xf[2], xf[3],
               xf[4], xf[5], f->s0 ? xf[6] : NULL, o1, s1, f->cu, f->N);
    ref_titans64(f->B, f->T, f->H, f->K, f->V, c->scale, f->l2, f->b, x64[0], x64[1], x64[2],
                 x64[3], x64[4], x64[5], f->s0 ? x64[6] : NULL, o2, s2, f->cu, f->N);
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < c->nv; i++) {
        num += (o1[i] - o2[i]) * (o1[i] - o2[i]);
        den += o1[i] * o1[i];
    }
    for (size_t i = 0; i < c->ns; i++) {
        num += (s1[i] - s2[i]) * (s1[i] - s2[i]);
        den += s1[i] * s1[i];
    }
    const double rel = den > 0 ? sqrt(num / den) : sqrt(num);
    th_check(rel <= 1e-13, "ref_titans64 vs ref_titans: %s: o and state rel err %.3g", what, rel);
    for (int a = 0; a < NX; a++) {
        free(xf[a]);
        free(x64[a]);
    }
    free(o1);
    free(o2);
    free(s1);
    free(s2);
}

static void fd_case(const fdcase *f)
{
    const int64_t N = f->cu ? f->N : f->B, rows = f->B * f->T, E = 3 * f->K * f->V + 8;
    const int64_t KV = f->K * f->V;
    fdctx c;
    c.f = f;
    c.scale = 0.8;
    c.n[0] = c.n[1] = (size_t)(rows * f->H * f->K);
    c.n[2] = (size_t)(rows * f->H * f->V);
    c.n[3] = c.n[4] = c.n[5] = (size_t)(rows * f->H);
    c.n[6] = (size_t)(N * f->H * E);
    c.nv = c.n[2];
    c.ns = c.n[6];
    static const char *names[NX] = {"dq", "dk", "dv", "deta", "dtheta", "dalpha", "dstate_in"};
    double *gr[NX], *fd[NX];
    for (int a = 0; a < NX; a++) {
        c.x[a] = th_doubles(c.n[a] + 1);
        gr[a] = th_doubles(c.n[a] + 1);
        fd[a] = th_doubles(c.n[a] + 1);
    }
    for (size_t i = 0; i < c.n[0]; i++) c.x[0][i] = th_uniform(-1, 1);
    for (int64_t r = 0; r < rows * f->H; r++) { /* keys of norm <= 1 without the L2 norm */
        double s = 0.0;
        for (int64_t i = 0; i < f->K; i++) {
            const double e = th_uniform(-1, 1);
            c.x[1][r * f->K + i] = e;
            s += e * e;
        }
        const double to = f->l2 ? 2.0 : th_uniform(0.6, 1.0);
        for (int64_t i = 0; i < f->K; i++) c.x[1][r * f->K + i] *= to / sqrt(s);
    }
    for (size_t i = 0; i < c.n[2]; i++) c.x[2][i] = th_uniform(-1, 1);
    for (size_t i = 0; i < c.n[3]; i++) {
        c.x[3][i] = th_uniform(0.1, 0.95);  /* eta */
        c.x[4][i] = th_uniform(0.05, 1.0);  /* theta */
        c.x[5][i] = th_uniform(0.02, 0.6);  /* alpha */
    }
    /* the state: M, S, Mhat random, pos = (n H + h + 1) mod b (0 for some
     * blocks when b > 1 and there are several), reserved 0 */
    for (int64_t blk = 0; blk < N * f->H; blk++) {
        double *s = c.x[6] + blk * E;
        for (int64_t i = 0; i < 3 * KV; i++) s[i] = th_uniform(-0.5, 0.5);
        s[3 * KV] = (double)((blk + 1) % f->b);
        for (int i = 1; i < 8; i++) s[3 * KV + i] = 0.0;
    }
    c.dout = th_doubles(c.nv + 1);
    c.dso = th_doubles(c.ns + 1);
    for (size_t i = 0; i < c.nv; i++) c.dout[i] = th_uniform(-1, 1);
    for (int64_t blk = 0; blk < N * f->H; blk++)
        for (int64_t i = 0; i < 3 * KV; i++) c.dso[blk * E + i] = th_uniform(-1, 1);
    c.o = th_doubles(c.nv + 1);
    c.sf = th_doubles(c.ns + 1);

    char what[160];
    describe(f, what, sizeof what);
    forward_check(&c, what);

    ref_titans_backward64(f->B, f->T, f->H, f->K, f->V, c.scale, f->l2, f->b, c.x[0], c.x[1],
                          c.x[2], c.x[3], c.x[4], c.x[5], f->s0 ? c.x[6] : NULL, c.dout,
                          f->dso ? c.dso : NULL, gr[0], gr[1], gr[2], gr[3], gr[4], gr[5],
                          f->s0 ? gr[6] : NULL, f->cu, f->N);
    for (int a = 0; a < NX; a++) {
        if (a == 6 && !f->s0) continue;
        for (size_t i = 0; i < c.n[a]; i++) {
            if (a == 6 && (int64_t)(i % (size_t)E) >= 3 * KV) continue; /* pos, reserved */
            const double x0 = c.x[a][i];
            c.x[a][i] = x0 + FD_EPS;
            const double lp = fd_loss(&c);
            c.x[a][i] = x0 - FD_EPS;
            const double lm = fd_loss(&c);
            c.x[a][i] = x0;
            fd[a][i] = (lp - lm) / (2 * FD_EPS);
        }
        double num = 0.0, den = 0.0, mx = 0.0, mref = 0.0;
        for (size_t i = 0; i < c.n[a]; i++) {
            const double d = gr[a][i] - fd[a][i];
            num += d * d;
            den += fd[a][i] * fd[a][i];
            if (fabs(d) > mx) mx = fabs(d);
            if (fabs(fd[a][i]) > mref) mref = fabs(fd[a][i]);
        }
        const double rel = den > 0 ? sqrt(num / den) : sqrt(num);
        th_check(rel <= FD_TOL && den > 0 && rel == rel,
                 "reference vs finite differences: %s: %s rel err %.3g (max elementwise %.3g)",
                 what, names[a], rel, mref > 0 ? mx / mref : mx);
    }
    for (int a = 0; a < NX; a++) {
        free(c.x[a]);
        free(gr[a]);
        free(fd[a]);
    }
    free(c.dout);
    free(c.dso);
    free(c.o);
    free(c.sf);
}

/* With pos = 0 in the state, Mhat_in is not read: its gradient is exactly 0. */
static void unread_mhat_check(void)
{
    enum { K = 3, V = 2, T = 4, KV = K * V, E = 3 * KV + 8 };
    double q[T * K], k[T * K], v[T * V], eta[T], theta[T], alpha[T], s0[E], dout[T * V], dso[E];
    for (int64_t i = 0; i < T * K; i++) {
        q[i] = th_uniform(-1, 1);
        k[i] = th_uniform(-0.5, 0.5);
    }
    for (int64_t i = 0; i < T * V; i++) {
        v[i] = th_uniform(-1, 1);
        dout[i] = th_uniform(-1, 1);
    }
    for (int64_t t = 0; t < T; t++) {
        eta[t] = th_uniform(0.1, 0.9);
        theta[t] = th_uniform(0.1, 0.9);
        alpha[t] = th_uniform(0.1, 0.5);
    }
    for (int64_t i = 0; i < E; i++) {
        s0[i] = i < 3 * KV ? th_uniform(-1, 1) : 0.0;
        dso[i] = i < 3 * KV ? th_uniform(-1, 1) : 0.0;
    }
    double dq[T * K], dk[T * K], dv[T * V], de[T], dt[T], da[T], ds[E];
    ref_titans_backward64(1, T, 1, K, V, 0.5, 0, 3, q, k, v, eta, theta, alpha, s0, dout, dso, dq,
                          dk, dv, de, dt, da, ds, NULL, 0);
    int zero = 1;
    for (int64_t i = 0; i < KV; i++) zero &= ds[2 * KV + i] == 0.0;
    th_check(zero, "reference: pos_in = 0: dMhat_in = 0");
}

int main(int argc, char **argv)
{
    th_backend *be;
    (void)th_init(argc, argv, &be);
    th_seed(31);
    static const int32_t cu[5] = {0, 3, 3, 4, 11}; /* lengths 3, 0, 1, 7 */
    static const int64_t bs[3] = {1, 3, 4};
    for (int l2 = 0; l2 < 2; l2++)
        for (int ib = 0; ib < 3; ib++) {
            const int64_t b = bs[ib];
            const fdcase cases[] = {
                /* B  T  H  K  V  b  l2  s0 dso cu  N */
                {1, 11, 1, 4, 3, b, l2, 1, 1, NULL, 0},
                {2, 7, 2, 3, 4, b, l2, 0, 0, NULL, 0},
                {2, 5, 1, 2, 2, b, l2, 1, 0, NULL, 0},
                {1, 10, 2, 4, 4, b, l2, 0, 1, NULL, 0},
                {1, 1, 1, 3, 2, b, l2, 1, 1, NULL, 0},
                {1, 11, 2, 4, 2, b, l2, 1, 1, cu, 4},
                {1, 11, 1, 3, 3, b, l2, 0, 1, cu, 4},
            };
            for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) fd_case(&cases[i]);
        }
    unread_mhat_check();
    return th_finish();
}
