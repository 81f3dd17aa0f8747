/*
 * bench/suite_decode.c -- the "decode" suite: one decoding step, softmax
 * attention over a KV cache of L tokens (seqk_attention_decode; the cache is
 * the caller's) against the recurrent step of every recurrent-state module
 * (T = 1, state updated in place: linear attention, retention, gated
 * retention, Mamba2, gated DeltaNet, Titans, and the selective scan in its
 * own shape), as the context length L grows; then, per module, the L from
 * which its step is faster than softmax decoding ("crossover" records).
 *
 * Shape families (H = 8 heads, Hq = Hkv = H for softmax attention):
 *   B = 1, K = V = 128, L = 64 .. 65536 (powers of 2)   one stream, large heads
 *   B = 8, K = V = 64,  L = 64 .. 16384                 a small batch
 * The short contexts are there because that is where the crossovers are: a
 * step reads and writes its state, 2 H K V floats per sequence, as many as
 * softmax decoding reads from a cache of L = 2 K V / (K + V) = D tokens
 * (Titans: 3 times that); the long ones, up to caches of 512 MiB, show
 * the growth.
 * (--quick: B = 1, H = 2, K = V = 32, L = 64 .. 1024 and B = 2, H = 2,
 * K = V = 16, L = 64 .. 256.) The selective scan gets Mamba1's shape for a
 * model of the same width: D = 2 H K channels (expand 2 of d_model = H K),
 * Nst = 16 (records: C = D, K = Nst, H = 1 group, as in the sscan suite).
 *
 * The step's cost does not depend on L (the state has the same size at
 * every context length): each module's step is measured once per family and
 * that one time is compared with softmax decoding at every L (its record
 * has T = 1; the crossover records list the ratio at each L). Softmax
 * decoding is measured at each L: cache capacity max_len = L, cache_len[b] =
 * L - 1, so the step appends the new token at position L - 1 and attends
 * over L tokens (every repeat rewrites that slot with the same k, v).
 *
 * Inputs: q, k_new, v_new and the caches uniform in [-1, 1), scale
 * 1/sqrt(K); the modules as in modules.c, with a state in [-0.1, 0.1)
 * carried from step to step in place (s_in == s_out). Repeats run on the
 * same buffers, so a cache or a state that fits the CPU's caches is read
 * from them (small L, the B = 1 states): a model with many layers would
 * stream each layer's from DRAM. Fractions of "copy" above 1 mean exactly
 * that.
 *
 * Counted per step (fp32):
 *   softmax decode: flops B H L (2 K + 2 V) (q.k over the L cached keys,
 *     p.v over the L values; exp and rescaling not counted); bytes: the
 *     cache read, B L H (K + V) 4, plus q, k_new, v_new read, the new k, v
 *     written into the cache and o written.
 *   recurrent step: flops and bytes as modules.c counts them with T = 1: the
 *     state read and written (B H K V floats each way; Titans B H E; the
 *     selective scan B D Nst, plus its A [D, Nst]), q, k, v, o and the gates.
 * Bound: "copy" for all (decoding is memory bound). Main figure: tokens per
 * second, B / median (each record's tokens/s).
 */
#include "bench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define DECODE_MAX_L 12
#define DECODE_SSCAN_NST 16
#define DECODE_BUDGET_S 3.0
#define DECODE_MIN_REPEATS 3

typedef struct decode_family {
    int64_t B, H, D; /* batch, heads, head dim (K = V = D) */
    int n_L;
    int64_t L[DECODE_MAX_L];
} decode_family;

static const decode_family FAMILIES[] = {
    {1, 8, 128, 11, {64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536}},
    {8, 8, 64, 9, {64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384}},
};
static const decode_family FAMILIES_QUICK[] = {
    {1, 2, 32, 5, {64, 128, 256, 512, 1024}},
    {2, 2, 16, 3, {64, 128, 256}},
};
#define N_FAMILIES ((int)(sizeof FAMILIES / sizeof FAMILIES[0]))
/* The loops index both tables with one bound. */
_Static_assert(sizeof FAMILIES / sizeof FAMILIES[0] ==
                   sizeof FAMILIES_QUICK / sizeof FAMILIES_QUICK[0],
               "FAMILIES and FAMILIES_QUICK must have the same number of families");

static const decode_family *families(const bench_options *opt)
{
    return opt->quick ? FAMILIES_QUICK : FAMILIES;
}

