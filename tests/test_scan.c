/* tests/test_scan.c -- the scan primitive on every backend against the
 * float64 reference: shapes, directions, h0, block coefficients, varlen,
 * in place, misaligned pointers, split == whole; and its validation rules. */
#include "harness.h"
#include "ref/ref_scan.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL 1e-6

typedef struct {
    int64_t B, T, C, block;
    int reverse, with_h0, with_final, in_place, misalign;
    const int32_t *cu; /* host cu_seqlens, or NULL */
    int64_t N;
    double alo, ahi; /* coefficient range */
} scan_case;

static void describe(const scan_case *sc, const char *be, char *buf, size_t n)
{
    snprintf(buf, n,
             "%s scan B=%lld T=%lld C=%lld block=%lld%s%s%s%s%s%s a~U[%.3g,%.3g]", be,
             (long long)sc->B, (long long)sc->T, (long long)sc->C, (long long)sc->block,
             sc->reverse ? " reverse" : "", sc->with_h0 ? " h0" : "",
             sc->with_final ? " final" : "", sc->in_place ? " in-place" : "",
             sc->misalign ? " misaligned" : "", sc->cu ? " varlen" : "", sc->alo, sc->ahi);
}

/* Runs one case on one backend; returns false on a failed check. */
static void run_case(th_backend *be, const scan_case *sc)
{
    char what[256];
    describe(sc, be->name, what, sizeof what);
    if (th_skipped(be, what)) return;
    const int64_t N = sc->cu ? sc->N : sc->B;
    const size_t nh = (size_t)(sc->B * sc->T * sc->C), na = nh / (size_t)sc->block,
                 ns = (size_t)(N * sc->C);
    const size_t off = sc->misalign ? 1 : 0;
    float *a = th_floats(na + 1), *b = th_floats(nh + 1), *h0 = th_floats(ns + 1);
    th_fill(a, na + 1, sc->alo, sc->ahi);
    th_fill(b, nh + 1, -1, 1);
    th_fill(h0, ns + 1, -2, 2);
    double *ref = th_doubles(nh + 1), *ref_final = th_doubles(ns + 1);
    ref_scan(sc->B, sc->T, sc->C, sc->block, sc->reverse, a + off, b + off,
             sc->with_h0 ? h0 + off : NULL, ref, ref_final, sc->cu, sc->N);

    float *d_a = th_upload(be, a, (na + 1) * sizeof(float));
    float *d_b = th_upload(be, b, (nh + 1) * sizeof(float));
    float *d_h0 = th_upload(be, h0, (ns + 1) * sizeof(float));
    float *d_h = sc->in_place ? d_b : th_poisoned(be, nh + 1);
    float *d_fin = th_poisoned(be, ns + 1);
    int32_t *d_cu = sc->cu ? th_upload(be, sc->cu, (size_t)(N + 1) * sizeof(int32_t)) : NULL;

    seqk_status st = seqk_scan(be->ctx, sc->B, sc->T, sc->C, sc->block,
                               sc->reverse ? SEQK_SCAN_REVERSE : 0, d_a + off, d_b + off,
                               sc->with_h0 ? d_h0 + off : NULL, d_h + off,
                               sc->with_final ? d_fin + off : NULL, d_cu, sc->N);
    if (th_check_status(st, SEQK_SUCCESS, what)) {
        float *h = th_floats(nh + 1), *fin = th_floats(ns + 1);
        th_download(be, h, d_h, (nh + 1) * sizeof(float));
        th_download(be, fin, d_fin, (ns + 1) * sizeof(float));
        th_check_close(h + off, ref, nh, TOL, "%s: h", what);
        if (sc->with_final) {
            /* a final state is a few values: measure it against the size of the states */
            double ms = 0;
            for (size_t i = 0; i < nh; i++) ms += ref[i] * ref[i];
            th_check_close_scaled(fin + off, ref_final, ns, nh ? sqrt(ms / (double)nh) : 0, TOL,
                                  "%s: h_final", what);
        }
        /* nothing written before the output (misaligned case) or past its end */
        if (!sc->in_place) {
            if (off) th_check(isnan(h[0]), "%s: h[-1] untouched", what);
            else th_check(isnan(h[nh]), "%s: h[numel] untouched", what);
        }
        if (!sc->with_final) th_check(isnan(fin[0]) && isnan(fin[ns]), "%s: final untouched", what);
        free(h);
        free(fin);
    }
    if (!sc->in_place) th_free(be, d_h);
    th_free(be, d_a);
    th_free(be, d_b);
    th_free(be, d_h0);
    th_free(be, d_fin);
    if (d_cu) th_free(be, d_cu);
    free(a);
    free(b);
    free(h0);
    free(ref);
    free(ref_final);
}

