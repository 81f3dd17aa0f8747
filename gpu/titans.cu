/*
 * gpu/titans.cu -- CUDA backend of the Titans linear memory (seqk_titans,
 * DESIGN 3.4). First, plain version: fp32, CUDA cores, shared-memory tiles;
 * the reference the tuned kernels will be checked against. Written without
 * a GPU at hand: compiled warning-free for sm_80/sm_90, the kernels checked
 * against the CPU backend in a host emulation (one thread per CUDA thread,
 * __syncthreads as a barrier); tests/test_titans.c runs them on every
 * backend once a device is there.
 *
 * The math, per sequence n and head h (a_t = 1 - alpha_t; with
 * SEQK__LIN_L2NORM q and k are divided by sqrt(sum x^2 + eps) first; b the
 * mini-batch size, pos the position inside the current mini-batch):
 *
 *   Mhat = M_{t-1} when pos = 0
 *   Gerr_t = Mhat^T k~_t - v_t
 *   S_t = eta_t S_{t-1} - theta_t k~_t Gerr_t^T
 *   M_t = a_t M_{t-1} + S_t,    o_t = M_t^T (scale q~_t)
 *
 * Recurrent mode: tt_recurrent_kernel<COLS>, one block of 256 threads per
 * (sequence, head, block of COLS state columns), COLS = 32 (K <= 256), 16
 * (K <= 512) or 8 (K <= 1024) so that the three K x COLS slices (M, S, Mhat)
 * fit shared memory (at most ~120 KB; opted in above 48 KB). Thread tid owns
 * column tid % COLS and rows tid / COLS + RG j (RG = 256 / COLS row groups);
 * a warp covers consecutive rows' columns, so the slice accesses are
 * conflict-free. Per token:
 *   (1) the block loads the raw q_t, k_t (K floats, coalesced), v_t (COLS),
 *       eta, theta, alpha, and reduces sum q^2, sum k^2 per warp (with the
 *       L2 norm); barrier;
 *   (2) one pass over the slice applies the previous token's pending update
 *       (S = e S - k_{t-1} gp, M = a M + S), accumulates y = M^T q_{t-1}
 *       (o_{t-1}) and x = Mhat^T k_t (Mhat = the updated M at a mini-batch
 *       start, stored when b > 1); per-row-group partials to shared memory;
 *       barrier;
 *   (3) the first row group sums the partials: o_{t-1} = fq y, and
 *       gp = theta_t fk (fk x - v_t) for the next pass (the key's
 *       normalisation and theta folded in).
 * So the update of token t is applied in the pass of token t+1 (one pass
 * over the state per token) and once more after the last token; two
 * barriers per token. Inputs of a token read after the next token's loads
 * started (q, k, v, the gates, the norm partials) are double-buffered by
 * token parity.
 *
 * Parallel mode, the chunked form of ssm/titans.c: per "segment" (the part
 * of one mini-batch that a call covers: the first one may start inside a
 * mini-batch, at the state's position, the last one may end inside one) of
 * L <= b tokens, with M0, S0 the state before it, lm_t = sum_{r<=t} log eta_r,
 * beta_t = prod_{r<=t} a_r (cumulated in log space, double), f_t = a_t f_{t-1}
 * + m_t, Gmix_ts = a_t Gmix_{t-1,s} + exp(lm_t - lm_s) (s < t), Gmix_tt = 1:
 *
 *   Gerr = K~ Mhat - V                                        (Mhat = M0 at a mini-batch start)
 *   O    = ((Q~ K~^T) .* Mix) Gerr + diag(beta) Q~ M0 + diag(f) Q~ S0,   Mix_ts = -theta_s Gmix_ts
 *   M'   = beta_L M0 + f_L S0 - K~^T diag(theta_s Gmix_{L-1,s}) Gerr
 *   S'   = m_L S0 - K~^T diag(theta_s exp(lm_{L-1} - lm_s)) Gerr
 *
 * Segment j of sequence n, head h owns the workspace slot (first[n] + j) H
 * + h; a sequence of len tokens owns ceil(len / b) + 1 slots (its segments
 * number at most that, whatever the state's position). Two kernels:
 *   (1) tt_seg_kernel: one block of 256 threads per slot (unused slots
 *       return at once): the segment's norms (a warp per token), the
 *       cumulated gates (one thread, double), the mixing matrix (a thread
 *       per column s, the recurrence over t >= s), then
 *       P = (Q~ K~^T) .* Mix on and below the diagonal in 16 x 16 tiles
 *       through shared memory (the raw rows times the norm factors), and the
 *       per-token coefficients with the factors folded in: beta_t fq_t,
 *       f_t fq_t, fk_t, theta_s Gmix_{L-1,s} fk_s, theta_s m_{L-1}/m_s fk_s,
 *       and beta_L, f_L, m_L. Independent of the state: all segments of all
 *       sequences and heads at once.
 *   (2) tt_state_kernel<COLS>: the state pass, sequential over the segments
 *       of a sequence (Gerr needs the previous segment's end): one block of
 *       256 threads per (sequence, head, block of COLS state columns), the
 *       three K x COLS slices and Gerr [b][COLS] in shared memory (COLS = 32,
 *       16 or 8: the largest whose 4 COLS (3 K + b) bytes fit 160 KB); per
 *       segment, with the raw q, k, v rows read from global memory (L1):
 *       (a) Gerr = fk (K Mhat) - V, a row group per token; barrier;
 *       (b) O = P Gerr + (beta fq) Q M0 + (f fq) Q S0, a row group per token;
 *       barrier; (c) each thread its own rows of M and S:
 *       M = beta_L M + f_L S - sum_s w_s k_s Gerr_s, S likewise (Mhat = M0
 *       first when the call ends inside this mini-batch). Every column of
 *       Gerr, O and the state depends only on the same column of the state,
 *       so the blocks never communicate.
 * Workspace (256-byte aligned regions): first [N+1] int64 (varlen), then per
 * slot and head P [b][b], the coefficients [5][b] and [4] scalars. The
 * recurrent mode uses none (a decoding step allocates nothing).
 *
 * Both modes: tt_positions_kernel then writes pos = (pos_in + len) mod b
 * and the reserved floats of every (sequence, head): a separate launch, so
 * that no block overwrites a position another block of the same head has
 * not read yet when state_in == state_out. An out-of-range pos in state_in
 * (not validated on CUDA) is taken as 0.
 *
 * To do (measure first): tensor cores (tf32 mma) for the three products of
 * the state pass and for Q K^T; the segment's k rows staged in shared memory
 * for (c) (they are read K times with a stride of H K floats); more columns
 * per block and the state in registers for decoding.
 */
