/* tests/ref/ref_scan.c -- see ref_scan.h. Plain loops, double precision. */
#include "ref_scan.h"

void ref_scan(int64_t B, int64_t T, int64_t C, int64_t block, int reverse, const float *a,
              const float *b, const float *h0, double *h, double *h_final, const int32_t *cu,
              int64_t N)
{
    if (!cu) N = B;
    for (int64_t n = 0; n < N; n++) {
        /* rows [start, end) of the [B*T] row index */
        int64_t start = cu ? cu[n] : n * T, end = cu ? cu[n + 1] : (n + 1) * T;
        for (int64_t c = 0; c < C; c++) {
            double s = h0 ? h0[n * C + c] : 0.0;
            for (int64_t i = 0; i < end - start; i++) {
                int64_t row = reverse ? end - 1 - i : start + i;
                double coef = a[row * (C / block) + c / block];
                s = coef * s + b[row * C + c];
                h[row * C + c] = s;
            }
            if (h_final) h_final[n * C + c] = s;
        }
    }
}