/* Two calls chained through the state equal one call over the whole range. */
static void split_equals_whole(th_backend *be, int64_t B, int64_t T, int64_t C, int64_t block,
                               int reverse, int64_t T1)
{
    char what[160];
    snprintf(what, sizeof what, "%s scan split==whole B=%lld T=%lld=%lld+%lld C=%lld block=%lld%s",
             be->name, (long long)B, (long long)T, (long long)T1, (long long)(T - T1),
             (long long)C, (long long)block, reverse ? " reverse" : "");
    if (th_skipped(be, what)) return;
    const int64_t CA = C / block, T2 = T - T1;
    float *a = th_floats((size_t)(B * T * CA)), *b = th_floats((size_t)(B * T * C));
    th_fill(a, (size_t)(B * T * CA), 0.5, 1.0);
    th_fill(b, (size_t)(B * T * C), -1, 1);
    double *ref = th_doubles((size_t)(B * T * C)), *ref_fin = th_doubles((size_t)(B * C));
    ref_scan(B, T, C, block, reverse, a, b, NULL, ref, ref_fin, NULL, B);
    /* The segments as separate [B, Ti, ...] arrays; reverse runs the later segment first. */
    float *a1 = th_floats((size_t)(B * T1 * CA) + 1), *b1 = th_floats((size_t)(B * T1 * C) + 1);
    float *a2 = th_floats((size_t)(B * T2 * CA) + 1), *b2 = th_floats((size_t)(B * T2 * C) + 1);
    for (int64_t n = 0; n < B; n++) {
        memcpy(a1 + n * T1 * CA, a + n * T * CA, (size_t)(T1 * CA) * sizeof(float));
        memcpy(a2 + n * T2 * CA, a + (n * T + T1) * CA, (size_t)(T2 * CA) * sizeof(float));
        memcpy(b1 + n * T1 * C, b + n * T * C, (size_t)(T1 * C) * sizeof(float));
        memcpy(b2 + n * T2 * C, b + (n * T + T1) * C, (size_t)(T2 * C) * sizeof(float));
    }
    float *d_a1 = th_upload(be, a1, (size_t)(B * T1 * CA) * 4 + 4);
    float *d_b1 = th_upload(be, b1, (size_t)(B * T1 * C) * 4 + 4);
    float *d_a2 = th_upload(be, a2, (size_t)(B * T2 * CA) * 4 + 4);
    float *d_b2 = th_upload(be, b2, (size_t)(B * T2 * C) * 4 + 4);
    float *d_h1 = th_poisoned(be, (size_t)(B * T1 * C) + 1);
    float *d_h2 = th_poisoned(be, (size_t)(B * T2 * C) + 1);
    float *d_mid = th_poisoned(be, (size_t)(B * C)), *d_fin = th_poisoned(be, (size_t)(B * C));
    unsigned fl = reverse ? SEQK_SCAN_REVERSE : 0;
    seqk_status st;
    if (!reverse) {
        st = seqk_scan(be->ctx, B, T1, C, block, fl, d_a1, d_b1, NULL, d_h1, d_mid, NULL, 0);
        if (!st) st = seqk_scan(be->ctx, B, T2, C, block, fl, d_a2, d_b2, d_mid, d_h2, d_fin, NULL, 0);
    } else {
        st = seqk_scan(be->ctx, B, T2, C, block, fl, d_a2, d_b2, NULL, d_h2, d_mid, NULL, 0);
        if (!st) st = seqk_scan(be->ctx, B, T1, C, block, fl, d_a1, d_b1, d_mid, d_h1, d_fin, NULL, 0);
    }
    if (th_check_status(st, SEQK_SUCCESS, what)) {
        float *h = th_floats((size_t)(B * T * C)), *fin = th_floats((size_t)(B * C));
        float *h1 = th_floats((size_t)(B * T1 * C) + 1), *h2 = th_floats((size_t)(B * T2 * C) + 1);
        th_download(be, h1, d_h1, (size_t)(B * T1 * C) * 4);
        th_download(be, h2, d_h2, (size_t)(B * T2 * C) * 4);
        th_download(be, fin, d_fin, (size_t)(B * C) * 4);
        for (int64_t n = 0; n < B; n++) {
            memcpy(h + n * T * C, h1 + n * T1 * C, (size_t)(T1 * C) * sizeof(float));
            memcpy(h + (n * T + T1) * C, h2 + n * T2 * C, (size_t)(T2 * C) * sizeof(float));
        }
        th_check_close(h, ref, (size_t)(B * T * C), TOL, "%s: h", what);
        th_check_close(fin, ref_fin, (size_t)(B * C), TOL, "%s: final", what);
        free(h), free(fin), free(h1), free(h2);
    }
    th_free(be, d_a1), th_free(be, d_b1), th_free(be, d_a2), th_free(be, d_b2);
    th_free(be, d_h1), th_free(be, d_h2), th_free(be, d_mid), th_free(be, d_fin);
    free(a), free(b), free(a1), free(b1), free(a2), free(b2), free(ref), free(ref_fin);
}

