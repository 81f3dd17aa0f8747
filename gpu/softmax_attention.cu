/*
 * gpu/softmax_attention.cu -- CUDA backend of softmax attention (DESIGN 3.5,
 * 7): the parallel mode (FlashAttention-2 style) and the decoding step
 * (Flash-Decoding: split-KV partial softmaxes merged by log-sum-exp).
 * fp32 throughout, CUDA cores only (no tensor cores): the simple, correct
 * reference backend, to be tuned when a measurement says so.
 *
 * Math (per query row, scores in log2 units: q is scaled by scale*log2(e)):
 *   s_j = q . k_j,  m = max_j s_j,  l = sum_j 2^(s_j - m),
 *   o = sum_j 2^(s_j - m) v_j / l,  lse = ln 2 * (m + log2 l).
 * Online over key tiles: m' = max(m, tile max), alpha = 2^(m - m'),
 * l' = alpha l + sum 2^(s - m'), acc' = alpha acc + P V; one division at the
 * end.
 *
 * Parallel mode: one block of ATT_WARPS warps per (query tile of ATT_BR rows,
 * query head, sequence). Each warp owns ATT_RPW query rows; lane j owns key j
 * of the ATT_BC-key tile for the scores (so the softmax of a row is a warp
 * reduction) and values lane + 32c (c < VCH) of the accumulator. Q (scaled)
 * lives in shared memory for the whole block, K and V tiles are loaded per
 * iteration (K rows with an odd stride: lane j reading row j is conflict-free).
 * Causal: key tiles past the query tile's last row are never loaded; the
 * diagonal is masked per element. Grid x runs over query tiles from the last
 * (heaviest under the causal mask) to the first; a sequence with fewer tiles
 * than the longest one exits early. Varlen: a sequence's rows are
 * [cu[n], cu[n+1]) of the packed tokens.
 *
 * Decode: (1) append k_new, v_new at cache_len[b]; (2) one block per (split
 * of DEC_CHUNK keys, query head, batch entry) computes the split's scores,
 * its max m_s and sum l_s, and writes o_s = sum 2^(s - m_s) v / l_s and
 * lse_s = m_s + log2 l_s to the workspace; (3) one block per (query head,
 * batch entry) merges the splits: M = max lse_s, w_s = 2^(lse_s - M),
 * o = sum w_s o_s / sum w_s, lse = ln 2 (M + log2 sum w_s).
 */
/* core/internal.h is a C header without C++ guards: include it first inside
 * extern "C" so that seqk__fail and seqk__workspace get C linkage here (its
 * include guard makes the later include through common.cuh a no-op). */
extern "C" {
#include "../core/internal.h"
}

#include "common.cuh"

#include <math.h>
#include <stdint.h>

#define ATT_WARPS 4
#define ATT_RPW 8                       /* query rows per warp */
#define ATT_BR (ATT_WARPS * ATT_RPW)    /* query rows per block */
#define ATT_BC 32                       /* keys per tile (one per lane) */
#define ATT_THREADS (ATT_WARPS * 32)

#define DEC_CHUNK 256 /* keys per decode split */
#define DEC_THREADS 128
#define DEC_WARPS (DEC_THREADS / 32)
#define MERGE_THREADS 128

#define LOG2E_F 1.4426950408889634f
#define LN2_F 0.6931471805599453f

static __device__ __forceinline__ float neg_inf(void) { return __int_as_float(0xff800000); }

static __device__ __forceinline__ float warp_max(float x)
{
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(SEQK__FULL_MASK, x, o));
    return x;
}

/* ------------------------------------------------------------------------ */
/* Parallel mode                                                             */
/* ------------------------------------------------------------------------ */

typedef struct attn_params {
    const float *q, *k, *v;
    float *o, *lse;
    const int32_t *cu; /* device cu_seqlens or NULL */
    int64_t T, Hq, Hkv, K, V, N;
    int64_t kst, vst; /* shared-memory row strides of the K and V tiles */
    int64_t tiles;    /* grid x: query tiles of the longest sequence */
    float scale2;     /* scale * log2(e) */
    int causal;
} attn_params;

/* VCH: value chunks of 32 per lane (V <= 32 * VCH); the only template
 * parameter, so that the accumulator stays in registers. */
