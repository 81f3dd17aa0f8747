/*
 * scan/chunk.c -- the parallel (chunked) mode of the linear-state engine
 * (DESIGN 3.1), CPU.
 *
 * Per head, chunk c holds tokens [cC, cC+C) (L <= C of them in the last one);
 * G_i = sum_{j<=i} log a_j inside the chunk; S0 is the state before it:
 *
 *   O      = diag(exp(G)) Q S0  +  ((Q K^T) .* D) V      D_ij = exp(G_i - G_j), i >= j, else 0
 *   S_next = exp(G_L) S0        +  (diag(exp(G_L - G)) K)^T V
 *
 * (Q already carries scale and the feature map.) Three stages:
 *   (1) local terms  seqk__chunk_local_state: U = Kd^T V, a = exp(G_L)
 *   (2) chunk states S_c = a_c S_{c-1} + U_c: the scan primitive over chunks,
 *       with one coefficient per K*V block
 *   (3) output       seqk__chunk_output: inter (Qg S0) + intra (P V)
 * Two drivers run them: "fused" walks the chunks of one (sequence, group of
 * heads) in order, a chunk's heads in turn (their rows share pages; see
 * seqk__lin_head_group) with their states in cache (stage 2 one step at a
 * time), for when there are at least as many (sequence, head) pairs as
 * threads; "staged" runs stage 1 over every chunk in parallel, the scan
 * over chunks parallel over state elements, then stage 3 over every chunk in
 * parallel, for few long sequences, in cache-sized windows of chunks (the
 * state carried from one window to the next). The fused driver (and the
 * backward's walks, gated DeltaNet's) asks for the next chunk's rows while
 * the current one's products run
 * (seqk__chunk_fetch: a few cache lines after each register tile), so that
 * a chunk's load finds them in cache: 2.6-3.2 kcycles a load instead of
 * about 6.6: the forward 4-17 % faster, the backward 6-11 % (1-6 % more
 * with its kept states asked too) (AMD EPYC VM, 2 threads, T = 4096,
 * huge-page buffers; 2026-12-07).
 *
 * With the normaliser, the state element is [S (K*V) | z (K)] and z follows
 * the same recurrence with a row of ones as its value: z_next = a z + Kd^T 1.
 *
 * Folded decay. D_ij = exp(G_i - G_j) = exp(G_i) exp(G_L - G_j) / exp(G_L),
 * so (Q K^T) .* D = (Qg Kd^T) / a with Qg = diag(exp(G)) Q and
 * Kd = diag(exp(G_L - G)) K, the rows the inter terms need anyway: the
 * scores are one product scaled by 1/a, with no exponential per score and no
 * pass of a mask over them (the exponentials per chunk drop from L^2/2 to
 * 3L). Every factor is one rounding of a value in [e^-30, e^30] while every
 * G_i of the chunk lies in [-SEQK__CHUNK_FOLD_MAX, 0] (seqk__chunk_load sets
 * cv->fold); a chunk of stronger decay takes the mask exp(G_i - G_j) from
 * the two-float G as before, so the precision under strong decay is kept
 * (tests/test_decay_precision.c covers both: per-token gates in [-1, 0] fold
 * chunks of 16 and mask chunks of 64 and 256). The backward folds dP the
 * same way (scan/chunk_backward.c).
 */
#include "chunk.h"

#include "../core/gemm.h"
#include "../core/vmath.h"
#include "scan.h"

#include <string.h>

/* ---- per-thread scratch ----------------------------------------------------- */

static size_t rnd8(size_t n) { return (n + 7) / 8 * 8; }

static size_t pack_floats(int64_t L, int64_t K, int64_t V)
{
    size_t m = seqk__sgemm_pack_floats(L, L, K);
    size_t x = seqk__sgemm_pack_floats(L, V, L);
    if (x > m) m = x;
    x = seqk__sgemm_pack_floats(L, V, K);
    if (x > m) m = x;
    x = seqk__sgemm_pack_floats(K, V, L);
    if (x > m) m = x;
    return m;
}

size_t seqk__chunk_scratch_floats(int64_t L, int64_t K, int64_t V)
{
    const size_t l = (size_t)L, k = (size_t)K, v = (size_t)V;
    return rnd8(l) * 3 + rnd8(l * k) * 4 + rnd8(l * v) + rnd8(l * l) + rnd8(k * v + k) * 2 +
           rnd8(pack_floats(L, K, V));
}

