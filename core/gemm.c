/* core/gemm.c -- see gemm.h.
 *
 * For the small matrices of a tile: for each slice of KC along the inner
 * dimension, op(B) is packed into column panels of nr columns (zero-padded),
 * and an mr x nr register tile accumulates over the slice, broadcasting
 * op(A)'s elements straight from A (row-major or transposed: only the
 * strides differ, so A is never copied). Two register tiles, chosen by the
 * call's shape alone:
 *   - AVX-512: 8 x 32 in 16 zmm accumulators (seqk__sgemm_8x32, gemm.h), for N of
 *     at least 32 that pads to a multiple of 32 by at most a quarter (64,
 *     128, 80, ...): twice the floats per FMA of AVX2; its left half (8 x 16,
 *     the same sums) where a tile's wanted columns fit in 16;
 *   - AVX2 + FMA: 6 x 16 in 12 ymm accumulators (seqk__sgemm_6x16, gemm.h),
 *     for the other shapes and CPUs without AVX-512.
 * Both accumulate every element in the order p = 0, 1, .. with one FMA per
 * term and apply alpha and beta the same way (alpha acc, then beta C added
 * in one FMA, edge tiles included): the same bits either way, and the same
 * bits for any split of the columns into calls.
 * Edge tiles: rows past the matrix repeat its last row (read, never stored);
 * columns past it are computed on the zero padding and not stored. */
#include "gemm.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

enum {
    MR = 6, NR = 16,         /* the AVX2 tile (and the portable one) */
    MR_WIDE = 8, NR_WIDE = 32, /* the AVX-512 tile */
    NR_MAX = 32, KC = 256,
    /* op(B) rows at most this many floats apart may be read in place: up to
     * a page apart (1024 floats, K or V = 128 with 8 heads) reading the rows
     * where they are measured faster than packing them (1 thread: softmax
     * attention backward -8%, linear attention and gated retention forward
     * -12% and backward -9% at K = V = 128) */
    DIRECT_LDB = 1024
};

static int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

/* This thread's tile hook (seqk__sgemm_set_tile_hook). */
static _Thread_local void (*tile_hook)(void *);
static _Thread_local void *tile_hook_arg;

void seqk__sgemm_set_tile_hook(void (*fn)(void *), void *arg)
{
    tile_hook = fn;
    tile_hook_arg = arg;
}

void seqk__sgemm_get_tile_hook(void (**fn)(void *), void **arg)
{
    *fn = tile_hook;
    *arg = tile_hook_arg;
}

size_t seqk__sgemm_pack_floats(int64_t M, int64_t N, int64_t Kd)
{
    (void)M;
    int64_t kc = Kd < KC ? Kd : KC;
    return (size_t)(round_up(N, NR_MAX) * kc) + 16;
}

#ifdef __AVX512F__
/* dst[j, i] = src[i, j] for one 16 x 16 block in registers: pairs of rows
 * interleaved, then 4 x 4 blocks transposed inside each 128-bit lane (as
 * the 8 x 8 code below), after which lane k of r[4g + c] holds column
 * 4k + c of rows 4g..4g+3; each output row gathers its four lanes from
 * r[c], r[4 + c], r[8 + c], r[12 + c] with two lane shuffles. */
static void transpose16(const float *src, int64_t lds, float *dst, int64_t ldd)
{
    __m512 r[16], t[16];
    for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(src + i * lds);
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xee);
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xee);
    }
    for (int c = 0; c < 4; c++) {
        const __m512 u0 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x44);  /* A0 A1 B0 B1 */
        const __m512 u1 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xee);  /* A2 A3 B2 B3 */
        const __m512 v0 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x44);
        const __m512 v1 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xee);
        _mm512_storeu_ps(dst + (0 + c) * ldd, _mm512_shuffle_f32x4(u0, v0, 0x88));
        _mm512_storeu_ps(dst + (4 + c) * ldd, _mm512_shuffle_f32x4(u0, v0, 0xdd));
        _mm512_storeu_ps(dst + (8 + c) * ldd, _mm512_shuffle_f32x4(u1, v1, 0x88));
        _mm512_storeu_ps(dst + (12 + c) * ldd, _mm512_shuffle_f32x4(u1, v1, 0xdd));
    }
}
#endif

/* dst[j, i] = src[i, j] for i < m, j < n (rows lds and ldd apart); 16 x 16
 * blocks in registers with AVX-512 (a 128 x 128 in about half the time of
 * 8 x 8 blocks: 3.9 against 7.5 us, best of 50, 2026-12-06), then 8 x 8
 * blocks. */
