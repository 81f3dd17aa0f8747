/* tests/test_gates.c -- one gate policy for every op (issue #19, seqk.h
 * "Gates"): on a CPU context a log-gate of +5, NaN, +inf or -inf (and A of
 * Mamba2 / the selective scan likewise, dt NaN or inf, retention's gamma
 * outside (0, 1]) is rejected with INVALID_ARGUMENT, a message naming the
 * argument and the bad index, and every output untouched; forward and
 * backward entry points alike. Before #19 seqk_gated_retention took g = +5
 * or NaN with SEQK_SUCCESS. The edge values (0, -1e30) are accepted. */
#include "fixtures.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

enum { B = 1, T = 5, H = 2, K = 4, V = 3, BAD = 7 }; /* BAD: the flat index made bad */
enum { NT = B * T * H, NQ = NT * K, NV = NT * V, NS = B * H * K * V };

static float q[NQ], k[NQ], v[NV], g[NT], beta[NT], dt[NT], A[H], gam[H], dout[NV];
static float Asc[V * K]; /* selective scan A [D = V, Nst = K] */
static float o[NV], s1[NS], dq[NQ], dk[NQ], dv[NV], dgo[NT], db[NT], dA[V * K];

static void reset_outputs(void)
{
    tf_fill_untouched(o, NV), tf_fill_untouched(s1, NS), tf_fill_untouched(dq, NQ);
    tf_fill_untouched(dk, NQ), tf_fill_untouched(dv, NV), tf_fill_untouched(dgo, NT);
    tf_fill_untouched(db, NT), tf_fill_untouched(dA, V * K);
}

static void fill_inputs(void)
{
    th_fill(q, NQ, -1, 1), th_fill(k, NQ, -1, 1), th_fill(v, NV, -1, 1);
    th_fill(dout, NV, -1, 1), th_fill(g, NT, -2, 0), th_fill(beta, NT, 0, 1);
    th_fill(dt, NT, 0.1, 1), th_fill(A, H, -2, -0.5), th_fill(Asc, V * K, -2, -0.5);
    for (int h = 0; h < H; h++) gam[h] = 0.9f;
}

/* The calls; each returns the status, its outputs are the static arrays. */
enum op { GATED, GATED_BW, DN, DN_BW, M2, M2_BW, SS, SS_BW, RET, NOPS };
static const char *op_name[NOPS] = {"seqk_gated_retention", "seqk_gated_retention_backward",
                                    "seqk_deltanet", "seqk_deltanet_backward", "seqk_mamba2",
                                    "seqk_mamba2_backward", "seqk_selective_scan",
                                    "seqk_selective_scan_backward", "seqk_retention"};

static seqk_status run(seqk_context *c, int op)
{
    const float sc = 0.5f;
    switch (op) {
    case GATED:
        return seqk_gated_retention(c, SEQK_MODE_PARALLEL, B, T, H, K, V, sc, q, k, v, g, o, NULL,
                                    s1, NULL, 0, 0);
    case GATED_BW:
        return seqk_gated_retention_backward(c, B, T, H, K, V, sc, q, k, v, g, dout, NULL, NULL,
                                             dq, dk, dv, dgo, NULL, NULL, 0, 0);
    case DN:
        return seqk_deltanet(c, SEQK_MODE_RECURRENT, B, T, H, K, V, sc, SEQK_DELTANET_L2NORM_QK,
                             q, k, v, beta, g, o, NULL, s1, NULL, 0, 0);
    case DN_BW:
        return seqk_deltanet_backward(c, B, T, H, K, V, sc, SEQK_DELTANET_L2NORM_QK, q, k, v,
                                      beta, g, NULL, dout, NULL, dq, dk, dv, db, dgo, NULL, NULL,
                                      0, 0);
    case M2: /* x = v [B,T,H,P=V], B = C = k, q with G = H groups, Nst = K */
        return seqk_mamba2(c, SEQK_MODE_PARALLEL, B, T, H, V, H, K, 0, v, dt, A, k, q, NULL,
                           NULL, o, NULL, s1, NULL, 0, 0);
    case M2_BW:
        return seqk_mamba2_backward(c, B, T, H, V, H, K, 0, v, dt, A, k, q, NULL, NULL, NULL,
                                    dout, NULL, dv, dgo, dA, dk, dq, NULL, NULL, NULL, NULL, 0,
                                    0);
    case SS: /* D = H channels (u = beta), Nst = K, one group: Bm = q, Cm = k */
        return seqk_selective_scan(c, SEQK_MODE_RECURRENT, B, T, H, K, 1, 0, beta, dt, Asc, q,
                                   k, NULL, NULL, NULL, o, NULL, s1, NULL, 0);
    case SS_BW:
        return seqk_selective_scan_backward(c, B, T, H, K, 1, 0, beta, dt, Asc, q, k, NULL, NULL,
                                            NULL, NULL, dout, NULL, db, dgo, dA, dq, dk,
                                            NULL, NULL, NULL, NULL, NULL, 0);
    default:
        return seqk_retention(c, SEQK_MODE_PARALLEL, B, T, H, K, V, sc, gam, q, k, v, o, NULL,
                              s1, NULL, 0, 0);
    }
}

