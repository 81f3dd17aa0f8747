/* tests/test_selective_scan_backward.c -- the backward of the Mamba selective
 * scan (seqk_selective_scan_backward, DESIGN 3.2 / 3.7) on every backend:
 *
 * - the float64 reference (tests/ref/ref_sscan_backward.c, a reverse token
 *   loop) first against central finite differences of the float64 forward,
 *   every element of every input, on tiny shapes;
 * - every gradient tensor of the library against that reference, relative
 *   error <= 1e-4 (NaN never passes), outputs NaN-poisoned with one element
 *   past the end that must stay NaN;
 * - determinism: two runs bit-identical, and 1 / 2 / 3 threads on the CPU;
 * - T = 0; the workspace query against a context workspace of exactly that
 *   size; one test per validation rule (status, message, outputs untouched).
 */
#include "fixtures.h"
#include "ref/ref_sscan_backward.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL 1e-4
#define FD_TOL 1e-6

typedef struct {
    int64_t B, T, D, Nst, G;
    int softplus, with_s0, with_skip, with_z, with_bias, with_dsout;
    const int32_t *cu;
    int64_t N;
    double dtlo, dthi; /* raw dt range */
} bcase;

enum { I_U, I_DT, I_A, I_B, I_C, I_D, I_Z, I_BIAS, I_S0, I_DY, I_DS, NIN };
enum { O_DU, O_DDT, O_DA, O_DB, O_DC, O_DD, O_DZ, O_DBIAS, O_DS0, NOUT };
static const char *out_name[NOUT] = {"du", "ddt", "dA", "dBm", "dCm", "dDskip", "dz",
                                     "ddt_bias", "dstate_in"};

typedef struct {
    size_t n[NIN];   /* elements of each input */
    float *f[NIN];   /* host floats (NULL: absent) */
    double *x[NIN];  /* the same in double */
    size_t no[NOUT]; /* elements of each output */
    double *ref[NOUT];
    int64_t N;
} bdata;

static void sizes(const bcase *c, bdata *b)
{
    const int64_t N = c->cu ? c->N : c->B, rows = c->B * c->T;
    b->N = N;
    const size_t nu = (size_t)(rows * c->D), nbc = (size_t)(rows * c->G * c->Nst);
    const size_t na = (size_t)(c->D * c->Nst), ns = (size_t)(N * c->D * c->Nst);
    const size_t n_in[NIN] = {nu, nu, na, nbc, nbc, (size_t)c->D, nu, (size_t)c->D, ns, nu, ns};
    const size_t n_out[NOUT] = {nu, nu, na, nbc, nbc, (size_t)c->D, nu, (size_t)c->D, ns};
    memcpy(b->n, n_in, sizeof n_in);
    memcpy(b->no, n_out, sizeof n_out);
}

static float *hrandom(size_t n, double lo, double hi)
{
    float *x = th_floats(n);
    th_fill(x, n, lo, hi);
    return x;
}

static void bfree(bdata *b)
{
    for (int i = 0; i < NIN; i++) free(b->f[i]), free(b->x[i]);
    for (int o = 0; o < NOUT; o++) free(b->ref[o]);
}

/* Inputs of c (host, absent ones NULL), their double copies and the
 * reference; bfree frees them. */
static void make(const bcase *c, bdata *b)
{
    sizes(c, b);
    const double lo[NIN] = {-1, c->dtlo, -4, -1, -1, -1, -2, 0, -1, -1, -1};
    const double hi[NIN] = {1, c->dthi, -0.1, 1, 1, 1, 2, 0.3, 1, 1, 1};
    const int present[NIN] = {1, 1, 1, 1, 1, c->with_skip, c->with_z, c->with_bias, c->with_s0,
                              1, c->with_dsout};
    for (int i = 0; i < NIN; i++) {
        b->f[i] = NULL, b->x[i] = NULL;
        if (!present[i]) continue;
        b->f[i] = hrandom(b->n[i] + 1, lo[i], hi[i]);
        b->x[i] = th_doubles(b->n[i] + 1);
        for (size_t k = 0; k < b->n[i]; k++) b->x[i][k] = b->f[i][k];
    }
    for (int o = 0; o < NOUT; o++) b->ref[o] = th_doubles(b->no[o] + 1);
    const ref_ss_problem p = {c->B, c->T, c->D, c->Nst, c->G, b->N, c->softplus, c->cu,
                              b->x[I_U], b->x[I_DT], b->x[I_A], b->x[I_B], b->x[I_C],
                              b->x[I_D], b->x[I_Z], b->x[I_BIAS], b->x[I_S0]};
    ref_ss_backward_d(&p, b->x[I_DY], b->x[I_DS], b->ref[O_DU], b->ref[O_DDT], b->ref[O_DA],
                      b->ref[O_DB], b->ref[O_DC], b->ref[O_DD], b->ref[O_DZ], b->ref[O_DBIAS],
                      b->ref[O_DS0]);
}

