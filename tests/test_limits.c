/* tests/test_limits.c -- sizes whose element or byte counts overflow int64
 * or size_t: every call must fail with INVALID_ARGUMENT before it touches
 * memory (the pointers here are dummies that would fault if dereferenced),
 * and every workspace query must fail rather than return a wrapped size. */
#include "harness.h"

#include <stdio.h>

#define BIG ((int64_t)1 << 62)

static void expect_invalid(seqk_status st, const char *what)
{
    char w[256];
    snprintf(w, sizeof w, "limits: %s", what);
    th_check_status(st, SEQK_ERROR_INVALID_ARGUMENT, w);
}

int main(int argc, char **argv)
{
    th_backend *be;
    const int n = th_init(argc, argv, &be);
    for (int i = 0; i < n; i++) {
        if (th_skipped(&be[i], "limits")) continue;
        seqk_context *c = be[i].ctx;
        float *p = (float *)(uintptr_t)64; /* never dereferenced */
        size_t bytes = 0;
        expect_invalid(seqk_scan(c, 1, BIG, 4, 1, 0, p, p + 1, NULL, p + 2, NULL, NULL, 0),
                       "seqk_scan T=2^62, C=4");
        expect_invalid(seqk_scan_workspace_size(c, 4, BIG, 4, 1, 0, 0, &bytes),
                       "seqk_scan_workspace_size B*T*C overflows");
        expect_invalid(seqk_gated_retention(c, SEQK_MODE_PARALLEL, 1, BIG, 1, 4, 1, 1.0f, p, p, p,
                                            p, p + 8, NULL, NULL, NULL, 0, 0),
                       "seqk_gated_retention T=2^62, K=4");
        expect_invalid(seqk_linear_state_workspace_size(c, SEQK_MODE_PARALLEL, 2, BIG, 2, 4, 4, 0,
                                                        0, &bytes),
                       "seqk_linear_state_workspace_size B*T*H*K overflows");
        expect_invalid(seqk_linear_state_backward_workspace_size(c, 2, BIG, 2, 2, 4, 4, 0, 0,
                                                                 &bytes),
                       "seqk_linear_state_backward_workspace_size overflows");
        expect_invalid(seqk_selective_scan(c, SEQK_MODE_RECURRENT, 1, BIG, 8, 4, 1, 0, p, p, p, p,
                                           p, NULL, NULL, NULL, p + 8, NULL, NULL, NULL, 0),
                       "seqk_selective_scan T=2^62, D=8");
        expect_invalid(seqk_deltanet(c, SEQK_MODE_RECURRENT, 1, BIG, 1, 4, 4, 1.0f, 0, p, p, p, p,
                                     NULL, p + 8, NULL, NULL, NULL, 0, 0),
                       "seqk_deltanet T=2^62, K=4");
        expect_invalid(seqk_titans(c, SEQK_MODE_RECURRENT, 1, BIG, 1, 4, 4, 1.0f, 0, 1, p, p, p,
                                   p, p, p, p + 8, NULL, NULL, NULL, 0),
                       "seqk_titans T=2^62, K=4");
        expect_invalid(seqk_attention_parallel(c, 1, BIG, 1, 1, 4, 4, 1.0f, 0, p, p, p, p + 8,
                                               NULL, NULL, 0),
                       "seqk_attention_parallel T=2^62, K=4");
        expect_invalid(seqk_attention_parallel_workspace_size(c, 4, BIG, 4, 4, 4, 4, 0, 0, &bytes),
                       "seqk_attention_parallel_workspace_size overflows");
        expect_invalid(seqk_attention_decode_workspace_size(c, BIG, 4, 4, 4, 4, 8, &bytes),
                       "seqk_attention_decode_workspace_size B=2^62 overflows");
        /* state sizes: N*H*K*V overflows although the token arrays are empty */
        expect_invalid(seqk_linear_attention(c, SEQK_MODE_RECURRENT, BIG, 0, 1024, 1024, 1024, 1.0f,
                                             0, NULL, NULL, NULL, NULL, p, p + 8, NULL, NULL, NULL,
                                             0, 0),
                       "seqk_linear_attention state [B=2^62,H,K,V] overflows at T=0");
        size_t floats = 0;
        th_check_status(seqk_titans_state_size(BIG, BIG, &floats), SEQK_ERROR_INVALID_ARGUMENT,
                        "limits: seqk_titans_state_size K=V=2^62");
    }
    return th_finish();
}
