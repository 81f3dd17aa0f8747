/*
 * gpu/linear_state.cu -- CUDA backend of the linear-state engine
 * (scan/linear_state.h, DESIGN 3.1): linear attention, RetNet retention,
 * gated retention, and through them Mamba2. First, plain version: fp32
 * everywhere, CUDA cores only, shared-memory tiles; the reference the tuned
 * kernels will be checked against.
 *
 * The math (per sequence n, head h; q/k head hq = h / (H / Hqk)):
 *
 *   log a_t = g[t,h] * (g_head ? g_head[h] : 1) + (log_gamma ? log_gamma[h] : 0)
 *   q~_t = scale phi(q_t),  k~_t = phi(k_t),  v~_t = (v_scale ? v_scale[t,h] : 1) v_t
 *   S_t  = a_t S_{t-1} + k~_t v~_t^T              (K x V, fp32)
 *   o_t  = S_t^T q~_t                              (V)
 *   with SEQK__LIN_NORMALIZE: z_t = a_t z_{t-1} + k~_t, o_t /= q~_t . z_t + eps
 *
 * phi is elu+1 with SEQK__LIN_ELU1, else the identity. S_{-1} = s_in (zeros
 * when NULL), z_{-1} = z_in (zeros when NULL); the final S, z go to s_out,
 * z_out when given (s_out may be s_in, z_out may be z_in). An empty sequence
 * copies s_in (or zeros) to s_out.
 *
 * Recurrent mode: one kernel.
 *   lin_recurrent_kernel<RPT, MAXT>  grid N*H*nvb blocks, nvb = ceil(V/32)
 *   (flattened, x = (n*H + h)*nvb + vb), block 32*W threads, W = ceil(K/RPT)
 *   warps (RPT = 8, 16, 32 rows per thread for K <= 64, 128, 1024). The block
 *   owns the K x 32 state slice S[:, 32vb .. 32vb+31] of (n, h): lane j = column, warp
 *   w holds rows w, w+W, .. (RPT of them) in registers. Tokens go in tiles of
 *   TT (<= 16, shared memory <= 48 KB): the block loads q~, k~ (TT x K) and
 *   v~ (TT x 32) and a_t with coalesced loads into shared memory; then per
 *   token each thread does S_ij = a S_ij + k~_i v~_j and its partial
 *   o_j = sum q~_i S_ij over its rows, partials go to shared memory [TT][W][32]
 *   and are summed over warps after one barrier. With the normaliser thread
 *   tid < K keeps z_tid and the den partials are reduced by warp shuffles;
 *   then the grid is N*H blocks and each walks the nvb column slices of its
 *   head in turn (z recomputed per slice), so that z_in is read before z_out
 *   (which may be the same array) is written.
 *   Reads s_in, z_in, q, k, v, v_scale, g, g_head; writes o, s_out, z_out.
 *   s_out == s_in is safe: each state element is read and written by the same
 *   thread.
 *
 * Parallel (chunked) mode: the three stages of scan/chunk.c. Chunk c of
 * sequence n holds its tokens [cL, cL + L) (Lc <= L in the last one); chunks
 * are numbered globally, sequence n owning [first[n], first[n+1]);
 * G_i = sum_{j<=i} log a_j inside the chunk:
 *
 *   U_c      = (diag(exp(G_Lc - G)) K~)^T V~        (and zU_c = (..)^T 1)
 *   S0_c     = a_{c-1} S0_{c-1} + U_{c-1},  a_c = exp(G_Lc),  S0_first = s_in
 *   O        = diag(exp(G)) Q~ S0  +  ((Q~ K~^T) .* D) V~,
 *              D_ij = exp(G_i - G_j) for j <= i, else 0 (never exponentiated)
 *   den_i    = exp(G_i) q~_i . z0  +  sum_{j<=i} ((Q~ K~^T) .* D)_ij
 *
 *   (0) seqk__chunk_first_kernel <<<1, 1024>>> (gpu/chunks.cuh), varlen only:
 *       first[n] = sum_{m<n} ceil(len_m / L) from the device cu_seqlens
 *       (block scan). Without varlen first[n] = n * ceil(T / L) is computed
 *       inline.
 *   (0) lin_chunk_gates_kernel  <<<ceil(nchunks*H / 8), 256>>>, when there is
 *       a decay: one warp per (chunk, head) scans the chunk's log-decays
 *       (warp shuffles, 32 tokens at a time) into Gc [B*T, H] (token-major,
 *       like g) and writes acoef[c, h] = exp(G_last).
 *   (1) lin_chunk_local_kernel  <<<nchunks*H*ceil(K/64)*ceil(V/64), 256>>>:
 *       block (c, h, K tile, V tile) computes a 64 x 64 tile of U_c = Kd^T V~
 *       (Kd = exp(G_last - G_i) k~_i), 4 x 4 outputs per thread, tokens in
 *       steps of 16 through shared memory (coalesced 64-float rows of k and
 *       v). The V-tile-0 blocks also write zU. Writes states[c, h, 0..E).
 *   (2) lin_chunk_scan_kernel   <<<N*H*ceil(E/256), 256>>>: one thread per
 *       state element e of (n, h) (E = K*V, + K with the normaliser) walks the
 *       sequence's chunks, replacing U_c in place by the state BEFORE chunk c
 *       (S0_c) and carrying S = a_c S + U_c; it starts from s_in / z_in and
 *       ends by writing s_out / z_out (read and write by the same thread, so
 *       s_out == s_in is safe; stage 3 reads only states, never s_in).
 *       Coalesced: consecutive threads, consecutive elements.
 *   (3) lin_chunk_output_kernel <<<nchunks*H*ceil(L/64)*ceil(V/64), 256>>>:
 *       block (c, h, 64-row tile of the chunk, 64-column tile of V): for each
 *       64-key tile at or left of the diagonal: P = Q~ K~^T over K in steps of
 *       16 (4 x 4 per thread), P .*= D in registers (exp only where j <= i),
 *       P to shared memory, row sums into den, O += P V~; then O += Qg S0 over
 *       K in steps of 16 and den += Qg . z0; O /= den + eps; writes o.
 *       42 KB static shared memory.
 *
 * Workspace (from P->ws_offset on, 256-byte aligned regions): parallel mode
 * first [N+1] int32, Gc [B*T*H] doubles, acoef [nchunks*H], states [nchunks*H*E]
 * floats (E = K*V (+K)); both modes: log_gamma [H] when H >
 * SEQK__LIN_LG_INLINE (up to that many heads travel by value in the kernel
 * arguments, so the host array may be freed as soon as the call returns;
 * more are copied by seqk__lin_gates_of, gpu/chunks.cuh, with
 * cudaMemcpyAsync + stream synchronize). The recurrent mode needs no
 * workspace otherwise (a decoding step allocates nothing).
 *
 * Reduced precision (seqk.h, "Dtypes"; issue #21 phase 2): the parallel mode
 * with P->dtype BF16 / F16 (q, k, v, o in that dtype; no normaliser; routed
 * here by seqk__lin_native from the _ex entry points) runs natively, the way
 * flash-linear-attention's chunk kernels do: operands formed in fp32 by
 * seqk's kernels and rounded to the dtype just before each product, the
 * products on tensor cores through cuBLAS (gpu/gemm.cu, fp32 accumulation),
 * fp32 states, masks, decays and the state walk in fp32 between them.
 * Chunk c, head h form one batch entry b = c H + h of every product; rows of
 * a short last chunk are zero-padded to L.
 *   (0) lin_chunk_gates_kernel (as above): Gc, acoef.
 *   (1) lin_lp_pack_kernel, one warp per packed row (b, i < L): rounded
 *       Qa = phi(q) (q~ without the scale), Ka = k~, Qg = exp(G_i) q~,
 *       Kd = exp(G_last - G_i) k~ ([nb, L, K]) and Va = v~ ([nb, L, V]);
 *       zeros past the chunk. (Without the feature map Qa, Ka are the
 *       inputs, exact; Va too without Mamba2's dt.)
 *   (2) gemm: Sc = scale Qa Ka^T ([nb, L, L], fp32; scale as alpha).
 *   (3) lin_lp_mask_kernel, one warp per packed row: Pm = round(Sc .* D)
 *       (exp(G_i - G_j) only for j <= i, else 0).
 *   (4) gemm: states = Kd^T Va ([nb, K, V], fp32): the local terms U_c.
 *   (5) lin_chunk_scan_kernel (as above): U_c -> S0_c in place, s_out.
 *   (6) seqk__cuda_convert (gpu/convert.cu): S0b = round(S0) ([nb, K, V]).
 *   (7) gemm: O = Pm Va; gemm: O += Qg S0b ([nb, L, V], fp32, in Sc's
 *       block: the scores are consumed by then).
 *   (8) lin_lp_write_kernel, one warp per packed row: o = round(O + skip[h]
 *       v) (the skip: Mamba2's D x, P->skip, else none).
 * Stages (0) to (6) are lp_states, which the native backward
 * (gpu/linear_state_backward.cu) runs too, through seqk__cuda_lin_lp_states
 * (gpu/chunks.cuh: seqk__lin_lp), to recompute the operands and states.
 * Workspace (make_lp_plan): the parallel mode's regions, then Qa, Ka, Qg,
 * Kd, Va, Pm, S0b in the dtype and [nb, L, max(L, V)] floats for Sc / O.
 * Error: each term of o has its operands rounded at most about three times
 * (exp(G) q~ or the masked score P; the state S0, itself built from rounded
 * exp(G_last - G) k~; v~ with Mamba2's dt), each within u, then o once: the
 * bound and the measurements are in seqk.h. f16's range: the masked scores
 * and the states are rounded to f16 too, so scores or state entries past
 * 65504 overflow to inf there (bf16 has fp32's range). A first version: the packing writes the
 * operands once more than a fused kernel would, and Q~ K~^T is computed for
 * the whole L x L block (the upper triangle is discarded by the mask).
 *
 * Mamba2 helpers: lin_mamba2_dt_kernel (dt' = softplus(dt + bias) or
 * dt + bias, [rows, H]) and lin_mamba2_skip_kernel (y += D x), grid-stride,
 * 256 threads.
 *
 * To tune (measure first): tensor cores (tf32 mma / wgmma) for the three
 * chunk products; one V tile per block covering V <= 128 so that P is not
 * recomputed per V tile; fusing stage 0 into 1 and 3; the chunk-state pass on
 * the scan primitive (gpu/scan.cu) for few long sequences; a fused driver
 * (chunks of one (n, h) in order, state in shared memory) when N*H fills the
 * machine, which avoids the nchunks*H*K*V state buffer; 16-byte loads; the
 * recurrent mode's per-token barriers (a warp per 32 columns with the whole
 * K in registers for small K); the 1024-thread recurrent variant (K > 256) is
 * capped at 64 registers and spills ~80 bytes (ptxas -v), a 512-thread,
 * 64-rows-per-thread variant may do better.
 */
