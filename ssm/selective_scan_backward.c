/*
 * ssm/selective_scan_backward.c -- the backward (training) of the Mamba
 * selective scan (seqk_selective_scan_backward, DESIGN 3.2 and 3.7): CPU
 * backend, validation, dispatch (gpu/selective_scan_backward.cu is the CUDA
 * one).
 *
 * The forward, per channel d (group g) and state index n, with
 * x_t = dt_raw_t[d] + dt_bias[d], dt_t = softplus(x_t) (or x_t):
 *
 *   a_t[n]  = exp(dt_t A[d,n])
 *   h_t[n]  = a_t[n] h_{t-1}[n] + dt_t B_t[g,n] u_t[d]
 *   yp_t    = sum_n C_t[g,n] h_t[n] + Dskip[d] u_t[d]
 *   y_t     = yp_t silu(z_t[d])                     (y_t = yp_t without z)
 *
 * and L a function of y and of the final state h_T. The chain rule, with
 * dy_t = dL/dy_t and s = sigmoid:
 *
 *   gy_t = dL/dyp_t = dy_t silu(z_t);  dz_t = dy_t yp_t silu'(z_t),
 *          silu'(z) = s(z) + z s(z) (1 - s(z)) = s(z) (1 + z (1 - s(z)))
 *   lam_t = dL/dh_t (total, through y_t and through h_{t+1}):
 *          lam_t[n] = C_t[n] gy_t + a_{t+1}[n] lam_{t+1}[n],  lam_T = C_T gy_T + dL/dh_T
 *   dL/dh_{t-1} through h_t only = a_t lam_t, so dstate_in = a_1 lam_1;
 *   h_t depends on dt_t through a_t and dt_t B u:
 *          d(dt_t) = sum_n lam_t[n] (A[n] a_t[n] h_{t-1}[n] + B_t[n] u_t)
 *          ddt_raw_t = d(dt_t) s(x_t) (softplus' = sigmoid), ddt_bias = sum_t ddt_raw_t
 *   dA[n]   = sum_t lam_t[n] dt_t a_t[n] h_{t-1}[n]
 *   dB_t[n] = sum_{d in g} lam_t[d,n] dt_t[d] u_t[d]     dC_t[n] = sum_{d in g} gy_t[d] h_t[d,n]
 *   du_t    = dt_t sum_n B_t[n] lam_t[n] + Dskip gy_t    dDskip = sum_t gy_t u_t
 *
 * lam is a reverse first-order recurrence whose coefficient at token t is
 * a_{t+1}, h a forward one. Both run in registers, one step being ss_step
 * (ssm/sscan_vec.h: h = a h + b as one FMA, the scan primitive's
 * arithmetic, shared with the forward's recurrent mode), not through
 * seqk__scan_rows, though it is the same first-order recurrence: the
 * primitive walks rows in memory, and here every (token, state row) needs
 * its h_{t-1}, h_t, a_t and lam_t at once for six gradient terms. Called per
 * segment (as this file did: a and dt B u formed into arrays, h scanned
 * into a third, C gy into a fourth and lam scanned there, then a pass
 * reading them all back and updating dA in memory per token), the
 * primitive cost that many array round trips per state element and token:
 * that form was load/store-bound and took about twice as long (issue #16).
 * Inside a segment lam_t = a_{t+1} lam_{t+1} + C_t gy_t is one FMA; at a
 * segment's last token lam = C gy + mu, mu = a_0 lam_0 of the segment
 * after it rounded once (it is also dstate_in at the sequence's start), so
 * the segment length S is part of lam's bits.
 *
 * Memory (DESIGN 3.2: h is never stored for every token): a work item is
 * (sequence, block of channels of one group); it walks its channels in
 * tiles of CW = 16 (one 16-lane vector with AVX-512, two 8-lane ones
 * otherwise: ssm/sscan_vec.h's SS_VL; state transposed [Nst][16] as in the
 * forward). Per tile: pass 1 walks the sequence forward and keeps the state
 * at the start of every segment of S tokens (S = clamp(8192 / (16 Nst), 16,
 * 64): 32 at Nst = 16), in a per-thread buffer of ceil(len / S) states;
 * pass 2 walks the segments in reverse. A segment's per-token, per-channel
 * inputs are formed once ([S][16] each: dt after the softplus, dt u; in pass
 * 2 also u, gy = dy silu(z), dy, silu'(z), s(x)); then both passes go over
 * the state rows in register blocks of NB = 4 (h and lam of different rows
 * are independent; only the per-token sums over n couple them):
 *   pass 1, per block: h through the segment in registers; only the next
 *     start state is stored;
 *   pass 2, per block: (i) h forward from the segment's start state, a_t
 *     and h_{t-1} kept ([S+1][4][16] floats each, 8.25 KiB at S = 32: L1);
 *     (ii) backward over the tokens, lam in registers, and per token the
 *     block's terms: dA (in registers across the segment), the sums over n
 *     of A lam a h_{t-1}, of B lam and of C h (for d(dt), du, dz: [S][16]
 *     arrays continued from block to block), and the channel products of
 *     dB_t and dC_t folded into one vector of partial sums per block
 *     (hsum2, hsum2b: [S][Nst/4][16]);
 *   then one pass over the segment's tokens writes the dB, dC rows
 *   (hsum_finish), ddt, du, dz, and adds to dDskip, ddt_bias.
 * Per state element and token that leaves two stores (a_t, h_{t-1}) and
 * about one more per four (the per-token sums, the partial sums); the rest
 * stays in registers. A tile's rows are D floats apart (a new page every
 * token or two, where the hardware prefetchers stop): each segment's rows
 * are prefetched while the segment before them is walked, and the rows of
 * ddt, du, dz, written once, are stored past the cache when they are whole
 * 64-byte lines (a full tile, aligned rows: no read for ownership of lines
 * that are not cached; fenced at the end of the tile). The sums of the
 * blocks' dB, dC partials run a cache line of elements at a time.
 *
 * Determinism: every sum has one order, fixed by the sizes. In a tile: dA
 * sums the tokens in reverse (t = len-1 down to 0, as lam runs); dDskip
 * and ddt_bias sum them in token order; the sums over n (in d(dt), du, and
 * yp for dz) run n = 0, 1, ... in order; the 16 channels' contributions to
 * dB_t, dC_t are summed by one fixed tree (hsum2, hsum2b, hsum_finish). With
 * p_j = lam[j] (dt[j] u[j]) (dB) or gy[j] h[j] (dC) for channel d0 + j of
 * the tile (0 past its width): AVX-512 (one 16-lane vector) rounds each p_j
 * to a float c_j and sums
 *   (((c0 + c8) + (c4 + c12)) + ((c1 + c9) + (c5 + c13)))
 *     + (((c2 + c10) + (c6 + c14)) + ((c3 + c11) + (c7 + c15)));
 * 8 lanes (AVX2 or plain C: two vectors) form e_j = round(round(p_j) +
 * p_{j+8}) by the chain of two FMAs (p_{j+8} unrounded), then sum
 *   ((e0 + e1) + (e2 + e3)) + ((e4 + e5) + (e6 + e7)).
 * The two builds' dB, dC thus differ in their last bits, each fixed; every
 * other output is bit-identical between them. Then the
 * tiles of a block add into the block's rows in channel order, and the
 * blocks' rows (partials, when a group has more than one block) and the
 * sequences' dA, dDskip, ddt_bias (partials, when N > 1) are summed in
 * block / sequence order after the parallel loop. The block size depends on
 * the sizes only (not on the thread count), so the bits do not either.
 */
