/* ssm/deltanet.h -- what DeltaNet's forward (ssm/deltanet.c) shares with its
 * backward (ssm/deltanet_backward.c). */
#ifndef SEQK_SSM_DELTANET_H
#define SEQK_SSM_DELTANET_H

#include "../core/internal.h"
#include "../scan/linear_state.h"

#include <stdint.h>

/* Tm [L,L] (holding K~ K~^T on and below the diagonal on entry) -> the
 * chunk's T = (I + A)^-1, A_ij = beta_i (K~ K~^T)_ij exp(G_i - G_j) for
 * j < i (G NULL: no decay; else G_i = G[i] + Gl[i], the two parts of
 * seqk__gates_cumsum), lower unit triangular with zeros written above the
 * diagonal. arow: L floats of scratch. */
void seqk__dn_forward_substitution(float *Tm, int64_t L, const float *beta, const float *G,
                                   const float *Gl, float *arow);

/* beta[i] in [0, 1] ([0, 2] with SEQK_DELTANET_ALLOW_NEG_EIGVAL) for i < n,
 * host memory (NaN is out of range); INVALID_ARGUMENT naming fn, the first
 * bad index and its value. */
seqk_status seqk__dn_check_beta(const char *fn, const float *beta, int64_t n, unsigned flags);

/* The engine's view of a DeltaNet call (P zeroed by the caller): sizes
 * (Hqk = H), the chunk (resolved: seqk__lin_chunk), the host cu_seqlens, scale, SEQK__LIN_L2NORM from
 * SEQK_DELTANET_L2NORM_QK, q, k, v, g and s_in; the caller adds its outputs. */
void seqk__dn_lin(seqk__lin *P, int64_t B, int64_t T, int64_t H, int64_t K, int64_t V,
                  int64_t N, int64_t chunk, const int32_t *cu_host, float scale, unsigned flags,
                  const float *q, const float *k, const float *v, const float *g,
                  const float *s_in);

#endif
