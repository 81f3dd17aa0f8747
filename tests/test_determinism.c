/* tests/test_determinism.c -- forward ops, both modes, and every backward:
 * the same inputs give the same bits on repeated runs and at 1, 2 and 3
 * threads (the split of work must not change the float order). Shapes with
 * few and with many (sequence, head) pairs, so that both ways of splitting
 * work run; the backwards also on 7 heads (pairs not a multiple of 2 or 3)
 * and with cu_seqlens (5 sequences, an empty one and one of length 1),
 * chunks of 32 (several per sequence). */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { T = 300, KD = 16, VD = 16 };

static float *in_q, *in_k, *in_v, *in_g, *in_beta, *in_eta, *in_theta, *in_alpha, *in_A;

/* op into out (at most T*H*VD floats), B = 1, H heads */
static seqk_status run(seqk_context *c, int op, int mode, int64_t H, float *out)
{
    const seqk_mode m = (seqk_mode)mode;
    switch (op) {
    case 0: return seqk_gated_retention(c, m, 1, T, H, KD, VD, 0.25f, in_q, in_k, in_v, in_g, out,
                                        NULL, NULL, NULL, 0, 32);
    case 1: return seqk_linear_attention(c, m, 1, T, H, KD, VD, 0.25f, SEQK_LINATTN_ELU1 |
                                         SEQK_LINATTN_NORMALIZE, in_q, in_k, in_v, out, NULL,
                                         NULL, NULL, NULL, NULL, 0, 32);
    case 2: return seqk_deltanet(c, m, 1, T, H, KD, VD, 0.25f, SEQK_DELTANET_L2NORM_QK, in_q, in_k,
                                 in_v, in_beta, in_g, out, NULL, NULL, NULL, 0, 32);
    case 3: return seqk_titans(c, m, 1, T, H, KD, VD, 0.25f, SEQK_TITANS_L2NORM_QK, 16, in_q, in_k,
                               in_v, in_eta, in_theta, in_alpha, out, NULL, NULL, NULL, 0);
    case 4: return seqk_selective_scan(c, m, 1, T, H * VD, 4, 1, SEQK_SSCAN_DT_SOFTPLUS, in_v, in_q,
                                       in_A, in_k, in_k + 4 * T, NULL, NULL, NULL, out, NULL, NULL,
                                       NULL, 0);
    case 5: return seqk_attention_parallel(c, 1, T, H, H, KD, VD, 0.25f,
                                           mode ? SEQK_ATTN_CAUSAL : 0u, in_q, in_k, in_v, out,
                                           NULL, NULL, 0);
    default: return seqk_scan(c, 1, T, H * VD, VD, mode ? SEQK_SCAN_REVERSE : 0u, in_eta, in_v,
                              NULL, out, NULL, NULL, 0);
    }
}

/* ---- backwards ---- */

enum { NB_OPS = 10, SLOT = T * 8 * KD, NSLOT = 10 };
static const char *const bwd_names[NB_OPS] = {
    "linear_attention_backward", "retention_backward", "gated_retention_backward",
    "mamba2_backward", "selective_scan_backward", "deltanet_backward (plain)",
    "deltanet_backward (gated)", "titans_backward", "attention_parallel_backward (causal)",
    "attention_parallel_backward (non-causal)"};
static const int32_t bwd_cu[6] = {0, 37, 38, 150, 150, 300};
static float *in_o, *in_lse; /* the attention forward's, per case */

/* Backward op into the gradient slots g[i * SLOT] (B = 1, T tokens, H
 * heads, varlen: bwd_cu); every state in and dstate_out given where the op
 * takes them, every optional gradient asked for. */
