/*
 * gpu/deltanet.cu -- CUDA backend of DeltaNet and gated DeltaNet
 * (seqk_deltanet, DESIGN 3.3). First, plain version: fp32 everywhere, CUDA
 * cores only; the reference the tuned kernels will be checked against. Plus
 * the native bf16 / f16 parallel mode ("Reduced precision" below).
 * Written without a GPU at hand: compiled warning-free for sm_80/sm_90; the
 * kernels were checked against the CPU backend in a host emulation (one
 * std::thread per CUDA thread, __syncthreads as a barrier, NaN-poisoned
 * shared memory, ThreadSanitizer clean), and tests/test_deltanet.c runs them
 * on every backend once a device is there.
 *
 * The math, per sequence n and head h (a_t = exp(g_t), 1 without g; with
 * SEQK__LIN_L2NORM q and k are divided by sqrt(sum x^2 + eps) first):
 *
 *   k~ = k,  q~ = scale q
 *   S_t = a_t S_{t-1} + k~_t delta_t^T,   delta_t = beta_t (v_t - a_t S_{t-1}^T k~_t)
 *   o_t = S_t^T q~_t = a_t S_{t-1}^T q~_t + (k~_t . q~_t) delta_t
 *
 * Recurrent mode: dn_recurrent_kernel, one block of 256 threads (8 warps)
 * per (sequence, head, block of 32 state columns), grid N*H*ceil(V/32). The
 * block's K x 32 slice of the state lives in shared memory (lane j = column,
 * warp w = rows w, w+8, ...; conflict-free). Per token: the block loads the
 * raw q_t, k_t (K floats, coalesced) and v_t (32 floats) and reduces
 * sum q^2, sum k^2, q.k (warp shuffles, one partial per warp); then one pass
 * over the slice applies the previous token's pending update
 * (row_i = a_{t-1} row_i + k_{t-1,i} d_{t-1}) and accumulates per thread
 * x = sum_i k_i row_i and y = sum_i q_i row_i over its rows; after a barrier
 * warp 0 sums the 8 partials, forms the norms, delta_t and o_t and stores
 * d_t = fk delta_t (the key's normalisation folded in) for the next pass. So
 * the update of token t is applied during the pass of token t+1 (one pass
 * over the state per token) and once more after the last token; two
 * barriers per token. Inputs of a token that warp 0 still reads while the
 * others load the next token (k, v, beta, a, norm partials) are
 * double-buffered by token parity. Shared memory 4 (35 K + 700) bytes
 * (K = 1024: 144 KB, set with cudaFuncSetAttribute above 48 KB).
 *
 * Parallel (chunked) mode, the WY / UT form, per chunk of L tokens (Lc in
 * the last one), G_i the cumulative log-gate inside the chunk:
 *
 *   A    = strict_lower(diag(beta) (K~ K~^T .* Gamma)),  Gamma_ij = exp(G_i - G_j), i >= j
 *   U    = (I + A)^-1 diag(beta) V,   W = (I + A)^-1 diag(beta exp(G)) K~
 *   P    = (Q~ K~^T) .* Gamma .* M_causal
 *   Vnew = U - W S0
 *   O    = diag(exp(G)) Q~ S0 + P Vnew
 *   S'   = exp(G_Lc) S0 + (diag(exp(G_Lc - G)) K~)^T Vnew
 *
 * Stages 0-4 live in gpu/deltanet.cuh (the backward reruns them).
 * Stages, in order on the context's stream (every stage but the last is
 * parallel over all chunks of all sequences and heads):
 *   (0) seqk__chunk_first_kernel (gpu/chunks.cuh; varlen only): first[n] =
 *       sum_{m<n} ceil(len_m / L), the global chunk numbering, from the
 *       device cu_seqlens (without varlen first[n] = n ceil(T / L) inline).
 *   (1) dn_norm_kernel: one warp per (token, head): Qn = q~, Kn = k~
 *       ([B*T, H, K] in the workspace).
 *       dn_gates_kernel (gated only): one thread per (chunk, head): Gc, the
 *       cumulative log-gate inside the chunk ([B*T, H], in double: see
 *       gpu/deltanet.cuh).
 *   (2) dn_ap_kernel: block (chunk, head, 16 x 16 tile of the L x L
 *       matrices): A and P together (K~ K~^T and Q~ K~^T over K in steps of
 *       16 through shared memory; exp only where j <= i; tiles above the
 *       diagonal just write zeros).
 *   (3) dn_solve_kernel: block per (chunk, head), one thread per column of
 *       [V | K]: the forward substitution (I + A) X = R row by row,
 *       X_i = R_i - sum_{j<i} A_ij X_j, for R = diag(beta) V (-> U) and
 *       R = diag(beta exp(G)) K~ (-> W). Equivalent to forming T = (I + A)^-1
 *       and multiplying, without the T V and T K products.
 *   (4) dn_state_kernel: the only stage that depends on S0, hence sequential
 *       over the chunks of a sequence: one block (256 threads) per
 *       (sequence, head, 32 state columns) with its K x 32 slice of the state
 *       in shared memory; per chunk: Vnew = U - W S0 (in place in U), the
 *       outputs O, then S = exp(G_Lc) S + Kd^T Vnew. Given U, W and P the
 *       state's columns are independent, so the blocks never communicate.
 *
 * Workspace (256-byte aligned regions): parallel mode first [N+1] int32
 * (varlen), Gc [B*T*H] doubles (gated), Qn, Kn [B*T*H*K], A, P [nchunks*H*L*L],
 * U [nchunks*H*L*V], W [nchunks*H*L*K]. The recurrent mode uses none (a
 * decoding step allocates nothing).
 *
 * Reduced precision (seqk.h, "Dtypes"; issue #21 phase 3): the parallel mode
 * with P->dtype BF16 / F16 (q, k, v, o in that dtype; routed here by
 * seqk_deltanet_ex on a CUDA context when ssm/deltanet.c's SEQK__DN_NATIVE
 * is on) runs natively, as the linear-state
 * engine's does (gpu/linear_state.cu): fp32 elementwise work in seqk's
 * kernels, the chunk products through gpu/gemm.cu (cuBLAS, fp32
 * accumulation), the dtype products on operands in the dtype, the products
 * with T or S as an operand in fp32 (CUBLAS_COMPUTE_32F on fp32 operands,
 * never TF32). Chunk c, head h form batch entry b = c H + h of every
 * product; rows of a short last chunk are zero-padded to L. With fq, fk the
 * L2 norm's factors (ones without it), q~ = scale fq q, k~ = fk k:
 *   (0) chunk table (varlen), dn_gates_kernel (gated): as above.
 *   (1) dnl_pack_kernel, one warp per packed row (b, i): Qa = q, Kb = k in
 *       the dtype (the inputs themselves: exact), fq, fk, and in fp32
 *       Qg = exp(G_i) q~, Rv = beta v, Rk = beta exp(G_i) k~, Kn = k~.
 *   (2) gemm (dtype): Tm = Kb Kb^T, Sx = scale Qa Kb^T ([nb, L, L], fp32;
 *       exact products of dtype values, fp32 sums). The norm's factors are
 *       applied afterwards, in fp32: K~ K~^T = diag(fk) K K^T diag(fk).
 *   (3) dnl_tri_kernel, block per b: Pb = round(Sx .* (fq fk^T) .* Gamma
 *       .* M_causal) (exp only where j <= i), then A (fp32, from Tm) and
 *       T = (I + A)^-1 in place of Tm by forward substitution (one thread per
 *       column, A's row in shared memory; rows past the chunk T_i = e_i).
 *   (4) gemm (fp32: T): U = T Rv, W = T Rk.
 *   (5) dn_state_kernel (stage 4 above, without the outputs): Vnew = U - W
 *       S0 in place in U, the state before each chunk into Sc, S = exp(G_Lc)
 *       S0 + (diag(exp(G_Lc - G)) K~)^T Vnew; all fp32, from s_in to s_out.
 *       W S0 and K~d^T Vnew stay in this one sequential kernel rather than
 *       cuBLAS: they depend on the previous chunk's state, so as batched
 *       products they would take several launches per chunk index (and a
 *       varlen batch has no constant stride); W S0 has S as an operand
 *       (fp32 either way), and K~d^T Vnew in fp32 only removes a rounding.
 *   (6) gemm (fp32: S0): Sx = Qg Sc ([nb, L, V]: the scores are consumed);
 *       seqk__cuda_convert (gpu/convert.cu): Vb = round(Vnew) (in Rv's block); gemm (dtype):
 *       Sx += Pb Vb.
 *   (7) dnl_write_kernel, one warp per packed row: o = round(Sx).
 * So the dtype roundings are the masked score P, Vnew and o: A, T, U, W,
 * the inter-chunk term and the whole state recurrence are fp32 on exact
 * inputs, and the forward substitution (whose conditioning would amplify a
 * rounded k~: 3.4 u in f16 in a first version that rounded the normalised
 * keys) sees no dtype rounding. Bound and measurements: seqk.h.
 * Stages (0)-(5) are dnl_launch_states (gpu/deltanet.cuh), which the native
 * backward (gpu/deltanet_backward.cu) reruns.
 * Workspace (dnl_make_plan): first, Gc, Kn (as above), U, W, the chunk
 * states Sc [nb, K, V], Qa, Kb, fq, fk, Qg, Rv, Rk, Tm, Sx [nb, L, max(L, V)]
 * and Pb. A first version: Q K^T and K K^T are computed for the whole
 * L x L block (the upper triangle discarded), the substitution is one
 * thread per column (L^3 / 6 FMAs per chunk) and the state pass is stage 4's
 * CUDA-core kernel.
 *
 * To tune (measure first): tensor cores (tf32 mma) for stages 2-4; a
 * blocked forward substitution (T on diagonal blocks, products off them);
 * fusing stages 1-3 per chunk in shared memory for K, V <= 128, which drops
 * the Qn/Kn/A/P buffers; more than 32 columns per state block (and the state
 * in registers) once N*H*V/32 fills the machine; tokens in tiles in the
 * recurrent kernel to amortise its barriers.
 */
