/* gpu/chunks.cuh -- where the sequences and chunks of a batch lie, for the
 * CUDA backends of the chunked modes (gpu/linear_state*.cu, gpu/deltanet.cu,
 * gpu/selective_scan*.cu).
 *
 * Sequence n holds the token rows [row0, row0 + len) of the [B*T] row index
 * (from cu_seqlens, or batch entry n of T tokens). It is cut into chunks of L
 * tokens, the last one shorter, numbered globally across the batch: sequence
 * n owns the chunks [first[n], first[n+1]), first[n] = sum_{m<n}
 * ceil(len_m / L). Without varlen first[n] = n * ceil(T / L) is computed
 * inline; with varlen the table is built on the device
 * (seqk__chunks_build_first) from the device cu_seqlens.
 *
 * Below the layout: what the linear-state engine's forward
 * (gpu/linear_state.cu) and backward (gpu/linear_state_backward.cu) share:
 * the feature map, the log-decays and their per-chunk scan, the 4 x 4
 * register tiles of the chunk products, and launch helpers.
 */
#ifndef SEQK_GPU_CHUNKS_CUH
#define SEQK_GPU_CHUNKS_CUH

/* C headers without C++ guards (their include guards make these no-ops when
 * the including .cu file has already included them inside extern "C"). */
extern "C" {
#include "../core/internal.h"
#include "../scan/linear_state.h"
}

#include "common.cuh"

#include <limits.h>
#include <stdint.h>

/* The sequence and chunk layout of one call, passed to the kernels by value
 * inside their argument structs. */
typedef struct seqk__chunks {
    const int32_t *cu;    /* device cu_seqlens [N+1], or NULL: N = B sequences of T tokens */
    const int32_t *first; /* device [N+1] first global chunk of each sequence (varlen), or NULL */
    int64_t T;            /* tokens per batch entry (without varlen) */
    int64_t N;            /* sequences */
    int64_t cps;          /* chunks per sequence without varlen: ceil(T / L) */
    int L;                /* tokens per chunk */
} seqk__chunks;

/* The layout of N sequences (B*T rows; cu_device NULL: B of T tokens each) in
 * chunks of L tokens; first stays NULL until seqk__chunks_build_first. */
static inline seqk__chunks seqk__chunks_of(int64_t T, int64_t N, int64_t L,
                                           const int32_t *cu_device)
{
    seqk__chunks m;
    m.cu = cu_device;
    m.first = NULL;
    m.T = T;
    m.N = N;
    m.cps = (T + L - 1) / L;
    m.L = (int)L;
    return m;
}

/* <<<1, SEQK__PREFIX_THREADS>>>: the chunk table first [N+1] of a varlen batch. */
static __global__ void __launch_bounds__(SEQK__PREFIX_THREADS)
    seqk__chunk_first_kernel(const int32_t *cu, int64_t N, int64_t L, int32_t *first)
{
    seqk__chunk_prefix(cu, N, L, first);
}

/* Varlen (m->cu set): builds the chunk table into first (device memory, N+1
 * int32) on the stream and points m->first at it. */
static inline seqk_status seqk__chunks_build_first(const char *fn, seqk__chunks *m,
                                                   int32_t *first, cudaStream_t stream)
{
    seqk__chunk_first_kernel<<<1, SEQK__PREFIX_THREADS, 0, stream>>>(m->cu, m->N, m->L, first);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    m->first = first;
    return SEQK_SUCCESS;
}

/* Token rows [row0, row0 + len) of sequence n. */
static __device__ __forceinline__ void seqk__chunks_seq(const seqk__chunks &m, int64_t n,
                                                       int64_t *row0, int64_t *len)
{
    seqk__seq_rows(m.cu, m.T, n, row0, len);
}