static void describe(const bcase *c, const char *be, const char *what, char *buf, size_t n)
{
    snprintf(buf, n,
             "%s sscan_backward %s B=%lld T=%lld D=%lld Nst=%lld G=%lld%s%s%s%s%s%s%s dt~U[%g,%g]",
             be, what, (long long)c->B, (long long)c->T, (long long)c->D, (long long)c->Nst,
             (long long)c->G, c->softplus ? " softplus" : "", c->with_s0 ? " s0" : "",
             c->with_skip ? " D" : "", c->with_z ? " z" : "", c->with_bias ? " bias" : "",
             c->with_dsout ? " dstate_out" : "", c->cu ? " varlen" : "", c->dtlo, c->dthi);
}

/* The outputs a call asks for (mask): dDskip with Dskip, dz with z, the rest
 * per `want`. */
static unsigned out_mask(const bcase *c, int want_bias, int want_ds0)
{
    unsigned m = (1u << O_DU) | (1u << O_DDT) | (1u << O_DA) | (1u << O_DB) | (1u << O_DC);
    if (c->with_skip) m |= 1u << O_DD;
    if (c->with_z) m |= 1u << O_DZ;
    if (want_bias) m |= 1u << O_DBIAS;
    if (want_ds0) m |= 1u << O_DS0;
    return m;
}

static seqk_status call(th_backend *be, const bcase *c, const bdata *b, void *const *din,
                        const int32_t *dcu, float *const *dout)
{
    return seqk_selective_scan_backward(
        be->ctx, c->B, c->T, c->D, c->Nst, c->G, c->softplus ? SEQK_SSCAN_DT_SOFTPLUS : 0,
        din[I_U], din[I_DT], din[I_A], din[I_B], din[I_C], din[I_D], din[I_Z], din[I_BIAS],
        din[I_S0], din[I_DY], din[I_DS], dout[O_DU], dout[O_DDT], dout[O_DA], dout[O_DB],
        dout[O_DC], dout[O_DD], dout[O_DZ], dout[O_DBIAS], dout[O_DS0], dcu, b->N);
}

static void upload_inputs(tf_arrays *s, const bdata *b, void **din)
{
    for (int i = 0; i < NIN; i++)
        din[i] = b->f[i] ? tf_upload(s, b->f[i], (b->n[i] + 1) * sizeof(float)) : NULL;
}

static bool heavy_skipped(const th_backend *be, const bcase *c, const char *what)
{
    if (c->B * c->T < 20000 || be->backend == SEQK_BACKEND_CPU || !getenv("EMU_ORDER"))
        return false;
    th_skip("%s: long case, CPU backend only under the CUDA emulator", what);
    return true;
}

static void run_case(th_backend *be, const bcase *c, int want_bias, int want_ds0)
{
    char what[320];
    describe(c, be->name, want_ds0 ? "with dstate_in" : "", what, sizeof what);
    if (th_skipped(be, what) || heavy_skipped(be, c, what)) return;
    tf_arrays arr = tf_arrays_on(be);
    bdata b;
    make(c, &b);
    void *din[NIN];
    upload_inputs(&arr, &b, din);
    int32_t *dcu = c->cu ? tf_upload(&arr, c->cu, (size_t)(b.N + 1) * 4) : NULL;
    const unsigned m = out_mask(c, want_bias, want_ds0);
    float *dout[NOUT];
    for (int o = 0; o < NOUT; o++) dout[o] = (m >> o & 1) ? tf_poisoned(&arr, b.no[o] + 1) : NULL;
    const seqk_status st = call(be, c, &b, din, dcu, dout);
    if (th_check_status(st, SEQK_SUCCESS, what)) {
        for (int o = 0; o < NOUT; o++) {
            if (!(m >> o & 1)) continue;
            float *host = th_floats(b.no[o] + 1);
            tf_check_result(be, host, dout[o], b.no[o], b.ref[o], TOL, true, what, out_name[o]);
            th_check(tf_all_finite(host, b.no[o]), "%s: %s finite", what, out_name[o]);
            free(host);
        }
    }
    tf_arrays_free(&arr);
    bfree(&b);
}

