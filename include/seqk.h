/*
 * seqk.h -- the public API of seqk, a C library of sequence-model kernels.
 *
 * One header, plain C (C11), every symbol prefixed seqk_ / SEQK_.
 *
 * Conventions shared by every function (shared/DESIGN.md section 2):
 *
 *   Dimension letters
 *     B  batch (number of sequences; 1 when cu_seqlens packs them)
 *     T  sequence length (tokens, or scan steps)
 *     H  heads
 *     K  key / query head dimension
 *     V  value head dimension
 *     N  number of sequences (B, or the count in cu_seqlens)
 *     C  channels of the scan primitive (elements per step)
 *
 *   Layout: token-major, innermost dimension contiguous: q, k [B,T,H,K];
 *   v, o [B,T,H,V]; per-token scalars [B,T,H]; per-head constants [H].
 *
 *   Memory: every array argument lives where the context's backend computes:
 *   host memory for SEQK_BACKEND_CPU, device memory for SEQK_BACKEND_CUDA.
 *   seqk_malloc / seqk_memcpy move data for callers that have no allocator.
 *   On CUDA, calls are asynchronous on the context's stream.
 *
 *   Varlen: cu_seqlens int32 [N+1], cu_seqlens[0] = 0, non-decreasing,
 *   cu_seqlens[N] = T, with B = 1 and the sequences packed along T. No state
 *   crosses a sequence boundary. On CUDA it is a device array; the library
 *   copies it (N+1 ints) to the host to validate it.
 *
 *   State: optional initial state (NULL = zeros) and optional final state
 *   (NULL = not written). Chaining the final state of one call into the
 *   initial state of the next equals one call over the concatenation.
 *
 *   Errors: every function returns a seqk_status. On failure nothing has been
 *   written to any output and seqk_last_error() holds a message naming the
 *   function, the argument and the value. The library never prints, never
 *   aborts, never writes outside the caller's buffers.
 *
 *   Threads: calls on one context are not concurrent; separate contexts are
 *   independent. The last-error message is per thread.
 */
#ifndef SEQK_H
#define SEQK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) && defined(SEQK_BUILDING_SHARED)
#define SEQK_API __declspec(dllexport)
#elif defined(__GNUC__)
#define SEQK_API __attribute__((visibility("default")))
#else
#define SEQK_API
#endif

/* ------------------------------------------------------------------------ */
/* Version                                                                   */
/* ------------------------------------------------------------------------ */

#define SEQK_VERSION_MAJOR 0
#define SEQK_VERSION_MINOR 1
#define SEQK_VERSION_PATCH 0
/* MAJOR*10000 + MINOR*100 + PATCH */
#define SEQK_VERSION_NUMBER \
    (SEQK_VERSION_MAJOR * 10000 + SEQK_VERSION_MINOR * 100 + SEQK_VERSION_PATCH)

/* The library's version as "MAJOR.MINOR.PATCH" (static storage). Compare with
 * SEQK_VERSION_* to detect a header / library mismatch. */
SEQK_API const char *seqk_version(void);
/* The library's SEQK_VERSION_NUMBER. */
SEQK_API int seqk_version_number(void);

/* ------------------------------------------------------------------------ */
/* Status and errors                                                         */
/* ------------------------------------------------------------------------ */

/* Values only grow; none is ever renumbered. */
typedef enum seqk_status {
    SEQK_SUCCESS = 0,
    SEQK_ERROR_INVALID_ARGUMENT = 1,  /* NULL pointer, bad value, inconsistent shapes */
    SEQK_ERROR_UNSUPPORTED = 2,       /* valid, but this backend does not take it */
    SEQK_ERROR_OUT_OF_MEMORY = 3,     /* host or device allocation failed */
    SEQK_ERROR_NOT_COMPILED = 4,      /* backend not built into this library */
    SEQK_ERROR_NO_DEVICE = 5,         /* backend built, but no usable device/driver */
    SEQK_ERROR_BACKEND = 6,           /* a CUDA / cuBLAS call failed */
    SEQK_ERROR_WORKSPACE_TOO_SMALL = 7, /* caller-provided workspace is too small */
    SEQK_ERROR_INTERNAL = 8           /* a bug in seqk: please report it */
} seqk_status;

