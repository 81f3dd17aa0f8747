/*
 * bench/modules.c -- the recurrent-state modules (linear attention,
 * retention, gated retention, Mamba2, gated DeltaNet, Titans, the selective
 * scan), set up, called and counted through one interface, for the suites
 * that compare them all with softmax attention (suite_prefill.c,
 * suite_decode.c). Inputs: see bench_module in bench.h (the linear and sscan
 * suites' inputs).
 *
 * FLOPs counted per call = B * T * H * (flops per token and head), the
 * linear suite's counts (suite_linear.c has the derivations), chunk
 * C = min(chunk, T) (the library's default chunk), mini-batch b = min(BENCH_TITANS_MINIBATCH, T):
 *                      recurrent      parallel
 *   linear attention,  4 K V          (C+1) K + (C+1) V + 4 K V
 *   retention, gated
 *   retention, Mamba2
 *   gated DeltaNet     6 K V          3 (C+1) K + 2 (C+1) V + C^2/3 + 6 K V
 *   Titans             8 K V          10 K V + (b+1) (K + V)
 * (the causal C x C products count their lower triangle, diagonal included,
 * which is what seqk__sgemm_causal computes up to the register tiles that
 * straddle the diagonal: 2 C (C+1)/2 K / C = (C+1) K per token)
 * and the selective scan 6 B T D Nst (suite_sscan.c: dt*A, dt*B*u, the decay
 * multiply-add, C*h and its sum per state element; exp, softplus, skip and
 * gate not counted).
 *
 * Bytes counted per call (fp32, each once): q, k, v read, o written; the
 * state read (when passed in) and written; the per-token gates; the per-head
 * constants (Mamba2: A, D, dt_bias [H]; Mamba2 reads B and C once per group).
 * Selective scan: u, dt, z read, y written [B,T,D], Bm, Cm [B,T,1,Nst] read,
 * the state read and written, and A [D,Nst], Dskip, dt_bias [D] read: A is
 * as large as a sequence's state, so a decoding step must count it (the
 * sscan suite, over long T, leaves these constants out).
 */
#include "bench.h"

#include <math.h>

static const char *const MODULE_NAMES[BENCH_N_MODULES] = {
    "linear_attention", "retention", "gated_retention", "mamba2",
    "deltanet",         "titans",    "selective_scan"};

const char *bench_module_name(bench_module m)
{
    return (unsigned)m < BENCH_N_MODULES ? MODULE_NAMES[m] : "?";
}

size_t bench_module_state_floats(bench_module m, int64_t H, int64_t K, int64_t V)
{
    if (m == BENCH_MOD_SELECTIVE_SCAN) return (size_t)(H * K); /* D x Nst */
    size_t per_head = (size_t)(K * V);
    if (m == BENCH_MOD_TITANS)
        bench_check(seqk_titans_state_size(K, V, &per_head), "seqk_titans_state_size");
    return (size_t)H * per_head;
}

int64_t bench_module_chunk(seqk_context *ctx, bench_module m, int64_t K, int64_t V)
{
    const seqk_chunked_op op =
        m == BENCH_MOD_DELTANET ? SEQK_CHUNKED_DELTANET : SEQK_CHUNKED_LINEAR_STATE;
    int64_t chunk = 0;
    bench_check(seqk_chunk_default(ctx, op, K, V, &chunk), "seqk_chunk_default(K=%lld, V=%lld)",
                (long long)K, (long long)V);
    return chunk;
}

double bench_module_flops_per_token_head(bench_module m, bool parallel, int64_t T, int64_t K,
                                         int64_t V, int64_t chunk, int64_t minibatch)
{
    const double k = (double)K, v = (double)V, kv = k * v;
    const double C = (double)(T < chunk ? T : chunk);
    switch (m) {
    case BENCH_MOD_SELECTIVE_SCAN:
        return 6.0 * k; /* per channel: Nst state elements */
    case BENCH_MOD_DELTANET:
        if (!parallel) return 6.0 * kv;
        return 3.0 * (C + 1.0) * k + 2.0 * (C + 1.0) * v + C * C / 3.0 + 6.0 * kv;
    case BENCH_MOD_TITANS: {
        if (!parallel) return 8.0 * kv;
        const double b = (double)(T < minibatch ? T : minibatch);
        return 10.0 * kv + (b + 1.0) * (k + v);
    }
    case BENCH_MOD_LINEAR_ATTENTION:
    case BENCH_MOD_RETENTION:
    case BENCH_MOD_GATED_RETENTION:
    case BENCH_MOD_MAMBA2:
    case BENCH_N_MODULES:
        break;
    }
    if (!parallel) return 4.0 * kv;
    return (C + 1.0) * k + (C + 1.0) * v + 4.0 * kv;
}

