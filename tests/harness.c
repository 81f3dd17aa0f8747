/* tests/harness.c -- see harness.h. */
#include "harness.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int n_pass, n_fail, n_skip;
static bool verbose;
static th_backend backends[2];
static int n_backends;

static void vlog(const char *tag, const char *fmt, va_list ap)
{
    printf("%s ", tag);
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
}

bool th_check(bool ok, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (ok) {
        n_pass++;
        if (verbose) vlog("ok  ", fmt, ap);
    } else {
        n_fail++;
        vlog("FAIL", fmt, ap);
    }
    va_end(ap);
    return ok;
}

void th_skip(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    n_skip++;
    if (verbose) vlog("skip", fmt, ap);
    va_end(ap);
}

bool th_check_status(seqk_status got, seqk_status want, const char *what)
{
    return th_check(got == want, "%s: status %d (%s), want %d (%s); message: %s", what, (int)got,
                    seqk_status_string(got), (int)want, seqk_status_string(want),
                    seqk_last_error());
}

double th_rel_err(const float *out, const double *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(out[i])) return INFINITY;
        double d = (double)out[i] - ref[i];
        num += d * d;
        den += ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

double th_rel_err_f(const float *out, const float *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(out[i]) || !isfinite(ref[i])) return INFINITY;
        double d = (double)out[i] - ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* Records e <= tol for the check named by fmt, ap. */
static bool check_err(double e, double tol, const char *fmt, va_list ap)
{
    char what[512];
    vsnprintf(what, sizeof what, fmt, ap);
    return th_check(e <= tol, "%s: rel err %.3g (tol %.1g)", what, e, tol);
}

bool th_check_close(const float *out, const double *ref, size_t n, double tol, const char *fmt,
                    ...)
{
    va_list ap;
    va_start(ap, fmt);
    const bool ok = check_err(th_rel_err(out, ref, n), tol, fmt, ap);
    va_end(ap);
    return ok;
}

bool th_check_close_scaled(const float *out, const double *ref, size_t n, double scale,
                           double tol, const char *fmt, ...)
{
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(out[i])) return th_check(false, "%s: non-finite output [%zu]", what, i);
        double d = (double)out[i] - ref[i];
        num += d * d;
        den += ref[i] * ref[i];
    }
    den = fmax(den, (double)n * scale * scale);
    double e = den > 0 ? sqrt(num / den) : sqrt(num);
    return th_check(e <= tol, "%s: rel err %.3g (tol %.1g, scale %.3g)", what, e, tol, scale);
}

bool th_check_close_f(const float *out, const float *ref, size_t n, double tol, const char *fmt,
                      ...)
{
    va_list ap;
    va_start(ap, fmt);
    const bool ok = check_err(th_rel_err_f(out, ref, n), tol, fmt, ap);
    va_end(ap);
    return ok;
}

/* ---- random ----------------------------------------------------------------- */
static uint64_t rng = 0x9E3779B97F4A7C15ull;
/* SEQK_TEST_SEED=n shifts every test's seed, to run the same cases on other data. */
void th_seed(uint64_t seed)
{
    const char *env = getenv("SEQK_TEST_SEED");
    if (env && *env) seed += strtoull(env, NULL, 10) * 7919u;
    rng = seed * 0x9E3779B97F4A7C15ull + 1;
}
static uint64_t next_u64(void)
{
    /* xorshift64* */
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545F4914F6CDD1Dull;
}
double th_uniform(double lo, double hi)
{
    return lo + (hi - lo) * ((double)(next_u64() >> 11) * (1.0 / 9007199254740992.0));
}
int64_t th_randint(int64_t lo, int64_t hi)
{
    return lo + (int64_t)(next_u64() % (uint64_t)(hi - lo + 1));
}
void th_fill(float *x, size_t n, double lo, double hi)
{
    for (size_t i = 0; i < n; i++) x[i] = (float)th_uniform(lo, hi);
}

void *th_malloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "test: out of host memory (%zu bytes)\n", bytes);
        exit(1);
    }
    return p;
}
float *th_floats(size_t n) { return th_malloc(n * sizeof(float)); }
double *th_doubles(size_t n)
{
    double *p = th_malloc(n * sizeof(double));
    memset(p, 0, n * sizeof(double));
    return p;
}
void th_poison(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] = NAN;
}

