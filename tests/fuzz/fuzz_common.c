/* tests/fuzz/fuzz_common.c -- see fuzz_common.h. */
#include "fuzz_common.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- decoding ----------------------------------------------------------------- */

unsigned fz_byte(fz_in *in) { return in->i < in->n ? in->d[in->i++] : 0u; }

int64_t fz_pick(fz_in *in, int64_t lo, int64_t hi)
{
    return lo + (int64_t)(fz_byte(in) % (unsigned)(hi - lo + 1));
}

bool fz_chance(fz_in *in, unsigned per256) { return fz_byte(in) < per256; }

float fz_scale(fz_in *in, int64_t K, bool *finite)
{
    *finite = true;
    switch (fz_byte(in) % 16) {
    case 0: return 0.0f;
    case 1: return -0.5f;
    case 2: return 2.0f;
    case 3: *finite = false; return NAN;
    case 4: *finite = false; return INFINITY;
    case 5: *finite = false; return -INFINITY;
    default: return (float)(1.0 / sqrt((double)K));
    }
}

unsigned fz_flags(fz_in *in, unsigned known, bool *ok)
{
    unsigned f = fz_byte(in);
    *ok = true;
    if (fz_chance(in, 24)) {
        unsigned extra = 1u << fz_pick(in, 0, 31);
        f |= extra;
        if (extra & ~known) *ok = false;
        return f & (known | extra);
    }
    return f & known;
}

int fz_mode(fz_in *in, bool *ok)
{
    unsigned b = fz_byte(in);
    *ok = true;
    if (b >= 248) {
        *ok = false;
        return b == 255 ? -1 : 2 + (int)(b & 3);
    }
    return (int)(b & 1);
}

int fz_bwd_mode(fz_in *in, bool *bwd, bool *ok)
{
    bool t;
    *bwd = fz_chance(in, 100);
    const int mode = fz_mode(in, &t);
    if (!*bwd) *ok &= t;
    return mode;
}

fz_dims fz_dims_lin(fz_in *in, bool *ok)
{
    fz_dims d;
    d.B = fz_chance(in, 6) ? 0 : fz_pick(in, 1, 3);
    d.T = fz_chance(in, 6) ? -2 : fz_pick(in, 0, 17);
    d.H = fz_pick(in, 1, 3);
    d.K = fz_pick(in, 1, 5);
    if (fz_chance(in, 4)) d.K = fz_chance(in, 128) ? 0 : 1025;
    d.V = fz_chance(in, 6) ? 0 : fz_pick(in, 1, 5);
    *ok &= d.B >= 1 && d.T >= 0 && d.K >= 1 && d.K <= 1024 && d.V >= 1;
    return d;
}

int64_t fz_chunk(fz_in *in, bool *ok)
{
    int64_t chunk = fz_pick(in, 0, 19);
    if (fz_chance(in, 6)) chunk = fz_chance(in, 128) ? -1 : 1025;
    *ok &= chunk >= 0 && chunk <= 1024;
    return chunk;
}

/* ---- data -------------------------------------------------------------------------- */

static uint64_t rng_state;

void fz_seed_data(fz_in *in)
{
    uint64_t s = 0;
    for (int i = 0; i < 4; i++) s = s << 8 | fz_byte(in);
    rng_state = s * 0x9E3779B97F4A7C15ull + 1;
}