double bench_module_flops(const bench_module_call *c)
{
    return (double)c->n_tok *
           bench_module_flops_per_token_head(c->module, c->mode == SEQK_MODE_PARALLEL, c->T, c->K,
                                             c->V, c->chunk, BENCH_TITANS_MINIBATCH);
}

double bench_module_bytes(const bench_module_call *c)
{
    const double state_moves = c->state_use == BENCH_STATE_IN_PLACE ? 2.0 : 1.0;
    double floats = 2.0 * (double)c->n_qk + 2.0 * (double)c->n_v;
    floats += state_moves * (double)c->n_state;
    floats += (double)c->n_gates * (double)c->n_tok + (double)c->n_const;
    return floats * sizeof(float);
}

size_t bench_module_nonfinite(bench_backend *be, const bench_module_call *c)
{
    return bench_count_nonfinite(be, c->o, c->n_v) + bench_count_nonfinite(be, c->state, c->n_state);
}

/* ---- set-up ------------------------------------------------------------------------- */

static void setup_selective_scan(bench_backend *be, bench_module_call *c)
{
    /* H = D channels, K = Nst, one group */
    const int64_t B = c->B, T = c->T, D = c->H, Nst = c->K;
    c->n_qk = (size_t)(B * T * Nst); /* Bm, Cm */
    c->n_v = (size_t)(B * T * D);    /* u, y */
    c->n_tok = (size_t)(B * T * D);  /* dt, z */
    c->n_gates = 2;
    c->n_const = (size_t)(D * Nst + 2 * D);
    c->q = bench_alloc(be, c->n_qk * sizeof(float), "Cm"); /* [B,T,1,Nst] */
    c->k = bench_alloc(be, c->n_qk * sizeof(float), "Bm"); /* [B,T,1,Nst] */
    c->v = bench_alloc(be, c->n_v * sizeof(float), "u");   /* [B,T,D] */
    c->o = bench_alloc(be, c->n_v * sizeof(float), "y");   /* [B,T,D] */
    c->g = bench_alloc(be, c->n_tok * sizeof(float), "dt");   /* [B,T,D] raw dt */
    c->beta = bench_alloc(be, c->n_tok * sizeof(float), "z"); /* [B,T,D] */
    c->A = bench_alloc(be, (size_t)(D * Nst) * sizeof(float), "A"); /* [D,Nst] */
    c->D = bench_alloc(be, (size_t)D * sizeof(float), "Dskip");     /* [D] */
    c->dt_bias = bench_alloc(be, (size_t)D * sizeof(float), "dt_bias"); /* [D] */
    bench_fill_uniform(be, c->q, c->n_qk, -1.0f, 1.0f, 56);
    bench_fill_uniform(be, c->k, c->n_qk, -1.0f, 1.0f, 55);
    bench_fill_uniform(be, c->v, c->n_v, -1.0f, 1.0f, 51);
    bench_fill_uniform(be, c->o, c->n_v, 0.0f, 0.0f, 54);
    bench_fill_uniform(be, c->g, c->n_tok, -3.0f, -1.0f, 52);
    bench_fill_uniform(be, c->beta, c->n_tok, -1.0f, 1.0f, 53);
    bench_fill_uniform(be, c->A, (size_t)(D * Nst), -4.0f, -0.5f, 57);
    bench_fill_uniform(be, c->D, (size_t)D, 0.5f, 1.5f, 58);
    bench_fill_uniform(be, c->dt_bias, (size_t)D, -1.0f, 0.0f, 59);
}

