/* bench/buffers.c -- memory on a backend: allocate, fill, upload, check. */
#include "bench.h"

#include <math.h>
#include <stdlib.h>

/* Host staging buffer for filling and checking device memory piecewise. */
#define STAGE_FLOATS ((size_t)4 << 20) /* 16 MiB */

void *bench_alloc(bench_backend *be, size_t bytes, const char *what)
{
    void *p = NULL;
    bench_check(seqk_malloc(be->ctx, bytes, &p), "seqk_malloc(%zu bytes) for %s on %s", bytes,
                what, be->name);
    return p;
}

void bench_free(bench_backend *be, void *ptr)
{
    bench_check(seqk_free(be->ctx, ptr), "seqk_free on %s", be->name);
}

/* splitmix64's finaliser: a well-mixed 64-bit hash. */
static inline uint64_t mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* Uniform in [0, 1) from (seed, i), 24 bits. */
static inline float uniform01(uint64_t seed, uint64_t i)
{
    return (float)(mix64(seed * 0xD1B54A32D192ED03ull ^ i) >> 40) * (1.0f / 16777216.0f);
}

/* host[0 .. n) = element i0 + i of the uniform sequence. */
static void fill_host(float *host, size_t i0, size_t n, float lo, float hi, uint64_t seed,
                      int threads)
{
#pragma omp parallel for num_threads(threads) schedule(static)
    for (size_t i = 0; i < n; i++) host[i] = lo + (hi - lo) * uniform01(seed, i0 + i);
}

void bench_fill_uniform(bench_backend *be, float *dst, size_t n, float lo, float hi,
                        uint64_t seed)
{
    if (be->backend == SEQK_BACKEND_CPU) {
        fill_host(dst, 0, n, lo, hi, seed, be->threads);
        return;
    }
    float *stage = malloc(STAGE_FLOATS * sizeof *stage); /* [STAGE_FLOATS] host staging */
    if (!stage) bench_die("cannot allocate the host staging buffer");
    for (size_t i0 = 0; i0 < n; i0 += STAGE_FLOATS) {
        const size_t m = n - i0 < STAGE_FLOATS ? n - i0 : STAGE_FLOATS;
        fill_host(stage, i0, m, lo, hi, seed, be->threads);
        bench_check(seqk_memcpy(be->ctx, dst + i0, stage, m * sizeof *stage,
                                SEQK_COPY_HOST_TO_BACKEND),
                    "seqk_memcpy (host to %s, %zu bytes)", be->name, m * sizeof *stage);
    }
    free(stage);
}

void bench_upload(bench_backend *be, void *dst, const void *src, size_t bytes)
{
    bench_check(seqk_memcpy(be->ctx, dst, src, bytes, SEQK_COPY_HOST_TO_BACKEND),
                "seqk_memcpy (host to %s, %zu bytes)", be->name, bytes);
}

static size_t count_nonfinite_host(const float *x, size_t n, int threads)
{
    size_t bad = 0;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(+ : bad)
    for (size_t i = 0; i < n; i++) bad += !isfinite(x[i]);
    return bad;
}

size_t bench_count_nonfinite(bench_backend *be, const float *x, size_t n)
{
    if (be->backend == SEQK_BACKEND_CPU) return count_nonfinite_host(x, n, be->threads);
    float *stage = malloc(STAGE_FLOATS * sizeof *stage); /* [STAGE_FLOATS] host staging */
    if (!stage) bench_die("cannot allocate the host staging buffer");
    size_t bad = 0;
    for (size_t i0 = 0; i0 < n; i0 += STAGE_FLOATS) {
        const size_t m = n - i0 < STAGE_FLOATS ? n - i0 : STAGE_FLOATS;
        bench_check(seqk_memcpy(be->ctx, stage, x + i0, m * sizeof *stage,
                                SEQK_COPY_BACKEND_TO_HOST),
                    "seqk_memcpy (%s to host, %zu bytes)", be->name, m * sizeof *stage);
        bad += count_nonfinite_host(stage, m, be->threads);
    }
    free(stage);
    return bad;
}
