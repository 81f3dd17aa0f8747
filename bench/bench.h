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
 *
 * Shared by the suites that compare the recurrent-state modules with softmax
 * attention (prefill, decode, memory): modules.c sets up, calls and counts
 * any module through one interface (bench_module_*), crossover.c holds the
 * crossover rule and its verdict text (bench_find_crossover). bench/plot.py
 * turns the JSON lines into PNGs (scripts/bench.sh runs it).
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
 * clock and the synchronisation do not dominate a short GPU kernel); a short
 * call is tried a few more times untimed first and the fastest try sizes
 * the samples (timing.c; out->warmup counts those tries too). With a
 * ctx, seqk_context_synchronize runs before the clock starts and before it
 * stops (a no-op on the CPU; on CUDA it waits for the queued work). Returns
 * the first failing status (stats untouched then). */
#define BENCH_MIN_SAMPLE_S 2e-3
seqk_status bench_time(seqk_context *ctx, bench_timed_fn fn, void *arg, int warmup, int repeats,
                       bench_stats *out);
/* bench_time for calls that may be long: after the warm-up, the timed
 * samples are cut to about budget_s seconds in all (repeats =
 * budget_s / the last warm-up call's time, at least min_repeats and at most
 * `repeats`). The record's repeats field says how many were taken. */
seqk_status bench_time_budget(seqk_context *ctx, bench_timed_fn fn, void *arg, int warmup,
                              int repeats, int min_repeats, double budget_s, bench_stats *out);
/* Two calls timed in turns (bench_time_budget's warm-up, sizing and budget,
 * the budget shared): each repeat samples a and b back to back, in
 * alternating order, so that both see the same state of a shared machine;
 * ratio[1] is the median over the repeats of a's time / b's (a backward over
 * its forward: a slowdown of the machine that lasts seconds scales both
 * terms of a repeat and cancels in it, where it would not in a ratio of two
 * medians timed one after the other), ratio[0] and ratio[2] its first and
 * third quartiles (how far the machine moved it within the case). */
seqk_status bench_time_paired(seqk_context *ctx, bench_timed_fn fa, void *aa, bench_timed_fn fb,
                              void *ab, int warmup, int repeats, int min_repeats, double budget_s,
                              bench_stats *out_a, bench_stats *out_b, double ratio[3]);

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
    const char *mode;      /* scan: "forward" / "reverse"; linear: "recurrent" / "parallel";
                              the backward suite: "backward" */
} bench_shape;

typedef struct bench_record {
    const char *kind;     /* "measurement", "ceiling", "skipped", "drift" (ceilings.c),
                             or a suite's summary
                             ("crossover": suite_linear.c, suite_prefill.c,
                             suite_decode.c, suite_memory.c; "updates":
                             suite_sscan.c; "memory": suite_memory.c, computed
                             sizes, not timed) */
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
    double crossing;      /* summaries ("crossover"): the interpolated point (T, or a
                             context length L) where the compared times or sizes
                             cross; 0 = none (reported as null) */
    double forward_s;     /* a backward's record (suite_backward.c): the median seconds of
                             the same call's parallel forward, timed in the same case;
                             0 = none (reported as null) */
    double paired_ratio;  /* a backward's record: the median of bwd / fwd over repeats that
                             time both in turns (bench_time_paired); 0 = not paired */
    double paired_q1, paired_q3; /* its first and third quartiles over those repeats */
    double bwd_over_fwd;  /* paired_ratio when set, else median / forward_s
                             (bench_record_derive); 0 = none */
    double target_bwd_over_fwd; /* a backward's record: its own targets (the issue that
                                   set them differs per op, suite_backward.c): at most
                                   this bwd_over_fwd, */
    double target_fraction;     /* at least this fraction of its bound; 0 = no target */
    char note[512];
} bench_record;

/* A record with every field empty, of the given kind. */
bench_record bench_record_init(const char *kind);
/* Fills gb_per_s, gflop_per_s, tokens_per_s, bound_unit, bound_value,
 * fraction and bwd_over_fwd from bytes, flops, tokens, stats, forward_s and
 * bound, with the ceilings of be. A record without timings (stats.repeats =
 * 0: a ceiling not measured, a summary) reports its times and rates as null. */
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
/* After the suites: the large sgemm timed again (a measurement record and a
 * "drift" summary: start and end values), so that a run shows how much the
 * machine's speed moved while it ran. Progress steps: ceilings_recheck_steps. */
int ceilings_recheck_steps(const bench_backend *be);
void ceilings_recheck(bench_backend *be, const bench_options *opt, bench_progress *pg);
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

/* A case's call returned st: SEQK_ERROR_UNSUPPORTED is a valid call this
 * backend does not take (a hole in the matrix, not an error): rec becomes a
 * "skipped" record with the library's message, and this returns true. */
bool bench_skip_unsupported(seqk_status st, bench_record *rec);

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

/* ------------------------------------------------------------------------ */
/* Crossovers (crossover.c)                                                  */
/* ------------------------------------------------------------------------ */

