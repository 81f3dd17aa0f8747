/*
 * tests/internal/test_staged_windows.c -- the linear-state engine's staged
 * drivers in windows of chunks (scan/chunk.c, scan/chunk_backward.c).
 *
 * With fewer (sequence, head) pairs than threads the parallel forward and
 * the backward run chunk-parallel ("staged"); when the chunk states (the
 * backward's: and state gradients) of every chunk would pass a byte limit
 * (256 MiB: long sequences, beyond ~130k tokens at K = V = 128) they walk
 * windows of chunks, the forward carrying the state from one to the next,
 * the backward from checkpoints. The public tests never reach those limits,
 * so this program (linking the static library: seqk__lin is internal) sets
 * small ones through P.stage_bytes: windows of 1, 2, 3 and 7 chunks and
 * none, on shapes where windows start and end inside sequences and on their
 * edges (varlen with an empty and a length-1 sequence), with and without
 * state_in and dstate_out, gates, v_scale, shared q/k heads and the
 * normaliser (forward), and state_out in the memory of state_in. Every
 * output and gradient must be bit-identical to the walk per (sequence,
 * head) on one thread, which the public tests check against the float64
 * references. Outputs are poisoned (NaN) before each call.
 */
#include "../../scan/linear_state.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures, checks;

/* A limit no shape here reaches (0 would take the build's default, which
 * scripts/test.sh's small-limits build makes 512 bytes) */
#define NO_LIMIT ((size_t)1 << 40)

static float *filled(size_t n, float lo, float hi, unsigned seed)
{
    float *p = malloc((n ? n : 1) * sizeof(float));
    if (!p) {
        fprintf(stderr, "test_staged_windows: out of memory\n");
        exit(1);
    }
    uint32_t x = 2463534242u ^ seed;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        p[i] = lo + (hi - lo) * (float)(x >> 8) / 16777216.0f;
    }
    return p;
}

typedef struct {
    float *dq, *dk, *dv, *dld, *dvs, *dsin;
    size_t nqk, nv, nt, ns;
} grads;

static void grads_alloc(grads *g, size_t nqk, size_t nv, size_t nt, size_t ns)
{
    g->nqk = nqk, g->nv = nv, g->nt = nt, g->ns = ns;
    g->dq = filled(nqk, 0, 0, 0), g->dk = filled(nqk, 0, 0, 0), g->dv = filled(nv, 0, 0, 0);
    g->dld = filled(nt, 0, 0, 0), g->dvs = filled(nt, 0, 0, 0), g->dsin = filled(ns, 0, 0, 0);
}

static void grads_poison(grads *g)
{
    float *a[6] = {g->dq, g->dk, g->dv, g->dld, g->dvs, g->dsin};
    size_t n[6] = {g->nqk, g->nqk, g->nv, g->nt, g->nt, g->ns};
    for (int i = 0; i < 6; i++)
        for (size_t j = 0; j < n[i]; j++) a[i][j] = NAN;
}

static void grads_free(grads *g)
{
    free(g->dq), free(g->dk), free(g->dv), free(g->dld), free(g->dvs), free(g->dsin);
}

static seqk_context *cpu(const char *name, int threads)
{
    seqk_context *ctx = NULL;
    if (seqk_context_create(&ctx, SEQK_BACKEND_CPU, 0) != SEQK_SUCCESS ||
        seqk_context_set_threads(ctx, threads) != SEQK_SUCCESS) {
        printf("FAIL %s: no CPU context\n", name);
        exit(1);
    }
    return ctx;
}

static void poison(float *p, size_t n)
{
    for (size_t i = 0; i < n; i++) p[i] = NAN;
}

/* The parallel forward of P on `threads` threads, the staged driver's limit
 * stage_bytes (0: the build's), into P->o and P->s_out, P->z_out (o: no
 * floats, s: ns, z: nz, poisoned first unless s_out is s_in). */
static void forward(const char *name, seqk__lin *P, size_t no, size_t ns, size_t nz,
                    int threads, size_t stage_bytes)
{
    seqk_context *ctx = cpu(name, threads);
    poison(P->o, no);
    if (P->s_out && P->s_out != P->s_in) poison(P->s_out, ns);
    if (P->z_out) poison(P->z_out, nz);
    P->stage_bytes = stage_bytes;
    const seqk_status st = seqk__lin_chunked(ctx, P);
    checks++;
    if (st != SEQK_SUCCESS) {
        failures++;
        printf("FAIL %s forward (%d threads): status %d: %s\n", name, threads, (int)st,
               seqk_last_error());
    }
    seqk_context_destroy(ctx);
}

/* The backward of P on `threads` threads, the chunk-parallel walk's limit
 * stage_bytes (0: the build's), into out (poisoned first). */
