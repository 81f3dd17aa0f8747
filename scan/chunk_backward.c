/*
 * scan/chunk_backward.c -- the backward of the linear-state engine
 * (DESIGN 3.7), CPU: the gradients of linear attention, retention, gated
 * retention and Mamba2 (both modes compute the same function, so one
 * backward serves both).
 *
 * Per head, with q~ = scale phi(q), k~ = phi(k), v' = v_scale v (the value
 * the state stores), the forward is S_t = a_t S_{t-1} + k~_t v'_t^T,
 * o_t = S_t^T q~_t. Its adjoint is the reverse recurrence
 *
 *   dS_{t-1} = a_t dS_t + q~_t do_t^T            dS_T = dL/d(final state)
 *   dq~_t = S_t do_t,   dk~_t = dS_t v'_t,   dv'_t = dS_t^T k~_t
 *
 * and, chunkwise (chunk of L tokens; G_i the cumulative log-decay inside it;
 * Q~, K~, V' its rows; S0 the state before it; dS the gradient of the state
 * after it; P = (Q~ K~^T) .* D and dP = (dO V'^T) .* D with the forward's
 * decay mask D_ij = exp(G_i - G_j), i >= j):
 *
 *   dV' = P^T dO + diag(exp(G_L - G)) K~ dS
 *   dQ~ = dP K~ + diag(exp(G)) dO S0^T
 *   dK~ = dP^T Q~ + diag(exp(G_L - G)) V' dS^T
 *   dS0 = (diag(exp(G)) Q~)^T dO + exp(G_L) dS
 *
 * Folded (a chunk of moderate decay, cv->fold; scan/chunk.c): with
 * D_ij = exp(G_i) exp(-G_j), dP is kept without D and its factors move onto
 * the rows the chunk has: Kd / a = diag(exp(-G)) K~, Qg = diag(exp(G)) Q~,
 *
 *   dQ~ = diag(exp(G)) (dP Kd / a + dO S0^T)
 *   dK~ = diag(exp(-G)) (dP^T Qg + a V' dS^T)
 *
 * two row scalings instead of the mask's L^2/2 exponentials, its two passes
 * over P and dP and the decayed copies of dO and V'. With a gate gradient
 * too: its intra-chunk pairs are taken from E = dP_raw .* P (the scores as
 * the forward formed them), one rounded number per pair counted once on
 * each side, so they cancel exactly whether or not the products fold (when
 * the pairs were q~_i . dq~_i against k~_j . dk~_j, folding gave each side
 * its own factors' roundings and mild gates' gradients lost a factor ~5:
 * 1.7e-6 against 4.9e-7 on a two-layer model's gate projection).
 *
 * The log-decays: d(log a_t) = <dS_t, a_t S_{t-1}>. DESIGN 3.7 writes it as
 * sum_{i >= t} (q~_i . dq~_i - k~_i . dk~_i) + <S_T, dS_T> (exp(G_i)
 * multiplies every q~_i, exp(-G_j) every k~_j): exact, but each token's
 * q~_i . dq~_i and k~_i . dk~_i share the O(1) diagonal pair (q~_i . k~_i)
 * (do_i . v'_i), which cancels to rounding while the true gradient under
 * strong decay is ~exp(g): relative errors ~1e-7 / exp(g). So per chunk the
 * pairs on the two sides of t are summed instead, each with its decay (see
 * chunk_backward): the strictly lower part of dP, the queries against S0,
 * the keys against dS, and S0 against dS; one reverse scan over the chunk's
 * tokens (the scan primitive, a = 1) gives every t, with no global pass.

 * The normaliser (SEQK__LIN_NORMALIZE): o = num / (den + eps) with
 * den_i = q~_i . z_i and z the same recurrence as S with a value of ones, so
 * the backward runs on the value [v' | 1] (W = V + 1 columns) and the state
 * [S | z] (K x W), with the output gradient [do / (den + eps),
 * -(do . num) / (den + eps)^2], num and den recomputed per chunk.
 *
 * The chunk states S0 are recomputed by the forward's stages. Without the
 * normaliser both walks keep the states and the state gradient transposed,
 * [V,K] (S^T = a S^T + V'^T Kd, dS^T = a dS^T + dO^T Qg: each element the
 * same FMAs in the same order as untransposed, so the same bits): dO S0^T
 * and V' dS^T read them in place and only Kd dS packs one transposed, one
 * 64 x 64 / 128 x 128 transpose per chunk instead of two. Per (sequence,
 * head) a first pass keeps the state before every R-th chunk (a checkpoint);
 * the reverse walk then recomputes, segment by segment from the last, the
 * states before each chunk of the segment and walks those chunks backwards.
 * R = 1 (every state kept, nothing recomputed, the first pass writing them in
 * place) while a sequence's states fit SEQK__LIN_BWD_FULL_BYTES per thread, else
 * R ~ sqrt(chunks): about 2 sqrt(T / L) states per thread instead of T / L.
 *
 * Both passes ask for what the next chunk step reads while this step's
 * products run (seqk__chunk_fetch, scan/chunk.c): pass 1 the next chunk's
 * k and v rows, the reverse walk the previous chunk's q, k, v and dout rows
 * and its kept states (MiBs behind by then, past the caches).
 *
 * Work items are (sequence, group of hg consecutive heads), one thread
 * each, in a fixed order inside an item: the group's heads are walked
 * together, chunk by chunk, each head with its own states (one head's rows
 * are H K floats apart, so a head walked alone touches a new page every
 * token or two and misses the TLB on nearly every row; hg heads share each
 * page, as in the forward's fused driver: 3-15 % less time, paired, on the
 * AMD VM, 2026-12-06). Each head's arithmetic is the same however the heads
 * are grouped: the same bits for any thread count. With fewer pairs than threads
 * (and no normaliser) the walk is chunk-parallel instead (walk_staged):
 * every chunk's U = Kd^T V' and Y = Qg^T dO at once, per pair a forward scan
 * of U and a reverse scan of Y over the chunks (the scan primitive), then
 * every chunk's backward at once; the per-pair walk takes the same steps
 * (the scan primitive's one-row step on U and Y), so the two give the same
 * bits and the choice by thread count changes none (past a byte limit, in
 * windows of chunks: see walk_staged). With fewer q/k heads than
 * heads (Mamba2's groups), a q/k head's dq and dk sum its heads' rows in
 * head order: when there are enough (sequence, q/k head) items for the
 * threads, one item walks its heads in turn and adds their rows into the
 * output as it goes (a group's rows stay in cache); else the heads' rows go
 * to per-head rows in the workspace, summed afterwards. Same order, same
 * bits.
 *
 * Summation orders of the gate gradient's terms (fixed, the same for any
 * thread count and either walk): a row sum of E = dP .* P in 16 lanes
 * (lane l takes j = l, l + 16, .. in order) and the tree (l, l + 8),
 * (l, l + 4), (l, l + 2), (l, l + 1) (pair_sums); <S0, dS> as seqk__dot over
 * the transposed arrays (without the normaliser; the element order w K + k),
 * as seqk__dot over [K,W] with it.
 */
#include "chunk.h"

#include "../core/gemm.h"
#include "../core/vmath.h"
#include "scan.h"

#include <string.h>

/* Per thread, the most bytes of one sequence's chunk states kept whole
 * (R = 1); a compile-time knob so that the tests can build the
 * checkpointed path on small shapes. */
#ifndef SEQK__LIN_BWD_FULL_BYTES
#define SEQK__LIN_BWD_FULL_BYTES (8 << 20)
#endif

/* The most bytes of the chunk-parallel backward's states and state
 * gradients at once (all heads' of a window of chunks); more chunks than fit
 * are walked in windows (walk_staged). P->stage_bytes overrides it (the
 * tests' small windows). */
#ifndef SEQK__LIN_BWD_STAGED_BYTES
#define SEQK__LIN_BWD_STAGED_BYTES ((size_t)256 << 20)
#endif

static size_t rnd8(size_t n) { return (n + 7) / 8 * 8; }

static bool with_z(const seqk__lin *P) { return (P->flags & SEQK__LIN_NORMALIZE) != 0; }