/* core/internal.h and scan/linear_state.h are C headers without C++ guards:
 * include them first inside extern "C" so that seqk__fail, seqk__workspace and
 * seqk__lin_chunk get C linkage here (their include guards make the later
 * includes through common.cuh no-ops). */
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
    WS_ALIGN = 256,
    REC_COLS = 32,     /* state columns per recurrent block (one per lane) */
    REC_TT_MAX = 16,   /* tokens per recurrent tile */
    REC_SMEM_FLOATS = 12288, /* 48 KB */
    TILE = 64,         /* chunk-product tiles: 64 x 64 outputs per block */
    TSTEP = 16,        /* inner-dimension step of the tiles */
    TILE_THREADS = 256,
    MAX_CHUNK_L = 1024,
    SCAN_THREADS = 256,
    GATE_THREADS = 256,
    ELEM_THREADS = 256,
    LP_THREADS = 256   /* the native bf16 / f16 path's kernels: 8 warps */
};

/* Everything a kernel needs, by value. Sizes that index memory are used as
 * int64 in the index math. */
typedef struct lin_args {
    seqk__chunks map; /* sequences and chunks (L tokens each) */
    int64_t KV, E;  /* K*V; floats per chunk state (K*V, + K with the normaliser) */
    int H, Hqk, hgrp, K, V;
    float scale;
    int norm, elu, decay;
    const float *q, *k, *v, *v_scale;
    seqk__lin_gates gates; /* g, g_head, log_gamma */
    float *o;
    const float *s_in;
    float *s_out;
    const float *z_in;
    float *z_out;
    double *Gc;           /* [B*T, H] cumulative log-decay inside the chunk (decay only;
                             in double: see lin_chunk_gates_kernel) */
    float *acoef;         /* [nchunks, H] exp(G_last) */
    float *states;        /* [nchunks, H, E] */
} lin_args;

/* ---- recurrent mode ----------------------------------------------------------- */

