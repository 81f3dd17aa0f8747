/*
 * ssm/deltanet_backward.c -- the backward (training) of DeltaNet and gated
 * DeltaNet (DESIGN 3.3, 3.7), CPU; the validation and dispatch of
 * seqk_deltanet_backward. Both modes of seqk_deltanet compute one function;
 * this is its gradient, computed chunkwise.
 *
 * Forward, per sequence and head (a_t = exp(g_t), 1 without g; q~ = scale
 * n(q), k~ = n(k) with n the optional L2 norm):
 *
 *   S' = a_t S_{t-1},   S_t = (I - beta_t k~ k~^T) S' + beta_t k~ v_t^T,   o_t = S_t^T q~_t
 *
 * Adjoint (the reverse token loop; dS = dL/dS_t, starting from dstate_out):
 *
 *   dq~_t = S_t do_t;   dS += q~_t do_t^T;   u = v_t - S'^T k~;   e = dS^T k~
 *   dv_t = beta_t e,   dbeta_t = e . u,   dk~_t = beta_t (dS u - S' e)
 *   dS' = (I - beta_t k~ k~^T) dS,   dg_t = <dS', S'>,   dS_{t-1} = a_t dS'
 *
 * and dstate_in = dS_0. Through the L2 norm, x~ = x / r (r = sqrt(x.x + eps)):
 * dx = (dx~ - x~ (x~ . dx~)) / r.
 *
 * Chunkwise (chunk of L tokens; G_i the cumulative log-gate inside it;
 * Gamma_ij = exp(G_i - G_j), i >= j; S0 the state before the chunk; dS the
 * gradient of the state after it). The forward of a chunk is
 *
 *   A = strict_lower(diag(beta) (K~ K~^T .* Gamma)),   T = (I + A)^-1
 *   U = T Vb,  Vb = diag(beta) V;   W = T Kb,  Kb = diag(beta exp(G)) K~
 *   Vn = U - W S0
 *   O = diag(exp(G)) Q~ S0 + ((Q~ K~^T) .* Gamma .* M) Vn
 *   S_next = exp(G_L) S0 + (diag(exp(G_L - G)) K~)^T Vn
 *
 * The last two lines are the linear-state engine's chunk with Vn in place of
 * V, so their backward is the engine's stage, seqk__chunk_backward_stage
 * (scan/chunk_backward.c): dVn, dQ~, dK~ (through the scores and the decayed
 * keys), dS0 = Qg^T dO + exp(G_L) dS, and its gate terms. Then
 *
 *   Vn = U - W S0:   dU = dVn,   dW = -dVn S0^T,   dS0 -= W^T dVn
 *   U = T Vb, W = T Kb:   X = T^T dU (= dVb),   Y = T^T dW (= dKb)
 *     dv = diag(beta) X,   dk~ += diag(beta exp(G)) Y,
 *     dbeta_i += v_i . X_i + exp(G_i) k~_i . Y_i
 *   T = (I + A)^-1:   dT = dU Vb^T + dW Kb^T,   dA = -T^T dT T^T = -(X U^T + Y W^T)
 *     (strictly lower part only), and with M_ij = dA_ij beta_i Gamma_ij (j < i):
 *     dk~ += M K~ + M^T K~,   dbeta_i += sum_j dA_ij Gamma_ij (k~_i . k~_j)
 *
 * Two products fold away: Y = T^T dW = -T^T dVn S0^T = -X S0^T, and then
 * dA = -(X U^T - X S0^T W^T) = -X (U - W S0)^T = -X Vn^T. So the backward
 * forms neither dW nor U (U is built in Vn's buffer and W S0 subtracted in
 * place) and needs one L x L x V product for dA and one L x K x V for Y,
 * against L x L x (V + K) + L x K x V + L x L x K for the four products
 * written above (the same function; Vn is the forward's own rounding of
 * U - W S0, so no new cancellation).
 *
 * The gate gradient. d(g_t) = <dS'_t, S'_t> is ~exp(g_t) under strong decay,
 * so it is formed, as in the engine, from pairs on the two sides of t, each
 * carrying its decay (never as q~.dq~ - k~.dk~ of whole gradients, whose O(1)
 * diagonal pairs cancel to rounding): the engine's terms (queries against S0
 * and keys against dS, the strict pairs of the scores, S0 against dS) plus
 * DeltaNet's own:
 *   - the pairs of A: D_ij = dA_ij A_ij (j < i) counts for j < t <= i: added
 *     to the per-token terms as (row sum - column sum) of D, whose reverse sum
 *     over i >= t leaves exactly those pairs;
 *   - W's exp(G_j): Kb_j . Y_j counts for t <= j (the reverse sum).
 * Every term is local to the chunk (G restarts there; S0 and dS are its
 * boundary), so no pass over the whole sequence is needed.
 *
 * The chunk states S0 are recomputed (as scan/chunk_backward.c does): per
 * (sequence, head) a first pass runs the forward's chunk recurrence
 * (K~ K~^T, T, W, Vn, S_next; no outputs) keeping the state before every
 * R-th chunk; the reverse walk recomputes, segment by segment from the last,
 * the states of the segment's chunks and walks them backwards, recomputing
 * each chunk's T, W, Vn once more. R = 1 (every state kept, nothing
 * recomputed) while a sequence's states fit SEQK__DN_BWD_FULL_BYTES per
 * thread, else R ~ sqrt(chunks). With R = 1, while the states and each
 * chunk's products (T, K~ K~^T, W, Vn: 2 L^2 + L K + L V floats) fit
 * SEQK__DN_BWD_KEEP_BYTES per thread, the first pass keeps the products too
 * and the reverse walk reads them instead of recomputing them (the forward
 * substitution and four products per chunk: about a tenth of the backward).
 *
 * Work items are (sequence, head), one per thread at a time, in a fixed
 * order inside an item: the same bits for any thread count.
 *
 * With fewer (sequence, head) pairs than threads the walk is chunk-parallel
 * instead (walk_staged), in four stages over a window of chunks: (1) every
 * (chunk, head)'s state-free products (T, K~ K~^T, W, U) and scores, at once;
 * (2) the states, per (sequence, head, block of V columns): column j of
 * Vn = U - W S0 and of S_next = exp(G_L) S0 + Kd^T Vn needs only column j of
 * S0, so each block walks the chunks in order on its columns; (3) the state
 * gradients the same way from the last chunk (dVn = Kd dS + P^T dO and
 * dS0 = exp(G_L) dS + Qg^T dO - W^T dVn are column-wise too); (4) every
 * (chunk, head)'s backward from its products, S0 and dS, at once. Stage (3)
 * repeats four of the chunk backward's products on the state columns
 * (about a third more flops than the per-pair walk) to let (4) run on every
 * chunk at once. The blocks run the per-pair walk's products on fewer
 * columns (core/gemm.c: an element's bits do not depend on the columns of
 * the call), and (4) is the per-pair walk's chunk step: the same bits as the
 * per-pair walk, so the choice by thread count changes none. The per-chunk
 * arrays take (2 L^2 + L K + L V + L^2 + 2 K V) floats per (chunk, head);
 * past SEQK__DN_BWD_STAGED_BYTES of them the walk runs in windows of
 * chunks: a first pass of (1) and (2) keeps the state where a sequence
 * crosses each window's end, and the windows then run from the last, the
 * state gradient carried across their starts.
 */
#include "../core/gemm.h"
#include "../core/dtype.h"
#include "../core/vmath.h"
#include "../gpu/gpu.h"
#include "../scan/chunk.h"
#include "deltanet.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char FN[] = "seqk_deltanet_backward";

/* Per thread, the most bytes of one sequence's chunk states kept whole (R = 1). */
#ifndef SEQK__DN_BWD_FULL_BYTES
#define SEQK__DN_BWD_FULL_BYTES (8 << 20)
#endif
/* Per thread, the most bytes of one sequence's states and chunk products
 * kept by the first pass (with R = 1). */