void seqk__chunk_scratch_init(seqk__chunk_scratch *w, float *base, int64_t L, int64_t K,
                              int64_t V)
{
    const size_t l = (size_t)L, k = (size_t)K, v = (size_t)V;
    float *p = base;
#define TAKE(field, n) (w->field = p, p += rnd8(n))
    TAKE(G, l);
    TAKE(Gl, l);
    TAKE(den, l);
    TAKE(Qs, l * k);
    TAKE(Qg, l * k);
    TAKE(Kc, l * k);
    TAKE(Kd, l * k);
    TAKE(Vs, l * v);
    TAKE(P, l * l);
    TAKE(U, k * v + k);
    TAKE(S, k * v + k);
    TAKE(pack, pack_floats(L, K, V));
#undef TAKE
}

/* ---- stage inputs ------------------------------------------------------------- */

enum { LOAD_AHEAD = 4 }; /* rows of q and k prefetched ahead of the one loaded */

/* The chunk's rows of one head: G, Kc, Kd, V always; Qs, Qg when with_q
 * (stage 1 alone, the local state, needs only the keys and values). */
static void load_rows(const seqk__lin *P, int64_t r0, int64_t L, int64_t h, bool with_q,
                      seqk__chunk_scratch *w, seqk__chunk_view *cv)
{
    const int64_t K = P->K, V = P->V, hq = h / (P->H / P->Hqk);
    const bool decay = P->g || P->log_gamma;
    /* G: cumulative log-decay inside the chunk, as two floats */
    if (decay) {
        for (int64_t i = 0; i < L; i++) w->G[i] = seqk__lin_logdecay(P, r0 + i, h);
        seqk__gates_cumsum(w->G, L, w->G, w->Gl);
    }
    /* Qs = scale * phi(q), Kc = phi(k): contiguous L x K (with SEQK__LIN_L2NORM
     * the rows of phi(q), phi(k) are L2-normalised first) */
    const bool l2 = (P->flags & SEQK__LIN_L2NORM) != 0;
    for (int64_t i = 0; i < L; i++) {
        const float *qr = P->q + ((r0 + i) * P->Hqk + hq) * K;
        const float *kr = P->k + ((r0 + i) * P->Hqk + hq) * K;
        if (i + LOAD_AHEAD < L) { /* one head's rows are Hqk K floats apart: a new page
                                     every few rows, where the hardware prefetcher stops */
            if (with_q) seqk__prefetch_floats(qr + LOAD_AHEAD * P->Hqk * K, K);
            seqk__prefetch_floats(kr + LOAD_AHEAD * P->Hqk * K, K);
        }
        float *qs = w->Qs + i * K, *kc = w->Kc + i * K;
        if (with_q) seqk__lin_phi_row(qr, K, l2 ? 1.0f : P->scale, P->flags, qs);
        seqk__lin_phi_row(kr, K, 1.0f, P->flags, kc);
        if (l2) {
            float fq, fk;
            seqk__lin_qk_factors(P, with_q ? qs : kc, kc, &fq, &fk);
            for (int64_t j = 0; j < K; j++) kc[j] *= fk;
            if (with_q)
                for (int64_t j = 0; j < K; j++) qs[j] *= fq;
        }
    }
    cv->L = L;
    cv->Qs = with_q ? w->Qs : NULL;
    cv->Kc = w->Kc;
    cv->G = decay ? w->G : NULL;
    cv->Gl = decay ? w->Gl : NULL;
    /* Qg = diag(exp(G)) Qs, Kd = diag(exp(G_L - G)) Kc (aliases without decay) */
    if (decay) {
        const float gl = w->G[L - 1], gll = w->Gl[L - 1];
        for (int64_t i0 = 0; i0 < L; i0 += 8) { /* eight rows' factors at a time */
            const int64_t n = L - i0 < 8 ? L - i0 : 8;
            float eq[8], ek[8];
            seqk__exp_gates(w->G + i0, w->Gl + i0, n, gl, gll, -1.0f, ek);
            for (int64_t i = i0; i < i0 + n; i++)
                for (int64_t j = 0; j < K; j++) w->Kd[i * K + j] = ek[i - i0] * w->Kc[i * K + j];
            if (!with_q) continue;
            seqk__exp_gates(w->G + i0, w->Gl + i0, n, 0.0f, 0.0f, 1.0f, eq);
            for (int64_t i = i0; i < i0 + n; i++)
                for (int64_t j = 0; j < K; j++) w->Qg[i * K + j] = eq[i - i0] * w->Qs[i * K + j];
        }
        cv->Qg = with_q ? w->Qg : NULL;
        cv->Kd = w->Kd;
        cv->a = seqk__expf_2(gl, gll);
        /* folded when every G_i lies in [-SEQK__CHUNK_FOLD_MAX, 0] (a rule of
         * the chunk's gates alone: the same bits for any thread count) */
        float gmin = 0.0f, gmax = -SEQK__CHUNK_FOLD_MAX;
        for (int64_t i = 0; i < L; i++) {
            gmin = w->G[i] < gmin ? w->G[i] : gmin;
            gmax = w->G[i] > gmax ? w->G[i] : gmax;
        }
        cv->fold = with_q && gmin >= -SEQK__CHUNK_FOLD_MAX && gmax <= 0.0f;
        cv->ainv = cv->fold ? seqk__expf_2(-gl, -gll) : 0.0f;
    } else {
        cv->Qg = cv->Qs;
        cv->Kd = w->Kc;
        cv->a = 1.0f;
        cv->fold = false;
        cv->ainv = 1.0f;
    }
    /* V: in place (row stride H*V) unless scaled per token */
    if (P->v_scale) {
        for (int64_t i = 0; i < L; i++) {
            const float s = P->v_scale[(r0 + i) * P->H + h];
            const float *vr = P->v + ((r0 + i) * P->H + h) * V;
            for (int64_t j = 0; j < V; j++) w->Vs[i * V + j] = s * vr[j];
        }
        cv->Vv = w->Vs;
        cv->ldv = V;
    } else {
        cv->Vv = P->v + (r0 * P->H + h) * V;
        cv->ldv = P->H * V;
        /* read in place by the products that follow: its rows asked for now
         * (a head's rows are H V floats apart, past the hardware prefetcher) */
        for (int64_t i = 0; i < L; i++) seqk__prefetch_floats(cv->Vv + i * cv->ldv, V);
    }
}

