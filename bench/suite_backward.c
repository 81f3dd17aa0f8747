/*
 * bench/suite_backward.c -- the "backward" suite: the training backward of
 * the linear-state modules (DESIGN 3.7: seqk_linear_attention_backward,
 * seqk_retention_backward, seqk_gated_retention_backward,
 * seqk_mamba2_backward) and of causal softmax attention
 * (seqk_attention_parallel_backward, FlashAttention-2's backward), each timed
 * in the same case as the parallel forward of the same call, so that a record
 * gives the backward's time, its forward's (forward_s), their ratio
 * (bwd_over_fwd) and the backward's fraction of the large-sgemm ceiling.
 * Issue #15's targets (bench.h): bwd/fwd <= BENCH_BACKWARD_MAX_RATIO = 2.5
 * and >= BENCH_BACKWARD_MIN_FRACTION = 0.40 of sgemm_large; report.c prints
 * a table of both beside them, plot.py draws backward_BACKEND.png.
 *
 * Shapes: T = 4096, H = 8 at K = V = 64 (B = 2) and K = V = 128 (B = 1), the
 * linear suite's T = 4096 rows, so its parallel records time the same
 * forwards; Mamba2 as there: G = 1 group, Nst = K, P = V; softmax attention
 * with the same B, H and head dims, Hq = Hkv = H. --quick: B = 1, T = 256,
 * H = 2, K = V = 32 and 64 (a smoke test: several chunks; softmax
 * attention's two-pass form, its items too few on 2 threads for the fused
 * one).
 *
 * The call, the same for the forward and the backward: a training step from
 * scratch. The modules' inputs are those of modules.c (bench_module_setup:
 * q, k, v / C, B, x in [-1, 1), RetNet's gammas, log-gates in [-0.1, 0],
 * Mamba2's dt through softplus, ...), chunk BENCH_MODULE_CHUNK = 64, no
 * initial state, the final state written (the prefill suite's forward,
 * bench_module_run). Their backward takes dout in [-1, 1) and dstate_out in
 * [-0.1, 0.1) (the gradients of both outputs of that forward), state_in NULL
 * and no dstate_in, and writes dq, dk, dv (gated retention also dg; Mamba2
 * dx, ddt, dA, dBm, dCm, dD, ddt_bias). Softmax attention: q, k, v in
 * [-1, 1), scale 1/sqrt(K), causal; the forward writes o and lse (what the
 * backward needs); the backward takes q, k, v, o, lse and dout in [-1, 1) and
 * writes dq, dk, dv. Every gradient output is checked for NaN/inf (check).
 *
 * Timing: the backward first (bench_time; softmax attention after one
 * untimed forward that makes o and lse), then the forward, back to back. A
 * backend that does not take a call (SEQK_ERROR_UNSUPPORTED, e.g. a CUDA
 * backward not written yet, or SEQK_ERROR_NOT_COMPILED) makes the case a
 * "skipped" record with the library's message, not a failure. Softmax
 * attention's calls take a fraction of a second each at T = 4096 on two CPU
 * threads: their samples are cut to about BWD_SOFTMAX_BUDGET_S seconds each
 * (at least BWD_SOFTMAX_MIN_REPEATS; bench_time_budget), which keeps the
 * suite under half a minute there.
 *
 * FLOPs counted per backward call, from what the code computes:
 *
 * Linear-state modules (scan/chunk_backward.c, as of this writing):
 * per (sequence, head) and chunk of Lc tokens (Lc = 64, the last chunk of a
 * sequence T mod 64 when that is not 0), the causal L x L products counted on
 * their lower (or upper) triangle, diagonal included (Lc (Lc + 1) / 2 pairs,
 * 2 flops per pair and inner index: what seqk__sgemm_causal's LOWER_C,
 * LOWER_A and UPPER_A masks compute up to the register tiles that straddle
 * the diagonal, the forward's convention in modules.c):
 *     P   = (Q~ K~^T) .* D            Lc (Lc+1) K      (seqk__chunk_scores)
 *     dP  = (dO V'^T) .* D            Lc (Lc+1) V      (seqk__chunk_masked)
 *     dV' = P^T dO                    Lc (Lc+1) V      (UPPER_A)
 *     dQ~ = dP K~                     Lc (Lc+1) K      (LOWER_A)
 *     dK~ = dP^T Q~                   Lc (Lc+1) K      (UPPER_A)
 *   and the products with the states, 2 Lc K V each:
 *     dV' += Kd dS,  dK~ += V' dS^T,  dS0 = Qg^T dO + a dS,
 *     dQ~ += dO S0^T                  (not for a sequence's first chunk
 *                                      when there is no initial state: S0 = 0)
 *   plus the recomputed chunk states, 2 Lc K V per chunk (K~^T V', the
 *   forward's stage 2) in the first pass, for every chunk but a sequence's
 *   last, and once more per chunk that is not the last of its checkpoint
 *   segment when the states are checkpointed (the library keeps every state
 *   while a sequence's fit SEQK__LIN_BWD_FULL_BYTES = 8 MiB per thread, i.e.
 *   chunks * K * V * 4 bytes <= 8 MiB: at T = 4096 both K = 64 and 128 keep
 *   them all; beyond it, R = max(2, ceil(sqrt(chunks))) chunks a segment).
 *   So a full chunk costs (Lc + 1) (3 K + 2 V) + 10 K V per token: at
 *   K = V = Lc = 64 exactly 2.5 times the forward's (Lc + 1) (K + V) + 4 K V
 *   (the same at K = V = 128): time ratio 2.5 is the forward's rate.
 *   Not counted: the decays' exponentials and the vector work, O(L K) a
 *   chunk (the gate gradient's pair terms: dot products of q~, k~ with dQ~,
 *   dK~ and their state parts, <S0, dS>, its scans; dP's diagonal added back;
 *   Mamba2's softplus, dt, D and group sums, the head sums of dB, dC).
 *
 * Softmax attention: FlashAttention-2's backward counted as its five
 * products per (query, key) pair that the causal mask keeps, B H T (T+1) / 2
 * pairs: S = q.k again (2 K), dV += p dO (2 V), dP = dO.v (2 V), dQ += ds k
 * (2 K), dK += ds q (2 K): 2 (3 K + 2 V) flops per pair, 2.5 times the
 * forward's 2 (K + V) at K = V (suite_prefill.c's count). The exponentials,
 * D = dout . o and the scaling are not counted, nor the diagonal tiles'
 * masked halves. (The CPU kernel, attention/softmax_attention_backward.c,
 * runs these five products in one fused pass when its (batch entry, kv head)
 * items give every thread at least two, as at these shapes on 2 threads;
 * otherwise two passes that recompute S and dP for dQ, 7 products: then it
 * runs 7/5 of the flops counted here at K = V; the count stays FA2's.)
 *
 * Bytes counted per backward call (fp32, each once): its inputs read (q, k,
 * v, the gates and per-head constants, dout, dstate_out; softmax: q, k, v,
 * o, dout, lse) and its gradients written. Bound: "sgemm_large", so frac is
 * the fraction of the large-sgemm ceiling (the note also gives sgemm_64's).
 */
