/*
 * gpu/deltanet_backward.cu -- CUDA backend of seqk_deltanet_backward: the
 * gradients of DeltaNet and gated DeltaNet (DESIGN 3.3, 3.7). The math is
 * the CPU backward's (ssm/deltanet_backward.c, whose top comment derives
 * it); this file computes the same per-chunk formulas with every chunk in
 * parallel. First, plain version: fp32 FFMA on CUDA cores, no tensor cores,
 * no cuBLAS (bf16 / f16: the native path at the end of this comment, on
 * cuBLAS). Deterministic: no atomics, every sum in a fixed order.
 * Written without a GPU at hand: compiled warning-free for sm_80/sm_90 and
 * run on the CPU emulator (tools/cuda_emu) against the float64 reference of
 * tests/test_deltanet_backward.c; not yet run on a GPU.
 *
 * Per chunk of L tokens (Lc in the last one), G the cumulative log-gate
 * inside it, Gamma_ij = exp(G_i - G_j) (i >= j), eq_i = exp(G_i), ek_i =
 * exp(G_L - G_i), S0 the state before the chunk, dS the gradient of the
 * state after it:
 *
 *   forward  A, P, U = T diag(beta) V, W = T diag(beta eq) K~ (T = (I + A)^-1),
 *            Vn = U - W S0, S_next = exp(G_L) S0 + (diag(ek) K~)^T Vn
 *   reverse  dVn = P^T dO + diag(ek) K~ dS,
 *            dS0 = exp(G_L) dS + (diag(eq) Q~)^T dO - W^T dVn
 *   local    X = T^T dVn (back substitution), Y = T^T dW = -X S0^T
 *            dA_ij = -(X_i . Vn_j), j < i
 *            M_ij = beta_i dA_ij Gamma_ij,  DA_ij = dA_ij Gamma_ij (k~_i . k~_j)
 *            dP_ij = (dO_i . Vn_j) Gamma_ij, j <= i
 *            dv_i = beta_i X_i
 *            dbeta_i = v_i . X_i + eq_i k~_i . Y_i + sum_j DA_ij
 *            dQ~_i = sum_{j<i} dP_ij k~_j + dP_ii k~_i + eq_i S0 dO_i
 *            dK~_i = sum_{l>i} dP_li q~_l + dP_ii q~_i + ek_i dS Vn_i
 *                    + beta_i eq_i Y_i + sum_l (M_il + M_li) k~_l
 *   gate     dg_t = sum_{i >= t} gt_i + sum_{j < t} bt_j + Dterm (per chunk),
 *            gt_i = q~_i . (the strict pairs of dQ~_i + eq_i S0 dO_i)
 *                   - k~_i . (the strict pairs of dK~_i)
 *                   + beta_i eq_i k~_i . Y_i + sum_{j<i} D_ij - sum_{l>i} D_li,
 *            D_ij = beta_i DA_ij, bt_j = ek_j k~_j . (dS Vn_j),
 *            Dterm = exp(G_L) <S0, dS>
 * (each term a pair on the two sides of t with its decay: dg keeps its
 * relative accuracy under strong decay, as on the CPU), then dq, dk through
 * scale and the optional L2 norm.
 *
 * Two products fold away (as on the CPU): with dW = -dVn S0^T, Y = T^T dW =
 * -T^T dVn S0^T = -X S0^T, so only the V columns of dVn are back-substituted
 * and Y is one L x K x V product after it; and dA = -(X U^T + Y W^T) =
 * -(X U^T - X S0^T W^T) = -X (U - W S0)^T = -X Vn^T, so dA reads Vn (kept
 * for dP anyway) and the backward keeps no U: stage 3 writes U into Vn's
 * region and stage 4 turns it into Vn = U - W S0 in place (the forward's
 * own in-place mode, dn_args.Vn NULL). Vn is the forward's own rounding of
 * U - W S0, so no new cancellation.
 *
 * Kernels, in launch order (nch = chunks x heads over all sequences):
 *   stages 0-3 of the forward (gpu/deltanet.cuh): chunk table (varlen), Qn,
 *     Kn, Gc (double), A, P, W, and U into Vn's region
 *   dn_state_kernel (stage 4) without outputs: Vn = U - W S0 in place and
 *     Sc, the state before every chunk; block per (sequence, head, 32
 *     state columns)
 *   dnb_dstate_kernel: the reverse pass, sequential over a sequence's
 *     chunks, block per (sequence, head, 32 columns) with its K x 32 slice
 *     of dS in shared memory (the columns of dS are independent): dSc, the
 *     gradient after every chunk, dVn (into X), dstate_in
 *   then every chunk in parallel, block per (chunk, head):
 *   dnb_backsolve_kernel X = T^T dVn in place: thread per column,
 *                       (I + A)^T X = dVn from the last row up
 *   dnb_y_kernel        Y = -X S0^T (thread per element; zero at a zero S0)
 *   dnb_pairs_kernel    dP, M, DA with dA = -X Vn^T (thread per pair)
 *   dnb_rows_kernel     warp per token: dq, dk, dv, dbeta, gt (into dg), bt
 *   dnb_gate_rev_kernel, dnb_gate_fwd_kernel (gated) warp per (chunk,
 *                       head): the two sums of dg and Dterm (gpu/chunks.cuh)
 *
 * Workspace (256-byte aligned regions; BT = B*T, nch = chunks x heads):
 * first [N+1] int32 (varlen), Gc [BT*H] doubles, Qn, Kn [BT*H*K], A, P, dP,
 * M, DA [nch*L*L], Vn (U before stage 4), X [nch*L*V], W, Y [nch*L*K], Sc,
 * dSc [nch*K*V], btb [BT*H]: about BT*H*(4K + 2V + 5L + 3) + 2 nch*K*V
 * floats (no U region: see above). Every chunk state is kept (the GPU has
 * the memory; every stage stays one launch).
 *
 * To tune (measure first): shared-memory tiles (64 x 64, as
 * gpu/linear_state_backward.cu) for the pair and row products, which read
 * their operands from global memory (cached) here; tensor cores; a blocked
 * back substitution; fusing the per-chunk kernels for small K, V.
 *
 * Reduced precision (seqk.h, "Dtypes", native DeltaNet backward; issue #21
 * phase 5): with P->dtype BF16 / F16 (q, k, v, dout, dq, dk, dv in that
 * dtype; beta, g, the states and dbeta, dg, dstate_in fp32; routed here by
 * seqk_deltanet_backward_ex on a CUDA context) the backward runs natively,
 * as the native forward (gpu/deltanet.cu) and the linear-state family's
 * native backward (gpu/linear_state_backward.cu) do: the chunk products on
 * cuBLAS (gpu/gemm.cu: cublasGemmStridedBatchedEx, CUBLAS_COMPUTE_32F, fp32
 * results), dtype operands the inputs themselves (exact) or derived ones
 * rounded just before the product; the products with T as an operand in
 * fp32 (never TF32); every elementwise step, mask, decay, state walk and
 * reduction fp32 in seqk's kernels, in a fixed order (no atomics). Batch
 * entry b = c H + h, rows of a short last chunk zero-padded to L; fq, fk
 * the L2 norm's factors (ones without it), q~ = scale fq q, k~ = fk k:
 *   (0)-(5) the native forward's own stages (dnl_launch_states,
 *       gpu/deltanet.cuh; not a copy): Gc, the packed inputs Qa = q, Kb = k
 *       (dtype, exact), fq, fk, Kn = k~ (fp32), Tm = T = (I + A)^-1 and
 *       Sx = scale Q K^T (fp32, both kept), Pb = round(P), W, and the fp32
 *       state pass: Vn = U - W S0 (in U's region) and Sc, the state before
 *       every chunk.
 *   (6) dnbl_pack_kernel: dOa = dout (exact), Qw = round(exp(G_i - G_0)
 *       q~_i) and wcoef = exp(G_0) (G_0 the chunk's first token: exp(G_i)
 *       itself flushes in f16 under strong decay, as in the linear-state
 *       backward). gemm (dtype): dVn = Pb^T dOa [L, V]; Z = Qw^T dOa [K, V].
 *   (7) dnb_dstate_kernel (the fp32 path's reverse pass, native branch;
 *       sequential over a sequence's chunks, fp32): dSc, dVn += ek K~ dS in
 *       place, dS0 = exp(G_L) dS + wcoef Z - W^T dVn, dstate_in. (ek K~ dS
 *       and W^T dVn depend on the chunk after: as in the forward's state
 *       pass they stay in this one kernel.)
 *   (8) gemm (fp32: T): X = T^T dVn (the back substitution as a product:
 *       T is explicit here). seqk__cuda_convert: Xb = round(X), Vb =
 *       round(Vn), S0b = round(Sc), dSb = round(dSc).
 *   (9) gemm (dtype): KK = Kb Kb^T (fp32 of exact inputs), dAr = -Xb Vb^T,
 *       dPr = dOa Vb^T [L, L], Y = -Xb S0b^T [L, K].
 *   (10) dnbl_pairs_kernel, warp per packed row i (j < i, zeros elsewhere;
 *       gam = Gamma_ij): dP = dPr gam, P = Sx fq_i fk_j gam (the forward's
 *       fp32 score), M = beta_i dAr gam, DA = dAr gam fk_i fk_j KK; the
 *       rounded dPq = round(dP fk_j), dPk = round(dP scale fq_i), Mq =
 *       round(M fk_j), Mk = round(M fk_i) (the norm's factors folded in, so
 *       the products take the exact inputs); Eg = dPr P + beta_i DA (in KK's
 *       place), diag = dPr_ii, dba = sum_j DA (fp32). dnbl_gsum_kernel
 *       (gated): Eg's row sum - column sum, each pair once on each side.
 *   (11) gemm (dtype) [L, K]: dQp = dPq Kb, dQs = dOa S0b^T, dKp = dPk^T Qa,
 *       dKm = Mq Kb + Mk^T Kb, dKs = Vb dSb^T.
 *   (12) dnbl_rows_kernel, warp per token: dv = round(beta X), dbeta = v . X
 *       + eq k~ . Y + dba, dQ~ = dQp + eq dQs + diag k~, dK~ = dKp + diag q~
 *       + ek dKs + beta eq Y + dKm (the row decays applied to the fp32
 *       products), the gate terms gt = gsum + eq q~ . dQs + beta eq k~ . Y,
 *       bt = ek k~ . dKs, then dq, dk through scale and the L2 norm, rounded
 *       once.
 *   (13) dnb_gate_rev_kernel, dnb_gate_fwd_kernel (gated) as above (fp32
 *       S0, dS for Dterm).
 * So the dtype roundings are P, Qw, X, Vn, S0, dS, the masked dP and M (and
 * dq, dk, dv): T, W, the state walks, the substitution and every gate term
 * stay fp32; dVn carries P's (or Qw's) rounding into X = T^T dVn. Bound and
 * measurements: seqk.h. Workspace (dnbl_make_plan): the native forward's
 * (dnl_make_plan), then dOa, Qw, wcoef, Z, dSc, dVn, X, Xb, S0b, dSb, Y,
 * KK, dAr, dPr, dPq, dPk, Mq, Mk, diag, dba, gsum, dQp, dQs, dKp, dKm, dKs,
 * btb: nb (L (26 K + 12 V + 20 L + 12) + 12 K V + 4) + 4 B T H bytes
 * beyond the forward's (nb = C H; each region rounded up to 256 bytes).
 * A first version: the L x L products are formed whole (the upper triangle
 * discarded); Vb reuses the forward's Rv block.
 */
