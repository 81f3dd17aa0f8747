/* tests/ref/ref_deltanet.h -- float64 reference of DeltaNet and gated
 * DeltaNet (DESIGN 3.3), the plain token loop. */
#ifndef SEQK_REF_DELTANET_H
#define SEQK_REF_DELTANET_H
#include <stdint.h>

/* Per sequence and head, in double:
 *   q~ = q, k~ = k, or with l2norm x / sqrt(sum x^2 + 1e-6)
 *   S' = exp(g_t) S (g NULL: S' = S);  S = S' + beta_t k~ (v_t - S'^T k~)^T
 *   o_t = S^T (scale q~)
 * q,k [B,T,H,K], v,o [B,T,H,V], beta, g [B,T,H], s0 [N,H,K,V] or NULL,
 * s_fin [N,H,K,V] (double) or NULL, cu [N+1] or NULL (N = B). */
void ref_deltanet(int64_t B, int64_t T, int64_t H, int64_t K, int64_t V, double scale,
                  int l2norm, const float *q, const float *k, const float *v, const float *beta,
                  const float *g, const float *s0, double *o, double *s_fin, const int32_t *cu,
                  int64_t N);
#endif