template <int RPT, int MAXT>
static __global__ void __launch_bounds__(MAXT) lin_recurrent_kernel(lin_args a, int nvb, int TT)
{
    extern __shared__ float sm[];
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5, W = blockDim.x >> 5;
    const int K = a.K, V = a.V, H = a.H;
    /* with the normaliser one block walks every column block of its head in
     * turn, so that z_in is read before z_out (possibly the same array) is
     * written; otherwise one block per column block */
    const int per_head = a.norm ? 1 : nvb;
    const seqk__nhv blk = seqk__block_nhv(per_head, H);
    const int vb_first = blk.vb;
    const int vb_end = a.norm ? nvb : vb_first + 1;
    const int h = blk.h;
    const int64_t n = blk.n;
    const int hq = h / a.hgrp;
    const int64_t nh = blk.nh;

    float *qs = sm;                        /* [TT][K] scale phi(q) */
    float *ks = qs + TT * K;               /* [TT][K] phi(k) */
    float *vs = ks + TT * K;               /* [TT][32] v_scale v */
    float *as = vs + TT * REC_COLS;        /* [TT] a_t */
    float *red = as + TT;                  /* [TT][W][32] partial o */
    float *dred = red + TT * W * REC_COLS; /* [TT][W] partial den */

    int64_t row0, len;
    seqk__chunks_seq(a.map, n, &row0, &len);
    const float lgh = seqk__lin_head_lg(a.gates, h);
    float zr = 0.0f; /* z_tid (normaliser) */

    for (int vb = vb_first; vb < vb_end; vb++) {
        const int c0 = vb * REC_COLS, col = c0 + lane;
        const bool colok = col < V;
        float S[RPT];
#pragma unroll
        for (int r = 0; r < RPT; r++) {
            const int i = w + W * r;
            S[r] = (a.s_in && colok && i < K) ? a.s_in[nh * a.KV + (int64_t)i * V + col] : 0.0f;
        }
        zr = (a.norm && a.z_in && tid < K) ? a.z_in[nh * K + tid] : 0.0f;

        for (int64_t t0 = 0; t0 < len; t0 += TT) {
            const int nt = (int)(len - t0 < TT ? len - t0 : TT);
            /* load the tile: coalesced rows of q, k (K floats) and v (32 floats) */
            for (int idx = tid; idx < nt * K; idx += blockDim.x) {
                const int t = idx / K, i = idx - t * K;
                const int64_t r = row0 + t0 + t;
                const int64_t off = (r * a.Hqk + hq) * K + i;
                qs[idx] = a.scale * seqk__lin_phi(a.q[off], a.elu);
                ks[idx] = seqk__lin_phi(a.k[off], a.elu);
            }
            for (int idx = tid; idx < nt * REC_COLS; idx += blockDim.x) {
                const int t = idx / REC_COLS, j = idx - t * REC_COLS;
                const int64_t r = row0 + t0 + t;
                float x = 0.0f;
                if (c0 + j < V) {
                    x = a.v[(r * H + h) * V + c0 + j];
                    if (a.v_scale) x *= a.v_scale[r * H + h];
                }
                vs[idx] = x;
            }
            for (int t = tid; t < nt; t += blockDim.x)
                as[t] = a.decay ? expf(seqk__lin_logdecay(a.gates, H, row0 + t0 + t, h, lgh))
                                : 1.0f;
            __syncthreads();
            /* per token: S = a S + k v^T on the owned rows, partial o and den */
            for (int t = 0; t < nt; t++) {
                const float at = as[t], vj = vs[t * REC_COLS + lane];
                const float *qt = qs + t * K, *kt = ks + t * K;
                float acc = 0.0f;
#pragma unroll
                for (int r = 0; r < RPT; r++) {
                    const int i = w + W * r;
                    if (i < K) {
                        S[r] = fmaf(kt[i], vj, at * S[r]);
                        acc = fmaf(qt[i], S[r], acc);
                    }
                }
                red[(t * W + w) * REC_COLS + lane] = acc;
                if (a.norm) {
                    float d = 0.0f;
                    if (tid < K) {
                        zr = at * zr + kt[tid];
                        d = qt[tid] * zr;
                    }
                    d = seqk__warp_sum(d);
                    if (lane == 0) dred[t * W + w] = d;
                }
            }
            __syncthreads();
            /* o = sum over warps (/ den) */
            for (int idx = tid; idx < nt * REC_COLS; idx += blockDim.x) {
                const int t = idx / REC_COLS, j = idx - t * REC_COLS;
                float s = 0.0f;
                for (int ww = 0; ww < W; ww++) s += red[(t * W + ww) * REC_COLS + j];
                if (a.norm) {
                    float d = 0.0f;
                    for (int ww = 0; ww < W; ww++) d += dred[t * W + ww];
                    s *= 1.0f / (d + SEQK__LIN_EPS);
                }
                if (c0 + j < V) a.o[((row0 + t0 + t) * H + h) * V + c0 + j] = s;
            }
            /* no barrier needed here: the next tile's (or pass's) loads write
             * qs/ks/vs/as, whose readers all passed the barrier above, and
             * red/dred are written again only after the next first barrier */
        }
#pragma unroll
        for (int r = 0; r < RPT; r++) {
            const int i = w + W * r;
            if (a.s_out && colok && i < K) a.s_out[nh * a.KV + (int64_t)i * V + col] = S[r];
        }
    }
    if (a.norm && a.z_out && tid < K) a.z_out[nh * K + tid] = zr;
}

/* ---- parallel mode, stage 0: chunk table and cumulative decays ---------------- */

/* One warp per (chunk, head): Gc = inclusive scan of log a over the chunk,
 * in double: a float G_i - G_j loses an ulp of |G| (|G| ~ 1000 under strong
 * decay: 6e-5 in the exponent), which the decays exp(G_i - G_j) would carry
 * as relative error; in double the difference is exact to fp32 (the CPU's
 * seqk__gates_cumsum keeps it as two floats for the same reason). */
static __global__ void __launch_bounds__(GATE_THREADS)
    lin_chunk_gates_kernel(lin_args a, int64_t nwork)
{
    const int lane = threadIdx.x & 31;
    int64_t c, r0;
    int h, Lc;
    if (!seqk__chunk_head_warp(a.map, a.H, GATE_THREADS / 32, nwork, &c, &h, &r0, &Lc)) return;
    const float lgh = seqk__lin_head_lg(a.gates, h);
    double carry = 0.0;
    for (int i0 = 0; i0 < Lc; i0 += 32) {
        const int i = i0 + lane;
        double x = i < Lc ? (double)seqk__lin_logdecay(a.gates, a.H, r0 + i, h, lgh) : 0.0;
        x = seqk__warp_incl_scan_d(x) + carry;
        if (i < Lc) a.Gc[(r0 + i) * a.H + h] = x;
        /* the last valid lane's value, so that acoef = exp(Gc[last]) exactly */
        const int last = Lc - 1 - i0 < 31 ? Lc - 1 - i0 : 31;
        carry = __shfl_sync(SEQK__FULL_MASK, x, last);
    }
    if (lane == 0) a.acoef[c * a.H + h] = expf((float)carry);
}

/* ---- parallel mode, stage 1: local states U = Kd^T V~ -------------------------- */

static __global__ void __launch_bounds__(TILE_THREADS)
    lin_chunk_local_kernel(lin_args a, int tilesK, int tilesV)
{
    __shared__ float Ks[TSTEP][TILE]; /* Kd rows of TSTEP tokens, K tile */
    __shared__ float Vs[TSTEP][TILE]; /* V~ rows, V tile */
    __shared__ float fk[MAX_CHUNK_L]; /* exp(G_last - G_i) */
    __shared__ float fv[MAX_CHUNK_L]; /* v_scale */
    const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    const int64_t id = blockIdx.x;
    const int tv = (int)(id % tilesV);
    const int tk = (int)((id / tilesV) % tilesK);
    const int64_t ch = id / ((int64_t)tilesV * tilesK);
    const int64_t c = ch / a.H;
    const int h = (int)(ch - c * a.H), hq = h / a.hgrp;
    const int K = a.K, V = a.V, H = a.H;
    const int k0 = tk * TILE, v0 = tv * TILE;
    int64_t r0;
    int Lc;
    seqk__chunk_rows(a.map, c, &r0, &Lc);
    const double glast = a.decay ? a.Gc[(r0 + Lc - 1) * H + h] : 0.0;
    for (int i = tid; i < Lc; i += TILE_THREADS) {
        const int64_t r = r0 + i;
        fk[i] = a.decay ? expf((float)(glast - a.Gc[r * H + h])) : 1.0f;
        fv[i] = a.v_scale ? a.v_scale[r * H + h] : 1.0f;
    }
    __syncthreads();
    float acc[4][4], zacc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    seqk__tile4_zero(acc);
    for (int i0 = 0; i0 < Lc; i0 += TSTEP) {
#pragma unroll
        for (int p = 0; p < TSTEP * TILE / TILE_THREADS; p++) {
            const int idx = tid + TILE_THREADS * p, ii = idx / TILE, cc = idx % TILE;
            const int i = i0 + ii;
            float kx = 0.0f, vx = 0.0f;
            if (i < Lc) {
                const int64_t r = r0 + i;
                if (k0 + cc < K)
                    kx = fk[i] * seqk__lin_phi(a.k[(r * a.Hqk + hq) * K + k0 + cc], a.elu);
                if (v0 + cc < V) vx = fv[i] * a.v[(r * H + h) * V + v0 + cc];
            }
            Ks[ii][cc] = kx;
            Vs[ii][cc] = vx;
        }
        __syncthreads();
#pragma unroll
        for (int ii = 0; ii < TSTEP; ii++) {
            seqk__tile4_step(acc, &Ks[ii][ty], 16, &Vs[ii][tx], 16);
#pragma unroll
            for (int m = 0; m < 4; m++) zacc[m] += Ks[ii][ty + 16 * m];
        }
        __syncthreads();
    }
    float *U = a.states + (c * H + h) * a.E;
#pragma unroll
    for (int m = 0; m < 4; m++) {
        const int kk = k0 + ty + 16 * m;
        if (kk >= K) continue;
#pragma unroll
        for (int b = 0; b < 4; b++) {
            const int vv = v0 + tx + 16 * b;
            if (vv < V) U[(int64_t)kk * V + vv] = acc[m][b];
        }
        if (a.norm && tv == 0 && tx == 0) U[a.KV + kk] = zacc[m];
    }
}

