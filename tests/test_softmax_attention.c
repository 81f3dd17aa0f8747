/* tests/test_softmax_attention.c -- softmax attention (DESIGN 3.5) on every
 * backend against the float64 reference: the parallel mode (causal and not,
 * GQA, T = 1, prime T, T below a tile, K != V, odd head dims, batches and
 * heads, varlen with empty and length-1 sequences, lse), the decode step
 * (prefill, then token by token, equals the parallel mode over the whole
 * sequence; ragged cache lengths; nothing read past the cache; the CPU step
 * allocates nothing), and every validation rule (status, message naming the
 * argument, outputs untouched). */
#define _GNU_SOURCE 1
#include "fixtures.h"
#include "ref/ref_attention.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL 1e-5

/* ------------------------------------------------------------------------ */
/* Allocation counter: malloc & co. interposed for the whole process (the    */
/* executable's definitions win over libc's for libseqk and libgomp too).    */
/* ------------------------------------------------------------------------ */

#if defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define COUNT_ALLOCS 1
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);
static atomic_int counting;
static atomic_long n_allocs;
static void count(void)
{
    if (atomic_load(&counting)) atomic_fetch_add(&n_allocs, 1);
}
void *malloc(size_t n)
{
    count();
    return __libc_malloc(n);
}
void *calloc(size_t n, size_t m)
{
    count();
    return __libc_calloc(n, m);
}
void *realloc(void *p, size_t n)
{
    count();
    return __libc_realloc(p, n);
}
void *aligned_alloc(size_t a, size_t n)
{
    count();
    return __libc_memalign(a, n);
}
int posix_memalign(void **p, size_t a, size_t n)
{
    count();
    void *r = __libc_memalign(a, n);
    if (!r) return 12; /* ENOMEM */
    *p = r;
    return 0;
}
void free(void *p)
{
    __libc_free(p);
}
#else
#define COUNT_ALLOCS 0
#endif

/* ------------------------------------------------------------------------ */
/* Parallel mode                                                             */
/* ------------------------------------------------------------------------ */

typedef struct {
    int64_t B, T, Hq, Hkv, K, V;
    int causal, with_lse;
    double scale_mul; /* scale = scale_mul / sqrt(K) */
    const int32_t *cu;
    int64_t N;
    int threads; /* 0: context default */
} par_case;

static void par_describe(const par_case *c, const char *be, char *buf, size_t n)
{
    snprintf(buf, n, "%s parallel B=%lld T=%lld Hq=%lld Hkv=%lld K=%lld V=%lld%s%s scale*%.3g%s%s",
             be, (long long)c->B, (long long)c->T, (long long)c->Hq, (long long)c->Hkv,
             (long long)c->K, (long long)c->V, c->causal ? " causal" : "",
             c->with_lse ? " lse" : "", c->scale_mul, c->cu ? " varlen" : "",
             c->threads ? (c->threads == 1 ? " 1 thread" : " 3 threads") : "");
}

static void run_par_case(th_backend *be, const par_case *c)
{
    char what[256];
    par_describe(c, be->name, what, sizeof what);
    if (th_skipped(be, what)) return;
    const int64_t N = c->cu ? c->N : c->B;
    const size_t nq = (size_t)(c->B * c->T * c->Hq * c->K),
                 nk = (size_t)(c->B * c->T * c->Hkv * c->K);
    const size_t nv = (size_t)(c->B * c->T * c->Hkv * c->V),
                 no = (size_t)(c->B * c->T * c->Hq * c->V);
    const size_t nl = (size_t)(c->B * c->Hq * c->T);
    const float scale = (float)(c->scale_mul / sqrt((double)c->K));
    tf_arrays h = tf_arrays_on(NULL), d = tf_arrays_on(be);
    float *q = tf_random(&h, nq + 1, -1.5, 1.5), *k = tf_random(&h, nk + 1, -1.5, 1.5);
    float *v = tf_random(&h, nv + 1, -1, 1);
    double *ref = tf_doubles(&h, no + 1), *ref_lse = tf_doubles(&h, nl + 1);
    ref_attention(c->B, c->T, c->Hq, c->Hkv, c->K, c->V, scale, c->causal, q, k, v, ref, ref_lse,
                  c->cu, c->N);

    float *d_q = tf_upload(&d, q, nq * sizeof(float)), *d_k = tf_upload(&d, k, nk * sizeof(float));
    float *d_v = tf_upload(&d, v, nv * sizeof(float));
    float *d_o = tf_poisoned(&d, no + 1), *d_lse = tf_poisoned(&d, nl + 1);
    int32_t *d_cu = c->cu ? tf_upload(&d, c->cu, (size_t)(N + 1) * sizeof(int32_t)) : NULL;
    int old_threads = 0;
    seqk_context_threads(be->ctx, &old_threads);
    if (c->threads) seqk_context_set_threads(be->ctx, c->threads);
    seqk_status st = seqk_attention_parallel(be->ctx, c->B, c->T, c->Hq, c->Hkv, c->K, c->V, scale,
                                             c->causal ? SEQK_ATTN_CAUSAL : 0, d_q, d_k, d_v, d_o,
                                             c->with_lse ? d_lse : NULL, d_cu, c->N);
    if (c->threads) seqk_context_set_threads(be->ctx, 0);
    if (th_check_status(st, SEQK_SUCCESS, what)) {
        float *o = tf_floats(&h, no + 1), *lse = tf_floats(&h, nl + 1);
        tf_check_result(be, o, d_o, no, ref, TOL, true, what, "o");
        if (c->with_lse) {
            tf_check_result(be, lse, d_lse, nl, ref_lse, TOL, true, what, "lse");
        } else {
            th_download(be, lse, d_lse, (nl + 1) * sizeof(float));
            bool untouched = true;
            for (size_t i = 0; i <= nl; i++) untouched = untouched && isnan(lse[i]);
            th_check(untouched, "%s: lse buffer untouched when lse = NULL", what);
        }
    }
    tf_arrays_free(&d);
    tf_arrays_free(&h);
}

