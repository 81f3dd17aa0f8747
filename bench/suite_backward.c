/*
 * bench/suite_backward.c -- the "backward" suite: the training backward of
 * the linear-state modules (DESIGN 3.7: seqk_linear_attention_backward,
 * seqk_retention_backward, seqk_gated_retention_backward,
 * seqk_mamba2_backward), of gated DeltaNet (seqk_deltanet_backward, CPU
 * only), of the selective scan (seqk_selective_scan_backward) and of causal
 * softmax attention (seqk_attention_parallel_backward, FlashAttention-2's
 * backward), each timed in the same case as the forward of the same call, so
 * that a record gives the backward's time, its forward's (forward_s), their
 * ratio (bwd_over_fwd) and the backward's fraction of its ceiling. Each
 * record carries its own targets (target_bwd_over_fwd, target_fraction;
 * bench.h): issue #15's for the linear-state modules and softmax attention,
 * bwd/fwd <= 2.5 and >= 0.40 of sgemm_large; issue #16's for DeltaNet,
 * bwd/fwd <= 3.0 and >= 0.35 of sgemm_large (set for K = V = 128, applied
 * at both head dims); none for the selective scan, whose bound is copy (as
 * the sscan suite's forward) and whose target is against PyTorch autograd
 * (>= 20x, bench/peers.py's selective_scan_backward row). report.c prints a
 * table of the figures beside the targets, plot.py draws
 * backward_BACKEND.png.
 *
 * Shapes: T = 4096, H = 8 at K = V = 64 (B = 2) and K = V = 128 (B = 1), the
 * linear suite's T = 4096 rows, so its parallel records time the same
 * forwards (DeltaNet: gated, SEQK_DELTANET_L2NORM_QK, as there; the linear
 * suite passes a state_in, this suite none); Mamba2 as there: G = 1 group,
 * Nst = K, P = V; softmax attention with the same B, H and head dims,
 * Hq = Hkv = H. --quick: B = 1, T = 256, H = 2, K = V = 32 and 64 (a smoke
 * test: several chunks; softmax attention's two-pass form, its items too few
 * on 2 threads for the fused one). Titans (seqk_titans_backward, CPU only)
 * at the same shapes with mini-batch b = BENCH_TITANS_BACKWARD_MINIBATCH =
 * 64 (--quick: 32), SEQK_TITANS_L2NORM_QK and modules.c's gates (eta in
 * [0.8, 0.95], theta in [0, 0.1], alpha in [0, 0.05]); its forward is
 * seqk_titans' parallel mode at the same b, timed the same way (issue #16:
 * bwd/fwd <= 3.0; the fraction of sgemm_large is reported, no target).
 * The selective scan once, after them:
 * B = 1, T = 4096, D = 1536 channels, Nst = 16, G = 1 (the sscan suite's
 * mamba1-d1536 case at the backward suite's T; bench/peers.py's
 * selective_scan_backward row runs the same shape); --quick: T = 256,
 * D = 256.
 *
 * The call, the same for the forward and the backward: a training step from
 * scratch. The modules' inputs are those of modules.c (bench_module_setup:
 * q, k, v / C, B, x in [-1, 1), RetNet's gammas, log-gates in [-0.1, 0],
 * Mamba2's dt through softplus, ...), the library's default chunk
 * (bench_module_chunk: 32 at K = V = 64 on the CPU, 64 at 128; DeltaNet
 * 32 at both), no
 * initial state, the final state written (the prefill suite's forward,
 * bench_module_run). Their backward takes dout in [-1, 1) and dstate_out in
 * [-0.1, 0.1) (the gradients of both outputs of that forward), state_in NULL
 * and no dstate_in, and writes dq, dk, dv (gated retention also dg; Mamba2
 * dx, ddt, dA, dBm, dCm, dD, ddt_bias; DeltaNet dbeta, dg). The selective
 * scan (modules.c's inputs: the sscan suite's, SEQK_SSCAN_DT_SOFTPLUS, D
 * skip, z gate): dy in [-1, 1), dstate_out in [-0.1, 0.1); writes du, ddt,
 * dA, dBm, dCm, dDskip, dz, ddt_bias. Its forward is timed in both modes
 * (they compute one function; which is faster depends on the machine) and
 * forward_s is the faster (the note gives both). Softmax attention: q, k, v in
 * [-1, 1), scale 1/sqrt(K), causal; the forward writes o and lse (what the
 * backward needs); the backward takes q, k, v, o, lse and dout in [-1, 1) and
 * writes dq, dk, dv. Every gradient output is checked for NaN/inf (check).
 *
 * Timing: the backward and its parallel forward in turns (bench_time_paired;
 * softmax attention after one untimed forward that makes o and lse): each
 * repeat times both back to back, and bwd/fwd is the median over the
 * repeats of their ratio, so that a slowdown of a shared machine lasting
 * seconds (measured up to 2x on this project's VM) scales both terms of a
 * repeat alike instead of one of two medians timed a minute apart. A
 * backend that does not take a call (SEQK_ERROR_UNSUPPORTED, e.g. a CUDA
 * backward not written yet, or SEQK_ERROR_NOT_COMPILED) makes the case a
 * "skipped" record with the library's message, not a failure (DeltaNet's
 * backward on CUDA). Softmax attention's calls take a fraction of a second
 * each at T = 4096 on two CPU threads: their samples are cut to about
 * 2 BWD_SOFTMAX_BUDGET_S seconds per pair (at least BWD_SOFTMAX_MIN_REPEATS),
 * DeltaNet's and Titans' to about 2 BWD_DN_BUDGET_S and the selective
 * scan's backward to about 1.5 s (BWD_SSCAN_BUDGET_S), which
 * keeps the suite under a minute there (about 45 s on an idle machine; a
 * loaded shared one takes longer).
 *
 * FLOPs counted per backward call, from what the code computes:
 *
 * Linear-state modules (scan/chunk_backward.c, as of this writing):
 * per (sequence, head) and chunk of Lc tokens (Lc = the call's chunk, the
 * library's default: 32 at K = V = 64, 64 at K = V = 128; the last chunk of a
 * sequence T mod Lc when that is not 0), the causal L x L products counted on
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
 *   K = V exactly 2.5 times the forward's (Lc + 1) (K + V) + 4 K V, for any
 *   Lc: time ratio 2.5 is the forward's rate.
 *   Not counted: the decays' exponentials and the vector work, O(L K) a
 *   chunk (the gate gradient's pair terms: dot products of q~, k~ with dQ~,
 *   dK~ and their state parts, <S0, dS>, its scans; dP's diagonal added back;
 *   Mamba2's softplus, dt, D and group sums, the head sums of dB, dC).
 *
 * Gated DeltaNet (ssm/deltanet_backward.c, as of this writing): per
 * (sequence, head) and chunk of Lc tokens, the causal products on their
 * lower (or upper) triangle, diagonal included, Lc (Lc + 1) per inner index,
 * as above and as modules.c counts the forward; S0 the state before the
 * chunk, absent for a sequence's first chunk without an initial state:
 *   chunk_forward again (pairs kept for the backward of A):
 *     K~ K~^T (LOWER_C)               Lc (Lc+1) K
 *     T = (I + A)^-1 (forward subst.) Lc^3 / 3     (modules.c's convention)
 *     U = T Vb, W = T Kb (LOWER_A)    Lc (Lc+1) (V + K)
 *     Vn = U - W S0                   2 Lc K V     (with S0)
 *   the engine's stage with Vn as the values (seqk__chunk_scores and
 *   seqk__chunk_backward_stage, the products of the linear-state count):
 *     P, dP, dV', dQ~, dK~            Lc (Lc+1) (3 K + 2 V)
 *     Kd dS, V' dS^T, Qg^T dO         2 Lc K V each
 *     dO S0^T                         2 Lc K V     (with S0)
 *   then through Vn, U, W and T:
 *     dS0 -= W^T dVn                  2 Lc K V
 *     dW = -dVn S0^T                  2 Lc K V     (with S0)
 *     X = T^T dU (UPPER_A)            Lc (Lc+1) V
 *     Y = T^T dW (UPPER_A)            Lc (Lc+1) K  (with S0)
 *     dA = -(X U^T + Y W^T) (LOWER_C) Lc (Lc+1) V, + Lc (Lc+1) K with S0
 *     dK~ += M K~ + M^T K~            2 Lc (Lc+1) K
 *   plus the recomputed states: pass 1, for every chunk but a sequence's
 *   last, chunk_forward without the pairs (K~ K~^T, T, U, W, Vn with S0:
 *   Lc (Lc+1) (2 K + V) + Lc^3/3 + 2 Lc K V) and the next state
 *   (Kd^T Vn, 2 Lc K V); the same once more per chunk that is not the last
 *   of its checkpoint segment when the states are checkpointed (its
 *   SEQK__DN_BWD_FULL_BYTES = 8 MiB per thread, as the linear-state
 *   backward's: at T = 4096 both K = 64 and 128 keep them all).
 *   So a full chunk with S0 costs, per token,
 *     (Lc + 1) (11 K + 6 V) + 2 Lc^2 / 3 + 18 K V
 *   against the forward's 3 (Lc+1) K + 2 (Lc+1) V + Lc^2/3 + 6 K V: 3.11
 *   times it at K = V = 64 with Lc = 32 (3.15 with Lc = 64), 3.07 at
 *   K = V = 128 with Lc = 32 (3.11 with Lc = 64) (seqk.h: "about three
 *   times"); a time ratio of 3.0 is a backward slightly faster per flop than
 *   the forward. Not counted: the exponentials, the gate and beta vector
 *   work (dot products, the pair sums of dA, the reverse scan), the L2
 *   norms and their backward, dv = diag(beta) X, Vb, Kb.
 *
 * Titans (ssm/titans_backward.c, as of this writing): per (sequence, head)
 * and segment of n tokens (a mini-batch; the last one T mod b when that is
 * not 0), the products with the K x V state-sized operands, 2 n K V each:
 *   forward state pass (every segment but the last): Gerr = K~ Mhat - V (1,
 *     kept), [M'; S'] += W2^T Gerr (2, inner n, 2K rows)
 *   reverse pass: [diag(g) K~ | diag(mu) K~] [X; Y] (2), Gerr [X; Y]^T (2),
 *     dH = K~^T dE (1), dE Mhat^T (1), dO [M0; S0]^T (2), the carry
 *     [diag(beta) Q~ | diag(f) Q~]^T dO (2); Gerr again (1) only where the
 *     state pass did not keep it (the last segment; with checkpoints, the
 *     last of each group)
 *   and the causal n x n products on their lower (upper) triangle, n (n+1)
 *   per inner index: Q~ K~^T (K), dO Gerr^T (V), P1^T dO (V), P2^T Q~ (K),
 *   P2 diag(theta) K~ (K).
 *   So a full segment costs per token 26 K V + (n+1) (3 K + 2 V), against
 *   the parallel forward's 10 K V + (n+1) (K + V) (modules.c): 2.59 times
 *   it at K = V = 128, n = 64. Not counted: the gates' exponentials and
 *   n x n mixing matrices, the O(n^2) gate-gradient scans, the row dots,
 *   the L2 norms and their backward.
 *
 * Selective scan (ssm/selective_scan_backward.c), in the sscan suite's
 * convention for its forward (6 per state element and token: dt*A, dt*B*u,
 * the decay's multiply-add, C*h and its sum): per state element (d, n) and
 * token, the reverse walk's 21: a = exp(dt A) (1) and dt B u (1) again, h
 * recomputed (2), C gy (1), the reverse scan of lam (2), and the gradients'
 * lam (a h_{t-1}) (2), dA's and d(dt)'s sums (2 + 2), sum_n B lam (2),
 * yp = sum_n C h again for dz (2), dB's and dC's terms (2 + 2); plus the
 * first pass's 4 (a, dt B u, the scan's multiply-add) on every token but
 * those of the last time segment (S = 32 tokens at Nst = 16:
 * clamp(8192 / (16 Nst), 16, 64)), which only keeps the segment-start
 * states. About 25 against the forward's 6 (a count ratio ~4.2). Not
 * counted: exp, softplus, sigmoid, silu, the per-channel work (du, ddt, dz,
 * dDskip, ddt_bias: O(D) per token) and the 8-lane sums of dB, dC.
 * Bytes (the sscan suite's convention): u, dt, z, dy [B,T,D] and Bm, Cm
 * [B,T,G,Nst] read, du, ddt, dz and dBm, dCm written; the constants (A,
 * Dskip, dt_bias and their gradients) and the states not counted. Bound:
 * "copy", as the forward's; no fraction target.
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
 * o, dout, lse) and its gradients written. Bound: "sgemm_large" (but for
 * the selective scan: "copy", above), so frac is the fraction of the
 * large-sgemm ceiling (the note also gives sgemm_64's).
 */
