/* core/dtype.c -- dtypes (seqk.h, "Dtypes") and the converting path of every
 * op's _ex entry point (core/dtype.h). */
#include "dtype.h"
#include "dtype_bits.h"

#include "../gpu/gpu.h"

#include <inttypes.h>
#include <string.h>
#if defined(__AVX512F__) || defined(__F16C__)
#include <immintrin.h>
#endif

#define COPY_ALIGN 256

const char *seqk_dtype_string(seqk_dtype dtype)
{
    switch (dtype) {
    case SEQK_DTYPE_F32: return "f32";
    case SEQK_DTYPE_BF16: return "bf16";
    case SEQK_DTYPE_F16: return "f16";
    }
    return "unknown dtype";
}

size_t seqk_dtype_size(seqk_dtype dtype)
{
    switch (dtype) {
    case SEQK_DTYPE_F32: return 4;
    case SEQK_DTYPE_BF16: return 2;
    case SEQK_DTYPE_F16: return 2;
    }
    return 0;
}

seqk_status seqk__dt_check(const char *fn, seqk_dtype dtype)
{
    if (dtype != SEQK_DTYPE_F32 && dtype != SEQK_DTYPE_BF16 && dtype != SEQK_DTYPE_F16)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: dtype=%d is not a seqk_dtype", fn,
                          (int)dtype);
    return SEQK_SUCCESS;
}

int64_t seqk__dt_numel(int64_t a, int64_t b, int64_t c, int64_t d)
{
    const int64_t dims[4] = {a, b, c, d};
    int64_t n = 1;
    for (int i = 0; i < 4; i++) {
        if (dims[i] < 0) return -1;
        if (dims[i] != 0 && n > INT64_MAX / 4 / dims[i]) return -1; /* bytes stay in range */
        n *= dims[i];
    }
    return n;
}

/* ---- scalar conversions (the definition of the results) ---------------------- */

static void to_f32_scalar(seqk_dtype dt, const uint16_t *s, float *d, int64_t n)
{
    if (dt == SEQK_DTYPE_BF16)
        for (int64_t i = 0; i < n; i++) d[i] = seqk__dt_bits_f32((uint32_t)s[i] << 16);
    else
        for (int64_t i = 0; i < n; i++) d[i] = seqk__dt_bits_f32(seqk__dt_f16_to_bits(s[i]));
}

static void from_f32_scalar(seqk_dtype dt, const float *s, uint16_t *d, int64_t n)
{
    if (dt == SEQK_DTYPE_BF16)
        for (int64_t i = 0; i < n; i++) d[i] = seqk__dt_bf16_from_bits(seqk__dt_f32_bits(s[i]));
    else
        for (int64_t i = 0; i < n; i++) d[i] = seqk__dt_f16_from_bits(seqk__dt_f32_bits(s[i]));
}

/* ---- SIMD conversions (same bits as the scalar code) -------------------------- */

/* Converts a prefix of the n elements with the widest instructions this
 * build has; returns how many (the rest goes through the scalar code). */
static int64_t to_f32_simd(seqk_dtype dt, const uint16_t *s, float *d, int64_t n)
{
    int64_t i = 0;
#if defined(__AVX512F__)
    if (dt == SEQK_DTYPE_BF16) {
        for (; i + 16 <= n; i += 16) {
            const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(s + i)));
            _mm512_storeu_si512((void *)(d + i), _mm512_slli_epi32(w, 16));
        }
    } else {
        for (; i + 16 <= n; i += 16)
            _mm512_storeu_ps(d + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(s + i))));
    }
#elif defined(__F16C__)
    if (dt == SEQK_DTYPE_F16)
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i))));
#else
    (void)dt, (void)s, (void)d, (void)n;
#endif
    return i;
}

