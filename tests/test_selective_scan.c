/* tests/test_selective_scan.c -- the Mamba selective scan, both modes, on
 * every backend, against the float64 token loop; recurrent == parallel;
 * split == whole; long sequences with extreme step sizes; validation. */
#include "harness.h"
#include "ref/ref_sscan.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL 1e-5

typedef struct {
    int64_t B, T, D, Nst, G;
    int softplus, with_s0, with_skip, with_z, with_bias;
    const int32_t *cu;
    int64_t N;
    double dtlo, dthi; /* raw dt range */
} scase;

typedef struct {
    float *u, *dt, *A, *Bm, *Cm, *Ds, *z, *bias, *s0;
    size_t nu, nbc, na, ns;
} sinputs;

static void make(const scase *c, sinputs *in)
{
    const int64_t N = c->cu ? c->N : c->B;
    in->nu = (size_t)(c->B * c->T * c->D), in->nbc = (size_t)(c->B * c->T * c->G * c->Nst);
    in->na = (size_t)(c->D * c->Nst), in->ns = (size_t)(N * c->D * c->Nst);
    in->u = th_floats(in->nu + 1), in->dt = th_floats(in->nu + 1), in->z = th_floats(in->nu + 1);
    in->A = th_floats(in->na), in->Bm = th_floats(in->nbc + 1), in->Cm = th_floats(in->nbc + 1);
    in->Ds = th_floats((size_t)c->D), in->bias = th_floats((size_t)c->D);
    in->s0 = th_floats(in->ns + 1);
    th_fill(in->u, in->nu + 1, -1, 1), th_fill(in->dt, in->nu + 1, c->dtlo, c->dthi);
    th_fill(in->z, in->nu + 1, -2, 2), th_fill(in->A, in->na, -4, -0.1);
    th_fill(in->Bm, in->nbc + 1, -1, 1), th_fill(in->Cm, in->nbc + 1, -1, 1);
    th_fill(in->Ds, (size_t)c->D, -1, 1), th_fill(in->bias, (size_t)c->D, 0, 0.3);
    th_fill(in->s0, in->ns + 1, -1, 1);
}

static void unmake(sinputs *in)
{
    free(in->u), free(in->dt), free(in->z), free(in->A), free(in->Bm), free(in->Cm), free(in->Ds),
        free(in->bias), free(in->s0);
}

static void describe(const scase *c, const char *be, const char *what, char *buf, size_t n)
{
    snprintf(buf, n, "%s selective_scan %s B=%lld T=%lld D=%lld Nst=%lld G=%lld%s%s%s%s%s%s dt~U[%g,%g]",
             be, what, (long long)c->B, (long long)c->T, (long long)c->D, (long long)c->Nst,
             (long long)c->G, c->softplus ? " softplus" : "", c->with_s0 ? " s0" : "",
             c->with_skip ? " D" : "", c->with_z ? " z" : "", c->with_bias ? " bias" : "",
             c->cu ? " varlen" : "", c->dtlo, c->dthi);
}