/* core/internal.h and scan/linear_state.h are C headers without C++ guards:
 * include them first inside extern "C" (see gpu/deltanet.cu). */
extern "C" {
#include "../core/internal.h"
#include "../scan/linear_state.h"
}

#include "common.cuh"

#include <limits.h>
#include <stdint.h>

enum {
    TT_THREADS = 256,
    TT_WARPS = TT_THREADS / 32,
    TT_PAD = 8 /* pos + 7 reserved floats after M, S, Mhat */
};

/* Everything the kernels need, by value. */
typedef struct tt_args {
    int64_t T;   /* tokens per batch entry (without varlen) */
    int64_t N;   /* sequences */
    int64_t E;   /* floats per state block: 3 K V + 8 */
    int H, K, V, b;
    float scale;
    int l2;
    const float *q, *k, *v, *eta, *theta, *alpha;
    float *o;
    const float *s_in;
    float *s_out;
    const int32_t *cu; /* device cu_seqlens [N+1] or NULL */
    /* parallel mode */
    int64_t spn;         /* slots per sequence without varlen: ceil(T / b) + 1 */
    int64_t *first;      /* device [N+1] first slot of each sequence (varlen) or NULL */
    float *P;            /* [slots*H][b][b] (Q~ K~^T) .* Mix, on and below the diagonal */
    float *coef;         /* [slots*H][5][b] beta fq, f fq, fk, theta Gmix_L fk, theta m_L/m fk */
    float *scal;         /* [slots*H][4] beta_L, f_L, m_L, 0 */
} tt_args;

/* The position of (n, h) in state_in; 0 without it or when out of range. */
static __device__ __forceinline__ int tt_pos_in(const tt_args &a, int64_t nh)
{
    if (!a.s_in) return 0;
    const float p = a.s_in[nh * a.E + (int64_t)3 * a.K * a.V];
    return (p >= 0.0f && p < (float)a.b) ? (int)p : 0;
}

/* ---- the state slices of a block -------------------------------------------------- */

/* What a block of tt_recurrent_kernel or tt_state_kernel (TT_THREADS threads,
 * grid N*H*nvb, nvb = ceil(V / COLS)) owns: the K x COLS slices M, S, Mhat of
 * the state of sequence n, head h (nh = n H + h), columns col = COLS vb + cl
 * (colok: col < V), at the start of the dynamic shared memory sm; thread tid
 * holds column cl = tid % COLS of rows rg + RG j (rg = tid / COLS, RG =
 * TT_THREADS / COLS row groups). */
typedef struct tt_slice {
    int64_t n, nh;
    int h, vb, cl, rg, col;
    bool colok;
    float *M, *S, *Mh; /* [K][COLS] each, one after the other */
} tt_slice;

template <int COLS>
static __device__ __forceinline__ tt_slice tt_slice_of(const tt_args &a, int nvb, float *sm)
{
    const seqk__nhv b = seqk__block_nhv(nvb, a.H);
    tt_slice s;
    s.n = b.n, s.nh = b.nh, s.h = b.h, s.vb = b.vb;
    s.cl = (int)threadIdx.x % COLS, s.rg = (int)threadIdx.x / COLS;
    s.col = b.vb * COLS + s.cl;
    s.colok = s.col < a.V;
    s.M = sm;
    s.S = s.M + (size_t)a.K * COLS;
    s.Mh = s.S + (size_t)a.K * COLS;
    return s;
}

/* The slices = those of state_in, whose position is pos (zeros without it;
 * Mhat zero at pos 0); each thread its own elements. */
