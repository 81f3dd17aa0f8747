/*
 * bench/suite_prefill.c -- the "prefill" suite: the parallel (chunked) mode of
 * every recurrent-state module (linear attention, retention, gated
 * retention, Mamba2, gated DeltaNet, Titans) against softmax attention's
 * causal parallel forward (seqk_attention_parallel with SEQK_ATTN_CAUSAL,
 * FlashAttention-style), same B, H and head dims, on the same backend, as
 * the prompt length T grows; then, per module, the T from which its parallel
 * mode is faster than softmax attention ("crossover" records).
 *
 * Shape family: B = 1, H = 8, K = V = 64, T = 128 .. 8192 (powers of 2;
 * --quick: B = 1, H = 2, K = V = 32, T = 64 .. 256). Softmax attention with
 * Hq = Hkv = H (multi-head). At each T the seven ops run back to back, so
 * that the timings a crossover compares are taken close together in time.
 * (Counted flops per token and head are equal near T = 256: softmax
 * attention's T (K + V) against the chunk algorithm's 2 C (K + V) + 4 K V;
 * the crossover in time lies where their rates put it, hence T from 128.)
 * The top T is where softmax attention's quadratic cost makes the sweep
 * long (T = 8192: ~7e10 flops a call; T = 16384 would be 4x that): calls
 * longer than a second get fewer timed repeats (bench_time_budget: at least
 * PREFILL_MIN_REPEATS, about PREFILL_BUDGET_S seconds of samples per case;
 * each record says how many).
 *
 * Inputs: the modules as in modules.c (bench_module); a prefill from
 * scratch: no initial state, the final state written (what decoding then
 * continues from). Softmax attention: q, k, v uniform in [-1, 1),
 * scale 1/sqrt(K), lse not written (an inference prefill; the prompt's k, v
 * are the KV cache already, in its layout, so nothing else is written).
 *
 * FLOPs counted per call: the modules as modules.c says (the chunk
 * algorithm's products); softmax attention 2 (K + V) per (query, key) pair
 * the causal mask keeps, B H T (T + 1) / 2 pairs (q.k and p.v; the exp and
 * the online-softmax rescaling are not counted, the skipped tiles above the
 * diagonal neither). Bytes counted per call (fp32, each once): q, k, v read,
 * o written, plus the modules' gates and final state. Bound: "sgemm_large"
 * for all (all are products-bound at these T); the main figure is the time
 * per token (median / (B T)), in each record's note and in the crossovers.
 */
#include "bench.h"

#include <math.h>
#include <string.h>

#define PREFILL_MAX_T 8
#define PREFILL_BUDGET_S 4.0
#define PREFILL_MIN_REPEATS 3

typedef struct prefill_family {
    int64_t B, H, K, V;
    int n_T;
    int64_t T[PREFILL_MAX_T];
} prefill_family;

static const prefill_family FAMILY = {1, 8, 64, 64, 7, {128, 256, 512, 1024, 2048, 4096, 8192}};
static const prefill_family FAMILY_QUICK = {1, 2, 32, 32, 3, {64, 128, 256}};

static const prefill_family *family(const bench_options *opt)
{
    return opt->quick ? &FAMILY_QUICK : &FAMILY;
}

/* The ops of the suite: the six matrix-state modules, then softmax attention. */
#define PREFILL_SOFTMAX BENCH_N_MATRIX_MODULES
#define PREFILL_N_OPS (BENCH_N_MATRIX_MODULES + 1)

static const char *op_name(int op)
{
    return op == PREFILL_SOFTMAX ? "softmax_attention" : bench_module_name((bench_module)op);
}

/* ---- results kept for the crossover summary ------------------------------------------- */

#define PREFILL_MAX_RESULTS (2 * PREFILL_N_OPS * PREFILL_MAX_T)
typedef struct prefill_result {
    const bench_backend *be;
    int op;
    int64_t T;
    double median_s;
} prefill_result;

static prefill_result g_results[PREFILL_MAX_RESULTS];
static int g_n_results;

static void keep_result(const bench_backend *be, int op, int64_t T, double median_s)
{
    if (g_n_results == PREFILL_MAX_RESULTS) bench_die("prefill suite: too many results");
    g_results[g_n_results++] = (prefill_result){be, op, T, median_s};
}

static const prefill_result *find_result(const bench_backend *be, int op, int64_t T)
{
    for (int i = 0; i < g_n_results; i++)
        if (g_results[i].be == be && g_results[i].op == op && g_results[i].T == T)
            return &g_results[i];
    return NULL;
}