/* Global chunk range [c_begin, c_end) of sequence n. */
static __device__ __forceinline__ void seqk__chunks_range(const seqk__chunks &m, int64_t n,
                                                         int64_t *c_begin, int64_t *c_end)
{
    if (m.first) {
        *c_begin = m.first[n];
        *c_end = m.first[n + 1];
    } else {
        *c_begin = n * m.cps;
        *c_end = (n + 1) * m.cps;
    }
}

/* Global chunk c -> its first token row r0 and its length Lc. */
static inline __device__ void seqk__chunk_rows(const seqk__chunks &m, int64_t c, int64_t *r0,
                                               int *Lc)
{
    int64_t n, ci;
    if (m.first) {
        /* the largest n < N with first[n] <= c (empty sequences own no chunk) */
        int64_t lo = 0, hi = m.N - 1;
        while (lo < hi) {
            const int64_t mid = (lo + hi + 1) / 2;
            if (m.first[mid] <= c) lo = mid;
            else hi = mid - 1;
        }
        n = lo;
        ci = c - m.first[n];
    } else {
        n = c / m.cps;
        ci = c - n * m.cps;
    }
    int64_t row0, len;
    seqk__chunks_seq(m, n, &row0, &len);
    const int64_t c0 = ci * m.L;
    *r0 = row0 + c0;
    *Lc = (int)(len - c0 < m.L ? len - c0 : m.L);
}

/* The same lookup from loose arguments (gpu/selective_scan*.cu): chunk c's
 * sequence n and rows [r0, r0 + len), chunks of L tokens numbered by the
 * device table coff [N+1] (varlen) or cps per sequence. */
static __device__ __forceinline__ void seqk__chunk_locate(const int32_t *coff,
                                                         const int32_t *cu, int64_t N, int64_t T,
                                                         int64_t L, int64_t cps, int64_t c,
                                                         int64_t *n, int64_t *r0, int64_t *len)
{
    int64_t k;
    if (coff) { /* the n with coff[n] <= c < coff[n+1] */
        int64_t lo = 0, hi = N;
        while (hi - lo > 1) {
            const int64_t mid = (lo + hi) / 2;
            if (coff[mid] <= c) lo = mid;
            else hi = mid;
        }
        *n = lo;
        k = c - coff[lo];
    } else {
        *n = c / cps;
        k = c % cps;
    }
    int64_t s0, sl;
    seqk__seq_rows(cu, T, *n, &s0, &sl);
    *r0 = s0 + k * L;
    const int64_t rest = sl - k * L;
    *len = rest < L ? rest : L;
}

/* The carries of the chunked selective scan (gpu/selective_scan*.cu), for
 * state element e = d Nst + s of DN = D Nst: over the chunks [c0, c1) in
 * order, hc[c DN + e] (the chunk's end state from a zero start) is replaced
 * by the state into chunk c, starting from h; returns the state after the
 * last chunk. The decay of chunk c is 2^(A2 sdt[c D + d]) (A2 = A log2 e). */
static __device__ __forceinline__ float seqk__sscan_carry(float *hc, const float *sdt, int64_t DN,
                                                         int64_t D, int64_t e, int64_t d,
                                                         float A2, int64_t c0, int64_t c1,
                                                         float h)
{
    for (int64_t c = c0; c < c1; c++) {
        float *hp = hc + c * DN + e;
        const float end = *hp;
        *hp = h;
        h = fmaf(exp2f(A2 * sdt[c * D + d]), h, end);
    }
    return h;
}

/* Global chunk c of a warp-per-(chunk, head) kernel: warp wid of the grid
 * (warps per block), over nwork = chunks * H. False for the warps past the
 * end (whole warps: no warp operation is cut). */
static __device__ __forceinline__ bool seqk__chunk_head_warp(const seqk__chunks &m, int H,
                                                            int warps, int64_t nwork,
                                                            int64_t *c, int *h, int64_t *r0,
                                                            int *Lc)
{
    const int64_t wid = (int64_t)blockIdx.x * warps + (threadIdx.x >> 5);
    if (wid >= nwork) return false;
    *c = wid / H;
    *h = (int)(wid - *c * H);
    seqk__chunk_rows(m, *c, r0, Lc);
    return true;
}

