/*
 * gpu/linear_state_backward.cu -- CUDA backward of the linear-state engine
 * (scan/linear_state.h seqk__lin_backward, DESIGN 3.7). Placeholder: the
 * entry points exist so that CUDA builds link; they report UNSUPPORTED.
 */
extern "C" {
#include "../core/internal.h"
#include "../scan/linear_state.h"
}

#include "chunks.cuh"
#include "common.cuh"

extern "C" size_t seqk__cuda_lin_backward_workspace(const seqk__lin *P)
{
    (void)P;
    return 0;
}

extern "C" seqk_status seqk__cuda_lin_backward(seqk_context *ctx, const seqk__lin *P,
                                              const seqk__lin_grad *Gr, const int32_t *cu_device)
{
    (void)ctx, (void)P, (void)Gr, (void)cu_device;
    return seqk__fail(SEQK_ERROR_UNSUPPORTED,
                      "seqk (CUDA linear-state backward): not implemented yet");
}

extern "C" seqk_status seqk__cuda_mamba2_backward_epilogue(
    seqk_context *ctx, int64_t rows, int64_t H, int64_t Pd, int softplus, const float *dt,
    const float *dt_bias, const float *A, const float *D, const float *x, const float *dy,
    const float *dtp, const float *dld, const float *dvs, float *ddt, float *dA, float *dD,
    float *ddt_bias, float *dx)
{
    (void)ctx, (void)rows, (void)H, (void)Pd, (void)softplus, (void)dt, (void)dt_bias, (void)A;
    (void)D, (void)x, (void)dy, (void)dtp, (void)dld, (void)dvs, (void)ddt, (void)dA, (void)dD;
    (void)ddt_bias, (void)dx;
    return seqk__fail(SEQK_ERROR_UNSUPPORTED, "seqk_mamba2_backward (CUDA): not implemented yet");
}
