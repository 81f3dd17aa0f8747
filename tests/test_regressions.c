/* tests/test_regressions.c -- one case per bug the fuzzers (tests/fuzz) found,
 * named after it. Each runs the call that exposed the bug; those that were
 * undefined behaviour only show under the ASan + UBSan build of the suite
 * (scripts/test.sh runs it), the others fail in any build. */
#include "fixtures.h"
#include "harness.h"
#include "ref/ref_linear.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* fuzz finding 1: the chunked linear-state engine's staged path put its
 * int64 chunk index right after [nchunks, H] floats of decays, misaligned
 * when nchunks * H * (E + 1) was odd (UBSan: store to misaligned address,
 * scan/chunk.c). Every tiny shape, 1..3 threads, small chunks (the staged
 * path), against the float64 reference. */
static void regression_chunk_index_misaligned(th_backend *be)
{
    if (be->backend != SEQK_BACKEND_CPU) return;
    int bad = 0, runs = 0;
    th_seed(19001);
    for (int threads = 1; threads <= 3; threads++)
        for (int64_t H = 1; H <= 3; H++)
            for (int64_t K = 1; K <= 3; K++)
                for (int64_t V = 1; V <= 3; V++)
                    for (int64_t T = 1; T <= 9; T += 4)
                        for (int64_t chunk = 1; chunk <= 3; chunk++) {
                            const size_t nq = (size_t)(T * H * K), nv = (size_t)(T * H * V);
                            float *q = th_floats(nq), *k = th_floats(nq), *v = th_floats(nv);
                            float *g = th_floats((size_t)(T * H)), *o = th_floats(nv);
                            double *ro = th_doubles(nv);
                            th_fill(q, nq, -1, 1), th_fill(k, nq, -1, 1), th_fill(v, nv, -1, 1);
                            th_fill(g, (size_t)(T * H), -1, 0);
                            th_set_threads(be, threads);
                            seqk_status st = seqk_gated_retention(
                                be->ctx, SEQK_MODE_PARALLEL, 1, T, H, K, V, 0.5f, q, k, v, g, o,
                                NULL, NULL, NULL, 0, chunk);
                            ref_decay dec = {2, NULL, g};
                            ref_linear_state(1, T, H, K, V, 0.5, 0, 0, dec, q, k, v, NULL, NULL,
                                             ro, NULL, NULL, NULL, 0);
                            runs++;
                            if (st != SEQK_SUCCESS || th_rel_err(o, ro, nv) > 1e-4) bad++;
                            free(q), free(k), free(v), free(g), free(o), free(ro);
                        }
    th_set_threads(be, 0);
    th_check(bad == 0, "regression_chunk_index_misaligned: %d of %d tiny staged calls wrong", bad,
             runs);
}

/* fuzz finding 2: seqk_linear_state_workspace_size was below what the call
 * took: with cu_seqlens it sized the engines for one sequence (their plan of
 * work per thread grows with the number of sequences), and it assumed the
 * normaliser's state was the larger case (the recurrent engine takes
 * several heads per item without it). Found as seqk_mamba2, recurrent,
 * N = 4 sequences over T = 7, H = 2, Nst = P = 3: needs 400 bytes, the
 * query said 384. Each call here runs with a caller workspace of exactly
 * the queried size and must succeed. */