static void run_case(th_backend *be, const scase *c)
{
    char what[300];
    describe(c, be->name, "both modes", what, sizeof what);
    if (!be->ctx) {
        th_skip("%s: %s", what, be->skip_reason);
        return;
    }
    const int64_t N = c->cu ? c->N : c->B;
    sinputs in;
    make(c, &in);
    double *ry = th_doubles(in.nu), *rs = th_doubles(in.ns);
    ref_selective_scan(c->B, c->T, c->D, c->Nst, c->G, c->softplus, in.u, in.dt, in.A, in.Bm,
                       in.Cm, c->with_skip ? in.Ds : NULL, c->with_z ? in.z : NULL,
                       c->with_bias ? in.bias : NULL, c->with_s0 ? in.s0 : NULL, ry, rs, c->cu,
                       c->N);
    float *du = th_upload(be, in.u, in.nu * 4 + 4), *ddt = th_upload(be, in.dt, in.nu * 4 + 4),
          *dz = th_upload(be, in.z, in.nu * 4 + 4), *dA = th_upload(be, in.A, in.na * 4),
          *dB = th_upload(be, in.Bm, in.nbc * 4 + 4), *dC = th_upload(be, in.Cm, in.nbc * 4 + 4),
          *dDs = th_upload(be, in.Ds, (size_t)c->D * 4),
          *dbias = th_upload(be, in.bias, (size_t)c->D * 4),
          *ds0 = th_upload(be, in.s0, in.ns * 4 + 4);
    int32_t *dcu = c->cu ? th_upload(be, c->cu, (size_t)(N + 1) * 4) : NULL;
    float *y[2] = {th_floats(in.nu + 1), th_floats(in.nu + 1)}, *s1 = th_floats(in.ns + 1);
    for (int m = 0; m < 2; m++) {
        describe(c, be->name, m ? "parallel" : "recurrent", what, sizeof what);
        float *dy = th_poisoned(be, in.nu + 1), *ds1 = th_poisoned(be, in.ns + 1);
        seqk_status st = seqk_selective_scan(
            be->ctx, m ? SEQK_MODE_PARALLEL : SEQK_MODE_RECURRENT, c->B, c->T, c->D, c->Nst, c->G,
            c->softplus ? SEQK_SSCAN_DT_SOFTPLUS : 0, du, ddt, dA, dB, dC,
            c->with_skip ? dDs : NULL, c->with_z ? dz : NULL, c->with_bias ? dbias : NULL, dy,
            c->with_s0 ? ds0 : NULL, ds1, dcu, c->N);
        if (th_check_status(st, SEQK_SUCCESS, what)) {
            th_download(be, y[m], dy, (in.nu + 1) * 4);
            th_download(be, s1, ds1, (in.ns + 1) * 4);
            th_check_close(y[m], ry, in.nu, TOL, "%s: y", what);
            th_check(isnan(y[m][in.nu]), "%s: nothing written past y", what);
            th_check_close(s1, rs, in.ns, TOL, "%s: final state", what);
        } else {
            th_poison(y[m], in.nu + 1);
        }
        th_free(be, dy), th_free(be, ds1);
    }
    describe(c, be->name, "recurrent vs parallel", what, sizeof what);
    th_check_close_f(y[0], y[1], in.nu, TOL, "%s", what);
    th_free(be, du), th_free(be, ddt), th_free(be, dz), th_free(be, dA), th_free(be, dB);
    th_free(be, dC), th_free(be, dDs), th_free(be, dbias), th_free(be, ds0);
    if (dcu) th_free(be, dcu);
    free(y[0]), free(y[1]), free(s1), free(ry), free(rs);
    unmake(&in);
}

