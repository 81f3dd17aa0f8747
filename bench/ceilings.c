/*
 * bench/ceilings.c -- the machine's ceilings, measured in the same run and
 * with the same thread count as the kernels they bound.
 *
 *   copy (GB/s), counted as bytes read + bytes written over the median time:
 *     CPU:  max of  copy-memcpy  memcpy of a large buffer, split across the
 *                                OpenMP threads (libc picks its best stores)
 *                   copy-loop    a plain OpenMP loop dst[i] = src[i]
 *                                (ordinary stores, like a compiled kernel's)
 *     CUDA: copy-d2d             seqk_memcpy(..., SEQK_COPY_BACKEND_TO_BACKEND)
 *   Buffers are far larger than any cache, so the copy streams from DRAM
 *   (HBM on the GPU).
 *
 *   sgemm (GFLOP/s), counted as 2 M N K flops per product over the median
 *   time, through the BLAS that CMake found (bench/CMakeLists.txt; OpenBLAS
 *   by default), fp32, row-major C = A B (beta = 0):
 *     sgemm_large  one M = N = K = SGEMM_LARGE_N product, threaded by the
 *                  BLAS itself over the bench's thread count
 *                  (openblas_set_num_threads(be->threads))
 *     sgemm_64     many independent 64x64x64 products, split across the
 *                  bench's OpenMP threads, one thread per product (the BLAS
 *                  set to 1 thread), each thread cycling over its own
 *                  L2-resident operands: the small-GEMM rate that a chunk
 *                  kernel (C = 64 tiles, DESIGN 3.1) can hope for
 *   Threads: OpenBLAS's OpenMP flavour runs on the bench's own OpenMP
 *   runtime and goes single-threaded inside a parallel region, so the two
 *   never oversubscribe; with the pthreads flavour its thread count is set
 *   explicitly as above. openblas_set_num_threads also sets OpenMP's default
 *   thread count in the OpenMP flavour, which a context without an explicit
 *   thread count follows, so both are put back afterwards.
 *   Without a BLAS (or on CUDA, where no cuBLAS sgemm is wired in yet) the
 *   two ceilings are reported as not measured and bounded cases get a null
 *   fraction.
 */
#include "bench.h"

#include <omp.h>
#include <string.h>

#if SEQK_BENCH_HAVE_CBLAS
#include <cblas.h>
#endif

/* Sizes of the sgemm ceilings (see the top of the file). */
/* 2 * 3072^3 = 58 GFLOP per product: ~0.4 s on 2 Zen 3 cores, the largest
 * multiple of 1024 that stays well under a second there (4096 takes ~0.9 s,
 * at nearly the same rate) */
#define SGEMM_LARGE_N 3072
#define SGEMM_LARGE_N_QUICK 512
#define SGEMM_SMALL_N 64
#define SGEMM_SMALL_SET 8         /* distinct (A, B, C) per thread: 8 * 48 KiB, L2-resident */
#define SGEMM_SMALL_CALLS 256     /* products per thread per timed call */
#define SGEMM_SMALL_CALLS_QUICK 32

/* Bytes of each copy buffer (source and destination alike). */
#define COPY_BYTES_CPU ((size_t)256 << 20)   /* >= 256 MiB: DRAM, not the L3 */
#define COPY_BYTES_CUDA ((size_t)1 << 30)    /* 1 GiB: ~0.5 ms per copy on an H100 */
#define COPY_BYTES_QUICK ((size_t)16 << 20)  /* --quick: a smoke test, not a ceiling */

void bench_set_ceiling(bench_backend *be, const char *name, const char *unit, double value)
{
    for (int i = 0; i < be->n_ceilings; i++) {
        if (strcmp(be->ceilings[i].name, name) == 0) {
            be->ceilings[i].unit = unit;
            be->ceilings[i].value = value;
            return;
        }
    }
    if (be->n_ceilings == BENCH_MAX_CEILINGS) bench_die("too many ceilings (adding %s)", name);
    be->ceilings[be->n_ceilings++] = (bench_ceiling){name, unit, value};
}

const bench_ceiling *bench_get_ceiling(const bench_backend *be, const char *name)
{
    for (int i = 0; i < be->n_ceilings; i++)
        if (strcmp(be->ceilings[i].name, name) == 0) return &be->ceilings[i];
    return NULL;
}

