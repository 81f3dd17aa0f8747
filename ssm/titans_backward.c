/*
 * ssm/titans_backward.c -- the backward (training) of the Titans linear
 * memory (DESIGN 3.4, issue #16), CPU; the validation and dispatch of
 * seqk_titans_backward. Both modes of seqk_titans compute one function for a
 * given mini-batch size b; this is its gradient, computed per mini-batch
 * with matrix products (docs/titans-backward.md, section 4, which derives
 * every formula below; section 2 is the token loop they are the closed form
 * of).
 *
 * Per (sequence, head), a "segment" is one mini-batch, or the part of one
 * that the call starts or ends inside, of n tokens (indices t, s, u in
 * [0, n) below), with Q = q~ rows (scale and the L2 norm applied), K = k~
 * rows, V, dO its rows, M0, S0 the state before it and H the Mhat its
 * errors are taken at (M0 when it starts a mini-batch, the state's Mhat for
 * a first partial one). The gates, cumulated in log space (double; log 0 ->
 * -1e4, as the forward does), never divided:
 *
 *   m_t = prod_{r<=t} eta_r,  beta_t = prod_{r<=t} a_r  (a = 1 - alpha),
 *   f_t = a_t f_{t-1} + m_t,  Gmix_ts = a_t Gmix_{t-1,s} + m_t / m_s (Gmix_tt = 1)
 *   g_s = Gmix_{n-1,s},  mu_s = m_{n-1} / m_s,  bn_t = beta_{n-1} / beta_t
 *
 * Forward state pass (recompute): Gerr = K H - V and
 *   [M'; S'] = [beta_{n-1} M0 + f_{n-1} S0; m_{n-1} S0]
 *              - [diag(theta g) K | diag(theta mu) K]^T Gerr.
 * The states before the segments are kept, with the segments' Gerr (all
 * while they fit SEQK__TT_BWD_FULL_BYTES per thread, else the state before
 * every R-th segment, and the ones between recomputed per group of R with
 * their Gerr, seqk__chunk_ckpt_plan).
 *
 * Reverse pass, carrying X = dL/dM and Y = dL/dS at the segment's end
 * ([X; Y], 2K x V), per segment:
 *
 *   P1 = (Q K^T) .* Gmix,  P2 = (dO Gerr^T) .* Gmix        (lower, n x n)
 *   W   = P1^T dO + diag(g) K X + diag(mu) K Y             (rows dS_s^T k~_s)
 *   dv  = diag(theta) W,  dE = -diag(theta) W,  dH = K^T dE
 *   Z   = P2^T Q + diag(g) Gerr X^T + diag(mu) Gerr Y^T    (rows dS_s e_s)
 *   dtheta_s = -k~_s . z_s,  dK~ = dE H^T - diag(theta) Z
 *   dQ~ = diag(beta) dO M0^T + diag(f) dO S0^T - P2 diag(theta) K
 *   X <- Q^T diag(beta) dO + beta_{n-1} X + dH   (dH: when the segment starts a
 *                                                 mini-batch; else it is dMhat_in)
 *   Y <- Q^T diag(f) dO + f_{n-1} X + m_{n-1} Y
 *
 * and the gate gradients deta_t = <dS_t, S_{t-1}>, dalpha_t = -<dM_t, M_{t-1}>
 * from the segment's n x n quantities (section 4.3): A_su = (k~_s . q~_u)
 * (e_s . dO_u), the row dots z_u = q~_u . S0 dO_u, zM_u = q~_u . M0 dO_u,
 * x_s = e_s . X^T k~_s, y_s = e_s . Y^T k~_s, the inner products <S0, X>,
 * <S0, Y>, <M0, X>, and two forward scalar recurrences over t (each a
 * vector over u, updated in place):
 *   R_{t+1} = eta_t R_t + theta_t A_t.,   R'_{t+1} = a_t R'_t + R_{t+1}
 *   (rx, ry, rx' likewise from x, y)
 * Then (sums over u >= t; m_{-1} = beta_{-1} = 1, f_{-1} = 0)
 *   deta_t   = m_{t-1} (sum_u Gmix_ut z_u + g_t <S0,X> + mu_t <S0,Y>)
 *              - (sum_u Gmix_ut R_tu + g_t rx_t + mu_t ry_t)
 *   dalpha_t = -(beta_{t-1} (sum_u (beta_u/beta_t) zM_u + bn_t <M0,X>)
 *              + f_{t-1} (sum_u (beta_u/beta_t) z_u + bn_t <S0,X>)
 *              - (sum_u (beta_u/beta_t) R'_tu + bn_t rx'_t))
 * Finally through the norms: dq = scale n'(q) dQ~ / scale... i.e.
 * dx = (dx~ - x~ (x~ . dx~)) / r(x) with dx~ = scale dQ~ for q.
 *
 * At the call's end X = dM_fin (+ dMhat_fin when the final pos is 0),
 * Y = dS_fin, and dMhat_fin goes into the last segment's dH otherwise; at
 * its start dstate_in = [X | Y | dMhat_in | 0 ...] (dMhat_in = 0 when pos_in
 * is 0: Mhat is not read then).
 *
 * Work items are (sequence, head), one per thread at a time, in a fixed
 * order inside an item: the same bits for any thread count.
 *
 * Memory: both passes ask for the next segment's rows of the inputs while
 * they work on the current one (prefetch_seg), and dq, dk, dv are written
 * once, past the cache (seqk__store_row_nt; the stores fenced before the
 * parallel region ends).
 */
#include "../core/gemm.h"
#include "../core/dtype.h"
#include "../gpu/gpu.h"
#include "../core/vmath.h"
#include "../scan/chunk.h"
#include "titans.h"

#include <inttypes.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char FN[] = "seqk_titans_backward";

static size_t rnd8(size_t n) { return (n + 7) / 8 * 8; }

typedef struct {
    seqk__lin lin;                    /* q, k, v, sizes, scale, SEQK__LIN_L2NORM, chunk = b */
    const float *eta, *theta, *alpha; /* [B*T, H] */
    int64_t b, E;                     /* mini-batch size, floats per state block */
    const float *s_in;                /* [N, H, E] or NULL */
    const float *dout;                /* [B*T, H, V] */
    const float *ds_out;              /* [N, H, E] or NULL */
    float *dq, *dk, *dv;              /* [B*T, H, K|V] */
    float *deta, *dtheta, *dalpha;    /* [B*T, H] */
    float *ds_in;                     /* [N, H, E] or NULL */
} ttb_problem;

