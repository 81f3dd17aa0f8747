/*
 * gpu/dtype.cuh -- bf16 / f16 <-> fp32 on the device by integer bit
 * manipulation (no cuda_bf16.h / cuda_fp16.h intrinsics), so that the same
 * code runs in the emulator and gives exactly the bits of core/dtype.c's
 * scalar conversions: round to nearest even, NaN -> quiet NaN with the top
 * payload bits, f16 overflow -> inf, f16 subnormals rounded (not flushed).
 * Used by gpu/convert.cu (the converting path) and the native bf16 / f16
 * kernels (gpu/linear_state.cu).
 */
#ifndef SEQK_GPU_DTYPE_CUH
#define SEQK_GPU_DTYPE_CUH

#include <stdint.h>
#include <string.h>

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

/* One element of a bf16 (is_bf16) or f16 array, widened (exact). */
static __device__ __forceinline__ float seqk__dt_load(const uint16_t *p, int64_t i, int is_bf16)
{
    const uint16_t h = p[i];
    return cvt_bits_f32(is_bf16 ? (uint32_t)h << 16 : cvt_f16_to_bits(h));
}

/* x rounded to bf16 (is_bf16) or f16, as bits. */
static __device__ __forceinline__ uint16_t seqk__dt_round(float x, int is_bf16)
{
    const uint32_t u = cvt_f32_bits(x);
    return is_bf16 ? cvt_bf16_from_bits(u) : cvt_f16_from_bits(u);
}

#endif /* SEQK_GPU_DTYPE_CUH */
