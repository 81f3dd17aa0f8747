/* tests/test_linear_state_backward.c -- the backward (training) of linear
 * attention, RetNet retention, gated retention and the Mamba2 entry
 * (DESIGN 3.7, seqk.h "Backward (training) of the linear-state modules"), on
 * every backend, against the float64 reverse token loops of
 * tests/ref/ref_linear_backward.c; those references first against central
 * finite differences of the float64 forwards of tests/ref/ref_linear.c;
 * determinism (two runs, and 1 / 2 / 3 threads); T = 0; the workspace query
 * as an upper bound; validation rules.
 *
 * Tolerances: every gradient tensor within ||x - ref|| / ||ref|| <= 1e-4
 * (NaN never passes), every output NaN-poisoned before the call, one element
 * past its end too (it must stay NaN). One exception: with the normaliser,
 * dq~ = (S dout - (dout . o) z) / den and dk~ = dS v + dz are differences
 * whose parts cancel where o hardly depends on q, k (T = 1 without a state:
 * o = v (q.k) / (q.k + 1e-6), so dq, dk ~ 1e-6 of their parts, below fp32's
 * resolution of them); their error is taken against max(||ref||, ||parts||)
 * (the parts' sizes from the reference, per token). The gate-borne gradients
 * (dg; Mamba2's ddt, dA, ddt_bias) are checked plainly; the failure message
 * also gives their error against the size of the terms of DESIGN 3.7's
 * formula sum_{i>=t} (q~.dq~ - k~.dk~) (which cancel to ~exp(g) under strong
 * decay): an error small against those terms means that cancellation.
 *
 * Heavy cases (T = 65536) run on every backend, except that under the CUDA
 * emulator (tools/cuda_emu/run.sh, which sets EMU_ORDER) they run on the CPU
 * backend only: the emulator runs each GPU thread as a fiber and has no
 * timing or numerics of its own to show there.
 */
#include "fixtures.h"
#include "ref/ref_linear.h"
#include "ref/ref_linear_backward.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL 1e-4
#define FD_TOL 1e-6

enum module {
    LINATTN,
    LINATTN_ELU1,
    LINATTN_NORM,
    LINATTN_ELU_NORM,
    RETNET,
    RETNET_DEFAULT,
    GATED,
    NMODULES
};
static const char *module_name[NMODULES] = {
    "linear_attention",      "linear_attention+elu1",    "linear_attention+norm",
    "linear_attention+elu1+norm", "retention", "retention(default gammas)",
    "gated_retention"};

static int mod_norm(int m) { return m == LINATTN_NORM || m == LINATTN_ELU_NORM; }
static int mod_elu(int m) { return m == LINATTN_ELU1 || m == LINATTN_ELU_NORM; }
static int mod_linattn(int m) { return m <= LINATTN_ELU_NORM; }
static unsigned mod_flags(int m)
{
    return (mod_norm(m) ? SEQK_LINATTN_NORMALIZE : 0u) | (mod_elu(m) ? SEQK_LINATTN_ELU1 : 0u);
}

/* ---- small helpers ---------------------------------------------------------------- */

static bool heavy_skipped(const th_backend *be, int heavy, const char *what)
{
    if (!heavy || be->backend == SEQK_BACKEND_CPU || !getenv("EMU_ORDER")) return false;
    th_skip("%s: heavy case, CPU backend only under the CUDA emulator", what);
    return true;
}

static double rms(const double *x, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += x[i] * x[i];
    return n ? sqrt(s / (double)n) : 0.0;
}

/* One gradient output of a call: its backend buffer (n + 1 floats, poisoned),
 * its reference and, for the ones that are sums of cancelling terms, the
 * sizes of those terms (see the top of the file). */
typedef struct {
    const char *name;
    float *dev;
    size_t n;
    const double *ref;
    const double *terms; /* sizes of summed parts (per token), or NULL */
    size_t nterms;
    int floor;           /* 1: error against max(||ref||, ||terms||); 0: plain (terms: info) */
} gout;

/* Downloads o and checks it (and that the element past its end is still NaN):
 * ||x - ref|| / max(||ref||, ||terms||) <= TOL. */
static void check_gout(th_backend *be, const gout *o, const char *what)
{
    float *host = th_floats(o->n + 1);
    th_download(be, host, o->dev, (o->n + 1) * sizeof(float));
    if (!o->terms) {
        th_check_close(host, o->ref, o->n, TOL, "%s: %s", what, o->name);
    } else if (!o->floor) {
        const double plain = th_rel_err(host, o->ref, o->n);
        double num = 0;
        for (size_t i = 0; i < o->n; i++)
            num += ((double)host[i] - o->ref[i]) * ((double)host[i] - o->ref[i]);
        const double terms = rms(o->terms, o->nterms) * sqrt((double)o->nterms);
        th_check(plain <= TOL, "%s: %s: rel err %.3g (tol %.0g; against the size of the gate "
                 "formula's terms, %.3g: %.3g)", what, o->name, plain, TOL, terms,
                 terms > 0 ? sqrt(num) / terms : sqrt(num));
    } else {
        const double plain = th_rel_err(host, o->ref, o->n);
        const double floor = rms(o->terms, o->nterms) * sqrt((double)o->nterms);
        double num = 0, den = 0;
        for (size_t i = 0; i < o->n; i++) {
            const double e = (double)host[i] - o->ref[i];
            num += e * e;
            den += o->ref[i] * o->ref[i];
        }
        den = fmax(sqrt(den), floor);
        const double err = !isfinite(plain) ? INFINITY : den > 0 ? sqrt(num) / den : sqrt(num);
        th_check(err <= TOL, "%s: %s: rel err %.3g against max(|ref|, |terms| = %.3g) (tol %.0g; "
                 "plain rel err %.3g)", what, o->name, err, floor, TOL, plain);
    }
    th_check(isnan(host[o->n]), "%s: nothing written past %s", what, o->name);
    free(host);
}

/* All outputs downloaded one after another into a new host buffer. */
static float *download_all(th_backend *be, const gout *o, int n, size_t *total)
{
    size_t t = 0;
    for (int i = 0; i < n; i++) t += o[i].n;
    float *host = th_floats(t + 1);
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        th_download(be, host + at, o[i].dev, o[i].n * sizeof(float));
        at += o[i].n;
    }
    *total = t;
    return host;
}

/* ---- the linear-attention / retention / gated-retention cases ------------------------- */

typedef struct {
    int64_t B, T, H, K, V;
    int s0, dsT, dsin; /* initial state given; d(final state) given; dstate_in requested */
    const int32_t *cu;
    int64_t N;
    int64_t chunk;
    double glo, ghi;   /* log-gate range (gated retention) */
    int ws;            /* run with a caller workspace of exactly the queried size */
    int heavy;
} bcase;

/* Host inputs of one case and the reference gradients. */
typedef struct {
    size_t nq, nv, ng, ns, nz;
    float scale;
    float *q, *k, *v, *g, *gamma, *dout, *s0, *z0, *dsT, *dzT;
    double *rdq, *rdk, *rdv, *rdg, *gterm, *qterm, *kterm, *rds0, *rdz0;
} binputs;

static void lin_reference(int mod, const bcase *c, binputs *in)
{
    const float *s0 = c->s0 ? in->s0 : NULL, *dsT = c->dsT ? in->dsT : NULL;
    if (mod_linattn(mod))
        ref_linear_attention_backward(c->B, c->T, c->H, c->K, c->V, in->scale, mod_norm(mod),
                                      mod_elu(mod), in->q, in->k, in->v, in->dout, s0,
                                      mod_norm(mod) && c->s0 ? in->z0 : NULL, dsT,
                                      mod_norm(mod) && c->dsT ? in->dzT : NULL, in->rdq, in->rdk,
                                      in->rdv, in->rds0, in->rdz0, in->qterm, in->kterm, c->cu,
                                      c->N);
    else if (mod == GATED)
        ref_gated_retention_backward(c->B, c->T, c->H, c->K, c->V, in->scale, in->q, in->k, in->v,
                                     in->g, in->dout, s0, dsT, in->rdq, in->rdk, in->rdv, in->rdg,
                                     in->gterm, in->rds0, c->cu, c->N);
    else
        ref_retention_backward(c->B, c->T, c->H, c->K, c->V, in->scale,
                               mod == RETNET ? in->gamma : NULL, in->q, in->k, in->v, in->dout, s0,
                               dsT, in->rdq, in->rdk, in->rdv, in->rds0, c->cu, c->N);
}

static void make_lin(tf_arrays *h, const bcase *c, int mod, binputs *in)
{
    const int64_t N = c->cu ? c->N : c->B, rows = c->B * c->T;
    in->nq = (size_t)(rows * c->H * c->K);
    in->nv = (size_t)(rows * c->H * c->V);
    in->ng = (size_t)(rows * c->H);
    in->ns = (size_t)(N * c->H * c->K * c->V);
    in->nz = (size_t)(N * c->H * c->K);
    in->scale = (float)(1.0 / sqrt((double)c->K));
    /* positive features keep q.z away from 0 for the normaliser without elu+1 */
    const double lo = mod == LINATTN_NORM ? 0.05 : -1.0;
    in->q = tf_random(h, in->nq + 1, lo, 1);
    in->k = tf_random(h, in->nq + 1, lo, 1);
    in->v = tf_random(h, in->nv + 1, -1, 1);
    in->g = tf_random(h, in->ng + 1, c->glo, c->ghi);
    in->gamma = tf_random(h, (size_t)c->H, 0.8, 1.0);
    in->dout = tf_random(h, in->nv + 1, -1, 1);
    in->s0 = tf_random(h, in->ns + 1, -0.5, 0.5);
    in->z0 = tf_random(h, in->nz + 1, 0.5, 1.0);
    in->dsT = tf_random(h, in->ns + 1, -1, 1);
    in->dzT = tf_random(h, in->nz + 1, -1, 1);
    in->rdq = tf_doubles(h, in->nq + 1);
    in->rdk = tf_doubles(h, in->nq + 1);
    in->rdv = tf_doubles(h, in->nv + 1);
    in->rdg = tf_doubles(h, in->ng + 1);
    in->gterm = tf_doubles(h, in->ng + 1);
    in->qterm = tf_doubles(h, in->ng + 1);
    in->kterm = tf_doubles(h, in->ng + 1);
    in->rds0 = tf_doubles(h, in->ns + 1);
    in->rdz0 = tf_doubles(h, in->nz + 1);
    lin_reference(mod, c, in);
}

/* Backend copies of one call's inputs (NULL where the case leaves them out)
 * and its poisoned outputs, with the outputs' list for checking. */
typedef struct {
    float *q, *k, *v, *g, *gamma, *dout, *s0, *z0, *dsT, *dzT;
    int32_t *cu;
    float *dq, *dk, *dv, *dg, *dsin, *dzin;
    gout out[6];
    int nout;
} lin_io;