template <int COLS>
static __device__ __forceinline__ void tt_slice_load(const tt_args &a, const tt_slice &s, int pos)
{
    constexpr int RG = TT_THREADS / COLS;
    const int64_t KV = (int64_t)a.K * a.V;
    const float *sin_ = a.s_in ? a.s_in + s.nh * a.E : NULL;
    for (int i = s.rg; i < a.K; i += RG) {
        const int64_t e = (int64_t)i * a.V + s.col;
        s.M[i * COLS + s.cl] = (sin_ && s.colok) ? sin_[e] : 0.0f;
        s.S[i * COLS + s.cl] = (sin_ && s.colok) ? sin_[KV + e] : 0.0f;
        s.Mh[i * COLS + s.cl] = (sin_ && s.colok && pos != 0) ? sin_[2 * KV + e] : 0.0f;
    }
}

/* The slices of state_out = the block's, when state_out is given; each
 * thread its own elements. */
template <int COLS>
static __device__ __forceinline__ void tt_slice_store(const tt_args &a, const tt_slice &s)
{
    constexpr int RG = TT_THREADS / COLS;
    const int64_t KV = (int64_t)a.K * a.V;
    if (a.s_out && s.colok) {
        float *so = a.s_out + s.nh * a.E;
        for (int i = s.rg; i < a.K; i += RG) {
            const int64_t e = (int64_t)i * a.V + s.col;
            so[e] = s.M[i * COLS + s.cl];
            so[KV + e] = s.S[i * COLS + s.cl];
            so[2 * KV + e] = s.Mh[i * COLS + s.cl];
        }
    }
}

template <int COLS>
static size_t tt_smem_bytes(int K)
{
    const int RG = TT_THREADS / COLS;
    /* M, S, Mhat [3][K][COLS], q [2][K], k [2][K], v [2][COLS], gp [COLS],
     * red [2][RG][COLS], nred [2][8][2], gates [2][4] */
    return sizeof(float) * ((size_t)3 * K * COLS + 4 * (size_t)K + 3 * COLS + 2 * RG * COLS +
                            2 * TT_WARPS * 2 + 8);
}

