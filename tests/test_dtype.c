/* tests/test_dtype.c -- bf16 / f16 through every op's _ex entry point
 * (seqk.h, "Dtypes"), forward (both modes where the op has two) and
 * backward, on every backend.
 *
 * Per op and dtype, on small odd shapes (T = 37, K = 5 != V = 7, several
 * heads, grouped heads where the op has them; batch 2, and varlen with an
 * empty and a length-1 sequence; an initial state):
 * - the inputs that take the dtype are rounded to it first (this file's own
 *   rounding, from double: independent of the library's bit tricks);
 * - the fp32 entry point runs on those rounded inputs, then the _ex one on
 *   their dtype encodings: every dtype output must be exactly the fp32
 *   output rounded to the dtype (bit for bit), every fp32 output (states,
 *   gate gradients, lse) exactly the fp32 run's, nothing written past an
 *   output's end;
 * - every dtype output against the float64 reference (tests/ref) of the
 *   rounded inputs, itself rounded to the dtype: ||out - ref|| / ||ref||
 *   within TOL_ULPS units of the dtype's unit roundoff u (2^-8 bf16, 2^-11
 *   f16); the worst per dtype is printed;
 * - a bad dtype value: INVALID_ARGUMENT naming it, outputs untouched;
 * - the _ex workspace query: a caller's workspace of exactly the queried
 *   size works (same bits), one byte less fails with WORKSPACE_TOO_SMALL
 *   (where the call takes the whole bound: every case but Mamba2 with
 *   groups and the selective scan without z), outputs untouched.
 * Conversions: every bf16 / f16 value to fp32 and back, rounding edge cases
 * (ties, NaN, inf, subnormals, f16 overflow) and random bit patterns
 * against this file's rounding, the SIMD and scalar host paths bit-identical,
 * and each backend's conversion (gpu/convert.cu on CUDA) bit-identical to
 * the host's. Validation: a failing fp32 op (a positive log-gate, a NULL
 * input) writes no output through _ex, an overlap between dtype tensors is
 * rejected.
 */
#include "fixtures.h"
#include "ref/ref_attention.h"
#include "ref/ref_attention_backward.h"
#include "ref/ref_deltanet.h"
#include "ref/ref_deltanet_backward.h"
#include "ref/ref_linear.h"
#include "ref/ref_linear_backward.h"
#include "ref/ref_sscan.h"
#include "ref/ref_sscan_backward.h"
#include "ref/ref_titans.h"
#include "ref/ref_titans_backward.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* core/dtype.h: the library's conversions (exported for this test). */
void seqk__dt_to_f32_host(seqk_dtype dtype, const void *src, float *dst, int64_t n, int path);
void seqk__dt_from_f32_host(seqk_dtype dtype, const float *src, void *dst, int64_t n, int path);
seqk_status seqk__dt_convert(seqk_context *ctx, seqk_dtype dtype, int to_f32, const void *src,
                             void *dst, int64_t n);

#define TOL_ULPS 2.0
/* The native reduced-precision path (seqk.h, "Dtypes": the linear-state
 * forwards' and DeltaNet's parallel mode on CUDA, the linear-state and
 * DeltaNet backwards there too) rounds its operands inside
 * the op, so its outputs are not the fp32 op's rounded: they are checked
 * against float64 only, within this bound (tests/test_dtype_native.c covers
 * that path's shapes, gates and states). */
#define NATIVE_TOL_ULPS 3.0

static const seqk_dtype DTYPES[2] = {SEQK_DTYPE_BF16, SEQK_DTYPE_F16};
static double worst[3];        /* per dtype, the worst error in units of u */
static double worst_native[3]; /* the same on the native path */

static uint32_t fbits(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

static float bitsf(uint32_t u)
{
    float x;
    memcpy(&x, &u, 4);
    return x;
}

/* ---- conversions ----------------------------------------------------------------- */

static void check_conversions(th_backend *be)
{
    if (th_skipped(be, "conversions")) return;
    enum { NR = 1 << 20 };
    for (int di = 0; di < 2; di++) {
        const seqk_dtype dt = DTYPES[di];
        const char *dn = seqk_dtype_string(dt);
        /* every 16-bit value to fp32 (exact; NaN stays NaN) and back */
        uint16_t *all = th_malloc(65536 * 2), *back = th_malloc(65536 * 2);
        float *f = th_malloc(65536 * 4);
        for (int i = 0; i < 65536; i++) all[i] = (uint16_t)i;
        void *dall = th_upload(be, all, 65536 * 2), *dback = th_upload(be, NULL, 65536 * 2);
        float *df = th_upload(be, NULL, 65536 * 4);
        seqk_status st = seqk__dt_convert(be->ctx, dt, 1, dall, df, 65536);
        if (!st) st = seqk__dt_convert(be->ctx, dt, 0, df, dback, 65536);
        th_check_status(st, SEQK_SUCCESS, "conversions");
        th_download(be, f, df, 65536 * 4);
        th_download(be, back, dback, 65536 * 2);
        int bad = 0, badback = 0;
        for (int i = 0; i < 65536; i++) {
            const double want = tf_dt_decode(dt, (uint16_t)i);
            const bool nan = isnan(want);
            if (nan ? !isnan(f[i]) : (double)f[i] != want || !signbit(f[i]) != !signbit(want)) bad++;
            const uint16_t quiet = dt == SEQK_DTYPE_BF16 ? 0x40u : 0x200u;
            if (back[i] != (nan ? (uint16_t)(i | quiet) : (uint16_t)i)) badback++;
        }
        th_check(bad == 0, "%s: %s: all 65536 values to fp32 exact: %d wrong", be->name, dn, bad);
        th_check(badback == 0, "%s: %s: round trip (NaN quieted): %d wrong", be->name, dn,
                 badback);
        th_free(be, dall), th_free(be, dback), th_free(be, df);
        free(all), free(back), free(f);

        /* fp32 -> dtype: edge cases and random bit patterns against round_to */
        float *x = th_malloc(NR * 4);
        size_t n = 0;
        const double edges[] = {1.0, 1.0 + 0x1p-8, 1.0 + 0x1p-8 + 0x1p-20, 1.0 + 3 * 0x1p-8,
                                1.0 + 0x1p-11, 1.0 + 3 * 0x1p-11, 1.0 + 0x1p-11 + 0x1p-23,
                                65504.0, 65519.99, 65520.0, 1e5, 0x1p-14, 0x1p-24, 0x1p-25,
                                0x1p-25 + 0x1p-40, 1.5 * 0x1p-24, 0x1p-126, 0x1p-133, 0x1p-134,
                                0x1p-149, 3.0 * 0x1p-135, 0x1.fffffep127, 0x1.ff8p127, 0.0};
        for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++) {
            x[n++] = (float)edges[i];
            x[n++] = (float)-edges[i];
        }
        x[n++] = INFINITY, x[n++] = -INFINITY, x[n++] = NAN, x[n++] = -NAN;
        x[n++] = bitsf(0x7f800001u), x[n++] = bitsf(0xffa00000u), x[n++] = bitsf(0x807fffffu);
        x[n++] = bitsf(0x00000001u), x[n++] = bitsf(0x7fffffffu);
        th_seed(21);
        while (n < NR) {
            /* random bits, exponents spread over the whole range */
            const uint32_t u = (uint32_t)th_randint(0, 0xffffffffLL);
            x[n++] = bitsf(u);
        }
        uint16_t *simd = th_malloc(NR * 2), *scal = th_malloc(NR * 2), *dev = th_malloc(NR * 2);
        seqk__dt_from_f32_host(dt, x, simd, NR, 0);
        seqk__dt_from_f32_host(dt, x, scal, NR, 1);
        float *dx = th_upload(be, x, NR * 4);
        void *dd = th_upload(be, NULL, NR * 2);
        th_check_status(seqk__dt_convert(be->ctx, dt, 0, dx, dd, NR), SEQK_SUCCESS,
                        "conversions fp32 -> dtype");
        th_download(be, dev, dd, NR * 2);
        int wrong = 0, differ = 0, dwrong = 0;
        for (size_t i = 0; i < NR; i++) {
            const double want = tf_dt_round(dt, (double)x[i]);
            const uint16_t w = tf_dt_encode(dt, want);
            if (isnan(x[i]) ? !isnan(tf_dt_decode(dt, scal[i])) : scal[i] != w) {
                if (wrong++ < 5)
                    printf("  %s %a (0x%08x): got 0x%04x want 0x%04x\n", dn, (double)x[i],
                           fbits(x[i]), scal[i], w);
            }
            if (simd[i] != scal[i]) differ++;
            if (dev[i] != scal[i]) dwrong++;
        }
        th_check(wrong == 0, "%s: %s: fp32 -> %s rounding (ties to even, overflow, subnormals, "
                 "NaN) on %d values: %d wrong", be->name, dn, dn, NR, wrong);
        th_check(differ == 0, "%s: %s: SIMD and scalar host paths bit-identical: %d differ",
                 be->name, dn, differ);
        th_check(dwrong == 0, "%s: %s: backend conversion bit-identical to the host's: %d differ",
                 be->name, dn, dwrong);
        /* dtype -> fp32 host paths on random 16-bit values */
        for (size_t i = 0; i < NR; i++) simd[i] = (uint16_t)th_randint(0, 65535);
        float *a = th_malloc(NR * 4), *b = th_malloc(NR * 4);
        seqk__dt_to_f32_host(dt, simd, a, NR, 0);
        seqk__dt_to_f32_host(dt, simd, b, NR, 1);
        th_check(memcmp(a, b, (size_t)NR * 4) == 0, "%s: %s -> fp32: SIMD and scalar identical",
                 be->name, dn);
        free(a), free(b);
        th_free(be, dx), th_free(be, dd);
        free(x), free(simd), free(scal), free(dev);
    }
}

