/*
 * core/vmath.h -- vectorised math shared by the CPU kernels.
 *
 * seqk__exp8(x): e^x for 8 floats (AVX2 + FMA), relative error ~2 ulp for
 * x in [-87.3, 88]; 0 below -87.3 (where e^x is denormal); x above 88.02
 * gives e^88.02 (about 1.6e38, the largest power the single 2^n scale
 * reaches) instead of overflowing to inf.
 * Range reduction x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial, 2^n by
 * exponent arithmetic. seqk__expf is the scalar twin (libm's expf).
 */
#ifndef SEQK_CORE_VMATH_H
#define SEQK_CORE_VMATH_H

#include <math.h>
#include <stdint.h>
#ifdef __AVX2__
#include <immintrin.h>

static inline __m256 seqk__exp8(__m256 x)
{
    /* clamp so that n = round(x log2 e) stays in [-126, 127]: 2^n is a normal float */
    const __m256 hi = _mm256_set1_ps(88.02f), lo = _mm256_set1_ps(-87.3f);
    const __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    /* e^r ~ 1 + r + r^2/2 + ... + r^6/720 (Horner), |r| <= ln2/2 */
    __m256 p = _mm256_set1_ps(1.0f / 720.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    const __m256 scale = _mm256_castsi256_ps(_mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
    return _mm256_andnot_ps(under, _mm256_mul_ps(p, scale));
}
#endif

static inline float seqk__expf(float x) { return expf(x); }

#ifdef __AVX2__
/* The sum of the 8 lanes of x. */
static inline float seqk__hsum8(__m256 x)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#endif

/* sum_i x[i] y[i] (8 lanes at a time, then a horizontal sum). */
static inline float seqk__dot(const float *x, const float *y, int64_t n)
{
    int64_t i = 0;
    float s = 0.0f;
#ifdef __AVX2__
    __m256 acc = _mm256_setzero_ps();
    for (; i + 8 <= n; i += 8)
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), acc);
    s = seqk__hsum8(acc);
#endif
    for (; i < n; i++) s += x[i] * y[i];
    return s;
}

/* softplus(x) = log(1 + e^x), without overflow for large x. */
static inline float seqk__softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

/* silu(x) = x / (1 + e^-x). */
static inline float seqk__silu(float x) { return x / (1.0f + expf(-x)); }

#endif