/* ---- validation ---------------------------------------------------------------- */

static const float SENTINEL = 12345.0f;

/* Calls seqk_scan on the CPU with one argument broken; checks the status,
 * that the message names `needle`, and that h and h_final are untouched. */
static void expect_reject(seqk_context *ctx, const char *rule, seqk_status want,
                          const char *needle, int64_t B, int64_t T, int64_t C, int64_t block,
                          unsigned flags, const float *a, const float *b, float *h,
                          float *h_final, const int32_t *cu, int64_t N, size_t nh, size_t nf)
{
    for (size_t i = 0; i < nh; i++) h[i] = SENTINEL;
    for (size_t i = 0; i < nf; i++) h_final[i] = SENTINEL;
    seqk_status st = seqk_scan(ctx, B, T, C, block, flags, a, b, NULL, h, h_final, cu, N);
    char what[128];
    snprintf(what, sizeof what, "validation: %s", rule);
    th_check_status(st, want, what);
    th_check(strstr(seqk_last_error(), needle) != NULL &&
                 strstr(seqk_last_error(), "seqk_scan") != NULL,
             "validation: %s: message names '%s': \"%s\"", rule, needle, seqk_last_error());
    bool untouched = true;
    for (size_t i = 0; i < nh; i++) untouched &= h[i] == SENTINEL;
    for (size_t i = 0; i < nf; i++) untouched &= h_final[i] == SENTINEL;
    th_check(untouched, "validation: %s: outputs untouched", rule);
}