/* ---- the reference against finite differences ------------------------------------- */

static void fd_case(const bcase *c)
{
    char what[320];
    describe(c, "ref", "finite differences", what, sizeof what);
    bdata b;
    make(c, &b);
    ref_ss_problem p = {c->B, c->T, c->D, c->Nst, c->G, b.N, c->softplus, c->cu,
                        b.x[I_U], b.x[I_DT], b.x[I_A], b.x[I_B], b.x[I_C],
                        b.x[I_D], b.x[I_Z], b.x[I_BIAS], b.x[I_S0]};
    /* input i -> the gradient that belongs to it */
    const int grad_of[NIN] = {O_DU, O_DDT, O_DA, O_DB, O_DC, O_DD, O_DZ, O_DBIAS, O_DS0, -1, -1};
    for (int i = 0; i < I_DY; i++) {
        if (!b.x[i]) continue;
        double *x = b.x[i], num = 0.0, den = 0.0;
        for (size_t k = 0; k < b.n[i]; k++) {
            const double x0 = x[k], h = 1e-6 * (fabs(x0) > 1.0 ? fabs(x0) : 1.0);
            x[k] = x0 + h;
            const double lp = ref_ss_loss_d(&p, b.x[I_DY], b.x[I_DS]);
            x[k] = x0 - h;
            const double lm = ref_ss_loss_d(&p, b.x[I_DY], b.x[I_DS]);
            x[k] = x0;
            const double fd = (lp - lm) / (2.0 * h), g = b.ref[grad_of[i]][k];
            num += (fd - g) * (fd - g), den += fd * fd;
        }
        const double rel = den > 0 ? sqrt(num / den) : sqrt(num);
        th_check(rel <= FD_TOL && rel == rel, "%s: %s rel err %.2e (tol %.0e)", what,
                 out_name[grad_of[i]], rel, FD_TOL);
    }
    bfree(&b);
}

/* ---- determinism -------------------------------------------------------------------- */

static void determinism(th_backend *be, const bcase *c)
{
    char what[320];
    describe(c, be->name, "determinism", what, sizeof what);
    if (th_skipped(be, what)) return;
    tf_arrays arr = tf_arrays_on(be);
    bdata b;
    make(c, &b);
    void *din[NIN];
    upload_inputs(&arr, &b, din);
    int32_t *dcu = c->cu ? tf_upload(&arr, c->cu, (size_t)(b.N + 1) * 4) : NULL;
    const unsigned m = out_mask(c, 1, 1);
    const int threads[4] = {0, 1, 2, 3};
    float *first[NOUT] = {NULL};
    const int runs = be->backend == SEQK_BACKEND_CPU ? 4 : 2;
    for (int r = 0; r < runs; r++) {
        th_set_threads(be, threads[r]);
        float *dout[NOUT];
        for (int o = 0; o < NOUT; o++)
            dout[o] = (m >> o & 1) ? th_poisoned(be, b.no[o] + 1) : NULL;
        const seqk_status st = call(be, c, &b, din, dcu, dout);
        char w[360];
        snprintf(w, sizeof w, "%s: run %d (threads %d)", what, r, threads[r]);
        if (!th_check_status(st, SEQK_SUCCESS, w)) break;
        bool same = true;
        for (int o = 0; o < NOUT; o++) {
            if (!(m >> o & 1)) continue;
            float *host = th_floats(b.no[o]);
            th_download(be, host, dout[o], b.no[o] * sizeof(float));
            if (!r) first[o] = host;
            else same &= memcmp(host, first[o], b.no[o] * sizeof(float)) == 0;
            if (r) free(host);
        }
        for (int o = 0; o < NOUT; o++)
            if (dout[o]) th_free(be, dout[o]);
        if (r) th_check(same, "%s: bit-identical to run 0", w);
    }
    for (int o = 0; o < NOUT; o++) free(first[o]);
    th_set_threads(be, 0);
    tf_arrays_free(&arr);
    bfree(&b);
}