#include "selective_scan.h"
#include "../core/dtype.h"
#include "sscan_vec.h"
#include "../gpu/gpu.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

enum {
    CW = 16,            /* channels per tile (one 16-lane or two 8-lane vectors) */
    MAX_NV = CW / SS_VL, /* vectors per tile at most: 1 (AVX-512) or 2 */
    NB = 4,             /* state rows per register block (a partial-sum vector's four) */
    QG = SS_VL / NB,    /* partial-sum vectors per group of SS_VL rows (hsum_finish) */
    SEG_FLOATS = 8192,  /* about S * Nst * CW floats per segment */
    MIN_SEG = 16,
    MAX_SEG = 64,
    MIN_ITEMS = 64      /* work items wanted (blocks per group grow up to this) */
};

static const char FN[] = "seqk_selective_scan_backward";

/* ---- the problem ------------------------------------------------------------------ */

typedef struct {
    int64_t B, T, D, Nst, G, N, rows, pg; /* pg = D / G */
    const int32_t *cu;                    /* host cu_seqlens or NULL */
    int softplus;
    const float *u, *dt, *A, *Bm, *Cm, *Dskip, *z, *dt_bias, *s_in, *dy, *ds_out;
    float *du, *ddt, *dz, *ds_in;
    int64_t nb, cb;   /* blocks per group, channels per block (a multiple of CW) */
    int64_t seg;      /* tokens per segment */
    float *pB, *pC;   /* [nb][rows*G*Nst]: block b's share of dB, dC (nb == 1: dBm, dCm) */
    float *pA;        /* [N][D*Nst] per sequence dA (N == 1: dA) */
    float *pD, *pbias; /* [N][D] per sequence dDskip, ddt_bias (N == 1: the outputs; NULL:
                        * not wanted) */
} ssb;

/* Blocks per group for N sequences: enough work items for MIN_ITEMS threads
 * where the group has the channels; depends on the sizes only. */
static void block_plan(int64_t N, int64_t G, int64_t pg, int64_t *nb, int64_t *cb)
{
    const int64_t tiles = (pg + CW - 1) / CW;
    int64_t want = (MIN_ITEMS + N * G - 1) / (N * G);
    if (want > tiles) want = tiles;
    if (want < 1) want = 1;
    const int64_t tiles_per_block = (tiles + want - 1) / want;
    *cb = tiles_per_block * CW;
    *nb = (pg + *cb - 1) / *cb;
}

static int64_t seg_tokens(int64_t Nst)
{
    const int64_t s = SEG_FLOATS / (Nst * CW);
    return s < MIN_SEG ? MIN_SEG : s > MAX_SEG ? MAX_SEG : s;
}

/* Partial-sum vectors per token for dB_t (and for dC_t): one per block of NB
 * state rows, padded with zero vectors to whole groups of SS_VL rows. */
static int64_t q_vectors(int64_t Nst)
{
    return ((Nst + NB - 1) / NB + QG - 1) / QG * QG;
}

/* Per-thread scratch in floats for sequences of at most Lmax tokens. */
static size_t scratch_floats(int64_t Nst, int64_t Lmax)
{
    const int64_t E = Nst * CW, S = seg_tokens(Nst), nseg = (Lmax + S - 1) / S;
    return (size_t)((nseg > 0 ? nseg : 1) * E       /* segment start states */
                    + 2 * (S + 1) * NB * CW         /* a, h of one register block */
                    + 2 * E                         /* carry, dA */
                    + 2 * S * q_vectors(Nst) * SS_VL /* partial sums of dB_t, dC_t */
                    + 10 * S * CW                   /* per token and channel */
                    + 6 * CW + 2 * E                /* constants */
                    + 32 * 16);                     /* alignment of the pieces */
}

static float *take(float **p, int64_t n)
{
    float *r = (float *)(((uintptr_t)*p + 63) & ~(uintptr_t)63);
    *p = r + n;
    return r;
}

/* ---- the sums over a tile's channels (dB_t, dC_t) ------------------------------------ */

/* Row s of dB_t (dC_t) is the sum of the SS_VL lanes of one vector x_s, by
 * one fixed tree:
 *   16 lanes: (((x0 + x8) + (x4 + x12)) + ((x1 + x9) + (x5 + x13)))
 *             + (((x2 + x10) + (x6 + x14)) + ((x3 + x11) + (x7 + x15)))
 *   8 lanes:  ((x0 + x1) + (x2 + x3)) + ((x4 + x5) + (x6 + x7))
 * in two stages: the rows of one register block (four rows, 4k .. 4k + 3)
 * are folded into one vector of partial sums while they are in registers
 * (the tree's first two levels: hsum2 of row pairs, then hsum2b of those;
 * the same operations as one 16-row pass, four rows at a time), then
 * hsum_finish turns the partial vectors of SS_VL rows into the row sums.
 * Lanes: 16: hsum2 puts x's halves added in 256-bit half 0 and y's in half
 * 1, hsum2b quarters of that, row k of four in 128-bit block k
 * (lanes 4k .. 4k + 3); 8 lanes: _mm256_hadd_ps both times, row k's two
 * partial sums in lanes k and 4 + k. */
#if SS_VL == 16
SS_INLINE vf hsum2(vf x, vf y)
{
    return _mm512_add_ps(_mm512_shuffle_f32x4(x, y, 0x44), _mm512_shuffle_f32x4(x, y, 0xee));
}
SS_INLINE vf hsum2b(vf x, vf y)
{
    return _mm512_add_ps(_mm512_shuffle_f32x4(x, y, 0x88), _mm512_shuffle_f32x4(x, y, 0xdd));
}
/* The first min(n, 16) row sums of groups of four partial vectors (rows 16m
 * .. 16m + 15 from q + 64 m) into out (add: added to out). */
static inline void hsum_finish(const float *q, int64_t n, float *out, int add)
{
    /* two pairwise steps inside the 128-bit blocks leave row 4m + k in lane
     * 4k + m; a permutation puts row s in lane s */
    const __m512i idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    for (int64_t s = 0; s < n; s += 16) {
        const float *p = q + 4 * s;
        const __m512 q0 = _mm512_load_ps(p), q1 = _mm512_load_ps(p + 16);
        const __m512 q2 = _mm512_load_ps(p + 32), q3 = _mm512_load_ps(p + 48);
        /* in each 128-bit block: [a0 + a1, a2 + a3, b0 + b1, b2 + b3] */
        const __m512 h0 = _mm512_add_ps(_mm512_shuffle_ps(q0, q1, 0x88),
                                        _mm512_shuffle_ps(q0, q1, 0xdd));
        const __m512 h1 = _mm512_add_ps(_mm512_shuffle_ps(q2, q3, 0x88),
                                        _mm512_shuffle_ps(q2, q3, 0xdd));
        const __m512 r = _mm512_add_ps(_mm512_shuffle_ps(h0, h1, 0x88),
                                       _mm512_shuffle_ps(h0, h1, 0xdd));
        __m512 y = _mm512_permutexvar_ps(idx, r);
        const int lanes = n - s >= 16 ? 16 : (int)(n - s);
        if (add) y = _mm512_add_ps(v_load_n(out + s, lanes), y);
        v_store_n(out + s, y, lanes);
    }
}
#else
#ifdef __AVX2__
SS_INLINE vf hsum2(vf x, vf y) { return _mm256_hadd_ps(x, y); }
#else
SS_INLINE vf hsum2(vf x, vf y) /* _mm256_hadd_ps's lanes */
{
    vf r;
    for (int k = 0; k < 2; k++) {
        r.l[4 * k + 0] = x.l[4 * k + 0] + x.l[4 * k + 1];
        r.l[4 * k + 1] = x.l[4 * k + 2] + x.l[4 * k + 3];
        r.l[4 * k + 2] = y.l[4 * k + 0] + y.l[4 * k + 1];
        r.l[4 * k + 3] = y.l[4 * k + 2] + y.l[4 * k + 3];
    }
    return r;
}
#endif
SS_INLINE vf hsum2b(vf x, vf y) { return hsum2(x, y); }
/* The first min(n, 8) row sums of pairs of partial vectors (rows 8m .. 8m + 7
 * from q + 16 m) into out (add: added to out). */
