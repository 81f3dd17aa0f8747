/*
 * gpu/linear_state_backward.cu -- CUDA backward of the linear-state engine
 * (scan/linear_state.h seqk__lin_backward, DESIGN 3.7): linear attention,
 * RetNet retention, gated retention and, through the epilogue below, Mamba2.
 * First, plain version: fp32 everywhere, CUDA cores, shared-memory tiles of
 * 64 x 64 outputs (4 x 4 per thread), like the forward's chunk kernels in
 * gpu/linear_state.cu. Deterministic: no atomics, every sum in a fixed order.
 *
 * The math, per sequence n and head h (q/k head hq = h / (H / Hqk)), with
 * q~ = scale phi(q), k~ = phi(k), v~ = v_scale v, and with the normaliser
 * v' = [v~ | 1] (V' = V + 1 columns) and the state [S | z], so that one
 * formula covers both (V' = V without it). Inside chunk c (tokens i, j of
 * [0, Lc)), G the cumulative log-decay in the chunk, G_L its last value,
 * S0 the state before the chunk, dSn the gradient of the state after it:
 *
 *   U     = (diag(exp(G_L - G)) K~)^T V'            local state (forward)
 *   S0    = chunk-state scan of U (a_c = exp(G_L)), from s_in [| z_in]
 *   O'    = diag(exp(G)) Q~ S0 + ((Q~ K~^T) .* L) V'  (normaliser only:
 *           num = O'[:, :V], den = O'[:, V]; dO' = [dout / (den + eps),
 *           -(dout . num) / (den + eps)^2]; else dO' = dout)
 *   W     = (diag(exp(G)) Q~)^T dO'
 *   dSn   = reverse chunk-state scan of W, from ds_out [| dz_out]; its
 *           result before the first chunk is ds_in [| dz_in]
 *   dV'   = ((Q~ K~^T) .* L)^T dO' + diag(exp(G_L - G)) K~ dSn
 *   dQ~   = ((dO' V'^T) .* L) K~   + diag(exp(G)) dO' S0^T
 *   dK~   = ((dO' V'^T) .* L)^T Q~ + diag(exp(G_L - G)) V' dSn^T
 *   dlogdecay_t = <dS_t, a_t S_{t-1}> = sum_{i >= t} gt_i + sum_{j < t} bt_j
 *                 + Dc  (i, j in t's chunk), each term a pair on the two
 *                 sides of t with its decay (scan/chunk_backward.c derives
 *                 it): gt_i = q~_i . dQ~_i - k~_i . dK~_i without the
 *                 diagonal pairs (q~_i . k~_i)(dO'_i . v'_i), which cancel,
 *                 and without dK~'s state term; bt_j = k~_j . (that state
 *                 term); Dc = exp(G_L) <S0, dSn>. (DESIGN 3.7's sum over the
 *                 whole sequence is the same number, but its O(1) diagonal
 *                 pairs cancel to rounding where the true value is ~exp(g).)
 *   dq = scale phi'(q) sum_{heads of hq} dQ~,  dk = phi'(k) sum dK~,
 *   dv = v_scale dV'[:, :V],  dv_scale = v . dV'[:, :V]
 *
 * L_ij = exp(G_i - G_j) for j <= i, 0 above the diagonal (never formed
 * there). The four token products share one kernel shape (bw_mix_kernel):
 *
 *   out_r = sum_{c causal to r} (A_r . B_c) m(r, c) Z_c  +  f_r A_r Sop
 *
 * "lower": c <= r, m = exp(G_r - G_c), f = exp(G_r), Sop = S0 (or S0^T);
 * "upper": c >= r, m = exp(G_c - G_r), f = exp(G_L - G_r), Sop = dSn (or
 * dSn^T). O' = lower(A Q~, B K~, Z V', S0); dQ~ = lower(dO', V', K~, S0^T);
 * dV' = upper(K~, Q~, dO', dSn); dK~ = upper(V', dO', Q~, dSn^T). A product
 * may leave out the diagonal (strict) and take only the pairs or only the
 * state term (parts). The two state-shaped products (U, W) share
 * bw_xty_kernel.
 *
 * Kernels, in launch order (nch = chunks over all sequences):
 *   seqk__chunk_first_kernel (gpu/chunks.cuh)   varlen only: chunk table
 *   bw_gates_kernel     warp per (chunk, head): Gc (in-chunk cumulative
 *                       log-decay, [B*T, H]), acoef = exp(G_L) [nch, H]
 *   bw_prep_kernel      Qt = q~, Kt = k~ ([B*T, Hqk, K]); Vt = v' ([B*T, H,
 *                       V']) when there is a v_scale or the normaliser
 *   bw_xty_kernel       U into S [nch, H, K, V']
 *   bw_state_scan_kernel (forward) thread per state element of (n, h): S[c]
 *                       <- S0_c
 *   bw_mix_kernel (lower) O' into dOp [B*T, H, V'], then bw_norm_kernel
 *                       (warp per (token, head)) turns it into dO' in place
 *                       (normaliser only)
 *   bw_xty_kernel       W into dS [nch, H, K, V']
 *   bw_state_scan_kernel (reverse): dS[c] <- dSn_c; ds_in, dz_in
 *   bw_dterm_kernel     (dlogdecay) block per (chunk, head): Dc [nch, H]
 *   bw_mix_kernel x 4   dV' (into dv, or into dVt [B*T, H, V] with a
 *                       v_scale); dQ~ without the diagonal into dQh; dK~'s
 *                       strict pairs into dKh and its state term into dKi
 *                       ([B*T, H, K] each)
 *   bw_finish_qk_kernel warp per (token, q/k head): adds the diagonal pairs,
 *                       dq, dk (the heads of a group summed in head order);
 *                       gt into dlogdecay and bt into btb [B*T, H]
 *   bw_finish_v_kernel  (v_scale) warp per (token, head): dv, dv_scale
 *   bw_ld_rev_kernel, bw_ld_fwd_kernel (dlogdecay) warp per (chunk, head):
 *                       the reverse sum of gt, then + Dc + the exclusive
 *                       forward sum of bt
 *
 * Workspace (from P->ws_offset on, each region 256-byte aligned; BT = B*T,
 * V' = V + (normaliser), nch = chunks):
 *   first [N+1] int32 (varlen), Gc [BT*H] doubles, acoef [nch*H],
 *   Qt, Kt [BT*Hqk*K] each, Vt [BT*H*V'] (used with a v_scale or the
 *   normaliser, reserved always), dOp [BT*H*V'] (normaliser),
 *   S, dS [nch*H*K*V'] each (the recomputed chunk states before each chunk
 *   and the gradients of those after it), dQh, dKh, dKi [BT*H*K] each,
 *   dVt [BT*H*V] (used with a v_scale, reserved always), btb [BT*H],
 *   Dc [nch*H], log_gamma [H] (H > SEQK__LIN_LG_INLINE)
 * floats: about BT (3 H + 2 Hqk K + 3 H K + H (V' + V) + [normaliser] H V')
 * + nch H (2 K V' + 2), each region rounded up to 256 bytes. Reserved
 * from sizes and flags only (not from which pointers are set: callers size
 * it before they fill every pointer).
 * All chunk states are kept (T / chunk per head): the GPU has the memory and
 * that keeps every stage one parallel launch.
 *
 * Reduced precision (seqk.h, "Dtypes"; issue #21): with P->dtype BF16 / F16
 * (q, k, v, dout, dq, dk, dv in that dtype; no normaliser; routed here by
 * seqk__lin_native from the _ex entry points) the backward runs natively,
 * as the native forward (gpu/linear_state.cu) does: operands rounded to the
 * dtype just before each product, the products on tensor cores through
 * cuBLAS (gpu/gemm.cu: cublasGemmStridedBatchedEx, CUBLAS_COMPUTE_32F, fp32
 * results), batched over chunks and heads (b = c H + h, rows of a short
 * last chunk zero-padded to L), everything else fp32 in seqk's kernels.
 *   (0)-(6) the native forward's own stages (seqk__cuda_lin_lp_states, not a
 *       copy): Gc, acoef; packed rounded Qa, Ka, Qg, Kd, Va; Sc = scale Qa
 *       Ka^T (fp32, kept); Pm = round(Sc .* D); U = Kd^T Va; the state scan
 *       (S0 of every chunk, fp32); S0b = round(S0).
 *   (7) bw_lp_pack_kernel: dOa = dout (exact), Qw = round(exp(G_i - G_0)
 *       q~_i) and wcoef = exp(G_0) per chunk (G_0 the chunk's first token:
 *       exp(G_i) itself underflows f16 under strong decay).
 *   (8) gemm W = Qw^T dOa [K, V]; bw_state_scan_kernel (reverse, W times
 *       wcoef): dSn, ds_in; bw_dterm_kernel (Dc, fp32 S0 and dSn);
 *       seqk__cuda_convert: dSb = round(dSn).
 *   (9) gemm dPr = dOa Va^T [L, L] (fp32); bw_lp_mask_kernel: dPm =
 *       round(dPr .* D) strictly lower, E = dPr .* P (P = Sc .* D as the
 *       forward formed it, fp32; in Sc's place), diag = dPr_ii;
 *       bw_lp_gsum_kernel (gate gradient): E's row sum - column sum.
 *   (10) gemms dVf = Kd dSb + Pm^T dOa [L, V]; dQs = dOa S0b^T, dQp = dPm Ka,
 *       dKs = Va dSb^T, dKp = scale dPm^T Qa [L, K] (fp32 each).
 *   (11) bw_lp_finish_qk_kernel, warp per (chunk, row, q/k head): dQ~ = dQp
 *       + exp(G_i) dQs + diag k~, dK~ = dKp + exp(G_L - G_i) dKs + diag q~
 *       (the row decays applied to the fp32 products: no decayed copies of
 *       dO or V~), summed over a group's heads in head order, times scale
 *       phi'(q) / phi'(k), rounded once; the gate terms gt = gsum +
 *       exp(G_i) q~ . dQs, bt = exp(G_L - G_j) k~ . dKs (fp32).
 *       bw_lp_finish_v_kernel: dv = round(v_scale dV' + skip dout), dv_scale
 *       = v . dV', dskip = dout . v (Mamba2's D).
 *   (12) bw_ld_rev_kernel, bw_ld_fwd_kernel as above.
 * Workspace (bw_make_lp_plan): the native forward's (seqk__cuda_lin_lp_workspace),
 * then dOa, Qw, wcoef, dPm, dPr, dS, dSb, diag, gsum, dQp, dQs, dKp, dKs,
 * dVf, btb, Dc; with nb = C H chunk-heads of L rows: nb (L (18 K + 6 V +
 * 6 L + 8) + 6 K V + 8) + 4 B T H bytes (each region rounded up to 256
 * bytes) beyond the forward's. Error: seqk.h ("Dtypes", native
 * backward). To tune: the L x L products are formed whole (the upper
 * triangle discarded); dPr and E could stay in registers of a fused kernel.
 *
 * To tune (measure first): tensor cores for the tile products; fusing the
 * three token products of a chunk (they share the score tiles); coalesced
 * loads of the transposed state tiles; the one-thread-per-element state scans
 * on the scan primitive (gpu/scan.cu) for few long sequences; the Mamba2
 * reductions are one block per head (fine for H >= the SM count).
 */