/* Where a candidate overtakes a reference as x grows (T, or a context
 * length L). xs[0..n) ascending, ratio[i] = reference / candidate at xs[i]
 * (times: > 1 = the candidate faster; sizes: > 1 = the candidate smaller).
 * first: the smallest index from which ratio > 1 at every larger x (n: not
 * at the largest x). crossing: where log(ratio) crosses 0 between xs[first-1]
 * and xs[first], interpolated in log-log; 0 when first is 0 or n (the
 * crossing is outside the range measured). */
typedef struct bench_crossover {
    int first;
    double crossing;
} bench_crossover;

/* Finds the crossover and writes a verdict in words to text, e.g.
 *   "deltanet faster from T = 2048 (crossing near T ~ 1500); t_softmax/t_deltanet:
 *    T=256 0.31 T=512 0.52 ..."
 * better: what the candidate is when ratio > 1 ("faster", "smaller");
 * candidate, reference: their names; x_name: "T" or "L"; ratio_name: the
 * ratio's name in the list ("t_softmax/t_deltanet"). */
bench_crossover bench_find_crossover(const int64_t *xs, const double *ratio, int n,
                                     const char *candidate, const char *reference,
                                     const char *better, const char *x_name,
                                     const char *ratio_name, char *text, size_t size);
/* Copies text into storage that lives until the end of the run (records
 * keep pointers to their names until the tables are printed). */
const char *bench_keep_name(const char *text);
/* A "crossover" summary record of suite for one shape (B, H, K, V; N = B) on
 * backend be, named "<label> B=.. H=.. K=.. V=..". The caller sets T, the
 * note and the crossing, then reports it. */
bench_record bench_crossover_record(const bench_backend *be, const char *suite, const char *label,
                                    int64_t B, int64_t H, int64_t K, int64_t V);

/* ------------------------------------------------------------------------ */
/* The recurrent-state modules, set up and called alike (modules.c)          */
/* ------------------------------------------------------------------------ */

/* The modules that have a recurrent mode and a parallel mode, with the
 * inputs the linear suite documents (suite_linear.c): q, k, v (Mamba2: C, B,
 * x) uniform in [-1, 1), scale 1/sqrt(K); retention with RetNet's default
 * gammas; gated retention and gated DeltaNet with log-gates in [-0.1, 0];
 * DeltaNet beta in [0, 1] and SEQK_DELTANET_L2NORM_QK; Mamba2 with G = 1
 * group, Nst = K, P = V, dt = softplus(dt_raw + dt_bias), dt_raw in
 * [-3, -1), dt_bias in [-1, 0), A in [-2, -0.5), D in [0.5, 1.5); Titans
 * with SEQK_TITANS_L2NORM_QK, mini-batch BENCH_TITANS_MINIBATCH, eta in
 * [0.8, 0.95], theta in [0, 0.1] (decoding steps, BENCH_STATE_IN_PLACE:
 * [0, 1e-3], see modules.c), alpha in [0, 0.05]; the library's default
 * chunk (bench_module_chunk). The selective scan (Mamba1) with the sscan suite's
 * inputs (suite_sscan.c): u, z, Bm, Cm in [-1, 1), raw dt in [-3, -1),
 * dt_bias in [-1, 0), A in [-4, -0.5), Dskip in [0.5, 1.5), G = 1 group,
 * SEQK_SSCAN_DT_SOFTPLUS with the D skip and the z gate. States (when
 * passed in) in [-0.1, 0.1) (Titans: pos and the reserved floats 0). */
typedef enum bench_module {
    BENCH_MOD_LINEAR_ATTENTION = 0,
    BENCH_MOD_RETENTION,
    BENCH_MOD_GATED_RETENTION,
    BENCH_MOD_MAMBA2,
    BENCH_MOD_DELTANET,
    BENCH_MOD_TITANS,
    BENCH_MOD_SELECTIVE_SCAN,
    BENCH_N_MODULES
} bench_module;
/* The first six have a [N,H,K,V] state (Titans [N,H,E]) and [B,T,H,K] inputs. */
#define BENCH_N_MATRIX_MODULES 6
/* The chunk module m runs with: the library's default for its family and
 * these head sizes on ctx's backend (seqk_chunk_default; what chunk = 0
 * means). */
int64_t bench_module_chunk(seqk_context *ctx, bench_module m, int64_t K, int64_t V);
#define BENCH_TITANS_MINIBATCH 16

/* "linear_attention", "retention", ..., "selective_scan". */
const char *bench_module_name(bench_module m);

/* How the state is passed. */
typedef enum bench_state_use {
    BENCH_STATE_OUT,      /* state_in NULL (zeros), state_out written: a prefill from scratch */
    BENCH_STATE_IN_PLACE  /* state_in == state_out: a decoding step */
} bench_state_use;

/* One module's buffers on a backend and its call. Dimensions: B, T, H, K, V
 * as in seqk.h; for the selective scan H = D (channels), K = Nst (state
 * size), V = 1, with one group. */
