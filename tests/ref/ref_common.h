/* tests/ref/ref_common.h -- pieces shared by the float64 references (plain
 * C written from DESIGN section 3; no library code). */
#ifndef SEQK_REF_COMMON_H
#define SEQK_REF_COMMON_H
#include <stdint.h>

/* The query and key of one token as the delta-rule references (DeltaNet,
 * Titans) use them, in double, from q, k [K]:
 *   qt = scale q~, kt = k~,  with x~ = x / sqrt(sum x^2 + 1e-6) when l2norm, else x~ = x. */
void ref_qk_tilde(int64_t K, double scale, int l2norm, const float *q, const float *k, double *qt,
                  double *kt);
#endif