typedef struct {
    int64_t R, nckpt;   /* checkpoint spacing, checkpoints of the longest sequence */
    int64_t ngerr;      /* segment errors kept: nckpt (R = 1) or R */
    size_t chunk_fl;    /* seqk__chunk_load's scratch */
    size_t pack_fl;     /* sgemm packing */
    size_t scratch;     /* floats per thread */
} ttb_plan;

static ttb_plan make_plan(const seqk__lin *P, int64_t b, int64_t longest_len)
{
    ttb_plan pl;
    const int64_t K = P->K, V = P->V;
    const int64_t nseg = longest_len == 0 ? 0 : (longest_len + b - 1) / b + 1; /* pos0 != 0: +1 */
    seqk__chunk_ckpt_plan(nseg, 2 * K * V + b * V, SEQK__TT_BWD_FULL_BYTES, &pl.R, &pl.nckpt);
    pl.ngerr = pl.R == 1 ? pl.nckpt : pl.R;
    int64_t m = b > 2 * K ? b : 2 * K;
    if (2 * V > m) m = 2 * V;
    pl.pack_fl = seqk__sgemm_pack_floats(m, m, m);
    pl.chunk_fl = seqk__chunk_scratch_floats(b, K, V);
    const size_t l = (size_t)b, k = (size_t)K, v = (size_t)V, e2 = 2 * k * v;
    pl.scratch = rnd8(pl.chunk_fl) + rnd8(pl.pack_fl) + 2 * rnd8(2 * l) /* lm lb (double) */ +
                 rnd8(l) * 20 /* vectors */ + rnd8(l * l) * 8 /* Dm Db Gx QK DE P1 P2 At */ +
                 rnd8(l * v) * 2 /* Gerr Wm */ + rnd8(l * 2 * k) * 4 /* GXY dOMS QQ W2 */ +
                 rnd8(l * k) * 3 /* Z dQt dKt */ + rnd8(k * v) /* dH */ + rnd8(e2) * 2 /* XY prod */ +
                 rnd8(e2) * (size_t)(pl.nckpt + pl.R) + rnd8(l * v) * (size_t)pl.ngerr;
    return pl;
}

/* One thread's buffers. */
typedef struct {
    seqk__chunk_scratch cs;
    float *pack;
    double *lm, *lb;                                  /* [b] cumulative logs of eta, a */
    float *mv, *bv, *fv, *av, *ev, *th, *gv, *mu, *bn; /* [b] m, beta, f, a, eta, theta, g, mu, bn */
    float *xv, *yv, *zv, *zM, *Rv, *Rp;               /* [b] */
    float *Dm, *Db, *Gx, *QK, *DE, *P1, *P2, *At;     /* [b,b] */
    float *Gerr, *Wm;                                 /* [b,V] */
    float *GXY, *dOMS, *QQ, *W2;                      /* [b,2K] */
    float *Z, *dQt, *dKt;                             /* [b,K] */
    float *dH;                                        /* [K,V] */
    float *XY, *prod;                                 /* [2K,V] */
    float *ckpt;                                      /* [nckpt, 2KV] */
    float *seg;                                       /* [R, 2KV] */
    float *gk;                                        /* [ngerr, b, V] kept Gerr */
} ttb_scratch;

static void scratch_init(ttb_scratch *w, float *base, const seqk__lin *P, int64_t b,
                         const ttb_plan *pl)
{
    const size_t l = (size_t)b, k = (size_t)P->K, v = (size_t)P->V, e2 = 2 * k * v;
    float *p = base;
    seqk__chunk_scratch_init(&w->cs, p, b, P->K, P->V);
    p += rnd8(pl->chunk_fl);
#define TAKE(field, n) (w->field = p, p += rnd8(n))
    TAKE(pack, pl->pack_fl);
    w->lm = (double *)p, p += rnd8(2 * l);
    w->lb = (double *)p, p += rnd8(2 * l);
    TAKE(mv, l), TAKE(bv, l), TAKE(fv, l), TAKE(av, l), TAKE(ev, l), TAKE(th, l), TAKE(gv, l);
    TAKE(mu, l), TAKE(bn, l), TAKE(xv, l), TAKE(yv, l), TAKE(zv, l), TAKE(zM, l), TAKE(Rv, l);
    TAKE(Rp, l);
    p += 5 * rnd8(l); /* spare vectors of the plan's 20 */
    TAKE(Dm, l * l), TAKE(Db, l * l), TAKE(Gx, l * l), TAKE(QK, l * l), TAKE(DE, l * l);
    TAKE(P1, l * l), TAKE(P2, l * l), TAKE(At, l * l);
    TAKE(Gerr, l * v), TAKE(Wm, l * v);
    TAKE(GXY, 2 * l * k), TAKE(dOMS, 2 * l * k), TAKE(QQ, 2 * l * k), TAKE(W2, 2 * l * k);
    TAKE(Z, l * k), TAKE(dQt, l * k), TAKE(dKt, l * k);
    TAKE(dH, k * v);
    TAKE(XY, e2), TAKE(prod, e2);
    TAKE(ckpt, e2 * (size_t)pl->nckpt);
    TAKE(seg, e2 * (size_t)pl->R);
    TAKE(gk, l * v * (size_t)pl->ngerr);
#undef TAKE
    w->cs.pack = w->pack;
}

/* The gates of the segment [r0, r0 + n) of head h: the vectors (m, beta, f,
 * a, eta, theta, g, mu, bn) and, with full, the n x n matrices m_u / m_s (Dm),
 * beta_u / beta_t (Db) and Gmix (Gx), on and below the diagonal. Without full
 * only the last rows are formed (what the state pass needs: g, mu). */
