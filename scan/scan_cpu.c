/*
 * scan/scan_cpu.c -- CPU backend of the scan primitive (DESIGN 3.6).
 *
 *     h_r[c] = a_r[c] * h_{r-1}[c] + b_r[c]     (reverse: h_{r+1}, same a_r)
 *
 * The work is memory-bound (read a, read b, write h), so everything here is
 * about touching each byte once, in long contiguous runs, on every core,
 * with enough arithmetic to spare that the kernels keep up with memory:
 *
 *   1. the recurrence in plain C (the portable kernel);
 *   2. SIMD kernels (AVX2 + FMA):
 *      - tile kernels: a tile of channels, row after row, vectorised across
 *        channels (8 per vector); the coefficient is loaded per element,
 *        broadcast per block, or gathered where a block straddles vectors.
 *        Wide tiles keep the carry in L1; narrow ones (<= 32 channels) keep
 *        it in registers and compose rows in pairs off the carry's chain;
 *      - flat kernel: C < 8 contiguous channels, vectorised along the
 *        flattened index i = r*C + c, where h[i] = a[i] h[i-C] + b[i]: an
 *        in-register scan of each vector, one permute + FMA to take the
 *        carry, two vectors per step; reverse runs the mirrored lanes over
 *        vectors loaded backwards;
 *      - flat aggregate (C = 1, 2, 4): the composed element of a run by a
 *        reduction tree, for the first pass of the time split;
 *   3. jobs: one (sequence, channel range) bound to its kernel, run over a
 *      range of rows in processing order, writing h or composing the
 *      aggregate;
 *   4. single-threaded entry points (seqk__scan_rows, _aggregate);
 *   5. drivers: the time split of one long sequence (cache-blocked:
 *      aggregate, carry handed from thread to thread, re-run from L2),
 *      channel tiles of one sequence in parallel;
 *   6. seqk__cpu_scan: (sequence, channel tile) items in parallel, long
 *      sequences split.
 *
 * h is written with non-temporal stores when the output exceeds about half
 * the L3 and the destination is 16- or 32-byte aligned (the flat kernel
 * peels to alignment), then fenced.
 *
 * No allocation: scratch lives in fixed-size stack buffers (the largest
 * frame, a job with its tile plan plus two tiles of state, is ~26 KiB).
 */
#if !defined(_POSIX_C_SOURCE) && !defined(_WIN32)
#define _POSIX_C_SOURCE 200809L /* sched_yield */
#endif
#include "scan.h"

#include <math.h>
#include <stdatomic.h>
#include <string.h>
#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#if defined(_POSIX_PRIORITY_SCHEDULING)
#include <sched.h>
#define SEQK__HAVE_SCHED_YIELD 1
#endif
#endif

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX2__) || defined(__SSE2__)
#include <immintrin.h>
#endif

/* ---- tunables (overridable at compile time) -------------------------------- */

#ifndef SEQK_SCAN_NT_BYTES /* outputs above this many bytes use streaming stores */
#define SEQK_SCAN_NT_BYTES ((int64_t)16 << 20)
#endif
#ifndef SEQK_SCAN_L2_BYTES /* a + b bytes per thread per block of the time split */
#define SEQK_SCAN_L2_BYTES ((int64_t)192 << 10)
#endif
#ifndef SEQK_SCAN_TS_MIN /* fewest elements per thread worth splitting a sequence */
#define SEQK_SCAN_TS_MIN ((int64_t)32768)
#endif
#ifndef SEQK_SCAN_TILE_MIN /* narrowest channel tile when tiles are split for threads */
#define SEQK_SCAN_TILE_MIN 1024
#endif

enum {
    TILE = 2048,      /* widest channel tile (8 KiB of state per tile) */
    TILE_NV = TILE / 8,
    TS_GROUP = 1024,  /* channels per time-split pass */
    TS_MAXT = 256,    /* threads of a time split */
    FLAT_CHUNK = 512  /* coefficients expanded at a time (flat kernel, block > 1) */
};

#if defined(__GNUC__)
#define SEQK_INLINE static inline __attribute__((always_inline))
#else
#define SEQK_INLINE static inline
#endif

#ifdef __FMA__
#define FMAF(x, y, z) fmaf((x), (y), (z))
#else
#define FMAF(x, y, z) ((x) * (y) + (z))
#endif

/* What a kernel does with the rows it walks. */
enum {
    ST_NONE = 0,  /* aggregate: carry and product of a only, h untouched */
    ST_PLAIN = 1, /* write h with ordinary stores */
    ST_NT = 2,    /* write h with 32-byte non-temporal stores */
    ST_NT16 = 3   /* write h with 16-byte non-temporal stores */
};

static int64_t min64(int64_t x, int64_t y) { return x < y ? x : y; }
static int64_t max64(int64_t x, int64_t y) { return x > y ? x : y; }
static int64_t cdiv(int64_t x, int64_t y) { return (x + y - 1) / y; }

