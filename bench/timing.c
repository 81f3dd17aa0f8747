/* bench/timing.c -- the clock, and warm-up + median of repeats of a timed call. */
#include "bench.h"

#include <stdlib.h>
#include <time.h>

/* Most calls one timed sample may batch (see BENCH_MIN_SAMPLE_S). */
#define MAX_CALLS_PER_SAMPLE 1000
/* Sizing the samples: a call under SIZING_PROBE_BELOW_S seconds is tried up
 * to SIZING_PROBES more times (untimed, counted as warm-up) and the fastest
 * try sizes the samples, so that one warm-up call slowed by the scheduler
 * (a shared machine) does not leave a microsecond call timed one at a time. */
#define SIZING_PROBES 3
#define SIZING_PROBE_BELOW_S 10e-3

double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int compare_double(const void *x, const void *y)
{
    const double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* One sample: `calls` back-to-back calls of fn, fenced by synchronisations;
 * writes the seconds per call. */
static seqk_status sample(seqk_context *ctx, bench_timed_fn fn, void *arg, int calls,
                          double *seconds_per_call)
{
    seqk_status st;
    if (ctx && (st = seqk_context_synchronize(ctx)) != SEQK_SUCCESS) return st;
    const double t0 = bench_now();
    for (int i = 0; i < calls; i++)
        if ((st = fn(arg)) != SEQK_SUCCESS) return st;
    if (ctx && (st = seqk_context_synchronize(ctx)) != SEQK_SUCCESS) return st;
    *seconds_per_call = (bench_now() - t0) / calls;
    return SEQK_SUCCESS;
}

seqk_status bench_time(seqk_context *ctx, bench_timed_fn fn, void *arg, int warmup, int repeats,
                       bench_stats *out)
{
    return bench_time_budget(ctx, fn, arg, warmup, repeats, repeats, 0.0, out);
}

seqk_status bench_time_budget(seqk_context *ctx, bench_timed_fn fn, void *arg, int warmup,
                              int repeats, int min_repeats, double budget_s, bench_stats *out)
{
    if (warmup < 1) warmup = 1; /* the warm-up also sizes the samples */
    if (repeats < 1) repeats = 1;
    seqk_status st;
    double t = 0.0;
    for (int i = 0; i < warmup; i++)
        if ((st = sample(ctx, fn, arg, 1, &t)) != SEQK_SUCCESS) return st;

    int probes = 0;
    for (double tp; probes < SIZING_PROBES && t < SIZING_PROBE_BELOW_S; probes++) {
        if ((st = sample(ctx, fn, arg, 1, &tp)) != SEQK_SUCCESS) return st;
        if (tp < t) t = tp;
    }

    int calls = 1;
    if (t < BENCH_MIN_SAMPLE_S) {
        const double want = t > 0.0 ? BENCH_MIN_SAMPLE_S / t : MAX_CALLS_PER_SAMPLE;
        calls = want >= MAX_CALLS_PER_SAMPLE ? MAX_CALLS_PER_SAMPLE : (int)want + 1;
    }
    if (budget_s > 0.0 && t * calls * repeats > budget_s) {
        /* long calls: fewer samples, never fewer than min_repeats */
        const int fit = (int)(budget_s / (t * calls));
        repeats = fit > min_repeats ? fit : min_repeats < repeats ? min_repeats : repeats;
        if (repeats < 1) repeats = 1;
    }

    double *times = malloc((size_t)repeats * sizeof *times); /* [repeats] seconds per call */
    if (!times) bench_die("cannot allocate %d timings", repeats);
    for (int r = 0; r < repeats; r++) {
        if ((st = sample(ctx, fn, arg, calls, &times[r])) != SEQK_SUCCESS) {
            free(times);
            return st;
        }
    }
    qsort(times, (size_t)repeats, sizeof *times, compare_double);
    out->min_s = times[0];
    out->max_s = times[repeats - 1];
    out->median_s = repeats % 2 ? times[repeats / 2]
                                : 0.5 * (times[repeats / 2 - 1] + times[repeats / 2]);
    out->warmup = warmup + probes;
    out->repeats = repeats;
    out->calls_per_repeat = calls;
    free(times);
    return SEQK_SUCCESS;
}