#ifndef SEQK__DN_BWD_KEEP_BYTES
#define SEQK__DN_BWD_KEEP_BYTES (32 << 20)
#endif
/* The most bytes of the chunk-parallel walk's per-chunk arrays at once (all
 * heads' of a window of chunks); more chunks than fit are walked in windows
 * (walk_staged). P->stage_bytes overrides it. */
#ifndef SEQK__DN_BWD_STAGED_BYTES
#define SEQK__DN_BWD_STAGED_BYTES ((size_t)256 << 20)
#endif
/* The narrowest column block of the staged walk's state recurrences. */
#define SEQK__DN_BWD_MIN_VW 16

static size_t rnd8(size_t n) { return (n + 7) / 8 * 8; }

typedef struct {
    seqk__lin lin;        /* q, k, v, g, s_in, sizes, flags (SEQK__LIN_L2NORM) */
    const float *beta;    /* [B*T, H] */
    const float *dout;    /* [B*T, H, V] */
    const float *ds_out;  /* [N, H, K, V] or NULL */
    float *dq, *dk, *dv;  /* [B*T, H, K|V] */
    float *dbeta, *dg;    /* [B*T, H]; dg NULL without g */
    float *ds_in;         /* [N, H, K, V] or NULL */
} dnb_problem;

typedef struct {
    int64_t L, E;        /* chunk size, floats of a state (K V) */
    int64_t R, nckpt;    /* checkpoint spacing, checkpoints of the longest sequence */
    bool keep;           /* the first pass keeps every chunk's products (R = 1) */
    size_t prod_fl;      /* floats of one chunk's products: Tm, KK [L,L], W [L,K], Vn [L,V] */
    size_t ll, lk, lv;   /* their parts (rounded up to 8 floats) */
    size_t chunk_fl;     /* the forward's chunk scratch */
    size_t pack_fl;      /* sgemm packing */
    size_t scratch;      /* floats per thread */
    bool staged;         /* chunk-parallel (walk_staged), else a walk per (sequence, head) */
    int64_t nvb, vw;     /* staged: the state's column blocks and their width */
    int64_t nchb;        /* staged: chunks of all sequences, at most */
    size_t item_fl;      /* staged: floats per (chunk, head): products, scores, S0, dS */
    seqk__chunk_windows win; /* staged: windows of chunks (global index) */
} dnb_plan;

static dnb_plan make_plan(const seqk__lin *P, int64_t longest_len, int threads)
{
    dnb_plan pl;
    const int64_t L = P->chunk, K = P->K, V = P->V;
    pl.L = L;
    pl.E = K * V;
    const int64_t nch = (longest_len + L - 1) / L;
    seqk__chunk_ckpt_plan(nch, pl.E, SEQK__DN_BWD_FULL_BYTES, &pl.R, &pl.nckpt);
    pl.ll = rnd8((size_t)(L * L)), pl.lk = rnd8((size_t)(L * K)), pl.lv = rnd8((size_t)(L * V));
    pl.prod_fl = pl.ll * 2 + pl.lk + pl.lv;
    pl.keep = pl.R == 1 && (size_t)nch * ((size_t)pl.E + pl.prod_fl) * sizeof(float) <=
                               (size_t)SEQK__DN_BWD_KEEP_BYTES;
    /* Chunk-parallel when there are fewer (sequence, head) pairs than
     * threads (a walk per pair would leave threads idle) and the sequences
     * span several chunks (B T / L + N: the same bound in a workspace query,
     * before cu_seqlens is known). Its state recurrences split the V columns
     * into blocks of whole sgemm panels, as the forward's split driver. */
    pl.nchb = P->B * P->T / L + P->N;
    pl.staged = threads > 1 && P->N * P->H < threads && pl.nchb > 2 * P->N;
    pl.nvb = 1, pl.vw = V;
    pl.item_fl = pl.prod_fl + pl.ll + 2 * rnd8((size_t)pl.E);
    pl.win.fit = pl.win.nwin = pl.win.wch = 0;
    if (pl.staged) {
        const int64_t nvb = (threads + P->N * P->H - 1) / (P->N * P->H);
        int64_t vw = (V + nvb - 1) / nvb;
        vw = (vw + SEQK__DN_BWD_MIN_VW - 1) / SEQK__DN_BWD_MIN_VW * SEQK__DN_BWD_MIN_VW;
        pl.vw = vw;
        pl.nvb = (V + vw - 1) / vw;
        pl.win = seqk__chunk_windows_plan(
            pl.nchb, P->stage_bytes ? P->stage_bytes : SEQK__DN_BWD_STAGED_BYTES,
            (size_t)P->H * pl.item_fl * sizeof(float), 1);
        pl.R = 1, pl.nckpt = 0, pl.keep = false; /* no per-thread states */
    }
    int64_t m = L > K ? L : K;
    if (V > m) m = V;
    pl.pack_fl = seqk__sgemm_pack_floats(m, m, m);
    pl.chunk_fl = seqk__chunk_scratch_floats(L, K, V);
    const size_t l = (size_t)L, k = (size_t)K, v = (size_t)V, e = (size_t)pl.E;
    pl.scratch = rnd8(pl.chunk_fl) + rnd8(pl.pack_fl) + rnd8(l) * 8 /* beta row eq ek diag gt bt */ +
                 rnd8(l * l) * 5 /* Tm KK Gm dA dP */ + rnd8(l * k) * 5 /* Kb W dQ dK Y */ +
                 rnd8(l * (k > v ? k : v)) /* tmp */ +
                 rnd8(l * v) * 3 /* Vn dVn X */ +
                 rnd8(e) * (size_t)(2 + pl.nckpt + pl.R) /* dS S0t ckpt seg */ +
                 (pl.keep ? pl.prod_fl * (size_t)pl.nckpt : 0) /* the kept products */;
    return pl;
}

/* The staged walk's shared arrays after the threads' scratch: items
 * [wch, H] of item_fl floats (a window's), with windows (nwin > 1) ckpt
 * [nwin, H, E] and dcarry [2, H, E], then first [N + 1] (int64). */
static size_t staged_floats(const seqk__lin *P, const dnb_plan *pl)
{
    if (!pl->staged) return 0;
    const size_t he = rnd8((size_t)P->H * (size_t)pl->E);
    return (size_t)(pl->win.wch * P->H) * pl->item_fl +
           (pl->win.nwin > 1 ? (size_t)pl->win.nwin * he + 2 * he : 0) +
           rnd8((size_t)(P->N + 1) * 2);
}

static size_t workspace_floats(const seqk__lin *P, int64_t longest_len, int threads)
{
    const dnb_plan pl = make_plan(P, longest_len, threads);
    return pl.scratch * (size_t)threads + staged_floats(P, &pl);
}

/* One thread's buffers. */
typedef struct {
    seqk__chunk_scratch cs; /* the forward's chunk scratch (cs.pack = pack) */
    float *pack;
    float *beta, *row, *eq, *ek, *diag, *gt, *bt; /* [L] */
    float *Tm, *KK, *Gm, *dA, *dP;                /* [L,L] */
    float *Kb, *W, *dQ, *dK, *tmp, *Y;            /* [L,K] (tmp [L, max(K, V)]) */
    float *Vn, *dVn, *X;                          /* [L,V] */
    float *dS;                                    /* [E] */
    float *S0t;                                   /* [V,K] the state before the chunk, transposed */
    float *ckpt;                                  /* [nckpt, E] */
    float *seg;                                   /* [R, E] */
    float *prod;                                  /* [nckpt, prod_fl] when keep */
    float *Tm0, *KK0, *W0, *Vn0;                  /* the scratch's own product buffers */
} dnb_scratch;