#include "deltanet.cuh"

#include <string.h>

enum { DNB_THREADS = DN_THREADS, DNB_WARPS = DN_WARPS };

/* The backward's arrays besides the forward's (a). */
typedef struct dnb_args {
    dn_args a;
    const float *dout, *ds_out;   /* [B*T, H, V]; [N, H, K, V] or NULL */
    float *dq, *dk, *dv, *dbeta;  /* outputs */
    float *dg, *ds_in;            /* [B*T, H] (gated) or NULL; [N, H, K, V] or NULL */
    float *dSc;                   /* [nch, K, V] the gradient of the state after each chunk */
    float *X, *Y;                 /* [nch, L, V] dVn -> X; [nch, L, K] Y = -X S0^T */
    float *dP, *M, *DA;           /* [nch, L, L] */
    float *btb;                   /* [B*T, H] */
    /* native bf16 / f16 path only (NULL in fp32): the reverse pass takes X
     * holding P^T dO (a batched product) and adds ek K~ dS to it in place,
     * and takes sum_i exp(G_i) q~_i dO_i^T as wcoef[ch] Z[ch] */
    const float *Z;               /* [nch, K, V] Qw^T dO */
    const float *wcoef;           /* [nch] exp(G_0) */
} dnb_args;

/* The chunk and head of a block of a per-(chunk, head) kernel. */
typedef struct dnb_chunk {
    int64_t ch, r0; /* c H + h; the chunk's first token row */
    int h, Lc;
} dnb_chunk;

static __device__ __forceinline__ dnb_chunk dnb_chunk_of(const dn_args &a)
{
    dnb_chunk q;
    q.ch = blockIdx.x;
    const int64_t c = q.ch / a.H;
    q.h = (int)(q.ch - c * a.H);
    seqk__chunk_rows(a.map, c, &q.r0, &q.Lc);
    return q;
}

/* ---- the reverse pass over the chunks ------------------------------------------------ */

static __global__ void __launch_bounds__(DNB_THREADS) dnb_dstate_kernel(dnb_args b, int nvb)
{
    extern __shared__ float sm[];
    const dn_args &a = b.a;
    const int K = a.K, V = a.V, H = a.H, L = a.map.L;
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
    const dn_slice sl = dn_slice_of(a, nvb);
    float *S = sm;                         /* [K][32] dS */
    float *eg = S + (size_t)K * DN_COLS;   /* [L] exp(G_i) */
    float *ek = eg + L;                    /* [L] exp(G_Lc - G_i) */

    dn_slice_load(a, sl, b.ds_out, S);
    int64_t row0, len, cb, ce;
    seqk__chunks_seq(a.map, sl.n, &row0, &len);
    seqk__chunks_range(a.map, sl.n, &cb, &ce);
    for (int64_t c = ce - 1; c >= cb; c--) {
        const int64_t r0 = row0 + (c - cb) * L;
        const int Lc = (int)(len - (c - cb) * L < L ? len - (c - cb) * L : L);
        const int64_t ch = c * H + sl.h;
        const float *Pc = b.Z ? NULL : a.P + ch * L * L, *Wc = a.W + ch * L * K;
        float *Xc = b.X + ch * L * V;
        __syncthreads(); /* the previous chunk is done with eg, ek and S */
        dn_slice_store(a, sl, ch, S, b.dSc); /* the gradient after the chunk */
        dn_chunk_decays(a, r0, Lc, sl.h, eg, ek);
        __syncthreads();
        /* dVn_i = sum_{l >= i} P_li dO_l + ek_i k~_i . dS (column col) */
        for (int i = w; i < Lc; i += DNB_WARPS) {
            const float *ki = a.Kn + ((r0 + i) * H + sl.h) * K;
            float kd = 0.0f, acc = 0.0f;
            for (int kk = 0; kk < K; kk++) kd = fmaf(ki[kk], S[kk * DN_COLS + lane], kd);
            if (sl.colok) {
                if (b.Z) /* native: P^T dO from the batched product */
                    acc = Xc[(int64_t)i * V + sl.col];
                else
                    for (int l = i; l < Lc; l++)
                        acc = fmaf(Pc[(int64_t)l * L + i],
                                   b.dout[((r0 + l) * H + sl.h) * V + sl.col], acc);
                Xc[(int64_t)i * V + sl.col] = fmaf(ek[i], kd, acc);
            }
        }
        __syncthreads(); /* dVn visible; every read of dS done */
        /* dS0 = exp(G_L) dS + sum_i eq_i q~_i dO_i - sum_i W_i dVn_i */
        const float ac = a.gated ? expf((float)a.Gc[(r0 + Lc - 1) * H + sl.h]) : 1.0f;
        for (int kk = w; kk < K; kk += DNB_WARPS) {
            float acc = 0.0f;
            if (sl.colok && b.Z) { /* native: exp(G_0) Qw^T dO, then - W^T dVn */
                acc = b.wcoef[ch] * b.Z[(ch * K + kk) * V + sl.col];
                for (int i = 0; i < Lc; i++)
                    acc = fmaf(-Wc[(int64_t)i * K + kk], Xc[(int64_t)i * V + sl.col], acc);
            } else if (sl.colok) {
                for (int i = 0; i < Lc; i++) {
                    const int64_t rh = (r0 + i) * H + sl.h;
                    acc = fmaf(eg[i] * a.Qn[rh * K + kk], b.dout[rh * V + sl.col], acc);
                    acc = fmaf(-Wc[(int64_t)i * K + kk], Xc[(int64_t)i * V + sl.col], acc);
                }
            }
            S[kk * DN_COLS + lane] = fmaf(ac, S[kk * DN_COLS + lane], acc);
        }
    }
    __syncthreads();
    dn_slice_store(a, sl, sl.nh, S, b.ds_in);
}

