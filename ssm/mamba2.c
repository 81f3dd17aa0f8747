/* ssm/mamba2.c -- the Mamba2 (SSD) entry point: maps x, dt, A, B, C, D onto
 * gated retention (DESIGN 3.1) with q = C, k = B (groups as shared q/k heads),
 * v = dt x (v_scale), g = dt A, scale 1, then adds the skip D x. */
#include "../core/vmath.h"
#include "../core/dtype.h"
#include "../scan/linear_state.h"

#include "../gpu/gpu.h"

/* The checks the forward and the backward share: the sizes named as Mamba2
 * names them (P, Nst) before the engine's checks (which call them V and K),
 * flags and groups. */
static seqk_status mamba2_check(const char *fn, seqk_context *ctx, int mode, int64_t B, int64_t T,
                                int64_t H, int64_t Pd, int64_t G, int64_t Nst, unsigned flags,
                                int64_t N, bool varlen, int64_t chunk)
{
    seqk_status st = seqk__check_ctx(fn, ctx);
    if (!st) st = seqk__check_min(fn, "P", Pd, 1);
    if (!st) st = seqk__check_min(fn, "Nst", Nst, 1);
    if (st) return st;
    if (Nst > SEQK__LIN_MAX_K)
        return seqk__fail(SEQK_ERROR_UNSUPPORTED, "%s: Nst=%lld, at most %d is supported", fn,
                          (long long)Nst, SEQK__LIN_MAX_K);
    if ((st = seqk__lin_check_sizes(fn, ctx, mode, B, T, H, Nst, Pd, N, varlen, chunk))) return st;
    if ((st = seqk__check_flags(fn, flags, SEQK_MAMBA2_DT_SOFTPLUS))) return st;
    if ((st = seqk__check_range(fn, "G", G, 1, H))) return st;
    if (H % G)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: H=%lld is not a multiple of G=%lld",
                          fn, (long long)H, (long long)G);
    return SEQK_SUCCESS;
}

/* The gates' values (seqk.h, "Gates"), on a CPU context, when there are tokens. */
static seqk_status mamba2_check_gates(const char *fn, const seqk_context *ctx, int64_t rows,
                                      int64_t H, unsigned flags, const float *dt,
                                      const float *dt_bias, const float *A)
{
    if (ctx->backend != SEQK_BACKEND_CPU || rows == 0) return SEQK_SUCCESS;
    (void)flags;
    return seqk__check_dt_gates(fn, dt, dt_bias, A, H, rows, H);
}

/* dtp[r,h] = softplus(dt[r,h] + dt_bias[h]) (or without softplus) on ctx's
 * backend; dt_bias may be NULL. */
static seqk_status mamba2_dt(seqk_context *ctx, int threads, int64_t rows, int64_t H,
                             const float *dt, const float *dt_bias, bool softplus, float *dtp)
{
    if (rows == 0) return SEQK_SUCCESS;
#if SEQK__HAVE_CUDA
    if (ctx->backend != SEQK_BACKEND_CPU)
        return seqk__cuda_mamba2_dt(ctx, rows, H, dt, dt_bias, softplus, dtp);
#else
    (void)ctx;
#endif
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t r = 0; r < rows; r++)
        for (int64_t h = 0; h < H; h++) {
            float d = dt[r * H + h] + (dt_bias ? dt_bias[h] : 0.0f);
            dtp[r * H + h] = softplus ? seqk__softplus(d) : d;
        }
    return SEQK_SUCCESS;
}

/* The forward in fp32, or natively in a reduced dtype (seqk__lin_native: the
 * engine adds the skip before rounding y): x, Bm, Cm, y hold elements of
 * dtype. */
