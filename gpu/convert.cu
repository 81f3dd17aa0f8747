/*
 * gpu/convert.cu -- dtype conversions of the _ex entry points' converting
 * path (core/dtype.c) on a CUDA context: n elements bf16 / f16 <-> fp32 on
 * the context's stream, with gpu/dtype.cuh's bit-exact conversions (the
 * bits of core/dtype.c's scalar code). Grid-stride loops, one element per
 * thread per step (the conversion is bandwidth-bound).
 */
#include "common.cuh"
#include "dtype.cuh"

#include <stdint.h>
#include <string.h>

enum { CVT_THREADS = 256, CVT_MAX_BLOCKS = 4096 };

/* dtype -> fp32; bf16 when is_bf16, else f16. */
static __global__ void cvt_to_f32_kernel(const uint16_t *src, float *dst, int64_t n, int is_bf16)
{
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        dst[i] = seqk__dt_load(src, i, is_bf16);
    }
}

/* fp32 -> dtype. */
static __global__ void cvt_from_f32_kernel(const float *src, uint16_t *dst, int64_t n,
                                           int is_bf16)
{
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        dst[i] = seqk__dt_round(src[i], is_bf16);
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