/* ---- softmax attention ---------------------------------------------------------------- */

typedef struct softmax_args {
    seqk_context *ctx;
    int64_t B, T, H, K, V;
    float scale;
    const float *q, *k, *v; /* [B,T,H,K], [B,T,H,K], [B,T,H,V] */
    float *o;               /* [B,T,H,V] */
} softmax_args;

static seqk_status softmax_call(void *arg)
{
    const softmax_args *a = arg;
    return seqk_attention_parallel(a->ctx, a->B, a->T, a->H, a->H, a->K, a->V, a->scale,
                                   SEQK_ATTN_CAUSAL, a->q, a->k, a->v, a->o, NULL, NULL, 0);
}

/* Times softmax attention; returns false (rec made a skip) when the backend
 * does not take the call. */
static bool run_softmax(const bench_shape *sh, bench_backend *be, const bench_options *opt,
                        bench_record *rec)
{
    const int64_t B = sh->B, T = sh->T, H = sh->H, K = sh->K, V = sh->V;
    const size_t n_qk = (size_t)(B * T * H * K), n_v = (size_t)(B * T * H * V);
    float *q = bench_alloc(be, n_qk * sizeof(float), "q"); /* [B,T,H,K] */
    float *k = bench_alloc(be, n_qk * sizeof(float), "k"); /* [B,T,H,K] */
    float *v = bench_alloc(be, n_v * sizeof(float), "v");  /* [B,T,H,V] */
    float *o = bench_alloc(be, n_v * sizeof(float), "o");  /* [B,T,H,V] */
    bench_fill_uniform(be, q, n_qk, -1.0f, 1.0f, 61);
    bench_fill_uniform(be, k, n_qk, -1.0f, 1.0f, 62);
    bench_fill_uniform(be, v, n_v, -1.0f, 1.0f, 63);
    bench_fill_uniform(be, o, n_v, 0.0f, 0.0f, 64);
    size_t workspace = 0;
    bench_check(seqk_attention_parallel_workspace_size(be->ctx, B, T, H, H, K, V,
                                                       SEQK_ATTN_CAUSAL, 0, &workspace),
                "seqk_attention_parallel_workspace_size");
    if (workspace > 0)
        bench_check(seqk_context_reserve_workspace(be->ctx, workspace),
                    "seqk_context_reserve_workspace(%zu bytes)", workspace);

    softmax_args args = {be->ctx, B, T, H, K, V, 1.0f / sqrtf((float)K), q, k, v, o};
    const seqk_status st = bench_time_budget(be->ctx, softmax_call, &args, opt->warmup,
                                             opt->repeats, PREFILL_MIN_REPEATS,
                                             PREFILL_BUDGET_S, &rec->stats);
    bool ok = true;
    if (bench_skip_unsupported(st, rec)) {
        ok = false;
    } else {
        bench_check(st, "seqk_attention_parallel (T=%lld on %s)", (long long)T, be->name);
        const double pairs = (double)(B * H) * (double)T * (double)(T + 1) / 2.0;
        rec->flops = pairs * (2.0 * (double)K + 2.0 * (double)V);
        rec->bytes = (double)(2 * n_qk + 2 * n_v) * sizeof(float);
        const size_t bad = bench_count_nonfinite(be, o, n_v);
        rec->check = bad ? "non-finite" : "ok";
        const double us_per_token = rec->stats.median_s / (double)(B * T) * 1e6;
        if (bad)
            snprintf(rec->note, sizeof rec->note, "%zu of %zu elements of o are NaN or inf", bad,
                     n_v);
        else
            snprintf(rec->note, sizeof rec->note, "%.3f us/token; causal, Hq = Hkv = %lld",
                     us_per_token, (long long)H);
    }
    bench_free(be, o);
    bench_free(be, v);
    bench_free(be, k);
    bench_free(be, q);
    return ok;
}

/* ---- one case ----------------------------------------------------------------------------- */