static int thread_id(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static int team_size(void)
{
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

/* ==== 1. the recurrence in plain C =========================================== */

#ifndef __AVX2__ /* the portable kernel: what the SIMD kernels compute */

/*
 * rows x w channels [c0, c0 + w) of rows laid out as in scan.h, walked in
 * the order of their pointers: processing row k is at a + k*ars (strides may
 * be negative: reverse). carry[w] in/out; prod[w] (or NULL) multiplied by
 * each row's coefficients; h written unless NULL.
 */
static void tile_scalar(int64_t rows, int64_t c0, int64_t w, int64_t block, const float *a,
                        int64_t ars, const float *b, int64_t brs, float *h, int64_t hrs,
                        float *carry, float *prod)
{
    for (int64_t k = 0; k < rows; k++) {
        const float *ar = a + k * ars, *br = b + k * brs + c0;
        float *hr = h ? h + k * hrs + c0 : NULL;
        for (int64_t j = 0; j < w;) {
            const int64_t g = (c0 + j) / block, end = min64(w, (g + 1) * block - c0);
            for (; j < end; j++) {
                const float ac = block == 1 ? ar[c0 + j] : ar[g];
                const float x = FMAF(ac, carry[j], br[j]);
                carry[j] = x;
                if (hr) hr[j] = x;
                if (prod) prod[j] *= ac;
            }
        }
    }
}

#endif

/* ==== 2. SIMD kernels (AVX2 + FMA) ============================================ */

#ifdef __AVX2__

/* ---- 2a. tile kernel: channels across lanes -------------------------------- */

/* Software prefetch for the passes that stream a and b backwards from
 * memory (reverse aggregates of few channels: descending streams of short
 * rows, which the hardware prefetchers follow less eagerly; rows of more
 * than 1 KiB are ascending runs and get none). Each pass prefetches its
 * first PF_BYTES, then PF_BYTES ahead. Addresses are formed as integers:
 * they may lie outside the arrays, which a prefetch tolerates. */
enum { PF_BYTES = 8192 }; /* how far ahead */
SEQK_INLINE void prefetch_back(const float *p, int64_t bytes_back)
{
    _mm_prefetch((const char *)((uintptr_t)p - (uintptr_t)bytes_back), _MM_HINT_T0);
}

/* The lines of n floats at p + off (off in floats, may be negative). */
static void prefetch_span(const float *p, int64_t off, int64_t n)
{
    const uintptr_t q = (uintptr_t)p + (uintptr_t)(off * 4);
    for (int64_t f = 0; f < n + 15; f += 16)
        _mm_prefetch((const char *)(q + (uintptr_t)f * 4), _MM_HINT_T0);
}

/* Rows ahead to prefetch in an aggregate pass walking rows backwards (brs
 * < 0), or 0. */
static int64_t prefetch_rows(int store, int64_t brs)
{
    return store == ST_NONE && brs < 0 ? cdiv(PF_BYTES, -brs * 4) : 0;
}

/* A channel tile [c0, c0 + w), w <= TILE: vectors of 8 channels, then a
 * partial one of `tail` lanes; where each vector takes its coefficients. */
typedef struct {
    int64_t c0, w;
    int nfull, tail;
    int grouped;              /* block > 1 */
    int64_t a0, an;           /* the coefficients a row of the tile reads: [a0, a0 + an) */
    __m256i tmask;            /* lanes < tail */
    int32_t off[TILE_NV + 1]; /* grouped: a index of the vector's first channel */
    uint8_t gat[TILE_NV + 1]; /* grouped: the vector spans several coefficients */
    __m256i idx[TILE_NV + 1]; /* ... then the a index of each lane (gather) */
} tile_plan;

static void tile_plan_init(tile_plan *p, int64_t c0, int64_t w, int64_t block)
{
    p->c0 = c0, p->w = w;
    p->nfull = (int)(w / 8), p->tail = (int)(w % 8);
    p->grouped = block > 1;
    int32_t m[8];
    for (int l = 0; l < 8; l++) m[l] = l < p->tail ? -1 : 0;
    p->tmask = _mm256_loadu_si256((const __m256i *)m);
    p->a0 = c0 / block, p->an = (c0 + w - 1) / block - p->a0 + 1;
    if (!p->grouped) return;
    /* walk the channels once: q = coefficient of the channel, rem = its place in the block */
    int64_t q = c0 / block, rem = c0 % block;
    const int nv = p->nfull + (p->tail > 0);
    if (block % 8 == 0 && c0 % 8 == 0) { /* every vector inside one block: a vector at a time */
        for (int v = 0; v < nv; v++) {
            p->off[v] = (int32_t)q, p->gat[v] = 0;
            if ((rem += 8) == block) rem = 0, q++;
        }
        return;
    }
    for (int v = 0; v < nv; v++) {
        const int lanes = v < p->nfull ? 8 : p->tail;
        int32_t lq[8];
        for (int l = 0; l < 8; l++) {
            if (l < lanes) {
                lq[l] = (int32_t)q;
                if (++rem == block) rem = 0, q++;
            } else {
                lq[l] = l > 0 ? lq[l - 1] : (int32_t)q; /* a valid index for unused lanes */
            }
        }
        p->off[v] = lq[0];
        p->gat[v] = lq[7] != lq[0];
        if (p->gat[v]) p->idx[v] = _mm256_loadu_si256((const __m256i *)lq);
    }
}

/* The coefficients of vector j of the tile in the a row ar. */
SEQK_INLINE __m256 tile_coef(const tile_plan *p, const float *ar, int j, const int grouped)
{
    if (!grouped) return _mm256_loadu_ps(ar + p->c0 + 8 * j);
    if (p->gat[j]) return _mm256_i32gather_ps(ar, p->idx[j], 4);
    return _mm256_broadcast_ss(ar + p->off[j]);
}

SEQK_INLINE void store_h(float *p, __m256 x, const int store)
{
    if (store == ST_PLAIN) {
        _mm256_storeu_ps(p, x);
    } else if (store == ST_NT) {
        _mm256_stream_ps(p, x);
    } else if (store == ST_NT16) {
        _mm_stream_ps(p, _mm256_castps256_ps128(x));
        _mm_stream_ps(p + 4, _mm256_extractf128_ps(x, 1));
    }
}

/*
 * The tile's rows, processing row k at a + k*ars, b + k*brs, h + k*hrs
 * (negative strides walk backwards). cb: the carry, 32-byte aligned, padded
 * to whole vectors; pb (ST_NONE): the product of a, same shape.
 */
SEQK_INLINE void tile_body(const tile_plan *p, int64_t rows, const float *a, int64_t ars,
                           const float *b, int64_t brs, float *h, int64_t hrs, float *cb,
                           float *pb, const int grouped, const int store)
{
    const int nfull = p->nfull;
    const int64_t pfr = p->w <= 256 ? prefetch_rows(store, brs) : 0;
    for (int64_t k = 0; k < pfr && k < rows; k++) { /* the first rows, then pfr ahead */
        prefetch_span(b + p->c0, k * brs, p->w);
        prefetch_span(a + p->a0, k * ars, p->an);
    }
    for (int64_t k = 0; k < rows; k++) {
        const float *ar = a + k * ars, *br = b + k * brs + p->c0;
        float *hr = store != ST_NONE ? h + k * hrs + p->c0 : NULL;
        if (pfr && k + pfr < rows) {
            prefetch_span(br, pfr * brs, p->w);
            prefetch_span(ar + p->a0, pfr * ars, p->an);
        }
        for (int j = 0; j < nfull; j++) {
            const __m256 av = tile_coef(p, ar, j, grouped);
            const __m256 x =
                _mm256_fmadd_ps(av, _mm256_load_ps(cb + 8 * j), _mm256_loadu_ps(br + 8 * j));
            _mm256_store_ps(cb + 8 * j, x);
            if (store == ST_NONE)
                _mm256_store_ps(pb + 8 * j, _mm256_mul_ps(_mm256_load_ps(pb + 8 * j), av));
            else
                store_h(hr + 8 * j, x, store);
        }
        if (p->tail) {
            const int j = nfull;
            const __m256 av = grouped ? tile_coef(p, ar, j, 1)
                                      : _mm256_maskload_ps(ar + p->c0 + 8 * j, p->tmask);
            const __m256 x = _mm256_fmadd_ps(av, _mm256_load_ps(cb + 8 * j),
                                             _mm256_maskload_ps(br + 8 * j, p->tmask));
            _mm256_store_ps(cb + 8 * j, x);
            if (store == ST_NONE)
                _mm256_store_ps(pb + 8 * j, _mm256_mul_ps(_mm256_load_ps(pb + 8 * j), av));
            else
                _mm256_maskstore_ps(hr + 8 * j, p->tmask, x);
        }
    }
}

/*
 * Narrow tiles (at most 4 vectors, the last one maybe partial): the carry
 * stays in registers and rows go in pairs. The pair (a1 a0, a1 b0 + b1) is
 * formed off the carry's chain, so the chain has one FMA per two rows
 * instead of an FMA and a store-to-load round trip per row.
 */
SEQK_INLINE __m256 narrow_coef(const tile_plan *p, const float *ar, int j, int last,
                               const int grouped)
{
    if (grouped) return tile_coef(p, ar, j, 1);
    return last ? _mm256_maskload_ps(ar + p->c0 + 8 * j, p->tmask)
                : _mm256_loadu_ps(ar + p->c0 + 8 * j);
}

SEQK_INLINE __m256 narrow_b(const tile_plan *p, const float *br, int j, int last)
{
    return last ? _mm256_maskload_ps(br + 8 * j, p->tmask) : _mm256_loadu_ps(br + 8 * j);
}

SEQK_INLINE void narrow_h(const tile_plan *p, float *hr, int j, __m256 x, int last,
                          const int store)
{
    if (last) _mm256_maskstore_ps(hr + 8 * j, p->tmask, x);
    else store_h(hr + 8 * j, x, store);
}

SEQK_INLINE void tile_narrow_body(const tile_plan *p, int64_t rows, const float *a, int64_t ars,
                                  const float *b, int64_t brs, float *h, int64_t hrs, float *cb,
                                  float *pb, const int NV, const int grouped, const int store)
{
    const int part = p->tail != 0; /* the last vector is partial */
    __m256 c[4], P[4];
    for (int j = 0; j < NV; j++) {
        c[j] = _mm256_load_ps(cb + 8 * j);
        P[j] = store == ST_NONE ? _mm256_load_ps(pb + 8 * j) : c[j];
    }
    const int64_t pfr = prefetch_rows(store, brs);
    for (int64_t k = 0; k < pfr + 1 && k < rows; k++) { /* the first rows, then pfr ahead */
        prefetch_span(b + p->c0, k * brs, p->w);
        prefetch_span(a + p->a0, k * ars, p->an);
    }
    int64_t k = 0;
    for (; k + 2 <= rows; k += 2) {
        const float *ar0 = a + k * ars, *ar1 = ar0 + ars;
        const float *br0 = b + k * brs + p->c0, *br1 = br0 + brs;
        float *hr0 = store != ST_NONE ? h + k * hrs + p->c0 : NULL;
        if (pfr && k + 1 + pfr < rows) { /* rows k+pfr and k+1+pfr */
            prefetch_span(br0, pfr * brs, p->w);
            prefetch_span(br1, pfr * brs, p->w);
            prefetch_span(ar0 + p->a0, pfr * ars, p->an);
            prefetch_span(ar1 + p->a0, pfr * ars, p->an);
        }
        for (int j = 0; j < NV; j++) {
            const int last = j == NV - 1 && part;
            const __m256 a0 = narrow_coef(p, ar0, j, last, grouped);
            const __m256 a1 = narrow_coef(p, ar1, j, last, grouped);
            const __m256 b0 = narrow_b(p, br0, j, last), b1 = narrow_b(p, br1, j, last);
            const __m256 A = _mm256_mul_ps(a1, a0), B = _mm256_fmadd_ps(a1, b0, b1);
            if (store == ST_NONE) {
                P[j] = _mm256_mul_ps(P[j], A);
            } else {
                narrow_h(p, hr0, j, _mm256_fmadd_ps(a0, c[j], b0), last, store);
            }
            c[j] = _mm256_fmadd_ps(A, c[j], B);
            if (store != ST_NONE) narrow_h(p, hr0 + hrs, j, c[j], last, store);
        }
    }
    if (k < rows) {
        const float *ar = a + k * ars, *br = b + k * brs + p->c0;
        float *hr = store != ST_NONE ? h + k * hrs + p->c0 : NULL;
        for (int j = 0; j < NV; j++) {
            const int last = j == NV - 1 && part;
            const __m256 av = narrow_coef(p, ar, j, last, grouped);
            c[j] = _mm256_fmadd_ps(av, c[j], narrow_b(p, br, j, last));
            if (store == ST_NONE) P[j] = _mm256_mul_ps(P[j], av);
            else narrow_h(p, hr, j, c[j], last, store);
        }
    }
    for (int j = 0; j < NV; j++) {
        _mm256_store_ps(cb + 8 * j, c[j]);
        if (store == ST_NONE) _mm256_store_ps(pb + 8 * j, P[j]);
    }
}

/* CALL(S) with S the compile-time constant equal to the runtime `store`. */
#define WITH_STORE(CALL)                                                                      \
    do {                                                                                      \
        switch (store) {                                                                      \
        case ST_NONE: CALL(ST_NONE); break;                                                   \
        case ST_PLAIN: CALL(ST_PLAIN); break;                                                 \
        case ST_NT: CALL(ST_NT); break;                                                       \
        default: CALL(ST_NT16); break;                                                        \
        }                                                                                     \
    } while (0)

/* One function per (vectors, grouped), the store mode dispatched inside. */
#define NARROW_CALL(S) tile_narrow_body(p, rows, a, ars, b, brs, h, hrs, cb, pb, NV_, G_, S)
#define TILE_NARROW(NV, G)                                                                    \
    static void tile_narrow_##NV##_##G(const tile_plan *p, int64_t rows, const float *a,     \
                                       int64_t ars, const float *b, int64_t brs, float *h,   \
                                       int64_t hrs, float *cb, float *pb, int store)         \
    {                                                                                         \
        enum { NV_ = NV, G_ = G };                                                            \
        WITH_STORE(NARROW_CALL);                                                              \
    }
TILE_NARROW(1, 0)
TILE_NARROW(2, 0)
TILE_NARROW(3, 0)
TILE_NARROW(4, 0)
TILE_NARROW(1, 1)
TILE_NARROW(2, 1)
TILE_NARROW(3, 1)
TILE_NARROW(4, 1)
#undef TILE_NARROW
#undef NARROW_CALL


typedef void (*tile_fn)(const tile_plan *, int64_t, const float *, int64_t, const float *,
                        int64_t, float *, int64_t, float *, float *, int);

#define WIDE_CALL(S) tile_body(p, rows, a, ars, b, brs, h, hrs, cb, pb, G_, S)
#define TILE_WIDE(G)                                                                          \
    static void tile_wide_##G(const tile_plan *p, int64_t rows, const float *a, int64_t ars, \
                              const float *b, int64_t brs, float *h, int64_t hrs, float *cb, \
                              float *pb, int store)                                          \
    {                                                                                         \
        enum { G_ = G };                                                                      \
        WITH_STORE(WIDE_CALL);                                                                \
    }
