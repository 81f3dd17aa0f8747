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
 * a_{t+1}: the scan primitive's reverse mode (seqk__scan_rows with
 * SEQK__SCAN_REVERSE, whose row r uses the coefficient of row r) over rows
 * 0..L-2 of a segment with the coefficient rows shifted by one (a + E), the
 * last row lam_{L-1} = C gy + carry formed first, the carry into the
 * previous segment a_0 lam_0.
 *
 * Memory (DESIGN 3.2: h is never stored for every token): a work item is
 * (sequence, block of channels of one group); it walks its channels in
 * tiles of CW = 16 (one 16-lane vector with AVX-512, two 8-lane ones
 * otherwise: ssm/sscan_vec.h's SS_VL; state transposed [Nst][16] as in the
 * forward). Per tile: (1) a forward pass over the sequence keeps the state
 * at the start of every segment of S tokens (S = 16..64, S Nst 16 floats
 * about 32 KiB), in a per-thread buffer of ceil(len / S) states; (2) the
 * segments are walked in reverse: a = exp(dt A) and b = dt B u of the
 * segment formed, h recomputed by seqk__scan_rows from the segment's start
 * state ((S+1) rows: h_{t-1} and h_t are both at hand), lam run backwards,
 * then one pass over the segment's tokens reduces every gradient.
 *
 * Determinism: everything a tile sums runs in token order, the 16 channels'
 * contributions to dB_t, dC_t are summed by one fixed tree (hsum_rows).
 * With p_j = lam[j] (dt[j] u[j]) (dB) or gy[j] h[j] (dC) for channel d0 + j
 * of the tile (0 past its width): AVX-512 (one 16-lane vector) rounds each
 * p_j to a float c_j and sums
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
#include "../scan/scan.h"
#include "../gpu/gpu.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