typedef struct {
    int64_t L;       /* chunk size */
    int64_t W;       /* value columns: V, + 1 with the normaliser */
    int64_t E;       /* floats of a state: K * W */
    int64_t R;       /* chunks per segment (checkpoint spacing) */
    int64_t nckpt;   /* checkpoints of the longest sequence */
    bool head_buf;   /* dq, dk per head in the workspace (Hqk < H) */
    bool group_items; /* Hqk < H, per-pair walk: one item per (sequence, q/k head) walks
                       * its heads in order, adding their dq, dk rows into the output
                       * (no per-head rows, no head-sum pass) */
    bool staged;     /* chunk-parallel (walk_staged), else a walk per (sequence, head group) */
    int64_t wch;     /* staged: chunks per window (of the global chunk index) */
    int64_t nwin;    /* staged: windows, at most (of nchb chunks) */
    int64_t hg;      /* heads walked together, chunk by chunk (run_group) */
    int64_t nchb;    /* chunks of all sequences, at most (B T / L + N: the same bound in a
                      * workspace query, before cu_seqlens is known) */
    size_t chunk_fl; /* floats of the forward's chunk scratch */
    size_t pack_fl;  /* floats of the sgemm packing buffer */
    size_t scratch;  /* floats per thread */
} bplan;

int64_t seqk__lin_longest(const seqk__lin *P)
{
    if (!P->cu) return P->T;
    int64_t m = 0;
    for (int64_t n = 0; n < P->N; n++)
        if (P->cu[n + 1] - P->cu[n] > m) m = P->cu[n + 1] - P->cu[n];
    return m;
}

void seqk__chunk_ckpt_plan(int64_t nch, int64_t E, size_t full_bytes, int64_t *R,
                           int64_t *nckpt)
{
    if ((size_t)nch * (size_t)E * sizeof(float) <= full_bytes) {
        *R = 1; /* every state before a chunk kept */
        *nckpt = nch > 0 ? nch : 1;
    } else {
        *R = 2;
        while (*R * *R < nch) (*R)++;
        *nckpt = (nch + *R - 1) / *R;
    }
}

static bplan make_plan(const seqk__lin *P, int threads)
{
    bplan pl;
    const int64_t L = P->chunk, K = P->K;
    pl.L = L;
    pl.W = P->V + (with_z(P) ? 1 : 0);
    pl.E = K * pl.W;
    /* Chunk-parallel when there are fewer (sequence, head) pairs than threads
     * (a walk per pair would leave threads idle), the sequences span several
     * chunks and there is no normaliser (its dO' needs the states first). In
     * windows of as many chunks as keep their states and state gradients
     * within the byte limit, of equal size. */
    pl.nchb = P->B * P->T / L + P->N;
    pl.staged = threads > 1 && P->N * P->H < threads && !with_z(P) && pl.nchb > 2 * P->N;
    {
        const seqk__chunk_windows w = seqk__chunk_windows_plan(
            pl.nchb, P->stage_bytes ? P->stage_bytes : SEQK__LIN_BWD_STAGED_BYTES,
            2 * (size_t)P->H * (size_t)pl.E * sizeof(float), 1);
        pl.wch = w.wch, pl.nwin = w.nwin;
    }
    pl.head_buf = P->Hqk != P->H;
    /* Group items when they keep every thread busy: as many as threads, or
     * enough for the dynamic schedule to even out. Both ways add a q/k head's
     * rows in head order, so they give the same bits. */
    {
        const int64_t items = P->N * P->Hqk;
        pl.group_items = pl.head_buf && !pl.staged &&
                         (items % threads == 0 || items >= 4 * (int64_t)threads);
    }
    /* Heads walked together (run_group): one head's rows are H K floats
     * apart, so a head alone touches a new page every token or two and the
     * TLB misses on nearly every row; hg heads walked chunk by chunk share
     * each page (as the forward's fused driver does). As many as still leave
     * about two items per thread (a group item: at most its q/k head's
     * heads), and no more than keep every state of their sequences (R = 1)
     * within the byte limit. So hg > 1 only with R = 1, and R > 1 only with
     * hg = 1. */
    const int64_t nch = (seqk__lin_longest(P) + L - 1) / L;
    const size_t head_bytes = (size_t)(nch > 0 ? nch : 1) * (size_t)pl.E * sizeof(float);
    int64_t hgw = 1; /* before the byte limit */
    if (!pl.staged) {
        hgw = seqk__lin_head_group(P, threads, 1);
        if (pl.group_items && hgw > P->H / P->Hqk) hgw = P->H / P->Hqk;
    }
    pl.hg = hgw;
    while (pl.hg > 1 && (size_t)pl.hg * head_bytes > SEQK__LIN_BWD_FULL_BYTES) pl.hg--;
    seqk__chunk_ckpt_plan(nch, pl.E, SEQK__LIN_BWD_FULL_BYTES, &pl.R, &pl.nckpt);
    if (pl.staged) pl.R = 1, pl.nckpt = 0; /* no per-thread states */
    int64_t nmax = L > pl.W ? L : pl.W, kmax = nmax;
    if (K > nmax) nmax = K, kmax = K;
    pl.pack_fl = seqk__sgemm_pack_floats(nmax, nmax, kmax);
    pl.chunk_fl = seqk__chunk_scratch_floats(L, K, pl.W);
    const size_t l = (size_t)L, k = (size_t)K, w = (size_t)pl.W, e = (size_t)pl.E;
    pl.scratch = rnd8(pl.chunk_fl) + rnd8(pl.pack_fl) + rnd8(l * w) * 4 /* Va, dOa, dVa, Oa */ +
                 rnd8(l * l) * 2 /* dP, Dm */ + rnd8(l * k) * 2 /* dQ, dK */ +
                 rnd8(l * (k > w ? k : w)) /* tmp */ + rnd8(l) * 3 + rnd8(2 * l) +
                 rnd8(e) /* Y */;
    /* per head: dS, ckpt, seg */
    size_t heads = rnd8(e * (size_t)pl.hg) * (1 + (size_t)(pl.nckpt + pl.R));
    if (!P->cu && P->N != P->B) {
        /* a varlen workspace query (no cu_seqlens yet, N != B): shorter
         * sequences may walk up to hgw heads at once with every state kept,
         * hg' nch' E floats within the byte limit, so at most
         * (hg' E + 7)(nch' + 2) <= limit / 4 + 2 hgw E + 7 nch + 14 */
        const size_t most = SEQK__LIN_BWD_FULL_BYTES / sizeof(float) + 2 * e * (size_t)hgw +
                            7 * (size_t)(nch > 0 ? nch : 1) + 14;
        if (most > heads) heads = most;
    }
    pl.scratch += heads;
    return pl;
}

/* The chunk-parallel backward's shared arrays after the head buffers:
 * states, ys [wch, H, E] (a window's), acoef [nchb, H], with windows
 * (nwin > 1) ckpt [nwin, H, E] and dcarry [2, H, E], then first [N + 1]
 * (int64). */
static size_t staged_floats(const seqk__lin *P, const bplan *pl)
{
    if (!pl->staged) return 0;
    const size_t ne = (size_t)(pl->wch * P->H) * (size_t)pl->E, he = (size_t)P->H * pl->E;
    return rnd8(ne) * 2 + rnd8((size_t)(pl->nchb * P->H)) +
           (pl->nwin > 1 ? rnd8((size_t)pl->nwin * he) + 2 * rnd8(he) : 0) +
           (size_t)(P->N + 1) * 2;
}

size_t seqk__lin_backward_workspace(const seqk__lin *P, int threads)
{
    const bplan pl = make_plan(P, threads);
    size_t floats = pl.scratch * (size_t)threads;
    if (pl.head_buf) floats += 2 * (size_t)(P->B * P->T * P->H * P->K);
    floats += staged_floats(P, &pl);
    return floats * sizeof(float) + 256;
}

/* One thread's buffers. */
typedef struct {
    seqk__chunk_scratch cs; /* the forward's chunk scratch (cs.pack = pack) */
    float *pack;
    float *Va, *dOa, *dVa, *Oa; /* [L,W] */
    float *dP, *Dm;             /* [L,L] */
    float *dQ, *dK;             /* [L,K] */
    float *tmp;                 /* [L, max(K, W)] */
    float *eq, *ek;             /* [L] exp(G_i), exp(G_{L-1} - G_i) */
    float *gsum, *gt;           /* [2L] dP's diagonal, B_j; [L] the gate gradient's terms */
    float *dS;                  /* [E]: the walked head's (run_group points it into dSh) */
    float *Y;                   /* [E]: a chunk's U = Kd^T Va or Y = Qg^T dO */
    float *dSh;                 /* [hg, E] */
    float *ckpt;                /* [hg, nckpt, E] */
    float *seg;                 /* [hg, R, E] */
} bscratch;