#include "bench.h"

#include <math.h>
#include <string.h>

/* The linear-state pairs (about 45 ms each on two CPU threads at T = 4096):
 * at least this many repeats (about 1 s a case), so that the median of the
 * paired ratio, which decides issue #15's bwd/fwd line, rests on more than
 * the default 7 pairs. It narrows the sampling error only: three runs of 21
 * pairs in one hour on the shared 2-core VM still read 2.22-2.54 for the
 * same rows at K = 64, the machine's slow swings. */
#define BWD_LIN_MIN_REPEATS 21
#define BWD_SOFTMAX_BUDGET_S 3.0
#define BWD_SOFTMAX_MIN_REPEATS 3
/* scan/chunk_backward.c keeps every chunk state of a sequence up to this
 * many bytes per thread (its SEQK__LIN_BWD_FULL_BYTES), else checkpoints
 * (counted above). */
#define BWD_FULL_STATE_BYTES (8.0 * 1024.0 * 1024.0)
/* ssm/deltanet_backward.c's SEQK__DN_BWD_FULL_BYTES: the same rule. */
#define BWD_DN_FULL_STATE_BYTES (8.0 * 1024.0 * 1024.0)
/* ssm/titans_backward.c's SEQK__TT_BWD_FULL_BYTES: the same rule for its
 * segment states and errors (2 K V + b V floats each). */