extern "C" {
#include "../core/internal.h"
#include "../scan/linear_state.h"
}

#include "chunks.cuh"
#include "common.cuh"
#include "dtype.cuh"

#include <limits.h>
#include <stdint.h>
#include <string.h>

/* ---- constants ------------------------------------------------------------ */

enum {
    BW_WS_ALIGN = 256,
    BW_TILE = 64,       /* 64 x 64 outputs per tile block */
    BW_TSTEP = 16,      /* inner-dimension step of the tiles */
    BW_THREADS = 256,   /* tile blocks, scans, reductions */
    BW_WARPS = BW_THREADS / 32
};

/* A token-major matrix: row r (of the [B*T] row index) for head h starts at
 * p + r ld + (h / grp) hs. */
typedef struct bw_tmat {
    const float *p;
    int64_t ld, hs;
    int grp;
} bw_tmat;

typedef struct bw_args {
    seqk__chunks map;
    int64_t KV, KVp; /* K*V; floats per chunk state K*V' */
    int H, Hqk, hgrp, K, V, Vp;
    float scale;
    int norm, elu, decay;
    const float *q, *k, *v, *v_scale;
    seqk__lin_gates gates; /* g, g_head, log_gamma */
    const float *s_in, *z_in, *dout, *ds_out, *dz_out;
    float *dq, *dk, *dv, *dv_scale, *dld, *ds_in, *dz_in;
    /* workspace */
    double *Gc;           /* [B*T, H]: in double, see bw_gates_kernel */
    float *acoef, *Qt, *Kt, *Vt, *dOp, *S, *dS, *dQh, *dKh, *dKi, *dVt, *btb, *Dc;
    const float *wcoef;   /* [nch, H] or NULL (fp32 path): the reverse scan takes
                           * W_c wcoef[c, h] (the native path's exp(G_0)) */
    bw_tmat Qm, Km, Vm, dOm; /* q~, k~, v', dO' rows */
} bw_args;

/* One token product of bw_mix_kernel (see the top comment). */
typedef struct bw_mix {
    bw_tmat A, B, Z;  /* A, B: DA columns; Z: DZ columns */
    int DA, DZ;
    const float *st;  /* states [nch, H, K, V'] */
    int st_t;         /* 0: Sop[a][z] = st[a V' + z] (DA = K, DZ = V'); 1: st[z V' + a] */
    int upper;
    int strict;       /* 1: without the diagonal c == r */
    int parts;        /* 1: the token pairs, 2: the state term, 3: both */
    float *out;       /* out[r ld + h hs + col], col < cols */
    int64_t out_ld, out_hs;
    int out_cols;
} bw_mix;

/* ---- device helpers --------------------------------------------------------- */

/* d phi / dx */
static __device__ __forceinline__ float bw_dphi(float x, int elu)
{
    if (!elu) return 1.0f;
    return x > 0.0f ? 1.0f : expf(x);
}

static __device__ __forceinline__ const float *bw_row(const bw_tmat &m, int64_t r, int h)
{
    return m.p + r * m.ld + (int64_t)(h / m.grp) * m.hs;
}

/* The sum of x over the block (BW_THREADS threads, all calling), in thread
 * 0; fixed order. */
static __device__ __forceinline__ float bw_block_sum(float x)
{
    __shared__ float part[BW_WARPS];
    x = seqk__warp_sum(x);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = x;
    __syncthreads();
    float s = 0.0f;
    if (threadIdx.x == 0)
        for (int w = 0; w < BW_WARPS; w++) s += part[w];
    return s;
}

/* The same in double (valid in thread 0), for the per-head sums over every
 * token (Mamba2's dA, ddt_bias, dD): their terms cancel, as on the CPU,
 * which sums them in double too. */
static __device__ __forceinline__ double bw_block_sum_d(double x)
{
    __shared__ double part[BW_WARPS];
    x = seqk__warp_sum_d(x);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = x;
    __syncthreads();
    double s = 0.0;
    if (threadIdx.x == 0)
        for (int w = 0; w < BW_WARPS; w++) s += part[w];
    return s;
}

/* ---- stage 0: cumulative log-decays per chunk ----------------------------------- */

/* One warp per (chunk, head): Gc = inclusive scan of log a over the chunk,
 * acoef = exp(G_last). In double: under strong decay (log a ~ -20, |G| ~
 * 1000 at the chunk's end) an fp32 G_i - G_j would carry an absolute error
 * ~1e-4, i.e. a relative one in exp(G_i - G_j), and the gate gradient's
 * leading terms are exactly those pairs (exp(g_t) of neighbours). */
static __global__ void __launch_bounds__(BW_THREADS) bw_gates_kernel(bw_args a, int64_t nwork)
{
    const int lane = threadIdx.x & 31;
    int64_t c, r0;
    int h, Lc;
    if (!seqk__chunk_head_warp(a.map, a.H, BW_WARPS, nwork, &c, &h, &r0, &Lc)) return;
    const float lgh = seqk__lin_head_lg(a.gates, h);
    double carry = 0.0;
    for (int i0 = 0; i0 < Lc; i0 += 32) {
        const int i = i0 + lane;
        double x = i < Lc ? (double)seqk__lin_logdecay(a.gates, a.H, r0 + i, h, lgh) : 0.0;
        x = seqk__warp_incl_scan_d(x) + carry;
        if (i < Lc) a.Gc[(r0 + i) * a.H + h] = x;
        const int last = Lc - 1 - i0 < 31 ? Lc - 1 - i0 : 31;
        carry = __shfl_sync(SEQK__FULL_MASK, x, last);
    }
    if (lane == 0) a.acoef[c * a.H + h] = expf((float)carry);
}

/* ---- feature maps ------------------------------------------------------------------ */

/* Qt = scale phi(q), Kt = phi(k); Vt = [v_scale v | 1] when Vt is used.
 * Grid-stride. */
static __global__ void __launch_bounds__(BW_THREADS) bw_prep_kernel(bw_args a, int64_t rows)
{
    const int64_t nqk = rows * a.Hqk * a.K;
    const int64_t stride = (int64_t)gridDim.x * BW_THREADS;
    for (int64_t i = (int64_t)blockIdx.x * BW_THREADS + threadIdx.x; i < nqk; i += stride) {
        a.Qt[i] = a.scale * seqk__lin_phi(a.q[i], a.elu);
        a.Kt[i] = seqk__lin_phi(a.k[i], a.elu);
    }
    if (!a.Vt) return;
    const int64_t nv = rows * a.H * a.Vp;
    for (int64_t i = (int64_t)blockIdx.x * BW_THREADS + threadIdx.x; i < nv; i += stride) {
        const int64_t rh = i / a.Vp;
        const int col = (int)(i - rh * a.Vp);
        float x = 1.0f;
        if (col < a.V) {
            x = a.v[rh * a.V + col];
            if (a.v_scale) x *= a.v_scale[rh];
        }
        a.Vt[i] = x;
    }
}

/* ---- state-shaped products: out[c, h] = sum_i f_i A_i^T Z_i ------------------------ */

/* Block (chunk c, head h, tile of A's K columns, tile of Z's V' columns);
 * f_i = exp(G_L - G_i) (upper: the local state U) or exp(G_i) (lower: W).
 * out [nch, H, K, V']. */
static __global__ void __launch_bounds__(BW_THREADS)
    bw_xty_kernel(bw_args a, bw_tmat A, bw_tmat Z, int upper, float *out, int tilesA,
                  int tilesZ)
{
    __shared__ float As[BW_TSTEP][BW_TILE];
    __shared__ float Zs[BW_TSTEP][BW_TILE];
    const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    const int64_t id = blockIdx.x;
    const int tz = (int)(id % tilesZ);
    const int ta = (int)((id / tilesZ) % tilesA);
    const int64_t ch = id / ((int64_t)tilesZ * tilesA);
    const int64_t c = ch / a.H;
    const int h = (int)(ch - c * a.H);
    const int DA = a.K, DZ = a.Vp, H = a.H;
    const int a0 = ta * BW_TILE, z0 = tz * BW_TILE;
    int64_t r0;
    int Lc;
    seqk__chunk_rows(a.map, c, &r0, &Lc);
    const double glast = a.decay ? a.Gc[(r0 + Lc - 1) * H + h] : 0.0;
    float acc[4][4];
    seqk__tile4_zero(acc);
    for (int i0 = 0; i0 < Lc; i0 += BW_TSTEP) {
#pragma unroll
        for (int p = 0; p < BW_TSTEP * BW_TILE / BW_THREADS; p++) {
            const int idx = tid + BW_THREADS * p, ii = idx / BW_TILE, cc = idx % BW_TILE;
            const int i = i0 + ii;
            float ax = 0.0f, zx = 0.0f;
            if (i < Lc) {
                const int64_t r = r0 + i;
                if (a0 + cc < DA) {
                    float f = 1.0f;
                    if (a.decay) {
                        const double G = a.Gc[r * H + h];
                        f = expf((float)(upper ? glast - G : G));
                    }
                    ax = f * bw_row(A, r, h)[a0 + cc];
                }
                if (z0 + cc < DZ) zx = bw_row(Z, r, h)[z0 + cc];
            }
            As[ii][cc] = ax;
            Zs[ii][cc] = zx;
        }
        __syncthreads();
#pragma unroll
        for (int ii = 0; ii < BW_TSTEP; ii++) seqk__tile4_step(acc, &As[ii][ty], 16, &Zs[ii][tx], 16);
        __syncthreads();
    }
    float *o = out + (c * H + h) * a.KVp;
#pragma unroll
    for (int m = 0; m < 4; m++) {
        const int kk = a0 + ty + 16 * m;
        if (kk >= DA) continue;
#pragma unroll
        for (int b = 0; b < 4; b++) {
            const int vv = z0 + tx + 16 * b;
            if (vv < DZ) o[(int64_t)kk * DZ + vv] = acc[m][b];
        }
    }
}