TILE_WIDE(0)
TILE_WIDE(1)
#undef TILE_WIDE
#undef WIDE_CALL

/* The tile kernel for a plan: narrow (<= 4 vectors) or wide, grouped or not. */
static void tile_avx2(const tile_plan *p, int64_t rows, const float *a, int64_t ars,
                      const float *b, int64_t brs, float *h, int64_t hrs, float *cb, float *pb,
                      int store)
{
    static const tile_fn narrow[2][4] = {
        {tile_narrow_1_0, tile_narrow_2_0, tile_narrow_3_0, tile_narrow_4_0},
        {tile_narrow_1_1, tile_narrow_2_1, tile_narrow_3_1, tile_narrow_4_1}};
    const int nv = p->nfull + (p->tail > 0), g = p->grouped != 0;
    const tile_fn f = nv <= 4 ? narrow[g][nv - 1] : g ? tile_wide_1 : tile_wide_0;
    f(p, rows, a, ars, b, brs, h, hrs, cb, pb, store);
}

/* ---- 2b. flat kernel: C < 8 channels along the flattened index -------------- */

/*
 * Elements i = 0, 1, ... of the flattened sequence in processing order
 * (forward: memory order r*C + c; reverse: backwards); the predecessor of
 * element i is element i - C. Vectors are loaded in memory order either
 * way; the reverse kernel is the forward one mirrored (lanes run down).
 *
 * Per vector (forward; reverse mirrored):
 *   1. scan inside each 128-bit half: lane l combines with lane l - s for
 *      s = C, 2C < 4 (byte shifts, cheap; C = 1, 2, 3 only);
 *   2. the upper half combines with the state of its chain's predecessor in
 *      the lower half (one cross-lane permute of a and of b);
 *   3. every lane combines with the carry: the state of its chain's
 *      predecessor in the previous vector (one permute, one FMA).
 * Combining lane l (a_l, b_l) with an earlier (a_p, b_p) gives
 * (a_l a_p, a_l b_p + b_l).
 */
typedef struct {
    __m256i xidx;  /* step 2: lane l <- lane xidx[l] ... */
    __m256 xkeep;  /* ... for the lanes set here */
    __m256i cidx;  /* step 3: lane l <- lane cidx[l] of the previous vector */
} flat_lanes;

static void flat_lanes_init(flat_lanes *L, int C, int rev)
{
    int32_t x[8], k[8], c[8];
    for (int l = 0; l < 8; l++) {
        /* forward: the chain l, l-C, ... ; reverse: l, l+C, ... (mirror: m = 7 - l) */
        const int m = rev ? 7 - l : l;
        const int lo = m >= 4 ? m - C * ((m - 4) / C) : m; /* chain's first lane in m's half */
        const int p = lo - C;                              /* its predecessor */
        x[l] = m >= 4 && p >= 0 ? (rev ? 7 - p : p) : 0;
        k[l] = m >= 4 && p >= 0 ? -1 : 0;
        const int first = m % C; /* the chain's first lane in the vector */
        c[l] = rev ? 7 - (first - C + 8) : first - C + 8;
    }
    L->xidx = _mm256_loadu_si256((const __m256i *)x);
    L->xkeep = _mm256_castsi256_ps(_mm256_loadu_si256((const __m256i *)k));
    L->cidx = _mm256_loadu_si256((const __m256i *)c);
}

/* Step 1 for s (1, 2, 3 elements; forward shifts lanes up within halves,
 * reverse down; the lanes that receive nothing keep their value). */