static void lin_upload(tf_arrays *d, int mod, const bcase *c, const binputs *in, lin_io *x)
{
    const int64_t N = c->cu ? c->N : c->B;
    const int norm = mod_norm(mod);
    memset(x, 0, sizeof *x);
    x->q = tf_upload(d, in->q, in->nq * 4 + 4);
    x->k = tf_upload(d, in->k, in->nq * 4 + 4);
    x->v = tf_upload(d, in->v, in->nv * 4 + 4);
    x->dout = tf_upload(d, in->dout, in->nv * 4 + 4);
    if (mod == GATED) x->g = tf_upload(d, in->g, in->ng * 4 + 4);
    if (mod == RETNET) x->gamma = tf_upload(d, in->gamma, (size_t)c->H * 4);
    if (c->s0) x->s0 = tf_upload(d, in->s0, in->ns * 4 + 4);
    if (c->dsT) x->dsT = tf_upload(d, in->dsT, in->ns * 4 + 4);
    if (norm && c->s0) x->z0 = tf_upload(d, in->z0, in->nz * 4 + 4);
    if (norm && c->dsT) x->dzT = tf_upload(d, in->dzT, in->nz * 4 + 4);
    x->cu = c->cu ? tf_upload(d, c->cu, (size_t)(N + 1) * 4) : NULL;
    x->dq = tf_poisoned(d, in->nq + 1);
    x->dk = tf_poisoned(d, in->nq + 1);
    x->dv = tf_poisoned(d, in->nv + 1);
    /* with the normaliser dq, dk are differences (see ref_lin_backward) */
    x->out[x->nout++] = (gout){"dq", x->dq, in->nq, in->rdq, norm ? in->qterm : NULL, in->ng, 1};
    x->out[x->nout++] = (gout){"dk", x->dk, in->nq, in->rdk, norm ? in->kterm : NULL, in->ng, 1};
    x->out[x->nout++] = (gout){"dv", x->dv, in->nv, in->rdv, NULL, 0, 0};
    if (mod == GATED) {
        x->dg = tf_poisoned(d, in->ng + 1);
        x->out[x->nout++] = (gout){"dg", x->dg, in->ng, in->rdg, in->gterm, in->ng, 0};
    }
    if (c->dsin) {
        x->dsin = tf_poisoned(d, in->ns + 1);
        x->out[x->nout++] = (gout){"dstate_in", x->dsin, in->ns, in->rds0, NULL, 0, 0};
        if (norm) {
            x->dzin = tf_poisoned(d, in->nz + 1);
            x->out[x->nout++] = (gout){"dz_in", x->dzin, in->nz, in->rdz0, NULL, 0, 0};
        }
    }
}

static seqk_status lin_call(seqk_context *ctx, int mod, const bcase *c, float scale,
                            const lin_io *x)
{
    switch (mod) {
    case RETNET:
    case RETNET_DEFAULT:
        return seqk_retention_backward(ctx, c->B, c->T, c->H, c->K, c->V, scale, x->gamma, x->q,
                                       x->k, x->v, x->dout, x->s0, x->dsT, x->dq, x->dk, x->dv,
                                       x->dsin, x->cu, c->N, c->chunk);
    case GATED:
        return seqk_gated_retention_backward(ctx, c->B, c->T, c->H, c->K, c->V, scale, x->q, x->k,
                                             x->v, x->g, x->dout, x->s0, x->dsT, x->dq, x->dk,
                                             x->dv, x->dg, x->dsin, x->cu, c->N, c->chunk);
    default:
        return seqk_linear_attention_backward(ctx, c->B, c->T, c->H, c->K, c->V, scale,
                                              mod_flags(mod), x->q, x->k, x->v, x->dout, x->s0,
                                              x->z0, x->dsT, x->dzT, x->dq, x->dk, x->dv, x->dsin,
                                              x->dzin, x->cu, c->N, c->chunk);
    }
}

static void lin_describe(const bcase *c, int mod, const char *be, const char *extra, char *buf,
                         size_t n)
{
    snprintf(buf, n,
             "%s %s backward%s B=%lld T=%lld H=%lld K=%lld V=%lld chunk=%lld%s%s%s%s%s",
             be, module_name[mod], extra, (long long)c->B, (long long)c->T, (long long)c->H,
             (long long)c->K, (long long)c->V, (long long)c->chunk, c->s0 ? " s0" : "",
             c->dsT ? " dsT" : "", c->dsin ? " dstate_in" : " (no dstate_in)",
             c->cu ? " varlen" : "", c->ws ? " exact-ws" : "");
    if (mod == GATED) {
        size_t l = strlen(buf);
        snprintf(buf + l, n - l, " g~U[%g,%g]", c->glo, c->ghi);
    }
}

/* The gradients against the reference. */
static void lin_case(th_backend *be, int mod, const bcase *c)
{
    char what[320];
    lin_describe(c, mod, be->name, "", what, sizeof what);
    if (th_skipped(be, what) || heavy_skipped(be, c->heavy, what)) return;
    tf_arrays h = tf_arrays_on(NULL), d = tf_arrays_on(be);
    binputs in;
    make_lin(&h, c, mod, &in);
    lin_io x;
    lin_upload(&d, mod, c, &in, &x);
    void *ws = NULL;
    if (c->ws) {
        size_t bytes = 0;
        seqk_status s = seqk_linear_state_backward_workspace_size(
            be->ctx, c->B, c->T, c->H, c->H, c->K, c->V, c->cu ? c->N : 0, c->chunk, &bytes);
        th_check_status(s, SEQK_SUCCESS, "seqk_linear_state_backward_workspace_size");
        ws = tf_workspace_begin(be, s ? 0 : bytes);
    }
    seqk_status s = lin_call(be->ctx, mod, c, in.scale, &x);
    if (c->ws) tf_workspace_end(be, ws);
    if (th_check_status(s, SEQK_SUCCESS, what))
        for (int i = 0; i < x.nout; i++) check_gout(be, &x.out[i], what);
    tf_arrays_free(&d);
    tf_arrays_free(&h);
}

/* T = 65536: finite everywhere, and against the reference. */
static void lin_long(th_backend *be, int mod, const bcase *c)
{
    char what[320];
    lin_describe(c, mod, be->name, " long", what, sizeof what);
    if (th_skipped(be, what) || heavy_skipped(be, c->heavy, what)) return;
    tf_arrays h = tf_arrays_on(NULL), d = tf_arrays_on(be);
    binputs in;
    make_lin(&h, c, mod, &in);
    lin_io x;
    lin_upload(&d, mod, c, &in, &x);
    seqk_status s = lin_call(be->ctx, mod, c, in.scale, &x);
    if (th_check_status(s, SEQK_SUCCESS, what)) {
        size_t n;
        float *all = download_all(be, x.out, x.nout, &n);
        th_check(tf_all_finite(all, n), "%s: every gradient finite", what);
        free(all);
        for (int i = 0; i < x.nout; i++) check_gout(be, &x.out[i], what);
    }
    tf_arrays_free(&d);
    tf_arrays_free(&h);
}

/* Bit-identical gradients: two runs, and (CPU) 1, 2 and 3 threads. */
static void lin_determinism(th_backend *be, int mod, const bcase *c)
{
    char what[320];
    lin_describe(c, mod, be->name, " determinism", what, sizeof what);
    if (th_skipped(be, what)) return;
    tf_arrays h = tf_arrays_on(NULL), d = tf_arrays_on(be);
    binputs in;
    make_lin(&h, c, mod, &in);
    const int threads[5] = {0, 0, 1, 2, 3};
    const int runs = be->backend == SEQK_BACKEND_CPU ? 5 : 2;
    float *first = NULL;
    size_t n0 = 0;
    for (int r = 0; r < runs; r++) {
        th_set_threads(be, threads[r]);
        lin_io x;
        lin_upload(&d, mod, c, &in, &x);
        char w2[360];
        snprintf(w2, sizeof w2, "%s: run %d (threads %d)", what, r + 1, threads[r]);
        if (th_check_status(lin_call(be->ctx, mod, c, in.scale, &x), SEQK_SUCCESS, w2)) {
            size_t n;
            float *all = download_all(be, x.out, x.nout, &n);
            if (!first) {
                first = all, n0 = n;
                for (int i = 0; i < x.nout; i++) check_gout(be, &x.out[i], w2);
            } else {
                th_check(n == n0 && memcmp(all, first, n * sizeof(float)) == 0,
                         "%s: bit-identical to run 1", w2);
                free(all);
            }
        }
        tf_arrays_free(&d);
    }
    th_set_threads(be, 0);
    free(first);
    tf_arrays_free(&h);
}

/* ---- Mamba2 -------------------------------------------------------------------------------- */

typedef struct {
    int64_t B, T, H, P, G, Nst;
    int softplus;
    int D;        /* 0: no D (dD NULL), 1: D and dD, 2: D given, dD not requested */
    int bias;     /* dt_bias given */
    int dbias;    /* ddt_bias requested */
    int s0, dsT, dsin;
    const int32_t *cu;
    int64_t N;
    int64_t chunk;
    double Alo, Ahi, dtlo, dthi; /* A ~ U[Alo, Ahi]; raw dt ~ U[dtlo, dthi] */
    int ws, heavy;
} mcase;

typedef struct {
    size_t nx, nh, nb, ns;
    float *x, *dt, *A, *Bm, *Cm, *D, *bias, *s0, *dy, *dsT;
    double *rdx, *rddt, *rdA, *rdBm, *rdCm, *rdD, *rdbias, *rds0;
    double *sddt, *sdA, *sdbias; /* scales of the gate-borne gradients */
    double *adA;                 /* sum_t |dt'_t dla_t| per head: dA's summands */
} minputs;

static void make_mamba2(tf_arrays *h, const mcase *c, minputs *in)
{
    const int64_t N = c->cu ? c->N : c->B, rows = c->B * c->T;
    in->nx = (size_t)(rows * c->H * c->P);
    in->nh = (size_t)(rows * c->H);
    in->nb = (size_t)(rows * c->G * c->Nst);
    in->ns = (size_t)(N * c->H * c->Nst * c->P);
    const size_t H = (size_t)c->H;
    in->x = tf_random(h, in->nx + 1, -1, 1);
    in->dt = tf_random(h, in->nh + 1, c->dtlo, c->dthi);
    in->A = tf_random(h, H, c->Alo, c->Ahi);
    in->Bm = tf_random(h, in->nb + 1, -1, 1);
    in->Cm = tf_random(h, in->nb + 1, -1, 1);
    in->D = tf_random(h, H, -1, 1);
    /* without softplus, dt + bias must itself be a positive step size */
    in->bias = tf_random(h, H, c->softplus ? -0.5 : 0, 0.5);
    in->s0 = tf_random(h, in->ns + 1, -0.5, 0.5);
    in->dy = tf_random(h, in->nx + 1, -1, 1);
    in->dsT = tf_random(h, in->ns + 1, -1, 1);
    in->rdx = tf_doubles(h, in->nx + 1);
    in->rddt = tf_doubles(h, in->nh + 1);
    in->rdA = tf_doubles(h, H);
    in->rdBm = tf_doubles(h, in->nb + 1);
    in->rdCm = tf_doubles(h, in->nb + 1);
    in->rdD = tf_doubles(h, H);
    in->rdbias = tf_doubles(h, H);
    in->rds0 = tf_doubles(h, in->ns + 1);
    in->sddt = tf_doubles(h, in->nh + 1);
    in->sdA = tf_doubles(h, H);
    in->sdbias = tf_doubles(h, H);
    in->adA = tf_doubles(h, H);
    const ref_mamba2_scales sc = {in->sddt, in->sdA, in->sdbias, in->adA};
    ref_mamba2_backward(c->B, c->T, c->H, c->P, c->G, c->Nst, c->softplus, in->x, in->dt, in->A,
                        in->Bm, in->Cm, c->D ? in->D : NULL, c->bias ? in->bias : NULL,
                        c->s0 ? in->s0 : NULL, in->dy, c->dsT ? in->dsT : NULL, in->rdx, in->rddt,
                        in->rdA, in->rdBm, in->rdCm, in->rdD, in->rdbias, in->rds0, &sc, c->cu,
                        c->N);
}