static void seg_gates(const ttb_problem *D, int64_t r0, int64_t n, int64_t h, bool full,
                      ttb_scratch *w)
{
    const int64_t H = D->lin.H;
    double am = 0.0, ab = 0.0;
    float f = 0.0f;
    for (int64_t t = 0; t < n; t++) {
        const int64_t rh = (r0 + t) * H + h;
        const float a = 1.0f - D->alpha[rh];
        am += seqk__titans_log_gate(D->eta[rh]);
        ab += seqk__titans_log_gate(a);
        w->lm[t] = am, w->lb[t] = ab;
        w->mv[t] = (float)exp(am);
        w->bv[t] = (float)exp(ab);
        w->av[t] = a, w->ev[t] = D->eta[rh], w->th[t] = D->theta[rh];
        f = a * f + w->mv[t];
        w->fv[t] = f;
    }
    seqk__titans_exp_row(w->lm[n - 1], w->lm, n, w->mu);
    seqk__titans_exp_row(w->lb[n - 1], w->lb, n, w->bn);
    if (!full) { /* g = Gmix's last row by its row recurrence, one row at a time */
        float *g = w->gv, *e = w->Rv;
        for (int64_t t = 0; t < n; t++) {
            const float a = w->av[t];
            seqk__titans_exp_row(w->lm[t], w->lm, t, e);
            for (int64_t s = 0; s < t; s++) g[s] = a * g[s] + e[s];
            g[t] = 1.0f;
        }
        return;
    }
    for (int64_t u = 0; u < n; u++) {
        float *dm = w->Dm + u * n, *db = w->Db + u * n, *gx = w->Gx + u * n;
        const float *gp = w->Gx + (u - 1) * n;
        const float a = w->av[u];
        seqk__titans_exp_row(w->lm[u], w->lm, u + 1, dm);
        seqk__titans_exp_row(w->lb[u], w->lb, u + 1, db);
        for (int64_t s = 0; s < u; s++) gx[s] = a * gp[s] + dm[s];
        gx[u] = 1.0f;
        for (int64_t s = u + 1; s < n; s++) dm[s] = db[s] = gx[s] = 0.0f;
    }
    memcpy(w->gv, w->Gx + (n - 1) * n, (size_t)n * sizeof(float));
}

/* G = K~ Hm - V for the loaded segment (Hm K x V, rows V apart; G n x V). */
static void seg_gerr(const seqk__chunk_view *cv, int64_t K, int64_t V, const float *Hm,
                     float *G, float *pack)
{
    const int64_t n = cv->L;
    for (int64_t i = 0; i < n; i++) {
        const float *vr = cv->Vv + i * cv->ldv;
        float *g = G + i * V;
        for (int64_t j = 0; j < V; j++) g[j] = -vr[j];
    }
    seqk__sgemm(false, false, n, V, K, 1.0f, cv->Kc, K, Hm, V, 1.0f, G, V, pack);
}

/* Asks the cache for the rows [row, row + n) of head h of x (rows of w
 * floats, H w apart): the rows of the segment a pass takes next, while it
 * works on the current one. One head's rows are 2 KiB apart at H = 8,
 * K = 64, so a segment's 64 rows of q, k, v or dout cross a page every two
 * rows and the hardware prefetcher does not follow them: without this the
 * first product to read a segment's dout (dO Gerr^T) and the loads of its
 * q, k, v waited on memory (measured: the backward ~3% faster with it at
 * B = 2, T = 4096, H = 8, K = V = 64, b = 64; spreading the requests over
 * the segment's row loops, or asking for L2 only, measured no faster). A
 * segment's rows of three inputs (48 KiB) stay in L2 for the ~0.1 ms a
 * segment takes. */
static void prefetch_seg(const float *x, int64_t row, int64_t n, int64_t h, int64_t H,
                         int64_t w)
{
    for (int64_t i = 0; i < n; i++) seqk__prefetch_floats(x + ((row + i) * H + h) * w, w);
}

/* The state after the segment [r0, r0 + n) of head h: MSn = [M'; S'] from
 * MS = [M0; S0] (2K x V; MSn may be MS) and the Mhat Hm; the segment's
 * Gerr (n x V) goes to G. */
static void seg_advance(const ttb_problem *D, int64_t r0, int64_t n, int64_t h, const float *MS,
                        const float *Hm, float *MSn, float *G, int64_t nx_row, int64_t nx_n,
                        ttb_scratch *w)
{
    const seqk__lin *P = &D->lin;
    const int64_t K = P->K, V = P->V, K2 = 2 * K, KV = K * V;
    seqk__chunk_view cv;
    seqk__chunk_load_keys(P, r0, n, h, &w->cs, &cv);
    seg_gates(D, r0, n, h, false, w);
    seg_gerr(&cv, K, V, Hm, G, w->pack);
    /* the next segment's [nx_row, nx_row + nx_n) k and v rows (nx_n = 0: none) */
    prefetch_seg(P->k, nx_row, nx_n, h, P->H, K);
    prefetch_seg(P->v, nx_row, nx_n, h, P->H, V);
    for (int64_t s = 0; s < n; s++) {
        const float *kr = cv.Kc + s * K;
        float *d = w->W2 + s * K2;
        const float a = -w->th[s] * w->gv[s], c = -w->th[s] * w->mu[s];
        for (int64_t j = 0; j < K; j++) {
            d[j] = a * kr[j];
            d[K + j] = c * kr[j];
        }
    }
    const float bL = w->bv[n - 1], fL = w->fv[n - 1], mL = w->mv[n - 1];
    for (int64_t e = 0; e < KV; e++) {
        const float m = MS[e], s = MS[KV + e];
        MSn[e] = bL * m + fL * s;
        MSn[KV + e] = mL * s;
    }
    seqk__sgemm(true, false, K2, V, n, 1.0f, w->W2, K2, G, V, 1.0f, MSn, V, w->pack);
}

/* Sum of x[i] y[i] over n floats, rows of 1024 summed in double. */
static double dot_long(const float *x, const float *y, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i += 1024) s += seqk__dot(x + i, y + i, n - i < 1024 ? n - i : 1024);
    return s;
}

/* The backward of the segment [row, row + n) of head h, with MS = [M0; S0]
 * the state before it, Hm its Mhat, w->XY the gradient of the state after it
 * (replaced by the gradient of the state before it), dHx the extra gradient
 * of its Mhat (dMhat_fin for the call's last segment when the final pos is
 * not 0; else NULL). starts: the segment starts a mini-batch (Hm = M0; dH
 * then goes into X); else dH is written to dMh (dMhat_in). Gk: its Gerr kept
 * by the state pass, or NULL (then formed here). */
