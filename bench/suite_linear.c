/*
 * bench/suite_linear.c -- the "linear" suite: the linear-state modules of
 * DESIGN 3.1 (seqk_linear_attention, seqk_retention, seqk_gated_retention,
 * seqk_mamba2), gated DeltaNet (seqk_deltanet, DESIGN 3.3) and the Titans
 * memory (seqk_titans, DESIGN 3.4), each in SEQK_MODE_RECURRENT and
 * SEQK_MODE_PARALLEL, bound by
 * the large-sgemm ceiling; then, per module and shape family, where the
 * parallel mode overtakes the recurrent one as T grows ("crossover" records).
 *
 * Inputs: q, k, v (Mamba2: x, B, C) uniform in [-1, 1), scale 1/sqrt(K);
 * retention with RetNet's default gammas (gamma = NULL); gated retention with
 * log-gates g uniform in [-0.1, 0]; Mamba2 with G = 1 group, state size
 * Nst = K, head dim P = V, dt = softplus(dt_raw + dt_bias), dt_raw in [-3, -1),
 * dt_bias in [-1, 0), A in [-2, -0.5), D in [0.5, 1.5). A state_in in
 * [-0.1, 0.1) and a separate state_out are passed, as chunked prefill does.
 * Parallel mode with the library's default chunk C (bench_module_chunk:
 * seqk_chunk_default, 32 at K = V = 64 on the CPU, 64 at 128; DeltaNet 32
 * at both).
 * Gated DeltaNet: flags SEQK_DELTANET_L2NORM_QK, log-gates g uniform in
 * [-0.1, 0], beta uniform in [0, 1], scale 1/sqrt(K).
 * Titans: flags SEQK_TITANS_L2NORM_QK, each shape at two mini-batch sizes
 * b (TITANS_MINIBATCHES: 16 and 64; b is part of the function, so the two
 * modes are compared at the same b, and the case is named "titans
 * minibatch=16" etc.), eta uniform in [0.8, 0.95], theta in [0, 0.1], alpha
 * in [0, 0.05], scale 1/sqrt(K); state [B, H, E], E =
 * seqk_titans_state_size(K, V) = 3 K V + 8, with M, S, Mhat in [-0.1, 0.1)
 * and pos (and the reserved floats) 0.
 *
 * FLOPs counted per call = B * T * H * (flops per token and head), counted by
 * bench_module_flops_per_token_head (bench/modules.c) for this suite and the
 * prefill/decode suites alike:
 *   recurrent:  4 K V                    S += k v^T (2 K V), o = S^T q (2 K V);
 *                                        the decay's K V multiplies not counted
 *   parallel:   (C+1) K + (C+1) V + 2 K V + 2 K V,   C = min(chunk, T)
 *               = what the chunk algorithm computes per token: the causal
 *                 Q K^T and P V on their lower triangle, diagonal included
 *                 (seqk__sgemm_causal: 2 C (C+1)/2 K / C = (C+1) K), the
 *                 inter-chunk Q S0 (2 K V), the chunk state K^T V (2 K V);
 *                 the decays' exponentials are not counted
 * (Mamba2 the same with K = Nst, V = P: B and C are shared by the heads of a
 * group but every head still multiplies them.)
 * Gated DeltaNet:
 *   recurrent:  6 K V                    S'^T k (2 K V), the rank-1 update
 *                                        k (v - S'^T k)^T (2 K V), o = S^T q
 *                                        (2 K V); the gate's K V multiplies
 *                                        and the L2 norms not counted
 *   parallel:   3 (C+1) K + 2 (C+1) V + C^2/3 + 6 K V,   C = min(chunk, T)
 *               = per chunk of C tokens, divided by C, the chunked WY form,
 *                 the causal products on their lower triangle: K K^T
 *                 ((C+1) C K), forward substitution T = (I + A)^-1 (~C^3/3),
 *                 U = T (beta V) ((C+1) C V), W = T (beta K) ((C+1) C K),
 *                 Vnew = U - W S0 (2 C K V), Q K^T ((C+1) C K), P Vnew
 *                 ((C+1) C V), Q S0 (2 C K V), K^T Vnew (2 C K V)
 * Titans (b = the case's mini-batch size, 16 or 64):
 *   recurrent:  8 K V                    Mhat^T k, the gradient's outer
 *                                        product, S and M updates, M^T q
 *                                        (seqk.h's count; the same at every b)
 *   parallel:   10 K V + (b + 1) (K + V),    b = min(minibatch, T)
 *               = the products per mini-batch of b tokens, divided by b:
 *                 Gerr = K Mhat (2 b K V), the inter-batch [Q M0 | Q S0]
 *                 (4 b K V), the end-of-batch state [M; S] += W^T Gerr
 *                 (4 b K V), and the causal intra-batch Q K^T and its mix
 *                 with Gerr counted on their lower triangle, diagonal
 *                 included (b (b + 1) (K + V), what ssm/titans.c computes up
 *                 to the register tiles that straddle the diagonal; the
 *                 convention of bench/modules.c); the gates, the mixing
 *                 matrix and the decays of M and S not counted
 * So the parallel mode counts
 * more flops than the recurrent one for the same output (2x at K = V = C):
 * compare the two by time (the crossover records), and each against the
 * sgemm ceilings by GFLOP/s.
 *
 * Bytes counted per call (fp32, each once): q, k, v read, o written,
 * state_in read, state_out written (Titans: E floats per sequence and head),
 * plus the per-token gates (g; Mamba2's dt; DeltaNet's g and beta; Titans'
 * eta, theta, alpha) and per-head constants; Mamba2 reads B and C once per
 * group, not per head.
 *
 * Bound: "sgemm_large" (frac); the note gives the fraction of "sgemm_64",
 * the rate of the 64x64x64 products that a chunk kernel is made of.
 */