static uint64_t next_u64(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double fz_unif(double lo, double hi)
{
    return lo + (hi - lo) * ((double)(next_u64() >> 11) * (1.0 / 9007199254740992.0));
}

/* ---- buffers --------------------------------------------------------------------- */

enum { MAX_BUFS = 64 };
typedef struct {
    void *p;
    size_t bytes;
    void *snap;
    bool written;
} buf;
static buf bufs[MAX_BUFS];
static int n_bufs;
static void *ws_buf;
static double *dbufs[MAX_BUFS];
static int n_dbufs;
static seqk_context *ws_ctx;

void fz_reset(void)
{
    for (int i = 0; i < n_bufs; i++) {
        free(bufs[i].p);
        free(bufs[i].snap);
    }
    n_bufs = 0;
    for (int i = 0; i < n_dbufs; i++) free(dbufs[i]);
    n_dbufs = 0;
    if (ws_ctx) seqk_context_set_workspace(ws_ctx, NULL, 0);
    free(ws_buf);
    ws_buf = NULL;
    ws_ctx = NULL;
}

static void *new_buf(size_t bytes, bool written)
{
    if (n_bufs == MAX_BUFS) fz_fail("harness: more than %d buffers", MAX_BUFS);
    void *p = malloc(bytes ? bytes : 1);
    if (!p) fz_fail("harness: cannot allocate %zu bytes", bytes);
    bufs[n_bufs++] = (buf){p, bytes, NULL, written};
    return p;
}

float *fz_input(size_t n, double lo, double hi)
{
    float *x = new_buf(n * sizeof(float), false);
    for (size_t i = 0; i < n; i++) x[i] = (float)fz_unif(lo, hi);
    return x;
}

float *fz_output(size_t n)
{
    float *x = new_buf(n * sizeof(float), true);
    memset(x, 0xFF, n * sizeof(float));
    return x;
}

int32_t *fz_ints(size_t n) { return new_buf(n * sizeof(int32_t), false); }

void fz_mark_written(const void *p)
{
    for (int i = 0; i < n_bufs; i++)
        if ((const char *)p >= (const char *)bufs[i].p &&
            (const char *)p < (const char *)bufs[i].p + (bufs[i].bytes ? bufs[i].bytes : 1))
            bufs[i].written = true;
}

int32_t *fz_cu_seqlens(fz_in *in, int64_t T, int64_t *N, bool *ok)
{
    const int64_t n = fz_pick(in, 1, 4);
    int32_t *cu = fz_ints((size_t)n + 1);
    cu[0] = 0;
    for (int64_t i = 1; i < n; i++) {
        int32_t b = (int32_t)fz_pick(in, 0, T);
        cu[i] = b < cu[i - 1] ? cu[i - 1] : b; /* non-decreasing */
    }
    cu[n] = (int32_t)T;
    *N = n;
    *ok = true;
    switch (fz_chance(in, 64) ? fz_pick(in, 0, 6) : 7) {
    case 0: cu[0] = (int32_t)fz_pick(in, 1, 3); *ok = false; break;            /* first != 0 */
    case 1: cu[n] = (int32_t)(T + fz_pick(in, 1, 3)); *ok = false; break;      /* last > T */
    case 2:                                                                     /* last < T */
        if (T > 0) { cu[n] = (int32_t)(T - 1); *ok = false; }
        break;
    case 3:                                                                     /* decreasing */
        if (n >= 2 && cu[n] > 0) { cu[1] = cu[n] + 1; *ok = false; }
        break;
    case 4: if (n >= 2) { cu[1] = -(int32_t)fz_pick(in, 1, 100); *ok = false; } break;
    case 5: *N = 0; *ok = false; break;                                        /* N < 1 */
    case 6: cu[n] = INT32_MIN; *ok = false; break;                              /* far out */
    default: break;
    }
    return cu;
}

const int32_t *fz_varlen(fz_in *in, int64_t B, int64_t T, int64_t *N, bool *ok)
{
    *N = B > 0 ? B : 0;
    if (!fz_chance(in, 80)) return NULL;
    bool t;
    int32_t *cu = fz_cu_seqlens(in, T > 0 ? T : 0, N, &t);
    *ok &= t && B == 1;
    return cu;
}

const void *fz_maybe_null(fz_in *in, const void *p, bool required, bool *ok)
{
    if (!fz_chance(in, 8)) return p;
    if (required) *ok = false;
    return NULL;
}

int fz_alias_forward(fz_in *in, bool full, float **o, const float *x, const float *y, size_t ny,
                     const float *s_in, float **s_out, size_t ns, bool *ok)
{
    const int c = (int)fz_pick(in, 0, 15);
    switch (c) {
    case 0:
        if (s_in) *s_out = (float *)s_in, fz_mark_written(s_in);
        break;
    case 1:
        if (full) *o = (float *)x, *ok = false;
        break;
    case 2:
        if (full && *s_out && ns) *s_out = *o, *ok = false;
        break;
    case 3:
        if (s_in && *s_out && ns >= 2) *s_out = (float *)s_in + 1, *ok = false;
        break;
    case 4:
        if (full && y && ny >= 2) *o = (float *)y + 1, *ok = false;
        break;
    default: break;
    }
    return c;
}

int fz_alias_backward(fz_in *in, bool full, float **dq, float **dk, const float *q, size_t nq,
                      float **dv, const float *dout, size_t nv, const float *s_in,
                      float **ds_in, size_t ns, bool *ok)
{
    const int c = (int)fz_pick(in, 0, 15);
    switch (c) {
    case 0:
        if (full && nq) *dk = *dq, *ok = false;
        break;
    case 1:
        if (s_in && *ds_in && ns) *ds_in = (float *)s_in, *ok = false;
        break;
    case 2:
        if (full && nv) *dv = (float *)dout, *ok = false;
        break;
    case 3:
        if (full && q && nq >= 2) *dq = (float *)q + 1, *ok = false;
        break;
    default: break;
    }
    return c;
}

/* ---- the oracle ------------------------------------------------------------------- */

void fz_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "seqk fuzz finding: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    abort();
}

