/* tests/ref/ref_attention.h -- float64 reference of softmax attention
 * (DESIGN 3.5), straight from the definition; shares no code with seqk. */
#ifndef SEQK_REF_ATTENTION_H
#define SEQK_REF_ATTENTION_H
#include <stdint.h>

/* o[t] = sum_{s in S(t)} exp(scale q[t].k[s] - lse[t]) v[s],
 * lse[t] = log sum_{s in S(t)} exp(scale q[t].k[s]), per batch entry (or
 * sequence of cu) and query head h on key/value head h / (Hq/Hkv); S(t) is
 * the whole sequence, or s <= t when causal.
 * q [B,T,Hq,K], k [B,T,Hkv,K], v [B,T,Hkv,V], o [B,T,Hq,V], lse [B,Hq,T]
 * (may be NULL), cu [N+1] or NULL (then N = B). */
void ref_attention(int64_t B, int64_t T, int64_t Hq, int64_t Hkv, int64_t K, int64_t V,
                   double scale, int causal, const float *q, const float *k, const float *v,
                   double *o, double *lse, const int32_t *cu, int64_t N);
#endif
