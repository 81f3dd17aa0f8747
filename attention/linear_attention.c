/* attention/linear_attention.c -- linear attention (DESIGN 3.1, a_t = 1):
 * fills the linear-state engine's problem; both modes run in scan/. */
#include "../scan/linear_state.h"

#include "../core/dtype.h"

/* The forward in fp32, or natively in a reduced dtype (seqk__lin_native):
 * q, k, v, o hold elements of dtype. */
static seqk_status linear_attention_run(seqk_context *ctx, seqk_dtype dtype, seqk_mode mode,
                                        int64_t B, int64_t T, int64_t H, int64_t K, int64_t V,
                                        float scale, unsigned flags, const void *q, const void *k,
                                        const void *v, void *o, const float *state_in,
                                        float *state_out, const float *z_in, float *z_out,
                                        const int32_t *cu_seqlens, int64_t N, int64_t chunk)
{
    static const char fn[] = "seqk_linear_attention";
    const unsigned known = SEQK_LINATTN_NORMALIZE | SEQK_LINATTN_ELU1;
    const seqk_status st = seqk__check_flags(fn, flags, known);
    if (st) return st;
    if (!(flags & SEQK_LINATTN_NORMALIZE) && (z_in || z_out))
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                          "%s: z_in=%p, z_out=%p given without SEQK_LINATTN_NORMALIZE", fn,
                          (const void *)z_in, (void *)z_out);
    seqk__lin P = {0};
    P.B = B, P.T = T, P.H = H, P.Hqk = H, P.K = K, P.V = V, P.N = N, P.chunk = chunk;
    P.scale = scale;
    P.flags = ((flags & SEQK_LINATTN_NORMALIZE) ? SEQK__LIN_NORMALIZE : 0u) |
              ((flags & SEQK_LINATTN_ELU1) ? SEQK__LIN_ELU1 : 0u);
    P.dtype = dtype;
    P.q = (const float *)q, P.k = (const float *)k, P.v = (const float *)v, P.o = (float *)o;
    P.s_in = state_in, P.s_out = state_out, P.z_in = z_in, P.z_out = z_out;
    return seqk__lin_run(fn, ctx, (int)mode, &P, cu_seqlens);
}

/* The backward in fp32, or natively in a reduced dtype (seqk__lin_native):
 * q, k, v, dout, dq, dk, dv hold elements of dtype. */
static seqk_status linear_attention_backward_run(seqk_context *ctx, seqk_dtype dtype, int64_t B,
                                                 int64_t T, int64_t H, int64_t K, int64_t V,
                                                 float scale, unsigned flags, const void *q,
                                                 const void *k, const void *v, const void *dout,
                                                 const float *state_in, const float *z_in,
                                                 const float *dstate_out, const float *dz_out,
                                                 void *dq, void *dk, void *dv, float *dstate_in,
                                                 float *dz_in, const int32_t *cu_seqlens,
                                                 int64_t N, int64_t chunk)
{
    static const char fn[] = "seqk_linear_attention_backward";
    const unsigned known = SEQK_LINATTN_NORMALIZE | SEQK_LINATTN_ELU1;
    const seqk_status st = seqk__check_flags(fn, flags, known);
    if (st) return st;
    if (!(flags & SEQK_LINATTN_NORMALIZE) && (z_in || dz_out || dz_in))
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                          "%s: z_in=%p, dz_out=%p, dz_in=%p given without SEQK_LINATTN_NORMALIZE",
                          fn, (const void *)z_in, (const void *)dz_out, (void *)dz_in);
    seqk__lin P = {0};
    P.B = B, P.T = T, P.H = H, P.Hqk = H, P.K = K, P.V = V, P.N = N, P.chunk = chunk;
    P.scale = scale;
    P.flags = ((flags & SEQK_LINATTN_NORMALIZE) ? SEQK__LIN_NORMALIZE : 0u) |
              ((flags & SEQK_LINATTN_ELU1) ? SEQK__LIN_ELU1 : 0u);
    P.dtype = dtype;
    P.q = (const float *)q, P.k = (const float *)k, P.v = (const float *)v;
    P.s_in = state_in, P.z_in = z_in;
    seqk__lin_grad Gr = {0};
    Gr.dout = (const float *)dout, Gr.ds_out = dstate_out, Gr.dz_out = dz_out;
    Gr.dq = (float *)dq, Gr.dk = (float *)dk, Gr.dv = (float *)dv;
    Gr.ds_in = dstate_in, Gr.dz_in = dz_in;
    return seqk__lin_run_backward(fn, ctx, &P, &Gr, cu_seqlens);
}

/* ---- dtypes (seqk.h, "Dtypes"): q, k, v, o and their gradients ------------ */

