/* tests/fuzz/fuzz_sscan.c -- libFuzzer harness of seqk_selective_scan and
 * seqk_selective_scan_backward (and its workspace query), with the float64
 * references of tests/ref as the oracle; see fuzz_common.h. */
#include "fuzz_common.h"
#include "ref/ref_sscan.h"
#include "ref/ref_sscan_backward.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in in = {data, size, 0};
    fz_reset();
    seqk_context *ctx = fz_ctx(&in);
    bool ok = true, t;
    bool bwd;
    const int mode = fz_bwd_mode(&in, &bwd, &ok);
    const int64_t B = fz_chance(&in, 6) ? 0 : fz_pick(&in, 1, 3);
    const int64_t T = fz_chance(&in, 6) ? -1 : fz_pick(&in, 0, 17);
    const int64_t D = fz_chance(&in, 6) ? 0 : fz_pick(&in, 1, 6);
    const int64_t Nst = fz_chance(&in, 6) ? 0 : fz_pick(&in, 1, 5);
    const int64_t G = fz_pick(&in, 0, 3);
    ok &= B >= 1 && T >= 0 && D >= 1 && Nst >= 1 && G >= 1 && G <= D && D % (G ? G : 1) == 0;
    const unsigned flags = fz_flags(&in, SEQK_SSCAN_DT_SOFTPLUS, &t);
    ok &= t;
    const bool sp = (flags & SEQK_SSCAN_DT_SOFTPLUS) != 0;
    const bool varlen = fz_chance(&in, 80);
    fz_seed_data(&in);
    const int64_t Bp = B > 0 ? B : 0, Tp = T > 0 ? T : 0, Dp = D > 0 ? D : 0,
                  Sp = Nst > 0 ? Nst : 0, Gp = G > 0 ? G : 0;
    int64_t N = Bp;
    const int32_t *cu = NULL;
    if (varlen) {
        cu = fz_cu_seqlens(&in, Tp, &N, &t);
        ok &= t && B == 1;
    }
    const int64_t Np = N > 0 ? N : 0, rows = Bp * Tp;
    const size_t nu = (size_t)(rows * Dp), nbc = (size_t)(rows * Gp * Sp),
                 na = (size_t)(Dp * Sp), ns = (size_t)(Np * Dp * Sp);
    const float *u = fz_input(nu, -1, 1);
    const float *dt = sp ? fz_input(nu, -2, 1) : fz_input(nu, 0.05, 1);
    const float *A = fz_input(na, -2, -0.1);
    const float *Bm = fz_input(nbc, -1, 1), *Cm = fz_input(nbc, -1, 1);
    const float *Dsk = fz_chance(&in, 128) ? fz_input((size_t)Dp, -1, 1) : NULL;
    const float *z = fz_chance(&in, 128) ? fz_input(nu, -2, 2) : NULL;
    const float *dtb = fz_chance(&in, 128) ? fz_input((size_t)Dp, 0, 0.5) : NULL;
    const float *s_in = fz_chance(&in, 128) ? fz_input(ns, -1, 1) : NULL;
    const bool full = rows > 0;
    size_t ws = 0;

    if (!bwd) {
        float *y = fz_output(nu);
        float *s_out = fz_chance(&in, 160) ? fz_output(ns) : NULL;
        fz_alias_forward(&in, full, &y, u, z, nu, s_in, &s_out, ns, &ok);
        u = fz_maybe_null(&in, u, full, &ok);
        dt = fz_maybe_null(&in, dt, full, &ok);
        A = fz_maybe_null(&in, A, full, &ok);
        Bm = fz_maybe_null(&in, Bm, full, &ok);
        Cm = fz_maybe_null(&in, Cm, full, &ok);
        y = (float *)fz_maybe_null(&in, y, full, &ok);
        double *ry = NULL, *rs = NULL;
        if (ok) {
            ry = fz_doubles(nu), rs = fz_doubles(ns);
            ref_selective_scan(B, T, D, Nst, G, sp, u, dt, A, Bm, Cm, Dsk, z, dtb, s_in, ry, rs,
                               cu, N);
        }
        fz_snapshot();
        const seqk_status st = seqk_selective_scan(ctx, (seqk_mode)mode, B, T, D, Nst, G, flags, u,
                                                   dt, A, Bm, Cm, Dsk, z, dtb, y, s_in, s_out, cu, N);
        fz_forward_outcome("seqk_selective_scan", st, ok, y, ry, nu, s_out, rs, ns);
        return 0;
    }

    const float *dy = fz_input(nu, -1, 1);
    const float *ds_out = fz_chance(&in, 128) ? fz_input(ns, -1, 1) : NULL;
    float *du = fz_output(nu), *ddt = fz_output(nu), *dA = fz_output(na);
    float *dBm = fz_output(nbc), *dCm = fz_output(nbc);
    float *dD = Dsk && fz_chance(&in, 160) ? fz_output((size_t)Dp) : NULL;
    if (!Dsk && fz_chance(&in, 8)) dD = fz_output((size_t)Dp), ok = false;
    float *dz = z ? fz_output(nu) : NULL;
    if (!z && fz_chance(&in, 8)) dz = fz_output(nu), ok = false;
    float *ddtb = fz_chance(&in, 128) ? fz_output((size_t)Dp) : NULL;
    float *ds_in = fz_chance(&in, 128) ? fz_output(ns) : NULL;
    switch (fz_pick(&in, 0, 15)) {
    case 0:
        if (full && nu) ddt = du, ok = false;
        break;
    case 1:
        if (s_in && ds_in && ns) ds_in = (float *)s_in, ok = false;
        break;
    case 2:
        if (full && nu) du = (float *)dy, ok = false;
        break;
    case 3:
        if (full && nbc >= 2) dCm = (float *)Bm + 1, ok = false;
        break;
    default: break;
    }
    u = fz_maybe_null(&in, u, full, &ok);
    dt = fz_maybe_null(&in, dt, full, &ok);
    A = fz_maybe_null(&in, A, full, &ok);
    Bm = fz_maybe_null(&in, Bm, full, &ok);
    Cm = fz_maybe_null(&in, Cm, full, &ok);
    dy = fz_maybe_null(&in, dy, full, &ok);
    du = (float *)fz_maybe_null(&in, du, full, &ok);
    ddt = (float *)fz_maybe_null(&in, ddt, full, &ok);
    dA = (float *)fz_maybe_null(&in, dA, full, &ok);
    dBm = (float *)fz_maybe_null(&in, dBm, full, &ok);
    dCm = (float *)fz_maybe_null(&in, dCm, full, &ok);
    const seqk_status wst =
        seqk_selective_scan_backward_workspace_size(ctx, B, T, D, Nst, G, varlen ? N : 0, &ws);
    fz_workspace(&in, ctx, wst, ws);
    double *r[8] = {0};
    double *rD = NULL, *rb = NULL;
    if (ok) {
        const ref_ss_problem p = {B,   T,   D,  Nst, G,  N,
                                  sp,  cu,  fz_to_double(u, nu), fz_to_double(dt, nu),
                                  fz_to_double(A, na), fz_to_double(Bm, nbc),
                                  fz_to_double(Cm, nbc), fz_to_double(Dsk, (size_t)Dp),
                                  fz_to_double(z, nu), fz_to_double(dtb, (size_t)Dp),
                                  fz_to_double(s_in, ns)};
        r[0] = fz_doubles(nu), r[1] = fz_doubles(nu), r[2] = fz_doubles(na);
        r[3] = fz_doubles(nbc), r[4] = fz_doubles(nbc), r[5] = fz_doubles(nu);
        r[6] = fz_doubles(ns);
        rD = fz_doubles((size_t)Dp), rb = fz_doubles((size_t)Dp);
        ref_ss_backward_d(&p, fz_to_double(dy, nu), fz_to_double(ds_out, ns), r[0], r[1], r[2],
                          r[3], r[4], rD, r[5], rb, r[6]);
    }
    fz_snapshot();
    const seqk_status st = seqk_selective_scan_backward(
        ctx, B, T, D, Nst, G, flags, u, dt, A, Bm, Cm, Dsk, z, dtb, s_in, dy, ds_out, du, ddt, dA,
        dBm, dCm, dD, dz, ddtb, ds_in, cu, N);
    if (!fz_outcome("seqk_selective_scan_backward", st, ok)) return 0;
    const double tol = 2e-3, fl = 1e-2;
    fz_close("du", du, r[0], nu, tol, fl);
    fz_close("ddt", ddt, r[1], nu, tol, fl);
    fz_close("dA", dA, r[2], na, tol, fl);
    fz_close("dBm", dBm, r[3], nbc, tol, fl);
    fz_close("dCm", dCm, r[4], nbc, tol, fl);
    if (dz) fz_close("dz", dz, r[5], nu, tol, fl);
    if (dD) fz_close("dDskip", dD, rD, (size_t)Dp, tol, fl);
    if (ddtb) fz_close("ddt_bias", ddtb, rb, (size_t)Dp, tol, fl);
    if (ds_in) fz_close("dstate_in", ds_in, r[6], ns, tol, fl);
    return 0;
}