/* ---- parallel mode, stage 2: chunk states --------------------------------------- */

static __global__ void __launch_bounds__(SCAN_THREADS)
    lin_chunk_scan_kernel(lin_args a, int eblocks)
{
    const int64_t id = blockIdx.x;
    const int64_t nh = id / eblocks;
    const int64_t e = (id - nh * eblocks) * SCAN_THREADS + threadIdx.x;
    if (e >= a.E) return;
    const int64_t n = nh / a.H;
    const int h = (int)(nh - n * a.H);
    const bool in_s = e < a.KV;
    float carry = 0.0f;
    if (in_s) {
        if (a.s_in) carry = a.s_in[nh * a.KV + e];
    } else if (a.z_in) {
        carry = a.z_in[nh * a.K + (e - a.KV)];
    }
    int64_t cb, ce;
    seqk__chunks_range(a.map, n, &cb, &ce);
    const int64_t HE = (int64_t)a.H * a.E;
    float *st = a.states + (int64_t)h * a.E + e; /* + c * HE */
    int64_t c = cb;
    for (; c + 4 <= ce; c += 4) { /* four loads in flight before the dependent FMAs */
        float u[4], cf[4];
#pragma unroll
        for (int j = 0; j < 4; j++) {
            u[j] = st[(c + j) * HE];
            cf[j] = a.decay ? a.acoef[(c + j) * a.H + h] : 1.0f;
        }
#pragma unroll
        for (int j = 0; j < 4; j++) {
            st[(c + j) * HE] = carry;
            carry = fmaf(cf[j], carry, u[j]);
        }
    }
    carry = seqk__lin_carry(st, HE, a.acoef, a.decay, a.H, h, c, ce, carry);
    if (in_s) {
        if (a.s_out) a.s_out[nh * a.KV + e] = carry;
    } else if (a.z_out) {
        a.z_out[nh * a.K + (e - a.KV)] = carry;
    }
}

/* ---- parallel mode, stage 3: outputs --------------------------------------------- */

static __global__ void __launch_bounds__(TILE_THREADS)
    lin_chunk_output_kernel(lin_args a, int tilesM, int tilesV)
{
    __shared__ float Qt[TSTEP][TILE + 1]; /* Q~ (then Qg) of the row tile, k-major */
    __shared__ float Kt[TSTEP][TILE + 1]; /* K~ of the key tile, k-major */
    __shared__ float Ps[TILE][TILE + 1];  /* (Q~ K~^T) .* D */
    __shared__ float Vt[TILE * TILE];     /* V~ [key][col]; then S0 [k][col] (TSTEP rows) */
    __shared__ double Gq[TILE], Gk[TILE];
    __shared__ float fvk[TILE], den[TILE], zs[TSTEP];
    const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    const int64_t id = blockIdx.x;
    const int tv = (int)(id % tilesV);
    const int tm = (int)((id / tilesV) % tilesM);
    const int64_t ch = id / ((int64_t)tilesV * tilesM);
    const int64_t c = ch / a.H;
    const int h = (int)(ch - c * a.H), hq = h / a.hgrp;
    const int K = a.K, V = a.V, H = a.H;
    int64_t r0;
    int Lc;
    seqk__chunk_rows(a.map, c, &r0, &Lc);
    const int m0 = tm * TILE, v0 = tv * TILE;
    if (m0 >= Lc) return; /* the whole block: a short last chunk */
    if (tid < TILE) {
        const int i = m0 + tid;
        Gq[tid] = (a.decay && i < Lc) ? a.Gc[(r0 + i) * H + h] : 0.0;
        den[tid] = 0.0f;
    }
    float acc[4][4];
    seqk__tile4_zero(acc);

    /* intra-chunk: key tiles at or left of the diagonal */
    const int jend = m0 + TILE < Lc ? m0 + TILE : Lc;
    for (int j0 = 0; j0 < jend; j0 += TILE) {
        if (tid < TILE) {
            const int j = j0 + tid;
            Gk[tid] = (a.decay && j < Lc) ? a.Gc[(r0 + j) * H + h] : 0.0;
            fvk[tid] = (a.v_scale && j < Lc) ? a.v_scale[(r0 + j) * H + h] : 1.0f;
        }
        float p[4][4];
        seqk__tile4_zero(p);
        for (int kk0 = 0; kk0 < K; kk0 += TSTEP) {
#pragma unroll
            for (int pp = 0; pp < TSTEP * TILE / TILE_THREADS; pp++) {
                const int idx = tid + TILE_THREADS * pp, t = idx / TSTEP, kc = idx % TSTEP;
                const int kk = kk0 + kc, i = m0 + t, j = j0 + t;
                float qx = 0.0f, kx = 0.0f;
                if (kk < K) {
                    if (i < Lc)
                        qx = a.scale * seqk__lin_phi(a.q[((r0 + i) * a.Hqk + hq) * K + kk], a.elu);
                    if (j < Lc) kx = seqk__lin_phi(a.k[((r0 + j) * a.Hqk + hq) * K + kk], a.elu);
                }
                Qt[kc][t] = qx;
                Kt[kc][t] = kx;
            }
            __syncthreads();
#pragma unroll
            for (int kc = 0; kc < TSTEP; kc++) seqk__tile4_step(p, &Qt[kc][ty], 16, &Kt[kc][tx], 16);
            __syncthreads();
        }
        /* decay mask: exp only on and below the diagonal */
#pragma unroll
        for (int m = 0; m < 4; m++) {
            const int li = ty + 16 * m, i = m0 + li;
#pragma unroll
            for (int b = 0; b < 4; b++) {
                const int lj = tx + 16 * b, j = j0 + lj;
                float x = 0.0f;
                if (j <= i && i < Lc) x = a.decay ? p[m][b] * expf((float)(Gq[li] - Gk[lj])) : p[m][b];
                Ps[li][lj] = x;
            }
        }
        /* V~ of the key tile */
#pragma unroll 4
        for (int pp = 0; pp < TILE * TILE / TILE_THREADS; pp++) {
            const int idx = tid + TILE_THREADS * pp, t = idx / TILE, cc = idx % TILE;
            const int j = j0 + t, vv = v0 + cc;
            Vt[idx] = (j < Lc && vv < V) ? fvk[t] * a.v[((r0 + j) * H + h) * V + vv] : 0.0f;
        }
        __syncthreads();
        if (a.norm && tid < TILE) {
            float s = 0.0f;
            for (int jj = 0; jj < TILE; jj++) s += Ps[tid][jj];
            den[tid] += s;
        }
        for (int jj = 0; jj < TILE; jj++)
            seqk__tile4_step(acc, &Ps[ty][jj], 16 * (TILE + 1), &Vt[jj * TILE + tx], 16);
        __syncthreads();
    }

    /* inter-chunk: O += Qg S0, den += Qg . z0 (S0 = the state before chunk c) */
    const float *S0 = a.states + (c * H + h) * a.E;
    for (int kk0 = 0; kk0 < K; kk0 += TSTEP) {
#pragma unroll
        for (int pp = 0; pp < TSTEP * TILE / TILE_THREADS; pp++) {
            const int idx = tid + TILE_THREADS * pp, t = idx / TSTEP, kc = idx % TSTEP;
            const int kk = kk0 + kc, i = m0 + t;
            float qx = 0.0f;
            if (kk < K && i < Lc) {
                qx = a.scale * seqk__lin_phi(a.q[((r0 + i) * a.Hqk + hq) * K + kk], a.elu);
                if (a.decay) qx *= expf((float)Gq[t]);
            }
            Qt[kc][t] = qx;
        }
#pragma unroll
        for (int pp = 0; pp < TSTEP * TILE / TILE_THREADS; pp++) {
            const int idx = tid + TILE_THREADS * pp, kc = idx / TILE, cc = idx % TILE;
            const int kk = kk0 + kc, vv = v0 + cc;
            Vt[idx] = (kk < K && vv < V) ? S0[(int64_t)kk * V + vv] : 0.0f;
        }
        if (a.norm && tid < TSTEP) zs[tid] = kk0 + tid < K ? S0[a.KV + kk0 + tid] : 0.0f;
        __syncthreads();
#pragma unroll
        for (int kc = 0; kc < TSTEP; kc++)
            seqk__tile4_step(acc, &Qt[kc][ty], 16, &Vt[kc * TILE + tx], 16);
        if (a.norm && tid < TILE) {
            float s = 0.0f;
#pragma unroll
            for (int kc = 0; kc < TSTEP; kc++) s = fmaf(Qt[kc][tid], zs[kc], s);
            den[tid] += s;
        }
        __syncthreads();
    }

    /* write O (/ den) */
#pragma unroll
    for (int m = 0; m < 4; m++) {
        const int li = ty + 16 * m, i = m0 + li;
        if (i >= Lc) continue;
        const float inv = a.norm ? 1.0f / (den[li] + SEQK__LIN_EPS) : 1.0f;
#pragma unroll
        for (int b = 0; b < 4; b++) {
            const int vv = v0 + tx + 16 * b;
            if (vv < V) a.o[((r0 + i) * H + h) * V + vv] = a.norm ? acc[m][b] * inv : acc[m][b];
        }
    }
}