static void seg_backward(const ttb_problem *D, int64_t row, int64_t n, int64_t h,
                         const float *MS, const float *Hm, const float *Gk, const float *dHx,
                         bool starts, float *dMh, int64_t nx_row, int64_t nx_n,
                         ttb_scratch *w)
{
    const seqk__lin *P = &D->lin;
    const int64_t K = P->K, V = P->V, H = P->H, K2 = 2 * K, KV = K * V, ldo = H * V;
    float *pack = w->pack;
    const float *dO = D->dout + (row * H + h) * V;
    float *X = w->XY, *Y = w->XY + KV;
    seqk__chunk_view cv;
    seqk__chunk_load(P, row, n, h, &w->cs, &cv);
    const float *Q = cv.Qs, *Kc = cv.Kc;
    seg_gates(D, row, n, h, true, w);
    const float *Gerr = Gk;
    if (!Gerr) {
        seg_gerr(&cv, K, V, Hm, w->Gerr, pack);
        Gerr = w->Gerr;
    }

    /* the n x n matrices: QK = Q K^T, DE = dO Gerr^T (lower), P1, P2, At (A^T) */
    seqk__sgemm_causal(SEQK__GEMM_LOWER_C, false, true, n, n, K, 1.0f, Q, K, Kc, K, 0.0f, w->QK, n,
                       pack);
    seqk__sgemm_causal(SEQK__GEMM_LOWER_C, false, true, n, n, V, 1.0f, dO, ldo, Gerr, V, 0.0f,
                       w->DE, n, pack);
    for (int64_t u = 0; u < n; u++) {
        const float *restrict qk = w->QK + u * n, *restrict de = w->DE + u * n,
                              *restrict gx = w->Gx + u * n;
        float *restrict p1 = w->P1 + u * n, *restrict p2 = w->P2 + u * n,
                        *restrict at = w->At + u * n;
#ifdef __AVX512F__
        /* 16 columns at a time, the ones past the diagonal zeroed by the
         * load mask (the compiler left the triangular loop below scalar:
         * ~2% of the backward at K = V = 64, b = 64); the same products */
        for (int64_t s = 0; s < n; s += 16) {
            const int64_t in = u + 1 - s, all = n - s; /* lanes on/below the diagonal, in the row */
            const __mmask16 mk = in >= 16 ? (__mmask16)0xffff
                                 : in > 0 ? (__mmask16)((1u << in) - 1u) : (__mmask16)0;
            const __mmask16 ms = all >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << all) - 1u);
            const __m512 vq = _mm512_maskz_loadu_ps(mk, qk + s), vd = _mm512_maskz_loadu_ps(mk, de + s);
            const __m512 vg = _mm512_maskz_loadu_ps(mk, gx + s);
            _mm512_mask_storeu_ps(p1 + s, ms, _mm512_mul_ps(vg, vq));
            _mm512_mask_storeu_ps(p2 + s, ms, _mm512_mul_ps(vg, vd));
            _mm512_mask_storeu_ps(at + s, ms, _mm512_mul_ps(vq, vd));
        }
#else
        for (int64_t s = 0; s <= u; s++) {
            p1[s] = gx[s] * qk[s];
            p2[s] = gx[s] * de[s];
            at[s] = qk[s] * de[s];
        }
        for (int64_t s = u + 1; s < n; s++) p1[s] = p2[s] = at[s] = 0.0f;