#include "bench.h"

#include <math.h>
#include <string.h>

#define BWD_SOFTMAX_BUDGET_S 3.0
#define BWD_SOFTMAX_MIN_REPEATS 3
/* scan/chunk_backward.c keeps every chunk state of a sequence up to this
 * many bytes per thread (its SEQK__LIN_BWD_FULL_BYTES), else checkpoints
 * (counted above). */
#define BWD_FULL_STATE_BYTES (8.0 * 1024.0 * 1024.0)

/* The ops: the four linear-state modules (bench_module's first four), then
 * softmax attention. */
#define BWD_SOFTMAX ((int)BENCH_N_MODULES)
static const int OPS[] = {BENCH_MOD_LINEAR_ATTENTION, BENCH_MOD_RETENTION,
                          BENCH_MOD_GATED_RETENTION, BENCH_MOD_MAMBA2, BWD_SOFTMAX};
#define N_OPS ((int)(sizeof OPS / sizeof OPS[0]))

static const char *op_name(int op)
{
    return op == BWD_SOFTMAX ? "softmax_attention" : bench_module_name((bench_module)op);
}

typedef struct bwd_shape {
    int64_t B, T, H, K; /* V = K */
} bwd_shape;

static const bwd_shape SHAPES[] = {{2, 4096, 8, 64}, {1, 4096, 8, 128}};
static const bwd_shape SHAPES_QUICK[] = {{1, 256, 2, 32}, {1, 256, 2, 64}};
#define N_SHAPES ((int)(sizeof SHAPES / sizeof SHAPES[0]))

