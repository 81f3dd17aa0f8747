/*
 * bench/suite_scan.c -- the "scan" suite: seqk_scan (DESIGN 3.6), bound by
 * copy bandwidth.
 *
 * Counted bytes per call = a read + b read + h written, with
 *   a [B, T, C/block], b [B, T, C], h [B, T, C]   (fp32; h0 and h_final
 * unused). flops = 0: the scan's 2 flops per element never bound it. Full
 * sizes move >= 256 MiB of a + b + h per call, so the data streams from DRAM.
 */
#include "bench.h"

#include <stdlib.h>

/* A case: one seqk_scan call. */
typedef struct scan_def {
    const char *name;
    int64_t B, T, C;
    int64_t block;   /* coefficient block; 0 means block = C (one scalar per step) */
    unsigned flags;  /* 0 or SEQK_SCAN_REVERSE */
    int64_t N;       /* > 0: varlen, N sequences packed along T (B = 1) */
    int64_t T_quick; /* T under --quick: 4 MiB per array, a smoke test */
} scan_def;

static const scan_def SCAN_CASES[] = {
    /* Many channels: threads split the channels, SIMD runs across them. */
    {"many-channels", 1, 4096, 8192, 1, 0, 0, 128},
    {"many-channels-b4", 4, 4096, 2048, 1, 0, 0, 128},
    /* Few channels, long T: threads must split T (local scans + carries). */
    {"long-t-c1", 1, (int64_t)1 << 25, 1, 1, 0, 0, (int64_t)1 << 20},
    {"long-t-c4", 1, (int64_t)1 << 23, 4, 1, 0, 0, (int64_t)1 << 18},
    /* One coefficient per block of channels (matrix-valued chunk states). */
    {"block-64", 1, 8192, 4096, 64, 0, 0, 256},
    {"block-c", 1, 8192, 4096, 0, 0, 0, 256},
    /* Reverse direction (the backward of a forward recurrence). */
    {"reverse", 1, 4096, 8192, 1, SEQK_SCAN_REVERSE, 0, 128},
    /* Varlen: 5 sequences of lengths 1:2:3:4:5 packed along T. */
    {"varlen-5", 1, 16384, 2048, 1, 0, 5, 512},
};

/* cu_seqlens [N+1] for N sequences of lengths proportional to 1, 2, ..., N
 * packed into T steps (the last takes the rounding remainder). */
static void varlen_bounds(int64_t T, int64_t N, int32_t *cu)
{
    const int64_t weight_sum = N * (N + 1) / 2;
    cu[0] = 0;
    for (int64_t n = 0; n < N; n++) {
        const int64_t len = T * (n + 1) / weight_sum;
        cu[n + 1] = (int32_t)(n + 1 == N ? T : cu[n] + len);
    }
}

typedef struct scan_args {
    seqk_context *ctx;
    int64_t B, T, C, block, N;
    unsigned flags;
    const float *a;           /* [B, T, C/block] */
    const float *b;           /* [B, T, C] */
    float *h;                 /* [B, T, C] */
    const int32_t *cu_seqlens; /* [N+1] on the backend, or NULL */
} scan_args;

static seqk_status scan_call(void *arg)
{
    const scan_args *s = arg;
    return seqk_scan(s->ctx, s->B, s->T, s->C, s->block, s->flags, s->a, s->b, NULL, s->h,
                     NULL, s->cu_seqlens, s->N);
}

static void scan_run(const bench_case *bc, bench_backend *be, const bench_options *opt,
                     bench_record *rec)
{
    const bench_shape *sh = &bc->shape;
    const int64_t B = sh->B, T = sh->T, C = sh->C, block = sh->block;
    const size_t n_bh = (size_t)(B * T * C);         /* elements of b and of h */
    const size_t n_a = (size_t)(B * T * (C / block)); /* elements of a */

    float *a = bench_alloc(be, n_a * sizeof(float), "scan a");  /* [B, T, C/block] */
    float *b = bench_alloc(be, n_bh * sizeof(float), "scan b"); /* [B, T, C] */
    float *h = bench_alloc(be, n_bh * sizeof(float), "scan h"); /* [B, T, C] */
    int32_t *cu_seqlens = NULL;                                 /* [N+1] or NULL */
    if (sh->varlen) {
        int32_t *cu_host = malloc((size_t)(sh->N + 1) * sizeof *cu_host); /* [N+1] */
        if (!cu_host) bench_die("cannot allocate cu_seqlens");
        varlen_bounds(T, sh->N, cu_host);
        cu_seqlens = bench_alloc(be, (size_t)(sh->N + 1) * sizeof *cu_seqlens, "cu_seqlens");
        bench_upload(be, cu_seqlens, cu_host, (size_t)(sh->N + 1) * sizeof *cu_host);
        free(cu_host);
    }
    /* Decays in [0.9, 0.999) and inputs in [-1, 1) keep h bounded (|h| < 1000)
     * over any T, away from both overflow and denormals. */
    bench_fill_uniform(be, a, n_a, 0.9f, 0.999f, 11);
    bench_fill_uniform(be, b, n_bh, -1.0f, 1.0f, 12);
    bench_fill_uniform(be, h, n_bh, 0.0f, 0.0f, 13);

    const int64_t N_arg = sh->varlen ? sh->N : 0;
    size_t workspace = 0;
    bench_check(seqk_scan_workspace_size(be->ctx, B, T, C, block, bc->flags, N_arg, &workspace),
                "seqk_scan_workspace_size (%s)", bc->name);
    if (workspace > 0)
        bench_check(seqk_context_reserve_workspace(be->ctx, workspace),
                    "seqk_context_reserve_workspace(%zu bytes)", workspace);

    scan_args args = {be->ctx, B, T, C, block, N_arg, bc->flags, a, b, h, cu_seqlens};
    const seqk_status st = bench_time(be->ctx, scan_call, &args, opt->warmup, opt->repeats,
                                      &rec->stats);
    if (!bench_skip_unsupported(st, rec)) {
        bench_check(st, "seqk_scan (%s on %s)", bc->name, be->name);
        rec->bytes = (double)((n_a + 2 * n_bh) * sizeof(float)); /* a, b read; h written */
        rec->flops = 0.0;
        rec->bound = "copy";
        const size_t bad = bench_count_nonfinite(be, h, n_bh);
        rec->check = bad ? "non-finite" : "ok";
        if (bad)
            snprintf(rec->note, sizeof rec->note, "%zu of %zu elements of h are NaN or inf",
                     bad, n_bh);
    }
    if (cu_seqlens) bench_free(be, cu_seqlens);
    bench_free(be, h);
    bench_free(be, b);
    bench_free(be, a);
}

void suite_scan_plan(bench_plan *plan, bench_backend *be, const bench_options *opt)
{
    for (size_t i = 0; i < sizeof SCAN_CASES / sizeof SCAN_CASES[0]; i++) {
        const scan_def *d = &SCAN_CASES[i];
        bench_case bc = {0};
        bc.suite = "scan";
        snprintf(bc.name, sizeof bc.name, "%s", d->name);
        bc.shape.B = d->B;
        bc.shape.T = opt->quick ? d->T_quick : d->T;
        bc.shape.C = d->C;
        bc.shape.block = d->block ? d->block : d->C;
        bc.shape.varlen = d->N > 0;
        bc.shape.N = d->N > 0 ? d->N : d->B;
        bc.shape.mode = d->flags & SEQK_SCAN_REVERSE ? "reverse" : "forward";
        bc.flags = d->flags;
        bc.run = scan_run;
        bench_plan_add(plan, be, &bc);
    }
}