#define FLAT_HALF_STEP(s, rev)                                                                \
    do {                                                                                      \
        __m256 as_, bs_;                                                                      \
        if (!(rev)) {                                                                         \
            as_ = _mm256_castsi256_ps(_mm256_slli_si256(_mm256_castps_si256(av), 4 * (s)));  \
            bs_ = _mm256_castsi256_ps(_mm256_slli_si256(_mm256_castps_si256(bv), 4 * (s)));  \
            as_ = _mm256_blend_ps(as_, one, (s) == 1 ? 0x11 : (s) == 2 ? 0x33 : 0x77);       \
        } else {                                                                              \
            as_ = _mm256_castsi256_ps(_mm256_srli_si256(_mm256_castps_si256(av), 4 * (s)));  \
            bs_ = _mm256_castsi256_ps(_mm256_srli_si256(_mm256_castps_si256(bv), 4 * (s)));  \
            as_ = _mm256_blend_ps(as_, one, (s) == 1 ? 0x88 : (s) == 2 ? 0xCC : 0xEE);       \
        }                                                                                     \
        bv = _mm256_fmadd_ps(av, bs_, bv);                                                    \
        av = _mm256_mul_ps(av, as_);                                                          \
    } while (0)

/* Steps 1 and 2 on one vector: lane l ends up with its chain in the vector. */
SEQK_INLINE void flat_vec(__m256 *pa, __m256 *pb, __m256i xidx, __m256 xkeep, const int CT,
                          const int rev)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 av = *pa, bv = *pb;
    if (CT == 1) {
        FLAT_HALF_STEP(1, rev);
        FLAT_HALF_STEP(2, rev);
    }
    if (CT == 2) FLAT_HALF_STEP(2, rev);
    if (CT == 3) FLAT_HALF_STEP(3, rev);
    const __m256 as = _mm256_permutevar8x32_ps(av, xidx);
    const __m256 bs = _mm256_permutevar8x32_ps(bv, xidx);
    *pb = _mm256_fmadd_ps(av, _mm256_and_ps(bs, xkeep), bv);
    *pa = _mm256_mul_ps(av, _mm256_blendv_ps(one, as, xkeep));
}

/* One element in plain C: hist[8] holds the last 8 states in processing
 * order (hist[7] the latest). */
SEQK_INLINE float flat_step(int C, float av, float bv, float *hist)
{
    const float x = FMAF(av, hist[8 - C], bv);
    memmove(hist, hist + 1, 7 * sizeof(float));
    hist[7] = x;
    return x;
}

/* h + o is formed only when storing: with ST_NONE, h may be NULL. */
SEQK_INLINE void flat_store(float *h, int64_t o, __m256 x, const int store)
{
    if (store == ST_NT) _mm256_stream_ps(h + o, x);
    else if (store == ST_PLAIN) _mm256_storeu_ps(h + o, x);
}

/*
 * n elements, element i at a[d*i], b[d*i], h[d*i] with d = 1 (forward) or
 * -1 (reverse: the pointers are at the highest address). CT = C for C < 4,
 * 0 for C >= 4 (no step 1). ST_NONE computes only the states (hist).
 * Two vectors per iteration: the second is composed with the first before
 * either meets the carry, so the loop-carried chain (one permute, one FMA)
 * is paid once per 16 elements.
 */
SEQK_INLINE void flat_body(const flat_lanes *L, int64_t n, int C, const float *a, const float *b,
                           float *h, float *hist, const int CT, const int rev, const int store)
{
    const int64_t d = rev ? -1 : 1;
    int64_t i = 0;
    if (store == ST_NT) /* peel to 32-byte alignment of the vector stores */
        for (; i < n; i++) {
            const uintptr_t addr = (uintptr_t)h + (uintptr_t)((rev ? -i - 7 : i) * 4);
            if ((addr & 31) == 0) break;
            h[d * i] = flat_step(C, a[d * i], b[d * i], hist);
        }
    if (store == ST_NONE && rev) /* see prefetch_back: the first PF_BYTES */
        for (int64_t x = 0; x < PF_BYTES && x < 4 * n; x += 64) {
            prefetch_back(a, x);
            prefetch_back(b, x);
        }
    if (i + 8 <= n) {
        /* in registers: stores to h could alias *L as far as the compiler knows */
        const __m256i xidx = L->xidx, cidx = L->cidx;
        const __m256i cidx2 = _mm256_permutevar8x32_epi32(cidx, cidx); /* through one vector */
        const __m256i mirror = _mm256_setr_epi32(7, 6, 5, 4, 3, 2, 1, 0);
        const __m256 xkeep = L->xkeep;
        /* the carry vector holds the last 8 states in memory lane order */
        __m256 cv = _mm256_loadu_ps(hist);
        if (rev) cv = _mm256_permutevar8x32_ps(cv, mirror);
        for (; i + 16 <= n; i += 16) {
            const int64_t o0 = rev ? -i - 7 : i, o1 = rev ? -i - 15 : i + 8;
            if (store == ST_NONE && rev && i + 16 + PF_BYTES / 4 <= n) { /* ... then ahead */
                prefetch_back(a - i - 15, PF_BYTES);
                prefetch_back(b - i - 15, PF_BYTES);
            }
            __m256 a0 = _mm256_loadu_ps(a + o0), b0 = _mm256_loadu_ps(b + o0);
            __m256 a1 = _mm256_loadu_ps(a + o1), b1 = _mm256_loadu_ps(b + o1);
            flat_vec(&a0, &b0, xidx, xkeep, CT, rev);
            flat_vec(&a1, &b1, xidx, xkeep, CT, rev);
            b1 = _mm256_fmadd_ps(a1, _mm256_permutevar8x32_ps(b0, cidx), b1);
            a1 = _mm256_mul_ps(a1, _mm256_permutevar8x32_ps(a0, cidx));
            const __m256 h0 = _mm256_fmadd_ps(a0, _mm256_permutevar8x32_ps(cv, cidx), b0);
            cv = _mm256_fmadd_ps(a1, _mm256_permutevar8x32_ps(cv, cidx2), b1);
            flat_store(h, o0, h0, store);
            flat_store(h, o1, cv, store);
        }
        if (i + 8 <= n) {
            const int64_t o = rev ? -i - 7 : i;
            __m256 av = _mm256_loadu_ps(a + o), bv = _mm256_loadu_ps(b + o);
            flat_vec(&av, &bv, xidx, xkeep, CT, rev);
            cv = _mm256_fmadd_ps(av, _mm256_permutevar8x32_ps(cv, cidx), bv);
            flat_store(h, o, cv, store);
            i += 8;
        }
        if (rev) cv = _mm256_permutevar8x32_ps(cv, mirror);
        _mm256_storeu_ps(hist, cv);
    }
    for (; i < n; i++) {
        const float x = flat_step(C, a[d * i], b[d * i], hist);
        if (store != ST_NONE) h[d * i] = x;
    }
}

#define FLAT_DISPATCH(CT)                                                                     \
    static void flat_c##CT(const flat_lanes *L, int64_t n, int C, const float *a,             \
                           const float *b, float *h, float *hist, int rev, int store)         \
    {                                                                                         \
        if (rev) {                                                                            \
            if (store == ST_NONE) flat_body(L, n, C, a, b, h, hist, CT, 1, ST_NONE);          \
            else if (store == ST_NT) flat_body(L, n, C, a, b, h, hist, CT, 1, ST_NT);         \
            else flat_body(L, n, C, a, b, h, hist, CT, 1, ST_PLAIN);                          \
        } else {                                                                              \
            if (store == ST_NONE) flat_body(L, n, C, a, b, h, hist, CT, 0, ST_NONE);          \
            else if (store == ST_NT) flat_body(L, n, C, a, b, h, hist, CT, 0, ST_NT);         \
            else flat_body(L, n, C, a, b, h, hist, CT, 0, ST_PLAIN);                          \
        }                                                                                     \
    }
FLAT_DISPATCH(0)
FLAT_DISPATCH(1)
FLAT_DISPATCH(2)
FLAT_DISPATCH(3)
#undef FLAT_DISPATCH

static void flat_run(const flat_lanes *L, int64_t n, int C, const float *a, const float *b,
                     float *h, float *hist, int rev, int store)
{
    switch (C) {
    case 1: flat_c1(L, n, C, a, b, h, hist, rev, store); break;
    case 2: flat_c2(L, n, C, a, b, h, hist, rev, store); break;
    case 3: flat_c3(L, n, C, a, b, h, hist, rev, store); break;
    default: flat_c0(L, n, C, a, b, h, hist, rev, store); break;
    }
}