static seqk_status run_bwd(seqk_context *c, int op, int64_t H, bool varlen, float *g)
{
    const int32_t *cu = varlen ? bwd_cu : NULL;
    const int64_t N = varlen ? 5 : 0;
    float *s[NSLOT];
    for (int i = 0; i < NSLOT; i++) s[i] = g + (size_t)i * SLOT;
    switch (op) {
    case 0:
        return seqk_linear_attention_backward(c, 1, T, H, KD, VD, 0.25f,
                                              SEQK_LINATTN_ELU1 | SEQK_LINATTN_NORMALIZE, in_q,
                                              in_k, in_v, in_theta, NULL, NULL, in_k, in_eta, s[0],
                                              s[1], s[2], s[3], s[4], cu, N, 32);
    case 1:
        return seqk_retention_backward(c, 1, T, H, KD, VD, 0.25f, NULL, in_q, in_k, in_v,
                                       in_theta, in_v, in_k, s[0], s[1], s[2], s[3], cu, N, 32);
    case 2:
        return seqk_gated_retention_backward(c, 1, T, H, KD, VD, 0.25f, in_q, in_k, in_v, in_g,
                                             in_theta, in_v, in_k, s[0], s[1], s[2], s[3], s[4],
                                             cu, N, 32);
    case 3: /* x = v, Bm = k, Cm = q (G = 1, Nst = KD, P = VD) */
        return seqk_mamba2_backward(c, 1, T, H, VD, 1, KD, SEQK_MAMBA2_DT_SOFTPLUS, in_v, in_q,
                                    in_A, in_k, in_q + 4, in_beta, in_alpha, in_v, in_theta, in_k,
                                    s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], cu, N, 32);
    case 4: /* D = H VD channels, Nst = 4, G = 1 */
        return seqk_selective_scan_backward(c, 1, T, H * VD, 4, 1, SEQK_SSCAN_DT_SOFTPLUS, in_v,
                                            in_q, in_A, in_k, in_k + 4 * T, in_beta, in_alpha,
                                            in_eta, in_v, in_theta, in_k, s[0], s[1], s[2], s[3],
                                            s[4], s[5], s[6], s[7], s[8], cu, N);
    case 5:
    case 6:
        return seqk_deltanet_backward(c, 1, T, H, KD, VD, 0.25f, SEQK_DELTANET_L2NORM_QK, in_q,
                                      in_k, in_v, in_beta, op == 6 ? in_g : NULL, in_v, in_theta,
                                      in_k, s[0], s[1], s[2], s[3], op == 6 ? s[4] : NULL, s[5],
                                      cu, N, 32);
    case 7:
        return seqk_titans_backward(c, 1, T, H, KD, VD, 0.25f, SEQK_TITANS_L2NORM_QK, 16, in_q,
                                    in_k, in_v, in_eta, in_theta, in_alpha, NULL, in_v, in_k, s[0],
                                    s[1], s[2], s[3], s[4], s[5], s[6], cu, N);
    default:
        return seqk_attention_parallel_backward(c, 1, T, H, H, KD, VD, 0.25f,
                                                op == 8 ? SEQK_ATTN_CAUSAL : 0u, in_q, in_k, in_v,
                                                in_o, in_lse, in_theta, s[0], s[1], s[2], cu, N);
    }
}

