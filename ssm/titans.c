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
 * only column j of Mhat, S, M), so the work items are (sequence, head, block
 * of VB = 16 state columns): a K x 16 slice of each of M, S, Mhat (3 K 64
 * bytes, L1-sized for K <= 128). Per token an item needs x = Mhat^T k over
 * all K rows before it can form Gerr_t and update S and M. As in
 * ssm/deltanet.c the update of token t is deferred into the pass of token
 * t+1: one pass per token does, row by row (raw q and k rows; the factors
 * q~ = fq q, k~ = fk k are applied to the K-independent results),
 *
 *   S_i = e_{t-1} S_i - k_{t-1,i} gp                  (gp = theta_{t-1} fk_{t-1} Gerr_{t-1})
 *   M_i = a_{t-1} M_i + S_i;   y += q_{t-1,i} M_i      (o_{t-1} = fq_{t-1} y)
 *   Mhat_i = M_i if token t starts a mini-batch (stored when b > 1)
 *   x += k_{t,i} Mhat_i                               (Gerr_t = fk_t x - v_t)
 *
 * and a last pass applies the final pending update: T tokens cost T + 1
 * passes, 8 K V flops per token (counted: 2 each for the momentum update, the
 * memory update, the read-out and Mhat^T k) and no O(K) loop per token and
 * item besides the norms with SEQK_TITANS_L2NORM_QK. The slice is updated in
 * place in state_out (after copying state_in there), so a decoding step with
 * state_in == state_out allocates nothing; an item of at least LOCAL_MIN_T
 * tokens with K <= 128 works on a contiguous copy on the stack (rows V
 * floats apart thrash L1's sets) and writes it back; without state_out the
 * slice lives in the workspace. Positions are written after all items (an
 * item of one head must not overwrite the position another item of the
 * same head has still to read when state_in == state_out).
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
 * then whole mini-batches follow. The pieces: seqk__chunk_load (Q~, K~ with
 * the L2 norm, V in place), seqk__chunk_output_mix (the intra term: stage 3
 * of the shared chunk stages with Mix in place of the decay mask), and
 * seqk__sgemm for Gerr, the inter term (one product of inner dimension 2K,
 * M0 and S0 being contiguous in the state) and the state update (one
 * product [M; S] -= [W_M | W_S]^T Gerr). The mini-batches of a sequence run
 * in order (Gerr needs the previous mini-batch's end); the work items are
 * (sequence, head), or (sequence, head, block of state columns) when there
 * are fewer pairs than threads (every column of Gerr, O and the state
 * depends only on the same column of the state; Q~ K~^T is recomputed per
 * block).
 */
#include "../core/gemm.h"
#include "../core/vmath.h"
#include "../gpu/gpu.h"
#include "../scan/chunk.h"

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
    PAD = 8,                  /* floats after M, S, Mhat: pos and 7 reserved */
    MAX_MINIBATCH = 1024,
    VB = 16,                  /* state columns per recurrent work item (two ymm per row) */
    LOCAL_FLOATS = 3 * 128 * VB, /* a recurrent item of >= LOCAL_MIN_T tokens keeps its */
    LOCAL_MIN_T = 8,             /* slices contiguous on the stack when they fit */
    MIN_VW = 16,              /* narrowest column block of the parallel mode's split */
    PREFETCH_T = 4            /* the recurrent mode prefetches q, k, v this many tokens ahead */
};

/* log x for the cumulative gates: x in [0, 1]; 0 -> -1e4 (exp of anything
 * that includes it is 0 in float, and differences stay finite). */
#define LOG_ZERO (-1.0e4)

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

static int64_t state_floats(int64_t K, int64_t V) { return 3 * K * V + PAD; }

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

/* ---- recurrent mode ----------------------------------------------------------- */

/* The factors q~ = fq q, k~ = fk k of one token (fq = scale, fk = 1 without
 * SEQK__LIN_L2NORM): the passes read the raw rows and the factors are applied
 * to the K-independent results (o, Gerr), so a token costs no O(K) loop of
 * its own without the norm. */
static void token_factors(const seqk__lin *P, const float *q, const float *k, float *fq, float *fk)
{
    const int64_t K = P->K;
    *fq = P->scale, *fk = 1.0f;
    if (!(P->flags & SEQK__LIN_L2NORM)) return;
    float sq = 0.0f, sk = 0.0f;
    int64_t i = 0;
#ifdef __AVX2__
    __m256 aq = _mm256_setzero_ps(), ak = aq;
    for (; i + 8 <= K; i += 8) {
        const __m256 x = _mm256_loadu_ps(q + i), y = _mm256_loadu_ps(k + i);
        aq = _mm256_fmadd_ps(x, x, aq), ak = _mm256_fmadd_ps(y, y, ak);
    }
    sq = seqk__hsum8(aq), sk = seqk__hsum8(ak);
#endif
    for (; i < K; i++) {
        sq += q[i] * q[i];
        sk += k[i] * k[i];
    }
    *fq = P->scale / sqrtf(sq + SEQK__LIN_L2NORM_EPS);
    *fk = 1.0f / sqrtf(sk + SEQK__LIN_L2NORM_EPS);
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

static size_t recurrent_workspace(const tt_problem *D, int threads)
{
    if (D->s_out) return 0; /* the state lives in state_out */
    return (size_t)(3 * D->lin.K * VB) * (size_t)threads * sizeof(float);
}

/* One item: tokens of sequence n, head h, state columns [c0, c0 + w). */
static void recurrent_item(const tt_problem *D, int64_t n, int64_t h, int64_t c0, int64_t w,
                           float *slice)
{
    const seqk__lin *P = &D->lin;
    const int64_t H = P->H, K = P->K, V = P->V, b = D->b;
    float x[VB], y[VB], gp[VB] = {0};
    float loc[LOCAL_FLOATS];
    int64_t r0, len;
    seqk__lin_seq(P, n, &r0, &len);
    int64_t pos = pos_in(D, n, h);
    const float *Sin = D->s_in ? D->s_in + (n * H + h) * D->E + c0 : NULL;
    float *Sout = D->s_out ? D->s_out + (n * H + h) * D->E + c0 : NULL;
    /* the slices: M at Mb, S at Mb + K ld, Mhat at Mb + 2 K ld */
    float *Mb;
    int64_t ld;
    if (Sout && (len < LOCAL_MIN_T || 3 * K * w > LOCAL_FLOATS)) {
        Mb = Sout, ld = V;
    } else if (Sout) {
        Mb = loc, ld = w;
    } else {
        Mb = slice, ld = w;
    }
    if (Sin != Mb) {
        slice_in(Sin, K, V, 0, Mb, ld, w);
        slice_in(Sin, K, V, 1, Mb, ld, w);
        if (pos != 0) slice_in(Sin, K, V, 2, Mb, ld, w);
    }
    /* the pending update of the previous token: S = ep S - kp gp^T, M = ap M + S,
     * with kp its raw key and gp = theta fk Gerr; qp, fqp its raw query and factor */
    bool pend = false;
    float ep = 0.0f, ap = 1.0f, fqp = 0.0f;
    const float *kp = NULL, *qp = NULL;
    for (int64_t t = 0; t < len; t++) {
        const int64_t r = r0 + t, rh = r * H + h;
#ifdef __AVX2__
        if (t + PREFETCH_T < len) { /* later tokens' rows sit in other pages */
            const int64_t rp = (r + PREFETCH_T) * H + h;
            for (int64_t i = 0; i < K; i += 16) {
                _mm_prefetch((const char *)(P->q + rp * K + i), _MM_HINT_T0);
                _mm_prefetch((const char *)(P->k + rp * K + i), _MM_HINT_T0);
            }
            _mm_prefetch((const char *)(P->v + rp * V + c0), _MM_HINT_T0);
        }
#endif
        const float *qr = P->q + rh * K, *kr = P->k + rh * K;
        float fq, fk;
        token_factors(P, qr, kr, &fq, &fk);
        unsigned f = P_RD | (pend ? P_PEND : 0u);
        if (pos == 0) f |= P_REFRESH | (b > 1 ? P_WH : 0u);
        pass_dispatch(K, w, Mb, ld, f, ep, ap, kp, gp, qp, y, kr, x);
        if (pend) {
            float *o = P->o + (rh - H) * V + c0;
            for (int64_t j = 0; j < w; j++) o[j] = fqp * y[j];
        }
        /* Gerr_t = fk x - v_t and the pending update of token t */
        const float *v = P->v + rh * V + c0;
        const float tf = D->theta[rh] * fk;
        for (int64_t j = 0; j < w; j++) gp[j] = tf * (fk * x[j] - v[j]);
        ep = D->eta[rh];
        ap = 1.0f - D->alpha[rh];
        kp = kr, qp = qr, fqp = fq;
        pend = true;
        pos = pos + 1 == b ? 0 : pos + 1;
    }
    /* the last pending update; Mhat = M when the call ends at a mini-batch end */
    const unsigned f = (pend ? P_PEND : 0u) | (pos == 0 ? P_WH : 0u);
    if (f) pass_dispatch(K, w, Mb, ld, f, ep, ap, kp, gp, qp, y, NULL, NULL);
    if (pend) {
        float *o = P->o + ((r0 + len - 1) * H + h) * V + c0;
        for (int64_t j = 0; j < w; j++) o[j] = fqp * y[j];
    }
    if (Mb == loc)
        for (int mat = 0; mat < 3; mat++) slice_out(loc, ld, K, V, mat, Sout, w);
}

static seqk_status titans_recurrent(seqk_context *ctx, const tt_problem *D)
{
    const seqk__lin *P = &D->lin;
    const int threads = seqk__threads(ctx);
    float *ws = NULL;
    seqk_status st = seqk__workspace(FN, ctx, recurrent_workspace(D, threads), (void **)&ws);
    if (st) return st;
    const int64_t H = P->H, nvb = (P->V + VB - 1) / VB;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int64_t item = 0; item < P->N * H * nvb; item++) {
        const int64_t n = item / (H * nvb), h = (item / nvb) % H, vb = item % nvb;
        const int64_t c0 = vb * VB, w = P->V - c0 < VB ? P->V - c0 : VB;
        float *slice = ws ? ws + (size_t)(3 * P->K * VB) * (size_t)seqk__omp_thread() : NULL;
        recurrent_item(D, n, h, c0, w, slice);
    }
    write_positions(D);
    return SEQK_SUCCESS;
}

/* ---- parallel mode -------------------------------------------------------------- */

/* Per-thread scratch: the chunk stages' scratch (L = b), then this file's. */
typedef struct {
    seqk__chunk_scratch cs;
    double *lm;     /* [L] cumulative log eta */
    float *ca;      /* [L] a = 1 - alpha */
    float *cb;      /* [L] beta_t */
    float *cf;      /* [L] f_t */
    float *th;      /* [L] theta */
    float *g;       /* [L] the current row of Gmix */
    float *e;       /* [L] exp(lm_t - lm_s) of the current row */
    float *wm, *wsv; /* [L] weights of the state update: theta_s Gmix_{L-1,s}, theta_s m_{L-1}/m_s */
    float *Mix;     /* [L,L] -Gmix_ts theta_s on and below the diagonal */
    float *QQ;      /* [L,2K] [diag(beta) Q~ | diag(f) Q~] */
    float *W2;      /* [L,2K] [diag(wm) K~ | diag(ws) K~] */
    float *Gerr;    /* [L,V] */
    float *pack;    /* packing of this file's products */
    float *state;   /* [3,K,V] the state slice without state_out */
    float mL, bL, fL; /* m, beta, f at the segment's last token */
} tt_scratch;

static size_t tt_pack_floats(int64_t L, int64_t K, int64_t V)
{
    size_t m = seqk__sgemm_pack_floats(L, V, K), x;
    if ((x = seqk__sgemm_pack_floats(L, V, 2 * K)) > m) m = x;
    if ((x = seqk__sgemm_pack_floats(2 * K, V, L)) > m) m = x;
    return m;
}

static size_t tt_scratch_floats(int64_t L, int64_t K, int64_t V, bool with_state)
{
    const size_t l = (size_t)L, k = (size_t)K, v = (size_t)V;
    return rnd8(seqk__chunk_scratch_floats(L, K, V)) + rnd8(2 * l) + 8 * rnd8(l) + rnd8(l * l) +
           2 * rnd8(2 * l * k) + rnd8(l * v) + rnd8(tt_pack_floats(L, K, V)) +
           (with_state ? rnd8(3 * k * v) : 0);
}

static void tt_scratch_init(tt_scratch *w, float *base, int64_t L, int64_t K, int64_t V,
                            bool with_state)
{
    const size_t l = (size_t)L, k = (size_t)K, v = (size_t)V;
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
    w->Gerr = p, p += rnd8(l * v);
    w->pack = p, p += rnd8(tt_pack_floats(L, K, V));
    w->state = with_state ? p : NULL;
}

static double log_gate(float x) { return x > 0.0f ? log((double)x) : LOG_ZERO; }

/* exp of x[0..n) in place (x <= 0). */
static void exp_inplace(float *x, int64_t n)
{
    int64_t i = 0;
#ifdef __AVX2__
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, seqk__exp8(_mm256_loadu_ps(x + i)));
#endif
    for (; i < n; i++) x[i] = expf(x[i]);
}