#include "bench.h"

#include <math.h>
#include <string.h>

/* Titans' mini-batch sizes: each Titans shape runs at each of them. */
static const int64_t TITANS_MINIBATCHES[] = {16, 64};
#define N_TITANS_MB ((int)(sizeof TITANS_MINIBATCHES / sizeof TITANS_MINIBATCHES[0]))

typedef enum lin_module {
    LIN_ATTENTION = 0,
    LIN_RETENTION = 1,
    LIN_GATED = 2,
    LIN_MAMBA2 = 3,
    LIN_DELTANET = 4,
    LIN_TITANS = 5,
    LIN_N_MODULES = 6
} lin_module; /* the first six of bench_module, in its order (bench/modules.c counts them) */
_Static_assert((int)LIN_TITANS == (int)BENCH_MOD_TITANS && (int)LIN_DELTANET == (int)BENCH_MOD_DELTANET &&
                   (int)LIN_MAMBA2 == (int)BENCH_MOD_MAMBA2,
               "lin_module follows bench_module");

static const char *const MODULE_NAMES[LIN_N_MODULES] = {
    "linear_attention", "retention", "gated_retention", "mamba2", "deltanet", "titans"};

/* A shape family: B, H, K = V fixed, T growing (ascending). */
#define LIN_MAX_T 4
typedef struct lin_family {
    int64_t B, H, K, V;
    int n_T;
    int64_t T[LIN_MAX_T];
} lin_family;

static const lin_family FAMILIES[] = {
    {2, 8, 64, 64, 3, {256, 1024, 4096}},
    {1, 8, 128, 128, 1, {4096}},
    /* one long sequence of one head: fewer (sequence, head) pairs than
     * threads, the linear-state modules' staged driver (scan/chunk.c) */
    {1, 1, 128, 128, 1, {65536}},
};
/* --quick: a smoke test of the same code paths (T < C, T = C, several chunks). */
static const lin_family FAMILIES_QUICK[] = {
    {1, 2, 32, 32, 3, {16, 64, 256}},
    {1, 2, 64, 64, 1, {128}},
    {1, 1, 32, 32, 1, {512}}, /* one pair: the staged driver */
};
#define N_FAMILIES ((int)(sizeof FAMILIES / sizeof FAMILIES[0]))
/* The loops index both tables with one bound. */
_Static_assert(sizeof FAMILIES / sizeof FAMILIES[0] ==
                   sizeof FAMILIES_QUICK / sizeof FAMILIES_QUICK[0],
               "FAMILIES and FAMILIES_QUICK must have the same number of families");

