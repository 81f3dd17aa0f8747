/* core/context.c -- contexts, backends, memory on the backend, workspace. */
#define _DEFAULT_SOURCE /* madvise (Linux) under -std=c11 */
#include "internal.h"

#include "../gpu/gpu.h"

#include <stdlib.h>
#include <string.h>
#ifdef __linux__
#include <sys/mman.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#define WORKSPACE_ALIGN 256

/* Host buffers of at least this many bytes are aligned to it and, on Linux,
 * advised for transparent huge pages. A head's token rows are H K floats
 * apart, so the ops' per-head walks touch a new 4 KiB page every token or
 * two and miss the TLB on nearly every row (a VM's nested page walks make
 * each miss dearer). Measured on the AMD EPYC VM (2026-12-06, q, k, v, dout
 * and the gradients in 2 MiB pages against 4 KiB ones): the linear-state
 * forward and backward 0-10 % less time, softmax attention's backward
 * 5-6 % less (before the linear-state backward walked head groups, its
 * backward took 15-25 % less). Advice only: where the kernel has no huge
 * page to give, the buffer is plain memory. */
#define HUGE_ALIGN ((size_t)2 << 20)

int seqk_backend_compiled(seqk_backend backend)
{
    switch (backend) {
    case SEQK_BACKEND_CPU: return 1;
    case SEQK_BACKEND_CUDA: return SEQK__HAVE_CUDA;
    }
    return 0;
}

seqk_status seqk_cuda_device_count(int *count)
{
    if (!count)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "seqk_cuda_device_count: count is NULL");
    *count = 0;
#if SEQK__HAVE_CUDA
    return seqk__cuda_device_count(count);
#else
    return seqk__fail(SEQK_ERROR_NOT_COMPILED,
                      "seqk_cuda_device_count: this build of seqk has no CUDA backend");
#endif
}

seqk_status seqk_context_create(seqk_context **ctx, seqk_backend backend, int device)
{
    static const char fn[] = "seqk_context_create";
    if (!ctx) return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: ctx is NULL", fn);
    *ctx = NULL;
    if (backend != SEQK_BACKEND_CPU && backend != SEQK_BACKEND_CUDA)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: backend=%d is not a seqk_backend",
                          fn, (int)backend);
    if (backend == SEQK_BACKEND_CPU && device != 0)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                          "%s: device=%d for the CPU backend, must be 0", fn, device);
    if (backend == SEQK_BACKEND_CUDA && !SEQK__HAVE_CUDA)
        return seqk__fail(SEQK_ERROR_NOT_COMPILED,
                          "%s: backend=CUDA, but this build of seqk has no CUDA backend "
                          "(configure with -DSEQK_CUDA=ON)",
                          fn);
    seqk_context *c = calloc(1, sizeof *c);
    if (!c) return seqk__fail(SEQK_ERROR_OUT_OF_MEMORY, "%s: cannot allocate the context", fn);
    c->backend = backend;
    c->device = device;
    c->workspace_owned = true;
#if SEQK__HAVE_CUDA
    if (backend == SEQK_BACKEND_CUDA) {
        seqk_status st = seqk__cuda_context_init(c);
        if (st != SEQK_SUCCESS) {
            free(c);
            return st;
        }
    }
#endif
    *ctx = c;
    return SEQK_SUCCESS;
}

static void free_backend(seqk_context *ctx, void *p)
{
    if (!p) return;
#if SEQK__HAVE_CUDA
    if (ctx->backend == SEQK_BACKEND_CUDA) {
        seqk__cuda_free(ctx, p);
        return;
    }
#endif
    (void)ctx;
    free(p);
}

seqk_status seqk_context_destroy(seqk_context *ctx)
{
    if (!ctx) return SEQK_SUCCESS;
    if (ctx->workspace_owned) free_backend(ctx, ctx->workspace);
#if SEQK__HAVE_CUDA
    if (ctx->backend == SEQK_BACKEND_CUDA) seqk__cuda_context_fini(ctx);
#endif
    free(ctx);
    return SEQK_SUCCESS;
}

