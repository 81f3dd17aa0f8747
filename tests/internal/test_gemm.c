/*
 * tests/internal/test_gemm.c -- core/gemm.c, the register-tiled sgemm every
 * chunked op runs on, tested directly (it is internal: this program compiles
 * core/gemm.c itself, with the library's flags).
 *
 *   C = alpha op(A) op(B) + beta C, op = identity or transpose, and the
 *   causal variants (LOWER_C: only j <= i written; LOWER_A / UPPER_A: A's
 *   zeros above / below the diagonal skipped)
 *
 * against a float64 loop, for shapes on both sides of every tile boundary
 * (the AVX2 6 x 16 tile and, on AVX-512 CPUs, the 8 x 32 one: N = 1 .. 130,
 * M not a multiple of 6 or 8, Kd past the KC = 256 slice), leading dimensions
 * wider than the matrices, op(B) read in place or packed (aligned and
 * misaligned), beta = 0 with NaN in C (never read) and beta != 0, and
 * the columns past C's (within its leading dimension) left untouched. Then the claim of gemm.c that both tiles give the same bits:
 * a product of 64 columns (the wide tile where there is one) equals, bit
 * for bit, the same product computed 16 columns at a time (the AVX2 tile),
 * and LOWER_C's wanted elements equal the full product's.
 */
#include "../../core/gemm.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures, checks;
static double worst;

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static float urand(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng_state >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

static float *alloc_f(size_t n, size_t misalign)
{
    /* 64-byte aligned plus misalign floats */
    float *p = aligned_alloc(64, ((n + misalign) * sizeof(float) + 63) / 64 * 64);
    if (!p) {
        fprintf(stderr, "test_gemm: out of memory\n");
        exit(1);
    }
    return p + misalign;
}

/* one call against float64; A is stored [M,Kd] (or [Kd,M] transposed), B
 * [Kd,N] (or [N,Kd]); lda/ldb/ldc = the minimum + pad */
static void check(unsigned causal, int ta, int tb, int64_t M, int64_t N, int64_t Kd, float alpha,
                  float beta, int64_t pad, size_t misalign_b)
{
    const int64_t lda = (ta ? M : Kd) + pad, ldb = (tb ? Kd : N) + pad, ldc = N + pad;
    const int64_t arows = ta ? Kd : M, brows = tb ? N : Kd;
    float *A = alloc_f((size_t)(arows * lda), 0), *Bm = alloc_f((size_t)(brows * ldb), misalign_b);
    float *C = alloc_f((size_t)(M * ldc), 0), *C0 = malloc((size_t)(M * ldc) * sizeof(float));
    float *pack = alloc_f(seqk__sgemm_pack_floats(M, N, Kd), 0);
    for (int64_t i = 0; i < arows * lda; i++) A[i] = urand();
    for (int64_t i = 0; i < brows * ldb; i++) Bm[i] = urand();
    /* op(A)'s structural zeros, as the callers hold them */
    for (int64_t i = 0; i < M; i++)
        for (int64_t p = 0; p < Kd; p++) {
            const int zero = ((causal & SEQK__GEMM_LOWER_A) && p > i) ||
                             ((causal & SEQK__GEMM_UPPER_A) && p < i);
            if (zero) A[ta ? p * lda + i : i * lda + p] = 0.0f;
        }
    for (int64_t i = 0; i < M * ldc; i++) C[i] = beta == 0.0f ? NAN : urand();
    memcpy(C0, C, (size_t)(M * ldc) * sizeof(float));
    seqk__sgemm_causal(causal, ta, tb, M, N, Kd, alpha, A, lda, Bm, ldb, beta, C, ldc, pack);
    char what[160];
    snprintf(what, sizeof what, "causal=%u ta=%d tb=%d M=%lld N=%lld Kd=%lld alpha=%g beta=%g pad=%lld mis=%zu",
             causal, ta, tb, (long long)M, (long long)N, (long long)Kd, alpha, beta, (long long)pad,
             misalign_b);
    double err = 0.0;
    int bad = 0;
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < ldc; j++) {
            const float got = C[i * ldc + j];
            if (j >= N) { /* past C's columns: untouched, bit for bit (NaN stays NaN) */
                if (memcmp(&got, &C0[i * ldc + j], sizeof got) != 0) bad = 1;
                continue;
            }
            if ((causal & SEQK__GEMM_LOWER_C) && j > i) continue; /* not wanted: any value */
            double ref = 0.0, mag = 0.0;
            for (int64_t p = 0; p < Kd; p++) {
                const double a = A[ta ? p * lda + i : i * lda + p];
                const double b = Bm[tb ? j * ldb + p : p * ldb + j];
                ref += a * b, mag += fabs(a * b);
            }
            ref *= alpha, mag *= fabs(alpha);
            if (beta != 0.0f) ref += (double)beta * C0[i * ldc + j], mag += fabs(beta * C0[i * ldc + j]);
            const double e = fabs(got - ref) / (mag + 1e-30);
            if (!(e <= 1e-6)) bad = 1;
            if (e > err || e != e) err = e != e ? INFINITY : e;
        }
    checks++;
    if (err > worst) worst = err;
    if (bad && ++failures <= 20) {
        fprintf(stderr, "FAIL %s: error %.3g (relative to sum |terms|) or a write outside C\n", what, err);
    }
    free(A - 0), free(Bm - misalign_b), free(C), free(C0), free(pack);
}

