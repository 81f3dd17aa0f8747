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

#endif
