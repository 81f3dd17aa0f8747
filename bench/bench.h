/*
 * bench/bench.h -- internal interface of seqk-bench, seqk's benchmark program.
 *
 * How the program runs (main.c):
 *   1. parse the command line (bench_options);
 *   2. open one context per selected backend (bench_backend); a backend
 *      without a device is reported as skipped, with the library's reason;
 *   3. ask every selected suite (the suite table in main.c) to add its cases
 *      for each backend to a plan (bench_plan), so the total is known up front
 *      for the progress lines;
 *   4. per backend: measure the ceilings (ceilings.c), then run that
 *      backend's cases; each case fills a bench_record, which report.c turns
 *      into a table row on stdout and a line of JSON and of CSV under --out.
 *
 * Adding a suite: write suite_NAME.c with a bench_plan_fn that adds cases;
 * each case's bench_case_fn allocates its buffers on the backend
 * (buffers.c), times the op with bench_time (timing.c), and fills in the
 * bytes and flops it counts and the name of the ceiling that bounds it
 * ("copy", "sgemm_large" / "sgemm_64"). Then add a row to the suite table in
 * main.c. A suite may also have a finish function, run after all its cases
 * on a backend, that reports summary records over them (the linear suite's
 * "crossover" records). Units: seconds, bytes, GB/s = 1e9 bytes/s, GFLOP/s =
 * 1e9 flop/s.
 */
#ifndef SEQK_BENCH_H
#define SEQK_BENCH_H

#include "seqk.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#if defined(__GNUC__)
#define BENCH_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define BENCH_PRINTF(f, a)
#endif

/* ------------------------------------------------------------------------ */
/* Options                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct bench_options {
    const char *suite;   /* a suite's name, or "all" */
    const char *backend; /* "cpu", "cuda" or "all" */
    int threads;         /* CPU threads; 0 = the context's default (OpenMP's maximum) */
    int repeats;         /* timed repeats per measurement (median, min, max over them) */
    int warmup;          /* untimed calls before the repeats */
    bool quick;          /* small sizes: a smoke test of a few seconds */
    const char *case_filter; /* run only cases whose name contains it (NULL: all) */
    const char *out_dir; /* where seqk-bench.jsonl and seqk-bench.csv go */
} bench_options;

/* ------------------------------------------------------------------------ */
/* Backends and their ceilings                                               */
/* ------------------------------------------------------------------------ */

#define BENCH_MAX_CEILINGS 8

/* One roofline ceiling measured in this run, e.g. {"copy", "GB/s", 21.3}. */
typedef struct bench_ceiling {
    const char *name; /* "copy", "sgemm_large", "sgemm_64" */
    const char *unit; /* "GB/s" or "GFLOP/s" */
    double value;
} bench_ceiling;

typedef struct bench_backend {
    seqk_backend backend;
    const char *name;    /* "cpu" or "cuda" */
    int device;          /* CUDA device ordinal; 0 for the CPU */
    seqk_context *ctx;
    int threads;         /* CPU threads: the context's, used by the bench's own loops too */
    bench_ceiling ceilings[BENCH_MAX_CEILINGS];
    int n_ceilings;
} bench_backend;

/* Records threads: the CPU thread count, 0 on CUDA (not applicable). */
int bench_record_threads(const bench_backend *be);

/* ------------------------------------------------------------------------ */
/* Timing (timing.c)                                                         */
/* ------------------------------------------------------------------------ */

/* Seconds from CLOCK_MONOTONIC. */
double bench_now(void);

typedef struct bench_stats {
    double median_s, min_s, max_s; /* per call */
    int warmup;                    /* untimed calls */
    int repeats;                   /* timed samples */
    int calls_per_repeat;          /* calls in one timed sample (> 1 only for very short calls) */
} bench_stats;

/* The timed call: one op (or one copy); returns its status. */
typedef seqk_status (*bench_timed_fn)(void *arg);