/* The ops: the seven modules' steps, then softmax decoding. */
#define DECODE_SOFTMAX BENCH_N_MODULES
/* bench_case.flags: op | family << 8 */
#define DECODE_FLAGS(op, family) ((unsigned)(op) | (unsigned)(family) << 8)
#define DECODE_OP(flags) ((int)((flags) & 0xffu))
#define DECODE_FAMILY(flags) ((int)((flags) >> 8))

/* ---- results kept for the crossover summary --------------------------------------------- */

#define DECODE_MAX_RESULTS 256
typedef struct decode_result {
    const bench_backend *be;
    int op, family;
    int64_t L; /* softmax: the context length; a step: 0 (any L) */
    double median_s;
} decode_result;

static decode_result g_results[DECODE_MAX_RESULTS];
static int g_n_results;

static void keep_result(const bench_backend *be, int op, int family, int64_t L, double median_s)
{
    if (g_n_results == DECODE_MAX_RESULTS) bench_die("decode suite: too many results");
    g_results[g_n_results++] = (decode_result){be, op, family, L, median_s};
}

static const decode_result *find_result(const bench_backend *be, int op, int family, int64_t L)
{
    for (int i = 0; i < g_n_results; i++) {
        const decode_result *r = &g_results[i];
        if (r->be == be && r->op == op && r->family == family && r->L == L) return r;
    }
    return NULL;
}

/* ---- softmax decoding ----------------------------------------------------------------- */

typedef struct softmax_decode_args {
    seqk_context *ctx;
    int64_t B, H, D, L;
    float scale;
    const float *q, *k_new, *v_new; /* [B,H,D] each */
    float *k_cache, *v_cache;       /* [B,L,H,D] each */
    const int32_t *cache_len;       /* [B], L - 1 each */
    float *o;                       /* [B,H,D] */
} softmax_decode_args;

static seqk_status softmax_decode_call(void *arg)
{
    const softmax_decode_args *a = arg;
    return seqk_attention_decode(a->ctx, a->B, a->H, a->H, a->D, a->D, a->L, a->scale, a->q,
                                 a->k_new, a->v_new, a->k_cache, a->v_cache, a->cache_len, a->o,
                                 NULL);
}

static void run_softmax(const bench_case *bc, bench_backend *be, const bench_options *opt,
                        bench_record *rec)
{
    const int64_t B = bc->shape.B, H = bc->shape.H, D = bc->shape.K, L = bc->shape.T;
    const size_t n_tok = (size_t)(B * H * D);     /* one token's q (or k, v, o) */
    const size_t n_cache = (size_t)(B * L * H * D); /* one cache */
    float *q = bench_alloc(be, n_tok * sizeof(float), "q");             /* [B,H,D] */
    float *k_new = bench_alloc(be, n_tok * sizeof(float), "k_new");     /* [B,H,D] */
    float *v_new = bench_alloc(be, n_tok * sizeof(float), "v_new");     /* [B,H,D] */
    float *o = bench_alloc(be, n_tok * sizeof(float), "o");             /* [B,H,D] */
    float *k_cache = bench_alloc(be, n_cache * sizeof(float), "k_cache"); /* [B,L,H,D] */
    float *v_cache = bench_alloc(be, n_cache * sizeof(float), "v_cache"); /* [B,L,H,D] */
    int32_t *cache_len = bench_alloc(be, (size_t)B * sizeof(int32_t), "cache_len"); /* [B] */
    bench_fill_uniform(be, q, n_tok, -1.0f, 1.0f, 71);
    bench_fill_uniform(be, k_new, n_tok, -1.0f, 1.0f, 72);
    bench_fill_uniform(be, v_new, n_tok, -1.0f, 1.0f, 73);
    bench_fill_uniform(be, o, n_tok, 0.0f, 0.0f, 74);
    bench_fill_uniform(be, k_cache, n_cache, -1.0f, 1.0f, 75);
    bench_fill_uniform(be, v_cache, n_cache, -1.0f, 1.0f, 76);
    int32_t *len_host = malloc((size_t)B * sizeof *len_host); /* [B] */
    if (!len_host) bench_die("cannot allocate cache_len");
    for (int64_t b = 0; b < B; b++) len_host[b] = (int32_t)(L - 1);
    bench_upload(be, cache_len, len_host, (size_t)B * sizeof *len_host);
    free(len_host);
    size_t workspace = 0;
    bench_check(seqk_attention_decode_workspace_size(be->ctx, B, H, H, D, D, L, &workspace),
                "seqk_attention_decode_workspace_size");
    if (workspace > 0)
        bench_check(seqk_context_reserve_workspace(be->ctx, workspace),
                    "seqk_context_reserve_workspace(%zu bytes)", workspace);

    softmax_decode_args args = {be->ctx, B, H, D, L, 1.0f / sqrtf((float)D), q, k_new,
                                v_new, k_cache, v_cache, cache_len, o};
    const seqk_status st = bench_time_budget(be->ctx, softmax_decode_call, &args, opt->warmup,
                                             opt->repeats, DECODE_MIN_REPEATS, DECODE_BUDGET_S,
                                             &rec->stats);
    if (!bench_skip_unsupported(st, rec)) {
        bench_check(st, "seqk_attention_decode (L=%lld on %s)", (long long)L, be->name);
        rec->flops = (double)(B * H * L) * 4.0 * (double)D;
        /* the cache read; q, k_new, v_new read; k_new, v_new written into it; o */
        rec->bytes = ((double)(2 * n_cache) + 6.0 * (double)n_tok) * sizeof(float);
        const size_t bad = bench_count_nonfinite(be, o, n_tok);
        rec->check = bad ? "non-finite" : "ok";
        if (bad)
            snprintf(rec->note, sizeof rec->note, "%zu of %zu elements of o are NaN or inf", bad,
                     n_tok);
        else
            snprintf(rec->note, sizeof rec->note,
                     "attends over L = %lld cached tokens (cache %.1f MiB, Hkv = %lld)",
                     (long long)L, (double)(2 * n_cache) * sizeof(float) / 1048576.0,
                     (long long)H);
        keep_result(be, DECODE_SOFTMAX, DECODE_FAMILY(bc->flags), L, rec->stats.median_s);
    }
    bench_free(be, cache_len);
    bench_free(be, v_cache);
    bench_free(be, k_cache);
    bench_free(be, o);
    bench_free(be, v_new);
    bench_free(be, k_new);
    bench_free(be, q);
}

