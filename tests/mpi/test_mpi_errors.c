/*
 * tests/mpi/test_mpi_errors.c -- the argument rules of libseqk_mpi, one case
 * per rule: the bad argument is passed on one rank only, and every rank
 * must return the same status, a message naming the argument (and the
 * failing rank), and leave its outputs untouched. Run under mpiexec
 * (CTest: 4 ranks).
 */
#include "fixtures.h"
#include "mpi_util.h"
#include "seqk_mpi.h"

#include <stdio.h>
#include <string.h>

enum { T = 64, H = 2, K = 4, V = 4 };

static float q[T * H * K], k[T * H * K], v[T * H * V], g[T * H], beta[T * H], dout[T * H * V];
static float o[T * H * V], s_out[H * K * V], dq[T * H * K], dk[T * H * K], dv[T * H * V],
    dg[T * H], ds_in[H * K * V];

static void reset_outputs(void)
{
    float *outs[7] = {o, s_out, dq, dk, dv, dg, ds_in};
    const size_t n[7] = {T * H * V, H * K * V, T * H * K, T * H * K, T * H * V, T * H, H * K * V};
    for (int i = 0; i < 7; i++) tf_fill_untouched(outs[i], n[i]);
}

/* Every rank got `want`, the message names needle, nothing was written. */
static void expect(seqk_status got, seqk_status want, const char *needle, const char *rule)
{
    int mine = (int)got, lo = 0, hi = 0;
    MPI_Allreduce(&mine, &lo, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(&mine, &hi, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    th_check(lo == hi, "validation: %s: the same status on every rank (%d .. %d)", rule, lo, hi);
    tf_expect_rejected(got, want, needle, rule, o, T * H * V, s_out, H * K * V);
    const float *gr[5] = {dq, dk, dv, dg, ds_in};
    const size_t n[5] = {T * H * K, T * H * K, T * H * V, T * H, H * K * V};
    bool untouched = true;
    for (int i = 0; i < 5; i++)
        for (size_t j = 0; j < n[i]; j++) untouched &= gr[i][j] == TF_UNTOUCHED;
    th_check(untouched, "validation: %s: gradients untouched (rank %d)", rule, tm_rank);
    reset_outputs();
}

static seqk_status gret(seqk_context *ctx, MPI_Comm comm, int64_t Tl, int64_t Hl, float scale,
                        const float *gl, float *ol)
{
    return seqk_mpi_gated_retention(ctx, comm, SEQK_MODE_PARALLEL, 1, Tl, Hl, K, V, scale, q, k,
                                    v, gl, ol, NULL, s_out, 0);
}

int main(int argc, char **argv)
{
    th_backend *be = tm_init(argc, argv);
    seqk_context *ctx = be->ctx;
    const int bad = tm_size - 1; /* the rank that passes the bad argument */
    const bool me = tm_rank == bad;
    th_seed(5);
    th_fill(q, T * H * K, -1, 1);
    th_fill(k, T * H * K, -1, 1);
    th_fill(v, T * H * V, -1, 1);
    th_fill(g, T * H, -1, 0);
    th_fill(beta, T * H, 0, 1);
    th_fill(dout, T * H * V, -1, 1);
    tf_unit_rows(k, T * H, K);
    reset_outputs();
    char rank_needle[32];
    snprintf(rank_needle, sizeof rank_needle, "rank %d", bad);

    /* the rules seqk_mpi checks itself */
    expect(gret(ctx, MPI_COMM_NULL, T, H, 0.5f, g, o), SEQK_ERROR_INVALID_ARGUMENT,
           "MPI_COMM_NULL", "comm = MPI_COMM_NULL");
    expect(gret(me ? NULL : ctx, MPI_COMM_WORLD, T, H, 0.5f, g, o), SEQK_ERROR_INVALID_ARGUMENT,
           rank_needle, "ctx NULL on one rank");
    expect(gret(ctx, MPI_COMM_WORLD, me ? -1 : T, H, 0.5f, g, o), SEQK_ERROR_INVALID_ARGUMENT,
           "T=", "T < 0 on one rank");
    expect(gret(ctx, MPI_COMM_WORLD, T, me ? 1 : H, 0.5f, g, o), SEQK_ERROR_INVALID_ARGUMENT,
           "H=1 on rank", "H differs between ranks");
    expect(gret(ctx, MPI_COMM_WORLD, T, H, me ? 0.25f : 0.5f, g, o), SEQK_ERROR_INVALID_ARGUMENT,
           "scale", "scale differs between ranks");
    expect(gret(ctx, MPI_COMM_WORLD, T, H, 0.5f, g, me ? NULL : o), SEQK_ERROR_INVALID_ARGUMENT,
           "o", "o NULL on one rank");
    expect(seqk_mpi_gated_retention(ctx, MPI_COMM_WORLD, SEQK_MODE_PARALLEL, 1, T, H, K, V, 0.5f,
                                    q, k, v, g, me ? (float *)q : o, NULL, s_out, 0),
           SEQK_ERROR_INVALID_ARGUMENT, "overlaps", "o overlaps q on one rank");
    expect(seqk_mpi_deltanet(ctx, MPI_COMM_WORLD, SEQK_MODE_PARALLEL, 1, T, H, K, V, 0.5f,
                             me ? SEQK_DELTANET_L2NORM_QK : 0u, q, k, v, beta, NULL, o, NULL,
                             s_out, 0),
           SEQK_ERROR_INVALID_ARGUMENT, "flags", "flags differ between ranks");
    expect(seqk_mpi_deltanet(ctx, MPI_COMM_WORLD, SEQK_MODE_PARALLEL, 1, T, H, K, V, 0.5f, 0, q,
                             k, v, beta, me ? g : NULL, o, NULL, s_out, 0),
           SEQK_ERROR_INVALID_ARGUMENT, "g given", "g given on one rank only");
    expect(seqk_mpi_gated_retention_backward(ctx, MPI_COMM_WORLD, 1, T, H, K, V, 0.5f, q, k, v, g,
                                             dout, NULL, NULL, me ? NULL : dq, dk, dv, dg, ds_in,
                                             0),
           SEQK_ERROR_INVALID_ARGUMENT, "dq", "backward: dq NULL on one rank");
    expect(seqk_mpi_gated_retention_backward(ctx, MPI_COMM_WORLD, 1, T, H, K, V, 0.5f, q, k, v, g,
                                             dout, NULL, NULL, dq, dk, dv, me ? (float *)g : dg,
                                             ds_in, 0),
           SEQK_ERROR_INVALID_ARGUMENT, "overlaps", "backward: dg overlaps g on one rank");

    /* the rules of the library calls on the slice, found on one rank */
    static float gbad[T * H];
    memcpy(gbad, g, sizeof gbad);
    gbad[17] = 0.5f;
    expect(gret(ctx, MPI_COMM_WORLD, T, H, 0.5f, me ? gbad : g, o), SEQK_ERROR_INVALID_ARGUMENT,
           rank_needle, "a log-gate > 0 on one rank");
    static float bbad[T * H];
    memcpy(bbad, beta, sizeof bbad);
    bbad[3] = 1.5f;
    expect(seqk_mpi_deltanet(ctx, MPI_COMM_WORLD, SEQK_MODE_PARALLEL, 1, T, H, K, V, 0.5f, 0, q,
                             k, v, me ? bbad : beta, NULL, o, NULL, s_out, 0),
           SEQK_ERROR_INVALID_ARGUMENT, "beta[3]", "beta > 1 on one rank");
    expect(seqk_mpi_deltanet_backward(ctx, MPI_COMM_WORLD, 1, T, H, K, V, 0.5f, 0, q, k, v,
                                      me ? bbad : beta, NULL, NULL, dout, NULL, dq, dk, dv, dg,
                                      NULL, ds_in, 0),
           SEQK_ERROR_INVALID_ARGUMENT, "beta[3]", "backward: beta > 1 on one rank");
    expect(gret(ctx, MPI_COMM_WORLD, T, H, 0.5f, me ? NULL : g, o), SEQK_ERROR_INVALID_ARGUMENT,
           "g", "g NULL on one rank");
    expect(seqk_mpi_gated_retention(ctx, MPI_COMM_WORLD, SEQK_MODE_PARALLEL, 1, T, H, K, V, 0.5f,
                                    q, k, v, g, o, NULL, s_out, me ? 2000 : 0),
           SEQK_ERROR_INVALID_ARGUMENT, "chunk", "chunk differs (and is out of range) on one rank");

    /* ring attention */
    expect(seqk_mpi_attention_ring(ctx, MPI_COMM_WORLD, 1, T, H, me ? 2 : 1, K, V, 0.5f, 1, q, k,
                                   v, o, NULL),
           SEQK_ERROR_INVALID_ARGUMENT, "Hkv", "ring: Hkv differs between ranks");
    expect(seqk_mpi_attention_ring(ctx, MPI_COMM_WORLD, 1, T, 3, 2, K, V, 0.5f, 1, q, k, v, o,
                                   NULL),
           SEQK_ERROR_INVALID_ARGUMENT, "Hq", "ring: Hq % Hkv != 0");
    expect(seqk_mpi_attention_ring(ctx, MPI_COMM_WORLD, 1, T, H, H, K, V, 0.5f, 1, q, k, v,
                                   me ? NULL : o, NULL),
           SEQK_ERROR_INVALID_ARGUMENT, "o", "ring: o NULL on one rank");
    expect(seqk_mpi_attention_ring(ctx, MPI_COMM_WORLD, 1, T, H, H, K, V, 0.5f, 1, q, k, v, o,
                                   me ? (float *)v : NULL),
           SEQK_ERROR_INVALID_ARGUMENT, "overlaps", "ring: lse overlaps v on one rank");
    static float lse[H * T];
    expect(seqk_mpi_attention_ring_backward(ctx, MPI_COMM_WORLD, 1, T, H, H, K, V, 0.5f, 1, q, k,
                                            v, dout, me ? NULL : lse, dout, dq, dk, dv),
           SEQK_ERROR_INVALID_ARGUMENT, "lse", "ring backward: lse NULL on one rank");
    expect(seqk_mpi_attention_ring_backward(ctx, MPI_COMM_WORLD, 1, T, H, H, K, V, 0.5f, 1, q, k,
                                            v, dout, lse, dout, dq, me ? (float *)k : dk, dv),
           SEQK_ERROR_INVALID_ARGUMENT, "overlaps", "ring backward: dk overlaps k on one rank");
    return tm_finish();
}