static void run(const char *name, seqk__lin *P, seqk__lin_grad *Gr, grads *out, int threads,
                size_t stage_bytes)
{
    seqk_context *ctx = cpu(name, threads);
    grads_poison(out);
    P->stage_bytes = stage_bytes;
    Gr->dq = out->dq, Gr->dk = out->dk, Gr->dv = out->dv, Gr->dlogdecay = out->dld;
    Gr->dv_scale = P->v_scale ? out->dvs : NULL;
    Gr->ds_in = P->s_in ? out->dsin : NULL;
    const seqk_status st = seqk__lin_backward(ctx, P, Gr);
    checks++;
    if (st != SEQK_SUCCESS) {
        failures++;
        printf("FAIL %s (%d threads): status %d: %s\n", name, threads, (int)st,
               seqk_last_error());
    }
    seqk_context_destroy(ctx);
}

static void compare(const char *name, const char *what, int64_t win, const float *a,
                    const float *b, size_t n)
{
    checks++;
    if (n && memcmp(a, b, n * sizeof(float)) != 0) {
        size_t i = 0;
        while (i < n && memcmp(a + i, b + i, sizeof(float)) == 0) i++;
        failures++;
        printf("FAIL %s, windows of %lld chunks (0: no limit): %s[%zu] = %.9g, one thread %.9g\n",
               name, (long long)win, what, i, (double)a[i], (double)b[i]);
    }
}

/* The shape: N sequences (lens, or a batch of N of T1 tokens), H heads, Hqk
 * q/k heads; norm: the normaliser (and phi = elu + 1). */