static void parallel_cases(th_backend *be)
{
    /* lengths 0, 1, 49, 0, 3, 100, 1 */
    static const int32_t cu1[] = {0, 0, 1, 50, 50, 53, 153, 154};
    /* lengths 5, 0, 130, 1 */
    static const int32_t cu2[] = {0, 5, 5, 135, 136};
    static const int32_t cu3[] = {0, 0, 0}; /* all empty, T = 0 */
    const par_case cases[] = {
        /* GQA 8/2, prime T, head dim 64 */
        {2, 67, 8, 2, 64, 64, 1, 1, 1.0, NULL, 0, 0},
        {2, 67, 8, 2, 64, 64, 0, 1, 1.0, NULL, 0, 0},
        /* MHA, head dim 128, prime T spanning several tiles */
        {1, 257, 4, 4, 128, 128, 1, 1, 1.0, NULL, 0, 0},
        {1, 257, 4, 4, 128, 128, 0, 1, 1.0, NULL, 0, 0},
        /* T = 1, multi-query */
        {3, 1, 2, 1, 64, 64, 1, 1, 1.0, NULL, 0, 0},
        {3, 1, 2, 1, 64, 64, 0, 1, 1.0, NULL, 0, 0},
        /* T smaller than a tile, K != V */
        {2, 5, 3, 3, 32, 48, 1, 1, 1.0, NULL, 0, 0},
        {2, 5, 3, 3, 32, 48, 0, 1, 1.0, NULL, 0, 0},
        /* odd head dims */
        {2, 100, 6, 2, 17, 17, 1, 1, 1.0, NULL, 0, 0},
        {1, 71, 3, 1, 17, 5, 0, 1, 1.0, NULL, 0, 0},
        {1, 53, 2, 2, 3, 130, 1, 1, 1.0, NULL, 0, 0},
        /* T a multiple of both tile sizes; peaked softmax (large scale) */
        {1, 192, 2, 1, 64, 64, 1, 1, 6.0, NULL, 0, 0},
        {2, 131, 4, 2, 48, 32, 1, 1, 8.0, NULL, 0, 0},
        {1, 131, 4, 2, 48, 32, 0, 1, 8.0, NULL, 0, 0},
        /* no lse */
        {2, 40, 4, 2, 64, 64, 1, 0, 1.0, NULL, 0, 0},
        /* varlen with empty and length-1 sequences */
        {1, 154, 8, 2, 64, 64, 1, 1, 1.0, cu1, 7, 0},
        {1, 154, 8, 2, 64, 64, 0, 1, 1.0, cu1, 7, 0},
        {1, 136, 4, 4, 32, 48, 1, 1, 2.0, cu2, 4, 0},
        {1, 136, 2, 1, 17, 9, 0, 0, 1.0, cu2, 4, 0},
        {1, 0, 2, 1, 16, 16, 1, 1, 1.0, cu3, 2, 0},
        /* head dims beyond every tile (CPU only: CUDA takes K, V <= 256) */
        {1, 30, 2, 1, 256, 256, 1, 1, 1.0, NULL, 0, 0},
        /* thread counts other than the default */
        {2, 150, 4, 2, 64, 64, 1, 1, 1.0, NULL, 0, 1},
        {2, 150, 4, 2, 64, 64, 1, 1, 1.0, NULL, 0, 3},
        {1, 154, 8, 2, 64, 64, 1, 1, 1.0, cu1, 7, 3},
        /* a longer sequence */
        {1, 600, 2, 1, 64, 64, 1, 1, 1.0, NULL, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_par_case(be, &cases[i]);
    if (be->ctx && be->backend == SEQK_BACKEND_CPU) {
        /* Head dims the CUDA backend does not take; the last two make the
         * CPU backend pack its key/value heads in several passes (packed
         * heads of ~8 MiB against its 32 MiB budget). */
        static const int32_t cu4[] = {0, 200, 200, 500};
        const par_case big[] = {
            {1, 20, 2, 2, 300, 270, 1, 1, 1.0, NULL, 0, 0},
            {4, 500, 1, 1, 2048, 2048, 1, 1, 1.0, NULL, 0, 0},
            {1, 500, 4, 4, 2048, 2040, 1, 1, 1.0, cu4, 3, 0},
        };
        for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) run_par_case(be, &big[i]);
    }
}

/* ------------------------------------------------------------------------ */
/* Decode: prefill, then token by token == parallel mode over the sequence   */
/* ------------------------------------------------------------------------ */

typedef struct {
    int64_t B, Hq, Hkv, K, V, T; /* T tokens of data per batch entry */
    int64_t prefill[4];          /* tokens already in the cache, per batch entry */
    int64_t steps;
    int64_t max_len;
    int with_lse;
} dec_case;

static void run_dec_case(th_backend *be, const dec_case *c)
{
    char what[256];
    snprintf(what, sizeof what,
             "%s decode B=%lld Hq=%lld Hkv=%lld K=%lld V=%lld prefill=%lld,%lld.. steps=%lld "
             "max_len=%lld%s",
             be->name, (long long)c->B, (long long)c->Hq, (long long)c->Hkv, (long long)c->K,
             (long long)c->V, (long long)c->prefill[0], (long long)c->prefill[1],
             (long long)c->steps, (long long)c->max_len, c->with_lse ? " lse" : "");
    if (th_skipped(be, what)) return;
    const int64_t B = c->B, T = c->T, Hq = c->Hq, Hkv = c->Hkv, K = c->K, V = c->V;
    const int64_t ML = c->max_len;
    const float scale = (float)(1.0 / sqrt((double)K));
    const size_t nq = (size_t)(B * T * Hq * K), nk = (size_t)(B * T * Hkv * K);
    const size_t nv = (size_t)(B * T * Hkv * V), no = (size_t)(B * T * Hq * V);
    const size_t nl = (size_t)(B * Hq * T);
    tf_arrays ha = tf_arrays_on(NULL), da = tf_arrays_on(be); /* host arrays, backend buffers */
    float *q = tf_random(&ha, nq, -1.5, 1.5), *k = tf_random(&ha, nk, -1.5, 1.5);
    float *v = tf_random(&ha, nv, -1, 1);
    double *ref = tf_doubles(&ha, no), *ref_lse = tf_doubles(&ha, nl);
    ref_attention(B, T, Hq, Hkv, K, V, scale, 1, q, k, v, ref, ref_lse, NULL, 0);

    /* The parallel mode over the whole sequences, on this backend. */
    tf_arrays dp = tf_arrays_on(be); /* its buffers */
    float *d_q = tf_upload(&dp, q, nq * sizeof(float)), *d_k = tf_upload(&dp, k, nk * sizeof(float));
    float *d_v = tf_upload(&dp, v, nv * sizeof(float));
    float *d_o = tf_poisoned(&dp, no), *d_lse = tf_poisoned(&dp, nl);
    seqk_status st = seqk_attention_parallel(be->ctx, B, T, Hq, Hkv, K, V, scale, SEQK_ATTN_CAUSAL,
                                             d_q, d_k, d_v, d_o, d_lse, NULL, 0);
    th_check_status(st, SEQK_SUCCESS, what);
    float *par_o = tf_floats(&ha, no), *par_lse = tf_floats(&ha, nl);
    th_download(be, par_o, d_o, no * sizeof(float));
    th_download(be, par_lse, d_lse, nl * sizeof(float));
    tf_arrays_free(&dp);

    /* The cache: prefill tokens copied in, the rest NaN (never to be read). */
    const size_t nkc = (size_t)(B * ML * Hkv * K), nvc = (size_t)(B * ML * Hkv * V);
    float *kc = tf_floats(&ha, nkc), *vc = tf_floats(&ha, nvc);
    th_poison(kc, nkc);
    th_poison(vc, nvc);
    int32_t len[4];
    for (int64_t b = 0; b < B; b++) {
        len[b] = (int32_t)c->prefill[b];
        memcpy(kc + b * ML * Hkv * K, k + b * T * Hkv * K,
               (size_t)(len[b] * Hkv * K) * sizeof(float));
        memcpy(vc + b * ML * Hkv * V, v + b * T * Hkv * V,
               (size_t)(len[b] * Hkv * V) * sizeof(float));
    }
    float *d_kc = tf_upload(&da, kc, nkc * sizeof(float)),
          *d_vc = tf_upload(&da, vc, nvc * sizeof(float));
    int32_t *d_len = tf_upload(&da, len, (size_t)B * sizeof(int32_t));
    const size_t sq = (size_t)(B * Hq * K), sk = (size_t)(B * Hkv * K), sv = (size_t)(B * Hkv * V);
    const size_t so = (size_t)(B * Hq * V), sl = (size_t)(B * Hq);
    float *hq = tf_floats(&ha, sq), *hk = tf_floats(&ha, sk), *hv = tf_floats(&ha, sv);
    float *ho = tf_floats(&ha, so + 1), *hl = tf_floats(&ha, sl + 1);
    double *ro = tf_doubles(&ha, so), *rl = tf_doubles(&ha, sl);
    float *po = tf_floats(&ha, so), *pl = tf_floats(&ha, sl);
    float *d_sq = tf_poisoned(&da, sq), *d_sk = tf_poisoned(&da, sk), *d_sv = tf_poisoned(&da, sv);
    float *d_so = tf_poisoned(&da, so + 1), *d_sl = tf_poisoned(&da, sl + 1);
    size_t ws = 0;
    st = seqk_attention_decode_workspace_size(be->ctx, B, Hq, Hkv, K, V, ML, &ws);
    th_check_status(st, SEQK_SUCCESS, "decode workspace size");
    if (ws) seqk_context_reserve_workspace(be->ctx, ws);
    double worst_ref = 0, worst_par = 0, worst_lse = 0;
    bool ok_status = true, ok_tail = true;
    for (int64_t s = 0; s < c->steps; s++) {
        /* the new token of each batch entry sits at position len[b] */
        for (int64_t b = 0; b < B; b++) {
            const int64_t t = len[b];
            memcpy(hq + b * Hq * K, q + (b * T + t) * Hq * K, (size_t)(Hq * K) * sizeof(float));
            memcpy(hk + b * Hkv * K, k + (b * T + t) * Hkv * K, (size_t)(Hkv * K) * sizeof(float));
            memcpy(hv + b * Hkv * V, v + (b * T + t) * Hkv * V, (size_t)(Hkv * V) * sizeof(float));
            for (int64_t h = 0; h < Hq; h++) {
                for (int64_t x = 0; x < V; x++) {
                    ro[(b * Hq + h) * V + x] = ref[((b * T + t) * Hq + h) * V + x];
                    po[(b * Hq + h) * V + x] = par_o[((b * T + t) * Hq + h) * V + x];
                }
                rl[b * Hq + h] = ref_lse[(b * Hq + h) * T + t];
                pl[b * Hq + h] = par_lse[(b * Hq + h) * T + t];
            }
        }
        seqk_memcpy(be->ctx, d_sq, hq, sq * sizeof(float), SEQK_COPY_HOST_TO_BACKEND);
        seqk_memcpy(be->ctx, d_sk, hk, sk * sizeof(float), SEQK_COPY_HOST_TO_BACKEND);
        seqk_memcpy(be->ctx, d_sv, hv, sv * sizeof(float), SEQK_COPY_HOST_TO_BACKEND);
        seqk_memcpy(be->ctx, d_len, len, (size_t)B * sizeof(int32_t), SEQK_COPY_HOST_TO_BACKEND);
        th_poison(ho, so + 1);
        th_poison(hl, sl + 1);
        seqk_memcpy(be->ctx, d_so, ho, (so + 1) * sizeof(float), SEQK_COPY_HOST_TO_BACKEND);
        seqk_memcpy(be->ctx, d_sl, hl, (sl + 1) * sizeof(float), SEQK_COPY_HOST_TO_BACKEND);
        st = seqk_attention_decode(be->ctx, B, Hq, Hkv, K, V, ML, scale, d_sq, d_sk, d_sv, d_kc,
                                   d_vc, d_len, d_so, c->with_lse ? d_sl : NULL);
        if (st != SEQK_SUCCESS) {
            ok_status = th_check_status(st, SEQK_SUCCESS, what);
            break;
        }
        th_download(be, ho, d_so, (so + 1) * sizeof(float));
        th_download(be, hl, d_sl, (sl + 1) * sizeof(float));
        const double e1 = th_rel_err(ho, ro, so), e2 = th_rel_err_f(ho, po, so);
        worst_ref = e1 > worst_ref ? e1 : worst_ref;
        worst_par = e2 > worst_par ? e2 : worst_par;
        if (c->with_lse) {
            const double e3 = th_rel_err(hl, rl, sl);
            worst_lse = e3 > worst_lse ? e3 : worst_lse;
        } else {
            for (size_t i = 0; i < sl; i++) ok_tail = ok_tail && isnan(hl[i]);
        }
        ok_tail = ok_tail && isnan(ho[so]) && isnan(hl[sl]);
        for (int64_t b = 0; b < B; b++) len[b]++; /* the caller owns cache_len */
    }
    if (ok_status) {
        th_check(worst_ref <= TOL, "%s: o vs float64 reference, worst step rel err %.3g", what,
                 worst_ref);
        th_check(worst_par <= TOL, "%s: o vs the parallel mode, worst step rel err %.3g", what,
                 worst_par);
        if (c->with_lse)
            th_check(worst_lse <= TOL, "%s: lse vs reference, worst step rel err %.3g", what,
                     worst_lse);
        th_check(ok_tail, "%s: nothing written past o / lse (or to lse when NULL)", what);
        /* cache_len itself is not changed by the library */
        int32_t len_back[4];
        th_download(be, len_back, d_len, (size_t)B * sizeof(int32_t));
        bool same = true;
        for (int64_t b = 0; b < B; b++) same = same && len_back[b] == len[b] - 1;
        th_check(same, "%s: cache_len not modified by the step", what);
        /* the cache holds exactly the appended keys/values; the rest stays NaN */
        th_download(be, kc, d_kc, nkc * sizeof(float));
        th_download(be, vc, d_vc, nvc * sizeof(float));
        bool cache_ok = true;
        for (int64_t b = 0; b < B; b++) {
            for (int64_t t = 0; t < ML; t++) {
                for (int64_t x = 0; x < Hkv * K; x++) {
                    const float got = kc[(b * ML + t) * Hkv * K + x];
                    cache_ok =
                        cache_ok && (t < len[b] ? got == k[(b * T + t) * Hkv * K + x] : isnan(got));
                }
                for (int64_t x = 0; x < Hkv * V; x++) {
                    const float got = vc[(b * ML + t) * Hkv * V + x];
                    cache_ok =
                        cache_ok && (t < len[b] ? got == v[(b * T + t) * Hkv * V + x] : isnan(got));
                }
            }
        }
        th_check(cache_ok, "%s: cache holds the appended tokens, nothing else written", what);
    }
    tf_arrays_free(&da);
    tf_arrays_free(&ha);
}

static void decode_cases(th_backend *be)
{
    const dec_case cases[] = {
        /* GQA, ragged prefill (one entry starts from an empty cache) */
        {3, 8, 2, 64, 64, 64, {40, 1, 0, 0}, 24, 70, 1},
        /* MHA, head dim 128, a cache crossing several decode tiles */
        {1, 4, 4, 128, 128, 200, {150, 0, 0, 0}, 50, 200, 1},
        /* K != V, odd dims, multi-query, no lse */
        {2, 3, 1, 17, 9, 40, {5, 20, 0, 0}, 20, 45, 0},
        {2, 4, 2, 32, 48, 80, {0, 7, 0, 0}, 73, 80, 1},
        /* Hq = Hkv = 1, from an empty cache to a full one */
        {1, 1, 1, 16, 16, 10, {0, 0, 0, 0}, 10, 10, 1},
        /* many query heads per kv head (more than one group of 8) */
        {2, 20, 2, 64, 64, 90, {70, 33, 0, 0}, 20, 96, 1},
        /* caches long enough for the CPU to split them into token ranges
         * (partials merged by log-sum-exp): uneven last range, ranges left
         * empty, a ragged batch with one short and one long cache */
        {1, 4, 2, 32, 24, 1300, {1100, 0, 0, 0}, 6, 1300, 1},
        {2, 6, 3, 16, 20, 1000, {900, 3, 0, 0}, 4, 1000, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_dec_case(be, &cases[i]);
}

/* The CPU decode step allocates nothing (after a first call has started the
 * OpenMP threads). */
static void decode_no_alloc(th_backend *be)
{
    if (!be->ctx || be->backend != SEQK_BACKEND_CPU) return;
#if COUNT_ALLOCS
    const int64_t B = 2, Hq = 8, Hkv = 2, K = 64, V = 64, ML = 300;
    float *q = th_floats((size_t)(B * Hq * K)), *kn = th_floats((size_t)(B * Hkv * K));
    float *vn = th_floats((size_t)(B * Hkv * V)), *o = th_floats((size_t)(B * Hq * V));
    float *lse = th_floats((size_t)(B * Hq));
    float *kc = th_floats((size_t)(B * ML * Hkv * K)), *vc = th_floats((size_t)(B * ML * Hkv * V));
    th_fill(q, (size_t)(B * Hq * K), -1, 1);
    th_fill(kn, (size_t)(B * Hkv * K), -1, 1);
    th_fill(vn, (size_t)(B * Hkv * V), -1, 1);
    th_fill(kc, (size_t)(B * ML * Hkv * K), -1, 1);
    th_fill(vc, (size_t)(B * ML * Hkv * V), -1, 1);
    int32_t len[2] = {200, 17};
    seqk_status st = seqk_attention_decode(be->ctx, B, Hq, Hkv, K, V, ML, 0.125f, q, kn, vn, kc, vc,
                                           len, o, lse); /* warm-up */
    long before = 0, after = 0;
    bool ok = st == SEQK_SUCCESS;
    for (int threads = 1; threads <= 2 && ok; threads++) {
        seqk_context_set_threads(be->ctx, threads);
        ok = seqk_attention_decode(be->ctx, B, Hq, Hkv, K, V, ML, 0.125f, q, kn, vn, kc, vc, len, o,
                                   lse) == SEQK_SUCCESS; /* warm-up at this thread count */
        before = atomic_load(&n_allocs);
        atomic_store(&counting, 1);
        for (int s = 0; s < 20 && ok; s++) {
            ok = seqk_attention_decode(be->ctx, B, Hq, Hkv, K, V, ML, 0.125f, q, kn, vn, kc, vc,
                                       len, o, lse) == SEQK_SUCCESS;
            len[0]++;
            len[1]++;
        }
        atomic_store(&counting, 0);
        after = atomic_load(&n_allocs);
        th_check(ok && after == before,
                 "cpu decode step allocates nothing (%d threads): %ld allocations in 20 steps",
                 threads, after - before);
    }
    /* the recurrent step of linear attention (the linear-state engine behind
     * retention and gated retention too), state updated in place */
    const int64_t H = 8;
    float *ql = th_floats((size_t)(B * H * K)), *kl = th_floats((size_t)(B * H * K));
    float *vl = th_floats((size_t)(B * H * V)), *ol = th_floats((size_t)(B * H * V));
    float *state = th_floats((size_t)(B * H * K * V));
    th_fill(ql, (size_t)(B * H * K), -1, 1);
    th_fill(kl, (size_t)(B * H * K), -1, 1);
    th_fill(vl, (size_t)(B * H * V), -1, 1);
    th_fill(state, (size_t)(B * H * K * V), -1, 1);
    for (int threads = 1; threads <= 2 && ok; threads++) {
        seqk_context_set_threads(be->ctx, threads);
        ok = seqk_linear_attention(be->ctx, SEQK_MODE_RECURRENT, B, 1, H, K, V, 0.125f, 0, ql, kl, vl,
                                   ol, state, state, NULL, NULL, NULL, 0, 0) == SEQK_SUCCESS;
        before = atomic_load(&n_allocs);
        atomic_store(&counting, 1);
        for (int s = 0; s < 20 && ok; s++)
            ok = seqk_linear_attention(be->ctx, SEQK_MODE_RECURRENT, B, 1, H, K, V, 0.125f, 0, ql,
                                       kl, vl, ol, state, state, NULL, NULL, NULL, 0,
                                       0) == SEQK_SUCCESS;
        atomic_store(&counting, 0);
        after = atomic_load(&n_allocs);
        th_check(ok && after == before,
                 "cpu linear attention recurrent step allocates nothing (%d threads): %ld "
                 "allocations in 20 steps", threads, after - before);
    }
    free(ql), free(kl), free(vl), free(ol), free(state);
    seqk_context_set_threads(be->ctx, 0);
    /* the counter itself works: it sees an allocation made while counting */
    atomic_store(&counting, 1);
    before = atomic_load(&n_allocs);
    void *volatile p = malloc(16);
    after = atomic_load(&n_allocs);
    atomic_store(&counting, 0);
    free(p);
    th_check(after == before + 1, "allocation counter counts (sanity)");
    free(q);
    free(kn);
    free(vn);
    free(o);
    free(lse);
    free(kc);
    free(vc);
#else
    th_skip("cpu decode allocation check: needs glibc without sanitizers");
#endif
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

static bool all_equal(const float *x, size_t n, float val)
{
    for (size_t i = 0; i < n; i++)
        if (x[i] != val) return false;
    return true;
}

/* The outputs (o, lse: filled with TF_UNTOUCHED) are untouched. */
static void check_untouched(th_backend *be, const char *what, const float *d_o, size_t no,
                            const float *d_l, size_t nl)
{
    float *o = th_floats(no), *l = th_floats(nl);
    th_download(be, o, d_o, no * sizeof(float));
    th_download(be, l, d_l, nl * sizeof(float));
    th_check(all_equal(o, no, TF_UNTOUCHED) && all_equal(l, nl, TF_UNTOUCHED),
             "%s: outputs untouched", what);
    free(o);
    free(l);
}

/* A bad call must fail with want, name `needle` in the message and leave
 * the outputs untouched. */
static void expect_fail(th_backend *be, seqk_status got, seqk_status want, const char *needle,
                        const char *what, float *d_o, size_t no, float *d_l, size_t nl)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s %s", be->name, what);
    th_check_status(got, want, buf);
    th_check(strstr(seqk_last_error(), needle) != NULL, "%s: message \"%s\" names \"%s\"", buf,
             seqk_last_error(), needle);
    check_untouched(be, buf, d_o, no, d_l, nl);
}

static void validation_parallel(th_backend *be)
{
    if (!be->ctx) {
        th_skip("%s parallel validation: %s", be->name, be->skip_reason);
        return;
    }
    seqk_context *ctx = be->ctx;
    const size_t nq = VB * VT * VHQ * VK, nk = VB * VT * VHKV * VK, nv = VB * VT * VHKV * VV;
    const size_t no = VB * VT * VHQ * VV, nl = VB * VHQ * VT;
    tf_arrays ha = tf_arrays_on(NULL), da = tf_arrays_on(be);
    float *hq = tf_random(&ha, nq, -1, 1), *hk = tf_random(&ha, nk, -1, 1);
    float *hv = tf_random(&ha, nv, -1, 1), *h7 = tf_floats(&ha, no + nl);
    tf_fill_untouched(h7, no + nl);
    float *q = tf_upload(&da, hq, nq * sizeof(float)), *k = tf_upload(&da, hk, nk * sizeof(float));
    float *v = tf_upload(&da, hv, nv * sizeof(float));
    float *o = tf_upload(&da, h7, no * sizeof(float)), *l = tf_upload(&da, h7, nl * sizeof(float));
    const int32_t cu_ok[3] = {0, 2, VT}, cu_first[3] = {1, 2, VT}, cu_dec[3] = {0, 4, 3};
    const int32_t cu_end[3] = {0, 2, VT - 1};
    int32_t *dcu_ok = tf_upload(&da, cu_ok, sizeof cu_ok),
            *dcu_first = tf_upload(&da, cu_first, sizeof cu_first);
    int32_t *dcu_dec = tf_upload(&da, cu_dec, sizeof cu_dec),
            *dcu_end = tf_upload(&da, cu_end, sizeof cu_end);
    const float s = 0.35f;
    const unsigned C = SEQK_ATTN_CAUSAL;
#define PAR(ctx_, B_, T_, Hq_, Hkv_, K_, V_, sc_, fl_, q_, k_, v_, o_, l_, cu_, N_)                \
    seqk_attention_parallel(ctx_, B_, T_, Hq_, Hkv_, K_, V_, sc_, fl_, q_, k_, v_, o_, l_, cu_, N_)
#define EXPECT(call, want, needle, what) expect_fail(be, call, want, needle, what, o, no, l, nl)
    const seqk_status INV = SEQK_ERROR_INVALID_ARGUMENT;
    EXPECT(PAR(NULL, VB, VT, VHQ, VHKV, VK, VV, s, C, q, k, v, o, l, NULL, 0), INV, "ctx",
           "ctx NULL");
    EXPECT(PAR(ctx, 0, VT, VHQ, VHKV, VK, VV, s, C, q, k, v, o, l, NULL, 0), INV, "B=0", "B=0");
    EXPECT(PAR(ctx, VB, -1, VHQ, VHKV, VK, VV, s, C, q, k, v, o, l, NULL, 0), INV, "T=-1", "T=-1");
    EXPECT(PAR(ctx, VB, VT, 0, VHKV, VK, VV, s, C, q, k, v, o, l, NULL, 0), INV, "Hq=0", "Hq=0");
    EXPECT(PAR(ctx, VB, VT, VHQ, 0, VK, VV, s, C, q, k, v, o, l, NULL, 0), INV, "Hkv=0", "Hkv=0");
    EXPECT(PAR(ctx, VB, VT, 3, VHKV, VK, VV, s, C, q, k, v, o, l, NULL, 0), INV, "Hkv=2",
           "Hq % Hkv");
    EXPECT(PAR(ctx, VB, VT, VHQ, VHKV, 0, VV, s, C, q, k, v, o, l, NULL, 0), INV, "K=0", "K=0");
    EXPECT(PAR(ctx, VB, VT, VHQ, VHKV, VK, 0, s, C, q, k, v, o, l, NULL, 0), INV, "V=0", "V=0");
    EXPECT(PAR(ctx, VB, VT, VHQ, VHKV, VK, VV, NAN, C, q, k, v, o, l, NULL, 0), INV, "scale",
           "scale NaN");
    EXPECT(PAR(ctx, VB, VT, VHQ, VHKV, VK, VV, INFINITY, C, q, k, v, o, l, NULL, 0), INV, "scale",
           "scale inf");
    EXPECT(PAR(ctx, VB, VT, VHQ, VHKV, VK, VV, s, 0x6u, q, k, v, o, l, NULL, 0), INV, "flags",
           "flags unknown bits");
    EXPECT(PAR(ctx, VB, VT, VHQ, VHKV, VK, VV, s, C, NULL, k, v, o, l, NULL, 0), INV, "q is NULL",
           "q NULL");
    EXPECT(PAR(ctx, VB, VT, VHQ, VHKV, VK, VV, s, C, q, NULL, v, o, l, NULL, 0), INV, "k is NULL",
           "k NULL");
    EXPECT(PAR(ctx, VB, VT, VHQ, VHKV, VK, VV, s, C, q, k, NULL, o, l, NULL, 0), INV, "v is NULL",
           "v NULL");
    EXPECT(PAR(ctx, VB, VT, VHQ, VHKV, VK, VV, s, C, q, k, v, NULL, l, NULL, 0), INV, "o is NULL",
           "o NULL");
    EXPECT(PAR(ctx, VB, VT, VHQ, VHKV, VK, VV, s, C, o, k, v, o, l, NULL, 0), INV,
           "o=", "o overlaps q");
    EXPECT(PAR(ctx, VB, VT, VHQ, VHKV, VK, VV, s, C, q, k, v, o, o + 3, NULL, 0), INV,
           "lse=", "lse overlaps o");
    EXPECT(PAR(ctx, VB, (int64_t)1 << 61, VHQ, VHKV, VK, VV, s, C, q, k, v, o, l, NULL, 0), INV,
           "q [B,T,Hq,K]", "numel overflow");
    EXPECT(PAR(ctx, 2, VT, VHQ, VHKV, VK, VV, s, C, q, k, v, o, l, dcu_ok, 2), INV, "B=2",
           "varlen B != 1");
    EXPECT(PAR(ctx, 1, VT, VHQ, VHKV, VK, VV, s, C, q, k, v, o, l, dcu_ok, 0), INV, "N=0",
           "varlen N=0");
    EXPECT(PAR(ctx, 1, VT, VHQ, VHKV, VK, VV, s, C, q, k, v, o, l, dcu_first, 2), INV,
           "cu_seqlens[0]=1", "cu_seqlens[0] != 0");
    EXPECT(PAR(ctx, 1, VT, VHQ, VHKV, VK, VV, s, C, q, k, v, o, l, dcu_dec, 2), INV,
           "cu_seqlens[2]=3", "cu_seqlens decreasing");
    EXPECT(PAR(ctx, 1, VT, VHQ, VHKV, VK, VV, s, C, q, k, v, o, l, dcu_end, 2), INV,
           "cu_seqlens[N=2]", "cu_seqlens[N] != T");
    if (be->backend == SEQK_BACKEND_CUDA) {
        EXPECT(PAR(ctx, VB, VT, VHQ, VHKV, 300, VV, s, C, q, k, v, o, l, NULL, 0),
               SEQK_ERROR_UNSUPPORTED, "K=300", "CUDA K > 256");
        EXPECT(PAR(ctx, VB, VT, VHQ, VHKV, VK, 257, s, C, q, k, v, o, l, NULL, 0),
               SEQK_ERROR_UNSUPPORTED, "V=257", "CUDA V > 256");
    }
    size_t bytes = 0;
    seqk_status st =
        seqk_attention_parallel_workspace_size(ctx, VB, VT, VHQ, VHKV, VK, VV, C, 0, NULL);
    th_check(st == INV && strstr(seqk_last_error(), "bytes"), "%s workspace_size: bytes NULL",
             be->name);
    st = seqk_attention_parallel_workspace_size(ctx, VB, VT, 3, VHKV, VK, VV, C, 0, &bytes);
    th_check(st == INV && strstr(seqk_last_error(), "Hq=3"), "%s workspace_size: Hq %% Hkv",
             be->name);
    st = seqk_attention_parallel_workspace_size(ctx, VB, VT, VHQ, VHKV, VK, VV, C, 0, &bytes);
    th_check(st == SEQK_SUCCESS, "%s workspace_size: valid sizes (%zu bytes)", be->name, bytes);
    /* T = 0 succeeds and writes nothing. */
    st = PAR(ctx, VB, 0, VHQ, VHKV, VK, VV, s, C, q, k, v, o, l, NULL, 0);
    th_check_status(st, SEQK_SUCCESS, "T = 0");
    check_untouched(be, "T = 0 writes nothing", o, no, l, nl);
#undef EXPECT
#undef PAR
    tf_arrays_free(&da);
    tf_arrays_free(&ha);
}

static void validation_decode(th_backend *be)
{
    if (!be->ctx) {
        th_skip("%s decode validation: %s", be->name, be->skip_reason);
        return;
    }
    seqk_context *ctx = be->ctx;
    enum { B = 2, H = 4, G = 2, K = 8, V = 8, ML = 5 };
    const size_t nq = B * H * K, nkn = B * G * K, nvn = B * G * V, nkc = B * ML * G * K,
                 nvc = B * ML * G * V, no = B * H * V, nl = B * H;
    tf_arrays ha = tf_arrays_on(NULL), da = tf_arrays_on(be);
    float *hbuf = tf_random(&ha, nkc + nvc + nq, -1, 1), *h7 = tf_floats(&ha, no + nl);
    tf_fill_untouched(h7, no + nl);
    float *q = tf_upload(&da, hbuf, nq * sizeof(float)),
          *kn = tf_upload(&da, hbuf, nkn * sizeof(float));
    float *vn = tf_upload(&da, hbuf, nvn * sizeof(float));
    float *kc = tf_upload(&da, hbuf, nkc * sizeof(float)),
          *vc = tf_upload(&da, hbuf + nkc, nvc * sizeof(float));
    float *o = tf_upload(&da, h7, no * sizeof(float)), *l = tf_upload(&da, h7, nl * sizeof(float));
    const int32_t len_ok[B] = {2, 4}, len_full[B] = {2, ML}, len_neg[B] = {-1, 0};
    int32_t *dl_ok = tf_upload(&da, len_ok, sizeof len_ok),
            *dl_full = tf_upload(&da, len_full, sizeof len_full);
    int32_t *dl_neg = tf_upload(&da, len_neg, sizeof len_neg);
    const float s = 0.35f;
    const seqk_status INV = SEQK_ERROR_INVALID_ARGUMENT;
#define DEC(ctx_, B_, H_, G_, K_, V_, ML_, sc_, q_, kn_, vn_, kc_, vc_, len_, o_, l_)              \
    seqk_attention_decode(ctx_, B_, H_, G_, K_, V_, ML_, sc_, q_, kn_, vn_, kc_, vc_, len_, o_, l_)
#define EXPECT(call, want, needle, what) expect_fail(be, call, want, needle, what, o, no, l, nl)
    EXPECT(DEC(NULL, B, H, G, K, V, ML, s, q, kn, vn, kc, vc, dl_ok, o, l), INV, "ctx",
           "decode ctx NULL");
    EXPECT(DEC(ctx, 0, H, G, K, V, ML, s, q, kn, vn, kc, vc, dl_ok, o, l), INV, "B=0",
           "decode B=0");
    EXPECT(DEC(ctx, B, 0, G, K, V, ML, s, q, kn, vn, kc, vc, dl_ok, o, l), INV, "Hq=0",
           "decode Hq=0");
    EXPECT(DEC(ctx, B, H, 0, K, V, ML, s, q, kn, vn, kc, vc, dl_ok, o, l), INV, "Hkv=0",
           "decode Hkv=0");
    EXPECT(DEC(ctx, B, H, 3, K, V, ML, s, q, kn, vn, kc, vc, dl_ok, o, l), INV, "Hkv=3",
           "decode Hq % Hkv");
    EXPECT(DEC(ctx, B, H, G, 0, V, ML, s, q, kn, vn, kc, vc, dl_ok, o, l), INV, "K=0",
           "decode K=0");
    EXPECT(DEC(ctx, B, H, G, K, -2, ML, s, q, kn, vn, kc, vc, dl_ok, o, l), INV, "V=-2",
           "decode V<1");
    EXPECT(DEC(ctx, B, H, G, K, V, 0, s, q, kn, vn, kc, vc, dl_ok, o, l), INV, "max_len=0",
           "decode max_len=0");
    EXPECT(DEC(ctx, B, H, G, K, V, ML, NAN, q, kn, vn, kc, vc, dl_ok, o, l), INV, "scale",
           "decode scale NaN");
    EXPECT(DEC(ctx, B, H, G, K, V, ML, -INFINITY, q, kn, vn, kc, vc, dl_ok, o, l), INV, "scale",
           "decode scale -inf");
    EXPECT(DEC(ctx, B, H, G, K, V, ML, s, NULL, kn, vn, kc, vc, dl_ok, o, l), INV, "q is NULL",
           "decode q NULL");
    EXPECT(DEC(ctx, B, H, G, K, V, ML, s, q, NULL, vn, kc, vc, dl_ok, o, l), INV, "k_new is NULL",
           "decode k_new NULL");
    EXPECT(DEC(ctx, B, H, G, K, V, ML, s, q, kn, NULL, kc, vc, dl_ok, o, l), INV, "v_new is NULL",
           "decode v_new NULL");
    EXPECT(DEC(ctx, B, H, G, K, V, ML, s, q, kn, vn, NULL, vc, dl_ok, o, l), INV, "k_cache is NULL",
           "decode k_cache NULL");
    EXPECT(DEC(ctx, B, H, G, K, V, ML, s, q, kn, vn, kc, NULL, dl_ok, o, l), INV, "v_cache is NULL",
           "decode v_cache NULL");
    EXPECT(DEC(ctx, B, H, G, K, V, ML, s, q, kn, vn, kc, vc, NULL, o, l), INV, "cache_len is NULL",
           "decode cache_len NULL");
    EXPECT(DEC(ctx, B, H, G, K, V, ML, s, q, kn, vn, kc, vc, dl_ok, NULL, l), INV, "o is NULL",
           "decode o NULL");
    EXPECT(DEC(ctx, B, H, G, K, V, ML, s, q, kn, vn, kc, vc, dl_full, o, l), INV, "cache_len[1]=5",
           "decode cache full");
    EXPECT(DEC(ctx, B, H, G, K, V, ML, s, q, kn, vn, kc, vc, dl_neg, o, l), INV, "cache_len[0]=-1",
           "decode cache_len < 0");
    EXPECT(DEC(ctx, B, H, G, K, V, ML, s, q, kn, vn, kc, kc, dl_ok, o, l), INV,
           "k_cache=", "decode k_cache overlaps v_cache");
    EXPECT(DEC(ctx, B, H, G, K, V, ML, s, q, kn, vn, kc, vc, dl_ok, o, o + 1), INV,
           "lse=", "decode lse overlaps o");
    EXPECT(DEC(ctx, B, H, G, K, V, (int64_t)1 << 62, s, q, kn, vn, kc, vc, dl_ok, o, l), INV,
           "max_len", "decode max_len too large");
    if (be->backend == SEQK_BACKEND_CUDA)
        EXPECT(DEC(ctx, B, H, G, 512, V, ML, s, q, kn, vn, kc, vc, dl_ok, o, l),
               SEQK_ERROR_UNSUPPORTED, "K=512", "decode CUDA K > 256");
    /* the caches were not written by any failed call */
    float *back = tf_floats(&ha, nkc + nvc);
    th_download(be, back, kc, nkc * sizeof(float));
    th_download(be, back + nkc, vc, nvc * sizeof(float));
    th_check(memcmp(back, hbuf, (nkc + nvc) * sizeof(float)) == 0,
             "%s decode: caches untouched by failed calls", be->name);
    size_t bytes = 0;
    seqk_status st = seqk_attention_decode_workspace_size(ctx, B, H, G, K, V, ML, NULL);
    th_check(st == INV && strstr(seqk_last_error(), "bytes"),
             "%s decode workspace_size: bytes NULL", be->name);
    st = seqk_attention_decode_workspace_size(ctx, B, H, G, K, V, 0, &bytes);
    th_check(st == INV && strstr(seqk_last_error(), "max_len"),
             "%s decode workspace_size: max_len=0", be->name);
#undef EXPECT
#undef DEC
    tf_arrays_free(&da);
    tf_arrays_free(&ha);
}

int main(int argc, char **argv)
{
    th_backend *list;
    const int n = th_init(argc, argv, &list);
    for (int i = 0; i < n; i++) {
        th_seed(1234 + (uint64_t)i);
        parallel_cases(&list[i]);
        decode_cases(&list[i]);
        decode_no_alloc(&list[i]);
        validation_parallel(&list[i]);
        validation_decode(&list[i]);
    }
    return th_finish();
}
