/* tests/test_regressions.c -- one case per bug the fuzzers (tests/fuzz) found,
 * named after it. Each runs the call that exposed the bug; those that were
 * undefined behaviour only show under the ASan + UBSan build of the suite
 * (scripts/test.sh runs it), the others fail in any build. */
#include "fixtures.h"
#include "harness.h"
#include "ref/ref_attention_backward.h"
#include "ref/ref_linear.h"

#include <math.h>
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
    /* fuzz finding 5 (session 12): seqk_mamba2's parallel mode reserved its
     * workspace from the engine's plan before reading cu_seqlens, which
     * counts N whole sequences of T tokens; with fewer (sequence, head) pairs
     * than threads the chunk-parallel engine's arrays grow with the chunks:
     * B = 1, T = 17, N = 2, H = 1, chunk = 2, 3 threads asked 4024 bytes
     * against the query's 3900 */
    {
        static const int32_t cu2[3] = {0, 8, 17};
        float x2[17 * 4], dt2[17], A2[1] = {-0.5f}, B2[17 * 3], C2[17 * 3], y2[17 * 4];
        th_fill(x2, 68, -1, 1), th_fill(dt2, 17, -1, 1), th_fill(B2, 51, -1, 1);
        th_fill(C2, 51, -1, 1);
        for (int threads = 1; threads <= 3; threads++)
            for (int mode = 0; mode < 2; mode++) {
                th_set_threads(be, threads);
                size_t bytes = 0;
                seqk_status st = seqk_linear_state_workspace_size(be->ctx, (seqk_mode)mode, 1, 17,
                                                                  1, 3, 4, 2, 2, &bytes);
                void *ws = tf_workspace_begin(be, bytes);
                if (st == SEQK_SUCCESS)
                    st = seqk_mamba2(be->ctx, (seqk_mode)mode, 1, 17, 1, 4, 1, 3, 0, x2, dt2, A2,
                                     B2, C2, NULL, NULL, y2, NULL, NULL, cu2, 2, 2);
                tf_workspace_end(be, ws);
                runs++;
                if (st != SEQK_SUCCESS) {
                    bad++;
                    printf("  mamba2 T=17 N=2 chunk=2 threads %d mode %d: %s\n", threads, mode,
                           seqk_last_error());
                }
            }
    }
    th_set_threads(be, 0);
    th_check(bad == 0,
             "regression_linear_state_workspace_query_bound: %d of %d calls failed with a "
             "workspace of the queried size", bad, runs);
}

/* session 12: the linear-state backward walks groups of heads, as many as
 * keep every state within SEQK__LIN_BWD_FULL_BYTES (8 MiB per thread); a
 * varlen workspace query (no cu_seqlens) plans for the longest possible
 * sequence (one head, checkpoints), while short sequences may walk several
 * heads with every state kept, which needs more: here 5 sequences of 128
 * tokens, K = V = 512 (1 MiB states), 4 heads walked together against the
 * query's plan of T = 640 tokens (10 chunks, checkpoints every 4); the
 * first version of the grouping asked more than the query said. Each call
 * runs with a caller workspace of exactly the queried size and must succeed
 * and give the bits of the same call on the context's own workspace. */
