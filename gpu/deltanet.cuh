/*
 * gpu/deltanet.cuh -- what the CUDA forward of DeltaNet (gpu/deltanet.cu)
 * and its backward (gpu/deltanet_backward.cu) share: the kernel arguments,
 * the state slice of a block, and the chunked (WY / UT) mode's stages 0-4
 * (the math and the stages are described at the top of gpu/deltanet.cu).
 * The backward reruns stages 0-3 as they are and stage 4 without the
 * outputs, keeping the state before every chunk (Sc) and Vnew (Vn) instead.
 * Also the native bf16 / f16 parallel mode's arguments, packing and
 * triangular kernels, workspace plan and stages (0)-(5) (dnl_launch_states):
 * the native forward goes on from them to its outputs, the native backward
 * (gpu/deltanet_backward.cu) to the gradients.
 *
 * The cumulative log-gate inside a chunk (Gc) is kept in double: under
 * strong decay (g ~ -20, |G| ~ 1300 at the end of a 64-token chunk) a float
 * G_i - G_j carries an absolute error ~1e-4, i.e. a relative one in every
 * decay exp(G_i - G_j) (the linear-state backward does the same,
 * gpu/linear_state_backward.cu).
 */
#ifndef SEQK_GPU_DELTANET_CUH
#define SEQK_GPU_DELTANET_CUH

extern "C" {
#include "../core/internal.h"
#include "../scan/linear_state.h"
}

#include "chunks.cuh"
#include "common.cuh"
#include "dtype.cuh"

#include <limits.h>
#include <stdint.h>

enum {
    DN_COLS = 32,      /* state columns per block (one per lane) */
    DN_THREADS = 256,  /* 8 warps */
    DN_WARPS = DN_THREADS / 32,
    DN_TILE = 16,      /* A / P tiles */
    DN_WS_ALIGN = 256
};

/* Everything a kernel needs, by value. */
typedef struct dn_args {
    seqk__chunks map; /* sequences and chunks (L tokens each) */
    int H, K, V;
    float scale;
    int l2, gated;
    const float *q, *k, *v, *beta, *g;
    float *o;          /* outputs (NULL: stage 4 writes none, the backward's rerun) */
    const float *s_in;
    float *s_out;
    double *Gc;        /* [B*T, H] cumulative log-gate inside the chunk (gated) */
    float *Qn, *Kn;    /* [B*T, H, K] q~, k~ */
    float *A, *P;      /* [nchunks, H, L, L] */
    float *U, *W;      /* [nchunks, H, L, V], [nchunks, H, L, K] */
    float *Vn;         /* [nchunks, H, L, V] Vnew, or NULL: in place in U */
    float *Sc;         /* [nchunks, H, K, V] the state before each chunk, or NULL */
} dn_args;

/* The arguments of P (seqk__cuda_deltanet's), workspace pointers unset. */
static inline dn_args dn_args_of(const seqk__lin *P, const float *beta, const int32_t *cu_device)
{
    dn_args a = {};
    a.map = seqk__chunks_of(P->T, P->N, P->chunk, P->cu ? cu_device : NULL);
    a.H = (int)P->H, a.K = (int)P->K, a.V = (int)P->V;
    a.scale = P->scale;
    a.l2 = (P->flags & SEQK__LIN_L2NORM) != 0;
    a.gated = P->g != NULL;
    a.q = P->q, a.k = P->k, a.v = P->v, a.beta = beta, a.g = P->g;
    a.o = P->o, a.s_in = P->s_in, a.s_out = P->s_out;
    return a;
}

/* ---- the state slice of a block --------------------------------------------------- */

/* What a block of dn_recurrent_kernel, dn_state_kernel or the backward's
 * reverse state pass owns (grid N*H*nvb, nvb = ceil(V/32)): the K x 32 slice
 * of the state of sequence n, head h (nh = n H + h) with columns col = 32 vb
 * + lane (colok: col < V). It lives in shared memory S [K][32], warp w
 * holding rows w, w + 8, ... */
typedef struct dn_slice {
    int64_t n, nh;
    int h, vb, col;
    bool colok;
} dn_slice;

static __device__ __forceinline__ dn_slice dn_slice_of(const dn_args &a, int nvb)
{
    const seqk__nhv b = seqk__block_nhv(nvb, a.H);
    dn_slice s;
    s.n = b.n, s.nh = b.nh, s.h = b.h, s.vb = b.vb;
    s.col = b.vb * DN_COLS + (int)(threadIdx.x & 31);
    s.colok = s.col < a.V;
    return s;
}