static seqk_status mamba2_run(seqk_context *ctx, seqk_dtype dtype, seqk_mode mode, int64_t B,
                              int64_t T, int64_t H, int64_t Pd, int64_t G, int64_t Nst,
                              unsigned flags, const void *x, const float *dt, const float *A,
                              const void *Bm, const void *Cm, const float *D,
                              const float *dt_bias, void *y, const float *state_in,
                              float *state_out, const int32_t *cu_seqlens, int64_t N,
                              int64_t chunk)
{
    static const char fn[] = "seqk_mamba2";
    seqk_status st = mamba2_check(fn, ctx, (int)mode, B, T, H, Pd, G, Nst, flags, N,
                                  cu_seqlens != NULL, chunk);
    if (st) return st;
    const int64_t rows = B * T;
    if (rows > 0) {
        if ((st = seqk__check_ptr(fn, "dt", dt))) return st;
        if ((st = seqk__check_ptr(fn, "A", A))) return st;
        if ((st = seqk__check_ptr(fn, "y", y))) return st;
        if ((st = seqk__check_ptr(fn, "x", x))) return st;
        const size_t yb = (size_t)(rows * H * Pd) * seqk_dtype_size(dtype);
        if (seqk__overlap(y, yb, dt, (size_t)(rows * H) * sizeof(float)) ||
            (D && seqk__overlap(y, yb, D, (size_t)H * sizeof(float))) ||
            seqk__overlap(y, yb, A, (size_t)H * sizeof(float)))
            return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: y=%p overlaps dt, A or D", fn,
                              (void *)y);
    }
    if ((st = seqk__check_backend_built(fn, ctx))) return st;
    if ((st = mamba2_check_gates(fn, ctx, rows, H, flags, dt, dt_bias, A))) return st;
    const bool cuda = ctx->backend != SEQK_BACKEND_CPU;
    seqk__lin P = {0};
    P.B = B, P.T = T, P.H = H, P.Hqk = G, P.K = Nst, P.V = Pd, P.N = cu_seqlens ? N : B;
    P.chunk = seqk__lin_chunk(ctx->backend, SEQK_CHUNKED_LINEAR_STATE, chunk, Nst, Pd);
    P.scale = 1.0f;
    P.dtype = dtype;
    P.q = (const float *)Cm, P.k = (const float *)Bm, P.v = (const float *)x, P.o = (float *)y;
    P.s_in = state_in, P.s_out = state_out;
    P.g_head = A;
    const bool native = dtype != SEQK_DTYPE_F32;
    if (native) P.skip = D;
    /* dt after bias and softplus lives at the start of the workspace: reserve
     * it together with the engine's share so that nothing moves it. */
    const int threads = seqk__threads(ctx);
    P.ws_offset = seqk__align_up((size_t)rows * (size_t)H * sizeof(float), 256);
    size_t engine;
#if SEQK__HAVE_CUDA
    if (cuda) engine = seqk__cuda_lin_workspace(&P, (int)mode); /* >= what the run asks */
    else
#endif
    {
        /* the public query's bound: P has no cu_seqlens yet (the engine reads
         * them later), and the engine's plan without them counts N whole
         * sequences of T tokens, more than the query promised (a fuzz
         * finding: B=1 T=17 N=2 chunk=2, 3 threads: 4024 bytes asked against
         * the query's 3900). The query covers what the engine asks once it
         * has them. */
        size_t bound = 0;
        if ((st = seqk_linear_state_workspace_size(ctx, mode, B, T, H, Nst, Pd,
                                                   cu_seqlens ? N : 0, chunk, &bound)))
            return st;
        engine = bound - P.ws_offset;
    }
    float *dtp = NULL;
    if ((st = seqk__workspace(fn, ctx, P.ws_offset + engine, (void **)&dtp))) return st;
    /* dtp [B,T,H] */
    if ((st = mamba2_dt(ctx, threads, rows, H, dt, dt_bias,
                        (flags & SEQK_MAMBA2_DT_SOFTPLUS) != 0, dtp)))
        return st;
    P.v_scale = dtp;
    P.g = dtp;
    P.chunk = chunk; /* seqk__lin_run applies the default */
    if ((st = seqk__lin_run(fn, ctx, (int)mode, &P, cu_seqlens))) return st;
    if (native) return SEQK_SUCCESS; /* the engine added the skip */