static void prefill_run(const bench_case *bc, bench_backend *be, const bench_options *opt,
                        bench_record *rec)
{
    const bench_shape *sh = &bc->shape;
    const int op = (int)bc->flags;
    rec->bound = "sgemm_large";
    rec->tokens = (double)(sh->B * sh->T);
    if (op == PREFILL_SOFTMAX) {
        if (run_softmax(sh, be, opt, rec)) keep_result(be, op, sh->T, rec->stats.median_s);
        return;
    }

    bench_module_call call;
    bench_module_setup(be, &call, (bench_module)op, SEQK_MODE_PARALLEL, BENCH_STATE_OUT, sh->B,
                       sh->T, sh->H, sh->K, sh->V);
    const seqk_status st = bench_time_budget(be->ctx, bench_module_run, &call, opt->warmup,
                                             opt->repeats, PREFILL_MIN_REPEATS,
                                             PREFILL_BUDGET_S, &rec->stats);
    if (st == SEQK_ERROR_UNSUPPORTED) {
        /* A valid call this backend does not take: a hole in the matrix, not an error. */
        rec->kind = "skipped";
        snprintf(rec->note, sizeof rec->note, "%s", seqk_last_error());
    } else {
        bench_check(st, "%s parallel (T=%lld on %s)", bc->name, (long long)sh->T, be->name);
        rec->flops = bench_module_flops(&call);
        rec->bytes = bench_module_bytes(&call);
        const size_t bad = bench_module_nonfinite(be, &call);
        rec->check = bad ? "non-finite" : "ok";
        const double us_per_token = rec->stats.median_s / rec->tokens * 1e6;
        if (bad)
            snprintf(rec->note, sizeof rec->note,
                     "%zu of %zu elements of o and the final state are NaN or inf", bad,
                     call.n_v + call.n_state);
        else if (op == BENCH_MOD_TITANS)
            snprintf(rec->note, sizeof rec->note, "%.3f us/token; minibatch %d, final state out",
                     us_per_token, BENCH_TITANS_MINIBATCH);
        else
            snprintf(rec->note, sizeof rec->note, "%.3f us/token; chunk %lld, final state out",
                     us_per_token, (long long)call.chunk);
        keep_result(be, op, sh->T, rec->stats.median_s);
    }
    bench_module_teardown(be, &call);
}

void suite_prefill_plan(bench_plan *plan, bench_backend *be, const bench_options *opt)
{
    const prefill_family *f = family(opt);
    for (int t = 0; t < f->n_T; t++) {
        /* softmax attention first, then the modules, at the same T */
        for (int i = 0; i < PREFILL_N_OPS; i++) {
            const int op = (i + PREFILL_SOFTMAX) % PREFILL_N_OPS;
            bench_case bc = {0};
            bc.suite = "prefill";
            snprintf(bc.name, sizeof bc.name, "%s", op_name(op));
            bc.shape.B = f->B;
            bc.shape.T = f->T[t];
            bc.shape.H = f->H;
            bc.shape.K = f->K;
            bc.shape.V = f->V;
            bc.shape.N = f->B;
            bc.shape.mode = "parallel";
            bc.flags = (unsigned)op;
            bc.run = prefill_run;
            bench_plan_add(plan, be, &bc);
        }
    }
}

/* ---- the crossover summary ------------------------------------------------------------ */

/* One "crossover" record per module on be: from which T on its parallel
 * mode is faster than softmax attention's causal forward (median times at
 * the same T), with the ratios t_softmax / t_module at every T measured. The
 * record's shape has the family's B, H, K, V and T = that first T (0 when
 * softmax attention is faster at the largest T measured); crossing = the
 * interpolated T. */
void suite_prefill_finish(bench_backend *be, const bench_options *opt)
{
    const prefill_family *f = family(opt);
    for (int m = 0; m < BENCH_N_MATRIX_MODULES; m++) {
        int64_t Ts[PREFILL_MAX_T];
        double ratio[PREFILL_MAX_T]; /* t_softmax / t_module: > 1 = the module faster */
        int n = 0;
        for (int t = 0; t < f->n_T; t++) {
            const prefill_result *rs = find_result(be, PREFILL_SOFTMAX, f->T[t]);
            const prefill_result *rm = find_result(be, m, f->T[t]);
            if (!rs || !rm || !(rm->median_s > 0.0)) continue;
            Ts[n] = f->T[t];
            ratio[n] = rs->median_s / rm->median_s;
            n++;
        }
        if (n == 0) continue; /* skipped on this backend, or filtered out */

        const char *module = bench_module_name((bench_module)m);
        char candidate[64], ratio_name[64];
        snprintf(candidate, sizeof candidate, "parallel %s", module);
        snprintf(ratio_name, sizeof ratio_name, "t_softmax/t_%s", module);
        bench_record r = bench_crossover_record(be, "prefill", module, f->B, f->H, f->K, f->V);
        const bench_crossover cx =
            bench_find_crossover(Ts, ratio, n, candidate, "softmax attention", "faster", "T",
                                 ratio_name, r.note, sizeof r.note);
        r.shape.mode = "parallel";
        r.shape.T = cx.first < n ? Ts[cx.first] : 0;
        r.crossing = cx.crossing;
        report_record(&r);
    }
}