/* S = the slice of src [N, H, K, V] (zeros without it). */
static __device__ __forceinline__ void dn_slice_load(const dn_args &a, const dn_slice &s,
                                                     const float *src, float *S)
{
    const int lane = threadIdx.x & 31;
    for (int i = threadIdx.x >> 5; i < a.K; i += DN_WARPS)
        S[i * DN_COLS + lane] = (src && s.colok) ? src[(s.nh * a.K + i) * a.V + s.col] : 0.0f;
}

/* The slice of dst [.., K, V] at state index nh = S, when dst is given (each
 * thread stores the rows it wrote itself). */
static __device__ __forceinline__ void dn_slice_store(const dn_args &a, const dn_slice &s,
                                                      int64_t nh, const float *S, float *dst)
{
    const int lane = threadIdx.x & 31;
    if (dst && s.colok)
        for (int i = threadIdx.x >> 5; i < a.K; i += DN_WARPS)
            dst[(nh * a.K + i) * a.V + s.col] = S[i * DN_COLS + lane];
}

/* ---- parallel mode, stages 0 and 1 ------------------------------------------------- */

/* One warp per (token row, head): Qn = scale q / |q|, Kn = k / |k| (or no norm). */
static __global__ void __launch_bounds__(DN_THREADS) dn_norm_kernel(dn_args a, int64_t nwork)
{
    const int lane = threadIdx.x & 31;
    const int64_t wid = (int64_t)blockIdx.x * DN_WARPS + (threadIdx.x >> 5);
    if (wid >= nwork) return; /* whole warp */
    const int K = a.K;
    const float *q = a.q + wid * K, *k = a.k + wid * K;
    const float2 f = seqk__warp_qk_factors(q, k, K, a.scale, a.l2, SEQK__LIN_L2NORM_EPS);
    for (int i = lane; i < K; i += 32) {
        a.Qn[wid * K + i] = f.x * q[i];
        a.Kn[wid * K + i] = f.y * k[i];
    }
}

/* One thread per (chunk, head): Gc = cumulative log-gate inside the chunk
 * (in double, see the top comment). */
static __global__ void __launch_bounds__(DN_THREADS) dn_gates_kernel(dn_args a, int64_t nwork)
{
    const int64_t id = (int64_t)blockIdx.x * DN_THREADS + threadIdx.x;
    if (id >= nwork) return;
    const int64_t c = id / a.H;
    const int h = (int)(id - c * a.H);
    int64_t r0;
    int Lc;
    seqk__chunk_rows(a.map, c, &r0, &Lc);
    double acc = 0.0;
    for (int i = 0; i < Lc; i++) {
        const int64_t rh = (r0 + i) * a.H + h;
        acc += (double)a.g[rh];
        a.Gc[rh] = acc;
    }
}

/* exp(G_i - G_j) of two cumulative log-gates (difference in double). */
static __device__ __forceinline__ float dn_decay(const double *Gc, int64_t ri, int64_t rj)
{
    return expf((float)(Gc[ri] - Gc[rj]));
}

/* ---- parallel mode, stage 2: A and P ------------------------------------------------ */