static void scratch_init(dnb_scratch *b, float *base, const seqk__lin *P, const dnb_plan *pl)
{
    const size_t l = (size_t)pl->L, k = (size_t)P->K, v = (size_t)P->V, e = (size_t)pl->E;
    float *p = base;
    seqk__chunk_scratch_init(&b->cs, p, pl->L, P->K, P->V);
    p += rnd8(pl->chunk_fl);
#define TAKE(field, n) (b->field = p, p += rnd8(n))
    TAKE(pack, pl->pack_fl);
    TAKE(beta, l), TAKE(row, l), TAKE(eq, l), TAKE(ek, l), TAKE(diag, l), TAKE(gt, l);
    TAKE(bt, l);
    TAKE(Tm, l * l), TAKE(KK, l * l), TAKE(Gm, l * l), TAKE(dA, l * l), TAKE(dP, l * l);
    TAKE(Kb, l * k), TAKE(W, l * k), TAKE(dQ, l * k), TAKE(dK, l * k);
    TAKE(tmp, l * (k > v ? k : v)); /* [L, max(K, V)]: the engine's stage's scratch */
    TAKE(Y, l * k);
    TAKE(Vn, l * v), TAKE(dVn, l * v), TAKE(X, l * v);
    TAKE(dS, e);
    TAKE(S0t, e);
    TAKE(ckpt, e * (size_t)pl->nckpt);
    TAKE(seg, e * (size_t)pl->R);
    b->prod = pl->keep ? p : NULL;
#undef TAKE
    b->cs.pack = b->pack;
    b->Tm0 = b->Tm, b->KK0 = b->KK, b->W0 = b->W, b->Vn0 = b->Vn;
}

/* Points the product buffers (Tm, KK, W, Vn) at the prod_fl floats p (kept
 * products), or (p NULL) back at the scratch's own. */
static void point_products(dnb_scratch *b, const dnb_plan *pl, float *p)
{
    if (!p) {
        b->Tm = b->Tm0, b->KK = b->KK0, b->W = b->W0, b->Vn = b->Vn0;
        return;
    }
    b->Tm = p, p += pl->ll;
    b->KK = p, p += pl->ll;
    b->W = p, p += pl->lk;
    b->Vn = p;
}

/* Points the product buffers at the kept products of chunk c, or (c < 0)
 * back at the scratch's own. */
static void use_products(dnb_scratch *b, const dnb_plan *pl, int64_t c)
{
    point_products(b, pl, c < 0 ? NULL : b->prod + (size_t)c * pl->prod_fl);
}

/* beta and, with gates, Gamma (Gm: exp(G_i - G_j), j < i) of the loaded
 * chunk: what the backward of A needs beside the products. */
static void chunk_beta_gamma(const dnb_problem *D, const seqk__chunk_view *cv, int64_t row,
                             int64_t h, bool gamma, dnb_scratch *b)
{
    const int64_t L = cv->L, H = D->lin.H;
    for (int64_t i = 0; i < L; i++) b->beta[i] = D->beta[(row + i) * H + h];
    if (gamma && cv->G)
        for (int64_t i = 1; i < L; i++) /* j < i */
            seqk__exp_gates(cv->G, cv->Gl, i, cv->G[i], cv->Gl[i], -1.0f, b->Gm + i * L);
}

/* The forward of the loaded chunk cv (tokens [row, row + L) of head h) up to
 * Vn: beta, T (Tm), Kb, W and Vn = U - W S0 (S0 NULL: zero; U = T Vb formed
 * in Vn's buffer). With kk,
 * also K~ K~^T (KK) on the strictly lower part; with gamma, Gm: for the
 * backward of A. X serves as Vb's buffer. */
static void chunk_forward(const dnb_problem *D, const seqk__chunk_view *cv, int64_t row,
                          int64_t h, const float *S0, bool kk, bool gamma, dnb_scratch *b)
{
    const seqk__lin *P = &D->lin;
    const int64_t L = cv->L, K = P->K, V = P->V;
    chunk_beta_gamma(D, cv, row, h, gamma, b);
    seqk__sgemm_causal(SEQK__GEMM_LOWER_C, false, true, L, L, K, 1.0f, cv->Kc, K, cv->Kc, K, 0.0f,
                       b->Tm, L, b->pack);
    if (kk)
        for (int64_t i = 1; i < L; i++)
            memcpy(b->KK + i * L, b->Tm + i * L, (size_t)i * sizeof(float));
    seqk__dn_forward_substitution(b->Tm, L, b->beta, cv->G, cv->Gl, b->row);
    /* Vb = diag(beta) V (in X), Kb = diag(beta exp(G)) K~ */
    if (cv->G) seqk__exp_gates(cv->G, cv->Gl, L, 0.0f, 0.0f, 1.0f, b->eq);
    for (int64_t i = 0; i < L; i++) {
        const float bi = b->beta[i], fk = cv->G ? bi * b->eq[i] : bi;
        const float *vi = cv->Vv + i * cv->ldv, *ki = cv->Kc + i * K;
        float *xb = b->X + i * V, *kb = b->Kb + i * K;
        for (int64_t j = 0; j < V; j++) xb[j] = bi * vi[j];
        for (int64_t j = 0; j < K; j++) kb[j] = fk * ki[j];
    }
    seqk__sgemm_causal(SEQK__GEMM_LOWER_A, false, false, L, V, L, 1.0f, b->Tm, L, b->X, V, 0.0f,
                       b->Vn, V, b->pack);
    seqk__sgemm_causal(SEQK__GEMM_LOWER_A, false, false, L, K, L, 1.0f, b->Tm, L, b->Kb, K, 0.0f,
                       b->W, K, b->pack);
    if (S0) seqk__sgemm(false, false, L, V, K, -1.0f, b->W, K, S0, V, 1.0f, b->Vn, V, b->pack);
}

/* S_next = exp(G_L) S + Kd^T Vn (after chunk_forward); Snext may be S. */
static void advance(const seqk__lin *P, const seqk__chunk_view *cv, dnb_scratch *b, const float *S,
                    float *Snext)
{
    const int64_t K = P->K, V = P->V, E = K * V;
    /* the step folded into the product's epilogue (sgemm's beta = a on C = S) */
    if (Snext != S) memcpy(Snext, S, (size_t)E * sizeof(float));
    seqk__sgemm(true, false, K, V, cv->L, 1.0f, cv->Kd, K, b->Vn, V, cv->a, Snext, V, b->pack);
}

/* The backward of one loaded chunk (tokens [row, row + L) of head h): from
 * b->dS (the gradient of the state after it) and S0 (the state before it;
 * NULL = zero), writes the chunk's rows of dq, dk, dv, dbeta, dg and leaves in
 * b->dS the gradient of the state before it (no_ds: leaves b->dS as it is,
 * the staged walk has every chunk's). kept: b's product buffers already hold
 * the chunk's products (the first pass kept them). Pm: the chunk's scores
 * (seqk__chunk_scores), or NULL: formed here. */