/* core/internal.h and scan/linear_state.h are C headers without C++ guards:
 * deltanet.cuh includes them first inside extern "C" so that seqk__fail and
 * seqk__workspace get C linkage here. The kernel arguments, the state slice
 * and the chunked mode's stages 0-4 are in deltanet.cuh (the backward,
 * gpu/deltanet_backward.cu, reruns them). */
#include "deltanet.cuh"
#include "dtype.cuh"

/* ---- recurrent mode -------------------------------------------------------------- */

static size_t dn_recurrent_smem(int K)
{
    /* S [K][32], q [K], k [2][K], v [2][32], d [32], red [2][8][32], nred [2][8][4], sc [8] */
    return sizeof(float) * ((size_t)K * DN_COLS + 3 * (size_t)K + 2 * DN_COLS + DN_COLS +
                            2 * DN_WARPS * DN_COLS + 2 * DN_WARPS * 4 + 8);
}

static __global__ void __launch_bounds__(DN_THREADS) dn_recurrent_kernel(dn_args a, int nvb)
{
    extern __shared__ float sm[];
    const int K = a.K, V = a.V, H = a.H;
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
    const dn_slice sl = dn_slice_of(a, nvb);

    float *S = sm;                                   /* [K][32] the state slice */
    float *qs = S + (size_t)K * DN_COLS;             /* [K] raw q_t */
    float *ks = qs + K;                              /* [2][K] raw k by token parity */
    float *vs = ks + 2 * K;                          /* [2][32] v_t columns by parity */
    float *dp = vs + 2 * DN_COLS;                    /* [32] pending d = fk delta */
    float *red = dp + DN_COLS;                       /* [2][8][32] partial x, y */
    float *nred = red + 2 * DN_WARPS * DN_COLS;      /* [2][8][4] partial q.q, k.k, q.k */
    float *sc = nred + 2 * DN_WARPS * 4;             /* beta [2], a [2], pending a [1] */

    int64_t row0, len;
    seqk__chunks_seq(a.map, sl.n, &row0, &len);
    dn_slice_load(a, sl, a.s_in, S);
    if (tid < DN_COLS) dp[tid] = 0.0f; /* no pending update before the first token */
    if (tid == 0) sc[4] = 1.0f;

    for (int64_t t = 0; t < len; t++) {
        const int par = (int)(t & 1);
        const int64_t r = row0 + t, rh = r * H + sl.h;
        /* load the token; partial norms */
        const float *qg = a.q + rh * K, *kg = a.k + rh * K;
        float *kt = ks + par * K;
        float sq = 0.0f, sk = 0.0f, sqk = 0.0f;
        for (int i = tid; i < K; i += DN_THREADS) {
            const float x = qg[i], y = kg[i];
            qs[i] = x;
            kt[i] = y;
            sq = fmaf(x, x, sq);
            sk = fmaf(y, y, sk);
            sqk = fmaf(x, y, sqk);
        }
        sq = seqk__warp_sum(sq);
        sk = seqk__warp_sum(sk);
        sqk = seqk__warp_sum(sqk);
        if (lane == 0) {
            float *nr = nred + (par * DN_WARPS + w) * 4;
            nr[0] = sq, nr[1] = sk, nr[2] = sqk;
        }
        if (tid < DN_COLS) {
            const int c = sl.vb * DN_COLS + tid;
            vs[par * DN_COLS + tid] = c < V ? a.v[rh * V + c] : 0.0f;
        }
        if (tid == 0) {
            sc[par] = a.beta[rh];
            sc[2 + par] = a.gated ? expf(a.g[rh]) : 1.0f;
        }
        __syncthreads();
        /* one pass: the previous token's update, then x, y on the updated rows */
        const bool pend = t > 0;
        const float ap = sc[4], dj = dp[lane];
        const float *kp = ks + (par ^ 1) * K;
        float xa = 0.0f, ya = 0.0f;
        for (int i = w; i < K; i += DN_WARPS) {
            float s = S[i * DN_COLS + lane];
            if (pend) {
                s = fmaf(kp[i], dj, ap * s);
                S[i * DN_COLS + lane] = s;
            }
            xa = fmaf(kt[i], s, xa);
            ya = fmaf(qs[i], s, ya);
        }
        red[w * DN_COLS + lane] = xa;
        red[(DN_WARPS + w) * DN_COLS + lane] = ya;
        __syncthreads();
        /* warp 0: delta_t, o_t, the pending update */
        if (w == 0) {
            float x = 0.0f, y = 0.0f, nq = 0.0f, nk = 0.0f, nqk = 0.0f;
            for (int ww = 0; ww < DN_WARPS; ww++) {
                x += red[ww * DN_COLS + lane];
                y += red[(DN_WARPS + ww) * DN_COLS + lane];
                const float *nr = nred + (par * DN_WARPS + ww) * 4;
                nq += nr[0], nk += nr[1], nqk += nr[2];
            }
            float fq = a.scale, fk = 1.0f;
            if (a.l2) {
                fq = a.scale / sqrtf(nq + SEQK__LIN_L2NORM_EPS);
                fk = 1.0f / sqrtf(nk + SEQK__LIN_L2NORM_EPS);
            }
            const float at = sc[2 + par], bt = sc[par];
            const float d = bt * (vs[par * DN_COLS + lane] - at * (fk * x));
            if (sl.colok) a.o[rh * V + sl.col] = at * (fq * y) + (fq * fk * nqk) * d;
            dp[lane] = fk * d; /* S += k d^T with the raw k of this token */
            if (lane == 0) sc[4] = at;
        }
    }
    __syncthreads();
    if (len > 0) {
        const float ap = sc[4], dj = dp[lane];
        const float *kp = ks + ((len - 1) & 1) * K;
        for (int i = w; i < K; i += DN_WARPS)
            S[i * DN_COLS + lane] = fmaf(kp[i], dj, ap * S[i * DN_COLS + lane]);
    }
    dn_slice_store(a, sl, sl.nh, S, a.s_out);
}

