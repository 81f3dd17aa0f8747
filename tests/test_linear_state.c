/* tests/test_linear_state.c -- linear attention, RetNet retention, gated
 * retention and the Mamba2 entry, both modes, on every backend, against the
 * float64 token loops of tests/ref; recurrent == parallel; split == whole
 * through the state; validation rules. */
#include "harness.h"
#include "ref/ref_linear.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL 1e-5

enum module { LINATTN, LINATTN_NORM, LINATTN_ELU_NORM, RETNET, RETNET_DEFAULT, GATED, NMODULES };
static const char *module_name[NMODULES] = {"linear_attention",      "linear_attention+norm",
                                            "linear_attention+elu1+norm", "retention",
                                            "retention(default gammas)", "gated_retention"};

typedef struct {
    int64_t B, T, H, K, V;
    int with_s0;
    const int32_t *cu;
    int64_t N;
    int64_t chunk;
    double glo, ghi; /* log-gate range (gated retention) */
} lcase;

/* Host inputs of one case. */
typedef struct {
    float *q, *k, *v, *g, *gamma, *s0, *z0;
    size_t nq, nv, ng, ns, nz;
} inputs;

static void make_inputs(const lcase *c, int mod, inputs *in)
{
    const int64_t N = c->cu ? c->N : c->B;
    in->nq = (size_t)(c->B * c->T * c->H * c->K);
    in->nv = (size_t)(c->B * c->T * c->H * c->V);
    in->ng = (size_t)(c->B * c->T * c->H);
    in->ns = (size_t)(N * c->H * c->K * c->V);
    in->nz = (size_t)(N * c->H * c->K);
    in->q = th_floats(in->nq + 1), in->k = th_floats(in->nq + 1), in->v = th_floats(in->nv + 1);
    in->g = th_floats(in->ng + 1), in->gamma = th_floats((size_t)c->H);
    in->s0 = th_floats(in->ns + 1), in->z0 = th_floats(in->nz + 1);
    const double lo = mod == LINATTN_NORM ? 0.05 : -1.0; /* positive features keep q.z away from 0 */
    th_fill(in->q, in->nq + 1, lo, 1);
    th_fill(in->k, in->nq + 1, lo, 1);
    th_fill(in->v, in->nv + 1, -1, 1);
    th_fill(in->g, in->ng + 1, c->glo, c->ghi);
    th_fill(in->gamma, (size_t)c->H, 0.8, 1.0);
    th_fill(in->s0, in->ns + 1, -0.5, 0.5);
    th_fill(in->z0, in->nz + 1, 0.5, 1.0);
}

static void free_inputs(inputs *in)
{
    free(in->q), free(in->k), free(in->v), free(in->g), free(in->gamma), free(in->s0),
        free(in->z0);
}

/* Backend copies of the inputs and outputs of one call. */
typedef struct {
    float *q, *k, *v, *g, *gamma, *s0, *z0, *o, *s1, *z1;
    int32_t *cu;
} dev;

static void upload(th_backend *be, const lcase *c, const inputs *in, dev *d)
{
    const int64_t N = c->cu ? c->N : c->B;
    d->q = th_upload(be, in->q, in->nq * 4 + 4), d->k = th_upload(be, in->k, in->nq * 4 + 4);
    d->v = th_upload(be, in->v, in->nv * 4 + 4), d->g = th_upload(be, in->g, in->ng * 4 + 4);
    d->gamma = th_upload(be, in->gamma, (size_t)c->H * 4);
    d->s0 = th_upload(be, in->s0, in->ns * 4 + 4), d->z0 = th_upload(be, in->z0, in->nz * 4 + 4);
    d->o = th_poisoned(be, in->nv + 1), d->s1 = th_poisoned(be, in->ns + 1);
    d->z1 = th_poisoned(be, in->nz + 1);
    d->cu = c->cu ? th_upload(be, c->cu, (size_t)(N + 1) * 4) : NULL;
}

