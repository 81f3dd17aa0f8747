/* tests/test_softmax_attention_backward.c -- the backward of softmax
 * attention (seqk_attention_parallel_backward, DESIGN 3.5, 3.7) on every
 * backend:
 *   - the float64 reference itself against central finite differences of a
 *     float64 forward (tiny shapes, causal and not, GQA, varlen);
 *   - dq, dk, dv against the reference (relative error <= 1e-4, outputs
 *     NaN-poisoned, nothing written past them), with o and lse from seqk's
 *     forward on the same backend: T = 1, prime T, T not a multiple of the
 *     tiles, K != V, odd head dims, batches and heads, GQA (Hkv = Hq/2 and 1),
 *     causal and not, varlen with empty and length-1 sequences, scale other
 *     than 1/sqrt(K), thread counts, a workspace of exactly the queried size;
 *   - determinism: two runs give the same bits, and 1 vs 2 threads (CPU);
 *   - every validation rule (status, message naming the argument, outputs
 *     untouched). */
#include "fixtures.h"
#include "ref/ref_attention_backward.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL 1e-4

/* ------------------------------------------------------------------------ */
/* The reference against finite differences                                  */
/* ------------------------------------------------------------------------ */

typedef struct {
    int64_t B, T, Hq, Hkv, K, V;
    int causal;
    double scale;
    const int32_t *cu;
    int64_t N;
} fd_case;

/* L(q, k, v) = sum o . dout in float64. */
static double fd_loss(const fd_case *c, const double *q, const double *k, const double *v,
                      const double *dout, double *o)
{
    ref_attention_forward64(c->B, c->T, c->Hq, c->Hkv, c->K, c->V, c->scale, c->causal, q, k, v, o,
                            c->cu, c->N);
    double L = 0;
    for (int64_t i = 0; i < c->B * c->T * c->Hq * c->V; i++) L += o[i] * dout[i];
    return L;
}

/* Max over the elements of x of |analytic - central difference|, relative
 * to the largest |analytic| gradient of that array. */
static double fd_array(const fd_case *c, double *x, size_t n, const double *grad, double *q,
                       double *k, double *v, const double *dout, double *o)
{
    const double h = 1e-5;
    double worst = 0, big = 1e-30;
    for (size_t i = 0; i < n; i++) big = fabs(grad[i]) > big ? fabs(grad[i]) : big;
    for (size_t i = 0; i < n; i++) {
        const double x0 = x[i];
        x[i] = x0 + h;
        const double lp = fd_loss(c, q, k, v, dout, o);
        x[i] = x0 - h;
        const double lm = fd_loss(c, q, k, v, dout, o);
        x[i] = x0;
        const double e = fabs((lp - lm) / (2 * h) - grad[i]) / big;
        worst = e > worst ? e : worst;
    }
    return worst;
}

static void reference_vs_finite_differences(void)
{
    static const int32_t cu[] = {0, 0, 1, 5, 5, 8}; /* lengths 0, 1, 4, 0, 3 */
    const fd_case cases[] = {
        {1, 5, 2, 1, 3, 2, 1, 0.7, NULL, 0},
        {1, 5, 2, 1, 3, 2, 0, 0.7, NULL, 0},
        {2, 4, 4, 2, 2, 3, 1, 1.3, NULL, 0},
        {2, 4, 4, 2, 2, 3, 0, 1.3, NULL, 0},
        {1, 8, 2, 2, 3, 2, 1, 0.9, cu, 5},
        {1, 8, 2, 1, 2, 3, 0, 0.9, cu, 5},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const fd_case *c = &cases[ci];
        const size_t nq = (size_t)(c->B * c->T * c->Hq * c->K),
                     nk = (size_t)(c->B * c->T * c->Hkv * c->K);
        const size_t nv = (size_t)(c->B * c->T * c->Hkv * c->V),
                     no = (size_t)(c->B * c->T * c->Hq * c->V);
        tf_arrays h = tf_arrays_on(NULL);
        double *q = tf_doubles(&h, nq), *k = tf_doubles(&h, nk), *v = tf_doubles(&h, nv);
        double *dout = tf_doubles(&h, no), *o = tf_doubles(&h, no);
        double *dq = tf_doubles(&h, nq), *dk = tf_doubles(&h, nk), *dv = tf_doubles(&h, nv);
        for (size_t i = 0; i < nq; i++) q[i] = th_uniform(-1.5, 1.5);
        for (size_t i = 0; i < nk; i++) k[i] = th_uniform(-1.5, 1.5);
        for (size_t i = 0; i < nv; i++) v[i] = th_uniform(-1, 1);
        for (size_t i = 0; i < no; i++) dout[i] = th_uniform(-1, 1);
        ref_attention_backward(c->B, c->T, c->Hq, c->Hkv, c->K, c->V, c->scale, c->causal, q, k, v,
                               dout, dq, dk, dv, c->cu, c->N);
        const double eq = fd_array(c, q, nq, dq, q, k, v, dout, o);
        const double ek = fd_array(c, k, nk, dk, q, k, v, dout, o);
        const double ev = fd_array(c, v, nv, dv, q, k, v, dout, o);
        th_check(eq < 1e-8 && ek < 1e-8 && ev < 1e-8,
                 "reference vs finite differences B=%lld T=%lld Hq=%lld Hkv=%lld K=%lld V=%lld%s%s: "
                 "dq %.1e, dk %.1e, dv %.1e (max |diff| / max |grad|, <= 1e-8)",
                 (long long)c->B, (long long)c->T, (long long)c->Hq, (long long)c->Hkv,
                 (long long)c->K, (long long)c->V, c->causal ? " causal" : "",
                 c->cu ? " varlen" : "", eq, ek, ev);
        tf_arrays_free(&h);
    }
}