static void chunk_backward(const dnb_problem *D, const seqk__chunk_view *cv, int64_t row,
                           int64_t h, const float *S0, bool kept, const float *Pm, bool no_ds,
                           dnb_scratch *b)
{
    const seqk__lin *P = &D->lin;
    const int64_t L = cv->L, K = P->K, V = P->V, H = P->H;
    float *pack = b->pack, *dS = b->dS;
    const float *dO = D->dout + (row * H + h) * V; /* rows H V apart: asked for now */
    for (int64_t i = 0; i < L; i++) seqk__prefetch_floats(dO + i * H * V, V);
    if (kept) chunk_beta_gamma(D, cv, row, h, true, b);
    else chunk_forward(D, cv, row, h, S0, true, true, b);
    /* the engine's stage with Vn as the values */
    if (!Pm) {
        seqk__chunk_scores(cv, K, NULL, b->cs.P, pack);
        Pm = b->cs.P;
    }
    /* S0^T once, for dQ's state term (the stage) and dW below */
    if (S0) seqk__transpose(K, V, S0, V, b->S0t, K);
    seqk__chunk_bwd sb = {b->dVn, b->dQ, b->dK, b->dP, b->tmp, b->eq, b->ek, b->diag,
                          b->gt, b->bt, 0.0f, pack, NULL, NULL, no_ds, false,
                          S0 ? b->S0t : NULL, false};
    seqk__chunk_backward_stage(cv, K, V, Pm, dO, H * V, b->Vn, V, S0, dS, &sb);
    /* Vn = U - W S0: dS0 -= W^T dVn (also at a zero S0: dstate_in) */
    if (!no_ds) seqk__sgemm(true, false, K, V, L, -1.0f, b->W, K, b->dVn, V, 1.0f, dS, V, pack);
    /* X = T^T dVn (T lower: T^T upper); Y = T^T dW = -X S0^T (zero at a zero S0) */
    seqk__sgemm_causal(SEQK__GEMM_UPPER_A, true, false, L, V, L, 1.0f, b->Tm, L, b->dVn, V, 0.0f,
                       b->X, V, pack);
    if (S0) seqk__sgemm(false, false, L, K, V, -1.0f, b->X, V, b->S0t, K, 0.0f, b->Y, K, pack);
    /* dA = -(X U^T + Y W^T) = -X Vn^T, strictly lower part */
    seqk__sgemm_causal(SEQK__GEMM_LOWER_C, false, true, L, L, V, -1.0f, b->X, V, b->Vn, V, 0.0f,
                       b->dA, L, pack);
    /* per token: dv, dbeta (U and W parts), dk~ and the gate term of W;
     * then M (in dA's place), A's part of dbeta and of the gate terms */
    float *dbeta = b->row;
    for (int64_t i = 0; i < L; i++) {
        const float bi = b->beta[i];
        const float *xi = b->X + i * V, *vi = cv->Vv + i * cv->ldv;
        dbeta[i] = seqk__dot(vi, xi, V);
        seqk__store_row_nt(D->dv + ((row + i) * H + h) * V, xi, bi, V);
        if (S0) {
            const float *yi = b->Y + i * K, *ki = cv->Kc + i * K;
            const float ky = seqk__dot(ki, yi, K), f = bi * b->eq[i];
            dbeta[i] += b->eq[i] * ky;
            b->gt[i] += f * ky; /* Kb_i . Y_i: counts for t <= i */
            float *dk = b->dK + i * K;
            for (int64_t j = 0; j < K; j++) dk[j] += f * yi[j];
        }
    }
    for (int64_t i = 0; i < L; i++) {
        float *m = b->dA + i * L;
        const float *kk = b->KK + i * L, *gm = b->Gm + i * L;
        const float bi = b->beta[i];
        float db = 0.0f, rs = 0.0f;
        for (int64_t j = 0; j < i; j++) {
            const float m0 = cv->G ? m[j] * gm[j] : m[j];
            db += m0 * kk[j];
            const float mij = bi * m0, d = mij * kk[j]; /* D_ij = dA_ij A_ij */
            rs += d;
            b->gt[j] -= d;
            m[j] = mij;
        }
        b->gt[i] += rs;
        dbeta[i] += db;
        for (int64_t j = i; j < L; j++) m[j] = 0.0f;
    }
    /* dk~ += M K~ + M^T K~ */
    seqk__sgemm_causal(SEQK__GEMM_LOWER_A, false, false, L, K, L, 1.0f, b->dA, L, cv->Kc, K, 1.0f,
                       b->dK, K, pack);
    seqk__sgemm_causal(SEQK__GEMM_UPPER_A, true, false, L, K, L, 1.0f, b->dA, L, cv->Kc, K, 1.0f,
                       b->dK, K, pack);
    if (D->dg) {
        seqk__chunk_gate_grad(L, b->gt, b->bt, sb.Dterm, D->dg + row * H + h, H);
        if (!S0) D->dg[row * H + h] = 0.0f; /* a zero state's decay: 0 exactly (as the engine) */
    }
    /* the raw gradients: dq = scale n'(q) dQ~, dk = n'(k) dK~; dbeta */
    const bool l2 = (P->flags & SEQK__LIN_L2NORM) != 0;
    for (int64_t i = 0; i < L; i++) {
        const int64_t r = row + i;
        D->dbeta[r * H + h] = dbeta[i];
        float *dq = b->dQ + i * K, *dk = b->dK + i * K;
        float *oq = D->dq + (r * H + h) * K, *ok = D->dk + (r * H + h) * K;
        if (!l2) {
            seqk__store_row_nt(oq, dq, P->scale, K);
            seqk__store_row_nt(ok, dk, 1.0f, K);
            continue;
        }
        /* x~ = x / r: dx = (dx~ - x~ (x~ . dx~)) / r, with dx~ = scale dQ~ for q;
         * formed in place in dQ~, dK~'s rows, then stored past the cache */
        const float *q = P->q + (r * H + h) * K, *kc = cv->Kc + i * K;
        const float rq = sqrtf(seqk__dot(q, q, K) + SEQK__LIN_L2NORM_EPS);
        const float iq = 1.0f / rq, pq = seqk__dot(q, dq, K) * iq, pk = seqk__dot(kc, dk, K);
        const float rk = sqrtf(seqk__dot(P->k + (r * H + h) * K, P->k + (r * H + h) * K, K) +
                               SEQK__LIN_L2NORM_EPS);
        const float sq = P->scale * iq, ik = 1.0f / rk;
        for (int64_t j = 0; j < K; j++) {
            dq[j] = sq * (dq[j] - q[j] * iq * pq);
            dk[j] = (dk[j] - kc[j] * pk) * ik;
        }
        seqk__store_row_nt(oq, dq, 1.0f, K);
        seqk__store_row_nt(ok, dk, 1.0f, K);
    }
}

