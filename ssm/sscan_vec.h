/*
 * ssm/sscan_vec.h -- the 8-lane vector layer of the selective scan's CPU
 * kernels (ssm/selective_scan.c, ssm/selective_scan_backward.c): AVX2 + FMA
 * intrinsics when the build has them, plain loops otherwise (the same
 * algorithm, lane by lane). Not installed.
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

/* ---- 8-lane vectors: AVX2 or plain C ---------------------------------------------- */

#ifdef __AVX2__
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
#else
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

/* 1 / (1 + e^-x) lane by lane */
#ifdef __AVX2__
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

#endif
