/*
 * Host emulation of the part of cuBLAS seqk calls (see README.md beside
 * include/): the handle (create, destroy, stream, math mode, workspace) and
 * cublasGemmStridedBatchedEx, on host memory (the emulator's device memory).
 *
 * cublasGemmStridedBatchedEx, as cuBLAS documents it (column-major):
 *
 *   for b < batchCount:
 *     C_b = alpha op(A_b) op(B_b) + beta C_b      C_b m x n, op(A_b) m x k, op(B_b) k x n
 *     X_b = X + b * strideX (elements of X's type), element (i, j) of a
 *     matrix at X_b[i + j * ldX]; op(A) = A (CUBLAS_OP_N) or A^T (CUBLAS_OP_T,
 *     and CUBLAS_OP_C: real types only here, so the same)
 *
 * Types (computeType CUBLAS_COMPUTE_32F, _32F_PEDANTIC or _32F_FAST_TF32;
 * alpha and beta are host floats): A and B both CUDA_R_32F, CUDA_R_16BF or
 * CUDA_R_16F; C CUDA_R_32F, or the type of A and B. Anything else:
 * CUBLAS_STATUS_NOT_SUPPORTED.
 *
 * Arithmetic (a definition, not a model of a GPU's order): each C element is
 * one float sum over l = 0 .. k-1 in that order, s = fmaf(a_il, b_lj, s),
 * from s = 0 (a bf16/f16 product is exact in float, so only fp32 operands
 * round per step), then alpha * s, plus beta * C (read only when beta != 0:
 * with beta == 0 C is not read, so NaN there does not propagate), rounded
 * once to C's type (to nearest even). FAST_TF32 is computed as 32F (the
 * emulator does not model tf32 rounding). m == 0, n == 0 or batchCount == 0:
 * nothing written; k == 0: C = beta C. Nothing outside the m x n elements of
 * each C_b is written.
 *
 * Argument checks, as cuBLAS documents them: CUBLAS_STATUS_NOT_INITIALIZED
 * for a NULL handle; CUBLAS_STATUS_INVALID_VALUE for m, n, k or batchCount
 * < 0, an operation that is not N, T or C, lda < max(1, rows of A as
 * stored) (m for N, k for T), ldb < max(1, k for N, n for T), ldc < max(1,
 * m), NULL alpha or beta. Checked before anything is read or written.
 * Streams are synchronous here, so the product is done when the call
 * returns.
 */
#pragma once
#include "cuda_runtime.h"

#include <stdint.h>
#include <string.h>

typedef struct emu_cublas_ctx {
    cudaStream_t stream;
    int math_mode;
    void *workspace;
    size_t workspace_bytes;
} emu_cublas_ctx;
typedef emu_cublas_ctx *cublasHandle_t;

typedef enum {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_ALLOC_FAILED = 3,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_ARCH_MISMATCH = 8,
    CUBLAS_STATUS_EXECUTION_FAILED = 13,
    CUBLAS_STATUS_INTERNAL_ERROR = 14,
    CUBLAS_STATUS_NOT_SUPPORTED = 15
} cublasStatus_t;

typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1, CUBLAS_OP_C = 2 } cublasOperation_t;

typedef enum cudaDataType_t { CUDA_R_32F = 0, CUDA_R_16F = 2, CUDA_R_16BF = 14 } cudaDataType_t;
typedef cudaDataType_t cudaDataType;

typedef enum {
    CUBLAS_COMPUTE_32F = 68,
    CUBLAS_COMPUTE_32F_PEDANTIC = 69,
    CUBLAS_COMPUTE_32F_FAST_TF32 = 77
} cublasComputeType_t;

typedef enum { CUBLAS_GEMM_DEFAULT = -1, CUBLAS_GEMM_DEFAULT_TENSOR_OP = 99 } cublasGemmAlgo_t;

typedef enum {
    CUBLAS_DEFAULT_MATH = 0,
    CUBLAS_TENSOR_OP_MATH = 1,
    CUBLAS_PEDANTIC_MATH = 2,
    CUBLAS_TF32_TENSOR_OP_MATH = 3,
    CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION = 16
} cublasMath_t;

static inline cublasStatus_t cublasCreate(cublasHandle_t *h)
{
    if (!h) return CUBLAS_STATUS_INVALID_VALUE;
    *h = new emu_cublas_ctx();
    memset(*h, 0, sizeof **h);
    return CUBLAS_STATUS_SUCCESS;
}
static inline cublasStatus_t cublasDestroy(cublasHandle_t h)
{
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}
static inline cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s)
{
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    h->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}
static inline cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t mode)
{
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    const int base = (int)mode & 0xf, extra = (int)mode & ~0xf;
    if (base > 3 || (extra & ~16)) return CUBLAS_STATUS_INVALID_VALUE;
    h->math_mode = (int)mode;
    return CUBLAS_STATUS_SUCCESS;
}
static inline cublasStatus_t cublasSetWorkspace(cublasHandle_t h, void *ws, size_t bytes)
{
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (bytes && !ws) return CUBLAS_STATUS_INVALID_VALUE;
    h->workspace = ws, h->workspace_bytes = bytes;
    return CUBLAS_STATUS_SUCCESS;
}

