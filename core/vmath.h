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
#include <stdbool.h>
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
#ifdef __AVX512F__
/* seqk__exp16: seqk__exp8's algorithm on 16 lanes (the same operations,
 * constants and order; every lane's bits equal seqk__exp8's). */
static inline __m512 seqk__exp16(__m512 x)
{
    const __m512 hi = _mm512_set1_ps(88.02f), lo = _mm512_set1_ps(-87.3f);
    const __mmask16 under = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
    x = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    const __m512 scale = _mm512_castsi512_ps(_mm512_slli_epi32(
        _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23));
    /* zero (+0.0f, as the 8-lane andnot) where x < -87.3 */
    return _mm512_maskz_mul_ps((__mmask16)~under, p, scale);
}
#endif
#endif

static inline float seqk__expf(float x) { return expf(x); }

/* e^(h + l) for an exponent given as two floats (a cumulative gate's high
 * and low parts, or a difference of two such): s = h + l rounded, its
 * rounding r = (h + l) - s exactly (TwoSum), and e^s (1 + r) by one FMA.
 * Exponentiating s alone would put up to half an ulp of |s| into the
 * exponent: a relative error of |s| 2^-25 in the factor (3e-7 at |s| = 10,
 * 2.6e-6 at 88); this keeps it at the exponential's own few ulps. */
static inline float seqk__expf_2(float h, float l)
{
    const float s = h + l, bp = s - h, r = (h - (s - bp)) + (l - bp);
    const float e = expf(s);
    return fmaf(e, r, e);
}
#ifdef __AVX2__
static inline __m256 seqk__exp8_2(__m256 h, __m256 l)
{
    const __m256 s = _mm256_add_ps(h, l), bp = _mm256_sub_ps(s, h);
    const __m256 r = _mm256_add_ps(_mm256_sub_ps(h, _mm256_sub_ps(s, bp)), _mm256_sub_ps(l, bp));
    const __m256 e = seqk__exp8(s);
    return _mm256_fmadd_ps(e, r, e);
}
#endif

/* The decay factors of the chunked modes, from a chunk's cumulative
 * log-decay held as two floats, G_j = x[j] + xl[j] (its float rounding and
 * the rest: summed in double, see seqk__gates_cumsum):
 *
 *   out[j] = e^(s ((x[j] - a) + (xl[j] - al))),  j in [0, n)
 *
 * s = -1 with (a, al) = G_i gives a row of exp(G_i - G_j); s = 1 with a =
 * al = 0 gives exp(G_j). The difference of the high parts is exact
 * whenever it matters (G_i, G_j within a factor 2 of each other: Sterbenz),
 * so a decay keeps its relative accuracy (a few ulp) however large |G| has
 * grown inside the chunk; one float G would lose an ulp of |G| in every
 * exponent (1e-4 relative at |G| ~ 2000). By seqk__exp8 (the last n % 8 by
 * masked loads and stores: nothing read or written past n; libm without
 * AVX2). */
static inline void seqk__exp_gates(const float *x, const float *xl, int64_t n, float a, float al,
                                   float s, float *out)
{
    int64_t j = 0;
#ifdef __AVX2__
    const __m256 va = _mm256_set1_ps(a), val = _mm256_set1_ps(al), vs = _mm256_set1_ps(s);
    for (; j + 8 <= n; j += 8) {
        const __m256 dh = _mm256_mul_ps(vs, _mm256_sub_ps(_mm256_loadu_ps(x + j), va));
        const __m256 dl = _mm256_mul_ps(vs, _mm256_sub_ps(_mm256_loadu_ps(xl + j), val));
        _mm256_storeu_ps(out + j, seqk__exp8_2(dh, dl));
    }
    if (j < n) { /* masked load and store: lanes past n are neither read nor written */
        const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n - j)),
                                             _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        const __m256 dh = _mm256_mul_ps(vs, _mm256_sub_ps(_mm256_maskload_ps(x + j, m), va));
        const __m256 dl = _mm256_mul_ps(vs, _mm256_sub_ps(_mm256_maskload_ps(xl + j, m), val));
        _mm256_maskstore_ps(out + j, m, seqk__exp8_2(dh, dl));
        j = n;
    }