/* ---- parallel mode in bf16 / f16 (native; issue #21 phase 3): the outputs ------- */

/* One warp per packed row: o = round(O) for rows < Lc (stages (0)-(5): gpu/deltanet.cuh). */
static __global__ void __launch_bounds__(DN_THREADS) dnl_write_kernel(dnl_args p, int64_t nrows)
{
    int64_t b, r0;
    int i, h, Lc;
    if (!dnl_row(p, nrows, &b, &i, &h, &r0, &Lc) || i >= Lc) return;
    const int V = p.a.V;
    const float *O = p.Sx + (b * p.a.map.L + i) * (int64_t)V;
    const int64_t orow = ((r0 + i) * p.a.H + h) * V;
    for (int vv = threadIdx.x & 31; vv < V; vv += 32)
        p.o[orow + vv] = seqk__dt_round(O[vv], p.bf16);
}

/* ---- host side --------------------------------------------------------------------- */

typedef struct {
    int64_t nchunks;
    size_t off_first, off_gc, off_qn, off_kn, off_a, off_p, off_u, off_w, bytes;
} dn_plan;

static size_t dn_align(size_t n) { return seqk__align_up(n, DN_WS_ALIGN); }

static dn_plan dn_make_plan(const seqk__lin *P, int mode)
{
    dn_plan pl = {};
    if (mode != SEQK_MODE_PARALLEL) return pl;
    const size_t f = sizeof(float), rows = (size_t)(P->B * P->T), H = (size_t)P->H;
    const size_t L = (size_t)P->chunk, K = (size_t)P->K, V = (size_t)P->V;
    pl.nchunks = seqk__count_chunks(P->cu, P->N, P->B, P->T, P->chunk);
    const size_t nch = (size_t)pl.nchunks * H;
    size_t o = 0;
    pl.off_first = o, o += dn_align((size_t)(P->N + 1) * sizeof(int32_t));
    pl.off_gc = o, o += dn_align(rows * H * sizeof(double));
    pl.off_qn = o, o += dn_align(rows * H * K * f);
    pl.off_kn = o, o += dn_align(rows * H * K * f);
    pl.off_a = o, o += dn_align(nch * L * L * f);
    pl.off_p = o, o += dn_align(nch * L * L * f);
    pl.off_u = o, o += dn_align(nch * L * V * f);
    pl.off_w = o, o += dn_align(nch * L * K * f);
    pl.bytes = o;
    return pl;
}