void seqk__transpose(int64_t m, int64_t n, const float *src, int64_t lds, float *dst, int64_t ldd)
{
    int64_t i0 = 0;
#ifdef __AVX512F__
    if (n >= 16)
        for (; i0 + 16 <= m; i0 += 16) {
            int64_t j0 = 0;
            for (; j0 + 16 <= n; j0 += 16)
                transpose16(src + i0 * lds + j0, lds, dst + j0 * ldd + i0, ldd);
            for (; j0 < n; j0++)
                for (int64_t i = i0; i < i0 + 16; i++) dst[j0 * ldd + i] = src[i * lds + j0];
        }
#endif
#ifdef SEQK__HAVE_SGEMM_6X16 /* AVX2 (with FMA): immintrin.h from gemm.h */
    for (; i0 + 8 <= m; i0 += 8) {
        int64_t j0 = 0;
        for (; j0 + 8 <= n; j0 += 8) {
            __m256 r[8], t[8];
            for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(src + (i0 + i) * lds + j0);
            for (int i = 0; i < 8; i += 2) {
                t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
                t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
            }
            for (int i = 0; i < 8; i += 4) {
                r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
                r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xee);
                r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
                r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xee);
            }
            for (int i = 0; i < 4; i++) {
                t[i] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x20);
                t[i + 4] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x31);
            }
            for (int i = 0; i < 8; i++) _mm256_storeu_ps(dst + (j0 + i) * ldd + i0, t[i]);
        }
        for (; j0 < n; j0++)
            for (int64_t i = i0; i < i0 + 8; i++) dst[j0 * ldd + i] = src[i * lds + j0];
    }
#endif
    for (; i0 < m; i0++)
        for (int64_t j = 0; j < n; j++) dst[j * ldd + i0] = src[i0 * lds + j];
}

/* op(B)[p, j] into panels of NRP columns: pb[(j/NRP)*NRP*kc + p*NRP + j%NRP]. */
static void pack_b(bool trans, int64_t N, int64_t p0, int64_t kc, const float *B, int64_t ldb,
                   int64_t NRP, float *pb)
{
    for (int64_t j0 = 0; j0 < N; j0 += NRP) {
        int64_t nr = N - j0 < NRP ? N - j0 : NRP;
        float *dst = pb + j0 * kc;
        if (!trans) {
            for (int64_t p = 0; p < kc; p++) {
                const float *src = B + (p0 + p) * ldb + j0;
                memcpy(dst + p * NRP, src, (size_t)nr * sizeof(float));
                for (int64_t c = nr; c < NRP; c++) dst[p * NRP + c] = 0.0f;
            }
        } else { /* op(B)[p, j0 + c] = B[j0 + c, p]: rows j0.. of B transposed */
            seqk__transpose(nr, kc, B + j0 * ldb + p0, ldb, dst, NRP);
            for (int64_t p = 0; p < kc; p++)
                for (int64_t c = nr; c < NRP; c++) dst[p * NRP + c] = 0.0f;
        }
    }
}

#ifdef __AVX512F__
/* The left half of seqk__sgemm_8x32 (gemm.h): 8 rows x 16 columns in 8
 * accumulators, each summed in the same order (the same bits as the wide
 * tile's first 16 columns), for a tile whose wanted columns fit in 16: a
 * causal product's diagonal, a corner. */
static inline __attribute__((always_inline)) void
sgemm_8x16(int64_t n, const float *const a[8], int64_t as, const float *b, int64_t ldb,
           __m512 c[8])
{
    __m512 c0 = c[0], c1 = c[1], c2 = c[2], c3 = c[3], c4 = c[4], c5 = c[5], c6 = c[6], c7 = c[7];
    const float *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3], *a4 = a[4], *a5 = a[5],
                *a6 = a[6], *a7 = a[7];
    for (int64_t p = 0, i = 0; p < n; p++, i += as) {
        const __m512 b0 = _mm512_loadu_ps(b + p * ldb);
        c0 = _mm512_fmadd_ps(_mm512_set1_ps(a0[i]), b0, c0);
        c1 = _mm512_fmadd_ps(_mm512_set1_ps(a1[i]), b0, c1);
        c2 = _mm512_fmadd_ps(_mm512_set1_ps(a2[i]), b0, c2);
        c3 = _mm512_fmadd_ps(_mm512_set1_ps(a3[i]), b0, c3);
        c4 = _mm512_fmadd_ps(_mm512_set1_ps(a4[i]), b0, c4);
        c5 = _mm512_fmadd_ps(_mm512_set1_ps(a5[i]), b0, c5);
        c6 = _mm512_fmadd_ps(_mm512_set1_ps(a6[i]), b0, c6);
        c7 = _mm512_fmadd_ps(_mm512_set1_ps(a7[i]), b0, c7);
    }
    c[0] = c0, c[1] = c1, c[2] = c2, c[3] = c3, c[4] = c4, c[5] = c5, c[6] = c6, c[7] = c7;
}

/* C = alpha acc + beta C on the mr x nr corner of a wide tile, by masks
 * (beta = 0: C is not read); acc[r][1] is not read when nr <= 16. */
