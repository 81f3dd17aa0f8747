/*
 * tests/mpi/test_mpi_ring_attention.c -- split == whole for
 * seqk_mpi_attention_ring (softmax attention by ring passing of key/value
 * blocks): outputs and log-sum-exp against seqk_attention_parallel on the
 * whole sequence (rank 0), causal and not, grouped-query heads, batch 2,
 * even and uneven slices with an empty rank, negative and zero scale.
 * Run under mpiexec (CTest: 4 ranks). Softmax attention costs T^2: the
 * long case is 8,192 tokens (SEQK_MPI_TEST_RING_T overrides), not 2^20.
 */
#include "fixtures.h"
#include "mpi_util.h"
#include "seqk_mpi.h"

#include <stdio.h>
#include <stdlib.h>

static void run_case(seqk_context *ctx, const tm_split *sp, int64_t B, int64_t Hq, int64_t Hkv,
                     int64_t K, int64_t V, float scale, unsigned flags)
{
    tf_arrays A = tf_arrays_on(NULL);
    const int64_t T = sp->T, pq = Hq * K, pk = Hkv * K, pv = Hkv * V, po = Hq * V;
    char what[256];
    snprintf(what, sizeof what, "ring attention %s B=%lld Hq=%lld Hkv=%lld scale=%g, %s",
             (flags & SEQK_ATTN_CAUSAL) ? "causal" : "full", (long long)B, (long long)Hq,
             (long long)Hkv, (double)scale, sp->label);
    th_seed(77);
    /* whole inputs [B,T,..] on every rank; the slices are copied out per batch entry */
    float *q = tf_random(&A, (size_t)(B * T * pq), -1, 1), *k = tf_random(&A, (size_t)(B * T * pk), -1, 1);
    float *v = tf_random(&A, (size_t)(B * T * pv), -1, 1);
    float *dout = tf_random(&A, (size_t)(B * T * po), -1, 1);
    float *o_ref = NULL, *l_ref = NULL, *g_ref[3] = {NULL, NULL, NULL};
    const int64_t pg[3] = {pq, pk, pv}; /* floats per token of dq, dk, dv */
    if (tm_rank == 0) {
        o_ref = tf_floats(&A, (size_t)(B * T * po));
        l_ref = tf_floats(&A, (size_t)(B * Hq * T));
        for (int i = 0; i < 3; i++) g_ref[i] = tf_floats(&A, (size_t)(B * T * pg[i]));
        th_poison(o_ref, (size_t)(B * T * po));
        seqk_status st = seqk_attention_parallel(ctx, B, T, Hq, Hkv, K, V, scale, flags, q, k, v,
                                                 o_ref, l_ref, NULL, 0);
        if (!st)
            st = seqk_attention_parallel_backward(ctx, B, T, Hq, Hkv, K, V, scale, flags, q, k, v,
                                                  o_ref, l_ref, dout, g_ref[0], g_ref[1],
                                                  g_ref[2], NULL, 0);
        if (st) {
            th_check(false, "%s: reference: %s", what, seqk_last_error());
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
    }
    tm_quiet_barrier();
    const int64_t o0 = sp->off[tm_rank], Tl = sp->len[tm_rank];
    float *ql = tf_floats(&A, (size_t)(B * Tl * pq + 1)), *kl = tf_floats(&A, (size_t)(B * Tl * pk + 1));
    float *vl = tf_floats(&A, (size_t)(B * Tl * pv + 1)), *ol = tf_floats(&A, (size_t)(B * Tl * po + 1));
    float *ll = tf_floats(&A, (size_t)(B * Hq * Tl + 1));
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < Tl * pq; i++) ql[b * Tl * pq + i] = q[(b * T + o0) * pq + i];
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < Tl * pk; i++) kl[b * Tl * pk + i] = k[(b * T + o0) * pk + i];
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < Tl * pv; i++) vl[b * Tl * pv + i] = v[(b * T + o0) * pv + i];
    th_poison(ol, (size_t)(B * Tl * po + 1));
    th_poison(ll, (size_t)(B * Hq * Tl + 1));
    const bool e = Tl == 0; /* an empty slice passes NULL arrays */
    const seqk_status st = seqk_mpi_attention_ring(ctx, MPI_COMM_WORLD, B, Tl, Hq, Hkv, K, V, scale,
                                                   flags, e ? NULL : ql, e ? NULL : kl,
                                                   e ? NULL : vl, e ? NULL : ol, e ? NULL : ll);
    th_check(st == SEQK_SUCCESS, "%s: %s", what, st ? seqk_last_error() : "");
    th_check(ol[B * Tl * po] != ol[B * Tl * po] && ll[B * Hq * Tl] != ll[B * Hq * Tl],
             "%s: nothing written past o and lse (rank %d)", what, tm_rank);
    /* gather per batch entry (o) and per (batch, head) row (lse) */
    float *o_all = tm_rank == 0 ? tf_floats(&A, (size_t)(B * T * po)) : NULL;
    float *l_all = tm_rank == 0 ? tf_floats(&A, (size_t)(B * Hq * T)) : NULL;
    for (int64_t b = 0; b < B; b++) {
        tm_gather(sp, ol + b * Tl * po, po, o_all ? o_all + b * T * po : NULL);
        for (int64_t h = 0; h < Hq; h++)
            tm_gather(sp, ll + (b * Hq + h) * Tl, 1, l_all ? l_all + (b * Hq + h) * T : NULL);
    }
    if (tm_rank == 0) {
        th_check_close_f(o_all, o_ref, (size_t)(B * T * po), 1e-5, "%s: o", what);
        th_check_close_f(l_all, l_ref, (size_t)(B * Hq * T), 1e-5, "%s: lse", what);
    }
    /* the backward from the split forward's o and lse */
    float *dl = tf_floats(&A, (size_t)(B * Tl * po + 1)), *gl[3];
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < Tl * po; i++) dl[b * Tl * po + i] = dout[(b * T + o0) * po + i];
    for (int i = 0; i < 3; i++) {
        gl[i] = tf_floats(&A, (size_t)(B * Tl * pg[i] + 1));
        th_poison(gl[i], (size_t)(B * Tl * pg[i] + 1));
    }
    const seqk_status sb = seqk_mpi_attention_ring_backward(
        ctx, MPI_COMM_WORLD, B, Tl, Hq, Hkv, K, V, scale, flags, e ? NULL : ql, e ? NULL : kl,
        e ? NULL : vl, e ? NULL : ol, e ? NULL : ll, e ? NULL : dl, e ? NULL : gl[0],
        e ? NULL : gl[1], e ? NULL : gl[2]);
    th_check(sb == SEQK_SUCCESS, "%s: backward: %s", what, sb ? seqk_last_error() : "");
    const char *gn[3] = {"dq", "dk", "dv"};
    for (int i = 0; i < 3; i++) {
        th_check(gl[i][B * Tl * pg[i]] != gl[i][B * Tl * pg[i]], "%s: nothing written past %s",
                 what, gn[i]);
        float *all = tm_rank == 0 ? tf_floats(&A, (size_t)(B * T * pg[i])) : NULL;
        for (int64_t b = 0; b < B; b++)
            tm_gather(sp, gl[i] + b * Tl * pg[i], pg[i], all ? all + b * T * pg[i] : NULL);
        if (tm_rank == 0)
            th_check_close_f(all, g_ref[i], (size_t)(B * T * pg[i]), 1e-5, "%s: %s", what, gn[i]);
    }
    tf_arrays_free(&A);
}

int main(int argc, char **argv)
{
    th_backend *be = tm_init(argc, argv);
    const char *env = getenv("SEQK_MPI_TEST_RING_T");
    const int64_t T = env && atoll(env) > 0 ? atoll(env) : 8192;
    const tm_split even = tm_even(T);
    run_case(be->ctx, &even, 1, 4, 2, 16, 16, 0.25f, SEQK_ATTN_CAUSAL);
    int w[TM_MAX_RANKS];
    for (int r = 0; r < tm_size; r++) w[r] = (r * 5) % 7 + 1;
    if (tm_size > 2) w[2] = 0; /* an empty rank */
    const tm_split uneven = tm_weighted(3001, w);
    run_case(be->ctx, &uneven, 2, 4, 2, 8, 12, 0.3f, SEQK_ATTN_CAUSAL);
    run_case(be->ctx, &uneven, 2, 3, 1, 8, 12, -0.7f, 0);
    run_case(be->ctx, &uneven, 1, 2, 2, 8, 4, 0.0f, SEQK_ATTN_CAUSAL);
    run_case(be->ctx, &uneven, 1, 2, 2, 8, 4, 0.0f, 0);
    return tm_finish();
}