void seqk__chunk_load(const seqk__lin *P, int64_t r0, int64_t L, int64_t h, seqk__chunk_scratch *w,
                      seqk__chunk_view *cv)
{
    load_rows(P, r0, L, h, true, w, cv);
}

void seqk__chunk_load_keys(const seqk__lin *P, int64_t r0, int64_t L, int64_t h,
                           seqk__chunk_scratch *w, seqk__chunk_view *cv)
{
    load_rows(P, r0, L, h, false, w, cv);
}

/* ---- the next step's rows ------------------------------------------------------ */

static void fetch_tile(void *arg)
{
    seqk__chunk_fetch *f = arg;
    f->tiles++;
    if (f->pf.tokens > f->pf.u) seqk__lin_prefetch_next(&f->pf, f->per);
    else seqk__lin_prefetch_next(&f->blocks, f->per);
}

/* Lines per tile: the step's lines over three quarters of the tiles of the
 * pass's last step (16 before there is one). */
static void fetch_rate(seqk__chunk_fetch *f)
{
    const int64_t lines = seqk__lin_prefetch_lines(&f->pf) + seqk__lin_prefetch_lines(&f->blocks);
    const int64_t t = f->step_tiles[f->pass] * 3 / 4;
    f->per = t > 0 ? (lines + t - 1) / t : 16;
}

void seqk__chunk_fetch_begin(seqk__chunk_fetch *f)
{
    seqk__lin_prefetch_start(&f->pf, 0);
    seqk__lin_prefetch_start(&f->blocks, 0);
    f->per = f->tiles = f->step_tiles[0] = f->step_tiles[1] = 0;
    f->pass = 0;
    seqk__sgemm_get_tile_hook(&f->prev, &f->prev_arg);
    seqk__sgemm_set_tile_hook(fetch_tile, f);
}

void seqk__chunk_fetch_step(seqk__chunk_fetch *f, const seqk__lin *P, const float *dout,
                            unsigned what, int pass, int64_t row, int64_t L, int64_t h0,
                            int64_t nh)
{
    const int64_t K = P->K, V = P->V, per = P->H / P->Hqk, ldqk = P->Hqk * K, ldv = P->H * V;
    const int64_t q0 = h0 / per, nq = (h0 + nh - 1) / per - q0 + 1; /* q/k heads read */
    if (f->tiles > 0) f->step_tiles[pass] = f->tiles;
    f->tiles = 0;
    f->pass = pass;
    seqk__lin_prefetch_start(&f->pf, L);
    seqk__lin_prefetch_start(&f->blocks, 0);
    if (L > 0) {
        const float *qk0[2] = {P->q, P->k};
        for (int a = 0; a < 2; a++)
            if (what & (SEQK__FETCH_Q << a))
                seqk__lin_prefetch_add(&f->pf, qk0[a] + row * ldqk + q0 * K, ldqk, nq * K, false);
        const int64_t vrow = (row * P->H + h0) * V;
        if (what & SEQK__FETCH_V) seqk__lin_prefetch_add(&f->pf, P->v + vrow, ldv, nh * V, false);
        if (what & SEQK__FETCH_O) seqk__lin_prefetch_add(&f->pf, P->o + vrow, ldv, nh * V, true);
        if (what & SEQK__FETCH_DOUT)
            seqk__lin_prefetch_add(&f->pf, dout + vrow, ldv, nh * V, false);
    }
    fetch_rate(f);
}

