/* core/validate.c -- argument checks shared by every op. Messages read
 * "fn: arg=value, what was expected". */
#include "internal.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>

seqk_status seqk__check_ctx(const char *fn, const seqk_context *ctx)
{
    if (!ctx) return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: ctx is NULL", fn);
    return SEQK_SUCCESS;
}

seqk_status seqk__check_ptr(const char *fn, const char *arg, const void *p)
{
    if (!p) return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: %s is NULL", fn, arg);
    return SEQK_SUCCESS;
}

seqk_status seqk__check_min(const char *fn, const char *arg, int64_t v, int64_t lo)
{
    if (v < lo)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: %s=%" PRId64 ", must be >= %" PRId64,
                          fn, arg, v, lo);
    return SEQK_SUCCESS;
}

seqk_status seqk__check_range(const char *fn, const char *arg, int64_t v, int64_t lo, int64_t hi)
{
    if (v < lo || v > hi)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                          "%s: %s=%" PRId64 ", must be in [%" PRId64 ", %" PRId64 "]", fn, arg, v,
                          lo, hi);
    return SEQK_SUCCESS;
}

seqk_status seqk__check_numel(const char *fn, const char *what, int n, const int64_t *dims,
                              size_t elem_bytes, int64_t *out)
{
    int64_t numel = 1;
    for (int i = 0; i < n; i++) {
        if (dims[i] < 0)
            return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                              "%s: %s has a negative dimension %" PRId64, fn, what, dims[i]);
        if (dims[i] != 0 && numel > INT64_MAX / dims[i])
            return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                              "%s: %s has more than 2^63 elements (overflow)", fn, what);
        numel *= dims[i];
    }
    if (elem_bytes && (uint64_t)numel > (uint64_t)(SIZE_MAX / elem_bytes))
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                          "%s: %s of %" PRId64 " elements overflows size_t bytes", fn, what,
                          numel);
    if (out) *out = numel;
    return SEQK_SUCCESS;
}

static seqk_status check_cu_values(const char *fn, const int32_t *cu, int64_t N, int64_t T)
{
    if (cu[0] != 0)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: cu_seqlens[0]=%d, must be 0", fn,
                          (int)cu[0]);
    for (int64_t i = 1; i <= N; i++) {
        if (cu[i] < cu[i - 1])
            return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                              "%s: cu_seqlens[%" PRId64 "]=%d < cu_seqlens[%" PRId64 "]=%d", fn,
                              i, (int)cu[i], i - 1, (int)cu[i - 1]);
    }
    if ((int64_t)cu[N] != T)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                          "%s: cu_seqlens[N=%" PRId64 "]=%d, must equal T=%" PRId64, fn, N,
                          (int)cu[N], T);
    return SEQK_SUCCESS;
}

seqk_status seqk__check_flags(const char *fn, unsigned flags, unsigned known)
{
    if (flags & ~known)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: flags=0x%x has unknown bits 0x%x", fn,
                          flags, flags & ~known);
    return SEQK_SUCCESS;
}

seqk_status seqk__check_scale(const char *fn, float scale)
{
    if (!isfinite(scale))
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: scale=%g, must be finite", fn,
                          (double)scale);
    return SEQK_SUCCESS;
}

seqk_status seqk__check_backend_built(const char *fn, const seqk_context *ctx)
{
    if (ctx->backend != SEQK_BACKEND_CPU && !SEQK__HAVE_CUDA)
        return seqk__fail(SEQK_ERROR_UNSUPPORTED, "%s: this build of seqk has no CUDA backend", fn);
    return SEQK_SUCCESS;
}

seqk_status seqk__check_varlen_sizes(const char *fn, int64_t B, int64_t N, int64_t T)
{
    if (B != 1)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                          "%s: B=%" PRId64 " with cu_seqlens, must be 1 (sequences are packed "
                          "along T)",
                          fn, B);
    if (N < 1)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                          "%s: N=%" PRId64 " with cu_seqlens, must be >= 1", fn, N);
    if (N >= INT32_MAX || T > INT32_MAX)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                          "%s: N=%" PRId64 ", T=%" PRId64 " too large for int32 cu_seqlens", fn,
                          N, T);
    return SEQK_SUCCESS;
}

seqk_status seqk__check_cu_seqlens(const char *fn, seqk_context *ctx, const int32_t *cu,
                                   int64_t N, int64_t B, int64_t T, int32_t *host_copy)
{
    seqk_status st0 = seqk__check_varlen_sizes(fn, B, N, T);
    if (st0) return st0;
    if (ctx->backend == SEQK_BACKEND_CPU) {
        seqk_status st = check_cu_values(fn, cu, N, T);
        if (st == SEQK_SUCCESS && host_copy)
            for (int64_t i = 0; i <= N; i++) host_copy[i] = cu[i];
        return st;
    }
    int32_t *tmp = host_copy ? host_copy : malloc((size_t)(N + 1) * sizeof(int32_t));
    if (!tmp)
        return seqk__fail(SEQK_ERROR_OUT_OF_MEMORY, "%s: cannot allocate %" PRId64
                          " ints to check cu_seqlens", fn, N + 1);
    seqk_status st = seqk_memcpy(ctx, tmp, cu, (size_t)(N + 1) * sizeof(int32_t),
                                 SEQK_COPY_BACKEND_TO_HOST);
    if (st == SEQK_SUCCESS) st = check_cu_values(fn, tmp, N, T);
    if (!host_copy) free(tmp);
    return st;
}