/* ---- per chunk ---------------------------------------------------------------------------- */

/* X = T^T dVn in place: per column of X, (I + A)^T X = dVn, X_i = dVn_i -
 * sum_{j > i} A_ji X_j from the last row up. (Y = T^T dW needs no solve of
 * its own: it is -X S0^T, dnb_y_kernel.) */
static __global__ void __launch_bounds__(DNB_THREADS) dnb_backsolve_kernel(dnb_args b)
{
    const dn_args &a = b.a;
    const dnb_chunk q = dnb_chunk_of(a);
    const int V = a.V, L = a.map.L;
    const float *Am = a.A + q.ch * L * L;
    for (int col = threadIdx.x; col < V; col += DNB_THREADS) {
        float *Z = b.X + q.ch * L * V + col;
        for (int i = q.Lc - 1; i >= 0; i--) {
            float z = Z[(int64_t)i * V];
            for (int j = i + 1; j < q.Lc; j++)
                z = fmaf(-Am[(int64_t)j * L + i], Z[(int64_t)j * V], z);
            Z[(int64_t)i * V] = z;
        }
    }
}

/* Y = T^T dW = -T^T dVn S0^T = -X S0^T (thread per element; at a zero
 * initial state Sc holds zeros and Y is zero, as dW was). */
static __global__ void __launch_bounds__(DNB_THREADS) dnb_y_kernel(dnb_args b)
{
    const dn_args &a = b.a;
    const dnb_chunk q = dnb_chunk_of(a);
    const int K = a.K, V = a.V, L = a.map.L;
    const float *Xc = b.X + q.ch * L * V, *S0 = a.Sc + q.ch * (int64_t)K * V;
    float *Yc = b.Y + q.ch * L * K;
    for (int64_t e = threadIdx.x; e < (int64_t)q.Lc * K; e += DNB_THREADS) {
        const int i = (int)(e / K), kk = (int)(e - (int64_t)i * K);
        const float *xi = Xc + (int64_t)i * V, *sk = S0 + (int64_t)kk * V;
        float acc = 0.0f;
        for (int v = 0; v < V; v++) acc = fmaf(xi[v], sk[v], acc);
        Yc[(int64_t)i * K + kk] = -acc;
    }
}

/* dot of n floats, one FMA per term in order */
static __device__ __forceinline__ float dnb_dot(const float *x, const float *y, int n)
{
    float s = 0.0f;
    for (int i = 0; i < n; i++) s = fmaf(x[i], y[i], s);
    return s;
}

/* Thread per pair (i, j) of the chunk: dP_ij = (dO_i . Vn_j) Gamma_ij (j <=
 * i; zero above), and for j < i M_ij = beta_i dA_ij Gamma_ij, DA_ij = dA_ij
 * Gamma_ij (k~_i . k~_j), dA_ij = -(X_i . U_j + Y_i . W_j) = -(X_i . Vn_j)
 * (zero elsewhere; see the top comment). */
static __global__ void __launch_bounds__(DNB_THREADS) dnb_pairs_kernel(dnb_args b)
{
    const dn_args &a = b.a;
    const dnb_chunk q = dnb_chunk_of(a);
    const int K = a.K, V = a.V, L = a.map.L, H = a.H;
    const int64_t LL = (int64_t)L * L;
    const float *Vc = a.Vn + q.ch * L * V, *Xc = b.X + q.ch * L * V;
    float *dPc = b.dP + q.ch * LL, *Mc = b.M + q.ch * LL, *DAc = b.DA + q.ch * LL;
    for (int64_t e = threadIdx.x; e < (int64_t)q.Lc * q.Lc; e += DNB_THREADS) {
        const int i = (int)(e / q.Lc), j = (int)(e - (int64_t)i * q.Lc);
        const int64_t o = (int64_t)i * L + j, ri = (q.r0 + i) * H + q.h, rj = (q.r0 + j) * H + q.h;
        float dp = 0.0f, m = 0.0f, da = 0.0f;
        if (j <= i) {
            const float gam = (a.gated && j < i) ? dn_decay(a.Gc, ri, rj) : 1.0f;
            dp = gam * dnb_dot(b.dout + ri * V, Vc + (int64_t)j * V, V);
            if (j < i) {
                const float dA = -dnb_dot(Xc + (int64_t)i * V, Vc + (int64_t)j * V, V);
                m = a.beta[ri] * (dA * gam);
                da = (dA * gam) * dnb_dot(a.Kn + ri * K, a.Kn + rj * K, K);
            }
        }
        dPc[o] = dp, Mc[o] = m, DAc[o] = da;
    }
}

/* Warp per token i of the chunk (block per (chunk, head)): dv, dbeta, dq,
 * dk, and the gate terms gt (into dg) and bt (into btb); see the top
 * comment. */