void seqk__chunk_fetch_blocks(seqk__chunk_fetch *f, const float *p, int64_t stride,
                              int64_t count, int64_t n, bool write)
{
    if (f->blocks.narr == 0) seqk__lin_prefetch_start(&f->blocks, count);
    seqk__lin_prefetch_add(&f->blocks, p, stride, n, write);
    fetch_rate(f);
}

void seqk__chunk_fetch_item(seqk__chunk_fetch *f, const seqk__lin *P, const float *dout,
                            unsigned what, const int64_t *first, int64_t chunk, int64_t ch,
                            int64_t *ch1)
{
    const int64_t H = P->H, nxt = ch + 1;
    int64_t row = 0, L = 0;
    *ch1 = -1;
    if (nxt < first[P->N] * H) {
        const int64_t c = nxt / H, n = seqk__chunk_seq(first, P->N, c);
        int64_t r0, len;
        seqk__lin_seq(P, n, &r0, &len);
        const int64_t c0 = (c - first[n]) * chunk;
        row = r0 + c0, L = len - c0 < chunk ? len - c0 : chunk;
        *ch1 = nxt;
    }
    seqk__chunk_fetch_step(f, P, dout, what, 0, row, L, *ch1 >= 0 ? nxt % H : 0, 1);
}

void seqk__chunk_fetch_end(seqk__chunk_fetch *f)
{
    seqk__sgemm_set_tile_hook(f->prev, f->prev_arg);
}

/* ---- stage 1: local state ------------------------------------------------------ */

void seqk__chunk_local_state(const seqk__chunk_view *cv, int64_t K, int64_t V, bool with_z,
                             const float *Vv, int64_t ldv, float *U, float *pack)
{
    /* U[K,V] = Kd^T [K,L] . V [L,V] */
    seqk__sgemm(true, false, K, V, cv->L, 1.0f, cv->Kd, K, Vv, ldv, 0.0f, U, V, pack);
    if (with_z) { /* zU[K] = Kd^T 1 */
        float *zu = U + K * V;
        for (int64_t j = 0; j < K; j++) zu[j] = 0.0f;
        for (int64_t i = 0; i < cv->L; i++)
            for (int64_t j = 0; j < K; j++) zu[j] += cv->Kd[i * K + j];
    }
}

/* ---- stage 3: output ------------------------------------------------------------ */

/* P[i,j] *= D[i,j] for j <= i (assign: P[i,j] = D[i,j]), P[i,j] = 0 for
 * j > i: D = Mix (rows L apart) when given, else exp(G_i - G_j) from G's two
 * parts (never an exp above the diagonal), else 1. */
static void apply_mask(float *Pm, int64_t L, const float *G, const float *Gl, const float *Mix,
                       bool assign)
{
    for (int64_t i = 0; i < L; i++) {
        float *row = Pm + i * L;
        int64_t j = 0;
        if (Mix) {
            const float *mr = Mix + i * L;
            for (; j <= i; j++) row[j] = assign ? mr[j] : row[j] * mr[j];
        } else if (G) {
            const float gi = G[i], gil = Gl[i];
#ifdef __AVX2__
            const __m256 vgi = _mm256_set1_ps(gi), vgil = _mm256_set1_ps(gil);
            for (; j + 8 <= i + 1; j += 8) { /* seqk__exp_gates, multiplied in */
                const __m256 e = seqk__exp8_2(_mm256_sub_ps(vgi, _mm256_loadu_ps(G + j)),
                                              _mm256_sub_ps(vgil, _mm256_loadu_ps(Gl + j)));
                _mm256_storeu_ps(row + j, assign ? e : _mm256_mul_ps(_mm256_loadu_ps(row + j), e));
            }
#endif
            if (j <= i) { /* the last i + 1 - j < 8 */
                float e[8];
                seqk__exp_gates(G + j, Gl + j, i + 1 - j, gi, gil, -1.0f, e);
                for (int64_t t = 0; j <= i; j++, t++) row[j] = assign ? e[t] : row[j] * e[t];
            }
        } else if (assign) {
            for (; j <= i; j++) row[j] = 1.0f;
        }
        for (j = i + 1; j < L; j++) row[j] = 0.0f;
    }
}

void seqk__chunk_decay_mask(const seqk__chunk_view *cv, float *D)
{
    apply_mask(D, cv->L, cv->G, cv->Gl, NULL, true);
}

/* Pm = alpha (A Bm^T) .* (Mix, or exp(G_i - G_j) from G when not NULL, or
 * 1), zeros above the diagonal. Causal: only the lower triangle of the
 * product is formed; the mask writes every element of Pm from it. */
static void masked(int64_t L, const float *A, int64_t lda, const float *Bm, int64_t ldb,
                   int64_t inner, float alpha, const float *G, const float *Gl, const float *Mix,
                   float *Pm, float *pack)
{
    seqk__sgemm_causal(SEQK__GEMM_LOWER_C, false, true, L, L, inner, alpha, A, lda, Bm, ldb, 0.0f,
                       Pm, L, pack);
    apply_mask(Pm, L, G, Gl, Mix, false);
}