static inline void hsum_finish(const float *q, int64_t n, float *out, int add)
{
    for (int64_t s = 0; s < n; s += 8) {
        const float *p = q + 2 * s;
        vf y;
#ifdef __AVX2__
        const __m256 q0 = _mm256_load_ps(p), q1 = _mm256_load_ps(p + 8);
        y = _mm256_add_ps(_mm256_permute2f128_ps(q0, q1, 0x20),
                          _mm256_permute2f128_ps(q0, q1, 0x31));
#else
        for (int k = 0; k < 4; k++) {
            y.l[k] = p[k] + p[4 + k];
            y.l[4 + k] = p[8 + k] + p[12 + k];
        }
#endif
        const int lanes = n - s >= 8 ? 8 : (int)(n - s);
        if (add) y = v_add(v_load_n(out + s, lanes), y);
        v_store_n(out + s, y, lanes);
    }
}
#endif

/* ---- one tile ----------------------------------------------------------------------- */

typedef struct {
    int64_t n, d0, w, g, r0, len;
    int nv, lanes[MAX_NV];
    int nt; /* the rows of ddt, du, dz are whole 64-byte lines: stored past the cache */
} tile;

typedef struct {
    float *ck;            /* [nseg][Nst][W]: the state before each segment */
    float *a, *h;         /* [S + 1][NB][W]: a_t, and h before token t, of one block */
    float *mu, *dA;       /* [Nst][W]: dL/dh before the segment walked last; dA */
    float *qb, *qc;       /* [S][nq][SS_VL]: partial sums of dB_t, dC_t (hsum2b) */
    float *tdt, *tdu, *tu, *tg, *tdy, *tds, *tsx; /* [S][W]: dt, dt u, u, gy, dy (with z),
                                                   * silu'(z), s(x) */
    float *sA, *sB, *yp;  /* [S][W]: sum_n of A lam a h_{t-1}, of B lam, of C h */
    float *At, *Ap, *bias, *skip, *amin, *amax; /* A log2 e, A: [Nst][W]; the rest [W] */
    int64_t nq;           /* q_vectors(Nst) */
} tbufs;

/* Row `row` of the tile's inputs (pass 1: dt, u, B; pass 2, all: also z, dy,
 * C, and the rows of ddt, du, dz for writing unless they are streamed),
 * when inside the sequence: the rows
 * of a tile are D floats apart, a new page every few tokens, where the
 * hardware prefetchers stop; a segment is prefetched while the one before
 * it is walked. */
SS_INLINE void prefetch_row(const ssb *P, const tile *I, int64_t row, int all)
{
    if (row < I->r0 || row >= I->r0 + I->len) return;
    const int64_t o = row * P->D + I->d0, bc = (row * P->G + I->g) * P->Nst;
    seqk__prefetch_rows(P->dt + o, I->w, false);
    seqk__prefetch_rows(P->u + o, I->w, false);
    seqk__prefetch_rows(P->Bm + bc, P->Nst, false);
    if (!all) return;
    if (P->z) seqk__prefetch_rows(P->z + o, I->w, false);
    seqk__prefetch_rows(P->dy + o, I->w, false);
    seqk__prefetch_rows(P->Cm + bc, P->Nst, false);
    if (I->nt) return;
    seqk__prefetch_rows(P->ddt + o, I->w, true);
    seqk__prefetch_rows(P->du + o, I->w, true);
    if (P->z) seqk__prefetch_rows(P->dz + o, I->w, true);
}

/* Tokens [r, r + L) of the tile, per token and channel: dt (after the
 * softplus) and dt u into tdt, tdu; with full (the reverse walk) also u,
 * gy = dy silu(z) (dy without z), with z dy and silu'(z) = s(z) (1 + z (1 -
 * s(z))), and s(x) (softplus' = sigmoid) into tu, tg, tdy, tds, tsx.
 * Returns whether every dt A of these tokens is inside exp2's range
 * (v_exp2_safe). */
SS_INLINE int segment_inputs(const ssb *P, const tile *I, const tbufs *S, int64_t r, int64_t L,
                             int full, const int NV)
{
    const int64_t W = SS_VL * NV;
    int safe = 1;
    for (int64_t i = 0; i < L; i++) {
        const int64_t o = (r + i) * P->D + I->d0;
        if (full) prefetch_row(P, I, r - P->seg + i, 1); /* the segment walked next */
        else prefetch_row(P, I, r + P->seg + i, 0);
        for (int v = 0; v < NV; v++) {
            const int lanes = I->lanes[v];
            const int64_t e = i * W + SS_VL * v;
            const vf x = v_add(v_load_n(P->dt + o + SS_VL * v, lanes),
                               v_load(S->bias + SS_VL * v));
            const vf dl = P->softplus ? v_softplus(x) : x;
            const vf uv = v_load_n(P->u + o + SS_VL * v, lanes);
            v_store(S->tdt + e, dl);
            v_store(S->tdu + e, v_mul(dl, uv));
            safe &= v_exp2_safe(dl, v_load(S->amin + SS_VL * v), v_load(S->amax + SS_VL * v));
            if (!full) continue;
            v_store(S->tu + e, uv);
            if (P->softplus) v_store(S->tsx + e, v_sigmoid(x));
            vf gy = v_load_n(P->dy + o + SS_VL * v, lanes);
            if (P->z) {
                const vf zv = v_load_n(P->z + o + SS_VL * v, lanes), one = v_set1(1.0f);
                vf sg;
                v_store(S->tdy + e, gy);
                gy = v_mul(gy, v_silu_sigmoid(zv, &sg));
                v_store(S->tds + e, v_mul(sg, v_fma(zv, v_sub(one, sg), one)));
            }
            v_store(S->tg + e, gy);
        }
    }
    return safe;
}

/* h through the tokens [r, r + L) for state rows [s0, s0 + nr) (nr <= NB),
 * from hin ([Nst][W]), in registers: h[j] holds the state after the
 * segment on return. With KEEP (pass 2) a_t = exp(dt A) and h_{t-1} of
 * every token also go to S->a, S->h (row i at i * NB W); pass 1 keeps
 * nothing. */
