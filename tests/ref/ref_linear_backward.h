/* tests/ref/ref_linear_backward.h -- float64 references of the backward of
 * the linear-state modules (DESIGN 3.1, 3.7), written from the recurrence as
 * plain reverse token loops; no library code, nothing shared with the
 * forward references either.
 *
 * The generic recurrence per (sequence, head), tokens t of the sequence:
 *
 *   S_t = a_t S_{t-1} + k_t v_t^T            (S: K x V, S_{-1} = s0)
 *   z_t = a_t z_{t-1} + k_t                  (normaliser only; z_{-1} = z0)
 *   o_t = S_t^T q_t                          or  S_t^T q_t / (q_t . z_t + 1e-6)
 *
 * with a_t = exp(la_t) (la: the log-decay). Its backward walks the tokens in
 * reverse with dS (the gradient at S_t; dS = dsT after the last token):
 *
 *   dnum_t = dout_t (/ den_t),  dden_t = -(dout_t . o_t) / den_t
 *   dS += q_t dnum_t^T,   dz += dden_t q_t
 *   dq_t = S_t dnum_t + dden_t z_t,   dk_t = dS v_t + dz,   dv_t = dS^T k_t
 *   dla_t = a_t (<S_{t-1}, dS> + z_{t-1} . dz)
 *   dS <- a_t dS,  dz <- a_t dz                (now the gradient at S_{t-1})
 *
 * and ds0 = dS, dz0 = dz at the sequence start. S_{t-1} and S_t come from
 * checkpoints every REF_LIN_SEG tokens, the states in between recomputed per
 * segment (so T = 65536 runs in little memory).
 */
#ifndef SEQK_REF_LINEAR_BACKWARD_H
#define SEQK_REF_LINEAR_BACKWARD_H
#include <stdint.h>

/* Shapes: rows = B*T token rows; with cu (N+1 boundaries, B = 1) sequence n
 * holds rows [cu[n], cu[n+1]), else n < B holds rows [n T, (n+1) T). */
typedef struct {
    int64_t B, T, H, K, V;
    const int32_t *cu; /* NULL: N = B */
    int64_t N;
    int normalize;     /* the Katharopoulos normaliser (z, den) */
} ref_lin_shape;

/* The generic backward above, all in double.
 *   q, k   [rows,H,K]  the features as the recurrence sees them (q~ = scale phi(q), k~ = phi(k))
 *   v      [rows,H,V]  the values as the recurrence sees them (v' = v, or dt x for Mamba2)
 *   la     [rows,H] or NULL (a_t = 1)   log-decays
 *   s0     [N,H,K,V] or NULL (zeros),  z0 [N,H,K] or NULL (zeros; normalize only)
 *   dout   [rows,H,V]
 *   dsT    [N,H,K,V] or NULL (zero),   dzT [N,H,K] or NULL (zero; normalize only)
 * Outputs (overwritten; any may be NULL): dq, dk [rows,H,K], dv [rows,H,V],
 *   dla [rows,H], ds0 [N,H,K,V], dz0 [N,H,K], and the sizes of the terms
 *   that are summed into some gradients, [rows,H] each (Euclidean norms), for
 *   the error a fp32 computation may have whatever the size of the result:
 *   gterm = |q_t| |dq_t| + |k_t| |dk_t|: the terms of DESIGN 3.7's gate
 *     formula d(log a_t) = sum_{i>=t} (q_i . dq_i - k_i . dk_i) + <S_T, dS_T>
 *     (they cancel to ~a_t with gates near -20);
 *   qterm = |S_t dnum_t| + |dden_t| |z_t|, kterm = |dS_t v_t| + |dz_t|: the two
 *     parts of dq_t and dk_t with the normaliser (they cancel when o_t does
 *     not depend on q_t, e.g. T = 1 without a state: o = v (q.k)/(q.k + 1e-6)). */
typedef struct {
    double *gterm, *qterm, *kterm; /* each [rows,H] or NULL */
} ref_lin_terms;
void ref_lin_backward(const ref_lin_shape *sh, const double *q, const double *k, const double *v,
                      const double *la, const double *s0, const double *z0, const double *dout,
                      const double *dsT, const double *dzT, double *dq, double *dk, double *dv,
                      double *dla, double *ds0, double *dz0, const ref_lin_terms *terms);

