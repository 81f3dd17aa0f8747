/*
 * bench/suite_sscan.c -- the "sscan" suite: seqk_selective_scan, Mamba1's
 * selective scan (DESIGN 3.2), in SEQK_MODE_RECURRENT and
 * SEQK_MODE_PARALLEL, bound by copy bandwidth.
 *
 * Shapes: B = 1, T = 2048, Nst = 16, G = 1 group, D = 1536 channels (Mamba
 * 130M-like: d_inner 1536, d_state 16) and D = 768 (the shape bench/peers.py
 * times PyTorch's selective_scan_ref loop on, so that the two records can
 * be read side by side); --quick: T = 256, D = 256. Flags
 * SEQK_SSCAN_DT_SOFTPLUS, with the D skip (Dskip) and the z gate (the peer
 * runs without softplus and gate: the same state updates, a little less
 * work per token).
 *
 * Inputs: u, z, Bm, Cm uniform in [-1, 1); raw dt in [-3, -1) and dt_bias
 * in [-1, 0) (dt = softplus(dt + dt_bias) in about [0.02, 0.31]); A in
 * [-4, -0.5); Dskip in [0.5, 1.5). state_in and state_out NULL (zeros in,
 * not written): the call a prefill from scratch makes.
 *
 * Main figure: state-element updates per second, B*T*D*Nst / median (the
 * note of each measurement and an "updates" summary record per case).
 *
 * FLOPs counted per call = 6 B T D Nst: per state element and token
 * dt*A (1), dt*B*u (1, with dt*u shared over n not counted apart), the
 * decay multiply and add (2), C*h and its sum (2); the exp, the softplus,
 * the D skip and the silu gate are not counted.
 *
 * Bytes counted per call (fp32, each once): u, dt, z [B,T,D] and Bm, Cm
 * [B,T,G,Nst] read, y [B,T,D] written; A, Dskip, dt_bias ([D,Nst], [D],
 * [D]: small, read once) are not counted. Bound: "copy".
 */
#include "bench.h"

#include <string.h>

typedef struct sscan_def {
    const char *name;
    int64_t B, T, D, Nst, G;
    int64_t T_quick, D_quick;
} sscan_def;

static const sscan_def SSCAN_CASES[] = {
    {"mamba1-d1536", 1, 2048, 1536, 16, 1, 256, 256},
    {"mamba1-d768", 1, 2048, 768, 16, 1, 256, 256},
};
#define N_SSCAN_CASES ((int)(sizeof SSCAN_CASES / sizeof SSCAN_CASES[0]))

/* ---- results kept for the summary ------------------------------------------------ */

#define SSCAN_MAX_RESULTS 16
typedef struct sscan_result {
    const bench_backend *be;
    const char *name;
    const char *mode;
    bench_shape shape;
    double updates_per_s;
} sscan_result;

static sscan_result g_results[SSCAN_MAX_RESULTS];
static int g_n_results;
static char g_summary_names[SSCAN_MAX_RESULTS][64];
static int g_n_summary_names;

/* ---- the timed call ------------------------------------------------------------- */

typedef struct sscan_args {
    seqk_context *ctx;
    seqk_mode mode;
    int64_t B, T, D, Nst, G;
    const float *u, *dt, *A, *Bm, *Cm, *Dskip, *z, *dt_bias;
    float *y;
} sscan_args;

static seqk_status sscan_call(void *arg)
{
    const sscan_args *a = arg;
    return seqk_selective_scan(a->ctx, a->mode, a->B, a->T, a->D, a->Nst, a->G,
                               SEQK_SSCAN_DT_SOFTPLUS, a->u, a->dt, a->A, a->Bm, a->Cm, a->Dskip,
                               a->z, a->dt_bias, a->y, NULL, NULL, NULL, 0);
}