/* ------------------------------------------------------------------------ */
/* seqk against the reference                                                */
/* ------------------------------------------------------------------------ */

typedef struct {
    int64_t B, T, Hq, Hkv, K, V;
    int causal;
    double scale_mul; /* scale = scale_mul / sqrt(K) */
    const int32_t *cu;
    int64_t N;
    int threads;      /* 0: context default */
    int exact_ws;     /* run with a workspace of exactly the queried size */
} bwd_case;

/* One problem's inputs on the host and the backend, with o and lse from
 * seqk's forward on that backend. */
typedef struct {
    size_t nq, nk, nv, no, nl;
    float scale;
    unsigned flags;
    float *q, *k, *v, *dout;                 /* host */
    float *d_q, *d_k, *d_v, *d_o, *d_lse, *d_dout;
    int32_t *d_cu;
} problem;

static bool make_problem(th_backend *be, const bwd_case *c, tf_arrays *h, tf_arrays *d,
                         problem *p, const char *what)
{
    const int64_t N = c->cu ? c->N : c->B;
    p->nq = (size_t)(c->B * c->T * c->Hq * c->K);
    p->nk = (size_t)(c->B * c->T * c->Hkv * c->K);
    p->nv = (size_t)(c->B * c->T * c->Hkv * c->V);
    p->no = (size_t)(c->B * c->T * c->Hq * c->V);
    p->nl = (size_t)(c->B * c->Hq * c->T);
    p->scale = (float)(c->scale_mul / sqrt((double)c->K));
    p->flags = c->causal ? SEQK_ATTN_CAUSAL : 0;
    p->q = tf_random(h, p->nq + 1, -1.5, 1.5);
    p->k = tf_random(h, p->nk + 1, -1.5, 1.5);
    p->v = tf_random(h, p->nv + 1, -1, 1);
    p->dout = tf_random(h, p->no + 1, -1, 1);
    p->d_q = tf_upload(d, p->q, p->nq * sizeof(float));
    p->d_k = tf_upload(d, p->k, p->nk * sizeof(float));
    p->d_v = tf_upload(d, p->v, p->nv * sizeof(float));
    p->d_dout = tf_upload(d, p->dout, p->no * sizeof(float));
    p->d_o = tf_poisoned(d, p->no + 1);
    p->d_lse = tf_poisoned(d, p->nl + 1);
    p->d_cu = c->cu ? tf_upload(d, c->cu, (size_t)(N + 1) * sizeof(int32_t)) : NULL;
    const seqk_status st =
        seqk_attention_parallel(be->ctx, c->B, c->T, c->Hq, c->Hkv, c->K, c->V, p->scale, p->flags,
                                p->d_q, p->d_k, p->d_v, p->d_o, p->d_lse, p->d_cu, c->N);
    char buf[300];
    snprintf(buf, sizeof buf, "%s: the forward", what);
    return th_check_status(st, SEQK_SUCCESS, buf);
}