/* ---- the op cases ------------------------------------------------------------------ */

enum role { DIN, DOUT, DINOUT, FIN, FOUT, IIN };

typedef struct targ {
    const char *name;
    int role;
    size_t n;
    double lo, hi;
    const int32_t *ivals; /* IIN */
} targ;

typedef struct tcase tcase;
typedef seqk_status (*call_fn)(seqk_context *ctx, seqk_dtype dt, const tcase *c, void **p);
typedef seqk_status (*query_fn)(seqk_context *ctx, seqk_dtype dt, const tcase *c, size_t *bytes);
/* float64 references of the dtype outputs (r[i] for DOUT / DINOUT arrays). */
typedef void (*ref_fn)(const tcase *c, float **h, double **r);

enum { MAXA = 24 };

struct tcase {
    char name[96];
    seqk_mode mode;
    int64_t B, T, H, G, K, V, N, minibatch, max_len, chunk;
    unsigned flags;
    float scale;
    const int32_t *cu; /* host, NULL: batch */
    int na;
    targ a[MAXA];
    call_fn call;
    query_fn query;
    ref_fn ref;
    void (*prepare)(const tcase *c, float **h); /* after the random fill and rounding */
    int ws_exact;
    double tol_ulps; /* TOL_ULPS unless a case needs a stated other one */
    int native;      /* a linear-state (1) or DeltaNet (2) forward, a linear-state (3) or
                      * DeltaNet (4) backward: native on CUDA in the parallel mode */
};

static int add(tcase *c, const char *name, int role, size_t n, double lo, double hi)
{
    targ *t = &c->a[c->na];
    t->name = name, t->role = role, t->n = n, t->lo = lo, t->hi = hi, t->ivals = NULL;
    return c->na++;
}

static int is_dt(int role) { return role == DIN || role == DOUT || role == DINOUT; }
static int is_out(int role) { return role == DOUT || role == DINOUT || role == FOUT; }

