/* attention/linear_attention.c -- linear attention (DESIGN 3.1, a_t = 1):
 * fills the linear-state engine's problem; both modes run in scan/. */
#include "../scan/linear_state.h"

seqk_status seqk_linear_attention(seqk_context *ctx, seqk_mode mode, int64_t B, int64_t T,
                                  int64_t H, int64_t K, int64_t V, float scale, unsigned flags,
                                  const float *q, const float *k, const float *v, float *o,
                                  const float *state_in, float *state_out, const float *z_in,
                                  float *z_out, const int32_t *cu_seqlens, int64_t N,
                                  int64_t chunk)
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
    P.q = q, P.k = k, P.v = v, P.o = o;
    P.s_in = state_in, P.s_out = state_out, P.z_in = z_in, P.z_out = z_out;
    return seqk__lin_run(fn, ctx, (int)mode, &P, cu_seqlens);
}

seqk_status seqk_linear_attention_backward(
    seqk_context *ctx, int64_t B, int64_t T, int64_t H, int64_t K, int64_t V, float scale,
    unsigned flags, const float *q, const float *k, const float *v, const float *dout,
    const float *state_in, const float *z_in, const float *dstate_out, const float *dz_out,
    float *dq, float *dk, float *dv, float *dstate_in, float *dz_in,
    const int32_t *cu_seqlens, int64_t N, int64_t chunk)
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
    P.q = q, P.k = k, P.v = v, P.s_in = state_in, P.z_in = z_in;
    seqk__lin_grad Gr = {0};
    Gr.dout = dout, Gr.ds_out = dstate_out, Gr.dz_out = dz_out;
    Gr.dq = dq, Gr.dk = dk, Gr.dv = dv, Gr.ds_in = dstate_in, Gr.dz_in = dz_in;
    return seqk__lin_run_backward(fn, ctx, &P, &Gr, cu_seqlens);
}