/* The gates of the segment [r0, r0 + L) of head h: beta_t, f_t, Mix, and
 * the state-update weights wm, wsv; mL, bL, fL. */
static void segment_gates(const tt_problem *D, int64_t r0, int64_t L, int64_t h, tt_scratch *w)
{
    const int64_t H = D->lin.H;
    double am = 0.0, ab = 0.0;
    float f = 0.0f;
    for (int64_t t = 0; t < L; t++) {
        const int64_t rh = (r0 + t) * H + h;
        const float a = 1.0f - D->alpha[rh];
        am += log_gate(D->eta[rh]);
        ab += log_gate(a);
        w->lm[t] = am;
        f = a * f + (float)exp(am);
        w->ca[t] = a;
        w->cb[t] = (float)exp(ab);
        w->cf[t] = f;
        w->th[t] = D->theta[rh];
    }
    w->mL = (float)exp(am), w->bL = w->cb[L - 1], w->fL = f;
    /* Gmix row by row: g_s = a_t g_s + exp(lm_t - lm_s) (s < t), g_t = 1 */
    for (int64_t t = 0; t < L; t++) {
        const double lt = w->lm[t];
        for (int64_t s = 0; s < t; s++) { /* lm is non-increasing: lt - lm_s <= 0 */
            const double d = lt - w->lm[s];
            w->e[s] = (float)(d < 0.0 ? d : 0.0);
        }
        exp_inplace(w->e, t);
        const float a = w->ca[t];
        float *mix = w->Mix + t * L;
        for (int64_t s = 0; s < t; s++) {
            w->g[s] = a * w->g[s] + w->e[s];
            mix[s] = -w->th[s] * w->g[s];
        }
        w->g[t] = 1.0f;
        w->e[t] = 1.0f;
        mix[t] = -w->th[t];
    }
    for (int64_t s = 0; s < L; s++) {
        w->wm[s] = w->th[s] * w->g[s];
        w->wsv[s] = w->th[s] * w->e[s];
    }
}

