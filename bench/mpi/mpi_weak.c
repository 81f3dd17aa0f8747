/*
 * bench/mpi/mpi_weak.c -- weak scaling of libseqk_mpi's context parallelism
 * (seqk-mpi-weak; run by scripts/bench_mpi.sh under mpiexec with 1, 2, 4
 * ranks): a fixed number of tokens per rank, the forward and backward of
 * gated retention and DeltaNet over all ranks. Per row: the median over
 * --reps of the slowest rank's time per call (barrier before each call),
 * tokens per second of the whole sequence, and the bytes each rank handed
 * to MPI in one call (seqk_mpi_traffic; the most of any rank) next to the
 * scan's payload from the state-size formula:
 *
 *   linear-state family: rounds x B H (K V + 1) doubles per scan
 *   DeltaNet:            rounds x B H (K K + K V) doubles per scan
 *
 * rounds = ceil(log2 P) (recursive doubling); a forward runs one scan, a
 * backward two. The rest of the measured bytes is the agreement of
 * arguments and statuses (a few hundred bytes per call).
 *
 *   seqk-mpi-weak [--tokens N] [--heads H] [--dk K] [--dv V] [--reps R] [--threads n]
 */
#define _POSIX_C_SOURCE 200809L
#include "seqk_mpi.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int rank, size;

static void die(const char *what, seqk_status st)
{
    fprintf(stderr, "rank %d: %s: %s (%s)\n", rank, what, seqk_status_string(st), seqk_last_error());
    MPI_Abort(MPI_COMM_WORLD, 1);
}