#define BWD_TT_FULL_STATE_BYTES (16.0 * 1024.0 * 1024.0)
/* DeltaNet's calls (about 0.1-0.4 s on two CPU threads at T = 4096): samples
 * cut to about this many seconds per measurement. */
#define BWD_DN_BUDGET_S 1.5
#define BWD_DN_MIN_REPEATS 3
/* The selective scan's backward (about 0.3-0.5 s there): the same. */
#define BWD_SSCAN_BUDGET_S 1.5
#define BWD_SSCAN_MIN_REPEATS 3
/* ssm/selective_scan_backward.c's time segments: clamp(SEG_FLOATS / (16 Nst),
 * MIN_SEG, MAX_SEG) tokens (its pass 1 skips the last). */
#define BWD_SSCAN_SEG_FLOATS 8192
#define BWD_SSCAN_MIN_SEG 16
#define BWD_SSCAN_MAX_SEG 64

/* The ops: the four linear-state modules (bench_module's first four),
 * DeltaNet, then softmax attention, at each shape; the selective scan once
 * after them (its own shape). */
#define BWD_SOFTMAX ((int)BENCH_N_MODULES)
static const int OPS[] = {BENCH_MOD_LINEAR_ATTENTION, BENCH_MOD_RETENTION,
                          BENCH_MOD_GATED_RETENTION, BENCH_MOD_MAMBA2, BENCH_MOD_DELTANET,
                          BENCH_MOD_TITANS, BWD_SOFTMAX};
#define N_OPS ((int)(sizeof OPS / sizeof OPS[0]))

static const char *op_name(int op)
{
    return op == BWD_SOFTMAX ? "softmax_attention" : bench_module_name((bench_module)op);
}

/* An op's targets (bench.h; 0 = none) and the issue that set them. */
typedef struct bwd_target {
    double max_ratio, min_fraction;
    const char *issue;
} bwd_target;

static bwd_target op_target(int op)
{
    if (op == BENCH_MOD_DELTANET)
        return (bwd_target){BENCH_DELTANET_BACKWARD_MAX_RATIO,
                            BENCH_DELTANET_BACKWARD_MIN_FRACTION, "#16"};
    if (op == BENCH_MOD_TITANS)
        return (bwd_target){BENCH_TITANS_BACKWARD_MAX_RATIO, 0.0, "#16"};
    if (op == BENCH_MOD_SELECTIVE_SCAN) return (bwd_target){0.0, 0.0, "#16"};
    return (bwd_target){BENCH_BACKWARD_MAX_RATIO, BENCH_BACKWARD_MIN_FRACTION, "#15"};
}

typedef struct bwd_shape {
    int64_t B, T, H, K; /* V = K */
} bwd_shape;

static const bwd_shape SHAPES[] = {{2, 4096, 8, 64}, {1, 4096, 8, 128}};
static const bwd_shape SHAPES_QUICK[] = {{1, 256, 2, 32}, {1, 256, 2, 64}};
#define N_SHAPES ((int)(sizeof SHAPES / sizeof SHAPES[0]))

/* The selective scan: B, T, D channels, Nst (G = 1). */
typedef struct sscan_shape {
    int64_t B, T, D, Nst;
} sscan_shape;
static const sscan_shape SSCAN_SHAPE = {1, 4096, 1536, 16};
static const sscan_shape SSCAN_SHAPE_QUICK = {1, 256, 256, 16};

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

/* Flops of one gated DeltaNet backward call (the top of the file), as
 * linear_backward_flops. */
