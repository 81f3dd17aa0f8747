/* scan/linear_state.c -- validation and dispatch shared by the linear-state
 * modules (linear attention, retention, gated retention, Mamba2). */
#include "linear_state.h"

#include "../core/dtype.h"
#include "../gpu/gpu.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>

enum { MAX_CHUNK = 1024 };

/* chunk = 0: on the CPU, 32 tokens when K and V are at most 64 (DeltaNet:
 * 128), else 64; on CUDA 64. At K = V = 64 a chunk of 32 has 17 % fewer
 * flops per token than 64 (the causal C x C products shrink, the state
 * products stay) and its products still run the full register tiles.
 * Measured paired, 2 threads, T = 4096, H = 8, B = 2 at K = V = 64 and 1 at
 * 128 (2026-12-07), time ratios chunk 32 / 64, forward and backward:
 *   K = V = 64:  gated retention 0.93 / 0.97, linear attention 0.91 / 0.94,
 *                Mamba2's backward 0.96, gated DeltaNet 0.86 / 0.80;
 *   K = V = 128: the linear-state modules 0.96-1.10 (the state products
 *                dominate: 64 kept), gated DeltaNet 0.90 / 0.97 (its
 *                triangular solve grows with the chunk);
 *   K = V = 256: gated DeltaNet 0.99 / 1.01 (64 kept).
 * 16 was slower everywhere (the 8 x 32 tile no longer fits). */
int64_t seqk__lin_chunk(seqk_backend backend, seqk_chunked_op op, int64_t chunk, int64_t K,
                        int64_t V)
{
    if (chunk != 0) return chunk;
    const int64_t small = op == SEQK_CHUNKED_DELTANET ? 128 : 64;
    return backend == SEQK_BACKEND_CPU && K <= small && V <= small ? 32 : 64;
}

seqk_status seqk_chunk_default(const seqk_context *ctx, seqk_chunked_op op, int64_t K, int64_t V,
                               int64_t *chunk)
{
    static const char fn[] = "seqk_chunk_default";
    seqk_status st;
    if ((st = seqk__check_ctx(fn, ctx))) return st;
    if (op != SEQK_CHUNKED_LINEAR_STATE && op != SEQK_CHUNKED_DELTANET)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: op=%d is not a seqk_chunked_op", fn,
                          (int)op);
    if ((st = seqk__check_min(fn, "K", K, 1))) return st;
    if ((st = seqk__check_min(fn, "V", V, 1))) return st;
    if ((st = seqk__check_ptr(fn, "chunk", chunk))) return st;
    *chunk = seqk__lin_chunk(ctx->backend, op, 0, K, V);
    return SEQK_SUCCESS;
}

seqk_status seqk__lin_check_sizes(const char *fn, seqk_context *ctx, int mode, int64_t B,
                                  int64_t T, int64_t H, int64_t K, int64_t V, int64_t N,
                                  bool varlen, int64_t chunk)
{
    seqk_status st;
    if ((st = seqk__check_ctx(fn, ctx))) return st;
    if (mode != SEQK_MODE_RECURRENT && mode != SEQK_MODE_PARALLEL)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: mode=%d is not a seqk_mode", fn, mode);
    if ((st = seqk__check_min(fn, "B", B, 1))) return st;
    if ((st = seqk__check_min(fn, "T", T, 0))) return st;
    if ((st = seqk__check_min(fn, "H", H, 1))) return st;
    if ((st = seqk__check_min(fn, "K", K, 1))) return st;
    if ((st = seqk__check_min(fn, "V", V, 1))) return st;
    if (K > SEQK__LIN_MAX_K)
        return seqk__fail(SEQK_ERROR_UNSUPPORTED, "%s: K=%" PRId64 ", at most %d is supported", fn,
                          K, SEQK__LIN_MAX_K);
    if (chunk != 0 && (chunk < 1 || chunk > MAX_CHUNK))
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                          "%s: chunk=%" PRId64 ", must be 0 (seqk_chunk_default) or in [1, %d]",
                          fn, chunk, MAX_CHUNK);
    const int64_t d_q[4] = {B, T, H, K}, d_v[4] = {B, T, H, V};
    if ((st = seqk__check_numel(fn, "q [B,T,H,K]", 4, d_q, sizeof(float), NULL))) return st;
    if ((st = seqk__check_numel(fn, "v [B,T,H,V]", 4, d_v, sizeof(float), NULL))) return st;
    if (varlen && (st = seqk__check_varlen_sizes(fn, B, N, T))) return st;
    const int64_t d_s[4] = {varlen ? N : B, H, K, V};
    if ((st = seqk__check_numel(fn, "state [N,H,K,V]", 4, d_s, sizeof(float), NULL))) return st;
    return SEQK_SUCCESS;
}