void fz_snapshot(void)
{
    for (int i = 0; i < n_bufs; i++) {
        free(bufs[i].snap);
        bufs[i].snap = malloc(bufs[i].bytes ? bufs[i].bytes : 1);
        if (!bufs[i].snap) fz_fail("harness: cannot allocate a snapshot");
        memcpy(bufs[i].snap, bufs[i].p, bufs[i].bytes);
    }
}

bool fz_outcome(const char *fn, seqk_status st, bool valid)
{
    if (valid && st != SEQK_SUCCESS)
        fz_fail("%s: a valid call failed with status %d (%s): %s", fn, (int)st,
                seqk_status_string(st), seqk_last_error());
    if (!valid && st == SEQK_SUCCESS) fz_fail("%s: an invalid call succeeded", fn);
    if (st == SEQK_SUCCESS) {
        for (int i = 0; i < n_bufs; i++)
            if (!bufs[i].written && memcmp(bufs[i].p, bufs[i].snap, bufs[i].bytes))
                fz_fail("%s: succeeded but changed input buffer %d (%zu bytes)", fn, i,
                        bufs[i].bytes);
        return true;
    }
    const char *msg = seqk_last_error();
    if (strncmp(msg, fn, strlen(fn)) != 0)
        fz_fail("%s: failed (status %d) with a message that does not name it: \"%s\"", fn,
                (int)st, msg);
    for (int i = 0; i < n_bufs; i++)
        if (memcmp(bufs[i].p, bufs[i].snap, bufs[i].bytes))
            fz_fail("%s: failed (status %d: %s) but changed buffer %d (%zu bytes)", fn, (int)st,
                    msg, i, bufs[i].bytes);
    return false;
}

bool fz_forward_outcome(const char *fn, seqk_status st, bool valid, const float *o,
                        const double *ro, size_t no, const float *s_out, const double *rs,
                        size_t ns)
{
    if (!fz_outcome(fn, st, valid)) return false;
    fz_close("o", o, ro, no, 5e-4, 1e-2);
    if (s_out) fz_close("state_out", s_out, rs, ns, 5e-4, 1e-2);
    return true;
}

void fz_close(const char *what, const float *out, const double *ref, size_t n, double tol,
              double floor)
{
    double num = 0, den = 0;
    if (!out) return; /* an optional output not asked for */
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(out[i])) fz_fail("%s[%zu] = %g is not finite (ref %g)", what, i,
                                       (double)out[i], ref[i]);
        const double d = (double)out[i] - ref[i];
        num += d * d;
        den += ref[i] * ref[i];
    }
    if (!isfinite(den)) return; /* the reference itself overflowed: nothing to compare */
    const double fl = floor * floor * (double)n;
    const double dd = den > fl ? den : fl;
    const double e = dd > 0 ? sqrt(num / dd) : sqrt(num);
    if (!(e <= tol)) fz_fail("%s: rel err %.3g > %.3g (n=%zu, |ref|=%.3g)", what, e, tol, n,
                             sqrt(den));
}

/* ---- context ---------------------------------------------------------------------- */

seqk_context *fz_ctx(fz_in *in)
{
    static seqk_context *ctx;
    if (!ctx && seqk_context_create(&ctx, SEQK_BACKEND_CPU, 0) != SEQK_SUCCESS)
        fz_fail("harness: cannot create a CPU context: %s", seqk_last_error());
    seqk_context_set_threads(ctx, (int)fz_pick(in, 1, 3));
    return ctx;
}

void fz_workspace(fz_in *in, seqk_context *ctx, seqk_status query_status, size_t bytes)
{
    if (query_status != SEQK_SUCCESS || !fz_chance(in, 128) || bytes == 0) return;
    if (bytes > ((size_t)1 << 30)) fz_fail("workspace query: %zu bytes for a tiny call", bytes);
    const size_t round = (bytes + 255) / 256 * 256;
    ws_buf = aligned_alloc(256, round);
    if (!ws_buf) fz_fail("harness: cannot allocate the workspace");
    if (seqk_context_set_workspace(ctx, ws_buf, bytes) != SEQK_SUCCESS)
        fz_fail("harness: set_workspace: %s", seqk_last_error());
    ws_ctx = ctx;
}

double fz_rms(const double *x, size_t n)
{
    double s = 0;
    if (!x || !n) return 0;
    for (size_t i = 0; i < n; i++) s += x[i] * x[i];
    return sqrt(s / (double)n);
}

double *fz_doubles(size_t n)
{
    if (n_dbufs == MAX_BUFS) fz_fail("harness: more than %d double buffers", MAX_BUFS);
    double *x = calloc(n ? n : 1, sizeof(double));
    if (!x) fz_fail("harness: cannot allocate %zu doubles", n);
    dbufs[n_dbufs++] = x;
    return x;
}

double *fz_to_double(const float *x, size_t n)
{
    if (!x) return NULL;
    double *d = fz_doubles(n);
    for (size_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}