#if SEQK__HAVE_CUDA
    if (cuda && D && rows > 0) return seqk__cuda_mamba2_skip(ctx, rows, H, Pd, D, P.v, P.o);
#endif
    if (!cuda && D && rows > 0) {
        const float *xf = P.v;
        float *yf = P.o;
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t h = 0; h < H; h++)
                for (int64_t p = 0; p < Pd; p++)
                    yf[(r * H + h) * Pd + p] += D[h] * xf[(r * H + h) * Pd + p];
    }
    return SEQK_SUCCESS;
}

/* The backward around the engine on the CPU (see seqk__cuda_mamba2_backward_epilogue
 * in gpu/gpu.h for the math): ddt, dA, ddt_bias, dD. The skip's share of dx
 * (D_h dy) and dD's per-token terms dy_t . x_t (dskip) come from the engine
 * (seqk__lin_grad's skip, dskip_tok). Sums over tokens run per head in
 * token order, in double. */
static void mamba2_epilogue_cpu(int threads, int64_t rows, int64_t H, bool softplus,
                                const float *dt, const float *dt_bias, const float *A,
                                const float *dtp, const float *dld, const float *dvs,
                                const float *dskip, float *ddt, float *dA, float *dD,
                                float *ddt_bias)
{
#pragma omp parallel num_threads(threads)
    {
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t h = 0; h < H; h++) {
                const int64_t i = r * H + h;
                float d = dld[i] * A[h] + dvs[i];
                if (softplus) {
                    const float u = dt[i] + (dt_bias ? dt_bias[h] : 0.0f);
                    d *= 1.0f / (1.0f + expf(-u));
                }
                ddt[i] = d;
            }
#pragma omp for schedule(static)
        for (int64_t h = 0; h < H; h++) {
            double a = 0.0, b = 0.0, s = 0.0;
            for (int64_t r = 0; r < rows; r++) {
                const int64_t i = r * H + h;
                a += (double)dld[i] * dtp[i];
                b += ddt[i];
                if (dD) s += dskip[i];
            }
            dA[h] = (float)a;
            if (ddt_bias) ddt_bias[h] = (float)b;
            if (dD) dD[h] = (float)s;
        }
    }
}

/* The backward in fp32, or natively in a reduced dtype (seqk__lin_native:
 * the engine adds D dy to dx before rounding it and hands back dy . x per
 * token for dD): x, Bm, Cm, dy, dx, dBm, dCm hold elements of dtype. */
static seqk_status mamba2_backward_run(seqk_context *ctx, seqk_dtype dtype, int64_t B, int64_t T,
                                       int64_t H, int64_t Pd, int64_t G, int64_t Nst,
                                       unsigned flags, const void *x, const float *dt,
                                       const float *A, const void *Bm, const void *Cm,
                                       const float *D, const float *dt_bias,
                                       const float *state_in, const void *dy,
                                       const float *dstate_out, void *dx, float *ddt, float *dA,
                                       void *dBm, void *dCm, float *dD, float *ddt_bias,
                                       float *dstate_in, const int32_t *cu_seqlens, int64_t N,
                                       int64_t chunk)
{
    static const char fn[] = "seqk_mamba2_backward";
    seqk_status st = mamba2_check(fn, ctx, SEQK_MODE_PARALLEL, B, T, H, Pd, G, Nst, flags, N,
                                  cu_seqlens != NULL, chunk);
    if (st) return st;
    if (dD && !D)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: dD=%p given but D is NULL", fn,
                          (void *)dD);
    const int64_t rows = B * T;
    if (rows > 0) {
        const char *names[5] = {"dt", "A", "ddt", "dA", "x"};
        const void *ptrs[5] = {dt, A, ddt, dA, x};
        for (int i = 0; i < 5; i++)
            if ((st = seqk__check_ptr(fn, names[i], ptrs[i]))) return st;
    }
    const size_t es = seqk_dtype_size(dtype); /* x, Bm, Cm, dy and their gradients */
    const size_t tb = (size_t)(rows * H) * sizeof(float), hb = (size_t)H * sizeof(float),
                 xb = (size_t)(rows * H * Pd) * es, bcb = (size_t)(rows * G * Nst) * es,
                 sb = (size_t)((cu_seqlens ? N : B) * H * Nst * Pd) * sizeof(float);
    const seqk__arg ins[10] = {{"x", x, xb},         {"dt", dt, tb},
                               {"A", A, hb},         {"Bm", Bm, bcb},
                               {"Cm", Cm, bcb},      {"D", D, hb},
                               {"dt_bias", dt_bias, hb}, {"state_in", state_in, sb},
                               {"dy", dy, xb},       {"dstate_out", dstate_out, sb}};
    const seqk__arg outs[8] = {{"dx", dx, xb},   {"ddt", ddt, tb},
                               {"dA", dA, hb},   {"dBm", dBm, bcb},
                               {"dCm", dCm, bcb}, {"dD", dD, hb},
                               {"ddt_bias", ddt_bias, hb}, {"dstate_in", dstate_in, sb}};
    if ((st = seqk__check_disjoint(fn, outs, 8, ins, 10))) return st;
    if ((st = seqk__check_backend_built(fn, ctx))) return st;
    if ((st = mamba2_check_gates(fn, ctx, rows, H, flags, dt, dt_bias, A))) return st;