/* The whole backward of one (sequence n, head h). */
static void run_item(const dnb_problem *D, const dnb_plan *pl, int64_t n, int64_t h,
                     dnb_scratch *b)
{
    const seqk__lin *P = &D->lin;
    const int64_t H = P->H, E = pl->E, Lc = pl->L, R = pl->R;
    int64_t r0, len;
    seqk__lin_seq(P, n, &r0, &len);
    const int64_t nch = (len + Lc - 1) / Lc, nh = n * H + h;
    const bool zero_start = P->s_in == NULL;
    /* pass 1: the states before the chunks (R = 1: one after another in
     * ckpt; else the running state in seg[0], every R-th copied to ckpt) */
    float *S = R == 1 ? b->ckpt : b->seg;
    if (P->s_in) memcpy(S, P->s_in + nh * E, (size_t)E * sizeof(float));
    else memset(S, 0, (size_t)E * sizeof(float));
    seqk__chunk_view cv;
    /* each chunk asks for the next one's rows (seqk__chunk_fetch): in pass 1
     * the keys and values of the next chunk (loaded here: not the last), in
     * the reverse walk q, k, v and dout of the one before */
    seqk__chunk_fetch f;
    seqk__chunk_fetch_begin(&f);
    for (int64_t c = 0; c + 1 < nch; c++) { /* the last chunk's state after it is not needed */
        seqk__chunk_fetch_step(&f, P, NULL, SEQK__FETCH_K | SEQK__FETCH_V, 0, r0 + (c + 1) * Lc,
                               c + 2 < nch ? Lc : 0, h, 1);
        if (R > 1 && c % R == 0) memcpy(b->ckpt + c / R * E, S, (size_t)E * sizeof(float));
        seqk__chunk_load_keys(P, r0 + c * Lc, Lc, h, &b->cs, &cv);
        if (pl->keep) use_products(b, pl, c); /* computed into the chunk's kept slot */
        chunk_forward(D, &cv, r0 + c * Lc, h, (c == 0 && zero_start) ? NULL : S, pl->keep, false, b);
        if (R == 1) {
            advance(P, &cv, b, S, S + E);
            S += E;
        } else {
            advance(P, &cv, b, S, S);
        }
    }
    if (R > 1 && nch > 0 && (nch - 1) % R == 0)
        memcpy(b->ckpt + (nch - 1) / R * E, S, (size_t)E * sizeof(float));
    /* dS_T */
    if (D->ds_out) memcpy(b->dS, D->ds_out + nh * E, (size_t)E * sizeof(float));
    else memset(b->dS, 0, (size_t)E * sizeof(float));
    /* the reverse walk, segment by segment */
    for (int64_t s = (nch + R - 1) / R - 1; s >= 0; s--) {
        const int64_t c0 = s * R, cs = nch - c0 < R ? nch - c0 : R;
        float *seg = R == 1 ? b->ckpt + c0 * E : b->seg;
        if (R > 1) {
            memcpy(seg, b->ckpt + s * E, (size_t)E * sizeof(float));
            for (int64_t j = 0; j + 1 < cs; j++) {
                const int64_t c = c0 + j;
                seqk__chunk_load_keys(P, r0 + c * Lc, Lc, h, &b->cs, &cv);
                chunk_forward(D, &cv, r0 + c * Lc, h, (c == 0 && zero_start) ? NULL : seg + j * E,
                              false, false, b);
                advance(P, &cv, b, seg + j * E, seg + (j + 1) * E);
            }
        }
        for (int64_t j = cs - 1; j >= 0; j--) {
            const int64_t c = c0 + j, row = r0 + c * Lc;
            const int64_t L = len - c * Lc < Lc ? len - c * Lc : Lc;
            seqk__chunk_fetch_step(&f, P, D->dout,
                                   SEQK__FETCH_Q | SEQK__FETCH_K | SEQK__FETCH_V |
                                       SEQK__FETCH_DOUT,
                                   1, row - Lc, c > 0 ? Lc : 0, h, 1);
            /* and the state before that chunk (R = 1: kept by pass 1, past
             * the caches; as the linear-state backward) */
            if (R == 1 && c > 0) {
                seqk__chunk_fetch_blocks(&f, b->ckpt + (c - 1) * E, E, 1, E, false);
                if (pl->keep) /* and its products kept by pass 1 */
                    seqk__chunk_fetch_blocks(&f, b->prod + (size_t)(c - 1) * pl->prod_fl,
                                             (int64_t)pl->prod_fl, 1, (int64_t)pl->prod_fl,
                                             false);
            }
            seqk__chunk_load(P, row, L, h, &b->cs, &cv);
            const bool kept = pl->keep && c + 1 < nch; /* the last chunk was not in pass 1 */
            use_products(b, pl, kept ? c : -1);
            chunk_backward(D, &cv, row, h, (c == 0 && zero_start) ? NULL : seg + j * E, kept,
                           NULL, false, b);
        }
    }
    seqk__chunk_fetch_end(&f);
    use_products(b, pl, -1);
    if (D->ds_in) memcpy(D->ds_in + nh * E, b->dS, (size_t)E * sizeof(float));
}

/* ---- the chunk-parallel walk (fewer (sequence, head) pairs than threads) ---------- */

/* Per (chunk, head) of a window: the chunk's products (Tm, KK, W, Vn:
 * prod_fl floats), its scores P [L,L], S0 [K,V] the state before it and dS
 * [K,V] the gradient of the state after it. */
typedef struct {
    float *prod, *P, *S0, *dS;
} dnb_item;

static dnb_item item_at(float *items, const dnb_plan *pl, int64_t i)
{
    float *p = items + (size_t)i * pl->item_fl;
    dnb_item it;
    it.prod = p, p += pl->prod_fl;
    it.P = p, p += pl->ll;
    it.S0 = p, p += rnd8((size_t)pl->E);
    it.dS = p;
    return it;
}

/* Chunk c (global index) of sequence n: its first row and length. */
static void chunk_rows(const seqk__lin *P, const int64_t *first, int64_t n, int64_t c,
                       int64_t *row, int64_t *L)
{
    int64_t r0, len;
    seqk__lin_seq(P, n, &r0, &len);
    *row = r0 + (c - first[n]) * P->chunk;
    *L = r0 + len - *row < P->chunk ? r0 + len - *row : P->chunk;
}

/* Copies columns [v0, v0 + w) of the K x V state src (NULL: zeros) into dst,
 * times a (a = 1: a copy; else each element's one product, as dS *= a). */
static void copy_cols(const float *src, float *dst, int64_t K, int64_t V, int64_t v0, int64_t w,
                      float a)
{
    for (int64_t i = 0; i < K; i++) {
        float *d = dst + i * V + v0;
        if (!src) {
            memset(d, 0, (size_t)w * sizeof(float));
            continue;
        }
        const float *s = src + i * V + v0;
        if (a == 1.0f) memcpy(d, s, (size_t)w * sizeof(float));
        else
            for (int64_t j = 0; j < w; j++) d[j] = s[j] * a;
    }
}

/* (1) The state-free products of item ch (chunk ch / H, head ch % H; slot
 * ch - i0): T, K~ K~^T, W, U (in Vn's place) as the first pass computes
 * them, and (scores) the chunk's scores. */
static void stage_products(const dnb_problem *D, const dnb_plan *pl, const int64_t *first,
                           float *items, int64_t i0, int64_t ch, bool scores, dnb_scratch *b)
{
    const seqk__lin *P = &D->lin;
    const int64_t H = P->H, c = ch / H, h = ch % H, n = seqk__chunk_seq(first, P->N, c);
    int64_t row, L;
    chunk_rows(P, first, n, c, &row, &L);
    seqk__chunk_view cv;
    if (scores) seqk__chunk_load(P, row, L, h, &b->cs, &cv);
    else seqk__chunk_load_keys(P, row, L, h, &b->cs, &cv);
    const dnb_item it = item_at(items, pl, ch - i0);
    point_products(b, pl, it.prod);
    chunk_forward(D, &cv, row, h, NULL, true, false, b);
    point_products(b, pl, NULL);
    if (scores) seqk__chunk_scores(&cv, P->K, NULL, it.P, b->pack);
}

/* (2) The states of (sequence n, head h) on columns [v0, v0 + w) through its
 * chunks [s0, s1) of the window [c0, c1): Vn = U - W S0 and the state after
 * each chunk, as the first pass forms them (the same products on fewer
 * columns: the same bits per element), each chunk's S0 into its item. The
 * state before s0: ckpt_in's (the sequence began before the window), else
 * state_in or zeros; the state after the window's last chunk into ckpt_out
 * when the sequence runs on past it (and ckpt_out is given). */
static void stage_states(const dnb_problem *D, const dnb_plan *pl, const int64_t *first,
                         int64_t n, int64_t h, int64_t v0, int64_t w, int64_t c0, int64_t c1,
                         float *items, const float *ckpt_in, float *ckpt_out, dnb_scratch *b)
{
    const seqk__lin *P = &D->lin;
    const int64_t H = P->H, K = P->K, V = P->V, E = pl->E, L0 = pl->L;
    const int64_t s0 = first[n] > c0 ? first[n] : c0, s1 = first[n + 1] < c1 ? first[n + 1] : c1;
    if (s1 <= s0) return;
    const float *init = s0 > first[n] ? ckpt_in + h * E : P->s_in ? P->s_in + (n * H + h) * E : NULL;
    copy_cols(init, item_at(items, pl, (s0 - c0) * H + h).S0, K, V, v0, w, 1.0f);
    for (int64_t c = s0; c < s1; c++) {
        int64_t row, L;
        chunk_rows(P, first, n, c, &row, &L);
        const dnb_item it = item_at(items, pl, (c - c0) * H + h);
        float *Wm = it.prod + 2 * pl->ll, *Vn = Wm + pl->lk;
        if (c > first[n] || P->s_in)
            seqk__sgemm(false, false, L, w, K, -1.0f, Wm, K, it.S0 + v0, V, 1.0f, Vn + v0, V,
                        b->pack);
        /* where the state after chunk c goes: the next chunk's item, or the
         * checkpoint at the window's end; none after the sequence's last */
        float *next = NULL;
        if (c + 1 < s1) next = item_at(items, pl, (c + 1 - c0) * H + h).S0;
        else if (c + 1 < first[n + 1] && ckpt_out) next = ckpt_out + h * E;
        if (!next) continue;
        seqk__chunk_view cv;
        seqk__chunk_load_keys(P, row, L0, h, &b->cs, &cv); /* a full chunk: not the last */
        copy_cols(it.S0, next, K, V, v0, w, 1.0f);
        seqk__sgemm(true, false, K, w, L0, 1.0f, cv.Kd, K, Vn + v0, V, cv.a, next + v0, V, b->pack);
    }
}