/* ---- counts ---------------------------------------------------------------------------- */

/* Flops of one linear-state backward call (the top of the file): B H
 * sequence-heads of T tokens in chunks of L; zero_start: no initial state. */
static double linear_backward_flops(int64_t B, int64_t T, int64_t H, int64_t K, int64_t V,
                                    int64_t L, bool zero_start)
{
    const double k = (double)K, v = (double)V, kv = k * v;
    const int64_t nch = (T + L - 1) / L;
    int64_t R = 1; /* chunks per checkpoint segment */
    if ((double)nch * kv * sizeof(float) > BWD_FULL_STATE_BYTES)
        for (R = 2; R * R < nch; R++) {}
    double per = 0.0; /* one (sequence, head) */
    for (int64_t c = 0; c < nch; c++) {
        const double lc = (double)(T - c * L < L ? T - c * L : L);
        per += lc * (lc + 1.0) * (3.0 * k + 2.0 * v);     /* P, dP, dV', dQ~, dK~ */
        per += 2.0 * lc * kv * ((c == 0 && zero_start) ? 3.0 : 4.0); /* with dS, S0 */
        if (c < nch - 1) per += 2.0 * lc * kv;            /* pass 1: the next state */
    }
    /* the segments' states recomputed in the reverse walk: every chunk but
     * the last of each segment (full chunks) */
    const int64_t segments = (nch + R - 1) / R;
    per += 2.0 * (double)L * kv * (double)(nch - segments);
    return (double)(B * H) * per;
}

/* Flops of one causal softmax attention backward: FA2's five products. */
static double softmax_backward_flops(int64_t B, int64_t T, int64_t H, int64_t K, int64_t V)
{
    const double pairs = (double)(B * H) * (double)T * (double)(T + 1) / 2.0;
    return pairs * 2.0 * (3.0 * (double)K + 2.0 * (double)V);
}

/* ---- the note ------------------------------------------------------------------------------ */

/* The record's note: the two figures against their targets first (the table
 * cuts long notes), then the times and what was run. fwd_flops: the forward's
 * count (modules.c's, suite_prefill.c's) for its rate. */
static void write_note(const bench_backend *be, bench_record *rec, double fwd_s,
                       double fwd_flops, size_t bad, size_t n_grad, const char *what)
{
    const double bwd_s = rec->stats.median_s, ratio = bwd_s / fwd_s;
    const double gflops = rec->flops / bwd_s / 1e9;
    const bench_ceiling *big = bench_get_ceiling(be, "sgemm_large");
    const bench_ceiling *s64 = bench_get_ceiling(be, "sgemm_64");
    char frac[96], s64_text[64];
    if (big && big->value > 0.0)
        snprintf(frac, sizeof frac, "%.2f of sgemm_large (>= %.2f %s)", gflops / big->value,
                 BENCH_BACKWARD_MIN_FRACTION,
                 gflops / big->value >= BENCH_BACKWARD_MIN_FRACTION ? "met" : "MISSED");
    else
        snprintf(frac, sizeof frac, "sgemm_large not measured");
    if (s64 && s64->value > 0.0)
        snprintf(s64_text, sizeof s64_text, "%.2f of sgemm_64", gflops / s64->value);
    else
        snprintf(s64_text, sizeof s64_text, "sgemm_64 not measured");
    char bad_text[128] = "";
    if (bad)
        snprintf(bad_text, sizeof bad_text, "%zu of %zu gradient elements are NaN or inf; ",
                 bad, n_grad);
    snprintf(rec->note, sizeof rec->note,
             "%sbwd/fwd %.2f (<= %.1f %s), %s; bwd %.3f ms, fwd %.3f ms (%.1f GFLOP/s); %s; %s",
             bad_text, ratio, BENCH_BACKWARD_MAX_RATIO,
             ratio <= BENCH_BACKWARD_MAX_RATIO ? "met" : "MISSED", frac, bwd_s * 1e3,
             fwd_s * 1e3, fwd_flops / fwd_s / 1e9, s64_text, what);
}