static void sscan_run(const bench_case *bc, bench_backend *be, const bench_options *opt,
                      bench_record *rec)
{
    const bench_shape *sh = &bc->shape;
    const bool parallel = strcmp(sh->mode, "parallel") == 0;
    /* bench_shape's letters: D in C (channels), Nst in K, G in H */
    const int64_t B = sh->B, T = sh->T, D = sh->C, Nst = sh->K, G = sh->H;
    const size_t n_btd = (size_t)(B * T * D);
    const size_t n_bc = (size_t)(B * T * G * Nst);
    const size_t n_a = (size_t)(D * Nst);

    float *u = bench_alloc(be, n_btd * sizeof(float), "u");              /* [B,T,D] */
    float *dt = bench_alloc(be, n_btd * sizeof(float), "dt");            /* [B,T,D] */
    float *z = bench_alloc(be, n_btd * sizeof(float), "z");              /* [B,T,D] */
    float *y = bench_alloc(be, n_btd * sizeof(float), "y");              /* [B,T,D] */
    float *Bm = bench_alloc(be, n_bc * sizeof(float), "Bm");             /* [B,T,G,Nst] */
    float *Cm = bench_alloc(be, n_bc * sizeof(float), "Cm");             /* [B,T,G,Nst] */
    float *A = bench_alloc(be, n_a * sizeof(float), "A");                /* [D,Nst] */
    float *Dskip = bench_alloc(be, (size_t)D * sizeof(float), "Dskip");  /* [D] */
    float *dt_bias = bench_alloc(be, (size_t)D * sizeof(float), "dt_bias"); /* [D] */
    bench_fill_uniform(be, u, n_btd, -1.0f, 1.0f, 51);
    bench_fill_uniform(be, dt, n_btd, -3.0f, -1.0f, 52);
    bench_fill_uniform(be, z, n_btd, -1.0f, 1.0f, 53);
    bench_fill_uniform(be, y, n_btd, 0.0f, 0.0f, 54);
    bench_fill_uniform(be, Bm, n_bc, -1.0f, 1.0f, 55);
    bench_fill_uniform(be, Cm, n_bc, -1.0f, 1.0f, 56);
    bench_fill_uniform(be, A, n_a, -4.0f, -0.5f, 57);
    bench_fill_uniform(be, Dskip, (size_t)D, 0.5f, 1.5f, 58);
    bench_fill_uniform(be, dt_bias, (size_t)D, -1.0f, 0.0f, 59);

    const seqk_mode mode = parallel ? SEQK_MODE_PARALLEL : SEQK_MODE_RECURRENT;
    sscan_args args = {be->ctx, mode, B, T, D, Nst, G, u, dt, A, Bm, Cm, Dskip, z, dt_bias, y};
    const seqk_status st = bench_time(be->ctx, sscan_call, &args, opt->warmup, opt->repeats,
                                      &rec->stats);
    if (!bench_skip_unsupported(st, rec)) {
        bench_check(st, "seqk_selective_scan %s (%s on %s)", sh->mode, bc->name, be->name);
        const double updates = (double)B * (double)T * (double)D * (double)Nst;
        const double updates_per_s = updates / rec->stats.median_s;
        rec->flops = 6.0 * updates;
        rec->bytes = (double)((4 * n_btd + 2 * n_bc) * sizeof(float)); /* u dt z Bm Cm, y */
        rec->tokens = (double)(B * T);
        rec->bound = "copy";
        const size_t bad = bench_count_nonfinite(be, y, n_btd);
        rec->check = bad ? "non-finite" : "ok";
        if (bad)
            snprintf(rec->note, sizeof rec->note,
                     "%zu of %zu elements of y are NaN or inf; %.3f G state updates/s", bad,
                     n_btd, updates_per_s / 1e9);
        else
            snprintf(rec->note, sizeof rec->note, "%.3f G state updates/s (B*T*D*Nst / median)",
                     updates_per_s / 1e9);
        if (g_n_results == SSCAN_MAX_RESULTS) bench_die("sscan suite: too many results");
        g_results[g_n_results++] = (sscan_result){be, SSCAN_CASES[bc->flags].name, sh->mode,
                                                  *sh, updates_per_s};
    }

    bench_free(be, dt_bias);
    bench_free(be, Dskip);
    bench_free(be, A);
    bench_free(be, Cm);
    bench_free(be, Bm);
    bench_free(be, y);
    bench_free(be, z);
    bench_free(be, dt);
    bench_free(be, u);
}

void suite_sscan_plan(bench_plan *plan, bench_backend *be, const bench_options *opt)
{
    static const char *const MODES[2] = {"recurrent", "parallel"};
    for (int i = 0; i < N_SSCAN_CASES; i++) {
        const sscan_def *d = &SSCAN_CASES[i];
        for (int p = 0; p < 2; p++) {
            bench_case bc = {0};
            bc.suite = "sscan";
            snprintf(bc.name, sizeof bc.name, "%s", d->name);
            bc.shape.B = d->B;
            bc.shape.T = opt->quick ? d->T_quick : d->T;
            bc.shape.C = opt->quick ? d->D_quick : d->D; /* channels D */
            bc.shape.K = d->Nst;                         /* state size */
            bc.shape.H = d->G;                           /* groups */
            bc.shape.N = d->B;
            bc.shape.mode = MODES[p];
            bc.flags = (unsigned)i; /* index into SSCAN_CASES */
            bc.run = sscan_run;
            bench_plan_add(plan, be, &bc);
        }
    }
}

/* One "updates" summary record per case and mode on be: the suite's main
 * figure, state-element updates per second. */
void suite_sscan_finish(bench_backend *be, const bench_options *opt)
{
    (void)opt;
    for (int i = 0; i < g_n_results; i++) {
        const sscan_result *res = &g_results[i];
        if (res->be != be) continue;
        if (g_n_summary_names == SSCAN_MAX_RESULTS) bench_die("sscan suite: too many summaries");
        char *name = g_summary_names[g_n_summary_names++];
        snprintf(name, sizeof g_summary_names[0], "%s %s", res->name, res->mode);
        bench_record r = bench_record_init("updates");
        r.suite = "sscan";
        r.name = name;
        r.backend = be->name;
        r.device = be->device;
        r.threads = bench_record_threads(be);
        r.shape = res->shape;
        snprintf(r.note, sizeof r.note,
                 "%.3f G state updates/s (B=%lld T=%lld D=%lld Nst=%lld G=%lld)",
                 res->updates_per_s / 1e9, (long long)res->shape.B, (long long)res->shape.T,
                 (long long)res->shape.C, (long long)res->shape.K, (long long)res->shape.H);
        report_record(&r);
    }
}
