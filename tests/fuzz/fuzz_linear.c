/* tests/fuzz/fuzz_linear.c -- libFuzzer harness of the linear-state family:
 * seqk_linear_attention, seqk_retention, seqk_gated_retention, seqk_mamba2,
 * their *_backward and the two workspace queries, with the float64
 * references of tests/ref as the oracle; see fuzz_common.h. */
#include "fuzz_common.h"
#include "ref/ref_linear.h"
#include "ref/ref_linear_backward.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { LINATTN, RETENTION, GATED, MAMBA2, N_OPS };
static const char *const fwd_name[N_OPS] = {"seqk_linear_attention", "seqk_retention",
                                            "seqk_gated_retention", "seqk_mamba2"};
static const char *const bwd_name[N_OPS] = {
    "seqk_linear_attention_backward", "seqk_retention_backward",
    "seqk_gated_retention_backward", "seqk_mamba2_backward"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in in = {data, size, 0};
    fz_reset();
    seqk_context *ctx = fz_ctx(&in);
    bool ok = true, t;
    const int op = (int)fz_pick(&in, 0, N_OPS - 1);
    bool bwd;
    const int mode = fz_bwd_mode(&in, &bwd, &ok);
    const bool m2 = op == MAMBA2;
    const fz_dims dm = fz_dims_lin(&in, &ok);
    const int64_t B = dm.B, T = dm.T, H = dm.H, K = dm.K, V = dm.V; /* Mamba2: K = Nst, V = P */
    int64_t G = m2 ? fz_pick(&in, 1, 3) : H;
    const int64_t chunk = fz_chunk(&in, &ok);
    if (m2) ok &= H % G == 0;
    float scale = 1.0f;
    if (!m2) {
        scale = fz_scale(&in, K, &t);
        ok &= t;
    }
    const unsigned known = op == LINATTN ? SEQK_LINATTN_NORMALIZE | SEQK_LINATTN_ELU1
                           : m2          ? SEQK_MAMBA2_DT_SOFTPLUS
                                         : 0u;
    unsigned flags = 0;
    if (op == LINATTN || m2) {
        flags = fz_flags(&in, known, &t);
        ok &= t;
    }
    const bool norm = op == LINATTN && (flags & SEQK_LINATTN_NORMALIZE);
    const bool elu1 = op == LINATTN && (flags & SEQK_LINATTN_ELU1);
    const bool varlen = fz_chance(&in, 80);
    fz_seed_data(&in);
    const int64_t Bp = B > 0 ? B : 0, Tp = T > 0 ? T : 0, Kp = K >= 1 && K <= 1024 ? K : 1,
                  Vp = V > 0 ? V : 0;
    int64_t N = Bp;
    const int32_t *cu = NULL;
    if (varlen) {
        cu = fz_cu_seqlens(&in, Tp, &N, &t);
        ok &= t && B == 1;
    }
    const int64_t Np = N > 0 ? N : 0, rows = Bp * Tp, Hqk = m2 ? G : H;
    const size_t nq = (size_t)(rows * Hqk * Kp), nv = (size_t)(rows * H * Vp),
                 nt = (size_t)(rows * H), ns = (size_t)(Np * H * Kp * Vp),
                 nz = (size_t)(Np * H * Kp);
    /* data: positive q, k for the normaliser without the feature map (its
     * denominator then stays away from 0) */
    const double qlo = norm && !elu1 ? 0.1 : -1;
    const float *q = fz_input(nq, qlo, 1), *k = fz_input(nq, qlo, 1), *v = fz_input(nv, -1, 1);
    const float *gamma = NULL, *g = NULL, *dt = NULL, *A = NULL, *D = NULL, *dtb = NULL;
    if (op == RETENTION && fz_chance(&in, 160)) gamma = fz_input((size_t)H, 0.3, 1);
    if (op == GATED) g = fz_input(nt, -3, 0);
    if (m2) {
        dt = fz_input(nt, -1, 1);
        A = fz_input((size_t)H, -2, -0.1);
        if (fz_chance(&in, 128)) D = fz_input((size_t)H, -1, 1);
        if (fz_chance(&in, 128)) dtb = fz_input((size_t)H, -0.5, 0.5);
        if (!(flags & SEQK_MAMBA2_DT_SOFTPLUS)) { /* dt + dt_bias must stay >= 0 */
            float *w = (float *)dt;
            for (size_t i = 0; i < nt; i++) w[i] = 0.75f + 0.25f * w[i];
        }
    }
    const float *s_in = fz_chance(&in, 128) ? fz_input(ns, -1, 1) : NULL;
    const float *z_in = norm && fz_chance(&in, 128) ? fz_input(nz, 0.1, 1) : NULL;
    if (op == LINATTN && !norm && fz_chance(&in, 8)) z_in = fz_input(nz, 0, 1), ok = false;
    const bool full = rows > 0;
    if (getenv("SEQK_FUZZ_TRACE"))
        fprintf(stderr, "op %d bwd %d mode %d B %lld T %lld H %lld K %lld V %lld G %lld chunk %lld "
                "flags %u varlen %d N %lld cu[N] %d\n", op, (int)bwd, mode, (long long)B,
                (long long)T, (long long)H, (long long)K, (long long)V, (long long)G,
                (long long)chunk, flags, (int)varlen, (long long)N, cu && N > 0 ? cu[N] : -1);

    size_t ws = 0;
    seqk_status wst;
    double tol = 5e-4;
    if (!bwd) {
        /* ---- forward ---- */
        float *o = fz_output(nv);
        float *s_out = fz_chance(&in, 160) ? fz_output(ns) : NULL;
        float *z_out = norm && fz_chance(&in, 160) ? fz_output(nz) : NULL;
        if (op == LINATTN && !norm && fz_chance(&in, 8)) z_out = fz_output(nz), ok = false;
        if (fz_alias_forward(&in, full, &o, q, v, nv, s_in, &s_out, ns, &ok) == 0 && z_in &&
            z_out)
            z_out = (float *)z_in, fz_mark_written(z_in);
        q = fz_maybe_null(&in, q, full, &ok);
        k = fz_maybe_null(&in, k, full, &ok);
        v = fz_maybe_null(&in, v, full, &ok);
        o = (float *)fz_maybe_null(&in, o, full, &ok);
        if (op == GATED) g = fz_maybe_null(&in, g, full, &ok);
        if (m2) {
            dt = fz_maybe_null(&in, dt, full, &ok);
            A = fz_maybe_null(&in, A, full, &ok);
        }
        wst = seqk_linear_state_workspace_size(ctx, (seqk_mode)mode, B, T, H, K, V,
                                               varlen ? N : 0, chunk, &ws);
        fz_workspace(&in, ctx, wst, ws);
        double *ro = NULL, *rs = NULL, *rz = NULL;
        if (ok) {
            ro = fz_doubles(nv), rs = fz_doubles(ns), rz = fz_doubles(nz);
            if (m2) {
                ref_mamba2(B, T, H, V, G, K, (int)(flags & SEQK_MAMBA2_DT_SOFTPLUS), v, dt, A, k,
                           q, D, dtb, s_in, ro, rs, cu, N);
            } else {
                ref_decay dec = {op == LINATTN ? 0 : op == RETENTION ? 1 : 2, gamma, g};
                float gdef[3];
                if (op == RETENTION && !gamma) {
                    seqk_retention_default_gammas(H, gdef);
                    dec.gamma = gdef;
                }
                ref_linear_state(B, T, H, K, V, scale, norm, elu1, dec, q, k, v, s_in, z_in, ro,
                                 rs, rz, cu, N);
            }
        }
        fz_snapshot();
        seqk_status st;
        switch (op) {
        case LINATTN:
            st = seqk_linear_attention(ctx, (seqk_mode)mode, B, T, H, K, V, scale, flags, q, k, v,
                                       o, s_in, s_out, z_in, z_out, cu, N, chunk);
            break;
        case RETENTION:
            st = seqk_retention(ctx, (seqk_mode)mode, B, T, H, K, V, scale, gamma, q, k, v, o, s_in,
                                s_out, cu, N, chunk);
            break;
        case GATED:
            st = seqk_gated_retention(ctx, (seqk_mode)mode, B, T, H, K, V, scale, q, k, v, g, o,
                                      s_in, s_out, cu, N, chunk);
            break;
        default:
            st = seqk_mamba2(ctx, (seqk_mode)mode, B, T, H, V, G, K, flags, v, dt, A, k, q, D, dtb,
                             o, s_in, s_out, cu, N, chunk);
        }
        if (fz_forward_outcome(fwd_name[op], st, ok, o, ro, nv, s_out, rs, ns) && z_out)
            fz_close("z_out", z_out, rz, nz, tol, 1e-2);
        return 0;
    }

    /* ---- backward ---- */
    const float *dout = fz_input(nv, -1, 1);
    const float *ds_out = fz_chance(&in, 128) ? fz_input(ns, -1, 1) : NULL;
    const float *dz_out = norm && fz_chance(&in, 128) ? fz_input(nz, -1, 1) : NULL;
    float *dq = fz_output(nq), *dk = fz_output(nq), *dv = fz_output(nv);
    float *dg = op == GATED || m2 ? fz_output(nt) : NULL; /* Mamba2: ddt */
    float *dA = m2 ? fz_output((size_t)H) : NULL;
    float *dD = m2 && D && fz_chance(&in, 160) ? fz_output((size_t)H) : NULL;
    if (m2 && !D && fz_chance(&in, 8)) dD = fz_output((size_t)H), ok = false;
    float *ddtb = m2 && fz_chance(&in, 128) ? fz_output((size_t)H) : NULL;
    float *ds_in = fz_chance(&in, 128) ? fz_output(ns) : NULL;
    float *dz_in = norm && fz_chance(&in, 128) ? fz_output(nz) : NULL;
    if (op == LINATTN && !norm && fz_chance(&in, 8)) dz_in = fz_output(nz), ok = false;
    fz_alias_backward(&in, full, &dq, &dk, q, nq, &dv, dout, nv, s_in, &ds_in, ns, &ok);
    q = fz_maybe_null(&in, q, full, &ok);
    k = fz_maybe_null(&in, k, full, &ok);
    v = fz_maybe_null(&in, v, full, &ok);
    dout = fz_maybe_null(&in, dout, full, &ok);
    dq = (float *)fz_maybe_null(&in, dq, full, &ok);
    dk = (float *)fz_maybe_null(&in, dk, full, &ok);
    dv = (float *)fz_maybe_null(&in, dv, full, &ok);
    if (op == GATED) {
        g = fz_maybe_null(&in, g, full, &ok);
        dg = (float *)fz_maybe_null(&in, dg, full, &ok);
    }
    if (m2) {
        dt = fz_maybe_null(&in, dt, full, &ok);
        A = fz_maybe_null(&in, A, full, &ok);
        dg = (float *)fz_maybe_null(&in, dg, full, &ok);
        dA = (float *)fz_maybe_null(&in, dA, full, &ok);
    }
    wst = seqk_linear_state_backward_workspace_size(ctx, B, T, H, Hqk, K, V, varlen ? N : 0, chunk,
                                                    &ws);
    fz_workspace(&in, ctx, wst, ws);
    double *rq = NULL, *rk = NULL, *rv = NULL, *rg = NULL, *rA = NULL, *rD = NULL, *rb = NULL,
           *rs = NULL, *rz = NULL, *gterm = NULL, *sA = NULL, *sb = NULL, *sAa = NULL;
    if (ok) {
        rq = fz_doubles(nq), rk = fz_doubles(nq), rv = fz_doubles(nv), rg = fz_doubles(nt);
        rs = fz_doubles(ns), rz = fz_doubles(nz), gterm = fz_doubles(nt);
        rA = fz_doubles((size_t)H), rD = fz_doubles((size_t)H), rb = fz_doubles((size_t)H);
        sA = fz_doubles((size_t)H), sb = fz_doubles((size_t)H), sAa = fz_doubles((size_t)H);
        switch (op) {
        case LINATTN:
            ref_linear_attention_backward(B, T, H, K, V, scale, norm, elu1, q, k, v, dout, s_in,
                                          z_in, ds_out, dz_out, rq, rk, rv, rs, rz, NULL, NULL, cu,
                                          N);
            break;
        case RETENTION:
            ref_retention_backward(B, T, H, K, V, scale, gamma, q, k, v, dout, s_in, ds_out, rq, rk,
                                   rv, rs, cu, N);
            break;
        case GATED:
            ref_gated_retention_backward(B, T, H, K, V, scale, q, k, v, g, dout, s_in, ds_out, rq,
                                         rk, rv, rg, gterm, rs, cu, N);
            break;
        default: {
            const ref_mamba2_scales sc = {gterm, sA, sb, sAa};
            ref_mamba2_backward(B, T, H, V, G, K, (int)(flags & SEQK_MAMBA2_DT_SOFTPLUS), v, dt, A,
                                k, q, D, dtb, s_in, dout, ds_out, rv, rg, rA, rk, rq, rD, rb, rs,
                                &sc, cu, N);
        }
        }
    }
    fz_snapshot();
    seqk_status st;
    switch (op) {
    case LINATTN:
        st = seqk_linear_attention_backward(ctx, B, T, H, K, V, scale, flags, q, k, v, dout, s_in,
                                            z_in, ds_out, dz_out, dq, dk, dv, ds_in, dz_in, cu, N,
                                            chunk);
        break;
    case RETENTION:
        st = seqk_retention_backward(ctx, B, T, H, K, V, scale, gamma, q, k, v, dout, s_in, ds_out,
                                     dq, dk, dv, ds_in, cu, N, chunk);
        break;
    case GATED:
        st = seqk_gated_retention_backward(ctx, B, T, H, K, V, scale, q, k, v, g, dout, s_in,
                                           ds_out, dq, dk, dv, dg, ds_in, cu, N, chunk);
        break;
    default:
        st = seqk_mamba2_backward(ctx, B, T, H, V, G, K, flags, v, dt, A, k, q, D, dtb, s_in, dout,
                                  ds_out, dv, dg, dA, dk, dq, dD, ddtb, ds_in, cu, N, chunk);
    }
    if (!fz_outcome(bwd_name[op], st, ok)) return 0;
    tol = 2e-3;
    fz_close(m2 ? "dCm" : "dq", dq, rq, nq, tol, 1e-2);
    fz_close(m2 ? "dBm" : "dk", dk, rk, nq, tol, 1e-2);
    fz_close(m2 ? "dx" : "dv", dv, rv, nv, tol, 1e-2);
    if (dg) fz_close(m2 ? "ddt" : "dg", dg, rg, nt, tol, 1e-2 + fz_rms(gterm, nt));
    if (dA)
        fz_close("dA", dA, rA, (size_t)H, tol,
                 1e-2 + fz_rms(sA, (size_t)H) + fz_rms(sAa, (size_t)H));
    if (dD) fz_close("dD", dD, rD, (size_t)H, tol, 1e-2);
    if (ddtb) fz_close("ddt_bias", ddtb, rb, (size_t)H, tol, 1e-2 + fz_rms(sb, (size_t)H));
    if (ds_in) fz_close("dstate_in", ds_in, rs, ns, tol, 1e-2);
    if (dz_in) fz_close("dz_in", dz_in, rz, nz, tol, 1e-2);
    return 0;
}
