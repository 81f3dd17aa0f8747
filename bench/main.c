/*
 * bench/main.c -- seqk-bench: command line, backends, the suite table, and
 * the driver that runs the plan.
 *
 *   seqk-bench [--suite scan|linear|sscan|prefill|decode|memory|backward|all]
 *              [--backend cpu|cuda|all] [--threads N] [--repeats R] [--case TEXT]
 *              [--quick] [--out DIR] [--help]
 *
 * Exit status: 0 done (backends without a device are reported as skipped),
 * 1 a seqk call failed or an output held NaN/inf, 2 bad command line.
 */
#include "bench.h"

#include <errno.h>
#include <omp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* The suites, in the order they run. Add a row per new suite. */
static const bench_suite SUITES[] = {
    {"scan", "seqk_scan, the parallel-scan primitive (DESIGN 3.6); bound: copy", suite_scan_plan,
     NULL},
    {"linear",
     "linear attention, retention, gated retention, Mamba2\n"
     "                          (DESIGN 3.1), gated DeltaNet (3.3), Titans (3.4),\n"
     "                          recurrent and parallel modes, and the T from which\n"
     "                          parallel is faster; bound: sgemm_large",
     suite_linear_plan, suite_linear_finish},
    {"sscan",
     "seqk_selective_scan, Mamba1's selective scan (DESIGN 3.2),\n"
     "                          recurrent and parallel modes, state updates/s; bound: copy",
     suite_sscan_plan, suite_sscan_finish},
    {"prefill",
     "prefill: the parallel mode of every module above against\n"
     "                          softmax attention's causal forward (same B, H, dims),\n"
     "                          time per token vs T, and the T from which each module\n"
     "                          is faster; bound: sgemm_large",
     suite_prefill_plan, suite_prefill_finish},
    {"decode",
     "decoding: one recurrent step of every module (selective\n"
     "                          scan included) against softmax decoding over a KV cache\n"
     "                          of L tokens, tokens/s vs L, and the L from which each\n"
     "                          step is faster; bound: copy",
     suite_decode_plan, suite_decode_finish},
    {"memory",
     "bytes per sequence and layer, computed, not timed: each\n"
     "                          module's state against the softmax KV cache as L grows,\n"
     "                          and the L from which the cache is larger",
     suite_memory_plan, suite_memory_finish},
    {"backward",
     "training backward of linear attention, retention, gated\n"
     "                          retention, Mamba2 (DESIGN 3.7), gated DeltaNet, the\n"
     "                          selective scan and causal softmax attention\n"
     "                          (FlashAttention-2), each timed with its forward: time\n"
     "                          bwd/fwd and the fraction of sgemm_large, beside each\n"
     "                          op's targets (<= 2.5 and >= 0.40; DeltaNet 3.0, 0.35;\n"
     "                          the selective scan: copy-bound, no target here)",
     suite_backward_plan, NULL},
};
#define N_SUITES ((int)(sizeof SUITES / sizeof SUITES[0]))

/* The backends, in the order they run. */
static const struct {
    const char *name;
    seqk_backend backend;
} BACKENDS[] = {{"cpu", SEQK_BACKEND_CPU}, {"cuda", SEQK_BACKEND_CUDA}};
#define N_BACKENDS ((int)(sizeof BACKENDS / sizeof BACKENDS[0]))

#define DEFAULT_REPEATS 7
#define DEFAULT_WARMUP 1
#define DEFAULT_OUT_DIR "bench-results"

/* ---- command line ------------------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: seqk-bench [--suite NAME|all] [--backend cpu|cuda|all] [--threads N]\n"
            "                  [--repeats R] [--case TEXT] [--quick] [--out DIR]\n"
            "                  [--help]\n"
            "\n"
            "Times seqk's kernels against the machine's ceilings, measured in the same run.\n"
            "\n"
            "  --suite NAME   run one suite, or all (default: all). Suites:\n");
    for (int i = 0; i < N_SUITES; i++)
        fprintf(f, "                 %-8s %s\n", SUITES[i].name, SUITES[i].description);
    fprintf(f,
            "  --backend B    cpu, cuda or all (default: all); a backend without a device\n"
            "                 is reported as skipped\n"
            "  --threads N    CPU threads for the kernels and the ceilings (default: the\n"
            "                 context's, i.e. OpenMP's maximum)\n"
            "  --repeats R    timed repeats per measurement; the median, min and max are\n"
            "                 reported (default: %d, after %d warm-up call)\n"
            "  --case TEXT    only the cases whose name contains TEXT (e.g. retention)\n"
            "  --quick        small sizes: a smoke test of a few seconds, not a benchmark\n"
            "  --out DIR      write DIR/seqk-bench.jsonl and DIR/seqk-bench.csv (default:\n"
            "                 %s; created if missing, files overwritten)\n"
            "  --help         this text\n"
            "\n"
            "Rates: GB/s = 1e9 counted bytes per second, GFLOP/s = 1e9 counted flops per\n"
            "second, over the median time; frac = achieved rate / the bounding ceiling.\n"
            "Exit status: 0 done, 1 a seqk call failed or an output had NaN/inf, 2 usage.\n",
            DEFAULT_REPEATS, DEFAULT_WARMUP, DEFAULT_OUT_DIR);
}

/* A bad command line: the problem and the usage on stderr, exit status 2. */
_Noreturn static void usage_error(const char *fmt, ...) BENCH_PRINTF(1, 2);
static void usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("seqk-bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n\n", stderr);
    usage(stderr);
    exit(2);
}

