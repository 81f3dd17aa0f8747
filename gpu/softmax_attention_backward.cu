/*
 * gpu/softmax_attention_backward.cu -- CUDA backend of the backward of
 * softmax attention (DESIGN 3.5, 3.7, 7): FlashAttention-2's backward, fp32
 * on CUDA cores (no tensor cores), no float atomics: every output element is
 * summed by one thread in a fixed order, so the result is the same bits on
 * every run. The simple, correct reference backend, as the forward in
 * gpu/softmax_attention.cu, to be tuned when a measurement says so.
 *
 * Math (per head; scores in log2 units, scale2 = scale log2(e), lse2 = lse
 * log2(e)):
 *   D[t]    = dout[t] . o[t]
 *   p[t,s]  = 2^(scale2 q[t].k[s] - lse2[t])            (s in S(t))
 *   dv[s]   = sum_t p[t,s] dout[t]
 *   ds[t,s] = p[t,s] (dout[t] . v[s] - D[t])
 *   dk[s]   = scale sum_t ds[t,s] q[t],   dq[t] = scale sum_s ds[t,s] k[s]
 *
 * Three kernels:
 *   1. preprocess: D into the workspace ([B, Hq, T], lse's layout), one warp
 *      per (token, query head);
 *   2. dK/dV: one block of BW_WARPS warps per (tile of BW_ROWS keys, key/value
 *      head, sequence). Warp w owns keys BW_RPW w .. + BW_RPW - 1; lane owns
 *      columns lane + 32 c of their dK and dV accumulators (registers). The
 *      block walks the group's query heads in order, and for each its query
 *      tiles of BW_COLS in order (causal: from the tile of the first key):
 *      Q, dO, lse2 and D of the tile are loaded into shared memory, lane j
 *      computes p and ds of query j for the warp's keys (Q and dO rows with an
 *      odd stride: conflict-free), and the warp adds sum_j p_j dO_j to dV and
 *      sum_j ds_j Q_j to dK, each p_j, ds_j broadcast from lane j by a
 *      shuffle, in the order j = 0, 1, ...;
 *   3. dQ: one block per (tile of BW_ROWS queries, query head, sequence),
 *      warp w owning queries BW_RPW w .., lane j key j of each key tile of
 *      BW_COLS (causal: up to the tile's last query): p and ds recomputed,
 *      dQ += sum_j ds_j K_j. Grid x from the last tile (the heaviest under the
 *      causal mask) to the first.
 * Varlen: a sequence's rows are [cu[n], cu[n+1]) of the packed tokens; a
 * block whose tile starts past its sequence's end exits.
 */
/* core/internal.h without C++ guards: included inside extern "C" first (see
 * gpu/softmax_attention.cu). */
extern "C" {
#include "../core/internal.h"
}

#include "common.cuh"

#include <math.h>
#include <stdint.h>

#define BW_WARPS 4
#define BW_RPW 8                     /* keys (dK/dV) or queries (dQ) per warp */
#define BW_ROWS (BW_WARPS * BW_RPW)  /* keys (dK/dV) or queries (dQ) per block */
#define BW_COLS 32                   /* queries (dK/dV) or keys (dQ) per tile: one per lane */
#define BW_THREADS (BW_WARPS * 32)
#define PRE_THREADS 256

#define LOG2E_F 1.4426950408889634f

typedef struct bwd_params {
    const float *q, *k, *v, *o, *lse, *dout;
    float *dq, *dk, *dv;
    float *D;          /* workspace [B, Hq, T] */
    const int32_t *cu; /* device cu_seqlens or NULL */
    int64_t B, T, Hq, Hkv, K, V, N;
    int64_t tiles;     /* grid x: tiles of BW_ROWS of the longest sequence */
    int64_t ast, bst;  /* odd shared-memory row strides of the lane-indexed tiles (K, V) */
    float scale, scale2;
    int causal;
} bwd_params;

/* lse2 = lse log2(e) and D of the 32 tokens t0.. (zeros at t >= s1) of
 * head h, sequence of batch entry b, by the block's first 32 threads. */