static __global__ void __launch_bounds__(DN_TILE * DN_TILE) dn_ap_kernel(dn_args a, int nt)
{
    __shared__ float Ki[DN_TILE][DN_TILE + 1], Qi[DN_TILE][DN_TILE + 1], Kj[DN_TILE][DN_TILE + 1];
    const int tx = threadIdx.x % DN_TILE, ty = threadIdx.x / DN_TILE;
    const int64_t ch = blockIdx.x;
    const int64_t c = ch / a.H;
    const int h = (int)(ch - c * a.H);
    const int ti = (int)(blockIdx.y / nt), tj = (int)(blockIdx.y % nt);
    const int L = a.map.L, K = a.K, H = a.H;
    const int i = ti * DN_TILE + ty, j = tj * DN_TILE + tx;
    float *Am = a.A + ch * L * L, *Pm = a.P + ch * L * L;
    if (tj > ti) { /* above the diagonal: zeros (block-uniform) */
        if (i < L && j < L) Am[(int64_t)i * L + j] = 0.0f, Pm[(int64_t)i * L + j] = 0.0f;
        return;
    }
    int64_t r0;
    int Lc;
    seqk__chunk_rows(a.map, c, &r0, &Lc);
    const int jr = tj * DN_TILE + ty; /* the Kj row this thread loads */
    float kk = 0.0f, qk = 0.0f;
    for (int k0 = 0; k0 < K; k0 += DN_TILE) {
        const bool kin = k0 + tx < K;
        Ki[ty][tx] = (i < Lc && kin) ? a.Kn[((r0 + i) * H + h) * K + k0 + tx] : 0.0f;
        Qi[ty][tx] = (i < Lc && kin) ? a.Qn[((r0 + i) * H + h) * K + k0 + tx] : 0.0f;
        Kj[ty][tx] = (jr < Lc && kin) ? a.Kn[((r0 + jr) * H + h) * K + k0 + tx] : 0.0f;
        __syncthreads();
#pragma unroll
        for (int x = 0; x < DN_TILE; x++) {
            kk = fmaf(Ki[ty][x], Kj[tx][x], kk);
            qk = fmaf(Qi[ty][x], Kj[tx][x], qk);
        }
        __syncthreads();
    }
    if (i >= L || j >= L) return;
    float am = 0.0f, pm = 0.0f;
    if (i < Lc && j <= i) { /* never exponentiate above the diagonal */
        const float d = a.gated ? dn_decay(a.Gc, (r0 + i) * H + h, (r0 + j) * H + h) : 1.0f;
        if (j < i) am = a.beta[(r0 + i) * H + h] * kk * d;
        pm = qk * d;
    }
    Am[(int64_t)i * L + j] = am;
    Pm[(int64_t)i * L + j] = pm;
}

/* ---- parallel mode, stage 3: U and W by forward substitution ------------------------ */

static __global__ void __launch_bounds__(DN_THREADS) dn_solve_kernel(dn_args a)
{
    const int64_t ch = blockIdx.x;
    const int64_t c = ch / a.H;
    const int h = (int)(ch - c * a.H);
    const int L = a.map.L, K = a.K, V = a.V, H = a.H;
    int64_t r0;
    int Lc;
    seqk__chunk_rows(a.map, c, &r0, &Lc);
    const float *Am = a.A + ch * L * L;
    float *Uc = a.U + ch * L * V, *Wc = a.W + ch * L * K;
    for (int col = threadIdx.x; col < V + K; col += blockDim.x) {
        /* X = U column col (col < V) or W column col - V, rows ld apart */
        const bool isu = col < V;
        float *X = isu ? Uc + col : Wc + (col - V);
        const int ld = isu ? V : K;
        for (int i = 0; i < Lc; i++) {
            const int64_t rh = (r0 + i) * H + h;
            float x = a.beta[rh];
            if (isu) x *= a.v[rh * V + col];
            else x *= (a.gated ? expf((float)a.Gc[rh]) : 1.0f) * a.Kn[rh * K + (col - V)];
            const float *Ai = Am + (int64_t)i * L;
            for (int j = 0; j < i; j++) x = fmaf(-Ai[j], X[(int64_t)j * ld], x);
            X[(int64_t)i * ld] = x;
        }
    }
}

/* ---- parallel mode, stage 4: the chunk-sequential state pass ----------------------- */

static size_t dn_state_smem(int K, int L)
{
    /* S [K][32], exp(G) [L], exp(G_Lc - G) [L] */
    return sizeof(float) * ((size_t)K * DN_COLS + 2 * (size_t)L);
}

/* exp(G_i) and exp(G_last - G_i) of chunk rows [r0, r0 + Lc) of head h into
 * eg, ek (the block's threads in turn; ones without gates). */
static __device__ __forceinline__ void dn_chunk_decays(const dn_args &a, int64_t r0, int Lc, int h,
                                                       float *eg, float *ek)
{
    const double glast = a.gated ? a.Gc[(r0 + Lc - 1) * a.H + h] : 0.0;
    for (int i = threadIdx.x; i < Lc; i += blockDim.x) {
        const double gi = a.gated ? a.Gc[(r0 + i) * a.H + h] : 0.0;
        eg[i] = expf((float)gi);
        ek[i] = expf((float)(glast - gi));
    }
}