static void scratch_init(bscratch *b, float *base, const seqk__lin *P, const bplan *pl)
{
    const size_t l = (size_t)pl->L, k = (size_t)P->K, w = (size_t)pl->W, e = (size_t)pl->E;
    float *p = base;
    seqk__chunk_scratch_init(&b->cs, p, pl->L, P->K, pl->W);
    p += rnd8(pl->chunk_fl);
#define TAKE(field, n) (b->field = p, p += rnd8(n))
    TAKE(pack, pl->pack_fl);
    TAKE(Va, l * w);
    TAKE(dOa, l * w);
    TAKE(dVa, l * w);
    TAKE(Oa, l * w);
    TAKE(dP, l * l);
    TAKE(Dm, l * l);
    TAKE(dQ, l * k);
    TAKE(dK, l * k);
    TAKE(tmp, l * (k > w ? k : w));
    TAKE(eq, l);
    TAKE(ek, l);
    TAKE(gsum, 2 * l);
    TAKE(gt, l);
    TAKE(Y, e);
    TAKE(dSh, e * (size_t)pl->hg);
    TAKE(ckpt, e * (size_t)pl->hg * (size_t)pl->nckpt);
    TAKE(seg, e * (size_t)pl->hg * (size_t)pl->R);
#undef TAKE
    b->dS = b->dSh;
    b->cs.pack = b->pack;
}

/* A K x W state from a K x V block and (with the normaliser) a K vector:
 * dst[i, j] = s[i, j], dst[i, V] = z[i]; NULL arrays read as zeros. */
static void state_join(const seqk__lin *P, const bplan *pl, const float *s, const float *z,
                       float *dst)
{
    const int64_t K = P->K, V = P->V, W = pl->W;
    for (int64_t i = 0; i < K; i++) {
        if (s) memcpy(dst + i * W, s + i * V, (size_t)V * sizeof(float));
        else memset(dst + i * W, 0, (size_t)V * sizeof(float));
        if (W > V) dst[i * W + V] = z ? z[i] : 0.0f;
    }
}

static void state_split(const seqk__lin *P, const bplan *pl, const float *src, float *s, float *z)
{
    const int64_t K = P->K, V = P->V, W = pl->W;
    for (int64_t i = 0; i < K; i++) {
        if (s) memcpy(s + i * V, src + i * W, (size_t)V * sizeof(float));
        if (z && W > V) z[i] = src[i * W + V];
    }
}

/* One chunk loaded (with the queries, or only what stage 1 reads): the
 * forward's view, and the value rows the state stores (V' with a column of
 * ones under the normaliser) in *va (rows *ldva apart). */
static void load(const seqk__lin *P, const bplan *pl, int64_t row, int64_t L, int64_t h,
                 bool with_q, bscratch *b, seqk__chunk_view *cv, const float **va,
                 int64_t *ldva)
{
    if (with_q) seqk__chunk_load(P, row, L, h, &b->cs, cv);
    else seqk__chunk_load_keys(P, row, L, h, &b->cs, cv);
    if (!with_z(P)) {
        *va = cv->Vv, *ldva = cv->ldv;
        return;
    }
    const int64_t V = P->V, W = pl->W;
    for (int64_t i = 0; i < L; i++) {
        memcpy(b->Va + i * W, cv->Vv + i * cv->ldv, (size_t)V * sizeof(float));
        b->Va[i * W + V] = 1.0f;
    }
    *va = b->Va, *ldva = W;
}

/* U = Kd^T Va: the forward's stage 1 for one chunk (its local state). */
static void local_state(const seqk__lin *P, const bplan *pl, const seqk__chunk_view *cv,
                        const float *va, int64_t ldva, float *U, float *pack)
{
    seqk__sgemm(true, false, P->K, pl->W, cv->L, 1.0f, cv->Kd, P->K, va, ldva, 0.0f, U, pl->W,
                pack);
}

/* Snext = a S + Kd^T Va: stage 1, then stage 2's step on the scan primitive
 * (the chunk-parallel backward scans the same U over chunks: the same bits).
 * tr: the states kept transposed, [W,K] (see run_group): U^T = Va^T Kd, each
 * element the same FMAs in the same order p = 0, 1, .. (the micro kernel's
 * a b + c with the factors swapped), so the same bits transposed. Snext may
 * be S (one running state); else U goes straight to Snext and the step
 * reads S in place (SEQK__SCAN_KEEP_CARRY: no copy of S first). */
static void advance(const seqk__lin *P, const bplan *pl, const seqk__chunk_view *cv,
                    const float *va, int64_t ldva, bscratch *b, float *S, float *Snext, bool tr)
{
    float *U = Snext != S ? Snext : b->Y;
    if (tr)
        seqk__sgemm(true, false, pl->W, P->K, cv->L, 1.0f, va, ldva, cv->Kd, P->K, 0.0f, U, P->K,
                    b->pack);
    else
        local_state(P, pl, cv, va, ldva, U, b->pack);
    if (Snext != S)
        seqk__scan_rows(1, pl->E, pl->E, SEQK__SCAN_KEEP_CARRY, &cv->a, 1, U, pl->E, Snext, pl->E,
                        S);
    else
        seqk__scan_rows(1, pl->E, pl->E, 0, &cv->a, 1, U, pl->E, NULL, 0, S);
}

/* The backward of stage 3 and of the chunk-state step for one chunk, for any
 * value rows (V' here, DeltaNet's Vnew in ssm/deltanet_backward.c): the
 * formulas of the top comment and the gate gradient's terms; see
 * scan/chunk.h. */
/* diag(f) X for the chunk's rows X [L,W] (rows *ld apart), in buf [L,W]
 * (*ld = W then); without decay (f all ones) X itself. */
static const float *decayed_rows(const seqk__chunk_view *cv, const float *f, const float *X,
                                 int64_t *ld, int64_t W, float *buf)
{
    if (!cv->G) return X;
    for (int64_t i = 0; i < cv->L; i++)
        for (int64_t j = 0; j < W; j++) buf[i * W + j] = f[i] * X[i * *ld + j];
    *ld = W;
    return buf;
}

/* The gate gradient's intra-chunk pairs: E_ij = dP_ij Pm_ij (j < i, L x L
 * rows L apart), g_i = (row sum - column sum)_i of E into g [L]; col [L]
 * scratch. Each E_ij is one product (rounded once), added to its column's
 * sum in row order i = 0, 1, .. and to its row's sum. The row sum runs in
 * 16 lanes, lane l taking j = l, l + 16, .. in order, then the fixed tree
 * (l, l + 8), (l, l + 4), (l, l + 2), (l, l + 1): the same order in every
 * build (the AVX-512 registers or the plain loop), so 16 pairs a step
 * instead of one scalar chain of i. */
static void pair_sums(int64_t L, const float *dP, const float *Pm, float *col, float *g)
{
    for (int64_t j = 0; j < L; j++) col[j] = 0.0f;
#ifdef __AVX512F__
    /* the column sums in registers up to L = 64 (a masked store read back
     * by the next row's masked load does not forward: it waited for the
     * store to retire, row after row); the same adds in the same order */
    enum { COLV = 4 };
    __m512 colv[COLV];
    for (int c = 0; c < COLV; c++) colv[c] = _mm512_setzero_ps();
    const bool in_regs = L <= 16 * COLV;
#endif
    for (int64_t i = 0; i < L; i++) {
        const float *dp = dP + i * L, *pm = Pm + i * L;
#ifdef __AVX512F__
        __m512 acc = _mm512_setzero_ps();
        for (int64_t j = 0; j < i; j += 16) {
            /* the last block's lanes past i - 1 masked off: untouched */
            const __mmask16 m = i - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (i - j)) - 1);
            const __m512 e =
                _mm512_mul_ps(_mm512_maskz_loadu_ps(m, dp + j), _mm512_maskz_loadu_ps(m, pm + j));
            acc = _mm512_mask_add_ps(acc, m, acc, e);
            if (in_regs) {
                __m512 *cv = &colv[j / 16];
                *cv = _mm512_mask_add_ps(*cv, m, *cv, e);
            } else {
                _mm512_mask_storeu_ps(col + j,
                                      m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, col + j), e));
            }
        }
        /* the tree: halves of 8, 4, 2, 1 lanes */
        const __m256 s8 = _mm256_add_ps(
            _mm512_castps512_ps256(acc),
            _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1)));
        const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
        const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
        g[i] = _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
