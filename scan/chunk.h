/*
 * scan/chunk.h -- the shared chunk stages of DESIGN 3.1 (see scan/chunk.c).
 * Linear attention, retention and gated retention run them through
 * seqk__lin_chunked; DeltaNet calls the stages with Vnew in place of V, and
 * Titans loads its mini-batches with seqk__chunk_load and forms its intra
 * scores with seqk__chunk_scores, its mixing matrix in place of the decay
 * mask (the products with the state are fused per block of state columns,
 * ssm/titans.c).
 */
#ifndef SEQK_SCAN_CHUNK_H
#define SEQK_SCAN_CHUNK_H

#include "linear_state.h"

/* Per-thread scratch for one chunk of L <= chunk tokens (floats, 32-byte
 * aligned regions carved from one block). */
typedef struct seqk__chunk_scratch {
    float *G;    /* [L]      cumulative log-decay, high part (seqk__gates_cumsum) */
    float *Gl;   /* [L]      its low part */
    float *den;  /* [L]      normaliser */
    float *Qs;   /* [L,K]    scale * phi(q) */
    float *Qg;   /* [L,K]    diag(exp(G)) Qs */
    float *Kc;   /* [L,K]    phi(k) */
    float *Kd;   /* [L,K]    diag(exp(G_L - G)) Kc */
    float *Vs;   /* [L,V]    v scaled per token, when the problem has v_scale */
    float *P;    /* [L,L]    (Qs Kc^T) .* D */
    float *U;    /* [K*V+K]  local state (and zU) */
    float *S;    /* [K*V+K]  running state (and z) */
    float *pack; /* sgemm packing */
} seqk__chunk_scratch;

size_t seqk__chunk_scratch_floats(int64_t L, int64_t K, int64_t V);
void seqk__chunk_scratch_init(seqk__chunk_scratch *w, float *base, int64_t L, int64_t K,
                              int64_t V);

/* One loaded chunk of one head: views into the scratch (or the inputs). */
typedef struct seqk__chunk_view {
    int64_t L;         /* tokens in the chunk */
    const float *G;    /* [L] or NULL (no decay): cumulative log-decay G_i = G[i] + Gl[i], */
    const float *Gl;   /* [L]  two floats (seqk__exp_gates forms the decays from both) */
    const float *Qs;   /* [L,K] */
    const float *Qg;   /* [L,K] (= Qs without decay) */
    const float *Kc;   /* [L,K] */
    const float *Kd;   /* [L,K] (= Kc without decay) */
    const float *Vv;   /* [L,V] rows ldv apart */
    int64_t ldv;
    float a;           /* exp(G_{L-1}): the chunk's decay of the state */
    bool fold;         /* the decay is folded into the rows (seqk__chunk_load with the
                          queries, when every G_i lies in [-SEQK__CHUNK_FOLD_MAX, 0]):
                          D_ij = exp(G_i) exp(G_{L-1} - G_j) / a, so the scores are
                          (Qg Kd^T) / a and no decay mask is formed (see chunk.c) */
    float ainv;        /* exp(-G_{L-1}) when fold */
} seqk__chunk_view;

/* The largest |G_i| inside a chunk whose decay is folded into its rows: the
 * factors exp(G_i), exp(G_{L-1} - G_j) and 1/a then lie in [e^-30, e^30],
 * far from float's underflow and overflow, so every score keeps its
 * relative accuracy (each factor is one rounding). Stronger decays take the
 * mask exp(G_i - G_j) from the two-float G (never an exp of a large
 * argument). */
#define SEQK__CHUNK_FOLD_MAX 30.0f

/* Loads tokens [r0, r0+L) of head h of P: G, Qs, Qg, Kc, Kd, V. */
void seqk__chunk_load(const seqk__lin *P, int64_t r0, int64_t L, int64_t h,
                      seqk__chunk_scratch *w, seqk__chunk_view *cv);

/* seqk__chunk_load without the queries (cv->Qs, cv->Qg are NULL): what
 * stage 1 (the local state) reads. */