int ceilings_steps(const bench_backend *be, const bench_options *opt)
{
    (void)opt;
    if (be->backend != SEQK_BACKEND_CPU) return 1;
    return SEQK_BENCH_HAVE_CBLAS ? 4 : 2;
}

/* ---- the copy kernels ------------------------------------------------------ */

typedef struct copy_args {
    seqk_context *ctx;
    void *dst;        /* [bytes] */
    const void *src;  /* [bytes] */
    size_t bytes;
    int threads;
} copy_args;

/* memcpy, the buffer cut into one contiguous, page-aligned piece per thread. */
static seqk_status copy_memcpy(void *arg)
{
    const copy_args *c = arg;
#pragma omp parallel num_threads(c->threads)
    {
        const size_t nt = (size_t)omp_get_num_threads(), t = (size_t)omp_get_thread_num();
        const size_t piece = (c->bytes / nt + 4095) / 4096 * 4096;
        const size_t lo = t * piece < c->bytes ? t * piece : c->bytes;
        const size_t hi = lo + piece < c->bytes ? lo + piece : c->bytes;
        memcpy((char *)c->dst + lo, (const char *)c->src + lo, hi - lo);
    }
    return SEQK_SUCCESS;
}

/* The plain loop: ordinary (write-allocate) vector stores, as a compiled
 * kernel does. A compiler that recognised it as a memcpy would measure
 * copy-memcpy twice; GCC 12 -O3 keeps it a loop (checked in the object code). */
static seqk_status copy_loop(void *arg)
{
    const copy_args *c = arg;
    float *dst = c->dst;       /* [n] */
    const float *src = c->src; /* [n] */
    const size_t n = c->bytes / sizeof(float);
#pragma omp parallel for num_threads(c->threads) schedule(static)
    for (size_t i = 0; i < n; i++) dst[i] = src[i];
    return SEQK_SUCCESS;
}

static seqk_status copy_backend(void *arg)
{
    const copy_args *c = arg;
    return seqk_memcpy(c->ctx, c->dst, c->src, c->bytes, SEQK_COPY_BACKEND_TO_BACKEND);
}

typedef struct copy_kernel {
    const char *name;
    bench_timed_fn fn;
} copy_kernel;

/* ---- the sgemm ceilings ----------------------------------------------------- */

/* Reports a ceiling that this run could not measure (its value stays unset,
 * so cases bounded by it get a null fraction). */
static void report_not_measured(const bench_backend *be, const char *name, const char *why)
{
    bench_record c = bench_record_init("ceiling");
    c.suite = "ceilings";
    c.name = name;
    c.backend = be->name;
    c.device = be->device;
    c.threads = bench_record_threads(be);
    c.bound = name;
    c.bound_unit = "GFLOP/s";
    snprintf(c.note, sizeof c.note, "not measured (%s)", why);
    report_record(&c);
}

#if SEQK_BENCH_HAVE_CBLAS

/* The BLAS in words, for the notes. */
static void blas_description(char *out, size_t size)
{
#if SEQK_BENCH_HAVE_OPENBLAS
    const int par = openblas_get_parallel();
    const char *flavour = par == 0 ? "sequential" : par == 1 ? "pthreads" : par == 2 ? "OpenMP"
                                                                                    : "unknown";
    /* "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH ...": keep the name and version */
    const char *config = openblas_get_config();
    const char *core = openblas_get_corename();
    int name_len = 8;
    if (config) {
        const char *sp = strchr(config, ' ');
        sp = sp ? strchr(sp + 1, ' ') : NULL;
        name_len = sp ? (int)(sp - config) : (int)strlen(config);
    }
    snprintf(out, size, "%.*s, %s threading, core %s", name_len, config ? config : "OpenBLAS",
             flavour, core ? core : "?");
#else
    snprintf(out, size, "a BLAS without OpenBLAS's thread control (threads as the BLAS decides)");
#endif
}

/* Sets the BLAS's own thread count (OpenBLAS only; elsewhere the BLAS decides). */
static void blas_set_threads(int n)
{
#if SEQK_BENCH_HAVE_OPENBLAS
    openblas_set_num_threads(n);
#else
    (void)n;
#endif
}