static __device__ __forceinline__ void load_lse_d(const bwd_params &p, int64_t b, int64_t h,
                                                  int64_t t0, int64_t s1, float *l2s_, float *Ds_)
{
    if (threadIdx.x < 32) {
        const int64_t t = t0 + threadIdx.x;
        const int64_t li = (b * p.Hq + h) * p.T + (t - b * p.T);
        l2s_[threadIdx.x] = t < s1 ? p.lse[li] * LOG2E_F : 0.0f;
        Ds_[threadIdx.x] = t < s1 ? p.D[li] : 0.0f;
    }
}

/* p = 2^(scale2 s - lse2) where ok, else 0. */
static __device__ __forceinline__ float prob(bool ok, float s, float scale2, float l2)
{
    return ok ? exp2f(fmaf(s, scale2, -l2)) : 0.0f;
}

/* ------------------------------------------------------------------------ */
/* 1. D = dout . o                                                           */
/* ------------------------------------------------------------------------ */

__global__ void __launch_bounds__(PRE_THREADS) attn_bwd_pre_kernel(bwd_params p)
{
    const int lane = threadIdx.x & 31;
    const int64_t warps = (int64_t)gridDim.x * (PRE_THREADS / 32);
    const int64_t rows = p.B * p.T * p.Hq;
    for (int64_t i = (int64_t)blockIdx.x * (PRE_THREADS / 32) + (threadIdx.x >> 5); i < rows;
         i += warps) {
        const int64_t r = i / p.Hq, h = i % p.Hq; /* token row, head */
        const float *x = p.dout + i * p.V, *y = p.o + i * p.V;
        float s = 0.0f;
        for (int64_t c = lane; c < p.V; c += 32) s = fmaf(x[c], y[c], s);
        s = seqk__warp_sum(s);
        if (lane == 0) p.D[((r / p.T) * p.Hq + h) * p.T + r % p.T] = s;
    }
}

/* ------------------------------------------------------------------------ */
/* 2. dK, dV of a key tile                                                   */
/* ------------------------------------------------------------------------ */

/* CH: column chunks of 32 per lane (K, V <= 32 CH), the only template
 * parameter, so that the accumulators stay in registers. */