static __global__ void __launch_bounds__(DNB_THREADS) dnb_rows_kernel(dnb_args b)
{
    const dn_args &a = b.a;
    const dnb_chunk q = dnb_chunk_of(a);
    const int K = a.K, V = a.V, L = a.map.L, H = a.H, Lc = q.Lc;
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const int64_t LL = (int64_t)L * L, KV = (int64_t)K * V;
    const float *Vc = a.Vn + q.ch * L * V, *Xc = b.X + q.ch * L * V, *Yc = b.Y + q.ch * L * K;
    const float *dPc = b.dP + q.ch * LL, *Mc = b.M + q.ch * LL, *DAc = b.DA + q.ch * LL;
    const float *S0 = a.Sc + q.ch * KV, *dS = b.dSc + q.ch * KV;
    const double glast = a.gated ? a.Gc[(q.r0 + Lc - 1) * H + q.h] : 0.0;
    for (int i = w; i < Lc; i += DNB_WARPS) {
        const int64_t rh = (q.r0 + i) * H + q.h;
        const double gi = a.gated ? a.Gc[rh] : 0.0;
        const float eq = expf((float)gi), ek = expf((float)(glast - gi)), bi = a.beta[rh];
        const float *xi = Xc + (int64_t)i * V, *vi = a.v + rh * V, *vn = Vc + (int64_t)i * V;
        const float *doi = b.dout + rh * V, *yi = Yc + (int64_t)i * K;
        const float *qi = a.Qn + rh * K, *ki = a.Kn + rh * K;
        /* dv, v . X */
        float dbv = 0.0f;
        for (int c = lane; c < V; c += 32) {
            dbv = fmaf(vi[c], xi[c], dbv);
            b.dv[rh * V + c] = bi * xi[c];
        }
        /* A's pairs: sum_j DA_ij (dbeta), D's row sum minus its column sum (gt) */
        float dba = 0.0f, rs = 0.0f, cs = 0.0f;
        for (int j = lane; j < Lc; j += 32) {
            if (j < i) dba += DAc[(int64_t)i * L + j];
            if (j > i) cs = fmaf(a.beta[(q.r0 + j) * H + q.h], DAc[(int64_t)j * L + i], cs);
        }
        rs = bi * dba;
        const float diag = dPc[(int64_t)i * L + i];
        float gt = 0.0f, bt = 0.0f, ky = 0.0f;
        float *oq = b.dq + rh * K, *ok = b.dk + rh * K;
        for (int kk = lane; kk < K; kk += 32) {
            float sq = 0.0f, sk = 0.0f, sm = 0.0f;
            for (int j = 0; j < i; j++) {
                const float kj = a.Kn[((q.r0 + j) * H + q.h) * K + kk];
                sq = fmaf(dPc[(int64_t)i * L + j], kj, sq);
                sm = fmaf(Mc[(int64_t)i * L + j], kj, sm);
            }
            for (int l = i + 1; l < Lc; l++) {
                const int64_t rl = ((q.r0 + l) * H + q.h) * K + kk;
                sk = fmaf(dPc[(int64_t)l * L + i], a.Qn[rl], sk);
                sm = fmaf(Mc[(int64_t)l * L + i], a.Kn[rl], sm);
            }
            const float ss = dnb_dot(doi, S0 + (int64_t)kk * V, V); /* (S0 dO_i)_kk */
            const float sd = dnb_dot(vn, dS + (int64_t)kk * V, V);  /* (dS Vn_i)_kk */
            const float sy = yi[kk];
            const float dQ = fmaf(diag, ki[kk], fmaf(eq, ss, sq));
            const float dK = sk + diag * qi[kk] + ek * sd + bi * eq * sy + sm;
            gt = fmaf(qi[kk], fmaf(eq, ss, sq), gt);
            gt = fmaf(-ki[kk], sk, gt);
            bt = fmaf(ki[kk], sd, bt);
            ky = fmaf(ki[kk], sy, ky);
            oq[kk] = dQ;
            ok[kk] = dK;
        }
        dbv = seqk__warp_sum(dbv);
        dba = seqk__warp_sum(dba);
        rs = seqk__warp_sum(rs);
        cs = seqk__warp_sum(cs);
        gt = seqk__warp_sum(gt);
        bt = seqk__warp_sum(bt);
        ky = seqk__warp_sum(ky);
        if (lane == 0) {
            b.dbeta[rh] = dbv + eq * ky + dba;
            if (b.dg) {
                b.dg[rh] = gt + bi * eq * ky + (rs - cs);
                b.btb[rh] = ek * bt;
            }
        }
        /* the raw gradients: dq = scale n'(q) dQ~, dk = n'(k) dK~ (each lane
         * rereads only the elements it wrote) */
        if (!a.l2) {
            for (int kk = lane; kk < K; kk += 32) oq[kk] *= a.scale;
            continue;
        }
        /* x~ = x / r: dx = (dx~ - x^ (x^ . dx~)) / r, x^ = x / r */
        const float *qr = a.q + rh * K, *kr = a.k + rh * K;
        const float2 inv = seqk__warp_qk_factors(qr, kr, K, 1.0f, true, SEQK__LIN_L2NORM_EPS);
        float pq = 0.0f, pk = 0.0f;
        for (int kk = lane; kk < K; kk += 32) {
            pq = fmaf(qr[kk], oq[kk], pq);
            pk = fmaf(ki[kk], ok[kk], pk);
        }
        pq = seqk__warp_sum(pq) * inv.x;
        pk = seqk__warp_sum(pk);
        for (int kk = lane; kk < K; kk += 32) {
            oq[kk] = a.scale * (oq[kk] - qr[kk] * inv.x * pq) * inv.x;
            ok[kk] = (ok[kk] - ki[kk] * pk) * inv.y;
        }
    }
}

/* Warp per (chunk, head), gated: dg (holding gt) <- its reverse inclusive
 * sum inside the chunk (gpu/chunks.cuh). */
static __global__ void __launch_bounds__(DNB_THREADS) dnb_gate_rev_kernel(dnb_args b, int64_t nwork)
{
    int64_t c, r0;
    int h, Lc;
    if (!seqk__chunk_head_warp(b.a.map, b.a.H, DNB_WARPS, nwork, &c, &h, &r0, &Lc)) return;
    seqk__chunk_gate_rev(b.dg, r0, Lc, b.a.H, h);
}

/* Then, warp per (chunk, head): Dterm = exp(G_L) <S0, dS> and dg += Dterm +
 * the exclusive forward sum of bt (a second launch: a lane reads what
 * others wrote in the first). */
static __global__ void __launch_bounds__(DNB_THREADS) dnb_gate_fwd_kernel(dnb_args b, int64_t nwork)
{
    const dn_args &a = b.a;
    const int lane = threadIdx.x & 31;
    int64_t c, r0;
    int h, Lc;
    if (!seqk__chunk_head_warp(a.map, a.H, DNB_WARPS, nwork, &c, &h, &r0, &Lc)) return;
    const int64_t ch = c * a.H + h, KV = (int64_t)a.K * a.V;
    const float *S0 = a.Sc + ch * KV, *dS = b.dSc + ch * KV;
    float s = 0.0f;
    for (int64_t e = lane; e < KV; e += 32) s = fmaf(S0[e], dS[e], s);
    s = seqk__warp_sum(s);
    const float Dterm = expf((float)a.Gc[(r0 + Lc - 1) * a.H + h]) * s;
    seqk__chunk_gate_fwd(b.dg, b.btb, Dterm, r0, Lc, a.H, h);
}

/* ---- the native bf16 / f16 path (see "Reduced precision" above) ------------------ */

/* The native backward's arrays besides dnb_args' (whose dq, dk, dv, dout are
 * unused: those are in the dtype here) and the forward's stages' (p: Qa, Kb,
 * fq, fk, Tm = T, Sx = scale Q K^T, Pb). Packed as the native forward packs:
 * batch entry b = c H + h, rows i < L, zeros past a short last chunk. */
typedef struct dnbl_args {
    dnb_args b;
    dnl_args p;
    const uint16_t *dout;        /* [B*T, H, V] */
    uint16_t *dq, *dk, *dv;      /* [B*T, H, K], [B*T, H, V] */
    uint16_t *dOa;               /* [nb, L, V] dout packed (exact) */
    uint16_t *Qw;                /* [nb, L, K] round(exp(G_i - G_0) q~_i) */
    float *wcoef;                /* [nb] exp(G_0) */
    float *KK;                   /* [nb, L, L] K K^T (fp32), then Eg = E + D (gate pairs) */
    const float *dAr, *dPr;      /* [nb, L, L] -X Vn^T, dO Vn^T (fp32 results) */
    uint16_t *dPq, *dPk;         /* [nb, L, L] round(dP_ij fk_j), round(dP_ij scale fq_i) */
    uint16_t *Mq, *Mk;           /* [nb, L, L] round(M_ij fk_j), round(M_ij fk_i) */
    float *diag, *dba, *gsum;    /* [nb, L] dP_ii; sum_j DA_ij; Eg's row sum - column sum */
    const float *Xf;             /* [nb, L, V] X = T^T dVn (fp32) */
    const float *Yp;             /* [nb, L, K] Y = -X S0^T */
    float *dQp, *dKp;            /* [nb, L, K] dPq K, dPk^T Q (then dQ~, dK~ in place) */
    const float *dQs, *dKm, *dKs; /* [nb, L, K] dO S0^T, Mq K + Mk^T K, Vn dS^T */
} dnbl_args;

