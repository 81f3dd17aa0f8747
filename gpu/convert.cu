/*
 * gpu/convert.cu -- dtype conversions of the _ex entry points' converting
 * path (core/dtype.c) on a CUDA context: n elements bf16 / f16 <-> fp32 on
 * the context's stream. Integer bit manipulation only (no cuda_bf16.h /
 * cuda_fp16.h intrinsics), so that the same kernel runs in the emulator and
 * gives exactly the bits of core/dtype.c's scalar code: round to nearest
 * even, NaN -> quiet NaN with the top payload bits, f16 overflow -> inf,
 * f16 subnormals rounded (not flushed). Grid-stride loops, one element per
 * thread per step (the conversion is bandwidth-bound).
 */
#include "common.cuh"

#include <stdint.h>
#include <string.h>

enum { CVT_THREADS = 256, CVT_MAX_BLOCKS = 4096 };

static __device__ __forceinline__ uint32_t cvt_f32_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

static __device__ __forceinline__ float cvt_bits_f32(uint32_t u)
{
    float x;
    memcpy(&x, &u, 4);
    return x;
}

static __device__ __forceinline__ uint16_t cvt_bf16_from_bits(uint32_t u)
{
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static __device__ __forceinline__ uint16_t cvt_f16_from_bits(uint32_t u)
{
    const uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);
    if (a >= 0x38800000u) {
        const uint32_t r = a - 0x38000000u;
        return (uint16_t)(sign | ((r + 0xfffu + ((r >> 13) & 1u)) >> 13));
    }
    if (a < 0x33000000u) return (uint16_t)sign;
    const uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u;
    const unsigned shift = 126u - e;
    uint32_t q = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u))) q++;
    return (uint16_t)(sign | q);
}

static __device__ __forceinline__ uint32_t cvt_f16_to_bits(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu;
    uint32_t m = h & 0x3ffu;
    if (e == 0x1f) return sign | 0x7f800000u | (m << 13) | (m ? 0x400000u : 0u);
    if (e) return sign | ((e + 112u) << 23) | (m << 13);
    if (!m) return sign;
    uint32_t ex = 113;
    while (!(m & 0x400u)) m <<= 1, ex--;
    return sign | (ex << 23) | ((m & 0x3ffu) << 13);
}

/* dtype -> fp32; bf16 when is_bf16, else f16. */
static __global__ void cvt_to_f32_kernel(const uint16_t *src, float *dst, int64_t n, int is_bf16)
{
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const uint16_t h = src[i];
        dst[i] = cvt_bits_f32(is_bf16 ? (uint32_t)h << 16 : cvt_f16_to_bits(h));
    }
}

/* fp32 -> dtype. */
static __global__ void cvt_from_f32_kernel(const float *src, uint16_t *dst, int64_t n,
                                           int is_bf16)
{
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const uint32_t u = cvt_f32_bits(src[i]);
        dst[i] = is_bf16 ? cvt_bf16_from_bits(u) : cvt_f16_from_bits(u);
    }
}

extern "C" seqk_status seqk__cuda_convert(const char *fn, seqk_context *ctx, seqk_dtype dtype,
                                          int to_f32, const void *src, void *dst, int64_t n)
{
    if (n <= 0) return SEQK_SUCCESS;
    SEQK_CUDA_TRY(fn, cudaSetDevice(ctx->device));
    const cudaStream_t stream = seqk__stream(ctx);
    const int64_t want = (n + CVT_THREADS - 1) / CVT_THREADS;
    const int64_t most = CVT_MAX_BLOCKS;
    const unsigned blocks = (unsigned)(want < most ? want : most);
    const int is_bf16 = dtype == SEQK_DTYPE_BF16;
    if (to_f32)
        cvt_to_f32_kernel<<<blocks, CVT_THREADS, 0, stream>>>((const uint16_t *)src, (float *)dst,
                                                              n, is_bf16);
    else
        cvt_from_f32_kernel<<<blocks, CVT_THREADS, 0, stream>>>((const float *)src,
                                                                (uint16_t *)dst, n, is_bf16);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    return SEQK_SUCCESS;
}