static const lin_family *families(const bench_options *opt)
{
    return opt->quick ? FAMILIES_QUICK : FAMILIES;
}

/* bench_case.flags: module | family << 8 | variant << 16 (variant: Titans'
 * index into TITANS_MINIBATCHES, 0 for the other modules) */
#define LIN_FLAGS(module, family, variant) \
    ((unsigned)(module) | (unsigned)(family) << 8 | (unsigned)(variant) << 16)
#define LIN_MODULE(flags) ((lin_module)((flags) & 0xffu))
#define LIN_FAMILY(flags) ((int)(((flags) >> 8) & 0xffu))
#define LIN_VARIANT(flags) ((int)((flags) >> 16))

/* Variants of a module: Titans' mini-batch sizes, one for the others. */
static int n_variants(lin_module module) { return module == LIN_TITANS ? N_TITANS_MB : 1; }

/* The case name of a module and variant into out: the module's name, and
 * Titans' mini-batch size ("titans minibatch=16"). */
static void case_name(lin_module module, int variant, char *out, size_t size)
{
    if (module == LIN_TITANS)
        snprintf(out, size, "titans minibatch=%d", (int)TITANS_MINIBATCHES[variant]);
    else
        snprintf(out, size, "%s", MODULE_NAMES[module]);
}

/* ---- results kept for the crossover summary ------------------------------------ */

#define LIN_MAX_RESULTS 256
typedef struct lin_result {
    const bench_backend *be;
    lin_module module;
    int variant;
    int family;
    int64_t T;
    bool parallel;
    double median_s;
} lin_result;

static lin_result g_results[LIN_MAX_RESULTS];
static int g_n_results;

static void keep_result(const bench_backend *be, lin_module module, int variant, int family,
                        int64_t T, bool parallel, double median_s)
{
    if (g_n_results == LIN_MAX_RESULTS) bench_die("linear suite: too many results");
    g_results[g_n_results++] = (lin_result){be, module, variant, family, T, parallel, median_s};
}

static const lin_result *find_result(const bench_backend *be, lin_module module, int variant,
                                     int family, int64_t T, bool parallel)
{
    for (int i = 0; i < g_n_results; i++) {
        const lin_result *r = &g_results[i];
        if (r->be == be && r->module == module && r->variant == variant &&
            r->family == family && r->T == T && r->parallel == parallel)
            return r;
    }
    return NULL;
}

/* ---- FLOP and byte counts -------------------------------------------------------- */

/* Flops per token and head (see the top of the file); minibatch: Titans' b. */
/* ---- the timed calls ---------------------------------------------------------------- */

typedef struct lin_args {
    seqk_context *ctx;
    lin_module module;
    seqk_mode mode;
    int64_t B, T, H, K, V;
    int64_t minibatch;      /* Titans: b */
    int64_t chunk;          /* the chunked modules' C (bench_module_chunk) */
    float scale;
    const float *q, *k, *v; /* [B,T,H,K], [B,T,H,K], [B,T,H,V]; Mamba2: C [B,T,1,K], B [B,T,1,K], x */
    const float *g;         /* gated, DeltaNet: [B,T,H]; Mamba2: dt [B,T,H]; Titans: eta */
    const float *beta;      /* DeltaNet: beta [B,T,H]; Titans: theta [B,T,H] */
    const float *alpha;     /* Titans: alpha [B,T,H] */
    const float *A, *D, *dt_bias; /* Mamba2: [H] each */
    float *o;               /* [B,T,H,V] */
    const float *s_in;      /* [B,H,K,V]; Titans [B,H,E] */
    float *s_out;           /* [B,H,K,V]; Titans [B,H,E] */
} lin_args;

