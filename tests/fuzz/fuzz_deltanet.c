/* tests/fuzz/fuzz_deltanet.c -- libFuzzer harness of seqk_deltanet (both
 * modes, plain and gated, the L2-norm and negative-eigenvalue flags) and
 * seqk_deltanet_backward (and their workspace queries), with the float64
 * references of tests/ref as the oracle; see fuzz_common.h. */
#include "fuzz_common.h"
#include "ref/ref_deltanet.h"
#include "ref/ref_deltanet_backward.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Sometimes one value of x[n] out of its range (beta: [0, hi]; a log-gate:
 * finite and <= 0); clears *ok then. */
static void bad_value(fz_in *in, float *x, size_t n, bool gate, float hi, bool *ok)
{
    if (!x || !n || !fz_chance(in, 10)) return;
    static const float beta_bad[] = {-0.25f, 1.5f, 2.5f, NAN, INFINITY};
    static const float gate_bad[] = {0.5f, NAN, -INFINITY, INFINITY, 1e-3f};
    const float b = gate ? gate_bad[fz_pick(in, 0, 4)] : beta_bad[fz_pick(in, 0, 4)];
    x[fz_pick(in, 0, 255) % n] = b;
    if (gate ? !(isfinite(b) && b <= 0) : !(b >= 0 && b <= hi)) *ok = false;
}

