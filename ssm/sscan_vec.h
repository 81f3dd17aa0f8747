/*
 * ssm/sscan_vec.h -- the vector layer of the selective scan's CPU kernels
 * (ssm/selective_scan.c, ssm/selective_scan_backward.c): vf holds SS_VL
 * floats, 16 with AVX-512 (__m512, partial vectors by __mmask16 masks), 8
 * with AVX2 + FMA (__m256) or without either (plain loops). Every v_*
 * operation does the same arithmetic lane by lane at both widths (the math
 * of core/vmath.h's 16-lane twins is bit-identical per lane to the 8-lane
 * one), so a kernel written over vf and SS_VL gives each lane the same
 * bits whichever width the build has. Not installed.
 */
#ifndef SEQK_SSM_SSCAN_VEC_H
#define SEQK_SSM_SSCAN_VEC_H

#include "../core/vmath.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__)
#define SS_INLINE static inline __attribute__((always_inline))
#else
#define SS_INLINE static inline
#endif

/* ---- vectors: AVX-512 (16 lanes), AVX2 or plain C (8 lanes) ----------------------- */

#if defined(__AVX512F__)
#define SS_VL 16
typedef __m512 vf;
SS_INLINE __mmask16 ss_mask(int lanes) { return (__mmask16)((1u << lanes) - 1u); }
SS_INLINE vf v_zero(void) { return _mm512_setzero_ps(); }
SS_INLINE vf v_set1(float x) { return _mm512_set1_ps(x); }
SS_INLINE vf v_bcast(const float *p) { return _mm512_set1_ps(*p); }
SS_INLINE vf v_load(const float *p) { return _mm512_loadu_ps(p); }
SS_INLINE void v_store(float *p, vf x) { _mm512_storeu_ps(p, x); }
/* the first `lanes` (1..16) floats at p, zeros after (nothing read past them) */
SS_INLINE vf v_load_n(const float *p, int lanes)
{
    if (lanes == 16) return _mm512_loadu_ps(p);
    return _mm512_maskz_loadu_ps(ss_mask(lanes), p);
}
SS_INLINE void v_store_n(float *p, vf x, int lanes)
{
    if (lanes == 16) _mm512_storeu_ps(p, x);
    else _mm512_mask_storeu_ps(p, ss_mask(lanes), x);
}
SS_INLINE vf v_add(vf x, vf y) { return _mm512_add_ps(x, y); }
SS_INLINE vf v_sub(vf x, vf y) { return _mm512_sub_ps(x, y); }
SS_INLINE vf v_mul(vf x, vf y) { return _mm512_mul_ps(x, y); }
SS_INLINE vf v_fma(vf x, vf y, vf z) { return _mm512_fmadd_ps(x, y, z); } /* x y + z */
SS_INLINE vf v_exp2(vf x) { return seqk__exp2_16(x); }
SS_INLINE vf v_exp2_inrange(vf x) { return seqk__exp2_16_inrange(x); }
/* every lane of dt * amin and dt * amax in [-125.5, 127] (false for NaN) */
SS_INLINE int v_exp2_safe(vf dt, vf amin, vf amax)
{
    const vf p = _mm512_mul_ps(dt, amin), q = _mm512_mul_ps(dt, amax);
    const __mmask16 lo =
        _mm512_cmp_ps_mask(_mm512_min_ps(p, q), _mm512_set1_ps(-125.5f), _CMP_GE_OQ);
    const __mmask16 hi =
        _mm512_cmp_ps_mask(_mm512_max_ps(p, q), _mm512_set1_ps(127.0f), _CMP_LE_OQ);
    return (lo & hi) == 0xffff;
}
SS_INLINE vf v_softplus(vf x) { return seqk__softplus16(x); }
SS_INLINE vf v_silu(vf x) { return seqk__silu16(x); }
/* 1 / (1 + e^-x) lane by lane */
SS_INLINE vf v_sigmoid(vf x)
{
    const vf e = seqk__exp16(_mm512_sub_ps(_mm512_setzero_ps(), x));
    return _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}