#else
        float lane[16] = {0.0f};
        for (int64_t j = 0; j < i; j++) {
            const float e = dp[j] * pm[j];
            lane[j % 16] += e;
            col[j] += e;
        }
        for (int w = 8; w >= 1; w /= 2)
            for (int l = 0; l < w; l++) lane[l] += lane[l + w];
        g[i] = lane[0];
#endif
    }
#ifdef __AVX512F__
    if (in_regs)
        for (int64_t j = 0; j < L; j += 16) {
            const __mmask16 m = L - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (L - j)) - 1);
            _mm512_mask_storeu_ps(col + j, m, colv[j / 16]);
        }
#endif
    for (int64_t i = 0; i < L; i++) g[i] -= col[i];
}

void seqk__chunk_backward_stage(const seqk__chunk_view *cv, int64_t K, int64_t W, const float *Pm,
                                const float *dO, int64_t ldo, const float *va, int64_t ldva,
                                const float *S0, float *dS, seqk__chunk_bwd *b)
{
    const int64_t L = cv->L;
    float *pack = b->pack, *tmp = b->tmp;
    const bool gates = !b->no_gates, fold = cv->fold;
    /* dP = dO V'^T, unmasked first (zeros above the diagonal); its diagonal
     * (dO_i . V'_i, D_ii = 1) is kept aside: the gate gradient and the
     * products below take the strictly lower part. A folded chunk keeps dP
     * without D (D_ij = exp(G_i) exp(-G_j)): the products take its factors
     * from the rows, Kd / a = diag(exp(-G)) Kc and Qg = diag(exp(G)) Qs, and
     * diag(exp(G)) / diag(exp(-G)) on dQ / dK; else D is applied after the
     * gate gradient's pairs are taken */
    seqk__chunk_view cvr = *cv; /* the raw product: no mask */
    cvr.fold = true;
    seqk__chunk_masked(&cvr, dO, ldo, va, ldva, W, NULL, b->dP, pack);
    float *diag = b->diag; /* [L] */
    for (int64_t i = 0; i < L; i++) diag[i] = b->dP[i * L + i], b->dP[i * L + i] = 0.0f;
    /* exp(G_i), exp(G_{L-1} - G_i) */
    if (cv->G) {
        seqk__exp_gates(cv->G, cv->Gl, L, 0.0f, 0.0f, 1.0f, b->eq);
        seqk__exp_gates(cv->G, cv->Gl, L, cv->G[L - 1], cv->Gl[L - 1], -1.0f, b->ek);
    } else {
        for (int64_t i = 0; i < L; i++) b->eq[i] = b->ek[i] = 1.0f;
    }
    /* The gate gradient, d(log a_t) = <dS_t, a_t S_{t-1}>, summed over the
     * pairs (token or state) on the two sides of t, each with its decay:
     *   E_ij = dP_ij P_ij (j < i): the pair (q_i k_j) of the strict parts,
     *          q~_i . dq~_i = sum_j E_ij and k~_j . dk~_j = sum_i E_ij; with
     *          g_i = (row sum - column sum)_i of E, the reverse sum over
     *          i >= t keeps exactly the pairs (i >= t > j)
     *   A_i  = exp(G_i) q~_i . (S0 dO_i)         (q_i with the state before)
     *   B_j  = exp(G_L - G_j) k~_j . (dS V'_j)   (k_j with the gradient after; j < t)
     *   D    = exp(G_L) <S0, dS>                 (the state through the chunk)
     * d(log a_t) = sum_{i >= t} (g_i + A_i) + sum_{j < t} B_j + D: a reverse
     * scan and a forward sum. No O(1) term cancels (q~_i . dq~_i -
     * k~_i . dk~_i of the whole gradients would cancel the diagonal pairs,
     * whose true sum is 0, to rounding: a relative error ~1e-7 / exp(g)
     * under strong decay; so would sum_j B_j - sum_{j >= t} B_j, as B_{L-1}
     * is O(1) against a given d(final state)). Each E_ij is one rounded
     * number counted once with + and once with -, so the pairs outside
     * (i >= t > j) cancel exactly, folded or not (E takes the scores P as
     * the forward formed them, with the decay, and the raw dP). */
    float *gt = b->gt, *bt = b->bt; /* [L]: g_i + A_i; B_j */
    if (gates) pair_sums(L, b->dP, Pm, tmp, gt);
    if (!fold) seqk__chunk_apply_mask(cv, b->D, b->dP); /* dP .* D */
    /* dV' = Kd dS + P^T dO; between the two, B_j = V'_j . (Kd dS)_j */
    const bool tr = b->tr; /* S0, dS given as S0t, dS^T [W,K] */
    const int64_t lds = tr ? K : W;
    seqk__sgemm(false, tr, L, W, K, 1.0f, cv->Kd, K, dS, lds, 0.0f, b->dVa, W, pack);
    if (gates)
        for (int64_t i = 0; i < L; i++) bt[i] = seqk__dot(va + i * ldva, b->dVa + i * W, W);
    seqk__sgemm_causal(SEQK__GEMM_UPPER_A, true, false, L, W, L, 1.0f, Pm, L, dO, ldo, 1.0f,
                       b->dVa, W, pack);
    /* dQ~ = diag(exp(G)) dO S0^T + dP K~ (strictly lower dP); folded:
     * diag(exp(G)) (dO S0^T + dP Kd / a). The state term first: A_i from it */
    float Dterm = 0.0f;
    if (S0 || b->S0t) {
        int64_t lde = ldo;
        const float *dOe = fold ? dO : decayed_rows(cv, b->eq, dO, &lde, W, tmp); /* diag(exp(G)) dO */
        if (b->S0t)
            seqk__sgemm(false, false, L, K, W, 1.0f, dOe, lde, b->S0t, K, 0.0f, b->dQ, K, pack);
        else
            seqk__sgemm(false, true, L, K, W, 1.0f, dOe, lde, S0, W, 0.0f, b->dQ, K, pack);
        if (gates) {
            for (int64_t i = 0; i < L; i++) {
                const float a = seqk__dot(cv->Qs + i * K, b->dQ + i * K, K);
                gt[i] += fold ? b->eq[i] * a : a;
            }
            /* S0 and dS in one layout, [K,W] or (tr) [W,K]: the dot's order is that layout's */
            Dterm = cv->a * seqk__dot(tr ? b->S0t : S0, dS, K * W);
        }
    }
    seqk__sgemm_causal(SEQK__GEMM_LOWER_A, false, false, L, K, L, fold ? cv->ainv : 1.0f, b->dP,
                       L, fold ? cv->Kd : cv->Kc, K, S0 || b->S0t ? 1.0f : 0.0f, b->dQ, K, pack);
    /* dK~ = dP^T Q~ (strict; folded: dP^T Qg, scaled below) */
    seqk__sgemm_causal(SEQK__GEMM_UPPER_A, true, false, L, K, L, 1.0f, b->dP, L,
                       fold ? cv->Qg : cv->Qs, K, 0.0f, b->dK, K, pack);
    /* dK~ += diag(exp(G_L - G)) V' dS^T; folded, the whole
     * diag(exp(-G)) (dP^T Qg + a V' dS^T) scaled once (below) */
    float *einv = NULL; /* folded: exp(-G_i) */
    if (fold) {
        einv = tmp;
        seqk__exp_gates(cv->G, cv->Gl, L, 0.0f, 0.0f, -1.0f, einv);
        seqk__sgemm(false, !tr, L, K, W, cv->a, va, ldva, dS, lds, 1.0f, b->dK, K, pack);
    } else {
        int64_t lde = ldva;
        const float *ve = decayed_rows(cv, b->ek, va, &lde, W, tmp);
        seqk__sgemm(false, !tr, L, K, W, 1.0f, ve, lde, dS, lds, 1.0f, b->dK, K, pack);
    }
    /* the diagonal of dP (D_ii = 1), in one pass with the folded row
     * scalings: dQ~_i = exp(G_i) dQ~_i + dP_ii K~_i, dK~_i = exp(-G_i) dK~_i
     * + dP_ii Q~_i, each product rounded, then the sum (unfolded, the factor
     * 1 is exact: the same bits as separate passes either way) */
    for (int64_t i = 0; i < L; i++) {
        const float d = diag[i], fq = fold ? b->eq[i] : 1.0f, fk = fold ? einv[i] : 1.0f;
        float *restrict dq = b->dQ + i * K, *restrict dk = b->dK + i * K;
        const float *restrict kc = cv->Kc + i * K, *restrict qs = cv->Qs + i * K;
        for (int64_t j = 0; j < K; j++) {
            const float xq = dq[j] * fq, xk = dk[j] * fk;
            dq[j] = xq + d * kc[j];
            dk[j] = xk + d * qs[j];
        }
    }
    b->Dterm = Dterm;
    /* dS0 = Qg^T dO + exp(G_L) dS */
    if (b->no_ds) return;
    /* transposed: dS^T <- a dS^T + dO^T Qg, the same FMAs per element in the
     * same order (the micro kernel's a b + c with the factors swapped) */
    float *Yd = b->Y ? b->Y : dS;
    if (!b->Y && cv->a != 1.0f)
        for (int64_t e = 0; e < K * W; e++) dS[e] *= cv->a;
    if (tr)
        seqk__sgemm(true, false, W, K, L, 1.0f, dO, ldo, cv->Qg, K, b->Y ? 0.0f : 1.0f, Yd, K,
                    pack);
    else
        seqk__sgemm(true, false, K, W, L, 1.0f, cv->Qg, K, dO, ldo, b->Y ? 0.0f : 1.0f, Yd, W,
                    pack);
    if (b->Y) seqk__scan_rows(1, K * W, K * W, 0, &cv->a, 1, b->Y, K * W, NULL, 0, dS);
}