static seqk_status lin_call(void *arg)
{
    const lin_args *a = arg;
    switch (a->module) {
    case LIN_ATTENTION:
        return seqk_linear_attention(a->ctx, a->mode, a->B, a->T, a->H, a->K, a->V, a->scale, 0u,
                                     a->q, a->k, a->v, a->o, a->s_in, a->s_out, NULL, NULL, NULL,
                                     0, a->chunk);
    case LIN_RETENTION:
        return seqk_retention(a->ctx, a->mode, a->B, a->T, a->H, a->K, a->V, a->scale, NULL,
                              a->q, a->k, a->v, a->o, a->s_in, a->s_out, NULL, 0, a->chunk);
    case LIN_GATED:
        return seqk_gated_retention(a->ctx, a->mode, a->B, a->T, a->H, a->K, a->V, a->scale,
                                    a->q, a->k, a->v, a->g, a->o, a->s_in, a->s_out, NULL, 0,
                                    a->chunk);
    case LIN_MAMBA2:
        /* q = C, k = B, x = v, dt = g; P = V, G = 1, Nst = K */
        return seqk_mamba2(a->ctx, a->mode, a->B, a->T, a->H, a->V, 1, a->K,
                           SEQK_MAMBA2_DT_SOFTPLUS, a->v, a->g, a->A, a->k, a->q, a->D,
                           a->dt_bias, a->o, a->s_in, a->s_out, NULL, 0, a->chunk);
    case LIN_DELTANET:
        return seqk_deltanet(a->ctx, a->mode, a->B, a->T, a->H, a->K, a->V, a->scale,
                             SEQK_DELTANET_L2NORM_QK, a->q, a->k, a->v, a->beta, a->g, a->o,
                             a->s_in, a->s_out, NULL, 0, a->chunk);
    case LIN_TITANS:
        return seqk_titans(a->ctx, a->mode, a->B, a->T, a->H, a->K, a->V, a->scale,
                           SEQK_TITANS_L2NORM_QK, a->minibatch, a->q, a->k, a->v, a->g,
                           a->beta, a->alpha, a->o, a->s_in, a->s_out, NULL, 0);
    case LIN_N_MODULES:
        break;
    }
    return SEQK_ERROR_INVALID_ARGUMENT;
}