#define GETTER(name, type, field)                                                           \
    seqk_status seqk_context_##name(const seqk_context *ctx, type *out)                     \
    {                                                                                       \
        seqk_status st = seqk__check_ctx("seqk_context_" #name, ctx);                       \
        if (st == SEQK_SUCCESS) st = seqk__check_ptr("seqk_context_" #name, #name, out);    \
        if (st == SEQK_SUCCESS) *out = ctx->field;                                          \
        return st;                                                                          \
    }
GETTER(backend, seqk_backend, backend)
GETTER(device, int, device)
GETTER(stream, void *, stream)
#undef GETTER

int seqk__threads(const seqk_context *ctx)
{
    if (ctx->threads > 0) return ctx->threads;
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

int seqk__omp_thread(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

seqk_status seqk_context_threads(const seqk_context *ctx, int *n)
{
    seqk_status st = seqk__check_ctx("seqk_context_threads", ctx);
    if (st == SEQK_SUCCESS) st = seqk__check_ptr("seqk_context_threads", "n", n);
    if (st == SEQK_SUCCESS) *n = seqk__threads(ctx);
    return st;
}

seqk_status seqk_context_set_threads(seqk_context *ctx, int n)
{
    seqk_status st = seqk__check_ctx("seqk_context_set_threads", ctx);
    if (st == SEQK_SUCCESS) st = seqk__check_range("seqk_context_set_threads", "n", n, 0, 4096);
    if (st == SEQK_SUCCESS) ctx->threads = n;
    return st;
}

seqk_status seqk_context_set_stream(seqk_context *ctx, void *stream)
{
    static const char fn[] = "seqk_context_set_stream";
    seqk_status st = seqk__check_ctx(fn, ctx);
    if (st != SEQK_SUCCESS) return st;
    if (ctx->backend != SEQK_BACKEND_CUDA)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                          "%s: stream=%p on a CPU context (streams are CUDA only)", fn, stream);
#if SEQK__HAVE_CUDA
    return seqk__cuda_set_stream(ctx, stream);
#else
    return SEQK_ERROR_INTERNAL;
#endif
}

seqk_status seqk_context_synchronize(seqk_context *ctx)
{
    seqk_status st = seqk__check_ctx("seqk_context_synchronize", ctx);
    if (st != SEQK_SUCCESS) return st;
#if SEQK__HAVE_CUDA
    if (ctx->backend == SEQK_BACKEND_CUDA) return seqk__cuda_synchronize(ctx);
#endif
    return SEQK_SUCCESS;
}

/* ---- memory --------------------------------------------------------------- */

static seqk_status alloc_backend(const char *fn, seqk_context *ctx, size_t bytes, void **ptr)
{
    (void)ctx;
#if SEQK__HAVE_CUDA
    if (ctx->backend == SEQK_BACKEND_CUDA) return seqk__cuda_malloc(fn, ctx, bytes, ptr);
#endif
    const size_t align = bytes >= HUGE_ALIGN ? HUGE_ALIGN : WORKSPACE_ALIGN;
    const size_t size = seqk__align_up(bytes, align);
    void *p = aligned_alloc(align, size);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (p && align == HUGE_ALIGN) (void)madvise(p, size, MADV_HUGEPAGE);
#endif
    if (!p)
        return seqk__fail(SEQK_ERROR_OUT_OF_MEMORY, "%s: cannot allocate %zu bytes", fn, bytes);
    *ptr = p;
    return SEQK_SUCCESS;
}

seqk_status seqk_malloc(seqk_context *ctx, size_t bytes, void **ptr)
{
    static const char fn[] = "seqk_malloc";
    seqk_status st = seqk__check_ctx(fn, ctx);
    if (st == SEQK_SUCCESS) st = seqk__check_ptr(fn, "ptr", ptr);
    if (st != SEQK_SUCCESS) return st;
    *ptr = NULL;
    if (bytes == 0)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: bytes=0, must be > 0", fn);
    return alloc_backend(fn, ctx, bytes, ptr);
}

seqk_status seqk_free(seqk_context *ctx, void *ptr)
{
    seqk_status st = seqk__check_ctx("seqk_free", ctx);
    if (st == SEQK_SUCCESS) free_backend(ctx, ptr);
    return st;
}

seqk_status seqk_memcpy(seqk_context *ctx, void *dst, const void *src, size_t bytes,
                        seqk_copy_kind kind)
{
    static const char fn[] = "seqk_memcpy";
    seqk_status st = seqk__check_ctx(fn, ctx);
    if (st != SEQK_SUCCESS) return st;
    if (kind != SEQK_COPY_HOST_TO_BACKEND && kind != SEQK_COPY_BACKEND_TO_HOST &&
        kind != SEQK_COPY_BACKEND_TO_BACKEND)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: kind=%d is not a seqk_copy_kind", fn,
                          (int)kind);
    if (bytes == 0) return SEQK_SUCCESS;
    if ((st = seqk__check_ptr(fn, "dst", dst)) != SEQK_SUCCESS) return st;
    if ((st = seqk__check_ptr(fn, "src", src)) != SEQK_SUCCESS) return st;
#if SEQK__HAVE_CUDA
    if (ctx->backend == SEQK_BACKEND_CUDA) return seqk__cuda_memcpy(ctx, dst, src, bytes, kind);
#endif
    memmove(dst, src, bytes);
    return SEQK_SUCCESS;
}

/* ---- workspace ------------------------------------------------------------ */

seqk_status seqk_context_set_workspace(seqk_context *ctx, void *ptr, size_t bytes)
{
    static const char fn[] = "seqk_context_set_workspace";
    seqk_status st = seqk__check_ctx(fn, ctx);
    if (st != SEQK_SUCCESS) return st;
    if ((ptr == NULL) != (bytes == 0))
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                          "%s: ptr=%p with bytes=%zu (give both, or NULL and 0)", fn, ptr, bytes);
    if ((uintptr_t)ptr % WORKSPACE_ALIGN)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: ptr=%p is not %d-byte aligned", fn,
                          ptr, WORKSPACE_ALIGN);
    if (ctx->workspace_owned) free_backend(ctx, ctx->workspace);
    ctx->workspace = ptr;
    ctx->workspace_bytes = bytes;
    ctx->workspace_owned = (ptr == NULL);
    return SEQK_SUCCESS;
}