#endif
    for (; j < n; j++) out[j] = seqk__expf_2(s * (x[j] - a), s * (xl[j] - al));
}

/* The per-token log-decays below this are taken as it (seqk__gates_cumsum):
 * e^-10000 is 0 in float and in double alike, so nothing changes but that
 * a chunk's cumulative sum stays finite (a log-gate of -3e38, or dt A
 * overflowing to -inf, would otherwise make G_i - G_j = -inf + inf = NaN). */
#define SEQK__LOG_DECAY_FLOOR (-1.0e4f)

/* The cumulative log-decay of a chunk's n tokens, G_i = sum_{j <= i} ld[j]
 * (each ld[j] floored at SEQK__LOG_DECAY_FLOOR; NaN stays NaN), summed in
 * double and kept as two floats for seqk__exp_gates: hi[i] = (float)G_i,
 * lo[i] = (float)(G_i - hi[i]). hi may be ld (in place). */
static inline void seqk__gates_cumsum(const float *ld, int64_t n, float *hi, float *lo)
{
    double acc = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const float x = ld[i];
        acc += x < SEQK__LOG_DECAY_FLOOR ? SEQK__LOG_DECAY_FLOOR : x;
        hi[i] = (float)acc;
        lo[i] = (float)(acc - (double)hi[i]);
    }
}

/* Asks the cache for the lines of n floats from p (write: for writing). The
 * recurrent loops call it for the rows of a token a few steps ahead: the rows
 * of one head are H*K floats apart, so walking a head's tokens crosses a page
 * every few tokens, where the hardware prefetcher stops. */
static inline void seqk__prefetch_rows(const float *p, int64_t n, bool write)
{
    /* every 64-byte line that [p, p + n) touches, also when p is not aligned
     * (the last, partial line is where an unaligned row would stall) */
    const char *c = (const char *)((uintptr_t)p & ~(uintptr_t)63), *e = (const char *)(p + n);
    for (; c < e; c += 64) {
        if (write) __builtin_prefetch(c, 1);
        else __builtin_prefetch(c, 0);
    }
}
static inline void seqk__prefetch_floats(const float *p, int64_t n)
{
    seqk__prefetch_rows(p, n, false);
}

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

/* sum_i x[i] y[i] (8 lanes at a time in four accumulators, then a
 * horizontal sum; a fixed order for a given n). */
static inline float seqk__dot(const float *x, const float *y, int64_t n)
{
    int64_t i = 0;
    float s = 0.0f;
#ifdef __AVX2__
    /* four independent accumulators over 32 floats a step: the FMA's
     * latency (4 cycles) hidden for the K = 64 / 128 rows the backward dots */
    __m256 acc = _mm256_setzero_ps(), a1 = acc, a2 = acc, a3 = acc;
    for (; i + 32 <= n; i += 32) {
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), acc);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(y + i + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 16), _mm256_loadu_ps(y + i + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 24), _mm256_loadu_ps(y + i + 24), a3);
    }
    for (; i + 8 <= n; i += 8)
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), acc);
    s = seqk__hsum8(_mm256_add_ps(_mm256_add_ps(acc, a1), _mm256_add_ps(a2, a3)));
#endif
    for (; i < n; i++) s += x[i] * y[i];
    return s;
}

/* X[i, 0..n) *= f[i] * c for i < m (rows ld apart): a row scaling (the
 * product f[i] * c rounded once per row, then one multiply per element). */
static inline void seqk__scale_rows(int64_t m, int64_t n, const float *f, float c, float *X,
                                    int64_t ld)
{
    for (int64_t i = 0; i < m; i++) {
        const float s = f[i] * c;
        float *x = X + i * ld;
        for (int64_t j = 0; j < n; j++) x[j] *= s;
    }
}

/* dst[0..n) = s * src[0..n) (s = 1: a copy, the same bits), for the rows
 * of an output that a call writes once and never reads back (a backward's
 * dq, dk, dv): the whole 64-byte lines of dst are stored past the cache
 * (no read for ownership of a line the store misses: half the memory
 * traffic), the partial lines at its two ends by ordinary stores (a line
 * shared with a neighbouring row must not be streamed half). Such stores
 * are weakly ordered: a thread ends its writes with seqk__stream_fence()
 * before its results are read elsewhere (before the end of its parallel
 * region). */