#if SEQK__HAVE_CUDA
    const bool cuda = ctx->backend != SEQK_BACKEND_CPU;
#endif
    const bool native = dtype != SEQK_DTYPE_F32;
    const bool softplus = (flags & SEQK_MAMBA2_DT_SOFTPLUS) != 0;
    seqk__lin P = {0};
    P.B = B, P.T = T, P.H = H, P.Hqk = G, P.K = Nst, P.V = Pd, P.N = cu_seqlens ? N : B;
    P.chunk = seqk__lin_chunk(ctx->backend, SEQK_CHUNKED_LINEAR_STATE, chunk, Nst, Pd);
    P.scale = 1.0f;
    P.dtype = dtype;
    P.q = (const float *)Cm, P.k = (const float *)Bm, P.v = (const float *)x;
    P.s_in = state_in;
    P.g_head = A;
    /* dt after bias and softplus, d(log a) and d(v_scale) at the start of the
     * workspace, reserved with the engine's share so that nothing moves them */
    const size_t part = seqk__align_up(tb, 256);
    P.ws_offset = 4 * part;
    const int threads = seqk__threads(ctx);
    size_t engine;
#if SEQK__HAVE_CUDA
    if (cuda) engine = seqk__cuda_lin_backward_workspace(&P);
    else
#endif
        engine = seqk__lin_backward_workspace(&P, threads);
    char *ws = NULL;
    if ((st = seqk__workspace(fn, ctx, P.ws_offset + engine, (void **)&ws))) return st;
    float *dtp = (float *)ws, *dld = (float *)(ws + part), *dvs = (float *)(ws + 2 * part);
    float *dskip = (float *)(ws + 3 * part); /* [B,T,H] dy_t . x_t per head (CPU, native) */
    if ((st = mamba2_dt(ctx, threads, rows, H, dt, dt_bias, softplus, dtp))) return st;
    P.v_scale = dtp;
    P.g = dtp;
    P.chunk = chunk; /* seqk__lin_run_backward applies the default */
    seqk__lin_grad Gr = {0};
    Gr.dout = (const float *)dy, Gr.ds_out = dstate_out;
    Gr.dq = (float *)dCm, Gr.dk = (float *)dBm, Gr.dv = (float *)dx;
    Gr.dv_scale = dvs, Gr.dlogdecay = dld;
    Gr.ds_in = dstate_in;
#if SEQK__HAVE_CUDA
    if (!cuda || native)