/* bytes of a [rows, width] float array */
static size_t fbytes(int64_t rows, int64_t width) { return (size_t)(rows * width) * sizeof(float); }

/* bytes of a [rows, width] array of P's activation dtype (q, k, v, o) */
static size_t abytes(const seqk__lin *P, int64_t rows, int64_t width)
{
    return (size_t)(rows * width) * seqk_dtype_size(P->dtype);
}

bool seqk__lin_native(const seqk_context *ctx, seqk_dtype dtype, int mode, unsigned flags)
{
#if SEQK__HAVE_CUDA
    return ctx && ctx->backend == SEQK_BACKEND_CUDA &&
           (dtype == SEQK_DTYPE_BF16 || dtype == SEQK_DTYPE_F16) && mode == SEQK_MODE_PARALLEL &&
           !(flags & SEQK__LIN_NORMALIZE);
#else
    (void)ctx, (void)dtype, (void)mode, (void)flags;
    return false;
#endif
}

/* The checks every linear-state call shares: sizes, scale, q/k heads (N
 * and chunk get their defaults). */
static seqk_status lin_common(const char *fn, seqk_context *ctx, int mode, seqk__lin *P,
                              bool varlen)
{
    seqk_status st = seqk__lin_check_sizes(fn, ctx, mode, P->B, P->T, P->H, P->K, P->V, P->N,
                                           varlen, P->chunk);
    if (st) return st;
    if (!varlen) P->N = P->B;
    P->chunk = seqk__lin_chunk(ctx->backend, SEQK_CHUNKED_LINEAR_STATE, P->chunk, P->K, P->V);
    if ((st = seqk__check_scale(fn, P->scale))) return st;
    if (P->Hqk < 1 || P->H % P->Hqk)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                          "%s: H=%" PRId64 " is not a multiple of the q/k heads %" PRId64, fn,
                          P->H, P->Hqk);
    return SEQK_SUCCESS;
}

enum { RUN_BACKWARD = 2 }; /* lin_launch's `what` besides the two modes */

/* With every argument checked: cu_seqlens to the host (P->cu), then the
 * mode (or the backward, with Gr) on ctx's backend. */
static seqk_status lin_launch(const char *fn, seqk_context *ctx, int what, seqk__lin *P,
                              const seqk__lin_grad *Gr, const int32_t *cu_seqlens)
{
    seqk_status st;
    int32_t *cu_host = NULL;
    if (cu_seqlens) {
        if ((st = seqk__copy_cu_seqlens(fn, ctx, cu_seqlens, P->N, P->B, P->T, &cu_host))) return st;
        P->cu = cu_host;
    }
    if (ctx->backend == SEQK_BACKEND_CPU) {
        st = what == RUN_BACKWARD        ? seqk__lin_backward(ctx, P, Gr)
             : what == SEQK_MODE_RECURRENT ? seqk__lin_recurrent(ctx, P)
                                           : seqk__lin_chunked(ctx, P);
    } else {
#if SEQK__HAVE_CUDA
        st = what == RUN_BACKWARD ? seqk__cuda_lin_backward(ctx, P, Gr, cu_seqlens)
                                  : seqk__cuda_lin(ctx, what, P, cu_seqlens);
#else
        (void)Gr;
        st = seqk__fail(SEQK_ERROR_UNSUPPORTED, "%s: this build of seqk has no CUDA backend", fn);
#endif
    }
    free(cu_host);
    P->cu = NULL;
    return st;
}

