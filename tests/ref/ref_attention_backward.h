/* tests/ref/ref_attention_backward.h -- float64 reference of the backward of
 * softmax attention (DESIGN 3.5, 3.7), written from the math as plain loops;
 * shares no code with seqk (nor with ref_attention.c). Inputs are doubles so
 * that the test can also take central finite differences of the forward. */
#ifndef SEQK_REF_ATTENTION_BACKWARD_H
#define SEQK_REF_ATTENTION_BACKWARD_H
#include <stdint.h>

/* The forward in float64: o[t] = sum_{s in S(t)} softmax_s(scale q[t].k[s]) v[s]
 * per batch entry (or sequence of cu) and query head h on key/value head
 * h / (Hq/Hkv); S(t) is the sequence, or s <= t when causal.
 * q [B,T,Hq,K], k [B,T,Hkv,K], v [B,T,Hkv,V], o [B,T,Hq,V]; cu [N+1] or NULL. */
void ref_attention_forward64(int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t K, int64_t V,
                             double scale, int causal, const double *q, const double *k,
                             const double *v, double *o, const int32_t *cu, int64_t N);

/* The gradients of L = sum o . dout for the forward above, through the
 * softmax's Jacobian: with p[t,.] the softmax row and g[t,s] = dout[t] . v[s],
 *   dv[s] = sum_t p[t,s] dout[t]
 *   ds[t,s] = p[t,s] (g[t,s] - sum_u p[t,u] g[t,u])
 *   dq[t] = scale sum_s ds[t,s] k[s],   dk[s] = scale sum_t ds[t,s] q[t]
 * with dk, dv of a key/value head summed over all its query heads. Every
 * element of dq [B,T,Hq,K], dk [B,T,Hkv,K], dv [B,T,Hkv,V] is written. */
void ref_attention_backward(int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t K, int64_t V,
                            double scale, int causal, const double *q, const double *k,
                            const double *v, const double *dout, double *dq, double *dk,
                            double *dv, const int32_t *cu, int64_t N);
#endif
