/*
 * ssm/titans.c -- the Titans linear memory (DESIGN 3.4), CPU; the validation
 * and dispatch of seqk_titans.
 *
 * Per sequence and head, with M the K x V memory, S its momentum, Mhat the
 * memory the current mini-batch (b tokens) started with, a_t = 1 - alpha_t,
 * q~ = scale q and k~ = k (both L2-normalised first with the flag):
 *
 *   Mhat = M_{t-1} when token t starts a mini-batch (position 0)
 *   Gerr_t = Mhat^T k~_t - v_t                 (the loss's error; grad = k~ Gerr^T)
 *   S_t = eta_t S_{t-1} - theta_t k~_t Gerr_t^T
 *   M_t = a_t M_{t-1} + S_t
 *   o_t = M_t^T q~_t
 *
 * State block per (sequence, head): [M | S | Mhat | pos | 7 reserved]
 * (E = 3 K V + 8 floats, see seqk.h); pos = tokens of the current mini-batch
 * already taken. Mhat is read only when pos != 0, and written = M whenever a
 * call ends at pos = 0.
 *
 * Recurrent mode. Columns are independent (column j of Gerr, S, M and o needs
 * only column j of Mhat, S, M), so each block of VB = 16 state columns runs
 * on its own K x 16 slices of M, S, Mhat (3 K 64 bytes, L1-sized for
 * K <= 128; rows contiguous: rows V floats apart would thrash L1's sets).
 * A work item is (sequence, head, group of columns): all the columns of the
 * head (a share when there are fewer (sequence, head) pairs than threads).
 * Its tokens go in chunks of RC = 32: the chunk's norms and gates are
 * computed once and its q, k, v rows gathered once into contiguous buffers
 * (one head's rows are H K floats apart, a new page every few tokens: one
 * walk per head, not one per block, with the next chunk's rows prefetched a
 * few lines per pass), then every block runs the chunk's tokens, and the
 * outputs are written as whole rows. The slices live in the workspace from
 * the first chunk to the last; a call of fewer than LOCAL_MIN_T tokens with
 * state_out (a decoding step) works in place (rows where they are, slices
 * in state_out, no workspace). Per block and chunk (raw q and k rows; the
 * factors q~ = fq q, k~ = fk k are applied to the K-independent results):
 *
 *   b > 1: inside a mini-batch Mhat is fixed, so x_t = Mhat^T k_t for all
 *     the chunk's tokens of one mini-batch is one register-tiled product
 *     (x_batch), g_t = theta_t fk_t (fk_t x_t - v_t); then one pass per four
 *     tokens applies their updates and read-outs row by row (upd_pass):
 *       S_i = e_t S_i - k_{t,i} g_t;  M_i = a_t M_i + S_i;  y_t += q_{t,i} M_i
 *     (o_t = fq_t y_t). No pass waits for the one before (token t's update
 *     needs only its own g_t), and M, S are loaded and stored once per four
 *     tokens. Mhat = M is copied at each mini-batch start.
 *   b = 1: x_t = M_{t-1}^T k_t needs the update of token t - 1, so, as in
 *     ssm/deltanet.c, that update is deferred into the pass of token t: one
 *     pass per token does, row by row,
 *       S_i = e_{t-1} S_i - k_{t-1,i} gp;  M_i = a_{t-1} M_i + S_i;
 *       y += q_{t-1,i} M_i;  x += k_{t,i} M_i
 *     and a last pass per chunk applies the chunk's last update.
 *
 * 8 K V flops per token either way (counted: 2 each for the momentum
 * update, the memory update, the read-out and Mhat^T k). Positions are
 * written after all items (an item of one head must not overwrite the
 * position another item of the same head has still to read when state_in
 * == state_out).
 *
 * Parallel mode, per mini-batch (or the part of one that a call starts
 * inside or ends inside: a "segment" of L tokens, all in one mini-batch) of
 * one (sequence, head), with M0, S0 the state before it and Q~, K~, V its
 * rows:
 *
 *   lm_t = sum_{r<=t} log eta_r,  lb_t = sum_{r<=t} log a_r   (double; log 0 -> -1e4)
 *   m_t = exp(lm_t),  beta_t = exp(lb_t),  f_t = a_t f_{t-1} + m_t
 *   Gmix_ts = a_t Gmix_{t-1,s} + exp(lm_t - lm_s)  (s < t),  Gmix_tt = 1
 *   Gerr = K~ Mhat - V                                        (one product)
 *   O    = ((Q~ K~^T) .* Mix) Gerr + [diag(beta) Q~ | diag(f) Q~] [M0; S0]
 *          with Mix_ts = -Gmix_ts theta_s (s <= t)
 *   M'   = beta_L M0 + f_L S0 - K~^T diag(theta_s Gmix_{L-1,s}) Gerr
 *   S'   = m_L S0 - K~^T diag(theta_s exp(lm_{L-1} - lm_s)) Gerr
 *
 * which is DESIGN 3.4 with Gmix_ts = sum_{r=s..t} (beta_t/beta_r)(m_r/m_s)
 * unrolled as a row recurrence (every factor in [0, 1]: no division, no
 * exponent above the diagonal, nothing that overflows; an eta or 1 - alpha
 * of 0 gives exact zeros through exp(-1e4 - ...) = 0). At a mini-batch start
 * Mhat = M0; a call that starts inside a mini-batch (pos != 0) finishes it
 * first with the state's Mhat (the same formulas: only Gerr reads Mhat),
 * then whole mini-batches follow. Per segment: seqk__chunk_load (Q~, K~ with
 * the L2 norm, V in place), the gates (f and Gmix's rows on the scan
 * primitive, seqk__scan_rows), P = (Q~ K~^T) .* Mix by the shared chunk
 * stage (seqk__chunk_scores, Mix in place of the decay mask), QQ = [diag(beta) Q~ | diag(f) Q~] and
 * W = -[diag(theta Gmix_{L-1}) K~ | diag(theta m_{L-1}/m) K~]; then ONE pass
 * over the state per segment, block by block of 16 columns (block16: the
 * block's 3 K rows stay in L1 while its three products run):
 *
 *   G = K~ Mhat - V;  O = P G + QQ [M0; S0];  [M; S] = [beta_L M + f_L S; m_L S] + W^T G
 *
 * (the products with G and the state, P G among them, are fused here: one
 * read and one write of the state and of o per mini-batch instead of five
 * passes). The mini-batches
 * of a sequence run in order (Gerr needs the previous mini-batch's end); the
 * work items are (sequence, head), or (sequence, head, block of state
 * columns) when there are fewer pairs than threads (every column of Gerr, O
 * and the state depends only on the same column of the state; P is
 * recomputed per block). The next segment's rows are prefetched during the
 * current one.
 */
#include "../core/gemm.h"
#include "../core/dtype.h"
#include "../core/vmath.h"
#include "../gpu/gpu.h"
#include "../scan/chunk.h"
#include "../scan/scan.h"
#include "titans.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#if defined(__GNUC__)
#define TT_INLINE static inline __attribute__((always_inline))
#else
#define TT_INLINE static inline
#endif

static const char FN[] = "seqk_titans";

enum {
    PAD = SEQK__TITANS_PAD,   /* floats after M, S, Mhat: pos and 7 reserved */
    MAX_MINIBATCH = SEQK__TITANS_MAX_MINIBATCH,
    VB = 16,                  /* state columns per recurrent block (two ymm per row) */
    LOCAL_MIN_T = 8,          /* recurrent calls shorter than this with state_out: in place */
    MIN_VW = 16               /* narrowest column block of the parallel mode's split */
};

/* log x for the cumulative gates: seqk__titans_log_gate (ssm/titans.h). */

/* The problem: the linear-state description (q, k, v, o, sizes, N, host cu,
 * scale, flags SEQK__LIN_L2NORM, chunk = b for seqk__chunk_load; s_in and
 * s_out unused) plus the gates and the Titans state. */
typedef struct {
    seqk__lin lin;
    const float *eta, *theta, *alpha; /* [B*T, H] */
    int64_t b;                        /* mini-batch size */
    int64_t E;                        /* floats per (sequence, head) state block */
    const float *s_in;                /* [N, H, E] or NULL */
    float *s_out;                     /* [N, H, E] or NULL */
} tt_problem;

static size_t rnd8(size_t n) { return (n + 7) / 8 * 8; }

static int64_t state_floats(int64_t K, int64_t V) { return seqk__titans_state_floats(K, V); }

/* The position of (n, h) at the start of the call (validated on the CPU). */
static int64_t pos_in(const tt_problem *D, int64_t n, int64_t h)
{
    if (!D->s_in) return 0;
    const float p = D->s_in[(n * D->lin.H + h) * D->E + 3 * D->lin.K * D->lin.V];
    return p >= 0.0f && p < (float)D->b ? (int64_t)p : 0;
}

/* Rows [0, K) of the columns [0, w) of matrix `mat` (0 M, 1 S, 2 Mhat) of a
 * state block (rows V apart, matrices K V apart) into a slice (rows ld apart,
 * matrices K ld apart); src NULL: zeros. */
static void slice_in(const float *src, int64_t K, int64_t V, int mat, float *dst, int64_t ld,
                     int64_t w)
{
    float *d = dst + mat * K * ld;
    const float *s = src ? src + mat * K * V : NULL;
    for (int64_t i = 0; i < K; i++) {
        if (s) memcpy(d + i * ld, s + i * V, (size_t)w * sizeof(float));
        else memset(d + i * ld, 0, (size_t)w * sizeof(float));
    }
}