/* ---- native path: host ------------------------------------------------------------- */

/* The native bf16 / f16 parallel mode (see the top comment): stages (0)-(5)
 * (dnl_launch_states, gpu/deltanet.cuh, which the backward reruns), then the
 * outputs. */
static seqk_status dnl_run(const char *fn, seqk_context *ctx, const seqk__lin *P, dn_args a,
                           int64_t blocks, int nvb, cudaStream_t stream)
{
    const dnl_plan pl = dnl_make_plan(P);
    void *base = NULL;
    seqk_status st = seqk__workspace(fn, ctx, pl.bytes, &base);
    if (st) return st;
    const int64_t H = a.H, L = a.map.L, K = a.K, V = a.V;
    const int64_t nb = pl.nchunks * H, nrows = nb * L;
    const seqk_dtype dt = P->dtype;
    dnl_args p;
    if ((st = dnl_launch_states(fn, ctx, P, &a, &p, pl, (char *)base, blocks, nvb, stream)))
        return st;
    if (nb == 0) return SEQK_SUCCESS;
    /* O = Qg S0 (fp32 operands: S0), then O += Pb round(Vnew) */
    if ((st = seqk__cuda_gemm(fn, ctx, SEQK_DTYPE_F32, 0, 0, L, V, K, 1.0f, p.Qg, K, L * K, a.Sc,
                              V, K * V, 0.0f, p.Sx, V, L * V, nb)))
        return st;
    if ((st = seqk__cuda_convert(fn, ctx, dt, 0, a.U, p.Vb, nrows * V))) return st;
    if ((st = seqk__cuda_gemm(fn, ctx, dt, 0, 0, L, V, L, 1.0f, p.Pb, L, L * L, p.Vb, V, L * V,
                              1.0f, p.Sx, V, L * V, nb)))
        return st;
    SEQK__GRID_OR_FAIL(gw, (nrows + DN_WARPS - 1) / DN_WARPS);
    dnl_write_kernel<<<gw, DN_THREADS, 0, stream>>>(p, nrows);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    return SEQK_SUCCESS;
}

