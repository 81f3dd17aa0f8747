/* gpu/common.cuh -- helpers shared by the CUDA files: error checks that turn
 * a CUDA error into a seqk status and message, launch helpers, and the
 * device helpers more than one kernel file needs (warp reductions, a
 * sequence's token rows, the varlen chunk table). */
#ifndef SEQK_GPU_COMMON_CUH
#define SEQK_GPU_COMMON_CUH

#include "gpu.h"

#include <cuda_runtime.h>
#include <stdint.h>

/* Returns from the enclosing function with SEQK_ERROR_BACKEND when a CUDA
 * runtime call fails; fn names the seqk function. The runtime's last error is
 * reset (a no-op for sticky errors), so that the launch check of a later call
 * does not report this failure again as its own. */
#define SEQK_CUDA_TRY(fn, call)                                                         \
    do {                                                                                \
        cudaError_t e_ = (call);                                                        \
        if (e_ != cudaSuccess) {                                                        \
            (void)cudaGetLastError();                                                   \
            return seqk__fail(SEQK_ERROR_BACKEND, "%s: %s failed: %s (%s)", (fn), #call, \
                              cudaGetErrorName(e_), cudaGetErrorString(e_));            \
        }                                                                               \
    } while (0)

/* Returns from the enclosing function with the status of a seqk call that
 * failed (its message already set). */
#define SEQK__STATUS_TRY(call)                 \
    do {                                       \
        const seqk_status st_ = (call);        \
        if (st_ != SEQK_SUCCESS) return st_;   \
    } while (0)

/* After a kernel launch: the launch error, if any. */
#define SEQK_CUDA_CHECK_LAUNCH(fn) SEQK_CUDA_TRY(fn, cudaGetLastError())

static inline cudaStream_t seqk__stream(const seqk_context *ctx)
{
    return (cudaStream_t)ctx->stream;
}

static inline unsigned seqk__ceil_div(int64_t n, int64_t d) { return (unsigned)((n + d - 1) / d); }

/* Chunks (or tiles) of L tokens over all sequences: exact with the host
 * cu_seqlens (the sum of ceil(len_n / L)); without them B ceil(T / L) when
 * N == B, else (a varlen size query without cu_seqlens) the bound
 * ceil(B T / L) + N. */
static inline int64_t seqk__count_chunks(const int32_t *cu_host, int64_t N, int64_t B, int64_t T,
                                         int64_t L)
{
    if (cu_host) {
        int64_t s = 0;
        for (int64_t n = 0; n < N; n++) s += ((int64_t)cu_host[n + 1] - cu_host[n] + L - 1) / L;
        return s;
    }
    if (N == B) return B * ((T + L - 1) / L);
    return (B * T + L - 1) / L + N;
}

/* Tiles of `rows` tokens in the longest sequence (T, or the longest of the
 * N in cu_host when not NULL) into *tiles, the x extent of a grid; fails
 * with UNSUPPORTED past INT32_MAX. */
static inline seqk_status seqk__seq_tiles(const char *fn, int64_t T, const int32_t *cu_host,
                                          int64_t N, int64_t rows, int64_t *tiles)
{
    int64_t longest = T;
    if (cu_host) {
        longest = 0;
        for (int64_t n = 0; n < N; n++)
            longest = cu_host[n + 1] - cu_host[n] > longest ? cu_host[n + 1] - cu_host[n] : longest;
    }
    *tiles = (longest + rows - 1) / rows;
    if (*tiles > INT32_MAX)
        return seqk__fail(SEQK_ERROR_UNSUPPORTED, "%s: T=%lld is too long for the CUDA grid", fn,
                          (long long)T);
    return SEQK_SUCCESS;
}

/* The grid (tiles, heads, sequences), y and z capped at 65535 (the kernels
 * stride over the rest). */
static inline dim3 seqk__tile_grid(int64_t tiles, int64_t heads, int64_t N)
{
    return dim3((unsigned)tiles, (unsigned)(heads < 65535 ? heads : 65535),
                (unsigned)(N < 65535 ? N : 65535));
}

/* Dynamic shared memory above the 48 KB default needs an opt-in per kernel. */
template <typename Kern>
static seqk_status seqk__smem_optin(const char *fn, Kern kernel, size_t bytes)
{
    if (bytes > 48 * 1024)
        SEQK_CUDA_TRY(fn, cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               (int)bytes));
    return SEQK_SUCCESS;
}

/* ---- device helpers ------------------------------------------------------------ */

/* Every lane of a warp, for the *_sync intrinsics. */
#define SEQK__FULL_MASK 0xffffffffu

/* The sum of x over the 32 lanes of a warp, in every lane (xor butterfly). */
static __device__ __forceinline__ float seqk__warp_sum(float x)
{
    for (int off = 16; off > 0; off >>= 1) x += __shfl_xor_sync(SEQK__FULL_MASK, x, off);
    return x;
}