/* The workspace query is enough: a context workspace of exactly that size. */
static void workspace_exact(th_backend *be, const bcase *c)
{
    char what[320];
    describe(c, be->name, "workspace of the queried size", what, sizeof what);
    if (th_skipped(be, what)) return;
    size_t bytes = 0;
    seqk_status st = seqk_selective_scan_backward_workspace_size(
        be->ctx, c->B, c->T, c->D, c->Nst, c->G, c->cu ? c->N : 0, &bytes);
    if (!th_check_status(st, SEQK_SUCCESS, what)) return;
    void *buf = tf_workspace_begin(be, bytes);
    run_case(be, c, 1, 1);
    tf_workspace_end(be, buf);
}

/* ---- validation ------------------------------------------------------------------------ */

static void validation(th_backend *be)
{
    char skip[64];
    snprintf(skip, sizeof skip, "%s sscan_backward validation", be->name);
    if (th_skipped(be, skip)) return;
    enum { B = 1, T = 4, D = 4, NS = 2, G = 1, NU = B * T * D, NBC = B * T * G * NS };
    float x[NU], a[D * NS], bc[NBC];
    for (int i = 0; i < NU; i++) x[i] = 0.5f;
    for (int i = 0; i < D * NS; i++) a[i] = -1.0f;
    for (int i = 0; i < NBC; i++) bc[i] = 0.1f;
    float *u = th_upload(be, x, sizeof x), *dt = th_upload(be, x, sizeof x);
    float *z = th_upload(be, x, sizeof x), *dy = th_upload(be, x, sizeof x);
    float *A = th_upload(be, a, sizeof a), *Bm = th_upload(be, bc, sizeof bc);
    float *Cm = th_upload(be, bc, sizeof bc), *Ds = th_upload(be, a, D * sizeof(float));
    /* outputs, TF_UNTOUCHED: du, ddt, dA, dBm, dCm, dDskip, dz */
    float un[NU];
    tf_fill_untouched(un, NU);
    const size_t on[7] = {NU, NU, D * NS, NBC, NBC, D, NU};
    float *o[7];
    for (int i = 0; i < 7; i++) o[i] = th_upload(be, un, on[i] * sizeof(float));
    const int32_t cu_bad_host[3] = {0, 3, 2};
    int32_t *cu_bad = th_upload(be, cu_bad_host, sizeof cu_bad_host);
    const seqk_status INV = SEQK_ERROR_INVALID_ARGUMENT, UNS = SEQK_ERROR_UNSUPPORTED;
    float back[NU * 7];
#define REJECT(want_, needle_, rule_, ctx_, B_, D_, NS_, G_, fl_, u_, Ds_, z_, dy_, du_, ddt_, \
               dD_, dz_, cu_, N_)                                                              \
    do {                                                                                      \
        char r_[160];                                                                         \
        snprintf(r_, sizeof r_, "%s sscan_backward: %s", be->name, rule_);                    \
        const seqk_status st_ = seqk_selective_scan_backward(                                 \
            ctx_, B_, T, D_, NS_, G_, fl_, u_, dt, A, Bm, Cm, Ds_, z_, NULL, NULL, dy_, NULL,   \
            du_, ddt_, o[2], o[3], o[4], dD_, dz_, NULL, NULL, cu_, N_);                       \
        size_t k_ = 0;                                                                        \
        for (int i_ = 0; i_ < 7; i_++) {                                                      \
            th_download(be, back + k_, o[i_], on[i_] * sizeof(float));                        \
            k_ += on[i_];                                                                     \
        }                                                                                     \
        tf_expect_rejected(st_, want_, needle_, r_, back, k_, NULL, 0);                       \
        th_check(strstr(seqk_last_error(), "seqk_selective_scan_backward") != NULL,           \
                 "%s: message names the function: %s", r_, seqk_last_error());                \
    } while (0)
    seqk_context *cx = be->ctx;
    REJECT(INV, "B=0", "B=0", cx, 0, D, NS, G, 0, u, Ds, z, dy, o[0], o[1], o[5], o[6], NULL, 0);
    REJECT(INV, "Nst=0", "Nst=0", cx, B, D, 0, G, 0, u, Ds, z, dy, o[0], o[1], o[5], o[6], NULL,
           0);
    REJECT(UNS, "Nst=4096", "Nst too large", cx, B, D, 4096, G, 0, u, Ds, z, dy, o[0], o[1],
           o[5], o[6], NULL, 0);
    REJECT(INV, "G=3", "D not a multiple of G", cx, B, D, NS, 3, 0, u, Ds, z, dy, o[0], o[1],
           o[5], o[6], NULL, 0);
    REJECT(INV, "flags=0x4", "unknown flags", cx, B, D, NS, G, 4, u, Ds, z, dy, o[0], o[1], o[5],
           o[6], NULL, 0);
    REJECT(INV, "u is NULL", "u NULL", cx, B, D, NS, G, 0, NULL, Ds, z, dy, o[0], o[1], o[5],
           o[6], NULL, 0);
    REJECT(INV, "dy is NULL", "dy NULL", cx, B, D, NS, G, 0, u, Ds, z, NULL, o[0], o[1], o[5],
           o[6], NULL, 0);
    REJECT(INV, "du is NULL", "du NULL", cx, B, D, NS, G, 0, u, Ds, z, dy, NULL, o[1], o[5], o[6],
           NULL, 0);
    REJECT(INV, "dDskip=", "dDskip without Dskip", cx, B, D, NS, G, 0, u, NULL, z, dy, o[0],
           o[1], o[5], o[6], NULL, 0);
    REJECT(INV, "dz is NULL", "z without dz", cx, B, D, NS, G, 0, u, Ds, z, dy, o[0], o[1], o[5],
           NULL, NULL, 0);
    REJECT(INV, "dz=", "dz without z", cx, B, D, NS, G, 0, u, Ds, NULL, dy, o[0], o[1], o[5],
           o[6], NULL, 0);
    REJECT(INV, "overlaps u=", "du overlapping u", cx, B, D, NS, G, 0, u, Ds, z, dy, u, o[1], o[5], o[6],
           NULL, 0);
    REJECT(INV, "overlaps du=", "ddt overlapping du", cx, B, D, NS, G, 0, u, Ds, z, dy, o[0],
           o[0] + 1, o[5], o[6], NULL, 0);
    REJECT(INV, "cu_seqlens[2]=2 < cu_seqlens[1]=3", "cu_seqlens decreasing", cx, B, D, NS, G, 0,
           u, Ds, z, dy, o[0], o[1], o[5], o[6], cu_bad, 2);
    REJECT(INV, "B=2 with cu_seqlens", "varlen with B=2", cx, 2, D, NS, G, 0, u, Ds, z, dy, o[0],
           o[1], o[5], o[6], cu_bad, 2);