template <int VCH>
__global__ void __launch_bounds__(ATT_THREADS) attn_fwd_kernel(attn_params p)
{
    extern __shared__ float smem[];
    float *qs_ = smem;                          /* [ATT_BR][K] */
    float *ks_ = qs_ + ATT_BR * p.K;            /* [ATT_BC][kst] */
    float *vs_ = ks_ + ATT_BC * p.kst;          /* [ATT_BC][vst] */
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t K = p.K, V = p.V;
    const int64_t group = p.Hq / p.Hkv;

    for (int64_t n = blockIdx.z; n < p.N; n += gridDim.z) {
        int64_t s0, s1, b; /* rows [s0, s1) of the [B*T] token array; b for the lse layout */
        seqk__seq_span(p.cu, p.T, n, &s0, &s1, &b);
        const int64_t tile = p.tiles - 1 - (int64_t)blockIdx.x;
        const int64_t q0 = s0 + tile * ATT_BR;
        if (q0 >= s1) continue; /* uniform over the block */
        for (int64_t h = blockIdx.y; h < p.Hq; h += gridDim.y) {
            const int64_t hk = h / group;
            __syncthreads(); /* the previous head's use of shared memory is done */
            for (int64_t i = threadIdx.x; i < ATT_BR * K; i += ATT_THREADS) {
                const int64_t r = i / K, d = i % K, t = q0 + r;
                qs_[i] = t < s1 ? p.q[(t * p.Hq + h) * K + d] * p.scale2 : 0.0f;
            }
            float m[ATT_RPW], l[ATT_RPW], acc[ATT_RPW][VCH];
#pragma unroll
            for (int i = 0; i < ATT_RPW; i++) {
                m[i] = neg_inf();
                l[i] = 0.0f;
#pragma unroll
                for (int c = 0; c < VCH; c++) acc[i][c] = 0.0f;
            }
            const int64_t kend = p.causal && q0 + ATT_BR < s1 ? q0 + ATT_BR : s1;
            for (int64_t k0 = s0; k0 < kend; k0 += ATT_BC) {
                __syncthreads(); /* Q stored / the previous tile consumed */
                seqk__load_rows(ks_, p.kst, p.k, k0, kend, p.Hkv, hk, K, ATT_BC, ATT_THREADS);
                for (int64_t i = threadIdx.x; i < ATT_BC * p.vst; i += ATT_THREADS) {
                    const int64_t j = i / p.vst, c = i % p.vst, t = k0 + j;
                    vs_[i] = (t < kend && c < V) ? p.v[(t * p.Hkv + hk) * V + c] : 0.0f;
                }
                __syncthreads();
                /* scores: lane = key, one accumulator per row of the warp */
                float s[ATT_RPW];
#pragma unroll
                for (int i = 0; i < ATT_RPW; i++) s[i] = 0.0f;
                seqk__rows_dot(s, qs_ + (int64_t)warp * ATT_RPW * K, ks_ + lane * p.kst, K);
                const int64_t key = k0 + lane;
                float pr[ATT_RPW];
#pragma unroll
                for (int i = 0; i < ATT_RPW; i++) {
                    const int64_t qt = q0 + warp * ATT_RPW + i;
                    const bool ok = key < kend && (!p.causal || key <= qt);
                    const float si = ok ? s[i] : neg_inf();
                    const float mnew = fmaxf(m[i], warp_max(si));
                    /* rows past the sequence may see no key: keep them finite */
                    const float muse = mnew == neg_inf() ? 0.0f : mnew;
                    pr[i] = exp2f(si - muse);
                    const float alpha = exp2f(m[i] - muse);
                    l[i] = l[i] * alpha + seqk__warp_sum(pr[i]);
                    m[i] = mnew;
#pragma unroll
                    for (int c = 0; c < VCH; c++) acc[i][c] *= alpha;
                }
                /* acc += P V: key jj's probability from lane jj, over the
                 * keys each row sees (causal: jj <= its query) */
                const int64_t jn = kend - k0 < ATT_BC ? kend - k0 : ATT_BC;
                int lo[ATT_RPW], hi[ATT_RPW];
                seqk__keys_seen(lo, hi, q0 + warp * ATT_RPW, k0, jn, p.causal);
                for (int jj = 0; jj < jn; jj++) {
                    float vv[VCH];
#pragma unroll
                    for (int c = 0; c < VCH; c++) vv[c] = vs_[jj * p.vst + lane + 32 * c];
                    seqk__bcast_fma(acc, pr, jj, vv, lo, hi);
                }
            }
#pragma unroll
            for (int i = 0; i < ATT_RPW; i++) {
                const int64_t t = q0 + warp * ATT_RPW + i;
                if (t >= s1) continue;
                const float inv = 1.0f / l[i];
#pragma unroll
                for (int c = 0; c < VCH; c++) {
                    const int64_t x = lane + 32 * c;
                    if (x < V) p.o[(t * p.Hq + h) * V + x] = acc[i][c] * inv;
                }
                if (p.lse && lane == 0)
                    p.lse[(b * p.Hq + h) * p.T + (t - b * p.T)] = LN2_F * (m[i] + log2f(l[i]));
            }
        }
    }
}

