/*
 * gpu/gpu.h -- the CUDA backend's entry points, callable from the C side.
 * Each op's dispatch (e.g. scan/scan.c) calls seqk__cuda_<op> after it has
 * validated every argument; these functions only launch work.
 * SEQK__HAVE_CUDA is 1 when the build has the CUDA backend.
 */
#ifndef SEQK_GPU_H
#define SEQK_GPU_H

#include "../core/internal.h"

#ifndef SEQK__HAVE_CUDA
#define SEQK__HAVE_CUDA 0
#endif

#ifdef __cplusplus
extern "C" {
#endif

#if SEQK__HAVE_CUDA
/* gpu/context.cu */
seqk_status seqk__cuda_device_count(int *count);
seqk_status seqk__cuda_context_init(seqk_context *ctx);
void seqk__cuda_context_fini(seqk_context *ctx);
seqk_status seqk__cuda_set_stream(seqk_context *ctx, void *stream);
seqk_status seqk__cuda_synchronize(seqk_context *ctx);
seqk_status seqk__cuda_malloc(const char *fn, seqk_context *ctx, size_t bytes, void **ptr);
void seqk__cuda_free(seqk_context *ctx, void *ptr);
seqk_status seqk__cuda_memcpy(seqk_context *ctx, void *dst, const void *src, size_t bytes,
                              seqk_copy_kind kind);

/* gpu/scan.cu: arguments as seqk_scan, already validated; cu_host is the
 * host copy of cu_seqlens (NULL without varlen); cu is the device array. */
seqk_status seqk__cuda_scan(seqk_context *ctx, int64_t B, int64_t T, int64_t C, int64_t block,
                            unsigned flags, const float *a, const float *b, const float *h0,
                            float *h, float *h_final, const int32_t *cu,
                            const int32_t *cu_host, int64_t N);
size_t seqk__cuda_scan_workspace_size(int64_t B, int64_t T, int64_t C, int64_t block,
                                      unsigned flags, int64_t N);
#endif

#ifdef __cplusplus
}
#endif

#endif /* SEQK_GPU_H */