/* Two ways of computing one product, compared bit for bit: A [M,Kd] or
 * [Kd,M], B [Kd,N] or [N,Kd] random, C1 = C2 random; C1 gets the plain
 * product (alpha 0.75, beta 0.5). */
typedef struct {
    float *A, *Bm, *C1, *C2, *pack;
} pair_case;

static pair_case pair_setup(int ta, int tb, int64_t M, int64_t N, int64_t Kd)
{
    pair_case c = {alloc_f((size_t)(M * Kd), 0), alloc_f((size_t)(N * Kd), 0),
                   alloc_f((size_t)(M * N), 0), alloc_f((size_t)(M * N), 0),
                   alloc_f(seqk__sgemm_pack_floats(M, N, Kd), 0)};
    for (int64_t i = 0; i < M * Kd; i++) c.A[i] = urand();
    for (int64_t i = 0; i < N * Kd; i++) c.Bm[i] = urand();
    for (int64_t i = 0; i < M * N; i++) c.C1[i] = c.C2[i] = urand();
    seqk__sgemm(ta, tb, M, N, Kd, 0.75f, c.A, ta ? M : Kd, c.Bm, tb ? Kd : N, 0.5f, c.C1, N,
                c.pack);
    return c;
}

static void pair_free(pair_case *c) { free(c->A), free(c->Bm), free(c->C1), free(c->C2), free(c->pack); }

/* the same product as one call and as calls of 16 columns: the same bits */
static void check_tiles_agree(int ta, int tb, int64_t M, int64_t Kd)
{
    const int64_t N = 64;
    pair_case c = pair_setup(ta, tb, M, N, Kd);
    for (int64_t j0 = 0; j0 < N; j0 += 16)
        seqk__sgemm(ta, tb, M, 16, Kd, 0.75f, c.A, ta ? M : Kd, tb ? c.Bm + j0 * Kd : c.Bm + j0,
                    tb ? Kd : N, 0.5f, c.C2 + j0, N, c.pack);
    checks++;
    if (memcmp(c.C1, c.C2, (size_t)(M * N) * sizeof(float)) != 0) {
        failures++;
        fprintf(stderr, "FAIL ta=%d tb=%d M=%lld Kd=%lld: 64 columns at once differ from 16 at a time\n",
                ta, tb, (long long)M, (long long)Kd);
    }
    pair_free(&c);
}

/* LOWER_C computes a diagonal tile's wanted columns only (on AVX-512, the
 * wide tile's left half where they fit in 16): the elements j <= i equal the
 * full product's, bit for bit */
static void check_lower_agrees(int ta, int tb, int64_t M, int64_t N, int64_t Kd)
{
    pair_case c = pair_setup(ta, tb, M, N, Kd);
    seqk__sgemm_causal(SEQK__GEMM_LOWER_C, ta, tb, M, N, Kd, 0.75f, c.A, ta ? M : Kd, c.Bm,
                       tb ? Kd : N, 0.5f, c.C2, N, c.pack);
    int bad = 0;
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j <= i && j < N; j++)
            if (memcmp(&c.C1[i * N + j], &c.C2[i * N + j], sizeof(float)) != 0) bad++;
    checks++;
    if (bad) {
        failures++;
        fprintf(stderr, "FAIL ta=%d tb=%d M=%lld N=%lld Kd=%lld: LOWER_C differs from the full product in %d elements\n",
                ta, tb, (long long)M, (long long)N, (long long)Kd, bad);
    }
    pair_free(&c);
}

/* seqk__transpose (the 16 x 16 AVX-512 blocks, the 8 x 8 AVX2 ones and the
 * scalar edges): an exact copy, padded leading dimensions, nothing written
 * outside dst's n x m block. */
static void check_transpose(int64_t m, int64_t n, int64_t pad)
{
    const int64_t lds = n + pad, ldd = m + pad;
    float *src = alloc_f((size_t)(m * lds), 0), *dst = alloc_f((size_t)(n * ldd), 1);
    for (int64_t i = 0; i < m * lds; i++) src[i] = urand();
    for (int64_t i = 0; i < n * ldd; i++) dst[i] = -7.0f;
    seqk__transpose(m, n, src, lds, dst, ldd);
    int bad = 0;
    for (int64_t j = 0; j < n; j++)
        for (int64_t i = 0; i < ldd; i++) {
            const float want = i < m ? src[i * lds + j] : -7.0f;
            if (memcmp(&dst[j * ldd + i], &want, sizeof want) != 0) bad++;
        }
    checks++;
    if (bad) {
        failures++;
        printf("FAIL transpose m=%lld n=%lld pad=%lld: %d elements wrong\n", (long long)m,
               (long long)n, (long long)pad, bad);
    }
    free(src);
    free(dst - 1);
}