/* The same in double, for sums over all tokens whose terms cancel. */
static __device__ __forceinline__ double seqk__warp_sum_d(double x)
{
    for (int off = 16; off > 0; off >>= 1) x += __shfl_xor_sync(SEQK__FULL_MASK, x, off);
    return x;
}

/* softplus(x) = log(1 + e^x), x itself above 20: the device twin of
 * core/vmath.h's seqk__softplus. */
static __device__ __forceinline__ float seqk__dev_softplus(float x)
{
    return x > 20.0f ? x : log1pf(expf(x));
}

/* The inclusive sum of x over the lanes 0..lane of a warp (every lane
 * calling; Hillis-Steele, lane order fixed). */
static __device__ __forceinline__ float seqk__warp_incl_scan(float x)
{
    const int lane = (int)(threadIdx.x & 31);
    for (int off = 1; off < 32; off <<= 1) {
        const float y = __shfl_up_sync(SEQK__FULL_MASK, x, off);
        if (lane >= off) x += y;
    }
    return x;
}

/* The same in double. */
static __device__ __forceinline__ double seqk__warp_incl_scan_d(double x)
{
    const int lane = (int)(threadIdx.x & 31);
    for (int off = 1; off < 32; off <<= 1) {
        const double y = __shfl_up_sync(SEQK__FULL_MASK, x, off);
        if (lane >= off) x += y;
    }
    return x;
}

/* One token's factors q~ = fq q, k~ = fk k, computed by a whole warp (every
 * lane gets them): fq = scale, fk = 1, or with l2 fq = scale / sqrt(|q|^2 +
 * eps), fk = 1 / sqrt(|k|^2 + eps). The device twin of linear_state.h's
 * seqk__lin_qk_factors (callers pass SEQK__LIN_L2NORM_EPS). q, k: K floats. */
static __device__ __forceinline__ float2 seqk__warp_qk_factors(const float *q, const float *k, int K,
                                                              float scale, bool l2, float eps)
{
    if (!l2) return make_float2(scale, 1.0f);
    float sq = 0.0f, sk = 0.0f;
    for (int i = (int)(threadIdx.x & 31); i < K; i += 32) {
        sq = fmaf(q[i], q[i], sq);
        sk = fmaf(k[i], k[i], sk);
    }
    sq = seqk__warp_sum(sq);
    sk = seqk__warp_sum(sk);
    return make_float2(scale / sqrtf(sq + eps), 1.0f / sqrtf(sk + eps));
}

/* Token rows [row0, row0 + len) of sequence n in the [B*T] row index: from
 * the device cu_seqlens when given, else batch entry n of T tokens. */
static __device__ __forceinline__ void seqk__seq_rows(const int32_t *cu, int64_t T, int64_t n,
                                                      int64_t *row0, int64_t *len)
{
    if (cu) {
        *row0 = cu[n];
        *len = (int64_t)cu[n + 1] - cu[n];
    } else {
        *row0 = n * T;
        *len = T;
    }
}

/* Rows [s0, s1) of sequence n in the [B*T] row index, and its batch entry b
 * in per-token layouts [B, H, T] (0 with cu_seqlens: varlen rows are packed
 * into one entry). */
static __device__ __forceinline__ void seqk__seq_span(const int32_t *cu, int64_t T, int64_t n,
                                                      int64_t *s0, int64_t *s1, int64_t *b)
{
    *s0 = cu ? (int64_t)cu[n] : n * T;
    *s1 = cu ? (int64_t)cu[n + 1] : (n + 1) * T;
    *b = cu ? 0 : n;
}

/* The block's `threads` threads in turn: dst[j st + d] = x[(t H + h) D + d]
 * for the R rows t = t0 + j (zeros where t >= tend), d < D; st = D packs
 * them, an odd st keeps lane j's row reads conflict-free. */
static __device__ __forceinline__ void seqk__load_rows(float *dst, int64_t st, const float *x,
                                                       int64_t t0, int64_t tend, int64_t H,
                                                       int64_t h, int64_t D, int R, int threads)
{
    for (int64_t i = threadIdx.x; i < R * D; i += threads) {
        const int64_t j = i / D, d = i % D, t = t0 + j;
        dst[j * st + d] = t < tend ? x[(t * H + h) * D + d] : 0.0f;
    }
}

/* s[i] += sum_d rows[i n + d] x[d] for the R rows (one FMA per term, d in
 * order): a warp's R rows (broadcast reads) against its lane's vector. */
template <int R>
static __device__ __forceinline__ void seqk__rows_dot(float (&s)[R], const float *rows,
                                                      const float *x, int64_t n)
{
    for (int64_t d = 0; d < n; d++) {
        const float xv = x[d];
#pragma unroll
        for (int i = 0; i < R; i++) s[i] = fmaf(rows[i * n + d], xv, s[i]);
    }
}