/* ---- chunk-state scans ------------------------------------------------------------- */

/* One thread per state element e of (n, h) (e = kk V' + col; col == V is
 * z's). Forward: S[c] (= U_c) <- the state before chunk c, from s_in / z_in.
 * Reverse: dS[c] (= W_c) <- the
 * gradient of the state after chunk c, from ds_out / dz_out; the gradient
 * before the first chunk into ds_in / dz_in (when given). */
static __global__ void __launch_bounds__(BW_THREADS)
    bw_state_scan_kernel(bw_args a, int eblocks, int reverse)
{
    const int64_t id = blockIdx.x;
    const int64_t nh = id / eblocks;
    const int64_t e = (id - nh * eblocks) * BW_THREADS + threadIdx.x;
    if (e >= a.KVp) return;
    const int64_t n = nh / a.H;
    const int h = (int)(nh - n * a.H);
    const int kk = (int)(e / a.Vp), col = (int)(e - (int64_t)kk * a.Vp);
    const bool isz = col >= a.V;
    const int64_t si = nh * a.KV + (int64_t)kk * a.V + col, zi = nh * a.K + kk;
    const float *s0 = reverse ? a.ds_out : a.s_in;
    const float *z0 = reverse ? a.dz_out : a.z_in;
    float carry = 0.0f;
    if (!isz) {
        if (s0) carry = s0[si];
    } else if (z0) {
        carry = z0[zi];
    }
    int64_t cb, ce;
    seqk__chunks_range(a.map, n, &cb, &ce);
    const int64_t HE = (int64_t)a.H * a.KVp;
    float *st = (reverse ? a.dS : a.S) + (int64_t)h * a.KVp + e; /* + c * HE */
    if (!reverse) {
        (void)seqk__lin_carry(st, HE, a.acoef, a.decay, a.H, h, cb, ce, carry);
    } else {
        for (int64_t c = ce - 1; c >= cb; c--) {
            const float w = a.wcoef ? st[c * HE] * a.wcoef[c * a.H + h] : st[c * HE];
            const float cf = a.decay ? a.acoef[c * a.H + h] : 1.0f;
            st[c * HE] = carry;
            carry = fmaf(cf, carry, w);
        }
        if (!isz) {
            if (a.ds_in) a.ds_in[si] = carry;
        } else if (a.dz_in) {
            a.dz_in[zi] = carry;
        }
    }
}

/* Block per (chunk c, head h), after both scans: Dc[c, h] = exp(G_L)
 * <S0_c, dSn_c>, the gate gradient's term of the state through the chunk
 * (fixed order). */
static __global__ void __launch_bounds__(BW_THREADS) bw_dterm_kernel(bw_args a)
{
    const int64_t ch = blockIdx.x; /* c H + h */
    const float *S = a.S + ch * a.KVp, *dS = a.dS + ch * a.KVp;
    float s = 0.0f;
    for (int64_t e = threadIdx.x; e < a.KVp; e += BW_THREADS) s = fmaf(S[e], dS[e], s);
    s = bw_block_sum(s);
    if (threadIdx.x == 0) a.Dc[ch] = a.decay ? a.acoef[ch] * s : s;
}

/* ---- token products ------------------------------------------------------------------ */

/* Block (chunk c, head h, 64-row tile of the chunk, 64-column tile of Z):
 *   out_r = sum_{c causal} (A_r . B_c) m(r, c) Z_c + f_r A_r Sop
 * (see the top comment); for each 64-token tile of c that reaches the row
 * tile: scores over DA in steps of 16, the mask in registers, the tile to
 * shared memory, then times Z; then the state term over DA. */
static __global__ void __launch_bounds__(BW_THREADS)
    bw_mix_kernel(bw_args a, bw_mix mx, int tilesM, int tilesZ)
{
    __shared__ float At[BW_TSTEP][BW_TILE + 1]; /* A rows (k-major); scaled by f for the state term */
    __shared__ float Bt[BW_TSTEP][BW_TILE + 1];
    __shared__ float Ps[BW_TILE][BW_TILE + 1];  /* masked scores */
    __shared__ float Zs[BW_TILE * BW_TILE];     /* Z [token][col]; then Sop [k][col] (16 rows) */
    __shared__ double Gr[BW_TILE], Gk[BW_TILE];
    const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    const int64_t id = blockIdx.x;
    const int tz = (int)(id % tilesZ);
    const int tm = (int)((id / tilesZ) % tilesM);
    const int64_t ch = id / ((int64_t)tilesZ * tilesM);
    const int64_t c = ch / a.H;
    const int h = (int)(ch - c * a.H);
    const int H = a.H, DA = mx.DA, DZ = mx.DZ, up = mx.upper;
    int64_t r0;
    int Lc;
    seqk__chunk_rows(a.map, c, &r0, &Lc);
    const int m0 = tm * BW_TILE, z0 = tz * BW_TILE;
    if (m0 >= Lc) return; /* the whole block: a short last chunk */
    const double glast = a.decay ? a.Gc[(r0 + Lc - 1) * H + h] : 0.0;
    if (tid < BW_TILE) {
        const int i = m0 + tid;
        Gr[tid] = (a.decay && i < Lc) ? a.Gc[(r0 + i) * H + h] : 0.0;
    }
    __syncthreads(); /* Gr is read by the state term's loads without the pairs' barriers */
    float acc[4][4];
    seqk__tile4_zero(acc);

    /* intra-chunk: lower, c <= r (tiles up to the diagonal); upper, c >= r */
    const int jbeg = up ? m0 : 0;
    int jend = up ? Lc : (m0 + BW_TILE < Lc ? m0 + BW_TILE : Lc);
    if (!(mx.parts & 1)) jend = jbeg;
    for (int j0 = jbeg; j0 < jend; j0 += BW_TILE) {
        if (tid < BW_TILE) {
            const int j = j0 + tid;
            Gk[tid] = (a.decay && j < Lc) ? a.Gc[(r0 + j) * H + h] : 0.0;
        }
        float p[4][4];
        seqk__tile4_zero(p);
        for (int kk0 = 0; kk0 < DA; kk0 += BW_TSTEP) {
#pragma unroll
            for (int pp = 0; pp < BW_TSTEP * BW_TILE / BW_THREADS; pp++) {
                const int idx = tid + BW_THREADS * pp, t = idx / BW_TSTEP, kc = idx % BW_TSTEP;
                const int kk = kk0 + kc, i = m0 + t, j = j0 + t;
                float ax = 0.0f, bx = 0.0f;
                if (kk < DA) {
                    if (i < Lc) ax = bw_row(mx.A, r0 + i, h)[kk];
                    if (j < Lc) bx = bw_row(mx.B, r0 + j, h)[kk];
                }
                At[kc][t] = ax;
                Bt[kc][t] = bx;
            }
            __syncthreads();
#pragma unroll
            for (int kc = 0; kc < BW_TSTEP; kc++)
                seqk__tile4_step(p, &At[kc][ty], 16, &Bt[kc][tx], 16);
            __syncthreads();
        }
        /* the mask: exp only where it is causal (argument <= 0) */
#pragma unroll
        for (int m = 0; m < 4; m++) {
            const int li = ty + 16 * m, i = m0 + li;
#pragma unroll
            for (int b = 0; b < 4; b++) {
                const int lj = tx + 16 * b, j = j0 + lj;
                float x = 0.0f;
                const bool causal = up ? (mx.strict ? j > i : j >= i) : (mx.strict ? j < i : j <= i);
                if (i < Lc && j < Lc && causal) {
                    x = p[m][b];
                    if (a.decay) x *= expf((float)(up ? Gk[lj] - Gr[li] : Gr[li] - Gk[lj]));
                }
                Ps[li][lj] = x;
            }
        }
#pragma unroll 4
        for (int pp = 0; pp < BW_TILE * BW_TILE / BW_THREADS; pp++) {
            const int idx = tid + BW_THREADS * pp, t = idx / BW_TILE, cc = idx % BW_TILE;
            const int j = j0 + t, zz = z0 + cc;
            Zs[idx] = (j < Lc && zz < DZ) ? bw_row(mx.Z, r0 + j, h)[zz] : 0.0f;
        }
        __syncthreads();
        for (int jj = 0; jj < BW_TILE; jj++)
            seqk__tile4_step(acc, &Ps[ty][jj], 16 * (BW_TILE + 1), &Zs[jj * BW_TILE + tx], 16);
        __syncthreads();
    }

    /* the state term: f_r A_r Sop */
    const float *Sop = mx.st + (c * H + h) * a.KVp;
    const int64_t Vp = a.Vp;
    const int DAs = (mx.parts & 2) ? DA : 0;
    for (int kk0 = 0; kk0 < DAs; kk0 += BW_TSTEP) {
#pragma unroll
        for (int pp = 0; pp < BW_TSTEP * BW_TILE / BW_THREADS; pp++) {
            const int idx = tid + BW_THREADS * pp, t = idx / BW_TSTEP, kc = idx % BW_TSTEP;
            const int kk = kk0 + kc, i = m0 + t;
            float ax = 0.0f;
            if (kk < DA && i < Lc) {
                ax = bw_row(mx.A, r0 + i, h)[kk];
                if (a.decay) ax *= expf((float)(up ? glast - Gr[t] : Gr[t]));
            }
            At[kc][t] = ax;
        }
#pragma unroll
        for (int pp = 0; pp < BW_TSTEP * BW_TILE / BW_THREADS; pp++) {
            const int idx = tid + BW_THREADS * pp;
            int kc, cc;
            if (mx.st_t) kc = idx % BW_TSTEP, cc = idx / BW_TSTEP; /* consecutive a: consecutive addresses */
            else kc = idx / BW_TILE, cc = idx % BW_TILE;
            const int kk = kk0 + kc, zz = z0 + cc;
            float sx = 0.0f;
            if (kk < DA && zz < DZ) sx = mx.st_t ? Sop[zz * Vp + kk] : Sop[kk * Vp + zz];
            Zs[kc * BW_TILE + cc] = sx;
        }
        __syncthreads();
#pragma unroll
        for (int kc = 0; kc < BW_TSTEP; kc++)
            seqk__tile4_step(acc, &At[kc][ty], 16, &Zs[kc * BW_TILE + tx], 16);
        __syncthreads();
    }

#pragma unroll
    for (int m = 0; m < 4; m++) {
        const int i = m0 + ty + 16 * m;
        if (i >= Lc) continue;
        float *o = mx.out + (r0 + i) * mx.out_ld + (int64_t)h * mx.out_hs;
#pragma unroll
        for (int b = 0; b < 4; b++) {
            const int zz = z0 + tx + 16 * b;
            if (zz < mx.out_cols) o[zz] = acc[m][b];
        }
    }
}

