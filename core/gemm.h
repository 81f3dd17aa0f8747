/*
 * core/gemm.h -- a small single-threaded sgemm for the tiles of seqk's ops
 * (chunk stages: Q K^T, P V, Q S, K^T V; attention tiles). Callers run it
 * inside their own OpenMP regions, one call per tile.
 *
 *   C[M,N] = alpha * op(A)[M,Kd] * op(B)[Kd,N] + beta * C
 *
 * Row-major with leading dimensions in elements: op(A) = A (lda >= Kd) or
 * A^T (A is [Kd,M], lda >= M); op(B) = B (B is [Kd,N], ldb >= N) or B^T (B is
 * [N,Kd], ldb >= Kd). beta = 0 never reads C (C may hold NaN). pack is
 * scratch of at least seqk__sgemm_pack_floats(M, N, Kd) floats, 32-byte
 * aligned.
 */
#ifndef SEQK_CORE_GEMM_H
#define SEQK_CORE_GEMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

size_t seqk__sgemm_pack_floats(int64_t M, int64_t N, int64_t Kd);

void seqk__sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t Kd, float alpha,
                 const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                 int64_t ldc, float *pack);

/* Work run after each register tile of this thread's products (seqk__sgemm,
 * seqk__sgemm_causal) until set again: fn(arg), or nothing with fn = NULL.
 * The chunked walks spread the next chunk's prefetches over their products
 * this way (seqk__chunk_fetch: memory asked a few lines per tile, while the
 * tiles compute). Per thread; a product reads it once, when it starts. */
void seqk__sgemm_set_tile_hook(void (*fn)(void *), void *arg);

/* This thread's tile hook (fn = NULL: none), e.g. to put it back after. */
void seqk__sgemm_get_tile_hook(void (**fn)(void *), void **arg);

/* The causal structure of a chunk's products, for seqk__sgemm_causal:
 *   SEQK__GEMM_LOWER_C  only C[i, j] with j <= i is wanted: register tiles
 *                       wholly above the diagonal are skipped, and a tile
 *                       on it may skip its columns past the diagonal (the
 *                       elements above the diagonal are left unwritten or not);
 *   SEQK__GEMM_LOWER_A  op(A)[i, p] = 0 for p > i (a masked score matrix):
 *                       the rows of a register tile sum over p < its last
 *                       row + 1 only (op(A) must hold those zeros up to there).
 *   SEQK__GEMM_UPPER_A  op(A)[i, p] = 0 for p < i (the transpose of a masked
 *                       score matrix, in the backward): the rows of a register
 *                       tile sum over p >= its first row only.
 * Each roughly halves a square product's work. */
enum { SEQK__GEMM_LOWER_C = 1u, SEQK__GEMM_LOWER_A = 2u, SEQK__GEMM_UPPER_A = 4u };

void seqk__sgemm_causal(unsigned causal, bool trans_a, bool trans_b, int64_t M, int64_t N,
                        int64_t Kd, float alpha, const float *A, int64_t lda, const float *B,
                        int64_t ldb, float beta, float *C, int64_t ldc, float *pack);

/* dst[j * ldd + i] = src[i * lds + j] for i < m, j < n (8 x 8 blocks in
 * registers with AVX2). */
void seqk__transpose(int64_t m, int64_t n, const float *src, int64_t lds, float *dst, int64_t ldd);

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

#define SEQK__HAVE_SGEMM_6X16 1

/*
 * The one AVX2 register tile of seqk's products (seqk__sgemm's micro-kernel,
 * and softmax attention's Q K^T and P V kernels): 6 rows x 16 columns in 12
 * ymm accumulators, 2 vectors per row,
 *
 *   c[r][0..16) += sum_{p<n} a[r][p * as] * b[p * ldb + 0..16),   r = 0..5
 *
 * a[r] points at element 0 of row r of the left operand, whose elements lie
 * `as` floats apart (each is broadcast); b holds n rows of 16 floats, ldb
 * floats apart, each 32-byte aligned. On entry c holds the accumulators'
 * initial values, on return the sums, accumulated in the order p = 0, 1, ..
 * with one FMA per element.
 *
 * Always inlined: the accumulators live in 12 named registers inside, and a
 * caller's local c indexed by constants is kept in registers too (a call
 * through memory would store and reload the tile around every loop).
 */