/* ---- Mamba2 helpers ---------------------------------------------------------------- */

static __global__ void __launch_bounds__(ELEM_THREADS)
    lin_mamba2_dt_kernel(int64_t rows, int64_t H, const float *dt, const float *bias,
                         int softplus, float *out)
{
    const int64_t n = rows * H;
    for (int64_t i = (int64_t)blockIdx.x * ELEM_THREADS + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * ELEM_THREADS) {
        const float d = dt[i] + (bias ? bias[i % H] : 0.0f);
        out[i] = softplus ? seqk__dev_softplus(d) : d;
    }
}

static __global__ void __launch_bounds__(ELEM_THREADS)
    lin_mamba2_skip_kernel(int64_t rows, int64_t H, int64_t Pd, const float *D, const float *x,
                           float *y)
{
    const int64_t n = rows * H * Pd;
    for (int64_t i = (int64_t)blockIdx.x * ELEM_THREADS + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * ELEM_THREADS)
        y[i] += D[(i / Pd) % H] * x[i];
}

/* ---- parallel mode in bf16 / f16 (native; see "Reduced precision" above) ---------- */

/* The native path's arrays besides the engine's (a.q, a.k, a.v, a.o unused). */
typedef struct lin_lp_args {
    lin_args a;
    int bf16;                        /* 1: bf16, 0: f16 */
    const uint16_t *q, *k, *v;       /* the caller's q, k [B*T, Hqk, K], v [B*T, H, V] */
    uint16_t *o;                     /* [B*T, H, V] */
    const float *skip;               /* [H] or NULL: o += skip[h] v (Mamba2's D x) */
    uint16_t *Qa, *Ka, *Qg, *Kd;     /* [nchunks*H, L, K] phi(q), k~, exp(G) q~, exp(G_last - G) k~ */
    uint16_t *Va;                    /* [nchunks*H, L, V] v~ */
    uint16_t *Pm;                    /* [nchunks*H, L, L] (Q~ K~^T) .* D */
    uint16_t *S0b;                   /* [nchunks*H, K, V] the chunk states, rounded */
    float *Sc;                       /* [nchunks*H, L, L] Q~ K~^T; then O [nchunks*H, L, V] */
} lin_lp_args;

/* The packed row (b = c H + h, i) of warp w of the block; false past the end. */
static __device__ __forceinline__ bool lin_lp_row(const lin_lp_args &p, int64_t nrows, int64_t *b,
                                                  int *i, int64_t *c, int *h, int64_t *r0,
                                                  int *Lc)
{
    return seqk__chunk_row_warp(p.a.map, p.a.H, LP_THREADS / 32, nrows, b, i, c, h, r0, Lc);
}

/* One warp per packed row (chunk c, head h, row i < L): the rounded operands
 * of the four products, from fp32 values formed here (feature map, scale,
 * gates, v_scale); zeros for rows past the chunk's end. */
static __global__ void __launch_bounds__(LP_THREADS) lin_lp_pack_kernel(lin_lp_args p, int64_t nrows)
{
    int64_t b, c, r0;
    int i, h, Lc;
    if (!lin_lp_row(p, nrows, &b, &i, &c, &h, &r0, &Lc)) return;
    const lin_args &a = p.a;
    const int lane = threadIdx.x & 31, K = a.K, V = a.V, L = a.map.L;
    const int64_t qrow = (b * L + i) * (int64_t)K, vrow = (b * L + i) * (int64_t)V;
    const bool ok = i < Lc;
    const int64_t r = r0 + i;
    float fq = 0.0f, fk = 0.0f, fv = 0.0f;
    if (ok) {
        double gi = 0.0, gl = 0.0;
        if (a.decay) gi = a.Gc[r * a.H + h], gl = a.Gc[(r0 + Lc - 1) * a.H + h];
        fq = a.decay ? expf((float)gi) : 1.0f;
        fk = a.decay ? expf((float)(gl - gi)) : 1.0f;
        fv = a.v_scale ? a.v_scale[r * a.H + h] : 1.0f;
    }
    const int hq = h / a.hgrp;
    for (int kk = lane; kk < K; kk += 32) {
        float qx = 0.0f, kx = 0.0f;
        if (ok) {
            const int64_t off = (r * a.Hqk + hq) * K + kk;
            qx = seqk__lin_phi(seqk__dt_load(p.q, off, p.bf16), a.elu);
            kx = seqk__lin_phi(seqk__dt_load(p.k, off, p.bf16), a.elu);
        }
        /* Qa unscaled (exact without the feature map): the scores' product
         * takes scale as its alpha */
        p.Qa[qrow + kk] = seqk__dt_round(qx, p.bf16);
        p.Ka[qrow + kk] = seqk__dt_round(kx, p.bf16);
        p.Qg[qrow + kk] = seqk__dt_round(fq * a.scale * qx, p.bf16);
        p.Kd[qrow + kk] = seqk__dt_round(fk * kx, p.bf16);
    }
    for (int vv = lane; vv < V; vv += 32) {
        const float x = ok ? fv * seqk__dt_load(p.v, (r * a.H + h) * V + vv, p.bf16) : 0.0f;
        p.Va[vrow + vv] = seqk__dt_round(x, p.bf16);
    }
}