SS_INLINE void prefetch_line(const void *p) { _mm_prefetch((const char *)p, _MM_HINT_T0); }
/* a store past the cache (p 64-byte aligned; fenced by seqk__stream_fence) */
SS_INLINE void v_stream(float *p, vf x) { _mm512_stream_ps(p, x); }
#elif defined(__AVX2__)
#define SS_VL 8
typedef __m256 vf;
/* masks for the first `lanes` lanes: mask_table + 8 - lanes */
static const int32_t mask_table[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
SS_INLINE vf v_zero(void) { return _mm256_setzero_ps(); }
SS_INLINE vf v_set1(float x) { return _mm256_set1_ps(x); }
SS_INLINE vf v_bcast(const float *p) { return _mm256_broadcast_ss(p); }
SS_INLINE vf v_load(const float *p) { return _mm256_loadu_ps(p); }
SS_INLINE void v_store(float *p, vf x) { _mm256_storeu_ps(p, x); }
/* the first `lanes` (1..8) floats at p, zeros after */
SS_INLINE vf v_load_n(const float *p, int lanes)
{
    if (lanes == 8) return _mm256_loadu_ps(p);
    return _mm256_maskload_ps(p, _mm256_loadu_si256((const __m256i *)(mask_table + 8 - lanes)));
}
SS_INLINE void v_store_n(float *p, vf x, int lanes)
{
    if (lanes == 8) _mm256_storeu_ps(p, x);
    else _mm256_maskstore_ps(p, _mm256_loadu_si256((const __m256i *)(mask_table + 8 - lanes)), x);
}
SS_INLINE vf v_add(vf x, vf y) { return _mm256_add_ps(x, y); }
SS_INLINE vf v_mul(vf x, vf y) { return _mm256_mul_ps(x, y); }
SS_INLINE vf v_fma(vf x, vf y, vf z) { return _mm256_fmadd_ps(x, y, z); } /* x y + z */
SS_INLINE vf v_exp2(vf x) { return seqk__exp2_8(x); }
SS_INLINE vf v_exp2_inrange(vf x) { return seqk__exp2_8_inrange(x); }
/* every lane of dt * amin and dt * amax in [-125.5, 127] (false for NaN) */
SS_INLINE int v_exp2_safe(vf dt, vf amin, vf amax)
{
    const vf p = _mm256_mul_ps(dt, amin), q = _mm256_mul_ps(dt, amax);
    const vf lo = _mm256_cmp_ps(_mm256_min_ps(p, q), _mm256_set1_ps(-125.5f), _CMP_GE_OQ);
    const vf hi = _mm256_cmp_ps(_mm256_max_ps(p, q), _mm256_set1_ps(127.0f), _CMP_LE_OQ);
    return _mm256_movemask_ps(_mm256_and_ps(lo, hi)) == 0xff;
}
SS_INLINE vf v_softplus(vf x) { return seqk__softplus8(x); }
SS_INLINE vf v_silu(vf x) { return seqk__silu8(x); }
SS_INLINE void prefetch_line(const void *p) { _mm_prefetch((const char *)p, _MM_HINT_T0); }
/* a store past the cache (p 32-byte aligned; fenced by seqk__stream_fence) */
SS_INLINE void v_stream(float *p, vf x) { _mm256_stream_ps(p, x); }
#else
#define SS_VL 8
typedef struct { float l[8]; } vf;
SS_INLINE vf v_zero(void) { vf r; for (int i = 0; i < 8; i++) r.l[i] = 0.0f; return r; }
SS_INLINE vf v_set1(float x) { vf r; for (int i = 0; i < 8; i++) r.l[i] = x; return r; }
SS_INLINE vf v_bcast(const float *p) { return v_set1(*p); }
SS_INLINE vf v_load(const float *p) { vf r; memcpy(r.l, p, sizeof r.l); return r; }
SS_INLINE void v_store(float *p, vf x) { memcpy(p, x.l, sizeof x.l); }
SS_INLINE vf v_load_n(const float *p, int lanes)
{
    vf r = v_zero();
    memcpy(r.l, p, (size_t)lanes * sizeof(float));
    return r;
}
SS_INLINE void v_store_n(float *p, vf x, int lanes)
{
    memcpy(p, x.l, (size_t)lanes * sizeof(float));
}
SS_INLINE void v_stream(float *p, vf x) { v_store(p, x); }
#define SS_LANEWISE(name, expr)                                                               \
    SS_INLINE vf name(vf x, vf y)                                                             \
    {                                                                                         \
        vf r;                                                                                 \
        for (int i = 0; i < 8; i++) r.l[i] = (expr);                                          \
        return r;                                                                             \
    }
SS_LANEWISE(v_add, x.l[i] + y.l[i])
SS_LANEWISE(v_mul, x.l[i] * y.l[i])
#undef SS_LANEWISE
SS_INLINE vf v_fma(vf x, vf y, vf z)
{
    for (int i = 0; i < 8; i++) z.l[i] = fmaf(x.l[i], y.l[i], z.l[i]);
    return z;
}
SS_INLINE vf v_exp2(vf x) { for (int i = 0; i < 8; i++) x.l[i] = exp2f(x.l[i]); return x; }
SS_INLINE vf v_exp2_inrange(vf x) { return v_exp2(x); }
SS_INLINE int v_exp2_safe(vf dt, vf amin, vf amax) { (void)dt, (void)amin, (void)amax; return 1; }
SS_INLINE vf v_softplus(vf x)
{
    for (int i = 0; i < 8; i++) x.l[i] = seqk__softplus(x.l[i]);
    return x;
}
SS_INLINE vf v_silu(vf x) { for (int i = 0; i < 8; i++) x.l[i] = seqk__silu(x.l[i]); return x; }
SS_INLINE void prefetch_line(const void *p)
{
#if defined(__GNUC__)
    __builtin_prefetch(p);
#else
    (void)p;
#endif
}
#endif

/* 1 / (1 + e^-x) lane by lane (AVX-512: above) */
#if defined(__AVX512F__)
#elif defined(__AVX2__)
SS_INLINE vf v_sigmoid(vf x)
{
    const vf e = seqk__exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
    return _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}
SS_INLINE vf v_sub(vf x, vf y) { return _mm256_sub_ps(x, y); }
#else
SS_INLINE vf v_sigmoid(vf x)
{
    for (int i = 0; i < 8; i++) x.l[i] = 1.0f / (1.0f + expf(-x.l[i]));
    return x;
}
SS_INLINE vf v_sub(vf x, vf y)
{
    for (int i = 0; i < 8; i++) x.l[i] -= y.l[i];
    return x;
}
#endif

/* silu(z) = z / (1 + e^-z), and s(z) = 1 / (1 + e^-z) into *sig, from one
 * exponential: the bits of v_silu(z) and v_sigmoid(z), whose e^-z is the
 * same (the backward needs both per token). */
#if defined(__AVX512F__)
SS_INLINE vf v_silu_sigmoid(vf z, vf *sig)
{
    const vf e = seqk__exp16(_mm512_sub_ps(_mm512_setzero_ps(), z));
    const vf d = _mm512_add_ps(_mm512_set1_ps(1.0f), e);
    *sig = _mm512_div_ps(_mm512_set1_ps(1.0f), d);
    return _mm512_div_ps(z, d);
}
#elif defined(__AVX2__)
SS_INLINE vf v_silu_sigmoid(vf z, vf *sig)
{
    const vf e = seqk__exp8(_mm256_sub_ps(_mm256_setzero_ps(), z));
    const vf d = _mm256_add_ps(_mm256_set1_ps(1.0f), e);
    *sig = _mm256_div_ps(_mm256_set1_ps(1.0f), d);
    return _mm256_div_ps(z, d);
}
#else
SS_INLINE vf v_silu_sigmoid(vf z, vf *sig)
{
    for (int i = 0; i < 8; i++) {
        const float d = 1.0f + expf(-z.l[i]);
        sig->l[i] = 1.0f / d;
        z.l[i] = z.l[i] / d;
    }
    return z;
}
#endif

/* ---- the selective scan's recurrence, shared by its kernels ----------------------- */

/* The decay of one state row: a = exp(dt A) = 2^(dt At), At = A log2 e
 * (formed once per work item); CLAMP 0 where every lane's dt At is known to lie
 * in exp2's range (v_exp2_safe), which gives the same bits without the
 * clamp's two instructions. */
SS_INLINE vf ss_decay(vf dt, vf At, const int CLAMP)
{
    const vf x = v_mul(dt, At);
    return CLAMP ? v_exp2(x) : v_exp2_inrange(x);
}

/* One step of the first-order recurrence h = a h + b in registers: the
 * scan primitive's arithmetic (scan/scan.h: one FMA per channel), so a
 * walk that keeps its state in registers (the forward's recurrent mode,
 * the backward's h and lam) gives the bits of seqk__scan_rows. */
SS_INLINE vf ss_step(vf a, vf h, vf b) { return v_fma(a, h, b); }

#endif