static __global__ void __launch_bounds__(DN_THREADS) dn_state_kernel(dn_args a, int nvb)
{
    extern __shared__ float sm[];
    const int K = a.K, V = a.V, H = a.H, L = a.map.L;
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
    const dn_slice sl = dn_slice_of(a, nvb);
    float *S = sm;                         /* [K][32] */
    float *eg = S + (size_t)K * DN_COLS;   /* [L] exp(G_i) */
    float *ek = eg + L;                    /* [L] exp(G_Lc - G_i) */

    dn_slice_load(a, sl, a.s_in, S);
    bool s_zero = a.s_in == NULL;
    int64_t row0, len, cb, ce;
    seqk__chunks_seq(a.map, sl.n, &row0, &len);
    seqk__chunks_range(a.map, sl.n, &cb, &ce);
    for (int64_t c = cb; c < ce; c++) {
        const int64_t r0 = row0 + (c - cb) * L;
        const int Lc = (int)(len - (c - cb) * L < L ? len - (c - cb) * L : L);
        const int64_t ch = c * H + sl.h;
        const float *Uc = a.U + ch * L * V;
        float *Vc = (a.Vn ? a.Vn : a.U) + ch * L * V; /* Vnew */
        const float *Wc = a.W + ch * L * K, *Pc = a.P + ch * L * L;
        __syncthreads(); /* the previous chunk is done with eg, ek and S */
        dn_slice_store(a, sl, ch, S, a.Sc); /* the state before the chunk */
        dn_chunk_decays(a, r0, Lc, sl.h, eg, ek);
        /* Vnew = U - W S0 (in place in U without Vn) */
        if (sl.colok && (!s_zero || a.Vn))
            for (int i = w; i < Lc; i += DN_WARPS) {
                const float *wi = Wc + (int64_t)i * K;
                float acc = Uc[(int64_t)i * V + sl.col];
                if (!s_zero)
                    for (int kk = 0; kk < K; kk++) acc = fmaf(-wi[kk], S[kk * DN_COLS + lane], acc);
                Vc[(int64_t)i * V + sl.col] = acc;
            }
        __syncthreads(); /* Vnew, eg, ek visible to the block */
        /* O = diag(exp(G)) Q~ S0 + P Vnew */
        for (int i = w; a.o && i < Lc; i += DN_WARPS) {
            const int64_t rh = (r0 + i) * H + sl.h;
            float inter = 0.0f, intra = 0.0f;
            if (!s_zero) {
                const float *qi = a.Qn + rh * K;
                for (int kk = 0; kk < K; kk++) inter = fmaf(qi[kk], S[kk * DN_COLS + lane], inter);
            }
            if (sl.colok) {
                const float *pi = Pc + (int64_t)i * L;
                for (int l = 0; l <= i; l++)
                    intra = fmaf(pi[l], Vc[(int64_t)l * V + sl.col], intra);
                a.o[rh * V + sl.col] = eg[i] * inter + intra;
            }
        }
        __syncthreads(); /* every read of S0 is done */
        /* S = exp(G_Lc) S0 + (diag(exp(G_Lc - G)) K~)^T Vnew */
        const float ac = a.gated ? expf((float)a.Gc[(r0 + Lc - 1) * H + sl.h]) : 1.0f;
        for (int kk = w; kk < K; kk += DN_WARPS) {
            float acc = 0.0f;
            if (sl.colok)
                for (int i = 0; i < Lc; i++)
                    acc = fmaf(ek[i] * a.Kn[((r0 + i) * H + sl.h) * K + kk],
                               Vc[(int64_t)i * V + sl.col], acc);
            S[kk * DN_COLS + lane] = s_zero ? acc : fmaf(ac, S[kk * DN_COLS + lane], acc);
        }
        s_zero = false;
    }
    dn_slice_store(a, sl, sl.nh, S, a.s_out);
}

/* ---- host: the stages' launches ------------------------------------------------------ */

/* Stages 0-3 of the chunked mode on the stream: the chunk table (varlen; into
 * first, N+1 int32), Qn, Kn, Gc, A, P, U, W (a's workspace pointers set);
 * rows = B*T, nch = chunks * H. */