#endif
    {
        /* the CPU engine and the native one write dx = dt dv' + D dy and dy . x
         * (the native one always: the epilogue then leaves dx alone) */
        Gr.skip = D;
        Gr.dskip_tok = dD || native ? dskip : NULL;
    }
    if ((st = seqk__lin_run_backward(fn, ctx, &P, &Gr, cu_seqlens))) return st;
    if (rows == 0) { /* no token: the per-head sums are empty */
        float zero[1] = {0.0f};
        for (int64_t h = 0; h < H && !st; h++) {
            float *outs0[3] = {dA, dD, ddt_bias};
            for (int i = 0; i < 3 && !st; i++)
                if (outs0[i])
                    st = seqk_memcpy(ctx, outs0[i] + h, zero, sizeof(float),
                                     SEQK_COPY_HOST_TO_BACKEND);
        }
        return st;
    }
#if SEQK__HAVE_CUDA
    if (cuda)
        return seqk__cuda_mamba2_backward_epilogue(
            ctx, rows, H, Pd, softplus, dt, dt_bias, A, D, (const float *)x, (const float *)dy,
            native ? dskip : NULL, dtp, dld, dvs, ddt, dA, dD, ddt_bias, (float *)dx);
#endif
    mamba2_epilogue_cpu(threads, rows, H, softplus, dt, dt_bias, A, dtp, dld, dvs, dskip, ddt, dA,
                        dD, ddt_bias);
    return SEQK_SUCCESS;
}

/* ---- dtypes (seqk.h, "Dtypes"): the _ex entry points ---------------------- */

seqk_status seqk_mamba2_ex(seqk_context *ctx, seqk_dtype dtype, seqk_mode mode, int64_t B,
                           int64_t T, int64_t H, int64_t P, int64_t G, int64_t Nst, unsigned flags,
                           const void *x, const float *dt, const float *A, const void *Bm,
                           const void *Cm, const float *D, const float *dt_bias, void *y,
                           const float *state_in, float *state_out, const int32_t *cu_seqlens,
                           int64_t N, int64_t chunk)
{
    if (dtype == SEQK_DTYPE_F32 || seqk__lin_native(ctx, dtype, (int)mode, 0u))
        return mamba2_run(ctx, dtype, mode, B, T, H, P, G, Nst, flags, x, dt, A, Bm, Cm, D,
                          dt_bias, y, state_in, state_out, cu_seqlens, N, chunk);
    const int64_t nx = seqk__dt_numel(B, T, H, P), nb = seqk__dt_numel(B, T, G, Nst);
    seqk__dt_tensor t[] = {
        {"x", x, nx, SEQK__DT_IN, 0, NULL},
        {"Bm", Bm, nb, SEQK__DT_IN, 0, NULL},
        {"Cm", Cm, nb, SEQK__DT_IN, 0, NULL},
        {"y", y, nx, SEQK__DT_OUT, 0, NULL}};
    size_t ws = 0;
    const seqk_status qs =
        seqk_linear_state_workspace_size(ctx, mode, B, T, H, Nst, P, cu_seqlens ? N : 0, chunk,
                                         &ws);
    seqk__dt_call c;
    seqk_status st = seqk__dt_begin(&c, "seqk_mamba2_ex", ctx, dtype, t, 4, seqk__dt_ws(qs, ws));
    if (st) return st;
    st = mamba2_run(ctx, SEQK_DTYPE_F32, mode, B, T, H, P, G, Nst, flags, t[0].f, dt, A, t[1].f,
                    t[2].f, D, dt_bias, t[3].f, state_in, state_out, cu_seqlens, N, chunk);
    return seqk__dt_end(&c, st);
}

seqk_status seqk_mamba2(seqk_context *ctx, seqk_mode mode, int64_t B, int64_t T, int64_t H,
                        int64_t P, int64_t G, int64_t Nst, unsigned flags, const float *x,
                        const float *dt, const float *A, const float *Bm, const float *Cm,
                        const float *D, const float *dt_bias, float *y, const float *state_in,
                        float *state_out, const int32_t *cu_seqlens, int64_t N, int64_t chunk)
{
    return seqk_mamba2_ex(ctx, SEQK_DTYPE_F32, mode, B, T, H, P, G, Nst, flags, x, dt, A, Bm, Cm,
                          D, dt_bias, y, state_in, state_out, cu_seqlens, N, chunk);
}