/*
 * One segment: tokens [r0, r0 + L) of head h, all inside one mini-batch, on
 * the state columns [v0, v0 + vw): M at Mb, S at Mb + K ld (so [M; S] is one
 * 2K x vw matrix with rows ld apart), Mh the Mhat the gradients are taken
 * at (Mb itself at a mini-batch start). Writes o and advances M and S.
 */
static void segment(const tt_problem *D, int64_t r0, int64_t L, int64_t h, int64_t v0,
                    int64_t vw, float *Mb, int64_t ld, const float *Mh, tt_scratch *w)
{
    const seqk__lin *P = &D->lin;
    const int64_t K = P->K, V = P->V, H = P->H, K2 = 2 * K;
    seqk__chunk_view cv;
    seqk__chunk_load(P, r0, L, h, &w->cs, &cv);
    segment_gates(D, r0, L, h, w);
    /* Gerr = K~ Mhat - V */
    for (int64_t i = 0; i < L; i++) {
        const float *vr = cv.Vv + i * cv.ldv + v0;
        float *gr = w->Gerr + i * vw;
        for (int64_t j = 0; j < vw; j++) gr[j] = -vr[j];
    }
    seqk__sgemm(false, false, L, vw, K, 1.0f, cv.Kc, K, Mh, ld, 1.0f, w->Gerr, vw, w->pack);
    /* O = ((Q~ K~^T) .* Mix) Gerr + [diag(beta) Q~ | diag(f) Q~] [M0; S0] */
    float *O = P->o + (r0 * H + h) * V + v0;
    seqk__chunk_output_mix(&cv, K, vw, w->Mix, L, w->Gerr, vw, O, H * V, &w->cs);
    for (int64_t i = 0; i < L; i++) {
        const float *qr = cv.Qs + i * K;
        float *d = w->QQ + i * K2;
        const float cb = w->cb[i], cf = w->cf[i];
        for (int64_t j = 0; j < K; j++) {
            d[j] = cb * qr[j];
            d[K + j] = cf * qr[j];
        }
    }
    seqk__sgemm(false, false, L, vw, K2, 1.0f, w->QQ, K2, Mb, ld, 1.0f, O, H * V, w->pack);
    /* M = beta_L M + f_L S, S = m_L S; then [M; S] -= [W_M | W_S]^T Gerr */
    float *S = Mb + K * ld;
    const float bL = w->bL, fL = w->fL, mL = w->mL;
    for (int64_t i = 0; i < K; i++) {
        float *mr = Mb + i * ld, *sr = S + i * ld;
        int64_t j = 0;
#ifdef __AVX2__
        const __m256 vb = _mm256_set1_ps(bL), vf = _mm256_set1_ps(fL), vm = _mm256_set1_ps(mL);
        for (; j + 8 <= vw; j += 8) {
            const __m256 s = _mm256_loadu_ps(sr + j);
            _mm256_storeu_ps(mr + j, _mm256_fmadd_ps(vb, _mm256_loadu_ps(mr + j), _mm256_mul_ps(vf, s)));
            _mm256_storeu_ps(sr + j, _mm256_mul_ps(vm, s));
        }
#endif
        for (; j < vw; j++) {
            const float s = sr[j];
            mr[j] = bL * mr[j] + fL * s;
            sr[j] = mL * s;
        }
    }
    for (int64_t s = 0; s < L; s++) {
        const float *kr = cv.Kc + s * K;
        float *d = w->W2 + s * K2;
        const float a = w->wm[s], c = w->wsv[s];
        for (int64_t j = 0; j < K; j++) {
            d[j] = a * kr[j];
            d[K + j] = c * kr[j];
        }
    }
    seqk__sgemm(true, false, K2, vw, L, -1.0f, w->W2, K2, w->Gerr, vw, 1.0f, Mb, ld, w->pack);
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
        segment(D, r0 + t, L, h, v0, vw, Mb, ld, Mh, w);
        t += L;
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
        vw = (vw + MIN_VW - 1) / MIN_VW * MIN_VW; /* whole sgemm panels */
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

static const unsigned KNOWN_FLAGS = SEQK_TITANS_L2NORM_QK;

static size_t fbytes(int64_t rows, int64_t width) { return (size_t)(rows * width) * sizeof(float); }

/* Sizes, mode, minibatch and the state's element count (messages name fn). */
static seqk_status check_sizes(const char *fn, seqk_context *ctx, int mode, int64_t B, int64_t T,
                               int64_t H, int64_t K, int64_t V, int64_t minibatch, int64_t N,
                               bool varlen)
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
static seqk_status check_gate(const float *x, int64_t n, const char *name, bool unit)
{
    for (int64_t i = 0; i < n; i++) {
        const float g = x[i];
        if (unit && !(g >= 0.0f && g <= 1.0f))
            return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                              "%s: %s[%" PRId64 "]=%g, must be in [0, 1]", FN, name, i, (double)g);
        if (!unit && !(g >= 0.0f && isfinite(g)))
            return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                              "%s: %s[%" PRId64 "]=%g, must be finite and >= 0", FN, name, i,
                              (double)g);
    }
    return SEQK_SUCCESS;
}