static inline seqk_status dn_launch_prep(const char *fn, dn_args *a, int32_t *first, int64_t rows,
                                         int64_t nch, cudaStream_t stream)
{
    if (nch > INT_MAX || (rows * a->H + DN_WARPS - 1) / DN_WARPS > INT_MAX)
        return seqk__fail(SEQK_ERROR_UNSUPPORTED, "%s: %lld chunks x heads, too many for one grid",
                          fn, (long long)nch);
    if (a->map.cu) {
        const seqk_status st = seqk__chunks_build_first(fn, &a->map, first, stream);
        if (st) return st;
    }
    if (rows > 0) {
        const int64_t nw = rows * a->H;
        dn_norm_kernel<<<seqk__ceil_div(nw, DN_WARPS), DN_THREADS, 0, stream>>>(*a, nw);
        SEQK_CUDA_CHECK_LAUNCH(fn);
    }
    if (nch > 0) {
        if (a->gated) {
            dn_gates_kernel<<<seqk__ceil_div(nch, DN_THREADS), DN_THREADS, 0, stream>>>(*a, nch);
            SEQK_CUDA_CHECK_LAUNCH(fn);
        }
        const int nt = (a->map.L + DN_TILE - 1) / DN_TILE;
        dn_ap_kernel<<<dim3((unsigned)nch, (unsigned)(nt * nt)), DN_TILE * DN_TILE, 0, stream>>>(
            *a, nt);
        SEQK_CUDA_CHECK_LAUNCH(fn);
        dn_solve_kernel<<<(unsigned)nch, DN_THREADS, 0, stream>>>(*a);
        SEQK_CUDA_CHECK_LAUNCH(fn);
    }
    return SEQK_SUCCESS;
}

/* Stage 4 on blocks = N*H*nvb blocks. */
static inline seqk_status dn_launch_state(const char *fn, const dn_args &a, int64_t blocks,
                                          int nvb, cudaStream_t stream)
{
    const size_t smem = dn_state_smem(a.K, a.map.L);
    const seqk_status st = seqk__smem_optin(fn, dn_state_kernel, smem);
    if (st) return st;
    dn_state_kernel<<<(unsigned)blocks, DN_THREADS, smem, stream>>>(a, nvb);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    return SEQK_SUCCESS;
}

/* ---- parallel mode in bf16 / f16 (native; issue #21 phase 3) ---------------------- */

/* The native path's arrays besides the fp32 stages' (dn_args: Gc, Kn, U, W,
 * Sc for the state pass). Packed row (b = c H + h, i < L); rows of a short
 * last chunk are zero-padded to L. */
typedef struct dnl_args {
    dn_args a;
    int bf16;                 /* 1: bf16, 0: f16 */
    const uint16_t *q, *k, *v; /* the caller's [B*T, H, K] / [B*T, H, V] */
    uint16_t *o;              /* [B*T, H, V] */
    uint16_t *Qa, *Kb;        /* [nb, L, K] the inputs q, k (exact: no rounding) */
    float *fq, *fk;           /* [nb, L] the L2 norm's factors (ones without it; 0 past Lc) */
    float *Qg;                /* [nb, L, K] exp(G_i) q~ (fp32: its product is with S0) */
    float *Rv, *Rk;           /* [nb, L, V] beta v, [nb, L, K] beta exp(G) k~ (fp32: with T) */
    float *Tm;                /* [nb, L, L] K~ K~^T, then T = (I + A)^-1 in place */
    float *Sx;                /* [nb, L, max(L, V)] scale Q K^T (of the inputs), then O
                               * (the forward; the backward keeps the scores) */
    uint16_t *Pb;             /* [nb, L, L] (Q~ K~^T) .* Gamma .* M_causal, rounded */
    uint16_t *Vb;             /* [nb, L, V] Vnew rounded (in Rv's block: consumed by then) */
} dnl_args;

/* The packed row of warp w of the block (LP: 8 warps of 32); false past the end. */
static __device__ __forceinline__ bool dnl_row(const dnl_args &p, int64_t nrows, int64_t *b,
                                               int *i, int *h, int64_t *r0, int *Lc)
{
    const int64_t row = (int64_t)blockIdx.x * DN_WARPS + (threadIdx.x >> 5);
    if (row >= nrows) return false;
    const int L = p.a.map.L;
    *b = row / L;
    *i = (int)(row - *b * L);
    const int64_t c = *b / p.a.H;
    *h = (int)(*b - c * p.a.H);
    seqk__chunk_rows(p.a.map, c, r0, Lc);
    return true;
}

/* One warp per packed row (b, i): the dtype operands Qa = q, Kb = k (the
 * inputs, exact; the L2 norm's factors fq, fk go to the fp32 side), the fp32
 * ones Qg = exp(G_i) q~, Rv = beta v, Rk = beta exp(G_i) k~, and Kn = k~
 * (fp32, token layout: the state pass's); zeros past the chunk. */
