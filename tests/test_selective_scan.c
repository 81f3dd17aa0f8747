/* tests/test_selective_scan.c -- the Mamba selective scan, both modes, on
 * every backend, against the float64 token loop; recurrent == parallel;
 * split == whole; long sequences with extreme step sizes; validation. */
#include "fixtures.h"
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

/* The inputs of a case, on the host (u, dt, z, Bm, Cm, s0 with one float
 * more) or on a backend. */
typedef struct {
    float *u, *dt, *A, *Bm, *Cm, *Ds, *z, *bias, *s0;
} sarrays;

typedef struct {
    sarrays h;
    size_t nu, nbc, na, ns;
    double *ry, *rs; /* the reference y, final state (make_with_ref) */
} sinputs;

/* The host inputs of c, in s. */
static void make(tf_arrays *s, const scase *c, sinputs *in)
{
    const int64_t N = c->cu ? c->N : c->B;
    in->nu = (size_t)(c->B * c->T * c->D), in->nbc = (size_t)(c->B * c->T * c->G * c->Nst);
    in->na = (size_t)(c->D * c->Nst), in->ns = (size_t)(N * c->D * c->Nst);
    sarrays *h = &in->h;
    h->u = tf_random(s, in->nu + 1, -1, 1), h->dt = tf_random(s, in->nu + 1, c->dtlo, c->dthi);
    h->z = tf_random(s, in->nu + 1, -2, 2), h->A = tf_random(s, in->na, -4, -0.1);
    h->Bm = tf_random(s, in->nbc + 1, -1, 1), h->Cm = tf_random(s, in->nbc + 1, -1, 1);
    h->Ds = tf_random(s, (size_t)c->D, -1, 1), h->bias = tf_random(s, (size_t)c->D, 0, 0.3);
    h->s0 = tf_random(s, in->ns + 1, -1, 1);
}

/* The host inputs of c (no varlen) and, every option on, their reference
 * in->ry [nu], in->rs [ns], in s. */
static void make_with_ref(tf_arrays *s, const scase *c, sinputs *in)
{
    make(s, c, in);
    const sarrays *h = &in->h;
    in->ry = tf_doubles(s, in->nu), in->rs = tf_doubles(s, in->ns);
    ref_selective_scan(c->B, c->T, c->D, c->Nst, c->G, c->softplus, h->u, h->dt, h->A, h->Bm,
                       h->Cm, h->Ds, h->z, h->bias, h->s0, in->ry, in->rs, NULL, c->B);
}

/* Every input on s's backend, in s. */
static sarrays upload(tf_arrays *s, const scase *c, const sinputs *in)
{
    const sarrays *h = &in->h;
    sarrays d;
    d.u = tf_upload(s, h->u, (in->nu + 1) * 4), d.dt = tf_upload(s, h->dt, (in->nu + 1) * 4);
    d.z = tf_upload(s, h->z, (in->nu + 1) * 4), d.A = tf_upload(s, h->A, in->na * 4);
    d.Bm = tf_upload(s, h->Bm, (in->nbc + 1) * 4), d.Cm = tf_upload(s, h->Cm, (in->nbc + 1) * 4);
    d.Ds = tf_upload(s, h->Ds, (size_t)c->D * 4), d.bias = tf_upload(s, h->bias, (size_t)c->D * 4);
    d.s0 = tf_upload(s, h->s0, (in->ns + 1) * 4);
    return d;
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
    if (th_skipped(be, what)) return;
    const int64_t N = c->cu ? c->N : c->B;
    tf_arrays arr = tf_arrays_on(be);
    sinputs in;
    make(&arr, c, &in);
    const sarrays *h = &in.h;
    double *ry = tf_doubles(&arr, in.nu), *rs = tf_doubles(&arr, in.ns);
    ref_selective_scan(c->B, c->T, c->D, c->Nst, c->G, c->softplus, h->u, h->dt, h->A, h->Bm,
                       h->Cm, c->with_skip ? h->Ds : NULL, c->with_z ? h->z : NULL,
                       c->with_bias ? h->bias : NULL, c->with_s0 ? h->s0 : NULL, ry, rs, c->cu,
                       c->N);
    const sarrays d = upload(&arr, c, &in);
    int32_t *dcu = c->cu ? tf_upload(&arr, c->cu, (size_t)(N + 1) * 4) : NULL;
    float *y[2] = {tf_floats(&arr, in.nu + 1), tf_floats(&arr, in.nu + 1)};
    float *s1 = tf_floats(&arr, in.ns + 1);
    for (int m = 0; m < 2; m++) {
        describe(c, be->name, m ? "parallel" : "recurrent", what, sizeof what);
        float *dy = tf_poisoned(&arr, in.nu + 1), *ds1 = tf_poisoned(&arr, in.ns + 1);
        seqk_status st = seqk_selective_scan(
            be->ctx, m ? SEQK_MODE_PARALLEL : SEQK_MODE_RECURRENT, c->B, c->T, c->D, c->Nst, c->G,
            c->softplus ? SEQK_SSCAN_DT_SOFTPLUS : 0, d.u, d.dt, d.A, d.Bm, d.Cm,
            c->with_skip ? d.Ds : NULL, c->with_z ? d.z : NULL, c->with_bias ? d.bias : NULL, dy,
            c->with_s0 ? d.s0 : NULL, ds1, dcu, c->N);
        if (th_check_status(st, SEQK_SUCCESS, what)) {
            tf_check_result(be, y[m], dy, in.nu, ry, TOL, true, what, "y");
            tf_check_result(be, s1, ds1, in.ns, rs, TOL, false, what, "final state");
        } else {
            th_poison(y[m], in.nu + 1);
        }
    }
    describe(c, be->name, "recurrent vs parallel", what, sizeof what);
    th_check_close_f(y[0], y[1], in.nu, TOL, "%s", what);
    tf_arrays_free(&arr);
}