void seqk__chunk_masked(const seqk__chunk_view *cv, const float *A, int64_t lda, const float *Bm,
                        int64_t ldb, int64_t inner, const float *Mix, float *Pm, float *pack)
{
    const bool fold = cv->fold && !Mix;
    masked(cv->L, A, lda, Bm, ldb, inner, 1.0f, fold ? NULL : cv->G, cv->Gl, Mix, Pm, pack);
}

void seqk__chunk_apply_mask(const seqk__chunk_view *cv, const float *Mix, float *Pm)
{
    if (Mix || cv->G) apply_mask(Pm, cv->L, cv->G, cv->Gl, Mix, false);
}

/* Folded (cv->fold): (Q K^T) .* D with D_ij = exp(G_i - G_j)
 * = exp(G_i) exp(G_{L-1} - G_j) / a is (Qg Kd^T) / a, the rows the chunk
 * has anyway: no exponential per score and no pass of the mask. */
void seqk__chunk_scores(const seqk__chunk_view *cv, int64_t K, const float *Mix, float *Pm,
                        float *pack)
{
    if (cv->fold && !Mix)
        masked(cv->L, cv->Qg, K, cv->Kd, K, K, cv->ainv, NULL, NULL, NULL, Pm, pack);
    else
        masked(cv->L, cv->Qs, K, cv->Kc, K, K, 1.0f, cv->G, cv->Gl, Mix, Pm, pack);
}

/* The intra term: w->P = (Qs Kc^T) .* D, then O[L,V] = P Vv (each row
 * summed over its lower triangle only). */
static void intra_term(const seqk__chunk_view *cv, int64_t K, int64_t V, const float *Vv,
                       int64_t ldv, float *O, int64_t ldo, seqk__chunk_scratch *w)
{
    const int64_t L = cv->L;
    seqk__chunk_scores(cv, K, NULL, w->P, w->pack);
    seqk__sgemm_causal(SEQK__GEMM_LOWER_A, false, false, L, V, L, 1.0f, w->P, L, Vv, ldv, 0.0f, O,
                       ldo, w->pack);
}

void seqk__chunk_output(const seqk__chunk_view *cv, int64_t K, int64_t V, unsigned flags,
                        const float *Vv, int64_t ldv, const float *S0, float *O, int64_t ldo,
                        seqk__chunk_scratch *w)
{
    const int64_t L = cv->L;
    /* intra: P = (Qs Kc^T) .* D, O = P V */
    intra_term(cv, K, V, Vv, ldv, O, ldo, w);
    /* inter: O += Qg S0 */
    if (S0) seqk__sgemm(false, false, L, V, K, 1.0f, cv->Qg, K, S0, V, 1.0f, O, ldo, w->pack);
    if (flags & SEQK__LIN_NORMALIZE) {
        /* den_i = sum_j P_ij + Qg_i . z0 */
        const float *z0 = S0 ? S0 + K * V : NULL;
        for (int64_t i = 0; i < L; i++) {
            float d = 0.0f;
            for (int64_t j = 0; j <= i; j++) d += w->P[i * L + j];
            if (z0)
                for (int64_t j = 0; j < K; j++) d += cv->Qg[i * K + j] * z0[j];
            const float inv = 1.0f / (d + SEQK__LIN_EPS);
            for (int64_t j = 0; j < V; j++) O[i * ldo + j] *= inv;
        }
    }
}

/* ---- drivers -------------------------------------------------------------------- */

/* The staged driver walks windows of chunks whose states take about this
 * many bytes per thread (at least a chunk per thread), so that the states
 * stage 1 writes are still in cache for the scan and for stage 3: with
 * every chunk's states at once (134 MB at T = 65536, K = V = 128) each
 * stage read them from memory, and windows of 512 KiB a thread took
 * 0.78-0.86 of the time (B = 1, H = 1, T = 16384-262144, K = V = 64 and
 * 128, 2 threads, the AMD EPYC VM, 2026-12-07; 1-4 MiB in all about the
 * same). P->stage_bytes, when set, is the window's bytes instead (the
 * tests' small windows). */
#ifndef SEQK__LIN_FWD_WINDOW_BYTES
#define SEQK__LIN_FWD_WINDOW_BYTES ((size_t)512 << 10)
#endif

typedef struct {
    int64_t L;       /* chunk size */
    int64_t E;       /* floats per state element: K*V (+K with the normaliser) */
    int64_t nchunks; /* all chunks of all sequences */
    seqk__chunk_windows win; /* staged: its windows of chunks */
    int64_t hg;      /* heads per item of the fused driver (seqk__lin_head_group) */
    size_t scratch;  /* floats of per-thread scratch */
} plan;