SS_INLINE void walk_h(const ssb *P, const tile *I, const tbufs *S, int64_t r, int64_t L,
                      const float *hin, int64_t s0, const int nr, const int CLAMP,
                      const int NV, const int KEEP, vf h[NB][MAX_NV])
{
    const int64_t W = SS_VL * NV, GN = P->G * P->Nst, BW = NB * W;
    const float *Bt = P->Bm + r * GN + I->g * P->Nst + s0;
    vf At[NB][MAX_NV];
    for (int j = 0; j < nr; j++)
        for (int v = 0; v < NV; v++) {
            At[j][v] = v_load(S->At + (s0 + j) * W + SS_VL * v);
            h[j][v] = v_load(hin + (s0 + j) * W + SS_VL * v);
        }
    for (int64_t i = 0; i < L; i++) {
        vf dl[MAX_NV], du[MAX_NV];
        for (int v = 0; v < NV; v++) {
            dl[v] = v_load(S->tdt + i * W + SS_VL * v);
            du[v] = v_load(S->tdu + i * W + SS_VL * v);
        }
        for (int j = 0; j < nr; j++) {
            const vf bs = v_bcast(Bt + i * GN + j);
            for (int v = 0; v < NV; v++) {
                const vf a = ss_decay(dl[v], At[j][v], CLAMP);
                if (KEEP) {
                    v_store(S->a + i * BW + j * W + SS_VL * v, a);
                    v_store(S->h + i * BW + j * W + SS_VL * v, h[j][v]);
                }
                h[j][v] = ss_step(a, h[j][v], v_mul(du[v], bs));
            }
        }
    }
}

/* Pass 1 for state rows [s0, s0 + nr): h through tokens [r, r + L) from
 * hin to hout ([Nst][W] each). */
SS_INLINE void block_forward(const ssb *P, const tile *I, const tbufs *S, int64_t r, int64_t L,
                             const float *hin, float *hout, int64_t s0, const int nr,
                             const int CLAMP, const int NV)
{
    const int64_t W = SS_VL * NV;
    vf h[NB][MAX_NV];
    walk_h(P, I, S, r, L, hin, s0, nr, CLAMP, NV, 0, h);
    for (int j = 0; j < nr; j++)
        for (int v = 0; v < NV; v++) v_store(hout + (s0 + j) * W + SS_VL * v, h[j][v]);
}

/* Pass 2 for state rows [s0, s0 + nr) of the segment of tokens [r, r + L)
 * starting from state hin: (1) forward, a_t = exp(dt A) and h kept in
 * S->a, S->h (h_{t-1} in row t, the last h_t in row L); (2) backward, lam
 * in registers (from the carry mu), and per token the rows' terms: the
 * per-token sums sA, sB, yp (first block: started, else continued), dB_t's
 * and dC_t's products folded by hsum2, hsum2b into qb, qc; dA accumulated; mu =
 * a_0 lam_0 left for the segment before. */
SS_INLINE void block_segment(const ssb *P, const tile *I, const tbufs *S, int64_t r, int64_t L,
                             const float *hin, int64_t s0, const int nr, const int CLAMP,
                             const int NV)
{
    const int64_t W = SS_VL * NV, GN = P->G * P->Nst, BW = NB * W;
    const float *Bt = P->Bm + r * GN + I->g * P->Nst + s0;
    const float *Ct = P->Cm + r * GN + I->g * P->Nst + s0;
    vf x0[NB][MAX_NV], x1[NB][MAX_NV], x2[NB][MAX_NV];
    /* (1) x1 = h, a_t and h_{t-1} kept */
    walk_h(P, I, S, r, L, hin, s0, nr, CLAMP, NV, 1, x1);
    for (int j = 0; j < nr; j++)
        for (int v = 0; v < NV; v++) v_store(S->h + L * BW + j * W + SS_VL * v, x1[j][v]);
    /* (2) x0 = lam (the last token's: C gy + mu, as 1 * mu + C gy), x1 = A,
     * x2 = dA; an = a_{t+1} (1 at the last token) */
    vf an[NB][MAX_NV];
    for (int j = 0; j < nr; j++)
        for (int v = 0; v < NV; v++) {
            const int64_t e = (s0 + j) * W + SS_VL * v;
            x0[j][v] = v_load(S->mu + e);
            x1[j][v] = v_load(S->Ap + e);
            x2[j][v] = v_load(S->dA + e);
            an[j][v] = v_set1(1.0f);
        }
    const int first = s0 == 0;
    float *qb = S->qb + s0 / NB * SS_VL, *qc = S->qc + s0 / NB * SS_VL;
    for (int64_t i = L - 1; i >= 0; i--) {
        const float *ai = S->a + i * BW, *hi = S->h + i * BW;
        vf dl[MAX_NV], gy[MAX_NV], dlu[MAX_NV], sA[MAX_NV], sB[MAX_NV], yp[MAX_NV];
        for (int v = 0; v < NV; v++) {
            const int64_t e = i * W + SS_VL * v;
            dl[v] = v_load(S->tdt + e), gy[v] = v_load(S->tg + e), dlu[v] = v_load(S->tdu + e);
            sA[v] = first ? v_zero() : v_load(S->sA + e);
            sB[v] = first ? v_zero() : v_load(S->sB + e);
            yp[v] = first ? v_zero() : v_load(S->yp + e);
        }
        vf pb = v_zero(), pc = v_zero(), tb = v_zero(), tc = v_zero(), qbv = v_zero(),
           qcv = v_zero();
        for (int j = 0; j < NB; j++) {
            vf xb = v_zero(), xc = v_zero();
            if (j < nr) {
                const vf bs = v_bcast(Bt + i * GN + j), cs = v_bcast(Ct + i * GN + j);
                for (int v = 0; v < NV; v++) {
                    const int64_t e = j * W + SS_VL * v;
                    const vf a = v_load(ai + e), hp = v_load(hi + e), hc = v_load(hi + BW + e);
                    const vf lam = ss_step(an[j][v], x0[j][v], v_mul(cs, gy[v]));
                    const vf q = v_mul(lam, v_mul(a, hp));
                    sA[v] = v_fma(x1[j][v], q, sA[v]);
                    sB[v] = v_fma(bs, lam, sB[v]);
                    yp[v] = v_fma(cs, hc, yp[v]);
                    x2[j][v] = v_fma(dl[v], q, x2[j][v]);
                    xb = v_fma(lam, dlu[v], xb);
                    xc = v_fma(gy[v], hc, xc);
                    x0[j][v] = lam, an[j][v] = a;
                }
            }
            /* the sums' first levels as the rows come (hsum2 of pairs, then hsum2b) */
            if (j % 2 == 0) {
                pb = xb, pc = xc;
            } else if (j == 1) {
                tb = hsum2(pb, xb), tc = hsum2(pc, xc);
            } else {
                qbv = hsum2b(tb, hsum2(pb, xb)), qcv = hsum2b(tc, hsum2(pc, xc));
            }
        }
        for (int v = 0; v < NV; v++) {
            const int64_t e = i * W + SS_VL * v;
            v_store(S->sA + e, sA[v]), v_store(S->sB + e, sB[v]), v_store(S->yp + e, yp[v]);
        }
        v_store(qb + i * S->nq * SS_VL, qbv);
        v_store(qc + i * S->nq * SS_VL, qcv);
    }
    for (int j = 0; j < nr; j++)
        for (int v = 0; v < NV; v++) {
            const int64_t e = (s0 + j) * W + SS_VL * v;
            v_store(S->dA + e, x2[j][v]);
            v_store(S->mu + e, v_mul(an[j][v], x0[j][v]));
        }
}