typedef struct {
    float *x, *dt, *A, *Bm, *Cm, *D, *bias, *s0, *dy, *dsT;
    int32_t *cu;
    float *dx, *ddt, *dA, *dBm, *dCm, *dD, *dbias, *dsin;
    gout out[8];
    int nout;
} m_io;

static void mamba2_upload(tf_arrays *d, const mcase *c, const minputs *in, m_io *x)
{
    const int64_t N = c->cu ? c->N : c->B;
    const size_t H = (size_t)c->H;
    memset(x, 0, sizeof *x);
    x->x = tf_upload(d, in->x, in->nx * 4 + 4);
    x->dt = tf_upload(d, in->dt, in->nh * 4 + 4);
    x->A = tf_upload(d, in->A, H * 4);
    x->Bm = tf_upload(d, in->Bm, in->nb * 4 + 4);
    x->Cm = tf_upload(d, in->Cm, in->nb * 4 + 4);
    x->dy = tf_upload(d, in->dy, in->nx * 4 + 4);
    if (c->D) x->D = tf_upload(d, in->D, H * 4);
    if (c->bias) x->bias = tf_upload(d, in->bias, H * 4);
    if (c->s0) x->s0 = tf_upload(d, in->s0, in->ns * 4 + 4);
    if (c->dsT) x->dsT = tf_upload(d, in->dsT, in->ns * 4 + 4);
    x->cu = c->cu ? tf_upload(d, c->cu, (size_t)(N + 1) * 4) : NULL;
    x->dx = tf_poisoned(d, in->nx + 1);
    x->ddt = tf_poisoned(d, in->nh + 1);
    x->dA = tf_poisoned(d, H + 1);
    x->dBm = tf_poisoned(d, in->nb + 1);
    x->dCm = tf_poisoned(d, in->nb + 1);
    x->out[x->nout++] = (gout){"dx", x->dx, in->nx, in->rdx, NULL, 0, 0};
    x->out[x->nout++] = (gout){"ddt", x->ddt, in->nh, in->rddt, in->sddt, in->nh, 0};
    /* dA sums dt' d(log a) over tokens, which cancel under strong decay
     * (A ~ -10, dt ~ 2: dA ~ 1/160 of its summands' size): its error is
     * taken against that size, fp32's resolution of the sum */
    x->out[x->nout++] = (gout){"dA", x->dA, H, in->rdA, in->adA, H, 1};
    x->out[x->nout++] = (gout){"dBm", x->dBm, in->nb, in->rdBm, NULL, 0, 0};
    x->out[x->nout++] = (gout){"dCm", x->dCm, in->nb, in->rdCm, NULL, 0, 0};
    if (c->D == 1) {
        x->dD = tf_poisoned(d, H + 1);
        x->out[x->nout++] = (gout){"dD", x->dD, H, in->rdD, NULL, 0, 0};
    }
    if (c->dbias) {
        x->dbias = tf_poisoned(d, H + 1);
        x->out[x->nout++] = (gout){"ddt_bias", x->dbias, H, in->rdbias, in->sdbias, H, 0};
    }
    if (c->dsin) {
        x->dsin = tf_poisoned(d, in->ns + 1);
        x->out[x->nout++] = (gout){"dstate_in", x->dsin, in->ns, in->rds0, NULL, 0, 0};
    }
}

static seqk_status mamba2_call(seqk_context *ctx, const mcase *c, const m_io *x)
{
    return seqk_mamba2_backward(ctx, c->B, c->T, c->H, c->P, c->G, c->Nst,
                                c->softplus ? SEQK_MAMBA2_DT_SOFTPLUS : 0u, x->x, x->dt, x->A,
                                x->Bm, x->Cm, x->D, x->bias, x->s0, x->dy, x->dsT, x->dx, x->ddt,
                                x->dA, x->dBm, x->dCm, x->dD, x->dbias, x->dsin, x->cu, c->N,
                                c->chunk);
}

static void mamba2_describe(const mcase *c, const char *be, const char *extra, char *buf,
                            size_t n)
{
    static const char *dn[3] = {" no-D", " D+dD", " D(no dD)"};
    snprintf(buf, n,
             "%s mamba2 backward%s B=%lld T=%lld H=%lld P=%lld G=%lld Nst=%lld chunk=%lld%s%s%s%s"
             "%s%s%s%s%s A~U[%g,%g] dt~U[%g,%g]",
             be, extra, (long long)c->B, (long long)c->T, (long long)c->H, (long long)c->P,
             (long long)c->G, (long long)c->Nst, (long long)c->chunk,
             c->softplus ? " softplus" : " no-softplus", dn[c->D],
             c->bias ? " dt_bias" : " no-dt_bias", c->dbias ? " ddt_bias" : "",
             c->s0 ? " s0" : "", c->dsT ? " dsT" : "", c->dsin ? " dstate_in" : " (no dstate_in)",
             c->cu ? " varlen" : "", c->ws ? " exact-ws" : "", c->Alo, c->Ahi, c->dtlo, c->dthi);
}

static void mamba2_case(th_backend *be, const mcase *c, int long_case)
{
    char what[400];
    mamba2_describe(c, be->name, long_case ? " long" : "", what, sizeof what);
    if (th_skipped(be, what) || heavy_skipped(be, c->heavy, what)) return;
    tf_arrays h = tf_arrays_on(NULL), d = tf_arrays_on(be);
    minputs in;
    make_mamba2(&h, c, &in);
    m_io x;
    mamba2_upload(&d, c, &in, &x);
    void *ws = NULL;
    if (c->ws) {
        size_t bytes = 0;
        seqk_status s = seqk_linear_state_backward_workspace_size(
            be->ctx, c->B, c->T, c->H, c->G, c->Nst, c->P, c->cu ? c->N : 0, c->chunk, &bytes);
        th_check_status(s, SEQK_SUCCESS, "seqk_linear_state_backward_workspace_size (mamba2)");
        ws = tf_workspace_begin(be, s ? 0 : bytes);
    }
    seqk_status s = mamba2_call(be->ctx, c, &x);
    if (c->ws) tf_workspace_end(be, ws);
    if (th_check_status(s, SEQK_SUCCESS, what)) {
        if (long_case) {
            size_t n;
            float *all = download_all(be, x.out, x.nout, &n);
            th_check(tf_all_finite(all, n), "%s: every gradient finite", what);
            free(all);
        }
        for (int i = 0; i < x.nout; i++) check_gout(be, &x.out[i], what);
    }
    tf_arrays_free(&d);
    tf_arrays_free(&h);
}

static void mamba2_determinism(th_backend *be, const mcase *c)
{
    char what[400];
    mamba2_describe(c, be->name, " determinism", what, sizeof what);
    if (th_skipped(be, what)) return;
    tf_arrays h = tf_arrays_on(NULL), d = tf_arrays_on(be);
    minputs in;
    make_mamba2(&h, c, &in);
    const int threads[5] = {0, 0, 1, 2, 3};
    const int runs = be->backend == SEQK_BACKEND_CPU ? 5 : 2;
    float *first = NULL;
    size_t n0 = 0;
    for (int r = 0; r < runs; r++) {
        th_set_threads(be, threads[r]);
        m_io x;
        mamba2_upload(&d, c, &in, &x);
        char w2[440];
        snprintf(w2, sizeof w2, "%s: run %d (threads %d)", what, r + 1, threads[r]);
        if (th_check_status(mamba2_call(be->ctx, c, &x), SEQK_SUCCESS, w2)) {
            size_t n;
            float *all = download_all(be, x.out, x.nout, &n);
            if (!first) {
                first = all, n0 = n;
                for (int i = 0; i < x.nout; i++) check_gout(be, &x.out[i], w2);
            } else {
                th_check(n == n0 && memcmp(all, first, n * sizeof(float)) == 0,
                         "%s: bit-identical to run 1", w2);
                free(all);
            }
        }
        tf_arrays_free(&d);
    }
    th_set_threads(be, 0);
    free(first);
    tf_arrays_free(&h);
}

/* ---- T = 0 (and every sequence empty): only the states' gradients ---------------------- */