/* d(log a_t) from the stage's terms: (sum_{i >= t} gt_i) + (sum_{j < t} bt_j)
 * + Dterm (a reverse scan and a forward sum); gt is overwritten. */
void seqk__chunk_gate_grad(int64_t L, float *gt, const float *bt, float Dterm, float *dld,
                           int64_t ld)
{
    float one = 1.0f, carry = 0.0f, before = 0.0f;
    seqk__scan_rows(L, 1, 1, SEQK__SCAN_REVERSE, &one, 0, gt, 1, gt, 1, &carry);
    for (int64_t i = 0; i < L; i++) {
        dld[i * ld] = gt[i] + before + Dterm;
        before += bt[i];
    }
}

/* The rows of one chunk's gradients in the caller's arrays. */
typedef struct {
    float *dq, *dk; /* row 0 of dq~/dk~ destinations (raw gradients written) */
    int64_t ldqk;
    int acc;        /* 0: NT-store the rows; 1: store them (a group's first head);
                     * 2: add them to what is there (its later heads) */
    float *dv;      /* dv rows (H V apart) */
    float *dvs;     /* dv_scale (H apart) or NULL */
    float *dskip;   /* dskip_tok (H apart) or NULL */
    float *dld;     /* dlogdecay (H apart) or NULL */
} brows;

/* The backward of one chunk: from dS (the gradient of the state after it)
 * and S0 (the state before it; NULL = zero), both [W,K] transposed when tr
 * (no normaliser: see run_group), writes the chunk's gradients
 * and leaves in dS the gradient of the state before it. */
static void chunk_backward(const seqk__lin *P, const seqk__lin_grad *Gr, const bplan *pl,
                           int64_t row, int64_t h, const seqk__chunk_view *cv, const float *va,
                           int64_t ldva, const float *S0, bool tr, bscratch *b,
                           const brows *out, bool no_ds)
{
    const int64_t L = cv->L, K = P->K, V = P->V, W = pl->W, H = P->H;
    float *pack = b->pack, *dS = b->dS;
    /* P = (Q~ K~^T) .* D, with D formed once for P and dP */
    const float *Dm = NULL;
    if (cv->G && !cv->fold) seqk__chunk_decay_mask(cv, b->Dm), Dm = b->Dm;
    seqk__chunk_scores(cv, K, Dm, b->cs.P, pack);
    const float *dO = Gr->dout + (row * H + h) * V;
    int64_t ldo = H * V;
    for (int64_t i = 0; i < L; i++) seqk__prefetch_floats(dO + i * ldo, V); /* as V's rows */
    if (with_z(P)) { /* num, den again; dO' = [dO / (den + eps), -(dO . num) / (den + eps)^2] */
        seqk__sgemm_causal(SEQK__GEMM_LOWER_A, false, false, L, W, L, 1.0f, b->cs.P, L, va, ldva,
                           0.0f, b->Oa, W, pack);
        if (S0) seqk__sgemm(false, false, L, W, K, 1.0f, cv->Qg, K, S0, W, 1.0f, b->Oa, W, pack);
        for (int64_t i = 0; i < L; i++) {
            const float *go = dO + i * ldo, *num = b->Oa + i * W;
            const float inv = 1.0f / (num[V] + SEQK__LIN_EPS);
            float *d = b->dOa + i * W;
            for (int64_t j = 0; j < V; j++) d[j] = go[j] * inv;
            d[V] = -seqk__dot(go, num, V) * inv * inv;
        }
        dO = b->dOa, ldo = W;
    }
    seqk__chunk_bwd sb = {b->dVa, b->dQ, b->dK, b->dP, b->tmp, b->eq, b->ek, b->gsum,
                          b->gt, b->gsum + L, 0.0f, pack, Dm, b->Y, no_ds, out->dld == NULL,
                          tr ? S0 : NULL, tr};
    seqk__chunk_backward_stage(cv, K, W, b->cs.P, dO, ldo, va, ldva, tr ? NULL : S0, dS, &sb);
    if (out->dld) {
        seqk__chunk_gate_grad(L, b->gt, b->gsum + L, sb.Dterm, out->dld, H);
        /* a sequence's first decay multiplies a zero state: its gradient is 0
         * exactly (the sum above is 0 only up to the cancellation of its
         * pairs' rounding) */
        if (!S0) out->dld[0] = 0.0f;
    }

    /* the raw gradients: dq = scale phi'(q) dQ~, dk = phi'(k) dK~, dv = v_scale dV' */
    const int64_t hq = h / (P->H / P->Hqk);
    const bool elu = (P->flags & SEQK__LIN_ELU1) != 0;
    for (int64_t i = 0; i < L; i++) {
        const int64_t r = row + i;
        const float *dq = b->dQ + i * K, *dk = b->dK + i * K;
        float *oq = out->dq + i * out->ldqk, *ok = out->dk + i * out->ldqk;
        if (!elu && out->acc == 0) {
            seqk__store_row_nt(oq, dq, P->scale, K);
            seqk__store_row_nt(ok, dk, 1.0f, K);
        } else if (!elu) { /* a group's head: the loop below without phi', in vectors */
            float *restrict vq = oq, *restrict vk = ok;
            const float *restrict sq = dq, *restrict sk = dk;
            const float sc = P->scale;
            if (out->acc == 1)
                for (int64_t j = 0; j < K; j++) vq[j] = sc * sq[j], vk[j] = sk[j];
            else
                for (int64_t j = 0; j < K; j++) vq[j] = vq[j] + sc * sq[j], vk[j] = vk[j] + sk[j];
        } else {
            /* the row's value x, then stored or added (x rounded on its own,
             * then the sum: the head-sum pass's arithmetic) */
            const float *q = P->q + (r * P->Hqk + hq) * K, *k = P->k + (r * P->Hqk + hq) * K;
            for (int64_t j = 0; j < K; j++) {
                float xq = P->scale * dq[j], xk = dk[j];
                if (elu) {
                    xq *= q[j] > 0.0f ? 1.0f : expf(q[j]);
                    xk *= k[j] > 0.0f ? 1.0f : expf(k[j]);
                }
                oq[j] = out->acc == 2 ? oq[j] + xq : xq;
                ok[j] = out->acc == 2 ? ok[j] + xk : xk;
            }
        }
        float *dv = b->dVa + i * W;
        float *ov = out->dv + i * H * V;
        const float *v = P->v + (r * H + h) * V;
        const float s = P->v_scale ? P->v_scale[r * H + h] : 1.0f;
        if (out->dvs) out->dvs[i * H] = seqk__dot(v, dv, V);
        if (Gr->skip) { /* dv = s dV' + skip_h dout; the skip's term dout . v */
            const float *go = Gr->dout + (r * H + h) * V, d = Gr->skip[h];
            for (int64_t j = 0; j < V; j++) dv[j] = s * dv[j] + d * go[j];
            if (out->dskip) out->dskip[i * H] = seqk__dot(go, v, V);
            seqk__store_row_nt(ov, dv, 1.0f, V);
        } else {
            seqk__store_row_nt(ov, dv, s, V);
        }
    }
}