static void linear_run(const bench_case *bc, bench_backend *be, const bench_options *opt,
                       bench_record *rec)
{
    const bench_shape *sh = &bc->shape;
    const lin_module module = LIN_MODULE(bc->flags);
    const int variant = LIN_VARIANT(bc->flags);
    const int64_t minibatch = module == LIN_TITANS ? TITANS_MINIBATCHES[variant] : 0;
    const bool parallel = strcmp(sh->mode, "parallel") == 0;
    const bool mamba2 = module == LIN_MAMBA2;
    const int64_t B = sh->B, T = sh->T, H = sh->H, K = sh->K, V = sh->V;
    const int64_t qk_heads = mamba2 ? 1 : H; /* Mamba2's B and C: G = 1 group */
    const size_t n_qk = (size_t)(B * T * qk_heads * K);
    const size_t n_v = (size_t)(B * T * H * V);
    const size_t n_tok = (size_t)(B * T * H);
    const bool deltanet = module == LIN_DELTANET;
    const bool titans = module == LIN_TITANS;
    size_t state_floats = (size_t)(K * V); /* per sequence and head */
    if (titans)
        bench_check(seqk_titans_state_size(K, V, &state_floats), "seqk_titans_state_size");
    const size_t n_state = (size_t)(B * H) * state_floats;
    const bool has_g = module == LIN_GATED || mamba2 || deltanet || titans;
    const int n_gates = has_g ? (deltanet ? 2 : titans ? 3 : 1) : 0; /* per-token [B,T,H] arrays */

    float *q = bench_alloc(be, n_qk * sizeof(float), "q");      /* [B,T,H,K]; Mamba2 C [B,T,1,K] */
    float *k = bench_alloc(be, n_qk * sizeof(float), "k");      /* [B,T,H,K]; Mamba2 B [B,T,1,K] */
    float *v = bench_alloc(be, n_v * sizeof(float), "v");       /* [B,T,H,V]; Mamba2 x */
    float *o = bench_alloc(be, n_v * sizeof(float), "o");       /* [B,T,H,V]; Mamba2 y */
    float *s_in = bench_alloc(be, n_state * sizeof(float), "state_in");   /* [B,H,K,V]; Titans [B,H,E] */
    float *s_out = bench_alloc(be, n_state * sizeof(float), "state_out"); /* [B,H,K,V]; Titans [B,H,E] */
    float *g = has_g ? bench_alloc(be, n_tok * sizeof(float), "g") : NULL; /* [B,T,H]; Titans eta */
    float *beta = deltanet || titans ? bench_alloc(be, n_tok * sizeof(float), "beta") : NULL;
    float *alpha = titans ? bench_alloc(be, n_tok * sizeof(float), "alpha") : NULL; /* [B,T,H] */
    float *A = NULL, *D = NULL, *dt_bias = NULL;                           /* [H] each */
    bench_fill_uniform(be, q, n_qk, -1.0f, 1.0f, 31);
    bench_fill_uniform(be, k, n_qk, -1.0f, 1.0f, 32);
    bench_fill_uniform(be, v, n_v, -1.0f, 1.0f, 33);
    bench_fill_uniform(be, o, n_v, 0.0f, 0.0f, 34);
    bench_fill_uniform(be, s_in, n_state, -0.1f, 0.1f, 35);
    bench_fill_uniform(be, s_out, n_state, 0.0f, 0.0f, 36);
    if (module == LIN_GATED || deltanet) bench_fill_uniform(be, g, n_tok, -0.1f, 0.0f, 37);
    if (deltanet) bench_fill_uniform(be, beta, n_tok, 0.0f, 1.0f, 42);
    if (titans) {
        bench_fill_uniform(be, g, n_tok, 0.8f, 0.95f, 43);    /* eta */
        bench_fill_uniform(be, beta, n_tok, 0.0f, 0.1f, 44);  /* theta */
        bench_fill_uniform(be, alpha, n_tok, 0.0f, 0.05f, 45);
        /* pos (an integer in [0, b)) and the reserved floats of every block: 0 */
        const size_t kv3 = (size_t)(3 * K * V);
        for (size_t bh = 0; bh < (size_t)(B * H); bh++)
            bench_fill_uniform(be, s_in + bh * state_floats + kv3, state_floats - kv3, 0.0f,
                               0.0f, 46);
    }
    if (mamba2) {
        A = bench_alloc(be, (size_t)H * sizeof(float), "A");
        D = bench_alloc(be, (size_t)H * sizeof(float), "D");
        dt_bias = bench_alloc(be, (size_t)H * sizeof(float), "dt_bias");
        bench_fill_uniform(be, g, n_tok, -3.0f, -1.0f, 38); /* raw dt */
        bench_fill_uniform(be, A, (size_t)H, -2.0f, -0.5f, 39);
        bench_fill_uniform(be, D, (size_t)H, 0.5f, 1.5f, 40);
        bench_fill_uniform(be, dt_bias, (size_t)H, -1.0f, 0.0f, 41);
    }

    const seqk_mode mode = parallel ? SEQK_MODE_PARALLEL : SEQK_MODE_RECURRENT;
    const bench_module family = deltanet ? BENCH_MOD_DELTANET : BENCH_MOD_LINEAR_ATTENTION;
    const int64_t chunk = bench_module_chunk(be->ctx, family, K, V); /* the chunked modules' C */
    size_t workspace = 0;
    if (deltanet)
        bench_check(seqk_deltanet_workspace_size(be->ctx, mode, B, T, H, K, V, 0, chunk,
                                                 &workspace),
                    "seqk_deltanet_workspace_size (%s)", sh->mode);
    else if (titans)
        bench_check(seqk_titans_workspace_size(be->ctx, mode, B, T, H, K, V, minibatch, 0,
                                               &workspace),
                    "seqk_titans_workspace_size (%s)", sh->mode);
    else
        bench_check(seqk_linear_state_workspace_size(be->ctx, mode, B, T, H, K, V, 0, chunk,
                                                     &workspace),
                    "seqk_linear_state_workspace_size (%s %s)", bc->name, sh->mode);
    if (workspace > 0)
        bench_check(seqk_context_reserve_workspace(be->ctx, workspace),
                    "seqk_context_reserve_workspace(%zu bytes)", workspace);

    lin_args args = {be->ctx, module, mode, B, T, H, K, V, minibatch, chunk,
                     mamba2 ? 1.0f : 1.0f / sqrtf((float)K),
                     q, k, v, g, beta, alpha, A, D, dt_bias, o, s_in, s_out};
    const seqk_status st = bench_time(be->ctx, lin_call, &args, opt->warmup, opt->repeats,
                                      &rec->stats);
    if (!bench_skip_unsupported(st, rec)) {
        bench_check(st, "%s %s (on %s)", bc->name, sh->mode, be->name);
        rec->flops = (double)n_tok * bench_module_flops_per_token_head((bench_module)module, parallel, T, K, V,
                                                                chunk, minibatch);
        double floats = 2.0 * (double)n_qk + 2.0 * (double)n_v + 2.0 * (double)n_state;
        floats += (double)n_gates * (double)n_tok;
        if (mamba2) floats += 3.0 * (double)H;
        rec->bytes = floats * sizeof(float);
        rec->tokens = (double)(B * T);
        rec->bound = "sgemm_large";
        const size_t bad = bench_count_nonfinite(be, o, n_v) +
                           bench_count_nonfinite(be, s_out, n_state);
        rec->check = bad ? "non-finite" : "ok";
        const double gflops = rec->flops / rec->stats.median_s / 1e9;
        const bench_ceiling *s64 = bench_get_ceiling(be, "sgemm_64");
        char s64_text[96];
        if (s64 && s64->value > 0.0)
            snprintf(s64_text, sizeof s64_text, "%.2f of sgemm_64 (%.1f GFLOP/s)",
                     gflops / s64->value, s64->value);
        else
            snprintf(s64_text, sizeof s64_text, "sgemm_64 not measured");
        if (bad)
            snprintf(rec->note, sizeof rec->note, "%zu of %zu elements of o and state_out are "
                     "NaN or inf; %s", bad, n_v + n_state, s64_text);
        else if (titans)
            snprintf(rec->note, sizeof rec->note, "%s; minibatch %lld%s", s64_text,
                     (long long)minibatch, parallel ? "" : ", token by token");
        else if (parallel)
            snprintf(rec->note, sizeof rec->note, "%s; chunk %lld", s64_text, (long long)chunk);
        else
            snprintf(rec->note, sizeof rec->note, "%s; token by token", s64_text);
        keep_result(be, module, variant, LIN_FAMILY(bc->flags), T, parallel,
                    rec->stats.median_s);
    }

    if (mamba2) {
        bench_free(be, dt_bias);
        bench_free(be, D);
        bench_free(be, A);
    }
    if (alpha) bench_free(be, alpha);
    if (beta) bench_free(be, beta);
    if (g) bench_free(be, g);
    bench_free(be, s_out);
    bench_free(be, s_in);
    bench_free(be, o);
    bench_free(be, v);
    bench_free(be, k);
    bench_free(be, q);
}