#endif
    }

    /* the rows the next segment of the walk, [nx_row, nx_row + nx_n), reads
     * first: dout (nx_n = 0: none); its q, k below */
    prefetch_seg(D->dout, nx_row, nx_n, h, H, V);

    /* W = [diag(g) K~ | diag(mu) K~] [X; Y] + P1^T dO */
    for (int64_t s = 0; s < n; s++) {
        const float *kr = Kc + s * K;
        float *d = w->W2 + s * K2;
        const float g = w->gv[s], mu = w->mu[s];
        for (int64_t j = 0; j < K; j++) {
            d[j] = g * kr[j];
            d[K + j] = mu * kr[j];
        }
    }
    seqk__sgemm(false, false, n, V, K2, 1.0f, w->W2, K2, w->XY, V, 0.0f, w->Wm, V, pack);
    seqk__sgemm_causal(SEQK__GEMM_UPPER_A, true, false, n, V, n, 1.0f, w->P1, n, dO, ldo, 1.0f,
                       w->Wm, V, pack);
    /* dv = theta W (rows written once, never read here: stored past the
     * cache, seqk__store_row_nt); dE = -theta W (in place) */
    for (int64_t s = 0; s < n; s++) {
        const float t = w->th[s];
        float *restrict wr = w->Wm + s * V;
        seqk__store_row_nt(D->dv + ((row + s) * H + h) * V, wr, t, V);
        for (int64_t j = 0; j < V; j++) wr[j] = -t * wr[j];
    }
    const float *dE = w->Wm;
    /* dH = K^T dE (+ dHx) */
    seqk__sgemm(true, false, K, V, n, 1.0f, Kc, K, dE, V, 0.0f, w->dH, V, pack);
    if (dHx)
        for (int64_t e = 0; e < KV; e++) w->dH[e] += dHx[e];

    prefetch_seg(P->q, nx_row, nx_n, h, H, K);
    prefetch_seg(P->k, nx_row, nx_n, h, H, K);

    /* Z = P2^T Q + diag(g) Gerr X^T + diag(mu) Gerr Y^T; dtheta; x_s = k~_s . X e_s,
     * y_s = k~_s . Y e_s */
    seqk__sgemm(false, true, n, K2, V, 1.0f, Gerr, V, w->XY, V, 0.0f, w->GXY, K2, pack);
    for (int64_t s = 0; s < n; s++) {
        const float *gx = w->GXY + s * K2, *gy = gx + K;
        w->xv[s] = seqk__dot(Kc + s * K, gx, K);
        w->yv[s] = seqk__dot(Kc + s * K, gy, K);
        float *z = w->Z + s * K;
        const float g = w->gv[s], mu = w->mu[s];
        for (int64_t j = 0; j < K; j++) z[j] = g * gx[j] + mu * gy[j];
    }
    seqk__sgemm_causal(SEQK__GEMM_UPPER_A, true, false, n, K, n, 1.0f, w->P2, n, Q, K, 1.0f, w->Z,
                       K, pack);
    for (int64_t s = 0; s < n; s++)
        D->dtheta[(row + s) * H + h] = -seqk__dot(Kc + s * K, w->Z + s * K, K);
    /* dK~ = dE H^T - diag(theta) Z */
    seqk__sgemm(false, true, n, K, V, 1.0f, dE, V, Hm, V, 0.0f, w->dKt, K, pack);
    for (int64_t s = 0; s < n; s++) {
        const float t = w->th[s];
        const float *z = w->Z + s * K;
        float *d = w->dKt + s * K;
        for (int64_t j = 0; j < K; j++) d[j] -= t * z[j];
    }

    /* dO [M0; S0]^T; zM, z; dQ~ = diag(beta) dO M0^T + diag(f) dO S0^T - P2 diag(theta) K */
    seqk__sgemm(false, true, n, K2, V, 1.0f, dO, ldo, MS, V, 0.0f, w->dOMS, K2, pack);
    float *Kth = w->QQ; /* diag(theta) K~, until the carry's product */
    for (int64_t s = 0; s < n; s++) {
        const float t = w->th[s];
        for (int64_t j = 0; j < K; j++) Kth[s * K + j] = t * Kc[s * K + j];
    }
    seqk__sgemm_causal(SEQK__GEMM_LOWER_A, false, false, n, K, n, 1.0f, w->P2, n, Kth, K, 0.0f,
                       w->dQt, K, pack);
    for (int64_t t = 0; t < n; t++) {
        const float *qr = Q + t * K, *om = w->dOMS + t * K2, *os = om + K;
        w->zM[t] = seqk__dot(qr, om, K);
        w->zv[t] = seqk__dot(qr, os, K);
        const float b = w->bv[t], f = w->fv[t];
        float *d = w->dQt + t * K;
        for (int64_t j = 0; j < K; j++) d[j] = b * om[j] + f * os[j] - d[j];
    }

    /* the gates: deta, dalpha (section 4.3) */
    const float cSX = (float)dot_long(MS + KV, X, KV), cSY = (float)dot_long(MS + KV, Y, KV);
    const float cMX = (float)dot_long(MS, X, KV);
    float rx = 0.0f, ry = 0.0f, rxp = 0.0f;
    for (int64_t u = 0; u < n; u++) w->Rv[u] = w->Rp[u] = 0.0f;
    for (int64_t t = 0; t < n; t++) {
        float sgz = 0.0f, sgr = 0.0f, sbzm = 0.0f, sbz = 0.0f, sbr = 0.0f;
        for (int64_t u = t; u < n; u++) {
            const float gx = w->Gx[u * n + t], db = w->Db[u * n + t];
            sgz += gx * w->zv[u];
            sgr += gx * w->Rv[u];
            sbzm += db * w->zM[u];
            sbz += db * w->zv[u];
            sbr += db * w->Rp[u];
        }
        const float g = w->gv[t], mu = w->mu[t], bnt = w->bn[t];
        const float mp = t > 0 ? w->mv[t - 1] : 1.0f, bp = t > 0 ? w->bv[t - 1] : 1.0f;
        const float fp = t > 0 ? w->fv[t - 1] : 0.0f;
        const int64_t rh = (row + t) * H + h;
        D->deta[rh] = mp * (sgz + g * cSX + mu * cSY) - (sgr + g * rx + mu * ry);
        D->dalpha[rh] =
            -(bp * (sbzm + bnt * cMX) + fp * (sbz + bnt * cSX) - (sbr + bnt * rxp));
        /* R_{t+1} = eta_t R_t + theta_t A_t., R'_{t+1} = a_t R'_t + R_{t+1} (u > t) */
        const float e = w->ev[t], a = w->av[t], th = w->th[t];
        for (int64_t u = t + 1; u < n; u++) {
            const float r = e * w->Rv[u] + th * w->At[u * n + t];
            w->Rv[u] = r;
            w->Rp[u] = a * w->Rp[u] + r;
        }
        rx = e * rx + th * w->xv[t];
        ry = e * ry + th * w->yv[t];
        rxp = a * rxp + rx;
    }

    /* the carry: [X; Y] <- [Q^T diag(beta) dO; Q^T diag(f) dO] + ... */
    for (int64_t t = 0; t < n; t++) {
        const float *qr = Q + t * K;
        float *d = w->QQ + t * K2;
        const float b = w->bv[t], f = w->fv[t];
        for (int64_t j = 0; j < K; j++) {
            d[j] = b * qr[j];
            d[K + j] = f * qr[j];
        }
    }
    seqk__sgemm(true, false, K2, V, n, 1.0f, w->QQ, K2, dO, ldo, 0.0f, w->prod, V, pack);
    const float bL = w->bv[n - 1], fL = w->fv[n - 1], mL = w->mv[n - 1];
    for (int64_t e = 0; e < KV; e++) {
        const float xo = X[e], yo = Y[e];
        Y[e] = w->prod[KV + e] + fL * xo + mL * yo;
        X[e] = w->prod[e] + bL * xo + (starts ? w->dH[e] : 0.0f);
    }
    if (!starts) memcpy(dMh, w->dH, (size_t)KV * sizeof(float));

    /* through the norms: dq = scale n'(q) dQ~, dk = n'(k) dK~ */
    /* (dq, dk: formed in place in dQ~, dK~'s rows, then stored past the
     * cache; scale in a local: read through P, it was loaded again after
     * every store and the loop ran scalar) */
    const bool l2 = (P->flags & SEQK__LIN_L2NORM) != 0;
    const float scale = P->scale;
    for (int64_t i = 0; i < n; i++) {
        const int64_t r = row + i;
        float *restrict dq = w->dQt + i * K, *restrict dk = w->dKt + i * K;
        float *oq = D->dq + (r * H + h) * K, *ok = D->dk + (r * H + h) * K;
        if (!l2) {
            seqk__store_row_nt(oq, dq, scale, K);
            seqk__store_row_nt(ok, dk, 1.0f, K);
            continue;
        }
        const float *restrict q = P->q + (r * H + h) * K, *k = P->k + (r * H + h) * K;
        const float *restrict kc = Kc + i * K;
        const float rq = sqrtf(seqk__dot(q, q, K) + SEQK__LIN_L2NORM_EPS);
        const float rk = sqrtf(seqk__dot(k, k, K) + SEQK__LIN_L2NORM_EPS);
        const float iq = 1.0f / rq, pq = seqk__dot(q, dq, K) * iq, pk = seqk__dot(kc, dk, K);
        for (int64_t j = 0; j < K; j++) {
            dq[j] = scale * (dq[j] - q[j] * iq * pq) * iq;
            dk[j] = (dk[j] - kc[j] * pk) / rk;
        }
        seqk__store_row_nt(oq, dq, 1.0f, K);
        seqk__store_row_nt(ok, dk, 1.0f, K);
    }
}