/* Where the gradients of the chunk at `row` (head h) go. */
static brows rows_of(const seqk__lin *P, const seqk__lin_grad *Gr, const bplan *pl, int64_t row,
                     int64_t h, float *hbuf_q, float *hbuf_k)
{
    const int64_t H = P->H, K = P->K, V = P->V;
    brows out;
    if (pl->group_items) { /* the q/k head's rows themselves */
        const int64_t per = H / P->Hqk, hq = h / per;
        out.dq = Gr->dq + (row * P->Hqk + hq) * K;
        out.dk = Gr->dk + (row * P->Hqk + hq) * K;
        out.ldqk = P->Hqk * K;
        out.acc = h % per == 0 ? 1 : 2;
    } else {
        out.dq = (pl->head_buf ? hbuf_q : Gr->dq) + (row * H + h) * K;
        out.dk = (pl->head_buf ? hbuf_k : Gr->dk) + (row * H + h) * K;
        out.ldqk = H * K;
        out.acc = 0;
    }
    out.dv = Gr->dv + (row * H + h) * V;
    out.dvs = Gr->dv_scale ? Gr->dv_scale + row * H + h : NULL;
    out.dskip = Gr->dskip_tok ? Gr->dskip_tok + row * H + h : NULL;
    out.dld = Gr->dlogdecay ? Gr->dlogdecay + row * H + h : NULL;
    return out;
}

/* The whole backward of one sequence n's heads h0 .. h0 + nh - 1, walked
 * together: chunk by chunk, and inside a chunk the heads in order (their
 * rows share pages; see make_plan). Head u = h - h0 keeps its own states
 * and state gradient (ckpt, seg, dSh at u's offsets); each head's arithmetic
 * is the same as walked alone, so the same bits for any grouping. */
static void run_group(const seqk__lin *P, const seqk__lin_grad *Gr, const bplan *pl, int64_t n,
                      int64_t h0, int64_t nh, bscratch *b, float *hbuf_q, float *hbuf_k)
{
    const int64_t K = P->K, V = P->V, H = P->H, E = pl->E, Lc = pl->L, R = pl->R;
    int64_t r0, len;
    seqk__lin_seq(P, n, &r0, &len);
    const int64_t nch = (len + Lc - 1) / Lc;
    /* head u's arrays: checkpoints [nckpt, E] (with R = 1 the states before
     * every chunk, one after another), segment [R, E] (with R > 1 its
     * seg[0] is the first pass's running state), state gradient [E] */
#define CKPT(u) (b->ckpt + (u) * pl->nckpt * E)
#define SEG(u) (b->seg + (u) * R * E)
#define DS(u) (b->dSh + (u) * E)
    /* Without the normaliser, the states and the state gradient are kept
     * transposed ([V,K]: S^T = a S^T + Va^T Kd, dS^T = a dS^T + dO^T Qg, the
     * same bits): of the three products that read them, dQ's dO S0^T and
     * dK's V dS^T then read them in place, only dV's Kd dS packs dS^T
     * transposed (against two packed transposes per chunk). */
    const bool tr = !with_z(P);
    for (int64_t u = 0; u < nh; u++) {
        const int64_t nhu = n * H + h0 + u;
        float *S = R == 1 ? CKPT(u) : SEG(u);
        if (tr) {
            if (P->s_in) seqk__transpose(K, V, P->s_in + nhu * K * V, V, S, K);
            else memset(S, 0, (size_t)E * sizeof(float));
        } else {
            state_join(P, pl, P->s_in ? P->s_in + nhu * K * V : NULL,
                       P->z_in ? P->z_in + nhu * K : NULL, S);
        }
    }
    const bool zero_start = !P->s_in && !(with_z(P) && P->z_in);
    seqk__chunk_view cv;
    const float *va;
    int64_t ldva;
    /* pass 1: the states before the chunks (checkpoints) */
    /* each chunk step asks for the next one's rows (seqk__chunk_fetch): in
     * pass 1 the keys and values of the next chunk (loaded here: not the
     * last), in the reverse walk q, k, v and dout of the one before */
    seqk__chunk_fetch f;
    seqk__chunk_fetch_begin(&f);
    for (int64_t c = 0; c < nch; c++)
        for (int64_t u = 0; u < nh; u++) {
            if (u == 0)
                seqk__chunk_fetch_step(&f, P, NULL, SEQK__FETCH_K | SEQK__FETCH_V, 0,
                                       r0 + (c + 1) * Lc, c + 2 < nch ? Lc : 0, h0, nh);
            float *S = R == 1 ? CKPT(u) + c * E : SEG(u);
            if (R > 1 && c % R == 0) memcpy(CKPT(u) + c / R * E, S, (size_t)E * sizeof(float));
            if (c == nch - 1) continue; /* the final state is not needed */
            load(P, pl, r0 + c * Lc, Lc, h0 + u, false, b, &cv, &va, &ldva);
            advance(P, pl, &cv, va, ldva, b, S, R == 1 ? S + E : S, tr);
        }
    /* dS_T */
    for (int64_t u = 0; u < nh; u++) {
        const int64_t nhu = n * H + h0 + u;
        if (tr) {
            if (Gr->ds_out) seqk__transpose(K, V, Gr->ds_out + nhu * K * V, V, DS(u), K);
            else memset(DS(u), 0, (size_t)E * sizeof(float));
        } else {
            state_join(P, pl, Gr->ds_out ? Gr->ds_out + nhu * K * V : NULL,
                       Gr->dz_out ? Gr->dz_out + nhu * K : NULL, DS(u));
        }
    }
    /* the reverse walk, segment by segment (with R = 1 the states are all
     * there already) */
    for (int64_t s = (nch + R - 1) / R - 1; s >= 0; s--) {
        const int64_t c0 = s * R, cs = nch - c0 < R ? nch - c0 : R;
        if (R > 1) {
            for (int64_t u = 0; u < nh; u++)
                memcpy(SEG(u), CKPT(u) + s * E, (size_t)E * sizeof(float));
            for (int64_t j = 0; j + 1 < cs; j++)
                for (int64_t u = 0; u < nh; u++) {
                    load(P, pl, r0 + (c0 + j) * Lc, Lc, h0 + u, false, b, &cv, &va, &ldva);
                    advance(P, pl, &cv, va, ldva, b, SEG(u) + j * E, SEG(u) + (j + 1) * E, tr);
                }
        }
        for (int64_t j = cs - 1; j >= 0; j--) {
            const int64_t c = c0 + j, row = r0 + c * Lc;
            const int64_t L = len - c * Lc < Lc ? len - c * Lc : Lc;
            seqk__chunk_fetch_step(&f, P, Gr->dout,
                                   SEQK__FETCH_Q | SEQK__FETCH_K | SEQK__FETCH_V |
                                       SEQK__FETCH_DOUT,
                                   1, row - Lc, c > 0 ? Lc : 0, h0, nh);
            /* and the heads' states before that chunk (R = 1: kept by pass 1, MiBs
             * behind, past the caches; their first reader, dQ's dO S0^T, waited
             * on them: the backward 4-5 % faster with them asked here; asking
             * pass 1's destinations for writing measured no faster) */
            if (R == 1 && c > 0)
                seqk__chunk_fetch_blocks(&f, CKPT(0) + (c - 1) * E, pl->nckpt * E, nh, E, false);
            for (int64_t u = 0; u < nh; u++) {
                const int64_t h = h0 + u;
                load(P, pl, row, L, h, true, b, &cv, &va, &ldva);
                const brows out = rows_of(P, Gr, pl, row, h, hbuf_q, hbuf_k);
                const float *S0 =
                    (c == 0 && zero_start) ? NULL : (R == 1 ? CKPT(u) + c * E : SEG(u) + j * E);
                b->dS = DS(u);
                chunk_backward(P, Gr, pl, row, h, &cv, va, ldva, S0, tr, b, &out, false);
            }
        }
    }
    seqk__chunk_fetch_end(&f);
    b->dS = b->dSh;
    for (int64_t u = 0; u < nh; u++) {
        const int64_t nhu = n * H + h0 + u;
        if (tr) {
            if (Gr->ds_in) seqk__transpose(V, K, DS(u), K, Gr->ds_in + nhu * K * V, V);
        } else {
            state_split(P, pl, DS(u), Gr->ds_in ? Gr->ds_in + nhu * K * V : NULL,
                        Gr->dz_in ? Gr->dz_in + nhu * K : NULL);
        }
    }
#undef CKPT
#undef SEG
#undef DS
}