/* colp[e % CA] *= a[e] for e < n (the product of each coefficient column of
 * contiguous rows of CA < 8 coefficients; a at a row start). Vertical
 * products in U independent accumulators, U*8 a multiple of CA. */
SEQK_INLINE void colprod_body(int64_t n, int CA, const float *a, float *colp, const int U)
{
    __m256 acc[8];
    for (int k = 0; k < U; k++) acc[k] = _mm256_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 8 * U <= n; i += 8 * U)
        for (int k = 0; k < U; k++) acc[k] = _mm256_mul_ps(acc[k], _mm256_loadu_ps(a + i + 8 * k));
    float t[8];
    for (int k = 0; k < U; k++) {
        _mm256_storeu_ps(t, acc[k]);
        for (int l = 0; l < 8; l++) colp[(8 * k + l) % CA] *= t[l];
    }
    for (; i < n; i++) colp[i % CA] *= a[i];
}

static void colprod(int64_t n, int CA, const float *a, float *colp)
{
    switch (CA) {
    case 3: case 6: colprod_body(n, CA, a, colp, 6); break;
    case 5: colprod_body(n, CA, a, colp, 5); break;
    case 7: colprod_body(n, CA, a, colp, 7); break;
    default: colprod_body(n, CA, a, colp, 8); break; /* 1, 2, 4 */
    }
}

/*
 * The aggregate alone (C = 1, 2, 4): a reduction tree instead of a scan.
 * Each level composes adjacent pairs of elements of two vectors and packs
 * the results into one vector; after log2(8/C) levels a vector holds whole
 * vectors' aggregates, which are reduced further and folded into the
 * running (A, E) per channel once per group of 64 / C elements. The
 * tree halves the shuffles of the scan and leaves one FMA per group on the
 * chain. Reverse composes the higher memory half first.
 */
SEQK_INLINE void compose2(__m256 *A, __m256 *B, __m256 a_lo, __m256 b_lo, __m256 a_hi,
                          __m256 b_hi, const int rev)
{
    /* forward: lo first, then hi; reverse: hi first */
    if (!rev) *B = _mm256_fmadd_ps(a_hi, b_lo, b_hi), *A = _mm256_mul_ps(a_hi, a_lo);
    else *B = _mm256_fmadd_ps(a_lo, b_hi, b_lo), *A = _mm256_mul_ps(a_lo, a_hi);
}

SEQK_INLINE void compose1(__m128 *A, __m128 *B, __m128 a_lo, __m128 b_lo, __m128 a_hi,
                          __m128 b_hi, const int rev)
{
    if (!rev) *B = _mm_fmadd_ps(a_hi, b_lo, b_hi), *A = _mm_mul_ps(a_hi, a_lo);
    else *B = _mm_fmadd_ps(a_lo, b_hi, b_lo), *A = _mm_mul_ps(a_lo, a_hi);
}

/* pairs of lanes (2j, 2j+1) of x then y, packed: [x01 x23 y01 y23 | x45 x67 y45 y67] */
SEQK_INLINE void level_ps(__m256 *A, __m256 *B, __m256 ax, __m256 bx, __m256 ay, __m256 by,
                          const int rev)
{
    compose2(A, B, _mm256_shuffle_ps(ax, ay, 0x88), _mm256_shuffle_ps(bx, by, 0x88),
             _mm256_shuffle_ps(ax, ay, 0xDD), _mm256_shuffle_ps(bx, by, 0xDD), rev);
}

/* pairs of lane pairs: [x(01,23) y(01,23) | x(45,67) y(45,67)] */
SEQK_INLINE void level_pd(__m256 *A, __m256 *B, __m256 ax, __m256 bx, __m256 ay, __m256 by,
                          const int rev)
{
#define LO_PD(u, v) _mm256_castpd_ps(_mm256_unpacklo_pd(_mm256_castps_pd(u), _mm256_castps_pd(v)))
#define HI_PD(u, v) _mm256_castpd_ps(_mm256_unpackhi_pd(_mm256_castps_pd(u), _mm256_castps_pd(v)))
    compose2(A, B, LO_PD(ax, ay), LO_PD(bx, by), HI_PD(ax, ay), HI_PD(bx, by), rev);
#undef LO_PD
#undef HI_PD
}

/* halves: [x.lo-then-hi | y.lo-then-hi] */
SEQK_INLINE void level_128(__m256 *A, __m256 *B, __m256 ax, __m256 bx, __m256 ay, __m256 by,
                           const int rev)
{
    compose2(A, B, _mm256_permute2f128_ps(ax, ay, 0x20), _mm256_permute2f128_ps(bx, by, 0x20),
             _mm256_permute2f128_ps(ax, ay, 0x31), _mm256_permute2f128_ps(bx, by, 0x31), rev);
}

/* (A, E) per channel (lanes 0..C-1) folded with n elements of processing
 * order (pointers at the first one processed, as for flat_body; the run
 * starts at a row boundary). */
/* The aggregate of one group of 64 / CT elements (8, 4 or 2 vectors at ag,
 * bg in memory order), in lanes 0 .. C-1. */
SEQK_INLINE void flat_group(const float *ag, const float *bg, __m128 *Ag, __m128 *Bg,
                            const int CT, const int rev)
{
    __m256 A, B;
    if (CT == 1) {
        __m256 A0, B0, A1, B1, A2, B2, A3, B3, Q0, R0, Q1, R1;
        level_ps(&A0, &B0, _mm256_loadu_ps(ag), _mm256_loadu_ps(bg), _mm256_loadu_ps(ag + 8),
                 _mm256_loadu_ps(bg + 8), rev);
        level_ps(&A1, &B1, _mm256_loadu_ps(ag + 16), _mm256_loadu_ps(bg + 16),
                 _mm256_loadu_ps(ag + 24), _mm256_loadu_ps(bg + 24), rev);
        level_ps(&A2, &B2, _mm256_loadu_ps(ag + 32), _mm256_loadu_ps(bg + 32),
                 _mm256_loadu_ps(ag + 40), _mm256_loadu_ps(bg + 40), rev);
        level_ps(&A3, &B3, _mm256_loadu_ps(ag + 48), _mm256_loadu_ps(bg + 48),
                 _mm256_loadu_ps(ag + 56), _mm256_loadu_ps(bg + 56), rev);
        level_ps(&Q0, &R0, A0, B0, A1, B1, rev);
        level_ps(&Q1, &R1, A2, B2, A3, B3, rev);
        level_128(&A, &B, Q0, R0, Q1, R1, rev); /* lanes: the 8 vectors */
        level_ps(&A, &B, A, B, A, B, rev);       /* lanes 0, 1 of each half */
        const __m256 a0 = _mm256_shuffle_ps(A, A, 0x00), b0 = _mm256_shuffle_ps(B, B, 0x00);
        compose2(&A, &B, a0, b0, _mm256_shuffle_ps(A, A, 0x55), _mm256_shuffle_ps(B, B, 0x55),
                 rev); /* lane 0 of each half */
    } else if (CT == 2) {
        __m256 A0, B0, A1, B1;
        level_pd(&A0, &B0, _mm256_loadu_ps(ag), _mm256_loadu_ps(bg), _mm256_loadu_ps(ag + 8),
                 _mm256_loadu_ps(bg + 8), rev);
        level_pd(&A1, &B1, _mm256_loadu_ps(ag + 16), _mm256_loadu_ps(bg + 16),
                 _mm256_loadu_ps(ag + 24), _mm256_loadu_ps(bg + 24), rev);
        level_128(&A, &B, A0, B0, A1, B1, rev); /* lane pairs: the 4 vectors */
        level_pd(&A, &B, A, B, A, B, rev);       /* lanes 0, 1 of each half */
    } else {
        level_128(&A, &B, _mm256_loadu_ps(ag), _mm256_loadu_ps(bg), _mm256_loadu_ps(ag + 8),
                  _mm256_loadu_ps(bg + 8), rev); /* halves: the 2 vectors */
    }
    compose1(Ag, Bg, _mm256_castps256_ps128(A), _mm256_castps256_ps128(B),
             _mm256_extractf128_ps(A, 1), _mm256_extractf128_ps(B, 1), rev);
}