static void slice_out(const float *src, int64_t ld, int64_t K, int64_t V, int mat, float *dst,
                      int64_t w)
{
    const float *s = src + mat * K * ld;
    float *d = dst + mat * K * V;
    for (int64_t i = 0; i < K; i++) memcpy(d + i * V, s + i * ld, (size_t)w * sizeof(float));
}

/* After the items: pos and the reserved floats of every (sequence, head)
 * (read from state_in only here, after every item read it: the arrays may be
 * the same). */
static void write_positions(const tt_problem *D)
{
    if (!D->s_out) return;
    const seqk__lin *P = &D->lin;
    const int64_t off = 3 * P->K * P->V;
    for (int64_t n = 0; n < P->N; n++) {
        int64_t r0, len;
        seqk__lin_seq(P, n, &r0, &len);
        for (int64_t h = 0; h < P->H; h++) {
            const int64_t p = (pos_in(D, n, h) + len) % D->b;
            float *dst = D->s_out + (n * P->H + h) * D->E + off;
            dst[0] = (float)p;
            for (int i = 1; i < PAD; i++) dst[i] = 0.0f;
        }
    }
}

/* The register tile of the products (both modes): 6 rows of 16 columns, 12
 * accumulators. */
#ifdef __AVX2__
/* acc[r][0..1] += sum_{p < n} A[r ars + p] B[p ldb + 0..15] for r < R. */
TT_INLINE void mk16(int R, int64_t n, const float *A, int64_t ars, const float *B, int64_t ldb,
                    __m256 acc[][2])
{
    for (int64_t p = 0; p < n; p++) {
        const __m256 b0 = _mm256_loadu_ps(B + p * ldb), b1 = _mm256_loadu_ps(B + p * ldb + 8);
        for (int r = 0; r < R; r++) {
            const __m256 x = _mm256_broadcast_ss(A + r * ars + p);
            acc[r][0] = _mm256_fmadd_ps(x, b0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(x, b1, acc[r][1]);
        }
    }
}

/* call_(n) with the constant n = R in 1..6 (each row count its own copy, so
 * that the accumulators stay in registers). */
#define TT_ROWS_6(call_)         \
    switch (R) {                 \
    case 6: call_(6); break;     \
    case 5: call_(5); break;     \
    case 4: call_(4); break;     \
    case 3: call_(3); break;     \
    case 2: call_(2); break;     \
    default: call_(1); break;    \
    }
#endif

/* ---- recurrent mode ----------------------------------------------------------- */

/* Rows [0, K) of the first w columns of src into dst (rows ld apart; the
 * same block). */
static void copy_rows(int64_t K, int64_t w, const float *src, float *dst, int64_t ld)
{
#ifdef __AVX2__
    if (w == VB) {
        for (int64_t i = 0; i < K; i++) {
            _mm256_storeu_ps(dst + i * ld, _mm256_loadu_ps(src + i * ld));
            _mm256_storeu_ps(dst + i * ld + 8, _mm256_loadu_ps(src + i * ld + 8));
        }
        return;
    }
#endif
    for (int64_t i = 0; i < K; i++) memcpy(dst + i * ld, src + i * ld, (size_t)w * sizeof(float));
}

/* Pass flags. */
enum {
    P_PEND = 1,    /* apply the pending update (ep, ap, kp, gp) and read y = M^T qp */
    P_RD = 2,      /* x = Mhat^T k */
    P_REFRESH = 4, /* Mhat = M (after the update) for x */
    P_WH = 8       /* store Mhat = M (after the update) */
};

/*
 * One pass over a K x w slice (rows ld apart; S at M + K ld, Mhat at
 * M + 2 K ld), row by row:
 *   PEND:  S_i = ep S_i - kp_i gp;  M_i = ap M_i + S_i;  y += qp_i M_i
 *   WH:    Mhat_i = M_i
 *   RD:    x += k_i (REFRESH ? M_i : Mhat_i)
 * AVX2 for w = 16; called with constant flags (pass_dispatch) so that each
 * combination compiles to its own loop.
 */
TT_INLINE void row_pass(int64_t K, int64_t w, float *M, int64_t ld, unsigned f, float ep,
                        float ap, const float *kp, const float *gp, const float *qp, float *y,
                        const float *k, float *x)
{
    const bool pend = f & P_PEND, rd = f & P_RD, refresh = f & P_REFRESH, wh = f & P_WH;
    float *S = M + K * ld, *Hm = M + 2 * K * ld;
#ifdef __AVX2__
    if (w == 16) {
        const __m256 ve = _mm256_set1_ps(ep), va = _mm256_set1_ps(ap);
        __m256 g0 = _mm256_setzero_ps(), g1 = g0, y0 = g0, y1 = g0, x0 = g0, x1 = g0;
        if (pend) g0 = _mm256_loadu_ps(gp), g1 = _mm256_loadu_ps(gp + 8);
        for (int64_t i = 0; i < K; i++) {
            float *mr = M + i * ld;
            __m256 m0 = _mm256_loadu_ps(mr), m1 = _mm256_loadu_ps(mr + 8);
            if (pend) {
                float *sr = S + i * ld;
                const __m256 ki = _mm256_broadcast_ss(kp + i);
                __m256 s0 = _mm256_fnmadd_ps(ki, g0, _mm256_mul_ps(ve, _mm256_loadu_ps(sr)));
                __m256 s1 = _mm256_fnmadd_ps(ki, g1, _mm256_mul_ps(ve, _mm256_loadu_ps(sr + 8)));
                _mm256_storeu_ps(sr, s0), _mm256_storeu_ps(sr + 8, s1);
                m0 = _mm256_fmadd_ps(va, m0, s0), m1 = _mm256_fmadd_ps(va, m1, s1);
                _mm256_storeu_ps(mr, m0), _mm256_storeu_ps(mr + 8, m1);
                const __m256 qi = _mm256_broadcast_ss(qp + i);
                y0 = _mm256_fmadd_ps(qi, m0, y0), y1 = _mm256_fmadd_ps(qi, m1, y1);
            }
            float *hr = Hm + i * ld;
            if (wh) _mm256_storeu_ps(hr, m0), _mm256_storeu_ps(hr + 8, m1);
            if (rd) {
                __m256 h0 = m0, h1 = m1;
                if (!refresh) h0 = _mm256_loadu_ps(hr), h1 = _mm256_loadu_ps(hr + 8);
                const __m256 ki = _mm256_broadcast_ss(k + i);
                x0 = _mm256_fmadd_ps(ki, h0, x0), x1 = _mm256_fmadd_ps(ki, h1, x1);
            }
        }
        if (pend) _mm256_storeu_ps(y, y0), _mm256_storeu_ps(y + 8, y1);
        if (rd) _mm256_storeu_ps(x, x0), _mm256_storeu_ps(x + 8, x1);
        return;
    }
#endif
    for (int64_t j = 0; j < w; j++) {
        if (pend) y[j] = 0.0f;
        if (rd) x[j] = 0.0f;
    }
    for (int64_t i = 0; i < K; i++) {
        float *mr = M + i * ld, *sr = S + i * ld, *hr = Hm + i * ld;
        for (int64_t j = 0; j < w; j++) {
            float m = mr[j];
            if (pend) {
                const float s = ep * sr[j] - kp[i] * gp[j];
                sr[j] = s;
                m = ap * m + s;
                mr[j] = m;
                y[j] += qp[i] * m;
            }
            if (wh) hr[j] = m;
            if (rd) x[j] += k[i] * (refresh ? m : hr[j]);
        }
    }
}

static void pass_dispatch(int64_t K, int64_t w, float *M, int64_t ld, unsigned f, float ep,
                          float ap, const float *kp, const float *gp, const float *qp, float *y,
                          const float *k, float *x)
{
#define TT_CASE(c)                                                        \
    case c:                                                               \
        row_pass(K, w, M, ld, c, ep, ap, kp, gp, qp, y, k, x);            \
        break;
    switch (f) {
        TT_CASE(0) TT_CASE(1) TT_CASE(2) TT_CASE(3) TT_CASE(4) TT_CASE(5) TT_CASE(6) TT_CASE(7)
        TT_CASE(8) TT_CASE(9) TT_CASE(10) TT_CASE(11) TT_CASE(12) TT_CASE(13) TT_CASE(14)
        TT_CASE(15)
    default:
        break;
    }
#undef TT_CASE
}

/*
 * b > 1: inside a mini-batch Mhat does not change, so the errors of the
 * mini-batch's tokens need not wait for the updates before them:
 * x_t = Mhat^T k_t for the chunk's tokens of one mini-batch in one
 * register-tiled product over the Mhat slice (x_batch), then passes that
 * apply the updates of up to UP tokens each and read their outputs
 * (upd_pass). No pass waits for the result of the previous one (the update
 * of token t needs only Gerr_t), and M and S are loaded and stored once per
 * UP tokens. Same flops: 2 K w for x and 6 K w for the update and read-out,
 * per token.
 */

#ifdef __AVX2__
/* Rows j < R (a constant) of X = Hm^T k_j: one register tile. */
TT_INLINE void x_tile(int R, int64_t K, const float *k0, int64_t ldk, const float *Hm,
                      int64_t ld, float *X)
{
    __m256 acc[6][2];
    for (int i = 0; i < R; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    mk16(R, K, k0, ldk, Hm, ld, acc);
    for (int i = 0; i < R; i++) {
        _mm256_storeu_ps(X + i * VB, acc[i][0]);
        _mm256_storeu_ps(X + i * VB + 8, acc[i][1]);
    }
}
#endif

/* X[j][0..w) = Hm^T k_j for the raw keys k_j at k0 + j ldk, j < n. */
static void x_batch(int64_t K, const float *k0, int64_t ldk, int64_t n, const float *Hm,
                    int64_t ld, int64_t w, float *X)
{
#ifdef __AVX2__
    if (w == VB) {
        for (int64_t j0 = 0; j0 < n; j0 += 6) {
            const int R = (int)(n - j0 < 6 ? n - j0 : 6);
#define TT_X(c) x_tile(c, K, k0 + j0 * ldk, ldk, Hm, ld, X + j0 * VB)
            TT_ROWS_6(TT_X)
#undef TT_X
        }
        return;
    }
#endif
    for (int64_t j = 0; j < n; j++) {
        const float *kr = k0 + j * ldk;
        for (int64_t c = 0; c < w; c++) {
            float x = 0.0f;
            for (int64_t i = 0; i < K; i++) x += kr[i] * Hm[i * ld + c];
            X[j * VB + c] = x;
        }
    }
}

enum { UP = 4 }; /* tokens per update pass */

/*
 * One pass over a K x w slice (rows ld apart; S at M + K ld) applying the
 * updates of n (1..UP, a constant) tokens in order, each followed by its
 * read-out:  S_i = e_u S_i - k_{u,i} g_u;  M_i = a_u M_i + S_i;
 * y_u += q_{u,i} M_i  (g [n][VB], y [n][VB]). With AVX2 the per-token
 * factors are read from memory in the loop (operands of the arithmetic, not
 * registers: 16 ymm hold the row, the accumulators and the broadcasts).
 */
TT_INLINE void upd_pass(int n, int64_t K, int64_t w, float *M, int64_t ld, const float *e,
                        const float *a, const float *const *kr, const float *g,
                        const float *const *qr, float *y)
{
    float *S = M + K * ld;
#ifdef __AVX2__
    if (w == VB) {
        float eb[UP][8], ab[UP][8]; /* e_u, a_u broadcast, as memory operands */
        __m256 y0[UP], y1[UP];
        for (int u = 0; u < n; u++) {
            _mm256_storeu_ps(eb[u], _mm256_set1_ps(e[u]));
            _mm256_storeu_ps(ab[u], _mm256_set1_ps(a[u]));
            y0[u] = y1[u] = _mm256_setzero_ps();
        }
        for (int64_t i = 0; i < K; i++) {
            float *mr = M + i * ld, *sr = S + i * ld;
            __m256 m0 = _mm256_loadu_ps(mr), m1 = _mm256_loadu_ps(mr + 8);
            __m256 s0 = _mm256_loadu_ps(sr), s1 = _mm256_loadu_ps(sr + 8);
            for (int u = 0; u < n; u++) {
                const __m256 ve = _mm256_loadu_ps(eb[u]), va = _mm256_loadu_ps(ab[u]);
                const __m256 ki = _mm256_broadcast_ss(kr[u] + i);
                s0 = _mm256_fnmadd_ps(ki, _mm256_loadu_ps(g + u * VB), _mm256_mul_ps(ve, s0));
                s1 = _mm256_fnmadd_ps(ki, _mm256_loadu_ps(g + u * VB + 8), _mm256_mul_ps(ve, s1));
                m0 = _mm256_fmadd_ps(va, m0, s0), m1 = _mm256_fmadd_ps(va, m1, s1);
                const __m256 qi = _mm256_broadcast_ss(qr[u] + i);
                y0[u] = _mm256_fmadd_ps(qi, m0, y0[u]), y1[u] = _mm256_fmadd_ps(qi, m1, y1[u]);
            }
            _mm256_storeu_ps(sr, s0), _mm256_storeu_ps(sr + 8, s1);
            _mm256_storeu_ps(mr, m0), _mm256_storeu_ps(mr + 8, m1);
        }
        for (int u = 0; u < n; u++) {
            _mm256_storeu_ps(y + u * VB, y0[u]);
            _mm256_storeu_ps(y + u * VB + 8, y1[u]);
        }
        return;
    }
#endif
    for (int u = 0; u < n; u++)
        for (int64_t j = 0; j < w; j++) y[u * VB + j] = 0.0f;
    for (int64_t i = 0; i < K; i++) {
        float *mr = M + i * ld, *sr = S + i * ld;
        for (int64_t j = 0; j < w; j++) {
            float m = mr[j], sv = sr[j];
            for (int u = 0; u < n; u++) {
                sv = e[u] * sv - kr[u][i] * g[u * VB + j];
                m = a[u] * m + sv;
                y[u * VB + j] += qr[u][i] * m;
            }
            sr[j] = sv;
            mr[j] = m;
        }
    }
}

/*
 * The recurrent driver. A work item is (sequence, head, group of state
 * columns): all the columns of the head, or a share of them when there are
 * fewer (sequence, head) pairs than threads. Its tokens go in chunks of RC:
 * the chunk's per-token factors and gates are computed once, its q, k, v
 * rows gathered once into contiguous buffers (one head's rows are H K floats
 * apart, a new page every few tokens: walking them once per head instead of
 * once per block of 16 columns, with the next chunk's rows prefetched on the
 * way), and its outputs written as whole rows at the end; in between, every
 * block of VB columns runs the chunk's tokens over its K x VB slices of M, S
 * and Mhat, which are contiguous in the workspace (rows V floats apart
 * would thrash L1's sets) and stay there from the first chunk to the last.
 * A call of fewer than LOCAL_MIN_T tokens with state_out (a decoding step)
 * works in place: rows read where they are, slices in state_out, no
 * workspace.
 */
enum { RC = 32 }; /* tokens per chunk */

/* The next chunk's rows, prefetched a few lines per pass (a burst would
 * stall on the miss buffers): tokens [0, n) from row r of head h, each with
 * its q and k rows (K floats) and its v row on the group's columns (gw
 * floats from g0); the cursor is (token j, array a: 0 q, 1 k, 2 v, float i). */
typedef struct {
    const seqk__lin *P;
    int64_t r, h, n, g0, gw;
    int64_t j, a, i;
    int64_t per_pass; /* lines per call of pf_step */
} rc_prefetch;

static inline void pf_step(rc_prefetch *pf)
{
    const seqk__lin *P = pf->P;
    for (int64_t c = 0; c < pf->per_pass && pf->j < pf->n; c++) {
        const int64_t rh = (pf->r + pf->j) * P->H + pf->h;
        const int64_t len = pf->a < 2 ? P->K : pf->gw;
        const float *row = pf->a == 0   ? P->q + rh * P->K
                           : pf->a == 1 ? P->k + rh * P->K
                                        : P->v + rh * P->V + pf->g0;
        __builtin_prefetch(row + pf->i, 0, 3);
        pf->i += 16;
        if (pf->i >= len) { /* and the row's last float (a row need not start a line) */
            __builtin_prefetch(row + len - 1, 0, 3);
            pf->i = 0;
            if (++pf->a == 3) pf->a = 0, pf->j++;
        }
    }
}

/* A chunk's tokens as the blocks see them: rows of raw q, k (ldqk apart), v
 * and o at the group's first column (ldv, ldo apart); per token the factors
 * fq, fk, eta, a = 1 - alpha and theta. */
typedef struct {
    int64_t n;
    const float *q, *k, *v;
    float *o;
    int64_t ldqk, ldv, ldo;
    float fq[RC], fk[RC], e[RC], a[RC], th[RC];
    rc_prefetch pf;
} rc_chunk;

/* b = 1 over a chunk for one block: x_t = M_{t-1}^T k_t, so token by token,
 * the update of token t - 1 deferred into the pass of token t, and the last
 * one applied at the end of the chunk. */
static void block_online(rc_chunk *ck, int64_t K, int64_t w, int64_t c, float *Mb, int64_t ld)
{
    float x[VB], y[VB], gp[VB] = {0};
    for (int64_t j = 0; j < ck->n; j++) {
        const float *kr = ck->k + j * ck->ldqk, *v = ck->v + j * ck->ldv + c;
        const bool pend = j > 0;
        const unsigned f = P_RD | P_REFRESH | (pend ? P_PEND : 0u);
        pass_dispatch(K, w, Mb, ld, f, pend ? ck->e[j - 1] : 0.0f, pend ? ck->a[j - 1] : 1.0f,
                      pend ? ck->k + (j - 1) * ck->ldqk : NULL, gp,
                      pend ? ck->q + (j - 1) * ck->ldqk : NULL, y, kr, x);
        if (pend) {
            float *o = ck->o + (j - 1) * ck->ldo + c;
            for (int64_t q = 0; q < w; q++) o[q] = ck->fq[j - 1] * y[q];
        }
        const float fk = ck->fk[j], tf = ck->th[j] * fk;
        for (int64_t q = 0; q < w; q++) gp[q] = tf * (fk * x[q] - v[q]);
        pf_step(&ck->pf);
    }
    const int64_t j = ck->n - 1;
    pass_dispatch(K, w, Mb, ld, P_PEND, ck->e[j], ck->a[j], ck->k + j * ck->ldqk, gp,
                  ck->q + j * ck->ldqk, y, NULL, NULL);
    float *o = ck->o + j * ck->ldo + c;
    for (int64_t q = 0; q < w; q++) o[q] = ck->fq[j] * y[q];
}

/* b > 1 over a chunk for one block (columns c.. of the group): per piece of
 * one mini-batch, Mhat = M at its start, x_batch, then upd_pass UP tokens
 * at a time. *pos: the position at the chunk's start, then at its end. */
static void block_minibatch(rc_chunk *ck, int64_t K, int64_t w, int64_t c, int64_t b, float *Mb,
                            int64_t ld, int64_t *pos_io)
{
    float X[RC * VB], Y[UP * VB];
    float *Hm = Mb + 2 * K * ld;
    int64_t pos = *pos_io;
    for (int64_t j0 = 0; j0 < ck->n;) {
        if (pos == 0) copy_rows(K, w, Mb, Hm, ld); /* a mini-batch starts: Mhat = M */
        const int64_t n = b - pos < ck->n - j0 ? b - pos : ck->n - j0;
        x_batch(K, ck->k + j0 * ck->ldqk, ck->ldqk, n, Hm, ld, w, X);
        for (int64_t j = 0; j < n; j++) { /* g = theta fk Gerr, Gerr = fk x - v */
            const float fk = ck->fk[j0 + j], tf = ck->th[j0 + j] * fk;
            const float *v = ck->v + (j0 + j) * ck->ldv + c;
            float *x = X + j * VB;
            for (int64_t q = 0; q < w; q++) x[q] = tf * (fk * x[q] - v[q]);
        }
        for (int64_t j = 0; j < n; j += UP) {
            const int64_t t = j0 + j;
            const int nu = (int)(n - j < UP ? n - j : UP);
            const float *kr[UP], *qr[UP];
            for (int u = 0; u < UP; u++) { /* rows past nu: not read */
                kr[u] = ck->k + (t + (u < nu ? u : 0)) * ck->ldqk;
                qr[u] = ck->q + (t + (u < nu ? u : 0)) * ck->ldqk;
            }
            const float *e = ck->e + t, *a = ck->a + t, *g = X + j * VB;
            switch (nu) {
            case 4: upd_pass(4, K, w, Mb, ld, e, a, kr, g, qr, Y); break;
            case 3: upd_pass(3, K, w, Mb, ld, e, a, kr, g, qr, Y); break;
            case 2: upd_pass(2, K, w, Mb, ld, e, a, kr, g, qr, Y); break;
            default: upd_pass(1, K, w, Mb, ld, e, a, kr, g, qr, Y); break;
            }
            for (int u = 0; u < nu; u++) {
                float *o = ck->o + (t + u) * ck->ldo + c;
                for (int64_t q = 0; q < w; q++) o[q] = ck->fq[t + u] * Y[u * VB + q];
            }
            pf_step(&ck->pf);
        }
        j0 += n;
        pos = (pos + n) % b;
    }
    *pos_io = pos;
}

typedef struct {
    int64_t ngr, gw;  /* column groups per head and their width (a multiple of VB but the last) */
    size_t ws_floats; /* per thread */
} rc_plan;

static rc_plan recurrent_plan(const tt_problem *D, int threads)
{
    const seqk__lin *P = &D->lin;
    rc_plan pl;
    pl.ngr = 1, pl.gw = P->V;
    if (threads > 1 && P->N * P->H < threads && P->V >= 2 * VB) {
        const int64_t ng = (threads + P->N * P->H - 1) / (P->N * P->H);
        int64_t gw = (P->V + ng - 1) / ng;
        gw = (gw + VB - 1) / VB * VB;
        pl.gw = gw;
        pl.ngr = (P->V + gw - 1) / gw;
    }
    /* slices [blocks][3][K][VB], then q, k [RC][K] and v, o [RC][gw] */
    const size_t k = (size_t)P->K, gwp = (size_t)((pl.gw + VB - 1) / VB * VB);
    pl.ws_floats = rnd8(3 * k * gwp) + 2 * rnd8(RC * k) + 2 * rnd8(RC * (size_t)pl.gw);
    return pl;
}

/* Whether the item works in place (rows where they are, slices in
 * state_out) rather than in the workspace. */
static bool in_place(const tt_problem *D, int64_t len) { return D->s_out && len < LOCAL_MIN_T; }

static size_t recurrent_workspace(const tt_problem *D, int threads)
{
    if (D->s_out && D->lin.T < LOCAL_MIN_T) return 0; /* every item in place (len <= T) */
    return recurrent_plan(D, threads).ws_floats * (size_t)threads * sizeof(float);
}

/* One item: tokens of sequence n, head h, state columns [g0, g0 + gw). */
static void recurrent_item(const tt_problem *D, const rc_plan *pl, int64_t n, int64_t h,
                           int64_t g0, int64_t gw, float *ws)
{
    const seqk__lin *P = &D->lin;
    const int64_t H = P->H, K = P->K, V = P->V, b = D->b;
    int64_t r0, len;
    seqk__lin_seq(P, n, &r0, &len);
    int64_t pos = pos_in(D, n, h);
    const float *Sin = D->s_in ? D->s_in + (n * H + h) * D->E + g0 : NULL;
    float *Sout = D->s_out ? D->s_out + (n * H + h) * D->E + g0 : NULL;
    const bool inpl = in_place(D, len);
    const int64_t nblk = (gw + VB - 1) / VB;
    /* block bi's slices: M at sl + bi * bstride, S, Mhat after it, rows ld apart */
    float *sl, *qb = NULL, *kb = NULL, *vb = NULL, *ob = NULL;
    int64_t ld, bstride;
    if (inpl) {
        sl = Sout, ld = V, bstride = VB;
    } else {
        const size_t k = (size_t)K, gwp = (size_t)(nblk * VB);
        sl = ws, ld = VB, bstride = 3 * K * VB;
        qb = ws + rnd8(3 * k * gwp), kb = qb + rnd8(RC * k);
        vb = kb + rnd8(RC * k), ob = vb + rnd8(RC * (size_t)pl->gw);
    }
    for (int64_t bi = 0; bi < nblk; bi++) {
        const int64_t c = bi * VB, w = gw - c < VB ? gw - c : VB;
        float *Mb = sl + bi * bstride;
        if (inpl && Sin == Sout) continue;
        slice_in(Sin ? Sin + c : NULL, K, V, 0, Mb, ld, w);
        slice_in(Sin ? Sin + c : NULL, K, V, 1, Mb, ld, w);
        if (pos != 0) slice_in(Sin + c, K, V, 2, Mb, ld, w);
    }
    rc_chunk ck;
    for (int64_t t0 = 0; t0 < len; t0 += RC) {
        const int64_t nc = len - t0 < RC ? len - t0 : RC, rc = r0 + t0;
        ck.n = nc;
        if (inpl) {
            ck.q = P->q + (rc * H + h) * K, ck.k = P->k + (rc * H + h) * K;
            ck.v = P->v + (rc * H + h) * V + g0, ck.o = P->o + (rc * H + h) * V + g0;
            ck.ldqk = H * K, ck.ldv = ck.ldo = H * V;
        } else {
            for (int64_t j = 0; j < nc; j++) {
                const int64_t rh = (rc + j) * H + h;
                memcpy(qb + j * K, P->q + rh * K, (size_t)K * sizeof(float));
                memcpy(kb + j * K, P->k + rh * K, (size_t)K * sizeof(float));
                memcpy(vb + j * gw, P->v + rh * V + g0, (size_t)gw * sizeof(float));
            }
            ck.q = qb, ck.k = kb, ck.v = vb, ck.o = ob;
            ck.ldqk = K, ck.ldv = ck.ldo = gw;
        }
        for (int64_t j = 0; j < nc; j++) {
            const int64_t rh = (rc + j) * H + h;
            /* q~ = fq q, k~ = fk k: the passes read the raw rows and apply the
             * factors to the K-independent results (o, Gerr) */
            seqk__lin_qk_factors(P, ck.q + j * ck.ldqk, ck.k + j * ck.ldqk, &ck.fq[j], &ck.fk[j]);
            ck.e[j] = D->eta[rh], ck.a[j] = 1.0f - D->alpha[rh], ck.th[j] = D->theta[rh];
        }
        /* the next chunk's rows, a few lines per pass (none in place: a short call) */
        const int64_t nn = len - t0 - nc < RC ? len - t0 - nc : RC;
        const int64_t lines = nn * (2 * ((K + 15) / 16 + 1) + (gw + 15) / 16 + 1);
        const int64_t passes = nblk * (b == 1 ? nc : (nc + UP - 1) / UP + 1);
        ck.pf = (rc_prefetch){P, rc + nc, h, inpl ? 0 : nn, g0, gw, 0, 0, 0,
                              (lines + passes - 1) / passes};
        int64_t pos_end = pos;
        for (int64_t bi = 0; bi < nblk; bi++) {
            const int64_t c = bi * VB, w = gw - c < VB ? gw - c : VB;
            float *Mb = sl + bi * bstride;
            pos_end = pos;
            if (b == 1) block_online(&ck, K, w, c, Mb, ld);
            else block_minibatch(&ck, K, w, c, b, Mb, ld, &pos_end);
        }
        pos = b == 1 ? 0 : pos_end;
        if (!inpl)
            for (int64_t j = 0; j < nc; j++)
                memcpy(P->o + ((rc + j) * H + h) * V + g0, ob + j * gw, (size_t)gw * sizeof(float));
    }
    /* Mhat = M when the call ends at a mini-batch end; the slices out */
    for (int64_t bi = 0; bi < nblk; bi++) {
        const int64_t c = bi * VB, w = gw - c < VB ? gw - c : VB;
        float *Mb = sl + bi * bstride;
        if (pos == 0) copy_rows(K, w, Mb, Mb + 2 * K * ld, ld);
        if (!inpl && Sout)
            for (int mat = 0; mat < 3; mat++) slice_out(Mb, ld, K, V, mat, Sout + c, w);
    }
}

static seqk_status titans_recurrent(seqk_context *ctx, const tt_problem *D)
{
    const seqk__lin *P = &D->lin;
    const int threads = seqk__threads(ctx);
    const rc_plan pl = recurrent_plan(D, threads);
    float *ws = NULL;
    seqk_status st = seqk__workspace(FN, ctx, recurrent_workspace(D, threads), (void **)&ws);
    if (st) return st;
    const int64_t H = P->H;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int64_t item = 0; item < P->N * H * pl.ngr; item++) {
        const int64_t n = item / (H * pl.ngr), h = (item / pl.ngr) % H, gi = item % pl.ngr;
        const int64_t g0 = gi * pl.gw, gw = P->V - g0 < pl.gw ? P->V - g0 : pl.gw;
        float *w = ws ? ws + pl.ws_floats * (size_t)seqk__omp_thread() : NULL;
        recurrent_item(D, &pl, n, h, g0, gw, w);
    }
    write_positions(D);
    return SEQK_SUCCESS;
}

/* ---- parallel mode -------------------------------------------------------------- */

enum {
    CB = 16,  /* state columns per block of the fused pass (two ymm per row) */
    RO = 6,   /* rows of Gerr and O per register tile (12 accumulators) */
    RS = 3    /* state rows per register tile of the update (M and S rows: 12 accumulators) */
};

/* Per-thread scratch: the chunk stages' scratch (L = b; for seqk__chunk_load's
 * Q~, K~), then this file's. */
typedef struct {
    seqk__chunk_scratch cs;
    double *lm;      /* [L] cumulative log eta */
    float *ca;       /* [L] a = 1 - alpha */
    float *cb;       /* [L] beta_t */
    float *cf;       /* [L] f_t */
    float *th;       /* [L] theta */
    float *g;        /* [L] the last row of Gmix */
    float *e;        /* [L] m_t = exp(lm_t) */
    float *wm, *wsv; /* [L] weights of the state update: theta_s Gmix_{L-1,s}, theta_s m_{L-1}/m_s */
    float *Mix;      /* [L,L] Mix on and below the diagonal, zeros above; the scores
                        (Q~ K~^T) .* Mix go to cs.P (seqk__chunk_scores) */
    float *QQ;       /* [L,2K] [diag(beta) Q~ | diag(f) Q~] */
    float *W2;       /* [L,2K] [-diag(wm) K~ | -diag(wsv) K~] */
    float *Gb;       /* [L,CB] Gerr of one block of state columns */
    float *state;    /* [3,K,V] the state slice without state_out */
    float mL, bL, fL; /* m, beta, f at the segment's last token */
} tt_scratch;

static size_t tt_scratch_floats(int64_t L, int64_t K, int64_t V, bool with_state)
{
    const size_t l = (size_t)L, k = (size_t)K, v = (size_t)V;
    return rnd8(seqk__chunk_scratch_floats(L, K, V)) + rnd8(2 * l) + 8 * rnd8(l) + rnd8(l * l) +
           2 * rnd8(2 * l * k) + rnd8(l * CB) +
           (with_state ? rnd8(3 * k * v) : 0);
}

static void tt_scratch_init(tt_scratch *w, float *base, int64_t L, int64_t K, int64_t V,
                            bool with_state)
{
    const size_t l = (size_t)L, k = (size_t)K;
    seqk__chunk_scratch_init(&w->cs, base, L, K, V);
    float *p = base + rnd8(seqk__chunk_scratch_floats(L, K, V));
    w->lm = (double *)p, p += rnd8(2 * l);
    w->ca = p, p += rnd8(l);
    w->cb = p, p += rnd8(l);
    w->cf = p, p += rnd8(l);
    w->th = p, p += rnd8(l);
    w->g = p, p += rnd8(l);
    w->e = p, p += rnd8(l);
    w->wm = p, p += rnd8(l);
    w->wsv = p, p += rnd8(l);
    w->Mix = p, p += rnd8(l * l);
    w->QQ = p, p += rnd8(2 * l * k);
    w->W2 = p, p += rnd8(2 * l * k);
    w->Gb = p, p += rnd8(l * CB);
    w->state = with_state ? p : NULL;
}

static double log_gate(float x) { return seqk__titans_log_gate(x); }

/* out[s] = exp(min(lt - lm[s], 0)) for s in [0, n): one row of
 * exp(lm_t - lm_s) (lm is non-increasing, so the min only guards rounding);
 * the difference is taken in double, the exponential in float. */
void seqk__titans_exp_row(double lt, const double *lm, int64_t n, float *out)
{
    int64_t s = 0;
#ifdef __AVX2__
    const __m256d vlt = _mm256_set1_pd(lt), z = _mm256_setzero_pd();
    for (; s + 8 <= n; s += 8) {
        const __m128 d0 = _mm256_cvtpd_ps(_mm256_min_pd(_mm256_sub_pd(vlt, _mm256_loadu_pd(lm + s)), z));
        const __m128 d1 =
            _mm256_cvtpd_ps(_mm256_min_pd(_mm256_sub_pd(vlt, _mm256_loadu_pd(lm + s + 4)), z));
        _mm256_storeu_ps(out + s, seqk__exp8(_mm256_set_m128(d1, d0)));
    }
    if (s < n) { /* the last n - s < 8: exp8 over a padded copy */
        float d[8], e[8];
        for (int64_t i = 0; i < 8; i++) {
            const double x = s + i < n ? lt - lm[s + i] : 0.0;
            d[i] = (float)(x < 0.0 ? x : 0.0);
        }
        _mm256_storeu_ps(e, seqk__exp8(_mm256_loadu_ps(d)));
        for (int64_t i = 0; s < n; s++, i++) out[s] = e[i];
    }
#endif
    for (; s < n; s++) {
        const double d = lt - lm[s];
        out[s] = expf((float)(d < 0.0 ? d : 0.0));
    }
}

/* The gates of the segment [r0, r0 + L) of head h: beta_t, f_t, Mix (into
 * w->Mix, on and below the diagonal; zeros above), and the state-update weights
 * wm, wsv; mL, bL, fL. The products of eta and of a = 1 - alpha are
 * cumulated in log space (double); the two linear recurrences run on the
 * scan primitive (scan/scan.h):
 *   f_t = a_t f_{t-1} + m_t                      one channel
 *   Gmix_ts = a_t Gmix_{t-1,s} + E_ts            L channels, a_t broadcast,
 *   E_ts = exp(lm_t - lm_s) (s <= t), 0 above    from a zero carry (so
 *                                                Gmix_tt = 1, zeros above) */
static void segment_gates(const tt_problem *D, int64_t r0, int64_t L, int64_t h, tt_scratch *w)
{
    const int64_t H = D->lin.H;
    double am = 0.0, ab = 0.0;
    for (int64_t t = 0; t < L; t++) {
        const int64_t rh = (r0 + t) * H + h;
        const float a = 1.0f - D->alpha[rh];
        am += log_gate(D->eta[rh]);
        ab += log_gate(a);
        w->lm[t] = am;
        w->e[t] = (float)exp(am); /* m_t */
        w->ca[t] = a;
        w->cb[t] = (float)exp(ab);
        w->th[t] = D->theta[rh];
    }
    float f = 0.0f;
    seqk__scan_rows(L, 1, 1, 0, w->ca, 1, w->e, 1, w->cf, 1, &f);
    w->mL = w->e[L - 1], w->bL = w->cb[L - 1], w->fL = f;

    for (int64_t t = 0; t < L; t++) {
        float *row = w->Mix + t * L;
        seqk__titans_exp_row(w->lm[t], w->lm, t, row);
        row[t] = 1.0f;
        memset(row + t + 1, 0, (size_t)(L - t - 1) * sizeof(float));
    }
    for (int64_t s = 0; s < L; s++) w->wsv[s] = w->th[s] * w->Mix[(L - 1) * L + s];
    memset(w->g, 0, (size_t)L * sizeof(float));
    seqk__scan_rows(L, L, L, 0, w->ca, 1, w->Mix, L, w->Mix, L, w->g); /* g: Gmix's last row */
    for (int64_t s = 0; s < L; s++) w->wm[s] = w->th[s] * w->g[s];
    for (int64_t t = 0; t < L; t++) { /* Mix_ts = -theta_s Gmix_ts */
        float *mix = w->Mix + t * L;
        for (int64_t s = 0; s <= t; s++) mix[s] *= -w->th[s];
    }
}

/*
 * The fused pass over one block of state columns (width wc <= CB; M at Mb,
 * S at Mb + K ld, rows ld apart, both at the block's first column; Mh the
 * Mhat the gradients are taken at, same layout; V and O at the block's
 * first column, rows ldv and ldo apart):
 *
 *   (1) G = K~ Mh - V                                   [L, wc]   -> Gb
 *   (2) O = Pm G + QQ [M; S]                             [L, wc]   (row r reads G rows <= r)
 *   (3) M = bL M + fL S + W2_M^T G,  S = mL S + W2_S^T G [K, wc]  (W2 = [W2_M | W2_S] holds
 *                                                                   the minus sign)
 *
 * Every product reads the block's state rows (3 K rows of 64 bytes at
 * CB = 16: 24 KB at K = 128), which stay in L1 from (1) to (3); the
 * mini-batch operands (K~, Pm, QQ, W2) are shared by all the blocks of the
 * segment. One pass over the state per mini-batch.
 */
typedef struct {
    int64_t L, K;
    const float *Kc, *Pm, *QQ, *W2;
    float bL, fL, mL;
} tt_seg;

#ifdef __AVX2__

/* (1) for rows [r0, r0 + R) */
TT_INLINE void gerr_tile(int R, const tt_seg *sg, int64_t r0, const float *Mh, int64_t ld,
                         const float *Vv, int64_t ldv, float *G)
{
    __m256 acc[RO][2];
    for (int r = 0; r < R; r++) {
        const float *vr = Vv + (r0 + r) * ldv;
        acc[r][0] = _mm256_sub_ps(_mm256_setzero_ps(), _mm256_loadu_ps(vr));
        acc[r][1] = _mm256_sub_ps(_mm256_setzero_ps(), _mm256_loadu_ps(vr + 8));
    }
    mk16(R, sg->K, sg->Kc + r0 * sg->K, sg->K, Mh, ld, acc);
    for (int r = 0; r < R; r++) {
        _mm256_storeu_ps(G + (r0 + r) * CB, acc[r][0]);
        _mm256_storeu_ps(G + (r0 + r) * CB + 8, acc[r][1]);
    }
}

/* (2) for rows [r0, r0 + R) */
TT_INLINE void out_tile(int R, const tt_seg *sg, int64_t r0, const float *G, const float *Mb,
                        int64_t ld, float *O, int64_t ldo)
{
    const int64_t L = sg->L, K2 = 2 * sg->K;
    __m256 acc[RO][2];
    for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    const int64_t n = r0 + R < L ? r0 + R : L; /* Pm is zero above the diagonal */
    mk16(R, n, sg->Pm + r0 * L, L, G, CB, acc);
    mk16(R, K2, sg->QQ + r0 * K2, K2, Mb, ld, acc);
    for (int r = 0; r < R; r++) {
        _mm256_storeu_ps(O + (r0 + r) * ldo, acc[r][0]);
        _mm256_storeu_ps(O + (r0 + r) * ldo + 8, acc[r][1]);
    }
}

/* (3) for state rows [i0, i0 + R) of M and of S */
TT_INLINE void update_tile(int R, const tt_seg *sg, int64_t i0, const float *G, float *Mb,
                           int64_t ld)
{
    const int64_t L = sg->L, K = sg->K, K2 = 2 * K;
    float *S = Mb + K * ld;
    const __m256 vb = _mm256_set1_ps(sg->bL), vf = _mm256_set1_ps(sg->fL),
                 vm = _mm256_set1_ps(sg->mL);
    __m256 acc[2 * RS][2];
    for (int r = 0; r < R; r++)
        for (int j = 0; j < 2; j++) {
            const __m256 m = _mm256_loadu_ps(Mb + (i0 + r) * ld + 8 * j);
            const __m256 s = _mm256_loadu_ps(S + (i0 + r) * ld + 8 * j);
            acc[2 * r][j] = _mm256_fmadd_ps(vb, m, _mm256_mul_ps(vf, s));
            acc[2 * r + 1][j] = _mm256_mul_ps(vm, s);
        }
    const float *wm = sg->W2 + i0, *ws = wm + K; /* column i0 of W2_M and of W2_S */
    for (int64_t p = 0; p < L; p++, wm += K2, ws += K2) {
        const __m256 b0 = _mm256_loadu_ps(G + p * CB), b1 = _mm256_loadu_ps(G + p * CB + 8);
        for (int r = 0; r < R; r++) {
            const __m256 x = _mm256_broadcast_ss(wm + r), y = _mm256_broadcast_ss(ws + r);
            acc[2 * r][0] = _mm256_fmadd_ps(x, b0, acc[2 * r][0]);
            acc[2 * r][1] = _mm256_fmadd_ps(x, b1, acc[2 * r][1]);
            acc[2 * r + 1][0] = _mm256_fmadd_ps(y, b0, acc[2 * r + 1][0]);
            acc[2 * r + 1][1] = _mm256_fmadd_ps(y, b1, acc[2 * r + 1][1]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int j = 0; j < 2; j++) {
            _mm256_storeu_ps(Mb + (i0 + r) * ld + 8 * j, acc[2 * r][j]);
            _mm256_storeu_ps(S + (i0 + r) * ld + 8 * j, acc[2 * r + 1][j]);
        }
}

static void block16(const tt_seg *sg, const float *Mh, float *Mb, int64_t ld, const float *Vv,
                    int64_t ldv, float *O, int64_t ldo, float *G)
{
    const int64_t L = sg->L, K = sg->K;
    for (int64_t r0 = 0; r0 < L; r0 += RO) {
        const int R = (int)(L - r0 < RO ? L - r0 : RO);
#define TT_G(n) gerr_tile(n, sg, r0, Mh, ld, Vv, ldv, G)
        TT_ROWS_6(TT_G)
#undef TT_G
    }
    for (int64_t r0 = 0; r0 < L; r0 += RO) {
        const int R = (int)(L - r0 < RO ? L - r0 : RO);
#define TT_O(n) out_tile(n, sg, r0, G, Mb, ld, O, ldo)
        TT_ROWS_6(TT_O)
#undef TT_O
    }
    for (int64_t i0 = 0; i0 < K; i0 += RS) {
        const int R = (int)(K - i0 < RS ? K - i0 : RS);
        switch (R) {
        case 3: update_tile(3, sg, i0, G, Mb, ld); break;
        case 2: update_tile(2, sg, i0, G, Mb, ld); break;
        default: update_tile(1, sg, i0, G, Mb, ld); break;
        }
    }
}
#endif

/* The same pass for any width wc <= CB (the last block of a V that is not
 * a multiple of CB; every block without AVX2). */
static void block_any(const tt_seg *sg, int64_t wc, const float *Mh, float *Mb, int64_t ld,
                      const float *Vv, int64_t ldv, float *O, int64_t ldo, float *G)
{
    const int64_t L = sg->L, K = sg->K, K2 = 2 * K;
    for (int64_t r = 0; r < L; r++)
        for (int64_t j = 0; j < wc; j++) {
            float x = -Vv[r * ldv + j];
            for (int64_t p = 0; p < K; p++) x += sg->Kc[r * K + p] * Mh[p * ld + j];
            G[r * CB + j] = x;
        }
    for (int64_t r = 0; r < L; r++)
        for (int64_t j = 0; j < wc; j++) {
            float y = 0.0f;
            for (int64_t p = 0; p <= r; p++) y += sg->Pm[r * L + p] * G[p * CB + j];
            for (int64_t p = 0; p < K2; p++) y += sg->QQ[r * K2 + p] * Mb[p * ld + j];
            O[r * ldo + j] = y;
        }
    float *S = Mb + K * ld;
    for (int64_t i = 0; i < K; i++)
        for (int64_t j = 0; j < wc; j++) {
            const float m = Mb[i * ld + j], s = S[i * ld + j];
            float am = sg->bL * m + sg->fL * s, as = sg->mL * s;
            for (int64_t p = 0; p < L; p++) {
                am += sg->W2[p * K2 + i] * G[p * CB + j];
                as += sg->W2[p * K2 + K + i] * G[p * CB + j];
            }
            Mb[i * ld + j] = am;
            S[i * ld + j] = as;
        }
}

/*
 * One segment: tokens [r0, r0 + L) of head h, all inside one mini-batch, on
 * the state columns [v0, v0 + vw): M at Mb, S at Mb + K ld (so [M; S] is one
 * 2K x vw matrix with rows ld apart), Mh the Mhat the gradients are taken
 * at (Mb itself at a mini-batch start). Writes o and advances M and S. The
 * next segment's rows (rn, Ln; Ln = 0: none) are prefetched on the
 * way, a share per column block: one head's rows are H K floats apart, a
 * new page every few tokens, where the hardware prefetcher stops.
 */
static void segment(const tt_problem *D, int64_t r0, int64_t L, int64_t h, int64_t v0,
                    int64_t vw, float *Mb, int64_t ld, const float *Mh, int64_t rn, int64_t Ln,
                    tt_scratch *w)
{
    const seqk__lin *P = &D->lin;
    const int64_t K = P->K, V = P->V, H = P->H, K2 = 2 * K;
    seqk__chunk_view cv;
    seqk__chunk_load(P, r0, L, h, &w->cs, &cv);
    segment_gates(D, r0, L, h, w);
    seqk__chunk_scores(&cv, K, w->Mix, w->cs.P, w->cs.pack); /* (Q~ K~^T) .* Mix */
    /* QQ = [diag(beta) Q~ | diag(f) Q~]; W2 = [-diag(wm) K~ | -diag(wsv) K~] */
    for (int64_t i = 0; i < L; i++) {
        const float *qr = cv.Qs + i * K;
        float *d = w->QQ + i * K2;
        const float cb = w->cb[i], cf = w->cf[i];
        for (int64_t j = 0; j < K; j++) {
            d[j] = cb * qr[j];
            d[K + j] = cf * qr[j];
        }
    }
    for (int64_t s = 0; s < L; s++) {
        const float *kr = cv.Kc + s * K;
        float *d = w->W2 + s * K2;
        const float a = -w->wm[s], c = -w->wsv[s];
        for (int64_t j = 0; j < K; j++) {
            d[j] = a * kr[j];
            d[K + j] = c * kr[j];
        }
    }
    const tt_seg sg = {L, K, cv.Kc, w->cs.P, w->QQ, w->W2, w->bL, w->fL, w->mL};
    float *O = P->o + (r0 * H + h) * V + v0;
    const float *Vv = cv.Vv + v0;
    const int64_t ldo = H * V, nblk = (vw + CB - 1) / CB;
    for (int64_t c = 0, bi = 0; c < vw; c += CB, bi++) {
        const int64_t wc = vw - c < CB ? vw - c : CB;
        /* this block's v and o rows (o for writing), then a share of the next segment's rows */
        for (int64_t i = 0; i < L; i++) {
            __builtin_prefetch(Vv + i * cv.ldv + c, 0, 3);
            __builtin_prefetch(O + i * ldo + c, 1, 3);
        }
        for (int64_t i = bi * Ln / nblk; i < (bi + 1) * Ln / nblk; i++) {
            const int64_t rh = (rn + i) * H + h;
            seqk__prefetch_floats(P->q + rh * K, K);
            seqk__prefetch_floats(P->k + rh * K, K);
            seqk__prefetch_floats(P->v + rh * V + v0, vw);
        }
#ifdef __AVX2__
        if (wc == CB) {
            block16(&sg, Mh + c, Mb + c, ld, Vv + c, cv.ldv, O + c, ldo, w->Gb);
            continue;
        }
#endif
        block_any(&sg, wc, Mh + c, Mb + c, ld, Vv + c, cv.ldv, O + c, ldo, w->Gb);
    }
}

/* One (sequence, head, column block): the segments in order. */
static void parallel_item(const tt_problem *D, int64_t n, int64_t h, int64_t v0, int64_t vw,
                          tt_scratch *w)
{
    const seqk__lin *P = &D->lin;
    const int64_t H = P->H, K = P->K, V = P->V, b = D->b;
    int64_t r0, len;
    seqk__lin_seq(P, n, &r0, &len);
    int64_t pos = pos_in(D, n, h);
    const float *Sin = D->s_in ? D->s_in + (n * H + h) * D->E + v0 : NULL;
    float *Mb;
    int64_t ld;
    if (D->s_out) Mb = D->s_out + (n * H + h) * D->E + v0, ld = V;
    else Mb = w->state, ld = vw;
    if (Sin != Mb) {
        slice_in(Sin, K, V, 0, Mb, ld, vw);
        slice_in(Sin, K, V, 1, Mb, ld, vw);
        if (pos != 0) slice_in(Sin, K, V, 2, Mb, ld, vw);
    }
    float *Hm = Mb + 2 * K * ld;
    for (int64_t t = 0; t < len;) {
        const int64_t L = b - pos < len - t ? b - pos : len - t;
        const float *Mh = Hm;
        if (pos == 0) {
            Mh = Mb;
            if (L < b) /* the call ends inside this mini-batch: keep its Mhat */
                for (int64_t i = 0; i < K; i++)
                    memcpy(Hm + i * ld, Mb + i * ld, (size_t)vw * sizeof(float));
        }
        const int64_t tn = t + L, Ln = b < len - tn ? b : len - tn; /* the next segment */
        segment(D, r0 + t, L, h, v0, vw, Mb, ld, Mh, r0 + tn, Ln, w);
        t = tn;
        pos = (pos + L) % b;
    }
    if (pos == 0)
        for (int64_t i = 0; i < K; i++) memcpy(Hm + i * ld, Mb + i * ld, (size_t)vw * sizeof(float));
}

typedef struct {
    int64_t nvb, vw; /* column blocks and their width */
    size_t scratch;  /* floats per thread */
} tt_plan;

static tt_plan make_plan(const tt_problem *D, int threads)
{
    const seqk__lin *P = &D->lin;
    tt_plan pl;
    pl.nvb = 1, pl.vw = P->V;
    if (threads > 1 && P->N * P->H < threads && P->V >= 2 * MIN_VW) {
        const int64_t nvb = (threads + P->N * P->H - 1) / (P->N * P->H);
        int64_t vw = (P->V + nvb - 1) / nvb;
        vw = (vw + MIN_VW - 1) / MIN_VW * MIN_VW; /* whole column blocks */
        pl.vw = vw;
        pl.nvb = (P->V + vw - 1) / vw;
    }
    pl.scratch = rnd8(tt_scratch_floats(D->b, P->K, P->V, D->s_out == NULL));
    return pl;
}

static seqk_status titans_parallel(seqk_context *ctx, const tt_problem *D)
{
    const seqk__lin *P = &D->lin;
    const int threads = seqk__threads(ctx);
    const tt_plan pl = make_plan(D, threads);
    float *ws = NULL;
    seqk_status st = seqk__workspace(FN, ctx, pl.scratch * (size_t)threads * sizeof(float),
                                     (void **)&ws);
    if (st) return st;
    const int64_t H = P->H;
#pragma omp parallel num_threads(threads)
    {
        tt_scratch w;
        tt_scratch_init(&w, ws + pl.scratch * (size_t)seqk__omp_thread(), D->b, P->K, P->V,
                        D->s_out == NULL);
#pragma omp for schedule(dynamic, 1)
        for (int64_t item = 0; item < P->N * H * pl.nvb; item++) {
            const int64_t n = item / (H * pl.nvb), h = (item / pl.nvb) % H, vb = item % pl.nvb;
            const int64_t v0 = vb * pl.vw, vw = P->V - v0 < pl.vw ? P->V - v0 : pl.vw;
            parallel_item(D, n, h, v0, vw, &w);
        }
    }
    write_positions(D);
    return SEQK_SUCCESS;
}

/* ---- validation and dispatch ------------------------------------------------------ */

static const unsigned KNOWN_FLAGS = SEQK__TITANS_KNOWN_FLAGS;

static size_t fbytes(int64_t rows, int64_t width) { return (size_t)(rows * width) * sizeof(float); }

/* Sizes, mode, minibatch and the state's element count (messages name fn;
 * shared with the backward, ssm/titans.h). */
seqk_status seqk__titans_check_sizes(const char *fn, seqk_context *ctx, int mode, int64_t B,
                                     int64_t T, int64_t H, int64_t K, int64_t V,
                                     int64_t minibatch, int64_t N, bool varlen)
{
    seqk_status st = seqk__lin_check_sizes(fn, ctx, mode, B, T, H, K, V, N, varlen, 0);
    if (st) return st;
    if (minibatch < 1 || minibatch > MAX_MINIBATCH)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                          "%s: minibatch=%" PRId64 ", must be in [1, %d]", fn, minibatch,
                          MAX_MINIBATCH);
    const int64_t d_s[5] = {varlen ? N : B, H, 3, K, V};
    if ((st = seqk__check_numel(fn, "state [N,H,3KV+8]", 5, d_s, sizeof(float), NULL))) return st;
    const int64_t d_e[3] = {varlen ? N : B, H, state_floats(K, V)};
    return seqk__check_numel(fn, "state [N,H,3KV+8]", 3, d_e, sizeof(float), NULL);
}

/* eta, alpha in [0, 1] (unit) or theta finite and >= 0; host memory. */
static seqk_status check_gate(const char *fn, const float *x, int64_t n, const char *name,
                              bool unit)
{
    for (int64_t i = 0; i < n; i++) {
        const float g = x[i];
        if (unit && !(g >= 0.0f && g <= 1.0f))
            return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                              "%s: %s[%" PRId64 "]=%g, must be in [0, 1]", fn, name, i, (double)g);
        if (!unit && !(g >= 0.0f && isfinite(g)))
            return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                              "%s: %s[%" PRId64 "]=%g, must be finite and >= 0", fn, name, i,
                              (double)g);
    }
    return SEQK_SUCCESS;
}