/* The chunk-parallel backward (pl->staged; no normaliser, so W = V and a
 * state is K V floats): every chunk's local terms, the scans over chunks,
 * every chunk's backward; the same arithmetic as run_group's walk (the same
 * products, the scan primitive's step over the same terms), so the same
 * bits. Called by every thread of the parallel region.
 *
 * In windows of pl->wch consecutive chunks of the global index (states, ys
 * hold one window's, [wch, H, E]) when all of them would pass the byte
 * limit: a forward pass over every window but the last keeps, per head, the
 * state before each window's first chunk where a sequence runs into it
 * (ckpt [nwin, H, E]; the local states of that sequence's chunks in the
 * window, scanned from the window's checkpoint); then the windows from the
 * last, each as the whole walk, its scans starting from the checkpoint
 * (forward) and from the state gradient that the window after it left
 * (reverse; dcarry, two buffers: one window's read, the next one's written).
 * Chained scans equal one scan, the products are the same: the same bits
 * with any window, for the local states of all windows but the last
 * computed twice. */
static void walk_staged(const seqk__lin *P, const seqk__lin_grad *Gr, const bplan *pl,
                        bscratch *b, float *states, float *ys, float *acoef, float *ckpt,
                        float *dcarry, const int64_t *first, float *hbuf_q, float *hbuf_k)
{
    const int64_t H = P->H, K = P->K, V = P->V, E = pl->E, Lc = pl->L, nchunks = first[P->N];
    const int64_t wch = pl->wch, nwin = (nchunks + wch - 1) / wch;
    const int64_t tile = 512, ntiles = (E + tile - 1) / tile; /* the scans' element tiles */
    /* each item asks for the next one's rows (and, in (3), its state and
     * state gradient) while it computes (seqk__chunk_fetch) */
    const unsigned rows = SEQK__FETCH_Q | SEQK__FETCH_K | SEQK__FETCH_V | SEQK__FETCH_DOUT;
    seqk__chunk_fetch f;
    seqk__chunk_fetch_begin(&f);
    int64_t ch1;
    /* (0) with windows: the checkpoints, window by window forward; only the
     * sequence that runs on past the window's end (n, its chunks [a0, c1)) */
    for (int64_t w = 0; w + 1 < nwin; w++) {
        const int64_t c0 = w * wch, c1 = c0 + wch, n = seqk__chunk_seq(first, P->N, c1 - 1);
        if (first[n + 1] <= c1) continue; /* (every thread takes the same branch) */
        const int64_t a0 = first[n] > c0 ? first[n] : c0;
        int64_t r0, len;
        seqk__lin_seq(P, n, &r0, &len);
#pragma omp for schedule(static)
        for (int64_t ch = a0 * H; ch < c1 * H; ch++) {
            seqk__chunk_fetch_item(&f, P, NULL, SEQK__FETCH_K | SEQK__FETCH_V, first, Lc, ch, &ch1);
            const int64_t c = ch / H, h = ch % H, row = r0 + (c - first[n]) * Lc;
            seqk__chunk_view cv;
            const float *va;
            int64_t ldva;
            load(P, pl, row, Lc, h, false, b, &cv, &va, &ldva); /* a full chunk: c < c1 <= last */
            local_state(P, pl, &cv, va, ldva, states + (ch - a0 * H) * E, b->pack);
            acoef[ch] = cv.a;
        }
#pragma omp for schedule(static) collapse(2)
        for (int64_t h = 0; h < H; h++)
            for (int64_t t = 0; t < ntiles; t++) {
                const int64_t e0 = t * tile, width = E - e0 < tile ? E - e0 : tile;
                const size_t bytes = (size_t)width * sizeof(float);
                float *carry = b->dS; /* [E] scratch */
                if (a0 > first[n]) memcpy(carry, ckpt + (w * H + h) * E + e0, bytes);
                else if (P->s_in) memcpy(carry, P->s_in + (n * H + h) * E + e0, bytes);
                else memset(carry, 0, bytes);
                float *u = states + h * E + e0;
                seqk__scan_rows(c1 - a0, width, width, 0, acoef + a0 * H + h, H, u, H * E, u, H * E,
                                carry);
                memcpy(ckpt + ((w + 1) * H + h) * E + e0, carry, bytes);
            }
    }
    float *dc_in = dcarry, *dc_out = dcarry ? dcarry + H * E : NULL;
    for (int64_t w = nwin - 1; w >= 0; w--) {
        const int64_t c0 = w * wch, c1 = c0 + wch < nchunks ? c0 + wch : nchunks, i0 = c0 * H;
        /* (1) per chunk: U = Kd^T V' (its share of the state), Y = Qg^T dO
         * (of the state gradient before it), a (its decay) */
#pragma omp for schedule(static)
        for (int64_t ch = i0; ch < c1 * H; ch++) {
            seqk__chunk_fetch_item(&f, P, Gr->dout, rows, first, Lc, ch, &ch1);
            const int64_t c = ch / H, h = ch % H, n = seqk__chunk_seq(first, P->N, c);
            int64_t r0, len;
            seqk__lin_seq(P, n, &r0, &len);
            const int64_t row = r0 + (c - first[n]) * Lc;
            const int64_t L = r0 + len - row < Lc ? r0 + len - row : Lc;
            seqk__chunk_view cv;
            const float *va;
            int64_t ldva;
            load(P, pl, row, L, h, true, b, &cv, &va, &ldva);
            local_state(P, pl, &cv, va, ldva, states + (ch - i0) * E, b->pack);
            seqk__sgemm(true, false, K, V, L, 1.0f, cv.Qg, K, Gr->dout + (row * H + h) * V, H * V,
                        0.0f, ys + (ch - i0) * E, V, b->pack);
            acoef[ch] = cv.a;
        }
        /* (2) per (sequence, head), split over state elements, the
         * sequence's chunks [s0, s1) in the window: states[c] = the state
         * after chunk c (a forward scan from the state before s0: the
         * checkpoint, else state_in), ys[c] = the gradient of the state
         * before chunk c (a reverse scan from the gradient after s1 - 1: the
         * next window's, else dstate_out); the gradient before s0 goes to
         * the window before (dc_out), else it is dstate_in. An empty
         * sequence's dstate_in is its dstate_out (in the first window). */
#pragma omp for schedule(static) collapse(3)
        for (int64_t n = 0; n < P->N; n++)
            for (int64_t h = 0; h < H; h++)
                for (int64_t t = 0; t < ntiles; t++) {
                    const int64_t s0 = first[n] > c0 ? first[n] : c0;
                    const int64_t s1 = first[n + 1] < c1 ? first[n + 1] : c1;
                    const int64_t nh = n * H + h, e0 = t * tile;
                    const int64_t width = E - e0 < tile ? E - e0 : tile;
                    const size_t bytes = (size_t)width * sizeof(float);
                    if (first[n] == first[n + 1]) { /* empty: once, in the first window */
                        float *din = Gr->ds_in ? Gr->ds_in + nh * E + e0 : NULL;
                        if (w == 0 && din) {
                            if (Gr->ds_out) memcpy(din, Gr->ds_out + nh * E + e0, bytes);
                            else memset(din, 0, bytes);
                        }
                        continue;
                    }
                    if (s1 <= s0) continue;
                    float *carry = b->dS; /* [E] scratch */
                    if (s0 > first[n]) memcpy(carry, ckpt + (w * H + h) * E + e0, bytes);
                    else if (P->s_in) memcpy(carry, P->s_in + nh * E + e0, bytes);
                    else memset(carry, 0, bytes);
                    const int64_t at = ((s0 - c0) * H + h) * E + e0;
                    seqk__scan_rows(s1 - s0, width, width, 0, acoef + s0 * H + h, H, states + at,
                                    H * E, states + at, H * E, carry);
                    if (s1 < first[n + 1]) memcpy(carry, dc_in + h * E + e0, bytes);
                    else if (Gr->ds_out) memcpy(carry, Gr->ds_out + nh * E + e0, bytes);
                    else memset(carry, 0, bytes);
                    seqk__scan_rows(s1 - s0, width, width, SEQK__SCAN_REVERSE, acoef + s0 * H + h,
                                    H, ys + at, H * E, ys + at, H * E, carry);
                    if (s0 > first[n]) memcpy(dc_out + h * E + e0, carry, bytes);
                    else if (Gr->ds_in) memcpy(Gr->ds_in + nh * E + e0, carry, bytes);
                }
        /* (3) per chunk: its backward from the state before it and the
         * gradient after it (no dS step: (2) did them); no barrier after the
         * last window (the caller fences its streamed rows first) */
#pragma omp for schedule(static) nowait
        for (int64_t ch = i0; ch < c1 * H; ch++) {
            seqk__chunk_fetch_item(&f, P, Gr->dout, rows, first, Lc, ch, &ch1);
            /* the next item's S0 (unused, harmless, when its chunk is a first) */
            if (ch1 - H >= i0)
                seqk__chunk_fetch_blocks(&f, states + (ch1 - H - i0) * E, E, 1, E, false);
            if (ch1 >= i0 && ch1 + H < c1 * H) /* and its dS (the same when its chunk is a last) */
                seqk__chunk_fetch_blocks(&f, ys + (ch1 + H - i0) * E, E, 1, E, false);
            const int64_t c = ch / H, h = ch % H, n = seqk__chunk_seq(first, P->N, c);
            int64_t r0, len;
            seqk__lin_seq(P, n, &r0, &len);
            const int64_t row = r0 + (c - first[n]) * Lc;
            const int64_t L = r0 + len - row < Lc ? r0 + len - row : Lc;
            const int64_t nh = n * H + h;
            seqk__chunk_view cv;
            const float *va;
            int64_t ldva;
            load(P, pl, row, L, h, true, b, &cv, &va, &ldva);
            /* S0 and dS transposed, as the per-pair walk keeps them (the gate
             * gradient's <S0, dS> then sums in the same order) */
            const float *dS = c + 1 >= first[n + 1] ? Gr->ds_out ? Gr->ds_out + nh * E : NULL
                              : c + 1 < c1           ? ys + (ch + H - i0) * E
                                                     : dc_in + h * E;
            if (dS) seqk__transpose(K, V, dS, V, b->dS, K);
            else memset(b->dS, 0, (size_t)E * sizeof(float));
            const float *S0 = c == first[n] ? P->s_in ? P->s_in + nh * E : NULL
                              : c > c0      ? states + (ch - H - i0) * E
                                            : ckpt + (w * H + h) * E;
            if (S0) seqk__transpose(K, V, S0, V, b->seg, K), S0 = b->seg;
            const brows out = rows_of(P, Gr, pl, row, h, hbuf_q, hbuf_k);
            chunk_backward(P, Gr, pl, row, h, &cv, va, ldva, S0, true, b, &out, true);
        }
        if (w > 0) {
            /* the next window overwrites states, ys and reads dc_out */
#pragma omp barrier
            float *t = dc_in;
            dc_in = dc_out, dc_out = t;
        }
    }
    seqk__chunk_fetch_end(&f);
}