static void zero_tokens(th_backend *be)
{
    char what[200];
    snprintf(what, sizeof what, "%s backward with no tokens", be->name);
    if (th_skipped(be, what)) return;
    enum { B = 2, H = 2, K = 3, V = 5, NS = B * H * K * V, NZ = B * H * K };
    static const int32_t cu_empty[4] = {0, 0, 0, 0};
    tf_arrays h = tf_arrays_on(NULL), d = tf_arrays_on(be);
    float *s0h = tf_random(&h, NS, -1, 1), *dsTh = tf_random(&h, NS, -1, 1);
    float *z0h = tf_random(&h, NZ, 0.5, 1), *dzTh = tf_random(&h, NZ, -1, 1);
    float *got = tf_floats(&h, NS + 1);
    double *ref = tf_doubles(&h, NS + 1), *zero = tf_doubles(&h, NS + 1);
    for (int i = 0; i < NS; i++) ref[i] = dsTh[i];
    float *s0 = tf_upload(&d, s0h, NS * 4), *dsT = tf_upload(&d, dsTh, NS * 4);
    float *z0 = tf_upload(&d, z0h, NZ * 4), *dzT = tf_upload(&d, dzTh, NZ * 4);
    int32_t *cu = tf_upload(&d, cu_empty, sizeof cu_empty);
    for (int variant = 0; variant < 4; variant++) {
        /* 0: B=2, T=0; 1: varlen, 3 empty sequences (N*H = 6 state blocks: B*H*K*V
         * covers 4 of 6, so use N = 2 there); 2: dstate_out NULL -> zeros; 3: gated, mamba2 */
        float *dsin = tf_poisoned(&d, NS + 1), *dzin = tf_poisoned(&d, NZ + 1);
        char w2[260];
        seqk_status s;
        if (variant == 0) {
            snprintf(w2, sizeof w2, "%s: linear_attention+norm B=2 T=0", what);
            s = seqk_linear_attention_backward(be->ctx, B, 0, H, K, V, 0.5f,
                                               SEQK_LINATTN_NORMALIZE, NULL, NULL, NULL, NULL, s0,
                                               z0, dsT, dzT, NULL, NULL, NULL, dsin, dzin, NULL, 0,
                                               0);
        } else if (variant == 1) {
            snprintf(w2, sizeof w2, "%s: retention varlen N=2, every sequence empty", what);
            s = seqk_retention_backward(be->ctx, 1, 0, H, K, V, 0.5f, NULL, NULL, NULL, NULL,
                                        NULL, s0, dsT, NULL, NULL, NULL, dsin, cu, 2, 0);
        } else if (variant == 2) {
            snprintf(w2, sizeof w2, "%s: gated_retention B=2 T=0, dstate_out NULL", what);
            s = seqk_gated_retention_backward(be->ctx, B, 0, H, K, V, 0.5f, NULL, NULL, NULL,
                                              NULL, NULL, s0, NULL, NULL, NULL, NULL, NULL, dsin,
                                              NULL, 0, 0);
        } else {
            snprintf(w2, sizeof w2, "%s: mamba2 B=2 T=0 (dA, dD, ddt_bias zeroed)", what);
            float *dA = tf_poisoned(&d, H + 1), *dD = tf_poisoned(&d, H + 1),
                  *db = tf_poisoned(&d, H + 1);
            /* x, dt, ... of no tokens; A, D, dt_bias: any [H] array */
            s = seqk_mamba2_backward(be->ctx, B, 0, H, V, 1, K, SEQK_MAMBA2_DT_SOFTPLUS, NULL,
                                     NULL, z0, NULL, NULL, z0, z0, s0, NULL, dsT, NULL, NULL, dA,
                                     NULL, NULL, dD, db, dsin, NULL, 0, 0);
            if (th_check_status(s, SEQK_SUCCESS, w2)) {
                float hb[3 * (H + 1)];
                th_download(be, hb, dA, (H + 1) * 4);
                th_download(be, hb + H + 1, dD, (H + 1) * 4);
                th_download(be, hb + 2 * (H + 1), db, (H + 1) * 4);
                bool ok = true;
                for (int j = 0; j < 3; j++)
                    ok &= hb[j * (H + 1)] == 0.0f && hb[j * (H + 1) + 1] == 0.0f &&
                          isnan(hb[j * (H + 1) + H]);
                th_check(ok, "%s: dA, dD, ddt_bias written as zeros (and nothing past them)", w2);
            }
        }
        if (variant != 3 && !th_check_status(s, SEQK_SUCCESS, w2)) continue;
        if (variant == 3 && s) continue;
        th_download(be, got, dsin, (NS + 1) * 4);
        th_check_close(got, variant == 2 ? zero : ref, NS, 0.0, "%s: dstate_in = %s", w2,
                       variant == 2 ? "0" : "dstate_out");
        th_check(isnan(got[NS]), "%s: nothing written past dstate_in", w2);
        if (variant == 0) {
            th_download(be, got, dzin, (NZ + 1) * 4);
            double rz[NZ];
            for (int i = 0; i < NZ; i++) rz[i] = dzTh[i];
            th_check_close(got, rz, NZ, 0.0, "%s: dz_in = dz_out", w2);
            th_check(isnan(got[NZ]), "%s: nothing written past dz_in", w2);
        }
    }
    tf_arrays_free(&d);
    tf_arrays_free(&h);
}

/* ---- the references against finite differences ------------------------------------------ */

/* Inputs are multiples of 2^-14 (|x| < 64), the steps 2^-12 and 2^-11: every
 * perturbed value is exact in float, so the float64 forwards of ref_linear.c
 * (float inputs) are differentiated without rounding the inputs; the
 * Richardson combination of the two central differences is O(h^4). */
static const double FD_H = 1.0 / 4096.0;

static float quant(double x) { return (float)(nearbyint(x * 16384.0) / 16384.0); }

/* n quantised values from U[lo, hi); avoid0: none in (-2^-6, 2^-6) (elu+1's
 * kink at 0 must stay out of the differences' reach). */
static float *fd_random(tf_arrays *h, size_t n, double lo, double hi, int avoid0)
{
    float *x = tf_floats(h, n ? n : 1);
    for (size_t i = 0; i < n; i++) {
        double u = th_uniform(lo, hi);
        if (avoid0 && fabs(u) < 1.0 / 64) u = u < 0 ? -1.0 / 64 : 1.0 / 64;
        x[i] = quant(u);
    }
    return x;
}

typedef double (*loss_fn)(void *ctx);

static double fd_deriv(float *x, loss_fn f, void *ctx)
{
    const float x0 = *x;
    double v[4];
    const double steps[4] = {FD_H, -FD_H, 2 * FD_H, -2 * FD_H};
    for (int i = 0; i < 4; i++) {
        *x = (float)(x0 + steps[i]);
        if ((double)*x != (double)x0 + steps[i]) {
            fprintf(stderr, "fd_deriv: %g + %g is not exact in float\n", (double)x0, steps[i]);
            exit(1);
        }
        v[i] = f(ctx);
    }
    *x = x0;
    const double d1 = (v[0] - v[1]) / (2 * FD_H), d2 = (v[2] - v[3]) / (4 * FD_H);
    return (4 * d1 - d2) / 3;
}

/* Checks ref[n] against the finite differences of f in each x[i]. */
static void fd_compare(float *x, size_t n, const double *ref, loss_fn f, void *ctx,
                       const char *what, const char *name)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        const double fd = fd_deriv(x + i, f, ctx), e = ref[i] - fd;
        if (!isfinite(fd) || !isfinite(ref[i])) num = INFINITY;
        num += e * e;
        den += fd * fd;
    }
    const double err = den > 0 ? sqrt(num / den) : sqrt(num);
    th_check(err <= FD_TOL, "reference vs finite differences: %s: %s [%zu]: rel err %.3g (tol %.0g)",
             what, name, n, err, FD_TOL);
}

/* L = <dout, o> + <dsT, S_T> + <dzT, z_T> through ref_linear_state. */
typedef struct {
    int mod;
    int64_t B, T, H, K, V, N;
    const int32_t *cu;
    float scale;
    float *q, *k, *v, *g, *gamma, *s0, *z0, *dout, *dsT, *dzT;
    double *o, *sT, *zT;
    size_t nv, ns, nz;
} fd_lin;

static double fd_lin_loss(void *p)
{
    fd_lin *c = p;
    ref_decay dec = {0, NULL, NULL};
    if (c->mod == RETNET || c->mod == RETNET_DEFAULT) dec.kind = 1, dec.gamma = c->gamma;
    if (c->mod == GATED) dec.kind = 2, dec.g = c->g;
    ref_linear_state(c->B, c->T, c->H, c->K, c->V, c->scale, mod_norm(c->mod), mod_elu(c->mod),
                     dec, c->q, c->k, c->v, c->s0, c->z0, c->o, c->sT, c->zT, c->cu, c->N);
    double L = 0.0;
    for (size_t i = 0; i < c->nv; i++) L += c->dout[i] * c->o[i];
    for (size_t i = 0; i < c->ns; i++) L += c->dsT[i] * c->sT[i];
    if (mod_norm(c->mod))
        for (size_t i = 0; i < c->nz; i++) L += c->dzT[i] * c->zT[i];
    return L;
}

typedef struct {
    int64_t B, T, H, K, V;
    const int32_t *cu;
    int64_t N;
    double glo, ghi;
    int zero_state; /* s0, dsT (z0, dzT) all zero: the reference is called with NULL */
} fdcase;

static void fd_lin_case(int mod, const fdcase *fc)
{
    char what[200];
    snprintf(what, sizeof what, "%s B=%lld T=%lld H=%lld K=%lld V=%lld%s%s", module_name[mod],
             (long long)fc->B, (long long)fc->T, (long long)fc->H, (long long)fc->K,
             (long long)fc->V, fc->cu ? " varlen" : "", fc->zero_state ? " NULL states" : "");
    if (mod == GATED) {
        size_t l = strlen(what);
        snprintf(what + l, sizeof what - l, " g~U[%g,%g]", fc->glo, fc->ghi);
    }
    tf_arrays h = tf_arrays_on(NULL);
    fd_lin c;
    memset(&c, 0, sizeof c);
    c.mod = mod, c.B = fc->B, c.T = fc->T, c.H = fc->H, c.K = fc->K, c.V = fc->V;
    c.cu = fc->cu, c.N = fc->cu ? fc->N : fc->B;
    c.scale = quant(1.0 / sqrt((double)fc->K));
    const size_t nq = (size_t)(fc->B * fc->T * fc->H * fc->K), ng = (size_t)(fc->B * fc->T * fc->H);
    c.nv = (size_t)(fc->B * fc->T * fc->H * fc->V);
    c.ns = (size_t)(c.N * fc->H * fc->K * fc->V), c.nz = (size_t)(c.N * fc->H * fc->K);
    const int norm = mod_norm(mod), elu = mod_elu(mod);
    const double lo = mod == LINATTN_NORM ? 0.25 : -1.0;
    c.q = fd_random(&h, nq, lo, 1, elu);
    c.k = fd_random(&h, nq, lo, 1, elu);
    c.v = fd_random(&h, c.nv, -1, 1, 0);
    c.g = fd_random(&h, ng, fc->glo, fc->ghi, 0);
    c.gamma = fd_random(&h, (size_t)fc->H, 0.7, 1.0, 0);
    if (mod == RETNET_DEFAULT)
        for (int64_t i = 0; i < fc->H; i++) c.gamma[i] = (float)(1.0 - ldexp(1.0, (int)(-5 - i)));
    c.dout = fd_random(&h, c.nv, -1, 1, 0);
    const double sz = fc->zero_state ? 0.0 : 1.0;
    c.s0 = fd_random(&h, c.ns, -0.5 * sz, 0.5 * sz, 0);
    c.dsT = fd_random(&h, c.ns, -sz, sz, 0);
    c.z0 = fd_random(&h, c.nz, 0.5 * sz, 1.0 * sz, 0);
    c.dzT = fd_random(&h, c.nz, -sz, sz, 0);
    c.o = tf_doubles(&h, c.nv + 1), c.sT = tf_doubles(&h, c.ns + 1), c.zT = tf_doubles(&h, c.nz + 1);
    double *rdq = tf_doubles(&h, nq + 1), *rdk = tf_doubles(&h, nq + 1),
           *rdv = tf_doubles(&h, c.nv + 1), *rdg = tf_doubles(&h, ng + 1),
           *rds0 = tf_doubles(&h, c.ns + 1), *rdz0 = tf_doubles(&h, c.nz + 1);
    const float *s0 = fc->zero_state ? NULL : c.s0, *dsT = fc->zero_state ? NULL : c.dsT;
    const float *z0 = fc->zero_state ? NULL : c.z0, *dzT = fc->zero_state ? NULL : c.dzT;
    if (mod_linattn(mod))
        ref_linear_attention_backward(c.B, c.T, c.H, c.K, c.V, c.scale, norm, elu, c.q, c.k, c.v,
                                      c.dout, s0, z0, dsT, dzT, rdq, rdk, rdv, rds0, rdz0, NULL,
                                      NULL, c.cu, c.N);
    else if (mod == GATED)
        ref_gated_retention_backward(c.B, c.T, c.H, c.K, c.V, c.scale, c.q, c.k, c.v, c.g, c.dout,
                                     s0, dsT, rdq, rdk, rdv, rdg, NULL, rds0, c.cu, c.N);
    else
        ref_retention_backward(c.B, c.T, c.H, c.K, c.V, c.scale, mod == RETNET ? c.gamma : NULL,
                               c.q, c.k, c.v, c.dout, s0, dsT, rdq, rdk, rdv, rds0, c.cu, c.N);
    fd_compare(c.q, nq, rdq, fd_lin_loss, &c, what, "dq");
    fd_compare(c.k, nq, rdk, fd_lin_loss, &c, what, "dk");
    fd_compare(c.v, c.nv, rdv, fd_lin_loss, &c, what, "dv");
    fd_compare(c.s0, c.ns, rds0, fd_lin_loss, &c, what, "dstate_in");
    if (norm) fd_compare(c.z0, c.nz, rdz0, fd_lin_loss, &c, what, "dz_in");
    if (mod == GATED) fd_compare(c.g, ng, rdg, fd_lin_loss, &c, what, "dg");
    tf_arrays_free(&h);
}