static void release(th_backend *be, dev *d)
{
    th_free(be, d->q), th_free(be, d->k), th_free(be, d->v), th_free(be, d->g);
    th_free(be, d->gamma), th_free(be, d->s0), th_free(be, d->z0), th_free(be, d->o);
    th_free(be, d->s1), th_free(be, d->z1);
    if (d->cu) th_free(be, d->cu);
}

static seqk_status call(seqk_context *ctx, int mod, seqk_mode mode, const lcase *c, int64_t T,
                        const float *q, const float *k, const float *v, const float *g,
                        const float *gamma, const float *s0, const float *z0, float *o, float *s1,
                        float *z1, const int32_t *cu)
{
    const float scale = (float)(1.0 / sqrt((double)c->K));
    switch (mod) {
    case LINATTN:
        return seqk_linear_attention(ctx, mode, c->B, T, c->H, c->K, c->V, scale, 0, q, k, v, o,
                                     s0, s1, NULL, NULL, cu, c->N, c->chunk);
    case LINATTN_NORM:
        return seqk_linear_attention(ctx, mode, c->B, T, c->H, c->K, c->V, scale,
                                     SEQK_LINATTN_NORMALIZE, q, k, v, o, s0, s1, z0, z1, cu, c->N,
                                     c->chunk);
    case LINATTN_ELU_NORM:
        return seqk_linear_attention(ctx, mode, c->B, T, c->H, c->K, c->V, scale,
                                     SEQK_LINATTN_NORMALIZE | SEQK_LINATTN_ELU1, q, k, v, o, s0,
                                     s1, z0, z1, cu, c->N, c->chunk);
    case RETNET:
        return seqk_retention(ctx, mode, c->B, T, c->H, c->K, c->V, scale, gamma, q, k, v, o, s0,
                              s1, cu, c->N, c->chunk);
    case RETNET_DEFAULT:
        return seqk_retention(ctx, mode, c->B, T, c->H, c->K, c->V, scale, NULL, q, k, v, o, s0,
                              s1, cu, c->N, c->chunk);
    default:
        return seqk_gated_retention(ctx, mode, c->B, T, c->H, c->K, c->V, scale, q, k, v, g, o,
                                    s0, s1, cu, c->N, c->chunk);
    }
}

static void reference(int mod, const lcase *c, const inputs *in, double *o, double *s1,
                      double *z1)
{
    ref_decay dec = {0, NULL, NULL};
    float gam[64];
    if (mod == RETNET) dec.kind = 1, dec.gamma = in->gamma;
    if (mod == RETNET_DEFAULT) {
        for (int64_t h = 0; h < c->H; h++) gam[h] = (float)(1.0 - pow(2.0, -5.0 - (double)h));
        dec.kind = 1, dec.gamma = gam;
    }
    if (mod == GATED) dec.kind = 2, dec.g = in->g;
    const int norm = mod == LINATTN_NORM || mod == LINATTN_ELU_NORM;
    ref_linear_state(c->B, c->T, c->H, c->K, c->V, 1.0 / sqrt((double)c->K), norm,
                     mod == LINATTN_ELU_NORM, dec, in->q, in->k, in->v,
                     c->with_s0 ? in->s0 : NULL, c->with_s0 && norm ? in->z0 : NULL, o, s1, z1,
                     c->cu, c->N);
}

static void describe(const lcase *c, int mod, const char *be, const char *mode, char *buf,
                     size_t n)
{
    snprintf(buf, n, "%s %s %s B=%lld T=%lld H=%lld K=%lld V=%lld chunk=%lld%s%s g~U[%g,%g]", be,
             module_name[mod], mode, (long long)c->B, (long long)c->T, (long long)c->H,
             (long long)c->K, (long long)c->V, (long long)c->chunk, c->with_s0 ? " s0" : "",
             c->cu ? " varlen" : "", c->glo, c->ghi);
}