seqk_status seqk__lin_backward(seqk_context *ctx, const seqk__lin *P, const seqk__lin_grad *Gr)
{
    static const char fn[] = "seqk (linear-state backward)";
    const int threads = seqk__threads(ctx);
    const bplan pl = make_plan(P, threads);
    float *ws = NULL;
    seqk_status st = seqk__workspace(fn, ctx, P->ws_offset + seqk__lin_backward_workspace(P, threads),
                                     (void **)&ws);
    if (st) return st;
    ws = (float *)seqk__align_up((uintptr_t)((char *)ws + P->ws_offset), 32);
    const int64_t H = P->H, K = P->K, rows = P->B * P->T;
    float *hbuf_q = ws + pl.scratch * (size_t)threads, *hbuf_k = hbuf_q + rows * H * K;
    /* the chunk-parallel walk's arrays */
    float *states = hbuf_q + (pl.head_buf ? 2 * rows * H * K : 0);
    const size_t ne = rnd8((size_t)(pl.wch * H) * (size_t)pl.E), he = rnd8((size_t)H * pl.E);
    float *ys = states + ne, *acoef = ys + ne;
    float *ckpt = acoef + rnd8((size_t)(pl.nchb * H)), *dcarry = NULL;
    int64_t *first = (int64_t *)ckpt;
    if (pl.nwin > 1) {
        dcarry = ckpt + rnd8((size_t)pl.nwin * (size_t)H * pl.E);
        first = (int64_t *)(dcarry + 2 * he);
    }
    if (pl.staged) {
        first[0] = 0;
        for (int64_t n = 0; n < P->N; n++) {
            int64_t r0, len;
            seqk__lin_seq(P, n, &r0, &len);
            first[n + 1] = first[n] + (len + pl.L - 1) / pl.L;
        }
    }
#pragma omp parallel num_threads(threads)
    {
        bscratch b;
        scratch_init(&b, ws + pl.scratch * (size_t)seqk__omp_thread(), P, &pl);
        if (pl.staged) {
            walk_staged(P, Gr, &pl, &b, states, ys, acoef, ckpt, dcarry, first, hbuf_q,
                        hbuf_k);
        } else if (pl.group_items) { /* a q/k head's heads in order, one thread, hg at a
                                        * time */
            const int64_t Hqk = P->Hqk, per = H / Hqk;
#pragma omp for schedule(dynamic, 1) nowait
            for (int64_t item = 0; item < P->N * Hqk; item++)
                for (int64_t h = item % Hqk * per; h < (item % Hqk + 1) * per; h += pl.hg) {
                    const int64_t end = (item % Hqk + 1) * per;
                    run_group(P, Gr, &pl, item / Hqk, h, end - h < pl.hg ? end - h : pl.hg, &b,
                              hbuf_q, hbuf_k);
                }
        } else {
            const int64_t ng = (H + pl.hg - 1) / pl.hg; /* head groups */
#pragma omp for schedule(dynamic, 1) nowait
            for (int64_t item = 0; item < P->N * ng; item++) {
                const int64_t h0 = item % ng * pl.hg;
                run_group(P, Gr, &pl, item / ng, h0, H - h0 < pl.hg ? H - h0 : pl.hg, &b, hbuf_q,
                          hbuf_k);
            }
        }
        /* the rows written by seqk__store_row_nt, visible to every thread
         * before any reads them (the head sums below) */
        seqk__stream_fence();
#pragma omp barrier
        if (pl.head_buf && !pl.group_items) { /* dq, dk of a q/k head: its heads' rows summed
                                                  in head order */
            const int64_t Hqk = P->Hqk, per = H / Hqk;
#pragma omp for schedule(static)
            for (int64_t rq = 0; rq < rows * Hqk; rq++) {
                const int64_t r = rq / Hqk, hq = rq % Hqk;
                const float *restrict sq = hbuf_q + (r * H + hq * per) * K;
                const float *restrict sk = hbuf_k + (r * H + hq * per) * K;
                /* summed in this thread's scratch rows (in L1), then streamed
                 * out: the outputs are never read back */
                float *restrict xq = b.dQ, *restrict xk = b.dK;
                memcpy(xq, sq, (size_t)K * sizeof(float));
                memcpy(xk, sk, (size_t)K * sizeof(float));
                for (int64_t u = 1; u < per; u++)
                    for (int64_t j = 0; j < K; j++) {
                        xq[j] += sq[u * K + j];
                        xk[j] += sk[u * K + j];
                    }
                seqk__store_row_nt(Gr->dq + rq * K, xq, 1.0f, K);
                seqk__store_row_nt(Gr->dk + rq * K, xk, 1.0f, K);
            }
            seqk__stream_fence();
        }
    }
    return SEQK_SUCCESS;
}