/* ---- per-row kernels ----------------------------------------------------------------- */

/* Warp per (token r, head h), normaliser: dOp holds O' = [num | den];
 * replaced in place by dO' = [dout inv, -(dout . num) inv^2],
 * inv = 1 / (den + eps). */
static __global__ void __launch_bounds__(BW_THREADS) bw_norm_kernel(bw_args a, int64_t items)
{
    const int lane = threadIdx.x & 31;
    const int64_t w = (int64_t)blockIdx.x * BW_WARPS + (threadIdx.x >> 5);
    if (w >= items) return;
    float *o = a.dOp + w * a.Vp;
    const float *d = a.dout + w * a.V;
    const float inv = 1.0f / (o[a.V] + SEQK__LIN_EPS);
    float s = 0.0f;
    for (int j = lane; j < a.V; j += 32) s = fmaf(d[j], o[j], s);
    s = seqk__warp_sum(s);
    /* every lane read den before the shuffles of the sum: lane 0 may now
     * overwrite it */
    for (int j = lane; j < a.V; j += 32) o[j] = d[j] * inv;
    if (lane == 0) o[a.V] = -s * inv * inv;
}

/* Warp per (token r, q/k head hq). For each head h of the group, in order,
 * with diag = dO'_r . v'_r (the diagonal of dP, left out of dQh and dKh):
 *   dQ~ = dQh + diag k~,  dK~ = dKh + dKi + diag q~
 * summed into dq, dk (each element by the same lane, heads in order), then
 * dq *= scale phi'(q), dk *= phi'(k). With dld: the gate gradient's per-token
 * terms gt = q~ . dQh - k~ . dKh (the strict pairs and the queries against
 * S0) into dld, bt = k~ . dKi (the keys against dSn) into btb; the diagonal
 * pairs, which cancel exactly, are never formed. */
static __global__ void __launch_bounds__(BW_THREADS)
    bw_finish_qk_kernel(bw_args a, int64_t items)
{
    const int lane = threadIdx.x & 31;
    const int64_t w = (int64_t)blockIdx.x * BW_WARPS + (threadIdx.x >> 5);
    if (w >= items) return;
    const int64_t r = w / a.Hqk;
    const int hq = (int)(w - r * a.Hqk);
    const int K = a.K, grp = a.hgrp;
    const int64_t qo = w * K; /* (r Hqk + hq) K */
    const float *qt = a.Qt + qo, *kt = a.Kt + qo;
    for (int hi = 0; hi < grp; hi++) {
        const int h = hq * grp + hi;
        const int64_t o = (r * a.H + h) * K;
        const float *dqh = a.dQh + o, *dkh = a.dKh + o, *dki = a.dKi + o;
        const float *dor = bw_row(a.dOm, r, h), *vr = bw_row(a.Vm, r, h);
        float dg = 0.0f;
        for (int j = lane; j < a.Vp; j += 32) dg = fmaf(dor[j], vr[j], dg);
        dg = seqk__warp_sum(dg);
        float gt = 0.0f, bt = 0.0f;
        for (int i = lane; i < K; i += 32) {
            gt += qt[i] * dqh[i] - kt[i] * dkh[i];
            bt = fmaf(kt[i], dki[i], bt);
            const float dqv = fmaf(dg, kt[i], dqh[i]);
            const float dkv = fmaf(dg, qt[i], dkh[i] + dki[i]);
            a.dq[qo + i] = hi ? a.dq[qo + i] + dqv : dqv;
            a.dk[qo + i] = hi ? a.dk[qo + i] + dkv : dkv;
        }
        if (a.dld) {
            gt = seqk__warp_sum(gt);
            bt = seqk__warp_sum(bt);
            if (lane == 0) a.dld[r * a.H + h] = gt, a.btb[r * a.H + h] = bt;
        }
    }
    for (int i = lane; i < K; i += 32) {
        a.dq[qo + i] *= a.scale * bw_dphi(a.q[qo + i], a.elu);
        a.dk[qo + i] *= bw_dphi(a.k[qo + i], a.elu);
    }
}

/* Warp per (token r, head h), with a v_scale: dv = v_scale dV~, dv_scale =
 * v . dV~ (when given). */
static __global__ void __launch_bounds__(BW_THREADS) bw_finish_v_kernel(bw_args a, int64_t items)
{
    const int lane = threadIdx.x & 31;
    const int64_t w = (int64_t)blockIdx.x * BW_WARPS + (threadIdx.x >> 5);
    if (w >= items) return;
    const float vs = a.v_scale[w];
    const float *d = a.dVt + w * a.V, *v = a.v + w * a.V;
    float s = 0.0f;
    for (int j = lane; j < a.V; j += 32) {
        s = fmaf(v[j], d[j], s);
        a.dv[w * a.V + j] = vs * d[j];
    }
    s = seqk__warp_sum(s);
    if (lane == 0 && a.dv_scale) a.dv_scale[w] = s;
}

/* ---- dlogdecay, per chunk ------------------------------------------------------------- */

/* d(log a_t) = <dS_t, a_t S_{t-1}>, written with the chunk's own terms (each a
 * pair on the two sides of t with its decay, none O(1) that cancels):
 *   dld_t = sum_{i >= t} gt_i + sum_{j < t} bt_j + Dc
 * (scan/chunk_backward.c derives it the same way). Warp per (chunk, head);
 * two kernels, so that each element is read and written by one lane. */

/* dld <- its reverse inclusive sum inside the chunk. */
static __global__ void __launch_bounds__(BW_THREADS) bw_ld_rev_kernel(bw_args a, int64_t nwork)
{
    int64_t c, r0;
    int h, Lc;
    if (!seqk__chunk_head_warp(a.map, a.H, BW_WARPS, nwork, &c, &h, &r0, &Lc)) return;
    seqk__chunk_gate_rev(a.dld, r0, Lc, a.H, h);
}

/* dld += Dc + the exclusive forward sum of bt inside the chunk. */
static __global__ void __launch_bounds__(BW_THREADS) bw_ld_fwd_kernel(bw_args a, int64_t nwork)
{
    int64_t c, r0;
    int h, Lc;
    if (!seqk__chunk_head_warp(a.map, a.H, BW_WARPS, nwork, &c, &h, &r0, &Lc)) return;
    seqk__chunk_gate_fwd(a.dld, a.btb, a.Dc[c * a.H + h], r0, Lc, a.H, h);
}

/* ---- the native bf16 / f16 path (see "Reduced precision" above) ------------------ */

/* The native backward's arrays besides bw_args' (whose q, k, v, dout, dq,
 * dk, dv are unused: those are in the dtype here). Packed as the native
 * forward packs (seqk__lin_lp): batch entry b = c H + h, rows i < L. */
typedef struct bw_lp_args {
    bw_args a;
    int bf16;                          /* 1: bf16, 0: f16 */
    const uint16_t *q, *k;             /* [B*T, Hqk, K] */
    const uint16_t *v, *dout;          /* [B*T, H, V] */
    uint16_t *dq, *dk, *dv;
    const float *skip;                 /* [H] or NULL: dv += skip[h] dout (Mamba2's D) */
    float *dskip;                      /* [B*T, H] or NULL: dout . v per token and head */
    uint16_t *dOa;                     /* [nb, L, V] dout, packed (exact) */
    uint16_t *Qw;                      /* [nb, L, K] exp(G_i - G_0) q~_i, rounded */
    float *wcoef;                      /* [nb] exp(G_0) */
    uint16_t *dPm;                     /* [nb, L, L] (dO V~^T) .* D strictly lower, rounded */
    float *dPr;                        /* [nb, L, L] dO V~^T (fp32) */
    float *E;                          /* [nb, L, L] the scores Sc on entry; then
                                        * E_ij = dPr_ij P_ij (j < i), else 0 */
    float *diag, *gsum;                /* [nb, L] dPr_ii; E's row sum - column sum */
    float *dQp, *dQs, *dKp, *dKs;      /* [nb, L, K] dPm K~, dO S0^T, scale dPm^T Qa, V~ dSn^T */
    float *dVf;                        /* [nb, L, V] Kd dSn + Pm^T dO */
} bw_lp_args;

static __device__ __forceinline__ bool bw_lp_row(const bw_lp_args &p, int64_t nrows, int64_t *b,
                                                 int *i, int64_t *c, int *h, int64_t *r0, int *Lc)
{
    return seqk__chunk_row_warp(p.a.map, p.a.H, BW_WARPS, nrows, b, i, c, h, r0, Lc);
}

/* One warp per packed row: dOa = the row of dout; Qw = round(exp(G_i - G_0)
 * q~_i), the queries decayed relative to the chunk's first token (zeros past
 * the chunk); wcoef[c, h] = exp(G_0). (Qg's exp(G_i) itself would leave f16's
 * range under strong decay, exp(-20) < 2^-24, and take the whole gradient of
 * the state before a chunk with it.) */