template <int VCH>
static seqk_status launch_fwd(const char *fn, seqk_context *ctx, const attn_params &p,
                              dim3 grid)
{
    const size_t smem = (size_t)(ATT_BR * p.K + ATT_BC * p.kst + ATT_BC * p.vst) * sizeof(float);
    SEQK_CUDA_TRY(fn, cudaFuncSetAttribute(attn_fwd_kernel<VCH>,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           (int)smem));
    attn_fwd_kernel<VCH><<<grid, ATT_THREADS, smem, seqk__stream(ctx)>>>(p);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    return SEQK_SUCCESS;
}

extern "C" seqk_status seqk__cuda_attention_parallel(seqk_context *ctx, int64_t B, int64_t T,
                                                     int64_t Hq, int64_t Hkv, int64_t K,
                                                     int64_t V, float scale, unsigned flags,
                                                     const float *q, const float *k,
                                                     const float *v, float *o, float *lse,
                                                     const int32_t *cu, const int32_t *cu_host,
                                                     int64_t N)
{
    static const char fn[] = "seqk_attention_parallel";
    SEQK_CUDA_TRY(fn, cudaSetDevice(ctx->device));
    attn_params p;
    p.q = q;
    p.k = k;
    p.v = v;
    p.o = o;
    p.lse = lse;
    p.cu = cu;
    p.T = T;
    p.Hq = Hq;
    p.Hkv = Hkv;
    p.K = K;
    p.V = V;
    p.N = cu ? N : B;
    p.kst = (K & 1) ? K : K + 1;
    p.scale2 = scale * LOG2E_F;
    p.causal = (flags & SEQK_ATTN_CAUSAL) != 0;
    const seqk_status st = seqk__seq_tiles(fn, T, cu ? cu_host : NULL, N, ATT_BR, &p.tiles);
    if (st != SEQK_SUCCESS || p.tiles == 0) return st;
    const dim3 grid = seqk__tile_grid(p.tiles, Hq, p.N);
    const int64_t vch = (V + 31) / 32;
    if (vch <= 1) {
        p.vst = 32;
        return launch_fwd<1>(fn, ctx, p, grid);
    }
    if (vch <= 2) {
        p.vst = 64;
        return launch_fwd<2>(fn, ctx, p, grid);
    }
    if (vch <= 4) {
        p.vst = 128;
        return launch_fwd<4>(fn, ctx, p, grid);
    }
    p.vst = 256; /* V <= SEQK__CUDA_ATTN_MAX_DIM = 256 */
    return launch_fwd<8>(fn, ctx, p, grid);
}

/* ------------------------------------------------------------------------ */
/* Decode (Flash-Decoding)                                                   */
/* ------------------------------------------------------------------------ */

typedef struct decode_params {
    const float *q, *k_new, *v_new;
    float *k_cache, *v_cache;
    const int32_t *cache_len;
    float *o, *lse;
    float *part_o;   /* [B, Hq, splits, V] */
    float *part_lse; /* [B, Hq, splits] (log2 units) */
    int64_t B, Hq, Hkv, K, V, max_len, splits;
    float scale2;
} decode_params;

