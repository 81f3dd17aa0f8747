/* A program built against the *installed* libseqk_mpi (find_package(seqk
 * COMPONENTS mpi)): linear attention over the ranks of MPI_COMM_WORLD, each
 * rank one token of the sequence (all ones, K = V = 1), so the output of
 * the token on rank r is r + 1. */
#include <seqk_mpi.h>

#include <stdio.h>

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    seqk_context *ctx = NULL;
    float q = 1, k = 1, v = 1, o = 0;
    seqk_status st = seqk_context_create(&ctx, SEQK_BACKEND_CPU, 0);
    if (!st)
        st = seqk_mpi_linear_attention(ctx, MPI_COMM_WORLD, SEQK_MODE_PARALLEL, 1, 1, 1, 1, 1,
                                       1.0f, 0, &q, &k, &v, &o, NULL, NULL, NULL, NULL, 0);
    seqk_context_destroy(ctx);
    const int ok = st == SEQK_SUCCESS && o == (float)(rank + 1);
    printf("rank %d: %s o = %g (%s)\n", rank, ok ? "installed libseqk_mpi works:" : "FAILED:",
           (double)o, st ? seqk_last_error() : "ok");
    MPI_Finalize();
    return ok ? 0 : 1;
}