static double deltanet_backward_flops(int64_t B, int64_t T, int64_t H, int64_t K, int64_t V,
                                      int64_t L, bool zero_start)
{
    const double k = (double)K, v = (double)V, kv = k * v;
    const int64_t nch = (T + L - 1) / L;
    int64_t R = 1; /* chunks per checkpoint segment */
    if ((double)nch * kv * sizeof(float) > BWD_DN_FULL_STATE_BYTES)
        for (R = 2; R * R < nch; R++) {}
    double per = 0.0; /* one (sequence, head) */
    for (int64_t c = 0; c < nch; c++) {
        const double lc = (double)(T - c * L < L ? T - c * L : L);
        const double tri = lc * (lc + 1.0), subst = lc * lc * lc / 3.0;
        const bool s0 = !(c == 0 && zero_start);
        /* the reverse walk: chunk_forward with the pairs, the stage, Vn/U/W/T */
        per += tri * (7.0 * k + 5.0 * v) + subst + 2.0 * lc * kv * (s0 ? 7.0 : 4.0);
        if (s0) per += 2.0 * tri * k; /* Y = T^T dW, Y W^T */
        /* a state recomputed: chunk_forward without the pairs and Kd^T Vn */
        const double state = tri * (2.0 * k + v) + subst + 2.0 * lc * kv * (s0 ? 2.0 : 1.0);
        if (c < nch - 1) per += state;                                /* pass 1 */
        if (R > 1 && c % R != R - 1 && c < nch - 1) per += state;     /* per segment */
    }
    return (double)(B * H) * per;
}

/* Flops of one Titans backward call (the top of the file): B H sequence-heads
 * of T tokens in segments of b, no initial state. */
static double titans_backward_flops(int64_t B, int64_t T, int64_t H, int64_t K, int64_t V,
                                    int64_t b)
{
    const double k = (double)K, v = (double)V, kv = k * v;
    const int64_t nseg = (T + b - 1) / b;
    int64_t R = 1; /* segments per checkpoint group */
    if ((double)(nseg + 1) * (2.0 * kv + (double)(b * V)) * sizeof(float) >
        BWD_TT_FULL_STATE_BYTES) /* the library plans for a start inside a mini-batch: +1 */
        for (R = 2; R * R < nseg; R++) {}
    double per = 0.0;
    for (int64_t j = 0; j < nseg; j++) {
        const double n = (double)(T - j * b < b ? T - j * b : b);
        per += 20.0 * n * kv + n * (n + 1.0) * (3.0 * k + 2.0 * v); /* the reverse pass */
        const double state = 6.0 * n * kv;
        if (j < nseg - 1) per += state;                            /* pass 1 */
        if (R > 1 && j % R != R - 1 && j < nseg - 1) per += state; /* per group */
        const bool kept = R == 1 ? j < nseg - 1 : (j % R != R - 1 && j < nseg - 1);
        if (!kept) per += 2.0 * n * kv;                            /* Gerr again */
    }
    return (double)(B * H) * per;
}

/* Flops of one selective scan backward (the top of the file): 21 per state
 * element and token, 4 more on the tokens before the last time segment. */
static double sscan_backward_flops(int64_t B, int64_t T, int64_t D, int64_t Nst)
{
    int64_t seg = BWD_SSCAN_SEG_FLOATS / (Nst * 16);
    seg = seg < BWD_SSCAN_MIN_SEG ? BWD_SSCAN_MIN_SEG : seg > BWD_SSCAN_MAX_SEG ? BWD_SSCAN_MAX_SEG : seg;
    const int64_t nseg = (T + seg - 1) / seg;
    const double first_pass = nseg > 1 ? (double)((nseg - 1) * seg) : 0.0;
    return (double)(B * D * Nst) * (21.0 * (double)T + 4.0 * first_pass);
}

/* Flops of one causal softmax attention backward: FA2's five products. */
static double softmax_backward_flops(int64_t B, int64_t T, int64_t H, int64_t K, int64_t V)
{
    const double pairs = (double)(B * H) * (double)T * (double)(T + 1) / 2.0;
    return pairs * 2.0 * (3.0 * (double)K + 2.0 * (double)V);
}

/* ---- the note ------------------------------------------------------------------------------ */

/* The paired timing's ratio (bench_time_paired: q1, median, q3) into the record. */
static void set_paired(bench_record *rec, const double rq[3])
{
    rec->paired_q1 = rq[0];
    rec->paired_ratio = rq[1];
    rec->paired_q3 = rq[2];
}

/* The record's note: the two figures against the op's targets (tg, also
 * stored in the record) first (the table cuts long notes), then the times and
 * what was run. fwd_flops: the forward's count (modules.c's,
 * suite_prefill.c's) for its rate. The fraction is of rec->bound
 * ("sgemm_large", or "copy" by bytes); sgemm_64's is added for an
 * sgemm-bound op. */