/* Runs fn `warmup` times untimed, then `repeats` timed samples, and writes
 * the median, min and max seconds per call. A sample is one call, or several
 * back-to-back when one call is shorter than BENCH_MIN_SAMPLE_S (so that the
 * clock and the synchronisation do not dominate a short GPU kernel). With a
 * ctx, seqk_context_synchronize runs before the clock starts and before it
 * stops (a no-op on the CPU; on CUDA it waits for the queued work). Returns
 * the first failing status (stats untouched then). */
#define BENCH_MIN_SAMPLE_S 2e-3
seqk_status bench_time(seqk_context *ctx, bench_timed_fn fn, void *arg, int warmup, int repeats,
                       bench_stats *out);

/* ------------------------------------------------------------------------ */
/* Memory on a backend (buffers.c); every failure exits through bench_check  */
/* ------------------------------------------------------------------------ */

void *bench_alloc(bench_backend *be, size_t bytes, const char *what);
void bench_free(bench_backend *be, void *ptr);
/* dst[i] uniform in [lo, hi), a hash of (seed, i): the same on every backend
 * and thread count. On the CPU the fill is split across be->threads with the
 * same static schedule as the ops, so pages are first touched there. */
void bench_fill_uniform(bench_backend *be, float *dst, size_t n, float lo, float hi,
                        uint64_t seed);
/* bytes from host memory src to backend memory dst. */
void bench_upload(bench_backend *be, void *dst, const void *src, size_t bytes);
/* Number of NaN or infinite elements of x (backend memory, n floats). */
size_t bench_count_nonfinite(bench_backend *be, const float *x, size_t n);

/* ------------------------------------------------------------------------ */
/* Records (one per measurement) and their report (report.c)                 */
/* ------------------------------------------------------------------------ */

/* The shape of a measured op, with seqk.h's dimension letters; a dimension
 * the op does not have is 0. */
typedef struct bench_shape {
    int64_t B, T, H, K, V; /* batch, steps/tokens, heads, key dim, value dim */
    int64_t C, block;      /* scan channels, coefficient block size */
    int64_t N;             /* sequences: B, or the count in cu_seqlens */
    bool varlen;           /* sequences packed along T with cu_seqlens */
    const char *mode;      /* scan: "forward" / "reverse"; linear: "recurrent" / "parallel" */
} bench_shape;

typedef struct bench_record {
    const char *kind;     /* "measurement", "ceiling", "skipped", or a suite's summary
                             ("crossover": suite_linear.c; "updates": suite_sscan.c) */
    const char *suite;    /* "ceilings", "scan", ... */
    const char *name;     /* the case, e.g. "many-channels" */
    const char *backend;  /* "cpu" or "cuda" */
    int device;
    int threads;          /* CPU threads; 0 on CUDA */
    bench_shape shape;
    double flops;         /* counted floating-point operations per call (0 for the scan) */
    double bytes;         /* counted minimum bytes moved per call */
    bench_stats stats;
    double gb_per_s;      /* bytes / median / 1e9 */
    double gflop_per_s;   /* flops / median / 1e9 */
    double tokens;        /* tokens (B*T) one call processes; 0 = not a token op */
    double tokens_per_s;  /* tokens / median */
    const char *bound;    /* the ceiling that bounds the op ("copy", ...), or "" */
    const char *bound_unit;
    double bound_value;   /* that ceiling's value in this run; 0 = not measured */
    double fraction;      /* achieved / bound_value; < 0 = not available */
    const char *check;    /* output sanity: "ok", "non-finite", or "-" (not checked) */
    char note[512];
} bench_record;

/* A record with every field empty, of the given kind. */
bench_record bench_record_init(const char *kind);
/* Fills gb_per_s, gflop_per_s, tokens_per_s, bound_unit, bound_value and
 * fraction from bytes, flops, tokens, stats and bound, with the ceilings of
 * be. A record without timings (stats.repeats = 0: a ceiling not measured, a
 * summary) reports its times and rates as null. */
void bench_record_derive(bench_record *rec, const bench_backend *be);