bool seqk__overlap(const void *p, size_t pbytes, const void *q, size_t qbytes)
{
    uintptr_t a = (uintptr_t)p, b = (uintptr_t)q;
    if (!p || !q || !pbytes || !qbytes) return false;
    return a < b + qbytes && b < a + pbytes;
}

seqk_status seqk__check_disjoint(const char *fn, const seqk__arg *outs, int n_outs,
                                 const seqk__arg *ins, int n_ins)
{
    for (int i = 0; i < n_outs; i++) {
        const seqk__arg *o = &outs[i];
        for (int j = 0; j < n_ins + i; j++) {
            const seqk__arg *x = j < n_ins ? &ins[j] : &outs[j - n_ins];
            if (seqk__overlap(o->p, o->bytes, x->p, x->bytes))
                return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: %s=%p overlaps %s=%p", fn,
                                  o->name, o->p, x->name, x->p);
        }
    }
    return SEQK_SUCCESS;
}

seqk_status seqk__copy_cu_seqlens(const char *fn, seqk_context *ctx, const int32_t *cu, int64_t N,
                                  int64_t B, int64_t T, int32_t **host)
{
    *host = NULL;
    if (N < 0 || N >= INT32_MAX)
        return seqk__check_cu_seqlens(fn, ctx, cu, N, B, T, NULL); /* reports the bad N */
    int32_t *copy = malloc((size_t)(N + 1) * sizeof(int32_t));
    if (!copy)
        return seqk__fail(SEQK_ERROR_OUT_OF_MEMORY, "%s: cannot allocate a copy of cu_seqlens",
                          fn);
    seqk_status st = seqk__check_cu_seqlens(fn, ctx, cu, N, B, T, copy);
    if (st) {
        free(copy);
        return st;
    }
    *host = copy;
    return SEQK_SUCCESS;
}

seqk_status seqk__check_state_io(const char *fn, const void *state_in, void *state_out,
                                 size_t state_bytes, const char *o_name, const void *o,
                                 size_t o_bytes)
{
    if (state_out && state_out != state_in &&
        seqk__overlap(state_out, state_bytes, state_in, state_bytes))
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                          "%s: state_out=%p partially overlaps state_in=%p (only equal is "
                          "allowed)",
                          fn, state_out, state_in);
    if (state_out && seqk__overlap(state_out, state_bytes, o, o_bytes))
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: state_out=%p overlaps %s=%p", fn,
                          state_out, o_name, o);
    return SEQK_SUCCESS;
}

/* ---- gates (the policy of seqk.h's "Gates" paragraph) ---------------------------- */

seqk_status seqk__check_values(const char *fn, const char *arg, const float *x, int64_t n,
                               float lo, float hi, const char *expect)
{
    for (int64_t i = 0; i < n; i++)
        if (!(x[i] >= lo && x[i] <= hi)) /* NaN fails too */
            return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: %s[%" PRId64 "]=%g, must be %s",
                              fn, arg, i, (double)x[i], expect);
    return SEQK_SUCCESS;
}

seqk_status seqk__check_log_gates(const char *fn, const char *arg, const float *x, int64_t n)
{
    return seqk__check_values(fn, arg, x, n, -FLT_MAX, 0.0f,
                              "finite and <= 0 (a log-gate: the decay exp(g) lies in (0, 1])");
}

seqk_status seqk__check_dt_gates(const char *fn, const float *dt, const float *dt_bias,
                                 const float *A, int64_t nA, int64_t rows, int64_t D)
{
    seqk_status st = seqk__check_values(fn, "A", A, nA, -FLT_MAX, 0.0f,
                                        "finite and <= 0 (the log-gate is dt A)");
    if (!st && dt_bias)
        st = seqk__check_values(fn, "dt_bias", dt_bias, D, -FLT_MAX, FLT_MAX, "finite");
    if (st) return st;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t d = 0; d < D; d++) {
            const int64_t i = r * D + d;
            if (!isfinite(dt[i]))
                return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: dt[%" PRId64 "]=%g, must be "
                                  "finite", fn, i, (double)dt[i]);
            const float x = dt[i] + (dt_bias ? dt_bias[d] : 0.0f);
            if (!isfinite(x))
                return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                                  "%s: dt[%" PRId64 "] + dt_bias[%" PRId64 "] = %g, must be finite",
                                  fn, i, d, (double)x);
        }
    return SEQK_SUCCESS;
}