/* ---- element access (bit-level; the emulator's own code, independent of
 * seqk's conversions, which the tests compare it with) ---- */

static inline float emu_blas_load(const void *p, cudaDataType_t t, int64_t i)
{
    if (t == CUDA_R_32F) return ((const float *)p)[i];
    const uint16_t h = ((const uint16_t *)p)[i];
    if (t == CUDA_R_16BF) {
        const uint32_t u = (uint32_t)h << 16;
        float x;
        memcpy(&x, &u, 4);
        return x;
    }
    _Float16 x;
    memcpy(&x, &h, 2);
    return (float)x; /* exact */
}

static inline void emu_blas_store(void *p, cudaDataType_t t, int64_t i, float x)
{
    if (t == CUDA_R_32F) {
        ((float *)p)[i] = x;
        return;
    }
    uint16_t h;
    if (t == CUDA_R_16BF) {
        uint32_t u;
        memcpy(&u, &x, 4);
        if ((u & 0x7fffffffu) > 0x7f800000u) h = (uint16_t)((u >> 16) | 0x40u); /* quiet NaN */
        else h = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);           /* nearest even */
    } else {
        const _Float16 y = (_Float16)x; /* IEEE conversion: nearest even, overflow to inf */
        memcpy(&h, &y, 2);
    }
    ((uint16_t *)p)[i] = h;
}

static inline cublasStatus_t cublasGemmStridedBatchedEx(
    cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n, int k,
    const void *alpha, const void *A, cudaDataType Atype, int lda, long long int strideA,
    const void *B, cudaDataType Btype, int ldb, long long int strideB, const void *beta, void *C,
    cudaDataType Ctype, int ldc, long long int strideC, int batchCount,
    cublasComputeType_t computeType, cublasGemmAlgo_t algo)
{
    (void)algo;
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    const bool opa_ok = transa == CUBLAS_OP_N || transa == CUBLAS_OP_T || transa == CUBLAS_OP_C;
    const bool opb_ok = transb == CUBLAS_OP_N || transb == CUBLAS_OP_T || transb == CUBLAS_OP_C;
    if (!opa_ok || !opb_ok || m < 0 || n < 0 || k < 0 || batchCount < 0)
        return CUBLAS_STATUS_INVALID_VALUE;
    const bool ta = transa != CUBLAS_OP_N, tb = transb != CUBLAS_OP_N;
    const int arows = ta ? k : m, brows = tb ? n : k;
    if (lda < (arows > 1 ? arows : 1) || ldb < (brows > 1 ? brows : 1) || ldc < (m > 1 ? m : 1))
        return CUBLAS_STATUS_INVALID_VALUE;
    if (!alpha || !beta) return CUBLAS_STATUS_INVALID_VALUE;
    if (computeType != CUBLAS_COMPUTE_32F && computeType != CUBLAS_COMPUTE_32F_PEDANTIC &&
        computeType != CUBLAS_COMPUTE_32F_FAST_TF32)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    const bool types_ok = Atype == Btype &&
                          (Atype == CUDA_R_32F || Atype == CUDA_R_16BF || Atype == CUDA_R_16F) &&
                          (Ctype == CUDA_R_32F || Ctype == Atype);
    if (!types_ok) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (m == 0 || n == 0 || batchCount == 0) return CUBLAS_STATUS_SUCCESS;
    const float al = *(const float *)alpha, be = *(const float *)beta;
    for (int b = 0; b < batchCount; b++) {
        const int64_t oa = (int64_t)b * strideA, ob = (int64_t)b * strideB,
                      oc = (int64_t)b * strideC;
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                float s = 0.0f;
                for (int l = 0; l < k; l++) {
                    const int64_t ia = ta ? (int64_t)l + (int64_t)i * lda : (int64_t)i + (int64_t)l * lda;
                    const int64_t ib = tb ? (int64_t)j + (int64_t)l * ldb : (int64_t)l + (int64_t)j * ldb;
                    s = fmaf(emu_blas_load(A, Atype, oa + ia), emu_blas_load(B, Btype, ob + ib), s);
                }
                const int64_t ic = oc + (int64_t)i + (int64_t)j * ldc;
                float r = al * s;
                if (be != 0.0f) r = fmaf(be, emu_blas_load(C, Ctype, ic), r);
                emu_blas_store(C, Ctype, ic, r);
            }
    }
    return CUBLAS_STATUS_SUCCESS;
}