/* Row p of an output written once and not read here (ddt, du, dz): past
 * the cache when the tile's rows are whole lines (no read for ownership of
 * lines that are not in the cache: a tile's rows are D floats apart). */
SS_INLINE void store_out(const tile *I, float *p, vf x, int v)
{
    if (I->nt) v_stream(p, x);
    else v_store_n(p, x, I->lanes[v]);
}

/* The segment's per-token outputs, tokens [r, r + L) in order: dB, dC rows
 * written (first tile of the block) or added, ddt, du, dz written, dDskip,
 * ddt_bias accumulated. */
SS_INLINE void segment_outputs(const ssb *P, const tile *I, const tbufs *S, int64_t r,
                               int64_t L, int first, float *pB, float *pC, vf *accD, vf *accb,
                               const int NV)
{
    const int64_t Ns = P->Nst, W = SS_VL * NV, GN = P->G * Ns;
    for (int64_t i = 0; i < L; i++) {
        const int64_t row = r + i, o = row * P->D + I->d0;
        hsum_finish(S->qb + i * S->nq * SS_VL, Ns, pB + row * GN + I->g * Ns, !first);
        hsum_finish(S->qc + i * S->nq * SS_VL, Ns, pC + row * GN + I->g * Ns, !first);
        for (int v = 0; v < NV; v++) {
            const int64_t e = i * W + SS_VL * v;
            const vf uv = v_load(S->tu + e), gy = v_load(S->tg + e);
            const vf sk = v_load(S->skip + SS_VL * v);
            const vf sB = v_load(S->sB + e);
            vf d = v_fma(uv, sB, v_load(S->sA + e));
            if (P->softplus) d = v_mul(d, v_load(S->tsx + e));
            store_out(I, P->ddt + o + SS_VL * v, d, v);
            store_out(I, P->du + o + SS_VL * v, v_fma(sk, gy, v_mul(v_load(S->tdt + e), sB)), v);
            if (P->z) {
                const vf yp = v_fma(sk, uv, v_load(S->yp + e));
                store_out(I, P->dz + o + SS_VL * v,
                          v_mul(v_mul(v_load(S->tdy + e), yp), v_load(S->tds + e)), v);
            }
            accD[v] = v_fma(gy, uv, accD[v]);
            accb[v] = v_add(accb[v], d);
        }
    }
}

/* The blocks of NB state rows of a segment: pass 1 (hout) or 2 (hout NULL);
 * the full blocks without exp2's clamp where safe, the last partial one
 * with it (its bits are the same where no clamp is needed). */
SS_INLINE void segment_blocks(const ssb *P, const tile *I, const tbufs *S, int64_t r, int64_t L,
                              const float *hin, float *hout, int safe, const int NV)
{
    const int64_t Ns = P->Nst;
    int64_t s0 = 0;
    for (; s0 + NB <= Ns; s0 += NB) {
        if (hout && safe) block_forward(P, I, S, r, L, hin, hout, s0, NB, 0, NV);
        else if (hout) block_forward(P, I, S, r, L, hin, hout, s0, NB, 1, NV);
        else if (safe) block_segment(P, I, S, r, L, hin, s0, NB, 0, NV);
        else block_segment(P, I, S, r, L, hin, s0, NB, 1, NV);
    }
    if (s0 < Ns) {
        const int nr = (int)(Ns - s0);
        if (hout) block_forward(P, I, S, r, L, hin, hout, s0, nr, 1, NV);
        else block_segment(P, I, S, r, L, hin, s0, nr, 1, NV);
    }
}

SS_INLINE void walk_tile(const ssb *P, const tile *I, const tbufs *S, int first, float *pB,
                         float *pC, const int NV)
{
    const int64_t Ns = P->Nst, W = SS_VL * NV, E = Ns * W, seg = P->seg;
    const int64_t nseg = (I->len + seg - 1) / seg;
    /* (1) the segment start states: ck[k] = h before segment k */
    for (int64_t k = 0; k + 1 < nseg; k++) {
        const int64_t r = I->r0 + k * seg;
        const int safe = segment_inputs(P, I, S, r, seg, 0, NV);
        segment_blocks(P, I, S, r, seg, S->ck + k * E, S->ck + (k + 1) * E, safe, NV);
    }
    /* (2) the segments in reverse; mu = dL/dh before the segment walked last */
    vf accD[MAX_NV], accb[MAX_NV];
    for (int v = 0; v < NV; v++) accD[v] = accb[v] = v_zero();
    for (int64_t k = nseg - 1; k >= 0; k--) {
        const int64_t r = I->r0 + k * seg, L = I->len - k * seg < seg ? I->len - k * seg : seg;
        const int safe = segment_inputs(P, I, S, r, L, 1, NV);
        segment_blocks(P, I, S, r, L, S->ck + k * E, NULL, safe, NV);
        segment_outputs(P, I, S, r, L, first, pB, pC, accD, accb, NV);
    }
    /* the tile's sums */
    const int64_t d0 = I->d0, n = I->n;
    float *pA = P->pA + n * P->D * Ns;
    for (int64_t j = 0; j < I->w; j++)
        for (int64_t s = 0; s < Ns; s++) pA[(d0 + j) * Ns + s] = S->dA[s * W + j];
    _Alignas(64) float tmp[CW];
    if (P->pD) {
        for (int v = 0; v < NV; v++) v_store(tmp + SS_VL * v, accD[v]);
        for (int64_t j = 0; j < I->w; j++) P->pD[n * P->D + d0 + j] = tmp[j];
    }
    if (P->pbias) {
        for (int v = 0; v < NV; v++) v_store(tmp + SS_VL * v, accb[v]);
        for (int64_t j = 0; j < I->w; j++) P->pbias[n * P->D + d0 + j] = tmp[j];
    }
    if (P->ds_in) {
        float *dst = P->ds_in + (n * P->D + d0) * Ns;
        for (int64_t j = 0; j < I->w; j++)
            for (int64_t s = 0; s < Ns; s++) dst[j * Ns + s] = S->mu[s * W + j];
    }
}