/* The packed row (b = c H + h, i < L) of warp w of a warp-per-row kernel
 * (`warps` per block) over nrows = chunks * H * L rows, as the native
 * bf16 / f16 paths pack a chunk's rows (gpu/linear_state*.cu): chunk c,
 * head h, row i, the chunk's first token row r0 and length Lc. False for the
 * warps past the end. */
static __device__ __forceinline__ bool seqk__chunk_row_warp(const seqk__chunks &m, int H,
                                                           int warps, int64_t nrows, int64_t *b,
                                                           int *i, int64_t *c, int *h,
                                                           int64_t *r0, int *Lc)
{
    const int64_t row = (int64_t)blockIdx.x * warps + (threadIdx.x >> 5);
    if (row >= nrows) return false;
    *b = row / m.L;
    *i = (int)(row - *b * m.L);
    *c = *b / H;
    *h = (int)(*b - *c * H);
    seqk__chunk_rows(m, *c, r0, Lc);
    return true;
}

/* The gate gradient's sums inside one chunk (rows [r0, r0 + Lc) of head h of
 * H), each by one warp (every lane calling), from per-token terms (see
 * scan/chunk_backward.c): d(log a_t) = sum_{i >= t} gt_i + Dterm +
 * sum_{j < t} bt_j. seqk__chunk_gate_rev: dld (holding gt) <- its reverse
 * inclusive sum; seqk__chunk_gate_fwd: dld += Dterm + the exclusive forward
 * sum of bt. A lane reads elements the other lanes wrote in the first: two
 * launches (the CPU emulator has no __syncwarp). */
static __device__ __forceinline__ void seqk__chunk_gate_rev(float *dld, int64_t r0, int Lc, int H,
                                                           int h)
{
    const int lane = threadIdx.x & 31;
    float carry = 0.0f;
    for (int i0 = 0; i0 < Lc; i0 += 32) {
        const int i = Lc - 1 - (i0 + lane); /* lane 0: the latest token */
        float x = i >= 0 ? dld[(r0 + i) * H + h] : 0.0f;
        x = seqk__warp_incl_scan(x) + carry;
        if (i >= 0) dld[(r0 + i) * H + h] = x;
        carry = __shfl_sync(SEQK__FULL_MASK, x, 31); /* lanes past the start add 0 */
    }
}

static __device__ __forceinline__ void seqk__chunk_gate_fwd(float *dld, const float *bt,
                                                           float Dterm, int64_t r0, int Lc, int H,
                                                           int h)
{
    const int lane = threadIdx.x & 31;
    float carry = Dterm;
    for (int i0 = 0; i0 < Lc; i0 += 32) {
        const int i = i0 + lane;
        float x = i < Lc ? bt[(r0 + i) * H + h] : 0.0f;
        x = seqk__warp_incl_scan(x);
        /* exclusive: the previous lane's inclusive sum (not x - b: b_{L-1}
         * is O(1) where the others may be ~exp(g)) */
        float ex = __shfl_up_sync(SEQK__FULL_MASK, x, 1);
        if (lane == 0) ex = 0.0f;
        if (i < Lc) dld[(r0 + i) * H + h] += carry + ex;
        carry += __shfl_sync(SEQK__FULL_MASK, x, 31);
    }
}

/* ---- the linear-state engine, forward and backward ------------------------------ */

/* log-gammas passed by value in the kernel arguments up to this many heads */
enum { SEQK__LIN_LG_INLINE = 256 };

/* The log-decay's inputs, by value inside the kernel arguments:
 * log a[t,h] = g[t,h] * (g_head ? g_head[h] : 1) + (has_lg ? log_gamma[h] : 0),
 * log_gamma from lg (H <= SEQK__LIN_LG_INLINE) or lg_dev. */
