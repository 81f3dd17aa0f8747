/* tests/fuzz/fuzz_titans.c -- libFuzzer harness of seqk_titans (both modes,
 * mini-batch sizes, the L2-norm flag, states with every position) and
 * seqk_titans_backward (and their workspace queries), with the float64
 * references of tests/ref as the oracle; see fuzz_common.h. */
#include "fuzz_common.h"
#include "ref/ref_titans.h"
#include "ref/ref_titans_backward.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Sometimes one of the gates out of its range (eta, alpha: [0, 1]; theta:
 * finite and >= 0); clears *ok then. */
static void bad_gate(fz_in *in, float *eta, float *theta, float *alpha, size_t n, bool *ok)
{
    if (!n || !fz_chance(in, 10)) return;
    static const float bad[] = {-0.25f, 1.5f, NAN, INFINITY, -INFINITY, 0.0f};
    const int which = (int)fz_pick(in, 0, 2);
    const float b = bad[fz_pick(in, 0, 5)];
    float *x = which == 0 ? eta : which == 1 ? theta : alpha;
    x[fz_pick(in, 0, 255) % n] = b;
    if (which == 1 ? !(isfinite(b) && b >= 0) : !(b >= 0 && b <= 1)) *ok = false;
}

/* Sometimes NULL for the inputs both directions take (each required when full). */
static void null_inputs(fz_in *in, bool full, bool *ok, const float **q, const float **k,
                        const float **v, const float **eta, const float **theta,
                        const float **alpha)
{
    const float **x[6] = {q, k, v, eta, theta, alpha};
    for (int i = 0; i < 6; i++) *x[i] = fz_maybe_null(in, *x[i], full, ok);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in in = {data, size, 0};
    fz_reset();
    seqk_context *ctx = fz_ctx(&in);
    bool ok = true, t;
    bool bwd;
    const int mode = fz_bwd_mode(&in, &bwd, &ok);
    const fz_dims dm = fz_dims_lin(&in, &ok);
    const int64_t B = dm.B, T = dm.T, H = dm.H, K = dm.K, V = dm.V;
    int64_t mb = fz_pick(&in, 1, 9);
    if (fz_chance(&in, 12)) mb = (int64_t[]){0, -1, 1025, 1024, 16}[fz_pick(&in, 0, 4)];
    ok &= mb >= 1 && mb <= 1024;
    const float scale = fz_scale(&in, K, &t);
    ok &= t;
    const unsigned flags = fz_flags(&in, SEQK_TITANS_L2NORM_QK, &t);
    ok &= t;
    const bool l2 = (flags & SEQK_TITANS_L2NORM_QK) != 0;
    int64_t N;
    const int32_t *cu = fz_varlen(&in, B, T, &N, &ok);
    fz_seed_data(&in);
    const int64_t Bp = B > 0 ? B : 0, Tp = T > 0 ? T : 0, Kp = K >= 1 && K <= 1024 ? K : 1,
                  Vp = V > 0 ? V : 0, Np = N > 0 ? N : 0, rows = Bp * Tp, E = 3 * Kp * Vp + 8;
    const size_t nq = (size_t)(rows * H * Kp), nv = (size_t)(rows * H * Vp),
                 nt = (size_t)(rows * H), ns = (size_t)(Np * H * E);
    /* keys of norm <= 1 without the L2 norm (steps of size theta on a loss
     * of curvature <= 1) */
    const double kr = l2 ? 1 : 1 / sqrt((double)Kp);
    const float *q = fz_input(nq, -1, 1), *k = fz_input(nq, -kr, kr), *v = fz_input(nv, -1, 1);
    float *eta = fz_input(nt, 0, 1), *theta = fz_input(nt, 0, 0.3), *alpha = fz_input(nt, 0, 1);
    bad_gate(&in, eta, theta, alpha, nt, &ok);
    float *s_in = fz_chance(&in, 128) ? fz_input(ns, -1, 1) : NULL;
    if (s_in) { /* positions: integers in [0, mb), sometimes not */
        const int64_t b = mb >= 1 && mb <= 1024 ? mb : 1;
        for (int64_t i = 0; i < Np * H; i++) s_in[i * E + 3 * Kp * Vp] = (float)fz_pick(&in, 0, b - 1);
        if (Np * H > 0 && fz_chance(&in, 12)) {
            const float bad = (float[]){0.5f, -1.0f, (float)b, NAN}[fz_pick(&in, 0, 3)];
            s_in[fz_pick(&in, 0, Np * H - 1) * E + 3 * Kp * Vp] = bad;
            ok = false;
        }
    }
    const bool full = rows > 0;
    if (getenv("SEQK_FUZZ_TRACE"))
        fprintf(stderr, "bwd %d mode %d B %lld T %lld H %lld K %lld V %lld mb %lld flags %u "
                "varlen %d N %lld\n", (int)bwd, mode, (long long)B, (long long)T, (long long)H,
                (long long)K, (long long)V, (long long)mb, flags, cu != NULL, (long long)N);
    size_t ws = 0;
    seqk_status wst;

    if (!bwd) {
        float *o = fz_output(nv);
        float *s_out = fz_chance(&in, 160) ? fz_output(ns) : NULL;
        fz_alias_forward(&in, full, &o, k, theta, nt, s_in, &s_out, ns, &ok);
        const float *e = eta, *th = theta, *a = alpha;
        null_inputs(&in, full, &ok, &q, &k, &v, &e, &th, &a);
        o = (float *)fz_maybe_null(&in, o, full, &ok);
        wst = seqk_titans_workspace_size(ctx, (seqk_mode)mode, B, T, H, K, V, mb, cu ? N : 0,
                                         &ws);
        fz_workspace(&in, ctx, wst, ws);
        double *ro = NULL, *rs = NULL;
        if (ok) {
            ro = fz_doubles(nv), rs = fz_doubles(ns);
            ref_titans(B, T, H, K, V, scale, l2, mb, q, k, v, e, th, a, s_in, ro, rs, cu, N);
        }
        fz_snapshot();
        const seqk_status st = seqk_titans(ctx, (seqk_mode)mode, B, T, H, K, V, scale, flags, mb,
                                           q, k, v, e, th, a, o, s_in, s_out, cu, N);
        fz_forward_outcome("seqk_titans", st, ok, o, ro, nv, s_out, rs, ns);
        return 0;
    }

    /* ---- backward ---- */
    const float *dout = fz_input(nv, -1, 1);
    const float *ds_out = fz_chance(&in, 128) ? fz_input(ns, -1, 1) : NULL;
    float *dq = fz_output(nq), *dk = fz_output(nq), *dv = fz_output(nv);
    float *de = fz_output(nt), *dth = fz_output(nt), *da = fz_output(nt);
    float *ds_in = fz_chance(&in, 128) ? fz_output(ns) : NULL;
    switch (fz_alias_backward(&in, full, &dq, &dk, q, nq, &dv, dout, nv, s_in, &ds_in, ns, &ok)) {
    case 4:
        if (full) dth = theta, ok = false;
        break;
    case 5:
        if (ds_out && ds_in && ns >= 2) ds_in = (float *)ds_out + 1, ok = false;
        break;
    case 6:
        if (full) da = de, ok = false;
        break;
    default: break;
    }
    const float *e = eta, *th = theta, *a = alpha;
    null_inputs(&in, full, &ok, &q, &k, &v, &e, &th, &a);
    dout = fz_maybe_null(&in, dout, full, &ok);
    dq = (float *)fz_maybe_null(&in, dq, full, &ok);
    dk = (float *)fz_maybe_null(&in, dk, full, &ok);
    dv = (float *)fz_maybe_null(&in, dv, full, &ok);
    de = (float *)fz_maybe_null(&in, de, full, &ok);
    dth = (float *)fz_maybe_null(&in, dth, full, &ok);
    da = (float *)fz_maybe_null(&in, da, full, &ok);
    wst = seqk_titans_backward_workspace_size(ctx, B, T, H, K, V, mb, cu ? N : 0, &ws);
    fz_workspace(&in, ctx, wst, ws);
    double *r[7] = {0};
    if (ok) {
        r[0] = fz_doubles(nq), r[1] = fz_doubles(nq), r[2] = fz_doubles(nv);
        r[3] = fz_doubles(nt), r[4] = fz_doubles(nt), r[5] = fz_doubles(nt);
        r[6] = fz_doubles(ns);
        ref_titans_backward64(B, T, H, K, V, scale, l2, mb, fz_to_double(q, nq),
                              fz_to_double(k, nq), fz_to_double(v, nv), fz_to_double(e, nt),
                              fz_to_double(th, nt), fz_to_double(a, nt), fz_to_double(s_in, ns),
                              fz_to_double(dout, nv), fz_to_double(ds_out, ns), r[0], r[1], r[2],
                              r[3], r[4], r[5], r[6], cu, N);
    }
    fz_snapshot();
    const seqk_status st =
        seqk_titans_backward(ctx, B, T, H, K, V, scale, flags, mb, q, k, v, e, th, a, s_in, dout,
                             ds_out, dq, dk, dv, de, dth, da, ds_in, cu, N);
    if (!fz_outcome("seqk_titans_backward", st, ok)) return 0;
    const double tol = 2e-3, fl = 1e-2;
    fz_close("dq", dq, r[0], nq, tol, fl);
    fz_close("dk", dk, r[1], nq, tol, fl);
    fz_close("dv", dv, r[2], nv, tol, fl);
    fz_close("deta", de, r[3], nt, tol, fl);
    fz_close("dtheta", dth, r[4], nt, tol, fl);
    fz_close("dalpha", da, r[5], nt, tol, fl);
    if (ds_in) fz_close("dstate_in", ds_in, r[6], ns, tol, fl);
    return 0;
}