/* The position of (n, h) at the start of the call (validated). */
static int64_t pos_in(const ttb_problem *D, int64_t n, int64_t h)
{
    if (!D->s_in) return 0;
    return (int64_t)D->s_in[(n * D->lin.H + h) * D->E + 3 * D->lin.K * D->lin.V];
}

/* The whole backward of one (sequence n, head h). */
static void run_item(const ttb_problem *D, const ttb_plan *pl, int64_t n, int64_t h,
                     ttb_scratch *w)
{
    const seqk__lin *P = &D->lin;
    const int64_t H = P->H, K = P->K, V = P->V, KV = K * V, E2 = 2 * KV, R = pl->R, b = D->b;
    const int64_t bV = b * V;
    int64_t r0, len;
    seqk__lin_seq(P, n, &r0, &len);
    const int64_t nh = n * H + h, pos0 = pos_in(D, n, h);
    const int64_t nseg = seqk__titans_seg_count(len, pos0, b);
    const int64_t pL = (pos0 + len) % b;
    const float *blk = D->s_in ? D->s_in + nh * D->E : NULL;
    const float *Mh_in = pos0 != 0 ? blk + 2 * KV : NULL; /* pos0 != 0 only with s_in */
    /* pass 1: the states before the segments (R = 1: one after another in
     * ckpt; else the running state in seg[0], every R-th copied to ckpt) */
    float *S = R == 1 ? w->ckpt : w->seg;
    if (blk) memcpy(S, blk, (size_t)E2 * sizeof(float)); /* [M; S] */
    else memset(S, 0, (size_t)E2 * sizeof(float));
    for (int64_t j = 0; j + 1 < nseg; j++) { /* the last segment's state after it is not needed */
        if (R > 1 && j % R == 0) memcpy(w->ckpt + j / R * E2, S, (size_t)E2 * sizeof(float));
        int64_t t0, ns, t1, n1;
        seqk__titans_seg_range(j, len, pos0, b, &t0, &ns);
        seqk__titans_seg_range(j + 1, len, pos0, b, &t1, &n1);
        const float *Hm = (j == 0 && pos0 != 0) ? Mh_in : S;
        if (R == 1) { /* the state and the segment's Gerr kept */
            seg_advance(D, r0 + t0, ns, h, S, Hm, S + E2, w->gk + j * bV, r0 + t1, n1, w);
            S += E2;
        } else {
            seg_advance(D, r0 + t0, ns, h, S, Hm, S, w->Gerr, r0 + t1, n1, w);
        }
    }
    if (R > 1 && nseg > 0 && (nseg - 1) % R == 0)
        memcpy(w->ckpt + (nseg - 1) / R * E2, S, (size_t)E2 * sizeof(float));
    /* the gradient of the final state */
    const float *dso = D->ds_out ? D->ds_out + nh * D->E : NULL;
    float *X = w->XY, *Y = w->XY + KV;
    const float *dHx = NULL;
    if (dso) {
        memcpy(X, dso, (size_t)KV * sizeof(float));
        memcpy(Y, dso + KV, (size_t)KV * sizeof(float));
        if (pL == 0)
            for (int64_t e = 0; e < KV; e++) X[e] += dso[2 * KV + e];
        else dHx = dso + 2 * KV;
    } else {
        memset(w->XY, 0, (size_t)E2 * sizeof(float));
    }
    float *dsi = D->ds_in ? D->ds_in + nh * D->E : NULL;
    float *dMh = w->prod; /* dMhat_in, when segment 0 does not start a mini-batch (not in ds_in: scratch) */
    /* the reverse walk, group by group of R segments from the last */
    for (int64_t s = (nseg + R - 1) / R - 1; s >= 0; s--) {
        const int64_t j0 = s * R, cnt = nseg - j0 < R ? nseg - j0 : R;
        float *sg = R == 1 ? w->ckpt + j0 * E2 : w->seg;
        if (R > 1) {
            memcpy(sg, w->ckpt + s * E2, (size_t)E2 * sizeof(float));
            for (int64_t i = 0; i + 1 < cnt; i++) {
                const int64_t j = j0 + i;
                int64_t t0, ns;
                seqk__titans_seg_range(j, len, pos0, b, &t0, &ns);
                const float *Hm = (j == 0 && pos0 != 0) ? Mh_in : sg + i * E2;
                seg_advance(D, r0 + t0, ns, h, sg + i * E2, Hm, sg + (i + 1) * E2, w->gk + i * bV,
                            0, 0, w);
            }
        }
        for (int64_t i = cnt - 1; i >= 0; i--) {
            const seqk__titans_walk g =
                seqk__titans_walk_seg(j0, i, cnt, nseg, R, len, pos0, b);
            const float *MS = sg + i * E2;
            int64_t t1 = 0, n1 = 0; /* the walk's next segment, j0 + i - 1 */
            if (j0 + i > 0) seqk__titans_seg_range(j0 + i - 1, len, pos0, b, &t1, &n1);
            seg_backward(D, r0 + g.t0, g.n, h, MS, g.starts ? MS : Mh_in,
                         g.gerr >= 0 ? w->gk + g.gerr * bV : NULL, g.last ? dHx : NULL,
                         g.starts, dsi ? dsi + 2 * KV : dMh, r0 + t1, n1, w);
        }
    }
    if (!dsi) return;
    memcpy(dsi, X, (size_t)E2 * sizeof(float)); /* dM_0, dS_0 */
    if (pos0 == 0) memset(dsi + 2 * KV, 0, (size_t)KV * sizeof(float));
    else if (nseg == 0) { /* no tokens: dMhat_in = dMhat_fin (pL = pos0 != 0) */
        if (dHx) memcpy(dsi + 2 * KV, dHx, (size_t)KV * sizeof(float));
        else memset(dsi + 2 * KV, 0, (size_t)KV * sizeof(float));
    }
    for (int i = 0; i < SEQK__TITANS_PAD; i++) dsi[3 * KV + i] = 0.0f;
}

