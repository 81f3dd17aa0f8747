/*
 * core/dtype.h -- the converting path of the _ex entry points (seqk.h,
 * "Dtypes"): one piece of code for every op, forward and backward.
 *
 * An op's _ex function lists the tensors that take the dtype (name, the
 * caller's pointer, element count, in or out) and brackets its fp32
 * implementation with seqk__dt_begin / seqk__dt_end:
 *
 *   seqk__dt_tensor t[] = {{"q", q, nq, 0}, {"o", o, no, 1}};
 *   seqk__dt_call c;
 *   seqk_status st = seqk__dt_begin(&c, fn, ctx, dtype, t, 2, op_ws);
 *   if (st) return st;
 *   st = op_f32(ctx, ..., t[0].f, t[1].f, ...);
 *   return seqk__dt_end(&c, st);
 *
 * begin: checks the dtype; for SEQK_DTYPE_F32 hands the caller's pointers
 * through (t[i].f = t[i].p: the fp32 implementation runs on them directly,
 * no copies, the context untouched). Otherwise it takes one workspace block
 * of copies + op_ws bytes (one fp32 copy per tensor, each 256-byte aligned,
 * then the op's own workspace), converts the inputs into their copies, and
 * points the context's workspace at the tail of that block as a caller's
 * buffer (never grown while the copies live in front of it; restored by
 * end on every path). Converted outputs must not overlap another converted
 * tensor (checked on the caller's arrays, "fn: o=.. overlaps q=.."), except
 * an output flagged in_place, which may be exactly one input.
 * When the sizes are invalid (a negative count, or op_ws == SEQK__DT_BAD_SIZES
 * because the op's own workspace query failed) nothing is converted and every
 * converted tensor is handed over as NULL: the fp32 implementation then
 * rejects the call with its own message (it checks sizes first; with NULL
 * arrays it can read nothing of the caller's).
 *
 * end: restores the context's workspace; on success (and only then: no output
 * is written when the op fails) converts the outputs back into the caller's
 * arrays (round to nearest even; NaN stays NaN; f16 overflows to inf).
 *
 * Phase 2 (tensor cores) replaces the conversion of an op by native kernels
 * behind the same _ex signature; nothing here is part of the API.
 */
#ifndef SEQK_CORE_DTYPE_H
#define SEQK_CORE_DTYPE_H

#include "internal.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { SEQK__DT_IN = 0, SEQK__DT_OUT = 1, SEQK__DT_IN_WRITTEN = 2 };

/* op_ws value meaning "the op's workspace query failed: sizes invalid". */
#define SEQK__DT_BAD_SIZES ((size_t)-1)

typedef struct seqk__dt_tensor {
    const char *name;
    const void *p;  /* the caller's array in the dtype (may be NULL) */
    int64_t n;      /* elements; < 0: the sizes are invalid */
    int out;        /* SEQK__DT_IN, SEQK__DT_OUT (converted back on success) or
                     * SEQK__DT_IN_WRITTEN (converted in; written by the _ex
                     * function itself after seqk__dt_end, so checked for
                     * overlaps as an output) */
    int in_place;   /* output only: may be exactly an input's array */
    float *f;       /* set by seqk__dt_begin: the array the fp32 op takes */
} seqk__dt_tensor;

typedef struct seqk__dt_call {
    const char *fn;
    seqk_context *ctx;
    seqk_dtype dtype;
    seqk__dt_tensor *t;
    int nt;
    int redirected;  /* the context's workspace points into the block */
    void *saved_ws;
    size_t saved_bytes;
    bool saved_owned;
} seqk__dt_call;

/* op_ws from an fp32 workspace query's status and answer. */
static inline size_t seqk__dt_ws(seqk_status st, size_t bytes)
{
    return st ? SEQK__DT_BAD_SIZES : bytes;
}

/* "fn: dtype=7 is not a seqk_dtype" (INVALID_ARGUMENT) unless dtype is one. */
seqk_status seqk__dt_check(const char *fn, seqk_dtype dtype);

/* The product of dims (each >= 0), or -1 when one is negative or the product
 * overflows. */
int64_t seqk__dt_numel(int64_t a, int64_t b, int64_t c, int64_t d);

seqk_status seqk__dt_begin(seqk__dt_call *c, const char *fn, seqk_context *ctx, seqk_dtype dtype,
                           seqk__dt_tensor *t, int nt, size_t op_ws);
seqk_status seqk__dt_end(seqk__dt_call *c, seqk_status st);

/* A workspace query's answer for the _ex call: *bytes holds the fp32 op's
 * bytes on entry; adds the copies of the n tensors of counts[] (none for
 * F32). INVALID_ARGUMENT for a bad dtype or invalid counts. */
seqk_status seqk__dt_workspace_size(const char *fn, seqk_dtype dtype, const int64_t *counts,
                                    int n, size_t *bytes);

/* Host conversions of n elements, dtype <-> fp32 (dtype BF16 or F16):
 * path 0 the fastest this build has (AVX-512 BF16 / F16C), 1 the portable
 * scalar code; both give the same bits. Exported (not in seqk.h) for
 * tests/test_dtype.c, which checks that. */
SEQK_API void seqk__dt_to_f32_host(seqk_dtype dtype, const void *src, float *dst, int64_t n,
                                   int path);
SEQK_API void seqk__dt_from_f32_host(seqk_dtype dtype, const float *src, void *dst, int64_t n,
                                     int path);

/* n elements on ctx's backend (arrays in backend memory), dtype (BF16 or
 * F16) -> fp32 when to_f32, else fp32 -> dtype: the converting path's own
 * conversion (gpu/convert.cu on CUDA). Exported for tests/test_dtype.c. */
SEQK_API seqk_status seqk__dt_convert(seqk_context *ctx, seqk_dtype dtype, int to_f32,
                                      const void *src, void *dst, int64_t n);

#ifdef __cplusplus
}
#endif

#endif /* SEQK_CORE_DTYPE_H */
