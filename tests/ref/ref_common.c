/* tests/ref/ref_common.c -- see ref_common.h. */
#include "ref_common.h"

#include <math.h>

void ref_qk_tilde(int64_t K, double scale, int l2norm, const float *q, const float *k, double *qt,
                  double *kt)
{
    double nq = 1.0, nk = 1.0;
    if (l2norm) {
        double sq = 0.0, sk = 0.0;
        for (int64_t i = 0; i < K; i++) {
            sq += (double)q[i] * q[i];
            sk += (double)k[i] * k[i];
        }
        nq = sqrt(sq + 1e-6);
        nk = sqrt(sk + 1e-6);
    }
    for (int64_t i = 0; i < K; i++) {
        qt[i] = scale * q[i] / nq;
        kt[i] = k[i] / nk;
    }
}