static void write_note(const bench_backend *be, bench_record *rec, bwd_target tg, double fwd_s,
                       double fwd_flops, size_t bad, size_t n_grad, const char *what)
{
    const double bwd_s = rec->stats.median_s;
    const double ratio = rec->paired_ratio > 0.0 ? rec->paired_ratio : bwd_s / fwd_s;
    const double gflops = rec->flops / bwd_s / 1e9, gbs = rec->bytes / bwd_s / 1e9;
    rec->target_bwd_over_fwd = tg.max_ratio;
    rec->target_fraction = tg.min_fraction;
    const bench_ceiling *bound = bench_get_ceiling(be, rec->bound);
    const bool sgemm = strcmp(rec->bound, "copy") != 0;
    const bench_ceiling *s64 = sgemm ? bench_get_ceiling(be, "sgemm_64") : NULL;
    char ratio_text[96], spread[40] = "", frac[112], s64_text[64] = "";
    if (rec->paired_ratio > 0.0) /* the middle half of the repeats' ratios */
        snprintf(spread, sizeof spread, " [q1-q3 %.2f-%.2f]", rec->paired_q1, rec->paired_q3);
    if (tg.max_ratio > 0.0)
        snprintf(ratio_text, sizeof ratio_text, "bwd/fwd %.2f%s (<= %.1f %s, issue %s)", ratio,
                 spread, tg.max_ratio, ratio <= tg.max_ratio ? "met" : "MISSED", tg.issue);
    else
        snprintf(ratio_text, sizeof ratio_text, "bwd/fwd %.2f%s (no target here)", ratio, spread);
    if (bound && bound->value > 0.0) {
        const double f = (sgemm ? gflops : gbs) / bound->value;
        if (tg.min_fraction > 0.0)
            snprintf(frac, sizeof frac, "%.2f of %s (>= %.2f %s)", f, rec->bound,
                     tg.min_fraction, f >= tg.min_fraction ? "met" : "MISSED");
        else
            snprintf(frac, sizeof frac, "%.3f of %s (%.1f GB/s; no target)", f, rec->bound,
                     gbs);
    } else {
        snprintf(frac, sizeof frac, "%s not measured", rec->bound);
    }
    if (s64 && s64->value > 0.0)
        snprintf(s64_text, sizeof s64_text, "; %.2f of sgemm_64", gflops / s64->value);
    else if (sgemm)
        snprintf(s64_text, sizeof s64_text, "; sgemm_64 not measured");
    char bad_text[128] = "";
    if (bad)
        snprintf(bad_text, sizeof bad_text, "%zu of %zu gradient elements are NaN or inf; ",
                 bad, n_grad);
    snprintf(rec->note, sizeof rec->note,
             "%s%s, %s; bwd %.3f ms, fwd %.3f ms (%.1f GFLOP/s)%s; %s", bad_text, ratio_text,
             frac, bwd_s * 1e3, fwd_s * 1e3, fwd_flops / fwd_s / 1e9, s64_text, what);
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
    float *dbeta;               /* DeltaNet */
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
                                              NULL, NULL, 0, f->chunk);
    case BENCH_MOD_RETENTION:
        return seqk_retention_backward(f->ctx, f->B, f->T, f->H, f->K, f->V, f->scale, NULL,
                                       f->q, f->k, f->v, a->dout, NULL, a->dstate_out, a->dq,
                                       a->dk, a->dv, NULL, NULL, 0, f->chunk);
    case BENCH_MOD_GATED_RETENTION:
        return seqk_gated_retention_backward(f->ctx, f->B, f->T, f->H, f->K, f->V, f->scale,
                                             f->q, f->k, f->v, f->g, a->dout, NULL,
                                             a->dstate_out, a->dq, a->dk, a->dv, a->dg, NULL,
                                             NULL, 0, f->chunk);
    case BENCH_MOD_MAMBA2:
        /* q = C, k = B, x = v, dt = g; P = V, G = 1, Nst = K (as the forward) */
        return seqk_mamba2_backward(f->ctx, f->B, f->T, f->H, f->V, 1, f->K,
                                    SEQK_MAMBA2_DT_SOFTPLUS, f->v, f->g, f->A, f->k, f->q, f->D,
                                    f->dt_bias, NULL, a->dout, a->dstate_out, a->dv, a->dg,
                                    a->dA, a->dk, a->dq, a->dD, a->ddt_bias, NULL, NULL, 0,
                                    f->chunk);
    case BENCH_MOD_DELTANET:
        /* gated, with the L2 norm (bench_module_run's forward) */
        return seqk_deltanet_backward(f->ctx, f->B, f->T, f->H, f->K, f->V, f->scale,
                                      SEQK_DELTANET_L2NORM_QK, f->q, f->k, f->v, f->beta, f->g,
                                      NULL, a->dout, a->dstate_out, a->dq, a->dk, a->dv,
                                      a->dbeta, a->dg, NULL, NULL, 0, f->chunk);
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
    const bool mamba2 = module == BENCH_MOD_MAMBA2, deltanet = module == BENCH_MOD_DELTANET;
    const bool has_dg = mamba2 || deltanet || module == BENCH_MOD_GATED_RETENTION;
    bench_module_call f;
    bench_module_setup(be, &f, module, SEQK_MODE_PARALLEL, BENCH_STATE_OUT, sh->B, sh->T, sh->H,
                       sh->K, sh->V);
    const size_t n_h = (size_t)sh->H;
    linear_bwd a = {&f, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
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
    if (deltanet) {
        a.dbeta = bench_alloc(be, f.n_tok * sizeof(float), "dbeta"); /* [B,T,H] */
        bench_fill_uniform(be, a.dbeta, f.n_tok, 0.0f, 0.0f, 82);
    }
    if (mamba2) {
        a.dA = bench_alloc(be, n_h * sizeof(float), "dA");             /* [H] */
        a.dD = bench_alloc(be, n_h * sizeof(float), "dD");             /* [H] */
        a.ddt_bias = bench_alloc(be, n_h * sizeof(float), "ddt_bias"); /* [H] */
    }
    a.dout = dout;
    a.dstate_out = dso;
    size_t workspace = 0;
    seqk_status st;
    if (deltanet)
        st = seqk_deltanet_backward_workspace_size(be->ctx, sh->B, sh->T, sh->H, sh->K, sh->V, 0,
                                                   f.chunk, &workspace);
    else
        st = seqk_linear_state_backward_workspace_size(be->ctx, sh->B, sh->T, sh->H,
                                                       mamba2 ? 1 : sh->H, sh->K, sh->V, 0,
                                                       f.chunk, &workspace);
    if (bench_skip_unsupported(st, rec) || skip_not_compiled(st, rec)) goto done;
    bench_check(st, "the backward's workspace size (%s)", bc->name);
    if (workspace > 0)
        bench_check(seqk_context_reserve_workspace(be->ctx, workspace),
                    "seqk_context_reserve_workspace(%zu bytes)", workspace);

    /* the backward and the forward in turns (bench_time_paired) */
    bench_stats fwd;
    double rq[3] = {0.0, 0.0, 0.0}; /* bwd / fwd: first quartile, median, third */
    const int lin_repeats = opt->repeats > BWD_LIN_MIN_REPEATS ? opt->repeats : BWD_LIN_MIN_REPEATS;
    st = bench_time_paired(be->ctx, linear_backward_call, &a, bench_module_run, &f, opt->warmup,
                           deltanet ? opt->repeats : lin_repeats,
                           deltanet ? BWD_DN_MIN_REPEATS : lin_repeats,
                           deltanet ? 2.0 * BWD_DN_BUDGET_S : 0.0, &rec->stats, &fwd,
                           rq);
    set_paired(rec, rq);
    if (bench_skip_unsupported(st, rec) || skip_not_compiled(st, rec)) goto done;
    bench_check(st, "%s backward and parallel forward (on %s)", bc->name, be->name);
    /* nonfinite gradients (the forward's calls do not touch them) */
    size_t bad = bench_count_nonfinite(be, a.dq, f.n_qk) +
                 bench_count_nonfinite(be, a.dk, f.n_qk) + bench_count_nonfinite(be, a.dv, f.n_v);
    size_t n_grad = 2 * f.n_qk + f.n_v;
    if (has_dg) bad += bench_count_nonfinite(be, a.dg, f.n_tok), n_grad += f.n_tok;
    if (deltanet) bad += bench_count_nonfinite(be, a.dbeta, f.n_tok), n_grad += f.n_tok;
    if (mamba2) {
        bad += bench_count_nonfinite(be, a.dA, n_h) + bench_count_nonfinite(be, a.dD, n_h) +
               bench_count_nonfinite(be, a.ddt_bias, n_h);
        n_grad += 3 * n_h;
    }


    rec->flops = deltanet ? deltanet_backward_flops(sh->B, sh->T, sh->H, sh->K, sh->V,
                                                    f.chunk, true)
                          : linear_backward_flops(sh->B, sh->T, sh->H, sh->K, sh->V,
                                                  f.chunk, true);
    double floats = 2.0 * (double)f.n_qk + 2.0 * (double)f.n_v + (double)f.n_state; /* read */
    floats += (double)f.n_gates * (double)f.n_tok + (double)f.n_const;
    floats += 2.0 * (double)f.n_qk + (double)f.n_v; /* written */
    if (has_dg) floats += (double)f.n_tok;
    if (deltanet) floats += (double)f.n_tok; /* dbeta */
    if (mamba2) floats += 3.0 * (double)sh->H;
    rec->bytes = floats * sizeof(float);
    rec->tokens = (double)(sh->B * sh->T);
    rec->bound = "sgemm_large";
    rec->forward_s = fwd.median_s;
    rec->check = bad ? "non-finite" : "ok";
    char what[96];
    snprintf(what, sizeof what, "%schunk %lld, no initial state, dstate_out given",
             deltanet ? "gated, L2 norm, " : "", (long long)f.chunk);
    write_note(be, rec, op_target((int)module), fwd.median_s, bench_module_flops(&f), bad,
               n_grad, what);

done:
    if (mamba2) {
        bench_free(be, a.ddt_bias);
        bench_free(be, a.dD);
        bench_free(be, a.dA);
    }
    if (a.dbeta) bench_free(be, a.dbeta);
    if (a.dg) bench_free(be, a.dg);
    bench_free(be, a.dv);
    bench_free(be, a.dk);
    bench_free(be, a.dq);
    bench_free(be, dso);
    bench_free(be, dout);
    bench_module_teardown(be, &f);
}