static int parse_positive_int(const char *option, const char *text, int max)
{
    char *end = NULL;
    errno = 0;
    const long v = strtol(text, &end, 10);
    if (errno || end == text || *end != '\0' || v < 1 || v > max)
        usage_error("%s %s: expected an integer from 1 to %d", option, text, max);
    return (int)v;
}

static bool suite_known(const char *name)
{
    if (strcmp(name, "all") == 0) return true;
    for (int i = 0; i < N_SUITES; i++)
        if (strcmp(SUITES[i].name, name) == 0) return true;
    return false;
}

static bench_options parse_args(int argc, char **argv)
{
    bench_options opt = {"all", "all", 0, DEFAULT_REPEATS, DEFAULT_WARMUP, false, NULL,
                         DEFAULT_OUT_DIR};
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        /* "--name value" or "--name=value" */
        char name[32];
        const char *value = NULL;
        const char *eq = strchr(arg, '=');
        if (strncmp(arg, "--", 2) == 0 && eq && (size_t)(eq - arg) < sizeof name) {
            memcpy(name, arg, (size_t)(eq - arg));
            name[eq - arg] = '\0';
            value = eq + 1;
        } else {
            snprintf(name, sizeof name, "%s", arg);
        }
        const bool takes_value = strcmp(name, "--suite") == 0 || strcmp(name, "--backend") == 0 ||
                                 strcmp(name, "--case") == 0 ||
                                 strcmp(name, "--threads") == 0 ||
                                 strcmp(name, "--repeats") == 0 || strcmp(name, "--out") == 0;
        if (takes_value && !value) {
            if (i + 1 >= argc) usage_error("%s needs a value", name);
            value = argv[++i];
        } else if (!takes_value && value) {
            usage_error("%s takes no value", name);
        }

        if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
            usage(stdout);
            exit(0);
        } else if (strcmp(name, "--quick") == 0) {
            opt.quick = true;
        } else if (strcmp(name, "--suite") == 0) {
            if (!suite_known(value)) usage_error("--suite %s: unknown suite", value);
            opt.suite = value;
        } else if (strcmp(name, "--case") == 0) {
            opt.case_filter = value;
        } else if (strcmp(name, "--backend") == 0) {
            if (strcmp(value, "cpu") != 0 && strcmp(value, "cuda") != 0 &&
                strcmp(value, "all") != 0)
                usage_error("--backend %s: expected cpu, cuda or all", value);
            opt.backend = value;
        } else if (strcmp(name, "--threads") == 0) {
            opt.threads = parse_positive_int("--threads", value, 4096);
        } else if (strcmp(name, "--repeats") == 0) {
            opt.repeats = parse_positive_int("--repeats", value, 10000);
        } else if (strcmp(name, "--out") == 0) {
            if (!value[0]) usage_error("--out needs a directory");
            opt.out_dir = value;
        } else {
            usage_error("unknown option %s", arg);
        }
    }
    return opt;
}

/* ---- backends and plans -------------------------------------------------------- */

int bench_record_threads(const bench_backend *be)
{
    return be->backend == SEQK_BACKEND_CPU ? be->threads : 0;
}

/* Opens a context on the backend. Returns false (and reports the backend as
 * skipped, with the library's reason) when it has no device or is not in
 * this build; any other failure is fatal. */
static bool open_backend(bench_backend *be, const char *name, seqk_backend backend,
                         const bench_options *opt)
{
    memset(be, 0, sizeof *be);
    be->backend = backend;
    be->name = name;
    be->device = 0;
    const seqk_status st = seqk_context_create(&be->ctx, backend, be->device);
    if (st == SEQK_ERROR_NO_DEVICE || st == SEQK_ERROR_NOT_COMPILED) {
        bench_record r = bench_record_init("skipped");
        r.backend = name;
        snprintf(r.note, sizeof r.note, "%s: %s", seqk_status_string(st), seqk_last_error());
        fprintf(stderr, "seqk-bench: backend %s skipped: %s\n", name, r.note);
        report_record(&r);
        return false;
    }
    bench_check(st, "seqk_context_create(%s)", name);
    if (backend == SEQK_BACKEND_CPU) {
        if (opt->threads > 0)
            bench_check(seqk_context_set_threads(be->ctx, opt->threads),
                        "seqk_context_set_threads(%d)", opt->threads);
        bench_check(seqk_context_threads(be->ctx, &be->threads), "seqk_context_threads");
    } else {
        /* The CUDA kernels ignore threads; the bench's host loops (fills, checks) use them. */
        be->threads = opt->threads > 0 ? opt->threads : omp_get_max_threads();
    }
    return true;
}

