/*
 * gpu/gemm.cu -- row-major batched matrix products on the context's cuBLAS
 * handle (cublasGemmStridedBatchedEx), for the CUDA kernels' chunk products.
 *
 *   for b < batch:  C_b = alpha op(A_b) op(B_b) + beta C_b
 *   C_b  M x N fp32, row-major: element (i, j) at C[b sC + i ldc + j]
 *   op(A_b) M x K: A_b stored M x K row-major (ta = 0) or K x M (ta = 1),
 *   op(B_b) K x N: B_b stored K x N (tb = 0) or N x K (tb = 1); A and B in
 *   `dtype` (fp32, bf16 or f16), strides sA, sB, sC in elements.
 *
 * cuBLAS is column-major: a row-major matrix is the column-major matrix of
 * its transpose, so C^T = op(B)^T op(A)^T is computed with the operands
 * swapped and the same transposition flags (m = N, n = M).
 *
 * Precision: fp32 operands run CUBLAS_COMPUTE_32F with CUBLAS_GEMM_DEFAULT
 * (never TF32: the context's handle keeps CUBLAS_DEFAULT_MATH, set in
 * gpu/context.cu, and the compute type says 32F); bf16 / f16 operands run
 * CUBLAS_COMPUTE_32F with CUBLAS_GEMM_DEFAULT_TENSOR_OP (tensor cores, fp32
 * accumulation). C is always fp32. The handle is bound to the context's
 * stream on every call (the stream may change between calls).
 */
#include "common.cuh"

#include <cublas_v2.h>
#include <limits.h>

extern "C" seqk_status seqk__cuda_gemm(const char *fn, seqk_context *ctx, seqk_dtype dtype, int ta,
                                       int tb, int64_t M, int64_t N, int64_t K, float alpha,
                                       const void *A, int64_t lda, int64_t sA, const void *B,
                                       int64_t ldb, int64_t sB, float beta, float *C, int64_t ldc,
                                       int64_t sC, int64_t batch)
{
    if (M <= 0 || N <= 0 || batch <= 0) return SEQK_SUCCESS;
    const int64_t dims[6] = {M, N, K, lda, ldb, ldc};
    for (int i = 0; i < 6; i++)
        if (dims[i] < 0 || dims[i] > INT_MAX)
            return seqk__fail(SEQK_ERROR_UNSUPPORTED,
                              "%s: a matrix product of %lld x %lld x %lld (leading dimensions "
                              "%lld, %lld, %lld) is past cuBLAS' int range",
                              fn, (long long)M, (long long)N, (long long)K, (long long)lda,
                              (long long)ldb, (long long)ldc);
    cublasHandle_t h = (cublasHandle_t)ctx->cublas;
    cublasStatus_t bs = cublasSetStream(h, seqk__stream(ctx));
    if (bs != CUBLAS_STATUS_SUCCESS)
        return seqk__fail(SEQK_ERROR_BACKEND, "%s: cublasSetStream failed (status %d)", fn,
                          (int)bs);
    const cudaDataType_t t = dtype == SEQK_DTYPE_BF16  ? CUDA_R_16BF
                             : dtype == SEQK_DTYPE_F16 ? CUDA_R_16F
                                                       : CUDA_R_32F;
    const cublasGemmAlgo_t algo =
        dtype == SEQK_DTYPE_F32 ? CUBLAS_GEMM_DEFAULT : CUBLAS_GEMM_DEFAULT_TENSOR_OP;
    const cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    const size_t es = seqk_dtype_size(dtype);
    /* batchCount is an int: batches past it in pieces */
    for (int64_t b0 = 0; b0 < batch; b0 += INT_MAX) {
        const int64_t nb = batch - b0 < INT_MAX ? batch - b0 : INT_MAX;
        const char *a0 = (const char *)A + (size_t)(b0 * sA) * es;
        const char *bb0 = (const char *)B + (size_t)(b0 * sB) * es;
        bs = cublasGemmStridedBatchedEx(h, opb, opa, (int)N, (int)M, (int)K, &alpha, bb0, t,
                                        (int)ldb, (long long)sB, a0, t, (int)lda, (long long)sA,
                                        &beta, C + b0 * sC, CUDA_R_32F, (int)ldc, (long long)sC,
                                        (int)nb, CUBLAS_COMPUTE_32F, algo);
        if (bs != CUBLAS_STATUS_SUCCESS)
            return seqk__fail(SEQK_ERROR_BACKEND,
                              "%s: cublasGemmStridedBatchedEx (%s, M=%lld N=%lld K=%lld, batch "
                              "%lld) failed (status %d)",
                              fn, seqk_dtype_string(dtype), (long long)M, (long long)N,
                              (long long)K, (long long)nb, (int)bs);
    }
    return SEQK_SUCCESS;
}