/* Sometimes NULL for the inputs both directions take (each required when full). */
static void null_inputs(fz_in *in, bool full, bool *ok, const float **q, const float **k,
                        const float **v, const float **beta)
{
    const float **x[4] = {q, k, v, beta};
    for (int i = 0; i < 4; i++) *x[i] = fz_maybe_null(in, *x[i], full, ok);
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
    const int64_t chunk = fz_chunk(&in, &ok);
    const float scale = fz_scale(&in, K, &t);
    ok &= t;
    const unsigned flags =
        fz_flags(&in, SEQK_DELTANET_L2NORM_QK | SEQK_DELTANET_ALLOW_NEG_EIGVAL, &t);
    ok &= t;
    const bool l2 = (flags & SEQK_DELTANET_L2NORM_QK) != 0;
    const bool neg = (flags & SEQK_DELTANET_ALLOW_NEG_EIGVAL) != 0;
    const bool gated = fz_chance(&in, 128);
    int64_t N;
    const int32_t *cu = fz_varlen(&in, B, T, &N, &ok);
    fz_seed_data(&in);
    const int64_t Bp = B > 0 ? B : 0, Tp = T > 0 ? T : 0, Kp = K >= 1 && K <= 1024 ? K : 1,
                  Vp = V > 0 ? V : 0, Np = N > 0 ? N : 0, rows = Bp * Tp;
    const size_t nq = (size_t)(rows * H * Kp), nv = (size_t)(rows * H * Vp),
                 nt = (size_t)(rows * H), ns = (size_t)(Np * H * Kp * Vp);
    /* keys of norm <= 1 without the L2 norm (the stable regime: the
     * transitions never expand the state, for beta up to 2) */
    const double kr = l2 ? 1 : 1 / sqrt((double)Kp);
    const float *q = fz_input(nq, -1, 1), *k = fz_input(nq, -kr, kr), *v = fz_input(nv, -1, 1);
    float *beta = fz_input(nt, 0, neg ? 2 : 1);
    float *g = gated ? fz_input(nt, -3, 0) : NULL;
    bad_value(&in, beta, nt, false, neg ? 2.0f : 1.0f, &ok);
    bad_value(&in, g, nt, true, 0, &ok);
    const float *s_in = fz_chance(&in, 128) ? fz_input(ns, -1, 1) : NULL;
    const bool full = rows > 0;
    if (getenv("SEQK_FUZZ_TRACE"))
        fprintf(stderr, "bwd %d mode %d B %lld T %lld H %lld K %lld V %lld chunk %lld flags %u "
                "gated %d varlen %d N %lld\n", (int)bwd, mode, (long long)B, (long long)T,
                (long long)H, (long long)K, (long long)V, (long long)chunk, flags, (int)gated,
                cu != NULL, (long long)N);
    size_t ws = 0;
    seqk_status wst;

    if (!bwd) {
        float *o = fz_output(nv);
        float *s_out = fz_chance(&in, 160) ? fz_output(ns) : NULL;
        if (fz_alias_forward(&in, full, &o, q, v, nv, s_in, &s_out, ns, &ok) == 5 && full)
            o = beta, ok = false; /* o over beta */
        const float *b = beta;
        null_inputs(&in, full, &ok, &q, &k, &v, &b);
        o = (float *)fz_maybe_null(&in, o, full, &ok);
        wst = seqk_deltanet_workspace_size(ctx, (seqk_mode)mode, B, T, H, K, V, cu ? N : 0, chunk,
                                           &ws);
        fz_workspace(&in, ctx, wst, ws);
        double *ro = NULL, *rs = NULL;
        if (ok) {
            ro = fz_doubles(nv), rs = fz_doubles(ns);
            ref_deltanet(B, T, H, K, V, scale, l2, q, k, v, b, g, s_in, ro, rs, cu, N);
        }
        fz_snapshot();
        const seqk_status st = seqk_deltanet(ctx, (seqk_mode)mode, B, T, H, K, V, scale, flags, q,
                                             k, v, b, g, o, s_in, s_out, cu, N, chunk);
        fz_forward_outcome("seqk_deltanet", st, ok, o, ro, nv, s_out, rs, ns);
        return 0;
    }

    /* ---- backward ---- */
    const float *dout = fz_input(nv, -1, 1);
    const float *ds_out = fz_chance(&in, 128) ? fz_input(ns, -1, 1) : NULL;
    float *dq = fz_output(nq), *dk = fz_output(nq), *dv = fz_output(nv), *db = fz_output(nt);
    float *dg = gated ? fz_output(nt) : NULL;
    if (!gated && fz_chance(&in, 8)) dg = fz_output(nt), ok = false; /* dg without g */
    float *ds_in = fz_chance(&in, 128) ? fz_output(ns) : NULL;
    switch (fz_alias_backward(&in, full, &dq, &dk, q, nq, &dv, dout, nv, s_in, &ds_in, ns, &ok)) {
    case 4:
        if (full) db = beta, ok = false;
        break;
    case 5:
        if (full && dg) dg = db, ok = false;
        break;
    default: break;
    }
    const float *b = beta;
    null_inputs(&in, full, &ok, &q, &k, &v, &b);
    dout = fz_maybe_null(&in, dout, full, &ok);
    dq = (float *)fz_maybe_null(&in, dq, full, &ok);
    dk = (float *)fz_maybe_null(&in, dk, full, &ok);
    dv = (float *)fz_maybe_null(&in, dv, full, &ok);
    db = (float *)fz_maybe_null(&in, db, full, &ok);
    if (gated) dg = (float *)fz_maybe_null(&in, dg, full, &ok);
    wst = seqk_deltanet_backward_workspace_size(ctx, B, T, H, K, V, cu ? N : 0, chunk, &ws);
    fz_workspace(&in, ctx, wst, ws);
    double *rq = NULL, *rk = NULL, *rv = NULL, *rb = NULL, *rg = NULL, *rs = NULL;
    if (ok) {
        rq = fz_doubles(nq), rk = fz_doubles(nq), rv = fz_doubles(nv), rb = fz_doubles(nt);
        rg = fz_doubles(nt), rs = fz_doubles(ns);
        ref_deltanet_backward64(B, T, H, K, V, scale, l2, fz_to_double(q, nq),
                                fz_to_double(k, nq), fz_to_double(v, nv), fz_to_double(b, nt),
                                fz_to_double(g, nt), fz_to_double(s_in, ns),
                                fz_to_double(dout, nv), fz_to_double(ds_out, ns), rq, rk, rv, rb,
                                g ? rg : NULL, rs, cu, N);
    }
    fz_snapshot();
    const seqk_status st =
        seqk_deltanet_backward(ctx, B, T, H, K, V, scale, flags, q, k, v, b, g, s_in, dout, ds_out,
                               dq, dk, dv, db, dg, ds_in, cu, N, chunk);
    if (!fz_outcome("seqk_deltanet_backward", st, ok)) return 0;
    const double tol = 2e-3, fl = 1e-2;
    fz_close("dq", dq, rq, nq, tol, fl);
    fz_close("dk", dk, rk, nq, tol, fl);
    fz_close("dv", dv, rv, nv, tol, fl);
    fz_close("dbeta", db, rb, nt, tol, fl);
    if (dg) fz_close("dg", dg, rg, nt, tol, fl);
    if (ds_in) fz_close("dstate_in", ds_in, rs, ns, tol, fl);
    return 0;
}