/* (1) the new token's keys and values at position cache_len[b] */
__global__ void decode_append_kernel(decode_params p)
{
    for (int64_t b = blockIdx.x; b < p.B; b += gridDim.x) {
        const int64_t pos = p.cache_len[b];
        const int64_t nk = p.Hkv * p.K, nv = p.Hkv * p.V;
        for (int64_t i = threadIdx.x; i < nk; i += blockDim.x)
            p.k_cache[(b * p.max_len + pos) * nk + i] = p.k_new[b * nk + i];
        for (int64_t i = threadIdx.x; i < nv; i += blockDim.x)
            p.v_cache[(b * p.max_len + pos) * nv + i] = p.v_new[b * nv + i];
    }
}

/* (2) one split of DEC_CHUNK keys of one (batch entry, query head) */
__global__ void __launch_bounds__(DEC_THREADS) decode_partial_kernel(decode_params p)
{
    extern __shared__ float dsm[];
    float *qv = dsm;              /* [K] scaled query */
    float *sc = qv + p.K;         /* [DEC_CHUNK] scores, then probabilities */
    __shared__ float red[DEC_WARPS];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t group = p.Hq / p.Hkv;
    for (int64_t b = blockIdx.z; b < p.B; b += gridDim.z) {
        const int64_t L = (int64_t)p.cache_len[b] + 1;
        const int64_t j0 = (int64_t)blockIdx.x * DEC_CHUNK;
        if (j0 >= L) continue; /* uniform over the block */
        const int64_t jn = L - j0 < DEC_CHUNK ? L - j0 : DEC_CHUNK;
        for (int64_t h = blockIdx.y; h < p.Hq; h += gridDim.y) {
            const int64_t hk = h / group;
            __syncthreads();
            for (int64_t d = threadIdx.x; d < p.K; d += DEC_THREADS)
                qv[d] = p.q[(b * p.Hq + h) * p.K + d] * p.scale2;
            __syncthreads();
            /* scores: one warp per key, lanes across K */
            for (int64_t j = warp; j < jn; j += DEC_WARPS) {
                const float *krow = p.k_cache + ((b * p.max_len + j0 + j) * p.Hkv + hk) * p.K;
                float s = 0.0f;
                for (int64_t d = lane; d < p.K; d += 32) s = fmaf(qv[d], krow[d], s);
                s = seqk__warp_sum(s);
                if (lane == 0) sc[j] = s;
            }
            __syncthreads();
            /* max over the split */
            float mx = neg_inf();
            for (int64_t j = threadIdx.x; j < jn; j += DEC_THREADS) mx = fmaxf(mx, sc[j]);
            mx = warp_max(mx);
            if (lane == 0) red[warp] = mx;
            __syncthreads();
            mx = red[0];
            for (int w = 1; w < DEC_WARPS; w++) mx = fmaxf(mx, red[w]);
            __syncthreads(); /* red is reused below */
            /* probabilities and their sum */
            float sum = 0.0f;
            for (int64_t j = threadIdx.x; j < jn; j += DEC_THREADS) {
                const float e = exp2f(sc[j] - mx);
                sc[j] = e;
                sum += e;
            }
            sum = seqk__warp_sum(sum);
            if (lane == 0) red[warp] = sum;
            __syncthreads();
            sum = 0.0f;
            for (int w = 0; w < DEC_WARPS; w++) sum += red[w];
            /* o_s = P V / l_s, threads across V */
            const int64_t slot = (b * p.Hq + h) * p.splits + blockIdx.x;
            const float inv = 1.0f / sum;
            for (int64_t x = threadIdx.x; x < p.V; x += DEC_THREADS) {
                const float *vcol = p.v_cache + ((b * p.max_len + j0) * p.Hkv + hk) * p.V + x;
                float a = 0.0f;
                for (int64_t j = 0; j < jn; j++) a = fmaf(sc[j], vcol[j * p.Hkv * p.V], a);
                p.part_o[slot * p.V + x] = a * inv;
            }
            if (threadIdx.x == 0) p.part_lse[slot] = mx + log2f(sum);
        }
    }
}

