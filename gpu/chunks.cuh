/* gpu/chunks.cuh -- where the sequences and chunks of a batch lie, for the
 * CUDA backends of the chunked modes (gpu/linear_state.cu, gpu/deltanet.cu).
 *
 * Sequence n holds the token rows [row0, row0 + len) of the [B*T] row index
 * (from cu_seqlens, or batch entry n of T tokens). It is cut into chunks of L
 * tokens, the last one shorter, numbered globally across the batch: sequence
 * n owns the chunks [first[n], first[n+1]), first[n] = sum_{m<n}
 * ceil(len_m / L). Without varlen first[n] = n * ceil(T / L) is computed
 * inline; with varlen the table is built on the device
 * (seqk__chunks_build_first) from the device cu_seqlens.
 */
#ifndef SEQK_GPU_CHUNKS_CUH
#define SEQK_GPU_CHUNKS_CUH

#include "common.cuh"

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

#endif