template <int COLS>
static __global__ void __launch_bounds__(TT_THREADS) tt_recurrent_kernel(tt_args a, int nvb)
{
    constexpr int RG = TT_THREADS / COLS;
    extern __shared__ float sm[];
    const int K = a.K, V = a.V, H = a.H, b = a.b;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const tt_slice z = tt_slice_of<COLS>(a, nvb, sm);
    const int col_l = z.cl, rg = z.rg, h = z.h, vb = z.vb, col = z.col;
    const bool colok = z.colok;

    float *Ms = z.M, *Ss = z.S, *Hs = z.Mh;       /* [K][COLS] each */
    float *qs = Hs + (size_t)K * COLS;            /* [2][K] raw q by token parity */
    float *ks = qs + 2 * K;                       /* [2][K] raw k by token parity */
    float *vs = ks + 2 * K;                       /* [2][COLS] */
    float *gp = vs + 2 * COLS;                    /* [COLS] pending theta fk Gerr */
    float *red = gp + COLS;                       /* [2][RG][COLS] partial x, y */
    float *nred = red + 2 * RG * COLS;            /* [2][8][2] partial q.q, k.k */
    float *gt = nred + 2 * TT_WARPS * 2;          /* [2][4] eta, theta, a by parity */

    int64_t row0, len;
    seqk__seq_rows(a.cu, a.T, z.n, &row0, &len);
    int pos = tt_pos_in(a, z.nh);
    tt_slice_load<COLS>(a, z, pos);
    if (tid < COLS) gp[tid] = 0.0f;

    bool pend = false;
    float ep = 1.0f, ap = 1.0f, fq_prev = 0.0f;
    for (int64_t t = 0; t < len; t++) {
        const int par = (int)(t & 1);
        const int64_t r = row0 + t, rh = r * H + h;
        /* (1) load the token; partial norms */
        const float *qg = a.q + rh * K, *kg = a.k + rh * K;
        float *qt = qs + par * K, *kt = ks + par * K;
        float sq = 0.0f, sk = 0.0f;
        for (int i = tid; i < K; i += TT_THREADS) {
            const float x = qg[i], y = kg[i];
            qt[i] = x;
            kt[i] = y;
            sq = fmaf(x, x, sq);
            sk = fmaf(y, y, sk);
        }
        if (a.l2) {
            sq = seqk__warp_sum(sq);
            sk = seqk__warp_sum(sk);
            if (lane == 0) {
                nred[(par * TT_WARPS + warp) * 2] = sq;
                nred[(par * TT_WARPS + warp) * 2 + 1] = sk;
            }
        }
        if (tid < COLS) {
            const int c = vb * COLS + tid;
            vs[par * COLS + tid] = c < V ? a.v[rh * V + c] : 0.0f;
        }
        if (tid == 0) {
            gt[par * 4] = a.eta[rh];
            gt[par * 4 + 1] = a.theta[rh];
            gt[par * 4 + 2] = 1.0f - a.alpha[rh];
        }
        __syncthreads();
        float fq = a.scale, fk = 1.0f;
        if (a.l2) {
            float nq = 0.0f, nk = 0.0f;
            for (int ww = 0; ww < TT_WARPS; ww++) {
                nq += nred[(par * TT_WARPS + ww) * 2];
                nk += nred[(par * TT_WARPS + ww) * 2 + 1];
            }
            fq = a.scale / sqrtf(nq + SEQK__LIN_L2NORM_EPS);
            fk = 1.0f / sqrtf(nk + SEQK__LIN_L2NORM_EPS);
        }
        /* (2) one pass: the pending update, y = M^T q_{t-1}, x = Mhat^T k_t */
        const bool refresh = pos == 0, wh = refresh && b > 1;
        const float *kp = ks + (par ^ 1) * K, *qp = qs + (par ^ 1) * K;
        const float g = gp[col_l];
        float xa = 0.0f, ya = 0.0f;
        for (int i = rg; i < K; i += RG) {
            float m = Ms[i * COLS + col_l];
            if (pend) {
                const float s = fmaf(-kp[i], g, ep * Ss[i * COLS + col_l]);
                Ss[i * COLS + col_l] = s;
                m = fmaf(ap, m, s);
                Ms[i * COLS + col_l] = m;
                ya = fmaf(qp[i], m, ya);
            }
            if (wh) Hs[i * COLS + col_l] = m;
            xa = fmaf(kt[i], refresh ? m : Hs[i * COLS + col_l], xa);
        }
        red[rg * COLS + col_l] = xa;
        red[(RG + rg) * COLS + col_l] = ya;
        __syncthreads();
        /* (3) the first row group: o_{t-1}, and the pending update of token t */
        if (rg == 0) {
            float x = 0.0f, y = 0.0f;
            for (int j = 0; j < RG; j++) {
                x += red[j * COLS + col_l];
                y += red[(RG + j) * COLS + col_l];
            }
            if (pend && colok) a.o[(rh - H) * V + col] = fq_prev * y;
            const float gerr = fk * x - vs[par * COLS + col_l];
            gp[col_l] = gt[par * 4 + 1] * fk * gerr;
        }
        pend = true;
        ep = gt[par * 4];
        ap = gt[par * 4 + 2];
        fq_prev = fq;
        pos = pos + 1 == b ? 0 : pos + 1;
    }
    __syncthreads();
    /* the last pending update; Mhat = M when the call ends at a mini-batch end */
    if (pend || pos == 0) {
        const int par = (int)((len - 1) & 1);
        const float *kp = ks + par * K, *qp = qs + par * K;
        const float g = gp[col_l];
        float ya = 0.0f;
        for (int i = rg; i < K; i += RG) {
            float m = Ms[i * COLS + col_l];
            if (pend) {
                const float s = fmaf(-kp[i], g, ep * Ss[i * COLS + col_l]);
                Ss[i * COLS + col_l] = s;
                m = fmaf(ap, m, s);
                Ms[i * COLS + col_l] = m;
                ya = fmaf(qp[i], m, ya);
            }
            if (pos == 0) Hs[i * COLS + col_l] = m;
        }
        red[(RG + rg) * COLS + col_l] = ya;
        __syncthreads();
        if (pend && rg == 0 && colok) {
            float y = 0.0f;
            for (int j = 0; j < RG; j++) y += red[(RG + j) * COLS + col_l];
            a.o[((row0 + len - 1) * H + h) * V + col] = fq_prev * y;
        }
    }
    tt_slice_store<COLS>(a, z);
}

/* ---- parallel mode ---------------------------------------------------------------- */

enum {
    TP_THREADS = 256,
    TP_WARPS = TP_THREADS / 32,
    TP_TILE = 16,               /* P tiles: 16 x 16, one element per thread */
    TP_WS_ALIGN = 256,
    TP_SMEM_MAX = 160 * 1024    /* the state pass's shared memory (A100: 163 KB) */
};

static_assert(TP_TILE * TP_TILE == TP_THREADS, "one P element per thread");
static_assert((int)TP_THREADS == (int)TT_THREADS,
              "tt_launch runs the state pass with TT_THREADS threads");

/* log x for the cumulated gates: x in [0, 1]; 0 (or below) -> -1e4, whose
 * exp is 0 in float and whose differences stay finite. */
static __device__ __forceinline__ double tt_log_gate(float x)
{
    return x > 0.0f ? log((double)x) : -1.0e4;
}

/* The first slot of sequence n. */
static __device__ __forceinline__ int64_t tt_first_slot(const tt_args &a, int64_t n)
{
    return a.first ? a.first[n] : n * a.spn;
}

/* The sequence n of slot `slot` and the slot's index j inside it. */
static __device__ __forceinline__ void tt_slot_seq(const tt_args &a, int64_t slot, int64_t *n,
                                                   int64_t *j)
{
    if (a.first) { /* the largest n < N with first[n] <= slot (every sequence owns a slot) */
        int64_t lo = 0, hi = a.N - 1;
        while (lo < hi) {
            const int64_t mid = (lo + hi + 1) / 2;
            if (a.first[mid] <= slot) lo = mid;
            else hi = mid - 1;
        }
        *n = lo;
    } else {
        *n = slot / a.spn;
    }
    *j = slot - tt_first_slot(a, *n);
}