typedef struct sgemm_args {
    int n;          /* M = N = K */
    int threads;    /* bench threads (sgemm_64: one product per thread at a time) */
    int calls;      /* sgemm_64: products per thread per timed call */
    const float *A; /* large: [n, n];  small: [threads, SET, n, n] */
    const float *B; /* as A */
    float *C;       /* as A */
} sgemm_args;

static seqk_status sgemm_large(void *arg)
{
    const sgemm_args *g = arg;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g->n, g->n, g->n, 1.0f, g->A, g->n,
                g->B, g->n, 0.0f, g->C, g->n);
    return SEQK_SUCCESS;
}

/* Each thread runs g->calls independent n^3 products on its own operands. */
static seqk_status sgemm_small_batched(void *arg)
{
    const sgemm_args *g = arg;
    const size_t tile = (size_t)g->n * (size_t)g->n;
#pragma omp parallel num_threads(g->threads)
    {
        const size_t t = (size_t)omp_get_thread_num();
        for (int i = 0; i < g->calls; i++) {
            const size_t j = (t * SGEMM_SMALL_SET + (size_t)(i % SGEMM_SMALL_SET)) * tile;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g->n, g->n, g->n, 1.0f,
                        g->A + j, g->n, g->B + j, g->n, 0.0f, g->C + j, g->n);
        }
    }
    return SEQK_SUCCESS;
}

/* Times one sgemm kernel and fills r (a "measurement" record, bound = its
 * own ceiling). Returns GFLOP/s. */
static double time_sgemm(bench_backend *be, const bench_options *opt, bench_progress *pg,
                         const char *name, bench_timed_fn fn, sgemm_args *args, size_t elems,
                         double flops, const char *what, bench_record *r)
{
    progress_begin(pg, "ceilings", name, be->name);
    *r = bench_record_init("measurement");
    r->suite = "ceilings";
    r->name = name;
    r->backend = be->name;
    r->device = be->device;
    r->threads = bench_record_threads(be);
    r->flops = flops;
    r->bytes = 3.0 * (double)elems * sizeof(float); /* A, B read, C written, once each */
    bench_check(bench_time(NULL, fn, args, opt->warmup, opt->repeats, &r->stats),
                "ceiling %s on %s", name, be->name);
    const double gflops = flops / r->stats.median_s / 1e9;
    const size_t bad = bench_count_nonfinite(be, args->C, elems);
    r->check = bad ? "non-finite" : "ok";
    char blas[200];
    blas_description(blas, sizeof blas);
    snprintf(r->note, sizeof r->note, "%s; %s", what, blas);
    progress_end("%.2f GFLOP/s", gflops);
    return gflops;
}

/* Times the large product (M = N = K = SGEMM_LARGE_N), threaded by the BLAS
 * over the bench's threads, into *r; returns its GFLOP/s. */
static double time_sgemm_large(bench_backend *be, const bench_options *opt, bench_progress *pg,
                               bench_record *r)
{
    static char name[32];
    const int n = opt->quick ? SGEMM_LARGE_N_QUICK : SGEMM_LARGE_N;
    const size_t elems = (size_t)n * (size_t)n;
    float *A = bench_alloc(be, elems * sizeof(float), "sgemm A"); /* [n, n] */
    float *B = bench_alloc(be, elems * sizeof(float), "sgemm B"); /* [n, n] */
    float *C = bench_alloc(be, elems * sizeof(float), "sgemm C"); /* [n, n] */
    bench_fill_uniform(be, A, elems, -1.0f, 1.0f, 21);
    bench_fill_uniform(be, B, elems, -1.0f, 1.0f, 22);
    bench_fill_uniform(be, C, elems, 0.0f, 0.0f, 23);
    sgemm_args args = {n, be->threads, 1, A, B, C};
    const int saved_omp = omp_get_max_threads();
    blas_set_threads(be->threads);
    snprintf(name, sizeof name, "sgemm-%d", n);
    char what[128];
    snprintf(what, sizeof what, "M=N=K=%d, one product, BLAS on %d threads", n, be->threads);
    const double gflops = time_sgemm(be, opt, pg, name, sgemm_large, &args, elems,
                                     2.0 * (double)n * (double)n * (double)n, what, r);
    omp_set_num_threads(saved_omp);
    bench_free(be, A);
    bench_free(be, B);
    bench_free(be, C);
    return gflops;
}

