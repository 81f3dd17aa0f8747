/* tests/test_linear_state.c -- linear attention, RetNet retention, gated
 * retention and the Mamba2 entry, both modes, on every backend, against the
 * float64 token loops of tests/ref; recurrent == parallel; split == whole
 * through the state; validation rules. */
#include "fixtures.h"
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

/* Host inputs of one case, and the reference's outputs for them. */
typedef struct {
    float *q, *k, *v, *g, *gamma, *s0, *z0;
    double *ro, *rs, *rz; /* o, the final state and z, float64 */
    size_t nq, nv, ng, ns, nz;
    int norm; /* the module has the normaliser (z_in, z_out) */
} inputs;

/* The float64 reference of module mod on the inputs (in->norm set): in->ro,
 * in->rs, in->rz. */
static void reference(int mod, const lcase *c, inputs *in)
{
    ref_decay dec = {0, NULL, NULL};
    float gam[64];
    if (mod == RETNET) dec.kind = 1, dec.gamma = in->gamma;
    if (mod == RETNET_DEFAULT) {
        for (int64_t h = 0; h < c->H; h++) gam[h] = (float)(1.0 - pow(2.0, -5.0 - (double)h));
        dec.kind = 1, dec.gamma = gam;
    }
    if (mod == GATED) dec.kind = 2, dec.g = in->g;
    const int norm = in->norm;
    ref_linear_state(c->B, c->T, c->H, c->K, c->V, 1.0 / sqrt((double)c->K), norm,
                     mod == LINATTN_ELU_NORM, dec, in->q, in->k, in->v,
                     c->with_s0 ? in->s0 : NULL, c->with_s0 && norm ? in->z0 : NULL, in->ro,
                     in->rs, in->rz, c->cu, c->N);
}

/* The random inputs of case c for module mod and the float64 reference's
 * outputs for them, allocated in h, each array one element longer than it
 * needs. */
static void make_case(tf_arrays *h, const lcase *c, int mod, inputs *in)
{
    const int64_t N = c->cu ? c->N : c->B;
    in->nq = (size_t)(c->B * c->T * c->H * c->K);
    in->nv = (size_t)(c->B * c->T * c->H * c->V);
    in->ng = (size_t)(c->B * c->T * c->H);
    in->ns = (size_t)(N * c->H * c->K * c->V);
    in->nz = (size_t)(N * c->H * c->K);
    const double lo = mod == LINATTN_NORM ? 0.05 : -1.0; /* positive features keep q.z away from 0 */
    in->q = tf_random(h, in->nq + 1, lo, 1);
    in->k = tf_random(h, in->nq + 1, lo, 1);
    in->v = tf_random(h, in->nv + 1, -1, 1);
    in->g = tf_random(h, in->ng + 1, c->glo, c->ghi);
    in->gamma = tf_random(h, (size_t)c->H, 0.8, 1.0);
    in->s0 = tf_random(h, in->ns + 1, -0.5, 0.5);
    in->z0 = tf_random(h, in->nz + 1, 0.5, 1.0);
    in->norm = mod == LINATTN_NORM || mod == LINATTN_ELU_NORM;
    in->ro = tf_doubles(h, in->nv + 1);
    in->rs = tf_doubles(h, in->ns + 1);
    in->rz = tf_doubles(h, in->nz + 1);
    reference(mod, c, in);
}

/* Backend copies of the inputs and outputs of one call. */
typedef struct {
    float *q, *k, *v, *g, *gamma, *s0, *z0, *o, *s1, *z1;
    int32_t *cu;
} dev;