/* Every position of state_in an integer in [0, b); host memory. */
static seqk_status check_positions(const float *s_in, int64_t N, int64_t H, int64_t E,
                                   int64_t off, int64_t b)
{
    for (int64_t n = 0; n < N; n++)
        for (int64_t h = 0; h < H; h++) {
            const float p = s_in[(n * H + h) * E + off];
            if (!(p >= 0.0f && p < (float)b && p == floorf(p)))
                return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                                  "%s: state_in position of sequence %" PRId64 ", head %" PRId64
                                  " (float %" PRId64 " of its block) = %g, must be an integer in "
                                  "[0, minibatch=%" PRId64 ")",
                                  FN, n, h, off, (double)p, b);
        }
    return SEQK_SUCCESS;
}

seqk_status seqk_titans(seqk_context *ctx, seqk_mode mode, int64_t B, int64_t T, int64_t H,
                        int64_t K, int64_t V, float scale, unsigned flags, int64_t minibatch,
                        const float *q, const float *k, const float *v, const float *eta,
                        const float *theta, const float *alpha, float *o, const float *state_in,
                        float *state_out, const int32_t *cu_seqlens, int64_t N)
{
    const bool varlen = cu_seqlens != NULL;
    seqk_status st = check_sizes(FN, ctx, (int)mode, B, T, H, K, V, minibatch, N, varlen);
    if (st) return st;
    if (flags & ~KNOWN_FLAGS)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: flags=0x%x has unknown bits 0x%x", FN,
                          flags, flags & ~KNOWN_FLAGS);
    if (!isfinite(scale))
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: scale=%g, must be finite", FN,
                          (double)scale);
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
#if !SEQK__HAVE_CUDA
    if (ctx->backend != SEQK_BACKEND_CPU)
        return seqk__fail(SEQK_ERROR_UNSUPPORTED, "%s: this build of seqk has no CUDA backend", FN);