/* (A, E) per channel (lanes 0..C-1) folded with n elements of processing
 * order (pointers at the first one processed, as for flat_body; the run
 * starts at a row boundary). 64 elements per iteration: CT groups combined
 * off the chain, then one FMA on it. */
SEQK_INLINE void flat_tree_body(int64_t n, int C, const float *a, const float *b, float *Ach,
                                float *Ech, const int CT, const int rev)
{
    const int G = 64 / CT; /* elements per group */
    float At[4] = {1, 1, 1, 1}, Et[4] = {0, 0, 0, 0};
    for (int c = 0; c < C; c++) At[c] = Ach[c], Et[c] = Ech[c];
    __m128 Ar = _mm_loadu_ps(At), Er = _mm_loadu_ps(Et);
    if (rev) /* the first PF_BYTES, then PF_BYTES ahead */
        for (int64_t x = 0; x < PF_BYTES && x < 4 * n; x += 64) {
            prefetch_back(a, x);
            prefetch_back(b, x);
        }
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        if (rev && i + 64 + PF_BYTES / 4 <= n)
            for (int l = 0; l < 4; l++) {
                prefetch_back(a - i - 63 + 16 * l, PF_BYTES);
                prefetch_back(b - i - 63 + 16 * l, PF_BYTES);
            }
        __m128 Ag[4], Bg[4]; /* the groups in processing order */
        for (int g = 0; g < CT; g++) {
            const int64_t e = i + g * G; /* first element of the group processed */
            flat_group(rev ? a - e - (G - 1) : a + e, rev ? b - e - (G - 1) : b + e, &Ag[g],
                       &Bg[g], CT, rev);
        }
        if (CT == 4) {
            compose1(&Ag[0], &Bg[0], Ag[0], Bg[0], Ag[1], Bg[1], 0);
            compose1(&Ag[2], &Bg[2], Ag[2], Bg[2], Ag[3], Bg[3], 0);
        }
        if (CT >= 2) {
            const int k = CT == 4 ? 2 : 1;
            compose1(&Ag[0], &Bg[0], Ag[0], Bg[0], Ag[k], Bg[k], 0);
        }
        Er = _mm_fmadd_ps(Ag[0], Er, Bg[0]);
        Ar = _mm_mul_ps(Ar, Ag[0]);
    }
    _mm_storeu_ps(At, Ar);
    _mm_storeu_ps(Et, Er);
    for (int c = 0; c < C; c++) Ach[c] = At[c], Ech[c] = Et[c];
    const int64_t d = rev ? -1 : 1;
    for (; i < n; i++) {
        const int c = (int)(rev ? C - 1 - i % C : i % C);
        Ech[c] = FMAF(a[d * i], Ech[c], b[d * i]);
        Ach[c] *= a[d * i];
    }
}

static void flat_tree(int64_t n, int C, const float *a, const float *b, float *Ach, float *Ech,
                      int rev)
{
#define TREE(CT, R) flat_tree_body(n, C, a, b, Ach, Ech, CT, R)
    switch (C * 2 + (rev != 0)) {
    case 2: TREE(1, 0); break;
    case 3: TREE(1, 1); break;
    case 4: TREE(2, 0); break;
    case 5: TREE(2, 1); break;
    case 8: TREE(4, 0); break;
    default: TREE(4, 1); break;
    }
#undef TREE
}

/*
 * `rows` contiguous rows of C < 8 channels (b, h row stride C, a row stride
 * C/block), memory row 0 at a, b, h; rev walks them from the last. carry[C]
 * (channel order) in/out; with ST_NONE, prod[C] is multiplied by the
 * product of a. NT stores peel to 32-byte alignment (no ST_NT16 here).
 * Blocks > 1 expand the coefficients per element, a chunk at a time.
 */
static void flat_rows(int64_t rows, int C, int64_t block, int rev, const float *a,
                      const float *b, float *h, float *carry, float *prod, int store)
{
    const int tree = store == ST_NONE && (C == 1 || C == 2 || C == 4);
    flat_lanes L;
    if (!tree) flat_lanes_init(&L, C, rev);
    /* hist[8 - C + j] is the state of channel j (reverse: C-1-j) before the first element */
    float hist[8] = {0};
    for (int j = 0; j < C; j++) hist[8 - C + j] = carry[rev ? C - 1 - j : j];
    if (store == ST_NT && ((uintptr_t)h & 3)) store = ST_PLAIN;
    const int64_t n = rows * C;
    _Alignas(32) float abuf[FLAT_CHUNK];
    for (int64_t i = 0; i < n;) {
        /* elements [lo, lo + m) in memory; o: the one processed first */
        const int64_t m = block == 1 ? n : min64(FLAT_CHUNK, n - i), lo = rev ? n - i - m : i;
        const int64_t o = rev ? lo + m - 1 : lo;
        const float *ap = a + o;
        if (block > 1) {
            int64_t q = lo / block, rem = lo % block;
            for (int64_t e = 0; e < m; e++) {
                abuf[e] = a[q];
                if (++rem == block) rem = 0, q++;
            }
            ap = abuf + (rev ? m - 1 : 0);
        }
        if (tree) flat_tree(m, C, ap, b + o, prod, carry, rev);
        else flat_run(&L, m, C, ap, b + o, h ? h + o : NULL, hist, rev, store);
        i += m;
    }
    if (tree) return;
    for (int j = 0; j < C; j++) carry[rev ? C - 1 - j : j] = hist[8 - C + j];
    if (store == ST_NONE) {
        const int CA = (int)(C / block);
        float colp[8] = {1, 1, 1, 1, 1, 1, 1, 1};
        colprod(rows * CA, CA, a, colp);
        for (int c = 0; c < C; c++) prod[c] *= colp[c / block];
    }
}

#endif /* __AVX2__ */

/* ==== 3. jobs: a channel range of one sequence, bound to its kernel ============ */

/*
 * Channels [c0, c0 + w) of `rows` rows (memory row 0 at a, b, h; layout of
 * scan.h), walked in processing order: forward rows 0, 1, ...; reverse
 * rows-1, rows-2, .... A job is run over a range of processing rows
 * [k0, k1) from a carry: writing h, or composing the aggregate (no h).
 */
typedef struct {
    const float *a, *b;
    float *h;
    int64_t ars, brs, hrs;
    int64_t rows, C, block, c0, w;
    int rev;
    int flat;  /* the flat kernel (C < 8, contiguous rows, the whole row) */
    int store; /* for writing h: ST_PLAIN, ST_NT or ST_NT16 */
#ifdef __AVX2__
    tile_plan plan; /* the tile kernel (!flat) */
#endif
} scan_job;

static void job_init(scan_job *J, int64_t rows, int64_t C, int64_t block, int rev,
                     const float *a, int64_t ars, const float *b, int64_t brs, float *h,
                     int64_t hrs, int64_t c0, int64_t w, int stream)
{
    J->a = a, J->b = b, J->h = h;
    J->ars = ars, J->brs = brs, J->hrs = hrs;
    J->rows = rows, J->C = C, J->block = block, J->c0 = c0, J->w = w;
    J->rev = rev;
    J->flat = 0;
    J->store = ST_PLAIN;
#ifdef __AVX2__
    if (C < 8 && w == C && brs == C && ars * block == C && (!h || hrs == C)) {
        J->flat = 1;
        J->store = stream ? ST_NT : ST_PLAIN; /* peels to alignment */
        return;
    }
    tile_plan_init(&J->plan, c0, w, block);
    if (stream && h) {
        const uintptr_t addr = (uintptr_t)(h + c0);
        if (addr % 32 == 0 && hrs % 8 == 0) J->store = ST_NT;
        else if (addr % 16 == 0 && hrs % 4 == 0) J->store = ST_NT16;
    }
#else
    (void)stream;
#endif
}

/*
 * Processing rows [k0, k1) of the job. cb: the carry of the job's w
 * channels (in/out), pb: their product of a (aggregate only), both 32-byte
 * aligned and padded to a multiple of 8 floats. write_h: 1 writes h, 0
 * composes the aggregate into cb (started at 0) and pb (started at 1).
 */