/* Run-wide metadata, written into every record. */
typedef struct bench_meta {
    char version[32];    /* seqk_version() */
    char date[32];       /* start of the run, ISO 8601 UTC */
    char hostname[256];
    char cpu_model[256]; /* "model name" of /proc/cpuinfo */
} bench_meta;

/* Creates opt->out_dir (and its parents) and opens the JSON lines and CSV
 * files there; fills *meta. */
void report_open(const bench_options *opt, bench_meta *meta);
/* Writes rec to both files (flushed: a run cut short keeps what it had) and
 * keeps it for the table. */
void report_record(const bench_record *rec);
/* The aligned tables of everything recorded, on f. */
void report_print_tables(FILE *f);
void report_close(void);

/* Progress lines on stderr: "[3/12] scan many-channels cpu ... 5.1 GB/s". */
typedef struct bench_progress {
    int step, total;
} bench_progress;
void progress_begin(bench_progress *pg, const char *suite, const char *name,
                    const char *backend);
void progress_end(const char *fmt, ...) BENCH_PRINTF(1, 2);

/* Errors: print "seqk-bench: <what>: <status string>: <seqk_last_error()>"
 * and exit 1 unless st is SEQK_SUCCESS. */
void bench_check(seqk_status st, const char *what_fmt, ...) BENCH_PRINTF(2, 3);
_Noreturn void bench_die(const char *fmt, ...) BENCH_PRINTF(1, 2);

/* ------------------------------------------------------------------------ */
/* Ceilings (ceilings.c)                                                     */
/* ------------------------------------------------------------------------ */

/* Progress steps that ceilings_measure takes on be. */
int ceilings_steps(const bench_backend *be, const bench_options *opt);
/* Measures be's ceilings with be's thread count, stores them in be and
 * reports them (a measurement record per kernel, a ceiling record each). */
void ceilings_measure(bench_backend *be, const bench_options *opt, bench_progress *pg);
void bench_set_ceiling(bench_backend *be, const char *name, const char *unit, double value);
/* The ceiling called name, or NULL when this run has not measured it. */
const bench_ceiling *bench_get_ceiling(const bench_backend *be, const char *name);

/* ------------------------------------------------------------------------ */
/* Suites, cases, plans                                                      */
/* ------------------------------------------------------------------------ */

typedef struct bench_case bench_case;

/* Runs one case on its backend and fills rec: flops, bytes, stats, bound,
 * check, note (or kind = "skipped" with the reason in note). The driver fills
 * the rest (suite, name, backend, threads, shape, derived rates). */
typedef void (*bench_case_fn)(const bench_case *bc, bench_backend *be,
                              const bench_options *opt, bench_record *rec);

struct bench_case {
    const char *suite;
    char name[48];
    bench_shape shape;
    unsigned flags;       /* the op's flags (seqk_scan: SEQK_SCAN_REVERSE) */
    bench_case_fn run;
    bench_backend *be;    /* set by bench_plan_add */
};

typedef struct bench_plan {
    bench_case *cases;
    int n, cap;
} bench_plan;

void bench_plan_add(bench_plan *plan, bench_backend *be, const bench_case *bc);

/* A suite adds its cases for backend be to the plan. */
typedef void (*bench_plan_fn)(bench_plan *plan, bench_backend *be, const bench_options *opt);

/* After all of a suite's cases on backend be have run: report summary
 * records over them (NULL: none). */
typedef void (*bench_finish_fn)(bench_backend *be, const bench_options *opt);

typedef struct bench_suite {
    const char *name;        /* --suite NAME */
    const char *description;
    bench_plan_fn plan;
    bench_finish_fn finish;  /* or NULL */
} bench_suite;

/* The suites (one .c each). */
void suite_scan_plan(bench_plan *plan, bench_backend *be, const bench_options *opt);
void suite_linear_plan(bench_plan *plan, bench_backend *be, const bench_options *opt);
void suite_linear_finish(bench_backend *be, const bench_options *opt);
void suite_sscan_plan(bench_plan *plan, bench_backend *be, const bench_options *opt);
void suite_sscan_finish(bench_backend *be, const bench_options *opt);

#endif
