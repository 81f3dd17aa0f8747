/* tests/ref/ref_sscan.h -- float64 reference of the Mamba selective scan (DESIGN 3.2). */
#ifndef SEQK_REF_SSCAN_H
#define SEQK_REF_SSCAN_H
#include <stdint.h>

/* u, dt, z, y [B,T,D]; A [D,Nst]; Bm, Cm [B,T,G,Nst]; Dskip, dt_bias [D] or NULL;
 * z NULL = no gate; s0 [N,D,Nst] or NULL; s_fin [N,D,Nst]; cu [N+1] or NULL. */
void ref_selective_scan(int64_t B, int64_t T, int64_t D, int64_t Nst, int64_t G, int softplus,
                        const float *u, const float *dt, const float *A, const float *Bm,
                        const float *Cm, const float *Dskip, const float *z,
                        const float *dt_bias, const float *s0, double *y, double *s_fin,
                        const int32_t *cu, int64_t N);
#endif