static void job_run(const scan_job *J, int64_t k0, int64_t k1, float *cb, float *pb, int write_h)
{
    if (k1 <= k0) return;
    const int64_t n = k1 - k0;
    /* memory rows [r0, r0 + n) */
    const int64_t r0 = J->rev ? J->rows - k1 : k0;
    const float *a = J->a + r0 * J->ars, *b = J->b + r0 * J->brs;
    float *h = write_h ? J->h + r0 * J->hrs : NULL;
#ifdef __AVX2__
    const int store = write_h ? J->store : ST_NONE;
    if (J->flat) {
        flat_rows(n, (int)J->C, J->block, J->rev, a, b, h, cb, pb, store);
        if (store == ST_NT) _mm_sfence();
        return;
    }
#endif
    /* the tile kernels walk pointers: reverse starts at the last row */
    int64_t ars = J->ars, brs = J->brs, hrs = J->hrs;
    if (J->rev) {
        a += (n - 1) * ars, b += (n - 1) * brs;
        if (h) h += (n - 1) * hrs;
        ars = -ars, brs = -brs, hrs = -hrs;
    }
#ifdef __AVX2__
    tile_avx2(&J->plan, n, a, ars, b, brs, h, hrs, cb, pb, store);
    if (store == ST_NT || store == ST_NT16) _mm_sfence();
#else
    tile_scalar(n, J->c0, J->w, J->block, a, ars, b, brs, h, hrs, cb, write_h ? NULL : pb);
#endif
}

/* ==== 4. single-threaded entry points =========================================== */

/* seqk__scan_rows (h != NULL or not) and seqk__scan_rows_aggregate (prod). */
static void scan_rows_impl(int64_t rows, int64_t C, int64_t block, unsigned flags,
                           const float *a, int64_t ars, const float *b, int64_t brs, float *h,
                           int64_t hrs, float *carry, float *prod)
{
    if (rows <= 0 || C <= 0) return;
    const int rev = (flags & SEQK__SCAN_REVERSE) != 0;
    const int write_h = h != NULL && prod == NULL;
    const int keep = (flags & SEQK__SCAN_KEEP_CARRY) != 0 && write_h;
    if (rows == 1 && !prod) {
        /* one step (a chunk walk's state update): a carry + b with one FMA
         * per channel, the arithmetic of every kernel's single row (a
         * tile's odd last row, the wide tile's every row), without a tile
         * plan or the carry's round trip through the tile buffer; into h
         * alone (keep), into carry and then h (unless h is carry) */
        float *dst = keep ? h : carry;
        for (int64_t c0 = 0; c0 < C; c0 += block) {
            const float av = a[c0 / block];
            for (int64_t c = c0; c < c0 + block; c++) dst[c] = FMAF(av, carry[c], b[c]);
            if (write_h && !keep && h != carry)
                memcpy(h + c0, carry + c0, (size_t)block * sizeof(float));
        }
        return;
    }
    _Alignas(32) float cb[TILE + 8];
    _Alignas(32) float pb[TILE + 8];
    scan_job J;
    for (int64_t c0 = 0; c0 < C; c0 += TILE) {
        const int64_t w = min64(TILE, C - c0);
        job_init(&J, rows, C, block, rev, a, ars, b, brs, write_h ? h : NULL, hrs, c0, w,
                 (flags & SEQK__SCAN_STREAM) != 0);
        for (int64_t j = 0; j < w; j++) {
            cb[j] = carry[c0 + j];
            pb[j] = prod ? prod[c0 + j] : 1.0f;
        }
        job_run(&J, 0, rows, cb, pb, write_h);
        if (!keep) memcpy(carry + c0, cb, (size_t)w * sizeof(float));
        if (prod) memcpy(prod + c0, pb, (size_t)w * sizeof(float));
    }
}

void seqk__scan_rows(int64_t rows, int64_t C, int64_t block, unsigned flags, const float *a,
                     int64_t a_row_stride, const float *b, int64_t b_row_stride, float *h,
                     int64_t h_row_stride, float *carry)
{
    scan_rows_impl(rows, C, block, flags, a, a_row_stride, b, b_row_stride, h, h_row_stride,
                   carry, NULL);
}

void seqk__scan_rows_aggregate(int64_t rows, int64_t C, int64_t block, unsigned flags,
                               const float *a, int64_t a_row_stride, const float *b,
                               int64_t b_row_stride, float *prod, float *end)
{
    for (int64_t c = 0; c < C; c++) prod[c] = 1.0f, end[c] = 0.0f;
    scan_rows_impl(rows, C, block, flags, a, a_row_stride, b, b_row_stride, NULL, 0, end, prod);
}

/* ---- waiting for another thread ---------------------------------------------- */

/* Threads of a time split hand each other their carries through a counter
 * per thread (blocks published) and a buffer on the publisher's stack. A
 * waiting thread spins (about a millisecond: a hand-off normally comes
 * within a block's time, tens of microseconds, and yielding costs a whole
 * scheduler slice when the core has other work), then yields its core: the
 * thread it waits for may have been descheduled and need that core. */
typedef struct {
    _Alignas(64) atomic_llong seq;
    float *buf;
    char pad[64 - sizeof(atomic_llong) - sizeof(float *)];
} ts_mailbox;

static void wait_for(atomic_llong *seq, long long target)
{
    for (int spins = 0; atomic_load_explicit(seq, memory_order_acquire) < target;) {
        if (spins < 20000) {
            spins++;
#if defined(__SSE2__)
            _mm_pause();
#endif
        } else {
#if defined(SEQK__HAVE_SCHED_YIELD)
            sched_yield();
#endif
        }
    }
}

/* ==== 5. drivers ================================================================= */

/*
 * Time split of one job (w <= TS_GROUP channels) over a team of up to P
 * threads, in blocks of rows sized so that each thread's share of a and b
 * (~SEQK_SCAN_L2_BYTES) stays in its L2 between the two passes over it.
 *
 * In each block, thread p owns processing rows [k0 + p*per, k0 + (p+1)*per):
 *   (1) it composes its rows' aggregate (product of a, end state from 0);
 *   (2) it takes the inclusive prefix of the rows before its own (published
 *       by thread p-1; thread 0 takes the last thread's from the previous
 *       block, or the initial carry), publishes its own
 *       (= product * carry-in + end state) right away, and
 *   (3) re-runs its rows, now in L2, from the carry-in, writing h.
 * Only (2) waits, and only for the thread before; a thread can run about a
 * phase ahead of the next one. One mailbox per thread suffices: p publishes
 * block k after reading p-1's block k, which happened after every reader of
 * p's block k-1 had read it (the hand-off goes round the threads in order).
 * carry[w]: in/out.
 */
static void time_split(int P, const scan_job *J, float *carry)
{
    enum { LD = TS_GROUP + 8 };
    ts_mailbox box[TS_MAXT];
    const int64_t rows = J->rows, w = J->w;
    const int64_t row_bytes = 4 * w + 4 * (w / J->block + 2);
    const int64_t rpt = max64(16, SEQK_SCAN_L2_BYTES / row_bytes); /* rows per thread */
    if (P > TS_MAXT) P = TS_MAXT;
#pragma omp parallel num_threads(P)
    {
        const int np = team_size(), p = thread_id();
        _Alignas(32) float A[LD], E[LD]; /* aggregate: product of a, end state */
        _Alignas(32) float cur[LD];      /* carry-in, then this thread's carry */
        _Alignas(32) float pub[LD];      /* the inclusive prefix it publishes */
        atomic_init(&box[p].seq, 0);
        box[p].buf = pub;
#pragma omp barrier
        ts_mailbox *prev = &box[p > 0 ? p - 1 : np - 1];
        const int64_t brows = rpt * np;
        for (long long blk = 0; blk * brows < rows; blk++) {
            const int64_t k0 = blk * brows, nb = min64(brows, rows - k0), per = cdiv(nb, np);
            const int64_t lo = min64(k0 + p * per, k0 + nb), hi = min64(lo + per, k0 + nb);
            for (int64_t c = 0; c < LD; c++) A[c] = 1.0f, E[c] = 0.0f;
            job_run(J, lo, hi, E, A, 0); /* (1) */
            const float *in;             /* (2) */
            if (p == 0 && blk == 0) {
                in = carry;
            } else {
                wait_for(&prev->seq, p > 0 ? blk + 1 : blk);
                in = prev->buf;
            }
            for (int64_t c = 0; c < w; c++) {
                cur[c] = in[c];
                pub[c] = FMAF(A[c], cur[c], E[c]);
            }
            atomic_store_explicit(&box[p].seq, blk + 1, memory_order_release);
            job_run(J, lo, hi, cur, NULL, 1); /* (3) */
            /* the owner of the last row leaves the state it wrote there (the
             * published prefix is the same up to rounding); carry has been read */
            if (lo < hi && hi == rows) memcpy(carry, cur, (size_t)w * sizeof(float));
        }
    }
}