/* sgemm_large and sgemm_64 on the CPU through the BLAS. */
static void sgemm_ceilings_blas(bench_backend *be, const bench_options *opt, bench_progress *pg)
{
    const int saved_omp = omp_get_max_threads();
#if SEQK_BENCH_HAVE_OPENBLAS
    const int saved_blas = openblas_get_num_threads();
#endif
    bench_record recs[2];
    double gflops[2];
    const char *ceiling[2] = {"sgemm_large", "sgemm_64"};

    /* The large product, threaded by the BLAS over the bench's threads. */
    gflops[0] = time_sgemm_large(be, opt, pg, &recs[0]);

    /* Many 64^3 products, one per thread at a time, the BLAS single-threaded. */
    {
        const int n = SGEMM_SMALL_N;
        const int calls = opt->quick ? SGEMM_SMALL_CALLS_QUICK : SGEMM_SMALL_CALLS;
        const size_t elems = (size_t)be->threads * SGEMM_SMALL_SET * (size_t)n * (size_t)n;
        float *A = bench_alloc(be, elems * sizeof(float), "sgemm_64 A"); /* [thr, SET, n, n] */
        float *B = bench_alloc(be, elems * sizeof(float), "sgemm_64 B"); /* [thr, SET, n, n] */
        float *C = bench_alloc(be, elems * sizeof(float), "sgemm_64 C"); /* [thr, SET, n, n] */
        bench_fill_uniform(be, A, elems, -1.0f, 1.0f, 24);
        bench_fill_uniform(be, B, elems, -1.0f, 1.0f, 25);
        bench_fill_uniform(be, C, elems, 0.0f, 0.0f, 26);
        sgemm_args args = {n, be->threads, calls, A, B, C};
        blas_set_threads(1);
        const double products = (double)be->threads * calls;
        char what[160];
        snprintf(what, sizeof what,
                 "%.0f products/call, %d per thread x %d threads, BLAS 1-threaded, operands in L2",
                 products, calls, be->threads);
        gflops[1] = time_sgemm(be, opt, pg, "sgemm-64x64x64-batched", sgemm_small_batched,
                               &args, elems, products * 2.0 * n * n * n, what, &recs[1]);
        /* bytes: each product reads its A, B and writes C (48 KiB), from cache */
        recs[1].bytes = products * 3.0 * n * n * sizeof(float);
        bench_free(be, A);
        bench_free(be, B);
        bench_free(be, C);
    }

#if SEQK_BENCH_HAVE_OPENBLAS
    openblas_set_num_threads(saved_blas);
#endif
    omp_set_num_threads(saved_omp);

    for (int k = 0; k < 2; k++) {
        if (strcmp(recs[k].check, "non-finite") == 0)
            bench_die("ceiling %s on %s: the product held NaN or inf", recs[k].name, be->name);
        bench_set_ceiling(be, ceiling[k], "GFLOP/s", gflops[k]);
    }
    for (int k = 0; k < 2; k++) {
        recs[k].bound = ceiling[k];
        bench_record_derive(&recs[k], be);
        report_record(&recs[k]);
    }
    for (int k = 0; k < 2; k++) {
        bench_record c = recs[k];
        c.kind = "ceiling";
        c.name = ceiling[k];
        char note[sizeof c.note];
        snprintf(note, sizeof note, "%s: %s", recs[k].name, recs[k].note);
        snprintf(c.note, sizeof c.note, "%s", note);
        bench_record_derive(&c, be);
        report_record(&c);
    }
}

#endif /* SEQK_BENCH_HAVE_CBLAS */

static void sgemm_ceilings(bench_backend *be, const bench_options *opt, bench_progress *pg)
{
    if (be->backend != SEQK_BACKEND_CPU) {
        report_not_measured(be, "sgemm_large", "no cuBLAS sgemm ceiling in the bench yet");
        report_not_measured(be, "sgemm_64", "no cuBLAS sgemm ceiling in the bench yet");
        return;
    }
#if SEQK_BENCH_HAVE_CBLAS
    sgemm_ceilings_blas(be, opt, pg);
#else
    (void)opt;
    (void)pg;
    report_not_measured(be, "sgemm_large", "no BLAS found");
    report_not_measured(be, "sgemm_64", "no BLAS found");
#endif
}