static __global__ void __launch_bounds__(DN_THREADS) dnl_pack_kernel(dnl_args p, int64_t nrows)
{
    int64_t b, r0;
    int i, h, Lc;
    if (!dnl_row(p, nrows, &b, &i, &h, &r0, &Lc)) return;
    const dn_args &a = p.a;
    const int lane = threadIdx.x & 31, K = a.K, V = a.V, L = a.map.L;
    const int64_t prow = b * L + i;
    const bool ok = i < Lc;
    const int64_t rh = (r0 + i) * a.H + h;
    float fq = 1.0f, fk = 1.0f, eg = 1.0f, bt = 0.0f;
    if (ok) {
        if (a.l2) {
            float sq = 0.0f, sk = 0.0f;
            for (int kk = lane; kk < K; kk += 32) {
                const float x = seqk__dt_load(p.q, rh * K + kk, p.bf16);
                const float y = seqk__dt_load(p.k, rh * K + kk, p.bf16);
                sq = fmaf(x, x, sq);
                sk = fmaf(y, y, sk);
            }
            sq = seqk__warp_sum(sq);
            sk = seqk__warp_sum(sk);
            fq = 1.0f / sqrtf(sq + SEQK__LIN_L2NORM_EPS);
            fk = 1.0f / sqrtf(sk + SEQK__LIN_L2NORM_EPS);
        }
        if (a.gated) eg = expf((float)a.Gc[rh]);
        bt = a.beta[rh];
    }
    if (lane == 0) p.fq[prow] = ok ? fq : 0.0f, p.fk[prow] = ok ? fk : 0.0f;
    for (int kk = lane; kk < K; kk += 32) {
        float qx = 0.0f, kx = 0.0f; /* the inputs */
        if (ok) {
            qx = seqk__dt_load(p.q, rh * K + kk, p.bf16);
            kx = seqk__dt_load(p.k, rh * K + kk, p.bf16);
            a.Kn[rh * K + kk] = fk * kx;
        }
        p.Qa[prow * K + kk] = seqk__dt_round(qx, p.bf16); /* exact */
        p.Kb[prow * K + kk] = seqk__dt_round(kx, p.bf16);
        p.Qg[prow * K + kk] = eg * a.scale * (fq * qx);
        p.Rk[prow * K + kk] = bt * eg * (fk * kx);
    }
    for (int vv = lane; vv < V; vv += 32)
        p.Rv[prow * V + vv] = ok ? bt * seqk__dt_load(p.v, rh * V + vv, p.bf16) : 0.0f;
}

/* Block per packed chunk b: Pb = round((scale Q~ K~^T) .* Gamma .* M_causal)
 * from Sx = scale Q K^T (Q~ K~^T = diag(fq) Q K^T diag(fk)), then Tm = K K^T
 * (K~ K~^T = diag(fk) K K^T diag(fk)) -> T = (I + A)^-1 in place by forward
 * substitution, row by row (T_i = e_i - sum_{j<i} A_ij T_j, one thread per
 * column; A's row i formed in shared memory from K~ K~^T's row i before it is
 * overwritten; rows past Lc: A = 0, so T_i = e_i). fp32. */
static __global__ void __launch_bounds__(DN_THREADS) dnl_tri_kernel(dnl_args p)
{
    extern __shared__ float arow[]; /* [L] */
    const dn_args &a = p.a;
    const int64_t b = blockIdx.x;
    const int64_t c = b / a.H;
    const int h = (int)(b - c * a.H);
    const int L = a.map.L, H = a.H;
    int64_t r0;
    int Lc;
    seqk__chunk_rows(a.map, c, &r0, &Lc);
    float *Tb = p.Tm + b * L * L;
    const float *Sb = p.Sx + b * L * L;
    const float *fq = p.fq + b * L, *fk = p.fk + b * L;
    uint16_t *Pbb = p.Pb + b * L * L;
    for (int64_t e = threadIdx.x; e < (int64_t)L * L; e += blockDim.x) {
        const int i = (int)(e / L), j = (int)(e - (int64_t)i * L);
        float x = 0.0f;
        if (j <= i && i < Lc) { /* never exponentiate above the diagonal */
            x = Sb[e] * (fq[i] * fk[j]);
            if (a.gated) x *= dn_decay(a.Gc, (r0 + i) * H + h, (r0 + j) * H + h);
        }
        Pbb[e] = seqk__dt_round(x, p.bf16);
    }
    for (int i = 0; i < L; i++) {
        const float bi = i < Lc ? a.beta[(r0 + i) * H + h] * fk[i] : 0.0f;
        for (int j = threadIdx.x; j < i; j += blockDim.x) {
            float x = 0.0f;
            if (i < Lc) {
                x = bi * (Tb[(int64_t)i * L + j] * fk[j]);
                if (a.gated) x *= dn_decay(a.Gc, (r0 + i) * H + h, (r0 + j) * H + h);
            }
            arow[j] = x;
        }
        __syncthreads(); /* arow visible; every read of row i's K~ K~^T done */
        for (int col = threadIdx.x; col < L; col += blockDim.x) {
            float x = col == i ? 1.0f : 0.0f;
            for (int j = col; j < i; j++) x = fmaf(-arow[j], Tb[(int64_t)j * L + col], x);
            Tb[(int64_t)i * L + col] = x;
        }
        __syncthreads(); /* arow is rewritten next */
    }
}

