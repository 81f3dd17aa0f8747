/* tests/mpi/mpi_util.c -- see mpi_util.h. */
#define _POSIX_C_SOURCE 200809L
#include "mpi_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int tm_rank, tm_size;

th_backend *tm_init(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &tm_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &tm_size);
    if (tm_size > TM_MAX_RANKS) {
        fprintf(stderr, "at most %d ranks\n", TM_MAX_RANKS);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    setenv("SEQK_TEST_BACKEND", "cpu", 1);
    th_backend *list = NULL;
    th_init(argc, argv, &list);
    th_set_threads(&list[0], 1); /* the ranks share the machine's cores */
    return &list[0];
}

int tm_finish(void)
{
    printf("rank %d of %d: ", tm_rank, tm_size);
    const int rc = th_finish();
    MPI_Finalize();
    return rc;
}

tm_split tm_even(int64_t T)
{
    int w[TM_MAX_RANKS];
    for (int r = 0; r < tm_size; r++) w[r] = 1;
    tm_split s = tm_weighted(T, w);
    snprintf(s.label, sizeof s.label, "T=%lld even over %d ranks", (long long)T, tm_size);
    return s;
}

tm_split tm_weighted(int64_t T, const int *w)
{
    tm_split s = {.T = T};
    int64_t sum = 0, off = 0;
    for (int r = 0; r < tm_size; r++) sum += w[r];
    int n = snprintf(s.label, sizeof s.label, "T=%lld as", (long long)T);
    for (int r = 0; r < tm_size; r++) {
        s.off[r] = off;
        s.len[r] = r == tm_size - 1 ? T - off : T * w[r] / sum;
        off += s.len[r];
        if (n < (int)sizeof s.label - 16)
            n += snprintf(s.label + n, sizeof s.label - (size_t)n, " %lld", (long long)s.len[r]);
    }
    return s;
}

void tm_gather(const tm_split *s, const float *loc, int64_t per_token, float *whole)
{
    int counts[TM_MAX_RANKS], displs[TM_MAX_RANKS];
    for (int r = 0; r < tm_size; r++) {
        counts[r] = (int)(s->len[r] * per_token);
        displs[r] = (int)(s->off[r] * per_token);
    }
    MPI_Gatherv(loc, counts[tm_rank], MPI_FLOAT, whole, counts, displs, MPI_FLOAT, 0,
                MPI_COMM_WORLD);
}

void tm_quiet_barrier(void)
{
    MPI_Request req;
    MPI_Ibarrier(MPI_COMM_WORLD, &req);
    int done = 0;
    const struct timespec ms = {0, 1000000};
    for (;;) {
        MPI_Test(&req, &done, MPI_STATUS_IGNORE);
        if (done) break;
        nanosleep(&ms, NULL);
    }
}
