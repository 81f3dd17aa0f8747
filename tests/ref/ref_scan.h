/* tests/ref/ref_scan.h -- float64 reference of the scan primitive (DESIGN 3.6). */
#ifndef SEQK_REF_SCAN_H
#define SEQK_REF_SCAN_H
#include <stdint.h>

/* h[t] = a[t] h[t-1] + b[t] (or h[t+1] when reverse), per channel, straight
 * from the definition. a [B,T,C/block], b/h [B,T,C], h0/h_final [N,C] (h0 may
 * be NULL), cu [N+1] or NULL (then N = B). */
void ref_scan(int64_t B, int64_t T, int64_t C, int64_t block, int reverse, const float *a,
              const float *b, const float *h0, double *h, double *h_final, const int32_t *cu,
              int64_t N);
#endif