seqk_status seqk_mamba2_backward_ex(seqk_context *ctx, seqk_dtype dtype, int64_t B, int64_t T,
                                    int64_t H, int64_t P, int64_t G, int64_t Nst, unsigned flags,
                                    const void *x, const float *dt, const float *A, const void *Bm,
                                    const void *Cm, const float *D, const float *dt_bias,
                                    const float *state_in, const void *dy, const float *dstate_out,
                                    void *dx, float *ddt, float *dA, void *dBm, void *dCm,
                                    float *dD, float *ddt_bias, float *dstate_in,
                                    const int32_t *cu_seqlens, int64_t N, int64_t chunk)
{
    if (dtype == SEQK_DTYPE_F32 || seqk__lin_native(ctx, dtype, SEQK_MODE_PARALLEL, 0u))
        return mamba2_backward_run(ctx, dtype, B, T, H, P, G, Nst, flags, x, dt, A, Bm, Cm, D,
                                   dt_bias, state_in, dy, dstate_out, dx, ddt, dA, dBm, dCm, dD,
                                   ddt_bias, dstate_in, cu_seqlens, N, chunk);
    const int64_t nx = seqk__dt_numel(B, T, H, P), nb = seqk__dt_numel(B, T, G, Nst);
    seqk__dt_tensor t[] = {
        {"x", x, nx, SEQK__DT_IN, 0, NULL},
        {"Bm", Bm, nb, SEQK__DT_IN, 0, NULL},
        {"Cm", Cm, nb, SEQK__DT_IN, 0, NULL},
        {"dy", dy, nx, SEQK__DT_IN, 0, NULL},
        {"dx", dx, nx, SEQK__DT_OUT, 0, NULL},
        {"dBm", dBm, nb, SEQK__DT_OUT, 0, NULL},
        {"dCm", dCm, nb, SEQK__DT_OUT, 0, NULL}};
    size_t ws = 0;
    const seqk_status qs =
        seqk_linear_state_backward_workspace_size(ctx, B, T, H, G, Nst, P, cu_seqlens ? N : 0,
                                                  chunk, &ws);
    seqk__dt_call c;
    seqk_status st = seqk__dt_begin(&c, "seqk_mamba2_backward_ex", ctx, dtype, t, 7,
                                    seqk__dt_ws(qs, ws));
    if (st) return st;
    st = mamba2_backward_run(ctx, SEQK_DTYPE_F32, B, T, H, P, G, Nst, flags, t[0].f, dt, A,
                             t[1].f, t[2].f, D, dt_bias, state_in, t[3].f, dstate_out, t[4].f,
                             ddt, dA, t[5].f, t[6].f, dD, ddt_bias, dstate_in, cu_seqlens, N,
                             chunk);
    return seqk__dt_end(&c, st);
}

seqk_status seqk_mamba2_backward(seqk_context *ctx, int64_t B, int64_t T, int64_t H, int64_t P,
                                 int64_t G, int64_t Nst, unsigned flags, const float *x,
                                 const float *dt, const float *A, const float *Bm, const float *Cm,
                                 const float *D, const float *dt_bias, const float *state_in,
                                 const float *dy, const float *dstate_out, float *dx, float *ddt,
                                 float *dA, float *dBm, float *dCm, float *dD, float *ddt_bias,
                                 float *dstate_in, const int32_t *cu_seqlens, int64_t N,
                                 int64_t chunk)
{
    return seqk_mamba2_backward_ex(ctx, SEQK_DTYPE_F32, B, T, H, P, G, Nst, flags, x, dt, A, Bm,
                                   Cm, D, dt_bias, state_in, dy, dstate_out, dx, ddt, dA, dBm,
                                   dCm, dD, ddt_bias, dstate_in, cu_seqlens, N, chunk);
}