static inline void seqk__store_row_nt(float *dst, const float *src, float s, int64_t n)
{
    int64_t j = 0;
#ifdef __AVX2__
    /* [j0, j1): the floats of the whole lines */
    const int64_t j0 = (int64_t)((64 - ((uintptr_t)dst & 63)) & 63) / 4;
    const int64_t j1 = j0 + (n - j0) / 16 * 16;
    if (((uintptr_t)dst & 3) == 0 && j0 < n && j1 > j0) {
        for (; j < j0; j++) dst[j] = s * src[j];
#ifdef __AVX512F__
        /* a whole line per store: the write-combining buffer leaves full */
        const __m512 vw = _mm512_set1_ps(s);
        for (; j < j1; j += 16)
            _mm512_stream_ps(dst + j, _mm512_mul_ps(vw, _mm512_loadu_ps(src + j)));
#else
        const __m256 vs = _mm256_set1_ps(s);
        for (; j < j1; j += 8)
            _mm256_stream_ps(dst + j, _mm256_mul_ps(vs, _mm256_loadu_ps(src + j)));
#endif
    }
#endif
    for (; j < n; j++) dst[j] = s * src[j];
}
static inline void seqk__stream_fence(void)
{
#ifdef __AVX2__
    _mm_sfence();
#endif
}

/* softplus(x) = log(1 + e^x), without overflow for large x. */
static inline float seqk__softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

/* silu(x) = x / (1 + e^-x). */
static inline float seqk__silu(float x) { return x / (1.0f + expf(-x)); }

#ifdef __AVX2__
/*
 * seqk__exp2_8(x): 2^x for 8 floats, relative error <= 1.1e-7 (about 1 ulp;
 * exact 1 at x = 0, so that products of many coefficients near 1 do not
 * drift) for x in [-125.5, 127]. Outside: x < -125.5 gives 2^-125.5
 * (~1.9e-38, a normal float: no denormal ever comes out) and x > 127 gives
 * 2^127; NaN stays NaN. Cheaper than seqk__exp8 (no ln2 split, no underflow
 * mask, the scale added to the exponent field): for e^(c x) with c fixed,
 * fold log2(e) into c once (the selective scan's exp(dt A) is
 * exp2(dt * (A log2 e))).
 * x = n + f, n = round(x), |f| <= 1/2 (exact); 2^f by a degree-6 polynomial
 * with constant term 1 (fitted for relative error on [-1/2, 1/2]); then n is
 * added to the exponent field (2^f in [0.70, 1.42] keeps it in range).
 * seqk__exp2_8_inrange is the same without the clamp (two instructions
 * fewer), for x known to lie in [-125.5, 127]; outside it returns garbage.
 */
static inline __m256 seqk__exp2_8_inrange(__m256 x)
{
    const __m256 n = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 f = _mm256_sub_ps(x, n);
    __m256 p = _mm256_set1_ps(1.5353358e-4f);
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.3398876e-3f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.6184369e-3f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.5503324e-2f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.4022648e-1f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.9314718e-1f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
    const __m256i e = _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23);
    return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), e));
}

static inline __m256 seqk__exp2_8(__m256 x)
{
    /* max(lo, x) and min(hi, .) return x when it is NaN */
    x = _mm256_min_ps(_mm256_set1_ps(127.0f), _mm256_max_ps(_mm256_set1_ps(-125.5f), x));
    return seqk__exp2_8_inrange(x);
}

#ifdef __AVX512F__
/* seqk__exp2_16_inrange, seqk__exp2_16: the same algorithm as the 8-lane
 * pair above on 16 lanes (same operations, constants, order and clamps;
 * each lane's bits equal the 8-lane function's, NaN included). */
static inline __m512 seqk__exp2_16_inrange(__m512 x)
{
    const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 f = _mm512_sub_ps(x, n);
    __m512 p = _mm512_set1_ps(1.5353358e-4f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.3398876e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.6184369e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5503324e-2f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022648e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.9314718e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    const __m512i e = _mm512_slli_epi32(_mm512_cvtps_epi32(n), 23);
    return _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(p), e));
}