enum {
    CW = 16,            /* channels per tile (one 16-lane or two 8-lane vectors) */
    MAX_NV = CW / SS_VL, /* vectors per tile at most: 1 (AVX-512) or 2 */
    MAX_NST = SEQK__SSCAN_MAX_NST, /* as the forward */
    SEG_FLOATS = 8192,  /* about S * Nst * CW floats per segment buffer */
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

/* Per-thread scratch in floats for sequences of at most Lmax tokens. */
static size_t scratch_floats(int64_t Nst, int64_t Lmax)
{
    const int64_t E = Nst * CW, S = seg_tokens(Nst), nseg = (Lmax + S - 1) / S;
    const int64_t nr = (Nst + SS_VL - 1) / SS_VL * SS_VL; /* rows of xb, xc */
    return (size_t)((nseg > 0 ? nseg : 1) * E /* segment start states */
                    + S * E + (S + 1) * E + S * E /* a, h, lam */
                    + 2 * E                       /* carry, dA */
                    + 2 * nr * SS_VL              /* the lanes of dB_t, dC_t */
                    + 3 * S * CW                  /* dt, u, gy per token */
                    + 6 * CW + 2 * E              /* constants */
                    + 32 * 16);                   /* alignment of the pieces */
}

static float *take(float **p, int64_t n)
{
    float *r = (float *)(((uintptr_t)*p + 63) & ~(uintptr_t)63);
    *p = r + n;
    return r;
}

/* ---- one tile ----------------------------------------------------------------------- */

typedef struct {
    int64_t n, d0, w, g, r0, len;
    int nv, lanes[MAX_NV];
} tile;

typedef struct {
    float *ck, *a, *h, *lam, *mu, *dA, *xb, *xc, *tdt, *tu, *tg;
    float *At, *Ap, *bias, *skip;
} tbufs;

/* a = exp(dt A), b = dt B u for tokens [r, r + L) of the tile into a and h
 * (row stride E each), and the steps and inputs per token into tdt, tu. */
SS_INLINE void fill_ab(const ssb *P, const tile *I, const tbufs *S, int64_t r, int64_t L,
                       float *a, float *b, const int NV)
{
    const int64_t Ns = P->Nst, W = SS_VL * NV, E = Ns * W;
    for (int64_t i = 0; i < L; i++) {
        const int64_t o = (r + i) * P->D + I->d0;
        const float *Bt = P->Bm + ((r + i) * P->G + I->g) * Ns;
        vf dl[MAX_NV], du[MAX_NV];
        for (int v = 0; v < NV; v++) {
            vf x = v_add(v_load_n(P->dt + o + SS_VL * v, I->lanes[v]),
                         v_load(S->bias + SS_VL * v));
            if (P->softplus) x = v_softplus(x);
            const vf uv = v_load_n(P->u + o + SS_VL * v, I->lanes[v]);
            dl[v] = x, du[v] = v_mul(x, uv);
            v_store(S->tdt + i * W + SS_VL * v, x);
            v_store(S->tu + i * W + SS_VL * v, uv);
        }
        float *ai = a + i * E, *bi = b + i * E;
        for (int64_t s = 0; s < Ns; s++) {
            const vf bs = v_bcast(Bt + s);
            for (int v = 0; v < NV; v++) {
                const int64_t e = s * W + SS_VL * v;
                v_store(ai + e, v_exp2(v_mul(dl[v], v_load(S->At + e))));
                v_store(bi + e, v_mul(du[v], bs));
            }
        }
    }
}

/* out[s] = the sum of the SS_VL lanes of x[s] (x: [n][SS_VL], 64-byte
 * aligned, zero rows after row n up to a multiple of SS_VL rows), for
 * s < n; one fixed tree per row (the order does not depend on anything
 * else), written out in the scalar loops:
 *   16 lanes: (((x0 + x8) + (x4 + x12)) + ((x1 + x9) + (x5 + x13)))
 *             + (((x2 + x10) + (x6 + x14)) + ((x3 + x11) + (x7 + x15)))
 *   8 lanes:  ((x0 + x1) + (x2 + x3)) + ((x4 + x5) + (x6 + x7)) */
#if SS_VL == 16
static inline void hsum_rows(const float *x, int64_t n, float *out)
{
    /* 16 rows at a time: (1) each row's halves added, two rows per vector;
     * (2) the quarters of that, four rows per vector (row k of four in
     * 128-bit block k); (3) two pairwise steps inside the blocks leave row
     * 4m + k in lane 4k + m; (4) a permutation puts row s in lane s */
    const __m512i idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    for (int64_t s = 0; s < n; s += 16) {
        const float *p = x + s * 16;
        __m512 t[8], q[4];
        for (int k = 0; k < 8; k++) {
            const __m512 a = _mm512_load_ps(p + 32 * k), b = _mm512_load_ps(p + 32 * k + 16);
            t[k] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xee));
        }
        for (int k = 0; k < 4; k++)
            q[k] = _mm512_add_ps(_mm512_shuffle_f32x4(t[2 * k], t[2 * k + 1], 0x88),
                                 _mm512_shuffle_f32x4(t[2 * k], t[2 * k + 1], 0xdd));
        /* in each 128-bit block: [a0 + a1, a2 + a3, b0 + b1, b2 + b3] */
        const __m512 h0 = _mm512_add_ps(_mm512_shuffle_ps(q[0], q[1], 0x88),
                                        _mm512_shuffle_ps(q[0], q[1], 0xdd));
        const __m512 h1 = _mm512_add_ps(_mm512_shuffle_ps(q[2], q[3], 0x88),
                                        _mm512_shuffle_ps(q[2], q[3], 0xdd));
        const __m512 r = _mm512_add_ps(_mm512_shuffle_ps(h0, h1, 0x88),
                                       _mm512_shuffle_ps(h0, h1, 0xdd));
        const __m512 y = _mm512_permutexvar_ps(idx, r);
        const int64_t m = n - s;
        if (m >= 16) _mm512_storeu_ps(out + s, y);
        else _mm512_mask_storeu_ps(out + s, (__mmask16)((1u << m) - 1u), y);
    }
}
#else
static inline void hsum_rows(const float *x, int64_t n, float *out)
{
    int64_t s = 0;
#ifdef __AVX2__
    for (; s + 8 <= n; s += 8) {
        const float *p = x + s * 8;
        const __m256 t0 = _mm256_hadd_ps(_mm256_load_ps(p), _mm256_load_ps(p + 8));
        const __m256 t1 = _mm256_hadd_ps(_mm256_load_ps(p + 16), _mm256_load_ps(p + 24));
        const __m256 t2 = _mm256_hadd_ps(_mm256_load_ps(p + 32), _mm256_load_ps(p + 40));
        const __m256 t3 = _mm256_hadd_ps(_mm256_load_ps(p + 48), _mm256_load_ps(p + 56));
        const __m256 q0 = _mm256_hadd_ps(t0, t1), q1 = _mm256_hadd_ps(t2, t3);
        _mm256_storeu_ps(out + s, _mm256_add_ps(_mm256_permute2f128_ps(q0, q1, 0x20),
                                                _mm256_permute2f128_ps(q0, q1, 0x31)));
    }
#endif
    for (; s < n; s++) {
        const float *p = x + s * 8;
        out[s] = ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]));
    }
}
#endif

/* The gradients of one segment, tokens [r, r + L), from a, h (L+1 rows:
 * h_{t-1} then h_t), lam; dB, dC rows written (first tile of the block) or
 * added; per-channel outputs written; dA, dDskip, ddt_bias accumulated. */