/* (3) merge the splits of one (batch entry, query head) */
__global__ void __launch_bounds__(MERGE_THREADS) decode_merge_kernel(decode_params p)
{
    for (int64_t b = blockIdx.y; b < p.B; b += gridDim.y) {
        const int64_t L = (int64_t)p.cache_len[b] + 1;
        const int64_t ns = (L + DEC_CHUNK - 1) / DEC_CHUNK;
        for (int64_t h = blockIdx.x; h < p.Hq; h += gridDim.x) {
            const int64_t base = (b * p.Hq + h) * p.splits;
            float M = neg_inf();
            for (int64_t s = 0; s < ns; s++) M = fmaxf(M, p.part_lse[base + s]);
            float wsum = 0.0f;
            for (int64_t s = 0; s < ns; s++) wsum += exp2f(p.part_lse[base + s] - M);
            const float inv = 1.0f / wsum;
            for (int64_t x = threadIdx.x; x < p.V; x += MERGE_THREADS) {
                float a = 0.0f;
                for (int64_t s = 0; s < ns; s++)
                    a = fmaf(exp2f(p.part_lse[base + s] - M), p.part_o[(base + s) * p.V + x], a);
                p.o[(b * p.Hq + h) * p.V + x] = a * inv;
            }
            if (p.lse && threadIdx.x == 0) p.lse[b * p.Hq + h] = LN2_F * (M + log2f(wsum));
        }
    }
}

static int64_t decode_splits(int64_t len) { return (len + DEC_CHUNK - 1) / DEC_CHUNK; }

/* Workspace: part_o [B, Hq, splits, V] then part_lse [B, Hq, splits]. */
static size_t decode_ws_bytes(int64_t B, int64_t Hq, int64_t V, int64_t splits)
{
    const size_t po = seqk__align_up((size_t)(B * Hq * splits * V) * sizeof(float), 256);
    return po + (size_t)(B * Hq * splits) * sizeof(float);
}

extern "C" size_t seqk__cuda_attention_decode_workspace_size(int64_t B, int64_t Hq, int64_t V,
                                                             int64_t max_len)
{
    return decode_ws_bytes(B, Hq, V, decode_splits(max_len));
}

extern "C" seqk_status seqk__cuda_attention_decode(seqk_context *ctx, int64_t B, int64_t Hq,
                                                   int64_t Hkv, int64_t K, int64_t V,
                                                   int64_t max_len, float scale, const float *q,
                                                   const float *k_new, const float *v_new,
                                                   float *k_cache, float *v_cache,
                                                   const int32_t *cache_len,
                                                   const int32_t *cache_len_host, float *o,
                                                   float *lse)
{
    static const char fn[] = "seqk_attention_decode";
    SEQK_CUDA_TRY(fn, cudaSetDevice(ctx->device));
    int64_t longest = 0; /* tokens attended to, the longest over the batch */
    for (int64_t b = 0; b < B; b++)
        longest = cache_len_host[b] + 1 > longest ? cache_len_host[b] + 1 : longest;
    decode_params p;
    p.q = q;
    p.k_new = k_new;
    p.v_new = v_new;
    p.k_cache = k_cache;
    p.v_cache = v_cache;
    p.cache_len = cache_len;
    p.o = o;
    p.lse = lse;
    p.B = B;
    p.Hq = Hq;
    p.Hkv = Hkv;
    p.K = K;
    p.V = V;
    p.max_len = max_len;
    p.splits = decode_splits(longest);
    p.scale2 = scale * LOG2E_F;
    void *ws = NULL;
    seqk_status st = seqk__workspace(fn, ctx, decode_ws_bytes(B, Hq, V, p.splits), &ws);
    if (st != SEQK_SUCCESS) return st;
    p.part_o = (float *)ws;
    p.part_lse = (float *)((char *)ws +
                           seqk__align_up((size_t)(B * Hq * p.splits * V) * sizeof(float), 256));
    const cudaStream_t stream = seqk__stream(ctx);
    const unsigned gb = (unsigned)(B < 65535 ? B : 65535);
    const unsigned gh = (unsigned)(Hq < 65535 ? Hq : 65535);
    if (p.splits > INT32_MAX)
        return seqk__fail(SEQK_ERROR_UNSUPPORTED, "%s: max_len=%lld is too long for the CUDA grid",
                          fn, (long long)max_len);

    decode_append_kernel<<<gb, 256, 0, stream>>>(p);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    const size_t smem = (size_t)(K + DEC_CHUNK) * sizeof(float); /* K <= 256: < 48 KiB */
    decode_partial_kernel<<<dim3((unsigned)p.splits, gh, gb), DEC_THREADS, smem, stream>>>(p);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    decode_merge_kernel<<<dim3(gh, gb), MERGE_THREADS, 0, stream>>>(p);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    return SEQK_SUCCESS;
}