static inline __attribute__((always_inline)) void
store_wide(__m512 acc[MR_WIDE][2], float alpha, float beta, float *C, int64_t ldc, int64_t mr,
           int64_t nr)
{
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    const __mmask16 m0 = nr >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << nr) - 1u);
    const __mmask16 m1 = nr >= 32   ? (__mmask16)0xffff
                         : nr > 16 ? (__mmask16)((1u << (nr - 16)) - 1u)
                                   : (__mmask16)0;
    for (int64_t r = 0; r < mr; r++) {
        float *row = C + r * ldc;
        __m512 o0 = alpha == 1.0f ? acc[r][0] : _mm512_mul_ps(va, acc[r][0]);
        if (beta != 0.0f) o0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, row), o0);
        _mm512_mask_storeu_ps(row, m0, o0);
        if (nr <= 16) continue;
        __m512 o1 = alpha == 1.0f ? acc[r][1] : _mm512_mul_ps(va, acc[r][1]);
        if (beta != 0.0f) o1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, row + 16), o1);
        _mm512_mask_storeu_ps(row + 16, m1, o1);
    }
}

/* micro_kernel (below) on the 8 x 32 tile, or its left half when the
 * corner's nr columns fit in 16; the corner's columns by masks. */
static void micro_kernel_wide(int64_t kc, const float *a, int64_t rs, int64_t cs,
                              const float *pb, int64_t ldp, float alpha, float beta, float *C,
                              int64_t ldc, int64_t mr, int64_t nr)
{
    const float *ar[MR_WIDE];
    for (int r = 0; r < MR_WIDE; r++) ar[r] = a + (r < mr ? r : mr - 1) * rs;
    __m512 acc[MR_WIDE][2];
    if (nr <= 16) {
        __m512 half[MR_WIDE];
        for (int r = 0; r < MR_WIDE; r++) half[r] = _mm512_setzero_ps();
        sgemm_8x16(kc, ar, cs, pb, ldp, half);
        for (int r = 0; r < MR_WIDE; r++) acc[r][0] = acc[r][1] = half[r];
        store_wide(acc, alpha, beta, C, ldc, mr, nr);
        return;
    }
    for (int r = 0; r < MR_WIDE; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    seqk__sgemm_8x32(kc, ar, cs, pb, ldp, acc);
    store_wide(acc, alpha, beta, C, ldc, mr, nr);
}
#endif

/* Whether a call of N columns takes the AVX-512 tile (a rule of the shape
 * alone, so that the same call always gives the same bits). */
static bool wide_tile(int64_t N)
{
#ifdef __AVX512F__
    return N >= NR_WIDE && round_up(N, NR_WIDE) - N <= N / 4;
#else
    (void)N;
    return false;
#endif
}

/* acc[MR][NR] = sum_p A[r, p] * pb[p * ldp + c] over kc, with A[r, p] read
 * in place at a + r * rs + p * cs (rows past mr repeat row mr-1: read, never
 * stored), then C = alpha*acc + beta*C on the mr x nr corner (beta = 0: C not
 * read). pb: a packed panel (ldp = NR) or op(B) itself (ldp = ldb). */
static void micro_kernel(int64_t kc, const float *a, int64_t rs, int64_t cs, const float *pb,
                         int64_t ldp, float alpha, float beta, float *C, int64_t ldc, int64_t mr,
                         int64_t nr)
{
    const float *ar[MR];
    for (int r = 0; r < MR; r++) ar[r] = a + (r < mr ? r : mr - 1) * rs;
#ifdef SEQK__HAVE_SGEMM_6X16
    __m256 acc[MR][2];
    for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    seqk__sgemm_6x16(kc, ar, cs, pb, ldp, acc);
    const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
    if (mr == MR && nr == NR) {
        for (int r = 0; r < MR; r++) {
            float *row = C + r * ldc;
            __m256 o0 = _mm256_mul_ps(va, acc[r][0]), o1 = _mm256_mul_ps(va, acc[r][1]);
            if (beta != 0.0f) {
                o0 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(row), o0);
                o1 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(row + 8), o1);
            }
            _mm256_storeu_ps(row, o0);
            _mm256_storeu_ps(row + 8, o1);
        }
        return;
    }
    float tile[MR * NR];
    for (int r = 0; r < MR; r++) {
        _mm256_storeu_ps(tile + r * NR, acc[r][0]);
        _mm256_storeu_ps(tile + r * NR + 8, acc[r][1]);
    }
#else
    float tile[MR * NR] = {0};
    for (int64_t p = 0; p < kc; p++)
        for (int r = 0; r < MR; r++)
            for (int c = 0; c < NR; c++) tile[r * NR + c] += ar[r][p * cs] * pb[p * ldp + c];