/* Sets the array op's gate rule acts on to bad at BAD (or index 1 for
 * per-head arrays); returns its name (the message's needle) and the array. */
static float *gate_of(int op, int which, const char **name, int *idx)
{
    *idx = BAD;
    if (op == RET) return *name = "gamma[1]", *idx = 1, gam;
    if (op == GATED || op == GATED_BW || op == DN || op == DN_BW) return *name = "g[7]", g;
    if (which == 1) return *name = "dt[7]", dt; /* Mamba2, selective scan: dt */
    if (op == M2 || op == M2_BW) return *name = "A[1]", *idx = 1, A;
    return *name = "A[7]", Asc;
}

int main(int argc, char **argv)
{
    th_backend *bes;
    const int nb = th_init(argc, argv, &bes);
    th_seed(19);
    fill_inputs();
    for (int b = 0; b < nb; b++) {
        th_backend *be = &bes[b];
        if (be->backend != SEQK_BACKEND_CPU) { /* the policy reads host arrays: CPU only */
            th_skip("%s: gate values are checked on CPU contexts only (seqk.h, Gates)", be->name);
            continue;
        }
        for (int op = 0; op < NOPS; op++) {
            reset_outputs();
            char what[160];
            snprintf(what, sizeof what, "%s: valid gates", op_name[op]);
            th_check_status(run(be->ctx, op), SEQK_SUCCESS, what);
            const int nwhich = (op == M2 || op == M2_BW || op == SS || op == SS_BW) ? 2 : 1;
            for (int which = 0; which < nwhich; which++) {
                const char *name;
                int idx;
                float *arr = gate_of(op, which, &name, &idx);
                const float keep = arr[idx];
                /* dt: positive values are fine, only non-finite ones are bad */
                const float bads[4] = {which == 1 ? NAN : 5.0f, NAN, INFINITY, -INFINITY};
                const char *bad_names[4] = {"+5", "NaN", "+inf", "-inf"};
                for (int r = 0; r < 4; r++) {
                    if (op == RET && r == 3) continue; /* -inf: same rule as +5 below */
                    arr[idx] = bads[r];
                    reset_outputs();
                    char rule[200];
                    snprintf(rule, sizeof rule, "%s: %s = %s", op_name[op], name,
                             which == 1 && r == 0 ? "NaN" : bad_names[r]);
                    /* every output of the op untouched: the union of the arrays it may write */
                    tf_expect_rejected(run(be->ctx, op), SEQK_ERROR_INVALID_ARGUMENT, name, rule,
                                       o, NV, s1, NS);
                    bool untouched = true;
                    const float *outs[6] = {dq, dk, dv, dgo, db, dA};
                    const int nouts[6] = {NQ, NQ, NV, NT, NT, V * K};
                    for (int i = 0; i < 6; i++)
                        for (int j = 0; j < nouts[i]; j++) untouched &= outs[i][j] == TF_UNTOUCHED;
                    th_check(untouched, "validation: %s: gradients untouched", rule);
                }
                /* accepted edges: 0 and a huge negative log-gate (taken as -1e4) */
                if (which == 0 && op != RET) {
                    const float edges[2] = {0.0f, -1e30f};
                    for (int e = 0; e < 2; e++) {
                        arr[idx] = edges[e];
                        reset_outputs();
                        snprintf(what, sizeof what, "%s: %s = %g accepted", op_name[op], name,
                                 (double)edges[e]);
                        th_check_status(run(be->ctx, op), SEQK_SUCCESS, what);
                        const bool fwd = op == GATED || op == DN || op == M2 || op == SS;
                        th_check(tf_all_finite(fwd ? o : dq, fwd ? NV : NQ), "%s: finite", what);
                    }
                }
                arr[idx] = keep;
            }
        }
        /* retention's gamma: 0 and -inf are outside (0, 1] */
        const float gbad[2] = {0.0f, -INFINITY};
        for (int r = 0; r < 2; r++) {
            gam[1] = gbad[r];
            reset_outputs();
            char rule[120];
            snprintf(rule, sizeof rule, "seqk_retention: gamma[1] = %g", (double)gbad[r]);
            tf_expect_rejected(run(be->ctx, RET), SEQK_ERROR_INVALID_ARGUMENT, "gamma[1]", rule,
                               o, NV, s1, NS);
        }
        gam[1] = 0.9f;
    }
    return th_finish();
}