/* (3) The state gradients of (sequence n, head h) on columns [v0, v0 + w)
 * through its chunks [s0, s1) of the window, from the last: each chunk's
 * gradient after it into its item, then the one before it as the reverse
 * walk forms it (dVn = Kd dS + P^T dO; dS <- a dS + Qg^T dO - W^T dVn: the
 * same products on fewer columns). The gradient after s1 - 1: dc_in's (the
 * sequence runs on past the window), else dstate_out or zeros; the one
 * before s0 to dc_out (the sequence began before the window), else to
 * dstate_in. */
static void stage_grads(const dnb_problem *D, const dnb_plan *pl, const int64_t *first, int64_t n,
                        int64_t h, int64_t v0, int64_t w, int64_t c0, int64_t c1, float *items,
                        const float *dc_in, float *dc_out, dnb_scratch *b)
{
    const seqk__lin *P = &D->lin;
    const int64_t H = P->H, K = P->K, V = P->V, E = pl->E, nh = n * H + h;
    const int64_t s0 = first[n] > c0 ? first[n] : c0, s1 = first[n + 1] < c1 ? first[n + 1] : c1;
    if (s1 <= s0) return;
    const float *after = s1 < first[n + 1] ? dc_in + h * E : D->ds_out ? D->ds_out + nh * E : NULL;
    copy_cols(after, item_at(items, pl, (s1 - 1 - c0) * H + h).dS, K, V, v0, w, 1.0f);
    float *dVn = b->dVn; /* [L, w] */
    for (int64_t c = s1 - 1; c >= s0; c--) {
        float *before = c > s0           ? item_at(items, pl, (c - 1 - c0) * H + h).dS
                        : s0 > first[n] ? dc_out + h * E
                        : D->ds_in      ? D->ds_in + nh * E
                                        : NULL;
        if (!before) break;
        int64_t row, L;
        chunk_rows(P, first, n, c, &row, &L);
        seqk__chunk_view cv;
        seqk__chunk_load(P, row, L, h, &b->cs, &cv);
        const dnb_item it = item_at(items, pl, (c - c0) * H + h);
        const float *Wm = it.prod + 2 * pl->ll, *dO = D->dout + (row * H + h) * V + v0;
        seqk__sgemm(false, false, L, w, K, 1.0f, cv.Kd, K, it.dS + v0, V, 0.0f, dVn, w, b->pack);
        seqk__sgemm_causal(SEQK__GEMM_UPPER_A, true, false, L, w, L, 1.0f, it.P, L, dO, H * V, 1.0f,
                           dVn, w, b->pack);
        copy_cols(it.dS, before, K, V, v0, w, cv.a);
        seqk__sgemm(true, false, K, w, L, 1.0f, cv.Qg, K, dO, H * V, 1.0f, before + v0, V, b->pack);
        seqk__sgemm(true, false, K, w, L, -1.0f, Wm, K, dVn, w, 1.0f, before + v0, V, b->pack);
    }
}

/* (4) The backward of item ch from its kept products, scores, S0 and dS:
 * the per-pair walk's chunk step without its state-gradient step. */
static void stage_backward(const dnb_problem *D, const dnb_plan *pl, const int64_t *first,
                           float *items, int64_t i0, int64_t ch, dnb_scratch *b)
{
    const seqk__lin *P = &D->lin;
    const int64_t H = P->H, c = ch / H, h = ch % H, n = seqk__chunk_seq(first, P->N, c);
    int64_t row, L;
    chunk_rows(P, first, n, c, &row, &L);
    seqk__chunk_view cv;
    seqk__chunk_load(P, row, L, h, &b->cs, &cv);
    const dnb_item it = item_at(items, pl, ch - i0);
    point_products(b, pl, it.prod);
    float *own = b->dS;
    b->dS = it.dS; /* read, not written (no_ds) */
    chunk_backward(D, &cv, row, h, c == first[n] && !P->s_in ? NULL : it.S0, true, it.P, true, b);
    b->dS = own;
    point_products(b, pl, NULL);
}

/* The whole backward, chunk-parallel: chunk c of sequence n has global index
 * first[n] + c; windows of wch chunks, each through (1) the products of
 * every (chunk, head), (2) the states per (sequence, head, column block),
 * (3) the state gradients the same way, from the last chunk, and (4) every
 * (chunk, head)'s backward. With several windows, (0) first walks (1) and
 * (2) forward for the sequence that crosses each window's end, keeping its
 * state there (ckpt [nwin, H, E]); the windows then run from the last, the
 * gradient crossing a window's start carried in dcarry [2, H, E]. Each
 * chunk's backward is the per-pair walk's, on the same products, states and
 * state gradients: the same bits. */
static void walk_staged(const dnb_problem *D, const dnb_plan *pl, const int64_t *first,
                        float *items, float *ckpt, float *dcarry, dnb_scratch *b)
{
    const seqk__lin *P = &D->lin;
    const int64_t N = P->N, H = P->H, V = P->V, E = pl->E, nvb = pl->nvb, vw = pl->vw;
    const int64_t wch = pl->win.wch, nchunks = first[N], nwin = (nchunks + wch - 1) / wch;
    for (int64_t iw = 0; iw + 1 < nwin; iw++) { /* (0) */
        const int64_t c0 = iw * wch, c1 = c0 + wch, n = seqk__chunk_seq(first, N, c1 - 1);
        if (first[n + 1] <= c1) continue; /* (every thread takes the same branch) */
        const int64_t a0 = first[n] > c0 ? first[n] : c0;
#pragma omp for schedule(dynamic, 1)
        for (int64_t ch = a0 * H; ch < c1 * H; ch++)
            stage_products(D, pl, first, items, c0 * H, ch, false, b);
#pragma omp for schedule(dynamic, 1)
        for (int64_t item = 0; item < H * nvb; item++) {
            const int64_t h = item / nvb, v0 = item % nvb * vw;
            stage_states(D, pl, first, n, h, v0, V - v0 < vw ? V - v0 : vw, c0, c1, items,
                         ckpt + iw * H * E, ckpt + (iw + 1) * H * E, b);
        }
    }
    float *dc_in = dcarry, *dc_out = dcarry ? dcarry + H * E : NULL;
    for (int64_t iw = nwin - 1; iw >= 0; iw--) {
        const int64_t c0 = iw * wch, c1 = c0 + wch < nchunks ? c0 + wch : nchunks, i0 = c0 * H;
#pragma omp for schedule(dynamic, 1)
        for (int64_t ch = i0; ch < c1 * H; ch++) stage_products(D, pl, first, items, i0, ch, true, b);
#pragma omp for schedule(dynamic, 1)
        for (int64_t item = 0; item < N * H * nvb; item++) {
            const int64_t n = item / (H * nvb), h = item / nvb % H, v0 = item % nvb * vw;
            stage_states(D, pl, first, n, h, v0, V - v0 < vw ? V - v0 : vw, c0, c1, items,
                         ckpt ? ckpt + iw * H * E : NULL, NULL, b);
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t item = 0; item < N * H * nvb; item++) {
            const int64_t n = item / (H * nvb), h = item / nvb % H, v0 = item % nvb * vw;
            const int64_t w = V - v0 < vw ? V - v0 : vw;
            if (first[n] == first[n + 1]) { /* empty: dstate_in = dstate_out, once */
                if (iw == 0 && D->ds_in)
                    copy_cols(D->ds_out ? D->ds_out + (n * H + h) * E : NULL,
                              D->ds_in + (n * H + h) * E, P->K, V, v0, w, 1.0f);
                continue;
            }
            stage_grads(D, pl, first, n, h, v0, w, c0, c1, items, dc_in, dc_out, b);
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t ch = i0; ch < c1 * H; ch++) stage_backward(D, pl, first, items, i0, ch, b);
        float *t = dc_in; /* the next window reads what this one carried out */
        dc_in = dc_out, dc_out = t;
    }
}