#endif
    /* beta C + v in one rounding (fmaf), as the full tiles' and the wide
     * tile's fmadd: an edge tile gives the bits a full one would (a split
     * of the columns into other tiles changes none; beta C + v rounded twice
     * did, for beta other than 0 and 1) */
    for (int64_t r = 0; r < mr; r++)
        for (int64_t c = 0; c < nr; c++) {
            float v = alpha * tile[r * NR + c];
            C[r * ldc + c] = beta != 0.0f ? fmaf(beta, C[r * ldc + c], v) : v;
        }
}

void seqk__sgemm_causal(unsigned causal, bool trans_a, bool trans_b, int64_t M, int64_t N,
                        int64_t Kd, float alpha, const float *A, int64_t lda, const float *B,
                        int64_t ldb, float beta, float *C, int64_t ldc, float *pack)
{
    if (M <= 0 || N <= 0) return;
    if (Kd <= 0) { /* C = beta * C */
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++)
                C[i * ldc + j] = beta != 0.0f ? beta * C[i * ldc + j] : 0.0f;
        return;
    }
    /* op(A)[i, p] = A[i * rs + p * cs] */
    const int64_t rs = trans_a ? 1 : lda, cs = trans_a ? lda : 1;
    const bool wide = wide_tile(N);
    const int64_t mrt = wide ? MR_WIDE : MR, nrt = wide ? NR_WIDE : NR;
    /* op(B) already in the shape of packed panels (not transposed, whole
     * panels; for the AVX2 tile, whose loads are aligned, rows 32-byte
     * aligned) with rows close together (a matrix of the caller's scratch,
     * or token rows of an input up to DIRECT_LDB floats apart) is read in
     * place: no packing. A farther strided op(B) is packed once instead. */
    const bool direct = !trans_b && N % nrt == 0 && ldb <= DIRECT_LDB &&
                        (wide || (ldb % 8 == 0 && ((uintptr_t)B & 31) == 0));
    void (*const hook)(void *) = tile_hook; /* read once: thread-local */
    void *const hook_arg = tile_hook_arg;
    for (int64_t p0 = 0; p0 < Kd; p0 += KC) {
        const int64_t kc = Kd - p0 < KC ? Kd - p0 : KC;
        const float beta_k = p0 == 0 ? beta : 1.0f;
        if ((causal & SEQK__GEMM_LOWER_A) && p0 >= M) break; /* op(A) is 0 from column M on */
        const float *pb = direct ? B + p0 * ldb : pack;
        const int64_t ldp = direct ? ldb : nrt, jstep = direct ? nrt : nrt * kc;
        if (!direct) pack_b(trans_b, N, p0, kc, B, ldb, nrt, pack);
        for (int64_t j0 = 0; j0 < N; j0 += nrt)
            for (int64_t i0 = 0; i0 < M; i0 += mrt) {
                const int64_t mr = M - i0 < mrt ? M - i0 : mrt;
                if ((causal & SEQK__GEMM_LOWER_C) && j0 > i0 + mr - 1) continue;
                int64_t nr = N - j0 < nrt ? N - j0 : nrt;
                /* LOWER_C, wide tile: one on the diagonal wants its columns
                 * j <= i0 + mr - 1 only, the left half when they fit in 16
                 * (a 64 x 64 product: 10 tiles' work instead of 12) */
                if (wide && (causal & SEQK__GEMM_LOWER_C) && i0 + mr - j0 < nr) nr = i0 + mr - j0;
                int64_t kt = kc, ks = 0; /* the inner range [ks, kt) this tile needs */
                if ((causal & SEQK__GEMM_LOWER_A) && i0 + mr - p0 < kt) kt = i0 + mr - p0;
                if ((causal & SEQK__GEMM_UPPER_A) && i0 > p0) ks = i0 - p0;
                if (kt <= ks) {
                    if (p0 > 0) continue; /* C already holds its sum */
                    kt = ks = 0;          /* first slice: C = beta C (an empty sum) */
                }
                const float *at = A + i0 * rs + (p0 + ks) * cs, *bt = pb + j0 / nrt * jstep + ks * ldp;
                float *ct = C + i0 * ldc + j0;
#ifdef __AVX512F__
                if (wide)
                    micro_kernel_wide(kt - ks, at, rs, cs, bt, ldp, alpha, beta_k, ct, ldc, mr, nr);
                else
#endif
                    micro_kernel(kt - ks, at, rs, cs, bt, ldp, alpha, beta_k, ct, ldc, mr, nr);
                if (hook) hook(hook_arg);
            }
    }
}

void seqk__sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t Kd, float alpha,
                 const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                 int64_t ldc, float *pack)
{
    seqk__sgemm_causal(0u, trans_a, trans_b, M, N, Kd, alpha, A, lda, B, ldb, beta, C, ldc, pack);
}
