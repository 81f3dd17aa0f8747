/*
 * bench/suite_memory.c -- the "memory" suite: what decoding has to keep per
 * sequence and per layer, computed (not timed): each recurrent-state
 * module's state against softmax attention's KV cache as the context
 * length L grows, and the L from which the cache is the larger
 * ("crossover" records).
 *
 * Sizes (fp32, per sequence, per layer), for the decode suite's head shapes
 * (H = 8 heads of K = V = 128, and of K = V = 64; suite_decode.c):
 *   softmax KV cache            2 L Hkv D 4 bytes, Hkv = H (multi-head; GQA
 *                               with Hkv = H/g divides it by g)
 *   linear attention            H K V 4 (+ H K 4 for the Katharopoulos
 *                               normaliser z, SEQK_LINATTN_NORMALIZE; not
 *                               counted: the benches run without it)
 *   retention, gated retention,
 *   Mamba2, gated DeltaNet      H K V 4 (Mamba2: Nst = K, P = V)
 *   Titans                      H E 4, E = seqk_titans_state_size(K, V)
 *                               = 3 K V + 8 (M, momentum S, Mhat, position)
 *   selective scan (Mamba1)     D Nst 4, D = 2 H K, Nst = 16 (as in the
 *                               decode suite; the convolution's state of a
 *                               Mamba block, (d_conv - 1) D floats, is not
 *                               part of the scan and not counted)
 * The crossover is exact: the cache is larger than a state of S bytes from
 * L = floor(S / c) + 1 tokens on, c = 2 Hkv D 4 bytes per token
 * (crossing = S / c, where the two are equal).
 *
 * Records (kind "memory", bytes = the size, no timings; report.c prints
 * them in a table of their own): softmax_attention at L = 16, 64, ..,
 * 65536 (shape T = L), each module once (T = 0; the
 * selective scan with the sscan suite's letters C = D, K = Nst, H = 1), per
 * backend that runs (the sizes are the same on every backend).
 */
#include "bench.h"

#include <math.h>
#include <string.h>

typedef struct memory_family {
    int64_t H, D; /* heads, head dim (K = V = D) */
} memory_family;

static const memory_family FAMILIES[] = {{8, 128}, {8, 64}};
static const memory_family FAMILIES_QUICK[] = {{2, 32}, {2, 16}};
#define N_FAMILIES ((int)(sizeof FAMILIES / sizeof FAMILIES[0]))
/* The loops index both tables with one bound. */
_Static_assert(sizeof FAMILIES / sizeof FAMILIES[0] ==
                   sizeof FAMILIES_QUICK / sizeof FAMILIES_QUICK[0],
               "FAMILIES and FAMILIES_QUICK must have the same number of families");

/* Context lengths of the KV-cache records: 16 .. 65536 by powers of 4. */
#define MEMORY_L_MIN 16
#define MEMORY_L_MAX 65536
#define MEMORY_L_MAX_QUICK 1024
#define MEMORY_SSCAN_NST 16

/* Nothing to time: the records come from the finish function. */
void suite_memory_plan(bench_plan *plan, bench_backend *be, const bench_options *opt)
{
    (void)plan;
    (void)be;
    (void)opt;
}

static bench_record memory_record(const bench_backend *be, const char *kind, const char *name)
{
    bench_record r = bench_record_init(kind);
    r.suite = "memory";
    r.name = bench_keep_name(name);
    r.backend = be->name;
    r.device = be->device;
    r.threads = bench_record_threads(be);
    r.shape.B = 1; /* per sequence */
    r.shape.N = 1;
    r.shape.mode = "recurrent";
    return r;
}

/* "1.5 KiB", "64.0 MiB", ... */
static void format_bytes(double bytes, char *out, size_t size)
{
    static const char *const UNITS[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (bytes >= 1024.0 && u < 4) bytes /= 1024.0, u++;
    snprintf(out, size, u ? "%.1f %s" : "%.0f %s", bytes, UNITS[u]);
}

void suite_memory_finish(bench_backend *be, const bench_options *opt)
{
    const memory_family *fam = opt->quick ? FAMILIES_QUICK : FAMILIES;
    const int64_t L_max = opt->quick ? MEMORY_L_MAX_QUICK : MEMORY_L_MAX;
    for (int f = 0; f < N_FAMILIES; f++) {
        const int64_t H = fam[f].H, D = fam[f].D;
        const double per_token = 2.0 * (double)(H * D) * sizeof(float); /* k and v, Hkv = H */
        char name[96], text[32], text2[32];

        for (int64_t L = MEMORY_L_MIN; L <= L_max; L *= 4) {
            snprintf(name, sizeof name, "softmax_attention kv_cache H=%lld D=%lld",
                     (long long)H, (long long)D);
            bench_record r = memory_record(be, "memory", name);
            r.shape.T = L;
            r.shape.H = H;
            r.shape.K = D;
            r.shape.V = D;
            r.bytes = per_token * (double)L;
            format_bytes(r.bytes, text, sizeof text);
            format_bytes(per_token, text2, sizeof text2);
            snprintf(r.note, sizeof r.note, "KV cache of L = %lld tokens: %s (%s per token)",
                     (long long)L, text, text2);
            report_record(&r);
        }

        for (int m = 0; m < BENCH_N_MODULES; m++) {
            const bench_module mod = (bench_module)m;
            const bool sscan = mod == BENCH_MOD_SELECTIVE_SCAN;
            bench_shape sh = {0};
            sh.B = sh.N = 1;
            sh.mode = "recurrent";
            if (sscan) { /* sscan letters: C = D channels, K = Nst, H = 1 group */
                sh.C = 2 * H * D;
                sh.K = MEMORY_SSCAN_NST;
                sh.H = 1;
            } else {
                sh.H = H;
                sh.K = sh.V = D;
            }
            const size_t floats = sscan ? bench_module_state_floats(mod, sh.C, sh.K, 1)
                                        : bench_module_state_floats(mod, H, D, D);
            const double state = (double)floats * sizeof(float);
            if (sscan)
                snprintf(name, sizeof name, "%s D=%lld Nst=%lld vs H=%lld D=%lld",
                         bench_module_name(mod), (long long)sh.C, (long long)sh.K,
                         (long long)H, (long long)D);
            else
                snprintf(name, sizeof name, "%s H=%lld K=%lld V=%lld", bench_module_name(mod),
                         (long long)H, (long long)D, (long long)D);

            bench_record r = memory_record(be, "memory", name);
            r.shape = sh;
            r.bytes = state;
            format_bytes(state, text, sizeof text);
            snprintf(r.note, sizeof r.note,
                     "recurrent state %s per sequence and layer, at every context length%s",
                     text,
                     mod == BENCH_MOD_LINEAR_ATTENTION ? " (+ H K floats with the normaliser)"
                                                       : "");
            report_record(&r);

            /* the cache is larger from the first whole L above state / per_token */
            const double equal_at = state / per_token;
            const int64_t first = (int64_t)floor(equal_at) + 1;
            bench_record x = memory_record(be, "crossover", name);
            x.shape = sh;
            x.shape.T = first;
            x.crossing = equal_at;
            format_bytes(per_token, text2, sizeof text2);
            snprintf(x.note, sizeof x.note,
                     "%s state (%s) smaller than the softmax KV cache (%s per token, Hkv = %lld, "
                     "D = %lld) from L = %lld (equal at L = %.4g)",
                     bench_module_name(mod), text, text2, (long long)H, (long long)D,
                     (long long)first, equal_at);
            report_record(&x);
        }
    }
}