void bench_module_setup(bench_backend *be, bench_module_call *c, bench_module module,
                        seqk_mode mode, bench_state_use state_use, int64_t B, int64_t T,
                        int64_t H, int64_t K, int64_t V)
{
    *c = (bench_module_call){0};
    c->ctx = be->ctx;
    c->module = module;
    c->mode = mode;
    c->state_use = state_use;
    c->B = B, c->T = T, c->H = H, c->K = K, c->V = V;
    c->chunk = module == BENCH_MOD_SELECTIVE_SCAN ? 0 : bench_module_chunk(be->ctx, module, K, V);
    c->scale = module == BENCH_MOD_MAMBA2 ? 1.0f : 1.0f / sqrtf((float)K);
    const size_t state_floats = bench_module_state_floats(module, H, K, V); /* per sequence */
    c->n_state = (size_t)B * state_floats;
    c->state = bench_alloc(be, c->n_state * sizeof(float), "state"); /* [B,H,K,V]; Titans
                                                                        [B,H,E]; sscan [B,D,Nst] */
    bench_fill_uniform(be, c->state, c->n_state, -0.1f, 0.1f, 35);
    if (module == BENCH_MOD_SELECTIVE_SCAN) {
        setup_selective_scan(be, c);
        return;
    }

    const bool mamba2 = module == BENCH_MOD_MAMBA2, deltanet = module == BENCH_MOD_DELTANET;
    const bool titans = module == BENCH_MOD_TITANS;
    const int64_t qk_heads = mamba2 ? 1 : H; /* Mamba2's B and C: G = 1 group */
    c->n_qk = (size_t)(B * T * qk_heads * K);
    c->n_v = (size_t)(B * T * H * V);
    c->n_tok = (size_t)(B * T * H);
    c->n_gates = module == BENCH_MOD_GATED_RETENTION || mamba2 ? 1 : deltanet ? 2 : titans ? 3 : 0;
    c->n_const = mamba2 ? (size_t)(3 * H) : 0;
    c->q = bench_alloc(be, c->n_qk * sizeof(float), "q"); /* [B,T,H,K]; Mamba2 C [B,T,1,K] */
    c->k = bench_alloc(be, c->n_qk * sizeof(float), "k"); /* [B,T,H,K]; Mamba2 B [B,T,1,K] */
    c->v = bench_alloc(be, c->n_v * sizeof(float), "v");  /* [B,T,H,V]; Mamba2 x */
    c->o = bench_alloc(be, c->n_v * sizeof(float), "o");  /* [B,T,H,V]; Mamba2 y */
    bench_fill_uniform(be, c->q, c->n_qk, -1.0f, 1.0f, 31);
    bench_fill_uniform(be, c->k, c->n_qk, -1.0f, 1.0f, 32);
    bench_fill_uniform(be, c->v, c->n_v, -1.0f, 1.0f, 33);
    bench_fill_uniform(be, c->o, c->n_v, 0.0f, 0.0f, 34);
    if (c->n_gates >= 1) c->g = bench_alloc(be, c->n_tok * sizeof(float), "g"); /* [B,T,H] */
    if (c->n_gates >= 2) c->beta = bench_alloc(be, c->n_tok * sizeof(float), "beta");
    if (c->n_gates >= 3) c->alpha = bench_alloc(be, c->n_tok * sizeof(float), "alpha");
    if (module == BENCH_MOD_GATED_RETENTION || deltanet)
        bench_fill_uniform(be, c->g, c->n_tok, -0.1f, 0.0f, 37);
    if (deltanet) bench_fill_uniform(be, c->beta, c->n_tok, 0.0f, 1.0f, 42);
    if (titans) {
        bench_fill_uniform(be, c->g, c->n_tok, 0.8f, 0.95f, 43);    /* eta */
        /* theta: a decoding bench repeats one token thousands of times, which the
         * momentum (eta near 1) and the mini-batch's stale gradient amplify
         * past stability for theta ~ 0.1 (seqk.h: momentum near 1 needs a
         * small theta, 1e-3 at b = 16); a prefill sees varied tokens */
        const float theta_max = state_use == BENCH_STATE_IN_PLACE ? 1e-3f : 0.1f;
        bench_fill_uniform(be, c->beta, c->n_tok, 0.0f, theta_max, 44); /* theta */
        bench_fill_uniform(be, c->alpha, c->n_tok, 0.0f, 0.05f, 45);
        /* pos (an integer in [0, b)) and the reserved floats of every block: 0 */
        const size_t per_head = state_floats / (size_t)H, kv3 = (size_t)(3 * K * V);
        for (size_t bh = 0; bh < (size_t)(B * H); bh++)
            bench_fill_uniform(be, c->state + bh * per_head + kv3, per_head - kv3, 0.0f, 0.0f,
                               46);
    }
    if (mamba2) {
        c->A = bench_alloc(be, (size_t)H * sizeof(float), "A");             /* [H] */
        c->D = bench_alloc(be, (size_t)H * sizeof(float), "D");             /* [H] */
        c->dt_bias = bench_alloc(be, (size_t)H * sizeof(float), "dt_bias"); /* [H] */
        bench_fill_uniform(be, c->g, c->n_tok, -3.0f, -1.0f, 38); /* raw dt */
        bench_fill_uniform(be, c->A, (size_t)H, -2.0f, -0.5f, 39);
        bench_fill_uniform(be, c->D, (size_t)H, 0.5f, 1.5f, 40);
        bench_fill_uniform(be, c->dt_bias, (size_t)H, -1.0f, 0.0f, 41);
    }

    size_t workspace = 0;
    if (deltanet)
        bench_check(seqk_deltanet_workspace_size(be->ctx, mode, B, T, H, K, V, 0,
                                                 c->chunk, &workspace),
                    "seqk_deltanet_workspace_size");
    else if (titans)
        bench_check(seqk_titans_workspace_size(be->ctx, mode, B, T, H, K, V,
                                               BENCH_TITANS_MINIBATCH, 0, &workspace),
                    "seqk_titans_workspace_size");
    else
        bench_check(seqk_linear_state_workspace_size(be->ctx, mode, B, T, H, K, V, 0,
                                                     c->chunk, &workspace),
                    "seqk_linear_state_workspace_size (%s)", bench_module_name(module));
    if (workspace > 0)
        bench_check(seqk_context_reserve_workspace(be->ctx, workspace),
                    "seqk_context_reserve_workspace(%zu bytes)", workspace);
}