void seqk__chunk_load_keys(const seqk__lin *P, int64_t r0, int64_t L, int64_t h,
                           seqk__chunk_scratch *w, seqk__chunk_view *cv);

/* The rows a chunk step (a head group through one chunk) will read next,
 * asked a few lines after each product tile of the step before it
 * (seqk__sgemm_set_tile_hook), while those tiles compute: a head's rows are
 * H K floats apart, past the hardware prefetcher, and asked at once they
 * mostly go unserved (seqk__lin_prefetch). One per walk: begin, a step()
 * at the start of every chunk step, end. */
typedef struct seqk__chunk_fetch {
    seqk__lin_prefetch pf;  /* the next step's rows */
    seqk__lin_prefetch blocks; /* and blocks of the workspace (seqk__chunk_fetch_blocks) */
    int pass;               /* the step's pass */
    void (*prev)(void *);   /* the thread's tile hook before begin, put back by end */
    void *prev_arg;
    int64_t per;            /* lines asked per tile */
    int64_t tiles;          /* tiles since this step began */
    int64_t step_tiles[2];  /* tiles of the last step of each pass (0: none yet) */
} seqk__chunk_fetch;

/* The arrays of a step to fetch. */
enum {
    SEQK__FETCH_Q = 1u,
    SEQK__FETCH_K = 2u,
    SEQK__FETCH_V = 4u,
    SEQK__FETCH_O = 8u,   /* the output rows, for writing */
    SEQK__FETCH_DOUT = 16u /* dout (rows H V apart), for reading */
};

/* Starts fetching for this thread's products (sets the tile hook; the one
 * it replaces comes back at seqk__chunk_fetch_end). */
void seqk__chunk_fetch_begin(seqk__chunk_fetch *f);

/* At the start of a chunk step of walk `pass` (0 or 1: a walk with two
 * kinds of step keeps their tile counts apart): asks for tokens
 * [row, row + L) of heads h0 .. h0 + nh - 1 of the arrays in `what`
 * (L = 0: nothing), spread so as to be all asked about three quarters
 * through this step (the lines over the tiles of the pass's last step; 16
 * a tile before there is one). dout: the gradient rows, or NULL. */
void seqk__chunk_fetch_step(seqk__chunk_fetch *f, const seqk__lin *P, const float *dout,
                            unsigned what, int pass, int64_t row, int64_t L, int64_t h0,
                            int64_t nh);

/* After seqk__chunk_fetch_step, for the same step: count blocks of n
 * floats, stride floats apart from p (write: for writing), asked after the
 * rows: the chunk states (and kept products) a walk reads next. Up to four
 * calls a step, each with the step's first count (block i of every call
 * asked together). */
void seqk__chunk_fetch_blocks(seqk__chunk_fetch *f, const float *p, int64_t stride,
                              int64_t count, int64_t n, bool write);

/* For the staged drivers' loops over (chunk, head) items ch = c H + h,
 * walked in order by each thread: at the start of item ch, the rows of item
 * ch + 1 (none past the last), its chunk's L rows of tokens from row, of
 * head h (seqk__chunk_fetch_step with nh = 1); *ch1 = ch + 1 or -1. */
void seqk__chunk_fetch_item(seqk__chunk_fetch *f, const seqk__lin *P, const float *dout,
                            unsigned what, const int64_t *first, int64_t chunk, int64_t ch,
                            int64_t *ch1);

/* Ends it (puts back the tile hook that begin replaced). */
void seqk__chunk_fetch_end(seqk__chunk_fetch *f);

/* Stage 1: U[K,V] = Kd^T Vv (rows ldv apart); with_z: U[K*V + j] = sum_i Kd[i,j]. */
void seqk__chunk_local_state(const seqk__chunk_view *cv, int64_t K, int64_t V, bool with_z,
                             const float *Vv, int64_t ldv, float *U, float *pack);