/* Both modes against the reference, and against each other. */
static void run_case(th_backend *be, int mod, const lcase *c)
{
    char what[256];
    describe(c, mod, be->name, "both modes", what, sizeof what);
    if (!be->ctx) {
        th_skip("%s: %s", what, be->skip_reason);
        return;
    }
    inputs in;
    make_inputs(c, mod, &in);
    double *ro = th_doubles(in.nv + 1), *rs = th_doubles(in.ns + 1), *rz = th_doubles(in.nz + 1);
    reference(mod, c, &in, ro, rs, rz);
    const int norm = mod == LINATTN_NORM || mod == LINATTN_ELU_NORM;
    float *out[2] = {th_floats(in.nv + 1), th_floats(in.nv + 1)};
    float *st = th_floats(in.ns + 1), *zt = th_floats(in.nz + 1);
    for (int m = 0; m < 2; m++) {
        const seqk_mode mode = m ? SEQK_MODE_PARALLEL : SEQK_MODE_RECURRENT;
        describe(c, mod, be->name, m ? "parallel" : "recurrent", what, sizeof what);
        dev d;
        upload(be, c, &in, &d);
        seqk_status s = call(be->ctx, mod, mode, c, c->T, d.q, d.k, d.v, d.g, d.gamma,
                             c->with_s0 ? d.s0 : NULL, c->with_s0 && norm ? d.z0 : NULL, d.o,
                             d.s1, norm ? d.z1 : NULL, d.cu);
        if (th_check_status(s, SEQK_SUCCESS, what)) {
            th_download(be, out[m], d.o, (in.nv + 1) * 4);
            th_download(be, st, d.s1, (in.ns + 1) * 4);
            th_download(be, zt, d.z1, (in.nz + 1) * 4);
            th_check_close(out[m], ro, in.nv, TOL, "%s: o", what);
            th_check(isnan(out[m][in.nv]), "%s: nothing written past o", what);
            th_check_close(st, rs, in.ns, TOL, "%s: final state", what);
            if (norm) th_check_close(zt, rz, in.nz, TOL, "%s: final z", what);
        } else {
            th_poison(out[m], in.nv + 1);
        }
        release(be, &d);
    }
    describe(c, mod, be->name, "recurrent vs parallel", what, sizeof what);
    th_check_close_f(out[0], out[1], in.nv, TOL, "%s", what);
    free(out[0]), free(out[1]), free(st), free(zt), free(ro), free(rs), free(rz);
    free_inputs(&in);
}

/* Parallel over [0, T1) then recurrent over [T1, T) through the state, B = 1,
 * equals the reference over [0, T). */
static void split_equals_whole(th_backend *be, int mod, const lcase *c, int64_t T1)
{
    char what[256];
    describe(c, mod, be->name, "split==whole (parallel then recurrent)", what, sizeof what);
    if (!be->ctx) {
        th_skip("%s: %s", what, be->skip_reason);
        return;
    }
    inputs in;
    make_inputs(c, mod, &in);
    double *ro = th_doubles(in.nv), *rs = th_doubles(in.ns), *rz = th_doubles(in.nz);
    reference(mod, c, &in, ro, rs, rz);
    const int norm = mod == LINATTN_NORM || mod == LINATTN_ELU_NORM;
    dev d;
    upload(be, c, &in, &d);
    const int64_t H = c->H, K = c->K, V = c->V;
    float *mid = th_poisoned(be, in.ns), *zmid = th_poisoned(be, in.nz);
    seqk_status s = call(be->ctx, mod, SEQK_MODE_PARALLEL, c, T1, d.q, d.k, d.v, d.g, d.gamma,
                         c->with_s0 ? d.s0 : NULL, c->with_s0 && norm ? d.z0 : NULL, d.o, mid,
                         norm ? zmid : NULL, NULL);
    if (!s)
        s = call(be->ctx, mod, SEQK_MODE_RECURRENT, c, c->T - T1, d.q + T1 * H * K,
                 d.k + T1 * H * K, d.v + T1 * H * V, d.g + T1 * H, d.gamma, mid,
                 norm ? zmid : NULL, d.o + T1 * H * V, d.s1, norm ? d.z1 : NULL, NULL);
    if (th_check_status(s, SEQK_SUCCESS, what)) {
        float *o = th_floats(in.nv), *st = th_floats(in.ns);
        th_download(be, o, d.o, in.nv * 4);
        th_download(be, st, d.s1, in.ns * 4);
        th_check_close(o, ro, in.nv, TOL, "%s: o", what);
        th_check_close(st, rs, in.ns, TOL, "%s: final state", what);
        free(o), free(st);
    }
    th_free(be, mid), th_free(be, zmid);
    release(be, &d);
    free(ro), free(rs), free(rz);
    free_inputs(&in);
}

