/* ssm/titans.h -- what the Titans forward (ssm/titans.c) shares with its
 * backward (ssm/titans_backward.c): the state layout and the validation. */
#ifndef SEQK_SSM_TITANS_H
#define SEQK_SSM_TITANS_H

#include "../core/internal.h"
#include "../scan/linear_state.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>

/* Floats after M, S, Mhat in a state block: pos and 7 reserved. */
#define SEQK__TITANS_PAD 8
/* The largest mini-batch size b. */
#define SEQK__TITANS_MAX_MINIBATCH 1024
/* The flags seqk_titans knows. */
#define SEQK__TITANS_KNOWN_FLAGS SEQK_TITANS_L2NORM_QK

/* The backward (CPU: per thread; CUDA: per block, gpu/titans_backward.cu):
 * the most bytes of one sequence's segment states and errors (2 K V + b V
 * floats per segment) kept whole (R = 1); beyond, checkpoints. */
#ifndef SEQK__TT_BWD_FULL_BYTES
#define SEQK__TT_BWD_FULL_BYTES (16 << 20)
#endif

/* Floats per (sequence, head) state block, E = 3 K V + 8. */
static inline int64_t seqk__titans_state_floats(int64_t K, int64_t V)
{
    return 3 * K * V + SEQK__TITANS_PAD;
}

/* Sizes, mode, minibatch and the state's element count (messages name fn). */
seqk_status seqk__titans_check_sizes(const char *fn, seqk_context *ctx, int mode, int64_t B,
                                     int64_t T, int64_t H, int64_t K, int64_t V,
                                     int64_t minibatch, int64_t N, bool varlen);

/* Host memory: eta, alpha in [0, 1] and theta finite and >= 0 (n values
 * each; NULL when n = 0), and every pos of state_in (NULL: none) an integer
 * in [0, b) (state_in [N, H, 3 K V + 8]). INVALID_ARGUMENT naming fn, the
 * first bad index and its value. */
seqk_status seqk__titans_check_values(const char *fn, const float *eta, const float *theta,
                                      const float *alpha, int64_t n, const float *state_in,
                                      int64_t N, int64_t H, int64_t K, int64_t V, int64_t b);

/* The seqk__lin view of a Titans call that both directions walk: sizes,
 * sequences, the mini-batch as the chunk, scale, the L2-norm flag, q, k, v
 * (P zeroed first; o and the state pointers are the caller's). */
static inline void seqk__titans_lin(seqk__lin *P, int64_t B, int64_t T, int64_t H, int64_t K,
                                    int64_t V, int64_t N, int64_t minibatch,
                                    const int32_t *cu_host, float scale, unsigned flags,
                                    const float *q, const float *k, const float *v)
{
    P->B = B, P->T = T, P->H = H, P->Hqk = H, P->K = K, P->V = V, P->N = N;
    P->chunk = minibatch;
    P->cu = cu_host;
    P->scale = scale;
    P->flags = (flags & SEQK_TITANS_L2NORM_QK) ? (unsigned)SEQK__LIN_L2NORM : 0u;
    P->q = q, P->k = k, P->v = v;
}

/* Callable from CUDA device code too (gpu/titans_backward.cu). */
#ifdef __CUDACC__
#define SEQK__TT_HD __host__ __device__
#else
#define SEQK__TT_HD
#endif

/* The backward's segments of a sequence of len tokens starting at position
 * pos0: segment j covers tokens [max(0, j b - pos0), min(len, (j + 1) b -
 * pos0)) (the first one finishes the mini-batch pos0 is inside). */
static inline SEQK__TT_HD int64_t seqk__titans_seg_count(int64_t len, int64_t pos0, int64_t b)
{
    return len == 0 ? 0 : (pos0 + len - 1) / b + 1;
}

static inline SEQK__TT_HD void seqk__titans_seg_range(int64_t j, int64_t len, int64_t pos0,
                                                      int64_t b, int64_t *t0, int64_t *n)
{
    const int64_t s = j * b - pos0 > 0 ? j * b - pos0 : 0;
    const int64_t e = (j + 1) * b - pos0 < len ? (j + 1) * b - pos0 : len;
    *t0 = s, *n = e - s;
}

/* Segment j0 + i (i < cnt, a group of cnt from j0) of the backward's reverse
 * walk over nseg segments, states kept per group of R (R = 1: all): its
 * tokens [t0, t0 + n), whether it starts a mini-batch (its Mhat is then the
 * state before it, else the state's Mhat_in), whether it is the call's last
 * (dMhat_fin then enters its dH), and the index of its Gerr among the kept
 * ones (the state pass keeps every segment's but the last's, of the sequence
 * with R = 1, of the group with R > 1; -1: not kept, formed again). */
typedef struct seqk__titans_walk {
    int64_t t0, n, gerr;
    bool starts, last;
} seqk__titans_walk;

static inline SEQK__TT_HD seqk__titans_walk seqk__titans_walk_seg(int64_t j0, int64_t i,
                                                                  int64_t cnt, int64_t nseg,
                                                                  int64_t R, int64_t len,
                                                                  int64_t pos0, int64_t b)
{
    seqk__titans_walk g;
    const int64_t j = j0 + i;
    seqk__titans_seg_range(j, len, pos0, b, &g.t0, &g.n);
    g.starts = j > 0 || pos0 == 0;
    g.last = j == nseg - 1;
    const bool kept = R == 1 ? j + 1 < nseg : i + 1 < cnt;
    g.gerr = kept ? (R == 1 ? j : i) : -1;
    return g;
}

/* log x for the cumulated gates, x in [0, 1]; 0 -> -1e4 (exp of anything
 * that includes it is 0 in float, and differences stay finite). */
static inline double seqk__titans_log_gate(float x)
{
    return x > 0.0f ? log((double)x) : -1.0e4;
}

/* out[s] = exp(min(lt - lm[s], 0)) for s in [0, n): one row of the ratios
 * of cumulated gates exp(lm_t - lm_s) (lm non-increasing; the min guards
 * rounding), the difference in double, the exponential in float (AVX2:
 * seqk__exp8). */
void seqk__titans_exp_row(double lt, const double *lm, int64_t n, float *out);

#endif