static size_t workspace_floats(const seqk__lin *P, int64_t b, int64_t longest_len, int threads)
{
    return make_plan(P, b, longest_len).scratch * (size_t)threads;
}

static seqk_status backward_cpu(seqk_context *ctx, const ttb_problem *D)
{
    const seqk__lin *P = &D->lin;
    const int threads = seqk__threads(ctx);
    const int64_t longest = seqk__lin_longest(P);
    const ttb_plan pl = make_plan(P, D->b, longest);
    float *ws = NULL;
    seqk_status st = seqk__workspace(
        FN, ctx, workspace_floats(P, D->b, longest, threads) * sizeof(float) + 256, (void **)&ws);
    if (st) return st;
    ws = (float *)seqk__align_up((uintptr_t)ws, 32);
    const int64_t H = P->H;
#pragma omp parallel num_threads(threads)
    {
        ttb_scratch w;
        scratch_init(&w, ws + pl.scratch * (size_t)seqk__omp_thread(), P, D->b, &pl);
#pragma omp for schedule(dynamic, 1)
        for (int64_t item = 0; item < P->N * H; item++) run_item(D, &pl, item / H, item % H, &w);
        seqk__stream_fence(); /* dq, dk, dv's streamed rows, before the region ends */
    }
    return SEQK_SUCCESS;
}

/* ---- validation and dispatch ------------------------------------------------------ */

static size_t fbytes(int64_t rows, int64_t width) { return (size_t)(rows * width) * sizeof(float); }

static seqk_status titans_backward_f32(seqk_context *ctx, int64_t B, int64_t T, int64_t H,
                                       int64_t K, int64_t V, float scale, unsigned flags,
                                       int64_t minibatch, const float *q, const float *k,
                                       const float *v, const float *eta, const float *theta,
                                       const float *alpha, const float *state_in,
                                       const float *dout, const float *dstate_out, float *dq,
                                       float *dk, float *dv, float *deta, float *dtheta,
                                       float *dalpha, float *dstate_in, const int32_t *cu_seqlens,
                                       int64_t N)
{
    const bool varlen = cu_seqlens != NULL;
    seqk_status st = seqk__titans_check_sizes(FN, ctx, SEQK_MODE_PARALLEL, B, T, H, K, V,
                                              minibatch, N, varlen);
    if (st) return st;
    if ((st = seqk__check_flags(FN, flags, SEQK__TITANS_KNOWN_FLAGS))) return st;
    if ((st = seqk__check_scale(FN, scale))) return st;
    if (!varlen) N = B;
    const int64_t rows = B * T, E = seqk__titans_state_floats(K, V);
    if (rows > 0) {
        const struct { const void *p; const char *name; } req[] = {
            {q, "q"},       {k, "k"},         {v, "v"},           {eta, "eta"},
            {theta, "theta"}, {alpha, "alpha"}, {dout, "dout"},     {dq, "dq"},
            {dk, "dk"},     {dv, "dv"},       {deta, "deta"},     {dtheta, "dtheta"},
            {dalpha, "dalpha"}};
        for (size_t i = 0; i < sizeof req / sizeof req[0]; i++)
            if ((st = seqk__check_ptr(FN, req[i].name, req[i].p))) return st;
    }
    const size_t kb = fbytes(rows * H, K), vb = fbytes(rows * H, V), tb = fbytes(rows, H),
                 sb = fbytes(N * H, E);
    const seqk__arg ins[9] = {{"q", q, kb},           {"k", k, kb},
                              {"v", v, vb},           {"eta", eta, tb},
                              {"theta", theta, tb},   {"alpha", alpha, tb},
                              {"state_in", state_in, sb}, {"dout", dout, vb},
                              {"dstate_out", dstate_out, sb}};
    const seqk__arg outs[7] = {{"dq", dq, kb},         {"dk", dk, kb},
                               {"dv", dv, vb},         {"deta", deta, tb},
                               {"dtheta", dtheta, tb}, {"dalpha", dalpha, tb},
                               {"dstate_in", dstate_in, sb}};
    if ((st = seqk__check_disjoint(FN, outs, 7, ins, 9))) return st;
    if ((st = seqk__check_backend_built(FN, ctx))) return st;
    int32_t *cu_host = NULL;
    if (varlen && (st = seqk__copy_cu_seqlens(FN, ctx, cu_seqlens, N, B, T, &cu_host))) return st;
    /* the gates' ranges and state_in's positions: read on the CPU; not checked
     * on CUDA (device memory; as the forward) */
    if (ctx->backend == SEQK_BACKEND_CPU &&
        (st = seqk__titans_check_values(FN, eta, theta, alpha, rows * H, state_in, N, H, K, V,
                                        minibatch))) {
        free(cu_host);
        return st;
    }
    ttb_problem D;
    memset(&D, 0, sizeof D);
    seqk__lin *P = &D.lin;
    seqk__titans_lin(P, B, T, H, K, V, N, minibatch, cu_host, scale, flags, q, k, v);
    D.eta = eta, D.theta = theta, D.alpha = alpha;
    D.b = minibatch, D.E = E;
    D.s_in = state_in, D.dout = dout, D.ds_out = dstate_out;
    D.dq = dq, D.dk = dk, D.dv = dv, D.deta = deta, D.dtheta = dtheta, D.dalpha = dalpha;
    D.ds_in = dstate_in;
    if (ctx->backend == SEQK_BACKEND_CPU) {
        st = backward_cpu(ctx, &D);
    } else {
#if SEQK__HAVE_CUDA
        st = seqk__cuda_titans_backward(ctx, P, eta, theta, alpha, minibatch, state_in, dout,
                                        dstate_out, dq, dk, dv, deta, dtheta, dalpha, dstate_in,
                                        cu_seqlens);
#else
        st = SEQK_ERROR_INTERNAL;
#endif
    }
    free(cu_host);
    return st;
}