/* Every position of state_in an integer in [0, b); host memory. */
static seqk_status check_positions(const char *fn, const float *s_in, int64_t N, int64_t H,
                                   int64_t E, int64_t off, int64_t b)
{
    for (int64_t n = 0; n < N; n++)
        for (int64_t h = 0; h < H; h++) {
            const float p = s_in[(n * H + h) * E + off];
            if (!(p >= 0.0f && p < (float)b && p == floorf(p)))
                return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                                  "%s: state_in position of sequence %" PRId64 ", head %" PRId64
                                  " (float %" PRId64 " of its block) = %g, must be an integer in "
                                  "[0, minibatch=%" PRId64 ")",
                                  fn, n, h, off, (double)p, b);
        }
    return SEQK_SUCCESS;
}

seqk_status seqk__titans_check_values(const char *fn, const float *eta, const float *theta,
                                      const float *alpha, int64_t n, const float *state_in,
                                      int64_t N, int64_t H, int64_t K, int64_t V, int64_t b)
{
    seqk_status st;
    if (n > 0 && ((st = check_gate(fn, eta, n, "eta", true)) ||
                  (st = check_gate(fn, theta, n, "theta", false)) ||
                  (st = check_gate(fn, alpha, n, "alpha", true))))
        return st;
    if (state_in)
        return check_positions(fn, state_in, N, H, state_floats(K, V), 3 * K * V, b);
    return SEQK_SUCCESS;
}