static inline __attribute__((always_inline)) void
seqk__sgemm_6x16(int64_t n, const float *const a[6], int64_t as, const float *b, int64_t ldb,
                 __m256 c[6][2])
{
    __m256 c00 = c[0][0], c01 = c[0][1], c10 = c[1][0], c11 = c[1][1], c20 = c[2][0],
           c21 = c[2][1], c30 = c[3][0], c31 = c[3][1], c40 = c[4][0], c41 = c[4][1],
           c50 = c[5][0], c51 = c[5][1];
    const float *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3], *a4 = a[4], *a5 = a[5];
    /* one offset shared by the six rows (base + index addressing), not six
     * pointers stepped apart: five adds fewer per step */
    for (int64_t p = 0, i = 0; p < n; p++, i += as) {
        const __m256 b0 = _mm256_load_ps(b + p * ldb), b1 = _mm256_load_ps(b + p * ldb + 8);
        __m256 x = _mm256_broadcast_ss(a0 + i);
        c00 = _mm256_fmadd_ps(x, b0, c00), c01 = _mm256_fmadd_ps(x, b1, c01);
        x = _mm256_broadcast_ss(a1 + i);
        c10 = _mm256_fmadd_ps(x, b0, c10), c11 = _mm256_fmadd_ps(x, b1, c11);
        x = _mm256_broadcast_ss(a2 + i);
        c20 = _mm256_fmadd_ps(x, b0, c20), c21 = _mm256_fmadd_ps(x, b1, c21);
        x = _mm256_broadcast_ss(a3 + i);
        c30 = _mm256_fmadd_ps(x, b0, c30), c31 = _mm256_fmadd_ps(x, b1, c31);
        x = _mm256_broadcast_ss(a4 + i);
        c40 = _mm256_fmadd_ps(x, b0, c40), c41 = _mm256_fmadd_ps(x, b1, c41);
        x = _mm256_broadcast_ss(a5 + i);
        c50 = _mm256_fmadd_ps(x, b0, c50), c51 = _mm256_fmadd_ps(x, b1, c51);
    }
    c[0][0] = c00, c[0][1] = c01, c[1][0] = c10, c[1][1] = c11, c[2][0] = c20, c[2][1] = c21;
    c[3][0] = c30, c[3][1] = c31, c[4][0] = c40, c[4][1] = c41, c[5][0] = c50, c[5][1] = c51;
}
#endif

#ifdef __AVX512F__
#define SEQK__HAVE_SGEMM_8X32 1

/* The AVX-512 register tile (seqk__sgemm's wide micro-kernel and softmax
 * attention's P V kernel): 8 rows x 32 columns in 16 zmm accumulators,
 * c[r] += sum_{p<n} a[r][p * as] * b[p * ldb + 0..32), in the order
 * p = 0, 1, .. with one FMA per element (as seqk__sgemm_6x16 above, twice as
 * wide; b's rows need no alignment). */
static inline __attribute__((always_inline)) void
seqk__sgemm_8x32(int64_t n, const float *const a[8], int64_t as, const float *b, int64_t ldb,
                 __m512 c[8][2])
{
    __m512 c00 = c[0][0], c01 = c[0][1], c10 = c[1][0], c11 = c[1][1], c20 = c[2][0],
           c21 = c[2][1], c30 = c[3][0], c31 = c[3][1], c40 = c[4][0], c41 = c[4][1],
           c50 = c[5][0], c51 = c[5][1], c60 = c[6][0], c61 = c[6][1], c70 = c[7][0],
           c71 = c[7][1];
    const float *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3], *a4 = a[4], *a5 = a[5],
                *a6 = a[6], *a7 = a[7];
    for (int64_t p = 0, i = 0; p < n; p++, i += as) {
        const __m512 b0 = _mm512_loadu_ps(b + p * ldb), b1 = _mm512_loadu_ps(b + p * ldb + 16);
        __m512 x = _mm512_set1_ps(a0[i]);
        c00 = _mm512_fmadd_ps(x, b0, c00), c01 = _mm512_fmadd_ps(x, b1, c01);
        x = _mm512_set1_ps(a1[i]);
        c10 = _mm512_fmadd_ps(x, b0, c10), c11 = _mm512_fmadd_ps(x, b1, c11);
        x = _mm512_set1_ps(a2[i]);
        c20 = _mm512_fmadd_ps(x, b0, c20), c21 = _mm512_fmadd_ps(x, b1, c21);
        x = _mm512_set1_ps(a3[i]);
        c30 = _mm512_fmadd_ps(x, b0, c30), c31 = _mm512_fmadd_ps(x, b1, c31);
        x = _mm512_set1_ps(a4[i]);
        c40 = _mm512_fmadd_ps(x, b0, c40), c41 = _mm512_fmadd_ps(x, b1, c41);
        x = _mm512_set1_ps(a5[i]);
        c50 = _mm512_fmadd_ps(x, b0, c50), c51 = _mm512_fmadd_ps(x, b1, c51);
        x = _mm512_set1_ps(a6[i]);
        c60 = _mm512_fmadd_ps(x, b0, c60), c61 = _mm512_fmadd_ps(x, b1, c61);
        x = _mm512_set1_ps(a7[i]);
        c70 = _mm512_fmadd_ps(x, b0, c70), c71 = _mm512_fmadd_ps(x, b1, c71);
    }
    c[0][0] = c00, c[0][1] = c01, c[1][0] = c10, c[1][1] = c11, c[2][0] = c20, c[2][1] = c21;
    c[3][0] = c30, c[3][1] = c31, c[4][0] = c40, c[4][1] = c41, c[5][0] = c50, c[5][1] = c51;
    c[6][0] = c60, c[6][1] = c61, c[7][0] = c70, c[7][1] = c71;
}
#endif

#endif