/* seqk_linear_attention_backward's math: q~ = scale phi(q), k~ = phi(k)
 * (phi = elu+1 when elu1, else identity), a = 1; dq, dk through phi.
 * Float inputs as the library takes them (shapes as seqk.h; s0, z0, dsT, dzT
 * may be NULL; z0, dzT, dz0 only with normalize), double outputs (ds0, dz0
 * may be NULL). qterm, kterm [B,T,H] or NULL: as in ref_lin_backward, carried
 * to q and k (times scale for q; phi' <= 1 is bounded by 1). */
void ref_linear_attention_backward(int64_t B, int64_t T, int64_t H, int64_t K, int64_t V,
                                   double scale, int normalize, int elu1, const float *q,
                                   const float *k, const float *v, const float *dout,
                                   const float *s0, const float *z0, const float *dsT,
                                   const float *dzT, double *dq, double *dk, double *dv,
                                   double *ds0, double *dz0, double *qterm, double *kterm,
                                   const int32_t *cu, int64_t N);

/* seqk_retention_backward's math: a_t = gamma_h (gamma NULL: 1 - 2^(-5-h)). */
void ref_retention_backward(int64_t B, int64_t T, int64_t H, int64_t K, int64_t V, double scale,
                            const float *gamma, const float *q, const float *k, const float *v,
                            const float *dout, const float *s0, const float *dsT, double *dq,
                            double *dk, double *dv, double *ds0, const int32_t *cu, int64_t N);

/* seqk_gated_retention_backward's math: a_t = exp(g_t); dg [B,T,H]; gterm
 * [B,T,H] or NULL as in ref_lin_backward. */
void ref_gated_retention_backward(int64_t B, int64_t T, int64_t H, int64_t K, int64_t V,
                                  double scale, const float *q, const float *k, const float *v,
                                  const float *g, const float *dout, const float *s0,
                                  const float *dsT, double *dq, double *dk, double *dv, double *dg,
                                  double *gterm, double *ds0, const int32_t *cu, int64_t N);

/* The error scales of Mamba2's gate-borne gradients (see gterm above):
 *   ddt [B,T,H]   sigma_t |A_h| gterm_t     (sigma = softplus' or 1)
 *   dA  [H]       sum_t dt'_t gterm_t
 *   ddt_bias [H]  sum_t sigma_t |A_h| gterm_t
 * and dA_abs [H] = sum_t |dt'_t dla_t|, the size of dA's own summands (under
 * strong decay they cancel to a dA 100x smaller: fp32 can hold dA only to
 * ~1e-7 of this size). */
typedef struct {
    double *ddt, *dA, *ddt_bias; /* each may be NULL */
    double *dA_abs;              /* may be NULL */
} ref_mamba2_scales;

/* seqk_mamba2_backward's math: d = dt + dt_bias, dt' = softplus(d) (or d),
 * q~ = Cm, k~ = Bm (group h / (H/G)), v' = dt' x, la = dt' A_h, scale 1,
 * y = o + D_h x. Outputs (double; dD, ddt_bias, ds0, sc may be NULL):
 *   dx [B,T,H,P], ddt [B,T,H], dA [H], dBm, dCm [B,T,G,Nst] (summed over the
 *   heads of a group), dD [H], ddt_bias [H], ds0 [N,H,Nst,P]. D, dt_bias,
 *   s0, dsT may be NULL. */
void ref_mamba2_backward(int64_t B, int64_t T, int64_t H, int64_t P, int64_t G, int64_t Nst,
                         int softplus, const float *x, const float *dt, const float *A,
                         const float *Bm, const float *Cm, const float *D, const float *dt_bias,
                         const float *s0, const float *dy, const float *dsT, double *dx,
                         double *ddt, double *dA, double *dBm, double *dCm, double *dD,
                         double *ddt_bias, double *ds0, const ref_mamba2_scales *sc,
                         const int32_t *cu, int64_t N);

/* DESIGN 3.7's gate formula, for cross-checking dla in double:
 * dla_t = sum_{i>=t in its sequence} (q_i . dq_i - k_i . dk_i) + <S_T, dS_T>
 * (+ z_T . dz_T), with dq, dk the total gradients from ref_lin_backward and
 * S_T, z_T the final states, which it computes by the forward token loop
 * from the same q, k, v, la, s0, z0. */
void ref_lin_gate_by_design_formula(const ref_lin_shape *sh, const double *q, const double *k,
                                    const double *v, const double *la, const double *s0,
                                    const double *z0, const double *dq, const double *dk,
                                    const double *dsT, const double *dzT, double *dla);
#endif
