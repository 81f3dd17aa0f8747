/* mpi/common.c -- entry checks, agreement over the communicator and the
 * counted MPI calls of libseqk_mpi (see mpi/common.h). */
#include "common.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* ---- traffic counters (seqk_mpi_traffic) ----------------------------------- */

enum { SEQKM_TAG = 0x5e9 };

static _Thread_local uint64_t traffic_bytes, traffic_messages;

static void count(int64_t bytes)
{
    traffic_bytes += (uint64_t)bytes;
    traffic_messages++;
}

void seqk_mpi_traffic(uint64_t *bytes_sent, uint64_t *messages_sent, int reset)
{
    if (bytes_sent) *bytes_sent = traffic_bytes;
    if (messages_sent) *messages_sent = traffic_messages;
    if (reset) traffic_bytes = traffic_messages = 0;
}

/* ---- errors ------------------------------------------------------------------- */

static seqk_status mpi_fail(const char *fn, const char *call, int err)
{
    char msg[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    if (MPI_Error_string(err, msg, &len) != MPI_SUCCESS) msg[0] = 0;
    return seqk__fail(SEQK_ERROR_BACKEND, "%s: %s failed: %s", fn, call, msg);
}

seqk_status seqkm_check_message(const char *fn, const char *what, int64_t bytes)
{
    if (bytes < 0 || bytes > INT_MAX)
        return seqk__fail(SEQK_ERROR_UNSUPPORTED,
                          "%s: %s of %lld bytes is more than one MPI message takes (INT_MAX)",
                          fn, what, (long long)bytes);
    return SEQK_SUCCESS;
}

static seqk_status check_bytes(const char *fn, int64_t bytes)
{
    return seqkm_check_message(fn, "a message", bytes);
}

seqk_status seqkm_alloc(const char *fn, const char *what, size_t bytes, void **p)
{
    *p = calloc(1, bytes ? bytes : 1);
    if (!*p)
        return seqk__fail(SEQK_ERROR_OUT_OF_MEMORY, "%s: cannot allocate %zu bytes for %s", fn,
                          bytes, what);
    return SEQK_SUCCESS;
}

/* ---- entry checks -------------------------------------------------------------- */

seqk_status seqkm_begin(const char *fn, seqk_context *ctx, MPI_Comm comm, seqkm_comm *c)
{
    int init = 0, fin = 0, inter = 0, err;
    c->comm = MPI_COMM_NULL; /* until the communicator is known to be usable */
    c->rank = 0, c->size = 1;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (!init || fin)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: MPI is %s", fn,
                          fin ? "finalized" : "not initialized (call MPI_Init first)");
    if (comm == MPI_COMM_NULL)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: comm is MPI_COMM_NULL", fn);
    if ((err = MPI_Comm_test_inter(comm, &inter)) != MPI_SUCCESS)
        return mpi_fail(fn, "MPI_Comm_test_inter", err);
    if (inter)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                          "%s: comm is an intercommunicator (an intracommunicator is needed)", fn);
    MPI_Comm_rank(comm, &c->rank);
    MPI_Comm_size(comm, &c->size);
    c->comm = comm;
    seqk_status st = seqk__check_ctx(fn, ctx);
    if (st) return st;
    seqk_backend be = SEQK_BACKEND_CPU;
    seqk_context_backend(ctx, &be);
    if (be != SEQK_BACKEND_CPU)
        return seqk__fail(SEQK_ERROR_UNSUPPORTED,
                          "%s: only CPU contexts are supported (docs/context-parallel.md: NCCL "
                          "for GPU buffers)",
                          fn);
    return SEQK_SUCCESS;
}

/* ---- agreement ---------------------------------------------------------------------- */

void seqkm_desc_add(seqkm_desc *d, const char *name, int64_t value)
{
    if (d->n >= SEQKM_DESC_FIELDS) return; /* callers add a fixed, smaller number */
    d->name[d->n] = name;
    d->v[d->n++] = value;
}

seqk_status seqkm_agree(const char *fn, const seqkm_comm *c, seqk_status st)
{
    int mine = st ? c->rank : c->size, first = c->size, err;
    if ((err = MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, c->comm)) != MPI_SUCCESS)
        return mpi_fail(fn, "MPI_Allreduce", err);
    count((int64_t)sizeof mine);
    if (first == c->size) return SEQK_SUCCESS;
    struct {
        int status;
        char msg[1000];
    } m;
    memset(&m, 0, sizeof m);
    if (c->rank == first) {
        m.status = (int)st;
        strncpy(m.msg, seqk_last_error(), sizeof m.msg - 1);
        count((int64_t)sizeof m);
    }
    if ((err = MPI_Bcast(&m, (int)sizeof m, MPI_BYTE, first, c->comm)) != MPI_SUCCESS)
        return mpi_fail(fn, "MPI_Bcast", err);
    m.msg[sizeof m.msg - 1] = 0;
    const size_t nf = strlen(fn); /* "fn: rank r: what", without fn twice */
    const char *what = !strncmp(m.msg, fn, nf) && !strncmp(m.msg + nf, ": ", 2) ? m.msg + nf + 2 : m.msg;
    return seqk__fail((seqk_status)m.status, "%s: rank %d: %s", fn, first, what);
}

