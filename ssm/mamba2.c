/* ssm/mamba2.c -- the Mamba2 (SSD) entry point: maps x, dt, A, B, C, D onto
 * gated retention (DESIGN 3.1) with q = C, k = B (groups as shared q/k heads),
 * v = dt x (v_scale), g = dt A, scale 1, then adds the skip D x. */
#include "../core/vmath.h"
#include "../scan/linear_state.h"

#include "../gpu/gpu.h"

seqk_status seqk_mamba2(seqk_context *ctx, seqk_mode mode, int64_t B, int64_t T, int64_t H,
                        int64_t Pd, int64_t G, int64_t Nst, unsigned flags, const float *x,
                        const float *dt, const float *A, const float *Bm, const float *Cm,
                        const float *D, const float *dt_bias, float *y, const float *state_in,
                        float *state_out, const int32_t *cu_seqlens, int64_t N, int64_t chunk)
{
    static const char fn[] = "seqk_mamba2";
    seqk_status st = seqk__lin_check_sizes(fn, ctx, (int)mode, B, T, H, Nst, Pd, N,
                                           cu_seqlens != NULL, chunk);
    if (st) return st;
    if ((st = seqk__check_flags(fn, flags, SEQK_MAMBA2_DT_SOFTPLUS))) return st;
    if ((st = seqk__check_range(fn, "G", G, 1, H))) return st;
    if (H % G)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: H=%lld is not a multiple of G=%lld",
                          fn, (long long)H, (long long)G);
    const int64_t rows = B * T;
    if (rows > 0) {
        if ((st = seqk__check_ptr(fn, "dt", dt))) return st;
        if ((st = seqk__check_ptr(fn, "A", A))) return st;
        if ((st = seqk__check_ptr(fn, "y", y))) return st;
        if ((st = seqk__check_ptr(fn, "x", x))) return st;
        const size_t yb = (size_t)(rows * H * Pd) * sizeof(float);
        if (seqk__overlap(y, yb, dt, (size_t)(rows * H) * sizeof(float)) ||
            (D && seqk__overlap(y, yb, D, (size_t)H * sizeof(float))) ||
            seqk__overlap(y, yb, A, (size_t)H * sizeof(float)))
            return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: y=%p overlaps dt, A or D", fn,
                              (void *)y);
    }
    if ((st = seqk__check_backend_built(fn, ctx))) return st;
    const bool cuda = ctx->backend != SEQK_BACKEND_CPU;
    seqk__lin P = {0};
    P.B = B, P.T = T, P.H = H, P.Hqk = G, P.K = Nst, P.V = Pd, P.N = cu_seqlens ? N : B;
    P.chunk = seqk__lin_chunk(chunk);
    P.scale = 1.0f;
    P.q = Cm, P.k = Bm, P.v = x, P.o = y, P.s_in = state_in, P.s_out = state_out;
    P.g_head = A;
    /* dt after bias and softplus lives at the start of the workspace: reserve
     * it together with the engine's share so that nothing moves it. */
    const int threads = seqk__threads(ctx);
    P.ws_offset = seqk__align_up((size_t)rows * (size_t)H * sizeof(float), 256);
    size_t engine;
#if SEQK__HAVE_CUDA
    if (cuda) engine = seqk__cuda_lin_workspace(&P, (int)mode); /* >= what the run asks */
    else
#endif
        engine = mode == SEQK_MODE_RECURRENT ? seqk__lin_recurrent_workspace(&P, threads)
                                             : seqk__lin_chunked_workspace(&P, threads);
    float *dtp = NULL;
    if ((st = seqk__workspace(fn, ctx, P.ws_offset + engine, (void **)&dtp))) return st;
    /* dtp [B,T,H] */
#if SEQK__HAVE_CUDA
    if (cuda && rows > 0 &&
        (st = seqk__cuda_mamba2_dt(ctx, rows, H, dt, dt_bias,
                                   (flags & SEQK_MAMBA2_DT_SOFTPLUS) != 0, dtp)))
        return st;
#endif
    if (!cuda && rows > 0) {
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t h = 0; h < H; h++) {
                float d = dt[r * H + h] + (dt_bias ? dt_bias[h] : 0.0f);
                dtp[r * H + h] = (flags & SEQK_MAMBA2_DT_SOFTPLUS) ? seqk__softplus(d) : d;
            }
    }
    P.v_scale = dtp;
    P.g = dtp;
    P.chunk = chunk; /* seqk__lin_run applies the default */
    if ((st = seqk__lin_run(fn, ctx, (int)mode, &P, cu_seqlens))) return st;
#if SEQK__HAVE_CUDA
    if (cuda && D && rows > 0) return seqk__cuda_mamba2_skip(ctx, rows, H, Pd, D, x, y);
#endif
    if (!cuda && D && rows > 0) {
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t h = 0; h < H; h++)
                for (int64_t p = 0; p < Pd; p++)
                    y[(r * H + h) * Pd + p] += D[h] * x[(r * H + h) * Pd + p];
    }
    return SEQK_SUCCESS;
}