/* Mamba2 against its own reference, and equal to the gated-retention call it maps to. */
static void mamba2_case(th_backend *be, int64_t B, int64_t T, int64_t H, int64_t P, int64_t G,
                        int64_t Nst, int softplus, int with_s0, int64_t chunk)
{
    char what[200];
    snprintf(what, sizeof what, "%s mamba2 B=%lld T=%lld H=%lld P=%lld G=%lld N=%lld%s%s", be->name,
             (long long)B, (long long)T, (long long)H, (long long)P, (long long)G, (long long)Nst,
             softplus ? " softplus" : "", with_s0 ? " s0" : "");
    if (!be->ctx) {
        th_skip("%s: %s", what, be->skip_reason);
        return;
    }
    const size_t nx = (size_t)(B * T * H * P), ndt = (size_t)(B * T * H),
                 nb = (size_t)(B * T * G * Nst), ns = (size_t)(B * H * Nst * P);
    float *x = th_floats(nx), *dt = th_floats(ndt), *A = th_floats((size_t)H), *Bm = th_floats(nb),
          *Cm = th_floats(nb), *D = th_floats((size_t)H), *bias = th_floats((size_t)H),
          *s0 = th_floats(ns);
    /* without softplus, dt + bias must itself be a positive step size */
    th_fill(x, nx, -1, 1), th_fill(dt, ndt, softplus ? -3 : 0.01, 1);
    th_fill(A, (size_t)H, -2, -0.2), th_fill(Bm, nb, -1, 1), th_fill(Cm, nb, -1, 1);
    th_fill(D, (size_t)H, -1, 1), th_fill(bias, (size_t)H, softplus ? -0.5 : 0, 0.5);
    th_fill(s0, ns, -0.5, 0.5);
    double *ry = th_doubles(nx), *rs = th_doubles(ns);
    ref_mamba2(B, T, H, P, G, Nst, softplus, x, dt, A, Bm, Cm, D, bias, with_s0 ? s0 : NULL, ry, rs,
               NULL, B);
    float *dx = th_upload(be, x, nx * 4), *ddt = th_upload(be, dt, ndt * 4),
          *dA = th_upload(be, A, (size_t)H * 4), *dB = th_upload(be, Bm, nb * 4),
          *dC = th_upload(be, Cm, nb * 4), *dD = th_upload(be, D, (size_t)H * 4),
          *dbias = th_upload(be, bias, (size_t)H * 4), *ds0 = th_upload(be, s0, ns * 4);
    float *y = th_floats(nx), *s1 = th_floats(ns);
    for (int m = 0; m < 2; m++) {
        const seqk_mode mode = m ? SEQK_MODE_PARALLEL : SEQK_MODE_RECURRENT;
        char w2[240];
        snprintf(w2, sizeof w2, "%s %s", what, m ? "parallel" : "recurrent");
        float *dy = th_poisoned(be, nx), *ds1 = th_poisoned(be, ns);
        seqk_status s = seqk_mamba2(be->ctx, mode, B, T, H, P, G, Nst,
                                    softplus ? SEQK_MAMBA2_DT_SOFTPLUS : 0, dx, ddt, dA, dB, dC, dD,
                                    dbias, dy, with_s0 ? ds0 : NULL, ds1, NULL, 0, chunk);
        if (th_check_status(s, SEQK_SUCCESS, w2)) {
            th_download(be, y, dy, nx * 4);
            th_download(be, s1, ds1, ns * 4);
            th_check_close(y, ry, nx, TOL, "%s: y", w2);
            th_check_close(s1, rs, ns, TOL, "%s: final state", w2);
        }
        th_free(be, dy), th_free(be, ds1);
    }
    /* The mapping: q = C, k = B per head, v = dt' x, g = dt' A, then + D x. */
    {
        const size_t nq = (size_t)(B * T * H * Nst);
        float *q = th_floats(nq), *k = th_floats(nq), *v = th_floats(nx), *g = th_floats(ndt);
        for (int64_t r = 0; r < B * T; r++)
            for (int64_t h = 0; h < H; h++) {
                const int64_t grp = h / (H / G);
                double d = (double)dt[r * H + h] + bias[h];
                if (softplus) d = log1p(exp(d));
                g[r * H + h] = (float)(d * A[h]);
                for (int64_t s = 0; s < Nst; s++) {
                    q[(r * H + h) * Nst + s] = Cm[(r * G + grp) * Nst + s];
                    k[(r * H + h) * Nst + s] = Bm[(r * G + grp) * Nst + s];
                }
                for (int64_t p = 0; p < P; p++)
                    v[(r * H + h) * P + p] = (float)(d * x[(r * H + h) * P + p]);
            }
        float *dq = th_upload(be, q, nq * 4), *dk = th_upload(be, k, nq * 4),
              *dv = th_upload(be, v, nx * 4), *dg = th_upload(be, g, ndt * 4);
        float *dy = th_poisoned(be, nx), *dy2 = th_poisoned(be, nx);
        seqk_status s = seqk_gated_retention(be->ctx, SEQK_MODE_PARALLEL, B, T, H, Nst, P, 1.0f, dq,
                                             dk, dv, dg, dy, with_s0 ? ds0 : NULL, NULL, NULL, 0,
                                             chunk);
        if (!s)
            s = seqk_mamba2(be->ctx, SEQK_MODE_PARALLEL, B, T, H, P, G, Nst,
                            softplus ? SEQK_MAMBA2_DT_SOFTPLUS : 0, dx, ddt, dA, dB, dC, NULL,
                            dbias, dy2, with_s0 ? ds0 : NULL, NULL, NULL, 0, chunk);
        char w2[240];
        snprintf(w2, sizeof w2, "%s equals gated_retention of its mapping", what);
        if (th_check_status(s, SEQK_SUCCESS, w2)) {
            float *a1 = th_floats(nx), *a2 = th_floats(nx);
            th_download(be, a1, dy, nx * 4);
            th_download(be, a2, dy2, nx * 4);
            th_check_close_f(a2, a1, nx, 1e-6, "%s", w2);
            free(a1), free(a2);
        }
        th_free(be, dq), th_free(be, dk), th_free(be, dv), th_free(be, dg), th_free(be, dy),
            th_free(be, dy2);
        free(q), free(k), free(v), free(g);
    }
    th_free(be, dx), th_free(be, ddt), th_free(be, dA), th_free(be, dB), th_free(be, dC),
        th_free(be, dD), th_free(be, dbias), th_free(be, ds0);
    free(x), free(dt), free(A), free(Bm), free(Cm), free(D), free(bias), free(s0), free(y), free(s1);
    free(ry), free(rs);
}