static double *dbl(const float *x, size_t n)
{
    double *d = th_malloc(n * sizeof(double) + 8);
    for (size_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}

static seqk_context *cpu_ctx; /* host computations of prepare hooks */

/* One case in one dtype on one backend. */
static void run_case(th_backend *be, const tcase *c, seqk_dtype dt)
{
    char what[192];
    snprintf(what, sizeof what, "%s: %s %s", be->name, c->name, seqk_dtype_string(dt));
    if (th_skipped(be, what)) return;
    const size_t es = seqk_dtype_size(dt);
    /* the native path: no bit identity with the fp32 op, its own bound, and
     * it takes less than the (converting path's) workspace bound */
    const bool native = c->native && be->backend == SEQK_BACKEND_CUDA &&
                        c->mode == SEQK_MODE_PARALLEL && dt != SEQK_DTYPE_F32;
    const double tol = native ? NATIVE_TOL_ULPS : c->tol_ulps;
    float *h[MAXA] = {0};
    double *r[MAXA] = {0};
    void *p[MAXA] = {0}, *q[MAXA] = {0};
    float *f32out[MAXA] = {0};
    uint16_t *enc[MAXA] = {0}, *got[MAXA] = {0};
    th_seed(1000 + (uint64_t)c->na * 7 + (uint64_t)c->T);
    for (int i = 0; i < c->na; i++) {
        const targ *t = &c->a[i];
        if (t->role == IIN) {
            h[i] = th_malloc(t->n * 4 + 4);
            memcpy(h[i], t->ivals, t->n * 4);
            continue;
        }
        h[i] = th_floats(t->n + 1);
        th_fill(h[i], t->n + 1, t->lo, t->hi);
        if (is_dt(t->role))
            for (size_t j = 0; j <= t->n; j++) h[i][j] = (float)tf_dt_round(dt, h[i][j]);
    }
    if (c->prepare) c->prepare(c, h);
    for (int i = 0; i < c->na; i++)
        if (c->a[i].role == DIN || c->a[i].role == DINOUT) /* again, after prepare */
            for (size_t j = 0; j <= c->a[i].n; j++) h[i][j] = (float)tf_dt_round(dt, h[i][j]);
    for (int i = 0; i < c->na; i++)
        if (c->a[i].role == DOUT || c->a[i].role == DINOUT) {
            r[i] = th_doubles(c->a[i].n + 1);
            if (c->a[i].role == DINOUT)
                for (size_t j = 0; j < c->a[i].n; j++) r[i][j] = h[i][j];
        }
    c->ref(c, h, r);

    /* the fp32 run on the rounded inputs */
    for (int i = 0; i < c->na; i++) {
        const targ *t = &c->a[i];
        const size_t bytes = (t->n + 1) * 4;
        p[i] = (t->role == DOUT || t->role == FOUT) ? (void *)th_poisoned(be, t->n + 1)
                                                     : th_upload(be, h[i], bytes);
    }
    seqk_status st = c->call(be->ctx, SEQK_DTYPE_F32, c, p);
    if (!th_check_status(st, SEQK_SUCCESS, what)) goto done;
    for (int i = 0; i < c->na; i++)
        if (is_out(c->a[i].role)) {
            f32out[i] = th_floats(c->a[i].n + 1);
            th_download(be, f32out[i], p[i], c->a[i].n * 4);
        }

    /* the dtype run on the encodings */
    for (int i = 0; i < c->na; i++) {
        const targ *t = &c->a[i];
        if (is_dt(t->role)) {
            enc[i] = th_malloc((t->n + 1) * es);
            for (size_t j = 0; j <= t->n; j++)
                enc[i][j] = t->role == DOUT ? 0xffffu : tf_dt_encode(dt, h[i][j]);
            if (t->role == DINOUT) enc[i][t->n] = 0xffffu;
            q[i] = th_upload(be, enc[i], (t->n + 1) * es);
        } else if (t->role == FOUT) {
            q[i] = th_poisoned(be, t->n + 1);
        } else {
            q[i] = th_upload(be, h[i], (t->n + 1) * 4);
        }
    }
    st = c->call(be->ctx, dt, c, q);
    if (!th_check_status(st, SEQK_SUCCESS, what)) goto done;
    for (int i = 0; i < c->na; i++) {
        const targ *t = &c->a[i];
        if (is_dt(t->role) && t->role != DIN) {
            got[i] = th_malloc((t->n + 1) * es);
            th_download(be, got[i], q[i], (t->n + 1) * es);
            size_t diff = 0;
            float *dec = th_floats(t->n + 1);
            double *rr = th_doubles(t->n + 1);
            for (size_t j = 0; j < t->n; j++) {
                const uint16_t w = tf_dt_encode(dt, tf_dt_round(dt, f32out[i][j]));
                if (got[i][j] != w && !(isnan(f32out[i][j]) && isnan(tf_dt_decode(dt, got[i][j]))))
                    diff++;
                dec[j] = (float)tf_dt_decode(dt, got[i][j]);
                rr[j] = tf_dt_round(dt, r[i][j]);
            }
            if (!native)
                th_check(diff == 0, "%s: %s is the fp32 op's output rounded: %zu of %zu differ",
                         what, t->name, diff, t->n);
            th_check(got[i][t->n] == 0xffffu, "%s: nothing written past %s", what, t->name);
            const double e = th_rel_err(dec, rr, t->n) / tf_dt_unit(dt);
            double *w = native ? worst_native : worst;
            if (e > w[dt]) w[dt] = e;
            th_check(e <= tol, "%s: %s against float64: %.3g u (tol %.3g u)", what, t->name, e,
                     tol);
            free(dec), free(rr);
        } else if (t->role == FOUT && !native) { /* native: test_dtype_native.c */
            float *g = th_floats(t->n + 1);
            th_download(be, g, q[i], (t->n + 1) * 4);
            th_check(memcmp(g, f32out[i], t->n * 4) == 0 && isnan(g[t->n]),
                     "%s: fp32 output %s equals the fp32 run's, nothing past its end", what,
                     t->name);
            free(g);
        }
    }

    /* a bad dtype: rejected, outputs untouched */
    {
        for (int i = 0; i < c->na; i++)
            if (c->a[i].role == DOUT) th_download(be, got[i], q[i], (c->a[i].n + 1) * es);
        st = c->call(be->ctx, (seqk_dtype)7, c, q);
        bool same = true;
        for (int i = 0; i < c->na; i++)
            if (c->a[i].role == DOUT) {
                uint16_t *x = th_malloc((c->a[i].n + 1) * es);
                th_download(be, x, q[i], (c->a[i].n + 1) * es);
                same = same && memcmp(x, got[i], (c->a[i].n + 1) * es) == 0;
                free(x);
            }
        th_check(st == SEQK_ERROR_INVALID_ARGUMENT && strstr(seqk_last_error(), "dtype=7") &&
                     same,
                 "%s: dtype=7 rejected (%s), outputs untouched", what, seqk_last_error());
    }

    /* the _ex workspace query: exactly its size works, one byte less fails */
    if (c->query) {
        size_t bytes = 0;
        st = c->query(be->ctx, dt, c, &bytes);
        th_check_status(st, SEQK_SUCCESS, "workspace query");
        void *ws = tf_workspace_begin(be, bytes);
        st = c->call(be->ctx, dt, c, q);
        bool same = true;
        for (int i = 0; i < c->na; i++)
            if (c->a[i].role == DOUT) {
                uint16_t *x = th_malloc((c->a[i].n + 1) * es);
                th_download(be, x, q[i], (c->a[i].n + 1) * es);
                same = same && memcmp(x, got[i], (c->a[i].n + 1) * es) == 0;
                free(x);
            }
        tf_workspace_end(be, ws);
        th_check(st == SEQK_SUCCESS && same,
                 "%s: a caller workspace of exactly the queried %zu bytes: %s, same bits", what,
                 bytes, st ? seqk_last_error() : "ok");
        if (c->ws_exact && !native && bytes > 0) {
            /* fresh outputs, poisoned: none may be written */
            for (int i = 0; i < c->na; i++)
                if (c->a[i].role == DOUT) {
                    memset(got[i], 0xff, (c->a[i].n + 1) * es);
                    th_free(be, q[i]);
                    q[i] = th_upload(be, got[i], (c->a[i].n + 1) * es);
                }
            ws = tf_workspace_begin(be, bytes - 1);
            st = c->call(be->ctx, dt, c, q);
            tf_workspace_end(be, ws);
            same = true;
            for (int i = 0; i < c->na; i++)
                if (c->a[i].role == DOUT) {
                    uint16_t *x = th_malloc((c->a[i].n + 1) * es);
                    th_download(be, x, q[i], (c->a[i].n + 1) * es);
                    same = same && memcmp(x, got[i], (c->a[i].n + 1) * es) == 0;
                    free(x);
                }
            th_check(st == SEQK_ERROR_WORKSPACE_TOO_SMALL && same,
                     "%s: one byte less (%zu): WORKSPACE_TOO_SMALL (%s), outputs untouched", what,
                     bytes - 1, seqk_last_error());
        }
    }
done:
    for (int i = 0; i < c->na; i++) {
        free(got[i]);
        if (p[i]) th_free(be, p[i]);
        if (q[i]) th_free(be, q[i]);
        free(h[i]), free(r[i]), free(f32out[i]), free(enc[i]);
    }
}

/* ---- layouts ------------------------------------------------------------------------ */

/* T = 37 (prime); varlen: 4 sequences of 0, 1, 19 and 17 tokens */
static const int32_t CU37[5] = {0, 0, 1, 20, 37};

static void layout(tcase *c, int varlen, const char *op, seqk_mode mode)
{
    memset(c, 0, sizeof *c);
    c->mode = mode;
    c->B = varlen ? 1 : 2, c->T = 37, c->cu = varlen ? CU37 : NULL, c->N = varlen ? 4 : 2;
    c->H = 3, c->G = 3, c->K = 5, c->V = 7, c->chunk = 16;
    c->scale = (float)(1.0 / sqrt(5.0));
    c->tol_ulps = TOL_ULPS;
    c->ws_exact = 1;
    snprintf(c->name, sizeof c->name, "%s %s%s", op, mode == SEQK_MODE_RECURRENT ? "recurrent" : "parallel",
             varlen ? " varlen" : "");
}

static void add_cu(tcase *c)
{
    if (!c->cu) {
        add(c, "(no cu)", FIN, 0, 0, 0);
        return;
    }
    const int i = add(c, "cu_seqlens", IIN, (size_t)c->N + 1, 0, 0);
    c->a[i].ivals = c->cu;
}

static const int32_t *cu_of(const tcase *c, void **p) { return c->cu ? p[c->na - 1] : NULL; }
static size_t rows(const tcase *c) { return (size_t)(c->B * c->T); }

/* ---- linear-state forwards: linear attention, retention, gated retention ---------- */
/* arrays: 0 q, 1 k, 2 v, 3 o, 4 s0, 5 s1, 6 g or gamma, [7 cu] */

enum { LIN_LINATTN, LIN_RETNET, LIN_GATED };

static seqk_status call_lin(seqk_context *ctx, seqk_dtype dt, const tcase *c, void **p)
{
    switch (c->flags) {
    case LIN_LINATTN:
        return seqk_linear_attention_ex(ctx, dt, c->mode, c->B, c->T, c->H, c->K, c->V, c->scale,
                                        0, p[0], p[1], p[2], p[3], p[4], p[5], NULL, NULL,
                                        cu_of(c, p), c->N, c->chunk);
    case LIN_RETNET:
        return seqk_retention_ex(ctx, dt, c->mode, c->B, c->T, c->H, c->K, c->V, c->scale, p[6],
                                 p[0], p[1], p[2], p[3], p[4], p[5], cu_of(c, p), c->N, c->chunk);
    default:
        return seqk_gated_retention_ex(ctx, dt, c->mode, c->B, c->T, c->H, c->K, c->V, c->scale,
                                       p[0], p[1], p[2], p[6], p[3], p[4], p[5], cu_of(c, p), c->N,
                                       c->chunk);
    }
}

static seqk_status query_lin(seqk_context *ctx, seqk_dtype dt, const tcase *c, size_t *bytes)
{
    return seqk_linear_state_workspace_size_ex(ctx, dt, c->mode, c->B, c->T, c->H, c->K, c->V,
                                               c->cu ? c->N : 0, c->chunk, bytes);
}

static void ref_lin(const tcase *c, float **h, double **r)
{
    ref_decay dec = {0, NULL, NULL};
    if (c->flags == LIN_RETNET) dec.kind = 1, dec.gamma = h[6];
    if (c->flags == LIN_GATED) dec.kind = 2, dec.g = h[6];
    const size_t ns = (size_t)(c->N * c->H * c->K * c->V);
    double *sf = th_doubles(ns);
    ref_linear_state(c->B, c->T, c->H, c->K, c->V, c->scale, 0, 0, dec, h[0], h[1], h[2], h[4],
                     NULL, r[3], sf, NULL, c->cu, c->N);
    free(sf);
}

static void make_lin(tcase *c, int kind, int varlen, seqk_mode mode)
{
    static const char *names[] = {"linear_attention", "retention", "gated_retention"};
    layout(c, varlen, names[kind], mode);
    c->flags = (unsigned)kind;
    const size_t nk = rows(c) * (size_t)(c->H * c->K), nv = rows(c) * (size_t)(c->H * c->V);
    const size_t ns = (size_t)(c->N * c->H * c->K * c->V);
    add(c, "q", DIN, nk, -1, 1), add(c, "k", DIN, nk, -1, 1), add(c, "v", DIN, nv, -1, 1);
    add(c, "o", DOUT, nv, 0, 0), add(c, "state_in", FIN, ns, -0.5, 0.5);
    add(c, "state_out", FOUT, ns, 0, 0);
    if (kind == LIN_RETNET) add(c, "gamma", FIN, (size_t)c->H, 0.8, 1.0);
    else add(c, "g", FIN, rows(c) * (size_t)c->H, kind == LIN_GATED ? -1.0 : 0, 0);
    add_cu(c);
    c->call = call_lin, c->query = query_lin, c->ref = ref_lin;
    c->native = 1;
}

/* ---- linear-state backwards -------------------------------------------------------- */
/* arrays: 0 q, 1 k, 2 v, 3 dout, 4 s0, 5 dsT, 6 dq, 7 dk, 8 dv, 9 ds0, 10 g|gamma, 11 dg, [12 cu] */

static seqk_status call_linb(seqk_context *ctx, seqk_dtype dt, const tcase *c, void **p)
{
    switch (c->flags) {
    case LIN_LINATTN:
        return seqk_linear_attention_backward_ex(ctx, dt, c->B, c->T, c->H, c->K, c->V, c->scale,
                                                 0, p[0], p[1], p[2], p[3], p[4], NULL, p[5],
                                                 NULL, p[6], p[7], p[8], p[9], NULL, cu_of(c, p),
                                                 c->N, c->chunk);
    case LIN_RETNET:
        return seqk_retention_backward_ex(ctx, dt, c->B, c->T, c->H, c->K, c->V, c->scale, p[10],
                                          p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8],
                                          p[9], cu_of(c, p), c->N, c->chunk);
    default:
        return seqk_gated_retention_backward_ex(ctx, dt, c->B, c->T, c->H, c->K, c->V, c->scale,
                                                p[0], p[1], p[2], p[10], p[3], p[4], p[5], p[6],
                                                p[7], p[8], p[11], p[9], cu_of(c, p), c->N,
                                                c->chunk);
    }
}