void ceilings_measure(bench_backend *be, const bench_options *opt, bench_progress *pg)
{
    const bool cpu = be->backend == SEQK_BACKEND_CPU;
    const size_t bytes = opt->quick ? COPY_BYTES_QUICK : cpu ? COPY_BYTES_CPU : COPY_BYTES_CUDA;
    const copy_kernel cpu_kernels[] = {{"copy-memcpy", copy_memcpy}, {"copy-loop", copy_loop}};
    const copy_kernel cuda_kernels[] = {{"copy-d2d", copy_backend}};
    const copy_kernel *kernels = cpu ? cpu_kernels : cuda_kernels;
    const int n_kernels = cpu ? 2 : 1;

    float *src = bench_alloc(be, bytes, "copy source");      /* [bytes / 4] */
    float *dst = bench_alloc(be, bytes, "copy destination"); /* [bytes / 4] */
    bench_fill_uniform(be, src, bytes / sizeof(float), -1.0f, 1.0f, 1);
    bench_fill_uniform(be, dst, bytes / sizeof(float), 0.0f, 0.0f, 2);
    copy_args args = {be->ctx, dst, src, bytes, be->threads};

    bench_record recs[2];
    double best = 0.0;
    int best_i = 0;
    for (int k = 0; k < n_kernels; k++) {
        progress_begin(pg, "ceilings", kernels[k].name, be->name);
        bench_record *r = &recs[k];
        *r = bench_record_init("measurement");
        r->suite = "ceilings";
        r->name = kernels[k].name;
        r->backend = be->name;
        r->device = be->device;
        r->threads = bench_record_threads(be);
        r->bytes = 2.0 * (double)bytes; /* read + written */
        bench_check(bench_time(cpu ? NULL : be->ctx, kernels[k].fn, &args, opt->warmup,
                               opt->repeats, &r->stats),
                    "ceiling %s on %s", kernels[k].name, be->name);
        const double gbs = r->bytes / r->stats.median_s / 1e9;
        if (gbs > best) {
            best = gbs;
            best_i = k;
        }
        progress_end("%.2f GB/s", gbs);
    }
    bench_free(be, src);
    bench_free(be, dst);
    bench_set_ceiling(be, "copy", "GB/s", best);

    for (int k = 0; k < n_kernels; k++) {
        recs[k].bound = "copy";
        bench_record_derive(&recs[k], be);
        report_record(&recs[k]);
    }
    bench_record c = recs[best_i];
    c.kind = "ceiling";
    c.name = "copy";
    snprintf(c.note, sizeof c.note, "%s (best of: %s%s%s); bytes read + written", kernels[best_i].name,
             kernels[0].name, n_kernels > 1 ? ", " : "", n_kernels > 1 ? kernels[1].name : "");
    bench_record_derive(&c, be);
    report_record(&c);

    sgemm_ceilings(be, opt, pg);
}

int ceilings_recheck_steps(const bench_backend *be)
{
    return be->backend == SEQK_BACKEND_CPU && SEQK_BENCH_HAVE_CBLAS ? 1 : 0;
}

void ceilings_recheck(bench_backend *be, const bench_options *opt, bench_progress *pg)
{
#if SEQK_BENCH_HAVE_CBLAS
    const bench_ceiling *start = bench_get_ceiling(be, "sgemm_large");
    if (be->backend != SEQK_BACKEND_CPU || !start) return;
    bench_record r;
    const double end = time_sgemm_large(be, opt, pg, &r);
    r.name = "sgemm-large-at-end";
    r.bound = "sgemm_large";
    bench_record_derive(&r, be);
    report_record(&r);
    bench_record d = bench_record_init("drift");
    d.suite = "ceilings";
    d.name = "sgemm_large";
    d.backend = be->name;
    d.device = be->device;
    d.threads = bench_record_threads(be);
    snprintf(d.note, sizeof d.note,
             "%.1f GFLOP/s at the start, %.1f at the end (end/start %.2f); fractions use the "
             "start; a machine whose speed moves this much moves every ratio with it",
             start->value, end, end / start->value);
    report_record(&d);
#else
    (void)be, (void)opt, (void)pg;
#endif
}