/* acc[i][c] += w_i x[c] for the R rows of a warp, w_i = w[i] of lane j
 * (one shuffle per row; every lane calling with the same j), for the rows
 * with lo[i] <= j < hi[i] only (the others' entry j is masked: its weight 0
 * never multiplies x, which may hold a NaN or inf that the row must not see;
 * the condition is the same for every lane). */
template <int R, int C>
static __device__ __forceinline__ void seqk__bcast_fma(float (&acc)[R][C], const float (&w)[R],
                                                       int j, const float (&x)[C],
                                                       const int (&lo)[R], const int (&hi)[R])
{
#pragma unroll
    for (int i = 0; i < R; i++) {
        const float wj = __shfl_sync(SEQK__FULL_MASK, w[i], j);
        if (j >= lo[i] && j < hi[i]) {
#pragma unroll
            for (int c = 0; c < C; c++) acc[i][c] = fmaf(wj, x[c], acc[i][c]);
        }
    }
}

/* The keys [lo[i], hi[i]) of a tile of jn keys from k0 that the warp's R
 * query rows q_first + i see (all jn without the causal mask, else those up
 * to the row's query): seqk__bcast_fma's ranges over such a tile. */
template <int R>
static __device__ __forceinline__ void seqk__keys_seen(int (&lo)[R], int (&hi)[R],
                                                       int64_t q_first, int64_t k0, int64_t jn,
                                                       bool causal)
{
#pragma unroll
    for (int i = 0; i < R; i++) {
        const int64_t see = q_first + i - k0 + 1;
        lo[i] = 0;
        hi[i] = (int)(!causal || see > jn ? jn : see < 0 ? 0 : see);
    }
}

/* Where this block lies in a grid over (sequence n, head h, column block vb)
 * of N*H*nvb blocks, numbered (n H + h) nvb + vb; nh = n H + h. */
typedef struct seqk__nhv {
    int64_t n, nh;
    int h, vb;
} seqk__nhv;

static __device__ __forceinline__ seqk__nhv seqk__block_nhv(int nvb, int H)
{
    const int64_t id = blockIdx.x;
    seqk__nhv b;
    b.vb = (int)(id % nvb);
    b.h = (int)((id / nvb) % H);
    b.n = id / ((int64_t)nvb * H);
    b.nh = b.n * H + b.h;
    return b;
}

/* Threads of the one block that runs seqk__chunk_prefix. */
enum { SEQK__PREFIX_THREADS = 1024 };
static_assert(SEQK__PREFIX_THREADS == 32 * 32, "one warp scans the per-warp totals");

/* In one block of SEQK__PREFIX_THREADS threads, all of which call it:
 * first[n] = sum_{m<n} ceil(len_m / L) for n = 0..N, len_m = cu[m+1] - cu[m]
 * (device cu_seqlens), i.e. the global numbering of the L-token chunks (or
 * tiles) of a varlen batch, sequence n owning [first[n], first[n+1]).
 * SEQK__PREFIX_THREADS sequences per round: a scan in each warp, a scan of
 * the 32 warp totals, and the total of the rounds before, kept by every
 * thread. */
static __device__ __forceinline__ void seqk__chunk_prefix(const int32_t *cu, int64_t N, int64_t L,
                                                          int32_t *first)
{
    __shared__ int32_t wsum[SEQK__PREFIX_THREADS / 32];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    int32_t run = 0; /* total of the previous rounds, the same in every thread */
    for (int64_t base = 0; base < N; base += SEQK__PREFIX_THREADS) {
        const int64_t n = base + tid;
        int32_t cnt = 0;
        if (n < N) cnt = (int32_t)(((int64_t)cu[n + 1] - cu[n] + L - 1) / L);
        int32_t v = cnt; /* inclusive scan over the warp */
#pragma unroll
        for (int d = 1; d < 32; d *= 2) {
            const int32_t u = __shfl_up_sync(SEQK__FULL_MASK, v, d);
            if (lane >= d) v += u;
        }
        if (lane == 31) wsum[warp] = v;
        __syncthreads();
        if (warp == 0) { /* inclusive scan over the warp totals */
            int32_t w = wsum[lane];
#pragma unroll
            for (int d = 1; d < 32; d *= 2) {
                const int32_t u = __shfl_up_sync(SEQK__FULL_MASK, w, d);
                if (lane >= d) w += u;
            }
            wsum[lane] = w;
        }
        __syncthreads();
        if (n < N) first[n] = run + (warp > 0 ? wsum[warp - 1] : 0) + v - cnt;
        run += wsum[SEQK__PREFIX_THREADS / 32 - 1];
        __syncthreads(); /* wsum is rewritten next round */
    }
    if (tid == 0) first[N] = run;
}

#endif