/* The tile hook: called once after every register tile (and K-slice) of a
 * product run in this thread while it is set, never once cleared. The
 * expected count from the tile rule of core/gemm.c's top comment: 8 x 32
 * with AVX-512 when N >= 32 pads to a multiple of 32 by at most N / 4, else
 * 6 x 16; slices of 256 along the inner dimension. */
static void count_tile(void *arg) { ++*(int64_t *)arg; }

static void check_tile_hook(int64_t M, int64_t N, int64_t Kd)
{
    float *A = alloc_f((size_t)(M * Kd), 0), *Bm = alloc_f((size_t)(Kd * N), 0);
    float *C = alloc_f((size_t)(M * N), 0), *pack = alloc_f(seqk__sgemm_pack_floats(M, N, Kd), 0);
    memset(A, 0, (size_t)(M * Kd) * sizeof(float));
    memset(Bm, 0, (size_t)(Kd * N) * sizeof(float));
    int64_t mr = 6, nr = 16;
#ifdef __AVX512F__
    if (N >= 32 && (N + 31) / 32 * 32 - N <= N / 4) mr = 8, nr = 32;
#endif
    const int64_t want = (M + mr - 1) / mr * ((N + nr - 1) / nr) * ((Kd + 255) / 256);
    int64_t calls = 0;
    void (*fn)(void *) = NULL;
    void *arg = NULL;
    seqk__sgemm_set_tile_hook(count_tile, &calls);
    seqk__sgemm_get_tile_hook(&fn, &arg);
    checks++;
    if (fn != count_tile || arg != &calls) {
        failures++;
        printf("FAIL tile hook: get does not return what set set\n");
    }
    seqk__sgemm(false, false, M, N, Kd, 1.0f, A, Kd, Bm, N, 0.0f, C, N, pack);
    const int64_t during = calls;
    seqk__sgemm_set_tile_hook(NULL, NULL);
    seqk__sgemm(false, false, M, N, Kd, 1.0f, A, Kd, Bm, N, 0.0f, C, N, pack);
    checks++;
    if (during != want || calls != during) {
        failures++;
        printf("FAIL tile hook M=%lld N=%lld K=%lld: %lld calls while set (want %lld), %lld "
               "after clearing\n",
               (long long)M, (long long)N, (long long)Kd, (long long)during, (long long)want,
               (long long)(calls - during));
    }
    free(A), free(Bm), free(C), free(pack);
}

int main(void)
{
    check_tile_hook(64, 64, 32);
    check_tile_hook(13, 100, 300);
    check_tile_hook(1, 17, 5);
    static const int64_t Ts[] = {1, 7, 8, 15, 16, 17, 24, 31, 32, 33, 64, 100, 128};
    for (size_t a = 0; a < sizeof Ts / sizeof *Ts; a++)
        for (size_t b = 0; b < sizeof Ts / sizeof *Ts; b++) {
            check_transpose(Ts[a], Ts[b], 0);
            if ((a + b) % 2) check_transpose(Ts[a], Ts[b], 5);
        }
    static const int64_t Ns[] = {1, 5, 16, 17, 31, 32, 33, 48, 56, 63, 64, 65, 80, 96, 100, 128, 130};
    static const int64_t Ms[] = {1, 6, 7, 8, 13, 64, 67};
    static const int64_t Ks[] = {1, 3, 64, 300};
    static const unsigned causals[] = {0u, SEQK__GEMM_LOWER_C, SEQK__GEMM_LOWER_A, SEQK__GEMM_UPPER_A};
    for (size_t c = 0; c < sizeof causals / sizeof *causals; c++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (size_t n = 0; n < sizeof Ns / sizeof *Ns; n++)
                    for (size_t m = 0; m < sizeof Ms / sizeof *Ms; m++)
                        for (size_t k = 0; k < sizeof Ks / sizeof *Ks; k++) {
                            const int64_t M = Ms[m], N = Ns[n], Kd = Ks[k];
                            if (causals[c] && (Kd == 300) != (M == 67 && N == 64)) continue;
                            const float beta = (n + k) % 2 ? 0.0f : 0.5f;
                            /* pad 0: op(B) read in place where it can be; pad 3 and a
                             * misaligned B: packed */
                            check(causals[c], ta, tb, M, N, Kd, 1.25f, beta, 0, 0);
                            if ((n + m + k) % 3 == 0)
                                check(causals[c], ta, tb, M, N, Kd, -0.5f, 1.0f - beta, 3,
                                      (n + m) % 2 ? 1 : 8);
                        }
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            check_tiles_agree(ta, tb, 64, 64);
            check_tiles_agree(ta, tb, 13, 300);
            check_lower_agrees(ta, tb, 64, 64, 64);
            check_lower_agrees(ta, tb, 67, 80, 300);
            check_lower_agrees(ta, tb, 128, 128, 17);
        }
    printf("test_gemm: %d checks, %d failures, worst error %.3g (relative to the sum of |terms|)\n",
           checks, failures, worst);
    return failures ? 1 : 0;
}