/* Tile [d0, d0 + w) of sequence n; first: the first tile of its block. */
static void run_tile(const ssb *P, int64_t n, int64_t d0, int64_t w, int first, float *pB,
                     float *pC, float *scratch)
{
    tile I;
    I.n = n, I.d0 = d0, I.w = w, I.g = d0 / P->pg;
    I.r0 = P->cu ? P->cu[n] : n * P->T;
    I.len = P->cu ? (int64_t)P->cu[n + 1] - P->cu[n] : P->T;
    I.nv = (int)((w + SS_VL - 1) / SS_VL);
    for (int v = 0; v < MAX_NV; v++) {
        const int64_t l = w - (int64_t)SS_VL * v;
        I.lanes[v] = (int)(l < 0 ? 0 : l > SS_VL ? SS_VL : l);
    }
    /* every row of the tile in ddt, du (and dz) starts a 64-byte line */
    const uintptr_t al = (uintptr_t)(P->ddt + d0) | (uintptr_t)(P->du + d0) |
                         (uintptr_t)(P->dz ? P->dz + d0 : NULL);
    I.nt = w == CW && P->D % 16 == 0 && (al & 63) == 0;
    const int64_t Ns = P->Nst, W = (int64_t)SS_VL * I.nv, E = Ns * W, S = P->seg;
    const int64_t nseg = (I.len + S - 1) / S;
    float *p = scratch;
    tbufs B;
    B.nq = q_vectors(Ns);
    B.ck = take(&p, (nseg > 0 ? nseg : 1) * E);
    B.a = take(&p, (S + 1) * NB * W), B.h = take(&p, (S + 1) * NB * W);
    B.mu = take(&p, E), B.dA = take(&p, E);
    B.qb = take(&p, S * B.nq * SS_VL), B.qc = take(&p, S * B.nq * SS_VL);
    B.tdt = take(&p, S * W), B.tdu = take(&p, S * W), B.tu = take(&p, S * W);
    B.tg = take(&p, S * W), B.tdy = take(&p, S * W), B.tds = take(&p, S * W);
    B.tsx = take(&p, S * W);
    B.sA = take(&p, S * W), B.sB = take(&p, S * W), B.yp = take(&p, S * W);
    B.At = take(&p, E), B.Ap = take(&p, E), B.bias = take(&p, W), B.skip = take(&p, W);
    B.amin = take(&p, W), B.amax = take(&p, W);
    const float log2e = 1.44269504088896341f;
    for (int64_t s = 0; s < Ns; s++)
        for (int64_t j = 0; j < W; j++) {
            const float a = j < w && P->A ? P->A[(d0 + j) * Ns + s] : 0.0f; /* NULL: T = 0 */
            B.Ap[s * W + j] = a, B.At[s * W + j] = a * log2e;
            B.dA[s * W + j] = 0.0f;
            B.ck[s * W + j] = P->s_in && j < w ? P->s_in[(n * P->D + d0 + j) * Ns + s] : 0.0f;
            B.mu[s * W + j] = P->ds_out && j < w ? P->ds_out[(n * P->D + d0 + j) * Ns + s] : 0.0f;
        }
    for (int64_t j = 0; j < W; j++) {
        float lo = B.At[j], hi = B.At[j];
        for (int64_t s = 1; s < Ns; s++) {
            const float x = B.At[s * W + j];
            lo = x < lo ? x : lo;
            hi = x > hi ? x : hi;
        }
        B.amin[j] = lo, B.amax[j] = hi;
        B.bias[j] = j < w && P->dt_bias ? P->dt_bias[d0 + j] : 0.0f;
        B.skip[j] = j < w && P->Dskip ? P->Dskip[d0 + j] : 0.0f;
    }
    /* hsum_finish reads whole groups of QG partial vectors: the pad ones stay zero */
    const int64_t used = (Ns + NB - 1) / NB;
    for (int64_t i = 0; i < S; i++)
        for (int64_t q = used; q < B.nq; q++) {
            v_store(B.qb + (i * B.nq + q) * SS_VL, v_zero());
            v_store(B.qc + (i * B.nq + q) * SS_VL, v_zero());
        }
    if (I.nv == 2) walk_tile(P, &I, &B, first, pB, pC, MAX_NV); /* 8 lanes only */
    else walk_tile(P, &I, &B, first, pB, pC, 1);
    if (I.nt) seqk__stream_fence();
}

/* ---- validation and dispatch -------------------------------------------------------- */

/* The sizes' checks shared with the workspace query. */
static seqk_status check_sizes(const char *fn, seqk_context *ctx, int64_t B, int64_t T,
                               int64_t D, int64_t Nst, int64_t G, int varlen, int64_t N)
{
    seqk_status st;
    if ((st = seqk__check_ctx(fn, ctx))) return st;
    if ((st = seqk__sscan_check_dims(fn, B, T, D, Nst, G))) return st;
    if (varlen && (st = seqk__check_varlen_sizes(fn, B, N, T))) return st;
    const int64_t d_u[3] = {B, T, D}, d_bc[4] = {B, T, G, Nst};
    const int64_t d_s[3] = {varlen ? N : B, D, Nst};
    if ((st = seqk__check_numel(fn, "u [B,T,D]", 3, d_u, sizeof(float), NULL))) return st;
    if ((st = seqk__check_numel(fn, "Bm [B,T,G,Nst]", 4, d_bc, 2 * sizeof(float), NULL)))
        return st;
    if ((st = seqk__check_numel(fn, "state [N,D,Nst]", 3, d_s, 2 * sizeof(float), NULL)))
        return st;
    return SEQK_SUCCESS;
}

/* CPU workspace: per-thread scratch, then the dB / dC partials (nb > 1),
 * then the per-sequence dA, dDskip, ddt_bias (N > 1). */
typedef struct {
    size_t scratch, partB, partA, total; /* bytes */
} cpu_ws;

static cpu_ws cpu_workspace(int64_t B, int64_t T, int64_t D, int64_t Nst, int64_t G, int64_t N,
                            int64_t Lmax, int threads)
{
    int64_t nb, cb;
    block_plan(N, G, D / G, &nb, &cb);
    cpu_ws w;
    w.scratch = seqk__align_up(scratch_floats(Nst, Lmax) * sizeof(float), 256);
    w.partB = nb > 1 ? seqk__align_up((size_t)(2 * nb * B * T * G * Nst) * sizeof(float), 256)
                     : 0;
    w.partA = N > 1 ? seqk__align_up((size_t)(N * D * (Nst + 2)) * sizeof(float), 256) : 0;
    w.total = w.scratch * (size_t)threads + w.partB + w.partA;
    return w;
}

seqk_status seqk_selective_scan_backward_workspace_size(seqk_context *ctx, int64_t B, int64_t T,
                                                        int64_t D, int64_t Nst, int64_t G,
                                                        int64_t N, size_t *bytes)
{
    static const char fn[] = "seqk_selective_scan_backward_workspace_size";
    seqk_status st = check_sizes(fn, ctx, B, T, D, Nst, G, N > 0, N);
    if (!st) st = seqk__check_ptr(fn, "bytes", bytes);
    if (st) return st;
    const int64_t nseq = N > 0 ? N : B;
#if SEQK__HAVE_CUDA
    if (ctx->backend == SEQK_BACKEND_CUDA) {
        *bytes = seqk__cuda_selective_scan_backward_workspace(B, T, D, Nst, G, nseq, NULL);
        return SEQK_SUCCESS;
    }
#endif
    *bytes = cpu_workspace(B, T, D, Nst, G, nseq, T, seqk__threads(ctx)).total;
    return SEQK_SUCCESS;
}