seqk_status seqk__lin_run(const char *fn, seqk_context *ctx, int mode, seqk__lin *P,
                          const int32_t *cu_seqlens)
{
    seqk_status st = lin_common(fn, ctx, mode, P, cu_seqlens != NULL);
    if (st) return st;
    const int64_t rows = P->B * P->T;
    if (rows > 0) {
        if ((st = seqk__check_ptr(fn, P->Hqk == P->H ? "q" : "Cm", P->q))) return st;
        if ((st = seqk__check_ptr(fn, P->Hqk == P->H ? "k" : "Bm", P->k))) return st;
        if ((st = seqk__check_ptr(fn, P->v_scale ? "x" : "v", P->v))) return st;
        if ((st = seqk__check_ptr(fn, P->v_scale ? "y" : "o", P->o))) return st;
        const size_t ob = abytes(P, rows * P->H, P->V);
        const void *ins[4] = {P->q, P->k, P->v, P->g};
        const size_t inb[4] = {abytes(P, rows * P->Hqk, P->K), abytes(P, rows * P->Hqk, P->K),
                               ob, fbytes(rows, P->H)};
        const char *names[4] = {"q", "k", "v", "g"};
        for (int i = 0; i < 4; i++)
            if (ins[i] && seqk__overlap(P->o, ob, ins[i], inb[i]))
                return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: o=%p overlaps %s=%p", fn,
                                  (void *)P->o, names[i], ins[i]);
    }
    const size_t sb = fbytes(P->N * P->H, P->K * P->V);
    if ((st = seqk__check_state_io(fn, P->s_in, P->s_out, sb, "o", P->o, abytes(P, rows * P->H, P->V))))
        return st;
    return lin_launch(fn, ctx, mode, P, NULL, cu_seqlens);
}

seqk_status seqk_linear_state_workspace_size(seqk_context *ctx, seqk_mode mode, int64_t B,
                                             int64_t T, int64_t H, int64_t K, int64_t V,
                                             int64_t N, int64_t chunk, size_t *bytes)
{
    static const char fn[] = "seqk_linear_state_workspace_size";
    seqk_status st = seqk__lin_check_sizes(fn, ctx, (int)mode, B, T, H, K, V, N, N > 0, chunk);
    if (!st) st = seqk__check_ptr(fn, "bytes", bytes);
    if (st) return st;
    seqk__lin P = {0};
    P.B = B, P.T = T, P.H = H, P.Hqk = H, P.K = K, P.V = V, P.N = N > 0 ? N : B;
    P.chunk = seqk__lin_chunk(ctx->backend, SEQK_CHUNKED_LINEAR_STATE, chunk, K, V);
    P.flags = SEQK__LIN_NORMALIZE; /* the larger state element (CUDA) */
#if SEQK__HAVE_CUDA
    if (ctx->backend == SEQK_BACKEND_CUDA) {
        /* without P.cu and with N != B the CUDA size is a bound for any
         * cu_seqlens of N sequences; plus Mamba2's dt */
        *bytes = seqk__cuda_lin_workspace(&P, (int)mode) + fbytes(B * T, H) + 256;
        return SEQK_SUCCESS;
    }
#endif
    const int threads = seqk__threads(ctx);
    /* varlen: as N sequences of ceil(T / N) + chunk tokens each, which have
     * at least as many chunks as any N sequences over T tokens, and the
     * same N (the engines' plans of work per thread depend on it) */
    if (N > 0) {
        P.B = N;
        P.N = N;
        P.T = (T + N - 1) / N + P.chunk;
    }
    /* the engines' per-thread scratch is not monotone in the state's width
     * (with the normaliser the recurrent engine takes one head per item,
     * without it several): the larger of the two */
    size_t w = 0;
    for (int norm = 0; norm < 2; norm++) {
        P.flags = norm ? SEQK__LIN_NORMALIZE : 0u;
        const size_t x = mode == SEQK_MODE_RECURRENT ? seqk__lin_recurrent_workspace(&P, threads)
                                                     : seqk__lin_chunked_workspace(&P, threads);
        if (x > w) w = x;
    }
    /* Mamba2's dt */
    *bytes = w + fbytes(B * T, H) + 256;
    return SEQK_SUCCESS;
}

/* ---- backward ------------------------------------------------------------------ */