/* A short constant description of a status ("invalid argument", ...).
 * Unknown values give "unknown status". Never NULL. */
SEQK_API const char *seqk_status_string(seqk_status status);

/* The message of the last failed call on this thread, e.g.
 * "seqk_scan: cu_seqlens[3]=17 < cu_seqlens[2]=20". Empty string if no call
 * has failed on this thread. Successful calls leave it unchanged. Never NULL;
 * valid until the next seqk call on this thread. */
SEQK_API const char *seqk_last_error(void);

/* ------------------------------------------------------------------------ */
/* Backends and contexts                                                     */
/* ------------------------------------------------------------------------ */

/* Values only grow. */
typedef enum seqk_backend {
    SEQK_BACKEND_CPU = 0,   /* C11 + OpenMP + SIMD */
    SEQK_BACKEND_CUDA = 1   /* CUDA + cuBLAS */
} seqk_backend;

/* 1 if this build of the library contains the backend, else 0. */
SEQK_API int seqk_backend_compiled(seqk_backend backend);

/* Number of usable CUDA devices, written to *count. Writes 0 and returns
 * SEQK_SUCCESS when the CUDA backend is compiled but no driver or device is
 * present; returns SEQK_ERROR_NOT_COMPILED (and writes 0) when it is not
 * compiled. Loading the library never fails for lack of a GPU. */
SEQK_API seqk_status seqk_cuda_device_count(int *count);

typedef struct seqk_context seqk_context;

/* Creates a context: the backend, the device (CUDA device ordinal; must be 0
 * for the CPU), the CPU thread count (default: OpenMP's maximum), the CUDA
 * stream (default: the legacy default stream), the cuBLAS handle and the
 * workspace. *ctx is set to NULL on failure.
 * Errors: NOT_COMPILED, NO_DEVICE (with the CUDA runtime's reason),
 * INVALID_ARGUMENT (bad device), OUT_OF_MEMORY, BACKEND. */
SEQK_API seqk_status seqk_context_create(seqk_context **ctx, seqk_backend backend,
                                         int device);
/* Frees the context and the workspace it owns. NULL is accepted. */
SEQK_API seqk_status seqk_context_destroy(seqk_context *ctx);

SEQK_API seqk_status seqk_context_backend(const seqk_context *ctx, seqk_backend *backend);
SEQK_API seqk_status seqk_context_device(const seqk_context *ctx, int *device);

/* CPU thread count used by every op on this context; n >= 1, or 0 to go back
 * to the default (OpenMP's maximum). Ignored by the CUDA backend's kernels. */
SEQK_API seqk_status seqk_context_set_threads(seqk_context *ctx, int n);
SEQK_API seqk_status seqk_context_threads(const seqk_context *ctx, int *n);

/* CUDA stream (a cudaStream_t passed as void*; NULL = default stream) on
 * which the context's work is queued. INVALID_ARGUMENT on a CPU context. */
SEQK_API seqk_status seqk_context_set_stream(seqk_context *ctx, void *stream);
SEQK_API seqk_status seqk_context_stream(const seqk_context *ctx, void **stream);

/* Waits until all work queued on the context is done (no-op on the CPU). */
SEQK_API seqk_status seqk_context_synchronize(seqk_context *ctx);

/* Workspace. By default the context owns its workspace and grows it when an
 * op needs more (ops' *_workspace_size tell how much, so that it can be
 * reserved up front with seqk_context_reserve_workspace). A caller may instead
 * hand its own buffer (on the context's backend, 256-byte aligned) with
 * seqk_context_set_workspace; the context then never allocates and an op that
 * needs more fails with SEQK_ERROR_WORKSPACE_TOO_SMALL. ptr = NULL, bytes = 0
 * returns to the owned workspace. */
SEQK_API seqk_status seqk_context_set_workspace(seqk_context *ctx, void *ptr, size_t bytes);
SEQK_API seqk_status seqk_context_reserve_workspace(seqk_context *ctx, size_t bytes);