static bool with_z(const seqk__lin *P) { return (P->flags & SEQK__LIN_NORMALIZE) != 0; }

static plan make_plan(const seqk__lin *P, int threads)
{
    plan pl;
    pl.hg = seqk__lin_head_group(P, threads, 1);
    pl.L = P->chunk;
    pl.E = P->K * P->V + (with_z(P) ? P->K : 0);
    pl.nchunks = 0;
    for (int64_t n = 0; n < P->N; n++) {
        int64_t r0, len;
        seqk__lin_seq(P, n, &r0, &len);
        pl.nchunks += (len + pl.L - 1) / pl.L;
    }
    pl.win = seqk__chunk_windows_plan(
        pl.nchunks, P->stage_bytes ? P->stage_bytes : (size_t)threads * SEQK__LIN_FWD_WINDOW_BYTES,
        (size_t)P->H * (size_t)pl.E * sizeof(float),
        P->stage_bytes ? 1 : (threads + P->H - 1) / P->H);
    /* the chunk scratch, then the fused driver's hg states */
    pl.scratch = rnd8(seqk__chunk_scratch_floats(pl.L, P->K, P->V)) + rnd8((size_t)(pl.hg * pl.E));
    return pl;
}

/* Staged when there are fewer (sequence, head) pairs than threads and the
 * sequences span several chunks; fused otherwise. */
static bool use_staged(const seqk__lin *P, const plan *pl, int threads)
{
    return threads > 1 && P->N * P->H < threads && pl->nchunks > 2 * P->N;
}

size_t seqk__lin_chunked_workspace(const seqk__lin *P, int threads)
{
    plan pl = make_plan(P, threads);
    size_t floats = pl.scratch * (size_t)threads;
    if (use_staged(P, &pl, threads)) {
        /* states [w, H, E], acoef [w, H] with w = min(nchunks, fit) (not
         * wch: a query's bound on the chunks must bound the call's windows),
         * the carries [2, H, E] with windows, first [N + 1] */
        const size_t w = (size_t)(pl.nchunks < pl.win.fit ? pl.nchunks : pl.win.fit);
        floats += rnd8(w * (size_t)P->H * (size_t)pl.E) + rnd8(w * (size_t)P->H) +
                  (pl.nchunks > pl.win.fit ? 2 * rnd8((size_t)P->H * (size_t)pl.E) : 0) +
                  (size_t)(P->N + 1) * 2;
    }
    return floats * sizeof(float);
}

/* The initial state element [S | z] of (n, h) into dst (zeros when absent). */
static void load_state(const seqk__lin *P, int64_t n, int64_t h, float *dst)
{
    const int64_t KV = P->K * P->V;
    if (P->s_in) memcpy(dst, P->s_in + (n * P->H + h) * KV, (size_t)KV * sizeof(float));
    else memset(dst, 0, (size_t)KV * sizeof(float));
    if (with_z(P)) {
        if (P->z_in) memcpy(dst + KV, P->z_in + (n * P->H + h) * P->K, (size_t)P->K * sizeof(float));
        else memset(dst + KV, 0, (size_t)P->K * sizeof(float));
    }
}

static void store_state(const seqk__lin *P, int64_t n, int64_t h, const float *src)
{
    const int64_t KV = P->K * P->V;
    if (P->s_out) memcpy(P->s_out + (n * P->H + h) * KV, src, (size_t)KV * sizeof(float));
    if (with_z(P) && P->z_out)
        memcpy(P->z_out + (n * P->H + h) * P->K, src + KV, (size_t)P->K * sizeof(float));
}

/* One (sequence, group of heads h0 .. h0+nh-1): chunks in order, and within
 * a chunk the heads in order (their rows share pages), head h's state in
 * states[h - h0] (E floats each). */
