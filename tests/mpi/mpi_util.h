/*
 * tests/mpi/mpi_util.h -- what the MPI tests (tests/mpi/test_mpi_*.c) share
 * on top of tests/harness.h: start-up, the split of a sequence over the
 * ranks, gathering the slices' outputs on rank 0, and a barrier that sleeps
 * instead of spinning (the ranks oversubscribe the cores while rank 0
 * computes the single-process reference).
 */
#ifndef SEQK_TEST_MPI_UTIL_H
#define SEQK_TEST_MPI_UTIL_H

#include "harness.h"

#include <mpi.h>

enum { TM_MAX_RANKS = 64 };

/* The split of T tokens over the ranks: rank r holds [off[r], off[r] + len[r]). */
typedef struct tm_split {
    int64_t T, off[TM_MAX_RANKS], len[TM_MAX_RANKS];
    char label[128];
} tm_split;

extern int tm_rank, tm_size;

/* MPI_Init, the harness on the CPU backend only, 1 thread per rank.
 * Returns the CPU backend. */
th_backend *tm_init(int argc, char **argv);
/* th_finish, MPI_Finalize; the exit code. */
int tm_finish(void);

/* T split evenly (the last ranks take the remainder). */
tm_split tm_even(int64_t T);
/* T split by weights w[r] (a weight 0 gives an empty slice). */
tm_split tm_weighted(int64_t T, const int *w);

/* Gathers every rank's slice (len[r] * per_token floats from loc) into
 * whole (rank 0 only; T * per_token floats). */
void tm_gather(const tm_split *s, const float *loc, int64_t per_token, float *whole);

/* A barrier whose waiting ranks sleep (1 ms polls). */
void tm_quiet_barrier(void);

#endif
