/* tests/test_nonfinite_inputs.c -- NaN / inf in data inputs (issue #19,
 * seqk.h "NaN and inf"): one token's key (or value) row of head 0 set to NaN
 * or +inf; every op, both modes, must return SEQK_SUCCESS, keep the outputs
 * of every earlier token and of the other head finite (causality: nothing
 * before the bad token depends on it; heads are independent), and give a
 * non-finite output at the bad token of head 0 (the math: its key or value
 * enters its own output). Single sequence, T = 150 (several chunks of 64),
 * the bad token 70 inside the second chunk, 6 tokens after its start (the
 * tokens of its chunk before it must stay finite too). */
#include "fixtures.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

enum { T = 150, H = 2, K = 8, V = 8, T0 = 70 };
enum { NT = T * H, NQ = NT * K, NV = NT * V, NS = H * (3 * K * V + 8) };

static float q[NQ], k[NQ], v[NV], g[NT], beta[NT], dt[NT], A[H * V * K], eta[NT], theta[NT],
    alpha[NT], o[NV], s1[NS], dtd[NV]; /* dtd: the selective scan's dt [T, D = H V] */

enum op { LINATTN, GATED, DELTANET, MAMBA2, SSCAN, TITANS, SOFTMAX, NOPS };
static const char *op_name[NOPS] = {"linear_attention", "gated_retention", "deltanet",
                                    "mamba2", "selective_scan", "titans", "attention_parallel"};

static seqk_status run(seqk_context *c, int op, seqk_mode m)
{
    const float sc = 0.35f;
    switch (op) {
    case LINATTN:
        return seqk_linear_attention(c, m, 1, T, H, K, V, sc, 0, q, k, v, o, NULL, s1, NULL, NULL,
                                     NULL, 0, 0);
    case GATED:
        return seqk_gated_retention(c, m, 1, T, H, K, V, sc, q, k, v, g, o, NULL, s1, NULL, 0, 0);
    case DELTANET:
        return seqk_deltanet(c, m, 1, T, H, K, V, sc, SEQK_DELTANET_L2NORM_QK, q, k, v, beta, g,
                             o, NULL, s1, NULL, 0, 0);
    case MAMBA2: /* x = v, Bm = k, Cm = q (G = H) */
        return seqk_mamba2(c, m, 1, T, H, V, H, K, 0, v, dt, A, k, q, NULL, NULL, o, NULL, s1,
                           NULL, 0, 0);
    case SSCAN: /* D = H * V channels (u = v), Nst = K, G = H groups: Bm = k, Cm = q */
        return seqk_selective_scan(c, m, 1, T, H * V, K, H, 0, v, dtd, A, k, q, NULL, NULL,
                                   NULL, o, NULL, NULL, NULL, 0);
    case TITANS:
        return seqk_titans(c, m, 1, T, H, K, V, sc, SEQK_TITANS_L2NORM_QK, 16, q, k, v, eta,
                           theta, alpha, o, NULL, s1, NULL, 0);
    default:
        return seqk_attention_parallel(c, 1, T, H, H, K, V, sc, SEQK_ATTN_CAUSAL, q, k, v, o,
                                       NULL, NULL, 0);
    }
}

int main(int argc, char **argv)
{
    th_backend *bes;
    const int nb = th_init(argc, argv, &bes);
    th_seed(1919);
    for (int b = 0; b < nb; b++) {
        th_backend *be = &bes[b];
        if (be->backend != SEQK_BACKEND_CPU) { /* host arrays below */
            th_skip("%s: nonfinite inputs are run on the CPU backend here", be->name);
            continue;
        }
        for (int op = 0; op < NOPS; op++)
            for (int mode = 0; mode < 2; mode++) {
                if (op == SOFTMAX && mode == 0) continue; /* one mode */
                const seqk_mode m = mode ? SEQK_MODE_PARALLEL : SEQK_MODE_RECURRENT;
                for (int arr = 0; arr < 2; arr++)     /* 0: k, 1: v */
                    for (int val = 0; val < 2; val++) { /* NaN, +inf */
                        th_fill(q, NQ, -1, 1), th_fill(k, NQ, -1, 1), th_fill(v, NV, -1, 1);
                        th_fill(g, NT, -1, 0), th_fill(beta, NT, 0, 1), th_fill(dt, NT, 0.1, 1);
                        th_fill(dtd, NV, 0.1, 1), th_fill(A, H * V * K, -2, -0.5);
                        th_fill(eta, NT, 0, 0.5), th_fill(theta, NT, 0, 0.1);
                        th_fill(alpha, NT, 0, 0.2);
                        const float bad = val ? INFINITY : NAN;
                        if (arr == 0)
                            for (int j = 0; j < K; j++) k[(T0 * H + 0) * K + j] = bad;
                        else
                            for (int j = 0; j < V; j++) v[(T0 * H + 0) * V + j] = bad;
                        th_poison(o, NV), th_poison(s1, NS);
                        char what[160];
                        snprintf(what, sizeof what, "%s %s: %s row of token %d, head 0 = %s",
                                 op_name[op], th_mode_name(m), arr ? "v" : "k", T0,
                                 val ? "+inf" : "NaN");
                        const seqk_status st = run(be->ctx, op, m);
                        if (!th_check_status(st, SEQK_SUCCESS, what)) continue;
                        /* the rows of one token: head h's V floats at (t H + h) V (the
                         * selective scan: channels [h V, (h+1) V) of token t, the same) */
                        bool early = true, other = true;
                        for (int t = 0; t < T; t++)
                            for (int h = 0; h < H; h++) {
                                const bool fin = tf_all_finite(o + (t * H + h) * V, V);
                                if (t < T0) early &= fin;
                                if (h == 1) other &= fin;
                            }
                        /* softmax attention: fixed by #19's finding 'attention masked
                         * NaN' (regression_attention_masked_nonfinite) */
                        th_check(early, "%s: outputs of tokens < %d finite", what, T0);
                        th_check(other, "%s: outputs of head 1 finite", what);
                        bool bad_out = false; /* the bad token's own output is non-finite */
                        for (int j = 0; j < V; j++) bad_out |= !isfinite(o[(T0 * H) * V + j]);
                        th_check(bad_out, "%s: output of token %d, head 0 non-finite", what, T0);
                    }
            }
    }
    return th_finish();
}
