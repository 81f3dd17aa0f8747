/* ssm/retention.c -- RetNet retention (a_t = gamma_h) and gated retention
 * (a_t = exp(g_t)), DESIGN 3.1: both fill the linear-state engine's problem
 * with their source of decay; both modes run in scan/. */
#include "../scan/linear_state.h"
#include "../core/dtype.h"

#include "../gpu/gpu.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>

seqk_status seqk_retention_default_gammas(int64_t H, float *gamma)
{
    static const char fn[] = "seqk_retention_default_gammas";
    seqk_status st = seqk__check_range(fn, "H", H, 1, 1 << 20);
    if (!st) st = seqk__check_ptr(fn, "gamma", gamma);
    if (st) return st;
    for (int64_t h = 0; h < H; h++) gamma[h] = (float)(1.0 - ldexp(1.0, (int)(-5 - h)));
    return SEQK_SUCCESS;
}

/* RetNet's log-decays: log gamma_h, from the caller's gamma (checked to lie in
 * (0, 1]) or the defaults. Backend memory on a CUDA context. */
static seqk_status log_gammas(const char *fn, seqk_context *ctx, int64_t H, const float *gamma,
                              float *out)
{
    if (!gamma) {
        for (int64_t h = 0; h < H; h++) out[h] = (float)log1p(-ldexp(1.0, (int)(-5 - h)));
        return SEQK_SUCCESS;
    }
    seqk_status st = seqk_memcpy(ctx, out, gamma, (size_t)H * sizeof(float),
                                 SEQK_COPY_BACKEND_TO_HOST);
    if (st) return st;
    if ((st = seqk__check_values(fn, "gamma", out, H, FLT_TRUE_MIN, 1.0f, "in (0, 1]")))
        return st;
    for (int64_t h = 0; h < H; h++) out[h] = logf(out[h]);
    return SEQK_SUCCESS;
}

/* Runs P (filled but for its log-decays) with RetNet's log gamma_h from gamma:
 * the forward in `mode`, or the backward with Gr when Gr is given. */
static seqk_status run_with_gammas(const char *fn, seqk_context *ctx, int mode, seqk__lin *P,
                                   const seqk__lin_grad *Gr, const float *gamma,
                                   const int32_t *cu_seqlens)
{
    seqk_status st = seqk__lin_check_sizes(fn, ctx, mode, P->B, P->T, P->H, P->K, P->V, P->N,
                                           cu_seqlens != NULL, P->chunk);
    if (st) return st;
    float *lg = malloc((size_t)P->H * sizeof(float)); /* host: log gamma_h */
    if (!lg)
        return seqk__fail(SEQK_ERROR_OUT_OF_MEMORY, "%s: cannot allocate %" PRId64 " floats", fn,
                          P->H);
    st = log_gammas(fn, ctx, P->H, gamma, lg);
    if (!st) {
        P->log_gamma = lg;
        st = Gr ? seqk__lin_run_backward(fn, ctx, P, Gr, cu_seqlens)
                : seqk__lin_run(fn, ctx, mode, P, cu_seqlens);
    }
    free(lg);
    return st;
}

/* The forward in fp32, or natively in a reduced dtype (seqk__lin_native):
 * q, k, v, o hold elements of dtype. */
static seqk_status retention_run(seqk_context *ctx, seqk_dtype dtype, seqk_mode mode, int64_t B,
                                 int64_t T, int64_t H, int64_t K, int64_t V, float scale,
                                 const float *gamma, const void *q, const void *k, const void *v,
                                 void *o, const float *state_in, float *state_out,
                                 const int32_t *cu_seqlens, int64_t N, int64_t chunk)
{
    seqk__lin P = {0};
    P.B = B, P.T = T, P.H = H, P.Hqk = H, P.K = K, P.V = V, P.N = N, P.chunk = chunk;
    P.scale = scale;
    P.dtype = dtype;
    P.q = (const float *)q, P.k = (const float *)k, P.v = (const float *)v, P.o = (float *)o;
    P.s_in = state_in, P.s_out = state_out;
    return run_with_gammas("seqk_retention", ctx, (int)mode, &P, NULL, gamma, cu_seqlens);
}