/* One warp per packed row (b, i): dOa = the row of dout (zeros past the
 * chunk); Qw = round(exp(G_i - G_0) q~_i), the queries decayed relative to
 * the chunk's first token (exp(G_i) itself leaves f16's range under strong
 * decay); wcoef[b] = exp(G_0). */
static __global__ void __launch_bounds__(DNB_THREADS) dnbl_pack_kernel(dnbl_args x, int64_t nrows)
{
    int64_t b, r0;
    int i, h, Lc;
    if (!dnl_row(x.p, nrows, &b, &i, &h, &r0, &Lc)) return;
    const dn_args &a = x.b.a;
    const int lane = threadIdx.x & 31, K = a.K, V = a.V, L = a.map.L, bf = x.p.bf16;
    const bool ok = i < Lc;
    const int64_t rh = (r0 + i) * a.H + h, prow = b * L + i;
    for (int vv = lane; vv < V; vv += 32)
        x.dOa[prow * V + vv] = ok ? x.dout[rh * V + vv] : (uint16_t)0;
    double g0 = 0.0, gi = 0.0;
    if (a.gated && ok) g0 = a.Gc[r0 * a.H + h], gi = a.Gc[rh];
    const float f = a.gated ? expf((float)(gi - g0)) : 1.0f;
    const float fq = x.p.fq[prow] * a.scale; /* 0 past the chunk */
    for (int kk = lane; kk < K; kk += 32) {
        const float q = ok ? seqk__dt_load(x.p.q, rh * K + kk, bf) : 0.0f;
        x.Qw[prow * K + kk] = seqk__dt_round(f * (fq * q), bf);
    }
    if (i == 0 && lane == 0) x.wcoef[b] = a.gated ? expf((float)g0) : 1.0f;
}

/* One warp per packed row (b, i), lanes over j: with gam = Gamma_ij, for
 * j < i < Lc (zeros elsewhere)
 *   dP = dPr_ij gam,  P = Sx_ij fq_i fk_j gam (the forward's fp32 score),
 *   dA = dAr_ij,  M = beta_i dA gam,  DA = dA gam fk_i fk_j KK_ij,
 *   dPq = round(dP fk_j), dPk = round(dP scale fq_i), Mq = round(M fk_j),
 *   Mk = round(M fk_i), Eg = dPr_ij P + beta_i DA (in KK's place);
 * diag_i = dPr_ii, dba_i = sum_{j<i} DA (fixed order). */
static __global__ void __launch_bounds__(DNB_THREADS) dnbl_pairs_kernel(dnbl_args x, int64_t nrows)
{
    int64_t b, r0;
    int i, h, Lc;
    if (!dnl_row(x.p, nrows, &b, &i, &h, &r0, &Lc)) return;
    const dn_args &a = x.b.a;
    const int lane = threadIdx.x & 31, L = a.map.L, H = a.H, bf = x.p.bf16;
    const bool ok = i < Lc;
    const int64_t prow = b * L + i, row = prow * (int64_t)L;
    const float *fk = x.p.fk + b * L;
    const float fqi = x.p.fq[prow], fki = fk[i];
    const float bi = ok ? a.beta[(r0 + i) * H + h] : 0.0f;
    const double gi = (a.gated && ok) ? a.Gc[(r0 + i) * H + h] : 0.0;
    float dba = 0.0f;
    for (int j = lane; j < L; j += 32) {
        float e = 0.0f, dq = 0.0f, dk = 0.0f, mq = 0.0f, mk = 0.0f;
        if (ok && j < i) {
            const float gam = a.gated ? expf((float)(gi - a.Gc[(r0 + j) * H + h])) : 1.0f;
            const float dpr = x.dPr[row + j], dp = dpr * gam;
            const float pm = x.p.Sx[row + j] * (fqi * fk[j]) * gam;
            const float dag = x.dAr[row + j] * gam;
            const float m = bi * dag, da = dag * (fki * fk[j] * x.KK[row + j]);
            e = fmaf(bi, da, dpr * pm);
            dq = dp * fk[j], dk = dp * (a.scale * fqi);
            mq = m * fk[j], mk = m * fki;
            dba += da;
        }
        x.KK[row + j] = e;
        x.dPq[row + j] = seqk__dt_round(dq, bf), x.dPk[row + j] = seqk__dt_round(dk, bf);
        x.Mq[row + j] = seqk__dt_round(mq, bf), x.Mk[row + j] = seqk__dt_round(mk, bf);
    }
    dba = seqk__warp_sum(dba);
    if (lane == 0) {
        x.dba[prow] = dba;
        x.diag[prow] = ok ? x.dPr[row + i] : 0.0f;
    }
}

/* One warp per packed row t (gated only): gsum_t = sum_j Eg_tj - sum_i Eg_it,
 * each stored pair counted once on each side (fixed order). */
static __global__ void __launch_bounds__(DNB_THREADS) dnbl_gsum_kernel(dnbl_args x, int64_t nrows)
{
    int64_t b, r0;
    int t, h, Lc;
    if (!dnl_row(x.p, nrows, &b, &t, &h, &r0, &Lc)) return;
    const int L = x.b.a.map.L;
    const float *Eb = x.KK + b * (int64_t)L * L;
    float rs = 0.0f, cs = 0.0f;
    for (int j = threadIdx.x & 31; j < L; j += 32) {
        rs += Eb[(int64_t)t * L + j];
        cs += Eb[(int64_t)j * L + t];
    }
    rs = seqk__warp_sum(rs);
    cs = seqk__warp_sum(cs);
    if ((threadIdx.x & 31) == 0) x.gsum[b * L + t] = rs - cs;
}

/* One warp per packed row (b, i < Lc), token r0 + i: with eq = exp(G_i), ek =
 * exp(G_L - G_i), q~ = scale fq q, k~ = fk k (fp32, from the inputs),
 *   dv = round(beta X),  dbeta = v . X + eq k~ . Y + dba,
 *   dQ~ = dQp + eq dQs + diag k~,
 *   dK~ = dKp + diag q~ + ek dKs + beta eq Y + dKm,
 *   gt = gsum + eq q~ . dQs + beta eq k~ . Y (into dg), bt = ek k~ . dKs,
 * then dq = round(scale n'(q) dQ~), dk = round(n'(k) dK~) (dQ~, dK~ kept in
 * dQp, dKp in place: each lane rereads only the elements it wrote). */