static void run_fused(const seqk__lin *P, const plan *pl, int64_t n, int64_t h0, int64_t nh,
                      seqk__chunk_scratch *w, float *states)
{
    int64_t r0, len;
    seqk__lin_seq(P, n, &r0, &len);
    const bool zero_start = !P->s_in && !(with_z(P) && P->z_in);
    for (int64_t h = h0; h < h0 + nh; h++) load_state(P, n, h, states + (h - h0) * pl->E);
    seqk__chunk_fetch f;
    seqk__chunk_fetch_begin(&f);
    for (int64_t c0 = 0; c0 < len; c0 += pl->L) {
        const int64_t L = len - c0 < pl->L ? len - c0 : pl->L;
        /* the next chunk's rows (o's for writing) while this one computes */
        const int64_t next = len - c0 - L < pl->L ? len - c0 - L : pl->L;
        seqk__chunk_fetch_step(&f, P, NULL, SEQK__FETCH_Q | SEQK__FETCH_K | SEQK__FETCH_V |
                                                SEQK__FETCH_O,
                               0, r0 + c0 + L, next, h0, nh);
        for (int64_t h = h0; h < h0 + nh; h++) {
            float *S = states + (h - h0) * pl->E;
            seqk__chunk_view cv;
            seqk__chunk_load(P, r0 + c0, L, h, w, &cv);
            float *O = P->o + ((r0 + c0) * P->H + h) * P->V;
            seqk__chunk_output(&cv, P->K, P->V, P->flags, cv.Vv, cv.ldv,
                               (c0 == 0 && zero_start) ? NULL : S, O, P->H * P->V, w);
            seqk__chunk_local_state(&cv, P->K, P->V, with_z(P), cv.Vv, cv.ldv, w->U, w->pack);
            /* stage 2, one step: S = a S + U */
            seqk__scan_rows(1, pl->E, pl->E, 0, &cv.a, 1, w->U, pl->E, S, pl->E, S);
        }
    }
    seqk__chunk_fetch_end(&f);
    for (int64_t h = h0; h < h0 + nh; h++) store_state(P, n, h, states + (h - h0) * pl->E);
}