seqk_status seqk_titans_backward_workspace_size(seqk_context *ctx, int64_t B, int64_t T,
                                                int64_t H, int64_t K, int64_t V,
                                                int64_t minibatch, int64_t N, size_t *bytes)
{
    static const char fn[] = "seqk_titans_backward_workspace_size";
    seqk_status st = seqk__titans_check_sizes(fn, ctx, SEQK_MODE_PARALLEL, B, T, H, K, V,
                                              minibatch, N, N > 0);
    if (!st) st = seqk__check_ptr(fn, "bytes", bytes);
    if (st) return st;
    seqk__lin P;
    memset(&P, 0, sizeof P);
    P.B = B, P.T = T, P.H = H, P.Hqk = H, P.K = K, P.V = V, P.N = N > 0 ? N : B;
#if SEQK__HAVE_CUDA
    if (ctx->backend == SEQK_BACKEND_CUDA) {
        *bytes = seqk__cuda_titans_backward_workspace(&P, minibatch);
        return SEQK_SUCCESS;
    }
#endif
    /* The kept states are not monotone in the longest sequence's length: all
     * of them up to SEQK__TT_BWD_FULL_BYTES, then ~2 sqrt(segments); the bound
     * is the larger of the plans for T and for the longest length that keeps
     * all. */
    const size_t seg_bytes = (size_t)(2 * K * V + minibatch * V) * sizeof(float);
    const int64_t cap_segs = (int64_t)(SEQK__TT_BWD_FULL_BYTES / seg_bytes);
    int64_t cap_len = (cap_segs - 1) * minibatch;
    if (cap_len > T) cap_len = T;
    if (cap_len < 0) cap_len = 0;
    const int threads = seqk__threads(ctx);
    const size_t w = workspace_floats(&P, minibatch, T, threads),
                 w2 = workspace_floats(&P, minibatch, cap_len, threads);
    *bytes = (w > w2 ? w : w2) * sizeof(float) + 256;
    return SEQK_SUCCESS;
}

/* ---- dtypes (seqk.h, "Dtypes"): the _ex entry points ---------------------- */

seqk_status seqk_titans_backward_ex(seqk_context *ctx, seqk_dtype dtype, int64_t B, int64_t T,
                                    int64_t H, int64_t K, int64_t V, float scale, unsigned flags,
                                    int64_t minibatch, const void *q, const void *k, const void *v,
                                    const float *eta, const float *theta, const float *alpha,
                                    const float *state_in, const void *dout,
                                    const float *dstate_out, void *dq, void *dk, void *dv,
                                    float *deta, float *dtheta, float *dalpha, float *dstate_in,
                                    const int32_t *cu_seqlens, int64_t N)
{
    if (dtype == SEQK_DTYPE_F32)
        return titans_backward_f32(ctx, B, T, H, K, V, scale, flags, minibatch, q, k, v, eta,
                                   theta, alpha, state_in, dout, dstate_out, dq, dk, dv, deta,
                                   dtheta, dalpha, dstate_in, cu_seqlens, N);
    const int64_t nk = seqk__dt_numel(B, T, H, K), nv = seqk__dt_numel(B, T, H, V);
    seqk__dt_tensor t[] = {
        {"q", q, nk, SEQK__DT_IN, 0, NULL},
        {"k", k, nk, SEQK__DT_IN, 0, NULL},
        {"v", v, nv, SEQK__DT_IN, 0, NULL},
        {"dout", dout, nv, SEQK__DT_IN, 0, NULL},
        {"dq", dq, nk, SEQK__DT_OUT, 0, NULL},
        {"dk", dk, nk, SEQK__DT_OUT, 0, NULL},
        {"dv", dv, nv, SEQK__DT_OUT, 0, NULL}};
    size_t ws = 0;
    const seqk_status qs =
        seqk_titans_backward_workspace_size(ctx, B, T, H, K, V, minibatch, cu_seqlens ? N : 0,
                                            &ws);
    seqk__dt_call c;
    seqk_status st = seqk__dt_begin(&c, "seqk_titans_backward_ex", ctx, dtype, t, 7,
                                    seqk__dt_ws(qs, ws));
    if (st) return st;
    st = titans_backward_f32(ctx, B, T, H, K, V, scale, flags, minibatch, t[0].f, t[1].f, t[2].f,
                             eta, theta, alpha, state_in, t[3].f, dstate_out, t[4].f, t[5].f,
                             t[6].f, deta, dtheta, dalpha, dstate_in, cu_seqlens, N);
    return seqk__dt_end(&c, st);
}

seqk_status seqk_titans_backward(seqk_context *ctx, int64_t B, int64_t T, int64_t H, int64_t K,
                                 int64_t V, float scale, unsigned flags, int64_t minibatch,
                                 const float *q, const float *k, const float *v, const float *eta,
                                 const float *theta, const float *alpha, const float *state_in,
                                 const float *dout, const float *dstate_out, float *dq, float *dk,
                                 float *dv, float *deta, float *dtheta, float *dalpha,
                                 float *dstate_in, const int32_t *cu_seqlens, int64_t N)
{
    return seqk_titans_backward_ex(ctx, SEQK_DTYPE_F32, B, T, H, K, V, scale, flags, minibatch,
                                   q, k, v, eta, theta, alpha, state_in, dout, dstate_out, dq,
                                   dk, dv, deta, dtheta, dalpha, dstate_in, cu_seqlens, N);
}

seqk_status seqk_titans_backward_workspace_size_ex(seqk_context *ctx, seqk_dtype dtype, int64_t B,
                                                   int64_t T, int64_t H, int64_t K, int64_t V,
                                                   int64_t minibatch, int64_t N, size_t *bytes)
{
    static const char fn[] = "seqk_titans_backward_workspace_size_ex";
    seqk_status st = seqk__dt_check(fn, dtype);
    if (!st) st = seqk_titans_backward_workspace_size(ctx, B, T, H, K, V, minibatch, N, bytes);
    if (st) return st;
    const int64_t nk = seqk__dt_numel(B, T, H, K), nv = seqk__dt_numel(B, T, H, V);
    const int64_t n[] = {nk, nk, nk, nk, nv, nv, nv};
    return seqk__dt_workspace_size(fn, dtype, n, 7, bytes);
}