/* Channel tile width for N sequences of C channels on P threads: enough
 * tiles for every thread, as wide as possible (long runs per row stream
 * best: 8 KiB rows measured ~1.4x faster than 4 KiB ones), at least
 * SEQK_SCAN_TILE_MIN channels and at most TILE; the whole row when it fits. */
static int64_t tile_width(int64_t C, int64_t N, int P)
{
    const int64_t k = max64(1, cdiv((int64_t)P, N));
    int64_t W = (cdiv(C, k) + 7) / 8 * 8;
    W = min64(max64(W, SEQK_SCAN_TILE_MIN), TILE);
    return W >= C ? C : W;
}

/*
 * Channels [c0, c0 + cw) of one sequence of `rows` rows on P threads:
 * channel tiles in parallel when there are enough of them, else a time
 * split per group of TS_GROUP channels, or one thread when it is small.
 * carry[cw] in/out.
 */
static void scan_seq_parallel(int P, int64_t rows, int64_t C, int64_t block, int rev,
                              const float *a, int64_t ars, const float *b, int64_t brs, float *h,
                              int64_t hrs, int64_t c0, int64_t cw, float *carry, int stream)
{
    if (rows <= 0) return;
    if (P <= 1 || rows * cw < SEQK_SCAN_TS_MIN * P) {
        _Alignas(32) float cb[TILE + 8];
        scan_job J;
        for (int64_t g = 0; g < cw; g += TILE) {
            const int64_t gw = min64(TILE, cw - g);
            job_init(&J, rows, C, block, rev, a, ars, b, brs, h, hrs, c0 + g, gw, stream);
            memcpy(cb, carry + g, (size_t)gw * sizeof(float));
            job_run(&J, 0, rows, cb, NULL, 1);
            memcpy(carry + g, cb, (size_t)gw * sizeof(float));
        }
        return;
    }
    const int64_t W = tile_width(cw, 1, P), ntiles = cdiv(cw, W);
    if (ntiles >= 2 * P || (ntiles % P == 0 && cw % W == 0)) {
#pragma omp parallel for num_threads(P) schedule(dynamic, 1)
        for (int64_t t = 0; t < ntiles; t++) {
            const int64_t g = t * W, gw = min64(W, cw - g);
            _Alignas(32) float cb[TILE + 8];
            scan_job J;
            job_init(&J, rows, C, block, rev, a, ars, b, brs, h, hrs, c0 + g, gw, stream);
            memcpy(cb, carry + g, (size_t)gw * sizeof(float));
            job_run(&J, 0, rows, cb, NULL, 1);
            memcpy(carry + g, cb, (size_t)gw * sizeof(float));
        }
        return;
    }
    scan_job J;
    for (int64_t g = 0; g < cw; g += TS_GROUP) {
        const int64_t gw = min64(TS_GROUP, cw - g);
        job_init(&J, rows, C, block, rev, a, ars, b, brs, h, hrs, c0 + g, gw, stream);
        time_split(P, &J, carry + g);
    }
}

void seqk__scan_rows_parallel(int threads, int64_t rows, int64_t C, int64_t block,
                              unsigned flags, const float *a, int64_t a_row_stride,
                              const float *b, int64_t b_row_stride, float *h,
                              int64_t h_row_stride, float *carry)
{
    if (rows <= 0 || C <= 0) return;
    scan_seq_parallel(threads, rows, C, block, (flags & SEQK__SCAN_REVERSE) != 0, a,
                      a_row_stride, b, b_row_stride, h, h_row_stride, 0, C, carry,
                      (flags & SEQK__SCAN_STREAM) != 0);
}

/* ==== 6. seqk_scan's CPU backend ================================================ */

/*
 * Work items are (sequence, channel tile); each walks its rows in time order
 * with the carry in L1, vectorised across the tile's channels (or along the
 * flattened rows when C < 8). Items run in parallel, unless that leaves
 * threads idle or one item holds more than its share of the work: such
 * "long" sequences are then scanned one after another, each split in time
 * (or in channel tiles) across all the threads.
 */
seqk_status seqk__cpu_scan(seqk_context *ctx, int64_t B, int64_t T, int64_t C, int64_t block,
                           unsigned flags, const float *a, const float *b, const float *h0,
                           float *h, float *h_final, const int32_t *cu, int64_t N)
{
    const int rev = (flags & SEQK_SCAN_REVERSE) != 0;
    const int P = seqk__threads(ctx);
    const int64_t CA = C / block, total = B * T * C;
    const int stream = total * (int64_t)sizeof(float) > SEQK_SCAN_NT_BYTES;
    const int64_t W = tile_width(C, N, P), ntiles = cdiv(C, W), items = N * ntiles;
    const int balanced = !cu && items % P == 0;
    /* a sequence of L rows is long when its items should be split further */
#define SEQ_LEN(n) (cu ? (int64_t)cu[(n) + 1] - cu[(n)] : T)
#define SEQ_START(n) (cu ? (int64_t)cu[(n)] : (n) * T)
#define IS_LONG(L)                                                                          \
    (P > 1 && !balanced && (L) * C >= SEQK_SCAN_TS_MIN * P && (L) * W * 2 * P > total)
    int64_t nlong = 0;
    for (int64_t n = 0; n < N; n++) nlong += IS_LONG(SEQ_LEN(n));

    if (nlong < N) {
        const int64_t chunk = max64(1, items / ((int64_t)P * 8));
        (void)chunk; /* without OpenMP */
#pragma omp parallel for num_threads(P) schedule(dynamic, chunk) if (P > 1 && items > 1)
        for (int64_t it = 0; it < items; it++) {
            const int64_t n = it / ntiles, c0 = (it % ntiles) * W, w = min64(W, C - c0);
            const int64_t L = SEQ_LEN(n), r0 = SEQ_START(n);
            if (IS_LONG(L)) continue;
            _Alignas(32) float cb[TILE + 8];
            if (h0) memcpy(cb, h0 + n * C + c0, (size_t)w * sizeof(float));
            else memset(cb, 0, (size_t)w * sizeof(float));
            if (L > 0) {
                scan_job J;
                job_init(&J, L, C, block, rev, a + r0 * CA, CA, b + r0 * C, C, h + r0 * C, C, c0,
                         w, stream);
                job_run(&J, 0, L, cb, NULL, 1);
            }
            if (h_final) memcpy(h_final + n * C + c0, cb, (size_t)w * sizeof(float));
        }
    }
    for (int64_t n = 0; n < N && nlong > 0; n++) {
        const int64_t L = SEQ_LEN(n), r0 = SEQ_START(n);
        if (!IS_LONG(L)) continue;
        _Alignas(32) float cb[TILE + 8];
        for (int64_t c0 = 0; c0 < C; c0 += TILE) {
            const int64_t w = min64(TILE, C - c0);
            if (h0) memcpy(cb, h0 + n * C + c0, (size_t)w * sizeof(float));
            else memset(cb, 0, (size_t)w * sizeof(float));
            scan_seq_parallel(P, L, C, block, rev, a + r0 * CA, CA, b + r0 * C, C, h + r0 * C, C,
                              c0, w, cb, stream);
            if (h_final) memcpy(h_final + n * C + c0, cb, (size_t)w * sizeof(float));
        }
    }
#undef IS_LONG
#undef SEQ_START
#undef SEQ_LEN
    return SEQK_SUCCESS;
}