void bench_module_teardown(bench_backend *be, bench_module_call *c)
{
    float *const bufs[] = {c->dt_bias, c->D, c->A, c->alpha, c->beta, c->g,
                           c->o,       c->v, c->k, c->q,     c->state};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]) bench_free(be, bufs[i]);
    *c = (bench_module_call){0};
}

/* ---- the call ----------------------------------------------------------------------- */

seqk_status bench_module_run(void *arg)
{
    const bench_module_call *a = arg;
    /* a prefill from scratch reads no state; a decoding step updates it in place */
    const float *s_in = a->state_use == BENCH_STATE_IN_PLACE ? a->state : NULL;
    float *s_out = a->state;
    switch (a->module) {
    case BENCH_MOD_LINEAR_ATTENTION:
        return seqk_linear_attention(a->ctx, a->mode, a->B, a->T, a->H, a->K, a->V, a->scale, 0,
                                     a->q, a->k, a->v, a->o, s_in, s_out, NULL, NULL, NULL, 0,
                                     a->chunk);
    case BENCH_MOD_RETENTION:
        return seqk_retention(a->ctx, a->mode, a->B, a->T, a->H, a->K, a->V, a->scale, NULL,
                              a->q, a->k, a->v, a->o, s_in, s_out, NULL, 0, a->chunk);
    case BENCH_MOD_GATED_RETENTION:
        return seqk_gated_retention(a->ctx, a->mode, a->B, a->T, a->H, a->K, a->V, a->scale,
                                    a->q, a->k, a->v, a->g, a->o, s_in, s_out, NULL, 0,
                                    a->chunk);
    case BENCH_MOD_MAMBA2:
        /* q = C, k = B, x = v, dt = g; P = V, G = 1, Nst = K */
        return seqk_mamba2(a->ctx, a->mode, a->B, a->T, a->H, a->V, 1, a->K,
                           SEQK_MAMBA2_DT_SOFTPLUS, a->v, a->g, a->A, a->k, a->q, a->D,
                           a->dt_bias, a->o, s_in, s_out, NULL, 0, a->chunk);
    case BENCH_MOD_DELTANET:
        return seqk_deltanet(a->ctx, a->mode, a->B, a->T, a->H, a->K, a->V, a->scale,
                             SEQK_DELTANET_L2NORM_QK, a->q, a->k, a->v, a->beta, a->g, a->o,
                             s_in, s_out, NULL, 0, a->chunk);
    case BENCH_MOD_TITANS:
        return seqk_titans(a->ctx, a->mode, a->B, a->T, a->H, a->K, a->V, a->scale,
                           SEQK_TITANS_L2NORM_QK, BENCH_TITANS_MINIBATCH, a->q, a->k, a->v, a->g,
                           a->beta, a->alpha, a->o, s_in, s_out, NULL, 0);
    case BENCH_MOD_SELECTIVE_SCAN:
        /* H = D channels, K = Nst, G = 1; u = v, dt = g, z = beta, Bm = k, Cm = q */
        return seqk_selective_scan(a->ctx, a->mode, a->B, a->T, a->H, a->K, 1,
                                   SEQK_SSCAN_DT_SOFTPLUS, a->v, a->g, a->A, a->k, a->q, a->D,
                                   a->beta, a->dt_bias, a->o, s_in, s_out, NULL, 0);
    case BENCH_N_MODULES:
        break;
    }
    return SEQK_ERROR_INVALID_ARGUMENT;
}