/* ---- validation ------------------------------------------------------------------ */

static void expect(seqk_status got, seqk_status want, const char *needle, const char *rule,
                   const float *o, size_t n)
{
    char what[160];
    snprintf(what, sizeof what, "validation: %s", rule);
    th_check_status(got, want, what);
    th_check(strstr(seqk_last_error(), needle) != NULL, "validation: %s: message names '%s': %s",
             rule, needle, seqk_last_error());
    bool untouched = true;
    for (size_t i = 0; i < n; i++) untouched &= o[i] == 7.0f;
    th_check(untouched, "validation: %s: outputs untouched", rule);
}

static void validation(seqk_context *ctx)
{
    enum { B = 1, T = 5, H = 2, K = 4, V = 3 };
    float q[B * T * H * K], k[B * T * H * K], v[B * T * H * V], g[B * T * H], o[B * T * H * V],
        s[B * H * K * V];
    for (size_t i = 0; i < sizeof q / 4; i++) q[i] = k[i] = 0.1f;
    for (size_t i = 0; i < sizeof v / 4; i++) v[i] = 0.2f;
    for (size_t i = 0; i < sizeof g / 4; i++) g[i] = -0.1f;
#define RESET() do { for (size_t i_ = 0; i_ < sizeof o / 4; i_++) o[i_] = 7.0f; for (size_t i_ = 0; i_ < sizeof s / 4; i_++) s[i_] = 7.0f; } while (0)
    const seqk_status INV = SEQK_ERROR_INVALID_ARGUMENT;
    const seqk_mode PAR = SEQK_MODE_PARALLEL;
    RESET();
    expect(seqk_linear_attention(ctx, (seqk_mode)5, B, T, H, K, V, 1, 0, q, k, v, o, NULL, s, NULL,
                                 NULL, NULL, 0, 0), INV, "mode=5", "mode=5", o, sizeof o / 4);
    RESET();
    expect(seqk_linear_attention(ctx, PAR, B, T, 0, K, V, 1, 0, q, k, v, o, NULL, s, NULL, NULL,
                                 NULL, 0, 0), INV, "H=0", "H=0", o, sizeof o / 4);
    RESET();
    expect(seqk_linear_attention(ctx, PAR, B, T, H, 2000, V, 1, 0, q, k, v, o, NULL, s, NULL, NULL,
                                 NULL, 0, 0), SEQK_ERROR_UNSUPPORTED, "K=2000", "K too large", o,
           sizeof o / 4);
    RESET();
    expect(seqk_linear_attention(ctx, PAR, B, T, H, K, V, 1, 0, q, k, v, o, NULL, s, NULL, NULL,
                                 NULL, 0, 4096), INV, "chunk=4096", "chunk=4096", o, sizeof o / 4);
    RESET();
    expect(seqk_linear_attention(ctx, PAR, B, T, H, K, V, NAN, 0, q, k, v, o, NULL, s, NULL, NULL,
                                 NULL, 0, 0), INV, "scale=nan", "scale NaN", o, sizeof o / 4);
    RESET();
    expect(seqk_linear_attention(ctx, PAR, B, T, H, K, V, 1, 0x10, q, k, v, o, NULL, s, NULL, NULL,
                                 NULL, 0, 0), INV, "flags=0x10", "unknown flags", o, sizeof o / 4);
    RESET();
    expect(seqk_linear_attention(ctx, PAR, B, T, H, K, V, 1, 0, q, k, v, o, NULL, s, s, NULL,
                                 NULL, 0, 0), INV, "z_in", "z without the normaliser", o,
           sizeof o / 4);
    RESET();
    expect(seqk_linear_attention(ctx, PAR, B, T, H, K, V, 1, 0, NULL, k, v, o, NULL, s, NULL, NULL,
                                 NULL, 0, 0), INV, "q is NULL", "q NULL", o, sizeof o / 4);
    RESET();
    expect(seqk_linear_attention(ctx, PAR, B, T, H, K, V, 1, 0, q, k, v, NULL, NULL, s, NULL, NULL,
                                 NULL, 0, 0), INV, "o is NULL", "o NULL", o, sizeof o / 4);
    RESET();
    expect(seqk_linear_attention(ctx, PAR, B, T, H, K, V, 1, 0, q, k, v, (float *)v, NULL, s, NULL,
                                 NULL, NULL, 0, 0), INV, "overlaps v", "o overlapping v", o, 0);
    RESET();
    expect(seqk_gated_retention(ctx, PAR, B, T, H, K, V, 1, q, k, v, NULL, o, NULL, s, NULL, 0, 0),
           INV, "g is NULL", "g NULL", o, sizeof o / 4);
    float gam[H] = {0.9f, 1.5f};
    RESET();
    expect(seqk_retention(ctx, PAR, B, T, H, K, V, 1, gam, q, k, v, o, NULL, s, NULL, 0, 0), INV,
           "gamma[1]=1.5", "gamma out of (0,1]", o, sizeof o / 4);
    const int32_t cu_bad[3] = {0, 4, 3};
    RESET();
    expect(seqk_gated_retention(ctx, PAR, B, T, H, K, V, 1, q, k, v, g, o, NULL, s, cu_bad, 2, 0),
           INV, "cu_seqlens[2]=3 < cu_seqlens[1]=4", "cu_seqlens decreasing", o, sizeof o / 4);
    const int32_t cu_end[3] = {0, 2, 4};
    RESET();
    expect(seqk_retention(ctx, SEQK_MODE_RECURRENT, B, T, H, K, V, 1, NULL, q, k, v, o, NULL, s,
                          cu_end, 2, 0), INV, "must equal T=5", "cu_seqlens[N] != T", o,
           sizeof o / 4);
    RESET();
    expect(seqk_mamba2(ctx, PAR, B, T, H, V, 3, K, 0, v, g, g, q, k, NULL, NULL, o, NULL, s, NULL, 0,
                       0), INV, "G=3", "G > H", o, sizeof o / 4);
    RESET();
    float gammas[4];
    th_check_status(seqk_retention_default_gammas(4, gammas), SEQK_SUCCESS, "default gammas");
    th_check(fabsf(gammas[0] - (1.0f - 1.0f / 32)) < 1e-7f && fabsf(gammas[3] - (1.0f - 1.0f / 256)) < 1e-7f,
             "default gammas are 1 - 2^(-5-h)");
#undef RESET
}

