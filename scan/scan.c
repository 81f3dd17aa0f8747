/* scan/scan.c -- seqk_scan: validation, then one dispatch to the backend. */
#include "scan.h"

#include "../gpu/gpu.h"

#include <inttypes.h>
#include <stdlib.h>

static const char FN[] = "seqk_scan";

/* Everything about seqk_scan's arguments except the pointers' contents. */
static seqk_status check_sizes(const char *fn, seqk_context *ctx, int64_t B, int64_t T,
                               int64_t C, int64_t block, unsigned flags, bool varlen,
                               int64_t N)
{
    seqk_status st;
    if ((st = seqk__check_ctx(fn, ctx))) return st;
    if ((st = seqk__check_min(fn, "B", B, 1))) return st;
    if ((st = seqk__check_min(fn, "T", T, 0))) return st;
    if ((st = seqk__check_min(fn, "C", C, 1))) return st;
    if ((st = seqk__check_range(fn, "block", block, 1, C))) return st;
    if (C % block)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                          "%s: block=%" PRId64 " does not divide C=%" PRId64, fn, block, C);
    if ((st = seqk__check_flags(fn, flags, SEQK_SCAN_REVERSE))) return st;
    int64_t dims[3] = {B, T, C};
    if ((st = seqk__check_numel(fn, "b [B,T,C]", 3, dims, sizeof(float), NULL))) return st;
    if (varlen) {
        if ((st = seqk__check_varlen_sizes(fn, B, N, T))) return st;
        int64_t sdims[2] = {N, C};
        if ((st = seqk__check_numel(fn, "h0 [N,C]", 2, sdims, sizeof(float), NULL))) return st;
    }
    return SEQK_SUCCESS;
}

seqk_status seqk_scan_workspace_size(seqk_context *ctx, int64_t B, int64_t T, int64_t C,
                                     int64_t block, unsigned flags, int64_t N, size_t *bytes)
{
    static const char fn[] = "seqk_scan_workspace_size";
    seqk_status st = check_sizes(fn, ctx, B, T, C, block, flags, N > 0, N);
    if (st == SEQK_SUCCESS) st = seqk__check_ptr(fn, "bytes", bytes);
    if (st != SEQK_SUCCESS) return st;
    *bytes = 0;
#if SEQK__HAVE_CUDA
    if (ctx->backend == SEQK_BACKEND_CUDA)
        *bytes = seqk__cuda_scan_workspace_size(B, T, C, block, flags, N > 0 ? N : B);
#endif
    return SEQK_SUCCESS;
}

seqk_status seqk_scan(seqk_context *ctx, int64_t B, int64_t T, int64_t C, int64_t block,
                      unsigned flags, const float *a, const float *b, const float *h0, float *h,
                      float *h_final, const int32_t *cu_seqlens, int64_t N)
{
    const bool varlen = cu_seqlens != NULL;
    seqk_status st = check_sizes(FN, ctx, B, T, C, block, flags, varlen, N);
    if (st) return st;
    if (!varlen) N = B;
    const int64_t numel = B * T * C;
    if (numel > 0) {
        if ((st = seqk__check_ptr(FN, "a", a))) return st;
        if ((st = seqk__check_ptr(FN, "b", b))) return st;
        if ((st = seqk__check_ptr(FN, "h", h))) return st;
        /* h may be b exactly (in place); no other overlap between outputs and inputs. */
        const size_t hb = (size_t)numel * sizeof(float);
        const size_t ab = (size_t)(numel / block) * sizeof(float);
        if (h != b && seqk__overlap(h, hb, b, hb))
            return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                              "%s: h=%p partially overlaps b=%p (only h == b is allowed)", FN,
                              (void *)h, (const void *)b);
        if (seqk__overlap(h, hb, a, ab))
            return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: h=%p overlaps a=%p", FN,
                              (void *)h, (const void *)a);
        if (h_final && seqk__overlap(h_final, (size_t)(N * C) * sizeof(float), h, hb))
            return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: h_final=%p overlaps h=%p", FN,
                              (void *)h_final, (void *)h);
    }
    int32_t *cu_host = NULL;
    if (varlen) {
        if ((st = seqk__copy_cu_seqlens(FN, ctx, cu_seqlens, N, B, T, &cu_host))) return st;
    }
    switch (ctx->backend) {
    case SEQK_BACKEND_CPU:
        st = seqk__cpu_scan(ctx, B, T, C, block, flags, a, b, h0, h, h_final, cu_host, N);
        break;
    case SEQK_BACKEND_CUDA:
#if SEQK__HAVE_CUDA
        st = seqk__cuda_scan(ctx, B, T, C, block, flags, a, b, h0, h, h_final, cu_seqlens,
                             cu_host, N);
#else
        st = seqk__fail(SEQK_ERROR_NOT_COMPILED, "%s: no CUDA backend in this build", FN);
#endif
        break;
    default:
        st = seqk__fail(SEQK_ERROR_INTERNAL, "%s: context has backend=%d", FN, (int)ctx->backend);
    }
    free(cu_host);
    return st;
}