static seqk_status query_linb(seqk_context *ctx, seqk_dtype dt, const tcase *c, size_t *bytes)
{
    return seqk_linear_state_backward_workspace_size_ex(ctx, dt, c->B, c->T, c->H, c->H, c->K,
                                                        c->V, c->cu ? c->N : 0, c->chunk, bytes);
}

static void ref_linb(const tcase *c, float **h, double **r)
{
    const size_t ns = (size_t)(c->N * c->H * c->K * c->V), nt = rows(c) * (size_t)c->H;
    double *ds0 = th_doubles(ns), *dg = th_doubles(nt), *gt = th_doubles(nt);
    if (c->flags == LIN_LINATTN)
        ref_linear_attention_backward(c->B, c->T, c->H, c->K, c->V, c->scale, 0, 0, h[0], h[1],
                                      h[2], h[3], h[4], NULL, h[5], NULL, r[6], r[7], r[8], ds0,
                                      NULL, NULL, NULL, c->cu, c->N);
    else if (c->flags == LIN_RETNET)
        ref_retention_backward(c->B, c->T, c->H, c->K, c->V, c->scale, h[10], h[0], h[1], h[2],
                               h[3], h[4], h[5], r[6], r[7], r[8], ds0, c->cu, c->N);
    else
        ref_gated_retention_backward(c->B, c->T, c->H, c->K, c->V, c->scale, h[0], h[1], h[2],
                                     h[10], h[3], h[4], h[5], r[6], r[7], r[8], dg, gt, ds0,
                                     c->cu, c->N);
    free(ds0), free(dg), free(gt);
}

static void make_linb(tcase *c, int kind, int varlen)
{
    static const char *names[] = {"linear_attention_backward", "retention_backward",
                                  "gated_retention_backward"};
    layout(c, varlen, names[kind], SEQK_MODE_PARALLEL);
    snprintf(c->name, sizeof c->name, "%s%s", names[kind], varlen ? " varlen" : "");
    c->flags = (unsigned)kind;
    const size_t nk = rows(c) * (size_t)(c->H * c->K), nv = rows(c) * (size_t)(c->H * c->V);
    const size_t ns = (size_t)(c->N * c->H * c->K * c->V), nt = rows(c) * (size_t)c->H;
    add(c, "q", DIN, nk, -1, 1), add(c, "k", DIN, nk, -1, 1), add(c, "v", DIN, nv, -1, 1);
    add(c, "dout", DIN, nv, -1, 1), add(c, "state_in", FIN, ns, -0.5, 0.5);
    add(c, "dstate_out", FIN, ns, -0.5, 0.5);
    add(c, "dq", DOUT, nk, 0, 0), add(c, "dk", DOUT, nk, 0, 0), add(c, "dv", DOUT, nv, 0, 0);
    add(c, "dstate_in", FOUT, ns, 0, 0);
    if (kind == LIN_RETNET) add(c, "gamma", FIN, (size_t)c->H, 0.8, 1.0);
    else add(c, "g", FIN, nt, -1.0, 0);
    add(c, "dg", kind == LIN_GATED ? FOUT : FIN, nt, 0, 0);
    add_cu(c);
    c->call = call_linb, c->query = query_linb, c->ref = ref_linb;
    c->native = 3;
}

/* ---- Mamba2 ------------------------------------------------------------------------------ */
/* H = 4 heads in G = 2 groups, P = 7, Nst = 5.
 * forward arrays: 0 x, 1 dt, 2 A, 3 Bm, 4 Cm, 5 D, 6 dt_bias, 7 y, 8 s0, 9 s1, [10 cu]
 * backward: 0 x, 1 dt, 2 A, 3 Bm, 4 Cm, 5 D, 6 dt_bias, 7 s0, 8 dy, 9 dsT, 10 dx, 11 ddt,
 * 12 dA, 13 dBm, 14 dCm, 15 dD, 16 ddt_bias, 17 ds0, [18 cu] */

static void m2_inputs(tcase *c)
{
    c->H = 4, c->G = 2;
    const size_t nx = rows(c) * (size_t)(c->H * c->V), nb = rows(c) * (size_t)(c->G * c->K);
    add(c, "x", DIN, nx, -1, 1), add(c, "dt", FIN, rows(c) * (size_t)c->H, -1, 1);
    add(c, "A", FIN, (size_t)c->H, -1, -0.1), add(c, "Bm", DIN, nb, -1, 1);
    add(c, "Cm", DIN, nb, -1, 1), add(c, "D", FIN, (size_t)c->H, -1, 1);
    add(c, "dt_bias", FIN, (size_t)c->H, -0.5, 0.5);
}

static seqk_status call_m2(seqk_context *ctx, seqk_dtype dt, const tcase *c, void **p)
{
    return seqk_mamba2_ex(ctx, dt, c->mode, c->B, c->T, c->H, c->V, c->G, c->K,
                          SEQK_MAMBA2_DT_SOFTPLUS, p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7],
                          p[8], p[9], cu_of(c, p), c->N, c->chunk);
}

static seqk_status query_m2(seqk_context *ctx, seqk_dtype dt, const tcase *c, size_t *bytes)
{
    return seqk_linear_state_workspace_size_ex(ctx, dt, c->mode, c->B, c->T, c->H, c->K, c->V,
                                               c->cu ? c->N : 0, c->chunk, bytes);
}

static void ref_m2(const tcase *c, float **h, double **r)
{
    double *sf = th_doubles((size_t)(c->N * c->H * c->K * c->V));
    ref_mamba2(c->B, c->T, c->H, c->V, c->G, c->K, 1, h[0], h[1], h[2], h[3], h[4], h[5], h[6],
               h[8], r[7], sf, c->cu, c->N);
    free(sf);
}

static void make_m2(tcase *c, int varlen, seqk_mode mode)
{
    layout(c, varlen, "mamba2", mode);
    m2_inputs(c);
    const size_t nx = rows(c) * (size_t)(c->H * c->V), ns = (size_t)(c->N * c->H * c->K * c->V);
    add(c, "y", DOUT, nx, 0, 0), add(c, "state_in", FIN, ns, -0.5, 0.5);
    add(c, "state_out", FOUT, ns, 0, 0);
    add_cu(c);
    c->call = call_m2, c->query = query_m2, c->ref = ref_m2;
    c->ws_exact = 0; /* the query bounds Bm, Cm with H heads; the call has G */
    c->native = 1;
}

static seqk_status call_m2b(seqk_context *ctx, seqk_dtype dt, const tcase *c, void **p)
{
    return seqk_mamba2_backward_ex(ctx, dt, c->B, c->T, c->H, c->V, c->G, c->K,
                                   SEQK_MAMBA2_DT_SOFTPLUS, p[0], p[1], p[2], p[3], p[4], p[5],
                                   p[6], p[7], p[8], p[9], p[10], p[11], p[12], p[13], p[14],
                                   p[15], p[16], p[17], cu_of(c, p), c->N, c->chunk);
}

static seqk_status query_m2b(seqk_context *ctx, seqk_dtype dt, const tcase *c, size_t *bytes)
{
    return seqk_linear_state_backward_workspace_size_ex(ctx, dt, c->B, c->T, c->H, c->G, c->K,
                                                        c->V, c->cu ? c->N : 0, c->chunk, bytes);
}

static void ref_m2b(const tcase *c, float **h, double **r)
{
    const size_t nt = rows(c) * (size_t)c->H, ns = (size_t)(c->N * c->H * c->K * c->V);
    double *ddt = th_doubles(nt), *dA = th_doubles((size_t)c->H), *dD = th_doubles((size_t)c->H);
    double *dtb = th_doubles((size_t)c->H), *ds0 = th_doubles(ns);
    ref_mamba2_backward(c->B, c->T, c->H, c->V, c->G, c->K, 1, h[0], h[1], h[2], h[3], h[4],
                        h[5], h[6], h[7], h[8], h[9], r[10], ddt, dA, r[13], r[14], dD, dtb, ds0,
                        NULL, c->cu, c->N);
    free(ddt), free(dA), free(dD), free(dtb), free(ds0);
}

static void make_m2b(tcase *c, int varlen)
{
    layout(c, varlen, "mamba2_backward", SEQK_MODE_PARALLEL);
    snprintf(c->name, sizeof c->name, "mamba2_backward%s", varlen ? " varlen" : "");
    m2_inputs(c);
    const size_t nx = rows(c) * (size_t)(c->H * c->V), nb = rows(c) * (size_t)(c->G * c->K);
    const size_t ns = (size_t)(c->N * c->H * c->K * c->V), nt = rows(c) * (size_t)c->H;
    add(c, "state_in", FIN, ns, -0.5, 0.5), add(c, "dy", DIN, nx, -1, 1);
    add(c, "dstate_out", FIN, ns, -0.5, 0.5), add(c, "dx", DOUT, nx, 0, 0);
    add(c, "ddt", FOUT, nt, 0, 0), add(c, "dA", FOUT, (size_t)c->H, 0, 0);
    add(c, "dBm", DOUT, nb, 0, 0), add(c, "dCm", DOUT, nb, 0, 0);
    add(c, "dD", FOUT, (size_t)c->H, 0, 0), add(c, "ddt_bias", FOUT, (size_t)c->H, 0, 0);
    add(c, "dstate_in", FOUT, ns, 0, 0);
    add_cu(c);
    c->call = call_m2b, c->query = query_m2b, c->ref = ref_m2b;
    c->native = 3;
}