extern "C" size_t seqk__cuda_deltanet_workspace(const seqk__lin *P, int mode)
{
    if (P->dtype != SEQK_DTYPE_F32 && mode == SEQK_MODE_PARALLEL) return dnl_make_plan(P).bytes;
    return dn_make_plan(P, mode).bytes;
}

extern "C" seqk_status seqk__cuda_deltanet(seqk_context *ctx, int mode, const seqk__lin *P,
                                           const float *beta, const int32_t *cu_device)
{
    static const char fn[] = "seqk_deltanet (CUDA)";
    SEQK_CUDA_TRY(fn, cudaSetDevice(ctx->device));
    const cudaStream_t stream = seqk__stream(ctx);
    dn_args a = dn_args_of(P, beta, cu_device);
    const int nvb = (int)((P->V + DN_COLS - 1) / DN_COLS);
    const int64_t blocks = P->N * P->H * nvb;
    if (blocks > INT_MAX)
        return seqk__fail(SEQK_ERROR_UNSUPPORTED, "%s: N*H*ceil(V/32)=%lld blocks, at most %d", fn,
                          (long long)blocks, INT_MAX);

    if (P->dtype != SEQK_DTYPE_F32) {
        if (mode != SEQK_MODE_PARALLEL)
            return seqk__fail(SEQK_ERROR_INTERNAL, "%s: %s in the native path without its mode",
                              fn, seqk_dtype_string(P->dtype));
        return dnl_run(fn, ctx, P, a, blocks, nvb, stream);
    }
    if (mode == SEQK_MODE_RECURRENT) {
        const size_t smem = dn_recurrent_smem(a.K);
        seqk_status st = seqk__smem_optin(fn, dn_recurrent_kernel, smem);
        if (st) return st;
        dn_recurrent_kernel<<<(unsigned)blocks, DN_THREADS, smem, stream>>>(a, nvb);
        SEQK_CUDA_CHECK_LAUNCH(fn);
        return SEQK_SUCCESS;
    }

    const dn_plan pl = dn_make_plan(P, mode);
    void *base = NULL;
    seqk_status st = seqk__workspace(fn, ctx, pl.bytes, &base);
    if (st) return st;
    char *ws = (char *)base;
    a.Gc = (double *)(ws + pl.off_gc);
    a.Qn = (float *)(ws + pl.off_qn), a.Kn = (float *)(ws + pl.off_kn);
    a.A = (float *)(ws + pl.off_a), a.P = (float *)(ws + pl.off_p);
    a.U = (float *)(ws + pl.off_u), a.W = (float *)(ws + pl.off_w);
    if ((st = dn_launch_prep(fn, &a, (int32_t *)(ws + pl.off_first), P->B * P->T,
                             pl.nchunks * P->H, stream)))
        return st;
    return dn_launch_state(fn, a, blocks, nvb, stream);
}