seqk_status seqk__lin_run_backward(const char *fn, seqk_context *ctx, seqk__lin *P,
                                   const seqk__lin_grad *Gr, const int32_t *cu_seqlens)
{
    seqk_status st = lin_common(fn, ctx, SEQK_MODE_PARALLEL, P, cu_seqlens != NULL);
    if (st) return st;
    const bool m2 = P->v_scale != NULL; /* Mamba2's names */
    const int64_t rows = P->B * P->T;
    if (rows > 0) {
        const char *names[7] = {m2 ? "Cm" : "q", m2 ? "Bm" : "k", m2 ? "x" : "v",
                                m2 ? "dy" : "dout", m2 ? "dCm" : "dq", m2 ? "dBm" : "dk",
                                m2 ? "dx" : "dv"};
        const void *ptrs[7] = {P->q, P->k, P->v, Gr->dout, Gr->dq, Gr->dk, Gr->dv};
        for (int i = 0; i < 7; i++)
            if ((st = seqk__check_ptr(fn, names[i], ptrs[i]))) return st;
    }
    /* q, k, v, dout, dq, dk, dv in P's dtype (the native path), the rest fp32 */
    const size_t qkb = abytes(P, rows * P->Hqk, P->K), vb = abytes(P, rows * P->H, P->V),
                 tb = fbytes(rows, P->H), sb = fbytes(P->N * P->H, P->K * P->V),
                 zb = fbytes(P->N * P->H, P->K);
    const seqk__arg ins[9] = {{m2 ? "Cm" : "q", P->q, qkb},
                              {m2 ? "Bm" : "k", P->k, qkb},
                              {m2 ? "x" : "v", P->v, vb},
                              {m2 ? "dt" : "g", P->g, tb},
                              {m2 ? "dy" : "dout", Gr->dout, vb},
                              {"state_in", P->s_in, sb},
                              {"z_in", P->z_in, zb},
                              {"dstate_out", Gr->ds_out, sb},
                              {"dz_out", Gr->dz_out, zb}};
    const seqk__arg outs[7] = {{m2 ? "dCm" : "dq", Gr->dq, qkb},
                               {m2 ? "dBm" : "dk", Gr->dk, qkb},
                               {m2 ? "dx" : "dv", Gr->dv, vb},
                               {"dv_scale", Gr->dv_scale, tb},
                               {m2 ? "ddt" : "dg", Gr->dlogdecay, tb},
                               {"dstate_in", Gr->ds_in, sb},
                               {"dz_in", Gr->dz_in, zb}};
    if ((st = seqk__check_disjoint(fn, outs, 7, ins, 9))) return st;
    return lin_launch(fn, ctx, RUN_BACKWARD, P, Gr, cu_seqlens);
}

seqk_status seqk_linear_state_backward_workspace_size(seqk_context *ctx, int64_t B, int64_t T,
                                                      int64_t H, int64_t G, int64_t K, int64_t V,
                                                      int64_t N, int64_t chunk, size_t *bytes)
{
    static const char fn[] = "seqk_linear_state_backward_workspace_size";
    seqk_status st = seqk__lin_check_sizes(fn, ctx, SEQK_MODE_PARALLEL, B, T, H, K, V, N, N > 0,
                                           chunk);
    if (!st) st = seqk__check_range(fn, "G", G, 1, H);
    if (!st) st = seqk__check_ptr(fn, "bytes", bytes);
    if (st) return st;
    if (H % G)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: H=%" PRId64 " is not a multiple of G=%" PRId64,
                          fn, H, G);
    seqk__lin P = {0};
    P.B = B, P.T = T, P.H = H, P.Hqk = G, P.K = K, P.V = V, P.N = N > 0 ? N : B;
    P.chunk = seqk__lin_chunk(ctx->backend, SEQK_CHUNKED_LINEAR_STATE, chunk, K, V);
    P.flags = SEQK__LIN_NORMALIZE; /* the wider state */
    /* Mamba2's dt, d(log a), d(v_scale) and its skip's dy . x at the start
     * (ssm/mamba2.c) */
    const size_t m2 = 4 * seqk__align_up(fbytes(B * T, H), 256);
#if SEQK__HAVE_CUDA
    if (ctx->backend == SEQK_BACKEND_CUDA) {
        *bytes = seqk__cuda_lin_backward_workspace(&P) + m2 + 256;
        return SEQK_SUCCESS;
    }