/* L = <dy, y> + <dsT, S_T> through ref_mamba2. */
typedef struct {
    int64_t B, T, H, P, G, Nst, N;
    int softplus;
    const int32_t *cu;
    float *x, *dt, *A, *Bm, *Cm, *D, *bias, *s0, *dy, *dsT;
    double *y, *sT;
    size_t nx, ns;
} fd_m2;

static double fd_m2_loss(void *p)
{
    fd_m2 *c = p;
    ref_mamba2(c->B, c->T, c->H, c->P, c->G, c->Nst, c->softplus, c->x, c->dt, c->A, c->Bm, c->Cm,
               c->D, c->bias, c->s0, c->y, c->sT, c->cu, c->N);
    double L = 0.0;
    for (size_t i = 0; i < c->nx; i++) L += c->dy[i] * c->y[i];
    for (size_t i = 0; i < c->ns; i++) L += c->dsT[i] * c->sT[i];
    return L;
}

static void fd_mamba2_case(int64_t B, int64_t T, int64_t H, int64_t P, int64_t G, int64_t Nst,
                           int softplus, const int32_t *cu, int64_t N, double Alo, double Ahi,
                           int zero_bias_state)
{
    char what[200];
    snprintf(what, sizeof what, "mamba2 B=%lld T=%lld H=%lld P=%lld G=%lld Nst=%lld%s%s%s A~U[%g,%g]",
             (long long)B, (long long)T, (long long)H, (long long)P, (long long)G, (long long)Nst,
             softplus ? " softplus" : "", cu ? " varlen" : "",
             zero_bias_state ? " NULL dt_bias, states" : "", Alo, Ahi);
    tf_arrays h = tf_arrays_on(NULL);
    fd_m2 c;
    memset(&c, 0, sizeof c);
    c.B = B, c.T = T, c.H = H, c.P = P, c.G = G, c.Nst = Nst, c.softplus = softplus;
    c.cu = cu, c.N = cu ? N : B;
    const size_t nh = (size_t)(B * T * H), nb = (size_t)(B * T * G * Nst);
    c.nx = (size_t)(B * T * H * P), c.ns = (size_t)(c.N * H * Nst * P);
    c.x = fd_random(&h, c.nx, -1, 1, 0);
    c.dt = fd_random(&h, nh, softplus ? -2 : 0.05, 1, 0);
    c.A = fd_random(&h, (size_t)H, Alo, Ahi, 0);
    c.Bm = fd_random(&h, nb, -1, 1, 0);
    c.Cm = fd_random(&h, nb, -1, 1, 0);
    c.D = fd_random(&h, (size_t)H, -1, 1, 0);
    const double sz = zero_bias_state ? 0.0 : 1.0;
    c.bias = fd_random(&h, (size_t)H, softplus ? -0.5 * sz : 0, 0.5 * sz, 0);
    c.s0 = fd_random(&h, c.ns, -0.5 * sz, 0.5 * sz, 0);
    c.dy = fd_random(&h, c.nx, -1, 1, 0);
    c.dsT = fd_random(&h, c.ns, -sz, sz, 0);
    c.y = tf_doubles(&h, c.nx + 1), c.sT = tf_doubles(&h, c.ns + 1);
    double *rdx = tf_doubles(&h, c.nx + 1), *rddt = tf_doubles(&h, nh + 1),
           *rdA = tf_doubles(&h, (size_t)H), *rdBm = tf_doubles(&h, nb + 1),
           *rdCm = tf_doubles(&h, nb + 1), *rdD = tf_doubles(&h, (size_t)H),
           *rdb = tf_doubles(&h, (size_t)H), *rds0 = tf_doubles(&h, c.ns + 1);
    ref_mamba2_backward(B, T, H, P, G, Nst, softplus, c.x, c.dt, c.A, c.Bm, c.Cm, c.D,
                        zero_bias_state ? NULL : c.bias, zero_bias_state ? NULL : c.s0, c.dy,
                        zero_bias_state ? NULL : c.dsT, rdx, rddt, rdA, rdBm, rdCm, rdD, rdb, rds0,
                        NULL, cu, N);
    fd_compare(c.x, c.nx, rdx, fd_m2_loss, &c, what, "dx");
    fd_compare(c.dt, nh, rddt, fd_m2_loss, &c, what, "ddt");
    fd_compare(c.A, (size_t)H, rdA, fd_m2_loss, &c, what, "dA");
    fd_compare(c.Bm, nb, rdBm, fd_m2_loss, &c, what, "dBm");
    fd_compare(c.Cm, nb, rdCm, fd_m2_loss, &c, what, "dCm");
    fd_compare(c.D, (size_t)H, rdD, fd_m2_loss, &c, what, "dD");
    fd_compare(c.bias, (size_t)H, rdb, fd_m2_loss, &c, what, "ddt_bias");
    fd_compare(c.s0, c.ns, rds0, fd_m2_loss, &c, what, "dstate_in");
    tf_arrays_free(&h);
}

/* The reference's direct gate gradient a_t <S_{t-1}, dS_t> (+ a_t z_{t-1}.dz_t)
 * against DESIGN 3.7's reverse sum of q~.dq~ - k~.dk~, in double, including
 * gates near -20 (where finite differences of L cannot resolve it). */
static void gate_formula_check(int normalize, double glo, double ghi)
{
    enum { B = 1, T = 9, H = 2, K = 4, V = 3, N = 3 };
    static const int32_t cu[N + 1] = {0, 4, 4, 9};
    const ref_lin_shape sh = {B, T, H, K, V, cu, N, normalize};
    const size_t nq = T * H * K, nv = T * H * V, ng = T * H, ns = N * H * K * V, nz = N * H * K;
    tf_arrays h = tf_arrays_on(NULL);
    double *q = tf_doubles(&h, nq), *k = tf_doubles(&h, nq), *v = tf_doubles(&h, nv),
           *la = tf_doubles(&h, ng), *s0 = tf_doubles(&h, ns), *z0 = tf_doubles(&h, nz),
           *dout = tf_doubles(&h, nv), *dsT = tf_doubles(&h, ns), *dzT = tf_doubles(&h, nz);
    for (size_t i = 0; i < nq; i++) q[i] = th_uniform(0.2, 1), k[i] = th_uniform(0.2, 1);
    for (size_t i = 0; i < nv; i++) v[i] = th_uniform(-1, 1), dout[i] = th_uniform(-1, 1);
    for (size_t i = 0; i < ng; i++) la[i] = th_uniform(glo, ghi);
    for (size_t i = 0; i < ns; i++) s0[i] = th_uniform(-0.5, 0.5), dsT[i] = th_uniform(-1, 1);
    for (size_t i = 0; i < nz; i++) z0[i] = th_uniform(0.5, 1), dzT[i] = th_uniform(-1, 1);
    double *dq = tf_doubles(&h, nq), *dk = tf_doubles(&h, nq), *dla = tf_doubles(&h, ng),
           *dla2 = tf_doubles(&h, ng);
    ref_lin_backward(&sh, q, k, v, la, s0, z0, dout, dsT, dzT, dq, dk, NULL, dla, NULL, NULL,
                     NULL);
    ref_lin_gate_by_design_formula(&sh, q, k, v, la, s0, z0, dq, dk, dsT, dzT, dla2);
    double num = 0, den = 0;
    for (size_t i = 0; i < ng; i++) num += (dla[i] - dla2[i]) * (dla[i] - dla2[i]), den += dla2[i] * dla2[i];
    const double err = sqrt(num / den);
    th_check(err <= FD_TOL,
             "reference: gate gradient a_t<S_{t-1},dS_t> vs DESIGN 3.7's reverse sum%s, "
             "log a~U[%g,%g] (|dla| ~ %.2g): rel err %.3g", normalize ? " (normaliser)" : "", glo,
             ghi, sqrt(den / (double)ng), err);
    tf_arrays_free(&h);
}

static void reference_checks(void)
{
    static const int32_t cu9[5] = {0, 3, 3, 4, 9}; /* empty and length-1 sequences */
    const fdcase fcs[] = {
        {2, 5, 2, 3, 4, NULL, 0, -2, 0, 0},
        {1, 9, 2, 4, 3, cu9, 4, -3, -0.5, 0},
        {1, 4, 2, 3, 3, NULL, 0, -1, 0, 1},
        {1, 1, 2, 3, 2, NULL, 0, -1, 0, 0},
        {1, 1, 1, 2, 2, NULL, 0, -1, 0, 1}, /* not with the normaliser: o = v (q.k)/(q.k + 1e-6) */
        {1, 7, 1, 3, 2, NULL, 0, -8, -4, 1}, /* gated retention only */
    };
    for (int mod = 0; mod < NMODULES; mod++)
        for (size_t j = 0; j < sizeof fcs / sizeof fcs[0]; j++) {
            if ((j == 4 && mod_norm(mod)) || (j == 5 && mod != GATED)) continue;
            fd_lin_case(mod, &fcs[j]);
        }
    fd_mamba2_case(2, 5, 4, 3, 2, 3, 1, NULL, 0, -2, -0.2, 0);    /* G < H, softplus */
    fd_mamba2_case(1, 9, 2, 2, 1, 4, 0, cu9, 4, -1.5, -0.1, 0);   /* varlen, no softplus */
    fd_mamba2_case(1, 6, 3, 2, 3, 2, 1, NULL, 0, -4, -2, 1);      /* G = H, NULL bias, states */
    gate_formula_check(0, -2, 0);
    gate_formula_check(0, -21, -19);
    gate_formula_check(1, -1, 0);
}