/* A call that returned SEQK_ERROR_NOT_COMPILED: a skipped record too. */
static bool skip_not_compiled(seqk_status st, bench_record *rec)
{
    if (st != SEQK_ERROR_NOT_COMPILED) return false;
    rec->kind = "skipped";
    snprintf(rec->note, sizeof rec->note, "%s: %s", seqk_status_string(st), seqk_last_error());
    return true;
}

/* ---- the linear-state modules ---------------------------------------------------------- */

typedef struct linear_bwd {
    const bench_module_call *f; /* the forward's sizes and inputs */
    const float *dout, *dstate_out;
    float *dq, *dk, *dv, *dg;   /* Mamba2: dCm, dBm, dx, ddt */
    float *dA, *dD, *ddt_bias;  /* Mamba2 */
} linear_bwd;

static seqk_status linear_backward_call(void *arg)
{
    const linear_bwd *a = arg;
    const bench_module_call *f = a->f;
    switch (f->module) {
    case BENCH_MOD_LINEAR_ATTENTION:
        return seqk_linear_attention_backward(f->ctx, f->B, f->T, f->H, f->K, f->V, f->scale,
                                              0u, f->q, f->k, f->v, a->dout, NULL, NULL,
                                              a->dstate_out, NULL, a->dq, a->dk, a->dv, NULL,
                                              NULL, NULL, 0, BENCH_MODULE_CHUNK);
    case BENCH_MOD_RETENTION:
        return seqk_retention_backward(f->ctx, f->B, f->T, f->H, f->K, f->V, f->scale, NULL,
                                       f->q, f->k, f->v, a->dout, NULL, a->dstate_out, a->dq,
                                       a->dk, a->dv, NULL, NULL, 0, BENCH_MODULE_CHUNK);
    case BENCH_MOD_GATED_RETENTION:
        return seqk_gated_retention_backward(f->ctx, f->B, f->T, f->H, f->K, f->V, f->scale,
                                             f->q, f->k, f->v, f->g, a->dout, NULL,
                                             a->dstate_out, a->dq, a->dk, a->dv, a->dg, NULL,
                                             NULL, 0, BENCH_MODULE_CHUNK);
    case BENCH_MOD_MAMBA2:
        /* q = C, k = B, x = v, dt = g; P = V, G = 1, Nst = K (as the forward) */
        return seqk_mamba2_backward(f->ctx, f->B, f->T, f->H, f->V, 1, f->K,
                                    SEQK_MAMBA2_DT_SOFTPLUS, f->v, f->g, f->A, f->k, f->q, f->D,
                                    f->dt_bias, NULL, a->dout, a->dstate_out, a->dv, a->dg,
                                    a->dA, a->dk, a->dq, a->dD, a->ddt_bias, NULL, NULL, 0,
                                    BENCH_MODULE_CHUNK);
    default:
        break;
    }
    return SEQK_ERROR_INVALID_ARGUMENT;
}