static seqk_status titans_f32(seqk_context *ctx, seqk_mode mode, int64_t B, int64_t T, int64_t H,
                              int64_t K, int64_t V, float scale, unsigned flags, int64_t minibatch,
                              const float *q, const float *k, const float *v, const float *eta,
                              const float *theta, const float *alpha, float *o,
                              const float *state_in, float *state_out, const int32_t *cu_seqlens,
                              int64_t N)
{
    const bool varlen = cu_seqlens != NULL;
    seqk_status st =
        seqk__titans_check_sizes(FN, ctx, (int)mode, B, T, H, K, V, minibatch, N, varlen);
    if (st) return st;
    if ((st = seqk__check_flags(FN, flags, KNOWN_FLAGS))) return st;
    if ((st = seqk__check_scale(FN, scale))) return st;
    if (!varlen) N = B;
    const int64_t rows = B * T, E = state_floats(K, V);
    const size_t ob = fbytes(rows * H, V);
    if (rows > 0) {
        const struct { const void *p; const char *name; } req[] = {
            {q, "q"}, {k, "k"}, {v, "v"}, {eta, "eta"}, {theta, "theta"}, {alpha, "alpha"},
            {o, "o"}};
        for (size_t i = 0; i < sizeof req / sizeof req[0]; i++)
            if ((st = seqk__check_ptr(FN, req[i].name, req[i].p))) return st;
        const struct { const void *p; size_t bytes; const char *name; } in[] = {
            {q, fbytes(rows * H, K), "q"}, {k, fbytes(rows * H, K), "k"}, {v, ob, "v"},
            {eta, fbytes(rows, H), "eta"}, {theta, fbytes(rows, H), "theta"},
            {alpha, fbytes(rows, H), "alpha"}};
        for (size_t i = 0; i < sizeof in / sizeof in[0]; i++)
            if (seqk__overlap(o, ob, in[i].p, in[i].bytes))
                return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: o=%p overlaps %s=%p", FN,
                                  (void *)o, in[i].name, in[i].p);
    }
    const size_t sb = fbytes(N * H, E);
    if ((st = seqk__check_state_io(FN, state_in, state_out, sb, "o", o, ob)))
        return st;
    if ((st = seqk__check_backend_built(FN, ctx))) return st;
    int32_t *cu_host = NULL;
    if (varlen) {
        if ((st = seqk__copy_cu_seqlens(FN, ctx, cu_seqlens, N, B, T, &cu_host))) return st;
    }
    /* the gates' ranges and state_in's positions: read on the CPU; not checked on CUDA */
    if (ctx->backend == SEQK_BACKEND_CPU) {
        if ((st = seqk__titans_check_values(FN, eta, theta, alpha, rows * H, state_in, N, H, K, V,
                                            minibatch))) {
            free(cu_host);
            return st;
        }
    }
    tt_problem D;
    memset(&D, 0, sizeof D);
    seqk__lin *P = &D.lin;
    seqk__titans_lin(P, B, T, H, K, V, N, minibatch, cu_host, scale, flags, q, k, v);
    P->o = o;
    D.eta = eta, D.theta = theta, D.alpha = alpha;
    D.b = minibatch;
    D.E = E;
    D.s_in = state_in, D.s_out = state_out;
    if (ctx->backend == SEQK_BACKEND_CPU) {
        st = mode == SEQK_MODE_RECURRENT ? titans_recurrent(ctx, &D) : titans_parallel(ctx, &D);
    } else {
#if SEQK__HAVE_CUDA
        st = seqk__cuda_titans(ctx, (int)mode, P, eta, theta, alpha, minibatch, state_in,
                               state_out, cu_seqlens);
#else
        st = SEQK_ERROR_INTERNAL;
#endif
    }
    free(cu_host);
    return st;
}