static int cmp(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static float *arr(size_t n, double lo, double hi, unsigned *seed)
{
    float *p = malloc((n ? n : 1) * sizeof(float));
    if (!p) die("malloc", SEQK_ERROR_OUT_OF_MEMORY);
    for (size_t i = 0; i < n; i++) {
        *seed = *seed * 1664525u + 1013904223u;
        p[i] = (float)(lo + (hi - lo) * ((*seed >> 8) / 16777216.0));
    }
    return p;
}

typedef struct bench_in {
    seqk_context *ctx;
    int64_t T, H, K, V;
    float *q, *k, *v, *g, *beta, *o, *dout, *dq, *dk, *dv, *dg, *dbeta;
} bench_in;

static seqk_status call(const bench_in *b, int which)
{
    const MPI_Comm w = MPI_COMM_WORLD;
    const float sc = 1.0f / sqrtf((float)b->K);
    switch (which) {
    case 0:
        return seqk_mpi_gated_retention(b->ctx, w, SEQK_MODE_PARALLEL, 1, b->T, b->H, b->K, b->V,
                                        sc, b->q, b->k, b->v, b->g, b->o, NULL, NULL, 0);
    case 1:
        return seqk_mpi_gated_retention_backward(b->ctx, w, 1, b->T, b->H, b->K, b->V, sc, b->q,
                                                 b->k, b->v, b->g, b->dout, NULL, NULL, b->dq,
                                                 b->dk, b->dv, b->dg, NULL, 0);
    case 2:
        return seqk_mpi_deltanet(b->ctx, w, SEQK_MODE_PARALLEL, 1, b->T, b->H, b->K, b->V, sc, 0,
                                 b->q, b->k, b->v, b->beta, NULL, b->o, NULL, NULL, 0);
    default:
        return seqk_mpi_deltanet_backward(b->ctx, w, 1, b->T, b->H, b->K, b->V, sc, 0, b->q, b->k,
                                          b->v, b->beta, NULL, NULL, b->dout, NULL, b->dq, b->dk,
                                          b->dv, b->dbeta, NULL, NULL, 0);
    }
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    int64_t T = 65536, H = 2, K = 16, V = 16;
    int reps = 5, threads = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        const long long x = atoll(argv[i + 1]);
        if (!strcmp(argv[i], "--tokens")) T = x;
        else if (!strcmp(argv[i], "--heads")) H = x;
        else if (!strcmp(argv[i], "--dk")) K = x;
        else if (!strcmp(argv[i], "--dv")) V = x;
        else if (!strcmp(argv[i], "--reps")) reps = (int)x;
        else if (!strcmp(argv[i], "--threads")) threads = (int)x;
    }
    if (reps < 1 || reps > 100) reps = 5;
    bench_in b = {.T = T, .H = H, .K = K, .V = V};
    seqk_status st = seqk_context_create(&b.ctx, SEQK_BACKEND_CPU, 0);
    if (st) die("context", st);
    seqk_context_set_threads(b.ctx, threads);
    unsigned seed = 12345u + (unsigned)rank;
    const size_t nq = (size_t)(T * H * K), nv = (size_t)(T * H * V), ng = (size_t)(T * H);
    b.q = arr(nq, -1, 1, &seed), b.k = arr(nq, -1, 1, &seed), b.v = arr(nv, -1, 1, &seed);
    b.dout = arr(nv, -1, 1, &seed), b.g = arr(ng, -0.01, 0, &seed), b.beta = arr(ng, 0, 1, &seed);
    for (size_t r = 0; r < ng; r++) { /* unit-norm keys: DeltaNet's stable regime */
        double s = 0.0;
        for (int64_t i = 0; i < K; i++) s += (double)b.k[r * K + i] * b.k[r * K + i];
        for (int64_t i = 0; i < K; i++) b.k[r * K + i] = (float)(b.k[r * K + i] / sqrt(s));
    }
    b.o = arr(nv, 0, 0, &seed), b.dq = arr(nq, 0, 0, &seed), b.dk = arr(nq, 0, 0, &seed);
    b.dv = arr(nv, 0, 0, &seed), b.dg = arr(ng, 0, 0, &seed), b.dbeta = arr(ng, 0, 0, &seed);
    const char *names[4] = {"gated retention fwd", "gated retention bwd", "deltanet fwd",
                            "deltanet bwd"};
    const double elem[4] = {(double)(H * (K * V + 1)), (double)(H * (K * V + 1)),
                            (double)(H * (K * K + K * V)), (double)(H * (K * K + K * V))};
    if (rank == 0) {
        char host[256] = "?";
        FILE *f = fopen("/proc/sys/kernel/hostname", "r");
        if (f) {
            if (fgets(host, sizeof host, f)) host[strcspn(host, "\n")] = 0;
            fclose(f);
        }
        printf("# seqk-mpi-weak: %d ranks x %d thread(s), %lld tokens per rank, B=1 H=%lld "
               "K=%lld V=%lld, median of %d, seqk %s, host %s\n",
               size, threads, (long long)T, (long long)H, (long long)K, (long long)V, reps,
               seqk_version(), host);
        printf("%-20s %5s %10s %10s %10s %12s %12s %12s\n", "op", "ranks", "tok/rank", "tokens",
               "ms", "Mtok/s", "bytes/rank", "formula");
    }
    double *t = malloc((size_t)reps * sizeof(double));
    for (int which = 0; which < 4; which++) {
        if ((st = call(&b, which))) die(names[which], st); /* warm-up, traffic */
        uint64_t bytes = 0, msgs = 0;
        seqk_mpi_traffic(NULL, NULL, 1);
        if ((st = call(&b, which))) die(names[which], st);
        seqk_mpi_traffic(&bytes, &msgs, 1);
        unsigned long long mb = 0, mine = bytes;
        MPI_Reduce(&mine, &mb, 1, MPI_UNSIGNED_LONG_LONG, MPI_MAX, 0, MPI_COMM_WORLD);
        for (int r = 0; r < reps; r++) {
            MPI_Barrier(MPI_COMM_WORLD);
            struct timespec a, z;
            clock_gettime(CLOCK_MONOTONIC, &a);
            if ((st = call(&b, which))) die(names[which], st);
            clock_gettime(CLOCK_MONOTONIC, &z);
            double dt = (double)(z.tv_sec - a.tv_sec) + 1e-9 * (double)(z.tv_nsec - a.tv_nsec), mx;
            MPI_Allreduce(&dt, &mx, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
            t[r] = mx;
        }
        qsort(t, (size_t)reps, sizeof(double), cmp);
        const double med = t[reps / 2];
        /* the scan payload of the rank that sends the most: at position p
         * (reversed for the backward's second scan) it sends one element in
         * each round d with p + d < P */
        double most = 0.0;
        for (int r = 0; r < size; r++) {
            int sends = 0;
            for (int d = 1; d < size; d *= 2) sends += r + d < size;
            if (which % 2)
                for (int d = 1; d < size; d *= 2) sends += (size - 1 - r) + d < size;
            most = sends * elem[which] * 8.0 > most ? sends * elem[which] * 8.0 : most;
        }
        if (rank == 0)
            printf("%-20s %5d %10lld %10lld %10.2f %12.3f %12llu %12.0f\n", names[which], size,
                   (long long)T, (long long)T * size, 1e3 * med, (double)T * size / med / 1e6, mb,
                   most);
    }
    free(t);
    seqk_context_destroy(b.ctx);
    MPI_Finalize();
    return 0;
}