static int64_t from_f32_simd(seqk_dtype dt, const float *s, uint16_t *d, int64_t n)
{
    int64_t i = 0;
#if defined(__AVX512F__)
    if (dt == SEQK_DTYPE_BF16) {
        for (; i + 16 <= n; i += 16) {
            const __m512 x = _mm512_loadu_ps(s + i);
            const __m512i u = _mm512_castps_si512(x);
            const __m512i a = _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff));
#if defined(__AVX512BF16__)
            /* vcvtneps2bf16 flushes subnormal inputs to zero: those lanes
             * (rare) go through the scalar code, which rounds them. */
            const __mmask16 sub = _mm512_mask_cmplt_epu32_mask(
                _mm512_test_epi32_mask(a, a), a, _mm512_set1_epi32(0x00800000));
            if (sub) {
                from_f32_scalar(dt, s + i, d + i, 16);
                continue;
            }
            const __m256bh b = _mm512_cvtneps_pbh(x);
            __m256i bi;
            memcpy(&bi, &b, sizeof bi);
            _mm256_storeu_si256((__m256i *)(d + i), bi);
#else
            const __mmask16 nan = _mm512_cmpgt_epu32_mask(a, _mm512_set1_epi32(0x7f800000));
            const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
            __m512i r = _mm512_srli_epi32(
                _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb), 16);
            r = _mm512_mask_mov_epi32(
                r, nan, _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40)));
            _mm256_storeu_si256((__m256i *)(d + i), _mm512_cvtepi32_epi16(r));