static __global__ void __launch_bounds__(BW_THREADS) bw_lp_pack_kernel(bw_lp_args p, int64_t nrows)
{
    int64_t b, c, r0;
    int i, h, Lc;
    if (!bw_lp_row(p, nrows, &b, &i, &c, &h, &r0, &Lc)) return;
    const bw_args &a = p.a;
    const int V = a.V, K = a.K, lane = threadIdx.x & 31;
    const bool ok = i < Lc;
    const int64_t r = r0 + i;
    const int64_t src = (r * a.H + h) * V, dst = (b * a.map.L + i) * (int64_t)V;
    for (int vv = lane; vv < V; vv += 32) p.dOa[dst + vv] = ok ? p.dout[src + vv] : (uint16_t)0;
    double g0 = 0.0, gi = 0.0;
    if (a.decay && ok) g0 = a.Gc[r0 * a.H + h], gi = a.Gc[r * a.H + h];
    const float f = a.decay ? expf((float)(gi - g0)) : 1.0f;
    const int64_t qo = (r * a.Hqk + h / a.hgrp) * K, qd = (b * a.map.L + i) * (int64_t)K;
    for (int kk = lane; kk < K; kk += 32) {
        float x = 0.0f;
        if (ok) x = f * a.scale * seqk__lin_phi(seqk__dt_load(p.q, qo + kk, p.bf16), a.elu);
        p.Qw[qd + kk] = seqk__dt_round(x, p.bf16);
    }
    if (i == 0 && lane == 0) p.wcoef[b] = a.decay ? expf((float)g0) : 1.0f;
}

/* One warp per packed row (b, i): with f = exp(G_i - G_j) (1 without decay)
 * and P_ij = Sc_ij f as the forward formed it before rounding, for j < i < Lc
 *   dPm_ij = round(dPr_ij f),   E_ij = dPr_ij P_ij   (else 0),
 * E in place of Sc; diag_i = dPr_ii. */
static __global__ void __launch_bounds__(BW_THREADS) bw_lp_mask_kernel(bw_lp_args p, int64_t nrows)
{
    int64_t b, c, r0;
    int i, h, Lc;
    if (!bw_lp_row(p, nrows, &b, &i, &c, &h, &r0, &Lc)) return;
    const bw_args &a = p.a;
    const int L = a.map.L, lane = threadIdx.x & 31;
    const double gi = (a.decay && i < Lc) ? a.Gc[(r0 + i) * a.H + h] : 0.0;
    const int64_t row = (b * L + i) * (int64_t)L;
    for (int j = lane; j < L; j += 32) {
        float e = 0.0f, x = 0.0f;
        if (j < i && i < Lc) {
            const float f = a.decay ? expf((float)(gi - a.Gc[(r0 + j) * a.H + h])) : 1.0f;
            const float dp = p.dPr[row + j];
            e = dp * (p.E[row + j] * f);
            x = dp * f;
        }
        p.E[row + j] = e;
        p.dPm[row + j] = seqk__dt_round(x, p.bf16);
    }
    if (lane == 0) p.diag[b * L + i] = i < Lc ? p.dPr[row + i] : 0.0f;
}

/* One warp per packed row t (the gate gradient only): gsum_t = sum_j E_tj -
 * sum_i E_it, each stored E counted once on each side (fixed order). */
static __global__ void __launch_bounds__(BW_THREADS) bw_lp_gsum_kernel(bw_lp_args p, int64_t nrows)
{
    int64_t b, c, r0;
    int t, h, Lc;
    if (!bw_lp_row(p, nrows, &b, &t, &c, &h, &r0, &Lc)) return;
    const int L = p.a.map.L;
    const float *Eb = p.E + b * (int64_t)L * L;
    float rs = 0.0f, cs = 0.0f;
    for (int j = threadIdx.x & 31; j < L; j += 32) {
        rs += Eb[(int64_t)t * L + j];
        cs += Eb[(int64_t)j * L + t];
    }
    rs = seqk__warp_sum(rs);
    cs = seqk__warp_sum(cs);
    if ((threadIdx.x & 31) == 0) p.gsum[b * L + t] = rs - cs;
}

/* One warp per (chunk c, row i < Lc, q/k head hq): for the heads h of the
 * group in order, with eq = exp(G_i), ek = exp(G_L - G_i), q~ = scale phi(q),
 * k~ = phi(k) (fp32, from the inputs),
 *   dQ~ = dQp + eq dQs + diag k~,   dK~ = dKp + ek dKs + diag q~
 * summed over the heads, then dq = round(scale phi'(q) sum dQ~), dk =
 * round(phi'(k) sum dK~). With dld: gt = gsum + eq q~ . dQs into dld, bt =
 * ek k~ . dKs into btb (per head). */
static __global__ void __launch_bounds__(BW_THREADS)
    bw_lp_finish_qk_kernel(bw_lp_args p, int64_t items)
{
    const bw_args &a = p.a;
    const int lane = threadIdx.x & 31;
    const int64_t w = (int64_t)blockIdx.x * BW_WARPS + (threadIdx.x >> 5);
    if (w >= items) return;
    const int L = a.map.L, K = a.K, grp = a.hgrp, H = a.H;
    const int64_t ci = w / a.Hqk, c = ci / L;
    const int hq = (int)(w - ci * a.Hqk), i = (int)(ci - c * L);
    int64_t r0;
    int Lc;
    seqk__chunk_rows(a.map, c, &r0, &Lc);
    if (i >= Lc) return;
    const int64_t r = r0 + i, qo = (r * a.Hqk + hq) * K;
    if (a.dld) {
        for (int hi = 0; hi < grp; hi++) {
            const int h = hq * grp + hi;
            const int64_t row = (c * H + h) * L + i;
            const float *dqs = p.dQs + row * K, *dks = p.dKs + row * K;
            float ga = 0.0f, gb = 0.0f;
            for (int kk = lane; kk < K; kk += 32) {
                const float qt = a.scale * seqk__lin_phi(seqk__dt_load(p.q, qo + kk, p.bf16), a.elu);
                const float kt = seqk__lin_phi(seqk__dt_load(p.k, qo + kk, p.bf16), a.elu);
                ga = fmaf(qt, dqs[kk], ga);
                gb = fmaf(kt, dks[kk], gb);
            }
            ga = seqk__warp_sum(ga);
            gb = seqk__warp_sum(gb);
            if (lane == 0) {
                float eq = 1.0f, ek = 1.0f;
                if (a.decay) {
                    const double gi = a.Gc[r * H + h], gl = a.Gc[(r0 + Lc - 1) * H + h];
                    eq = expf((float)gi), ek = expf((float)(gl - gi));
                }
                a.dld[r * H + h] = fmaf(eq, ga, p.gsum[row]);
                a.btb[r * H + h] = ek * gb;
            }
        }
    }
    for (int kk = lane; kk < K; kk += 32) {
        const float qx = seqk__dt_load(p.q, qo + kk, p.bf16), kx = seqk__dt_load(p.k, qo + kk, p.bf16);
        const float qt = a.scale * seqk__lin_phi(qx, a.elu), kt = seqk__lin_phi(kx, a.elu);
        float sq = 0.0f, sk = 0.0f;
        for (int hi = 0; hi < grp; hi++) {
            const int h = hq * grp + hi;
            const int64_t row = (c * H + h) * L + i, e = row * K + kk;
            float eq = 1.0f, ek = 1.0f;
            if (a.decay) {
                const double gi = a.Gc[r * H + h], gl = a.Gc[(r0 + Lc - 1) * H + h];
                eq = expf((float)gi), ek = expf((float)(gl - gi));
            }
            const float dg = p.diag[row];
            sq += fmaf(dg, kt, fmaf(eq, p.dQs[e], p.dQp[e]));
            sk += fmaf(dg, qt, fmaf(ek, p.dKs[e], p.dKp[e]));
        }
        p.dq[qo + kk] = seqk__dt_round(sq * (a.scale * bw_dphi(qx, a.elu)), p.bf16);
        p.dk[qo + kk] = seqk__dt_round(sk * bw_dphi(kx, a.elu), p.bf16);
    }
}

/* One warp per packed row (b, i < Lc): dV' = dVf; dv = round(v_scale dV' +
 * skip[h] dout); dv_scale = v . dV' and dskip = dout . v when asked. */
static __global__ void __launch_bounds__(BW_THREADS) bw_lp_finish_v_kernel(bw_lp_args p, int64_t nrows)
{
    int64_t b, c, r0;
    int i, h, Lc;
    if (!bw_lp_row(p, nrows, &b, &i, &c, &h, &r0, &Lc) || i >= Lc) return;
    const bw_args &a = p.a;
    const int lane = threadIdx.x & 31, V = a.V;
    const int64_t rh = (r0 + i) * a.H + h;
    const float *d = p.dVf + (b * a.map.L + i) * (int64_t)V;
    const float vs = a.v_scale ? a.v_scale[rh] : 1.0f, sk = p.skip ? p.skip[h] : 0.0f;
    float s = 0.0f, s2 = 0.0f;
    for (int vv = lane; vv < V; vv += 32) {
        const float x = seqk__dt_load(p.v, rh * V + vv, p.bf16);
        const float y = seqk__dt_load(p.dout, rh * V + vv, p.bf16);
        s = fmaf(x, d[vv], s);
        s2 = fmaf(y, x, s2);
        float g = vs * d[vv];
        if (p.skip) g = fmaf(sk, y, g);
        p.dv[rh * V + vv] = seqk__dt_round(g, p.bf16);
    }
    if (a.dv_scale) {
        s = seqk__warp_sum(s);
        if (lane == 0) a.dv_scale[rh] = s;
    }
    if (p.dskip) {
        s2 = seqk__warp_sum(s2);
        if (lane == 0) p.dskip[rh] = s2;
    }
}

/* ---- Mamba2 epilogue ---------------------------------------------------------------- */

static __device__ __forceinline__ float bw_m2_d(int64_t i, int64_t H, int softplus,
                                                const float *dt, const float *dt_bias,
                                                const float *A, const float *dld,
                                                const float *dvs)
{
    const int h = (int)(i % H);
    const float d = fmaf(dld[i], A[h], dvs[i]);
    if (!softplus) return d;
    const float x = dt[i] + (dt_bias ? dt_bias[h] : 0.0f);
    return d / (1.0f + expf(-x));
}