typedef struct seqk__lin_gates {
    const float *g, *g_head; /* [B*T, H], [H], or NULL */
    const float *lg_dev;     /* device log_gamma [H] when H > SEQK__LIN_LG_INLINE, else NULL */
    int has_lg;
    float lg[SEQK__LIN_LG_INLINE];
} seqk__lin_gates;

/* The gates of P; a log_gamma of more than SEQK__LIN_LG_INLINE heads is
 * copied to lg_ws (device, H floats) and waited for: the host array may be
 * freed as soon as the call returns. */
static inline seqk_status seqk__lin_gates_of(const char *fn, const seqk__lin *P, float *lg_ws,
                                             cudaStream_t stream, seqk__lin_gates *gt)
{
    gt->g = P->g, gt->g_head = P->g_head;
    gt->lg_dev = NULL;
    gt->has_lg = 0;
    if (!P->log_gamma) return SEQK_SUCCESS;
    gt->has_lg = 1;
    if (P->H <= SEQK__LIN_LG_INLINE) {
        for (int64_t h = 0; h < P->H; h++) gt->lg[h] = P->log_gamma[h];
    } else {
        SEQK_CUDA_TRY(fn, cudaMemcpyAsync(lg_ws, P->log_gamma, (size_t)P->H * sizeof(float),
                                          cudaMemcpyHostToDevice, stream));
        SEQK_CUDA_TRY(fn, cudaStreamSynchronize(stream));
        gt->lg_dev = lg_ws;
    }
    return SEQK_SUCCESS;
}

/* The native bf16 / f16 path's chunk operands (gpu/linear_state.cu, its
 * stages (0) to (6)), which the native backward (gpu/linear_state_backward.cu)
 * recomputes with the forward's own code rather than a copy of it. Chunk c,
 * head h is batch entry b = c H + h (nb = nchunks H); rows past a short last
 * chunk are zeros. Device pointers into the workspace. */
typedef struct seqk__lin_lp {
    seqk__chunks map;          /* the call's chunks (first set with varlen) */
    int64_t nchunks;
    double *Gc;                /* [B*T, H] in-chunk cumulative log-decay (decay only) */
    float *acoef;              /* [nchunks, H] exp(G_last) (decay only) */
    float *states;             /* [nb, K, V] the state before each chunk, fp32 */
    const uint16_t *Qa, *Ka;   /* [nb, L, K] phi(q), phi(k), rounded (the inputs without elu) */
    const uint16_t *Qg, *Kd;   /* [nb, L, K] exp(G) scale phi(q), exp(G_last - G) phi(k), rounded */
    const uint16_t *Va;        /* [nb, L, V] v_scale v, rounded (v itself without v_scale) */
    const uint16_t *Pm;        /* [nb, L, L] (scale Qa Ka^T) .* D, rounded */
    const uint16_t *S0b;       /* [nb, K, V] states, rounded */
    float *Sc;                 /* [nb, L, L] scale Qa Ka^T (fp32, before the mask) */
} seqk__lin_lp;

/* Workspace bytes of seqk__cuda_lin_lp_states for P (P->dtype BF16 / F16). */
size_t seqk__cuda_lin_lp_workspace(const seqk__lin *P);
/* The native forward's stages (0) to (6) for P (dtype BF16 / F16, no
 * normaliser; P->s_out written when set) into ws (device, at least
 * seqk__cuda_lin_lp_workspace(P) bytes), on ctx's stream; *out points into
 * ws. */
seqk_status seqk__cuda_lin_lp_states(const char *fn, seqk_context *ctx, const seqk__lin *P,
                                     const int32_t *cu_device, char *ws, seqk__lin_lp *out);

/* The feature map: elu(x) + 1 with elu, else x (scan/linear_state.h). */
static __device__ __forceinline__ float seqk__lin_phi(float x, int elu)
{
    if (!elu) return x;
    return x > 0.0f ? x + 1.0f : expf(x);
}