/* ---- the selective scan --------------------------------------------------------------- */
/* D = 6 channels (c->V) in G = 2 groups, Nst = 5 (c->K).
 * forward: 0 u, 1 dt, 2 A, 3 Bm, 4 Cm, 5 Dskip, 6 z, 7 dt_bias, 8 y, 9 s0, 10 s1, [11 cu]
 * backward: 0 u, 1 dt, 2 A, 3 Bm, 4 Cm, 5 Dskip, 6 z, 7 dt_bias, 8 s0, 9 dy, 10 dsT, 11 du,
 * 12 ddt, 13 dA, 14 dBm, 15 dCm, 16 dDskip, 17 dz, 18 ddt_bias, 19 ds0, [20 cu] */

static void ss_inputs(tcase *c)
{
    c->V = 6, c->G = 2;
    const size_t nu = rows(c) * (size_t)c->V, nb = rows(c) * (size_t)(c->G * c->K);
    add(c, "u", DIN, nu, -1, 1), add(c, "dt", FIN, nu, -1, 1);
    add(c, "A", FIN, (size_t)(c->V * c->K), -1, -0.1), add(c, "Bm", DIN, nb, -1, 1);
    add(c, "Cm", DIN, nb, -1, 1), add(c, "Dskip", FIN, (size_t)c->V, -1, 1);
    add(c, "z", DIN, nu, -2, 2), add(c, "dt_bias", FIN, (size_t)c->V, -0.5, 0.5);
}

static seqk_status call_ss(seqk_context *ctx, seqk_dtype dt, const tcase *c, void **p)
{
    return seqk_selective_scan_ex(ctx, dt, c->mode, c->B, c->T, c->V, c->K, c->G,
                                  SEQK_SSCAN_DT_SOFTPLUS, p[0], p[1], p[2], p[3], p[4], p[5], p[6],
                                  p[7], p[8], p[9], p[10], cu_of(c, p), c->N);
}

static seqk_status query_ss(seqk_context *ctx, seqk_dtype dt, const tcase *c, size_t *bytes)
{
    return seqk_selective_scan_workspace_size_ex(ctx, dt, c->mode, c->B, c->T, c->V, c->K, c->G,
                                                 c->cu ? c->N : 0, bytes);
}

static void ref_ss(const tcase *c, float **h, double **r)
{
    double *sf = th_doubles((size_t)(c->N * c->V * c->K));
    ref_selective_scan(c->B, c->T, c->V, c->K, c->G, 1, h[0], h[1], h[2], h[3], h[4], h[5], h[6],
                       h[7], h[9], r[8], sf, c->cu, c->N);
    free(sf);
}

static void make_ss(tcase *c, int varlen, seqk_mode mode)
{
    layout(c, varlen, "selective_scan", mode);
    ss_inputs(c);
    const size_t nu = rows(c) * (size_t)c->V, ns = (size_t)(c->N * c->V * c->K);
    add(c, "y", DOUT, nu, 0, 0), add(c, "state_in", FIN, ns, -0.5, 0.5);
    add(c, "state_out", FOUT, ns, 0, 0);
    add_cu(c);
    c->call = call_ss, c->query = query_ss, c->ref = ref_ss;
}

static seqk_status call_ssb(seqk_context *ctx, seqk_dtype dt, const tcase *c, void **p)
{
    return seqk_selective_scan_backward_ex(ctx, dt, c->B, c->T, c->V, c->K, c->G,
                                           SEQK_SSCAN_DT_SOFTPLUS, p[0], p[1], p[2], p[3], p[4],
                                           p[5], p[6], p[7], p[8], p[9], p[10], p[11], p[12],
                                           p[13], p[14], p[15], p[16], p[17], p[18], p[19],
                                           cu_of(c, p), c->N);
}

static seqk_status query_ssb(seqk_context *ctx, seqk_dtype dt, const tcase *c, size_t *bytes)
{
    return seqk_selective_scan_backward_workspace_size_ex(ctx, dt, c->B, c->T, c->V, c->K, c->G,
                                                          c->cu ? c->N : 0, bytes);
}

static void ref_ssb(const tcase *c, float **h, double **r)
{
    const size_t nu = rows(c) * (size_t)c->V, nb = rows(c) * (size_t)(c->G * c->K);
    const size_t ns = (size_t)(c->N * c->V * c->K), na = (size_t)(c->V * c->K);
    ref_ss_problem P = {c->B, c->T, c->V, c->K, c->G, c->N, 1, c->cu, NULL, NULL, NULL, NULL,
                        NULL, NULL, NULL, NULL, NULL};
    double *u = dbl(h[0], nu), *dtv = dbl(h[1], nu), *A = dbl(h[2], na), *Bm = dbl(h[3], nb);
    double *Cm = dbl(h[4], nb), *Ds = dbl(h[5], (size_t)c->V), *z = dbl(h[6], nu);
    double *dtb = dbl(h[7], (size_t)c->V), *s0 = dbl(h[8], ns), *dy = dbl(h[9], nu);
    double *dsT = dbl(h[10], ns);
    P.u = u, P.dt = dtv, P.A = A, P.Bm = Bm, P.Cm = Cm, P.Dskip = Ds, P.z = z, P.dt_bias = dtb;
    P.s0 = s0;
    double *ddt = th_doubles(nu), *dA = th_doubles(na), *dDs = th_doubles((size_t)c->V);
    double *ddtb = th_doubles((size_t)c->V), *ds0 = th_doubles(ns);
    ref_ss_backward_d(&P, dy, dsT, r[11], ddt, dA, r[14], r[15], dDs, r[17], ddtb, ds0);
    free(u), free(dtv), free(A), free(Bm), free(Cm), free(Ds), free(z), free(dtb), free(s0);
    free(dy), free(dsT), free(ddt), free(dA), free(dDs), free(ddtb), free(ds0);
}

static void make_ssb(tcase *c, int varlen)
{
    layout(c, varlen, "selective_scan_backward", SEQK_MODE_PARALLEL);
    snprintf(c->name, sizeof c->name, "selective_scan_backward%s", varlen ? " varlen" : "");
    ss_inputs(c);
    const size_t nu = rows(c) * (size_t)c->V, nb = rows(c) * (size_t)(c->G * c->K);
    const size_t ns = (size_t)(c->N * c->V * c->K);
    add(c, "state_in", FIN, ns, -0.5, 0.5), add(c, "dy", DIN, nu, -1, 1);
    add(c, "dstate_out", FIN, ns, -0.5, 0.5), add(c, "du", DOUT, nu, 0, 0);
    add(c, "ddt", FOUT, nu, 0, 0), add(c, "dA", FOUT, (size_t)(c->V * c->K), 0, 0);
    add(c, "dBm", DOUT, nb, 0, 0), add(c, "dCm", DOUT, nb, 0, 0);
    add(c, "dDskip", FOUT, (size_t)c->V, 0, 0), add(c, "dz", DOUT, nu, 0, 0);
    add(c, "ddt_bias", FOUT, (size_t)c->V, 0, 0), add(c, "dstate_in", FOUT, ns, 0, 0);
    add_cu(c);
    c->call = call_ssb, c->query = query_ssb, c->ref = ref_ssb;
}

/* ---- DeltaNet (gated, L2-normed q, k) --------------------------------------------------- */
/* forward: 0 q, 1 k, 2 v, 3 beta, 4 g, 5 o, 6 s0, 7 s1, [8 cu]
 * backward: 0 q, 1 k, 2 v, 3 beta, 4 g, 5 s0, 6 dout, 7 dsT, 8 dq, 9 dk, 10 dv, 11 dbeta,
 * 12 dg, 13 ds0, [14 cu] */

static void dn_inputs(tcase *c)
{
    const size_t nk = rows(c) * (size_t)(c->H * c->K), nv = rows(c) * (size_t)(c->H * c->V);
    const size_t nt = rows(c) * (size_t)c->H;
    add(c, "q", DIN, nk, -1, 1), add(c, "k", DIN, nk, -1, 1), add(c, "v", DIN, nv, -1, 1);
    add(c, "beta", FIN, nt, 0, 1), add(c, "g", FIN, nt, -1, 0);
}

static seqk_status call_dn(seqk_context *ctx, seqk_dtype dt, const tcase *c, void **p)
{
    return seqk_deltanet_ex(ctx, dt, c->mode, c->B, c->T, c->H, c->K, c->V, c->scale,
                            SEQK_DELTANET_L2NORM_QK, p[0], p[1], p[2], p[3], p[4], p[5], p[6],
                            p[7], cu_of(c, p), c->N, c->chunk);
}

static seqk_status query_dn(seqk_context *ctx, seqk_dtype dt, const tcase *c, size_t *bytes)
{
    return seqk_deltanet_workspace_size_ex(ctx, dt, c->mode, c->B, c->T, c->H, c->K, c->V,
                                           c->cu ? c->N : 0, c->chunk, bytes);
}