/* Uploads the inputs into d's backend; o, s1 and z1 poisoned. */
static void upload(tf_arrays *d, const lcase *c, const inputs *in, dev *x)
{
    const int64_t N = c->cu ? c->N : c->B;
    x->q = tf_upload(d, in->q, in->nq * 4 + 4), x->k = tf_upload(d, in->k, in->nq * 4 + 4);
    x->v = tf_upload(d, in->v, in->nv * 4 + 4), x->g = tf_upload(d, in->g, in->ng * 4 + 4);
    x->gamma = tf_upload(d, in->gamma, (size_t)c->H * 4);
    x->s0 = tf_upload(d, in->s0, in->ns * 4 + 4), x->z0 = tf_upload(d, in->z0, in->nz * 4 + 4);
    x->o = tf_poisoned(d, in->nv + 1), x->s1 = tf_poisoned(d, in->ns + 1);
    x->z1 = tf_poisoned(d, in->nz + 1);
    x->cu = c->cu ? tf_upload(d, c->cu, (size_t)(N + 1) * 4) : NULL;
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
    if (th_skipped(be, what)) return;
    tf_arrays h = tf_arrays_on(NULL), d = tf_arrays_on(be);
    inputs in;
    make_case(&h, c, mod, &in);
    const int norm = in.norm;
    float *out[2] = {tf_floats(&h, in.nv + 1), tf_floats(&h, in.nv + 1)};
    float *st = tf_floats(&h, in.ns + 1), *zt = tf_floats(&h, in.nz + 1);
    for (int m = 0; m < 2; m++) {
        const seqk_mode mode = m ? SEQK_MODE_PARALLEL : SEQK_MODE_RECURRENT;
        describe(c, mod, be->name, th_mode_name(mode), what, sizeof what);
        dev x;
        upload(&d, c, &in, &x);
        seqk_status s = call(be->ctx, mod, mode, c, c->T, x.q, x.k, x.v, x.g, x.gamma,
                             c->with_s0 ? x.s0 : NULL, c->with_s0 && norm ? x.z0 : NULL, x.o,
                             x.s1, norm ? x.z1 : NULL, x.cu);
        if (th_check_status(s, SEQK_SUCCESS, what)) {
            tf_check_result(be, out[m], x.o, in.nv, in.ro, TOL, true, what, "o");
            tf_check_result(be, st, x.s1, in.ns, in.rs, TOL, false, what, "final state");
            if (norm) tf_check_result(be, zt, x.z1, in.nz, in.rz, TOL, false, what, "final z");
        } else {
            th_poison(out[m], in.nv + 1);
        }
        tf_arrays_free(&d);
    }
    describe(c, mod, be->name, "recurrent vs parallel", what, sizeof what);
    th_check_close_f(out[0], out[1], in.nv, TOL, "%s", what);
    tf_arrays_free(&h);
}

/* Parallel over [0, T1) then recurrent over [T1, T) through the state, B = 1,
 * equals the reference over [0, T). */
static void split_equals_whole(th_backend *be, int mod, const lcase *c, int64_t T1)
{
    char what[256];
    describe(c, mod, be->name, "split==whole (parallel then recurrent)", what, sizeof what);
    if (th_skipped(be, what)) return;
    tf_arrays h = tf_arrays_on(NULL), d = tf_arrays_on(be);
    inputs in;
    make_case(&h, c, mod, &in); /* c->B = 1 */
    const int norm = in.norm;
    dev x;
    upload(&d, c, &in, &x);
    const int64_t H = c->H, K = c->K, V = c->V;
    float *mid = tf_poisoned(&d, in.ns), *zmid = tf_poisoned(&d, in.nz);
    seqk_status s = call(be->ctx, mod, SEQK_MODE_PARALLEL, c, T1, x.q, x.k, x.v, x.g, x.gamma,
                         c->with_s0 ? x.s0 : NULL, c->with_s0 && norm ? x.z0 : NULL, x.o, mid,
                         norm ? zmid : NULL, NULL);
    if (!s)
        s = call(be->ctx, mod, SEQK_MODE_RECURRENT, c, c->T - T1, x.q + T1 * H * K,
                 x.k + T1 * H * K, x.v + T1 * H * V, x.g + T1 * H, x.gamma, mid,
                 norm ? zmid : NULL, x.o + T1 * H * V, x.s1, norm ? x.z1 : NULL, NULL);
    if (th_check_status(s, SEQK_SUCCESS, what)) {
        tf_check_result(be, tf_floats(&h, in.nv), x.o, in.nv, in.ro, TOL, false, what, "o");
        tf_check_result(be, tf_floats(&h, in.ns), x.s1, in.ns, in.rs, TOL, false, what,
                        "final state");
    }
    tf_arrays_free(&d);
    tf_arrays_free(&h);
}