#endif
        }
    } else {
        for (; i + 16 <= n; i += 16)
            _mm256_storeu_si256((__m256i *)(d + i),
                                _mm512_cvtps_ph(_mm512_loadu_ps(s + i),
                                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
#elif defined(__F16C__)
    if (dt == SEQK_DTYPE_F16)
        for (; i + 8 <= n; i += 8)
            _mm_storeu_si128((__m128i *)(d + i),
                             _mm256_cvtps_ph(_mm256_loadu_ps(s + i),
                                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#else
    (void)dt, (void)s, (void)d, (void)n;
#endif
    return i;
}

void seqk__dt_to_f32_host(seqk_dtype dtype, const void *src, float *dst, int64_t n, int path)
{
    const uint16_t *s = (const uint16_t *)src;
    const int64_t i = path == 0 ? to_f32_simd(dtype, s, dst, n) : 0;
    to_f32_scalar(dtype, s + i, dst + i, n - i);
}

void seqk__dt_from_f32_host(seqk_dtype dtype, const float *src, void *dst, int64_t n, int path)
{
    uint16_t *d = (uint16_t *)dst;
    const int64_t i = path == 0 ? from_f32_simd(dtype, src, d, n) : 0;
    from_f32_scalar(dtype, src + i, d + i, n - i);
}

enum { BLOCK = 1 << 16 }; /* elements per thread's piece of a large conversion */

/* One conversion on ctx's backend (to_f32: dtype -> fp32, else fp32 -> dtype). */
static seqk_status convert(const char *fn, seqk_context *ctx, seqk_dtype dtype, int to_f32,
                           const void *src, void *dst, int64_t n)
{
    if (n <= 0) return SEQK_SUCCESS;
#if SEQK__HAVE_CUDA
    if (ctx->backend == SEQK_BACKEND_CUDA)
        return seqk__cuda_convert(fn, ctx, dtype, to_f32, src, dst, n);
#endif
    (void)fn;
    const int64_t blocks = (n + BLOCK - 1) / BLOCK;
    const int threads = seqk__threads(ctx);
    (void)threads; /* without OpenMP */
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && blocks > 1)
    for (int64_t b = 0; b < blocks; b++) {
        const int64_t i0 = b * BLOCK, m = n - i0 < BLOCK ? n - i0 : BLOCK;
        if (to_f32)
            seqk__dt_to_f32_host(dtype, (const uint16_t *)src + i0, (float *)dst + i0, m, 0);
        else
            seqk__dt_from_f32_host(dtype, (const float *)src + i0, (uint16_t *)dst + i0, m, 0);
    }
    return SEQK_SUCCESS;
}

seqk_status seqk__dt_convert(seqk_context *ctx, seqk_dtype dtype, int to_f32, const void *src,
                             void *dst, int64_t n)
{
    static const char fn[] = "seqk__dt_convert";
    seqk_status st = seqk__check_ctx(fn, ctx);
    if (!st) st = seqk__dt_check(fn, dtype);
    if (st) return st;
    if (dtype == SEQK_DTYPE_F32)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: dtype=f32 has no conversion", fn);
    return convert(fn, ctx, dtype, to_f32, src, dst, n);
}

/* ---- the converting path -------------------------------------------------------- */

static size_t copy_bytes(int64_t n)
{
    return seqk__align_up((size_t)n * sizeof(float), COPY_ALIGN);
}

seqk_status seqk__dt_workspace_size(const char *fn, seqk_dtype dtype, const int64_t *counts,
                                    int n, size_t *bytes)
{
    seqk_status st = seqk__dt_check(fn, dtype);
    if (st || dtype == SEQK_DTYPE_F32) return st;
    size_t total = *bytes;
    for (int i = 0; i < n; i++) {
        if (counts[i] < 0)
            return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: a tensor's size is invalid", fn);
        const size_t b = copy_bytes(counts[i]);
        if (total > SIZE_MAX - b)
            return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: workspace size overflows", fn);
        total += b;
    }
    *bytes = total;
    return SEQK_SUCCESS;
}

seqk_status seqk__dt_begin(seqk__dt_call *c, const char *fn, seqk_context *ctx, seqk_dtype dtype,
                           seqk__dt_tensor *t, int nt, size_t op_ws)
{
    memset(c, 0, sizeof *c);
    c->fn = fn, c->ctx = ctx, c->dtype = dtype, c->t = t, c->nt = nt;
    seqk_status st = seqk__dt_check(fn, dtype);
    if (st) return st;
    if (dtype == SEQK_DTYPE_F32) {
        for (int i = 0; i < nt; i++) t[i].f = (float *)(uintptr_t)t[i].p;
        return SEQK_SUCCESS;
    }
    if ((st = seqk__check_ctx(fn, ctx))) return st;
    bool bad = op_ws == SEQK__DT_BAD_SIZES;
    for (int i = 0; i < nt; i++) bad = bad || t[i].n < 0;
    if (bad) { /* the fp32 op rejects the sizes; it gets no array to read */
        for (int i = 0; i < nt; i++) t[i].f = NULL;
        return SEQK_SUCCESS;
    }
    /* Converted outputs against every other converted tensor, on the
     * caller's arrays (the copies are disjoint by construction). */
    const size_t es = seqk_dtype_size(dtype);
    for (int i = 0; i < nt; i++) {
        if (!t[i].out || !t[i].p || t[i].n == 0) continue;
        for (int j = 0; j < nt; j++) {
            if (j == i || !t[j].p || t[j].n == 0) continue;
            if (t[i].in_place && !t[j].out && t[i].p == t[j].p && t[i].n == t[j].n) continue;
            if (seqk__overlap(t[i].p, (size_t)t[i].n * es, t[j].p, (size_t)t[j].n * es))
                return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: %s=%p overlaps %s=%p", fn,
                                  t[i].name, t[i].p, t[j].name, t[j].p);
        }
    }
    size_t copies = 0;
    for (int i = 0; i < nt; i++)
        if (t[i].p && t[i].n > 0) copies += copy_bytes(t[i].n);
    if (op_ws > SIZE_MAX - copies)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: workspace size overflows", fn);
    void *base = NULL;
    if ((st = seqk__workspace(fn, ctx, copies + op_ws, &base))) return st;
    char *p = (char *)base;
    for (int i = 0; i < nt; i++) {
        if (!t[i].p || t[i].n == 0) { /* absent or empty: handed through as is */
            t[i].f = (float *)(uintptr_t)t[i].p;
            continue;
        }
        t[i].f = (float *)p;
        p += copy_bytes(t[i].n);
        if (t[i].out != SEQK__DT_OUT &&
            (st = convert(fn, ctx, dtype, 1, t[i].p, t[i].f, t[i].n)))
            return st;
    }
    /* The op's workspace: the rest of the block, as a caller's buffer (the
     * op cannot reallocate it under the copies). */
    c->redirected = 1;
    c->saved_ws = ctx->workspace, c->saved_bytes = ctx->workspace_bytes;
    c->saved_owned = ctx->workspace_owned;
    const size_t rest = ctx->workspace_bytes - copies;
    ctx->workspace = rest ? (void *)p : NULL;
    ctx->workspace_bytes = rest;
    ctx->workspace_owned = false;
    return SEQK_SUCCESS;
}

seqk_status seqk__dt_end(seqk__dt_call *c, seqk_status st)
{
    if (!c->redirected) return st;
    seqk_context *ctx = c->ctx;
    ctx->workspace = c->saved_ws, ctx->workspace_bytes = c->saved_bytes;
    ctx->workspace_owned = c->saved_owned;
    c->redirected = 0;
    if (st) return st;
    for (int i = 0; i < c->nt; i++) {
        const seqk__dt_tensor *x = &c->t[i];
        if (x->out != SEQK__DT_OUT || !x->p || x->n == 0) continue;
        if ((st = convert(c->fn, ctx, c->dtype, 0, x->f, (void *)(uintptr_t)x->p, x->n)))
            return st;
    }
    return SEQK_SUCCESS;
}