static void regression_linear_state_workspace_query_bound(th_backend *be)
{
    if (be->backend != SEQK_BACKEND_CPU) return;
    static const int32_t cu[5] = {0, 1, 1, 4, 7};
    const int64_t T = 7, H = 2, K = 3, V = 3;
    float x[7 * 2 * 3], dt[7 * 2], A[2] = {-0.5f, -1.0f}, Bm[7 * 2 * 3], Cm[7 * 2 * 3];
    float y[7 * 2 * 3], q[7 * 2 * 3], k[7 * 2 * 3];
    th_seed(19002);
    th_fill(x, 42, -1, 1), th_fill(dt, 14, -1, 1), th_fill(Bm, 42, -1, 1), th_fill(Cm, 42, -1, 1);
    th_fill(q, 42, 0.1, 1), th_fill(k, 42, 0.1, 1);
    int bad = 0, runs = 0;
    for (int threads = 1; threads <= 3; threads++)
        for (int mode = 0; mode < 2; mode++)
            for (int varlen = 0; varlen < 2; varlen++)
                for (int op = 0; op < 3; op++) {
                    th_set_threads(be, threads);
                    const int64_t B = varlen ? 1 : 7, TT = varlen ? T : 1, N = varlen ? 4 : 0;
                    size_t bytes = 0;
                    seqk_status st = seqk_linear_state_workspace_size(
                        be->ctx, (seqk_mode)mode, B, TT, H, K, V, N, 0, &bytes);
                    void *ws = tf_workspace_begin(be, bytes);
                    const int32_t *c = varlen ? cu : NULL;
                    if (st == SEQK_SUCCESS && op == 0)
                        st = seqk_mamba2(be->ctx, (seqk_mode)mode, B, TT, H, V, 2, K,
                                         SEQK_MAMBA2_DT_SOFTPLUS, x, dt, A, Bm, Cm, NULL, NULL, y,
                                         NULL, NULL, c, N, 0);
                    if (st == SEQK_SUCCESS && op == 1)
                        st = seqk_linear_attention(be->ctx, (seqk_mode)mode, B, TT, H, K, V, 0.5f,
                                                   0, q, k, x, y, NULL, NULL, NULL, NULL, c, N, 0);
                    if (st == SEQK_SUCCESS && op == 2)
                        st = seqk_linear_attention(be->ctx, (seqk_mode)mode, B, TT, H, K, V, 0.5f,
                                                   SEQK_LINATTN_NORMALIZE, q, k, x, y, NULL, NULL,
                                                   NULL, NULL, c, N, 0);
                    tf_workspace_end(be, ws);
                    runs++;
                    if (st != SEQK_SUCCESS) {
                        bad++;
                        printf("  threads %d mode %d varlen %d op %d: %s\n", threads, mode,
                               varlen, op, seqk_last_error());
                    }
                }
    th_set_threads(be, 0);
    th_check(bad == 0,
             "regression_linear_state_workspace_query_bound: %d of %d calls failed with a "
             "workspace of the queried size", bad, runs);
}

/* fuzz finding 3: seqk_selective_scan and its backward read A while
 * loading per-channel constants even for T = 0, where A may be NULL (it is
 * required only when B*T > 0): a NULL dereference (UBSan: zero offset to a
 * null pointer). T = 0 with state_in and state_out must copy the state. */
static void regression_sscan_empty_null_A(th_backend *be)
{
    if (be->backend != SEQK_BACKEND_CPU) return;
    const int64_t D = 3, Nst = 2;
    float s_in[6] = {1, 2, 3, 4, 5, 6}, s_out[6], ds_out[6] = {6, 5, 4, 3, 2, 1}, ds_in[6];
    for (int mode = 0; mode < 2; mode++) {
        memset(s_out, 0, sizeof s_out);
        seqk_status st = seqk_selective_scan(be->ctx, (seqk_mode)mode, 1, 0, D, Nst, 1, 0, NULL,
                                             NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, s_in,
                                             s_out, NULL, 0);
        th_check(st == SEQK_SUCCESS && memcmp(s_in, s_out, sizeof s_in) == 0,
                 "regression_sscan_empty_null_A: %s forward, T=0, A=NULL: status %d (%s)",
                 th_mode_name((seqk_mode)mode), (int)st, seqk_last_error());
    }
    memset(ds_in, 0, sizeof ds_in);
    seqk_status st = seqk_selective_scan_backward(
        be->ctx, 1, 0, D, Nst, 1, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, s_in, NULL,
        ds_out, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, ds_in, NULL, 0);
    th_check(st == SEQK_SUCCESS && memcmp(ds_in, ds_out, sizeof ds_in) == 0,
             "regression_sscan_empty_null_A: backward, T=0, A=NULL: status %d (%s)", (int)st,
             seqk_last_error());
}

int main(int argc, char **argv)
{
    th_backend *be;
    const int n = th_init(argc, argv, &be);
    for (int i = 0; i < n; i++) {
        if (th_skipped(&be[i], "regressions")) continue;
        regression_chunk_index_misaligned(&be[i]);
        regression_linear_state_workspace_query_bound(&be[i]);
        regression_sscan_empty_null_A(&be[i]);
    }
    return th_finish();
}