static void ref_dn(const tcase *c, float **h, double **r)
{
    double *sf = th_doubles((size_t)(c->N * c->H * c->K * c->V));
    ref_deltanet(c->B, c->T, c->H, c->K, c->V, c->scale, 1, h[0], h[1], h[2], h[3], h[4], h[6],
                 r[5], sf, c->cu, c->N);
    free(sf);
}

static void make_dn(tcase *c, int varlen, seqk_mode mode)
{
    layout(c, varlen, "deltanet", mode);
    dn_inputs(c);
    const size_t nv = rows(c) * (size_t)(c->H * c->V), ns = (size_t)(c->N * c->H * c->K * c->V);
    add(c, "o", DOUT, nv, 0, 0), add(c, "state_in", FIN, ns, -0.5, 0.5);
    add(c, "state_out", FOUT, ns, 0, 0);
    add_cu(c);
    c->call = call_dn, c->query = query_dn, c->ref = ref_dn;
    c->native = 2;
}

static seqk_status call_dnb(seqk_context *ctx, seqk_dtype dt, const tcase *c, void **p)
{
    return seqk_deltanet_backward_ex(ctx, dt, c->B, c->T, c->H, c->K, c->V, c->scale,
                                     SEQK_DELTANET_L2NORM_QK, p[0], p[1], p[2], p[3], p[4], p[5],
                                     p[6], p[7], p[8], p[9], p[10], p[11], p[12], p[13],
                                     cu_of(c, p), c->N, c->chunk);
}

static seqk_status query_dnb(seqk_context *ctx, seqk_dtype dt, const tcase *c, size_t *bytes)
{
    return seqk_deltanet_backward_workspace_size_ex(ctx, dt, c->B, c->T, c->H, c->K, c->V,
                                                    c->cu ? c->N : 0, c->chunk, bytes);
}

static void ref_dnb(const tcase *c, float **h, double **r)
{
    const size_t nk = rows(c) * (size_t)(c->H * c->K), nv = rows(c) * (size_t)(c->H * c->V);
    const size_t nt = rows(c) * (size_t)c->H, ns = (size_t)(c->N * c->H * c->K * c->V);
    double *q = dbl(h[0], nk), *k = dbl(h[1], nk), *v = dbl(h[2], nv), *beta = dbl(h[3], nt);
    double *g = dbl(h[4], nt), *s0 = dbl(h[5], ns), *dout = dbl(h[6], nv), *dsT = dbl(h[7], ns);
    double *dbeta = th_doubles(nt), *dg = th_doubles(nt), *ds0 = th_doubles(ns);
    ref_deltanet_backward64(c->B, c->T, c->H, c->K, c->V, c->scale, 1, q, k, v, beta, g, s0, dout,
                            dsT, r[8], r[9], r[10], dbeta, dg, ds0, c->cu, c->N);
    free(q), free(k), free(v), free(beta), free(g), free(s0), free(dout), free(dsT);
    free(dbeta), free(dg), free(ds0);
}

static void make_dnb(tcase *c, int varlen)
{
    layout(c, varlen, "deltanet_backward", SEQK_MODE_PARALLEL);
    snprintf(c->name, sizeof c->name, "deltanet_backward%s", varlen ? " varlen" : "");
    dn_inputs(c);
    const size_t nk = rows(c) * (size_t)(c->H * c->K), nv = rows(c) * (size_t)(c->H * c->V);
    const size_t nt = rows(c) * (size_t)c->H, ns = (size_t)(c->N * c->H * c->K * c->V);
    add(c, "state_in", FIN, ns, -0.5, 0.5), add(c, "dout", DIN, nv, -1, 1);
    add(c, "dstate_out", FIN, ns, -0.5, 0.5);
    add(c, "dq", DOUT, nk, 0, 0), add(c, "dk", DOUT, nk, 0, 0), add(c, "dv", DOUT, nv, 0, 0);
    add(c, "dbeta", FOUT, nt, 0, 0), add(c, "dg", FOUT, nt, 0, 0);
    add(c, "dstate_in", FOUT, ns, 0, 0);
    add_cu(c);
    c->call = call_dnb, c->query = query_dnb, c->ref = ref_dnb;
    c->native = 4;
}

/* ---- Titans (L2-normed q, k; mini-batches of 4) -------------------------------------- */
/* forward: 0 q, 1 k, 2 v, 3 eta, 4 theta, 5 alpha, 6 o, 7 s0, 8 s1, [9 cu]
 * backward: 0 q, 1 k, 2 v, 3 eta, 4 theta, 5 alpha, 6 s0, 7 dout, 8 dsT, 9 dq, 10 dk, 11 dv,
 * 12 deta, 13 dtheta, 14 dalpha, 15 ds0, [16 cu] */

static size_t tt_e(const tcase *c) { return (size_t)(3 * c->K * c->V + 8); }

static void tt_inputs(tcase *c)
{
    const size_t nk = rows(c) * (size_t)(c->H * c->K), nv = rows(c) * (size_t)(c->H * c->V);
    const size_t nt = rows(c) * (size_t)c->H;
    c->minibatch = 4;
    add(c, "q", DIN, nk, -1, 1), add(c, "k", DIN, nk, -1, 1), add(c, "v", DIN, nv, -1, 1);
    add(c, "eta", FIN, nt, 0, 0.9), add(c, "theta", FIN, nt, 0, 0.1);
    add(c, "alpha", FIN, nt, 0, 0.5);
}

/* state_in's positions: integers in [0, b); reserved floats 0 */
static void tt_state(const tcase *c, float *s)
{
    const size_t E = tt_e(c), kv = (size_t)(c->K * c->V);
    for (int64_t i = 0; i < c->N * c->H; i++) {
        s[(size_t)i * E + 3 * kv] = (float)(i % c->minibatch);
        for (size_t j = 3 * kv + 1; j < E; j++) s[(size_t)i * E + j] = 0;
    }
}

static void prep_tt(const tcase *c, float **h) { tt_state(c, h[7]); }
static void prep_ttb(const tcase *c, float **h) { tt_state(c, h[6]); }

static seqk_status call_tt(seqk_context *ctx, seqk_dtype dt, const tcase *c, void **p)
{
    return seqk_titans_ex(ctx, dt, c->mode, c->B, c->T, c->H, c->K, c->V, c->scale,
                          SEQK_TITANS_L2NORM_QK, c->minibatch, p[0], p[1], p[2], p[3], p[4], p[5],
                          p[6], p[7], p[8], cu_of(c, p), c->N);
}

static seqk_status query_tt(seqk_context *ctx, seqk_dtype dt, const tcase *c, size_t *bytes)
{
    return seqk_titans_workspace_size_ex(ctx, dt, c->mode, c->B, c->T, c->H, c->K, c->V,
                                         c->minibatch, c->cu ? c->N : 0, bytes);
}

static void ref_tt(const tcase *c, float **h, double **r)
{
    double *sf = th_doubles((size_t)(c->N * c->H) * tt_e(c));
    ref_titans(c->B, c->T, c->H, c->K, c->V, c->scale, 1, c->minibatch, h[0], h[1], h[2], h[3],
               h[4], h[5], h[7], r[6], sf, c->cu, c->N);
    free(sf);
}

static void make_tt(tcase *c, int varlen, seqk_mode mode)
{
    layout(c, varlen, "titans", mode);
    tt_inputs(c);
    const size_t nv = rows(c) * (size_t)(c->H * c->V), ns = (size_t)(c->N * c->H) * tt_e(c);
    add(c, "o", DOUT, nv, 0, 0), add(c, "state_in", FIN, ns, -0.5, 0.5);
    add(c, "state_out", FOUT, ns, 0, 0);
    add_cu(c);
    c->call = call_tt, c->query = query_tt, c->ref = ref_tt, c->prepare = prep_tt;
}

static seqk_status call_ttb(seqk_context *ctx, seqk_dtype dt, const tcase *c, void **p)
{
    return seqk_titans_backward_ex(ctx, dt, c->B, c->T, c->H, c->K, c->V, c->scale,
                                   SEQK_TITANS_L2NORM_QK, c->minibatch, p[0], p[1], p[2], p[3],
                                   p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11], p[12], p[13],
                                   p[14], p[15], cu_of(c, p), c->N);
}

static seqk_status query_ttb(seqk_context *ctx, seqk_dtype dt, const tcase *c, size_t *bytes)
{
    return seqk_titans_backward_workspace_size_ex(ctx, dt, c->B, c->T, c->H, c->K, c->V,
                                                  c->minibatch, c->cu ? c->N : 0, bytes);
}

