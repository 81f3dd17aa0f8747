/*
 * tests/internal/test_scan_rows.c -- seqk__scan_rows (scan/scan_cpu.c), the
 * single-threaded recurrence the chunk walks step their states with, tested
 * directly (it is internal: this program links the static library).
 *
 *   carry = a_r carry + b_r, h_r = carry   (forward; reverse walks r down)
 *
 * For one row (a chunk walk's step) against fmaf, bit for bit; for several
 * rows against a float64 loop; and the flags' contracts: with
 * SEQK__SCAN_KEEP_CARRY the rows are the same bits and carry is not written;
 * h == carry (one running state) gives the same bits as a separate h.
 */
#include "../../scan/scan.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures, checks;

static void check(int ok, const char *what, int64_t rows, int64_t C, int64_t block, unsigned flags)
{
    checks++;
    if (!ok) {
        failures++;
        printf("FAIL %s: rows=%lld C=%lld block=%lld flags=%u\n", what, (long long)rows,
               (long long)C, (long long)block, flags);
    }
}

static uint64_t rng = 0x2545f4914f6cdd1dull;
static float urand(float lo, float hi)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return lo + (hi - lo) * (float)((rng >> 40) * (1.0 / 16777216.0));
}

static void run(int64_t rows, int64_t C, int64_t block, unsigned rev)
{
    const int64_t nb = C / block;
    float *a = calloc((size_t)(rows * nb), 4), *b = calloc((size_t)(rows * C), 4);
    float *h1 = calloc((size_t)(rows * C), 4), *h2 = calloc((size_t)(rows * C), 4);
    float *c0 = calloc((size_t)C, 4), *c1 = calloc((size_t)C, 4), *c2 = calloc((size_t)C, 4);
    if (!a || !b || !h1 || !h2 || !c0 || !c1 || !c2) {
        printf("test_scan_rows: out of memory\n");
        exit(1);
    }
    for (int64_t i = 0; i < rows * nb; i++) a[i] = urand(0.5f, 1.0f);
    for (int64_t i = 0; i < rows * C; i++) b[i] = urand(-1.0f, 1.0f);
    for (int64_t i = 0; i < C; i++) c0[i] = urand(-1.0f, 1.0f);
    /* the plain call: h and carry written */
    memcpy(c1, c0, (size_t)C * 4);
    seqk__scan_rows(rows, C, block, rev, a, nb, b, C, h1, C, c1);
    /* against float64 */
    double worst = 0.0;
    for (int64_t c = 0; c < C; c++) {
        double x = c0[c];
        for (int64_t k = 0; k < rows; k++) {
            const int64_t r = rev ? rows - 1 - k : k;
            x = (double)a[r * nb + c / block] * x + (double)b[r * C + c];
            const double e = fabs((double)h1[r * C + c] - x) / (1.0 + fabs(x));
            if (e > worst) worst = e;
        }
    }
    check(worst < 1e-5, "float64 reference", rows, C, block, rev);
    if (rows == 1)
        for (int64_t c = 0; c < C; c++)
            if (h1[c] != fmaf(a[c / block], c0[c], b[c])) {
                check(0, "one row is one fmaf per channel", rows, C, block, rev);
                break;
            }
    const int64_t last = rev ? 0 : rows - 1;
    check(memcmp(c1, h1 + last * C, (size_t)C * 4) == 0, "carry out = the last row walked", rows, C,
          block, rev);
    /* SEQK__SCAN_KEEP_CARRY: the same rows, carry untouched */
    memcpy(c2, c0, (size_t)C * 4);
    seqk__scan_rows(rows, C, block, rev | SEQK__SCAN_KEEP_CARRY, a, nb, b, C, h2, C, c2);
    check(memcmp(h1, h2, (size_t)(rows * C) * 4) == 0, "KEEP_CARRY: the same rows", rows, C, block,
          rev);
    check(memcmp(c2, c0, (size_t)C * 4) == 0, "KEEP_CARRY: carry not written", rows, C, block, rev);
    /* KEEP_CARRY with h = b (the step in place on the product's output) */
    memcpy(h2, b, (size_t)(rows * C) * 4);
    seqk__scan_rows(rows, C, block, rev | SEQK__SCAN_KEEP_CARRY, a, nb, h2, C, h2, C, c2);
    check(memcmp(h1, h2, (size_t)(rows * C) * 4) == 0, "KEEP_CARRY with h = b", rows, C, block,
          rev);
    /* one row with h == carry: one running state */
    if (rows == 1) {
        memcpy(c2, c0, (size_t)C * 4);
        seqk__scan_rows(1, C, block, rev, a, nb, b, C, c2, C, c2);
        check(memcmp(c2, h1, (size_t)C * 4) == 0, "h == carry", rows, C, block, rev);
    }
    free(a), free(b), free(h1), free(h2), free(c0), free(c1), free(c2);
}

int main(void)
{
    static const int64_t Cs[] = {1, 7, 64, 300, 4096, 4160};
    for (size_t i = 0; i < sizeof Cs / sizeof *Cs; i++)
        for (unsigned rev = 0; rev < 2; rev++) {
            const int64_t C = Cs[i];
            run(1, C, C, rev);
            run(1, C, 1, rev);
            run(5, C, C, rev);
            run(37, C, 1, rev);
            if (C % 64 == 0) run(9, C, 64, rev);
        }
    printf("test_scan_rows: %d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