#undef REJECT
    const seqk_status st = seqk_selective_scan_backward(
        NULL, B, T, D, NS, G, 0, u, dt, A, Bm, Cm, NULL, NULL, NULL, NULL, dy, NULL, o[0], o[1],
        o[2], o[3], o[4], NULL, NULL, NULL, NULL, NULL, 0);
    th_check_status(st, INV, "sscan_backward: ctx NULL");
    th_check(strstr(seqk_last_error(), "ctx is NULL") != NULL, "ctx NULL message: %s",
             seqk_last_error());
    const seqk_status st2 =
        seqk_selective_scan_backward_workspace_size(be->ctx, B, T, D, NS, G, 0, NULL);
    th_check_status(st2, INV, "sscan_backward workspace_size: bytes NULL");
    th_check(strstr(seqk_last_error(), "bytes is NULL") != NULL, "bytes NULL message: %s",
             seqk_last_error());
    th_free(be, u), th_free(be, dt), th_free(be, z), th_free(be, dy), th_free(be, A);
    th_free(be, Bm), th_free(be, Cm), th_free(be, Ds), th_free(be, cu_bad);
    for (int i = 0; i < 7; i++) th_free(be, o[i]);
}

int main(int argc, char **argv)
{
    th_backend *be;
    int nb = th_init(argc, argv, &be);
    th_seed(16);
    static const int32_t cu_fd[] = {0, 0, 1, 4};
    static const int32_t cu1[] = {0, 0, 1, 90, 90, 201};
    static const int32_t cu2[] = {0, 70, 70, 71, 133};
    /* the reference against finite differences: tiny shapes, every option */
    const bcase fd[] = {
        /* B T  D  Nst G  sp s0 D  z  bias dso cu     N  dt range */
        {2, 5, 4, 3, 2, 1, 1, 1, 1, 1, 1, NULL, 0, -2, 1},
        {1, 4, 3, 2, 1, 0, 1, 0, 1, 0, 1, cu_fd, 3, 0.05, 0.6},
        {1, 3, 2, 3, 1, 1, 0, 1, 0, 1, 0, NULL, 0, -1, 1},
        {1, 6, 2, 2, 2, 1, 1, 1, 1, 1, 1, NULL, 0, 2, 4}, /* strong decays */
    };
    for (size_t j = 0; j < sizeof fd / sizeof fd[0]; j++) fd_case(&fd[j]);
    const bcase cases[] = {
        /* B T    D    Nst G  sp s0 D  z  bias dso cu   N  dt range */
        {1, 1, 8, 16, 1, 1, 0, 1, 1, 1, 1, NULL, 0, -3, 1},        /* T = 1 */
        {2, 131, 33, 16, 1, 1, 1, 1, 1, 1, 1, NULL, 0, -3, 1},     /* T prime, odd D */
        {1, 200, 24, 5, 3, 0, 1, 0, 0, 0, 0, NULL, 0, 0.01, 0.5},  /* groups, odd Nst, no sp */
        {3, 97, 40, 7, 4, 1, 0, 1, 0, 1, 1, NULL, 0, -3, 1},       /* odd Nst, G < D */
        {2, 61, 100, 16, 1, 1, 1, 0, 1, 0, 1, NULL, 0, -3, 1},     /* several channel blocks */
        {1, 201, 20, 16, 2, 1, 1, 1, 1, 0, 1, cu1, 5, -3, 1},      /* varlen, empty, length 1 */
        {1, 133, 12, 20, 3, 1, 0, 1, 1, 1, 0, cu2, 4, -3, 1},      /* varlen, Nst = 20 */
        {2, 37, 48, 17, 2, 1, 1, 1, 1, 1, 1, NULL, 0, -3, 1},      /* Nst = 17 (two CUDA passes) */
        {1, 300, 16, 16, 1, 1, 1, 1, 1, 0, 1, NULL, 0, -12, -8},   /* dt A near 0 */
        {1, 300, 16, 16, 1, 1, 1, 1, 1, 1, 1, NULL, 0, 3, 6},      /* decays near exp(-20) */
        {1, 90, 9, 33, 1, 0, 1, 0, 0, 1, 1, NULL, 0, 0.2, 1.5},    /* Nst = 33, no softplus */
        {1, 0, 8, 4, 2, 1, 1, 1, 1, 1, 1, NULL, 0, -3, 1},         /* T = 0 */
        {1, 600, 4096, 4, 2, 1, 1, 1, 1, 1, 1, NULL, 0, -3, 1},    /* wide: CUDA chunks of 32 */
    };
    const bcase longt = {1, 65536, 4, 16, 1, 1, 1, 1, 1, 1, 1, NULL, 0, -6, 2};
    const bcase det = {1, 201, 100, 16, 2, 1, 1, 1, 1, 1, 1, cu1, 5, -3, 1};
    const bcase det2 = {2, 150, 64, 8, 1, 1, 1, 1, 0, 1, 1, NULL, 0, -3, 1};
    for (int i = 0; i < nb; i++) {
        for (size_t j = 0; j < sizeof cases / sizeof cases[0]; j++) {
            run_case(&be[i], &cases[j], 1, 1);
            run_case(&be[i], &cases[j], 0, 0);
        }
        run_case(&be[i], &longt, 1, 1); /* T = 65536: finite, within tolerance */
        determinism(&be[i], &det);
        determinism(&be[i], &det2);
        workspace_exact(&be[i], &cases[5]);
        workspace_exact(&be[i], &cases[1]);
        validation(&be[i]);
    }
    return th_finish();
}
