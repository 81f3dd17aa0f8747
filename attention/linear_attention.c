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