seqk_status seqkm_agree_args(const char *fn, const seqkm_comm *c, const seqkm_desc *d,
                             seqk_status st, int64_t *Ts, int64_t *want_any)
{
    /* First the local statuses, then (all ranks well) the descriptors. */
    enum { W = 3 + SEQKM_DESC_FIELDS };
    int64_t mine[W] = {d->T, d->want, d->n};
    for (int i = 0; i < d->n; i++) mine[3 + i] = d->v[i];
    int64_t *all = NULL;
    if (!st) st = seqkm_alloc(fn, "the gathered arguments", (size_t)c->size * sizeof mine,
                              (void **)&all);
    seqk_status s = seqkm_agree(fn, c, st);
    if (s) {
        free(all);
        return s;
    }
    int err = MPI_Allgather(mine, W, MPI_INT64_T, all, W, MPI_INT64_T, c->comm);
    if (err != MPI_SUCCESS) {
        free(all);
        return mpi_fail(fn, "MPI_Allgather", err);
    }
    count((int64_t)sizeof mine);
    int64_t any = 0;
    int first[SEQKM_DESC_FIELDS]; /* per field, the first rank with a value */
    for (int i = 0; i < d->n; i++) first[i] = -1;
    for (int r = 0; r < c->size; r++) {
        const int64_t *a = all + (size_t)r * W;
        Ts[r] = a[0];
        any |= a[1];
        for (int i = 0; i < d->n; i++) {
            if (a[3 + i] == SEQKM_ANY) continue;
            if (first[i] < 0) first[i] = r;
            const int64_t ref = all[(size_t)first[i] * W + 3 + i];
            if (a[3 + i] != ref) {
                s = seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                               "%s: %s=%lld on rank %d differs from %s=%lld on rank %d (every "
                               "rank must pass the same)",
                               fn, d->name[i], (long long)a[3 + i], r, d->name[i],
                               (long long)ref, first[i]);
                free(all);
                return s; /* every rank finds the same first difference */
            }
        }
    }
    free(all);
    *want_any = any;
    return SEQK_SUCCESS;
}

/* ---- counted calls ------------------------------------------------------------------- */

seqk_status seqkm_sendrecv(const char *fn, const seqkm_comm *c, const void *sbuf, int64_t sbytes,
                           int dst, void *rbuf, int64_t rbytes, int src)
{
    seqk_status st;
    if ((st = check_bytes(fn, sbytes)) || (st = check_bytes(fn, rbytes))) return st;
    int err = MPI_Sendrecv(sbuf, dst == MPI_PROC_NULL ? 0 : (int)sbytes, MPI_BYTE, dst, SEQKM_TAG,
                           rbuf, src == MPI_PROC_NULL ? 0 : (int)rbytes, MPI_BYTE, src, SEQKM_TAG,
                           c->comm, MPI_STATUS_IGNORE);
    if (err != MPI_SUCCESS) return mpi_fail(fn, "MPI_Sendrecv", err);
    if (dst != MPI_PROC_NULL) count(sbytes);
    return SEQK_SUCCESS;
}

seqk_status seqkm_isend(const char *fn, const seqkm_comm *c, const void *buf, int64_t bytes,
                        int dst, MPI_Request *req)
{
    seqk_status st = check_bytes(fn, bytes);
    if (st) return st;
    int err = MPI_Isend(buf, (int)bytes, MPI_BYTE, dst, SEQKM_TAG, c->comm, req);
    if (err != MPI_SUCCESS) return mpi_fail(fn, "MPI_Isend", err);
    count(bytes);
    return SEQK_SUCCESS;
}

seqk_status seqkm_irecv(const char *fn, const seqkm_comm *c, void *buf, int64_t bytes, int src,
                        MPI_Request *req)
{
    seqk_status st = check_bytes(fn, bytes);
    if (st) return st;
    int err = MPI_Irecv(buf, (int)bytes, MPI_BYTE, src, SEQKM_TAG, c->comm, req);
    return err == MPI_SUCCESS ? SEQK_SUCCESS : mpi_fail(fn, "MPI_Irecv", err);
}

seqk_status seqkm_waitall(const char *fn, int n, MPI_Request *reqs)
{
    int err = MPI_Waitall(n, reqs, MPI_STATUSES_IGNORE);
    return err == MPI_SUCCESS ? SEQK_SUCCESS : mpi_fail(fn, "MPI_Waitall", err);
}

seqk_status seqkm_bcast_floats(const char *fn, const seqkm_comm *c, float *buf, int64_t n,
                               int root)
{
    seqk_status st = check_bytes(fn, n * (int64_t)sizeof(float));
    if (st) return st;
    int err = MPI_Bcast(buf, (int)n, MPI_FLOAT, root, c->comm);
    if (err != MPI_SUCCESS) return mpi_fail(fn, "MPI_Bcast", err);
    if (c->rank == root) count(n * (int64_t)sizeof(float));
    return SEQK_SUCCESS;
}

seqk_status seqkm_allreduce_sum(const char *fn, const seqkm_comm *c, double *buf, int64_t n)
{
    seqk_status st = check_bytes(fn, n * (int64_t)sizeof(double));
    if (st) return st;
    int err = MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_DOUBLE, MPI_SUM, c->comm);
    if (err != MPI_SUCCESS) return mpi_fail(fn, "MPI_Allreduce", err);
    count(n * (int64_t)sizeof(double));
    return SEQK_SUCCESS;
}