static seqk_status backward_cpu(seqk_context *ctx, const dnb_problem *D)
{
    const seqk__lin *P = &D->lin;
    const int threads = seqk__threads(ctx);
    const dnb_plan pl = make_plan(P, seqk__lin_longest(P), threads);
    float *ws = NULL;
    seqk_status st = seqk__workspace(FN, ctx, workspace_floats(P, seqk__lin_longest(P), threads) *
                                                  sizeof(float) + 256, (void **)&ws);
    if (st) return st;
    ws = (float *)seqk__align_up((uintptr_t)ws, 32);
    const int64_t H = P->H;
    /* the staged walk's arrays (staged_floats) */
    float *items = ws + pl.scratch * (size_t)threads, *ckpt = NULL, *dcarry = NULL;
    int64_t *first = NULL;
    if (pl.staged) {
        const size_t he = rnd8((size_t)H * (size_t)pl.E);
        float *p = items + (size_t)(pl.win.wch * H) * pl.item_fl;
        if (pl.win.nwin > 1) {
            ckpt = p, p += (size_t)pl.win.nwin * he;
            dcarry = p, p += 2 * he;
        }
        first = (int64_t *)p;
        first[0] = 0;
        for (int64_t n = 0; n < P->N; n++) {
            int64_t r0, len;
            seqk__lin_seq(P, n, &r0, &len);
            first[n + 1] = first[n] + (len + pl.L - 1) / pl.L;
        }
    }
#pragma omp parallel num_threads(threads)
    {
        dnb_scratch b;
        scratch_init(&b, ws + pl.scratch * (size_t)seqk__omp_thread(), P, &pl);
        if (pl.staged) {
            walk_staged(D, &pl, first, items, ckpt, dcarry, &b);
        } else {
#pragma omp for schedule(dynamic, 1)
            for (int64_t item = 0; item < P->N * H; item++)
                run_item(D, &pl, item / H, item % H, &b);
        }
        seqk__stream_fence(); /* the rows written by seqk__store_row_nt */
    }
    return SEQK_SUCCESS;
}

/* ---- validation and dispatch ------------------------------------------------------ */

static const unsigned KNOWN_FLAGS = SEQK_DELTANET_L2NORM_QK | SEQK_DELTANET_ALLOW_NEG_EIGVAL;

static size_t fbytes(int64_t rows, int64_t width) { return (size_t)(rows * width) * sizeof(float); }

/* Whether seqk_deltanet_backward_ex runs natively in dtype
 * (gpu/deltanet_backward.cu's native path: a CUDA context, bf16 / f16; the
 * backward is the parallel mode) rather than through the converting path. */
static bool deltanet_backward_native(const seqk_context *ctx, seqk_dtype dtype)
{
    return seqk__lin_native(ctx, dtype, SEQK_MODE_PARALLEL, 0u);
}

/* The backward in fp32, or natively in a reduced dtype
 * (deltanet_backward_native): q, k, v, dout, dq, dk, dv hold elements of
 * dtype (their sizes and overlaps are measured in its bytes). */
static seqk_status deltanet_backward_run(seqk_context *ctx, seqk_dtype dtype, int64_t B,
                                         int64_t T, int64_t H, int64_t K, int64_t V, float scale,
                                         unsigned flags, const void *q, const void *k,
                                         const void *v, const float *beta, const float *g,
                                         const float *state_in, const void *dout,
                                         const float *dstate_out, void *dq, void *dk, void *dv,
                                         float *dbeta, float *dg, float *dstate_in,
                                         const int32_t *cu_seqlens, int64_t N, int64_t chunk)
{
    const bool varlen = cu_seqlens != NULL;
    seqk_status st = seqk__lin_check_sizes(FN, ctx, SEQK_MODE_PARALLEL, B, T, H, K, V, N, varlen,
                                           chunk);
    if (st) return st;
    if ((st = seqk__check_flags(FN, flags, KNOWN_FLAGS))) return st;
    if ((st = seqk__check_scale(FN, scale))) return st;
    if (!varlen) N = B;
    const int64_t rows = B * T;
    if (rows > 0) {
        const struct { const void *p; const char *name; } req[] = {
            {q, "q"},   {k, "k"},   {v, "v"},   {beta, "beta"},   {dout, "dout"},
            {dq, "dq"}, {dk, "dk"}, {dv, "dv"}, {dbeta, "dbeta"}};
        for (size_t i = 0; i < sizeof req / sizeof req[0]; i++)
            if ((st = seqk__check_ptr(FN, req[i].name, req[i].p))) return st;
        if (g && !dg)
            return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                              "%s: dg is NULL, required when g is given", FN);
    }
    if (!g && dg)
        return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT,
                          "%s: dg=%p must be NULL when g is NULL (plain DeltaNet has no gate)",
                          FN, (void *)dg);
    const size_t es = seqk_dtype_size(dtype); /* q, k, v, dout, dq, dk, dv */
    const size_t kb = (size_t)(rows * H * K) * es, vb = (size_t)(rows * H * V) * es,
                 tb = fbytes(rows, H), sb = fbytes(N * H, K * V);
    const seqk__arg ins[8] = {{"q", q, kb},       {"k", k, kb},
                              {"v", v, vb},       {"beta", beta, tb},
                              {"g", g, tb},       {"state_in", state_in, sb},
                              {"dout", dout, vb}, {"dstate_out", dstate_out, sb}};
    const seqk__arg outs[6] = {{"dq", dq, kb},       {"dk", dk, kb}, {"dv", dv, vb},
                               {"dbeta", dbeta, tb}, {"dg", dg, tb}, {"dstate_in", dstate_in, sb}};
    if ((st = seqk__check_disjoint(FN, outs, 6, ins, 8))) return st;
    if ((st = seqk__check_backend_built(FN, ctx))) return st;
    int32_t *cu_host = NULL;
    if (varlen && (st = seqk__copy_cu_seqlens(FN, ctx, cu_seqlens, N, B, T, &cu_host))) return st;
    /* the gates' values: read on the CPU; not checked on CUDA (as the forward) */
    if (ctx->backend == SEQK_BACKEND_CPU && rows > 0 &&
        ((st = seqk__dn_check_beta(FN, beta, rows * H, flags)) ||
         (g && (st = seqk__check_log_gates(FN, "g", g, rows * H))))) {
        free(cu_host);
        return st;
    }
    dnb_problem D;
    memset(&D, 0, sizeof D);
    seqk__lin *P = &D.lin;
    const int64_t L = seqk__lin_chunk(ctx->backend, SEQK_CHUNKED_DELTANET, chunk, K, V);
    seqk__dn_lin(P, B, T, H, K, V, N, L, cu_host, scale, flags, (const float *)q,
                 (const float *)k, (const float *)v, g, state_in);
    P->dtype = dtype;
    D.beta = beta, D.dout = (const float *)dout, D.ds_out = dstate_out;
    D.dq = (float *)dq, D.dk = (float *)dk, D.dv = (float *)dv;
    D.dbeta = dbeta, D.dg = dg, D.ds_in = dstate_in;
    if (dtype != SEQK_DTYPE_F32 && !deltanet_backward_native(ctx, dtype)) {
        st = seqk__fail(SEQK_ERROR_INTERNAL, "%s: %s outside the native path", FN,
                        seqk_dtype_string(dtype));
    } else if (ctx->backend == SEQK_BACKEND_CPU) {
        st = backward_cpu(ctx, &D);
    } else {
#if SEQK__HAVE_CUDA
        st = seqk__cuda_deltanet_backward(ctx, P, beta, D.dout, dstate_out, D.dq, D.dk, D.dv,
                                          dbeta, dg, dstate_in, cu_seqlens);
#else
        st = SEQK_ERROR_INTERNAL;
#endif
    }
    free(cu_host);
    return st;
}

