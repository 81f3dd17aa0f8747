/*
 * scan/scan_cpu.c -- CPU backend of the scan primitive (DESIGN 3.6).
 *
 *     h_r[c] = a_r[c] * h_{r-1}[c] + b_r[c]     (reverse: h_{r+1}, same a_r)
 *
 * The work is memory-bound (read a, read b, write h), so everything here is
 * about touching each byte once, in long contiguous runs, on every core:
 *
 *   1. the recurrence in plain C: the portable kernel (and the scalar steps
 *      the SIMD kernels peel off);
 *   2. the SIMD kernels (AVX2 + FMA):
 *      - tile kernel: a tile of channels, row after row, vectorised across
 *        channels (8 per vector); the coefficient is loaded per element,
 *        broadcast per block, or gathered for blocks that straddle vectors;
 *      - flat kernel: C < 8 contiguous channels, vectorised along the
 *        flattened index i = r*C + c, where h[i] = a[i] h[i-C] + b[i], with
 *        an in-register scan (shifts by C, 2C, 4C lanes) and one carry
 *        permute per vector; reverse reads lane-reversed vectors backwards;
 *   3. jobs: one (sequence, channel range) bound to its kernel, run over a
 *      range of rows in processing order, with or without writing h;
 *   4. the single-threaded entry points (seqk__scan_rows, _aggregate);
 *   5. drivers: time split of one long sequence (cache-blocked: aggregates,
 *      one barrier, carry-in, re-run from L2), channel tiles of one sequence,
 *      and (sequence, channel tile) items in parallel;
 *   6. seqk__cpu_scan: the dispatch.
 *
 * Non-temporal stores are used for h when the output exceeds about half the
 * L3 and the destination is 16- or 32-byte aligned (the flat kernel peels to
 * alignment), followed by an sfence.
 *
 * No allocation: per-thread scratch lives in fixed-size stack buffers
 * (at most ~60 KiB per frame).
 */
#include "scan.h"

#include <math.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef __AVX2__
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

/* A channel tile [c0, c0 + w), w <= TILE: vectors of 8 channels, then a
 * partial one of `tail` lanes; where each vector takes its coefficients. */