/* ---- validation ---------------------------------------------------------------------------- */

enum { VT = 5, VH = 2, VK = 4, VV = 3, VQ = VT * VH * VK, VO = VT * VH * VV, VG = VT * VH,
       VS = VH * VK * VV, VZ = VH * VK };

/* Inputs (also Mamba2's: x = v, dt = g, Bm = q, Cm = k with G = 1, A = a, D = dd,
 * dt_bias = bias) and outputs of the validation calls. */
static struct {
    float q[VQ], k[VQ], v[VO], g[VG], dout[VO], s0[VS], z0[VZ], dsT[VS], dzT[VZ], gamma[VH],
        a[VH], dd[VH], bias[VH];
} vin, vin_copy;
static struct {
    float dq[VQ], dk[VQ], dv[VO], dg[VG], dsin[VS], dzin[VZ], dA[VH], dD[VH], dbias[VH];
} vout;

static void vreset(void) { tf_fill_untouched((float *)&vout, sizeof vout / sizeof(float)); }

static void vexpect(seqk_status got, seqk_status want, const char *n1, const char *n2,
                    const char *rule)
{
    char what[240];
    snprintf(what, sizeof what, "validation: %s", rule);
    th_check_status(got, want, what);
    const char *msg = seqk_last_error();
    th_check(strstr(msg, n1) && (!n2 || strstr(msg, n2)),
             "validation: %s: message names '%s'%s%s%s: %s", rule, n1, n2 ? " and '" : "",
             n2 ? n2 : "", n2 ? "'" : "", msg);
    const float *o = (const float *)&vout;
    bool untouched = true;
    for (size_t i = 0; i < sizeof vout / sizeof(float); i++) untouched &= o[i] == TF_UNTOUCHED;
    th_check(untouched, "validation: %s: every output untouched", rule);
    th_check(memcmp(&vin, &vin_copy, sizeof vin) == 0, "validation: %s: inputs unchanged", rule);
    vreset();
}

static void validation(seqk_context *ctx)
{
    for (int i = 0; i < VQ; i++) vin.q[i] = vin.k[i] = 0.1f;
    for (int i = 0; i < VO; i++) vin.v[i] = 0.2f, vin.dout[i] = 0.3f;
    for (int i = 0; i < VG; i++) vin.g[i] = -0.1f;
    for (int i = 0; i < VS; i++) vin.s0[i] = 0.1f, vin.dsT[i] = 0.2f;
    for (int i = 0; i < VZ; i++) vin.z0[i] = 0.5f, vin.dzT[i] = 0.2f;
    for (int i = 0; i < VH; i++) vin.gamma[i] = 0.9f, vin.a[i] = -1.0f, vin.dd[i] = 0.5f, vin.bias[i] = 0.1f;
    vin_copy = vin;
    vreset();
    const seqk_status INV = SEQK_ERROR_INVALID_ARGUMENT;
    const unsigned NORM = SEQK_LINATTN_NORMALIZE;
    float *q = vin.q, *k = vin.k, *v = vin.v, *g = vin.g, *dout = vin.dout, *s0 = vin.s0,
          *z0 = vin.z0, *dsT = vin.dsT, *dzT = vin.dzT;
    float *dq = vout.dq, *dk = vout.dk, *dv = vout.dv, *dg = vout.dg, *dsin = vout.dsin,
          *dzin = vout.dzin;
    /* linear attention: sizes, scalars, flags */
#define LA(ctx_, B_, T_, H_, K_, V_, sc_, fl_, q_, k_, v_, do_, s0_, z0_, ds_, dz_, dq_, dk_, dv_, \
           dsin_, dzin_, cu_, N_, ch_)                                                         \
    seqk_linear_attention_backward(ctx_, B_, T_, H_, K_, V_, sc_, fl_, q_, k_, v_, do_, s0_, z0_, \
                                   ds_, dz_, dq_, dk_, dv_, dsin_, dzin_, cu_, N_, ch_)
    vexpect(LA(NULL, 1, VT, VH, VK, VV, 1, 0, q, k, v, dout, s0, NULL, dsT, NULL, dq, dk, dv, dsin,
               NULL, NULL, 0, 0), INV, "ctx", NULL, "ctx NULL");
    vexpect(LA(ctx, 0, VT, VH, VK, VV, 1, 0, q, k, v, dout, s0, NULL, dsT, NULL, dq, dk, dv, dsin,
               NULL, NULL, 0, 0), INV, "B=0", NULL, "B=0");
    vexpect(LA(ctx, 1, -1, VH, VK, VV, 1, 0, q, k, v, dout, s0, NULL, dsT, NULL, dq, dk, dv, dsin,
               NULL, NULL, 0, 0), INV, "T=-1", NULL, "T=-1");
    vexpect(LA(ctx, 1, VT, 0, VK, VV, 1, 0, q, k, v, dout, s0, NULL, dsT, NULL, dq, dk, dv, dsin,
               NULL, NULL, 0, 0), INV, "H=0", NULL, "H=0");
    vexpect(LA(ctx, 1, VT, VH, 0, VV, 1, 0, q, k, v, dout, s0, NULL, dsT, NULL, dq, dk, dv, dsin,
               NULL, NULL, 0, 0), INV, "K=0", NULL, "K=0");
    vexpect(LA(ctx, 1, VT, VH, VK, 0, 1, 0, q, k, v, dout, s0, NULL, dsT, NULL, dq, dk, dv, dsin,
               NULL, NULL, 0, 0), INV, "V=0", NULL, "V=0");
    vexpect(LA(ctx, 1, VT, VH, 2000, VV, 1, 0, q, k, v, dout, s0, NULL, dsT, NULL, dq, dk, dv,
               dsin, NULL, NULL, 0, 0), SEQK_ERROR_UNSUPPORTED, "K=2000", NULL, "K too large");
    vexpect(LA(ctx, 1, VT, VH, VK, VV, 1, 0, q, k, v, dout, s0, NULL, dsT, NULL, dq, dk, dv, dsin,
               NULL, NULL, 0, 4096), INV, "chunk=4096", NULL, "chunk=4096");
    vexpect(LA(ctx, 1, VT, VH, VK, VV, 1, 0, q, k, v, dout, s0, NULL, dsT, NULL, dq, dk, dv, dsin,
               NULL, NULL, 0, -1), INV, "chunk=-1", NULL, "chunk=-1");
    vexpect(LA(ctx, 1, VT, VH, VK, VV, NAN, 0, q, k, v, dout, s0, NULL, dsT, NULL, dq, dk, dv,
               dsin, NULL, NULL, 0, 0), INV, "scale", NULL, "scale NaN");
    vexpect(LA(ctx, 1, VT, VH, VK, VV, 1, 0x10, q, k, v, dout, s0, NULL, dsT, NULL, dq, dk, dv,
               dsin, NULL, NULL, 0, 0), INV, "flags", NULL, "unknown flags");
    /* the normaliser's arrays without the flag */
    vexpect(LA(ctx, 1, VT, VH, VK, VV, 1, 0, q, k, v, dout, s0, z0, dsT, NULL, dq, dk, dv, dsin,
               NULL, NULL, 0, 0), INV, "z_in", NULL, "z_in without NORMALIZE");
    vexpect(LA(ctx, 1, VT, VH, VK, VV, 1, 0, q, k, v, dout, s0, NULL, dsT, dzT, dq, dk, dv, dsin,
               NULL, NULL, 0, 0), INV, "dz_out", NULL, "dz_out without NORMALIZE");
    vexpect(LA(ctx, 1, VT, VH, VK, VV, 1, 0, q, k, v, dout, s0, NULL, dsT, NULL, dq, dk, dv, dsin,
               dzin, NULL, 0, 0), INV, "dz_in", NULL, "dz_in without NORMALIZE");
    /* NULL inputs and outputs with tokens */
    vexpect(LA(ctx, 1, VT, VH, VK, VV, 1, 0, NULL, k, v, dout, s0, NULL, dsT, NULL, dq, dk, dv,
               dsin, NULL, NULL, 0, 0), INV, "q is NULL", NULL, "q NULL");
    vexpect(LA(ctx, 1, VT, VH, VK, VV, 1, 0, q, NULL, v, dout, s0, NULL, dsT, NULL, dq, dk, dv,
               dsin, NULL, NULL, 0, 0), INV, "k is NULL", NULL, "k NULL");
    vexpect(LA(ctx, 1, VT, VH, VK, VV, 1, 0, q, k, NULL, dout, s0, NULL, dsT, NULL, dq, dk, dv,
               dsin, NULL, NULL, 0, 0), INV, "v is NULL", NULL, "v NULL");
    vexpect(LA(ctx, 1, VT, VH, VK, VV, 1, 0, q, k, v, NULL, s0, NULL, dsT, NULL, dq, dk, dv, dsin,
               NULL, NULL, 0, 0), INV, "dout is NULL", NULL, "dout NULL");
    vexpect(LA(ctx, 1, VT, VH, VK, VV, 1, 0, q, k, v, dout, s0, NULL, dsT, NULL, NULL, dk, dv,
               dsin, NULL, NULL, 0, 0), INV, "dq is NULL", NULL, "dq NULL");
    vexpect(LA(ctx, 1, VT, VH, VK, VV, 1, 0, q, k, v, dout, s0, NULL, dsT, NULL, dq, NULL, dv,
               dsin, NULL, NULL, 0, 0), INV, "dk is NULL", NULL, "dk NULL");
    vexpect(LA(ctx, 1, VT, VH, VK, VV, 1, 0, q, k, v, dout, s0, NULL, dsT, NULL, dq, dk, NULL,
               dsin, NULL, NULL, 0, 0), INV, "dv is NULL", NULL, "dv NULL");
    /* overlaps: an output with an input, with another output */
    vexpect(LA(ctx, 1, VT, VH, VK, VV, 1, 0, q, k, v, dout, s0, NULL, dsT, NULL, q, dk, dv, dsin,
               NULL, NULL, 0, 0), INV, "dq", "overlap", "dq overlapping q");
    vexpect(LA(ctx, 1, VT, VH, VK, VV, 1, 0, q, k, v, dout, s0, NULL, dsT, NULL, dq, dk,
               dout + 1, dsin, NULL, NULL, 0, 0), INV, "dv", "dout", "dv overlapping dout");
    vexpect(LA(ctx, 1, VT, VH, VK, VV, 1, 0, q, k, v, dout, s0, NULL, dsT, NULL, dq, dq + VK, dv,
               dsin, NULL, NULL, 0, 0), INV, "dk", "dq", "dk overlapping dq");
    vexpect(LA(ctx, 1, VT, VH, VK, VV, 1, 0, q, k, v, dout, s0, NULL, dsT, NULL, dq, dk, dv, dsT,
               NULL, NULL, 0, 0), INV, "dstate_in", "dstate_out", "dstate_in == dstate_out");
    vexpect(LA(ctx, 1, VT, VH, VK, VV, 1, 0, q, k, v, dout, s0, NULL, dsT, NULL, dq, dk, dv,
               s0 + 2, NULL, NULL, 0, 0), INV, "dstate_in", "state_in",
            "dstate_in overlapping state_in");
    vexpect(LA(ctx, 1, VT, VH, VK, VV, 1, 0, q, k, v, dout, s0, NULL, dsT, NULL, dq, dk, dv,
               dv + 3, NULL, NULL, 0, 0), INV, "dstate_in", "dv", "dstate_in overlapping dv");
    vexpect(LA(ctx, 1, VT, VH, VK, VV, 1, NORM, q, k, v, dout, s0, z0, dsT, dzT, dq, dk, dv, dsin,
               z0, NULL, 0, 0), INV, "dz_in", "z_in", "dz_in overlapping z_in");
    vexpect(LA(ctx, 1, VT, VH, VK, VV, 1, NORM, q, k, v, dout, s0, z0, dsT, dzT, dq, dk, dv, dsin,
               dsin + 1, NULL, 0, 0), INV, "dz_in", "dstate_in", "dz_in overlapping dstate_in");
    /* varlen */
    const int32_t cu_dec[3] = {0, 4, 3}, cu_end[3] = {0, 2, 4}, cu_first[3] = {1, 2, 5};
    vexpect(LA(ctx, 1, VT, VH, VK, VV, 1, 0, q, k, v, dout, NULL, NULL, NULL, NULL, dq, dk, dv,
               NULL, NULL, cu_dec, 2, 0), INV, "cu_seqlens[2]=3 < cu_seqlens[1]=4", NULL,
            "cu_seqlens decreasing");
    vexpect(LA(ctx, 1, VT, VH, VK, VV, 1, 0, q, k, v, dout, NULL, NULL, NULL, NULL, dq, dk, dv,
               NULL, NULL, cu_end, 2, 0), INV, "cu_seqlens", "T=5", "cu_seqlens[N] != T");
    vexpect(LA(ctx, 1, VT, VH, VK, VV, 1, 0, q, k, v, dout, NULL, NULL, NULL, NULL, dq, dk, dv,
               NULL, NULL, cu_first, 2, 0), INV, "cu_seqlens[0]", NULL, "cu_seqlens[0] != 0");
    vexpect(LA(ctx, 2, 2, VH, VK, VV, 1, 0, q, k, v, dout, NULL, NULL, NULL, NULL, dq, dk, dv,
               NULL, NULL, cu_end, 2, 0), INV, "B=2", NULL, "B != 1 with cu_seqlens");
    vexpect(LA(ctx, 1, VT, VH, VK, VV, 1, 0, q, k, v, dout, NULL, NULL, NULL, NULL, dq, dk, dv,
               NULL, NULL, cu_end, 0, 0), INV, "N=0", NULL, "N = 0 with cu_seqlens");
