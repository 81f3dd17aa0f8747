/* tests/ref/ref_sscan.c -- see ref_sscan.h. Token loop in double precision. */
#include "ref_sscan.h"

#include <math.h>

void ref_selective_scan(int64_t B, int64_t T, int64_t D, int64_t Nst, int64_t G, int softplus,
                        const float *u, const float *dt, const float *A, const float *Bm,
                        const float *Cm, const float *Dskip, const float *z,
                        const float *dt_bias, const float *s0, double *y, double *s_fin,
                        const int32_t *cu, int64_t N)
{
    if (!cu) N = B;
    for (int64_t n = 0; n < N; n++)
        for (int64_t d = 0; d < D; d++) {
            const int64_t g = d / (D / G);
            double h[1024];
            for (int64_t s = 0; s < Nst; s++) h[s] = s0 ? s0[(n * D + d) * Nst + s] : 0.0;
            const int64_t start = cu ? cu[n] : n * T, end = cu ? cu[n + 1] : (n + 1) * T;
            for (int64_t r = start; r < end; r++) {
                double step = (double)dt[r * D + d] + (dt_bias ? dt_bias[d] : 0.0);
                if (softplus) step = log(1.0 + exp(step));
                const double ud = u[r * D + d];
                double acc = 0.0;
                for (int64_t s = 0; s < Nst; s++) {
                    h[s] = exp(step * A[d * Nst + s]) * h[s] + step * Bm[(r * G + g) * Nst + s] * ud;
                    acc += Cm[(r * G + g) * Nst + s] * h[s];
                }
                if (Dskip) acc += (double)Dskip[d] * ud;
                if (z) {
                    const double zv = z[r * D + d];
                    acc *= zv / (1.0 + exp(-zv));
                }
                y[r * D + d] = acc;
            }
            if (s_fin)
                for (int64_t s = 0; s < Nst; s++) s_fin[(n * D + d) * Nst + s] = h[s];
        }
}