/* Segment j of a sequence of len tokens whose state is at position pos0:
 * its first token (relative to the sequence) and length (0: no such
 * segment). The first one finishes the mini-batch pos0 is inside (or is a
 * whole one at pos0 = 0), then whole mini-batches, the last one possibly
 * cut. */
static __device__ __forceinline__ void tt_segment(int64_t len, int pos0, int b, int64_t j,
                                                  int64_t *start, int *L)
{
    const int64_t L0 = (int64_t)(b - pos0) < len ? (int64_t)(b - pos0) : len;
    if (j == 0) {
        *start = 0;
        *L = (int)L0;
        return;
    }
    const int64_t s0 = L0 + (j - 1) * b;
    *start = s0;
    *L = s0 >= len ? 0 : (int)(len - s0 < b ? len - s0 : b);
}

/* first[n] = sum_{m<n} (ceil(len_m / b) + 1), n = 0..N (varlen). */
static __global__ void tt_first_kernel(const int32_t *cu, int64_t N, int b, int64_t *first)
{
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    int64_t acc = 0;
    first[0] = 0;
    for (int64_t n = 0; n < N; n++) {
        acc += ((int64_t)cu[n + 1] - cu[n] + b - 1) / b + 1;
        first[n + 1] = acc;
    }
}

static size_t tt_seg_smem(int b)
{
    /* lm [b] double, a, theta, fq, fk, beta, f [b], tiles q, k [16][17], 4 scalars */
    return sizeof(double) * (size_t)b +
           sizeof(float) * (6 * (size_t)b + 2 * TP_TILE * (TP_TILE + 1) + 4);
}

/* (1) One block per (slot, head): the segment's gates, mixing matrix, P and
 * coefficients. */
static __global__ void __launch_bounds__(TP_THREADS) tt_seg_kernel(tt_args a)
{
    extern __shared__ double smd[];
    const int b = a.b, H = a.H, K = a.K;
    const int64_t id = blockIdx.x; /* slot * H + h */
    const int h = (int)(id % H);
    int64_t n, j;
    tt_slot_seq(a, id / H, &n, &j);
    int64_t row0, len;
    seqk__seq_rows(a.cu, a.T, n, &row0, &len);
    int64_t st;
    int L;
    tt_segment(len, tt_pos_in(a, n * H + h), b, j, &st, &L);
    if (L <= 0) return; /* an unused slot: the whole block */
    const int64_t r0 = row0 + st;

    double *lm = smd;                        /* [b] cumulated log eta */
    float *ga = (float *)(lm + b);           /* [b] a = 1 - alpha */
    float *gth = ga + b;                     /* [b] theta */
    float *gfq = gth + b, *gfk = gfq + b;    /* [b] norm factors (fq with the scale) */
    float *gcb = gfk + b, *gcf = gcb + b;    /* [b] beta_t, f_t */
    float *tq = gcf + b;                     /* [16][17] */
    float *tk = tq + TP_TILE * (TP_TILE + 1); /* [16][17] */
    float *sc = tk + TP_TILE * (TP_TILE + 1); /* [4] */
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

    for (int t = tid; t < L; t += TP_THREADS) {
        const int64_t rh = (r0 + t) * H + h;
        ga[t] = 1.0f - a.alpha[rh];
        gth[t] = a.theta[rh];
    }
    for (int t = warp; t < L; t += TP_WARPS) { /* whole warps */
        const int64_t rh = (r0 + t) * H + h;
        const float2 f = seqk__warp_qk_factors(a.q + rh * K, a.k + rh * K, K, a.scale, a.l2,
                                               SEQK__LIN_L2NORM_EPS);
        if (lane == 0) gfq[t] = f.x, gfk[t] = f.y;
    }
    __syncthreads(); /* ga */
    if (tid == 0) { /* the cumulated gates, in order */
        double am = 0.0, ab = 0.0;
        float f = 0.0f;
        for (int t = 0; t < L; t++) {
            am += tt_log_gate(a.eta[(r0 + t) * H + h]);
            ab += tt_log_gate(ga[t]);
            lm[t] = am;
            f = ga[t] * f + (float)exp(am);
            gcb[t] = (float)exp(ab);
            gcf[t] = f;
        }
        sc[0] = gcb[L - 1], sc[1] = f, sc[2] = (float)exp(am), sc[3] = 0.0f;
    }
    __syncthreads(); /* lm, gcb, gcf, gfq, gfk, sc */
    float *Pm = a.P + id * (int64_t)b * b;
    float *cf = a.coef + id * 5 * (int64_t)b;
    /* Mix column s: Gmix_ts over t >= s (lm is non-increasing: lm_t - lm_s <= 0) */
    for (int s = tid; s < L; s += TP_THREADS) {
        const double ls = lm[s];
        const float th = gth[s];
        float g = 1.0f, e = 1.0f;
        Pm[(int64_t)s * b + s] = -th;
        for (int t = s + 1; t < L; t++) {
            const double d = lm[t] - ls;
            e = expf((float)(d < 0.0 ? d : 0.0));
            g = fmaf(ga[t], g, e);
            Pm[(int64_t)t * b + s] = -th * g;
        }
        cf[3 * b + s] = th * g * gfk[s]; /* theta_s Gmix_{L-1,s} fk_s */
        cf[4 * b + s] = th * e * gfk[s]; /* theta_s m_{L-1} / m_s fk_s */
    }
    for (int t = tid; t < L; t += TP_THREADS) {
        cf[t] = gcb[t] * gfq[t];
        cf[b + t] = gcf[t] * gfq[t];
        cf[2 * b + t] = gfk[t];
    }
    if (tid < 4) a.scal[id * 4 + tid] = sc[tid];
    __syncthreads(); /* Mix (global, this block's) visible to every thread */
    /* P = (q~ k~^T) .* Mix on and below the diagonal: tiles (ti, tj), tj <= ti */
    const int tx = tid % TP_TILE, ty = tid / TP_TILE;
    const int nt = (L + TP_TILE - 1) / TP_TILE;
    for (int ti = 0; ti < nt; ti++)
        for (int tj = 0; tj <= ti; tj++) {
            const int t = ti * TP_TILE + ty, s = tj * TP_TILE + tx, sr = tj * TP_TILE + ty;
            float acc = 0.0f;
            for (int k0 = 0; k0 < K; k0 += TP_TILE) {
                const int kk = k0 + tx;
                const bool qin = t < L && kk < K, kin = sr < L && kk < K;
                tq[ty * (TP_TILE + 1) + tx] = qin ? a.q[((r0 + t) * H + h) * K + kk] : 0.0f;
                tk[ty * (TP_TILE + 1) + tx] = kin ? a.k[((r0 + sr) * H + h) * K + kk] : 0.0f;
                __syncthreads();
#pragma unroll
                for (int x = 0; x < TP_TILE; x++)
                    acc = fmaf(tq[ty * (TP_TILE + 1) + x], tk[tx * (TP_TILE + 1) + x], acc);
                __syncthreads();
            }
            if (t < L && s <= t) {
                float *pe = Pm + (int64_t)t * b + s;
                *pe = *pe * (gfq[t] * gfk[s] * acc);
            }
        }
}

