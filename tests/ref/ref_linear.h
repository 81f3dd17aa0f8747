/* tests/ref/ref_linear.h -- float64 references of the linear-state modules
 * (DESIGN 3.1), as plain token loops. */
#ifndef SEQK_REF_LINEAR_H
#define SEQK_REF_LINEAR_H
#include <stdint.h>

/* Decay of token row r (in [B*T]) and head h, as the reference sees it. */
typedef struct {
    int kind;            /* 0: none (linear attention), 1: gamma [H], 2: g [B*T,H] log-gates */
    const float *gamma;  /* kind 1 */
    const float *g;      /* kind 2 */
} ref_decay;

/* S_t = a_t S_{t-1} + phi(k_t) v_t^T ; o_t = S_t^T (scale phi(q_t)) [/ (scale phi(q_t).z_t + eps)]
 * q,k [B,T,H,K], v,o [B,T,H,V], s0 [N,H,K,V] or NULL, s_fin [N,H,K,V] (double),
 * z0/z_fin [N,H,K] with normalize. elu1: phi = elu+1. cu [N+1] or NULL. */
void ref_linear_state(int64_t B, int64_t T, int64_t H, int64_t K, int64_t V, double scale,
                      int normalize, int elu1, ref_decay decay, const float *q, const float *k,
                      const float *v, const float *s0, const float *z0, double *o,
                      double *s_fin, double *z_fin, const int32_t *cu, int64_t N);

/* Mamba2 / SSD from its own definition:
 *   dt' = softplus(dt + bias) (or dt + bias), h_t = exp(dt' A_h) h_{t-1} + dt' B_t x_t^T
 *   y_t = h_t^T C_t + D_h x_t; h [Nst, P] per head, groups h / (H/G).
 * x,y [B,T,H,P], dt [B,T,H], Bm,Cm [B,T,G,Nst], s0/s_fin [N,H,Nst,P]. */
void ref_mamba2(int64_t B, int64_t T, int64_t H, int64_t P, int64_t G, int64_t Nst, int softplus,
                const float *x, const float *dt, const float *A, const float *Bm, const float *Cm,
                const float *D, const float *dt_bias, const float *s0, double *y, double *s_fin,
                const int32_t *cu, int64_t N);
#endif
