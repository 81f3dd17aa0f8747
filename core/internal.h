/*
 * core/internal.h -- what every op file of seqk shares: the context, error
 * reporting, argument validation, workspace. Not installed.
 */
#ifndef SEQK_CORE_INTERNAL_H
#define SEQK_CORE_INTERNAL_H

#include "seqk.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define SEQK_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define SEQK_PRINTF(f, a)
#endif

#ifdef __cplusplus
extern "C" { /* the CUDA files include this header too */
#endif

struct seqk_context {
    seqk_backend backend;
    int device;          /* CUDA ordinal; 0 on the CPU */
    int threads;         /* 0 = OpenMP default */
    void *stream;        /* cudaStream_t */
    void *cublas;        /* cublasHandle_t, created with the CUDA context */
    void *workspace;     /* on the backend */
    size_t workspace_bytes;
    bool workspace_owned; /* false: caller's buffer, never grown */
};

/* ---- errors (core/error.c) ---------------------------------------------- */

/* Sets this thread's message (printf format) and returns status.
 * SEQK_API on the seqk__ helpers below: exported (though not in seqk.h) for
 * libseqk_mpi (mpi/), a companion library built from this tree, so that its
 * errors use this library's per-thread message and its checks. */
SEQK_API seqk_status seqk__fail(seqk_status status, const char *fmt, ...) SEQK_PRINTF(2, 3);

/* ---- validation (core/validate.c) --------------------------------------
 * Each check returns SEQK_SUCCESS or sets the message "fn: ..." and returns
 * the failing status. All index math is int64_t; products are checked. */

SEQK_API seqk_status seqk__check_ctx(const char *fn, const seqk_context *ctx);
SEQK_API seqk_status seqk__check_ptr(const char *fn, const char *arg, const void *p);
/* v >= lo */
SEQK_API seqk_status seqk__check_min(const char *fn, const char *arg, int64_t v, int64_t lo);
/* lo <= v <= hi */
seqk_status seqk__check_range(const char *fn, const char *arg, int64_t v, int64_t lo,
                              int64_t hi);
/* flags has no bits outside known (message: "flags=0x.. has unknown bits 0x..").
 * seqk__check_scale: scale is finite. */
seqk_status seqk__check_flags(const char *fn, unsigned flags, unsigned known);
seqk_status seqk__check_scale(const char *fn, float scale);
/* ctx's backend is built into this library (UNSUPPORTED: "this build of seqk
 * has no CUDA backend"). */
seqk_status seqk__check_backend_built(const char *fn, const seqk_context *ctx);
/* *out = product of n dims (each >= 0) without overflow of int64 and of
 * size_t bytes for elem_bytes-sized elements; what names the tensor. */
seqk_status seqk__check_numel(const char *fn, const char *what, int n, const int64_t *dims,
                              size_t elem_bytes, int64_t *out);
/* The sizes of a varlen call: B == 1 (the N sequences are packed along T),
 * N >= 1, N and T within int32 (the size checks run it before the states'
 * sizes, which use N; seqk__check_cu_seqlens runs it too). */
seqk_status seqk__check_varlen_sizes(const char *fn, int64_t B, int64_t N, int64_t T);
/* Validates cu_seqlens (host or backend memory, per ctx) for N sequences
 * packed along T with batch B: B == 1, N >= 1, cu[0] == 0, non-decreasing,
 * cu[N] == T. If host_copy is not NULL, it receives the N+1 values
 * (caller-allocated); otherwise a host array is needed only temporarily. */
seqk_status seqk__check_cu_seqlens(const char *fn, seqk_context *ctx, const int32_t *cu,
                                   int64_t N, int64_t B, int64_t T, int32_t *host_copy);
/* seqk__check_cu_seqlens into a host copy it allocates (*host; the caller
 * frees it; NULL on failure). */
seqk_status seqk__copy_cu_seqlens(const char *fn, seqk_context *ctx, const int32_t *cu, int64_t N,
                                  int64_t B, int64_t T, int32_t **host);
/* The state arguments of a recurrent-state op: state_out may equal state_in
 * but not partially overlap it, and must not overlap the output o_name=o. */
seqk_status seqk__check_state_io(const char *fn, const void *state_in, void *state_out,
                                 size_t state_bytes, const char *o_name, const void *o,
                                 size_t o_bytes);
/* Two outputs/inputs overlap in memory (byte ranges). */
bool seqk__overlap(const void *p, size_t pbytes, const void *q, size_t qbytes);
/* An argument array for seqk__check_disjoint: its name, address (NULL:
 * absent) and size in bytes. */
typedef struct seqk__arg {
    const char *name;
    const void *p;
    size_t bytes;
} seqk__arg;
/* Every output overlaps neither an input nor another output (message:
 * "fn: dq=0x.. overlaps q=0x.."). */
SEQK_API seqk_status seqk__check_disjoint(const char *fn, const seqk__arg *outs, int n_outs,
                                          const seqk__arg *ins, int n_ins);

/* Gates (seqk.h, "Gates"): host arrays, checked on CPU contexts only, before
 * anything is written. seqk__check_values: lo <= x[i] <= hi for i < n (NaN
 * never is), else "fn: arg[i]=value, must be <expect>" naming the first bad
 * one. seqk__check_log_gates: finite and <= 0. seqk__check_dt_gates (Mamba2,
 * the selective scan): A [nA] finite and <= 0, dt_bias [D] (or NULL) finite,
 * dt [rows, D] finite and dt + dt_bias finite. (The sign of dt + dt_bias
 * without the softplus flag is not checked: callers pass negative raw dt.) */
seqk_status seqk__check_values(const char *fn, const char *arg, const float *x, int64_t n,
                               float lo, float hi, const char *expect);
seqk_status seqk__check_log_gates(const char *fn, const char *arg, const float *x, int64_t n);
seqk_status seqk__check_dt_gates(const char *fn, const float *dt, const float *dt_bias,
                                 const float *A, int64_t nA, int64_t rows, int64_t D);

/* ---- workspace (core/context.c) ----------------------------------------- */

/* At least bytes of workspace on ctx's backend (grown if owned). */
seqk_status seqk__workspace(const char *fn, seqk_context *ctx, size_t bytes, void **ptr);

/* Thread count an op should use on this CPU context (>= 1). */
int seqk__threads(const seqk_context *ctx);

/* This thread's index inside an OpenMP parallel region (0 outside). */
int seqk__omp_thread(void);

/* Sizes rounded up for sub-allocations inside a workspace. */
static inline size_t seqk__align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

#ifdef __cplusplus
}
#endif

#endif /* SEQK_CORE_INTERNAL_H */