static size_t tt_state_smem(int cols, int K, int b)
{
    return sizeof(float) * (size_t)cols * (3 * (size_t)K + (size_t)b);
}

/* (2) The state pass: one block per (sequence, head, COLS state columns). */
template <int COLS>
static __global__ void __launch_bounds__(TP_THREADS) tt_state_kernel(tt_args a, int nvb)
{
    constexpr int RG = TP_THREADS / COLS;
    extern __shared__ float sm[];
    const int K = a.K, V = a.V, H = a.H, b = a.b;
    const tt_slice z = tt_slice_of<COLS>(a, nvb, sm);
    const int cl = z.cl, rg = z.rg, h = z.h, col = z.col;
    const bool colok = z.colok;

    float *Ms = z.M, *Ss = z.S, *Hs = z.Mh; /* [K][COLS] each */
    float *G = Hs + (size_t)K * COLS;       /* [b][COLS] Gerr of the segment */

    int64_t row0, len;
    seqk__seq_rows(a.cu, a.T, z.n, &row0, &len);
    int pos = tt_pos_in(a, z.nh);
    tt_slice_load<COLS>(a, z, pos); /* each thread its own elements, here and in (c) */
    const int64_t slot0 = tt_first_slot(a, z.n);
    int64_t t0 = 0;
    for (int64_t j = 0; t0 < len; j++) {
        const int L = (int)((int64_t)(b - pos) < len - t0 ? (int64_t)(b - pos) : len - t0);
        const int64_t r0 = row0 + t0, sid = (slot0 + j) * H + h;
        const float *Pm = a.P + sid * (int64_t)b * b;
        const float *cf = a.coef + sid * 5 * (int64_t)b;
        const float *Mh = pos == 0 ? Ms : Hs;
        __syncthreads(); /* the slices loaded, or the previous segment's update done */
        /* (a) Gerr_t = fk_t (k_t . Mhat) - v_t */
        for (int t = rg; t < L; t += RG) {
            const int64_t rh = (r0 + t) * H + h;
            const float *kr = a.k + rh * K;
            float acc = 0.0f;
            for (int i = 0; i < K; i++) acc = fmaf(kr[i], Mh[i * COLS + cl], acc);
            const float v = colok ? a.v[rh * V + col] : 0.0f;
            G[t * COLS + cl] = cf[2 * b + t] * acc - v;
        }
        __syncthreads(); /* Gerr */
        /* (b) o_t = sum_{s<=t} P_ts Gerr_s + beta_t fq_t q_t . M0 + f_t fq_t q_t . S0 */
        for (int t = rg; t < L; t += RG) {
            const int64_t rh = (r0 + t) * H + h;
            const float *qr = a.q + rh * K;
            float am = 0.0f, as = 0.0f;
            for (int i = 0; i < K; i++) {
                const float x = qr[i];
                am = fmaf(x, Ms[i * COLS + cl], am);
                as = fmaf(x, Ss[i * COLS + cl], as);
            }
            float y = fmaf(cf[t], am, cf[b + t] * as);
            const float *pr = Pm + (int64_t)t * b;
            for (int s = 0; s <= t; s++) y = fmaf(pr[s], G[s * COLS + cl], y);
            if (colok) a.o[rh * V + col] = y;
        }
        __syncthreads(); /* every read of M0, S0 done */
        /* (c) the state, each thread its own rows; Mhat = M0 when the call
         * ends inside this mini-batch (its Mhat goes to the state) */
        const bool keep = pos == 0 && L < b;
        const float bL = a.scal[sid * 4], fL = a.scal[sid * 4 + 1], mL = a.scal[sid * 4 + 2];
        for (int i = rg; i < K; i += RG) {
            const float m = Ms[i * COLS + cl], sv = Ss[i * COLS + cl];
            if (keep) Hs[i * COLS + cl] = m;
            float um = 0.0f, us = 0.0f;
            for (int s = 0; s < L; s++) {
                const float kg = a.k[((r0 + s) * H + h) * K + i] * G[s * COLS + cl];
                um = fmaf(cf[3 * b + s], kg, um);
                us = fmaf(cf[4 * b + s], kg, us);
            }
            Ms[i * COLS + cl] = fmaf(bL, m, fL * sv) - um;
            Ss[i * COLS + cl] = mL * sv - us;
        }
        t0 += L;
        pos = (pos + L) % b;
    }
    /* own elements only from here: no barrier */
    if (pos == 0) /* the call ends at a mini-batch end: Mhat = M */
        for (int i = rg; i < K; i += RG) Hs[i * COLS + cl] = Ms[i * COLS + cl];
    tt_slice_store<COLS>(a, z);
}