/* Recurrent over [0, T1) then parallel over [T1, T) through the state (B = 1). */
static void split_equals_whole(th_backend *be, const scase *c, int64_t T1)
{
    char what[300];
    describe(c, be->name, "split==whole (recurrent then parallel)", what, sizeof what);
    if (!be->ctx) {
        th_skip("%s: %s", what, be->skip_reason);
        return;
    }
    sinputs in;
    make(c, &in);
    double *ry = th_doubles(in.nu), *rs = th_doubles(in.ns);
    ref_selective_scan(1, c->T, c->D, c->Nst, c->G, c->softplus, in.u, in.dt, in.A, in.Bm, in.Cm,
                       in.Ds, in.z, in.bias, in.s0, ry, rs, NULL, 1);
    const int64_t D = c->D, GN = c->G * c->Nst;
    float *du = th_upload(be, in.u, in.nu * 4), *ddt = th_upload(be, in.dt, in.nu * 4),
          *dz = th_upload(be, in.z, in.nu * 4), *dA = th_upload(be, in.A, in.na * 4),
          *dB = th_upload(be, in.Bm, in.nbc * 4), *dC = th_upload(be, in.Cm, in.nbc * 4),
          *dDs = th_upload(be, in.Ds, (size_t)D * 4), *dbias = th_upload(be, in.bias, (size_t)D * 4),
          *ds0 = th_upload(be, in.s0, in.ns * 4);
    float *dy = th_poisoned(be, in.nu), *mid = th_poisoned(be, in.ns), *ds1 = th_poisoned(be, in.ns);
    const unsigned fl = c->softplus ? SEQK_SSCAN_DT_SOFTPLUS : 0;
    seqk_status st = seqk_selective_scan(be->ctx, SEQK_MODE_RECURRENT, 1, T1, D, c->Nst, c->G, fl,
                                         du, ddt, dA, dB, dC, dDs, dz, dbias, dy, ds0, mid, NULL, 0);
    if (!st)
        st = seqk_selective_scan(be->ctx, SEQK_MODE_PARALLEL, 1, c->T - T1, D, c->Nst, c->G, fl,
                                 du + T1 * D, ddt + T1 * D, dA, dB + T1 * GN, dC + T1 * GN, dDs,
                                 dz + T1 * D, dbias, dy + T1 * D, mid, ds1, NULL, 0);
    if (th_check_status(st, SEQK_SUCCESS, what)) {
        float *y = th_floats(in.nu), *s1 = th_floats(in.ns);
        th_download(be, y, dy, in.nu * 4);
        th_download(be, s1, ds1, in.ns * 4);
        th_check_close(y, ry, in.nu, TOL, "%s: y", what);
        th_check_close(s1, rs, in.ns, TOL, "%s: final state", what);
        free(y), free(s1);
    }
    th_free(be, du), th_free(be, ddt), th_free(be, dz), th_free(be, dA), th_free(be, dB);
    th_free(be, dC), th_free(be, dDs), th_free(be, dbias), th_free(be, ds0), th_free(be, dy);
    th_free(be, mid), th_free(be, ds1);
    free(ry), free(rs);
    unmake(&in);
}

/* In place: state_in == state_out, one call per mode, against the reference. */
static void state_in_place(th_backend *be, const scase *c)
{
    char what[300];
    describe(c, be->name, "state_in == state_out", what, sizeof what);
    if (!be->ctx) {
        th_skip("%s: %s", what, be->skip_reason);
        return;
    }
    sinputs in;
    make(c, &in);
    double *ry = th_doubles(in.nu), *rs = th_doubles(in.ns);
    ref_selective_scan(c->B, c->T, c->D, c->Nst, c->G, c->softplus, in.u, in.dt, in.A, in.Bm,
                       in.Cm, in.Ds, in.z, in.bias, in.s0, ry, rs, NULL, c->B);
    float *du = th_upload(be, in.u, in.nu * 4), *ddt = th_upload(be, in.dt, in.nu * 4),
          *dz = th_upload(be, in.z, in.nu * 4), *dA = th_upload(be, in.A, in.na * 4),
          *dB = th_upload(be, in.Bm, in.nbc * 4), *dC = th_upload(be, in.Cm, in.nbc * 4),
          *dDs = th_upload(be, in.Ds, (size_t)c->D * 4),
          *dbias = th_upload(be, in.bias, (size_t)c->D * 4);
    float *y = th_floats(in.nu), *s1 = th_floats(in.ns);
    for (int m = 0; m < 2; m++) {
        describe(c, be->name,
                 m ? "parallel, state_in == state_out" : "recurrent, state_in == state_out", what,
                 sizeof what);
        float *ds = th_upload(be, in.s0, in.ns * 4), *dy = th_poisoned(be, in.nu);
        seqk_status st = seqk_selective_scan(
            be->ctx, m ? SEQK_MODE_PARALLEL : SEQK_MODE_RECURRENT, c->B, c->T, c->D, c->Nst, c->G,
            c->softplus ? SEQK_SSCAN_DT_SOFTPLUS : 0, du, ddt, dA, dB, dC, dDs, dz, dbias, dy, ds,
            ds, NULL, 0);
        if (th_check_status(st, SEQK_SUCCESS, what)) {
            th_download(be, y, dy, in.nu * 4);
            th_download(be, s1, ds, in.ns * 4);
            th_check_close(y, ry, in.nu, TOL, "%s: y", what);
            th_check_close(s1, rs, in.ns, TOL, "%s: final state", what);
        }
        th_free(be, ds), th_free(be, dy);
    }
    th_free(be, du), th_free(be, ddt), th_free(be, dz), th_free(be, dA), th_free(be, dB);
    th_free(be, dC), th_free(be, dDs), th_free(be, dbias);
    free(y), free(s1), free(ry), free(rs);
    unmake(&in);
}