/* The intra-chunk scores of stage 3: Pm[L,L] = (Qs Kc^T) .* D on and below
 * the diagonal, zeros above; D is cv's decay mask exp(G_i - G_j) (1 without
 * decay), or Mix[L,L] when given (Titans' mixing matrix, rows L apart).
 * A folded chunk (cv->fold, no Mix) forms the same scores as (Qg Kd^T) / a:
 * one product, no mask. pack: sgemm packing (w->pack). */
void seqk__chunk_scores(const seqk__chunk_view *cv, int64_t K, const float *Mix, float *Pm,
                        float *pack);

/* D[L,L] = cv's decay mask: exp(G_i - G_j) for j <= i (1 without decay),
 * zeros above: for a caller that masks several products of one chunk (the
 * backward's P and dP) with one set of exponentials, as their Mix (a folded
 * chunk needs none). */
void seqk__chunk_decay_mask(const seqk__chunk_view *cv, float *D);

/* Pm[L,L] = (A Bm^T) .* D, the same masked product for any rows: A [L,inner]
 * and Bm [L,inner] with rows lda and ldb apart (the scores are A = Qs,
 * Bm = Kc; the backward's dP is A = dO, Bm = V). With no Mix and a folded
 * chunk, D is not applied (Pm = A Bm^T, zeros above the diagonal): the
 * caller folds the decay into the rows it multiplies Pm with. */
void seqk__chunk_masked(const seqk__chunk_view *cv, const float *A, int64_t lda, const float *Bm,
                        int64_t ldb, int64_t inner, const float *Mix, float *Pm, float *pack);

/* Pm[L,L] .*= D in place (Mix when given, else cv's decay mask exp(G_i - G_j);
 * nothing without decay), zeros above the diagonal: for a product formed
 * unmasked first (the backward's dP, whose raw values the gate gradient
 * pairs with the scores before the mask). */
void seqk__chunk_apply_mask(const seqk__chunk_view *cv, const float *Mix, float *Pm);

/* Stage 3: O[L,V] (rows ldo apart) = Qg S0 + ((Qs Kc^T) .* D) Vv, S0 [K,V]
 * (+ z0 [K] after it with SEQK__LIN_NORMALIZE, then O_i /= den_i + eps).
 * S0 = NULL means a zero state. Uses w->P and w->pack. */
void seqk__chunk_output(const seqk__chunk_view *cv, int64_t K, int64_t V, unsigned flags,
                        const float *Vv, int64_t ldv, const float *S0, float *O, int64_t ldo,
                        seqk__chunk_scratch *w);

/* The backward of stage 3 and of the chunk-state step for one chunk of L
 * tokens (scan/chunk_backward.c; DESIGN 3.7), for any value rows Va [L,W]
 * (rows ldva apart: the linear-state engine's V', DeltaNet's Vnew), given
 * its scores Pm = (Qs Kc^T) .* D (seqk__chunk_scores), dO [L,W] (rows ldo
 * apart), S0 [K,W] (the state before it; NULL = zero) and dS [K,W] (the
 * gradient of the state after it):
 *
 *   dVa = Pm^T dO + Kd dS,   dQ = dP Kc + diag(exp(G)) dO S0^T,
 *   dK  = dP^T Qs + diag(exp(G_L - G)) Va dS^T,   dS <- Qg^T dO + a dS
 *
 * with dP = (dO Va^T) .* D, and the gate gradient's terms of this chunk:
 * d(log a_t) = sum_{i >= t} gt_i + sum_{j < t} bt_j + Dterm
 * (seqk__chunk_gate_grad), each term a pair on the two sides of t with its
 * decay (no O(1) cancellation under strong decay). A caller with more
 * terms of the same shapes (DeltaNet's) adds them to gt / bt first. */