static __global__ void __launch_bounds__(DNB_THREADS) dnbl_rows_kernel(dnbl_args x, int64_t nrows)
{
    int64_t b, r0;
    int i, h, Lc;
    if (!dnl_row(x.p, nrows, &b, &i, &h, &r0, &Lc) || i >= Lc) return;
    const dnb_args &B = x.b;
    const dn_args &a = B.a;
    const int lane = threadIdx.x & 31, K = a.K, V = a.V, L = a.map.L, H = a.H, bf = x.p.bf16;
    const int64_t rh = (r0 + i) * H + h, prow = b * L + i;
    float eq = 1.0f, ek = 1.0f;
    if (a.gated) {
        const double gi = a.Gc[rh], gl = a.Gc[(r0 + Lc - 1) * H + h];
        eq = expf((float)gi), ek = expf((float)(gl - gi));
    }
    const float bi = a.beta[rh], fq = x.p.fq[prow], fk = x.p.fk[prow], diag = x.diag[prow];
    const float *xi = x.Xf + prow * V;
    float dbv = 0.0f;
    for (int c = lane; c < V; c += 32) {
        dbv = fmaf(seqk__dt_load(x.p.v, rh * V + c, bf), xi[c], dbv);
        x.dv[rh * V + c] = seqk__dt_round(bi * xi[c], bf);
    }
    const float *yi = x.Yp + prow * K, *dqs = x.dQs + prow * K, *dkm = x.dKm + prow * K;
    const float *dks = x.dKs + prow * K;
    float *oq = x.dQp + prow * K, *ok = x.dKp + prow * K;
    float ga = 0.0f, bt = 0.0f, ky = 0.0f;
    for (int kk = lane; kk < K; kk += 32) {
        const float qt = a.scale * (fq * seqk__dt_load(x.p.q, rh * K + kk, bf));
        const float kt = fk * seqk__dt_load(x.p.k, rh * K + kk, bf);
        oq[kk] = fmaf(diag, kt, fmaf(eq, dqs[kk], oq[kk]));
        ok[kk] = ok[kk] + diag * qt + ek * dks[kk] + bi * eq * yi[kk] + dkm[kk];
        ga = fmaf(qt, dqs[kk], ga);
        bt = fmaf(kt, dks[kk], bt);
        ky = fmaf(kt, yi[kk], ky);
    }
    dbv = seqk__warp_sum(dbv);
    ga = seqk__warp_sum(ga);
    bt = seqk__warp_sum(bt);
    ky = seqk__warp_sum(ky);
    if (lane == 0) {
        B.dbeta[rh] = dbv + eq * ky + x.dba[prow];
        if (B.dg) {
            B.dg[rh] = x.gsum[prow] + eq * ga + bi * eq * ky;
            B.btb[rh] = ek * bt;
        }
    }
    /* x~ = x / r: dx = (dx~ - x^ (x^ . dx~)) / r, x^ = x / r (fq = fk = 1
     * without the norm) */
    float pq = 0.0f, pk = 0.0f;
    if (a.l2) {
        for (int kk = lane; kk < K; kk += 32) {
            pq = fmaf(fq * seqk__dt_load(x.p.q, rh * K + kk, bf), oq[kk], pq);
            pk = fmaf(fk * seqk__dt_load(x.p.k, rh * K + kk, bf), ok[kk], pk);
        }
        pq = seqk__warp_sum(pq);
        pk = seqk__warp_sum(pk);
    }
    for (int kk = lane; kk < K; kk += 32) {
        const float qh = fq * seqk__dt_load(x.p.q, rh * K + kk, bf);
        const float kh = fk * seqk__dt_load(x.p.k, rh * K + kk, bf);
        const float gq = a.l2 ? a.scale * (oq[kk] - qh * pq) * fq : a.scale * oq[kk];
        const float gk = a.l2 ? (ok[kk] - kh * pk) * fk : ok[kk];
        x.dq[rh * K + kk] = seqk__dt_round(gq, bf);
        x.dk[rh * K + kk] = seqk__dt_round(gk, bf);
    }
}

/* ---- host ---------------------------------------------------------------------------------- */

typedef struct dnb_plan {
    int64_t nchunks;
    size_t off_first, off_gc, off_qn, off_kn, off_a, off_p, off_dp, off_m, off_da, off_vn,
        off_x, off_w, off_y, off_s, off_ds, off_bt, bytes;
} dnb_plan;

static size_t dnb_align(size_t n) { return seqk__align_up(n, DN_WS_ALIGN); }

static dnb_plan dnb_make_plan(const seqk__lin *P)
{
    dnb_plan pl;
    memset(&pl, 0, sizeof pl);
    const size_t f = sizeof(float), rows = (size_t)(P->B * P->T), H = (size_t)P->H;
    const size_t L = (size_t)P->chunk, K = (size_t)P->K, V = (size_t)P->V;
    pl.nchunks = seqk__count_chunks(P->cu, P->N, P->B, P->T, P->chunk);
    const size_t nch = (size_t)pl.nchunks * H;
    size_t o = 0;
#define DNB_REGION(name, bytes) (pl.name = o, o += dnb_align(bytes))
    DNB_REGION(off_first, (size_t)(P->N + 1) * sizeof(int32_t));
    DNB_REGION(off_gc, rows * H * sizeof(double));
    DNB_REGION(off_qn, rows * H * K * f);
    DNB_REGION(off_kn, rows * H * K * f);
    DNB_REGION(off_a, nch * L * L * f);
    DNB_REGION(off_p, nch * L * L * f);
    DNB_REGION(off_dp, nch * L * L * f);
    DNB_REGION(off_m, nch * L * L * f);
    DNB_REGION(off_da, nch * L * L * f);
    DNB_REGION(off_vn, nch * L * V * f);
    DNB_REGION(off_x, nch * L * V * f);
    DNB_REGION(off_w, nch * L * K * f);
    DNB_REGION(off_y, nch * L * K * f);
    DNB_REGION(off_s, nch * K * V * f);
    DNB_REGION(off_ds, nch * K * V * f);
    DNB_REGION(off_bt, rows * H * f);
#undef DNB_REGION
    pl.bytes = o;
    return pl;
}

/* The native path's plan: the native forward's regions (dnl_make_plan), then
 * the backward's. Sizes and flags only. */
typedef struct dnbl_plan {
    dnl_plan f;
    size_t off_doa, off_qw, off_wc, off_z, off_ds, off_dv, off_x, off_xb, off_s0b, off_dsb,
        off_y, off_kk, off_da, off_dp, off_dpq, off_dpk, off_mq, off_mk, off_diag, off_dba,
        off_gsum, off_dqp, off_dqs, off_dkp, off_dkm, off_dks, off_bt, bytes;
} dnbl_plan;

static dnbl_plan dnbl_make_plan(const seqk__lin *P)
{
    dnbl_plan pl;
    memset(&pl, 0, sizeof pl);
    pl.f = dnl_make_plan(P);
    const size_t f = sizeof(float), es = 2, H = (size_t)P->H, L = (size_t)P->chunk;
    const size_t K = (size_t)P->K, V = (size_t)P->V;
    const size_t nb = (size_t)pl.f.nchunks * H, pr = nb * L; /* packed rows */
    size_t o = pl.f.bytes;
#define DNBL_REGION(name, bytes) (pl.name = o, o += dnb_align(bytes))
    DNBL_REGION(off_doa, pr * V * es);
    DNBL_REGION(off_qw, pr * K * es);
    DNBL_REGION(off_wc, nb * f);
    DNBL_REGION(off_z, nb * K * V * f);
    DNBL_REGION(off_ds, nb * K * V * f);
    DNBL_REGION(off_dv, pr * V * f);
    DNBL_REGION(off_x, pr * V * f);
    DNBL_REGION(off_xb, pr * V * es);
    DNBL_REGION(off_s0b, nb * K * V * es);
    DNBL_REGION(off_dsb, nb * K * V * es);
    DNBL_REGION(off_y, pr * K * f);
    DNBL_REGION(off_kk, pr * L * f);
    DNBL_REGION(off_da, pr * L * f);
    DNBL_REGION(off_dp, pr * L * f);
    DNBL_REGION(off_dpq, pr * L * es);
    DNBL_REGION(off_dpk, pr * L * es);
    DNBL_REGION(off_mq, pr * L * es);
    DNBL_REGION(off_mk, pr * L * es);
    DNBL_REGION(off_diag, pr * f);
    DNBL_REGION(off_dba, pr * f);
    DNBL_REGION(off_gsum, pr * f);
    DNBL_REGION(off_dqp, pr * K * f);
    DNBL_REGION(off_dqs, pr * K * f);
    DNBL_REGION(off_dkp, pr * K * f);
    DNBL_REGION(off_dkm, pr * K * f);
    DNBL_REGION(off_dks, pr * K * f);
    DNBL_REGION(off_bt, (size_t)(P->B * P->T) * H * f);
#undef DNBL_REGION
    pl.bytes = o;
    return pl;
}