seqk_status seqk_titans_state_size(int64_t K, int64_t V, size_t *floats)
{
    static const char fn[] = "seqk_titans_state_size";
    seqk_status st;
    if ((st = seqk__check_min(fn, "K", K, 1))) return st;
    if ((st = seqk__check_min(fn, "V", V, 1))) return st;
    if ((st = seqk__check_ptr(fn, "floats", floats))) return st;
    const int64_t d[3] = {3, K, V};
    int64_t n = 0;
    if ((st = seqk__check_numel(fn, "3 K V", 3, d, sizeof(float), &n))) return st;
    if (n > INT64_MAX - PAD || (uint64_t)(n + PAD) > (uint64_t)(SIZE_MAX / sizeof(float)))
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: 3*K*V+%d with K=%" PRId64
                          ", V=%" PRId64 " overflows", fn, PAD, K, V);
    *floats = (size_t)(n + PAD);
    return SEQK_SUCCESS;
}

seqk_status seqk_titans_workspace_size(seqk_context *ctx, seqk_mode mode, int64_t B, int64_t T,
                                       int64_t H, int64_t K, int64_t V, int64_t minibatch,
                                       int64_t N, size_t *bytes)
{
    static const char fn[] = "seqk_titans_workspace_size";
    seqk_status st =
        seqk__titans_check_sizes(fn, ctx, (int)mode, B, T, H, K, V, minibatch, N, N > 0);
    if (!st) st = seqk__check_ptr(fn, "bytes", bytes);
    if (st) return st;
    tt_problem D;
    memset(&D, 0, sizeof D);
    D.lin.B = B, D.lin.T = T, D.lin.H = H, D.lin.Hqk = H, D.lin.K = K, D.lin.V = V;
    D.lin.N = N > 0 ? N : B;
    if (ctx->backend == SEQK_BACKEND_CUDA) {
#if SEQK__HAVE_CUDA
        *bytes = seqk__cuda_titans_workspace(&D.lin, (int)mode, minibatch);
#else
        *bytes = 0;
#endif
        return SEQK_SUCCESS;
    }
    D.b = minibatch;
    D.E = state_floats(K, V);
    const int threads = seqk__threads(ctx);
    /* the bounds: state_out absent */
    size_t w;
    if (mode == SEQK_MODE_RECURRENT) {
        w = recurrent_workspace(&D, threads);
    } else {
        const tt_plan pl = make_plan(&D, threads);
        w = pl.scratch * (size_t)threads * sizeof(float);
    }
    *bytes = w;
    return SEQK_SUCCESS;
}

