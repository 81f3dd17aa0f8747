/* gpu/common.cuh -- helpers shared by the CUDA files: error checks that turn
 * a CUDA error into a seqk status and message. */
#ifndef SEQK_GPU_COMMON_CUH
#define SEQK_GPU_COMMON_CUH

#include "gpu.h"

#include <cuda_runtime.h>

/* Returns from the enclosing function with SEQK_ERROR_BACKEND when a CUDA
 * runtime call fails; fn names the seqk function. */
#define SEQK_CUDA_TRY(fn, call)                                                         \
    do {                                                                                \
        cudaError_t e_ = (call);                                                        \
        if (e_ != cudaSuccess)                                                          \
            return seqk__fail(SEQK_ERROR_BACKEND, "%s: %s failed: %s (%s)", (fn), #call, \
                              cudaGetErrorName(e_), cudaGetErrorString(e_));            \
    } while (0)

/* After a kernel launch: the launch error, if any. */
#define SEQK_CUDA_CHECK_LAUNCH(fn) SEQK_CUDA_TRY(fn, cudaGetLastError())

static inline cudaStream_t seqk__stream(const seqk_context *ctx)
{
    return (cudaStream_t)ctx->stream;
}

static inline unsigned seqk__ceil_div(int64_t n, int64_t d) { return (unsigned)((n + d - 1) / d); }

#endif
