/*
 * mpi/common.h -- what the context-parallel ops (mpi/context_parallel.c) and
 * ring attention (mpi/ring_attention.c) share: the entry checks, the
 * agreement of arguments and statuses over the communicator, and the
 * counted point-to-point and collective calls. Not installed.
 */
#ifndef SEQK_MPI_COMMON_H
#define SEQK_MPI_COMMON_H

#include "seqk_mpi.h"

#include "../core/internal.h"

#include <stdbool.h>
#include <stdint.h>

/* The communicator as the ops see it. */
typedef struct seqkm_comm {
    MPI_Comm comm;
    int rank, size;
} seqkm_comm;

/* The call's arguments that every rank must pass alike, and its local token
 * count: gathered from every rank by seqkm_agree_args. */
enum { SEQKM_DESC_FIELDS = 16 };
typedef struct seqkm_desc {
    int64_t T;                        /* the rank's tokens (may differ) */
    int64_t want;                     /* bit mask of optional outputs this rank asks for */
    int64_t v[SEQKM_DESC_FIELDS];     /* must agree */
    const char *name[SEQKM_DESC_FIELDS]; /* not sent: names for the message */
    int n;                            /* fields used */
} seqkm_desc;

/* Adds one field that must agree over the ranks. SEQKM_ANY matches every
 * value (e.g. whether a per-token array is given, on a rank whose slice is
 * empty); the others must equal the first rank's that is not SEQKM_ANY. */
#define SEQKM_ANY INT64_MIN
void seqkm_desc_add(seqkm_desc *d, const char *name, int64_t value);

/* The checks before any communication (each rank alone): MPI initialised
 * and not finalised, comm an intracommunicator (not MPI_COMM_NULL), ctx a
 * CPU context. Fills c; c->comm stays MPI_COMM_NULL when the communicator
 * itself is unusable (the caller then returns at once: nobody to agree with). */
seqk_status seqkm_begin(const char *fn, seqk_context *ctx, MPI_Comm comm, seqkm_comm *c);

/* Gathers every rank's descriptor and its local status st (the result of
 * the rank's own checks so far): all ranks return the same status, with the
 * first failing rank's message, or INVALID_ARGUMENT when a field differs
 * from rank 0's. On success Ts[r] (size entries, caller-allocated) holds
 * every rank's T and *want_any the OR of the want masks. */
seqk_status seqkm_agree_args(const char *fn, const seqkm_comm *c, const seqkm_desc *d,
                             seqk_status st, int64_t *Ts, int64_t *want_any);

/* Agrees on st over the ranks: SUCCESS when every rank succeeded; else the
 * status of the lowest failing rank r on every rank, with the message
 * "fn: rank r: <its message>". */
seqk_status seqkm_agree(const char *fn, const seqkm_comm *c, seqk_status st);

/* Counted MPI calls (seqk_mpi_traffic); an MPI error gives SEQK_ERROR_BACKEND
 * with MPI's message. dst / src may be MPI_PROC_NULL. */
seqk_status seqkm_sendrecv(const char *fn, const seqkm_comm *c, const void *sbuf, int64_t sbytes,
                           int dst, void *rbuf, int64_t rbytes, int src);
seqk_status seqkm_isend(const char *fn, const seqkm_comm *c, const void *buf, int64_t bytes,
                        int dst, MPI_Request *req);
seqk_status seqkm_irecv(const char *fn, const seqkm_comm *c, void *buf, int64_t bytes, int src,
                        MPI_Request *req);
seqk_status seqkm_waitall(const char *fn, int n, MPI_Request *reqs);
/* Broadcast of n floats from root (counted once at the root). */
seqk_status seqkm_bcast_floats(const char *fn, const seqkm_comm *c, float *buf, int64_t n,
                               int root);
/* In-place sum of n doubles over the ranks. */
seqk_status seqkm_allreduce_sum(const char *fn, const seqkm_comm *c, double *buf, int64_t n);

/* SUCCESS when a message of `bytes` fits one MPI call (int count), else
 * UNSUPPORTED naming what. Called with sizes every rank knows alike, so
 * that every rank fails alike, before any message. */
seqk_status seqkm_check_message(const char *fn, const char *what, int64_t bytes);

/* calloc that sets OUT_OF_MEMORY with fn and what in the message. */
seqk_status seqkm_alloc(const char *fn, const char *what, size_t bytes, void **p);

#endif
