/* tests/ref/ref_titans_backward.h -- float64 references for the backward of
 * the Titans linear memory (issue #16; the derivation is
 * docs/titans-backward.md): a forward on double inputs (for central finite
 * differences) and the reverse token loop, both plain loops written from the
 * math, sharing no code with seqk. */
#ifndef SEQK_REF_TITANS_BACKWARD_H
#define SEQK_REF_TITANS_BACKWARD_H
#include <stdint.h>

/* The forward of ref_titans on double inputs. Per sequence and head, with b
 * the mini-batch size and the state block [M (K x V) | S | Mhat | pos | 7
 * reserved] (E = 3 K V + 8 doubles; pos an integer in [0, b)):
 *   q~ = scale n(q), k~ = n(k)   (n(x) = x / sqrt(sum x^2 + 1e-6) with l2norm, else x)
 *   if pos == 0: Mhat = M
 *   S = eta_t S - theta_t k~ (Mhat^T k~ - v_t)^T;  M = (1 - alpha_t) M + S
 *   o_t = M^T q~;  pos = (pos + 1) mod b
 * q,k [B,T,H,K], v,o [B,T,H,V], eta, theta, alpha [B,T,H], s0 [N,H,E] or
 * NULL (zeros; Mhat read only where pos != 0), s_fin [N,H,E] or NULL (Mhat =
 * M where the final pos is 0; pos as a double; reserved 0), cu [N+1] or NULL
 * (N = B). */
void ref_titans64(int64_t B, int64_t T, int64_t H, int64_t K, int64_t V, double scale,
                  int l2norm, int64_t b, const double *q, const double *k, const double *v,
                  const double *eta, const double *theta, const double *alpha, const double *s0,
                  double *o, double *s_fin, const int32_t *cu, int64_t N);

/* The gradients of
 *   L = <dout, o> + sum over (n, h) of <dM_fin, M_fin> + <dS_fin, S_fin> + <dMhat_fin, Mhat_fin>
 * (ds_out [N,H,E] holds dM_fin, dS_fin, dMhat_fin in the state layout; its
 * pos and reserved entries are ignored; NULL: zero) with respect to q, k, v,
 * eta, theta, alpha and the M, S, Mhat of s0 (ds_in [N,H,E], may be NULL;
 * dMhat_in = 0 where pos_in = 0 since it is not read; pos and reserved
 * entries written 0), by the reverse token loop of docs/titans-backward.md:
 * with the forward's M_{t-1}, S_{t-1}, Mhat_t, e_t = Mhat_t^T k~_t - v_t kept,
 *   dM = dM_fin (+ dMhat_fin if the final pos is 0), dS = dS_fin,
 *   dH = dMhat_fin if the final pos is not 0 (else 0); for t = L .. 1:
 *     dM += q~_t do_t^T;  dq~_t = M_t do_t
 *     G = dS + dM                       (the total gradient of S_t)
 *     dalpha_t = -<dM, M_{t-1}>;  deta_t = <G, S_{t-1}>
 *     w = G^T k~_t;  dv_t = theta_t w;  de = -theta_t w
 *     z = G e_t;  dtheta_t = -k~_t . z;  dk~_t = Mhat_t de - theta_t z
 *     dH += k~_t de^T
 *     dM = (1 - alpha_t) dM;  dS = eta_t G
 *     if token t starts a mini-batch: dM += dH; dH = 0
 *   dM_in = dM, dS_in = dS, dMhat_in = dH
 * then through q~ = scale n(q), k~ = n(k): dx = (dn - n (n . dn)) / |x| with
 * the L2 norm (|x| with its eps; dn = scale dq~ for q). */
void ref_titans_backward64(int64_t B, int64_t T, int64_t H, int64_t K, int64_t V, double scale,
                           int l2norm, int64_t b, const double *q, const double *k,
                           const double *v, const double *eta, const double *theta,
                           const double *alpha, const double *s0, const double *dout,
                           const double *ds_out, double *dq, double *dk, double *dv,
                           double *deta, double *dtheta, double *dalpha, double *ds_in,
                           const int32_t *cu, int64_t N);
#endif