seqk_status seqk__lin_chunked(seqk_context *ctx, const seqk__lin *P)
{
    static const char fn[] = "seqk (chunked linear-state engine)";
    const int threads = seqk__threads(ctx);
    const plan pl = make_plan(P, threads);
    const bool staged = use_staged(P, &pl, threads);
    float *ws = NULL;
    seqk_status st = seqk__workspace(fn, ctx, P->ws_offset + seqk__lin_chunked_workspace(P, threads), (void **)&ws);
    if (st) return st;
    if (ws) ws = (float *)((char *)ws + P->ws_offset);
    const int64_t H = P->H, E = pl.E;

    if (!staged) {
#pragma omp parallel num_threads(threads)
        {
            seqk__chunk_scratch w;
            float *mine = ws + pl.scratch * (size_t)seqk__omp_thread();
            seqk__chunk_scratch_init(&w, mine, pl.L, P->K, P->V);
            float *states = mine + rnd8(seqk__chunk_scratch_floats(pl.L, P->K, P->V));
            const int64_t ng = (H + pl.hg - 1) / pl.hg; /* head groups */
#pragma omp for schedule(dynamic, 1)
            for (int64_t item = 0; item < P->N * ng; item++) {
                const int64_t n = item / ng, h0 = item % ng * pl.hg;
                run_fused(P, &pl, n, h0, H - h0 < pl.hg ? H - h0 : pl.hg, &w, states);
            }
        }
        return SEQK_SUCCESS;
    }

    /* staged: chunk c of sequence n has global index first[n] + c; windows
     * of wch chunks [c0, c1) in order, each through stages 1-3 with its
     * chunks' states in states [wch, H, E] (U, then S after the chunk) and
     * acoef [wch, H]; the state after a window's last chunk, where its
     * sequence runs on, carried to the next in carries [2, H, E] (one
     * window's read, the next one's written). Chained scans equal one scan:
     * the same bits with any window. */
    const size_t wmax = (size_t)(pl.nchunks < pl.win.fit ? pl.nchunks : pl.win.fit);
    const size_t he = rnd8((size_t)(H * E));
    float *states = ws + pl.scratch * (size_t)threads;
    float *acoef = states + rnd8(wmax * (size_t)(H * E));
    float *carries = acoef + rnd8(wmax * (size_t)H);
    int64_t *first = (int64_t *)(carries + (pl.win.nwin > 1 ? 2 * he : 0));
    first[0] = 0;
    for (int64_t n = 0; n < P->N; n++) {
        int64_t r0, len;
        seqk__lin_seq(P, n, &r0, &len);
        first[n + 1] = first[n] + (len + pl.L - 1) / pl.L;
    }
#pragma omp parallel num_threads(threads)
    {
        seqk__chunk_scratch w;
        seqk__chunk_scratch_init(&w, ws + pl.scratch * (size_t)seqk__omp_thread(), pl.L, P->K,
                                 P->V);
        /* each item asks for the next one's rows (and, in (3), its state
         * before the chunk) while it computes (seqk__chunk_fetch) */
        seqk__chunk_fetch f;
        seqk__chunk_fetch_begin(&f);
        int64_t ch1;
        const bool zero_start = !P->s_in && !(with_z(P) && P->z_in);
        const int64_t tile = 512, ntiles = (E + tile - 1) / tile;
        float *c_in = carries, *c_out = pl.win.nwin > 1 ? carries + he : carries;
        const int64_t wch = pl.win.wch, nwin = pl.win.nwin;
        for (int64_t iw = 0; iw < nwin; iw++) {
            const int64_t c0 = iw * wch, c1 = c0 + wch < pl.nchunks ? c0 + wch : pl.nchunks;
            const int64_t i0 = c0 * H;
            /* (1) local terms of every chunk */
#pragma omp for schedule(static)
            for (int64_t ch = i0; ch < c1 * H; ch++) {
                seqk__chunk_fetch_item(&f, P, NULL, SEQK__FETCH_K | SEQK__FETCH_V, first, pl.L,
                                       ch, &ch1);
                const int64_t c = ch / H, h = ch % H, n = seqk__chunk_seq(first, P->N, c);
                int64_t r0, len;
                seqk__lin_seq(P, n, &r0, &len);
                const int64_t t0 = (c - first[n]) * pl.L;
                const int64_t L = len - t0 < pl.L ? len - t0 : pl.L;
                seqk__chunk_view cv;
                seqk__chunk_load_keys(P, r0 + t0, L, h, &w, &cv);
                seqk__chunk_local_state(&cv, P->K, P->V, with_z(P), cv.Vv, cv.ldv,
                                        states + (ch - i0) * E, w.pack);
                acoef[ch - i0] = cv.a;
            }
            /* (2) chunk states: S_c = a_c S_{c-1} + U_c in place, per
             * (sequence, head) its chunks [s0, s1) in the window, split over
             * state elements, from the carried state or state_in */
#pragma omp for schedule(static) collapse(3)
            for (int64_t n = 0; n < P->N; n++)
                for (int64_t h = 0; h < H; h++)
                    for (int64_t t = 0; t < ntiles; t++) {
                        const int64_t s0 = first[n] > c0 ? first[n] : c0;
                        const int64_t s1 = first[n + 1] < c1 ? first[n + 1] : c1;
                        if (s1 <= s0) continue;
                        const int64_t e0 = t * tile, width = E - e0 < tile ? E - e0 : tile;
                        const size_t bytes = (size_t)width * sizeof(float);
                        float *carry = w.S; /* [E] scratch */
                        if (s0 > first[n]) memcpy(carry + e0, c_in + h * E + e0, bytes);
                        else load_state(P, n, h, carry);
                        float *base = states + ((s0 - c0) * H + h) * E + e0;
                        seqk__scan_rows(s1 - s0, width, width, 0, acoef + (s0 - c0) * H + h, H,
                                        base, H * E, base, H * E, carry + e0);
                        if (s1 < first[n + 1]) memcpy(c_out + h * E + e0, carry + e0, bytes);
                    }
            /* (3) outputs of every chunk */
#pragma omp for schedule(static)
            for (int64_t ch = i0; ch < c1 * H; ch++) {
                seqk__chunk_fetch_item(&f, P, NULL,
                                       SEQK__FETCH_Q | SEQK__FETCH_K | SEQK__FETCH_V |
                                           SEQK__FETCH_O,
                                       first, pl.L, ch, &ch1);
                /* the state before the next item's chunk (unused, harmless,
                 * when it starts its sequence) */
                if (ch1 - H >= i0)
                    seqk__chunk_fetch_blocks(&f, states + (ch1 - H - i0) * E, E, 1, E, false);
                const int64_t c = ch / H, h = ch % H, n = seqk__chunk_seq(first, P->N, c);
                int64_t r0, len;
                seqk__lin_seq(P, n, &r0, &len);
                const int64_t t0 = (c - first[n]) * pl.L;
                const int64_t L = len - t0 < pl.L ? len - t0 : pl.L;
                seqk__chunk_view cv;
                seqk__chunk_load(P, r0 + t0, L, h, &w, &cv);
                const float *S0 = NULL;
                if (c > first[n]) {
                    S0 = c > c0 ? states + (ch - H - i0) * E : c_in + h * E;
                } else if (!zero_start) {
                    load_state(P, n, h, w.S);
                    S0 = w.S;
                }
                seqk__chunk_output(&cv, P->K, P->V, P->flags, cv.Vv, cv.ldv, S0,
                                   P->o + ((r0 + t0) * H + h) * P->V, H * P->V, &w);
            }
            /* final states of the sequences that end in the window (after
             * every read of their initial states: they may be the same
             * array); an empty sequence's in the last */
#pragma omp for schedule(static)
            for (int64_t nh = 0; nh < P->N * H; nh++) {
                const int64_t n = nh / H, h = nh % H, last = first[n + 1] - 1;
                if (first[n + 1] > first[n]) {
                    if (last >= c0 && last < c1)
                        store_state(P, n, h, states + ((last - c0) * H + h) * E);
                } else if (iw == nwin - 1) {
                    load_state(P, n, h, w.S);
                    store_state(P, n, h, w.S);
                }
            }
            float *t = c_in; /* (every thread, after the loop's barrier) */
            c_in = c_out, c_out = t;
        }
        seqk__chunk_fetch_end(&f);
    }
    return SEQK_SUCCESS;
}