/* As retention_run. */
static seqk_status gated_retention_run(seqk_context *ctx, seqk_dtype dtype, seqk_mode mode,
                                       int64_t B, int64_t T, int64_t H, int64_t K, int64_t V,
                                       float scale, const void *q, const void *k, const void *v,
                                       const float *g, void *o, const float *state_in,
                                       float *state_out, const int32_t *cu_seqlens, int64_t N,
                                       int64_t chunk)
{
    static const char fn[] = "seqk_gated_retention";
    seqk_status st = seqk__lin_check_sizes(fn, ctx, (int)mode, B, T, H, K, V, N,
                                           cu_seqlens != NULL, chunk);
    if (st) return st;
    if (B * T > 0 && !g) return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: g is NULL", fn);
    if (ctx->backend == SEQK_BACKEND_CPU && (st = seqk__check_log_gates(fn, "g", g, B * T * H)))
        return st;
    seqk__lin P = {0};
    P.B = B, P.T = T, P.H = H, P.Hqk = H, P.K = K, P.V = V, P.N = N, P.chunk = chunk;
    P.scale = scale;
    P.dtype = dtype;
    P.q = (const float *)q, P.k = (const float *)k, P.v = (const float *)v, P.o = (float *)o;
    P.g = g, P.s_in = state_in, P.s_out = state_out;
    return seqk__lin_run(fn, ctx, (int)mode, &P, cu_seqlens);
}

/* The backwards in fp32, or natively in a reduced dtype (seqk__lin_native):
 * q, k, v, dout, dq, dk, dv hold elements of dtype. */
static seqk_status retention_backward_run(seqk_context *ctx, seqk_dtype dtype, int64_t B,
                                          int64_t T, int64_t H, int64_t K, int64_t V, float scale,
                                          const float *gamma, const void *q, const void *k,
                                          const void *v, const void *dout, const float *state_in,
                                          const float *dstate_out, void *dq, void *dk, void *dv,
                                          float *dstate_in, const int32_t *cu_seqlens, int64_t N,
                                          int64_t chunk)
{
    seqk__lin P = {0};
    P.B = B, P.T = T, P.H = H, P.Hqk = H, P.K = K, P.V = V, P.N = N, P.chunk = chunk;
    P.scale = scale;
    P.dtype = dtype;
    P.q = (const float *)q, P.k = (const float *)k, P.v = (const float *)v;
    P.s_in = state_in;
    seqk__lin_grad Gr = {0};
    Gr.dout = (const float *)dout, Gr.ds_out = dstate_out;
    Gr.dq = (float *)dq, Gr.dk = (float *)dk, Gr.dv = (float *)dv, Gr.ds_in = dstate_in;
    return run_with_gammas("seqk_retention_backward", ctx, SEQK_MODE_PARALLEL, &P, &Gr, gamma,
                           cu_seqlens);
}

static seqk_status gated_retention_backward_run(seqk_context *ctx, seqk_dtype dtype, int64_t B,
                                                int64_t T, int64_t H, int64_t K, int64_t V,
                                                float scale, const void *q, const void *k,
                                                const void *v, const float *g, const void *dout,
                                                const float *state_in, const float *dstate_out,
                                                void *dq, void *dk, void *dv, float *dg,
                                                float *dstate_in, const int32_t *cu_seqlens,
                                                int64_t N, int64_t chunk)
{
    static const char fn[] = "seqk_gated_retention_backward";
    seqk_status st = seqk__lin_check_sizes(fn, ctx, SEQK_MODE_PARALLEL, B, T, H, K, V, N,
                                           cu_seqlens != NULL, chunk);
    if (st) return st;
    if (B * T > 0 && !g) return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: g is NULL", fn);
    if (B * T > 0 && !dg) return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: dg is NULL", fn);
    if (ctx->backend == SEQK_BACKEND_CPU && (st = seqk__check_log_gates(fn, "g", g, B * T * H)))
        return st;
    seqk__lin P = {0};
    P.B = B, P.T = T, P.H = H, P.Hqk = H, P.K = K, P.V = V, P.N = N, P.chunk = chunk;
    P.scale = scale;
    P.dtype = dtype;
    P.q = (const float *)q, P.k = (const float *)k, P.v = (const float *)v;
    P.g = g, P.s_in = state_in;
    seqk__lin_grad Gr = {0};
    Gr.dout = (const float *)dout, Gr.ds_out = dstate_out;
    Gr.dq = (float *)dq, Gr.dk = (float *)dk, Gr.dv = (float *)dv;
    Gr.dlogdecay = dg, Gr.ds_in = dstate_in;
    return seqk__lin_run_backward(fn, ctx, &P, &Gr, cu_seqlens);
}