static void ref_ttb(const tcase *c, float **h, double **r)
{
    const size_t nk = rows(c) * (size_t)(c->H * c->K), nv = rows(c) * (size_t)(c->H * c->V);
    const size_t nt = rows(c) * (size_t)c->H, ns = (size_t)(c->N * c->H) * tt_e(c);
    double *q = dbl(h[0], nk), *k = dbl(h[1], nk), *v = dbl(h[2], nv), *eta = dbl(h[3], nt);
    double *th = dbl(h[4], nt), *al = dbl(h[5], nt), *s0 = dbl(h[6], ns), *dout = dbl(h[7], nv);
    double *dsT = dbl(h[8], ns);
    double *deta = th_doubles(nt), *dth = th_doubles(nt), *dal = th_doubles(nt);
    double *ds0 = th_doubles(ns);
    ref_titans_backward64(c->B, c->T, c->H, c->K, c->V, c->scale, 1, c->minibatch, q, k, v, eta,
                          th, al, s0, dout, dsT, r[9], r[10], r[11], deta, dth, dal, ds0, c->cu,
                          c->N);
    free(q), free(k), free(v), free(eta), free(th), free(al), free(s0), free(dout), free(dsT);
    free(deta), free(dth), free(dal), free(ds0);
}

static void make_ttb(tcase *c, int varlen)
{
    layout(c, varlen, "titans_backward", SEQK_MODE_PARALLEL);
    snprintf(c->name, sizeof c->name, "titans_backward%s", varlen ? " varlen" : "");
    tt_inputs(c);
    const size_t nk = rows(c) * (size_t)(c->H * c->K), nv = rows(c) * (size_t)(c->H * c->V);
    const size_t nt = rows(c) * (size_t)c->H, ns = (size_t)(c->N * c->H) * tt_e(c);
    add(c, "state_in", FIN, ns, -0.5, 0.5), add(c, "dout", DIN, nv, -1, 1);
    add(c, "dstate_out", FIN, ns, -0.5, 0.5);
    add(c, "dq", DOUT, nk, 0, 0), add(c, "dk", DOUT, nk, 0, 0), add(c, "dv", DOUT, nv, 0, 0);
    add(c, "deta", FOUT, nt, 0, 0), add(c, "dtheta", FOUT, nt, 0, 0);
    add(c, "dalpha", FOUT, nt, 0, 0), add(c, "dstate_in", FOUT, ns, 0, 0);
    add_cu(c);
    c->call = call_ttb, c->query = query_ttb, c->ref = ref_ttb, c->prepare = prep_ttb;
}

/* ---- softmax attention (causal, Hq = 4 query heads on Hkv = 2) ------------------------- */
/* forward: 0 q, 1 k, 2 v, 3 o, 4 lse, [5 cu]
 * backward: 0 q, 1 k, 2 v, 3 o, 4 lse, 5 dout, 6 dq, 7 dk, 8 dv, [9 cu] */

static void at_inputs(tcase *c)
{
    c->H = 4, c->G = 2;
    const size_t nq = rows(c) * (size_t)(c->H * c->K), nk = rows(c) * (size_t)(c->G * c->K);
    add(c, "q", DIN, nq, -1, 1), add(c, "k", DIN, nk, -1, 1);
    add(c, "v", DIN, rows(c) * (size_t)(c->G * c->V), -1, 1);
}

static seqk_status call_at(seqk_context *ctx, seqk_dtype dt, const tcase *c, void **p)
{
    return seqk_attention_parallel_ex(ctx, dt, c->B, c->T, c->H, c->G, c->K, c->V, c->scale,
                                      SEQK_ATTN_CAUSAL, p[0], p[1], p[2], p[3], p[4], cu_of(c, p),
                                      c->N);
}

static seqk_status query_at(seqk_context *ctx, seqk_dtype dt, const tcase *c, size_t *bytes)
{
    return seqk_attention_parallel_workspace_size_ex(ctx, dt, c->B, c->T, c->H, c->G, c->K, c->V,
                                                     SEQK_ATTN_CAUSAL, c->cu ? c->N : 0, bytes);
}

static void ref_at(const tcase *c, float **h, double **r)
{
    double *lse = th_doubles(rows(c) * (size_t)c->H);
    ref_attention(c->B, c->T, c->H, c->G, c->K, c->V, c->scale, 1, h[0], h[1], h[2], r[3], lse,
                  c->cu, c->N);
    free(lse);
}

static void make_at(tcase *c, int varlen)
{
    layout(c, varlen, "attention_parallel", SEQK_MODE_PARALLEL);
    snprintf(c->name, sizeof c->name, "attention_parallel%s", varlen ? " varlen" : "");
    at_inputs(c);
    add(c, "o", DOUT, rows(c) * (size_t)(c->H * c->V), 0, 0);
    add(c, "lse", FOUT, rows(c) * (size_t)c->H, 0, 0);
    add_cu(c);
    c->call = call_at, c->query = query_at, c->ref = ref_at;
}

/* o and lse of the rounded inputs, from the fp32 forward (what training passes) */
static void prep_atb(const tcase *c, float **h)
{
    const seqk_status st =
        seqk_attention_parallel(cpu_ctx, c->B, c->T, c->H, c->G, c->K, c->V, c->scale,
                                SEQK_ATTN_CAUSAL, h[0], h[1], h[2], h[3], h[4],
                                c->cu ? (const int32_t *)h[c->na - 1] : NULL, c->N);
    th_check_status(st, SEQK_SUCCESS, "attention backward: the forward's o and lse");
}

static seqk_status call_atb(seqk_context *ctx, seqk_dtype dt, const tcase *c, void **p)
{
    return seqk_attention_parallel_backward_ex(ctx, dt, c->B, c->T, c->H, c->G, c->K, c->V,
                                               c->scale, SEQK_ATTN_CAUSAL, p[0], p[1], p[2], p[3],
                                               p[4], p[5], p[6], p[7], p[8], cu_of(c, p), c->N);
}

static seqk_status query_atb(seqk_context *ctx, seqk_dtype dt, const tcase *c, size_t *bytes)
{
    return seqk_attention_parallel_backward_workspace_size_ex(
        ctx, dt, c->B, c->T, c->H, c->G, c->K, c->V, SEQK_ATTN_CAUSAL, c->cu ? c->N : 0, bytes);
}

static void ref_atb(const tcase *c, float **h, double **r)
{
    double *q = dbl(h[0], c->a[0].n), *k = dbl(h[1], c->a[1].n), *v = dbl(h[2], c->a[2].n);
    double *dout = dbl(h[5], c->a[5].n);
    ref_attention_backward(c->B, c->T, c->H, c->G, c->K, c->V, c->scale, 1, q, k, v, dout, r[6],
                           r[7], r[8], c->cu, c->N);
    free(q), free(k), free(v), free(dout);
}

static void make_atb(tcase *c, int varlen)
{
    layout(c, varlen, "attention_parallel_backward", SEQK_MODE_PARALLEL);
    snprintf(c->name, sizeof c->name, "attention_parallel_backward%s", varlen ? " varlen" : "");
    at_inputs(c);
    add(c, "o", DIN, rows(c) * (size_t)(c->H * c->V), 0, 0);
    add(c, "lse", FIN, rows(c) * (size_t)c->H, 0, 0);
    add(c, "dout", DIN, rows(c) * (size_t)(c->H * c->V), -1, 1);
    add(c, "dq", DOUT, c->a[0].n, 0, 0), add(c, "dk", DOUT, c->a[1].n, 0, 0);
    add(c, "dv", DOUT, c->a[2].n, 0, 0);
    add_cu(c);
    c->call = call_atb, c->query = query_atb, c->ref = ref_atb, c->prepare = prep_atb;
}

/* ---- the decode step: 0 q, 1 k_new, 2 v_new, 3 k_cache, 4 v_cache, 5 cache_len, 6 o, 7 lse */

static const int32_t DEC_LEN[3] = {0, 5, 10};

static seqk_status call_dec(seqk_context *ctx, seqk_dtype dt, const tcase *c, void **p)
{
    return seqk_attention_decode_ex(ctx, dt, c->B, c->H, c->G, c->K, c->V, c->max_len, c->scale,
                                    p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]);
}

static seqk_status query_dec(seqk_context *ctx, seqk_dtype dt, const tcase *c, size_t *bytes)
{
    return seqk_attention_decode_workspace_size_ex(ctx, dt, c->B, c->H, c->G, c->K, c->V,
                                                   c->max_len, bytes);
}

static void ref_dec(const tcase *c, float **h, double **r)
{
    const int64_t Hq = c->H, Hkv = c->G, K = c->K, V = c->V, L = c->max_len;
    for (int64_t b = 0; b < c->B; b++) {
        const int64_t p = DEC_LEN[b];
        for (int64_t g = 0; g < Hkv; g++) {
            for (int64_t i = 0; i < K; i++)
                r[3][((b * L + p) * Hkv + g) * K + i] = h[1][(b * Hkv + g) * K + i];
            for (int64_t i = 0; i < V; i++)
                r[4][((b * L + p) * Hkv + g) * V + i] = h[2][(b * Hkv + g) * V + i];
        }
        for (int64_t hq = 0; hq < Hq; hq++) {
            const int64_t g = hq / (Hq / Hkv);
            double s[16], mx = -INFINITY, den = 0;
            for (int64_t t = 0; t <= p; t++) {
                double d = 0;
                for (int64_t i = 0; i < K; i++)
                    d += (double)h[0][(b * Hq + hq) * K + i] * r[3][((b * L + t) * Hkv + g) * K + i];
                s[t] = c->scale * d;
                if (s[t] > mx) mx = s[t];
            }
            for (int64_t t = 0; t <= p; t++) den += exp(s[t] - mx);
            for (int64_t i = 0; i < V; i++) {
                double o = 0;
                for (int64_t t = 0; t <= p; t++)
                    o += exp(s[t] - mx) / den * r[4][((b * L + t) * Hkv + g) * V + i];
                r[6][(b * Hq + hq) * V + i] = o;
            }
        }
    }
}