static void backward_determinism(th_backend *be)
{
    const size_t n = (size_t)NSLOT * SLOT;
    float *first = th_floats(n), *out = th_floats(n);
    in_o = th_floats((size_t)T * 8 * VD), in_lse = th_floats((size_t)T * 8);
    for (int op = 0; op < NB_OPS; op++)
        for (int64_t H = 1; H <= 7; H += 6)
            for (int varlen = 0; varlen < 2; varlen++) {
                bool same = true, ran = true;
                if (op >= 8) { /* the forward's o and lse, once */
                    th_set_threads(be, 1);
                    ran &= seqk_attention_parallel(be->ctx, 1, T, H, H, KD, VD, 0.25f,
                                                   op == 8 ? SEQK_ATTN_CAUSAL : 0u, in_q, in_k,
                                                   in_v, in_o, in_lse, varlen ? bwd_cu : NULL,
                                                   varlen ? 5 : 0) == SEQK_SUCCESS;
                }
                for (int rep = 0; rep < 2; rep++)
                    for (int threads = 1; threads <= 3; threads++) {
                        th_set_threads(be, threads);
                        float *dst = rep == 0 && threads == 1 ? first : out;
                        memset(dst, 0, n * sizeof(float));
                        if (run_bwd(be->ctx, op, H, varlen, dst) != SEQK_SUCCESS) {
                            ran = false;
                            printf("  %s: %s\n", bwd_names[op], seqk_last_error());
                        } else if (dst == out) {
                            same &= memcmp(first, out, n * sizeof(float)) == 0;
                        }
                    }
                th_set_threads(be, 0);
                th_check(ran && same,
                         "determinism: %s H=%lld%s: gradients at 1, 2, 3 threads, twice, "
                         "bit-identical",
                         bwd_names[op], (long long)H, varlen ? " varlen (5 sequences)" : "");
            }
    free(first), free(out), free(in_o), free(in_lse);
}

static const char *const names[7] = {"gated_retention", "linear_attention", "deltanet", "titans",
                                     "selective_scan", "attention_parallel", "scan"};

int main(int argc, char **argv)
{
    th_backend *be;
    const int nb = th_init(argc, argv, &be);
    const size_t big = (size_t)T * 8 * KD * 4;
    th_seed(1904);
    in_q = th_floats(big), in_k = th_floats(big), in_v = th_floats(big), in_g = th_floats(big);
    in_beta = th_floats(big), in_eta = th_floats(big), in_theta = th_floats(big);
    in_alpha = th_floats(big), in_A = th_floats(big);
    th_fill(in_q, big, -1, 1), th_fill(in_k, big, -1, 1), th_fill(in_v, big, -1, 1);
    th_fill(in_g, big, -0.5, 0), th_fill(in_beta, big, 0, 1), th_fill(in_eta, big, 0, 0.9);
    th_fill(in_theta, big, 0, 0.05), th_fill(in_alpha, big, 0, 0.1), th_fill(in_A, big, -2, -0.1);
    float *first = th_floats(big), *out = th_floats(big);
    for (int b = 0; b < nb; b++) {
        if (be[b].backend != SEQK_BACKEND_CPU || th_skipped(&be[b], "determinism")) continue;
        for (int op = 0; op < 7; op++)
            for (int mode = 0; mode < 2; mode++)
                for (int64_t H = 1; H <= 8; H += 7) {
                    /* op 4, mode 1, H = 8 (selective scan, parallel, D = 128) was
                     * the finding "sscan tile width by thread count": 8- or
                     * 16-channel tiles were picked by the thread count, and the
                     * result differed in the last bits between 1 and 2-3 threads;
                     * the width now depends on the shape only */
                    const size_t n = (size_t)T * (size_t)H * VD;
                    bool same = true, ran = true;
                    for (int rep = 0; rep < 2; rep++)
                        for (int threads = 1; threads <= 3; threads++) {
                            th_set_threads(&be[b], threads);
                            float *dst = rep == 0 && threads == 1 ? first : out;
                            memset(dst, 0, n * sizeof(float));
                            if (run(be[b].ctx, op, mode, H, dst) != SEQK_SUCCESS) {
                                ran = false;
                                printf("  %s: %s\n", names[op], seqk_last_error());
                            } else if (dst == out)
                                same &= memcmp(first, out, n * sizeof(float)) == 0;
                        }
                    th_set_threads(&be[b], 0);
                    th_check(ran && same,
                             "determinism: %s mode %d H=%lld: runs at 1, 2, 3 threads, twice, "
                             "bit-identical",
                             names[op], mode, (long long)H);
                }
        backward_determinism(&be[b]);
    }
    free(first), free(out);
    free(in_q), free(in_k), free(in_v), free(in_g), free(in_beta), free(in_eta), free(in_theta);
    free(in_alpha), free(in_A);
    return th_finish();
}