template <int CH>
__global__ void __launch_bounds__(BW_THREADS) attn_bwd_dkdv_kernel(bwd_params p)
{
    extern __shared__ float smem[];
    const int64_t K = p.K, V = p.V;
    float *ks_ = smem;                   /* [BW_ROWS][K]   keys (broadcast reads) */
    float *vs_ = ks_ + BW_ROWS * K;      /* [BW_ROWS][V]   values */
    float *qs_ = vs_ + BW_ROWS * V;      /* [BW_COLS][ast] queries */
    float *dos_ = qs_ + BW_COLS * p.ast; /* [BW_COLS][bst] dout */
    float *l2s_ = dos_ + BW_COLS * p.bst; /* [BW_COLS] lse2 */
    float *Ds_ = l2s_ + BW_COLS;          /* [BW_COLS] D */
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t group = p.Hq / p.Hkv;

    for (int64_t n = blockIdx.z; n < p.N; n += gridDim.z) {
        int64_t s0, s1, b;
        seqk__seq_span(p.cu, p.T, n, &s0, &s1, &b);
        const int64_t k0 = s0 + (int64_t)blockIdx.x * BW_ROWS;
        if (k0 >= s1) continue; /* uniform over the block */
        for (int64_t hk = blockIdx.y; hk < p.Hkv; hk += gridDim.y) {
            __syncthreads(); /* the previous head's use of shared memory is done */
            seqk__load_rows(ks_, K, p.k, k0, s1, p.Hkv, hk, K, BW_ROWS, BW_THREADS);
            seqk__load_rows(vs_, V, p.v, k0, s1, p.Hkv, hk, V, BW_ROWS, BW_THREADS);
            float dk[BW_RPW][CH], dv[BW_RPW][CH];
#pragma unroll
            for (int i = 0; i < BW_RPW; i++)
#pragma unroll
                for (int c = 0; c < CH; c++) dk[i][c] = dv[i][c] = 0.0f;
            /* causal: query tiles (aligned to s0) from the one holding k0 */
            const int64_t qfirst = p.causal ? s0 + (k0 - s0) / BW_COLS * BW_COLS : s0;
            for (int64_t hg = 0; hg < group; hg++) {
                const int64_t h = hk * group + hg;
                for (int64_t q0 = qfirst; q0 < s1; q0 += BW_COLS) {
                    __syncthreads(); /* K, V stored / the previous tile consumed */
                    seqk__load_rows(qs_, p.ast, p.q, q0, s1, p.Hq, h, K, BW_COLS, BW_THREADS);
                    seqk__load_rows(dos_, p.bst, p.dout, q0, s1, p.Hq, h, V, BW_COLS, BW_THREADS);
                    load_lse_d(p, b, h, q0, s1, l2s_, Ds_);
                    __syncthreads();
                    /* lane = query: s = k_i . q_lane, dp = v_i . dout_lane */
                    float s[BW_RPW], dp[BW_RPW];
#pragma unroll
                    for (int i = 0; i < BW_RPW; i++) s[i] = dp[i] = 0.0f;
                    seqk__rows_dot(s, ks_ + (int64_t)warp * BW_RPW * K, qs_ + lane * p.ast, K);
                    seqk__rows_dot(dp, vs_ + (int64_t)warp * BW_RPW * V, dos_ + lane * p.bst, V);
                    const int64_t qt = q0 + lane;
                    const float l2 = l2s_[lane], Dq = Ds_[lane];
                    float pr[BW_RPW], ds[BW_RPW];
#pragma unroll
                    for (int i = 0; i < BW_RPW; i++) {
                        const int64_t key = k0 + warp * BW_RPW + i;
                        const bool ok = qt < s1 && key < s1 && (!p.causal || key <= qt);
                        pr[i] = prob(ok, s[i], p.scale2, l2);
                        /* masked: 0, not 0 times a NaN dp from a value row */
                        ds[i] = ok ? pr[i] * (dp[i] - Dq) : 0.0f;
                    }
                    /* dV += P^T dO, dK += dS^T Q over the tile's queries j
                     * that see each row's key (causal: j >= key - q0) */
                    const int64_t jn = s1 - q0 < BW_COLS ? s1 - q0 : BW_COLS;
                    int lo[BW_RPW], hi[BW_RPW];
#pragma unroll
                    for (int i = 0; i < BW_RPW; i++) {
                        const int64_t first = k0 + warp * BW_RPW + i - q0;
                        lo[i] = (int)(!p.causal || first < 0 ? 0 : first > jn ? jn : first);
                        hi[i] = (int)jn;
                    }
                    for (int j = 0; j < jn; j++) {
                        float dov[CH], qv[CH];
#pragma unroll
                        for (int c = 0; c < CH; c++) {
                            const int64_t x = lane + 32 * c;
                            dov[c] = x < V ? dos_[j * p.bst + x] : 0.0f;
                            qv[c] = x < K ? qs_[j * p.ast + x] : 0.0f;
                        }
                        seqk__bcast_fma(dv, pr, j, dov, lo, hi);
                        seqk__bcast_fma(dk, ds, j, qv, lo, hi);
                    }
                }
            }
#pragma unroll
            for (int i = 0; i < BW_RPW; i++) {
                const int64_t t = k0 + warp * BW_RPW + i;
                if (t >= s1) continue;
#pragma unroll
                for (int c = 0; c < CH; c++) {
                    const int64_t x = lane + 32 * c;
                    if (x < K) p.dk[(t * p.Hkv + hk) * K + x] = p.scale * dk[i][c];
                    if (x < V) p.dv[(t * p.Hkv + hk) * V + x] = dv[i][c];
                }
            }
        }
    }
}

/* ------------------------------------------------------------------------ */
/* 3. dQ of a query tile                                                     */
/* ------------------------------------------------------------------------ */