/* pos = (pos_in + len) mod b and the reserved floats, per (sequence, head). */
static __global__ void tt_positions_kernel(tt_args a)
{
    const int64_t nh = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (nh >= a.N * a.H) return;
    int64_t row0, len;
    seqk__seq_rows(a.cu, a.T, nh / a.H, &row0, &len);
    const int p = (int)(((int64_t)tt_pos_in(a, nh) + len) % a.b);
    float *dst = a.s_out + nh * a.E + (int64_t)3 * a.K * a.V;
    dst[0] = (float)p;
    for (int i = 1; i < TT_PAD; i++) dst[i] = 0.0f;
}

/* ---- host side -------------------------------------------------------------------- */

typedef struct {
    int64_t nslots;
    size_t off_first, off_p, off_coef, off_scal, bytes;
} tt_plan;

static size_t tt_align(size_t n) { return (n + TP_WS_ALIGN - 1) / TP_WS_ALIGN * TP_WS_ALIGN; }

/* Slots of the problem: exact with P->cu (the host copy of cu_seqlens);
 * without it B (ceil(T / b) + 1), or for a varlen size query (N != B) the
 * bound floor((B T + N (b - 1)) / b) + N. */
static int64_t tt_nslots(const seqk__lin *P, int64_t b)
{
    if (P->cu) {
        int64_t s = 0;
        for (int64_t n = 0; n < P->N; n++) s += ((int64_t)P->cu[n + 1] - P->cu[n] + b - 1) / b + 1;
        return s;
    }
    if (P->N != P->B) return (P->B * P->T + P->N * (b - 1)) / b + P->N;
    return P->B * ((P->T + b - 1) / b + 1);
}

static tt_plan tt_make_plan(const seqk__lin *P, int64_t b, int mode)
{
    tt_plan pl = {};
    if (mode != SEQK_MODE_PARALLEL) return pl;
    pl.nslots = tt_nslots(P, b);
    const double per = (double)b * (double)b + 5.0 * (double)b + 4.0; /* floats per slot and head */
    const double total = (double)pl.nslots * (double)P->H * per * sizeof(float);
    if (total > 4.0e18) { /* not representable: the allocation fails with the size named */
        pl.bytes = SIZE_MAX;
        return pl;
    }
    const size_t ns = (size_t)pl.nslots * (size_t)P->H, bb = (size_t)b;
    size_t o = 0;
    pl.off_first = o, o += tt_align((size_t)(P->N + 1) * sizeof(int64_t));
    pl.off_p = o, o += tt_align(ns * bb * bb * sizeof(float));
    pl.off_coef = o, o += tt_align(ns * 5 * bb * sizeof(float));
    pl.off_scal = o, o += tt_align(ns * 4 * sizeof(float));
    pl.bytes = o;
    return pl;
}

extern "C" size_t seqk__cuda_titans_workspace(const seqk__lin *P, int mode, int64_t minibatch)
{
    return tt_make_plan(P, minibatch, mode).bytes;
}

/* Launches kernel, tt_recurrent_kernel<COLS> or tt_state_kernel<COLS>, on its
 * grid of N*H*ceil(V/COLS) blocks of TT_THREADS threads, with smem bytes of
 * dynamic shared memory. */
template <int COLS>
static seqk_status tt_launch(const char *fn, void (*kernel)(tt_args, int), size_t smem,
                             const tt_args &a, cudaStream_t stream)
{
    const int nvb = (a.V + COLS - 1) / COLS;
    const int64_t blocks = a.N * a.H * nvb;
    if (blocks > INT_MAX)
        return seqk__fail(SEQK_ERROR_UNSUPPORTED, "%s: N*H*ceil(V/%d)=%lld blocks, at most %d", fn,
                          COLS, (long long)blocks, INT_MAX);
    if (blocks == 0) return SEQK_SUCCESS;
    const seqk_status st = seqk__smem_optin(fn, kernel, smem);
    if (st) return st;
    kernel<<<(unsigned)blocks, TT_THREADS, smem, stream>>>(a, nvb);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    return SEQK_SUCCESS;
}

