/* tests/ref/ref_deltanet_backward.h -- float64 references for the backward of
 * DeltaNet and gated DeltaNet (seqk_deltanet_backward): a forward on double
 * inputs (for central finite differences) and the reverse token loop, both
 * plain loops written from the math, sharing no code with seqk. */
#ifndef SEQK_REF_DELTANET_BACKWARD_H
#define SEQK_REF_DELTANET_BACKWARD_H
#include <stdint.h>

/* The forward of ref_deltanet on double inputs: per sequence and head,
 *   q~ = scale n(q), k~ = n(k)   (n(x) = x / sqrt(sum x^2 + 1e-6) with l2norm, else x)
 *   S' = exp(g_t) S_{t-1};  S_t = S' + beta_t k~ (v_t - S'^T k~)^T;  o_t = S_t^T q~
 * q,k [B,T,H,K], v,o [B,T,H,V], beta, g [B,T,H] (g NULL: no gate), s0
 * [N,H,K,V] or NULL (zeros), s_fin [N,H,K,V] or NULL, cu [N+1] or NULL
 * (N = B). */
void ref_deltanet64(int64_t B, int64_t T, int64_t H, int64_t K, int64_t V, double scale,
                    int l2norm, const double *q, const double *k, const double *v,
                    const double *beta, const double *g, const double *s0, double *o,
                    double *s_fin, const int32_t *cu, int64_t N);

/* The gradients of L = <dout, o> + <ds_out, s_fin> (ds_out NULL: zero) with
 * respect to q, k, v, beta, g (dg only when g is given; may be NULL) and s0
 * (ds_in; may be NULL), by the reverse token loop: with the states S_t of the
 * forward kept, from dS = ds_out, for t = T .. 1:
 *   dq~_t = S_t do_t,   dS += q~_t do_t^T,   S' = exp(g_t) S_{t-1}
 *   u = v_t - S'^T k~,  e = dS^T k~
 *   dv_t = beta e,   dbeta_t = e . u,   dk~_t = beta (dS u - S' e)
 *   dS' = dS - beta k~ e^T,   dg_t = <dS', S'>,   dS = exp(g_t) dS'
 * then through q~ = scale n(q), k~ = n(k): dx = (dx~ - x~ (x~ . dx~)) / |x|
 * with the L2 norm (|x| with its eps). ds_in = dS at the end. */
void ref_deltanet_backward64(int64_t B, int64_t T, int64_t H, int64_t K, int64_t V,
                             double scale, int l2norm, const double *q, const double *k,
                             const double *v, const double *beta, const double *g,
                             const double *s0, const double *dout, const double *ds_out,
                             double *dq, double *dk, double *dv, double *dbeta, double *dg,
                             double *ds_in, const int32_t *cu, int64_t N);
#endif