/* ---- a recurrent step ----------------------------------------------------------------- */

static void run_step(const bench_case *bc, bench_backend *be, const bench_options *opt,
                     bench_record *rec)
{
    const bench_module m = (bench_module)DECODE_OP(bc->flags);
    const bench_shape *sh = &bc->shape;
    bench_module_call call;
    if (m == BENCH_MOD_SELECTIVE_SCAN) /* sscan letters: C = D channels, K = Nst */
        bench_module_setup(be, &call, m, SEQK_MODE_RECURRENT, BENCH_STATE_IN_PLACE, sh->B, 1,
                           sh->C, sh->K, 1);
    else
        bench_module_setup(be, &call, m, SEQK_MODE_RECURRENT, BENCH_STATE_IN_PLACE, sh->B, 1,
                           sh->H, sh->K, sh->V);
    const seqk_status st = bench_time_budget(be->ctx, bench_module_run, &call, opt->warmup,
                                             opt->repeats, DECODE_MIN_REPEATS, DECODE_BUDGET_S,
                                             &rec->stats);
    if (!bench_skip_unsupported(st, rec)) {
        bench_check(st, "%s recurrent step (on %s)", bc->name, be->name);
        rec->flops = bench_module_flops(&call);
        rec->bytes = bench_module_bytes(&call);
        const size_t bad = bench_module_nonfinite(be, &call);
        rec->check = bad ? "non-finite" : "ok";
        if (bad)
            snprintf(rec->note, sizeof rec->note,
                     "%zu of %zu elements of o and the state are NaN or inf", bad,
                     call.n_v + call.n_state);
        else
            snprintf(rec->note, sizeof rec->note,
                     "one step in place, state %.1f KiB per sequence; its cost does not depend "
                     "on the context length: measured once, compared with every L",
                     (double)(call.n_state / (size_t)sh->B) * sizeof(float) / 1024.0);
        keep_result(be, (int)m, DECODE_FAMILY(bc->flags), 0, rec->stats.median_s);
    }
    bench_module_teardown(be, &call);
}

static void decode_run(const bench_case *bc, bench_backend *be, const bench_options *opt,
                       bench_record *rec)
{
    rec->bound = "copy";
    rec->tokens = (double)bc->shape.B; /* one new token per sequence */
    if (DECODE_OP(bc->flags) == DECODE_SOFTMAX)
        run_softmax(bc, be, opt, rec);
    else
        run_step(bc, be, opt, rec);
}