/* ddt (grid-stride over rows * H) and dx += D dy (over rows * H * Pd; D
 * NULL: none, the engine added it). */
static __global__ void __launch_bounds__(BW_THREADS)
    bw_m2_elem_kernel(int64_t rows, int64_t H, int64_t Pd, int softplus, const float *dt,
                      const float *dt_bias, const float *A, const float *D, const float *dy,
                      const float *dld, const float *dvs, float *ddt, float *dx)
{
    const int64_t stride = (int64_t)gridDim.x * BW_THREADS;
    const int64_t first = (int64_t)blockIdx.x * BW_THREADS + threadIdx.x;
    for (int64_t i = first; i < rows * H; i += stride)
        ddt[i] = bw_m2_d(i, H, softplus, dt, dt_bias, A, dld, dvs);
    if (D)
        for (int64_t i = first; i < rows * H * Pd; i += stride) dx[i] += D[(i / Pd) % H] * dy[i];
}

/* Block per head h: dA[h], ddt_bias[h], dD[h] (each a sum over rows in a
 * fixed order, in double: thread t takes rows t, t + 256, .., then the block
 * sum). dD's terms are dy . x, or dskip[r, h] when given (the native path's
 * per-token dots). */
static __global__ void __launch_bounds__(BW_THREADS)
    bw_m2_reduce_kernel(int64_t rows, int64_t H, int64_t Pd, int softplus, const float *dt,
                        const float *dt_bias, const float *A, const float *x, const float *dy,
                        const float *dskip, const float *dtp, const float *dld,
                        const float *dvs, float *dA, float *dD, float *ddt_bias)
{
    const int64_t h = blockIdx.x;
    double sa = 0.0, sb = 0.0, sd = 0.0;
    for (int64_t r = threadIdx.x; r < rows; r += BW_THREADS) {
        const int64_t i = r * H + h;
        sa += (double)dld[i] * dtp[i];
        if (ddt_bias) sb += bw_m2_d(i, H, softplus, dt, dt_bias, A, dld, dvs);
        if (dD && dskip) sd += dskip[i];
        else if (dD)
            for (int64_t p = 0; p < Pd; p++) sd += (double)dy[i * Pd + p] * x[i * Pd + p];
    }
    sa = bw_block_sum_d(sa);
    if (threadIdx.x == 0) dA[h] = (float)sa;
    __syncthreads();
    if (ddt_bias) {
        sb = bw_block_sum_d(sb);
        if (threadIdx.x == 0) ddt_bias[h] = (float)sb;
        __syncthreads();
    }
    if (dD) {
        sd = bw_block_sum_d(sd);
        if (threadIdx.x == 0) dD[h] = (float)sd;
    }
}

/* ---- host: plan and workspace ---------------------------------------------------------- */

typedef struct bw_plan {
    int64_t L, nch, BT, Vp;
    int norm, vt, vsc;
    size_t off_first, off_G, off_a, off_Q, off_K, off_V, off_dO, off_S, off_dS, off_dQ, off_dK,
        off_dKi, off_dV, off_bt, off_Dc, off_lg, bytes;
} bw_plan;

static size_t bw_align(size_t n) { return seqk__align_up(n, BW_WS_ALIGN); }

static bw_plan bw_make_plan(const seqk__lin *P)
{
    bw_plan pl;
    memset(&pl, 0, sizeof pl);
    pl.L = seqk__lin_chunk(SEQK_BACKEND_CUDA, SEQK_CHUNKED_LINEAR_STATE, P->chunk, P->K, P->V);
    pl.norm = (P->flags & SEQK__LIN_NORMALIZE) != 0;
    pl.vsc = P->v_scale != NULL;
    pl.vt = pl.norm || pl.vsc;
    pl.Vp = P->V + pl.norm;
    pl.BT = P->B * P->T;
    pl.nch = seqk__count_chunks(P->cu, P->N, P->B, P->T, pl.L);
    const size_t f = sizeof(float);
    const size_t BT = (size_t)pl.BT, H = (size_t)P->H, nch = (size_t)pl.nch;
    const size_t KVp = (size_t)P->K * (size_t)pl.Vp;
    size_t off = 0;
#define BW_REGION(name, bytes) (pl.name = off, off += bw_align(bytes))
    BW_REGION(off_first, (size_t)(P->N + 1) * sizeof(int32_t));
    BW_REGION(off_G, BT * H * sizeof(double));
    BW_REGION(off_a, nch * H * f);
    BW_REGION(off_Q, BT * (size_t)P->Hqk * (size_t)P->K * f);
    BW_REGION(off_K, BT * (size_t)P->Hqk * (size_t)P->K * f);
    /* Vt and dVt are reserved whether or not P->v_scale is set: callers size
     * the workspace before they point v_scale at their dt (ssm/mamba2.c), so
     * the size must depend on sizes and flags only */
    BW_REGION(off_V, BT * H * (size_t)pl.Vp * f);
    BW_REGION(off_dO, pl.norm ? BT * H * (size_t)pl.Vp * f : 0);
    BW_REGION(off_S, nch * H * KVp * f);
    BW_REGION(off_dS, nch * H * KVp * f);
    BW_REGION(off_dQ, BT * H * (size_t)P->K * f);
    BW_REGION(off_dK, BT * H * (size_t)P->K * f);
    BW_REGION(off_dKi, BT * H * (size_t)P->K * f);
    BW_REGION(off_dV, BT * H * (size_t)P->V * f);
    BW_REGION(off_bt, BT * H * f);
    BW_REGION(off_Dc, nch * H * f);
    BW_REGION(off_lg, P->H > SEQK__LIN_LG_INLINE ? H * f : 0);
#undef BW_REGION
    pl.bytes = off;
    return pl;
}

/* The native bf16 / f16 path's plan: the native forward's regions
 * (seqk__cuda_lin_lp_workspace), then the backward's. Sizes and flags only. */
typedef struct bw_lp_plan {
    int64_t L, nch, nb;
    size_t off_dOa, off_Qw, off_wc, off_dPm, off_dPr, off_dS, off_dSb, off_diag, off_gsum, off_dQp, off_dQs,
        off_dKp, off_dKs, off_dVf, off_bt, off_Dc, bytes;
} bw_lp_plan;

static bw_lp_plan bw_make_lp_plan(const seqk__lin *P)
{
    bw_lp_plan pl;
    memset(&pl, 0, sizeof pl);
    pl.L = seqk__lin_chunk(SEQK_BACKEND_CUDA, SEQK_CHUNKED_LINEAR_STATE, P->chunk, P->K, P->V);
    pl.nch = seqk__count_chunks(P->cu, P->N, P->B, P->T, pl.L);
    pl.nb = pl.nch * P->H;
    const size_t f = sizeof(float), es = 2, rows = (size_t)(pl.nb * pl.L), L = (size_t)pl.L;
    const size_t K = (size_t)P->K, V = (size_t)P->V, nb = (size_t)pl.nb;
    size_t off = seqk__cuda_lin_lp_workspace(P);
#define BW_REGION(name, bytes) (pl.name = off, off += bw_align(bytes))
    BW_REGION(off_dOa, rows * V * es);
    BW_REGION(off_Qw, rows * K * es);
    BW_REGION(off_wc, nb * f);
    BW_REGION(off_dPm, rows * L * es);
    BW_REGION(off_dPr, rows * L * f);
    BW_REGION(off_dS, nb * K * V * f);
    BW_REGION(off_dSb, nb * K * V * es);
    BW_REGION(off_diag, rows * f);
    BW_REGION(off_gsum, rows * f);
    BW_REGION(off_dQp, rows * K * f);
    BW_REGION(off_dQs, rows * K * f);
    BW_REGION(off_dKp, rows * K * f);
    BW_REGION(off_dKs, rows * K * f);
    BW_REGION(off_dVf, rows * V * f);
    BW_REGION(off_bt, (size_t)(P->B * P->T * P->H) * f);
    BW_REGION(off_Dc, nb * f);
#undef BW_REGION
    pl.bytes = off;
    return pl;
}

extern "C" size_t seqk__cuda_lin_backward_workspace(const seqk__lin *P)
{
    if (P->dtype != SEQK_DTYPE_F32) return bw_make_lp_plan(P).bytes;
    return bw_make_plan(P).bytes;
}

static bw_tmat bw_tm(const float *p, int64_t ld, int64_t hs, int grp)
{
    bw_tmat m;
    m.p = p, m.ld = ld, m.hs = hs, m.grp = grp;
    return m;
}

static seqk_status bw_launch_mix(const char *fn, const bw_args &a, const bw_mix &mx,
                                 cudaStream_t stream, int64_t nch)
{
    const int tilesM = (a.map.L + BW_TILE - 1) / BW_TILE, tilesZ = (mx.DZ + BW_TILE - 1) / BW_TILE;
    SEQK__GRID_OR_FAIL(g, nch * a.H * tilesM * tilesZ);
    bw_mix_kernel<<<g, BW_THREADS, 0, stream>>>(a, mx, tilesM, tilesZ);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    return SEQK_SUCCESS;
}

static seqk_status bw_launch_xty(const char *fn, const bw_args &a, bw_tmat A, bw_tmat Z, int upper,
                                 float *out, cudaStream_t stream, int64_t nch)
{
    const int tilesA = (a.K + BW_TILE - 1) / BW_TILE, tilesZ = (a.Vp + BW_TILE - 1) / BW_TILE;
    SEQK__GRID_OR_FAIL(g, nch * a.H * tilesA * tilesZ);
    bw_xty_kernel<<<g, BW_THREADS, 0, stream>>>(a, A, Z, upper, out, tilesA, tilesZ);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    return SEQK_SUCCESS;
}

/* The native bf16 / f16 backward (see "Reduced precision" above); ws holds
 * bw_make_lp_plan(P).bytes. */