/* ---- native path: the workspace plan and the stages the backward reruns ---------- */

static inline size_t dnl_align(size_t n) { return seqk__align_up(n, DN_WS_ALIGN); }

typedef struct dnl_plan {
    int64_t nchunks;
    size_t off_first, off_gc, off_kn, off_u, off_w, off_sc, off_qa, off_kb, off_f, off_qg,
        off_rv, off_rk, off_tm, off_sx, off_pb, bytes;
} dnl_plan;

static inline dnl_plan dnl_make_plan(const seqk__lin *P)
{
    dnl_plan pl = {};
    const size_t f = sizeof(float), es = 2, rows = (size_t)(P->B * P->T), H = (size_t)P->H;
    const size_t L = (size_t)P->chunk, K = (size_t)P->K, V = (size_t)P->V;
    pl.nchunks = seqk__count_chunks(P->cu, P->N, P->B, P->T, P->chunk);
    const size_t nb = (size_t)pl.nchunks * H, pr = nb * L; /* packed rows */
    size_t o = 0;
    pl.off_first = o, o += dnl_align((size_t)(P->N + 1) * sizeof(int32_t));
    pl.off_gc = o, o += dnl_align(rows * H * sizeof(double));
    pl.off_kn = o, o += dnl_align(rows * H * K * f);
    pl.off_u = o, o += dnl_align(pr * V * f);
    pl.off_w = o, o += dnl_align(pr * K * f);
    pl.off_sc = o, o += dnl_align(nb * K * V * f);
    pl.off_qa = o, o += dnl_align(pr * K * es);
    pl.off_kb = o, o += dnl_align(pr * K * es);
    pl.off_f = o, o += dnl_align(2 * pr * f);
    pl.off_qg = o, o += dnl_align(pr * K * f);
    pl.off_rv = o, o += dnl_align(pr * V * f);
    pl.off_rk = o, o += dnl_align(pr * K * f);
    pl.off_tm = o, o += dnl_align(pr * L * f);
    pl.off_sx = o, o += dnl_align(pr * (L > V ? L : V) * f);
    pl.off_pb = o, o += dnl_align(pr * L * es);
    pl.bytes = o;
    return pl;
}

/* Stages (0)-(5) of the native bf16 / f16 parallel mode (gpu/deltanet.cu's
 * top comment) on the stream, in ws (pl's regions): the chunk table, Gc, the
 * packed operands (Qa, Kb in the dtype; fq, fk, Qg, Rv, Rk, Kn in fp32),
 * Tm = T = (I + A)^-1, Sx = scale Qa Kb^T (fp32, kept), Pb = round(P), U
 * and W, then the fp32 state pass: Vnew in place in U, the state before
 * every chunk into Sc, a->s_out when set (a->o unused). Sets a's and p's
 * workspace pointers (a->q, a->k, a->v NULL: the fp32 stages see no
 * activations). Shared by the forward and the backward
 * (gpu/deltanet_backward.cu), which go on from here. */