/* ------------------------------------------------------------------------ */
/* Memory on the context's backend                                           */
/* ------------------------------------------------------------------------ */

typedef enum seqk_copy_kind {
    SEQK_COPY_HOST_TO_BACKEND = 0,
    SEQK_COPY_BACKEND_TO_HOST = 1,
    SEQK_COPY_BACKEND_TO_BACKEND = 2
} seqk_copy_kind;

/* Allocates bytes (> 0) on the context's backend, 256-byte aligned. */
SEQK_API seqk_status seqk_malloc(seqk_context *ctx, size_t bytes, void **ptr);
/* Frees memory from seqk_malloc on the same context. NULL is accepted. */
SEQK_API seqk_status seqk_free(seqk_context *ctx, void *ptr);
/* Copies bytes; synchronous with respect to the host (on CUDA it waits for
 * the context's stream). */
SEQK_API seqk_status seqk_memcpy(seqk_context *ctx, void *dst, const void *src, size_t bytes,
                                 seqk_copy_kind kind);

/* ------------------------------------------------------------------------ */
/* The scan primitive (DESIGN 3.6)                                           */
/* ------------------------------------------------------------------------ */

/* Flags for seqk_scan; combine with |. Values only grow. */
#define SEQK_SCAN_REVERSE 1u  /* run from the last step to the first */

/*
 * seqk_scan: the first-order linear recurrence, for B*C independent channels
 *
 *   forward:  h[t] = a[t] * h[t-1] + b[t],   t = 0 .. T-1,  h[-1] = h0
 *   reverse:  h[t] = a[t] * h[t+1] + b[t],   t = T-1 .. 0,  h[T] = h0
 *
 * elementwise per channel c. (The reverse form uses a[t], not a[t+1]: for the
 * gradient of a forward recurrence pass the coefficients shifted by one.)
 * The associative operator is (a1, b1) o (a2, b2) = (a1 a2, a2 b1 + b2).
 *
 * Coefficients are per element (block = 1), or one coefficient broadcast over
 * each block of `block` consecutive channels (block divides C; block = C gives
 * one scalar per step): that is how a matrix-valued state (a K x V chunk state
 * times a scalar decay) is scanned.
 *
 *   B          batch; must be 1 when cu_seqlens is given
 *   T          steps (>= 0; T = 0 writes only final_state = h0)
 *   C          channels per step (>= 1)
 *   block      coefficient block size, 1 <= block <= C, C % block == 0
 *   flags      0 or SEQK_SCAN_REVERSE
 *   a          [B, T, C/block]  coefficients
 *   b          [B, T, C]        inputs
 *   h0         [N, C] or NULL   initial state per sequence (NULL = zeros)
 *   h          [B, T, C]        output, every h[t]; may be the same pointer as
 *                               b (in place), must not otherwise overlap
 *   h_final    [N, C] or NULL   state after each sequence's last step
 *                               (forward: h[end-1], reverse: h[start]); for an
 *                               empty sequence it is h0 (or zeros)
 *   cu_seqlens [N+1] or NULL    varlen boundaries (see top of file)
 *   N          number of sequences when cu_seqlens != NULL (>= 1); ignored
 *              (N = B) otherwise
 *
 * Workspace: none on the CPU; see seqk_scan_workspace_size.
 */
SEQK_API seqk_status seqk_scan(seqk_context *ctx, int64_t B, int64_t T, int64_t C,
                               int64_t block, unsigned flags, const float *a, const float *b,
                               const float *h0, float *h, float *h_final,
                               const int32_t *cu_seqlens, int64_t N);

/* Workspace bytes that seqk_scan needs for these sizes on this context. */
SEQK_API seqk_status seqk_scan_workspace_size(seqk_context *ctx, int64_t B, int64_t T,
                                              int64_t C, int64_t block, unsigned flags,
                                              int64_t N, size_t *bytes);

#ifdef __cplusplus
}
#endif

#endif /* SEQK_H */