static seqk_status bw_launch_lowp(const char *fn, seqk_context *ctx, const seqk__lin *P,
                                  const seqk__lin_grad *Gr, const int32_t *cu_device, char *ws,
                                  cudaStream_t stream)
{
    const bw_lp_plan pl = bw_make_lp_plan(P);
    /* the forward's stages (0) to (6): no outputs */
    seqk__lin Pf = *P;
    Pf.o = NULL, Pf.s_out = NULL, Pf.z_out = NULL;
    seqk__lin_lp lp;
    SEQK__STATUS_TRY(seqk__cuda_lin_lp_states(fn, ctx, &Pf, cu_device, ws, &lp));
    const int64_t nch = pl.nch, H = P->H, L = pl.L, K = P->K, V = P->V, nb = pl.nb;
    const int64_t nrows = nb * L;
    const seqk_dtype dt = P->dtype;

    bw_lp_args p;
    memset(&p, 0, sizeof p);
    bw_args &a = p.a;
    a.map = lp.map;
    a.KV = a.KVp = K * V;
    a.H = (int)H, a.Hqk = (int)P->Hqk, a.hgrp = (int)(P->H / P->Hqk);
    a.K = (int)K, a.V = a.Vp = (int)V;
    a.scale = P->scale;
    a.elu = (P->flags & SEQK__LIN_ELU1) != 0;
    a.decay = P->g != NULL || P->log_gamma != NULL;
    a.v_scale = P->v_scale;
    a.ds_out = Gr->ds_out;
    a.dv_scale = P->v_scale ? Gr->dv_scale : NULL;
    a.dld = Gr->dlogdecay;
    a.ds_in = Gr->ds_in;
    a.Gc = lp.Gc, a.acoef = lp.acoef, a.S = lp.states;
    a.dS = (float *)(ws + pl.off_dS);
    a.btb = (float *)(ws + pl.off_bt);
    a.Dc = (float *)(ws + pl.off_Dc);
    p.bf16 = dt == SEQK_DTYPE_BF16;
    p.q = (const uint16_t *)P->q, p.k = (const uint16_t *)P->k;
    p.v = (const uint16_t *)P->v, p.dout = (const uint16_t *)Gr->dout;
    p.dq = (uint16_t *)Gr->dq, p.dk = (uint16_t *)Gr->dk, p.dv = (uint16_t *)Gr->dv;
    p.skip = Gr->skip, p.dskip = Gr->dskip_tok;
    p.dOa = (uint16_t *)(ws + pl.off_dOa), p.dPm = (uint16_t *)(ws + pl.off_dPm);
    p.Qw = (uint16_t *)(ws + pl.off_Qw), p.wcoef = (float *)(ws + pl.off_wc);
    p.dPr = (float *)(ws + pl.off_dPr), p.E = lp.Sc;
    p.diag = (float *)(ws + pl.off_diag), p.gsum = (float *)(ws + pl.off_gsum);
    p.dQp = (float *)(ws + pl.off_dQp), p.dQs = (float *)(ws + pl.off_dQs);
    p.dKp = (float *)(ws + pl.off_dKp), p.dKs = (float *)(ws + pl.off_dKs);
    p.dVf = (float *)(ws + pl.off_dVf);
    uint16_t *dSb = (uint16_t *)(ws + pl.off_dSb);

    const int eblocks = (int)((a.KVp + BW_THREADS - 1) / BW_THREADS);
    SEQK__GRID_OR_FAIL(gscan, P->N * H * eblocks);
    if (nch == 0) { /* no tokens: ds_in = ds_out */
        bw_state_scan_kernel<<<gscan, BW_THREADS, 0, stream>>>(a, eblocks, 1);
        SEQK_CUDA_CHECK_LAUNCH(fn);
        return SEQK_SUCCESS;
    }
    SEQK__GRID_OR_FAIL(gr, (nrows + BW_WARPS - 1) / BW_WARPS);
    bw_lp_pack_kernel<<<gr, BW_THREADS, 0, stream>>>(p, nrows);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    /* W = Qg^T dO = exp(G_0) Qw^T dO [K, V], then dSn, the gradient of the
     * state after each chunk (reverse scan, which applies exp(G_0); ds_in) */
    SEQK__STATUS_TRY(seqk__cuda_gemm(fn, ctx, dt, 1, 0, K, V, L, 1.0f, p.Qw, K, L * K, p.dOa, V,
                                     L * V, 0.0f, a.dS, V, K * V, nb));
    a.wcoef = p.wcoef;
    bw_state_scan_kernel<<<gscan, BW_THREADS, 0, stream>>>(a, eblocks, 1);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    if (a.dld) {
        SEQK__GRID_OR_FAIL(gd, nb);
        bw_dterm_kernel<<<gd, BW_THREADS, 0, stream>>>(a);
        SEQK_CUDA_CHECK_LAUNCH(fn);
    }
    SEQK__STATUS_TRY(seqk__cuda_convert(fn, ctx, dt, 0, a.dS, dSb, nb * K * V));
    /* dP = dO V~^T [L, L]; the mask, E and the diagonal */
    SEQK__STATUS_TRY(seqk__cuda_gemm(fn, ctx, dt, 0, 1, L, L, V, 1.0f, p.dOa, V, L * V, lp.Va, V,
                                     L * V, 0.0f, p.dPr, L, L * L, nb));
    bw_lp_mask_kernel<<<gr, BW_THREADS, 0, stream>>>(p, nrows);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    if (a.dld) {
        bw_lp_gsum_kernel<<<gr, BW_THREADS, 0, stream>>>(p, nrows);
        SEQK_CUDA_CHECK_LAUNCH(fn);
    }
    /* dV' = Kd dSn + Pm^T dO [L, V] */
    SEQK__STATUS_TRY(seqk__cuda_gemm(fn, ctx, dt, 0, 0, L, V, K, 1.0f, lp.Kd, K, L * K, dSb, V,
                                     K * V, 0.0f, p.dVf, V, L * V, nb));
    SEQK__STATUS_TRY(seqk__cuda_gemm(fn, ctx, dt, 1, 0, L, V, L, 1.0f, lp.Pm, L, L * L, p.dOa, V,
                                     L * V, 1.0f, p.dVf, V, L * V, nb));
    /* dQ~'s parts dO S0^T and dPm K~, dK~'s V~ dSn^T and scale dPm^T Qa [L, K] */
    SEQK__STATUS_TRY(seqk__cuda_gemm(fn, ctx, dt, 0, 1, L, K, V, 1.0f, p.dOa, V, L * V, lp.S0b, V,
                                     K * V, 0.0f, p.dQs, K, L * K, nb));
    SEQK__STATUS_TRY(seqk__cuda_gemm(fn, ctx, dt, 0, 0, L, K, L, 1.0f, p.dPm, L, L * L, lp.Ka, K,
                                     L * K, 0.0f, p.dQp, K, L * K, nb));
    SEQK__STATUS_TRY(seqk__cuda_gemm(fn, ctx, dt, 0, 1, L, K, V, 1.0f, lp.Va, V, L * V, dSb, V,
                                     K * V, 0.0f, p.dKs, K, L * K, nb));
    SEQK__STATUS_TRY(seqk__cuda_gemm(fn, ctx, dt, 1, 0, L, K, L, a.scale, p.dPm, L, L * L, lp.Qa, K,
                                     L * K, 0.0f, p.dKp, K, L * K, nb));
    const int64_t qk_items = nch * L * P->Hqk;
    SEQK__GRID_OR_FAIL(gq, (qk_items + BW_WARPS - 1) / BW_WARPS);
    bw_lp_finish_qk_kernel<<<gq, BW_THREADS, 0, stream>>>(p, qk_items);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    bw_lp_finish_v_kernel<<<gr, BW_THREADS, 0, stream>>>(p, nrows);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    if (a.dld) {
        SEQK__GRID_OR_FAIL(gl, (nb + BW_WARPS - 1) / BW_WARPS);
        bw_ld_rev_kernel<<<gl, BW_THREADS, 0, stream>>>(a, nb);
        SEQK_CUDA_CHECK_LAUNCH(fn);
        bw_ld_fwd_kernel<<<gl, BW_THREADS, 0, stream>>>(a, nb);
        SEQK_CUDA_CHECK_LAUNCH(fn);
    }
    return SEQK_SUCCESS;
}

