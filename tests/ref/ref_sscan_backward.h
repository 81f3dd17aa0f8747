/* tests/ref/ref_sscan_backward.h -- float64 reference of the Mamba selective
 * scan's backward (DESIGN 3.2, 3.7): a reverse token loop straight from the
 * math of seqk.h's seqk_selective_scan_backward, plus a float64 forward on
 * double inputs for finite differences. Plain loops, no library code. */
#ifndef SEQK_REF_SSCAN_BACKWARD_H
#define SEQK_REF_SSCAN_BACKWARD_H
#include <stdint.h>

/* The inputs of one selective scan in double: u, dt, z [B,T,D]; A [D,Nst];
 * Bm, Cm [B,T,G,Nst]; Dskip, dt_bias [D], z, s0 [N,D,Nst]: NULL = absent. */
typedef struct {
    int64_t B, T, D, Nst, G, N; /* N: sequences (B without cu) */
    int softplus;
    const int32_t *cu;          /* [N+1] or NULL */
    const double *u, *dt, *A, *Bm, *Cm, *Dskip, *z, *dt_bias, *s0;
} ref_ss_problem;

/* Forward: y [B,T,D], s_fin [N,D,Nst] (either may be NULL). */
void ref_ss_forward_d(const ref_ss_problem *p, double *y, double *s_fin);

/* L = sum dy .* y + sum dstate_out .* s_fin (dstate_out may be NULL). */
double ref_ss_loss_d(const ref_ss_problem *p, const double *dy, const double *dstate_out);

/* Gradients of ref_ss_loss_d: du, ddt, dz [B,T,D]; dA [D,Nst]; dBm, dCm
 * [B,T,G,Nst]; dDskip, ddt_bias [D]; ds0 [N,D,Nst] (the gradient at s0, or
 * at a zero state). Every output is overwritten; dz is written only when z is
 * given (may be NULL otherwise). */
void ref_ss_backward_d(const ref_ss_problem *p, const double *dy, const double *dstate_out,
                       double *du, double *ddt, double *dA, double *dBm, double *dCm,
                       double *dDskip, double *dz, double *ddt_bias, double *ds0);
#endif