static void validation(seqk_context *ctx)
{
    enum { B = 1, T = 6, C = 4 };
    float a[B * T * C], b[B * T * C], h[B * T * C + 8], fin[3 * C];
    for (int i = 0; i < B * T * C; i++) a[i] = 0.5f, b[i] = 1.0f;
    const seqk_status INV = SEQK_ERROR_INVALID_ARGUMENT;
    const size_t nh = B * T * C, nf = C;
    expect_reject(ctx, "B=0", INV, "B=0", 0, T, C, 1, 0, a, b, h, fin, NULL, 0, nh, nf);
    expect_reject(ctx, "T<0", INV, "T=-1", B, -1, C, 1, 0, a, b, h, fin, NULL, 0, nh, nf);
    expect_reject(ctx, "C=0", INV, "C=0", B, T, 0, 1, 0, a, b, h, fin, NULL, 0, nh, nf);
    expect_reject(ctx, "block=0", INV, "block=0", B, T, C, 0, 0, a, b, h, fin, NULL, 0, nh, nf);
    expect_reject(ctx, "block>C", INV, "block=8", B, T, C, 8, 0, a, b, h, fin, NULL, 0, nh, nf);
    expect_reject(ctx, "block does not divide C", INV, "block=3", B, T, C, 3, 0, a, b, h, fin,
                  NULL, 0, nh, nf);
    expect_reject(ctx, "unknown flags", INV, "flags", B, T, C, 1, 0x80, a, b, h, fin, NULL, 0, nh,
                  nf);
    expect_reject(ctx, "a NULL", INV, "a is NULL", B, T, C, 1, 0, NULL, b, h, fin, NULL, 0, nh,
                  nf);
    expect_reject(ctx, "b NULL", INV, "b is NULL", B, T, C, 1, 0, a, NULL, h, fin, NULL, 0, nh,
                  nf);
    expect_reject(ctx, "h NULL", INV, "h is NULL", B, T, C, 1, 0, a, b, NULL, fin, NULL, 0, 0,
                  nf);
    expect_reject(ctx, "overflowing dims", INV, "overflow", B, INT64_MAX / 2, C, 1, 0, a, b, h,
                  fin, NULL, 0, nh, nf);
    /* h partially overlapping b */
    float *hb = h;
    for (int i = 0; i < B * T * C; i++) hb[i] = 1.0f;
    seqk_status st = seqk_scan(ctx, B, T - 1, C, 1, 0, a, hb, NULL, hb + 1, NULL, NULL, 0);
    th_check_status(st, INV, "validation: h partially overlaps b");
    th_check(strstr(seqk_last_error(), "overlaps") != NULL, "validation: overlap message: %s",
             seqk_last_error());
    /* varlen rules */
    const int32_t cu_ok[4] = {0, 2, 2, T};
    const int32_t cu_first[4] = {1, 2, 3, T};
    const int32_t cu_dec[4] = {0, 4, 3, T};
    const int32_t cu_last[4] = {0, 2, 3, T - 1};
    expect_reject(ctx, "varlen with B=2", INV, "B=2", 2, T / 2, C, 1, 0, a, b, h, fin, cu_ok, 3,
                  nh, 3 * C);
    expect_reject(ctx, "varlen N=0", INV, "N=0", B, T, C, 1, 0, a, b, h, fin, cu_ok, 0, nh,
                  3 * C);
    expect_reject(ctx, "cu_seqlens[0]!=0", INV, "cu_seqlens[0]=1", B, T, C, 1, 0, a, b, h, fin,
                  cu_first, 3, nh, 3 * C);
    expect_reject(ctx, "cu_seqlens decreasing", INV, "cu_seqlens[2]=3 < cu_seqlens[1]=4", B, T,
                  C, 1, 0, a, b, h, fin, cu_dec, 3, nh, 3 * C);
    expect_reject(ctx, "cu_seqlens[N]!=T", INV, "must equal T=6", B, T, C, 1, 0, a, b, h, fin,
                  cu_last, 3, nh, 3 * C);
    st = seqk_scan(NULL, B, T, C, 1, 0, a, b, NULL, h, NULL, NULL, 0);
    th_check_status(st, INV, "validation: ctx NULL");
    /* T = 0 is valid: only the final state (= h0, or zeros) is written. */
    float h0[C] = {1, 2, 3, 4};
    for (int i = 0; i < C; i++) fin[i] = SENTINEL;
    st = seqk_scan(ctx, B, 0, C, 1, 0, NULL, NULL, h0, NULL, fin, NULL, 0);
    th_check_status(st, SEQK_SUCCESS, "T=0 with NULL arrays");
    th_check(fin[0] == 1 && fin[3] == 4, "T=0: h_final = h0");
}

