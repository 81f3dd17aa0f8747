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

/* The warm-up and the sizing of one timed call: *t the fastest try's seconds,
 * *calls the calls per sample, *probes the extra untimed tries. */
static seqk_status size_samples(seqk_context *ctx, bench_timed_fn fn, void *arg, int warmup,
                                double *t_out, int *calls_out, int *probes_out)
{
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
    *t_out = t, *calls_out = calls, *probes_out = probes;
    return SEQK_SUCCESS;
}

/* Repeats cut to a budget: about budget_s seconds of samples costing
 * per_repeat_s each, never fewer than min_repeats (nor more than repeats). */
static int fit_repeats(int repeats, int min_repeats, double budget_s, double per_repeat_s)
{
    if (budget_s > 0.0 && per_repeat_s * repeats > budget_s) {
        const int fit = (int)(budget_s / per_repeat_s);
        repeats = fit > min_repeats ? fit : min_repeats < repeats ? min_repeats : repeats;
        if (repeats < 1) repeats = 1;
    }
    return repeats;
}

/* The p-quantile of sorted x[0..n), linear between order statistics. */
static double quantile(const double *x, int n, double p)
{
    const double at = p * (double)(n - 1);
    const int i = (int)at;
    return i + 1 < n ? x[i] + (at - (double)i) * (x[i + 1] - x[i]) : x[n - 1];
}

/* Sorts times[0..n) and fills the median, min and max. */
static void summarise(double *times, int n, bench_stats *out)
{
    qsort(times, (size_t)n, sizeof *times, compare_double);
    out->min_s = times[0];
    out->max_s = times[n - 1];
    out->median_s = n % 2 ? times[n / 2] : 0.5 * (times[n / 2 - 1] + times[n / 2]);
    out->repeats = n;
}

seqk_status bench_time_budget(seqk_context *ctx, bench_timed_fn fn, void *arg, int warmup,
                              int repeats, int min_repeats, double budget_s, bench_stats *out)
{
    if (warmup < 1) warmup = 1; /* the warm-up also sizes the samples */
    if (repeats < 1) repeats = 1;
    double t;
    int calls, probes;
    seqk_status st = size_samples(ctx, fn, arg, warmup, &t, &calls, &probes);
    if (st != SEQK_SUCCESS) return st;
    repeats = fit_repeats(repeats, min_repeats, budget_s, t * calls);

    double *times = malloc((size_t)repeats * sizeof *times); /* [repeats] seconds per call */
    if (!times) bench_die("cannot allocate %d timings", repeats);
    for (int r = 0; r < repeats; r++) {
        if ((st = sample(ctx, fn, arg, calls, &times[r])) != SEQK_SUCCESS) {
            free(times);
            return st;
        }
    }
    summarise(times, repeats, out);
    out->warmup = warmup + probes;
    out->calls_per_repeat = calls;
    free(times);
    return SEQK_SUCCESS;
}

seqk_status bench_time_paired(seqk_context *ctx, bench_timed_fn fa, void *aa, bench_timed_fn fb,
                              void *ab, int warmup, int repeats, int min_repeats, double budget_s,
                              bench_stats *out_a, bench_stats *out_b, double ratio[3])
{
    if (warmup < 1) warmup = 1;
    if (repeats < 1) repeats = 1;
    double ta, tb;
    int ca, cb, pa, pb;
    seqk_status st = size_samples(ctx, fa, aa, warmup, &ta, &ca, &pa);
    if (st == SEQK_SUCCESS) st = size_samples(ctx, fb, ab, warmup, &tb, &cb, &pb);
    if (st != SEQK_SUCCESS) return st;
    repeats = fit_repeats(repeats, min_repeats, budget_s, ta * ca + tb * cb);

    double *times = malloc((size_t)repeats * 3 * sizeof *times); /* [3][repeats]: a, b, a / b */
    if (!times) bench_die("cannot allocate %d timings", 3 * repeats);
    double *a_s = times, *b_s = times + repeats, *q = times + 2 * repeats;
    for (int r = 0; r < repeats; r++) {
        /* a then b, b then a: neither always follows the other */
        if (r % 2 == 0) {
            if ((st = sample(ctx, fa, aa, ca, &a_s[r])) == SEQK_SUCCESS)
                st = sample(ctx, fb, ab, cb, &b_s[r]);
        } else {
            if ((st = sample(ctx, fb, ab, cb, &b_s[r])) == SEQK_SUCCESS)
                st = sample(ctx, fa, aa, ca, &a_s[r]);
        }
        if (st != SEQK_SUCCESS) {
            free(times);
            return st;
        }
        q[r] = b_s[r] > 0.0 ? a_s[r] / b_s[r] : 0.0;
    }
    summarise(a_s, repeats, out_a);
    summarise(b_s, repeats, out_b);
    bench_stats qs;
    summarise(q, repeats, &qs); /* sorts q */
    ratio[0] = quantile(q, repeats, 0.25);
    ratio[1] = qs.median_s;
    ratio[2] = quantile(q, repeats, 0.75);
    out_a->warmup = warmup + pa, out_b->warmup = warmup + pb;
    out_a->calls_per_repeat = ca, out_b->calls_per_repeat = cb;
    free(times);
    return SEQK_SUCCESS;
}