/* ---- dtypes (seqk.h, "Dtypes"): the _ex entry points ---------------------- */

seqk_status seqk_retention_ex(seqk_context *ctx, seqk_dtype dtype, seqk_mode mode, int64_t B,
                              int64_t T, int64_t H, int64_t K, int64_t V, float scale,
                              const float *gamma, const void *q, const void *k, const void *v,
                              void *o, const float *state_in, float *state_out,
                              const int32_t *cu_seqlens, int64_t N, int64_t chunk)
{
    if (dtype == SEQK_DTYPE_F32 || seqk__lin_native(ctx, dtype, (int)mode, 0u))
        return retention_run(ctx, dtype, mode, B, T, H, K, V, scale, gamma, q, k, v, o, state_in,
                             state_out, cu_seqlens, N, chunk);
    const int64_t nk = seqk__dt_numel(B, T, H, K), nv = seqk__dt_numel(B, T, H, V);
    seqk__dt_tensor t[] = {
        {"q", q, nk, SEQK__DT_IN, 0, NULL},
        {"k", k, nk, SEQK__DT_IN, 0, NULL},
        {"v", v, nv, SEQK__DT_IN, 0, NULL},
        {"o", o, nv, SEQK__DT_OUT, 0, NULL}};
    size_t ws = 0;
    const seqk_status qs =
        seqk_linear_state_workspace_size(ctx, mode, B, T, H, K, V, cu_seqlens ? N : 0, chunk, &ws);
    seqk__dt_call c;
    seqk_status st =
        seqk__dt_begin(&c, "seqk_retention_ex", ctx, dtype, t, 4, seqk__dt_ws(qs, ws));
    if (st) return st;
    st = retention_run(ctx, SEQK_DTYPE_F32, mode, B, T, H, K, V, scale, gamma, t[0].f, t[1].f,
                       t[2].f, t[3].f, state_in, state_out, cu_seqlens, N, chunk);
    return seqk__dt_end(&c, st);
}

seqk_status seqk_retention(seqk_context *ctx, seqk_mode mode, int64_t B, int64_t T, int64_t H,
                           int64_t K, int64_t V, float scale, const float *gamma, const float *q,
                           const float *k, const float *v, float *o, const float *state_in,
                           float *state_out, const int32_t *cu_seqlens, int64_t N, int64_t chunk)
{
    return seqk_retention_ex(ctx, SEQK_DTYPE_F32, mode, B, T, H, K, V, scale, gamma, q, k, v, o,
                             state_in, state_out, cu_seqlens, N, chunk);
}