static seqk_status run_backward(th_backend *be, const bwd_case *c, const problem *p, float *d_dq,
                                float *d_dk, float *d_dv)
{
    return seqk_attention_parallel_backward(be->ctx, c->B, c->T, c->Hq, c->Hkv, c->K, c->V,
                                            p->scale, p->flags, p->d_q, p->d_k, p->d_v, p->d_o,
                                            p->d_lse, p->d_dout, d_dq, d_dk, d_dv, p->d_cu, c->N);
}

static void describe(const bwd_case *c, const char *be, char *buf, size_t n)
{
    snprintf(buf, n, "%s backward B=%lld T=%lld Hq=%lld Hkv=%lld K=%lld V=%lld%s scale*%.3g%s%s%s",
             be, (long long)c->B, (long long)c->T, (long long)c->Hq, (long long)c->Hkv,
             (long long)c->K, (long long)c->V, c->causal ? " causal" : "", c->scale_mul,
             c->cu ? " varlen" : "",
             c->threads ? (c->threads == 1 ? " 1 thread" : " 3 threads") : "",
             c->exact_ws ? " exact workspace" : "");
}

static void run_case(th_backend *be, const bwd_case *c)
{
    char what[300];
    describe(c, be->name, what, sizeof what);
    if (th_skipped(be, what)) return;
    tf_arrays h = tf_arrays_on(NULL), d = tf_arrays_on(be);
    problem p;
    if (!make_problem(be, c, &h, &d, &p, what)) goto done;
    {
        /* The reference from the float inputs, in float64. */
        double *q = tf_doubles(&h, p.nq), *k = tf_doubles(&h, p.nk), *v = tf_doubles(&h, p.nv);
        double *dout = tf_doubles(&h, p.no);
        for (size_t i = 0; i < p.nq; i++) q[i] = p.q[i];
        for (size_t i = 0; i < p.nk; i++) k[i] = p.k[i];
        for (size_t i = 0; i < p.nv; i++) v[i] = p.v[i];
        for (size_t i = 0; i < p.no; i++) dout[i] = p.dout[i];
        double *rq = tf_doubles(&h, p.nq), *rk = tf_doubles(&h, p.nk), *rv = tf_doubles(&h, p.nv);
        ref_attention_backward(c->B, c->T, c->Hq, c->Hkv, c->K, c->V, (double)p.scale, c->causal,
                               q, k, v, dout, rq, rk, rv, c->cu, c->N);

        float *d_dq = tf_poisoned(&d, p.nq + 1), *d_dk = tf_poisoned(&d, p.nk + 1);
        float *d_dv = tf_poisoned(&d, p.nv + 1);
        int old_threads = 0;
        seqk_context_threads(be->ctx, &old_threads);
        if (c->threads) th_set_threads(be, c->threads);
        void *ws = NULL;
        if (c->exact_ws) {
            size_t bytes = 0;
            const seqk_status st = seqk_attention_parallel_backward_workspace_size(
                be->ctx, c->B, c->T, c->Hq, c->Hkv, c->K, c->V, p.flags, c->cu ? c->N : 0, &bytes);
            th_check_status(st, SEQK_SUCCESS, "backward workspace size");
            ws = tf_workspace_begin(be, bytes);
        }
        const seqk_status st = run_backward(be, c, &p, d_dq, d_dk, d_dv);
        if (c->exact_ws) tf_workspace_end(be, ws);
        if (c->threads) th_set_threads(be, old_threads);
        if (th_check_status(st, SEQK_SUCCESS, what)) {
            float *dq = tf_floats(&h, p.nq + 1), *dk = tf_floats(&h, p.nk + 1);
            float *dv = tf_floats(&h, p.nv + 1);
            tf_check_result(be, dq, d_dq, p.nq, rq, TOL, true, what, "dq");
            tf_check_result(be, dk, d_dk, p.nk, rk, TOL, true, what, "dk");
            tf_check_result(be, dv, d_dv, p.nv, rv, TOL, true, what, "dv");
        }
    }
done:
    tf_arrays_free(&d);
    tf_arrays_free(&h);
}

/* lengths 0, 1, 49, 0, 3, 100, 1 */
static const int32_t cu_154[] = {0, 0, 1, 50, 50, 53, 153, 154};
/* lengths 5, 0, 130, 1 */
static const int32_t cu_136[] = {0, 5, 5, 135, 136};