/* The gate gradient from the chunks' terms (gated DeltaNet; nothing
 * without g): the reverse sums within every chunk, then the forward sums
 * over a sequence's chunks; nch chunks x heads. Both paths end with it. */
static seqk_status dnb_launch_gate(const char *fn, const dnb_args &b, int64_t nch,
                                   cudaStream_t stream)
{
    if (!b.dg) return SEQK_SUCCESS;
    const unsigned gw = seqk__ceil_div(nch, DNB_WARPS);
    dnb_gate_rev_kernel<<<gw, DNB_THREADS, 0, stream>>>(b, nch);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    dnb_gate_fwd_kernel<<<gw, DNB_THREADS, 0, stream>>>(b, nch);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    return SEQK_SUCCESS;
}

/* The native bf16 / f16 backward (see "Reduced precision" above). */
static seqk_status dnbl_run(const char *fn, seqk_context *ctx, const seqk__lin *P,
                            const float *beta, const void *dout, const float *dstate_out,
                            void *dq, void *dk, void *dv, float *dbeta, float *dg,
                            float *dstate_in, const int32_t *cu_device, int64_t blocks, int nvb,
                            cudaStream_t stream)
{
    const dnbl_plan pl = dnbl_make_plan(P);
    void *base = NULL;
    seqk_status st = seqk__workspace(fn, ctx, pl.bytes, &base);
    if (st) return st;
    char *ws = (char *)base;
    const int64_t H = P->H, L = P->chunk, K = P->K, V = P->V;
    const int64_t nb = pl.f.nchunks * H, nrows = nb * L;
    const seqk_dtype dt = P->dtype;
    dnbl_args x;
    memset(&x, 0, sizeof x);
    dnb_args &b = x.b;
    dn_args a = dn_args_of(P, beta, cu_device);
    a.o = NULL, a.s_out = NULL; /* the rerun of the forward writes no outputs */
    /* the native forward's stages (0)-(5): Gc, Kn, Qa, Kb, fq, fk, T, Sx,
     * Pb, W, Vn (in U's region), Sc */
    SEQK__STATUS_TRY(dnl_launch_states(fn, ctx, P, &a, &x.p, pl.f, ws, blocks, nvb, stream));
    a.Vn = a.U, a.U = NULL;
    b.a = a;
    b.ds_out = dstate_out, b.ds_in = dstate_in;
    b.dbeta = dbeta, b.dg = P->g ? dg : NULL;
    b.dSc = (float *)(ws + pl.off_ds);
    b.X = (float *)(ws + pl.off_dv); /* P^T dO, then dVn (the reverse pass) */
    b.btb = (float *)(ws + pl.off_bt);
    b.Z = (const float *)(ws + pl.off_z);
    b.wcoef = (const float *)(ws + pl.off_wc);
    x.p.a = a;
    x.dout = (const uint16_t *)dout;
    x.dq = (uint16_t *)dq, x.dk = (uint16_t *)dk, x.dv = (uint16_t *)dv;
    x.dOa = (uint16_t *)(ws + pl.off_doa), x.Qw = (uint16_t *)(ws + pl.off_qw);
    x.wcoef = (float *)(ws + pl.off_wc);
    x.KK = (float *)(ws + pl.off_kk);
    x.dAr = (const float *)(ws + pl.off_da), x.dPr = (const float *)(ws + pl.off_dp);
    x.dPq = (uint16_t *)(ws + pl.off_dpq), x.dPk = (uint16_t *)(ws + pl.off_dpk);
    x.Mq = (uint16_t *)(ws + pl.off_mq), x.Mk = (uint16_t *)(ws + pl.off_mk);
    x.diag = (float *)(ws + pl.off_diag), x.dba = (float *)(ws + pl.off_dba);
    x.gsum = (float *)(ws + pl.off_gsum);
    x.Yp = (const float *)(ws + pl.off_y);
    x.dQp = (float *)(ws + pl.off_dqp), x.dKp = (float *)(ws + pl.off_dkp);
    x.dQs = (const float *)(ws + pl.off_dqs), x.dKm = (const float *)(ws + pl.off_dkm);
    x.dKs = (const float *)(ws + pl.off_dks);
    float *Xf = (float *)(ws + pl.off_x), *Z = (float *)(ws + pl.off_z);
    x.Xf = Xf;
    float *Y = (float *)(ws + pl.off_y), *dAr = (float *)(ws + pl.off_da);
    float *dPr = (float *)(ws + pl.off_dp), *dQs = (float *)(ws + pl.off_dqs);
    float *dKm = (float *)(ws + pl.off_dkm), *dKs = (float *)(ws + pl.off_dks);
    uint16_t *Xb = (uint16_t *)(ws + pl.off_xb), *S0b = (uint16_t *)(ws + pl.off_s0b);
    uint16_t *dSb = (uint16_t *)(ws + pl.off_dsb), *Vb = x.p.Vb;
    const dnl_args &p = x.p;

    if (nb > 0) {
        SEQK__GRID_OR_FAIL(gr, (nrows + DN_WARPS - 1) / DN_WARPS);
        dnbl_pack_kernel<<<gr, DNB_THREADS, 0, stream>>>(x, nrows);
        SEQK_CUDA_CHECK_LAUNCH(fn);
        /* the reverse pass' chunk-local parts: P^T dO [L, V] into b.X and
         * Qw^T dO [K, V] (exp(G_0) applied in the pass) */
        SEQK__STATUS_TRY(seqk__cuda_gemm(fn, ctx, dt, 1, 0, L, V, L, 1.0f, p.Pb, L, L * L, x.dOa, V,
                                         L * V, 0.0f, b.X, V, L * V, nb));
        SEQK__STATUS_TRY(seqk__cuda_gemm(fn, ctx, dt, 1, 0, K, V, L, 1.0f, x.Qw, K, L * K, x.dOa, V,
                                         L * V, 0.0f, Z, V, K * V, nb));
    }
    /* the reverse pass (fp32; with no chunks dstate_in = dstate_out): dSc,
     * dVn = P^T dO + ek K~ dS in place in b.X, dstate_in */
    const size_t smem = dn_state_smem(a.K, a.map.L);
    SEQK__STATUS_TRY(seqk__smem_optin(fn, dnb_dstate_kernel, smem));
    dnb_dstate_kernel<<<(unsigned)blocks, DNB_THREADS, smem, stream>>>(b, nvb);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    if (nb == 0) return SEQK_SUCCESS;
    /* X = T^T dVn (fp32 operands: T), then the rounded operands */
    SEQK__STATUS_TRY(seqk__cuda_gemm(fn, ctx, SEQK_DTYPE_F32, 1, 0, L, V, L, 1.0f, p.Tm, L, L * L,
                                     b.X, V, L * V, 0.0f, Xf, V, L * V, nb));
    SEQK__STATUS_TRY(seqk__cuda_convert(fn, ctx, dt, 0, Xf, Xb, nrows * V));
    SEQK__STATUS_TRY(seqk__cuda_convert(fn, ctx, dt, 0, a.Vn, Vb, nrows * V));
    SEQK__STATUS_TRY(seqk__cuda_convert(fn, ctx, dt, 0, a.Sc, S0b, nb * K * V));
    SEQK__STATUS_TRY(seqk__cuda_convert(fn, ctx, dt, 0, b.dSc, dSb, nb * K * V));
    /* K K^T (fp32, exact inputs), dA = -X Vn^T, dP = dO Vn^T [L, L]; Y = -X S0^T [L, K] */
    SEQK__STATUS_TRY(seqk__cuda_gemm(fn, ctx, dt, 0, 1, L, L, K, 1.0f, p.Kb, K, L * K, p.Kb, K,
                                     L * K, 0.0f, x.KK, L, L * L, nb));
    SEQK__STATUS_TRY(seqk__cuda_gemm(fn, ctx, dt, 0, 1, L, L, V, -1.0f, Xb, V, L * V, Vb, V, L * V,
                                     0.0f, dAr, L, L * L, nb));
    SEQK__STATUS_TRY(seqk__cuda_gemm(fn, ctx, dt, 0, 1, L, L, V, 1.0f, x.dOa, V, L * V, Vb, V,
                                     L * V, 0.0f, dPr, L, L * L, nb));
    SEQK__STATUS_TRY(seqk__cuda_gemm(fn, ctx, dt, 0, 1, L, K, V, -1.0f, Xb, V, L * V, S0b, V, K * V,
                                     0.0f, Y, K, L * K, nb));
    /* the pairs: masks, decays, the rounded dP and M, E + D, diag, dba */
    SEQK__GRID_OR_FAIL(gr, (nrows + DN_WARPS - 1) / DN_WARPS);
    dnbl_pairs_kernel<<<gr, DNB_THREADS, 0, stream>>>(x, nrows);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    if (b.dg) {
        dnbl_gsum_kernel<<<gr, DNB_THREADS, 0, stream>>>(x, nrows);
        SEQK_CUDA_CHECK_LAUNCH(fn);
    }
    /* dQ~'s dP K~ and dO S0^T; dK~'s dP^T Q~, (M + M^T) K~ and Vn dS^T [L, K] */
    SEQK__STATUS_TRY(seqk__cuda_gemm(fn, ctx, dt, 0, 0, L, K, L, 1.0f, x.dPq, L, L * L, p.Kb, K,
                                     L * K, 0.0f, x.dQp, K, L * K, nb));
    SEQK__STATUS_TRY(seqk__cuda_gemm(fn, ctx, dt, 0, 1, L, K, V, 1.0f, x.dOa, V, L * V, S0b, V,
                                     K * V, 0.0f, dQs, K, L * K, nb));
    SEQK__STATUS_TRY(seqk__cuda_gemm(fn, ctx, dt, 1, 0, L, K, L, 1.0f, x.dPk, L, L * L, p.Qa, K,
                                     L * K, 0.0f, x.dKp, K, L * K, nb));
    SEQK__STATUS_TRY(seqk__cuda_gemm(fn, ctx, dt, 0, 0, L, K, L, 1.0f, x.Mq, L, L * L, p.Kb, K,
                                     L * K, 0.0f, dKm, K, L * K, nb));
    SEQK__STATUS_TRY(seqk__cuda_gemm(fn, ctx, dt, 1, 0, L, K, L, 1.0f, x.Mk, L, L * L, p.Kb, K,
                                     L * K, 1.0f, dKm, K, L * K, nb));
    SEQK__STATUS_TRY(seqk__cuda_gemm(fn, ctx, dt, 0, 1, L, K, V, 1.0f, Vb, V, L * V, dSb, V, K * V,
                                     0.0f, dKs, K, L * K, nb));
    /* per token: dq, dk, dv, dbeta and the gate terms */
    dnbl_rows_kernel<<<gr, DNB_THREADS, 0, stream>>>(x, nrows);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    return dnb_launch_gate(fn, b, nb, stream);
}