seqk_status seqk_gated_retention_ex(seqk_context *ctx, seqk_dtype dtype, seqk_mode mode, int64_t B,
                                    int64_t T, int64_t H, int64_t K, int64_t V, float scale,
                                    const void *q, const void *k, const void *v, const float *g,
                                    void *o, const float *state_in, float *state_out,
                                    const int32_t *cu_seqlens, int64_t N, int64_t chunk)
{
    if (dtype == SEQK_DTYPE_F32 || seqk__lin_native(ctx, dtype, (int)mode, 0u))
        return gated_retention_run(ctx, dtype, mode, B, T, H, K, V, scale, q, k, v, g, o,
                                   state_in, state_out, cu_seqlens, N, chunk);
    const int64_t nk = seqk__dt_numel(B, T, H, K), nv = seqk__dt_numel(B, T, H, V);
    seqk__dt_tensor t[] = {
        {"q", q, nk, SEQK__DT_IN, 0, NULL},
        {"k", k, nk, SEQK__DT_IN, 0, NULL},
        {"v", v, nv, SEQK__DT_IN, 0, NULL},
        {"o", o, nv, SEQK__DT_OUT, 0, NULL}};
    size_t ws = 0;
    const seqk_status qs =
        seqk_linear_state_workspace_size(ctx, mode, B, T, H, K, V, cu_seqlens ? N : 0, chunk, &ws);
    seqk__dt_call c;
    seqk_status st = seqk__dt_begin(&c, "seqk_gated_retention_ex", ctx, dtype, t, 4,
                                    seqk__dt_ws(qs, ws));
    if (st) return st;
    st = gated_retention_run(ctx, SEQK_DTYPE_F32, mode, B, T, H, K, V, scale, t[0].f, t[1].f,
                             t[2].f, g, t[3].f, state_in, state_out, cu_seqlens, N, chunk);
    return seqk__dt_end(&c, st);
}

seqk_status seqk_gated_retention(seqk_context *ctx, seqk_mode mode, int64_t B, int64_t T,
                                 int64_t H, int64_t K, int64_t V, float scale, const float *q,
                                 const float *k, const float *v, const float *g, float *o,
                                 const float *state_in, float *state_out,
                                 const int32_t *cu_seqlens, int64_t N, int64_t chunk)
{
    return seqk_gated_retention_ex(ctx, SEQK_DTYPE_F32, mode, B, T, H, K, V, scale, q, k, v, g, o,
                                   state_in, state_out, cu_seqlens, N, chunk);
}

seqk_status seqk_retention_backward_ex(seqk_context *ctx, seqk_dtype dtype, int64_t B, int64_t T,
                                       int64_t H, int64_t K, int64_t V, float scale,
                                       const float *gamma, const void *q, const void *k,
                                       const void *v, const void *dout, const float *state_in,
                                       const float *dstate_out, void *dq, void *dk, void *dv,
                                       float *dstate_in, const int32_t *cu_seqlens, int64_t N,
                                       int64_t chunk)
{
    if (dtype == SEQK_DTYPE_F32 || seqk__lin_native(ctx, dtype, SEQK_MODE_PARALLEL, 0u))
        return retention_backward_run(ctx, dtype, B, T, H, K, V, scale, gamma, q, k, v, dout,
                                      state_in, dstate_out, dq, dk, dv, dstate_in, cu_seqlens, N,
                                      chunk);
    const int64_t nk = seqk__dt_numel(B, T, H, K), nv = seqk__dt_numel(B, T, H, V);
    seqk__dt_tensor t[] = {
        {"q", q, nk, SEQK__DT_IN, 0, NULL},
        {"k", k, nk, SEQK__DT_IN, 0, NULL},
        {"v", v, nv, SEQK__DT_IN, 0, NULL},
        {"dout", dout, nv, SEQK__DT_IN, 0, NULL},
        {"dq", dq, nk, SEQK__DT_OUT, 0, NULL},
        {"dk", dk, nk, SEQK__DT_OUT, 0, NULL},
        {"dv", dv, nv, SEQK__DT_OUT, 0, NULL}};
    size_t ws = 0;
    const seqk_status qs =
        seqk_linear_state_backward_workspace_size(ctx, B, T, H, H, K, V, cu_seqlens ? N : 0, chunk,
                                                  &ws);
    seqk__dt_call c;
    seqk_status st = seqk__dt_begin(&c, "seqk_retention_backward_ex", ctx, dtype, t, 7,
                                    seqk__dt_ws(qs, ws));
    if (st) return st;
    st = retention_backward_run(ctx, SEQK_DTYPE_F32, B, T, H, K, V, scale, gamma, t[0].f, t[1].f,
                                t[2].f, t[3].f, state_in, dstate_out, t[4].f, t[5].f, t[6].f,
                                dstate_in, cu_seqlens, N, chunk);
    return seqk__dt_end(&c, st);
}