seqk_status seqk_linear_attention_ex(seqk_context *ctx, seqk_dtype dtype, seqk_mode mode,
                                     int64_t B, int64_t T, int64_t H, int64_t K, int64_t V,
                                     float scale, unsigned flags, const void *q, const void *k,
                                     const void *v, void *o, const float *state_in,
                                     float *state_out, const float *z_in, float *z_out,
                                     const int32_t *cu_seqlens, int64_t N, int64_t chunk)
{
    const unsigned eflags = (flags & SEQK_LINATTN_NORMALIZE) ? SEQK__LIN_NORMALIZE : 0u;
    if (dtype == SEQK_DTYPE_F32 || seqk__lin_native(ctx, dtype, (int)mode, eflags))
        return linear_attention_run(ctx, dtype, mode, B, T, H, K, V, scale, flags, q, k, v, o,
                                    state_in, state_out, z_in, z_out, cu_seqlens, N, chunk);
    const int64_t nk = seqk__dt_numel(B, T, H, K), nv = seqk__dt_numel(B, T, H, V);
    seqk__dt_tensor t[] = {{"q", q, nk, SEQK__DT_IN, 0, NULL},
                           {"k", k, nk, SEQK__DT_IN, 0, NULL},
                           {"v", v, nv, SEQK__DT_IN, 0, NULL},
                           {"o", o, nv, SEQK__DT_OUT, 0, NULL}};
    size_t ws = 0;
    const seqk_status qs = seqk_linear_state_workspace_size(ctx, mode, B, T, H, K, V,
                                                            cu_seqlens ? N : 0, chunk, &ws);
    seqk__dt_call c;
    seqk_status st = seqk__dt_begin(&c, "seqk_linear_attention_ex", ctx, dtype, t, 4,
                                    seqk__dt_ws(qs, ws));
    if (st) return st;
    st = linear_attention_run(ctx, SEQK_DTYPE_F32, mode, B, T, H, K, V, scale, flags, t[0].f,
                              t[1].f, t[2].f, t[3].f, state_in, state_out, z_in, z_out,
                              cu_seqlens, N, chunk);
    return seqk__dt_end(&c, st);
}

seqk_status seqk_linear_attention(seqk_context *ctx, seqk_mode mode, int64_t B, int64_t T,
                                  int64_t H, int64_t K, int64_t V, float scale, unsigned flags,
                                  const float *q, const float *k, const float *v, float *o,
                                  const float *state_in, float *state_out, const float *z_in,
                                  float *z_out, const int32_t *cu_seqlens, int64_t N,
                                  int64_t chunk)
{
    return seqk_linear_attention_ex(ctx, SEQK_DTYPE_F32, mode, B, T, H, K, V, scale, flags, q, k,
                                    v, o, state_in, state_out, z_in, z_out, cu_seqlens, N, chunk);
}

seqk_status seqk_linear_attention_backward_ex(
    seqk_context *ctx, seqk_dtype dtype, int64_t B, int64_t T, int64_t H, int64_t K, int64_t V,
    float scale, unsigned flags, const void *q, const void *k, const void *v, const void *dout,
    const float *state_in, const float *z_in, const float *dstate_out, const float *dz_out,
    void *dq, void *dk, void *dv, float *dstate_in, float *dz_in, const int32_t *cu_seqlens,
    int64_t N, int64_t chunk)
{
    const unsigned eflags = (flags & SEQK_LINATTN_NORMALIZE) ? SEQK__LIN_NORMALIZE : 0u;
    if (dtype == SEQK_DTYPE_F32 || seqk__lin_native(ctx, dtype, SEQK_MODE_PARALLEL, eflags))
        return linear_attention_backward_run(ctx, dtype, B, T, H, K, V, scale, flags, q, k, v,
                                             dout, state_in, z_in, dstate_out, dz_out, dq, dk, dv,
                                             dstate_in, dz_in, cu_seqlens, N, chunk);
    const int64_t nk = seqk__dt_numel(B, T, H, K), nv = seqk__dt_numel(B, T, H, V);
    seqk__dt_tensor t[] = {{"q", q, nk, SEQK__DT_IN, 0, NULL},
                           {"k", k, nk, SEQK__DT_IN, 0, NULL},
                           {"v", v, nv, SEQK__DT_IN, 0, NULL},
                           {"dout", dout, nv, SEQK__DT_IN, 0, NULL},
                           {"dq", dq, nk, SEQK__DT_OUT, 0, NULL},
                           {"dk", dk, nk, SEQK__DT_OUT, 0, NULL},
                           {"dv", dv, nv, SEQK__DT_OUT, 0, NULL}};
    size_t ws = 0;
    const seqk_status qs = seqk_linear_state_backward_workspace_size(
        ctx, B, T, H, H, K, V, cu_seqlens ? N : 0, chunk, &ws);
    seqk__dt_call c;
    seqk_status st = seqk__dt_begin(&c, "seqk_linear_attention_backward_ex", ctx, dtype, t, 7,
                                    seqk__dt_ws(qs, ws));
    if (st) return st;
    st = linear_attention_backward_run(ctx, SEQK_DTYPE_F32, B, T, H, K, V, scale, flags, t[0].f,
                                       t[1].f, t[2].f, t[3].f, state_in, z_in, dstate_out, dz_out,
                                       t[4].f, t[5].f, t[6].f, dstate_in, dz_in, cu_seqlens, N,
                                       chunk);
    return seqk__dt_end(&c, st);
}

seqk_status seqk_linear_attention_backward(
    seqk_context *ctx, int64_t B, int64_t T, int64_t H, int64_t K, int64_t V, float scale,
    unsigned flags, const float *q, const float *k, const float *v, const float *dout,
    const float *state_in, const float *z_in, const float *dstate_out, const float *dz_out,
    float *dq, float *dk, float *dv, float *dstate_in, float *dz_in,
    const int32_t *cu_seqlens, int64_t N, int64_t chunk)
{
    return seqk_linear_attention_backward_ex(ctx, SEQK_DTYPE_F32, B, T, H, K, V, scale, flags, q,
                                             k, v, dout, state_in, z_in, dstate_out, dz_out, dq,
                                             dk, dv, dstate_in, dz_in, cu_seqlens, N, chunk);
}
