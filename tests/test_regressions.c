/* tests/test_regressions.c -- one case per bug the fuzzers (tests/fuzz) found,
 * named after it. Each runs the call that exposed the bug; those that were
 * undefined behaviour only show under the ASan + UBSan build of the suite
 * (scripts/test.sh runs it), the others fail in any build. */
#include "harness.h"
#include "ref/ref_linear.h"

#include <stdio.h>
#include <stdlib.h>

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

int main(int argc, char **argv)
{
    th_backend *be;
    const int n = th_init(argc, argv, &be);
    for (int i = 0; i < n; i++) {
        if (th_skipped(&be[i], "regressions")) continue;
        regression_chunk_index_misaligned(&be[i]);
    }
    return th_finish();
}
