/*
 * core/dtype_bits.h -- the scalar bf16 / f16 <-> fp32 conversions by integer
 * bit manipulation: the definition of the dtype results (seqk.h, "Dtypes"),
 * shared by the host (core/dtype.c) and the device (gpu/dtype.cuh, which
 * defines SEQK__DT_FN as a __host__ __device__ inline function first, so
 * that the same code runs in kernels and in the CUDA emulator). Round to
 * nearest even; NaN -> quiet NaN with the top payload bits; f16 overflow ->
 * inf; f16 subnormals rounded (not flushed).
 */
#ifndef SEQK_CORE_DTYPE_BITS_H
#define SEQK_CORE_DTYPE_BITS_H

#include <stdint.h>
#include <string.h>

#ifndef SEQK__DT_FN
#define SEQK__DT_FN static inline
#endif

SEQK__DT_FN uint32_t seqk__dt_f32_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

SEQK__DT_FN float seqk__dt_bits_f32(uint32_t u)
{
    float x;
    memcpy(&x, &u, 4);
    return x;
}

/* Round to nearest even; NaN -> quiet NaN with the top payload bits. */
SEQK__DT_FN uint16_t seqk__dt_bf16_from_bits(uint32_t u)
{
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* Round to nearest even (subnormal results included); >= 65520 in magnitude
 * -> inf; NaN -> quiet NaN with the top payload bits. */
SEQK__DT_FN uint16_t seqk__dt_f16_from_bits(uint32_t u)
{
    const uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);
    if (a >= 0x38800000u) { /* a normal f16: rebias the exponent, round at bit 13 */
        const uint32_t r = a - 0x38000000u;
        return (uint16_t)(sign | ((r + 0xfffu + ((r >> 13) & 1u)) >> 13));
    }
    if (a < 0x33000000u) return (uint16_t)sign; /* below half the smallest subnormal */
    const uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u;
    const unsigned shift = 126u - e; /* 14 .. 24: m 2^(e-150) in units of 2^-24 */
    uint32_t q = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u))) q++;
    return (uint16_t)(sign | q);
}

/* Exact; a NaN is quieted (as F16C's vcvtph2ps does). */
SEQK__DT_FN uint32_t seqk__dt_f16_to_bits(uint16_t h)
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

#endif /* SEQK_CORE_DTYPE_BITS_H */