static void linear_case(const bench_case *bc, bench_backend *be, const bench_options *opt,
                        bench_record *rec)
{
    const bench_shape *sh = &bc->shape;
    const bench_module module = (bench_module)bc->flags;
    const bool mamba2 = module == BENCH_MOD_MAMBA2;
    const bool has_dg = mamba2 || module == BENCH_MOD_GATED_RETENTION;
    bench_module_call f;
    bench_module_setup(be, &f, module, SEQK_MODE_PARALLEL, BENCH_STATE_OUT, sh->B, sh->T, sh->H,
                       sh->K, sh->V);
    const size_t n_h = (size_t)sh->H;
    linear_bwd a = {&f, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    float *dout = bench_alloc(be, f.n_v * sizeof(float), "dout");        /* [B,T,H,V] */
    float *dso = bench_alloc(be, f.n_state * sizeof(float), "dstate_out"); /* [B,H,K,V] */
    a.dq = bench_alloc(be, f.n_qk * sizeof(float), "dq"); /* [B,T,H,K]; Mamba2 dCm [B,T,1,K] */
    a.dk = bench_alloc(be, f.n_qk * sizeof(float), "dk"); /* [B,T,H,K]; Mamba2 dBm */
    a.dv = bench_alloc(be, f.n_v * sizeof(float), "dv");  /* [B,T,H,V]; Mamba2 dx */
    bench_fill_uniform(be, dout, f.n_v, -1.0f, 1.0f, 71);
    bench_fill_uniform(be, dso, f.n_state, -0.1f, 0.1f, 72);
    bench_fill_uniform(be, a.dq, f.n_qk, 0.0f, 0.0f, 73);
    bench_fill_uniform(be, a.dk, f.n_qk, 0.0f, 0.0f, 74);
    bench_fill_uniform(be, a.dv, f.n_v, 0.0f, 0.0f, 75);
    if (has_dg) {
        a.dg = bench_alloc(be, f.n_tok * sizeof(float), "dg"); /* [B,T,H]; Mamba2 ddt */
        bench_fill_uniform(be, a.dg, f.n_tok, 0.0f, 0.0f, 76);
    }
    if (mamba2) {
        a.dA = bench_alloc(be, n_h * sizeof(float), "dA");             /* [H] */
        a.dD = bench_alloc(be, n_h * sizeof(float), "dD");             /* [H] */
        a.ddt_bias = bench_alloc(be, n_h * sizeof(float), "ddt_bias"); /* [H] */
    }
    a.dout = dout;
    a.dstate_out = dso;
    size_t workspace = 0;
    bench_check(seqk_linear_state_backward_workspace_size(be->ctx, sh->B, sh->T, sh->H,
                                                          mamba2 ? 1 : sh->H, sh->K, sh->V, 0,
                                                          BENCH_MODULE_CHUNK, &workspace),
                "seqk_linear_state_backward_workspace_size (%s)", bc->name);
    if (workspace > 0)
        bench_check(seqk_context_reserve_workspace(be->ctx, workspace),
                    "seqk_context_reserve_workspace(%zu bytes)", workspace);

    seqk_status st = bench_time(be->ctx, linear_backward_call, &a, opt->warmup, opt->repeats,
                                &rec->stats);
    if (bench_skip_unsupported(st, rec) || skip_not_compiled(st, rec)) goto done;
    bench_check(st, "%s backward (on %s)", bc->name, be->name);
    /* nonfinite gradients: checked before the forward's calls, which do not touch them */
    size_t bad = bench_count_nonfinite(be, a.dq, f.n_qk) +
                 bench_count_nonfinite(be, a.dk, f.n_qk) + bench_count_nonfinite(be, a.dv, f.n_v);
    size_t n_grad = 2 * f.n_qk + f.n_v;
    if (has_dg) bad += bench_count_nonfinite(be, a.dg, f.n_tok), n_grad += f.n_tok;
    if (mamba2) {
        bad += bench_count_nonfinite(be, a.dA, n_h) + bench_count_nonfinite(be, a.dD, n_h) +
               bench_count_nonfinite(be, a.ddt_bias, n_h);
        n_grad += 3 * n_h;
    }

    bench_stats fwd;
    st = bench_time(be->ctx, bench_module_run, &f, opt->warmup, opt->repeats, &fwd);
    if (bench_skip_unsupported(st, rec) || skip_not_compiled(st, rec)) goto done;
    bench_check(st, "%s parallel forward (on %s)", bc->name, be->name);

    rec->flops = linear_backward_flops(sh->B, sh->T, sh->H, sh->K, sh->V, BENCH_MODULE_CHUNK,
                                       true);
    double floats = 2.0 * (double)f.n_qk + 2.0 * (double)f.n_v + (double)f.n_state; /* read */
    floats += (double)f.n_gates * (double)f.n_tok + (double)f.n_const;
    floats += 2.0 * (double)f.n_qk + (double)f.n_v; /* written */
    if (has_dg) floats += (double)f.n_tok;
    if (mamba2) floats += 3.0 * (double)sh->H;
    rec->bytes = floats * sizeof(float);
    rec->tokens = (double)(sh->B * sh->T);
    rec->bound = "sgemm_large";
    rec->forward_s = fwd.median_s;
    rec->check = bad ? "non-finite" : "ok";
    write_note(be, rec, fwd.median_s, bench_module_flops(&f), bad, n_grad,
               "chunk 64, no initial state, dstate_out given");

done:
    if (mamba2) {
        bench_free(be, a.ddt_bias);
        bench_free(be, a.dD);
        bench_free(be, a.dA);
    }
    if (a.dg) bench_free(be, a.dg);
    bench_free(be, a.dv);
    bench_free(be, a.dk);
    bench_free(be, a.dq);
    bench_free(be, dso);
    bench_free(be, dout);
    bench_module_teardown(be, &f);
}

/* ---- softmax attention ------------------------------------------------------------------ */

typedef struct softmax_bwd {
    seqk_context *ctx;
    int64_t B, T, H, K, V;
    float scale;
    const float *q, *k, *v, *dout; /* [B,T,H,K] [B,T,H,K] [B,T,H,V] [B,T,H,V] */
    float *o, *lse;                /* [B,T,H,V], [B,H,T]: the forward's outputs */
    float *dq, *dk, *dv;           /* [B,T,H,K] [B,T,H,K] [B,T,H,V] */
} softmax_bwd;

static seqk_status softmax_forward_call(void *arg)
{
    const softmax_bwd *a = arg;
    return seqk_attention_parallel(a->ctx, a->B, a->T, a->H, a->H, a->K, a->V, a->scale,
                                   SEQK_ATTN_CAUSAL, a->q, a->k, a->v, a->o, a->lse, NULL, 0);
}

static seqk_status softmax_backward_call(void *arg)
{
    const softmax_bwd *a = arg;
    return seqk_attention_parallel_backward(a->ctx, a->B, a->T, a->H, a->H, a->K, a->V,
                                            a->scale, SEQK_ATTN_CAUSAL, a->q, a->k, a->v, a->o,
                                            a->lse, a->dout, a->dq, a->dk, a->dv, NULL, 0);
}

static void softmax_case(const bench_case *bc, bench_backend *be, const bench_options *opt,
                         bench_record *rec)
{
    const bench_shape *sh = &bc->shape;
    const int64_t B = sh->B, T = sh->T, H = sh->H, K = sh->K, V = sh->V;
    const size_t n_qk = (size_t)(B * T * H * K), n_v = (size_t)(B * T * H * V);
    const size_t n_lse = (size_t)(B * H * T);
    softmax_bwd a = {be->ctx, B, T, H, K, V, 1.0f / sqrtf((float)K), NULL, NULL, NULL, NULL,
                     NULL, NULL, NULL, NULL, NULL};
    float *q = bench_alloc(be, n_qk * sizeof(float), "q");
    float *k = bench_alloc(be, n_qk * sizeof(float), "k");
    float *v = bench_alloc(be, n_v * sizeof(float), "v");
    float *dout = bench_alloc(be, n_v * sizeof(float), "dout");
    a.o = bench_alloc(be, n_v * sizeof(float), "o");
    a.lse = bench_alloc(be, n_lse * sizeof(float), "lse");
    a.dq = bench_alloc(be, n_qk * sizeof(float), "dq");
    a.dk = bench_alloc(be, n_qk * sizeof(float), "dk");
    a.dv = bench_alloc(be, n_v * sizeof(float), "dv");
    bench_fill_uniform(be, q, n_qk, -1.0f, 1.0f, 61);
    bench_fill_uniform(be, k, n_qk, -1.0f, 1.0f, 62);
    bench_fill_uniform(be, v, n_v, -1.0f, 1.0f, 63);
    bench_fill_uniform(be, dout, n_v, -1.0f, 1.0f, 77);
    bench_fill_uniform(be, a.o, n_v, 0.0f, 0.0f, 64);
    bench_fill_uniform(be, a.lse, n_lse, 0.0f, 0.0f, 78);
    bench_fill_uniform(be, a.dq, n_qk, 0.0f, 0.0f, 79);
    bench_fill_uniform(be, a.dk, n_qk, 0.0f, 0.0f, 80);
    bench_fill_uniform(be, a.dv, n_v, 0.0f, 0.0f, 81);
    a.q = q, a.k = k, a.v = v, a.dout = dout;

    size_t ws_fwd = 0, ws_bwd = 0;
    bench_check(seqk_attention_parallel_workspace_size(be->ctx, B, T, H, H, K, V,
                                                       SEQK_ATTN_CAUSAL, 0, &ws_fwd),
                "seqk_attention_parallel_workspace_size");
    seqk_status st = seqk_attention_parallel_backward_workspace_size(be->ctx, B, T, H, H, K, V,
                                                                    SEQK_ATTN_CAUSAL, 0, &ws_bwd);
    if (bench_skip_unsupported(st, rec) || skip_not_compiled(st, rec)) goto done;
    bench_check(st, "seqk_attention_parallel_backward_workspace_size");
    const size_t workspace = ws_fwd > ws_bwd ? ws_fwd : ws_bwd;
    if (workspace > 0)
        bench_check(seqk_context_reserve_workspace(be->ctx, workspace),
                    "seqk_context_reserve_workspace(%zu bytes)", workspace);

    /* o and lse for the backward */
    st = softmax_forward_call(&a);
    if (bench_skip_unsupported(st, rec) || skip_not_compiled(st, rec)) goto done;
    bench_check(st, "seqk_attention_parallel (T=%lld on %s)", (long long)T, be->name);
    st = bench_time_budget(be->ctx, softmax_backward_call, &a, opt->warmup, opt->repeats,
                           BWD_SOFTMAX_MIN_REPEATS, BWD_SOFTMAX_BUDGET_S, &rec->stats);
    if (bench_skip_unsupported(st, rec) || skip_not_compiled(st, rec)) goto done;
    bench_check(st, "seqk_attention_parallel_backward (T=%lld on %s)", (long long)T, be->name);
    const size_t bad = bench_count_nonfinite(be, a.dq, n_qk) +
                       bench_count_nonfinite(be, a.dk, n_qk) + bench_count_nonfinite(be, a.dv, n_v);

    bench_stats fwd;
    st = bench_time_budget(be->ctx, softmax_forward_call, &a, opt->warmup, opt->repeats,
                           BWD_SOFTMAX_MIN_REPEATS, BWD_SOFTMAX_BUDGET_S, &fwd);
    bench_check(st, "seqk_attention_parallel (T=%lld on %s)", (long long)T, be->name);

    rec->flops = softmax_backward_flops(B, T, H, K, V);
    /* read q, k, v, o, dout, lse; write dq, dk, dv */
    rec->bytes = ((double)(2 * n_qk + 3 * n_v + n_lse) + (double)(2 * n_qk + n_v)) * sizeof(float);
    rec->tokens = (double)(B * T);
    rec->bound = "sgemm_large";
    rec->forward_s = fwd.median_s;
    rec->check = bad ? "non-finite" : "ok";
    const double pairs = (double)(B * H) * (double)T * (double)(T + 1) / 2.0;
    char what[96];
    snprintf(what, sizeof what, "causal, Hq = Hkv = %lld, fwd writes lse; FA2 count (5 products)",
             (long long)H);
    write_note(be, rec, fwd.median_s, pairs * 2.0 * (double)(K + V), bad, 2 * n_qk + n_v, what);

done:
    bench_free(be, a.dv);
    bench_free(be, a.dk);
    bench_free(be, a.dq);
    bench_free(be, a.lse);
    bench_free(be, a.o);
    bench_free(be, dout);
    bench_free(be, v);
    bench_free(be, k);
    bench_free(be, q);
}

/* ---- the plan ------------------------------------------------------------------------------ */

static void backward_run(const bench_case *bc, bench_backend *be, const bench_options *opt,
                         bench_record *rec)
{
    if ((int)bc->flags == BWD_SOFTMAX)
        softmax_case(bc, be, opt, rec);
    else
        linear_case(bc, be, opt, rec);
}

void suite_backward_plan(bench_plan *plan, bench_backend *be, const bench_options *opt)
{
    const bwd_shape *shapes = opt->quick ? SHAPES_QUICK : SHAPES;
    for (int s = 0; s < N_SHAPES; s++) {
        for (int i = 0; i < N_OPS; i++) {
            bench_case bc = {0};
            bc.suite = "backward";
            snprintf(bc.name, sizeof bc.name, "%s", op_name(OPS[i]));
            bc.shape.B = shapes[s].B;
            bc.shape.T = shapes[s].T;
            bc.shape.H = shapes[s].H;
            bc.shape.K = shapes[s].K;
            bc.shape.V = shapes[s].K;
            bc.shape.N = shapes[s].B;
            bc.shape.mode = "backward";
            bc.flags = (unsigned)OPS[i];
            bc.run = backward_run;
            bench_plan_add(plan, be, &bc);
        }
    }
}