#undef LA
    /* retention */
    float gam_bad[VH] = {0.9f, 1.5f};
    vexpect(seqk_retention_backward(ctx, 1, VT, VH, VK, VV, 1, gam_bad, q, k, v, dout, s0, dsT,
                                    dq, dk, dv, dsin, NULL, 0, 0),
            INV, "gamma[1]=1.5", NULL, "gamma out of (0,1]");
    vexpect(seqk_retention_backward(ctx, 1, VT, VH, VK, VV, 1, NULL, q, k, v, dout, s0, dsT, dq,
                                    dk, k, dsin, NULL, 0, 0),
            INV, "dv", "overlap", "retention: dv overlapping k");
    vexpect(seqk_retention_backward(ctx, 1, VT, VH, VK, VV, 1, NULL, q, k, v, dout, s0, dsT, dq,
                                    NULL, dv, dsin, NULL, 0, 0),
            INV, "dk is NULL", NULL, "retention: dk NULL");
    /* gated retention */
    vexpect(seqk_gated_retention_backward(ctx, 1, VT, VH, VK, VV, 1, q, k, v, NULL, dout, s0, dsT,
                                          dq, dk, dv, dg, dsin, NULL, 0, 0),
            INV, "g is NULL", NULL, "gated: g NULL");
    vexpect(seqk_gated_retention_backward(ctx, 1, VT, VH, VK, VV, 1, q, k, v, g, dout, s0, dsT,
                                          dq, dk, dv, NULL, dsin, NULL, 0, 0),
            INV, "dg is NULL", NULL, "gated: dg NULL");
    vexpect(seqk_gated_retention_backward(ctx, 1, VT, VH, VK, VV, 1, q, k, v, g, dout, s0, dsT,
                                          dq, dk, dv, g, dsin, NULL, 0, 0),
            INV, "dg", "overlap", "gated: dg overlapping g");
    vexpect(seqk_gated_retention_backward(ctx, 1, VT, VH, VK, VV, 1, q, k, v, g, dout, s0, dsT,
                                          dq, dk, dv, dv + 2, dsin, NULL, 0, 0),
            INV, "dg", "dv", "gated: dg overlapping dv");
    /* Mamba2 (x = v [T,H,P=VV], dt = g, Bm = q, Cm = k [T,G=1,Nst=VK]) */
    float *x = vin.v, *dt = vin.g, *A = vin.a, *Bm = vin.q, *Cm = vin.k, *D = vin.dd,
          *bias = vin.bias, *dy = vin.dout;
    float *dx = vout.dv, *ddt = vout.dg, *dA = vout.dA, *dBm = vout.dq, *dCm = vout.dk,
          *dD = vout.dD, *db = vout.dbias;
    const unsigned SP = SEQK_MAMBA2_DT_SOFTPLUS;
#define M2(ctx_, H_, P_, G_, N_, fl_, x_, dt_, A_, B_, C_, D_, bi_, y_, dx_, ddt_, dA_, dB_, dC_, \
           dD_, db_, dsin_)                                                                  \
    seqk_mamba2_backward(ctx_, 1, VT, H_, P_, G_, N_, fl_, x_, dt_, A_, B_, C_, D_, bi_, s0, y_,  \
                         dsT, dx_, ddt_, dA_, dB_, dC_, dD_, db_, dsin_, NULL, 0, 0)
    vexpect(M2(ctx, VH, VV, 3, VK, SP, x, dt, A, Bm, Cm, D, bias, dy, dx, ddt, dA, dBm, dCm, dD,
               db, dsin), INV, "G=3", NULL, "mamba2: G > H");
    vexpect(M2(ctx, VH, VV, 0, VK, SP, x, dt, A, Bm, Cm, D, bias, dy, dx, ddt, dA, dBm, dCm, dD,
               db, dsin), INV, "G=0", NULL, "mamba2: G = 0");
    vexpect(M2(ctx, VH, 0, 1, VK, SP, x, dt, A, Bm, Cm, D, bias, dy, dx, ddt, dA, dBm, dCm, dD, db,
               dsin), INV, "P=0", NULL, "mamba2: P = 0");
    vexpect(M2(ctx, VH, VV, 1, 0, SP, x, dt, A, Bm, Cm, D, bias, dy, dx, ddt, dA, dBm, dCm, dD, db,
               dsin), INV, "Nst=0", NULL, "mamba2: Nst = 0");
    vexpect(M2(ctx, VH, VV, 1, VK, 0x4, x, dt, A, Bm, Cm, D, bias, dy, dx, ddt, dA, dBm, dCm, dD,
               db, dsin), INV, "flags", NULL, "mamba2: unknown flags");
    vexpect(M2(ctx, VH, VV, 1, VK, SP, x, dt, A, Bm, Cm, NULL, bias, dy, dx, ddt, dA, dBm, dCm, dD,
               db, dsin), INV, "dD", NULL, "mamba2: dD given with D NULL");
    vexpect(M2(ctx, VH, VV, 1, VK, SP, NULL, dt, A, Bm, Cm, D, bias, dy, dx, ddt, dA, dBm, dCm, dD,
               db, dsin), INV, "x is NULL", NULL, "mamba2: x NULL");
    vexpect(M2(ctx, VH, VV, 1, VK, SP, x, NULL, A, Bm, Cm, D, bias, dy, dx, ddt, dA, dBm, dCm, dD,
               db, dsin), INV, "dt is NULL", NULL, "mamba2: dt NULL");
    vexpect(M2(ctx, VH, VV, 1, VK, SP, x, dt, NULL, Bm, Cm, D, bias, dy, dx, ddt, dA, dBm, dCm, dD,
               db, dsin), INV, "A is NULL", NULL, "mamba2: A NULL");
    vexpect(M2(ctx, VH, VV, 1, VK, SP, x, dt, A, NULL, Cm, D, bias, dy, dx, ddt, dA, dBm, dCm, dD,
               db, dsin), INV, "Bm is NULL", NULL, "mamba2: Bm NULL");
    vexpect(M2(ctx, VH, VV, 1, VK, SP, x, dt, A, Bm, NULL, D, bias, dy, dx, ddt, dA, dBm, dCm, dD,
               db, dsin), INV, "Cm is NULL", NULL, "mamba2: Cm NULL");
    vexpect(M2(ctx, VH, VV, 1, VK, SP, x, dt, A, Bm, Cm, D, bias, NULL, dx, ddt, dA, dBm, dCm, dD,
               db, dsin), INV, "dy is NULL", NULL, "mamba2: dy NULL");
    vexpect(M2(ctx, VH, VV, 1, VK, SP, x, dt, A, Bm, Cm, D, bias, dy, NULL, ddt, dA, dBm, dCm, dD,
               db, dsin), INV, "dx is NULL", NULL, "mamba2: dx NULL");
    vexpect(M2(ctx, VH, VV, 1, VK, SP, x, dt, A, Bm, Cm, D, bias, dy, dx, NULL, dA, dBm, dCm, dD,
               db, dsin), INV, "ddt is NULL", NULL, "mamba2: ddt NULL");
    vexpect(M2(ctx, VH, VV, 1, VK, SP, x, dt, A, Bm, Cm, D, bias, dy, dx, ddt, NULL, dBm, dCm, dD,
               db, dsin), INV, "dA is NULL", NULL, "mamba2: dA NULL");
    vexpect(M2(ctx, VH, VV, 1, VK, SP, x, dt, A, Bm, Cm, D, bias, dy, dx, ddt, dA, NULL, dCm, dD,
               db, dsin), INV, "dBm is NULL", NULL, "mamba2: dBm NULL");
    vexpect(M2(ctx, VH, VV, 1, VK, SP, x, dt, A, Bm, Cm, D, bias, dy, dx, ddt, dA, dBm, NULL, dD,
               db, dsin), INV, "dCm is NULL", NULL, "mamba2: dCm NULL");
    vexpect(M2(ctx, VH, VV, 1, VK, SP, x, dt, A, Bm, Cm, D, bias, dy, x, ddt, dA, dBm, dCm, dD, db,
               dsin), INV, "dx", "overlap", "mamba2: dx overlapping x");
    vexpect(M2(ctx, VH, VV, 1, VK, SP, x, dt, A, Bm, Cm, D, bias, dy, dx, dt, dA, dBm, dCm, dD, db,
               dsin), INV, "ddt", "overlap", "mamba2: ddt overlapping dt");
    vexpect(M2(ctx, VH, VV, 1, VK, SP, x, dt, A, Bm, Cm, D, bias, dy, dx, ddt, A, dBm, dCm, dD, db,
               dsin), INV, "dA", "overlap", "mamba2: dA overlapping A");
    vexpect(M2(ctx, VH, VV, 1, VK, SP, x, dt, A, Bm, Cm, D, bias, dy, dx, ddt, dA, dBm, dBm + 1,
               dD, db, dsin), INV, "dCm", "dBm", "mamba2: dCm overlapping dBm");
    vexpect(M2(ctx, VH, VV, 1, VK, SP, x, dt, A, Bm, Cm, D, bias, dy, dx, ddt, dA, dBm, dCm, D, db,
               dsin), INV, "dD", "overlap", "mamba2: dD overlapping D");
    vexpect(M2(ctx, VH, VV, 1, VK, SP, x, dt, A, Bm, Cm, D, bias, dy, dx, ddt, dA, dBm, dCm, dD,
               bias, dsin), INV, "ddt_bias", "overlap", "mamba2: ddt_bias overlapping dt_bias");
    vexpect(M2(ctx, VH, VV, 1, VK, SP, x, dt, A, Bm, Cm, D, bias, dy, dx, ddt, dA, dBm, dCm, dD, db,
               dsT), INV, "dstate_in", "dstate_out", "mamba2: dstate_in == dstate_out");