static void backward_cases(th_backend *be)
{
    const bwd_case cases[] = {
        /* T = 1; multi-query */
        {1, 1, 1, 1, 16, 16, 1, 1.0, NULL, 0, 0, 0},
        {3, 1, 2, 1, 64, 64, 0, 1.0, NULL, 0, 0, 0},
        /* prime T, GQA 4/2, K != V */
        {2, 37, 4, 2, 32, 48, 1, 1.0, NULL, 0, 0, 0},
        {2, 37, 4, 2, 32, 48, 0, 1.0, NULL, 0, 0, 0},
        /* prime T over several tiles, odd head dims, Hkv = 1 */
        {1, 131, 4, 1, 33, 7, 1, 1.0, NULL, 0, 0, 0},
        {1, 131, 4, 1, 7, 33, 0, 1.0, NULL, 0, 0, 0},
        /* several batches and heads, T not a multiple of any tile */
        {3, 100, 6, 3, 17, 17, 1, 1.0, NULL, 0, 0, 0},
        {2, 200, 4, 4, 64, 64, 0, 1.0, NULL, 0, 0, 0},
        /* head dim 128, T a multiple of the tiles (192 = 2 * 96 = 3 * 64) */
        {1, 192, 2, 1, 128, 128, 1, 1.0, NULL, 0, 0, 0},
        {1, 257, 4, 2, 128, 64, 1, 1.0, NULL, 0, 0, 0},
        /* scale other than 1/sqrt(K): flatter and peaked softmax */
        {2, 67, 4, 2, 64, 64, 1, 0.3, NULL, 0, 0, 0},
        {2, 67, 4, 2, 64, 64, 1, 4.0, NULL, 0, 0, 0},
        {1, 131, 2, 1, 48, 32, 0, 6.0, NULL, 0, 0, 0},
        /* varlen with empty and length-1 sequences */
        {1, 154, 4, 2, 64, 64, 1, 1.0, cu_154, 7, 0, 0},
        {1, 154, 4, 2, 64, 64, 0, 1.0, cu_154, 7, 0, 0},
        {1, 136, 4, 1, 33, 9, 1, 2.0, cu_136, 4, 0, 0},
        {1, 133, 2, 2, 16, 24, 0, 1.0, tf_cu_133, 5, 0, 0},
        {1, 91, 4, 2, 32, 32, 1, 1.0, tf_cu_91, 3, 0, 0},
        /* thread counts; a workspace of exactly the queried size */
        {2, 150, 4, 2, 64, 64, 1, 1.0, NULL, 0, 1, 0},
        {2, 150, 4, 2, 64, 64, 1, 1.0, NULL, 0, 3, 0},
        {1, 154, 4, 2, 64, 64, 1, 1.0, cu_154, 7, 3, 1},
        {2, 150, 4, 2, 48, 40, 0, 1.0, NULL, 0, 0, 1},
        /* a longer sequence; the largest head dim the CUDA backend takes */
        {1, 600, 2, 1, 64, 64, 1, 1.0, NULL, 0, 0, 0},
        {1, 70, 2, 1, 256, 256, 1, 1.0, NULL, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(be, &cases[i]);
    /* many short sequences (lengths 0, 2 and 4; two in five empty) */
    enum { NS = 300 };
    static int32_t cu_many[NS + 1];
    for (int n = 0; n < NS; n++) cu_many[n + 1] = cu_many[n] + (n * 7) % 5 % 3 * 2;
    const bwd_case many[] = {
        {1, cu_many[NS], 4, 2, 16, 8, 1, 1.0, cu_many, NS, 0, 0},
        {1, cu_many[NS], 2, 1, 8, 16, 0, 1.0, cu_many, NS, 1, 0},
    };
    for (size_t i = 0; i < sizeof many / sizeof many[0]; i++) run_case(be, &many[i]);
    if (be->ctx && be->backend == SEQK_BACKEND_CPU) {
        /* head dims the CUDA backend does not take */
        const bwd_case big[] = {
            {1, 40, 2, 1, 300, 270, 1, 1.0, NULL, 0, 0, 0},
            {1, 30, 2, 2, 520, 17, 0, 1.0, NULL, 0, 0, 0},
        };
        for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) run_case(be, &big[i]);
    }
}

/* ------------------------------------------------------------------------ */
/* Determinism                                                               */
/* ------------------------------------------------------------------------ */

/* The outputs of one call, downloaded into host (dq, dk, dv one after the
 * other). */
static bool grads_of(th_backend *be, const bwd_case *c, const problem *p, float *d_dq,
                     float *d_dk, float *d_dv, float *host, const char *what)
{
    const seqk_status st = run_backward(be, c, p, d_dq, d_dk, d_dv);
    if (!th_check_status(st, SEQK_SUCCESS, what)) return false;
    th_download(be, host, d_dq, p->nq * sizeof(float));
    th_download(be, host + p->nq, d_dk, p->nk * sizeof(float));
    th_download(be, host + p->nq + p->nk, d_dv, p->nv * sizeof(float));
    return true;
}

static void determinism(th_backend *be)
{
    const bwd_case cases[] = {
        {2, 300, 4, 2, 64, 64, 1, 1.0, NULL, 0, 0, 0},
        {1, 257, 8, 1, 33, 40, 0, 1.0, NULL, 0, 0, 0},
        {1, 154, 4, 2, 64, 64, 1, 1.0, cu_154, 7, 0, 0},
        /* 3 (batch entry, kv head) items: the CPU runs them fused with 1
         * thread, in two passes with 2: the same bits either way */
        {3, 200, 4, 1, 40, 24, 1, 1.0, NULL, 0, 0, 0},
        {1, 300, 6, 3, 72, 200, 0, 1.0, NULL, 0, 0, 0},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const bwd_case *c = &cases[ci];
        char what[300], buf[400];
        describe(c, be->name, what, sizeof what);
        snprintf(buf, sizeof buf, "%s determinism", what);
        if (th_skipped(be, buf)) continue;
        tf_arrays h = tf_arrays_on(NULL), d = tf_arrays_on(be);
        problem p;
        if (make_problem(be, c, &h, &d, &p, buf)) {
            const size_t n = p.nq + p.nk + p.nv;
            float *r1 = tf_floats(&h, n), *r2 = tf_floats(&h, n);
            float *d_dq = tf_poisoned(&d, p.nq), *d_dk = tf_poisoned(&d, p.nk);
            float *d_dv = tf_poisoned(&d, p.nv);
            int old = 0;
            seqk_context_threads(be->ctx, &old);
            if (grads_of(be, c, &p, d_dq, d_dk, d_dv, r1, buf) &&
                grads_of(be, c, &p, d_dq, d_dk, d_dv, r2, buf))
                th_check(tf_all_finite(r1, n) && memcmp(r1, r2, n * sizeof(float)) == 0,
                         "%s: two runs give the same bits", buf);
            if (be->backend == SEQK_BACKEND_CPU) {
                th_set_threads(be, 1);
                const bool ok1 = grads_of(be, c, &p, d_dq, d_dk, d_dv, r1, buf);
                th_set_threads(be, 2);
                const bool ok2 = grads_of(be, c, &p, d_dq, d_dk, d_dv, r2, buf);
                th_set_threads(be, old);
                if (ok1 && ok2)
                    th_check(tf_all_finite(r1, n) && memcmp(r1, r2, n * sizeof(float)) == 0,
                             "%s: 1 and 2 threads give the same bits", buf);
            }
        }
        tf_arrays_free(&d);
        tf_arrays_free(&h);
    }
}

/* ------------------------------------------------------------------------ */
/* Validation rules                                                          */
/* ------------------------------------------------------------------------ */

#define VB 1
#define VT 6
#define VHQ 4
#define VHKV 2
#define VK 8
#define VV 8

static void validation(th_backend *be)
{
    if (!be->ctx) {
        th_skip("%s backward validation: %s", be->name, be->skip_reason);
        return;
    }
    seqk_context *ctx = be->ctx;
    const size_t nq = VB * VT * VHQ * VK, nk = VB * VT * VHKV * VK, nv = VB * VT * VHKV * VV;
    const size_t no = VB * VT * VHQ * VV, nl = VB * VHQ * VT;
    tf_arrays ha = tf_arrays_on(NULL), da = tf_arrays_on(be);
    float *hin = tf_random(&ha, nq + nk + nv + 2 * no + nl, -1, 1);
    float *h7 = tf_floats(&ha, nq + nk + nv);
    tf_fill_untouched(h7, nq + nk + nv);
    float *q = tf_upload(&da, hin, nq * sizeof(float));
    float *k = tf_upload(&da, hin + nq, nk * sizeof(float));
    float *v = tf_upload(&da, hin + nq + nk, nv * sizeof(float));
    float *o = tf_upload(&da, hin + nq + nk + nv, no * sizeof(float));
    float *dout = tf_upload(&da, hin + nq + nk + nv + no, no * sizeof(float));
    float *l = tf_upload(&da, hin + nq + nk + nv + 2 * no, nl * sizeof(float));
    /* outputs: dq, dk, dv; a buffer holding two of them back to back too */
    float *dq = tf_upload(&da, h7, nq * sizeof(float));
    float *dk = tf_upload(&da, h7, nk * sizeof(float));
    float *dv = tf_upload(&da, h7, nv * sizeof(float));
    const int32_t cu_ok[3] = {0, 2, VT}, cu_first[3] = {1, 2, VT}, cu_dec[3] = {0, 4, 3};
    const int32_t cu_end[3] = {0, 2, VT - 1};
    int32_t *dcu_ok = tf_upload(&da, cu_ok, sizeof cu_ok);
    int32_t *dcu_first = tf_upload(&da, cu_first, sizeof cu_first);
    int32_t *dcu_dec = tf_upload(&da, cu_dec, sizeof cu_dec);
    int32_t *dcu_end = tf_upload(&da, cu_end, sizeof cu_end);
    float *hq = tf_floats(&ha, nq), *hk = tf_floats(&ha, nk), *hv = tf_floats(&ha, nv);
    const float s = 0.35f;
    const unsigned C = SEQK_ATTN_CAUSAL;
    const seqk_status INV = SEQK_ERROR_INVALID_ARGUMENT;
    char rule[200];
#define BWD(ctx_, B_, T_, Hq_, Hkv_, K_, V_, sc_, fl_, q_, k_, v_, o_, l_, do_, dq_, dk_, dv_, cu_, \
            N_)                                                                                   \
    seqk_attention_parallel_backward(ctx_, B_, T_, Hq_, Hkv_, K_, V_, sc_, fl_, q_, k_, v_, o_, l_, \
                                     do_, dq_, dk_, dv_, cu_, N_)
    /* One rule: status, message, and dq, dk, dv still hold TF_UNTOUCHED. */
#define EXPECT(call, want, needle, what)                                                          \
    do {                                                                                          \
        const seqk_status st_ = (call);                                                           \
        th_download(be, hq, dq, nq * sizeof(float));                                              \
        th_download(be, hk, dk, nk * sizeof(float));                                              \
        th_download(be, hv, dv, nv * sizeof(float));                                              \
        bool same_ = true;                                                                        \
        for (size_t i_ = 0; i_ < nq; i_++) same_ &= hq[i_] == TF_UNTOUCHED;                       \
        for (size_t i_ = 0; i_ < nk; i_++) same_ &= hk[i_] == TF_UNTOUCHED;                       \
        for (size_t i_ = 0; i_ < nv; i_++) same_ &= hv[i_] == TF_UNTOUCHED;                       \
        snprintf(rule, sizeof rule, "%s backward %s", be->name, what);                           \
        th_check_status(st_, want, rule);                                                         \
        th_check(strstr(seqk_last_error(), needle) != NULL, "%s: message \"%s\" names \"%s\"",    \
                 rule, seqk_last_error(), needle);                                                \
        th_check(same_, "%s: dq, dk, dv untouched", rule);                                        \
    } while (0)
    EXPECT(BWD(NULL, VB, VT, VHQ, VHKV, VK, VV, s, C, q, k, v, o, l, dout, dq, dk, dv, NULL, 0),
           INV, "ctx", "ctx NULL");
    EXPECT(BWD(ctx, 0, VT, VHQ, VHKV, VK, VV, s, C, q, k, v, o, l, dout, dq, dk, dv, NULL, 0), INV,
           "B=0", "B=0");
    EXPECT(BWD(ctx, VB, -1, VHQ, VHKV, VK, VV, s, C, q, k, v, o, l, dout, dq, dk, dv, NULL, 0), INV,
           "T=-1", "T=-1");
    EXPECT(BWD(ctx, VB, VT, 0, VHKV, VK, VV, s, C, q, k, v, o, l, dout, dq, dk, dv, NULL, 0), INV,
           "Hq=0", "Hq=0");
    EXPECT(BWD(ctx, VB, VT, VHQ, 0, VK, VV, s, C, q, k, v, o, l, dout, dq, dk, dv, NULL, 0), INV,
           "Hkv=0", "Hkv=0");
    EXPECT(BWD(ctx, VB, VT, 3, VHKV, VK, VV, s, C, q, k, v, o, l, dout, dq, dk, dv, NULL, 0), INV,
           "Hq=3", "Hq % Hkv");
    EXPECT(BWD(ctx, VB, VT, VHQ, VHKV, 0, VV, s, C, q, k, v, o, l, dout, dq, dk, dv, NULL, 0), INV,
           "K=0", "K=0");
    EXPECT(BWD(ctx, VB, VT, VHQ, VHKV, VK, -3, s, C, q, k, v, o, l, dout, dq, dk, dv, NULL, 0), INV,
           "V=-3", "V=-3");
    EXPECT(BWD(ctx, VB, VT, VHQ, VHKV, VK, VV, NAN, C, q, k, v, o, l, dout, dq, dk, dv, NULL, 0),
           INV, "scale", "scale NaN");
    EXPECT(BWD(ctx, VB, VT, VHQ, VHKV, VK, VV, s, 0x4u, q, k, v, o, l, dout, dq, dk, dv, NULL, 0),
           INV, "flags", "flags unknown bits");
    EXPECT(BWD(ctx, VB, VT, VHQ, VHKV, VK, VV, s, C, NULL, k, v, o, l, dout, dq, dk, dv, NULL, 0),
           INV, "q is NULL", "q NULL");
    EXPECT(BWD(ctx, VB, VT, VHQ, VHKV, VK, VV, s, C, q, NULL, v, o, l, dout, dq, dk, dv, NULL, 0),
           INV, "k is NULL", "k NULL");
    EXPECT(BWD(ctx, VB, VT, VHQ, VHKV, VK, VV, s, C, q, k, NULL, o, l, dout, dq, dk, dv, NULL, 0),
           INV, "v is NULL", "v NULL");
    EXPECT(BWD(ctx, VB, VT, VHQ, VHKV, VK, VV, s, C, q, k, v, NULL, l, dout, dq, dk, dv, NULL, 0),
           INV, "o is NULL", "o NULL");
    EXPECT(BWD(ctx, VB, VT, VHQ, VHKV, VK, VV, s, C, q, k, v, o, NULL, dout, dq, dk, dv, NULL, 0),
           INV, "lse is NULL", "lse NULL");
    EXPECT(BWD(ctx, VB, VT, VHQ, VHKV, VK, VV, s, C, q, k, v, o, l, NULL, dq, dk, dv, NULL, 0), INV,
           "dout is NULL", "dout NULL");
    EXPECT(BWD(ctx, VB, VT, VHQ, VHKV, VK, VV, s, C, q, k, v, o, l, dout, NULL, dk, dv, NULL, 0),
           INV, "dq is NULL", "dq NULL");
    EXPECT(BWD(ctx, VB, VT, VHQ, VHKV, VK, VV, s, C, q, k, v, o, l, dout, dq, NULL, dv, NULL, 0),
           INV, "dk is NULL", "dk NULL");
    EXPECT(BWD(ctx, VB, VT, VHQ, VHKV, VK, VV, s, C, q, k, v, o, l, dout, dq, dk, NULL, NULL, 0),
           INV, "dv is NULL", "dv NULL");
    /* overlaps: an output on an input, and two outputs on each other */
    EXPECT(BWD(ctx, VB, VT, VHQ, VHKV, VK, VV, s, C, q, k, v, o, l, dout, dq, dk, (float *)l, NULL,
               0),
           INV, "dv=", "dv overlaps lse");
    EXPECT(BWD(ctx, VB, VT, VHQ, VHKV, VK, VV, s, C, q, k, v, o, l, dout, (float *)q, dk, dv, NULL,
               0),
           INV, "dq=", "dq overlaps q");
    EXPECT(BWD(ctx, VB, VT, VHQ, VHKV, VK, VV, s, C, q, k, v, o, l, dout, dq, (float *)dout + 5, dv,
               NULL, 0),
           INV, "dk=", "dk overlaps dout");
    EXPECT(BWD(ctx, VB, VT, VHQ, VHKV, VK, VV, s, C, q, k, v, o, l, dout, dq, dk, dq + 3, NULL, 0),
           INV, "overlaps output dq", "dv overlaps dq");
    EXPECT(BWD(ctx, VB, VT, VHQ, VHKV, VK, VV, s, C, q, k, v, o, l, dout, dq, dq, dv, NULL, 0), INV,
           "dk=", "dk equals dq");
    EXPECT(BWD(ctx, VB, (int64_t)1 << 61, VHQ, VHKV, VK, VV, s, C, q, k, v, o, l, dout, dq, dk, dv,
               NULL, 0),
           INV, "q [B,T,Hq,K]", "numel overflow");
    EXPECT(BWD(ctx, 2, VT, VHQ, VHKV, VK, VV, s, C, q, k, v, o, l, dout, dq, dk, dv, dcu_ok, 2), INV,
           "B=2", "varlen B != 1");
    EXPECT(BWD(ctx, 1, VT, VHQ, VHKV, VK, VV, s, C, q, k, v, o, l, dout, dq, dk, dv, dcu_ok, 0), INV,
           "N=0", "varlen N=0");
    EXPECT(BWD(ctx, 1, VT, VHQ, VHKV, VK, VV, s, C, q, k, v, o, l, dout, dq, dk, dv, dcu_first, 2),
           INV, "cu_seqlens[0]=1", "cu_seqlens[0] != 0");
    EXPECT(BWD(ctx, 1, VT, VHQ, VHKV, VK, VV, s, C, q, k, v, o, l, dout, dq, dk, dv, dcu_dec, 2),
           INV, "cu_seqlens[2]=3", "cu_seqlens decreasing");
    EXPECT(BWD(ctx, 1, VT, VHQ, VHKV, VK, VV, s, C, q, k, v, o, l, dout, dq, dk, dv, dcu_end, 2),
           INV, "cu_seqlens[N=2]", "cu_seqlens[N] != T");
    if (be->backend == SEQK_BACKEND_CUDA) {
        EXPECT(BWD(ctx, VB, VT, VHQ, VHKV, 300, VV, s, C, q, k, v, o, l, dout, dq, dk, dv, NULL, 0),
               SEQK_ERROR_UNSUPPORTED, "K=300", "CUDA K > 256");
        EXPECT(BWD(ctx, VB, VT, VHQ, VHKV, VK, 257, s, C, q, k, v, o, l, dout, dq, dk, dv, NULL, 0),
               SEQK_ERROR_UNSUPPORTED, "V=257", "CUDA V > 256");
    }
    /* The function's name in the message. */
    EXPECT(BWD(ctx, VB, VT, VHQ, VHKV, VK, VV, s, C, q, k, v, o, l, dout, NULL, dk, dv, NULL, 0),
           INV, "seqk_attention_parallel_backward:", "message names the function");
    size_t bytes = 0;
    seqk_status st = seqk_attention_parallel_backward_workspace_size(ctx, VB, VT, VHQ, VHKV, VK, VV,
                                                                     C, 0, NULL);
    th_check(st == INV && strstr(seqk_last_error(), "bytes"), "%s backward workspace_size: bytes NULL",
             be->name);
    st = seqk_attention_parallel_backward_workspace_size(ctx, VB, VT, 3, VHKV, VK, VV, C, 0, &bytes);
    th_check(st == INV && strstr(seqk_last_error(), "Hq=3"), "%s backward workspace_size: Hq %% Hkv",
             be->name);
    st = seqk_attention_parallel_backward_workspace_size(ctx, VB, VT, VHQ, VHKV, VK, VV, C, 0,
                                                         &bytes);
    th_check(st == SEQK_SUCCESS, "%s backward workspace_size: valid sizes (%zu bytes)", be->name,
             bytes);
    /* T = 0 succeeds and writes nothing (outputs may then be NULL). */
    EXPECT(BWD(ctx, VB, 0, VHQ, VHKV, VK, VV, s, C, q, k, v, o, l, dout, dq, dk, dv, NULL, 0),
           SEQK_SUCCESS, "", "T = 0 writes nothing");
    EXPECT(BWD(ctx, VB, 0, VHQ, VHKV, VK, VV, s, C, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
               NULL, NULL, 0),
           SEQK_SUCCESS, "", "T = 0 with NULL arrays");
#undef EXPECT
#undef BWD
    tf_arrays_free(&da);
    tf_arrays_free(&ha);
}

int main(int argc, char **argv)
{
    th_backend *list;
    const int n = th_init(argc, argv, &list);
    th_seed(4321);
    reference_vs_finite_differences();
    for (int i = 0; i < n; i++) {
        th_seed(5678 + (uint64_t)i);
        backward_cases(&list[i]);
        determinism(&list[i]);
        validation(&list[i]);
    }
    return th_finish();
}