typedef struct {
    int64_t c0, w;
    int nfull, tail;
    int grouped;              /* block > 1 */
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
    if (!p->grouped) return;
    /* walk the channels once: q = coefficient of the channel, rem = its place in the block */
    int64_t q = c0 / block, rem = c0 % block;
    const int nv = p->nfull + (p->tail > 0);
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
    for (int64_t k = 0; k < rows; k++) {
        const float *ar = a + k * ars, *br = b + k * brs + p->c0;
        float *hr = store != ST_NONE ? h + k * hrs + p->c0 : NULL;
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

static void tile_avx2(const tile_plan *p, int64_t rows, const float *a, int64_t ars,
                      const float *b, int64_t brs, float *h, int64_t hrs, float *cb, float *pb,
                      int store)
{
#define TILE_CASE(G, S) tile_body(p, rows, a, ars, b, brs, h, hrs, cb, pb, G, S)
    if (p->grouped) {
        switch (store) {
        case ST_NONE: TILE_CASE(1, ST_NONE); break;
        case ST_PLAIN: TILE_CASE(1, ST_PLAIN); break;
        case ST_NT: TILE_CASE(1, ST_NT); break;
        default: TILE_CASE(1, ST_NT16); break;
        }
    } else {
        switch (store) {
        case ST_NONE: TILE_CASE(0, ST_NONE); break;
        case ST_PLAIN: TILE_CASE(0, ST_PLAIN); break;
        case ST_NT: TILE_CASE(0, ST_NT); break;
        default: TILE_CASE(0, ST_NT16); break;
        }
    }
#undef TILE_CASE
}

/* ---- 2b. flat kernel: C < 8 channels along the flattened index -------------- */

/*
 * Elements i = 0, 1, ... of the flattened sequence (i = r*C + c in
 * processing order); the predecessor of element i is element i - C. An
 * 8-lane vector holds 8 consecutive elements. After the log steps (lane l
 * combined with lane l - s for s = C, 2C, 4C < 8), lane l holds the element
 * composed of its chain l, l-C, l-2C, ... inside the vector; its carry is
 * lane 8 - C + (l mod C) of the previous vector's h.
 */
typedef struct {
    __m256i sh[3];   /* lane l <- lane l - s */
    __m256 keep[3];  /* lanes l >= s */
    __m256i cidx;    /* lane l <- lane 8 - C + l % C */
    __m256i rev;     /* lane l <- lane 7 - l */
} flat_lanes;

static void flat_lanes_init(flat_lanes *L, int C)
{
    int32_t v[8], m[8];
    for (int k = 0; k < 3; k++) {
        const int s = C << k;
        for (int l = 0; l < 8; l++) v[l] = l >= s ? l - s : 0, m[l] = l >= s ? -1 : 0;
        L->sh[k] = _mm256_loadu_si256((const __m256i *)v);
        L->keep[k] = _mm256_castsi256_ps(_mm256_loadu_si256((const __m256i *)m));
    }
    for (int l = 0; l < 8; l++) v[l] = 8 - C + l % C;
    L->cidx = _mm256_loadu_si256((const __m256i *)v);
    for (int l = 0; l < 8; l++) v[l] = 7 - l;
    L->rev = _mm256_loadu_si256((const __m256i *)v);
}

/* One element in plain C: hist[8] holds the last 8 states (hist[7] the
 * latest), phist the running products of a (aggregate). */
SEQK_INLINE float flat_step(int C, float av, float bv, float *hist, float *phist)
{
    const float x = FMAF(av, hist[8 - C], bv);
    memmove(hist, hist + 1, 7 * sizeof(float));
    hist[7] = x;
    if (phist) {
        const float p = av * phist[8 - C];
        memmove(phist, phist + 1, 7 * sizeof(float));
        phist[7] = p;
    }
    return x;
}

/*
 * n elements; element i at a[i], b[i], h[i] (rev: a[-i], b[-i], h[-i], i.e.
 * the pointers are at the highest address). steps = number of log steps
 * (3 for C = 1, 2 for C = 2, 3, else 1). hist/phist as in flat_step; phist
 * only with ST_NONE (where h is not touched).
 */
SEQK_INLINE void flat_body(const flat_lanes *L, int64_t n, int C, const float *a, const float *b,
                           float *h, float *hist, float *phist, const int steps, const int rev,
                           const int store)
{
    const int64_t dir = rev ? -1 : 1;
    int64_t i = 0;
    if (store == ST_NT) /* peel to 32-byte alignment of the vector stores */
        for (; i < n; i++) {
            const uintptr_t addr = (uintptr_t)h + (uintptr_t)((rev ? -i - 7 : i) * 4);
            if ((addr & 31) == 0) break;
            h[dir * i] = flat_step(C, a[dir * i], b[dir * i], hist, NULL);
        }
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 cv = _mm256_loadu_ps(hist);
    __m256 pv = store == ST_NONE ? _mm256_loadu_ps(phist) : one;
    for (; i + 8 <= n; i += 8) {
        __m256 av, bv;
        if (!rev) {
            av = _mm256_loadu_ps(a + i), bv = _mm256_loadu_ps(b + i);
        } else {
            av = _mm256_permutevar8x32_ps(_mm256_loadu_ps(a - i - 7), L->rev);
            bv = _mm256_permutevar8x32_ps(_mm256_loadu_ps(b - i - 7), L->rev);
        }
        for (int k = 0; k < steps; k++) {
            const __m256 as = _mm256_permutevar8x32_ps(av, L->sh[k]);
            const __m256 bs = _mm256_permutevar8x32_ps(bv, L->sh[k]);
            bv = _mm256_fmadd_ps(av, _mm256_and_ps(bs, L->keep[k]), bv);
            av = _mm256_mul_ps(av, _mm256_blendv_ps(one, as, L->keep[k]));
        }
        const __m256 x = _mm256_fmadd_ps(av, _mm256_permutevar8x32_ps(cv, L->cidx), bv);
        cv = x;
        if (store == ST_NONE) {
            pv = _mm256_mul_ps(av, _mm256_permutevar8x32_ps(pv, L->cidx));
        } else {
            const __m256 y = rev ? _mm256_permutevar8x32_ps(x, L->rev) : x;
            if (store == ST_NT) _mm256_stream_ps(rev ? h - i - 7 : h + i, y);
            else _mm256_storeu_ps(rev ? h - i - 7 : h + i, y);
        }
    }
    _mm256_storeu_ps(hist, cv);
    if (store == ST_NONE) _mm256_storeu_ps(phist, pv);
    for (; i < n; i++) {
        const float x = flat_step(C, a[dir * i], b[dir * i], hist, store == ST_NONE ? phist : NULL);
        if (store != ST_NONE) h[dir * i] = x;
    }
}

#define FLAT_DISPATCH(S)                                                                      \
    static void flat_s##S(const flat_lanes *L, int64_t n, int C, const float *a,              \
                          const float *b, float *h, float *hist, float *phist, int rev,        \
                          int store)                                                           \
    {                                                                                          \
        if (rev) {                                                                             \
            if (store == ST_NONE) flat_body(L, n, C, a, b, h, hist, phist, S, 1, ST_NONE);     \
            else if (store == ST_NT) flat_body(L, n, C, a, b, h, hist, phist, S, 1, ST_NT);    \
            else flat_body(L, n, C, a, b, h, hist, phist, S, 1, ST_PLAIN);                     \
        } else {                                                                               \
            if (store == ST_NONE) flat_body(L, n, C, a, b, h, hist, phist, S, 0, ST_NONE);     \
            else if (store == ST_NT) flat_body(L, n, C, a, b, h, hist, phist, S, 0, ST_NT);    \
            else flat_body(L, n, C, a, b, h, hist, phist, S, 0, ST_PLAIN);                     \
        }                                                                                      \
    }
FLAT_DISPATCH(1)
FLAT_DISPATCH(2)
FLAT_DISPATCH(3)
#undef FLAT_DISPATCH

static void flat_run(const flat_lanes *L, int64_t n, int C, const float *a, const float *b,
                     float *h, float *hist, float *phist, int rev, int store)
{
    if (C == 1) flat_s3(L, n, C, a, b, h, hist, phist, rev, store);
    else if (C < 4) flat_s2(L, n, C, a, b, h, hist, phist, rev, store);
    else flat_s1(L, n, C, a, b, h, hist, phist, rev, store);
}

/*
 * `rows` contiguous rows of C < 8 channels (b, h row stride C, a row stride
 * C/block), memory row 0 at a, b, h; rev walks them from the last. carry[C]
 * (channel order) in/out; prod[C] multiplied by the product of a (ST_NONE).
 * NT stores peel to 32-byte alignment, so ST_NT16 never reaches here.
 */
static void flat_rows(int64_t rows, int C, int64_t block, int rev, const float *a,
                      const float *b, float *h, float *carry, float *prod, int store)
{
    flat_lanes L;
    flat_lanes_init(&L, C);
    /* lane 8 - C + j of the state before the first element is channel j
     * (reverse: channel C-1-j, the flattened order runs backwards) */
    float hist[8] = {0}, phist[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    for (int j = 0; j < C; j++) {
        const int c = rev ? C - 1 - j : j;
        hist[8 - C + j] = carry[c];
        if (store == ST_NONE) phist[8 - C + j] = prod[c];
    }
    if (store == ST_NT && ((uintptr_t)h & 3)) store = ST_PLAIN;
    const int64_t n = rows * C;
    if (block == 1) {
        const int64_t o = rev ? n - 1 : 0;
        flat_run(&L, n, C, a + o, b + o, h ? h + o : NULL, hist, phist, rev, store);
    } else {
        _Alignas(32) float abuf[FLAT_CHUNK];
        for (int64_t i = 0; i < n; i += FLAT_CHUNK) {
            const int64_t m = min64(FLAT_CHUNK, n - i), lo = rev ? n - i - m : i;
            int64_t q = lo / block, rem = lo % block;
            for (int64_t e = 0; e < m; e++) {
                abuf[e] = a[q];
                if (++rem == block) rem = 0, q++;
            }
            const int64_t o = rev ? lo + m - 1 : lo;
            flat_run(&L, m, C, abuf + (rev ? m - 1 : 0), b + o, h ? h + o : NULL, hist, phist,
                     rev, store);
        }
    }
    for (int j = 0; j < C; j++) {
        const int c = rev ? C - 1 - j : j;
        carry[c] = hist[8 - C + j];
        if (store == ST_NONE) prod[c] = phist[8 - C + j];
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
    const int store = write_h ? J->store : ST_NONE;
#ifdef __AVX2__
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
        memcpy(carry + c0, cb, (size_t)w * sizeof(float));
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

/* ==== 5. drivers ================================================================= */

/*
 * Time split of one job (w <= TS_GROUP channels) over a new team of P
 * threads, in blocks of rows sized so that each thread's share of a and b
 * (~SEQK_SCAN_L2_BYTES) stays in its L2 between the two passes over it.
 *
 * Per block, thread p owns processing rows [k0 + p*per, k0 + (p+1)*per):
 *   (1) it composes its rows' aggregate (product of a, end state from 0);
 *   barrier;
 *   (2) it folds the aggregates of threads 0..p-1 into the block's carry-in
 *       to get its own carry-in, and goes on through all of them to get the
 *       next block's (every thread redundantly: no second barrier);
 *   (3) it re-runs its rows, now in L2, from its carry-in, writing h.
 * The aggregates live on each thread's stack, double-buffered by block
 * parity: a thread that has gone on to block k+1 cannot overwrite what a
 * slower one still reads for block k (it would first need it at the barrier).
 * carry[w]: in/out.
 */
static void time_split(int P, const scan_job *J, float *carry)
{
    enum { LD = TS_GROUP + 8 }; /* leading dimension of the aggregates */
    float *aggs[TS_MAXT];
    const int64_t rows = J->rows, w = J->w;
    const int64_t row_bytes = 4 * w + 4 * (w / J->block + 2);
    const int64_t rpt = max64(16, SEQK_SCAN_L2_BYTES / row_bytes); /* rows per thread */
    if (P > TS_MAXT) P = TS_MAXT;
#pragma omp parallel num_threads(P)
    {
        const int np = team_size(), p = thread_id();
        _Alignas(32) float agg[2][2][LD]; /* [parity][product of a, end state][channel] */
        _Alignas(32) float cin[LD];       /* carry into the block (then the next block) */
        _Alignas(32) float cur[LD];       /* this thread's carry */
        aggs[p] = &agg[0][0][0];
        memcpy(cin, carry, (size_t)w * sizeof(float));
#pragma omp barrier
        const int64_t brows = rpt * np;
        for (int64_t blk = 0, k0 = 0; k0 < rows; blk++, k0 += brows) {
            const int64_t nb = min64(brows, rows - k0), per = cdiv(nb, np);
            const int64_t lo = min64(k0 + p * per, k0 + nb), hi = min64(lo + per, k0 + nb);
            const int par = (int)(blk & 1);
            float *A = agg[par][0], *E = agg[par][1];
            for (int64_t c = 0; c < LD; c++) A[c] = 1.0f, E[c] = 0.0f;
            job_run(J, lo, hi, E, A, 0); /* (1) */
#pragma omp barrier
            for (int q = 0; q < np; q++) { /* (2) */
                const float *Aq = aggs[q] + par * 2 * LD, *Eq = Aq + LD;
                if (q == p) memcpy(cur, cin, (size_t)w * sizeof(float));
                for (int64_t c = 0; c < w; c++) cin[c] = FMAF(Aq[c], cin[c], Eq[c]);
            }
            job_run(J, lo, hi, cur, NULL, 1); /* (3) */
        }
        /* every thread holds the same end state; the others have read carry */
        if (p == 0) memcpy(carry, cin, (size_t)w * sizeof(float));
    }
}

/* Channel tile width for N sequences of C channels on P threads: about 2P
 * tiles in all, each at least SEQK_SCAN_TILE_MIN channels (whole pages per
 * row) and at most TILE; the whole row when it fits. */
static int64_t tile_width(int64_t C, int64_t N, int P)
{
    const int64_t k = max64(1, cdiv(2 * (int64_t)P, N));
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