void suite_linear_plan(bench_plan *plan, bench_backend *be, const bench_options *opt)
{
    const lin_family *fam = families(opt);
    static const char *const MODES[2] = {"recurrent", "parallel"};
    /* Module, mini-batch size (Titans), family, T, then both modes back to
     * back: the two timings that the crossover compares are taken close
     * together in time. */
    for (int m = 0; m < LIN_N_MODULES; m++) {
        for (int var = 0; var < n_variants((lin_module)m); var++) {
            for (int f = 0; f < N_FAMILIES; f++) {
                for (int t = 0; t < fam[f].n_T; t++) {
                    for (int p = 0; p < 2; p++) {
                        bench_case bc = {0};
                        bc.suite = "linear";
                        case_name((lin_module)m, var, bc.name, sizeof bc.name);
                        bc.shape.B = fam[f].B;
                        bc.shape.T = fam[f].T[t];
                        bc.shape.H = fam[f].H;
                        bc.shape.K = fam[f].K;
                        bc.shape.V = fam[f].V;
                        bc.shape.N = fam[f].B;
                        bc.shape.mode = MODES[p];
                        bc.flags = LIN_FLAGS(m, f, var);
                        bc.run = linear_run;
                        bench_plan_add(plan, be, &bc);
                    }
                }
            }
        }
    }
}