static inline seqk_status dnl_launch_states(const char *fn, seqk_context *ctx, const seqk__lin *P,
                                            dn_args *a, dnl_args *p, const dnl_plan &pl,
                                            char *ws, int64_t blocks, int nvb,
                                            cudaStream_t stream)
{
    const int64_t H = a->H, L = a->map.L, K = a->K, V = a->V;
    const int64_t nb = pl.nchunks * H, nrows = nb * L;
    const seqk_dtype dt = P->dtype;
    seqk_status st = SEQK_SUCCESS;
    a->q = a->k = a->v = NULL, a->o = NULL;
    a->Gc = (double *)(ws + pl.off_gc);
    a->Kn = (float *)(ws + pl.off_kn);
    a->U = (float *)(ws + pl.off_u), a->W = (float *)(ws + pl.off_w);
    a->Sc = (float *)(ws + pl.off_sc);
    a->Vn = NULL; /* Vnew in place in U */
    p->bf16 = dt == SEQK_DTYPE_BF16;
    p->q = (const uint16_t *)P->q, p->k = (const uint16_t *)P->k, p->v = (const uint16_t *)P->v;
    p->o = (uint16_t *)P->o;
    p->Qa = (uint16_t *)(ws + pl.off_qa), p->Kb = (uint16_t *)(ws + pl.off_kb);
    p->fq = (float *)(ws + pl.off_f), p->fk = p->fq + nrows;
    p->Qg = (float *)(ws + pl.off_qg);
    p->Rv = (float *)(ws + pl.off_rv), p->Rk = (float *)(ws + pl.off_rk);
    p->Tm = (float *)(ws + pl.off_tm), p->Sx = (float *)(ws + pl.off_sx);
    p->Pb = (uint16_t *)(ws + pl.off_pb);
    p->Vb = (uint16_t *)p->Rv;
    if (nb > INT_MAX)
        return seqk__fail(SEQK_ERROR_UNSUPPORTED, "%s: %lld chunks x heads, too many for one grid",
                          fn, (long long)nb);
    if (a->map.cu && (st = seqk__chunks_build_first(fn, &a->map, (int32_t *)(ws + pl.off_first),
                                                    stream)))
        return st;
    p->a = *a;
    if (nb > 0) {
        if (a->gated) {
            dn_gates_kernel<<<seqk__ceil_div(nb, DN_THREADS), DN_THREADS, 0, stream>>>(*a, nb);
            SEQK_CUDA_CHECK_LAUNCH(fn);
        }
        SEQK__GRID_OR_FAIL(gp, (nrows + DN_WARPS - 1) / DN_WARPS);
        dnl_pack_kernel<<<gp, DN_THREADS, 0, stream>>>(*p, nrows);
        SEQK_CUDA_CHECK_LAUNCH(fn);
        /* K K^T and scale Q K^T ([nb, L, L] fp32) from the inputs */
        if ((st = seqk__cuda_gemm(fn, ctx, dt, 0, 1, L, L, K, 1.0f, p->Kb, K, L * K, p->Kb, K,
                                  L * K, 0.0f, p->Tm, L, L * L, nb)) ||
            (st = seqk__cuda_gemm(fn, ctx, dt, 0, 1, L, L, K, a->scale, p->Qa, K, L * K, p->Kb, K,
                                  L * K, 0.0f, p->Sx, L, L * L, nb)))
            return st;
        const size_t smem = (size_t)L * sizeof(float);
        if ((st = seqk__smem_optin(fn, dnl_tri_kernel, smem))) return st;
        dnl_tri_kernel<<<(unsigned)nb, DN_THREADS, smem, stream>>>(*p);
        SEQK_CUDA_CHECK_LAUNCH(fn);
        /* U = T diag(beta) V, W = T diag(beta exp(G)) K~ (fp32 operands: T) */
        if ((st = seqk__cuda_gemm(fn, ctx, SEQK_DTYPE_F32, 0, 0, L, V, L, 1.0f, p->Tm, L, L * L,
                                  p->Rv, V, L * V, 0.0f, a->U, V, L * V, nb)) ||
            (st = seqk__cuda_gemm(fn, ctx, SEQK_DTYPE_F32, 0, 0, L, K, L, 1.0f, p->Tm, L, L * L,
                                  p->Rk, K, L * K, 0.0f, a->W, K, L * K, nb)))
            return st;
    }
    /* the chunk-sequential state pass in fp32 (always: it also carries s_in
     * to s_out for sequences without tokens): Vnew = U - W S0 in place in U,
     * the state before every chunk into Sc, S = exp(G_Lc) S0 + Kd^T Vnew */
    return dn_launch_state(fn, *a, blocks, nvb, stream);
}

#endif
