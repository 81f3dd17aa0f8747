/* gpu/context.cu -- CUDA device discovery, per-context stream and cuBLAS
 * handle, device memory. A missing driver or device is "no device", never a
 * crash: loading seqk must work on a machine without a GPU. */
#include "common.cuh"

#include <cublas_v2.h>

extern "C" seqk_status seqk__cuda_device_count(int *count)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver) {
        cudaGetLastError(); /* clear the sticky-free error */
        *count = 0;
        return SEQK_SUCCESS;
    }
    if (e != cudaSuccess) {
        cudaGetLastError();
        *count = 0;
        return SEQK_SUCCESS; /* any failure to reach a driver means no usable device */
    }
    *count = n;
    return SEQK_SUCCESS;
}

extern "C" seqk_status seqk__cuda_context_init(seqk_context *ctx)
{
    static const char fn[] = "seqk_context_create";
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return seqk__fail(SEQK_ERROR_NO_DEVICE, "%s: backend=CUDA: no usable device (%s: %s)", fn,
                          cudaGetErrorName(e), cudaGetErrorString(e));
    }
    if (n == 0)
        return seqk__fail(SEQK_ERROR_NO_DEVICE, "%s: backend=CUDA: no usable device (0 devices)",
                          fn);
    if (ctx->device < 0 || ctx->device >= n)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                          "%s: device=%d, this machine has %d CUDA device(s)", fn, ctx->device, n);
    SEQK_CUDA_TRY(fn, cudaSetDevice(ctx->device));
    cublasHandle_t h = NULL;
    cublasStatus_t bs = cublasCreate(&h);
    if (bs != CUBLAS_STATUS_SUCCESS)
        return seqk__fail(SEQK_ERROR_NO_DEVICE, "%s: backend=CUDA: cublasCreate failed (status %d)",
                          fn, (int)bs);
    /* plain fp32 math: no TF32 for fp32 products (gpu/gemm.cu) */
    bs = cublasSetMathMode(h, CUBLAS_DEFAULT_MATH);
    if (bs != CUBLAS_STATUS_SUCCESS) {
        cublasDestroy(h);
        return seqk__fail(SEQK_ERROR_BACKEND,
                          "%s: backend=CUDA: cublasSetMathMode failed (status %d)", fn, (int)bs);
    }
    ctx->cublas = h;
    ctx->stream = NULL;
    return SEQK_SUCCESS;
}

extern "C" void seqk__cuda_context_fini(seqk_context *ctx)
{
    if (ctx->cublas) cublasDestroy((cublasHandle_t)ctx->cublas);
    ctx->cublas = NULL;
}

extern "C" seqk_status seqk__cuda_set_stream(seqk_context *ctx, void *stream)
{
    cublasStatus_t bs = cublasSetStream((cublasHandle_t)ctx->cublas, (cudaStream_t)stream);
    if (bs != CUBLAS_STATUS_SUCCESS)
        return seqk__fail(SEQK_ERROR_BACKEND, "seqk_context_set_stream: cublasSetStream failed (%d)",
                          (int)bs);
    ctx->stream = stream;
    return SEQK_SUCCESS;
}

extern "C" seqk_status seqk__cuda_synchronize(seqk_context *ctx)
{
    SEQK_CUDA_TRY("seqk_context_synchronize", cudaSetDevice(ctx->device));
    SEQK_CUDA_TRY("seqk_context_synchronize", cudaStreamSynchronize(seqk__stream(ctx)));
    return SEQK_SUCCESS;
}

extern "C" seqk_status seqk__cuda_malloc(const char *fn, seqk_context *ctx, size_t bytes,
                                         void **ptr)
{
    SEQK_CUDA_TRY(fn, cudaSetDevice(ctx->device));
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return seqk__fail(SEQK_ERROR_OUT_OF_MEMORY, "%s: cudaMalloc of %zu bytes failed: %s", fn,
                          bytes, cudaGetErrorString(e));
    }
    *ptr = p;
    return SEQK_SUCCESS;
}

extern "C" void seqk__cuda_free(seqk_context *ctx, void *ptr)
{
    cudaSetDevice(ctx->device);
    cudaFree(ptr);
}

extern "C" seqk_status seqk__cuda_memcpy(seqk_context *ctx, void *dst, const void *src,
                                         size_t bytes, seqk_copy_kind kind)
{
    static const char fn[] = "seqk_memcpy";
    cudaMemcpyKind k = kind == SEQK_COPY_HOST_TO_BACKEND   ? cudaMemcpyHostToDevice
                       : kind == SEQK_COPY_BACKEND_TO_HOST ? cudaMemcpyDeviceToHost
                                                           : cudaMemcpyDeviceToDevice;
    SEQK_CUDA_TRY(fn, cudaSetDevice(ctx->device));
    SEQK_CUDA_TRY(fn, cudaMemcpyAsync(dst, src, bytes, k, seqk__stream(ctx)));
    SEQK_CUDA_TRY(fn, cudaStreamSynchronize(seqk__stream(ctx)));
    return SEQK_SUCCESS;
}