static seqk_status selective_scan_backward_f32(seqk_context *ctx, int64_t B, int64_t T, int64_t D,
                                               int64_t Nst, int64_t G, unsigned flags,
                                               const float *u, const float *dt, const float *A,
                                               const float *Bm, const float *Cm,
                                               const float *Dskip, const float *z,
                                               const float *dt_bias, const float *state_in,
                                               const float *dy, const float *dstate_out, float *du,
                                               float *ddt, float *dA, float *dBm, float *dCm,
                                               float *dDskip, float *dz, float *ddt_bias,
                                               float *dstate_in, const int32_t *cu_seqlens,
                                               int64_t N)
{
    seqk_status st = check_sizes(FN, ctx, B, T, D, Nst, G, cu_seqlens != NULL, N);
    if (st) return st;
    if ((st = seqk__check_flags(FN, flags, SEQK_SSCAN_DT_SOFTPLUS))) return st;
    if (!cu_seqlens) N = B;
    const int64_t rows = B * T;
    if (rows > 0) {
        const struct { const void *p; const char *name; } req[] = {
            {u, "u"},   {dt, "dt"},   {A, "A"},   {Bm, "Bm"},   {Cm, "Cm"},  {dy, "dy"},
            {du, "du"}, {ddt, "ddt"}, {dA, "dA"}, {dBm, "dBm"}, {dCm, "dCm"}};
        for (size_t i = 0; i < sizeof req / sizeof req[0]; i++)
            if ((st = seqk__check_ptr(FN, req[i].name, req[i].p))) return st;
    }
    if (dDskip && !Dskip)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: dDskip=%p given but Dskip is NULL",
                          FN, (void *)dDskip);
    if (z && !dz)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: dz is NULL but z is given", FN);
    if (dz && !z)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: dz=%p given but z is NULL", FN,
                          (void *)dz);
    const size_t yb = (size_t)(rows * D) * sizeof(float),
                 bcb = (size_t)(rows * G * Nst) * sizeof(float),
                 ab = (size_t)(D * Nst) * sizeof(float), db = (size_t)D * sizeof(float),
                 sb = (size_t)(N * D * Nst) * sizeof(float);
    const seqk__arg ins[12] = {{"u", u, yb},         {"dt", dt, yb},
                               {"A", A, ab},         {"Bm", Bm, bcb},
                               {"Cm", Cm, bcb},      {"Dskip", Dskip, db},
                               {"z", z, yb},         {"dt_bias", dt_bias, db},
                               {"state_in", state_in, sb}, {"dy", dy, yb},
                               {"dstate_out", dstate_out, sb}, {"cu_seqlens", cu_seqlens,
                                                                cu_seqlens ? (size_t)(N + 1) * 4 : 0}};
    const seqk__arg outs[9] = {{"du", du, yb},         {"ddt", ddt, yb},
                                {"dA", dA, ab},         {"dBm", dBm, bcb},
                                {"dCm", dCm, bcb},      {"dDskip", dDskip, db},
                                {"dz", dz, yb},         {"ddt_bias", ddt_bias, db},
                                {"dstate_in", dstate_in, sb}};
    if ((st = seqk__check_disjoint(FN, outs, 9, ins, 12))) return st;
    if ((st = seqk__check_backend_built(FN, ctx))) return st;
    /* the gates' values: read on the CPU; not checked on CUDA (see seqk.h) */
    if (ctx->backend == SEQK_BACKEND_CPU && rows > 0 &&
        (st = seqk__check_dt_gates(FN, dt, dt_bias, A, D * Nst, rows, D)))
        return st;
    int32_t *cu_host = NULL;
    if (cu_seqlens && (st = seqk__copy_cu_seqlens(FN, ctx, cu_seqlens, N, B, T, &cu_host)))
        return st;
    if (ctx->backend != SEQK_BACKEND_CPU) {
#if SEQK__HAVE_CUDA
        st = seqk__cuda_selective_scan_backward(
            ctx, B, T, D, Nst, G, flags, u, dt, A, Bm, Cm, Dskip, z, dt_bias, state_in, dy,
            dstate_out, du, ddt, dA, dBm, dCm, dDskip, dz, ddt_bias, dstate_in, cu_seqlens,
            cu_host, N);
#else
        st = SEQK_ERROR_INTERNAL;
#endif
        free(cu_host);
        return st;
    }
    int64_t Lmax = T;
    if (cu_host) {
        Lmax = 0;
        for (int64_t n = 0; n < N; n++)
            if (cu_host[n + 1] - cu_host[n] > Lmax) Lmax = cu_host[n + 1] - cu_host[n];
    }
    const int threads = seqk__threads(ctx);
    const cpu_ws W = cpu_workspace(B, T, D, Nst, G, N, Lmax, threads);
    char *ws = NULL;
    if ((st = seqk__workspace(FN, ctx, W.total, (void **)&ws))) {
        free(cu_host);
        return st;
    }
    ssb P;
    memset(&P, 0, sizeof P);
    P.B = B, P.T = T, P.D = D, P.Nst = Nst, P.G = G, P.N = N, P.rows = rows, P.pg = D / G;
    P.cu = cu_host;
    P.softplus = (flags & SEQK_SSCAN_DT_SOFTPLUS) != 0;
    P.u = u, P.dt = dt, P.A = A, P.Bm = Bm, P.Cm = Cm, P.Dskip = Dskip, P.z = z;
    P.dt_bias = dt_bias, P.s_in = state_in, P.dy = dy, P.ds_out = dstate_out;
    P.du = du, P.ddt = ddt, P.dz = dz, P.ds_in = dstate_in;
    P.seg = seg_tokens(Nst);
    block_plan(N, G, P.pg, &P.nb, &P.cb);
    char *wp = ws + W.scratch * (size_t)threads;
    const int64_t nbc = rows * G * Nst;
    if (P.nb > 1) {
        P.pB = (float *)wp, P.pC = P.pB + P.nb * nbc;
        wp += W.partB;
    } else {
        P.pB = dBm, P.pC = dCm;
    }
    if (rows == 0) { /* no token: empty sums, dstate_in = dstate_out */
        for (int64_t e = 0; dA && e < D * Nst; e++) dA[e] = 0.0f;
        for (int64_t d = 0; d < D; d++) {
            if (dDskip) dDskip[d] = 0.0f;
            if (ddt_bias) ddt_bias[d] = 0.0f;
        }
        for (int64_t e = 0; dstate_in && e < N * D * Nst; e++)
            dstate_in[e] = dstate_out ? dstate_out[e] : 0.0f;
        free(cu_host);
        return SEQK_SUCCESS;
    }
    if (N > 1) {
        P.pA = (float *)wp;
        P.pD = P.pA + N * D * Nst;
        P.pbias = P.pD + N * D;
    } else {
        P.pA = dA, P.pD = dDskip, P.pbias = ddt_bias;
    }
    const int64_t items = N * G * P.nb;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int64_t it = 0; it < items; it++) {
        const int64_t n = it / (G * P.nb), gb = it % (G * P.nb);
        const int64_t g = gb / P.nb, b = gb % P.nb;
        const int64_t c0 = g * P.pg + b * P.cb;
        const int64_t c1 = c0 + P.cb < (g + 1) * P.pg ? c0 + P.cb : (g + 1) * P.pg;
        float *scratch = (float *)(ws + W.scratch * (size_t)seqk__omp_thread());
        const int64_t off = P.nb > 1 ? b * nbc : 0;
        for (int64_t d0 = c0; d0 < c1; d0 += CW)
            run_tile(&P, n, d0, c1 - d0 < CW ? c1 - d0 : CW, d0 == c0, P.pB + off, P.pC + off,
                     scratch);
    }
    /* the fixed-order sums: blocks of a group, sequences */
    if (P.nb > 1) {
        /* per element the blocks in order, 16 elements (a cache line) at a
         * time: the nb rows of one element are nbc floats apart (a power
         * of two at the usual sizes: one cache set), so an element at a
         * time re-read every line of the nb partials 16 times */
        const int64_t nch = (nbc + 15) / 16;
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int64_t c = 0; c < nch; c++) {
            const int64_t i0 = c * 16, m = nbc - i0 < 16 ? nbc - i0 : 16;
            float sb_[16], sc_[16];
            for (int64_t j = 0; j < m; j++) sb_[j] = P.pB[i0 + j], sc_[j] = P.pC[i0 + j];
            for (int64_t b = 1; b < P.nb; b++) {
                const float *xb = P.pB + b * nbc + i0, *xc = P.pC + b * nbc + i0;
                if (m == 16) {
                    for (int j = 0; j < 16; j++) sb_[j] += xb[j], sc_[j] += xc[j];
                } else {
                    for (int64_t j = 0; j < m; j++) sb_[j] += xb[j], sc_[j] += xc[j];
                }
            }
            memcpy(dBm + i0, sb_, (size_t)m * sizeof(float));
            memcpy(dCm + i0, sc_, (size_t)m * sizeof(float));
        }
    }
    if (N > 1) {
        const int64_t DN = D * Nst;
#pragma omp parallel for num_threads(threads) schedule(static)
            for (int64_t e = 0; e < DN; e++) {
                float s = P.pA[e];
                for (int64_t n = 1; n < N; n++) s += P.pA[n * DN + e];
                dA[e] = s;
            }
        for (int64_t d = 0; d < D; d++) {
            float sd = P.pD[d], sbias = P.pbias[d];
            for (int64_t n = 1; n < N; n++) sd += P.pD[n * D + d], sbias += P.pbias[n * D + d];
            if (dDskip) dDskip[d] = sd;
            if (ddt_bias) ddt_bias[d] = sbias;
        }
    }
    free(cu_host);
    return SEQK_SUCCESS;
}