/* One warp per packed row (b, i): Pm[b, i, j] = (Q~ K~^T)_ij exp(G_i - G_j)
 * for j <= i < Lc (exp only there), else 0, rounded to the dtype. */
static __global__ void __launch_bounds__(LP_THREADS) lin_lp_mask_kernel(lin_lp_args p, int64_t nrows)
{
    int64_t b, c, r0;
    int i, h, Lc;
    if (!lin_lp_row(p, nrows, &b, &i, &c, &h, &r0, &Lc)) return;
    const lin_args &a = p.a;
    const int L = a.map.L;
    const double gi = (a.decay && i < Lc) ? a.Gc[(r0 + i) * a.H + h] : 0.0;
    const int64_t row = (b * L + i) * (int64_t)L;
    for (int j = threadIdx.x & 31; j < L; j += 32) {
        float x = 0.0f;
        if (j <= i && i < Lc) {
            x = p.Sc[row + j];
            if (a.decay) x *= expf((float)(gi - a.Gc[(r0 + j) * a.H + h]));
        }
        p.Pm[row + j] = seqk__dt_round(x, p.bf16);
    }
}


/* One warp per packed row: o = O (+ skip[h] v), rounded, for rows < Lc. */
static __global__ void __launch_bounds__(LP_THREADS) lin_lp_write_kernel(lin_lp_args p, int64_t nrows)
{
    int64_t b, c, r0;
    int i, h, Lc;
    if (!lin_lp_row(p, nrows, &b, &i, &c, &h, &r0, &Lc) || i >= Lc) return;
    const lin_args &a = p.a;
    const int lane = threadIdx.x & 31, V = a.V;
    const float *O = p.Sc + (b * a.map.L + i) * (int64_t)V;
    const int64_t orow = ((r0 + i) * a.H + h) * V;
    const float d = p.skip ? p.skip[h] : 0.0f;
    for (int vv = lane; vv < V; vv += 32) {
        float x = O[vv];
        if (p.skip) x = fmaf(d, seqk__dt_load(p.v, orow + vv, p.bf16), x);
        p.o[orow + vv] = seqk__dt_round(x, p.bf16);
    }
}

/* ---- host: plan and workspace ---------------------------------------------------------- */

typedef struct lin_plan {
    int64_t L, nchunks, E;
    size_t off_first, off_G, off_a, off_states, off_lg, bytes;
} lin_plan;

static size_t align_ws(size_t n) { return seqk__align_up(n, WS_ALIGN); }

static lin_plan make_plan(const seqk__lin *P, int mode)
{
    lin_plan pl;
    pl.L = seqk__lin_chunk(SEQK_BACKEND_CUDA, SEQK_CHUNKED_LINEAR_STATE, P->chunk, P->K, P->V);
    pl.E = P->K * P->V + ((P->flags & SEQK__LIN_NORMALIZE) ? P->K : 0);
    pl.nchunks = 0;
    size_t off = 0;
    pl.off_first = pl.off_G = pl.off_a = pl.off_states = 0;
    if (mode == SEQK_MODE_PARALLEL) {
        pl.nchunks = seqk__count_chunks(P->cu, P->N, P->B, P->T, pl.L);
        pl.off_first = off;
        off += align_ws((size_t)(P->N + 1) * sizeof(int32_t));
        pl.off_G = off;
        off += align_ws((size_t)(P->B * P->T * P->H) * sizeof(double));
        pl.off_a = off;
        off += align_ws((size_t)(pl.nchunks * P->H) * sizeof(float));
        pl.off_states = off;
        off += align_ws((size_t)(pl.nchunks * P->H) * (size_t)pl.E * sizeof(float));
    }
    pl.off_lg = off;
    if (P->H > SEQK__LIN_LG_INLINE) off += align_ws((size_t)P->H * sizeof(float));
    pl.bytes = off;
    return pl;
}

/* The native bf16 / f16 path's plan: the parallel mode's regions, then the
 * packed operands (dtype), the rounded states and the score / output block. */
typedef struct lin_lp_plan {
    lin_plan base;
    size_t off_Qa, off_Ka, off_Qg, off_Kd, off_Va, off_Pm, off_S0b, off_Sc, bytes;
} lin_lp_plan;

static lin_lp_plan make_lp_plan(const seqk__lin *P)
{
    lin_lp_plan pl;
    pl.base = make_plan(P, SEQK_MODE_PARALLEL);
    const size_t rows = (size_t)(pl.base.nchunks * P->H) * (size_t)pl.base.L; /* packed rows */
    const size_t L = (size_t)pl.base.L, K = (size_t)P->K, V = (size_t)P->V, es = 2;
    size_t off = pl.base.bytes;
    size_t *qk[4] = {&pl.off_Qa, &pl.off_Ka, &pl.off_Qg, &pl.off_Kd};
    for (int j = 0; j < 4; j++) *qk[j] = off, off += align_ws(rows * K * es);
    pl.off_Va = off, off += align_ws(rows * V * es);
    pl.off_Pm = off, off += align_ws(rows * L * es);
    pl.off_S0b = off, off += align_ws((size_t)(pl.base.nchunks * P->H) * K * V * es);
    pl.off_Sc = off, off += align_ws(rows * (L > V ? L : V) * sizeof(float));
    pl.bytes = off;
    return pl;
}

extern "C" size_t seqk__cuda_lin_workspace(const seqk__lin *P, int mode)
{
    if (P->dtype != SEQK_DTYPE_F32 && mode == SEQK_MODE_PARALLEL) return make_lp_plan(P).bytes;
    return make_plan(P, mode).bytes;
}

size_t seqk__cuda_lin_lp_workspace(const seqk__lin *P) { return make_lp_plan(P).bytes; }

