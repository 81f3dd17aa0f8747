/*
 * tests/internal/test_tile_hook.c -- the chunked walks borrow the calling
 * thread's sgemm tile hook (core/gemm.h: seqk__sgemm_set_tile_hook) for their
 * prefetches (seqk__chunk_fetch, scan/chunk.c) and must put back the one
 * they found: a hook left pointing at a walk's finished stack frame would be
 * called by the thread's next product. This program (linking the static
 * library: the hook is internal) sets a counting hook, runs every op that
 * walks chunks with a fetch (the linear-state forward and backward, gated
 * DeltaNet's forward and backward) on 1 and 2 threads, and after each one
 * checks that the hook is the counting one again and that a product calls it.
 * One sequence of one head on 2 threads takes the staged drivers. (A walk
 * that leaves its hook set makes the next product run a dead frame's
 * cursor: a fetch_end dropped from the staged backward hung this program.)
 */
#include "../../core/gemm.h"
#include "seqk.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures, checks;

static void count_tile(void *arg) { ++*(int64_t *)arg; }

/* After an op: the counting hook is back, and a 16 x 64 x 8 product calls it. */
static void check_restored(const char *op, int threads, int64_t H, int64_t *calls)
{
    void (*fn)(void *) = NULL;
    void *arg = NULL;
    seqk__sgemm_get_tile_hook(&fn, &arg);
    float A[16 * 8] = {0}, B[8 * 64] = {0}, C[16 * 64];
    float pack[64 * 8 + 64];
    const int64_t before = *calls;
    seqk__sgemm(false, false, 16, 64, 8, 1.0f, A, 8, B, 64, 0.0f, C, 64, pack);
    checks++;
    if (fn != count_tile || arg != calls || *calls == before) {
        failures++;
        printf("FAIL %s (%d threads, H = %lld): the caller's tile hook was not put back\n", op,
               threads, (long long)H);
    }
}

static float *filled(size_t n, float lo, float hi)
{
    float *p = malloc(n * sizeof(float));
    if (!p) {
        fprintf(stderr, "test_tile_hook: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++)
        p[i] = lo + (hi - lo) * (float)((i * 2654435761u) % 1000) / 1000.0f;
    return p;
}

int main(void)
{
    /* 200 tokens (several chunks), K = V = 16; two sequences of 4 heads (a
     * (sequence, head) pair per thread and more: the fused and per-pair
     * walks), then one of 1 head (on 2 threads the staged drivers) */
    enum { T = 200, K = 16, V = 16 };
    const size_t nqk = (size_t)2 * T * 4 * K, nv = (size_t)2 * T * 4 * V, nt = (size_t)2 * T * 4;
    float *q = filled(nqk, -1.0f, 1.0f), *k = filled(nqk, -1.0f, 1.0f);
    float *v = filled(nv, -1.0f, 1.0f), *dout = filled(nv, -1.0f, 1.0f);
    float *g = filled(nt, -0.1f, 0.0f), *beta = filled(nt, 0.1f, 0.9f);
    float *o = malloc(nv * sizeof(float)), *dq = malloc(nqk * sizeof(float));
    float *dk = malloc(nqk * sizeof(float)), *dv = malloc(nv * sizeof(float));
    float *dg = malloc(nt * sizeof(float)), *dbeta = malloc(nt * sizeof(float));
    if (!o || !dq || !dk || !dv || !dg || !dbeta) return 1;
    int64_t calls = 0;
    for (int shape = 0; shape < 2; shape++)
    for (int threads = 1; threads <= 2; threads++) {
        const int64_t B = shape ? 1 : 2, H = shape ? 1 : 4;
        seqk_context *ctx = NULL;
        if (seqk_context_create(&ctx, SEQK_BACKEND_CPU, 0) != SEQK_SUCCESS ||
            seqk_context_set_threads(ctx, threads) != SEQK_SUCCESS) {
            printf("FAIL: no CPU context\n");
            return 1;
        }
        seqk__sgemm_set_tile_hook(count_tile, &calls);
        seqk_status st = seqk_gated_retention(ctx, SEQK_MODE_PARALLEL, B, T, H, K, V, 0.25f, q, k,
                                              v, g, o, NULL, NULL, NULL, B, 0);
        checks++, failures += st != SEQK_SUCCESS;
        check_restored("seqk_gated_retention", threads, H, &calls);
        st = seqk_gated_retention_backward(ctx, B, T, H, K, V, 0.25f, q, k, v, g, dout, NULL, NULL,
                                           dq, dk, dv, dg, NULL, NULL, B, 0);
        checks++, failures += st != SEQK_SUCCESS;
        check_restored("seqk_gated_retention_backward", threads, H, &calls);
        st = seqk_deltanet(ctx, SEQK_MODE_PARALLEL, B, T, H, K, V, 0.25f, SEQK_DELTANET_L2NORM_QK,
                           q, k, v, beta, g, o, NULL, NULL, NULL, B, 0);
        checks++, failures += st != SEQK_SUCCESS;
        check_restored("seqk_deltanet", threads, H, &calls);
        st = seqk_deltanet_backward(ctx, B, T, H, K, V, 0.25f, SEQK_DELTANET_L2NORM_QK, q, k, v,
                                    beta, g, NULL, dout, NULL, dq, dk, dv, dbeta, dg, NULL, NULL,
                                    B, 0);
        checks++, failures += st != SEQK_SUCCESS;
        check_restored("seqk_deltanet_backward", threads, H, &calls);
        seqk__sgemm_set_tile_hook(NULL, NULL);
        seqk_context_destroy(ctx);
    }
    printf("test_tile_hook: %d checks, %d failures\n", checks, failures);
    free(q), free(k), free(v), free(g), free(beta), free(dout), free(o);
    free(dq), free(dk), free(dv), free(dg), free(dbeta);
    return failures ? 1 : 0;
}