/* ---- Titans ------------------------------------------------------------------------------ */

typedef struct titans_bwd {
    const bench_module_call *f; /* sizes and inputs (modules.c: eta = g, theta = beta) */
    int64_t b;
    const float *dout, *dstate_out;
    float *dq, *dk, *dv, *deta, *dtheta, *dalpha;
} titans_bwd;

static seqk_status titans_forward_call(void *arg)
{
    const titans_bwd *a = arg;
    const bench_module_call *f = a->f;
    return seqk_titans(f->ctx, SEQK_MODE_PARALLEL, f->B, f->T, f->H, f->K, f->V, f->scale,
                       SEQK_TITANS_L2NORM_QK, a->b, f->q, f->k, f->v, f->g, f->beta, f->alpha,
                       f->o, NULL, f->state, NULL, 0);
}

static seqk_status titans_backward_call(void *arg)
{
    const titans_bwd *a = arg;
    const bench_module_call *f = a->f;
    return seqk_titans_backward(f->ctx, f->B, f->T, f->H, f->K, f->V, f->scale,
                                SEQK_TITANS_L2NORM_QK, a->b, f->q, f->k, f->v, f->g, f->beta,
                                f->alpha, NULL, a->dout, a->dstate_out, a->dq, a->dk, a->dv,
                                a->deta, a->dtheta, a->dalpha, NULL, NULL, 0);
}