extern "C" size_t seqk__cuda_deltanet_backward_workspace(const seqk__lin *P)
{
    if (P->dtype != SEQK_DTYPE_F32) return dnbl_make_plan(P).bytes;
    return dnb_make_plan(P).bytes;
}

extern "C" seqk_status seqk__cuda_deltanet_backward(seqk_context *ctx, const seqk__lin *P,
                                                    const float *beta, const float *dout,
                                                    const float *dstate_out, float *dq,
                                                    float *dk, float *dv, float *dbeta,
                                                    float *dg, float *dstate_in,
                                                    const int32_t *cu_device)
{
    static const char fn[] = "seqk_deltanet_backward (CUDA)";
    SEQK_CUDA_TRY(fn, cudaSetDevice(ctx->device));
    const cudaStream_t stream = seqk__stream(ctx);
    dnb_args b;
    memset(&b, 0, sizeof b);
    b.a = dn_args_of(P, beta, cu_device);
    b.a.o = NULL, b.a.s_out = NULL; /* the rerun of the forward writes no outputs */
    b.dout = dout, b.ds_out = dstate_out;
    b.dq = dq, b.dk = dk, b.dv = dv, b.dbeta = dbeta;
    b.dg = P->g ? dg : NULL, b.ds_in = dstate_in;
    const int nvb = (int)((P->V + DN_COLS - 1) / DN_COLS);
    const int64_t blocks = P->N * P->H * nvb;
    if (blocks > INT_MAX)
        return seqk__fail(SEQK_ERROR_UNSUPPORTED, "%s: N*H*ceil(V/32)=%lld blocks, at most %d", fn,
                          (long long)blocks, INT_MAX);

    if (P->dtype != SEQK_DTYPE_F32)
        return dnbl_run(fn, ctx, P, beta, dout, dstate_out, dq, dk, dv, dbeta, dg, dstate_in,
                        cu_device, blocks, nvb, stream);
    const dnb_plan pl = dnb_make_plan(P);
    char *ws = NULL;
    {
        /* (this form, st then &base, is the one tools/cuda_emu poisons) */
        void *base = NULL;
        const seqk_status st = seqk__workspace(fn, ctx, pl.bytes, &base);
        if (st) return st;
        ws = (char *)base;
    }
    dn_args &a = b.a;
    a.Gc = (double *)(ws + pl.off_gc);
    a.Qn = (float *)(ws + pl.off_qn), a.Kn = (float *)(ws + pl.off_kn);
    a.A = (float *)(ws + pl.off_a), a.P = (float *)(ws + pl.off_p);
    /* U into Vn's region, Vn = U - W S0 in place by stage 4 (a.Vn NULL:
     * the forward's in-place mode); after it a.Vn names the region and
     * nothing reads U (dA = -X Vn^T, see the top comment) */
    a.U = (float *)(ws + pl.off_vn), a.W = (float *)(ws + pl.off_w);
    a.Vn = NULL, a.Sc = (float *)(ws + pl.off_s);
    b.dSc = (float *)(ws + pl.off_ds);
    b.X = (float *)(ws + pl.off_x), b.Y = (float *)(ws + pl.off_y);
    b.dP = (float *)(ws + pl.off_dp), b.M = (float *)(ws + pl.off_m);
    b.DA = (float *)(ws + pl.off_da);
    b.btb = (float *)(ws + pl.off_bt);
    const int64_t nch = pl.nchunks * P->H;
    seqk_status st = dn_launch_prep(fn, &a, (int32_t *)(ws + pl.off_first), P->B * P->T, nch,
                                    stream);
    if (st) return st;
    if (nch > 0 && (st = dn_launch_state(fn, a, blocks, nvb, stream))) return st;
    a.Vn = a.U, a.U = NULL;
    /* the reverse pass (with no chunks: dstate_in = dstate_out) */
    const size_t smem = dn_state_smem(a.K, a.map.L);
    if ((st = seqk__smem_optin(fn, dnb_dstate_kernel, smem))) return st;
    dnb_dstate_kernel<<<(unsigned)blocks, DNB_THREADS, smem, stream>>>(b, nvb);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    if (nch == 0) return SEQK_SUCCESS;
    dnb_backsolve_kernel<<<(unsigned)nch, DNB_THREADS, 0, stream>>>(b);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    dnb_y_kernel<<<(unsigned)nch, DNB_THREADS, 0, stream>>>(b);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    dnb_pairs_kernel<<<(unsigned)nch, DNB_THREADS, 0, stream>>>(b);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    dnb_rows_kernel<<<(unsigned)nch, DNB_THREADS, 0, stream>>>(b);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    return dnb_launch_gate(fn, b, nch, stream);
}