/* Recurrent over [0, T1) then parallel over [T1, T) through the state (B = 1). */
static void split_equals_whole(th_backend *be, const scase *c, int64_t T1)
{
    char what[300];
    describe(c, be->name, "split==whole (recurrent then parallel)", what, sizeof what);
    if (th_skipped(be, what)) return;
    tf_arrays arr = tf_arrays_on(be);
    sinputs in;
    make_with_ref(&arr, c, &in); /* c->B = 1 */
    const int64_t D = c->D, GN = c->G * c->Nst;
    const sarrays d = upload(&arr, c, &in);
    float *dy = tf_poisoned(&arr, in.nu), *mid = tf_poisoned(&arr, in.ns);
    float *ds1 = tf_poisoned(&arr, in.ns);
    const unsigned fl = c->softplus ? SEQK_SSCAN_DT_SOFTPLUS : 0;
    seqk_status st = seqk_selective_scan(be->ctx, SEQK_MODE_RECURRENT, 1, T1, D, c->Nst, c->G, fl,
                                         d.u, d.dt, d.A, d.Bm, d.Cm, d.Ds, d.z, d.bias, dy, d.s0,
                                         mid, NULL, 0);
    if (!st)
        st = seqk_selective_scan(be->ctx, SEQK_MODE_PARALLEL, 1, c->T - T1, D, c->Nst, c->G, fl,
                                 d.u + T1 * D, d.dt + T1 * D, d.A, d.Bm + T1 * GN, d.Cm + T1 * GN,
                                 d.Ds, d.z + T1 * D, d.bias, dy + T1 * D, mid, ds1, NULL, 0);
    if (th_check_status(st, SEQK_SUCCESS, what)) {
        float *y = tf_floats(&arr, in.nu), *s1 = tf_floats(&arr, in.ns);
        tf_check_result(be, y, dy, in.nu, in.ry, TOL, false, what, "y");
        tf_check_result(be, s1, ds1, in.ns, in.rs, TOL, false, what, "final state");
    }
    tf_arrays_free(&arr);
}

/* In place: state_in == state_out, one call per mode, against the reference. */
static void state_in_place(th_backend *be, const scase *c)
{
    char what[300];
    describe(c, be->name, "state_in == state_out", what, sizeof what);
    if (th_skipped(be, what)) return;
    tf_arrays arr = tf_arrays_on(be);
    sinputs in;
    make_with_ref(&arr, c, &in);
    const sarrays d = upload(&arr, c, &in);
    float *y = tf_floats(&arr, in.nu), *s1 = tf_floats(&arr, in.ns);
    for (int m = 0; m < 2; m++) {
        describe(c, be->name,
                 m ? "parallel, state_in == state_out" : "recurrent, state_in == state_out", what,
                 sizeof what);
        float *ds = tf_upload(&arr, in.h.s0, in.ns * 4), *dy = tf_poisoned(&arr, in.nu);
        seqk_status st = seqk_selective_scan(
            be->ctx, m ? SEQK_MODE_PARALLEL : SEQK_MODE_RECURRENT, c->B, c->T, c->D, c->Nst, c->G,
            c->softplus ? SEQK_SSCAN_DT_SOFTPLUS : 0, d.u, d.dt, d.A, d.Bm, d.Cm, d.Ds, d.z,
            d.bias, dy, ds, ds, NULL, 0);
        if (th_check_status(st, SEQK_SUCCESS, what)) {
            tf_check_result(be, y, dy, in.nu, in.ry, TOL, false, what, "y");
            tf_check_result(be, s1, ds, in.ns, in.rs, TOL, false, what, "final state");
        }
    }
    tf_arrays_free(&arr);
}

/* Each validation rule fails with its status and leaves y untouched; the
 * arrays live on the backend (cu_seqlens too: a CUDA context reads it from
 * device memory). */
static void validation(th_backend *be)
{
    char skip[64];
    snprintf(skip, sizeof skip, "%s selective_scan validation", be->name);
    if (th_skipped(be, skip)) return;
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