/* Mamba2 against its own reference, and equal to the gated-retention call it maps to. */
static void mamba2_case(th_backend *be, int64_t B, int64_t T, int64_t H, int64_t P, int64_t G,
                        int64_t Nst, int softplus, int with_s0, int64_t chunk)
{
    char what[200];
    snprintf(what, sizeof what, "%s mamba2 B=%lld T=%lld H=%lld P=%lld G=%lld N=%lld%s%s", be->name,
             (long long)B, (long long)T, (long long)H, (long long)P, (long long)G, (long long)Nst,
             softplus ? " softplus" : "", with_s0 ? " s0" : "");
    if (th_skipped(be, what)) return;
    tf_arrays h = tf_arrays_on(NULL), d = tf_arrays_on(be);
    const size_t nx = (size_t)(B * T * H * P), ndt = (size_t)(B * T * H),
                 nb = (size_t)(B * T * G * Nst), ns = (size_t)(B * H * Nst * P);
    /* without softplus, dt + bias must itself be a positive step size */
    float *x = tf_random(&h, nx, -1, 1), *dt = tf_random(&h, ndt, softplus ? -3 : 0.01, 1);
    float *A = tf_random(&h, (size_t)H, -2, -0.2), *Bm = tf_random(&h, nb, -1, 1),
          *Cm = tf_random(&h, nb, -1, 1), *D = tf_random(&h, (size_t)H, -1, 1);
    float *bias = tf_random(&h, (size_t)H, softplus ? -0.5 : 0, 0.5);
    float *s0 = tf_random(&h, ns, -0.5, 0.5);
    double *ry = tf_doubles(&h, nx), *rs = tf_doubles(&h, ns);
    ref_mamba2(B, T, H, P, G, Nst, softplus, x, dt, A, Bm, Cm, D, bias, with_s0 ? s0 : NULL, ry, rs,
               NULL, B);
    float *dx = tf_upload(&d, x, nx * 4), *ddt = tf_upload(&d, dt, ndt * 4),
          *dA = tf_upload(&d, A, (size_t)H * 4), *dB = tf_upload(&d, Bm, nb * 4),
          *dC = tf_upload(&d, Cm, nb * 4), *dD = tf_upload(&d, D, (size_t)H * 4),
          *dbias = tf_upload(&d, bias, (size_t)H * 4), *ds0 = tf_upload(&d, s0, ns * 4);
    float *y = tf_floats(&h, nx), *s1 = tf_floats(&h, ns);
    for (int m = 0; m < 2; m++) {
        const seqk_mode mode = m ? SEQK_MODE_PARALLEL : SEQK_MODE_RECURRENT;
        char w2[240];
        snprintf(w2, sizeof w2, "%s %s", what, th_mode_name(mode));
        tf_arrays out = tf_arrays_on(be);
        float *dy = tf_poisoned(&out, nx), *ds1 = tf_poisoned(&out, ns);
        seqk_status s = seqk_mamba2(be->ctx, mode, B, T, H, P, G, Nst,
                                    softplus ? SEQK_MAMBA2_DT_SOFTPLUS : 0, dx, ddt, dA, dB, dC, dD,
                                    dbias, dy, with_s0 ? ds0 : NULL, ds1, NULL, 0, chunk);
        if (th_check_status(s, SEQK_SUCCESS, w2)) {
            tf_check_result(be, y, dy, nx, ry, TOL, false, w2, "y");
            tf_check_result(be, s1, ds1, ns, rs, TOL, false, w2, "final state");
        }
        tf_arrays_free(&out);
    }
    /* The mapping: q = C, k = B per head, v = dt' x, g = dt' A, then + D x. */
    const size_t nq = (size_t)(B * T * H * Nst);
    float *q = tf_floats(&h, nq), *k = tf_floats(&h, nq), *v = tf_floats(&h, nx),
          *g = tf_floats(&h, ndt);
    for (int64_t r = 0; r < B * T; r++)
        for (int64_t hh = 0; hh < H; hh++) {
            const int64_t grp = hh / (H / G);
            double dd = (double)dt[r * H + hh] + bias[hh];
            if (softplus) dd = log1p(exp(dd));
            g[r * H + hh] = (float)(dd * A[hh]);
            for (int64_t i = 0; i < Nst; i++) {
                q[(r * H + hh) * Nst + i] = Cm[(r * G + grp) * Nst + i];
                k[(r * H + hh) * Nst + i] = Bm[(r * G + grp) * Nst + i];
            }
            for (int64_t p = 0; p < P; p++)
                v[(r * H + hh) * P + p] = (float)(dd * x[(r * H + hh) * P + p]);
        }
    float *dq = tf_upload(&d, q, nq * 4), *dk = tf_upload(&d, k, nq * 4),
          *dv = tf_upload(&d, v, nx * 4), *dg = tf_upload(&d, g, ndt * 4);
    float *dy = tf_poisoned(&d, nx), *dy2 = tf_poisoned(&d, nx);
    seqk_status s = seqk_gated_retention(be->ctx, SEQK_MODE_PARALLEL, B, T, H, Nst, P, 1.0f, dq, dk,
                                         dv, dg, dy, with_s0 ? ds0 : NULL, NULL, NULL, 0, chunk);
    if (!s)
        s = seqk_mamba2(be->ctx, SEQK_MODE_PARALLEL, B, T, H, P, G, Nst,
                        softplus ? SEQK_MAMBA2_DT_SOFTPLUS : 0, dx, ddt, dA, dB, dC, NULL, dbias,
                        dy2, with_s0 ? ds0 : NULL, NULL, NULL, 0, chunk);
    char w2[240];
    snprintf(w2, sizeof w2, "%s equals gated_retention of its mapping", what);
    if (th_check_status(s, SEQK_SUCCESS, w2)) {
        float *a1 = tf_floats(&h, nx), *a2 = tf_floats(&h, nx);
        th_download(be, a1, dy, nx * 4);
        th_download(be, a2, dy2, nx * 4);
        th_check_close_f(a2, a1, nx, 1e-6, "%s", w2);
    }
    tf_arrays_free(&d);
    tf_arrays_free(&h);
}