/* ---- dtypes (seqk.h, "Dtypes"): the _ex entry points ---------------------- */

seqk_status seqk_selective_scan_backward_ex(seqk_context *ctx, seqk_dtype dtype, int64_t B,
                                            int64_t T, int64_t D, int64_t Nst, int64_t G,
                                            unsigned flags, const void *u, const float *dt,
                                            const float *A, const void *Bm, const void *Cm,
                                            const float *Dskip, const void *z,
                                            const float *dt_bias, const float *state_in,
                                            const void *dy, const float *dstate_out, void *du,
                                            float *ddt, float *dA, void *dBm, void *dCm,
                                            float *dDskip, void *dz, float *ddt_bias,
                                            float *dstate_in, const int32_t *cu_seqlens, int64_t N)
{
    if (dtype == SEQK_DTYPE_F32)
        return selective_scan_backward_f32(ctx, B, T, D, Nst, G, flags, u, dt, A, Bm, Cm, Dskip,
                                           z, dt_bias, state_in, dy, dstate_out, du, ddt, dA,
                                           dBm, dCm, dDskip, dz, ddt_bias, dstate_in, cu_seqlens,
                                           N);
    const int64_t nu = seqk__dt_numel(B, T, D, 1), nb = seqk__dt_numel(B, T, G, Nst);
    seqk__dt_tensor t[] = {
        {"u", u, nu, SEQK__DT_IN, 0, NULL},
        {"Bm", Bm, nb, SEQK__DT_IN, 0, NULL},
        {"Cm", Cm, nb, SEQK__DT_IN, 0, NULL},
        {"z", z, nu, SEQK__DT_IN, 0, NULL},
        {"dy", dy, nu, SEQK__DT_IN, 0, NULL},
        {"du", du, nu, SEQK__DT_OUT, 0, NULL},
        {"dBm", dBm, nb, SEQK__DT_OUT, 0, NULL},
        {"dCm", dCm, nb, SEQK__DT_OUT, 0, NULL},
        {"dz", dz, nu, SEQK__DT_OUT, 0, NULL}};
    size_t ws = 0;
    const seqk_status qs =
        seqk_selective_scan_backward_workspace_size(ctx, B, T, D, Nst, G, cu_seqlens ? N : 0,
                                                    &ws);
    seqk__dt_call c;
    seqk_status st = seqk__dt_begin(&c, "seqk_selective_scan_backward_ex", ctx, dtype, t, 9,
                                    seqk__dt_ws(qs, ws));
    if (st) return st;
    st = selective_scan_backward_f32(ctx, B, T, D, Nst, G, flags, t[0].f, dt, A, t[1].f, t[2].f,
                                     Dskip, t[3].f, dt_bias, state_in, t[4].f, dstate_out,
                                     t[5].f, ddt, dA, t[6].f, t[7].f, dDskip, t[8].f, ddt_bias,
                                     dstate_in, cu_seqlens, N);
    return seqk__dt_end(&c, st);
}

seqk_status seqk_selective_scan_backward(seqk_context *ctx, int64_t B, int64_t T, int64_t D,
                                         int64_t Nst, int64_t G, unsigned flags, const float *u,
                                         const float *dt, const float *A, const float *Bm,
                                         const float *Cm, const float *Dskip, const float *z,
                                         const float *dt_bias, const float *state_in,
                                         const float *dy, const float *dstate_out, float *du,
                                         float *ddt, float *dA, float *dBm, float *dCm,
                                         float *dDskip, float *dz, float *ddt_bias,
                                         float *dstate_in, const int32_t *cu_seqlens, int64_t N)
{
    return seqk_selective_scan_backward_ex(ctx, SEQK_DTYPE_F32, B, T, D, Nst, G, flags, u, dt, A,
                                           Bm, Cm, Dskip, z, dt_bias, state_in, dy, dstate_out,
                                           du, ddt, dA, dBm, dCm, dDskip, dz, ddt_bias,
                                           dstate_in, cu_seqlens, N);
}
seqk_status seqk_selective_scan_workspace_size_ex(seqk_context *ctx, seqk_dtype dtype,
                                                  seqk_mode mode, int64_t B, int64_t T, int64_t D,
                                                  int64_t Nst, int64_t G, int64_t N, size_t *bytes)
{
    static const char fn[] = "seqk_selective_scan_workspace_size_ex";
    seqk_status st = seqk__dt_check(fn, dtype);
    if (!st) st = seqk_selective_scan_workspace_size(ctx, mode, B, T, D, Nst, G, N, bytes);
    if (st) return st;
    const int64_t nu = seqk__dt_numel(B, T, D, 1), nb = seqk__dt_numel(B, T, G, Nst);
    const int64_t n[] = {nu, nu, nu, nb, nb};
    return seqk__dt_workspace_size(fn, dtype, n, 5, bytes);
}

seqk_status seqk_selective_scan_backward_workspace_size_ex(seqk_context *ctx, seqk_dtype dtype,
                                                           int64_t B, int64_t T, int64_t D,
                                                           int64_t Nst, int64_t G, int64_t N,
                                                           size_t *bytes)
{
    static const char fn[] = "seqk_selective_scan_backward_workspace_size_ex";
    seqk_status st = seqk__dt_check(fn, dtype);
    if (!st) st = seqk_selective_scan_backward_workspace_size(ctx, B, T, D, Nst, G, N, bytes);
    if (st) return st;
    const int64_t nu = seqk__dt_numel(B, T, D, 1), nb = seqk__dt_numel(B, T, G, Nst);
    const int64_t n[] = {nu, nu, nu, nu, nu, nb, nb, nb, nb};
    return seqk__dt_workspace_size(fn, dtype, n, 9, bytes);
}