static void shape(const char *name, int64_t N, const int32_t *lens, int64_t T1, int64_t H,
                  int64_t Hqk, int64_t K, int64_t V, int64_t chunk, bool gates, bool vscale,
                  bool state, bool norm, unsigned seed)
{
    int32_t cu[16] = {0};
    int64_t B = 1, T = T1;
    if (lens) {
        for (int64_t n = 0; n < N; n++) cu[n + 1] = cu[n] + lens[n];
        T = cu[N];
    } else {
        B = N;
    }
    const size_t rows = (size_t)(B * T), nqk = rows * (size_t)(Hqk * K);
    const size_t nv = rows * (size_t)(H * V);
    const size_t nt = rows * (size_t)H, ns = (size_t)(N * H * K * V);
    float *q = filled(nqk, -1, 1, seed + 1), *k = filled(nqk, -1, 1, seed + 2);
    float *v = filled(nv, -1, 1, seed + 3), *dout = filled(nv, -1, 1, seed + 4);
    float *g = filled(nt, -0.3f, 0.0f, seed + 5), *vs = filled(nt, 0.1f, 1.0f, seed + 6);
    float *gh = filled((size_t)H, 0.5f, 2.0f, seed + 7);
    float *sin_ = filled(ns, -1, 1, seed + 8), *dso = filled(ns, -1, 1, seed + 9);
    seqk__lin P;
    memset(&P, 0, sizeof P);
    P.B = B, P.T = T, P.H = H, P.Hqk = Hqk, P.K = K, P.V = V, P.N = N, P.chunk = chunk;
    P.cu = lens ? cu : NULL, P.scale = 0.3f, P.q = q, P.k = k, P.v = v;
    P.v_scale = vscale ? vs : NULL, P.g = gates ? g : NULL, P.g_head = gates ? gh : NULL;
    P.s_in = state ? sin_ : NULL;
    const size_t nz = (size_t)(N * H * K);
    float *zin = filled(nz, 0.5f, 2.0f, seed + 10);
    if (norm) {
        P.flags = SEQK__LIN_NORMALIZE | SEQK__LIN_ELU1;
        P.z_in = state ? zin : NULL;
    }
    seqk__lin_grad Gr;
    memset(&Gr, 0, sizeof Gr);
    Gr.dout = dout, Gr.ds_out = state ? dso : NULL;
    grads ref, got;
    grads_alloc(&ref, nqk, nv, nt, ns), grads_alloc(&got, nqk, nv, nt, ns);
    run(name, &P, &Gr, &ref, 1, 0);
    /* more threads than (sequence, head) pairs: the chunk-parallel walk */
    const int threads = (int)(N * H) + 1;
    const size_t per_chunk = 2 * (size_t)(H * K * V) * sizeof(float);
    const int64_t wins[5] = {1, 2, 3, 7, 0};
    /* the forward: o, state_out, z_out */
    {
        const size_t E = (size_t)(K * V + (norm ? K : 0)), fwd_chunk = (size_t)H * E * sizeof(float);
        float *o_ref = filled(nv, 0, 0, 0), *s_ref = filled(ns, 0, 0, 0), *z_ref = filled(nz, 0, 0, 0);
        float *o = filled(nv, 0, 0, 0), *so = filled(ns, 0, 0, 0), *zo = filled(nz, 0, 0, 0);
        P.o = o_ref, P.s_out = s_ref, P.z_out = norm ? z_ref : NULL;
        forward(name, &P, nv, ns, nz, 1, 0);
        P.o = o, P.s_out = so, P.z_out = norm ? zo : NULL;
        for (int i = 0; i < 6; i++) {
            const int64_t win = i < 5 ? wins[i] : 2;
            if (i == 5) { /* state_out in state_in's memory (copied first) */
                memcpy(so, sin_, ns * sizeof(float));
                P.s_in = state ? so : NULL;
            }
            forward(name, &P, nv, ns, nz, threads, win ? (size_t)win * fwd_chunk : NO_LIMIT);
            compare(name, i == 5 ? "o (state_out = state_in)" : "o", win, o, o_ref, nv);
            compare(name, "state_out", win, so, s_ref, ns);
            if (norm) compare(name, "z_out", win, zo, z_ref, nz);
        }
        P.s_in = state ? sin_ : NULL, P.o = NULL, P.s_out = NULL, P.z_out = NULL;
        P.stage_bytes = fwd_chunk;
        const size_t small = seqk__lin_chunked_workspace(&P, threads);
        P.stage_bytes = NO_LIMIT;
        const size_t whole = seqk__lin_chunked_workspace(&P, threads);
        checks++;
        if (small >= whole) {
            failures++;
            printf("FAIL %s: forward workspace with windows of 1 chunk %zu bytes, without %zu\n",
                   name, small, whole);
        }
        free(o_ref), free(s_ref), free(z_ref), free(o), free(so), free(zo);
    }
    for (int i = 0; i < 5; i++) {
        run(name, &P, &Gr, &got, threads, wins[i] ? (size_t)wins[i] * per_chunk : NO_LIMIT);
        compare(name, "dq", wins[i], got.dq, ref.dq, nqk);
        compare(name, "dk", wins[i], got.dk, ref.dk, nqk);
        compare(name, "dv", wins[i], got.dv, ref.dv, nv);
        if (gates) compare(name, "dlogdecay", wins[i], got.dld, ref.dld, nt);
        if (vscale) compare(name, "dv_scale", wins[i], got.dvs, ref.dvs, nt);
        if (state) compare(name, "dstate_in", wins[i], got.dsin, ref.dsin, ns);
    }
    /* the windows' workspace is smaller (what the limit is for; the
     * backward walks per pair with the normaliser) */
    P.stage_bytes = per_chunk;
    const size_t small = seqk__lin_backward_workspace(&P, threads);
    P.stage_bytes = NO_LIMIT;
    const size_t whole = seqk__lin_backward_workspace(&P, threads);
    checks++;
    if (!norm && small >= whole) {
        failures++;
        printf("FAIL %s: backward workspace with windows of 1 chunk %zu bytes, without %zu\n",
               name, small, whole);
    }
    grads_free(&ref), grads_free(&got);
    free(q), free(k), free(v), free(dout), free(g), free(vs), free(gh), free(sin_), free(dso);
    free(zin);
}

int main(void)
{
    /* one sequence, the last chunk partial, K != V */
    shape("one sequence, gates, state", 1, NULL, 1000, 1, 1, 16, 24, 16, true, false, true, false, 1);
    shape("one sequence, no gates", 1, NULL, 515, 1, 1, 8, 8, 32, false, false, false, false, 2);
    /* two heads sharing a q/k head (Mamba2's groups), v_scale */
    shape("shared q/k head, v_scale", 1, NULL, 700, 2, 1, 16, 16, 16, true, true, true, false, 3);
    /* varlen: windows crossing sequence starts and ends, an empty and a
     * length-1 sequence */
    const int32_t lens[5] = {150, 0, 1, 333, 97};
    shape("varlen", 5, lens, 0, 1, 1, 16, 8, 16, true, false, true, false, 4);
    const int32_t lens2[3] = {64, 48, 0};
    shape("varlen, chunk-aligned", 3, lens2, 0, 1, 1, 8, 16, 16, true, true, true, false, 5);
    /* two sequences of a batch */
    shape("batch of 2", 2, NULL, 300, 1, 1, 16, 16, 16, true, false, true, false, 6);
    /* the normaliser (the forward's staged driver takes it, the backward
     * walks per pair) */
    shape("normaliser, state", 1, NULL, 400, 1, 1, 8, 16, 16, true, false, true, true, 7);
    shape("normaliser, varlen", 5, lens, 0, 1, 1, 8, 8, 16, false, false, true, true, 8);
    printf("test_staged_windows: %d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