/* ---- backends ---------------------------------------------------------------- */
static void must(seqk_status st, const char *what)
{
    if (st != SEQK_SUCCESS) {
        fprintf(stderr, "test harness: %s failed: %s: %s\n", what, seqk_status_string(st),
                seqk_last_error());
        exit(1);
    }
}

void *th_upload(th_backend *be, const void *host, size_t bytes)
{
    void *p = NULL;
    if (bytes == 0) bytes = 4;
    must(seqk_malloc(be->ctx, bytes, &p), "seqk_malloc");
    if (host) {
        must(seqk_memcpy(be->ctx, p, host, bytes, SEQK_COPY_HOST_TO_BACKEND), "seqk_memcpy");
    } else {
        float *tmp = th_floats(bytes / sizeof(float) + 1);
        th_poison(tmp, bytes / sizeof(float) + 1);
        must(seqk_memcpy(be->ctx, p, tmp, bytes, SEQK_COPY_HOST_TO_BACKEND), "seqk_memcpy");
        free(tmp);
    }
    return p;
}

float *th_poisoned(th_backend *be, size_t n) { return th_upload(be, NULL, n * sizeof(float)); }

void th_download(th_backend *be, void *host, const void *dev, size_t bytes)
{
    if (bytes == 0) return;
    must(seqk_memcpy(be->ctx, host, dev, bytes, SEQK_COPY_BACKEND_TO_HOST), "seqk_memcpy");
}

void th_free(th_backend *be, void *dev) { must(seqk_free(be->ctx, dev), "seqk_free"); }

int th_init(int argc, char **argv, th_backend **list)
{
    const char *only = getenv("SEQK_TEST_BACKEND");
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-v")) verbose = true;
        if (!strcmp(argv[i], "--backend") && i + 1 < argc) only = argv[++i];
    }
    const char *names[2] = {"cpu", "cuda"};
    const seqk_backend kinds[2] = {SEQK_BACKEND_CPU, SEQK_BACKEND_CUDA};
    n_backends = 0;
    for (int i = 0; i < 2; i++) {
        if (only && *only && strcmp(only, names[i]) && strcmp(only, "all")) continue;
        th_backend *be = &backends[n_backends++];
        be->name = names[i];
        be->backend = kinds[i];
        be->ctx = NULL;
        be->skip_reason[0] = 0;
        seqk_status st = seqk_context_create(&be->ctx, kinds[i], 0);
        if (st != SEQK_SUCCESS) {
            snprintf(be->skip_reason, sizeof be->skip_reason, "%s backend: %s (%s)", names[i],
                     seqk_status_string(st), seqk_last_error());
            be->ctx = NULL;
            printf("backend %s: skipped: %s\n", names[i], be->skip_reason);
        } else {
            int threads = 0;
            seqk_context_threads(be->ctx, &threads);
            printf("backend %s: ready (%d threads)\n", names[i], threads);
        }
    }
    *list = backends;
    return n_backends;
}

int th_finish(void)
{
    for (int i = 0; i < n_backends; i++) seqk_context_destroy(backends[i].ctx);
    for (int i = 0; i < n_backends; i++)
        if (backends[i].skip_reason[0])
            printf("skipped every %s case: %s\n", backends[i].name, backends[i].skip_reason);
    printf("%d passed, %d failed, %d skipped\n", n_pass, n_fail, n_skip);
    fflush(stdout);
    if (n_fail) return 1;
    if (!n_pass && n_skip) return 77;
    return n_pass ? 0 : 1;
}

bool th_skipped(const th_backend *be, const char *what)
{
    if (be->ctx) return false;
    th_skip("%s: %s", what, be->skip_reason);
    return true;
}

void th_set_threads(th_backend *be, int n)
{
    if (be->backend == SEQK_BACKEND_CPU) seqk_context_set_threads(be->ctx, n);
}

const char *th_mode_name(seqk_mode mode)
{
    return mode == SEQK_MODE_PARALLEL ? "parallel" : "recurrent";
}