seqk_status seqk_retention_backward(seqk_context *ctx, int64_t B, int64_t T, int64_t H, int64_t K,
                                    int64_t V, float scale, const float *gamma, const float *q,
                                    const float *k, const float *v, const float *dout,
                                    const float *state_in, const float *dstate_out, float *dq,
                                    float *dk, float *dv, float *dstate_in,
                                    const int32_t *cu_seqlens, int64_t N, int64_t chunk)
{
    return seqk_retention_backward_ex(ctx, SEQK_DTYPE_F32, B, T, H, K, V, scale, gamma, q, k, v,
                                      dout, state_in, dstate_out, dq, dk, dv, dstate_in,
                                      cu_seqlens, N, chunk);
}

seqk_status seqk_gated_retention_backward_ex(seqk_context *ctx, seqk_dtype dtype, int64_t B,
                                             int64_t T, int64_t H, int64_t K, int64_t V,
                                             float scale, const void *q, const void *k,
                                             const void *v, const float *g, const void *dout,
                                             const float *state_in, const float *dstate_out,
                                             void *dq, void *dk, void *dv, float *dg,
                                             float *dstate_in, const int32_t *cu_seqlens,
                                             int64_t N, int64_t chunk)
{
    if (dtype == SEQK_DTYPE_F32 || seqk__lin_native(ctx, dtype, SEQK_MODE_PARALLEL, 0u))
        return gated_retention_backward_run(ctx, dtype, B, T, H, K, V, scale, q, k, v, g, dout,
                                            state_in, dstate_out, dq, dk, dv, dg, dstate_in,
                                            cu_seqlens, N, chunk);
    const int64_t nk = seqk__dt_numel(B, T, H, K), nv = seqk__dt_numel(B, T, H, V);
    seqk__dt_tensor t[] = {
        {"q", q, nk, SEQK__DT_IN, 0, NULL},
        {"k", k, nk, SEQK__DT_IN, 0, NULL},
        {"v", v, nv, SEQK__DT_IN, 0, NULL},
        {"dout", dout, nv, SEQK__DT_IN, 0, NULL},
        {"dq", dq, nk, SEQK__DT_OUT, 0, NULL},
        {"dk", dk, nk, SEQK__DT_OUT, 0, NULL},
        {"dv", dv, nv, SEQK__DT_OUT, 0, NULL}};
    size_t ws = 0;
    const seqk_status qs =
        seqk_linear_state_backward_workspace_size(ctx, B, T, H, H, K, V, cu_seqlens ? N : 0, chunk,
                                                  &ws);
    seqk__dt_call c;
    seqk_status st = seqk__dt_begin(&c, "seqk_gated_retention_backward_ex", ctx, dtype, t, 7,
                                    seqk__dt_ws(qs, ws));
    if (st) return st;
    st = gated_retention_backward_run(ctx, SEQK_DTYPE_F32, B, T, H, K, V, scale, t[0].f, t[1].f,
                                      t[2].f, g, t[3].f, state_in, dstate_out, t[4].f, t[5].f,
                                      t[6].f, dg, dstate_in, cu_seqlens, N, chunk);
    return seqk__dt_end(&c, st);
}

seqk_status seqk_gated_retention_backward(seqk_context *ctx, int64_t B, int64_t T, int64_t H,
                                          int64_t K, int64_t V, float scale, const float *q,
                                          const float *k, const float *v, const float *g,
                                          const float *dout, const float *state_in,
                                          const float *dstate_out, float *dq, float *dk, float *dv,
                                          float *dg, float *dstate_in, const int32_t *cu_seqlens,
                                          int64_t N, int64_t chunk)
{
    return seqk_gated_retention_backward_ex(ctx, SEQK_DTYPE_F32, B, T, H, K, V, scale, q, k, v, g,
                                            dout, state_in, dstate_out, dq, dk, dv, dg, dstate_in,
                                            cu_seqlens, N, chunk);
}