seqk_status seqk__workspace(const char *fn, seqk_context *ctx, size_t bytes, void **ptr)
{
    *ptr = NULL;
    if (bytes == 0) return SEQK_SUCCESS;
    if (bytes <= ctx->workspace_bytes) {
        *ptr = ctx->workspace;
        return SEQK_SUCCESS;
    }
    if (!ctx->workspace_owned)
        return seqk__fail(SEQK_ERROR_WORKSPACE_TOO_SMALL,
                          "%s: needs %zu bytes of workspace, the caller's buffer has %zu", fn,
                          bytes, ctx->workspace_bytes);
    /* Grow geometrically so a sweep of growing sizes reallocates rarely. */
    size_t want = bytes < ctx->workspace_bytes * 2 ? ctx->workspace_bytes * 2 : bytes;
    void *p = NULL;
    seqk_status st = alloc_backend(fn, ctx, want, &p);
    if (st != SEQK_SUCCESS) {
        want = bytes;
        st = alloc_backend(fn, ctx, want, &p);
        if (st != SEQK_SUCCESS) return st;
    }
    free_backend(ctx, ctx->workspace);
    ctx->workspace = p;
    ctx->workspace_bytes = want;
    *ptr = p;
    return SEQK_SUCCESS;
}

seqk_status seqk_context_reserve_workspace(seqk_context *ctx, size_t bytes)
{
    static const char fn[] = "seqk_context_reserve_workspace";
    seqk_status st = seqk__check_ctx(fn, ctx);
    if (st != SEQK_SUCCESS) return st;
    void *p;
    return seqk__workspace(fn, ctx, bytes, &p);
}