#undef M2
    /* the workspace query */
    th_check_status(seqk_linear_state_backward_workspace_size(ctx, 1, VT, VH, VH, VK, VV, 0, 0,
                                                              NULL),
                    INV, "validation: workspace size with bytes NULL");
    size_t bytes = 0;
    th_check_status(seqk_linear_state_backward_workspace_size(ctx, 1, VT, 4, 3, VK, VV, 0, 0,
                                                              &bytes),
                    INV, "validation: workspace size with H % G != 0");
}

/* ---- main ----------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    th_backend *be;
    int nb = th_init(argc, argv, &be);
    th_seed(11);
    reference_checks();

    const int32_t *c133 = tf_cu_133, *c91 = tf_cu_91; /* empty and length-1 sequences */
    const bcase cases[] = {
        /* B  T    H  K    V   s0 dsT dsin cu    N  chunk glo   ghi  ws heavy */
        {1, 1, 1, 8, 8, 0, 0, 1, NULL, 0, 0, -0.05, 0, 0, 0},     /* T = 1, no states */
        {2, 1, 3, 7, 5, 1, 1, 1, NULL, 0, 0, -0.5, 0, 1, 0},      /* T = 1 with states */
        {1, 37, 2, 16, 16, 1, 1, 1, NULL, 0, 0, -0.05, 0, 0, 0},  /* T prime < chunk */
        {2, 131, 3, 17, 9, 1, 1, 0, NULL, 0, 0, -0.5, 0, 0, 0},   /* T prime, odd dims, K != V */
        {1, 131, 2, 33, 7, 0, 1, 1, NULL, 0, 16, -0.3, 0, 1, 0},  /* chunk 16, no s0 */
        {1, 37, 2, 5, 3, 1, 1, 1, NULL, 0, 1, -0.3, 0, 0, 0},     /* chunk 1 */
        {1, 100, 2, 8, 12, 1, 0, 1, NULL, 0, 48, -0.2, 0, 0, 0},  /* not a multiple, no dsT */
        {1, 300, 2, 64, 64, 1, 1, 1, NULL, 0, 64, -0.02, 0, 0, 0}, /* K = 64, gates near 0 */
        {1, 300, 2, 64, 64, 1, 1, 1, NULL, 0, 64, -21, -19, 0, 0}, /* gates near -20 */
        {1, 200, 1, 128, 128, 1, 1, 1, NULL, 0, 0, -0.05, 0, 1, 0}, /* K = V = 128, one head */
        {1, 133, 2, 24, 40, 1, 1, 1, c133, 5, 32, -0.3, 0, 1, 0}, /* varlen */
        {1, 91, 1, 7, 33, 0, 1, 1, c91, 3, 16, -1, 0, 0, 0},      /* varlen, one head, no s0 */
        {1, 91, 3, 9, 6, 1, 0, 0, c91, 3, 0, -2, 0, 0, 0},        /* varlen, no dsT, no dstate_in */
        {4, 100, 4, 8, 8, 1, 1, 1, NULL, 0, 7, -1, 0, 0, 0},      /* several batches and heads */
        {1, 90, 5, 20, 200, 1, 1, 0, NULL, 0, 0, -3, 0, 0, 0},    /* V > 128 */
    };
    for (int i = 0; i < nb; i++)
        for (size_t j = 0; j < sizeof cases / sizeof cases[0]; j++)
            for (int mod = 0; mod < NMODULES; mod++) {
                if (cases[j].glo < -10 && mod != GATED) continue; /* gates only matter there */
                lin_case(&be[i], mod, &cases[j]);
            }

    const mcase mcases[] = {
        /* B  T   H  P   G  Nst sp D bias dbias s0 dsT dsin cu   N chunk Alo  Ahi   dtlo dthi ws heavy */
        {2, 100, 4, 16, 2, 8, 1, 1, 1, 1, 1, 1, 1, NULL, 0, 32, -2, -0.2, -3, 1, 1, 0},  /* G < H */
        {1, 77, 3, 8, 1, 16, 0, 0, 0, 1, 0, 1, 1, NULL, 0, 0, -2, -0.2, 0.01, 1, 0, 0},  /* no softplus, no D/bias */
        {1, 130, 2, 64, 1, 64, 1, 2, 0, 0, 1, 0, 0, NULL, 0, 64, -2, -0.2, -3, 1, 0, 0}, /* P = Nst = 64 */
        {1, 133, 4, 7, 2, 5, 1, 1, 1, 1, 1, 1, 1, c133, 5, 16, -2, -0.2, -3, 1, 1, 0},   /* varlen, odd dims */
        {1, 131, 2, 9, 2, 3, 1, 1, 1, 0, 1, 1, 1, NULL, 0, 1, -2, -0.2, -3, 1, 0, 0},    /* chunk 1, G = H */
        {1, 1, 2, 4, 1, 4, 1, 1, 1, 1, 1, 1, 1, NULL, 0, 0, -2, -0.2, -3, 1, 0, 0},      /* T = 1 */
        {2, 37, 6, 5, 3, 7, 0, 1, 1, 1, 0, 1, 1, NULL, 0, 16, -1, -0.1, 0.01, 0.5, 0, 0}, /* no softplus, G = 3 */
        {1, 150, 2, 16, 1, 16, 1, 1, 1, 1, 1, 1, 1, NULL, 0, 0, -10, -7, 1.5, 2.5, 0, 0}, /* dt A ~ -20 */
        {1, 150, 4, 16, 2, 16, 0, 1, 0, 1, 1, 1, 1, NULL, 0, 32, -12, -8, 1.5, 2.5, 0, 0}, /* idem, no softplus */
    };
    for (int i = 0; i < nb; i++)
        for (size_t j = 0; j < sizeof mcases / sizeof mcases[0]; j++)
            mamba2_case(&be[i], &mcases[j], 0);

    /* T = 65536: gates near 0, near -20 and spread over [-12, 0]; no decay at all */
    const bcase longs[] = {
        {1, 65536, 2, 16, 16, 1, 1, 1, NULL, 0, 64, -0.02, 0, 0, 1},
        {1, 65536, 2, 16, 16, 1, 1, 1, NULL, 0, 64, -21, -19, 0, 1},
        {1, 65536, 2, 16, 16, 1, 1, 1, NULL, 0, 0, -12, 0, 0, 1},
    };
    const bcase long_la = {1, 65536, 1, 8, 8, 1, 1, 1, NULL, 0, 0, 0, 0, 0, 1};
    const mcase long_m2 = {1, 65536, 2, 16, 1, 16, 1, 1, 1, 1, 1, 1, 1, NULL, 0, 0,
                           -2, -0.2, -3, 1, 0, 1};
    /* T = 4096 on every backend, the emulator's included: sums over many tokens
     * (dA, ddt_bias, a reverse cumsum of dg) at a size it runs in seconds */
    const bcase medium = {1, 4096, 2, 16, 16, 1, 1, 1, NULL, 0, 0, -1, 0, 0, 0};
    const mcase medium_m2 = {1, 4096, 2, 16, 1, 16, 1, 1, 1, 1, 1, 1, 1, NULL, 0, 0,
                             -2, -0.2, -3, 1, 0, 0};
    for (int i = 0; i < nb; i++) {
        lin_long(&be[i], GATED, &medium);
        mamba2_case(&be[i], &medium_m2, 1);
    }
    for (int i = 0; i < nb; i++) {
        for (size_t j = 0; j < sizeof longs / sizeof longs[0]; j++)
            lin_long(&be[i], GATED, &longs[j]);
        lin_long(&be[i], LINATTN, &long_la);
        lin_long(&be[i], LINATTN_ELU_NORM, &long_la);
        mamba2_case(&be[i], &long_m2, 1);
    }

    /* determinism: few (sequence, head) pairs (work split inside them) and many */
    const bcase det[] = {
        {1, 131, 1, 33, 7, 1, 1, 1, NULL, 0, 16, -0.5, 0, 0, 0},
        {1, 133, 2, 24, 40, 1, 1, 1, c133, 5, 0, -0.3, 0, 0, 0},
        {2, 300, 3, 32, 32, 1, 1, 1, NULL, 0, 64, -0.1, 0, 0, 0},
    };
    const mcase mdet = {2, 150, 4, 16, 2, 8, 1, 1, 1, 1, 1, 1, 1, NULL, 0, 32,
                        -2, -0.2, -3, 1, 0, 0};
    for (int i = 0; i < nb; i++) {
        for (size_t j = 0; j < sizeof det / sizeof det[0]; j++) {
            lin_determinism(&be[i], GATED, &det[j]);
            lin_determinism(&be[i], LINATTN_ELU_NORM, &det[j]);
        }
        mamba2_determinism(&be[i], &mdet);
        zero_tokens(&be[i]);
    }
    for (int i = 0; i < nb; i++)
        if (be[i].backend == SEQK_BACKEND_CPU && be[i].ctx) validation(be[i].ctx);
    return th_finish();
}