static seqk_status launch_recurrent(const char *fn, const lin_args &a, cudaStream_t stream)
{
    const int K = a.K;
    int rpt, maxt;
    if (K <= 64) rpt = 8, maxt = 256;
    else if (K <= 128) rpt = 16, maxt = 256;
    else if (K <= 256) rpt = 32, maxt = 256;
    else rpt = 32, maxt = 1024;
    const int W = (K + rpt - 1) / rpt;
    const int per_token = 2 * K + REC_COLS + 1 + W * REC_COLS + W; /* floats of shared memory */
    int TT = REC_SMEM_FLOATS / per_token;
    if (TT > REC_TT_MAX) TT = REC_TT_MAX;
    if (TT < 1) TT = 1;
    const size_t smem = (size_t)TT * (size_t)per_token * sizeof(float);
    const int nvb = (a.V + REC_COLS - 1) / REC_COLS;
    SEQK__GRID_OR_FAIL(grid, a.map.N * a.H * (int64_t)(a.norm ? 1 : nvb));
    const unsigned threads = (unsigned)(32 * W);
    if (rpt == 8) lin_recurrent_kernel<8, 256><<<grid, threads, smem, stream>>>(a, nvb, TT);
    else if (rpt == 16) lin_recurrent_kernel<16, 256><<<grid, threads, smem, stream>>>(a, nvb, TT);
    else if (maxt == 256) lin_recurrent_kernel<32, 256><<<grid, threads, smem, stream>>>(a, nvb, TT);
    else lin_recurrent_kernel<32, 1024><<<grid, threads, smem, stream>>>(a, nvb, TT);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    return SEQK_SUCCESS;
}

static seqk_status launch_chunked(const char *fn, lin_args &a, const lin_plan &pl, char *ws,
                                  cudaStream_t stream)
{
    const int64_t nchunks = pl.nchunks, H = a.H;
    a.Gc = (double *)(ws + pl.off_G);
    a.acoef = (float *)(ws + pl.off_a);
    a.states = (float *)(ws + pl.off_states);
    if (a.map.cu) {
        const seqk_status st =
            seqk__chunks_build_first(fn, &a.map, (int32_t *)(ws + pl.off_first), stream);
        if (st) return st;
    }
    if (nchunks > 0) {
        if (a.decay) {
            const int64_t nwork = nchunks * H;
            SEQK__GRID_OR_FAIL(g0, (nwork + GATE_THREADS / 32 - 1) / (GATE_THREADS / 32));
            lin_chunk_gates_kernel<<<g0, GATE_THREADS, 0, stream>>>(a, nwork);
            SEQK_CUDA_CHECK_LAUNCH(fn);
        }
        const int tilesK = (a.K + TILE - 1) / TILE, tilesV = (a.V + TILE - 1) / TILE;
        SEQK__GRID_OR_FAIL(g1, nchunks * H * tilesK * tilesV);
        lin_chunk_local_kernel<<<g1, TILE_THREADS, 0, stream>>>(a, tilesK, tilesV);
        SEQK_CUDA_CHECK_LAUNCH(fn);
    }
    /* always: it also carries s_in to s_out for sequences without tokens */
    const int eblocks = (int)((a.E + SCAN_THREADS - 1) / SCAN_THREADS);
    SEQK__GRID_OR_FAIL(g2, a.map.N * H * eblocks);
    lin_chunk_scan_kernel<<<g2, SCAN_THREADS, 0, stream>>>(a, eblocks);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    if (nchunks > 0) {
        const int tilesM = (a.map.L + TILE - 1) / TILE, tilesV = (a.V + TILE - 1) / TILE;
        SEQK__GRID_OR_FAIL(g3, nchunks * H * tilesM * tilesV);
        lin_chunk_output_kernel<<<g3, TILE_THREADS, 0, stream>>>(a, tilesM, tilesV);
        SEQK_CUDA_CHECK_LAUNCH(fn);
    }
    return SEQK_SUCCESS;
}

/* The native bf16 / f16 parallel mode's stages (0) to (6), shared with the
 * native backward (seqk__cuda_lin_lp_states): stage 0 and the chunk-state
 * scan are the fp32 path's kernels; the products go through gpu/gemm.cu.
 * Fills p (a, the dtype arrays of P and the workspace's). */
static seqk_status lp_states(const char *fn, seqk_context *ctx, const seqk__lin *P, lin_args &a,
                             const lin_lp_plan &pl, char *ws, cudaStream_t stream,
                             lin_lp_args &p)
{
    const int64_t nchunks = pl.base.nchunks, H = a.H, L = a.map.L, K = a.K, V = a.V;
    const int64_t nb = nchunks * H, nrows = nb * L;
    a.Gc = (double *)(ws + pl.base.off_G);
    a.acoef = (float *)(ws + pl.base.off_a);
    a.states = (float *)(ws + pl.base.off_states);
    p.a = a;
    p.bf16 = P->dtype == SEQK_DTYPE_BF16;
    p.q = (const uint16_t *)P->q, p.k = (const uint16_t *)P->k, p.v = (const uint16_t *)P->v;
    p.o = (uint16_t *)P->o;
    p.skip = P->skip;
    p.Qa = (uint16_t *)(ws + pl.off_Qa), p.Ka = (uint16_t *)(ws + pl.off_Ka);
    p.Qg = (uint16_t *)(ws + pl.off_Qg), p.Kd = (uint16_t *)(ws + pl.off_Kd);
    p.Va = (uint16_t *)(ws + pl.off_Va), p.Pm = (uint16_t *)(ws + pl.off_Pm);
    p.S0b = (uint16_t *)(ws + pl.off_S0b), p.Sc = (float *)(ws + pl.off_Sc);
    if (a.map.cu) {
        const seqk_status st =
            seqk__chunks_build_first(fn, &a.map, (int32_t *)(ws + pl.base.off_first), stream);
        if (st) return st;
        p.a.map = a.map;
    }
    const seqk_dtype dt = P->dtype;
    seqk_status st;
    if (nchunks > 0) {
        if (a.decay) {
            SEQK__GRID_OR_FAIL(g0, (nb + GATE_THREADS / 32 - 1) / (GATE_THREADS / 32));
            lin_chunk_gates_kernel<<<g0, GATE_THREADS, 0, stream>>>(a, nb);
            SEQK_CUDA_CHECK_LAUNCH(fn);
        }
        SEQK__GRID_OR_FAIL(gp, (nrows + LP_THREADS / 32 - 1) / (LP_THREADS / 32));
        lin_lp_pack_kernel<<<gp, LP_THREADS, 0, stream>>>(p, nrows);
        SEQK_CUDA_CHECK_LAUNCH(fn);
        /* scores Q~ K~^T [L, L] and the local states U = Kd^T V~ [K, V] */
        if ((st = seqk__cuda_gemm(fn, ctx, dt, 0, 1, L, L, K, a.scale, p.Qa, K, L * K, p.Ka, K,
                                  L * K, 0.0f, p.Sc, L, L * L, nb)))
            return st;
        lin_lp_mask_kernel<<<gp, LP_THREADS, 0, stream>>>(p, nrows);
        SEQK_CUDA_CHECK_LAUNCH(fn);
        if ((st = seqk__cuda_gemm(fn, ctx, dt, 1, 0, K, V, L, 1.0f, p.Kd, K, L * K, p.Va, V,
                                  L * V, 0.0f, a.states, V, a.E, nb)))
            return st;
    }
    /* always: it also carries s_in to s_out for sequences without tokens */
    const int eblocks = (int)((a.E + SCAN_THREADS - 1) / SCAN_THREADS);
    SEQK__GRID_OR_FAIL(g2, a.map.N * H * eblocks);
    lin_chunk_scan_kernel<<<g2, SCAN_THREADS, 0, stream>>>(a, eblocks);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    if (nchunks == 0) return SEQK_SUCCESS;
    return seqk__cuda_convert(fn, ctx, dt, 0, a.states, p.S0b, nb * a.E);
}