SS_INLINE void segment_grads(const ssb *P, const tile *I, const tbufs *S, int64_t r, int64_t L,
                             int first, float *pB, float *pC, vf *accD, vf *accb, const int NV)
{
    const int64_t Ns = P->Nst, W = SS_VL * NV, E = Ns * W, GN = P->G * Ns;
    for (int64_t i = 0; i < L; i++) {
        const int64_t row = r + i, o = row * P->D + I->d0;
        const float *Bt = P->Bm + row * GN + I->g * Ns, *Ct = P->Cm + row * GN + I->g * Ns;
        const float *ai = S->a + i * E, *hp = S->h + i * E, *hc = hp + E, *li = S->lam + i * E;
        vf dl[MAX_NV], gy[MAX_NV], dlu[MAX_NV], sA[MAX_NV], sB[MAX_NV], yp[MAX_NV];
        for (int v = 0; v < NV; v++) {
            dl[v] = v_load(S->tdt + i * W + SS_VL * v);
            gy[v] = v_load(S->tg + i * W + SS_VL * v);
            dlu[v] = v_mul(dl[v], v_load(S->tu + i * W + SS_VL * v));
            sA[v] = sB[v] = yp[v] = v_zero();
        }
        for (int64_t s = 0; s < Ns; s++) {
            const vf bs = v_bcast(Bt + s), cs = v_bcast(Ct + s);
            vf xb = v_zero(), xc = v_zero();
            for (int v = 0; v < NV; v++) {
                const int64_t e = s * W + SS_VL * v;
                const vf lam = v_load(li + e), hcur = v_load(hc + e);
                const vf q = v_mul(lam, v_mul(v_load(ai + e), v_load(hp + e)));
                sA[v] = v_fma(v_load(S->Ap + e), q, sA[v]);
                sB[v] = v_fma(bs, lam, sB[v]);
                yp[v] = v_fma(cs, hcur, yp[v]);
                v_store(S->dA + e, v_fma(dl[v], q, v_load(S->dA + e)));
                xb = v_fma(lam, dlu[v], xb);
                xc = v_fma(gy[v], hcur, xc);
            }
            v_store(S->xb + s * SS_VL, xb);
            v_store(S->xc + s * SS_VL, xc);
        }
        float *rb = pB + row * GN + I->g * Ns, *rc = pC + row * GN + I->g * Ns;
        if (first) {
            hsum_rows(S->xb, Ns, rb);
            hsum_rows(S->xc, Ns, rc);
        } else {
            float tb[MAX_NST], tc[MAX_NST];
            hsum_rows(S->xb, Ns, tb);
            hsum_rows(S->xc, Ns, tc);
            for (int64_t s = 0; s < Ns; s++) rb[s] += tb[s], rc[s] += tc[s];
        }
        for (int v = 0; v < NV; v++) {
            const int lanes = I->lanes[v];
            const vf uv = v_load(S->tu + i * W + SS_VL * v), sk = v_load(S->skip + SS_VL * v);
            vf d = v_fma(uv, sB[v], sA[v]);
            if (P->softplus) {
                const vf x =
                    v_add(v_load_n(P->dt + o + SS_VL * v, lanes), v_load(S->bias + SS_VL * v));
                d = v_mul(d, v_sigmoid(x));
            }
            v_store_n(P->ddt + o + SS_VL * v, d, lanes);
            v_store_n(P->du + o + SS_VL * v, v_fma(sk, gy[v], v_mul(dl[v], sB[v])), lanes);
            if (P->z) {
                const vf zv = v_load_n(P->z + o + SS_VL * v, lanes), sg = v_sigmoid(zv);
                const vf one = v_set1(1.0f);
                const vf dsilu = v_mul(sg, v_fma(zv, v_sub(one, sg), one));
                const vf dyv = v_load_n(P->dy + o + SS_VL * v, lanes);
                v_store_n(P->dz + o + SS_VL * v, v_mul(v_mul(dyv, v_fma(sk, uv, yp[v])), dsilu),
                          lanes);
            }
            accD[v] = v_fma(gy[v], uv, accD[v]);
            accb[v] = v_add(accb[v], d);
        }
    }
}

