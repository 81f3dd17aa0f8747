/*
 * tests/harness.h -- the test harness every test program uses.
 *
 * - Backends: every backend of the build is listed; one without a device
 *   (CUDA built, no GPU here) is listed with the reason and its cases are
 *   reported as skipped.
 * - Buffers: host arrays moved to/from the backend; outputs are poisoned
 *   (NaN) before every call, so an element the library did not write fails.
 * - Checks: relative error against float64 references (NaN never passes),
 *   counted, and a closing line "N passed, N failed, N skipped".
 *
 * The float64 references live in tests/ref and share no code with seqk.
 */
#ifndef SEQK_TEST_HARNESS_H
#define SEQK_TEST_HARNESS_H

#include "seqk.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define TH_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define TH_PRINTF(f, a)
#endif

typedef struct th_backend {
    const char *name;        /* "cpu", "cuda" */
    seqk_backend backend;
    seqk_context *ctx;       /* NULL: skipped, see skip_reason */
    char skip_reason[512];
} th_backend;

/* Initialises every backend of the build (call once; argv may select
 * "--backend cpu|cuda"). Returns the list and its length. */
int th_init(int argc, char **argv, th_backend **list);
/* Destroys the contexts, prints the closing line, returns the exit code:
 * 0 if nothing failed (and something passed), 1 if anything failed, 77 if
 * everything was skipped. */
int th_finish(void);
/* True when be has no context (no device): the case `what` is then counted
 * as skipped, with the backend's reason. Use: if (th_skipped(be, what)) return; */
bool th_skipped(const th_backend *be, const char *what);
/* The CPU thread count of be's context (0: the default); other backends ignore it. */
void th_set_threads(th_backend *be, int n);
/* "recurrent" or "parallel", for case descriptions. */
const char *th_mode_name(seqk_mode mode);

/* ---- results -------------------------------------------------------------- */
/* Records one check; prints a line for failures (and for passes with -v). */
bool th_check(bool ok, const char *fmt, ...) TH_PRINTF(2, 3);
/* Records a skipped case with the reason. */
void th_skip(const char *fmt, ...) TH_PRINTF(1, 2);
/* A check that a status is the expected one, with seqk_last_error in the log. */
bool th_check_status(seqk_status got, seqk_status want, const char *what);
/* Passes and counts a check for rel_err(out, ref) <= tol; prints the error. */
bool th_check_close(const float *out, const double *ref, size_t n, double tol, const char *fmt,
                    ...) TH_PRINTF(5, 6);
/* Same, with the denominator at least sqrt(n) * scale: for a few values (a
 * final state) whose size may happen to be small against the terms that
 * were summed into them; pass the RMS of those terms as scale. */
bool th_check_close_scaled(const float *out, const double *ref, size_t n, double scale,
                           double tol, const char *fmt, ...) TH_PRINTF(6, 7);
bool th_check_close_f(const float *out, const float *ref, size_t n, double tol, const char *fmt,
                      ...) TH_PRINTF(5, 6);

/* ||out - ref||_2 / ||ref||_2 (absolute when ref is 0); INFINITY if any
 * out is NaN or inf. */
double th_rel_err(const float *out, const double *ref, size_t n);
double th_rel_err_f(const float *out, const float *ref, size_t n);

/* ---- random inputs ---------------------------------------------------------- */
/* Seeds the generator; SEQK_TEST_SEED=n in the environment shifts every seed. */
void th_seed(uint64_t seed);
double th_uniform(double lo, double hi);
int64_t th_randint(int64_t lo, int64_t hi); /* inclusive */
void th_fill(float *x, size_t n, double lo, double hi);
/* Host allocation that the harness aborts the test on failing (tests only). */
void *th_malloc(size_t bytes);
float *th_floats(size_t n);           /* uninitialised */
double *th_doubles(size_t n);         /* zeroed */
void th_poison(float *x, size_t n);   /* NaN fill */

/* ---- memory on a backend ------------------------------------------------------ */
/* A copy of host[n] on the backend (host may be NULL: poisoned buffer). */
void *th_upload(th_backend *be, const void *host, size_t bytes);
/* A poisoned float buffer of n elements on the backend. */
float *th_poisoned(th_backend *be, size_t n);
/* Copies n bytes from the backend to host. */
void th_download(th_backend *be, void *host, const void *dev, size_t bytes);
void th_free(th_backend *be, void *dev);

#endif