static void make_dec(tcase *c)
{
    layout(c, 0, "attention_decode", SEQK_MODE_RECURRENT);
    snprintf(c->name, sizeof c->name, "attention_decode");
    c->B = 3, c->H = 4, c->G = 2, c->max_len = 11;
    add(c, "q", DIN, (size_t)(c->B * c->H * c->K), -1, 1);
    add(c, "k_new", DIN, (size_t)(c->B * c->G * c->K), -1, 1);
    add(c, "v_new", DIN, (size_t)(c->B * c->G * c->V), -1, 1);
    add(c, "k_cache", DINOUT, (size_t)(c->B * c->max_len * c->G * c->K), -1, 1);
    add(c, "v_cache", DINOUT, (size_t)(c->B * c->max_len * c->G * c->V), -1, 1);
    const int i = add(c, "cache_len", IIN, (size_t)c->B, 0, 0);
    c->a[i].ivals = DEC_LEN;
    add(c, "o", DOUT, (size_t)(c->B * c->H * c->V), 0, 0);
    add(c, "lse", FOUT, (size_t)(c->B * c->H), 0, 0);
    c->call = call_dec, c->query = query_dec, c->ref = ref_dec;
}

/* ---- validation through the converting path -------------------------------------------- */

static void check_validation(th_backend *be)
{
    if (th_skipped(be, "validation")) return;
    const int64_t B = 1, T = 5, H = 2, K = 3, V = 4;
    const size_t nk = (size_t)(B * T * H * K), nv = (size_t)(B * T * H * V), nt = (size_t)(B * T * H);
    uint16_t x[64], o[64], keep[64];
    float g[16];
    for (int i = 0; i < 64; i++) x[i] = 0x3f80u, o[i] = keep[i] = 0x1234u; /* bf16 1.0 */
    for (int i = 0; i < 16; i++) g[i] = -0.5f;
    g[7] = 1.0f; /* a positive log-gate: rejected by the fp32 op (checked on CPU contexts) */
    uint16_t *dq = th_upload(be, x, nk * 2), *dk = th_upload(be, x, nk * 2);
    uint16_t *dv = th_upload(be, x, nv * 2), *dout = th_upload(be, o, nv * 2);
    float *dg = th_upload(be, g, nt * 4);
    if (be->backend == SEQK_BACKEND_CPU) {
        const seqk_status st = seqk_gated_retention_ex(be->ctx, SEQK_DTYPE_BF16,
                                                       SEQK_MODE_PARALLEL, B, T, H, K, V, 1.0f,
                                                       dq, dk, dv, dg, dout, NULL, NULL, NULL, 0, 0);
        th_download(be, o, dout, nv * 2);
        th_check(st == SEQK_ERROR_INVALID_ARGUMENT && strstr(seqk_last_error(), "g[7]") &&
                     memcmp(o, keep, nv * 2) == 0,
                 "%s: validation: bf16 gated retention with g[7] = 1: rejected (%s), o untouched",
                 be->name, seqk_last_error());
    }
    g[7] = -0.5f;
    seqk_memcpy(be->ctx, dg, g, nt * 4, SEQK_COPY_HOST_TO_BACKEND);
    seqk_status st = seqk_gated_retention_ex(be->ctx, SEQK_DTYPE_F16, SEQK_MODE_RECURRENT, B, T,
                                             H, K, V, 1.0f, NULL, dk, dv, dg, dout, NULL, NULL,
                                             NULL, 0, 0);
    th_download(be, o, dout, nv * 2);
    th_check(st == SEQK_ERROR_INVALID_ARGUMENT && strstr(seqk_last_error(), "q is NULL") &&
                 memcmp(o, keep, nv * 2) == 0,
             "%s: validation: f16 with q NULL: rejected (%s), o untouched", be->name,
             seqk_last_error());
    /* o overlapping v (both bf16): rejected before anything is converted */
    st = seqk_retention_ex(be->ctx, SEQK_DTYPE_BF16, SEQK_MODE_PARALLEL, B, T, H, K, V, 1.0f,
                           NULL, dq, dk, dout, (uint16_t *)dout + 1, NULL, NULL, NULL, 0, 0);
    th_download(be, o, dout, nv * 2);
    th_check(st == SEQK_ERROR_INVALID_ARGUMENT && strstr(seqk_last_error(), "overlaps") &&
                 memcmp(o, keep, nv * 2) == 0,
             "%s: validation: bf16 o overlapping v: rejected (%s), untouched", be->name,
             seqk_last_error());
    /* negative sizes: the fp32 op's own message */
    st = seqk_deltanet_ex(be->ctx, SEQK_DTYPE_BF16, SEQK_MODE_PARALLEL, B, -1, H, K, V, 1.0f, 0,
                          dq, dk, dv, dg, NULL, dout, NULL, NULL, NULL, 0, 0);
    th_check(st == SEQK_ERROR_INVALID_ARGUMENT && strstr(seqk_last_error(), "T=-1"),
             "%s: validation: bf16 deltanet with T = -1: %s", be->name, seqk_last_error());
    /* the dtype helpers */
    th_check(!strcmp(seqk_dtype_string(SEQK_DTYPE_BF16), "bf16") &&
                 !strcmp(seqk_dtype_string(SEQK_DTYPE_F16), "f16") &&
                 !strcmp(seqk_dtype_string(SEQK_DTYPE_F32), "f32") &&
                 !strcmp(seqk_dtype_string((seqk_dtype)9), "unknown dtype") &&
                 seqk_dtype_size(SEQK_DTYPE_F32) == 4 && seqk_dtype_size(SEQK_DTYPE_BF16) == 2 &&
                 seqk_dtype_size(SEQK_DTYPE_F16) == 2 && seqk_dtype_size((seqk_dtype)-1) == 0,
             "seqk_dtype_string / seqk_dtype_size");
    size_t bytes = 0;
    st = seqk_deltanet_workspace_size_ex(be->ctx, (seqk_dtype)3, SEQK_MODE_PARALLEL, B, T, H, K,
                                         V, 0, 0, &bytes);
    th_check(st == SEQK_ERROR_INVALID_ARGUMENT && strstr(seqk_last_error(), "dtype=3"),
             "%s: validation: a workspace query with dtype=3: %s", be->name, seqk_last_error());
    th_free(be, dq), th_free(be, dk), th_free(be, dv), th_free(be, dout), th_free(be, dg);
}

int main(int argc, char **argv)
{
    th_backend *bes;
    const int nb = th_init(argc, argv, &bes);
    if (seqk_context_create(&cpu_ctx, SEQK_BACKEND_CPU, 0) != SEQK_SUCCESS) return 1;
    enum { NCASES = 64 };
    tcase *cases = th_malloc(NCASES * sizeof(tcase));
    int nc = 0;
    for (int varlen = 0; varlen < 2; varlen++) {
        for (int m = 0; m < 2; m++) {
            const seqk_mode mode = m ? SEQK_MODE_PARALLEL : SEQK_MODE_RECURRENT;
            for (int kind = 0; kind < 3; kind++) make_lin(&cases[nc++], kind, varlen, mode);
            make_m2(&cases[nc++], varlen, mode);
            make_ss(&cases[nc++], varlen, mode);
            make_dn(&cases[nc++], varlen, mode);
            make_tt(&cases[nc++], varlen, mode);
        }
        for (int kind = 0; kind < 3; kind++) make_linb(&cases[nc++], kind, varlen);
        make_m2b(&cases[nc++], varlen);
        make_ssb(&cases[nc++], varlen);
        make_dnb(&cases[nc++], varlen);
        make_ttb(&cases[nc++], varlen);
        make_at(&cases[nc++], varlen);
        make_atb(&cases[nc++], varlen);
    }
    make_dec(&cases[nc++]);
    for (int b = 0; b < nb; b++) {
        check_conversions(&bes[b]);
        check_validation(&bes[b]);
        for (int i = 0; i < nc; i++)
            for (int d = 0; d < 2; d++) run_case(&bes[b], &cases[i], DTYPES[d]);
    }
    printf("worst error against float64 (rounded to the dtype): bf16 %.3g u (u = 2^-8), "
           "f16 %.3g u (u = 2^-11); tolerance %.3g u\n",
           worst[SEQK_DTYPE_BF16], worst[SEQK_DTYPE_F16], TOL_ULPS);
    printf("native path (CUDA linear-state and DeltaNet forwards and backwards, "
           "parallel): bf16 %.3g u, "
           "f16 %.3g u; tolerance %.3g u\n",
           worst_native[SEQK_DTYPE_BF16], worst_native[SEQK_DTYPE_F16], NATIVE_TOL_ULPS);
    free(cases);
    seqk_context_destroy(cpu_ctx);
    return th_finish();
}