/* ---- dtypes (seqk.h, "Dtypes"): the _ex entry points ---------------------- */

seqk_status seqk_titans_ex(seqk_context *ctx, seqk_dtype dtype, seqk_mode mode, int64_t B,
                           int64_t T, int64_t H, int64_t K, int64_t V, float scale, unsigned flags,
                           int64_t minibatch, const void *q, const void *k, const void *v,
                           const float *eta, const float *theta, const float *alpha, void *o,
                           const float *state_in, float *state_out, const int32_t *cu_seqlens,
                           int64_t N)
{
    if (dtype == SEQK_DTYPE_F32)
        return titans_f32(ctx, mode, B, T, H, K, V, scale, flags, minibatch, q, k, v, eta, theta,
                          alpha, o, state_in, state_out, cu_seqlens, N);
    const int64_t nk = seqk__dt_numel(B, T, H, K), nv = seqk__dt_numel(B, T, H, V);
    seqk__dt_tensor t[] = {
        {"q", q, nk, SEQK__DT_IN, 0, NULL},
        {"k", k, nk, SEQK__DT_IN, 0, NULL},
        {"v", v, nv, SEQK__DT_IN, 0, NULL},
        {"o", o, nv, SEQK__DT_OUT, 0, NULL}};
    size_t ws = 0;
    const seqk_status qs =
        seqk_titans_workspace_size(ctx, mode, B, T, H, K, V, minibatch, cu_seqlens ? N : 0, &ws);
    seqk__dt_call c;
    seqk_status st = seqk__dt_begin(&c, "seqk_titans_ex", ctx, dtype, t, 4, seqk__dt_ws(qs, ws));
    if (st) return st;
    st = titans_f32(ctx, mode, B, T, H, K, V, scale, flags, minibatch, t[0].f, t[1].f, t[2].f,
                    eta, theta, alpha, t[3].f, state_in, state_out, cu_seqlens, N);
    return seqk__dt_end(&c, st);
}