/* ---- the default chunk ----------------------------------------------------------- */

/* seqk_chunk_default: the rule seqk.h states on every backend; on the CPU,
 * chunk = 0 runs exactly that chunk (the same bits as passing it, which
 * differ from other chunks' in the last places); its validation. */
static void default_chunk(th_backend *be)
{
    if (th_skipped(be, "seqk_chunk_default")) return;
    const bool cpu = be->backend == SEQK_BACKEND_CPU;
    const int64_t KV[][2] = {{64, 64}, {8, 24}, {65, 64}, {64, 128}, {128, 128}, {129, 16}};
    for (size_t i = 0; i < sizeof KV / sizeof KV[0]; i++)
        for (int op = 0; op < 2; op++) {
            int64_t c = -1;
            const int64_t K = KV[i][0], V = KV[i][1], small = op == SEQK_CHUNKED_DELTANET ? 128 : 64;
            const int64_t want = cpu && K <= small && V <= small ? 32 : 64;
            th_check_status(seqk_chunk_default(be->ctx, (seqk_chunked_op)op, K, V, &c), SEQK_SUCCESS,
                            "seqk_chunk_default");
            th_check(c == want, "%s: seqk_chunk_default(op=%d, K=%lld, V=%lld) = %lld, want %lld",
                     be->name, op, (long long)K, (long long)V, (long long)c, (long long)want);
        }
    const seqk_chunked_op LIN = SEQK_CHUNKED_LINEAR_STATE;
    int64_t c = -7;
    th_check(seqk_chunk_default(be->ctx, LIN, 0, 64, &c) == SEQK_ERROR_INVALID_ARGUMENT &&
                 strstr(seqk_last_error(), "K=0") && c == -7,
             "seqk_chunk_default K=0: INVALID_ARGUMENT naming K=0, chunk untouched (%s)",
             seqk_last_error());
    th_check(seqk_chunk_default(be->ctx, (seqk_chunked_op)2, 64, 64, &c) ==
                     SEQK_ERROR_INVALID_ARGUMENT &&
                 strstr(seqk_last_error(), "op=2") && c == -7,
             "seqk_chunk_default op=2: INVALID_ARGUMENT naming op=2, chunk untouched (%s)",
             seqk_last_error());
    th_check(seqk_chunk_default(be->ctx, LIN, 64, 64, NULL) == SEQK_ERROR_INVALID_ARGUMENT &&
                 strstr(seqk_last_error(), "chunk"),
             "seqk_chunk_default chunk=NULL: INVALID_ARGUMENT naming chunk (%s)", seqk_last_error());
    th_check(seqk_chunk_default(NULL, LIN, 64, 64, &c) != SEQK_SUCCESS && c == -7,
             "seqk_chunk_default ctx=NULL: an error, chunk untouched");
    if (!cpu) return; /* host buffers below */
    enum { T = 150, H = 2, D = 64 };
    const size_t n = (size_t)T * H * D;
    float *q = malloc(n * 4), *k = malloc(n * 4), *v = malloc(n * 4), *g = malloc(T * H * 4);
    float *o0 = malloc(n * 4), *oc = malloc(n * 4);
    th_fill(q, n, -1, 1), th_fill(k, n, -1, 1), th_fill(v, n, -1, 1), th_fill(g, T * H, -0.1, 0);
    int64_t chunk = 0;
    seqk_chunk_default(be->ctx, LIN, D, D, &chunk);
    tf_fill_untouched(o0, n), tf_fill_untouched(oc, n);
    th_check_status(seqk_gated_retention(be->ctx, SEQK_MODE_PARALLEL, 1, T, H, D, D, 0.125f, q, k, v,
                                         g, o0, NULL, NULL, NULL, 0, 0),
                    SEQK_SUCCESS, "gated_retention chunk=0");
    th_check_status(seqk_gated_retention(be->ctx, SEQK_MODE_PARALLEL, 1, T, H, D, D, 0.125f, q, k, v,
                                         g, oc, NULL, NULL, NULL, 0, chunk),
                    SEQK_SUCCESS, "gated_retention chunk=default");
    th_check(memcmp(o0, oc, n * 4) == 0,
             "cpu: gated retention with chunk = 0 equals chunk = %lld bit for bit", (long long)chunk);
    free(q), free(k), free(v), free(g), free(o0), free(oc);
}