#endif
    /* the plain state's plan too: it may take the chunk-parallel walk
     * (staged arrays), which the normaliser never does */
    size_t need = seqk__lin_backward_workspace(&P, seqk__threads(ctx));
    P.flags = 0;
    const size_t plain = seqk__lin_backward_workspace(&P, seqk__threads(ctx));
    if (plain > need) need = plain;
    *bytes = need + m2 + 256;
    return SEQK_SUCCESS;
}

/* ---- dtypes (seqk.h, "Dtypes"): the workspace queries of the _ex entry points */

seqk_status seqk_linear_state_workspace_size_ex(seqk_context *ctx, seqk_dtype dtype,
                                                seqk_mode mode, int64_t B, int64_t T, int64_t H,
                                                int64_t K, int64_t V, int64_t N, int64_t chunk,
                                                size_t *bytes)
{
    static const char fn[] = "seqk_linear_state_workspace_size_ex";
    seqk_status st = seqk__dt_check(fn, dtype);
    if (!st) st = seqk_linear_state_workspace_size(ctx, mode, B, T, H, K, V, N, chunk, bytes);
    if (st) return st;
    const int64_t nk = seqk__dt_numel(B, T, H, K), nv = seqk__dt_numel(B, T, H, V);
    const int64_t n[] = {nk, nk, nv, nv};
    if ((st = seqk__dt_workspace_size(fn, dtype, n, 4, bytes))) return st;
#if SEQK__HAVE_CUDA
    if (seqk__lin_native(ctx, dtype, (int)mode, 0u)) {
        /* the native path (gpu/linear_state.cu) instead of the copies: the
         * larger of the two, as the normaliser keeps the converting path */
        seqk__lin P = {0};
        P.B = B, P.T = T, P.H = H, P.Hqk = H, P.K = K, P.V = V, P.N = N > 0 ? N : B;
        P.chunk = seqk__lin_chunk(ctx->backend, SEQK_CHUNKED_LINEAR_STATE, chunk, K, V);
        P.dtype = dtype;
        /* plus Mamba2's dt and the same slack as the fp32 query */
        const size_t native = seqk__cuda_lin_workspace(&P, (int)mode) +
                              seqk__align_up(fbytes(B * T, H), 256) + 256;
        if (native > *bytes) *bytes = native;
    }
#endif
    return SEQK_SUCCESS;
}

seqk_status seqk_linear_state_backward_workspace_size_ex(seqk_context *ctx, seqk_dtype dtype,
                                                         int64_t B, int64_t T, int64_t H,
                                                         int64_t G, int64_t K, int64_t V,
                                                         int64_t N, int64_t chunk, size_t *bytes)
{
    static const char fn[] = "seqk_linear_state_backward_workspace_size_ex";
    seqk_status st = seqk__dt_check(fn, dtype);
    if (!st) st = seqk_linear_state_backward_workspace_size(ctx, B, T, H, G, K, V, N, chunk,
                                                            bytes);
    if (st) return st;
    const int64_t nk = seqk__dt_numel(B, T, G, K), nv = seqk__dt_numel(B, T, H, V);
    const int64_t n[] = {nk, nk, nk, nk, nv, nv, nv};
    if ((st = seqk__dt_workspace_size(fn, dtype, n, 7, bytes))) return st;
#if SEQK__HAVE_CUDA
    if (seqk__lin_native(ctx, dtype, SEQK_MODE_PARALLEL, 0u)) {
        /* the native backward (gpu/linear_state_backward.cu) instead of the
         * copies: the larger of the two, as the normaliser keeps the
         * converting path */
        seqk__lin P = {0};
        P.B = B, P.T = T, P.H = H, P.Hqk = G, P.K = K, P.V = V, P.N = N > 0 ? N : B;
        P.chunk = seqk__lin_chunk(ctx->backend, SEQK_CHUNKED_LINEAR_STATE, chunk, K, V);
        P.dtype = dtype;
        /* plus Mamba2's four [B, T, H] arrays and the same slack as the fp32 query */
        const size_t native = seqk__cuda_lin_backward_workspace(&P) +
                              4 * seqk__align_up(fbytes(B * T, H), 256) + 256;
        if (native > *bytes) *bytes = native;
    }
#endif
    return SEQK_SUCCESS;
}