void bench_plan_add(bench_plan *plan, bench_backend *be, const bench_case *bc)
{
    if (plan->n == plan->cap) {
        plan->cap = plan->cap ? 2 * plan->cap : 32;
        plan->cases = realloc(plan->cases, (size_t)plan->cap * sizeof *plan->cases);
        if (!plan->cases) bench_die("cannot allocate the plan");
    }
    plan->cases[plan->n] = *bc;
    plan->cases[plan->n].be = be;
    plan->n++;
}

static void run_case(const bench_case *bc, const bench_options *opt, bench_progress *pg,
                     bool *all_finite)
{
    bench_backend *be = bc->be;
    progress_begin(pg, bc->suite, bc->name, be->name);
    bench_record rec = bench_record_init("measurement");
    bc->run(bc, be, opt, &rec);
    rec.suite = bc->suite;
    rec.name = bc->name;
    rec.backend = be->name;
    rec.device = be->device;
    rec.threads = bench_record_threads(be);
    rec.shape = bc->shape;
    if (strcmp(rec.kind, "skipped") == 0) {
        progress_end("skipped: %s", rec.note);
    } else {
        bench_record_derive(&rec, be);
        const bench_ceiling *c = rec.bound[0] ? bench_get_ceiling(be, rec.bound) : NULL;
        const bool flop_bound = c && strcmp(c->unit, "GFLOP/s") == 0;
        const double rate = flop_bound ? rec.gflop_per_s : rec.gb_per_s;
        const char *unit = flop_bound ? "GFLOP/s" : "GB/s";
        if (rec.fraction >= 0.0)
            progress_end("%.2f %s, %.2f of %s", rate, unit, rec.fraction, rec.bound);
        else if (rec.flops > 0.0)
            progress_end("%.2f GFLOP/s, %.2f GB/s", rec.gflop_per_s, rec.gb_per_s);
        else
            progress_end("%.2f GB/s", rec.gb_per_s);
        if (strcmp(rec.check, "non-finite") == 0) {
            fprintf(stderr, "seqk-bench: %s %s %s: %s\n", bc->suite, bc->name, be->name,
                    rec.note);
            *all_finite = false;
        }
    }
    report_record(&rec);
}

int main(int argc, char **argv)
{
    const bench_options opt = parse_args(argc, argv);
    bench_meta meta;
    report_open(&opt, &meta);

    bench_backend backends[N_BACKENDS];
    bool open[N_BACKENDS] = {false};
    for (int i = 0; i < N_BACKENDS; i++)
        if (strcmp(opt.backend, "all") == 0 || strcmp(opt.backend, BACKENDS[i].name) == 0)
            open[i] = open_backend(&backends[i], BACKENDS[i].name, BACKENDS[i].backend, &opt);

    bench_plan plan = {NULL, 0, 0};
    bench_progress pg = {0, 0};
    for (int i = 0; i < N_BACKENDS; i++) {
        if (!open[i]) continue;
        pg.total += ceilings_steps(&backends[i], &opt) + ceilings_recheck_steps(&backends[i]);
        for (int s = 0; s < N_SUITES; s++)
            if (strcmp(opt.suite, "all") == 0 || strcmp(opt.suite, SUITES[s].name) == 0)
                SUITES[s].plan(&plan, &backends[i], &opt);
    }
    if (opt.case_filter) { /* keep the cases whose name holds the text */
        int kept = 0;
        for (int c = 0; c < plan.n; c++)
            if (strstr(plan.cases[c].name, opt.case_filter)) plan.cases[kept++] = plan.cases[c];
        plan.n = kept;
    }
    pg.total += plan.n;

    printf("seqk-bench: seqk %s, %s, host %s, CPU %s\n", meta.version, meta.date, meta.hostname,
           meta.cpu_model);
    printf("suite %s, backend %s, %d repeats after %d warm-up%s, results in %s/\n", opt.suite,
           opt.backend, opt.repeats, opt.warmup, opt.quick ? ", QUICK sizes (smoke test)" : "",
           opt.out_dir);
    fflush(stdout);

    bool all_finite = true;
    for (int i = 0; i < N_BACKENDS; i++) {
        if (!open[i]) continue;
        ceilings_measure(&backends[i], &opt, &pg);
        for (int c = 0; c < plan.n; c++)
            if (plan.cases[c].be == &backends[i]) run_case(&plan.cases[c], &opt, &pg, &all_finite);
        for (int s = 0; s < N_SUITES; s++)
            if (SUITES[s].finish &&
                (strcmp(opt.suite, "all") == 0 || strcmp(opt.suite, SUITES[s].name) == 0))
                SUITES[s].finish(&backends[i], &opt);
        ceilings_recheck(&backends[i], &opt, &pg);
    }

    report_print_tables(stdout);
    report_close();
    for (int i = 0; i < N_BACKENDS; i++)
        if (open[i]) bench_check(seqk_context_destroy(backends[i].ctx), "seqk_context_destroy");
    free(plan.cases);
    if (!all_finite) {
        fprintf(stderr, "seqk-bench: some outputs held NaN or inf (see above)\n");
        return 1;
    }
    return 0;
}