static void titans_case(const bench_case *bc, bench_backend *be, const bench_options *opt,
                        bench_record *rec)
{
    const bench_shape *sh = &bc->shape;
    bench_module_call f;
    bench_module_setup(be, &f, BENCH_MOD_TITANS, SEQK_MODE_PARALLEL, BENCH_STATE_OUT, sh->B, sh->T,
                       sh->H, sh->K, sh->V);
    titans_bwd a = {&f, opt->quick ? 32 : BENCH_TITANS_BACKWARD_MINIBATCH, NULL, NULL, NULL,
                    NULL, NULL, NULL, NULL, NULL};
    float *dout = bench_alloc(be, f.n_v * sizeof(float), "dout");          /* [B,T,H,V] */
    float *dso = bench_alloc(be, f.n_state * sizeof(float), "dstate_out"); /* [B,H,E] */
    a.dq = bench_alloc(be, f.n_qk * sizeof(float), "dq");
    a.dk = bench_alloc(be, f.n_qk * sizeof(float), "dk");
    a.dv = bench_alloc(be, f.n_v * sizeof(float), "dv");
    a.deta = bench_alloc(be, f.n_tok * sizeof(float), "deta");
    a.dtheta = bench_alloc(be, f.n_tok * sizeof(float), "dtheta");
    a.dalpha = bench_alloc(be, f.n_tok * sizeof(float), "dalpha");
    bench_fill_uniform(be, dout, f.n_v, -1.0f, 1.0f, 71);
    bench_fill_uniform(be, dso, f.n_state, -0.1f, 0.1f, 72);
    float *const outs[] = {a.dq, a.dk, a.dv, a.deta, a.dtheta, a.dalpha};
    const size_t sizes[] = {f.n_qk, f.n_qk, f.n_v, f.n_tok, f.n_tok, f.n_tok};
    for (size_t i = 0; i < sizeof outs / sizeof outs[0]; i++)
        bench_fill_uniform(be, outs[i], sizes[i], 0.0f, 0.0f, 73 + (uint64_t)i);
    a.dout = dout;
    a.dstate_out = dso;
    size_t ws_fwd = 0, ws_bwd = 0;
    bench_check(seqk_titans_workspace_size(be->ctx, SEQK_MODE_PARALLEL, sh->B, sh->T, sh->H, sh->K,
                                           sh->V, a.b, 0, &ws_fwd),
                "seqk_titans_workspace_size");
    seqk_status st = seqk_titans_backward_workspace_size(be->ctx, sh->B, sh->T, sh->H, sh->K,
                                                         sh->V, a.b, 0, &ws_bwd);
    if (bench_skip_unsupported(st, rec) || skip_not_compiled(st, rec)) goto done;
    bench_check(st, "seqk_titans_backward_workspace_size");
    const size_t workspace = ws_fwd > ws_bwd ? ws_fwd : ws_bwd;
    if (workspace > 0)
        bench_check(seqk_context_reserve_workspace(be->ctx, workspace),
                    "seqk_context_reserve_workspace(%zu bytes)", workspace);

    bench_stats fwd;
    double rq[3] = {0.0, 0.0, 0.0}; /* bwd / fwd: first quartile, median, third */
    st = bench_time_paired(be->ctx, titans_backward_call, &a, titans_forward_call, &a,
                           opt->warmup, opt->repeats, BWD_DN_MIN_REPEATS, 2.0 * BWD_DN_BUDGET_S,
                           &rec->stats, &fwd, rq);
    set_paired(rec, rq);
    if (bench_skip_unsupported(st, rec) || skip_not_compiled(st, rec)) goto done;
    bench_check(st, "%s backward and parallel forward (on %s)", bc->name, be->name);
    size_t bad = 0, n_grad = 0;
    for (size_t i = 0; i < sizeof outs / sizeof outs[0]; i++)
        bad += bench_count_nonfinite(be, outs[i], sizes[i]), n_grad += sizes[i];


    rec->flops = titans_backward_flops(sh->B, sh->T, sh->H, sh->K, sh->V, a.b);
    /* read q, k, v, three gates, dout, dstate_out; write dq, dk, dv, three gate gradients */
    double floats = 2.0 * (double)f.n_qk + 2.0 * (double)f.n_v + (double)f.n_state;
    floats += 3.0 * (double)f.n_tok;
    floats += 2.0 * (double)f.n_qk + (double)f.n_v + 3.0 * (double)f.n_tok;
    rec->bytes = floats * sizeof(float);
    rec->tokens = (double)(sh->B * sh->T);
    rec->bound = "sgemm_large";
    rec->forward_s = fwd.median_s;
    rec->check = bad ? "non-finite" : "ok";
    const double fwd_flops =
        (double)f.n_tok * bench_module_flops_per_token_head(BENCH_MOD_TITANS, true, sh->T, sh->K,
                                                            sh->V, 0, a.b);
    char what[160];
    snprintf(what, sizeof what,
             "minibatch %lld, L2 norm, no initial state, dstate_out given; fwd: the parallel "
             "mode at the same b",
             (long long)a.b);
    write_note(be, rec, op_target(BENCH_MOD_TITANS), fwd.median_s, fwd_flops, bad, n_grad, what);

done:
    for (size_t i = sizeof outs / sizeof outs[0]; i-- > 0;) bench_free(be, outs[i]);
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
    bench_stats fwd;
    double rq[3] = {0.0, 0.0, 0.0}; /* bwd / fwd: first quartile, median, third */
    st = bench_time_paired(be->ctx, softmax_backward_call, &a, softmax_forward_call, &a,
                           opt->warmup, opt->repeats, BWD_SOFTMAX_MIN_REPEATS,
                           2.0 * BWD_SOFTMAX_BUDGET_S, &rec->stats, &fwd, rq);
    set_paired(rec, rq);
    if (bench_skip_unsupported(st, rec) || skip_not_compiled(st, rec)) goto done;
    bench_check(st, "seqk_attention_parallel_backward and forward (T=%lld on %s)", (long long)T,
                be->name);
    const size_t bad = bench_count_nonfinite(be, a.dq, n_qk) +
                       bench_count_nonfinite(be, a.dk, n_qk) + bench_count_nonfinite(be, a.dv, n_v);


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
    write_note(be, rec, op_target(BWD_SOFTMAX), fwd.median_s, pairs * 2.0 * (double)(K + V), bad,
               2 * n_qk + n_v, what);

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

/* ---- the selective scan ------------------------------------------------------------------ */

typedef struct sscan_bwd {
    const bench_module_call *f;     /* the forward's sizes and inputs (modules.c) */
    const float *dy, *dstate_out;   /* [B,T,D], [B,D,Nst] */
    float *du, *ddt, *dz;           /* [B,T,D] */
    float *dBm, *dCm;               /* [B,T,1,Nst] */
    float *dA, *dDskip, *ddt_bias;  /* [D,Nst], [D], [D] */
} sscan_bwd;

static seqk_status sscan_backward_call(void *arg)
{
    const sscan_bwd *a = arg;
    const bench_module_call *f = a->f;
    /* H = D channels, K = Nst, G = 1; u = v, dt = g, z = beta, Bm = k, Cm = q (as the forward) */
    return seqk_selective_scan_backward(f->ctx, f->B, f->T, f->H, f->K, 1, SEQK_SSCAN_DT_SOFTPLUS,
                                        f->v, f->g, f->A, f->k, f->q, f->D, f->beta, f->dt_bias,
                                        NULL, a->dy, a->dstate_out, a->du, a->ddt, a->dA, a->dBm,
                                        a->dCm, a->dDskip, a->dz, a->ddt_bias, NULL, NULL, 0);
}

static void sscan_case(const bench_case *bc, bench_backend *be, const bench_options *opt,
                       bench_record *rec)
{
    const bench_shape *sh = &bc->shape;
    /* bench_shape's letters as the sscan suite's: D in C, Nst in K, G in H */
    const int64_t B = sh->B, T = sh->T, D = sh->C, Nst = sh->K;
    bench_module_call f, fr; /* the forward in its two modes, on the same inputs */
    bench_module_setup(be, &f, BENCH_MOD_SELECTIVE_SCAN, SEQK_MODE_PARALLEL, BENCH_STATE_OUT, B, T,
                       D, Nst, 1);
    fr = f;
    fr.mode = SEQK_MODE_RECURRENT;
    const size_t n_btd = f.n_v, n_bc = f.n_qk, n_a = (size_t)(D * Nst), n_d = (size_t)D;
    sscan_bwd a = {&f, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    float *dy = bench_alloc(be, n_btd * sizeof(float), "dy");
    float *dso = bench_alloc(be, f.n_state * sizeof(float), "dstate_out");
    a.du = bench_alloc(be, n_btd * sizeof(float), "du");
    a.ddt = bench_alloc(be, n_btd * sizeof(float), "ddt");
    a.dz = bench_alloc(be, n_btd * sizeof(float), "dz");
    a.dBm = bench_alloc(be, n_bc * sizeof(float), "dBm");
    a.dCm = bench_alloc(be, n_bc * sizeof(float), "dCm");
    a.dA = bench_alloc(be, n_a * sizeof(float), "dA");
    a.dDskip = bench_alloc(be, n_d * sizeof(float), "dDskip");
    a.ddt_bias = bench_alloc(be, n_d * sizeof(float), "ddt_bias");
    bench_fill_uniform(be, dy, n_btd, -1.0f, 1.0f, 83);
    bench_fill_uniform(be, dso, f.n_state, -0.1f, 0.1f, 84);
    float *const outs[] = {a.du, a.ddt, a.dz, a.dBm, a.dCm, a.dA, a.dDskip, a.ddt_bias};
    const size_t sizes[] = {n_btd, n_btd, n_btd, n_bc, n_bc, n_a, n_d, n_d};
    for (size_t i = 0; i < sizeof outs / sizeof outs[0]; i++)
        bench_fill_uniform(be, outs[i], sizes[i], 0.0f, 0.0f, 85 + i);
    a.dy = dy;
    a.dstate_out = dso;

    size_t workspace = 0;
    seqk_status st = seqk_selective_scan_backward_workspace_size(be->ctx, B, T, D, Nst, 1, 0,
                                                                 &workspace);
    if (bench_skip_unsupported(st, rec) || skip_not_compiled(st, rec)) goto done;
    bench_check(st, "seqk_selective_scan_backward_workspace_size");
    if (workspace > 0)
        bench_check(seqk_context_reserve_workspace(be->ctx, workspace),
                    "seqk_context_reserve_workspace(%zu bytes)", workspace);

    st = bench_time_budget(be->ctx, sscan_backward_call, &a, opt->warmup, opt->repeats,
                           BWD_SSCAN_MIN_REPEATS, BWD_SSCAN_BUDGET_S, &rec->stats);
    if (bench_skip_unsupported(st, rec) || skip_not_compiled(st, rec)) goto done;
    bench_check(st, "seqk_selective_scan_backward (on %s)", be->name);
    size_t bad = 0, n_grad = 0;
    for (size_t i = 0; i < sizeof outs / sizeof outs[0]; i++)
        bad += bench_count_nonfinite(be, outs[i], sizes[i]), n_grad += sizes[i];

    bench_stats fwd_par, fwd_rec;
    st = bench_time(be->ctx, bench_module_run, &f, opt->warmup, opt->repeats, &fwd_par);
    if (bench_skip_unsupported(st, rec) || skip_not_compiled(st, rec)) goto done;
    bench_check(st, "seqk_selective_scan parallel (on %s)", be->name);
    st = bench_time(be->ctx, bench_module_run, &fr, opt->warmup, opt->repeats, &fwd_rec);
    if (bench_skip_unsupported(st, rec) || skip_not_compiled(st, rec)) goto done;
    bench_check(st, "seqk_selective_scan recurrent (on %s)", be->name);
    const bool par_faster = fwd_par.median_s <= fwd_rec.median_s;
    const double fwd_s = par_faster ? fwd_par.median_s : fwd_rec.median_s;

    rec->flops = sscan_backward_flops(B, T, D, Nst);
    rec->bytes = (double)((7 * n_btd + 4 * n_bc) * sizeof(float));
    rec->tokens = (double)(B * T);
    rec->bound = "copy";
    rec->forward_s = fwd_s;
    rec->check = bad ? "non-finite" : "ok";
    const double updates = (double)B * (double)T * (double)D * (double)Nst;
    char what[320];
    snprintf(what, sizeof what,
             "fwd: the faster mode, %s (parallel %.3f ms, recurrent %.3f ms); %.3f G state "
             "updates/s (B*T*D*Nst / median); softplus dt, D skip, z gate, dstate_out given; "
             "issue #16's target is >= %.0fx PyTorch autograd (bench/peers.py)",
             par_faster ? "parallel" : "recurrent", fwd_par.median_s * 1e3,
             fwd_rec.median_s * 1e3, updates / rec->stats.median_s / 1e9,
             BENCH_SSCAN_BACKWARD_MIN_PEER_RATIO);
    write_note(be, rec, op_target(BENCH_MOD_SELECTIVE_SCAN), fwd_s, bench_module_flops(&f), bad,
               n_grad, what);

done:
    for (size_t i = sizeof outs / sizeof outs[0]; i-- > 0;) bench_free(be, outs[i]);
    bench_free(be, dso);
    bench_free(be, dy);
    bench_module_teardown(be, &f);
}

/* ---- the plan ------------------------------------------------------------------------------ */

static void backward_run(const bench_case *bc, bench_backend *be, const bench_options *opt,
                         bench_record *rec)
{
    if ((int)bc->flags == BWD_SOFTMAX)
        softmax_case(bc, be, opt, rec);
    else if ((int)bc->flags == BENCH_MOD_SELECTIVE_SCAN)
        sscan_case(bc, be, opt, rec);
    else if ((int)bc->flags == BENCH_MOD_TITANS)
        titans_case(bc, be, opt, rec);
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
    const sscan_shape *ss = opt->quick ? &SSCAN_SHAPE_QUICK : &SSCAN_SHAPE;
    bench_case bc = {0};
    bc.suite = "backward";
    snprintf(bc.name, sizeof bc.name, "%s", bench_module_name(BENCH_MOD_SELECTIVE_SCAN));
    bc.shape.B = ss->B;
    bc.shape.T = ss->T;
    bc.shape.C = ss->D;   /* channels */
    bc.shape.K = ss->Nst; /* state size */
    bc.shape.H = 1;       /* groups */
    bc.shape.N = ss->B;
    bc.shape.mode = "backward";
    bc.flags = (unsigned)BENCH_MOD_SELECTIVE_SCAN;
    bc.run = backward_run;
    bench_plan_add(plan, be, &bc);
}