/* ---- validation ------------------------------------------------------------------ */

static void validation(seqk_context *ctx)
{
    enum { B = 1, T = 5, H = 2, K = 4, V = 3 };
    float q[B * T * H * K], k[B * T * H * K], v[B * T * H * V], g[B * T * H], o[B * T * H * V],
        s[B * H * K * V];
    for (size_t i = 0; i < sizeof q / 4; i++) q[i] = k[i] = 0.1f;
    for (size_t i = 0; i < sizeof v / 4; i++) v[i] = 0.2f;
    for (size_t i = 0; i < sizeof g / 4; i++) g[i] = -0.1f;
#define RESET() (tf_fill_untouched(o, sizeof o / 4), tf_fill_untouched(s, sizeof s / 4))
#define EXPECT(got, want, needle, rule, o_, no_) \
    tf_expect_rejected(got, want, needle, rule, o_, no_, NULL, 0)
    const seqk_status INV = SEQK_ERROR_INVALID_ARGUMENT;
    const seqk_mode PAR = SEQK_MODE_PARALLEL;
    RESET();
    EXPECT(seqk_linear_attention(ctx, (seqk_mode)5, B, T, H, K, V, 1, 0, q, k, v, o, NULL, s, NULL,
                                 NULL, NULL, 0, 0), INV, "mode=5", "mode=5", o, sizeof o / 4);
    RESET();
    EXPECT(seqk_linear_attention(ctx, PAR, B, T, 0, K, V, 1, 0, q, k, v, o, NULL, s, NULL, NULL,
                                 NULL, 0, 0), INV, "H=0", "H=0", o, sizeof o / 4);
    RESET();
    EXPECT(seqk_linear_attention(ctx, PAR, B, T, H, 2000, V, 1, 0, q, k, v, o, NULL, s, NULL, NULL,
                                 NULL, 0, 0), SEQK_ERROR_UNSUPPORTED, "K=2000", "K too large", o,
           sizeof o / 4);
    RESET();
    EXPECT(seqk_linear_attention(ctx, PAR, B, T, H, K, V, 1, 0, q, k, v, o, NULL, s, NULL, NULL,
                                 NULL, 0, 4096), INV, "chunk=4096", "chunk=4096", o, sizeof o / 4);
    RESET();
    EXPECT(seqk_linear_attention(ctx, PAR, B, T, H, K, V, NAN, 0, q, k, v, o, NULL, s, NULL, NULL,
                                 NULL, 0, 0), INV, "scale=nan", "scale NaN", o, sizeof o / 4);
    RESET();
    EXPECT(seqk_linear_attention(ctx, PAR, B, T, H, K, V, 1, 0x10, q, k, v, o, NULL, s, NULL, NULL,
                                 NULL, 0, 0), INV, "flags=0x10", "unknown flags", o, sizeof o / 4);
    RESET();
    EXPECT(seqk_linear_attention(ctx, PAR, B, T, H, K, V, 1, 0, q, k, v, o, NULL, s, s, NULL,
                                 NULL, 0, 0), INV, "z_in", "z without the normaliser", o,
           sizeof o / 4);
    RESET();
    EXPECT(seqk_linear_attention(ctx, PAR, B, T, H, K, V, 1, 0, NULL, k, v, o, NULL, s, NULL, NULL,
                                 NULL, 0, 0), INV, "q is NULL", "q NULL", o, sizeof o / 4);
    RESET();
    EXPECT(seqk_linear_attention(ctx, PAR, B, T, H, K, V, 1, 0, q, k, v, NULL, NULL, s, NULL, NULL,
                                 NULL, 0, 0), INV, "o is NULL", "o NULL", o, sizeof o / 4);
    RESET();
    EXPECT(seqk_linear_attention(ctx, PAR, B, T, H, K, V, 1, 0, q, k, v, (float *)v, NULL, s, NULL,
                                 NULL, NULL, 0, 0), INV, "overlaps v", "o overlapping v", o, 0);
    RESET();
    EXPECT(seqk_gated_retention(ctx, PAR, B, T, H, K, V, 1, q, k, v, NULL, o, NULL, s, NULL, 0, 0),
           INV, "g is NULL", "g NULL", o, sizeof o / 4);
    float gam[H] = {0.9f, 1.5f};
    RESET();
    EXPECT(seqk_retention(ctx, PAR, B, T, H, K, V, 1, gam, q, k, v, o, NULL, s, NULL, 0, 0), INV,
           "gamma[1]=1.5", "gamma out of (0,1]", o, sizeof o / 4);
    const int32_t cu_bad[3] = {0, 4, 3};
    RESET();
    EXPECT(seqk_gated_retention(ctx, PAR, B, T, H, K, V, 1, q, k, v, g, o, NULL, s, cu_bad, 2, 0),
           INV, "cu_seqlens[2]=3 < cu_seqlens[1]=4", "cu_seqlens decreasing", o, sizeof o / 4);
    const int32_t cu_end[3] = {0, 2, 4};
    RESET();
    EXPECT(seqk_retention(ctx, SEQK_MODE_RECURRENT, B, T, H, K, V, 1, NULL, q, k, v, o, NULL, s,
                          cu_end, 2, 0), INV, "must equal T=5", "cu_seqlens[N] != T", o,
           sizeof o / 4);
    RESET();
    EXPECT(seqk_mamba2(ctx, PAR, B, T, H, V, 3, K, 0, v, g, g, q, k, NULL, NULL, o, NULL, s, NULL, 0,
                       0), INV, "G=3", "G > H", o, sizeof o / 4);
    RESET();
    float gammas[4];
    th_check_status(seqk_retention_default_gammas(4, gammas), SEQK_SUCCESS, "default gammas");
    th_check(fabsf(gammas[0] - (1.0f - 1.0f / 32)) < 1e-7f && fabsf(gammas[3] - (1.0f - 1.0f / 256)) < 1e-7f,
             "default gammas are 1 - 2^(-5-h)");
#undef EXPECT
#undef RESET
}