int main(int argc, char **argv)
{
    th_backend *be;
    int nb = th_init(argc, argv, &be);
    th_seed(2026);

    /* Fixed shapes that catch mistakes, on every backend. */
    static const int32_t cu1[] = {0, 0, 1, 5, 5, 37, 38}; /* empty and length-1 sequences */
    static const int32_t cu2[] = {0, 1000, 1000, 1001, 4099};
    const scan_case fixed[] = {
        {1, 1, 1, 1, 0, 0, 1, 0, 0, NULL, 0, 0.5, 1.0},          /* T = 1, one channel */
        {1, 1, 7, 1, 0, 1, 1, 0, 0, NULL, 0, 0.5, 1.0},          /* T = 1 with h0 */
        {1, 97, 1, 1, 0, 1, 1, 0, 0, NULL, 0, 0.5, 1.0},         /* T prime, C = 1 */
        {1, 97, 1, 1, 1, 1, 1, 0, 0, NULL, 0, 0.5, 1.0},         /* reverse */
        {3, 131, 5, 1, 0, 1, 1, 0, 1, NULL, 0, -1.0, 1.0},       /* odd C, misaligned */
        {3, 131, 5, 1, 1, 0, 1, 0, 1, NULL, 0, -1.0, 1.0},
        {2, 257, 12, 4, 0, 1, 1, 0, 0, NULL, 0, 0.5, 1.0},        /* block = 4 */
        {2, 257, 12, 12, 1, 1, 1, 0, 0, NULL, 0, 0.5, 1.0},       /* block = C */
        {2, 61, 4096, 64, 0, 1, 1, 0, 0, NULL, 0, 0.5, 1.0},      /* K*V-like blocks */
        {2, 61, 4096, 4096, 1, 1, 1, 0, 1, NULL, 0, 0.5, 1.0},
        {4, 300, 1000, 1, 0, 1, 1, 1, 0, NULL, 0, 0.9, 1.0},      /* in place */
        {1, 38, 3, 1, 0, 1, 1, 0, 0, cu1, 6, 0.5, 1.0},           /* varlen */
        {1, 38, 3, 1, 1, 1, 1, 0, 0, cu1, 6, 0.5, 1.0},
        {1, 38, 64, 8, 0, 0, 1, 0, 1, cu1, 6, 0.5, 1.0},
        {1, 4099, 1, 1, 0, 1, 1, 0, 0, cu2, 4, 0.5, 1.0},
        {1, 4099, 16, 16, 1, 1, 0, 0, 0, cu2, 4, 0.5, 1.0},
        {1, 300007, 1, 1, 0, 1, 1, 0, 0, NULL, 0, 0.99, 1.0},     /* few channels, long T */
        {1, 300007, 1, 1, 1, 1, 1, 0, 1, NULL, 0, 0.99, 1.0},
        {1, 100003, 4, 1, 0, 1, 1, 0, 0, NULL, 0, 0.9, 1.0},
        {1, 100003, 3, 3, 1, 1, 1, 1, 0, NULL, 0, 0.9, 1.0},
        {1, 40009, 64, 1, 0, 1, 1, 0, 1, NULL, 0, 0.9, 1.0},
        {1, 20011, 130, 10, 1, 1, 1, 0, 0, NULL, 0, 0.9, 1.0},
        {1, 1 << 20, 2, 1, 0, 1, 1, 0, 0, NULL, 0, 0.99, 1.0},
    };
    for (int i = 0; i < nb; i++)
        for (size_t j = 0; j < sizeof fixed / sizeof fixed[0]; j++) run_case(&be[i], &fixed[j]);

    /* Random shapes, varlen included. */
    for (int r = 0; r < 60; r++) {
        scan_case sc = {0};
        sc.B = th_randint(1, 4);
        sc.T = th_randint(0, 3) == 0 ? th_randint(1, 5) : th_randint(1, 3000);
        sc.C = th_randint(0, 2) == 0 ? th_randint(1, 9) : th_randint(1, 300);
        int64_t divs[8], nd = 0;
        for (int64_t d = 1; d <= sc.C && nd < 8; d++)
            if (sc.C % d == 0) divs[nd++] = d;
        sc.block = th_randint(0, 1) ? 1 : divs[th_randint(0, nd - 1)];
        if (th_randint(0, 3) == 0) sc.block = sc.C;
        sc.reverse = (int)th_randint(0, 1);
        sc.with_h0 = (int)th_randint(0, 1);
        sc.with_final = (int)th_randint(0, 1);
        sc.in_place = th_randint(0, 4) == 0;
        sc.misalign = th_randint(0, 4) == 0;
        sc.alo = th_randint(0, 1) ? -1.0 : 0.5;
        sc.ahi = 1.0;
        int32_t cu[9];
        if (th_randint(0, 3) == 0) {
            sc.N = th_randint(1, 8);
            sc.T *= sc.B;
            sc.B = 1;
            cu[0] = 0;
            for (int64_t n = 1; n < sc.N; n++) cu[n] = (int32_t)th_randint(0, sc.T);
            cu[sc.N] = (int32_t)sc.T;
            for (int64_t x = 1; x < sc.N; x++) /* sort */
                for (int64_t y = x; y > 0 && cu[y] < cu[y - 1]; y--) {
                    int32_t t = cu[y];
                    cu[y] = cu[y - 1], cu[y - 1] = t;
                }
            sc.cu = cu;
        }
        for (int i = 0; i < nb; i++) run_case(&be[i], &sc);
    }

    for (int i = 0; i < nb; i++) {
        split_equals_whole(&be[i], 2, 1000, 33, 1, 0, 417);
        split_equals_whole(&be[i], 2, 1000, 33, 1, 1, 417);
        split_equals_whole(&be[i], 1, 200003, 1, 1, 0, 100001);
        split_equals_whole(&be[i], 1, 200003, 1, 1, 1, 7);
        split_equals_whole(&be[i], 3, 64, 4096, 4096, 0, 63);
    }

    for (int i = 0; i < nb; i++)
        if (be[i].backend == SEQK_BACKEND_CPU) validation(be[i].ctx);
    return th_finish();
}
