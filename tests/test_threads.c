/* tests/test_threads.c -- seqk from several caller threads at once (seqk.h:
 * calls on one context are not concurrent, separate contexts are
 * independent, the last-error message is per thread): 6 pthreads, each
 * with its own CPU context (1 OpenMP thread per caller thread), run
 * different ops concurrently, repeatedly, and must get bit-for-bit what a
 * single-threaded run got; between the ops each thread provokes its own
 * error and must read back its own message, not another thread's. */
#include "harness.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { THREADS = 6, ROUNDS = 20, T = 40, H = 2, K = 8, V = 8, D = 16, NST = 4 };

static float q[T * H * K], k[T * H * K], v[T * H * V], g[T * H];
static float u[T * D], dt[T * D], A[D * NST], Bm[T * NST], Cm[T * NST];

/* op i's output into out (T*H*V floats for ops 0..1, T*D for op 2). */
static seqk_status run_op(seqk_context *ctx, int op, float *out)
{
    switch (op) {
    case 0:
        return seqk_gated_retention(ctx, SEQK_MODE_PARALLEL, 1, T, H, K, V, 0.3f, q, k, v, g, out,
                                    NULL, NULL, NULL, 0, 16);
    case 1:
        return seqk_linear_attention(ctx, SEQK_MODE_RECURRENT, 1, T, H, K, V, 0.3f,
                                     SEQK_LINATTN_ELU1, q, k, v, out, NULL, NULL, NULL, NULL,
                                     NULL, 0, 0);
    default:
        return seqk_selective_scan(ctx, SEQK_MODE_PARALLEL, 1, T, D, NST, 1, 0, u, dt, A, Bm, Cm,
                                   NULL, NULL, NULL, out, NULL, NULL, NULL, 0);
    }
}

static float want[3][T * H * V > T * D ? T * H * V : T * D];

typedef struct {
    int id, failures;
    char note[256];
} job;

static void *worker(void *arg)
{
    job *j = arg;
    seqk_context *ctx = NULL;
    if (seqk_context_create(&ctx, SEQK_BACKEND_CPU, 0) != SEQK_SUCCESS) {
        j->failures++;
        return NULL;
    }
    seqk_context_set_threads(ctx, 1);
    float out[sizeof want[0] / sizeof(float)];
    for (int r = 0; r < ROUNDS; r++) {
        const int op = (j->id + r) % 3;
        memset(out, 0, sizeof out);
        if (run_op(ctx, op, out) != SEQK_SUCCESS || memcmp(out, want[op], sizeof out) != 0) {
            j->failures++;
            snprintf(j->note, sizeof j->note, "op %d round %d differs or failed", op, r);
        }
        /* this thread's own error: a chunk size naming the thread */
        char needle[32];
        snprintf(needle, sizeof needle, "chunk=%d,", 2000 + j->id);
        seqk_gated_retention(ctx, SEQK_MODE_PARALLEL, 1, T, H, K, V, 0.3f, q, k, v, g, out, NULL,
                             NULL, NULL, 0, 2000 + j->id);
        run_op(ctx, op, out); /* a success leaves the message */
        if (!strstr(seqk_last_error(), needle)) {
            j->failures++;
            snprintf(j->note, sizeof j->note, "last error \"%s\" is not this thread's (%s)",
                     seqk_last_error(), needle);
        }
    }
    seqk_context_destroy(ctx);
    return NULL;
}

int main(int argc, char **argv)
{
    th_backend *be;
    th_init(argc, argv, &be);
    th_seed(1919);
    th_fill(q, sizeof q / 4, -1, 1), th_fill(k, sizeof k / 4, -1, 1), th_fill(v, sizeof v / 4, -1, 1);
    th_fill(g, sizeof g / 4, -1, 0), th_fill(u, sizeof u / 4, -1, 1), th_fill(dt, sizeof dt / 4, -1, 1);
    th_fill(A, sizeof A / 4, -2, -0.1), th_fill(Bm, sizeof Bm / 4, -1, 1);
    th_fill(Cm, sizeof Cm / 4, -1, 1);
    seqk_context *ctx = NULL;
    seqk_context_create(&ctx, SEQK_BACKEND_CPU, 0);
    seqk_context_set_threads(ctx, 1);
    for (int op = 0; op < 3; op++)
        th_check_status(run_op(ctx, op, want[op]), SEQK_SUCCESS, "single-threaded reference run");
    seqk_context_destroy(ctx);

    pthread_t th[THREADS];
    job jobs[THREADS];
    for (int i = 0; i < THREADS; i++) {
        jobs[i] = (job){i, 0, ""};
        pthread_create(&th[i], NULL, worker, &jobs[i]);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        th_check(jobs[i].failures == 0,
                 "caller thread %d, own context, %d rounds of 3 ops: bit-identical to the "
                 "single-threaded run and its own last error (%d failures; %s)",
                 i, ROUNDS, jobs[i].failures, jobs[i].note);
    }
    return th_finish();
}