seqk_status seqk_deltanet_backward_workspace_size(seqk_context *ctx, int64_t B, int64_t T,
                                                  int64_t H, int64_t K, int64_t V, int64_t N,
                                                  int64_t chunk, size_t *bytes)
{
    static const char fn[] = "seqk_deltanet_backward_workspace_size";
    seqk_status st = seqk__lin_check_sizes(fn, ctx, SEQK_MODE_PARALLEL, B, T, H, K, V, N, N > 0,
                                           chunk);
    if (!st) st = seqk__check_ptr(fn, "bytes", bytes);
    if (st) return st;
    seqk__lin P;
    memset(&P, 0, sizeof P);
    P.B = B, P.T = T, P.H = H, P.Hqk = H, P.K = K, P.V = V, P.N = N > 0 ? N : B;
    P.chunk = seqk__lin_chunk(ctx->backend, SEQK_CHUNKED_DELTANET, chunk, K, V);
#if SEQK__HAVE_CUDA
    if (ctx->backend == SEQK_BACKEND_CUDA) {
        *bytes = seqk__cuda_deltanet_backward_workspace(&P) + 256;
        return SEQK_SUCCESS;
    }
#endif
    /* The longest sequence is at most T (varlen: B = 1, one sequence may hold
     * all). The kept states are not monotone in its length: all of them up to
     * SEQK__DN_BWD_FULL_BYTES, then ~2 sqrt(chunks); so the bound is the
     * larger of the plans for T and for the longest length that keeps all. */
    const size_t state_bytes = (size_t)(K * V) * sizeof(float);
    const int64_t cap_chunks = (int64_t)(SEQK__DN_BWD_FULL_BYTES / state_bytes);
    const int64_t cap_len = cap_chunks * P.chunk < T ? cap_chunks * P.chunk : T;
    /* and the longest that keeps the chunks' products too */
    const dnb_plan pl1 = make_plan(&P, 1, 1);
    const int64_t keep_chunks =
        (int64_t)(SEQK__DN_BWD_KEEP_BYTES / (((size_t)pl1.E + pl1.prod_fl) * sizeof(float)));
    const int64_t keep_len = keep_chunks * P.chunk < T ? keep_chunks * P.chunk : T;
    const int threads = seqk__threads(ctx);
    size_t w = workspace_floats(&P, T, threads), w2 = workspace_floats(&P, cap_len, threads);
    const size_t w3 = workspace_floats(&P, keep_len, threads);
    if (w3 > w2) w2 = w3;
    *bytes = (w > w2 ? w : w2) * sizeof(float) + 256;
    return SEQK_SUCCESS;
}

/* ---- dtypes (seqk.h, "Dtypes"): the _ex entry points ---------------------- */

seqk_status seqk_deltanet_backward_ex(seqk_context *ctx, seqk_dtype dtype, int64_t B, int64_t T,
                                      int64_t H, int64_t K, int64_t V, float scale, unsigned flags,
                                      const void *q, const void *k, const void *v,
                                      const float *beta, const float *g, const float *state_in,
                                      const void *dout, const float *dstate_out, void *dq,
                                      void *dk, void *dv, float *dbeta, float *dg,
                                      float *dstate_in, const int32_t *cu_seqlens, int64_t N,
                                      int64_t chunk)
{
    if (dtype == SEQK_DTYPE_F32 || deltanet_backward_native(ctx, dtype))
        return deltanet_backward_run(ctx, dtype, B, T, H, K, V, scale, flags, q, k, v, beta, g,
                                     state_in, dout, dstate_out, dq, dk, dv, dbeta, dg,
                                     dstate_in, cu_seqlens, N, chunk);
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
        seqk_deltanet_backward_workspace_size(ctx, B, T, H, K, V, cu_seqlens ? N : 0, chunk, &ws);
    seqk__dt_call c;
    seqk_status st = seqk__dt_begin(&c, "seqk_deltanet_backward_ex", ctx, dtype, t, 7,
                                    seqk__dt_ws(qs, ws));
    if (st) return st;
    st = deltanet_backward_run(ctx, SEQK_DTYPE_F32, B, T, H, K, V, scale, flags, t[0].f, t[1].f,
                               t[2].f, beta, g, state_in, t[3].f, dstate_out, t[4].f, t[5].f,
                               t[6].f, dbeta, dg, dstate_in, cu_seqlens, N, chunk);
    return seqk__dt_end(&c, st);
}

seqk_status seqk_deltanet_backward(seqk_context *ctx, int64_t B, int64_t T, int64_t H, int64_t K,
                                   int64_t V, float scale, unsigned flags, const float *q,
                                   const float *k, const float *v, const float *beta,
                                   const float *g, const float *state_in, const float *dout,
                                   const float *dstate_out, float *dq, float *dk, float *dv,
                                   float *dbeta, float *dg, float *dstate_in,
                                   const int32_t *cu_seqlens, int64_t N, int64_t chunk)
{
    return seqk_deltanet_backward_ex(ctx, SEQK_DTYPE_F32, B, T, H, K, V, scale, flags, q, k, v,
                                     beta, g, state_in, dout, dstate_out, dq, dk, dv, dbeta, dg,
                                     dstate_in, cu_seqlens, N, chunk);
}

seqk_status seqk_deltanet_backward_workspace_size_ex(seqk_context *ctx, seqk_dtype dtype,
                                                     int64_t B, int64_t T, int64_t H, int64_t K,
                                                     int64_t V, int64_t N, int64_t chunk,
                                                     size_t *bytes)
{
    static const char fn[] = "seqk_deltanet_backward_workspace_size_ex";
    seqk_status st = seqk__dt_check(fn, dtype);
    if (!st) st = seqk_deltanet_backward_workspace_size(ctx, B, T, H, K, V, N, chunk, bytes);
    if (st) return st;
    const int64_t nk = seqk__dt_numel(B, T, H, K), nv = seqk__dt_numel(B, T, H, V);
    const int64_t n[] = {nk, nk, nk, nk, nv, nv, nv};
    if ((st = seqk__dt_workspace_size(fn, dtype, n, 7, bytes))) return st;
#if SEQK__HAVE_CUDA
    if (deltanet_backward_native(ctx, dtype)) {
        /* the native backward (gpu/deltanet_backward.cu) takes no copies: its
         * own bytes, or the converting path's answer if larger (an upper bound) */
        seqk__lin P;
        memset(&P, 0, sizeof P);
        P.B = B, P.T = T, P.H = H, P.Hqk = H, P.K = K, P.V = V, P.N = N > 0 ? N : B;
        P.chunk = seqk__lin_chunk(ctx->backend, SEQK_CHUNKED_DELTANET, chunk, K, V);
        P.dtype = dtype;
        const size_t native = seqk__cuda_deltanet_backward_workspace(&P) + 256;
        if (native > *bytes) *bytes = native;
    }
#endif
    return SEQK_SUCCESS;
}