static void regression_backward_varlen_query_heads(th_backend *be)
{
    if (be->backend != SEQK_BACKEND_CPU) return;
    enum { NS = 5, LEN = 128, T = NS * LEN, H = 4, K = 512, V = 512, CH = 64 };
    int32_t cu[NS + 1];
    for (int i = 0; i <= NS; i++) cu[i] = i * LEN;
    tf_arrays a = tf_arrays_on(NULL);
    const size_t nqk = (size_t)T * H * K, nv = (size_t)T * H * V;
    float *q = tf_random(&a, nqk, -1, 1), *k = tf_random(&a, nqk, -1, 1);
    float *v = tf_random(&a, nv, -1, 1), *dout = tf_random(&a, nv, -1, 1);
    float *g[2][3];
    for (int r = 0; r < 2; r++) {
        g[r][0] = tf_floats(&a, nqk), g[r][1] = tf_floats(&a, nqk), g[r][2] = tf_floats(&a, nv);
    }
    int bad = 0, runs = 0;
    for (int threads = 1; threads <= 3; threads++) {
        th_set_threads(be, threads);
        for (int r = 0; r < 2; r++) { /* r = 0: exact queried workspace; 1: the context's */
            for (int j = 0; j < 3; j++)
                for (size_t i = 0; i < (j < 2 ? nqk : nv); i++) g[r][j][i] = NAN;
            size_t bytes = 0;
            seqk_status st =
                seqk_linear_state_backward_workspace_size(be->ctx, 1, T, H, H, K, V, NS, CH, &bytes);
            void *ws = r == 0 ? tf_workspace_begin(be, bytes) : NULL;
            if (st == SEQK_SUCCESS)
                st = seqk_linear_attention_backward(be->ctx, 1, T, H, K, V, 0.5f, 0, q, k, v, dout,
                                                    NULL, NULL, NULL, NULL, g[r][0], g[r][1],
                                                    g[r][2], NULL, NULL, cu, NS, CH);
            if (r == 0) tf_workspace_end(be, ws);
            runs++;
            if (st != SEQK_SUCCESS) {
                bad++;
                printf("  threads %d %s workspace: %s\n", threads, r ? "own" : "queried",
                       seqk_last_error());
            }
        }
        if (memcmp(g[0][0], g[1][0], nqk * sizeof(float)) ||
            memcmp(g[0][1], g[1][1], nqk * sizeof(float)) ||
            memcmp(g[0][2], g[1][2], nv * sizeof(float))) {
            bad++;
            printf("  threads %d: gradients differ between the two workspaces\n", threads);
        }
    }
    th_set_threads(be, 0);
    tf_arrays_free(&a);
    th_check(bad == 0,
             "regression_backward_varlen_query_heads: %d of %d calls failed or differed", bad,
             runs);
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

/* finding 'attention masked NaN' (tests/test_nonfinite_inputs.c): a NaN or
 * inf row that a query does not see (after it under the causal mask, or in
 * another sequence) reached that query's output and gradients through its
 * masked probability 0 times the row: the CPU forward's P V over a diagonal
 * key tile (p = 0 times a value row), the CPU and CUDA backwards' dS = p (dP
 * - D) (0 times a NaN dP from a value row or D from an output), dQ += dS K
 * (0 times a key row), dK += dS^T Q and dV += P^T dO (0 times a query or
 * output-gradient row); the CUDA forward the same in its P V. Each of q, k,
 * v, dout gets one NaN or +inf row (token 100 of 150, query head 0, key/value
 * head 0 of 1: GQA with 2 query heads), causal, and non-causal with
 * cu_seqlens {0, 70, 150}: every output and gradient that does not depend on
 * that row is finite and matches the float64 reference of the clean data;
 * 1 and 3 threads on the CPU (two passes and the fused one). */
enum { AM_T = 150, AM_HQ = 2, AM_K = 16, AM_V = 20, AM_T0 = 100 };
static const int32_t am_cu[3] = {0, 70, 150};

/* Does query t see key j? */
static bool am_sees(bool causal, int64_t t, int64_t j)
{
    const int st = t >= am_cu[1], sj = j >= am_cu[1]; /* the sequence (varlen) */
    return causal ? j <= t : st == sj;
}

/* Checks the rows of out [AM_T][H][w] that do not depend on the bad row
 * (dep(t, h) false): finite, and close to ref. */
static void am_check(const char *what, const char *name, const float *out, const double *ref,
                     int64_t H, int64_t w, bool causal, int arr,
                     bool (*dep)(bool causal, int arr, int64_t t, int64_t h))
{
    double num = 0, den = 0;
    int64_t nonfin = 0, rows = 0;
    for (int64_t t = 0; t < AM_T; t++)
        for (int64_t h = 0; h < H; h++) {
            if (dep(causal, arr, t, h)) continue;
            rows++;
            for (int64_t x = 0; x < w; x++) {
                const size_t i = (size_t)((t * H + h) * w + x);
                if (!isfinite(out[i])) nonfin++;
                num += (out[i] - ref[i]) * (out[i] - ref[i]);
                den += ref[i] * ref[i];
            }
        }
    th_check(rows > 0 && nonfin == 0 && sqrt(num / den) < 1e-3,
             "regression_attention_masked_nonfinite: %s: %s: %lld unrelated rows, %lld non-finite "
             "values, rel err %.3g", what, name, (long long)rows, (long long)nonfin,
             sqrt(num / den));
}

/* arr: 0 q, 1 k, 2 v, 3 dout (q and dout: query head 0's row AM_T0). */
static bool am_dep_o(bool causal, int arr, int64_t t, int64_t h) /* o and dq */
{
    return arr == 0 || arr == 3 ? t == AM_T0 && h == 0 : am_sees(causal, t, AM_T0);
}
static bool am_dep_kv(bool causal, int arr, int64_t j, int64_t h) /* dk and dv */
{
    (void)h;
    if (arr == 0 || arr == 3) return am_sees(causal, AM_T0, j);
    for (int64_t t = 0; t < AM_T; t++) /* a query that sees both keys */
        if (am_sees(causal, t, j) && am_sees(causal, t, AM_T0)) return true;
    return false;
}

static void regression_attention_masked_nonfinite(th_backend *be)
{
    const int64_t T = AM_T, Hq = AM_HQ, K = AM_K, V = AM_V;
    const size_t nq = (size_t)(T * Hq * K), nk = (size_t)(T * K), nv = (size_t)(T * V),
                 no = (size_t)(T * Hq * V), nl = (size_t)(Hq * T);
    const double sc = 0.3;
    th_seed(19004);
    tf_arrays h = tf_arrays_on(NULL);
    float *q = tf_random(&h, nq, -1, 1), *k = tf_random(&h, nk, -1, 1);
    float *v = tf_random(&h, nv, -1, 1), *dout = tf_random(&h, no, -1, 1);
    float *o = tf_floats(&h, no), *dq = tf_floats(&h, nq), *dk = tf_floats(&h, nk),
          *dv = tf_floats(&h, nv);
    double *qd = tf_doubles(&h, nq), *kd = tf_doubles(&h, nk), *vd = tf_doubles(&h, nv),
           *dod = tf_doubles(&h, no), *ro = tf_doubles(&h, no), *rq = tf_doubles(&h, nq),
           *rk = tf_doubles(&h, nk), *rv = tf_doubles(&h, nv);
    for (size_t i = 0; i < nq; i++) qd[i] = q[i];
    for (size_t i = 0; i < nk; i++) kd[i] = k[i];
    for (size_t i = 0; i < nv; i++) vd[i] = v[i];
    for (size_t i = 0; i < no; i++) dod[i] = dout[i];
    for (int causal = 1; causal >= 0; causal--) {
        const int32_t *cu = causal ? NULL : am_cu;
        const int64_t N = causal ? 0 : 2;
        ref_attention_forward64(1, T, Hq, 1, K, V, sc, causal, qd, kd, vd, ro, cu, N);
        ref_attention_backward(1, T, Hq, 1, K, V, sc, causal, qd, kd, vd, dod, rq, rk, rv, cu, N);
        for (int threads = 1; threads <= 3; threads += 2)
            for (int arr = 0; arr < 4; arr++)
                for (int val = 0; val < 2; val++) {
                    if (be->backend != SEQK_BACKEND_CPU && threads > 1) continue;
                    th_set_threads(be, threads);
                    float *bad = arr == 0 ? q : arr == 1 ? k : arr == 2 ? v : dout;
                    const int64_t w = arr == 2 ? V : arr == 3 ? V : K,
                                  stride = arr == 0 || arr == 3 ? Hq : 1;
                    float *row = bad + AM_T0 * stride * w;
                    float keep[AM_V];
                    memcpy(keep, row, (size_t)w * sizeof(float));
                    for (int64_t x = 0; x < w; x++) row[x] = val ? INFINITY : NAN;
                    tf_arrays d = tf_arrays_on(be);
                    float *d_q = tf_upload(&d, q, nq * sizeof(float));
                    float *d_k = tf_upload(&d, k, nk * sizeof(float));
                    float *d_v = tf_upload(&d, v, nv * sizeof(float));
                    float *d_do = tf_upload(&d, dout, no * sizeof(float));
                    float *d_o = tf_poisoned(&d, no), *d_l = tf_poisoned(&d, nl);
                    float *d_dq = tf_poisoned(&d, nq), *d_dk = tf_poisoned(&d, nk),
                          *d_dv = tf_poisoned(&d, nv);
                    const int32_t *d_cu = cu ? tf_upload(&d, cu, sizeof am_cu) : NULL;
                    const unsigned fl = causal ? SEQK_ATTN_CAUSAL : 0;
                    char what[160];
                    snprintf(what, sizeof what, "%s, %s row of token %d = %s, %d thread(s)",
                             causal ? "causal" : "varlen {0,70,150}",
                             arr == 0 ? "q" : arr == 1 ? "k" : arr == 2 ? "v" : "dout", AM_T0,
                             val ? "+inf" : "NaN", threads);
                    seqk_status st = seqk_attention_parallel(be->ctx, 1, T, Hq, 1, K, V,
                                                             (float)sc, fl, d_q, d_k, d_v, d_o,
                                                             d_l, d_cu, N);
                    if (th_check_status(st, SEQK_SUCCESS, what)) {
                        th_download(be, o, d_o, no * sizeof(float));
                        if (arr < 3)
                            am_check(what, "o", o, ro, Hq, V, causal, arr, am_dep_o);
                        st = seqk_attention_parallel_backward(be->ctx, 1, T, Hq, 1, K, V,
                                                              (float)sc, fl, d_q, d_k, d_v, d_o,
                                                              d_l, d_do, d_dq, d_dk, d_dv, d_cu,
                                                              N);
                    }
                    if (th_check_status(st, SEQK_SUCCESS, what)) {
                        th_download(be, dq, d_dq, nq * sizeof(float));
                        th_download(be, dk, d_dk, nk * sizeof(float));
                        th_download(be, dv, d_dv, nv * sizeof(float));
                        am_check(what, "dq", dq, rq, Hq, K, causal, arr, am_dep_o);
                        /* with a bad k or v row every key shares a query with
                         * it under the causal mask: nothing to check there */
                        if (!causal || arr == 0 || arr == 3) {
                            am_check(what, "dk", dk, rk, 1, K, causal, arr, am_dep_kv);
                            am_check(what, "dv", dv, rv, 1, V, causal, arr, am_dep_kv);
                        }
                    }
                    tf_arrays_free(&d);
                    memcpy(row, keep, (size_t)w * sizeof(float));
                }
    }
    th_set_threads(be, 0);
    tf_arrays_free(&h);
}

int main(int argc, char **argv)
{
    th_backend *be;
    const int n = th_init(argc, argv, &be);
    for (int i = 0; i < n; i++) {
        if (th_skipped(&be[i], "regressions")) continue;
        regression_chunk_index_misaligned(&be[i]);
        regression_linear_state_workspace_query_bound(&be[i]);
        regression_backward_varlen_query_heads(&be[i]);
        regression_sscan_empty_null_A(&be[i]);
        regression_attention_masked_nonfinite(&be[i]);
    }
    return th_finish();
}
