/* tests/ref/ref_titans.h -- float64 reference of the Titans linear memory
 * (DESIGN 3.4), the plain token loop. */
#ifndef SEQK_REF_TITANS_H
#define SEQK_REF_TITANS_H
#include <stdint.h>

/* Per sequence and head, in double, with b the mini-batch size and the state
 * block [M (K x V) | S | Mhat | pos | 7 reserved] (E = 3 K V + 8 floats):
 *   q~ = q, k~ = k, or with l2norm x / sqrt(sum x^2 + 1e-6)
 *   if pos == 0: Mhat = M
 *   S = eta_t S - theta_t k~ (Mhat^T k~ - v_t)^T
 *   M = (1 - alpha_t) M + S
 *   o_t = M^T (scale q~);  pos = (pos + 1) mod b
 * q,k [B,T,H,K], v,o [B,T,H,V], eta, theta, alpha [B,T,H], s0 [N,H,E] or
 * NULL (zeros; Mhat read only where pos != 0, the reserved floats never),
 * s_fin [N,H,E] (double; Mhat = M where the final pos is 0, reserved 0) or
 * NULL, cu [N+1] or NULL (N = B). */
void ref_titans(int64_t B, int64_t T, int64_t H, int64_t K, int64_t V, double scale, int l2norm,
                int64_t b, const float *q, const float *k, const float *v, const float *eta,
                const float *theta, const float *alpha, const float *s0, double *o,
                double *s_fin, const int32_t *cu, int64_t N);
#endif