template <int CH>
__global__ void __launch_bounds__(BW_THREADS) attn_bwd_dq_kernel(bwd_params p)
{
    extern __shared__ float smem[];
    const int64_t K = p.K, V = p.V;
    float *qs_ = smem;                    /* [BW_ROWS][K]   queries (broadcast reads) */
    float *dos_ = qs_ + BW_ROWS * K;      /* [BW_ROWS][V]   dout */
    float *ks_ = dos_ + BW_ROWS * V;      /* [BW_COLS][ast] keys */
    float *vs_ = ks_ + BW_COLS * p.ast;   /* [BW_COLS][bst] values */
    float *l2s_ = vs_ + BW_COLS * p.bst;  /* [BW_ROWS] lse2 */
    float *Ds_ = l2s_ + BW_ROWS;          /* [BW_ROWS] D */
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t group = p.Hq / p.Hkv;

    for (int64_t n = blockIdx.z; n < p.N; n += gridDim.z) {
        int64_t s0, s1, b;
        seqk__seq_span(p.cu, p.T, n, &s0, &s1, &b);
        const int64_t tile = p.tiles - 1 - (int64_t)blockIdx.x;
        const int64_t q0 = s0 + tile * BW_ROWS;
        if (q0 >= s1) continue; /* uniform over the block */
        for (int64_t h = blockIdx.y; h < p.Hq; h += gridDim.y) {
            const int64_t hk = h / group;
            __syncthreads(); /* the previous head's use of shared memory is done */
            seqk__load_rows(qs_, K, p.q, q0, s1, p.Hq, h, K, BW_ROWS, BW_THREADS);
            seqk__load_rows(dos_, V, p.dout, q0, s1, p.Hq, h, V, BW_ROWS, BW_THREADS);
            load_lse_d(p, b, h, q0, s1, l2s_, Ds_);
            float dq[BW_RPW][CH];
#pragma unroll
            for (int i = 0; i < BW_RPW; i++)
#pragma unroll
                for (int c = 0; c < CH; c++) dq[i][c] = 0.0f;
            const int64_t kend = p.causal && q0 + BW_ROWS < s1 ? q0 + BW_ROWS : s1;
            for (int64_t k0 = s0; k0 < kend; k0 += BW_COLS) {
                __syncthreads(); /* Q stored / the previous tile consumed */
                seqk__load_rows(ks_, p.ast, p.k, k0, kend, p.Hkv, hk, K, BW_COLS, BW_THREADS);
                seqk__load_rows(vs_, p.bst, p.v, k0, kend, p.Hkv, hk, V, BW_COLS, BW_THREADS);
                __syncthreads();
                /* lane = key: s = q_i . k_lane, dp = dout_i . v_lane */
                float s[BW_RPW], dp[BW_RPW];
#pragma unroll
                for (int i = 0; i < BW_RPW; i++) s[i] = dp[i] = 0.0f;
                seqk__rows_dot(s, qs_ + (int64_t)warp * BW_RPW * K, ks_ + lane * p.ast, K);
                seqk__rows_dot(dp, dos_ + (int64_t)warp * BW_RPW * V, vs_ + lane * p.bst, V);
                const int64_t key = k0 + lane;
                float ds[BW_RPW];
#pragma unroll
                for (int i = 0; i < BW_RPW; i++) {
                    const int r = warp * BW_RPW + i;
                    const int64_t qt = q0 + r;
                    const bool ok = key < kend && qt < s1 && (!p.causal || key <= qt);
                    const float pr = prob(ok, s[i], p.scale2, l2s_[r]);
                    ds[i] = ok ? pr * (dp[i] - Ds_[r]) : 0.0f; /* see the dK, dV kernel */
                }
                /* dQ += dS K over the tile's keys j that each row sees */
                const int64_t jn = kend - k0 < BW_COLS ? kend - k0 : BW_COLS;
                int lo[BW_RPW], hi[BW_RPW];
                seqk__keys_seen(lo, hi, q0 + warp * BW_RPW, k0, jn, p.causal);
                for (int j = 0; j < jn; j++) {
                    float kv[CH];
#pragma unroll
                    for (int c = 0; c < CH; c++) {
                        const int64_t x = lane + 32 * c;
                        kv[c] = x < K ? ks_[j * p.ast + x] : 0.0f;
                    }
                    seqk__bcast_fma(dq, ds, j, kv, lo, hi);
                }
            }
#pragma unroll
            for (int i = 0; i < BW_RPW; i++) {
                const int64_t t = q0 + warp * BW_RPW + i;
                if (t >= s1) continue;
#pragma unroll
                for (int c = 0; c < CH; c++) {
                    const int64_t x = lane + 32 * c;
                    if (x < K) p.dq[(t * p.Hq + h) * K + x] = p.scale * dq[i][c];
                }
            }
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Host side                                                                 */
/* ------------------------------------------------------------------------ */

/* Shared memory of either tile kernel: two [BW_ROWS] tiles of K and V
 * columns, two [BW_COLS] tiles with the odd strides, lse2 and D. */
static size_t tile_smem(const bwd_params &p)
{
    return (size_t)(BW_ROWS * (p.K + p.V) + BW_COLS * (p.ast + p.bst) + 2 * BW_ROWS) *
           sizeof(float);
}

template <int CH>
static seqk_status launch_tiles(const char *fn, seqk_context *ctx, const bwd_params &p,
                                dim3 grid_kv, dim3 grid_q)
{
    const size_t smem = tile_smem(p);
    seqk_status st = seqk__smem_optin(fn, attn_bwd_dkdv_kernel<CH>, smem);
    if (st == SEQK_SUCCESS) st = seqk__smem_optin(fn, attn_bwd_dq_kernel<CH>, smem);
    if (st != SEQK_SUCCESS) return st;
    attn_bwd_dkdv_kernel<CH><<<grid_kv, BW_THREADS, smem, seqk__stream(ctx)>>>(p);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    attn_bwd_dq_kernel<CH><<<grid_q, BW_THREADS, smem, seqk__stream(ctx)>>>(p);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    return SEQK_SUCCESS;
}

extern "C" size_t seqk__cuda_attention_backward_workspace_size(int64_t B, int64_t T, int64_t Hq)
{
    return seqk__align_up((size_t)(B * Hq * T) * sizeof(float), 256);
}

extern "C" seqk_status seqk__cuda_attention_parallel_backward(
    seqk_context *ctx, int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t K, int64_t V,
    float scale, unsigned flags, const float *q, const float *k, const float *v, const float *o,
    const float *lse, const float *dout, float *dq, float *dk, float *dv, const int32_t *cu,
    const int32_t *cu_host, int64_t N)
{
    static const char fn[] = "seqk_attention_parallel_backward";
    SEQK_CUDA_TRY(fn, cudaSetDevice(ctx->device));
    bwd_params p;
    p.q = q;
    p.k = k;
    p.v = v;
    p.o = o;
    p.lse = lse;
    p.dout = dout;
    p.dq = dq;
    p.dk = dk;
    p.dv = dv;
    p.cu = cu;
    p.B = B;
    p.T = T;
    p.Hq = Hq;
    p.Hkv = Hkv;
    p.K = K;
    p.V = V;
    p.N = cu ? N : B;
    p.ast = (K & 1) ? K : K + 1;
    p.bst = (V & 1) ? V : V + 1;
    p.scale = scale;
    p.scale2 = scale * LOG2E_F;
    p.causal = (flags & SEQK_ATTN_CAUSAL) != 0;
    seqk_status st = seqk__seq_tiles(fn, T, cu ? cu_host : NULL, N, BW_ROWS, &p.tiles);
    if (st != SEQK_SUCCESS) return st;
    if (p.tiles == 0) return SEQK_SUCCESS; /* every sequence empty: nothing to write */
    void *ws = NULL;
    st = seqk__workspace(fn, ctx, seqk__cuda_attention_backward_workspace_size(B, T, Hq), &ws);
    if (st != SEQK_SUCCESS) return st;
    p.D = (float *)ws;

    const int64_t rows = B * T * Hq;
    const int64_t pre_blocks = (rows + PRE_THREADS / 32 - 1) / (PRE_THREADS / 32);
    attn_bwd_pre_kernel<<<(unsigned)(pre_blocks < 65535 ? pre_blocks : 65535), PRE_THREADS, 0,
                          seqk__stream(ctx)>>>(p);
    SEQK_CUDA_CHECK_LAUNCH(fn);

    const dim3 grid_kv = seqk__tile_grid(p.tiles, Hkv, p.N);
    const dim3 grid_q = seqk__tile_grid(p.tiles, Hq, p.N);
    const int64_t ch = ((K > V ? K : V) + 31) / 32; /* K, V <= SEQK__CUDA_ATTN_MAX_DIM = 256 */
    if (ch <= 1) return launch_tiles<1>(fn, ctx, p, grid_kv, grid_q);
    if (ch <= 2) return launch_tiles<2>(fn, ctx, p, grid_kv, grid_q);
    if (ch <= 4) return launch_tiles<4>(fn, ctx, p, grid_kv, grid_q);
    return launch_tiles<8>(fn, ctx, p, grid_kv, grid_q);
}