/* log_gamma[h] (0 when absent). */
static __device__ __forceinline__ float seqk__lin_head_lg(const seqk__lin_gates &gt, int h)
{
    if (!gt.has_lg) return 0.0f;
    return gt.lg_dev ? gt.lg_dev[h] : gt.lg[h];
}

/* log a for token row r, head h of H (lgh = seqk__lin_head_lg(gt, h)); as
 * seqk__lin_logdecay. */
static __device__ __forceinline__ float seqk__lin_logdecay(const seqk__lin_gates &gt, int H,
                                                          int64_t r, int h, float lgh)
{
    float ld = 0.0f;
    if (gt.g) ld = gt.g[r * H + h] * (gt.g_head ? gt.g_head[h] : 1.0f);
    if (gt.has_lg) ld += lgh;
    return ld;
}

/* The chunk-state scan of one state element over the chunks [c0, c1) of
 * head h (H heads): st[c HE], chunk c's local term, is replaced by the state
 * before chunk c, starting from carry, and carry = a_c carry + st[c HE]
 * (a_c = acoef[c H + h], 1 without decay); returns the state after the last
 * chunk. */
static __device__ __forceinline__ float seqk__lin_carry(float *st, int64_t HE, const float *acoef,
                                                       int decay, int H, int h, int64_t c0,
                                                       int64_t c1, float carry)
{
    for (int64_t c = c0; c < c1; c++) {
        const float u = st[c * HE];
        const float cf = decay ? acoef[c * H + h] : 1.0f;
        st[c * HE] = carry;
        carry = fmaf(cf, carry, u);
    }
    return carry;
}

/* The 64 x 64 output tiles of the chunk products: thread (tx, ty) = (tid %
 * 16, tid / 16) of 256 keeps a 4 x 4 register tile, rows ty + 16 m,
 * columns tx + 16 j. */
static __device__ __forceinline__ void seqk__tile4_zero(float acc[4][4])
{
#pragma unroll
    for (int m = 0; m < 4; m++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[m][j] = 0.0f;
}

/* One step of the inner dimension: acc[m][j] += x[m xs] y[j ys], x at the
 * thread's first row's element, y at its first column's (one FMA per output,
 * in the order of the steps). */
static __device__ __forceinline__ void seqk__tile4_step(float acc[4][4], const float *x, int xs,
                                                       const float *y, int ys)
{
    float xr[4], yr[4];
#pragma unroll
    for (int m = 0; m < 4; m++) xr[m] = x[m * xs];
#pragma unroll
    for (int j = 0; j < 4; j++) yr[j] = y[j * ys];
#pragma unroll
    for (int m = 0; m < 4; m++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[m][j] = fmaf(xr[m], yr[j], acc[m][j]);
}

/* Blocks of a flattened grid, or 0 when it does not fit a launch. */
static inline unsigned seqk__grid_of(int64_t blocks)
{
    return blocks > 0 && blocks <= INT_MAX ? (unsigned)blocks : 0u;
}

/* const unsigned var = the grid of `blocks` blocks, or return UNSUPPORTED
 * from the enclosing function (fn names the seqk function). */
#define SEQK__GRID_OR_FAIL(var, blocks)                                                       \
    const unsigned var = seqk__grid_of(blocks);                                                \
    if (var == 0)                                                                              \
        return seqk__fail(SEQK_ERROR_UNSUPPORTED, "%s: %lld blocks do not fit one launch", fn, \
                          (long long)(blocks))

/* Blocks of a grid-stride launch over n elements, threads each: at least
 * one, at most 65536. */
static inline unsigned seqk__elem_grid(int64_t n, int threads)
{
    const int64_t b = (n + threads - 1) / threads;
    return (unsigned)(b < 65536 ? (b > 0 ? b : 1) : 65536); /* grid-stride beyond */
}

#endif