/* Each validation rule fails with its status and leaves y untouched; the
 * arrays live on the backend (cu_seqlens too: a CUDA context reads it from
 * device memory). */
static void validation(th_backend *be)
{
    if (!be->ctx) {
        th_skip("%s selective_scan validation: %s", be->name, be->skip_reason);
        return;
    }
    enum { B = 1, T = 4, D = 4, NS = 2, G = 1 };
    float u[B * T * D], dt[B * T * D], A[D * NS], bc[B * T * G * NS], y[B * T * D];
    for (size_t i = 0; i < sizeof u / 4; i++) u[i] = dt[i] = 0.5f;
    for (size_t i = 0; i < sizeof A / 4; i++) A[i] = -1.0f;
    for (size_t i = 0; i < sizeof bc / 4; i++) bc[i] = 0.1f;
    for (size_t i = 0; i < sizeof y / 4; i++) y[i] = 0.0f;
    float *du = th_upload(be, u, sizeof u), *ddt = th_upload(be, dt, sizeof dt),
          *dA = th_upload(be, A, sizeof A), *dbc = th_upload(be, bc, sizeof bc),
          *dy = th_upload(be, y, sizeof y);
    const int32_t cu_bad_host[3] = {0, 3, 2};
    int32_t *cu_bad = th_upload(be, cu_bad_host, sizeof cu_bad_host);
    const seqk_status INV = SEQK_ERROR_INVALID_ARGUMENT, UNS = SEQK_ERROR_UNSUPPORTED;
    /* each call's status and message (names the function and the rule's value) */
#define CHECK(want_, needle_, rule_, mode_, B_, T_, D_, NS_, G_, fl_, u_, y_, cu_, N_)           \
    do {                                                                                      \
        char w_[200];                                                                         \
        snprintf(w_, sizeof w_, "%s validation: %s", be->name, rule_);                        \
        const seqk_status st_ =                                                               \
            seqk_selective_scan(be->ctx, mode_, B_, T_, D_, NS_, G_, fl_, u_, ddt, dA, dbc, dbc, \
                                NULL, NULL, NULL, y_, NULL, NULL, cu_, N_);                   \
        th_check_status(st_, want_, w_);                                                      \
        th_check(strstr(seqk_last_error(), "seqk_selective_scan") &&                          \
                     strstr(seqk_last_error(), needle_),                                      \
                 "%s: message names the function and '%s': %s", w_, needle_, seqk_last_error()); \
    } while (0)
    CHECK(INV, "G=3", "D not a multiple of G", SEQK_MODE_PARALLEL, B, T, D, NS, 3, 0, du, dy,
          NULL, 0);
    CHECK(INV, "Nst=0", "Nst=0", SEQK_MODE_PARALLEL, B, T, D, 0, G, 0, du, dy, NULL, 0);
    CHECK(UNS, "Nst=4096", "Nst too large", SEQK_MODE_PARALLEL, B, T, D, 4096, G, 0, du, dy,
          NULL, 0);
    CHECK(INV, "u is NULL", "u NULL", SEQK_MODE_RECURRENT, B, T, D, NS, G, 0, NULL, dy, NULL, 0);
    CHECK(INV, "flags=0x4", "unknown flags", SEQK_MODE_RECURRENT, B, T, D, NS, G, 4, du, dy,
          NULL, 0);
    CHECK(INV, "overlaps u", "y overlapping u", SEQK_MODE_RECURRENT, B, T, D, NS, G, 0, du, du,
          NULL, 0);
    CHECK(INV, "cu_seqlens[2]=2 < cu_seqlens[1]=3", "cu_seqlens decreasing", SEQK_MODE_PARALLEL,
          B, T, D, NS, G, 0, du, dy, cu_bad, 2);
    CHECK(INV, "mode=9", "mode=9", (seqk_mode)9, B, T, D, NS, G, 0, du, dy, NULL, 0);
#undef CHECK
    float back[B * T * D];
    th_download(be, back, dy, sizeof back);
    bool untouched = true;
    for (size_t i = 0; i < sizeof back / 4; i++) untouched &= back[i] == 0.0f;
    th_check(untouched, "%s validation: y untouched after the rejected calls", be->name);
    th_free(be, du), th_free(be, ddt), th_free(be, dA), th_free(be, dbc), th_free(be, dy);
    th_free(be, cu_bad);
}