/* The selective scan's shape for a family: D = 2 H K channels, Nst = 16. */
static void sscan_shape(const decode_family *f, bench_shape *sh)
{
    sh->C = 2 * f->H * f->D;
    sh->K = DECODE_SSCAN_NST;
    sh->H = 1;
    sh->V = 0;
}

void suite_decode_plan(bench_plan *plan, bench_backend *be, const bench_options *opt)
{
    const decode_family *fam = families(opt);
    for (int f = 0; f < N_FAMILIES; f++) {
        /* the steps, once per family, then softmax decoding at every L */
        for (int op = 0; op <= DECODE_SOFTMAX; op++) {
            const int n = op == DECODE_SOFTMAX ? fam[f].n_L : 1;
            for (int l = 0; l < n; l++) {
                bench_case bc = {0};
                bc.suite = "decode";
                snprintf(bc.name, sizeof bc.name, "%s",
                         op == DECODE_SOFTMAX ? "softmax_attention"
                                              : bench_module_name((bench_module)op));
                bc.shape.B = fam[f].B;
                bc.shape.T = op == DECODE_SOFTMAX ? fam[f].L[l] : 1;
                bc.shape.H = fam[f].H;
                bc.shape.K = fam[f].D;
                bc.shape.V = fam[f].D;
                bc.shape.N = fam[f].B;
                bc.shape.mode = "recurrent";
                if (op == BENCH_MOD_SELECTIVE_SCAN) sscan_shape(&fam[f], &bc.shape);
                bc.flags = DECODE_FLAGS(op, f);
                bc.run = decode_run;
                bench_plan_add(plan, be, &bc);
            }
        }
    }
}

/* ---- the crossover summary ------------------------------------------------------------ */

/* One "crossover" record per module and family on be: from which context
 * length L on its step is faster than softmax decoding, with the ratios
 * t_softmax(L) / t_step at every L measured (t_step measured once: it does
 * not depend on L). The record's shape is the module's (the selective scan
 * in sscan letters) and T = that first L (0 when softmax decoding is faster
 * at the largest L measured); crossing = the interpolated L. */
void suite_decode_finish(bench_backend *be, const bench_options *opt)
{
    const decode_family *fam = families(opt);
    for (int f = 0; f < N_FAMILIES; f++) {
        for (int m = 0; m < BENCH_N_MODULES; m++) {
            const decode_result *rm = find_result(be, m, f, 0);
            if (!rm || !(rm->median_s > 0.0)) continue; /* skipped, or filtered out */
            int64_t Ls[DECODE_MAX_L];
            double ratio[DECODE_MAX_L]; /* t_softmax / t_step: > 1 = the step faster */
            int n = 0;
            for (int l = 0; l < fam[f].n_L; l++) {
                const decode_result *rs = find_result(be, DECODE_SOFTMAX, f, fam[f].L[l]);
                if (!rs) continue;
                Ls[n] = fam[f].L[l];
                ratio[n] = rs->median_s / rm->median_s;
                n++;
            }
            if (n == 0) continue;

            const char *module = bench_module_name((bench_module)m);
            char candidate[64], name[96];
            snprintf(candidate, sizeof candidate, "%s step", module);
            bench_record r = bench_record_init("crossover");
            const bench_crossover cx =
                bench_find_crossover(Ls, ratio, n, candidate, "softmax decoding", "faster", "L",
                                     "t_softmax/t_step", r.note, sizeof r.note);
            r.shape.B = fam[f].B;
            r.shape.H = fam[f].H;
            r.shape.K = fam[f].D;
            r.shape.V = fam[f].D;
            r.shape.N = fam[f].B;
            r.shape.mode = "recurrent";
            if (m == BENCH_MOD_SELECTIVE_SCAN) {
                sscan_shape(&fam[f], &r.shape);
                snprintf(name, sizeof name, "%s B=%lld D=%lld Nst=%lld vs H=%lld K=V=%lld",
                         module, (long long)fam[f].B, (long long)r.shape.C,
                         (long long)r.shape.K, (long long)fam[f].H, (long long)fam[f].D);
            } else {
                snprintf(name, sizeof name, "%s B=%lld H=%lld K=%lld V=%lld", module,
                         (long long)fam[f].B, (long long)fam[f].H, (long long)fam[f].D,
                         (long long)fam[f].D);
            }
            r.suite = "decode";
            r.name = bench_keep_name(name);
            r.backend = be->name;
            r.device = be->device;
            r.threads = bench_record_threads(be);
            r.shape.T = cx.first < n ? Ls[cx.first] : 0;
            r.crossing = cx.crossing;
            report_record(&r);
        }
    }
}