int main(int argc, char **argv)
{
    th_backend *be;
    int nb = th_init(argc, argv, &be);
    th_seed(7);
    const int32_t *cu1 = tf_cu_133; /* empty and length-1 sequences */
    const lcase cases[] = {
        /* B  T    H  K    V    s0 cu   N chunk glo    ghi */
        {1, 1, 1, 8, 8, 0, NULL, 0, 0, -0.05, 0},        /* T = 1 */
        {2, 1, 3, 16, 12, 1, NULL, 0, 0, -0.05, 0},      /* T = 1 with a state */
        {1, 37, 2, 16, 16, 1, NULL, 0, 64, -0.05, 0},    /* T < chunk */
        {2, 131, 3, 17, 9, 1, NULL, 0, 0, -0.5, 0},      /* T not a multiple, odd dims, K != V */
        {1, 200, 2, 32, 48, 0, NULL, 0, 16, -0.05, 0},   /* small chunk */
        {1, 300, 2, 64, 64, 1, NULL, 0, 64, -0.02, 0},   /* head dim 64, gates near 0 */
        {1, 300, 2, 64, 64, 1, NULL, 0, 64, -21, -19},   /* gates near -20 */
        {1, 200, 1, 128, 128, 1, NULL, 0, 0, -0.05, 0},  /* head dim 128, one head: staged path */
        {1, 133, 2, 24, 40, 1, cu1, 5, 32, -0.3, 0},     /* varlen */
        {1, 133, 1, 24, 40, 0, cu1, 5, 32, -0.3, 0},     /* varlen, one head: staged */
        {4, 100, 4, 8, 8, 1, NULL, 0, 7, -1, 0},          /* several batches and heads */
        {1, 90, 5, 20, 200, 1, NULL, 0, 0, -3, 0},        /* V > 128: column groups, partial tiles;
                                                           * gates cut the recurrent blocks */
    };
    for (int i = 0; i < nb; i++)
        for (size_t j = 0; j < sizeof cases / sizeof cases[0]; j++)
            for (int mod = 0; mod < NMODULES; mod++) {
                if (mod == RETNET_DEFAULT && cases[j].H > 8) continue;
                run_case(&be[i], mod, &cases[j]);
            }
    /* numerical range (gated retention): T = 65536 with gates near 0 (decay
     * near 1), near -20, and spread over [-12, 0] (the recurrent mode's
     * deferred decay cuts its blocks where |log A| would pass 16) */
    const lcase longs[] = {
        {1, 65536, 2, 16, 16, 1, NULL, 0, 64, -0.02, 0},
        {1, 65536, 2, 16, 16, 1, NULL, 0, 64, -21, -19},
        {1, 65536, 2, 16, 16, 1, NULL, 0, 64, -12, 0},
    };
    for (int i = 0; i < nb; i++)
        for (size_t j = 0; j < sizeof longs / sizeof longs[0]; j++) run_case(&be[i], GATED, &longs[j]);
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
    for (int i = 0; i < nb; i++) default_chunk(&be[i]);
    for (int i = 0; i < nb; i++)
        if (be[i].backend == SEQK_BACKEND_CPU) validation(be[i].ctx);
    return th_finish();
}