/* ---- the crossover summary ------------------------------------------------------------ */

/* One "crossover" record per module (Titans: per mini-batch size) and shape
 * family on be: from which T on the parallel mode is faster than the
 * recurrent one (median times), with the time ratios recurrent / parallel at
 * every T measured. The record's shape has the family's B, H, K, V and T =
 * that first T (0 when the recurrent mode is faster at the largest T
 * measured). */
void suite_linear_finish(bench_backend *be, const bench_options *opt)
{
    const lin_family *fam = families(opt);
    for (int m = 0; m < LIN_N_MODULES; m++) {
        for (int var = 0; var < n_variants((lin_module)m); var++) {
            for (int f = 0; f < N_FAMILIES; f++) {
                const lin_family *fm = &fam[f];
                int64_t Ts[LIN_MAX_T];
                double ratio[LIN_MAX_T]; /* t_recurrent / t_parallel: > 1 = parallel faster */
                int n = 0;
                for (int t = 0; t < fm->n_T; t++) {
                    const lin_result *rr = find_result(be, (lin_module)m, var, f, fm->T[t], false);
                    const lin_result *rp = find_result(be, (lin_module)m, var, f, fm->T[t], true);
                    if (!rr || !rp || !(rp->median_s > 0.0)) continue;
                    Ts[n] = fm->T[t];
                    ratio[n] = rr->median_s / rp->median_s;
                    n++;
                }
                if (n == 0) continue; /* skipped on this backend */

                /* first: the smallest index from which parallel is faster at every larger T */
                int first = n;
                while (first > 0 && ratio[first - 1] > 1.0) first--;

                char verdict[256];
                size_t len = 0;
                if (first == n) {
                    bool any = false;
                    for (int i = 0; i < n; i++) any = any || ratio[i] > 1.0;
                    if (!any) {
                        len = (size_t)snprintf(verdict, sizeof verdict,
                                               "recurrent faster at every T measured");
                    } else {
                        /* noise, or a parallel mode that loses ground as T grows */
                        len = (size_t)snprintf(verdict, sizeof verdict,
                                               "recurrent faster at the largest T measured, "
                                               "parallel faster only at T =");
                        for (int i = 0; i < n && len < sizeof verdict; i++)
                            if (ratio[i] > 1.0)
                                len += (size_t)snprintf(verdict + len, sizeof verdict - len,
                                                        " %lld", (long long)Ts[i]);
                    }
                } else if (first == 0) {
                    len = (size_t)snprintf(verdict, sizeof verdict,
                                           "parallel faster from T = %lld (%s)",
                                           (long long)Ts[0],
                                           n == 1 ? "the only T measured"
                                                  : "every T measured");
                } else {
                    /* log-log interpolation of the ratio between the two Ts around 1 */
                    const double x0 = log((double)Ts[first - 1]), x1 = log((double)Ts[first]);
                    const double y0 = log(ratio[first - 1]), y1 = log(ratio[first]);
                    const double x = y1 != y0 ? x0 + (0.0 - y0) * (x1 - x0) / (y1 - y0) : x1;
                    len = (size_t)snprintf(verdict, sizeof verdict,
                                           "parallel faster from T = %lld (crossing near T ~ %.0f)",
                                           (long long)Ts[first], exp(x));
                }
                if (len < sizeof verdict)
                    len += (size_t)snprintf(verdict + len, sizeof verdict - len, "; t_rec/t_par:");
                for (int i = 0; i < n && len < sizeof verdict; i++)
                    len += (size_t)snprintf(verdict + len, sizeof verdict - len, " T=%lld %.2f",
                                            (long long)Ts[i], ratio[i]);

                char cname[48];
                case_name((lin_module)m, var, cname, sizeof cname);
                bench_record r =
                    bench_crossover_record(be, "linear", cname, fm->B, fm->H, fm->K, fm->V);
                r.shape.T = first < n ? Ts[first] : 0;
                snprintf(r.note, sizeof r.note, "%s", verdict);
                report_record(&r);
            }
        }
    }
}