int main(int argc, char **argv)
{
    th_backend *be;
    int nb = th_init(argc, argv, &be);
    th_seed(7);
    static const int32_t cu1[] = {0, 0, 1, 70, 70, 133}; /* empty and length-1 sequences */
    const lcase cases[] = {
        /* B  T    H  K    V    s0 cu   N chunk glo    ghi */
        {1, 1, 1, 8, 8, 0, NULL, 0, 0, -0.05, 0},        /* T = 1 */
        {2, 1, 3, 16, 12, 1, NULL, 0, 0, -0.05, 0},      /* T = 1 with a state */
        {1, 37, 2, 16, 16, 1, NULL, 0, 0, -0.05, 0},     /* T < chunk */
        {2, 131, 3, 17, 9, 1, NULL, 0, 0, -0.5, 0},      /* T not a multiple, odd dims, K != V */
        {1, 200, 2, 32, 48, 0, NULL, 0, 16, -0.05, 0},   /* small chunk */
        {1, 300, 2, 64, 64, 1, NULL, 0, 64, -0.02, 0},   /* head dim 64, gates near 0 */
        {1, 300, 2, 64, 64, 1, NULL, 0, 64, -21, -19},   /* gates near -20 */
        {1, 200, 1, 128, 128, 1, NULL, 0, 0, -0.05, 0},  /* head dim 128, one head: staged path */
        {1, 133, 2, 24, 40, 1, cu1, 5, 32, -0.3, 0},     /* varlen */
        {1, 133, 1, 24, 40, 0, cu1, 5, 32, -0.3, 0},     /* varlen, one head: staged */
        {4, 100, 4, 8, 8, 1, NULL, 0, 7, -1, 0},          /* several batches and heads */
    };
    for (int i = 0; i < nb; i++)
        for (size_t j = 0; j < sizeof cases / sizeof cases[0]; j++)
            for (int mod = 0; mod < NMODULES; mod++) {
                if (mod == RETNET_DEFAULT && cases[j].H > 8) continue;
                run_case(&be[i], mod, &cases[j]);
            }
    const lcase split = {1, 150, 2, 16, 24, 1, NULL, 0, 32, -0.2, 0};
    const lcase split1 = {1, 150, 1, 16, 24, 1, NULL, 0, 32, -0.2, 0};
    for (int i = 0; i < nb; i++)
        for (int mod = 0; mod < NMODULES; mod++) {
            split_equals_whole(&be[i], mod, &split, 70);  /* inside a chunk */
            split_equals_whole(&be[i], mod, &split1, 64); /* at a chunk boundary */
        }
    for (int i = 0; i < nb; i++) {
        mamba2_case(&be[i], 2, 100, 4, 16, 2, 8, 1, 1, 32);
        mamba2_case(&be[i], 1, 77, 3, 8, 1, 16, 0, 0, 0);
        mamba2_case(&be[i], 1, 130, 2, 64, 1, 64, 1, 1, 64);
    }
    for (int i = 0; i < nb; i++)
        if (be[i].backend == SEQK_BACKEND_CPU) validation(be[i].ctx);
    return th_finish();
}