/* The state pass with COLS columns per block. */
template <int COLS>
static seqk_status tt_launch_state(const char *fn, const tt_args &a, cudaStream_t stream)
{
    return tt_launch<COLS>(fn, tt_state_kernel<COLS>, tt_state_smem(COLS, a.K, a.b), a, stream);
}

/* The recurrent mode with COLS columns per block. */
template <int COLS>
static seqk_status tt_launch_recurrent(const char *fn, const tt_args &a, cudaStream_t stream)
{
    return tt_launch<COLS>(fn, tt_recurrent_kernel<COLS>, tt_smem_bytes<COLS>(a.K), a, stream);
}

/* The parallel mode: the slot table (varlen), the segments, the state pass. */
static seqk_status tt_parallel(const char *fn, seqk_context *ctx, const seqk__lin *P, tt_args &a,
                               cudaStream_t stream)
{
    const tt_plan pl = tt_make_plan(P, a.b, SEQK_MODE_PARALLEL);
    void *base = NULL;
    seqk_status st = seqk__workspace(fn, ctx, pl.bytes, &base);
    if (st) return st;
    char *ws = (char *)base;
    a.spn = (a.T + a.b - 1) / a.b + 1;
    a.first = a.cu ? (int64_t *)(ws + pl.off_first) : NULL;
    a.P = (float *)(ws + pl.off_p);
    a.coef = (float *)(ws + pl.off_coef);
    a.scal = (float *)(ws + pl.off_scal);
    const int64_t segs = pl.nslots * a.H;
    if (segs > INT_MAX)
        return seqk__fail(SEQK_ERROR_UNSUPPORTED, "%s: %lld mini-batch slots x heads, at most %d",
                          fn, (long long)segs, INT_MAX);
    if (a.first) {
        tt_first_kernel<<<1, 1, 0, stream>>>(a.cu, a.N, a.b, a.first);
        SEQK_CUDA_CHECK_LAUNCH(fn);
    }
    if (segs > 0 && a.T > 0) {
        const size_t smem = tt_seg_smem(a.b);
        if ((st = seqk__smem_optin(fn, tt_seg_kernel, smem))) return st;
        tt_seg_kernel<<<(unsigned)segs, TP_THREADS, smem, stream>>>(a);
        SEQK_CUDA_CHECK_LAUNCH(fn);
    }
    /* the widest column block whose slices and Gerr fit */
    if (tt_state_smem(32, a.K, a.b) <= TP_SMEM_MAX) return tt_launch_state<32>(fn, a, stream);
    if (tt_state_smem(16, a.K, a.b) <= TP_SMEM_MAX) return tt_launch_state<16>(fn, a, stream);
    return tt_launch_state<8>(fn, a, stream); /* K, b <= 1024: 128 KB */
}

extern "C" seqk_status seqk__cuda_titans(seqk_context *ctx, int mode, const seqk__lin *P,
                                         const float *eta, const float *theta,
                                         const float *alpha, int64_t minibatch,
                                         const float *state_in, float *state_out,
                                         const int32_t *cu_device)
{
    static const char fn[] = "seqk_titans (CUDA)";
    SEQK_CUDA_TRY(fn, cudaSetDevice(ctx->device));
    const cudaStream_t stream = seqk__stream(ctx);
    tt_args a = {};
    a.T = P->T;
    a.N = P->N;
    a.E = 3 * P->K * P->V + TT_PAD;
    a.H = (int)P->H, a.K = (int)P->K, a.V = (int)P->V, a.b = (int)minibatch;
    a.scale = P->scale;
    a.l2 = (P->flags & SEQK__LIN_L2NORM) != 0;
    a.q = P->q, a.k = P->k, a.v = P->v, a.eta = eta, a.theta = theta, a.alpha = alpha;
    a.o = P->o, a.s_in = state_in, a.s_out = state_out;
    a.cu = P->cu ? cu_device : NULL;
    if (P->V > INT_MAX || P->H > INT_MAX)
        return seqk__fail(SEQK_ERROR_UNSUPPORTED, "%s: H=%lld, V=%lld, at most %d on CUDA", fn,
                          (long long)P->H, (long long)P->V, INT_MAX);
    seqk_status st;
    if (mode == SEQK_MODE_PARALLEL) st = tt_parallel(fn, ctx, P, a, stream);
    else if (a.K <= 256) st = tt_launch_recurrent<32>(fn, a, stream);
    else if (a.K <= 512) st = tt_launch_recurrent<16>(fn, a, stream);
    else st = tt_launch_recurrent<8>(fn, a, stream);
    if (st) return st;
    if (state_out && a.N * a.H > 0) {
        tt_positions_kernel<<<seqk__ceil_div(a.N * a.H, 256), 256, 0, stream>>>(a);
        SEQK_CUDA_CHECK_LAUNCH(fn);
    }
    return SEQK_SUCCESS;
}