/* The native bf16 / f16 parallel mode: lp_states, then the outputs. */
static seqk_status launch_lowp(const char *fn, seqk_context *ctx, const seqk__lin *P,
                               lin_args &a, const lin_lp_plan &pl, char *ws, cudaStream_t stream)
{
    const int64_t nchunks = pl.base.nchunks, H = a.H, L = a.map.L, K = a.K, V = a.V;
    const int64_t nb = nchunks * H, nrows = nb * L;
    const seqk_dtype dt = P->dtype;
    lin_lp_args p;
    seqk_status st = lp_states(fn, ctx, P, a, pl, ws, stream, p);
    if (st || nchunks == 0) return st;
    /* O = P V~ + Qg S0 (into the scores' block: they are consumed) */
    if ((st = seqk__cuda_gemm(fn, ctx, dt, 0, 0, L, V, L, 1.0f, p.Pm, L, L * L, p.Va, V, L * V,
                              0.0f, p.Sc, V, L * V, nb)))
        return st;
    if ((st = seqk__cuda_gemm(fn, ctx, dt, 0, 0, L, V, K, 1.0f, p.Qg, K, L * K, p.S0b, V, a.E,
                              1.0f, p.Sc, V, L * V, nb)))
        return st;
    SEQK__GRID_OR_FAIL(gw, (nrows + LP_THREADS / 32 - 1) / (LP_THREADS / 32));
    lin_lp_write_kernel<<<gw, LP_THREADS, 0, stream>>>(p, nrows);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    return SEQK_SUCCESS;
}

/* lin_args of P (the gates, the workspace's arrays and the chunk table are
 * filled by the launch). */
static void lin_args_of(const seqk__lin *P, const lin_plan &pl, const int32_t *cu_device,
                        lin_args *a)
{
    memset(a, 0, sizeof *a);
    a->map = seqk__chunks_of(P->T, P->N, pl.L, cu_device);
    a->KV = P->K * P->V;
    a->E = pl.E;
    a->H = (int)P->H;
    a->Hqk = (int)P->Hqk;
    a->hgrp = (int)(P->H / P->Hqk);
    a->K = (int)P->K;
    a->V = (int)P->V;
    a->scale = P->scale;
    a->norm = (P->flags & SEQK__LIN_NORMALIZE) != 0;
    a->elu = (P->flags & SEQK__LIN_ELU1) != 0;
    a->decay = P->g != NULL || P->log_gamma != NULL;
    a->v_scale = P->v_scale;
    if (P->dtype == SEQK_DTYPE_F32) a->q = P->q, a->k = P->k, a->v = P->v, a->o = P->o;
    a->s_in = P->s_in, a->s_out = P->s_out;
    a->z_in = a->norm ? P->z_in : NULL;
    a->z_out = a->norm ? P->z_out : NULL;
}

seqk_status seqk__cuda_lin_lp_states(const char *fn, seqk_context *ctx, const seqk__lin *P,
                                     const int32_t *cu_device, char *ws, seqk__lin_lp *out)
{
    if (P->dtype == SEQK_DTYPE_F32 || (P->flags & SEQK__LIN_NORMALIZE))
        return seqk__fail(SEQK_ERROR_INTERNAL, "%s: native chunk states without their dtype", fn);
    cudaStream_t stream = seqk__stream(ctx);
    const lin_lp_plan pl = make_lp_plan(P);
    lin_args a;
    lin_args_of(P, pl.base, cu_device, &a);
    seqk_status st = seqk__lin_gates_of(fn, P, (float *)(ws + pl.base.off_lg), stream, &a.gates);
    if (st) return st;
    lin_lp_args p;
    if ((st = lp_states(fn, ctx, P, a, pl, ws, stream, p))) return st;
    out->map = p.a.map;
    out->nchunks = pl.base.nchunks;
    out->Gc = a.Gc, out->acoef = a.acoef, out->states = a.states;
    out->Qa = p.Qa, out->Ka = p.Ka, out->Qg = p.Qg, out->Kd = p.Kd, out->Va = p.Va;
    out->Pm = p.Pm, out->S0b = p.S0b, out->Sc = p.Sc;
    return SEQK_SUCCESS;
}

extern "C" seqk_status seqk__cuda_lin(seqk_context *ctx, int mode, const seqk__lin *P,
                                     const int32_t *cu_device)
{
    static const char fn[] = "seqk (CUDA linear-state engine)";
    const bool lowp = P->dtype != SEQK_DTYPE_F32;
    if (lowp && (mode != SEQK_MODE_PARALLEL || (P->flags & SEQK__LIN_NORMALIZE)))
        return seqk__fail(SEQK_ERROR_INTERNAL, "%s: %s in the native path without its mode", fn,
                          seqk_dtype_string(P->dtype));
    SEQK_CUDA_TRY(fn, cudaSetDevice(ctx->device));
    cudaStream_t stream = seqk__stream(ctx);
    const lin_plan pl = make_plan(P, mode);
    const size_t bytes = seqk__cuda_lin_workspace(P, mode);
    char *ws = NULL;
    if (bytes > 0) {
        void *base = NULL;
        seqk_status st = seqk__workspace(fn, ctx, P->ws_offset + bytes, &base);
        if (st) return st;
        ws = (char *)base + P->ws_offset;
    }

    lin_args a;
    lin_args_of(P, pl, cu_device, &a);
    const seqk_status st = seqk__lin_gates_of(fn, P, (float *)(ws + pl.off_lg), stream, &a.gates);
    if (st) return st;
    if (lowp) return launch_lowp(fn, ctx, P, a, make_lp_plan(P), ws, stream);
    if (mode == SEQK_MODE_RECURRENT) return launch_recurrent(fn, a, stream);
    return launch_chunked(fn, a, pl, ws, stream);
}

/* ---- Mamba2 entry helpers ------------------------------------------------------------- */

extern "C" seqk_status seqk__cuda_mamba2_dt(seqk_context *ctx, int64_t rows, int64_t H,
                                           const float *dt, const float *dt_bias, int softplus,
                                           float *dt_out)
{
    static const char fn[] = "seqk_mamba2";
    if (rows * H <= 0) return SEQK_SUCCESS;
    SEQK_CUDA_TRY(fn, cudaSetDevice(ctx->device));
    lin_mamba2_dt_kernel<<<seqk__elem_grid(rows * H, ELEM_THREADS), ELEM_THREADS, 0,
                           seqk__stream(ctx)>>>(rows, H, dt, dt_bias, softplus, dt_out);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    return SEQK_SUCCESS;
}

extern "C" seqk_status seqk__cuda_mamba2_skip(seqk_context *ctx, int64_t rows, int64_t H,
                                             int64_t Pd, const float *D, const float *x, float *y)
{
    static const char fn[] = "seqk_mamba2";
    if (rows * H * Pd <= 0) return SEQK_SUCCESS;
    SEQK_CUDA_TRY(fn, cudaSetDevice(ctx->device));
    lin_mamba2_skip_kernel<<<seqk__elem_grid(rows * H * Pd, ELEM_THREADS), ELEM_THREADS, 0,
                             seqk__stream(ctx)>>>(rows, H, Pd, D, x, y);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    return SEQK_SUCCESS;
}