typedef struct bench_module_call {
    seqk_context *ctx;
    bench_module module;
    seqk_mode mode;
    bench_state_use state_use;
    int64_t B, T, H, K, V;
    int64_t chunk;          /* bench_module_chunk(ctx, module, K, V) */
    float scale;
    float *q, *k, *v, *o;   /* [B,T,H,K] [B,T,H,K] [B,T,H,V] [B,T,H,V];
                               Mamba2: C [B,T,1,K], B [B,T,1,K], x, y;
                               sscan: q = C [B,T,1,Nst], k = B [B,T,1,Nst],
                               v = u [B,T,D], o = y [B,T,D] */
    float *g;               /* [B,T,H]: gated retention, DeltaNet log-gates; Mamba2 raw dt;
                               Titans eta; sscan raw dt [B,T,D] */
    float *beta;            /* [B,T,H]: DeltaNet beta; Titans theta; sscan z [B,T,D] */
    float *alpha;           /* [B,T,H]: Titans alpha */
    float *A, *D, *dt_bias; /* Mamba2: [H] each; sscan: A [D,Nst], Dskip [D], dt_bias [D] */
    float *state;           /* [B,H,K,V]; Titans [B,H,E]; sscan [B,D,Nst] */
    size_t n_qk, n_v, n_tok, n_state; /* floats of q (and k), v (and o), a gate, the state */
    size_t n_const;         /* floats of the per-head / per-channel constants */
    int n_gates;            /* per-token arrays besides q, k, v, o */
} bench_module_call;

/* Allocates and fills the module's buffers on be and reserves the workspace
 * the call needs. */
void bench_module_setup(bench_backend *be, bench_module_call *c, bench_module module,
                        seqk_mode mode, bench_state_use state_use, int64_t B, int64_t T,
                        int64_t H, int64_t K, int64_t V);
/* The timed call (a bench_timed_fn; arg is a bench_module_call). */
seqk_status bench_module_run(void *arg);
void bench_module_teardown(bench_backend *be, bench_module_call *c);
/* Counted flops and minimum bytes of one call (modules.c's top comment). */
double bench_module_flops(const bench_module_call *c);
double bench_module_bytes(const bench_module_call *c);
/* NaN or inf elements of the output and the state. */
size_t bench_module_nonfinite(bench_backend *be, const bench_module_call *c);
/* Floats of the recurrent state per sequence (one layer): H K V for the
 * matrix-state modules, H E for Titans, D Nst for the selective scan
 * (H = D, K = Nst). */
size_t bench_module_state_floats(bench_module m, int64_t H, int64_t K, int64_t V);
/* FLOPs counted per token and head (bench/modules.c has the derivations;
 * the linear suite counts with it too); chunk: the chunked modules' C;
 * minibatch: Titans' b. */
double bench_module_flops_per_token_head(bench_module m, bool parallel, int64_t T, int64_t K,
                                         int64_t V, int64_t chunk, int64_t minibatch);

/* The suites (one .c each). */
void suite_scan_plan(bench_plan *plan, bench_backend *be, const bench_options *opt);
void suite_linear_plan(bench_plan *plan, bench_backend *be, const bench_options *opt);
void suite_linear_finish(bench_backend *be, const bench_options *opt);
void suite_sscan_plan(bench_plan *plan, bench_backend *be, const bench_options *opt);
void suite_sscan_finish(bench_backend *be, const bench_options *opt);
void suite_prefill_plan(bench_plan *plan, bench_backend *be, const bench_options *opt);
void suite_prefill_finish(bench_backend *be, const bench_options *opt);
void suite_decode_plan(bench_plan *plan, bench_backend *be, const bench_options *opt);
void suite_decode_finish(bench_backend *be, const bench_options *opt);
void suite_memory_plan(bench_plan *plan, bench_backend *be, const bench_options *opt);
void suite_memory_finish(bench_backend *be, const bench_options *opt);
void suite_backward_plan(bench_plan *plan, bench_backend *be, const bench_options *opt);

/* The backward suite's acceptance targets, one pair per op, carried by each
 * record (target_bwd_over_fwd, target_fraction) and shown beside its figures
 * in the tables (report.c) and the plots (plot.py): a backward at most
 * MAX_RATIO times its parallel forward's time and at least MIN_FRACTION of
 * the large-sgemm ceiling. Issue #15: the linear-state modules and softmax
 * attention; issue #16: DeltaNet at T = 4096, K = V = 128 (applied at both
 * head dims). The selective scan has no target in this suite (issue #16's
 * is >= 20x PyTorch autograd, bench/peers.py). */
#define BENCH_BACKWARD_MAX_RATIO 2.5
#define BENCH_BACKWARD_MIN_FRACTION 0.40
#define BENCH_DELTANET_BACKWARD_MAX_RATIO 3.0
#define BENCH_DELTANET_BACKWARD_MIN_FRACTION 0.35
/* Issue #16's Titans backward (T = 4096, K = V = 128, b = 64): at most 3x
 * its parallel forward; no fraction target (the fraction is reported). */
#define BENCH_TITANS_BACKWARD_MAX_RATIO 3.0
#define BENCH_TITANS_BACKWARD_MINIBATCH 64
#define BENCH_SSCAN_BACKWARD_MIN_PEER_RATIO 20.0

#endif