seqk_status seqk_titans(seqk_context *ctx, seqk_mode mode, int64_t B, int64_t T, int64_t H,
                        int64_t K, int64_t V, float scale, unsigned flags, int64_t minibatch,
                        const float *q, const float *k, const float *v, const float *eta,
                        const float *theta, const float *alpha, float *o, const float *state_in,
                        float *state_out, const int32_t *cu_seqlens, int64_t N)
{
    return seqk_titans_ex(ctx, SEQK_DTYPE_F32, mode, B, T, H, K, V, scale, flags, minibatch, q,
                          k, v, eta, theta, alpha, o, state_in, state_out, cu_seqlens, N);
}

seqk_status seqk_titans_workspace_size_ex(seqk_context *ctx, seqk_dtype dtype, seqk_mode mode,
                                          int64_t B, int64_t T, int64_t H, int64_t K, int64_t V,
                                          int64_t minibatch, int64_t N, size_t *bytes)
{
    static const char fn[] = "seqk_titans_workspace_size_ex";
    seqk_status st = seqk__dt_check(fn, dtype);
    if (!st) st = seqk_titans_workspace_size(ctx, mode, B, T, H, K, V, minibatch, N, bytes);
    if (st) return st;
    const int64_t nk = seqk__dt_numel(B, T, H, K), nv = seqk__dt_numel(B, T, H, V);
    const int64_t n[] = {nk, nk, nv, nv};
    return seqk__dt_workspace_size(fn, dtype, n, 4, bytes);
}