typedef struct seqk__chunk_bwd {
    float *dVa;          /* [L,W] out */
    float *dQ, *dK;      /* [L,K] out */
    float *dP;           /* [L,L] out: dP with its diagonal zeroed */
    float *tmp;          /* [L, max(K, W)] scratch */
    float *eq, *ek;      /* [L] out: exp(G_i), exp(G_{L-1} - G_i) (ones without decay) */
    float *diag;         /* [L] scratch */
    float *gt, *bt;      /* [L] out: the gate gradient's terms */
    float Dterm;         /* out */
    float *pack;         /* sgemm packing for products of sizes up to max(L, K, W) */
    const float *D;      /* [L,L] the decay mask of Pm (seqk__chunk_decay_mask), or NULL:
                            formed here for dP */
    float *Y;            /* [K,W] scratch, or NULL: the step dS <- a dS + Qg^T dO as the
                            scan primitive's step on Y = Qg^T dO (the linear-state engine,
                            whose chunk-parallel backward scans the same Y over chunks: the
                            same bits), else one product onto a dS (DeltaNet) */
    bool no_ds;          /* leave dS as it is (the caller has every chunk's dS) */
    bool no_gates;       /* no gate gradient wanted: gt, bt, Dterm not formed */
    const float *S0t;    /* [W,K] S0 transposed, or NULL: read in place by dQ's state
                            term instead of S0 packed transposed (a caller that needs
                            S0^T for more products forms it once, or keeps its states
                            transposed) */
    bool tr;             /* the states transposed: S0t [W,K] given (S0 may be NULL: not
                            read) and dS is dS^T [W,K] on entry and on return. The
                            products take the same values (the packing transposes
                            instead: the same bits), the gate gradient's <S0, dS>
                            sums in the order of this layout */
} seqk__chunk_bwd;

void seqk__chunk_backward_stage(const seqk__chunk_view *cv, int64_t K, int64_t W, const float *Pm,
                                const float *dO, int64_t ldo, const float *va, int64_t ldva,
                                const float *S0, float *dS, seqk__chunk_bwd *b);

/* dld[i * ld] = sum_{i' >= i} gt_i' + sum_{j < i} bt_j + Dterm for i < L (a
 * reverse scan on the scan primitive and a forward sum); gt is overwritten. */
void seqk__chunk_gate_grad(int64_t L, float *gt, const float *bt, float Dterm, float *dld,
                           int64_t ld);

/* The longest sequence of P: T, or the longest of P->cu (host) when set. */
int64_t seqk__lin_longest(const seqk__lin *P);

/* The backward's chunk-state checkpoints for nch chunks of E floats each:
 * every state kept (*R = 1, *nckpt = max(nch, 1)) when they fit in
 * full_bytes, else one before every R-th chunk (*R the smallest >= 2 with
 * R^2 >= nch, *nckpt = ceil(nch / R)). */
void seqk__chunk_ckpt_plan(int64_t nch, int64_t E, size_t full_bytes, int64_t *R,
                           int64_t *nckpt);

/* The staged drivers (the linear-state forward and backward, DeltaNet's
 * split forward) walk the global chunk index in windows: at most fit chunks
 * (limit / per_chunk bytes, at least 1 and at least min_chunks), the nchunks
 * in nwin windows of wch (equal but the last). */
typedef struct {
    int64_t fit, nwin, wch;
} seqk__chunk_windows;

static inline seqk__chunk_windows seqk__chunk_windows_plan(int64_t nchunks, size_t limit,
                                                           size_t per_chunk, int64_t min_chunks)
{
    seqk__chunk_windows w;
    w.fit = limit / per_chunk > 1 ? (int64_t)(limit / per_chunk) : 1;
    if (w.fit < min_chunks) w.fit = min_chunks;
    w.nwin = nchunks > w.fit ? (nchunks + w.fit - 1) / w.fit : 1;
    w.wch = nchunks > 0 ? (nchunks + w.nwin - 1) / w.nwin : 0;
    return w;
}

/* The staged drivers number the chunks of all sequences globally, sequence
 * n's from first[n] (first[N] = their count): the sequence of chunk c,
 * first[n] <= c < first[n+1] (a binary search). */
static inline int64_t seqk__chunk_seq(const int64_t *first, int64_t N, int64_t c)
{
    int64_t lo = 0, hi = N - 1;
    while (lo < hi) {
        const int64_t mid = (lo + hi + 1) / 2;
        if (first[mid] <= c) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

#endif