extern "C" seqk_status seqk__cuda_lin_backward(seqk_context *ctx, const seqk__lin *P,
                                              const seqk__lin_grad *Gr, const int32_t *cu_device)
{
    static const char fn[] = "seqk (CUDA linear-state backward)";
    SEQK_CUDA_TRY(fn, cudaSetDevice(ctx->device));
    cudaStream_t stream = seqk__stream(ctx);
    if (P->dtype != SEQK_DTYPE_F32) {
        if (P->flags & SEQK__LIN_NORMALIZE)
            return seqk__fail(SEQK_ERROR_INTERNAL, "%s: %s with the normaliser in the native path",
                              fn, seqk_dtype_string(P->dtype));
        /* (this form, st then &base with pl.bytes, is the one tools/cuda_emu poisons) */
        const bw_lp_plan pl = bw_make_lp_plan(P);
        void *base = NULL;
        const seqk_status st = seqk__workspace(fn, ctx, P->ws_offset + pl.bytes, &base);
        if (st) return st;
        return bw_launch_lowp(fn, ctx, P, Gr, cu_device, (char *)base + P->ws_offset, stream);
    }
    const bw_plan pl = bw_make_plan(P);
    char *ws = NULL;
    {
        /* (this form, st then &base, is the one tools/cuda_emu poisons) */
        void *base = NULL;
        const seqk_status st = seqk__workspace(fn, ctx, P->ws_offset + pl.bytes, &base);
        if (st) return st;
        ws = (char *)base + P->ws_offset;
    }
    const int64_t nch = pl.nch, BT = pl.BT, H = P->H;

    bw_args a;
    memset(&a, 0, sizeof a);
    a.map = seqk__chunks_of(P->T, P->N, pl.L, cu_device);
    a.KV = P->K * P->V;
    a.KVp = P->K * pl.Vp;
    a.H = (int)P->H;
    a.Hqk = (int)P->Hqk;
    a.hgrp = (int)(P->H / P->Hqk);
    a.K = (int)P->K;
    a.V = (int)P->V;
    a.Vp = (int)pl.Vp;
    a.scale = P->scale;
    a.norm = pl.norm;
    a.elu = (P->flags & SEQK__LIN_ELU1) != 0;
    a.decay = P->g != NULL || P->log_gamma != NULL;
    a.q = P->q, a.k = P->k, a.v = P->v, a.v_scale = P->v_scale;
    a.s_in = P->s_in;
    a.z_in = a.norm ? P->z_in : NULL;
    a.dout = Gr->dout, a.ds_out = Gr->ds_out;
    a.dz_out = a.norm ? Gr->dz_out : NULL;
    a.dq = Gr->dq, a.dk = Gr->dk, a.dv = Gr->dv;
    a.dv_scale = P->v_scale ? Gr->dv_scale : NULL;
    a.dld = Gr->dlogdecay;
    a.ds_in = Gr->ds_in;
    a.dz_in = a.norm ? Gr->dz_in : NULL;
    a.Gc = (double *)(ws + pl.off_G);
    a.acoef = (float *)(ws + pl.off_a);
    a.Qt = (float *)(ws + pl.off_Q);
    a.Kt = (float *)(ws + pl.off_K);
    a.Vt = pl.vt ? (float *)(ws + pl.off_V) : NULL;
    a.dOp = pl.norm ? (float *)(ws + pl.off_dO) : NULL;
    a.S = (float *)(ws + pl.off_S);
    a.dS = (float *)(ws + pl.off_dS);
    a.dQh = (float *)(ws + pl.off_dQ);
    a.dKh = (float *)(ws + pl.off_dK);
    a.dKi = (float *)(ws + pl.off_dKi);
    a.dVt = pl.vsc ? (float *)(ws + pl.off_dV) : NULL;
    a.btb = (float *)(ws + pl.off_bt);
    a.Dc = (float *)(ws + pl.off_Dc);
    SEQK__STATUS_TRY(seqk__lin_gates_of(fn, P, (float *)(ws + pl.off_lg), stream, &a.gates));
    if (a.map.cu) SEQK__STATUS_TRY(seqk__chunks_build_first(fn, &a.map,
                     (int32_t *)(ws + pl.off_first), stream));

    const int eblocks = (int)((a.KVp + BW_THREADS - 1) / BW_THREADS);
    SEQK__GRID_OR_FAIL(gscan, P->N * H * eblocks);
    if (nch == 0) { /* no tokens: ds_in = ds_out, dz_in = dz_out */
        bw_state_scan_kernel<<<gscan, BW_THREADS, 0, stream>>>(a, eblocks, 1);
        SEQK_CUDA_CHECK_LAUNCH(fn);
        return SEQK_SUCCESS;
    }

    /* operands */
    const int64_t ldqk = P->Hqk * P->K;
    const bw_tmat Qm = bw_tm(a.Qt, ldqk, a.K, a.hgrp), Km = bw_tm(a.Kt, ldqk, a.K, a.hgrp);
    const bw_tmat Vm = pl.vt ? bw_tm(a.Vt, H * pl.Vp, pl.Vp, 1) : bw_tm(a.v, H * a.V, a.V, 1);
    const bw_tmat dOm = pl.norm ? bw_tm(a.dOp, H * pl.Vp, pl.Vp, 1) : bw_tm(a.dout, H * a.V, a.V, 1);
    a.Qm = Qm, a.Km = Km, a.Vm = Vm, a.dOm = dOm;

    if (a.decay) {
        SEQK__GRID_OR_FAIL(g0, (nch * H + BW_WARPS - 1) / BW_WARPS);
        bw_gates_kernel<<<g0, BW_THREADS, 0, stream>>>(a, nch * H);
        SEQK_CUDA_CHECK_LAUNCH(fn);
    }
    const int64_t prep_n = BT * (P->Hqk * P->K > H * pl.Vp ? P->Hqk * P->K : H * pl.Vp);
    bw_prep_kernel<<<seqk__elem_grid(prep_n, BW_THREADS), BW_THREADS, 0, stream>>>(a, BT);
    SEQK_CUDA_CHECK_LAUNCH(fn);

    /* forward: local states, then the state before each chunk */
    SEQK__STATUS_TRY(bw_launch_xty(fn, a, Km, Vm, 1, a.S, stream, nch));
    bw_state_scan_kernel<<<gscan, BW_THREADS, 0, stream>>>(a, eblocks, 0);
    SEQK_CUDA_CHECK_LAUNCH(fn);

    bw_mix mx;
    if (pl.norm) { /* O' = [num | den], then dO' in place */
        memset(&mx, 0, sizeof mx);
        mx.A = Qm, mx.B = Km, mx.Z = Vm, mx.DA = a.K, mx.DZ = a.Vp;
        mx.st = a.S, mx.st_t = 0, mx.upper = 0, mx.parts = 3;
        mx.out = a.dOp, mx.out_ld = H * pl.Vp, mx.out_hs = pl.Vp, mx.out_cols = a.Vp;
        SEQK__STATUS_TRY(bw_launch_mix(fn, a, mx, stream, nch));
        SEQK__GRID_OR_FAIL(gn, (BT * H + BW_WARPS - 1) / BW_WARPS);
        bw_norm_kernel<<<gn, BW_THREADS, 0, stream>>>(a, BT * H);
        SEQK_CUDA_CHECK_LAUNCH(fn);
    }

    /* W = (diag(exp(G)) Q~)^T dO', then dS after each chunk (reverse scan) */
    SEQK__STATUS_TRY(bw_launch_xty(fn, a, Qm, dOm, 0, a.dS, stream, nch));
    bw_state_scan_kernel<<<gscan, BW_THREADS, 0, stream>>>(a, eblocks, 1);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    if (a.dld) {
        SEQK__GRID_OR_FAIL(gd, nch * H);
        bw_dterm_kernel<<<gd, BW_THREADS, 0, stream>>>(a);
        SEQK_CUDA_CHECK_LAUNCH(fn);
    }

    /* dV' (first V columns) */
    memset(&mx, 0, sizeof mx);
    mx.A = Km, mx.B = Qm, mx.Z = dOm, mx.DA = a.K, mx.DZ = a.Vp;
    mx.st = a.dS, mx.st_t = 0, mx.upper = 1, mx.parts = 3;
    mx.out = pl.vsc ? a.dVt : a.dv, mx.out_ld = H * a.V, mx.out_hs = a.V, mx.out_cols = a.V;
    SEQK__STATUS_TRY(bw_launch_mix(fn, a, mx, stream, nch));
    /* dQ~ per head without the diagonal pairs (the finish adds them) */
    memset(&mx, 0, sizeof mx);
    mx.A = dOm, mx.B = Vm, mx.Z = Km, mx.DA = a.Vp, mx.DZ = a.K;
    mx.st = a.S, mx.st_t = 1, mx.upper = 0, mx.strict = 1, mx.parts = 3;
    mx.out = a.dQh, mx.out_ld = H * a.K, mx.out_hs = a.K, mx.out_cols = a.K;
    SEQK__STATUS_TRY(bw_launch_mix(fn, a, mx, stream, nch));
    /* dK~ per head: the strict pairs into dKh, the state term into dKi (the
     * gate gradient needs them apart) */
    memset(&mx, 0, sizeof mx);
    mx.A = Vm, mx.B = dOm, mx.Z = Qm, mx.DA = a.Vp, mx.DZ = a.K;
    mx.st = a.dS, mx.st_t = 1, mx.upper = 1, mx.strict = 1, mx.parts = 1;
    mx.out = a.dKh, mx.out_ld = H * a.K, mx.out_hs = a.K, mx.out_cols = a.K;
    SEQK__STATUS_TRY(bw_launch_mix(fn, a, mx, stream, nch));
    mx.parts = 2, mx.out = a.dKi;
    SEQK__STATUS_TRY(bw_launch_mix(fn, a, mx, stream, nch));

    SEQK__GRID_OR_FAIL(gq, (BT * P->Hqk + BW_WARPS - 1) / BW_WARPS);
    bw_finish_qk_kernel<<<gq, BW_THREADS, 0, stream>>>(a, BT * P->Hqk);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    if (pl.vsc) {
        SEQK__GRID_OR_FAIL(gv, (BT * H + BW_WARPS - 1) / BW_WARPS);
        bw_finish_v_kernel<<<gv, BW_THREADS, 0, stream>>>(a, BT * H);
        SEQK_CUDA_CHECK_LAUNCH(fn);
    }
    if (a.dld) {
        SEQK__GRID_OR_FAIL(gl, (nch * H + BW_WARPS - 1) / BW_WARPS);
        bw_ld_rev_kernel<<<gl, BW_THREADS, 0, stream>>>(a, nch * H);
        SEQK_CUDA_CHECK_LAUNCH(fn);
        bw_ld_fwd_kernel<<<gl, BW_THREADS, 0, stream>>>(a, nch * H);
        SEQK_CUDA_CHECK_LAUNCH(fn);
    }
    return SEQK_SUCCESS;
}

/* ---- Mamba2 epilogue ---------------------------------------------------------------- */

extern "C" seqk_status seqk__cuda_mamba2_backward_epilogue(
    seqk_context *ctx, int64_t rows, int64_t H, int64_t Pd, int softplus, const float *dt,
    const float *dt_bias, const float *A, const float *D, const float *x, const float *dy,
    const float *dskip, const float *dtp, const float *dld, const float *dvs, float *ddt,
    float *dA, float *dD, float *ddt_bias, float *dx)
{
    static const char fn[] = "seqk_mamba2_backward";
    if (H <= 0) return SEQK_SUCCESS;
    SEQK_CUDA_TRY(fn, cudaSetDevice(ctx->device));
    cudaStream_t stream = seqk__stream(ctx);
    if (rows > 0) {
        const float *Dx = dskip ? NULL : D; /* native: the engine added D dy to dx */
        bw_m2_elem_kernel<<<seqk__elem_grid(rows * H * (Dx ? Pd : 1), BW_THREADS), BW_THREADS, 0,
                            stream>>>(rows, H, Pd, softplus, dt, dt_bias, A, Dx, dy, dld, dvs,
                                      ddt, dx);
        SEQK_CUDA_CHECK_LAUNCH(fn);
    }
    /* with rows == 0 the sums are zeros (written by the reduction) */
    SEQK__GRID_OR_FAIL(g, H);
    bw_m2_reduce_kernel<<<g, BW_THREADS, 0, stream>>>(rows, H, Pd, softplus, dt, dt_bias, A, x,
                                                     dy, dskip, dtp, dld, dvs, dA, dD, ddt_bias);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    return SEQK_SUCCESS;
}