SS_INLINE void walk_tile(const ssb *P, const tile *I, const tbufs *S, int first, float *pB,
                         float *pC, const int NV)
{
    const int64_t Ns = P->Nst, W = SS_VL * NV, E = Ns * W, seg = P->seg;
    const int64_t nseg = (I->len + seg - 1) / seg, GN = P->G * Ns;
    /* (1) the segment start states: ck[k] = h before segment k */
    for (int64_t k = 0; k + 1 < nseg; k++) {
        float *carry = S->ck + (k + 1) * E;
        memcpy(carry, S->ck + k * E, (size_t)E * sizeof(float));
        fill_ab(P, I, S, I->r0 + k * seg, seg, S->a, S->h, NV);
        seqk__scan_rows(seg, E, 1, 0, S->a, E, S->h, E, NULL, 0, carry);
    }
    /* (2) the segments in reverse; mu = dL/dh before the segment walked last */
    vf accD[MAX_NV], accb[MAX_NV];
    for (int v = 0; v < NV; v++) accD[v] = accb[v] = v_zero();
    for (int64_t k = nseg - 1; k >= 0; k--) {
        const int64_t r = I->r0 + k * seg, L = I->len - k * seg < seg ? I->len - k * seg : seg;
        float *h1 = S->h + E;
        fill_ab(P, I, S, r, L, S->a, h1, NV);
        memcpy(S->h, S->ck + k * E, (size_t)E * sizeof(float));
        seqk__scan_rows(L, E, 1, 0, S->a, E, h1, E, h1, E, S->ck + k * E);
        /* gy and lam's inputs C_t gy_t */
        for (int64_t i = 0; i < L; i++) {
            const int64_t o = (r + i) * P->D + I->d0;
            const float *Ct = P->Cm + (r + i) * GN + I->g * Ns;
            vf gy[MAX_NV];
            for (int v = 0; v < NV; v++) {
                gy[v] = v_load_n(P->dy + o + SS_VL * v, I->lanes[v]);
                if (P->z)
                    gy[v] = v_mul(gy[v], v_silu(v_load_n(P->z + o + SS_VL * v, I->lanes[v])));
                v_store(S->tg + i * W + SS_VL * v, gy[v]);
            }
            float *li = S->lam + i * E;
            for (int64_t s = 0; s < Ns; s++) {
                const vf cs = v_bcast(Ct + s);
                for (int v = 0; v < NV; v++) v_store(li + s * W + SS_VL * v, v_mul(cs, gy[v]));
            }
        }
        /* lam: the last row takes the carry, then the reverse scan with a shifted */
        float *last = S->lam + (L - 1) * E;
        for (int64_t e = 0; e < E; e += SS_VL) {
            const vf x = v_add(v_load(last + e), v_load(S->mu + e));
            v_store(last + e, x);
            v_store(S->mu + e, x);
        }
        if (L > 1)
            seqk__scan_rows(L - 1, E, 1, SEQK__SCAN_REVERSE, S->a + E, E, S->lam, E, S->lam, E,
                            S->mu);
        segment_grads(P, I, S, r, L, first, pB, pC, accD, accb, NV);
        for (int64_t e = 0; e < E; e += SS_VL) /* mu = a_0 lam_0: dL/dh before the segment */
            v_store(S->mu + e, v_mul(v_load(S->a + e), v_load(S->mu + e)));
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
    const int64_t Ns = P->Nst, W = (int64_t)SS_VL * I.nv, E = Ns * W, S = P->seg;
    const int64_t nx = (Ns + SS_VL - 1) / SS_VL * SS_VL * SS_VL; /* floats of xb, xc */
    const int64_t nseg = (I.len + S - 1) / S;
    float *p = scratch;
    tbufs B;
    B.ck = take(&p, (nseg > 0 ? nseg : 1) * E);
    B.a = take(&p, S * E), B.h = take(&p, (S + 1) * E), B.lam = take(&p, S * E);
    B.mu = take(&p, E), B.dA = take(&p, E);
    B.xb = take(&p, nx), B.xc = take(&p, nx);
    B.tdt = take(&p, S * W), B.tu = take(&p, S * W), B.tg = take(&p, S * W);
    B.At = take(&p, E), B.Ap = take(&p, E), B.bias = take(&p, W), B.skip = take(&p, W);
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
        B.bias[j] = j < w && P->dt_bias ? P->dt_bias[d0 + j] : 0.0f;
        B.skip[j] = j < w && P->Dskip ? P->Dskip[d0 + j] : 0.0f;
    }
    /* hsum_rows reads whole groups of SS_VL rows: the pad rows stay zero */
    memset(B.xb, 0, (size_t)nx * sizeof(float));
    memset(B.xc, 0, (size_t)nx * sizeof(float));
    if (I.nv == 2) walk_tile(P, &I, &B, first, pB, pC, MAX_NV); /* 8 lanes only */
    else walk_tile(P, &I, &B, first, pB, pC, 1);
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
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int64_t i = 0; i < nbc; i++) {
            float sb_ = P.pB[i], sc_ = P.pC[i];
            for (int64_t b = 1; b < P.nb; b++) sb_ += P.pB[b * nbc + i], sc_ += P.pC[b * nbc + i];
            dBm[i] = sb_, dCm[i] = sc_;
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