static inline __m512 seqk__exp2_16(__m512 x)
{
    x = _mm512_min_ps(_mm512_set1_ps(127.0f), _mm512_max_ps(_mm512_set1_ps(-125.5f), x));
    return seqk__exp2_16_inrange(x);
}
#endif

/*
 * seqk__softplus8(x) = log(1 + e^x) for 8 floats, as max(x, 0) +
 * log1p(e^-|x|) (no overflow; accurate to a few ulp also where the result
 * is tiny, x << 0, unlike log(1 + t) rounded at 1 + t). With t = e^-|x| in
 * (0, 1]: log1p(t) = 2 atanh(s) = 2 (s + s^3/3 + ... + s^13/13),
 * s = t / (2 + t) <= 1/3 (truncation below 2e-8 relative). NaN stays NaN.
 */
static inline __m256 seqk__softplus8(__m256 x)
{
    const __m256 ax = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
    const __m256 t = seqk__exp8(_mm256_sub_ps(_mm256_setzero_ps(), ax));
    const __m256 s = _mm256_div_ps(t, _mm256_add_ps(t, _mm256_set1_ps(2.0f)));
    const __m256 s2 = _mm256_mul_ps(s, s);
    __m256 p = _mm256_set1_ps(1.0f / 13.0f);
    p = _mm256_fmadd_ps(p, s2, _mm256_set1_ps(1.0f / 11.0f));
    p = _mm256_fmadd_ps(p, s2, _mm256_set1_ps(1.0f / 9.0f));
    p = _mm256_fmadd_ps(p, s2, _mm256_set1_ps(1.0f / 7.0f));
    p = _mm256_fmadd_ps(p, s2, _mm256_set1_ps(1.0f / 5.0f));
    p = _mm256_fmadd_ps(p, s2, _mm256_set1_ps(1.0f / 3.0f));
    p = _mm256_fmadd_ps(p, s2, _mm256_set1_ps(1.0f));
    return _mm256_fmadd_ps(_mm256_add_ps(s, s), p, _mm256_max_ps(_mm256_setzero_ps(), x));
}

#ifdef __AVX512F__
/* seqk__softplus16: seqk__softplus8 on 16 lanes (same algorithm, same bits per lane). */
static inline __m512 seqk__softplus16(__m512 x)
{
    const __m512 ax = _mm512_castsi512_ps(
        _mm512_andnot_si512(_mm512_castps_si512(_mm512_set1_ps(-0.0f)), _mm512_castps_si512(x)));
    const __m512 t = seqk__exp16(_mm512_sub_ps(_mm512_setzero_ps(), ax));
    const __m512 s = _mm512_div_ps(t, _mm512_add_ps(t, _mm512_set1_ps(2.0f)));
    const __m512 s2 = _mm512_mul_ps(s, s);
    __m512 p = _mm512_set1_ps(1.0f / 13.0f);
    p = _mm512_fmadd_ps(p, s2, _mm512_set1_ps(1.0f / 11.0f));
    p = _mm512_fmadd_ps(p, s2, _mm512_set1_ps(1.0f / 9.0f));
    p = _mm512_fmadd_ps(p, s2, _mm512_set1_ps(1.0f / 7.0f));
    p = _mm512_fmadd_ps(p, s2, _mm512_set1_ps(1.0f / 5.0f));
    p = _mm512_fmadd_ps(p, s2, _mm512_set1_ps(1.0f / 3.0f));
    p = _mm512_fmadd_ps(p, s2, _mm512_set1_ps(1.0f));
    return _mm512_fmadd_ps(_mm512_add_ps(s, s), p, _mm512_max_ps(_mm512_setzero_ps(), x));
}
#endif

/* seqk__silu8(x) = x / (1 + e^-x) for 8 floats (x << 0: a tiny value of the
 * right sign instead of x e^x; NaN stays NaN). */
static inline __m256 seqk__silu8(__m256 x)
{
    const __m256 e = seqk__exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
    return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

#ifdef __AVX512F__
/* seqk__silu16: seqk__silu8 on 16 lanes (same algorithm, same bits per lane). */
static inline __m512 seqk__silu16(__m512 x)
{
    const __m512 e = seqk__exp16(_mm512_sub_ps(_mm512_setzero_ps(), x));
    return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}
#endif
#endif

#endif
