/*
 * bench/crossover.c -- where one op overtakes another as a size grows: the
 * rule and the verdict text shared by the summaries of the prefill, decode
 * and memory suites (the same rule as the linear suite's crossover records).
 *
 * The rule: with ratio[i] = reference / candidate at the ascending sizes
 * xs[i], the crossover is the smallest xs[first] from which the candidate is
 * better at every larger size measured (so one noisy point below does not
 * move it, and a candidate that loses ground at the top gets no crossover).
 * Between xs[first-1] and xs[first] the crossing is interpolated linearly in
 * (log x, log ratio): times and sizes here are power laws of x, near enough.
 */
#include "bench.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bench_crossover bench_find_crossover(const int64_t *xs, const double *ratio, int n,
                                     const char *candidate, const char *reference,
                                     const char *better, const char *x_name,
                                     const char *ratio_name, char *text, size_t size)
{
    bench_crossover cx = {n, 0.0};
    while (cx.first > 0 && ratio[cx.first - 1] > 1.0) cx.first--;

    /* snprintf returns what it would have written: clamp so that len stays
     * inside text (a long list is cut, not overrun) */
#define APPEND(...)                                                                  \
    do {                                                                             \
        if (len < size) {                                                            \
            const int w_ = snprintf(text + len, size - len, __VA_ARGS__);            \
            len = w_ < 0 ? size : len + (size_t)w_ > size ? size : len + (size_t)w_; \
        }                                                                            \
    } while (0)
    size_t len = 0;
    text[0] = '\0';
    if (n == 0) {
        APPEND("nothing measured");
        return cx;
    }
    if (cx.first == n) {
        bool any = false;
        for (int i = 0; i < n; i++) any = any || ratio[i] > 1.0;
        if (!any) {
            APPEND("%s %s at no %s measured", candidate, better, x_name);
        } else {
            /* noise, or a candidate that loses ground as x grows */
            APPEND("%s not %s at the largest %s measured, %s only at %s =", candidate, better,
                   x_name, better, x_name);
            for (int i = 0; i < n; i++)
                if (ratio[i] > 1.0) APPEND(" %lld", (long long)xs[i]);
        }
    } else if (cx.first == 0) {
        APPEND("%s %s than %s from %s = %lld (%s)", candidate, better, reference, x_name,
               (long long)xs[0], n == 1 ? "the only one measured" : "every one measured");
    } else {
        const double x0 = log((double)xs[cx.first - 1]), x1 = log((double)xs[cx.first]);
        const double y0 = log(ratio[cx.first - 1]), y1 = log(ratio[cx.first]);
        const double x = y1 != y0 ? x0 + (0.0 - y0) * (x1 - x0) / (y1 - y0) : x1;
        cx.crossing = exp(x);
        APPEND("%s %s than %s from %s = %lld (crossing near %s ~ %.0f)", candidate, better,
               reference, x_name, (long long)xs[cx.first], x_name, cx.crossing);
    }
    APPEND("; %s:", ratio_name);
    for (int i = 0; i < n; i++) APPEND(" %s=%lld %.3g", x_name, (long long)xs[i], ratio[i]);
#undef APPEND
    return cx;
}

/* A list of strings kept until the process ends (a few hundred names at most). */
static char **g_names;
static int g_n_names, g_cap_names;

const char *bench_keep_name(const char *text)
{
    if (g_n_names == g_cap_names) {
        g_cap_names = g_cap_names ? 2 * g_cap_names : 64;
        g_names = realloc(g_names, (size_t)g_cap_names * sizeof *g_names);
        if (!g_names) bench_die("cannot allocate the list of record names");
    }
    const size_t n = strlen(text) + 1;
    char *copy = malloc(n);
    if (!copy) bench_die("cannot allocate a record name");
    memcpy(copy, text, n);
    g_names[g_n_names++] = copy;
    return copy;
}

bench_record bench_crossover_record(const bench_backend *be, const char *suite, const char *label,
                                    int64_t B, int64_t H, int64_t K, int64_t V)
{
    char name[160];
    snprintf(name, sizeof name, "%s B=%lld H=%lld K=%lld V=%lld", label, (long long)B,
             (long long)H, (long long)K, (long long)V);
    bench_record r = bench_record_init("crossover");
    r.suite = suite;
    r.name = bench_keep_name(name);
    r.backend = be->name;
    r.device = be->device;
    r.threads = bench_record_threads(be);
    r.shape.B = B;
    r.shape.H = H;
    r.shape.K = K;
    r.shape.V = V;
    r.shape.N = B;
    return r;
}