int main(int argc, char **argv)
{
    th_backend *be;
    int nb = th_init(argc, argv, &be);
    th_seed(11);
    static const int32_t cu1[] = {0, 0, 1, 90, 90, 201};
    static const int32_t cu2[] = {0, 300, 300, 301, 700};
    const scase cases[] = {
        /* B T    D    Nst G  sp s0 D  z  bias cu   N  dt range */
        {1, 1, 8, 16, 1, 1, 0, 1, 1, 1, NULL, 0, -3, 1},      /* T = 1 */
        {2, 131, 33, 16, 1, 1, 1, 1, 1, 1, NULL, 0, -3, 1},   /* T prime, odd D, everything on */
        {1, 200, 24, 5, 3, 0, 1, 0, 0, 0, NULL, 0, 0.01, 0.5},/* groups, odd Nst, no softplus */
        {3, 97, 40, 64, 4, 1, 0, 1, 0, 1, NULL, 0, -3, 1},    /* Nst = 64 */
        {1, 201, 20, 16, 2, 1, 1, 1, 1, 0, cu1, 5, -3, 1},    /* varlen with empty and length-1 */
        {1, 700, 12, 20, 3, 1, 1, 1, 1, 1, cu2, 4, -3, 1},    /* varlen, long, Nst = 20, w = 4 */
        {2, 37, 48, 17, 2, 1, 1, 1, 1, 1, NULL, 0, -3, 1},    /* Nst = 17 */
        {1, 300, 16, 16, 1, 1, 1, 1, 0, 0, NULL, 0, -12, -8}, /* tiny steps: decay near 1 */
        {1, 300, 16, 16, 1, 1, 1, 1, 0, 0, NULL, 0, 3, 6},    /* big steps: decay near 0 */
        {2, 24, 33000, 4, 3, 1, 1, 1, 1, 1, NULL, 0, -3, 1},  /* many channels (N*D >= 65536) */
    };
    for (int i = 0; i < nb; i++)
        for (size_t j = 0; j < sizeof cases / sizeof cases[0]; j++) run_case(&be[i], &cases[j]);
    const scase split = {1, 150, 20, 16, 2, 1, 1, 1, 1, 1, NULL, 0, -3, 1};
    const scase longt = {1, 65536, 4, 16, 1, 1, 1, 1, 1, 1, NULL, 0, -6, 2};
    const scase inplace = {2, 90, 12, 24, 2, 1, 1, 1, 1, 1, NULL, 0, -3, 1};
    for (int i = 0; i < nb; i++) {
        split_equals_whole(&be[i], &split, 70);
        split_equals_whole(&be[i], &split, 64);
        state_in_place(&be[i], &inplace);
        run_case(&be[i], &longt); /* T = 65536: no inf or NaN, still within tolerance */
    }
    for (int i = 0; i < nb; i++) validation(&be[i]);
    return th_finish();
}
