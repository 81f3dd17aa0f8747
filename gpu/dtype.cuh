/*
 * gpu/dtype.cuh -- bf16 / f16 <-> fp32 on the device: core/dtype_bits.h's
 * integer bit manipulation (no cuda_bf16.h / cuda_fp16.h intrinsics), so
 * that the same code runs in the emulator and gives exactly the bits of
 * core/dtype.c's conversions.
 * Used by gpu/convert.cu (the converting path) and the native bf16 / f16
 * kernels (gpu/linear_state.cu).
 */
#ifndef SEQK_GPU_DTYPE_CUH
#define SEQK_GPU_DTYPE_CUH

#include <stdint.h>
#include <string.h>

/* the shared scalar conversions, as device (and host) functions */
#define SEQK__DT_FN static __host__ __device__ __forceinline__
#include "../core/dtype_bits.h"

/* One element of a bf16 (is_bf16) or f16 array, widened (exact). */
static __device__ __forceinline__ float seqk__dt_load(const uint16_t *p, int64_t i, int is_bf16)
{
    const uint16_t h = p[i];
    return seqk__dt_bits_f32(is_bf16 ? (uint32_t)h << 16 : seqk__dt_f16_to_bits(h));
}

/* x rounded to bf16 (is_bf16) or f16, as bits. */
static __device__ __forceinline__ uint16_t seqk__dt_round(float x, int is_bf16)
{
    const uint32_t u = seqk__dt_f32_bits(x);
    return is_bf16 ? seqk__dt_bf16_from_bits(u) : seqk__dt_f16_from_bits(u);
}

#endif /* SEQK_GPU_DTYPE_CUH */
