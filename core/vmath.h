/*
 * core/vmath.h -- vectorised math shared by the CPU kernels.
 *
 * seqk__exp8(x): e^x for 8 floats (AVX2 + FMA), relative error ~2 ulp for
 * x in [-87, 88]; 0 below -87.3 (where e^x is denormal), +inf above 88.7.
 * Range reduction x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial, 2^n by
 * exponent arithmetic. seqk__expf is the scalar twin (libm's expf).
 */
#ifndef SEQK_CORE_VMATH_H
#define SEQK_CORE_VMATH_H

#include <math.h>
#ifdef __AVX2__
#include <immintrin.h>

static inline __m256 seqk__exp8(__m256 x)
{
    const __m256 hi = _mm256_set1_ps(88.7f), lo = _mm256_set1_ps(-87.3f);
    const __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    /* e^r ~ 1 + r + r^2/2 + ... + r^6/720 (Horner) */
    __m256 p = _mm256_set1_ps(1.0f / 720.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    /* 2^n: n in [-126, 128]; split so that 2^n never overflows the exponent field */
    const __m256i ni = _mm256_cvtps_epi32(n);
    const __m256i n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
    const __m256 s1 = _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_add_epi32(n1, _mm256_set1_epi32(127)), 23));
    const __m256 s2 = _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_add_epi32(n2, _mm256_set1_epi32(127)), 23));
    p = _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
    return _mm256_andnot_ps(under, p);
}
#endif

static inline float seqk__expf(float x) { return expf(x); }

/* softplus(x) = log(1 + e^x), without overflow for large x. */
static inline float seqk__softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

/* silu(x) = x / (1 + e^-x). */
static inline float seqk__silu(float x) { return x / (1.0f + expf(-x)); }

#endif