#endif
    int32_t *cu_host = NULL;
    if (varlen) {
        if ((st = seqk__copy_cu_seqlens(FN, ctx, cu_seqlens, N, B, T, &cu_host))) return st;
    }
    /* the gates' ranges and state_in's positions: read on the CPU; not checked on CUDA */
    if (ctx->backend == SEQK_BACKEND_CPU) {
        if (rows > 0 && ((st = check_gate(eta, rows * H, "eta", true)) ||
                         (st = check_gate(theta, rows * H, "theta", false)) ||
                         (st = check_gate(alpha, rows * H, "alpha", true)))) {
            free(cu_host);
            return st;
        }
        if (state_in && (st = check_positions(state_in, N, H, E, 3 * K * V, minibatch))) {
            free(cu_host);
            return st;
        }
    }
    tt_problem D;
    memset(&D, 0, sizeof D);
    seqk__lin *P = &D.lin;
    P->B = B, P->T = T, P->H = H, P->Hqk = H, P->K = K, P->V = V, P->N = N;
    P->chunk = minibatch;
    P->cu = cu_host;
    P->scale = scale;
    P->flags = (flags & SEQK_TITANS_L2NORM_QK) ? SEQK__LIN_L2NORM : 0u;
    P->q = q, P->k = k, P->v = v, P->o = o;
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
    seqk_status st = check_sizes(fn, ctx, (int)mode, B, T, H, K, V, minibatch, N, N > 0);
    if (!st) st = seqk__check_ptr(fn, "bytes", bytes);
    if (st) return st;
    if (ctx->backend == SEQK_BACKEND_CUDA) { /* the recurrent kernel, state in shared memory */
        *bytes = 0;
        return SEQK_SUCCESS;
    }
    tt_problem D;
    memset(&D, 0, sizeof D);
    D.lin.B = B, D.lin.T = T, D.lin.H = H, D.lin.Hqk = H, D.lin.K = K, D.lin.V = V;
    D.lin.N = N > 0 ? N : B;
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
