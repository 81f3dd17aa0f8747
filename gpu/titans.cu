/*
 * gpu/titans.cu -- CUDA backend of the Titans linear memory (seqk_titans,
 * DESIGN 3.4). First, plain version: fp32, CUDA cores, and ONE kernel for
 * both modes: SEQK_MODE_PARALLEL on CUDA runs the recurrent kernel too (the
 * same function; the chunked form of ssm/titans.c is not ported yet).
 * Written without a GPU at hand: compiled warning-free for sm_80/sm_90;
 * tests/test_titans.c runs it on every backend once a device is there.
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
 * tt_recurrent_kernel<COLS>: one block of 256 threads per (sequence, head,
 * block of COLS state columns), COLS = 32 (K <= 256), 16 (K <= 512) or 8
 * (K <= 1024) so that the three K x COLS slices (M, S, Mhat) fit shared
 * memory (at most ~120 KB; opted in above 48 KB). Thread tid owns column
 * tid % COLS and rows tid / COLS + RG j (RG = 256 / COLS row groups); a warp
 * covers consecutive rows' columns, so the slice accesses are conflict-free.
 * Per token:
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
 * token parity. tt_positions_kernel then writes pos = (pos_in + len) mod b
 * and the reserved floats of every (sequence, head): a separate launch, so
 * that no block overwrites a position another block of the same head has
 * not read yet when state_in == state_out. An out-of-range pos in state_in
 * (not validated on CUDA) is taken as 0.
 *
 * To do (measure first): the chunked form of ssm/titans.c (Gerr, the mixing
 * matrix and the state update as tensor-core products per mini-batch),
 * more columns per block and the state in registers for decoding.
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

#define TT_FULL_MASK 0xffffffffu

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
} tt_args;

static __device__ __forceinline__ float tt_warp_sum(float x)
{
    for (int off = 16; off > 0; off >>= 1) x += __shfl_xor_sync(TT_FULL_MASK, x, off);
    return x;
}

static __device__ __forceinline__ void tt_seq(const tt_args &a, int64_t n, int64_t *row0,
                                              int64_t *len)
{
    if (a.cu) {
        *row0 = a.cu[n];
        *len = (int64_t)a.cu[n + 1] - a.cu[n];
    } else {
        *row0 = n * a.T;
        *len = a.T;
    }
}

/* The position of (n, h) in state_in; 0 without it or when out of range. */
static __device__ __forceinline__ int tt_pos_in(const tt_args &a, int64_t nh)
{
    if (!a.s_in) return 0;
    const float p = a.s_in[nh * a.E + (int64_t)3 * a.K * a.V];
    return (p >= 0.0f && p < (float)a.b) ? (int)p : 0;
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
    const int col_l = tid % COLS, rg = tid / COLS;
    const int64_t id = blockIdx.x;
    const int vb = (int)(id % nvb);
    const int h = (int)((id / nvb) % H);
    const int64_t n = id / ((int64_t)nvb * H);
    const int64_t nh = n * H + h;
    const int col = vb * COLS + col_l;
    const bool colok = col < V;
    const int64_t KV = (int64_t)K * V;

    float *Ms = sm;                               /* [K][COLS] */
    float *Ss = Ms + (size_t)K * COLS;            /* [K][COLS] */
    float *Hs = Ss + (size_t)K * COLS;            /* [K][COLS] Mhat */
    float *qs = Hs + (size_t)K * COLS;            /* [2][K] raw q by token parity */
    float *ks = qs + 2 * K;                       /* [2][K] raw k by token parity */
    float *vs = ks + 2 * K;                       /* [2][COLS] */
    float *gp = vs + 2 * COLS;                    /* [COLS] pending theta fk Gerr */
    float *red = gp + COLS;                       /* [2][RG][COLS] partial x, y */
    float *nred = red + 2 * RG * COLS;            /* [2][8][2] partial q.q, k.k */
    float *gt = nred + 2 * TT_WARPS * 2;          /* [2][4] eta, theta, a by parity */

    int64_t row0, len;
    tt_seq(a, n, &row0, &len);
    int pos = tt_pos_in(a, nh);
    const float *sin_ = a.s_in ? a.s_in + nh * a.E : NULL;
    for (int i = rg; i < K; i += RG) {
        const int64_t e = (int64_t)i * V + col;
        Ms[i * COLS + col_l] = (sin_ && colok) ? sin_[e] : 0.0f;
        Ss[i * COLS + col_l] = (sin_ && colok) ? sin_[KV + e] : 0.0f;
        Hs[i * COLS + col_l] = (sin_ && colok && pos != 0) ? sin_[2 * KV + e] : 0.0f;
    }
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
            sq = tt_warp_sum(sq);
            sk = tt_warp_sum(sk);
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
    if (a.s_out && colok) {
        float *so = a.s_out + nh * a.E;
        for (int i = rg; i < K; i += RG) {
            const int64_t e = (int64_t)i * V + col;
            so[e] = Ms[i * COLS + col_l];
            so[KV + e] = Ss[i * COLS + col_l];
            so[2 * KV + e] = Hs[i * COLS + col_l];
        }
    }
}

/* pos = (pos_in + len) mod b and the reserved floats, per (sequence, head). */
static __global__ void tt_positions_kernel(tt_args a)
{
    const int64_t nh = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (nh >= a.N * a.H) return;
    int64_t row0, len;
    tt_seq(a, nh / a.H, &row0, &len);
    const int p = (int)(((int64_t)tt_pos_in(a, nh) + len) % a.b);
    float *dst = a.s_out + nh * a.E + (int64_t)3 * a.K * a.V;
    dst[0] = (float)p;
    for (int i = 1; i < TT_PAD; i++) dst[i] = 0.0f;
}

template <int COLS>
static seqk_status tt_launch(const char *fn, const tt_args &a, cudaStream_t stream)
{
    const int nvb = (a.V + COLS - 1) / COLS;
    const int64_t blocks = a.N * a.H * nvb;
    if (blocks > INT_MAX)
        return seqk__fail(SEQK_ERROR_UNSUPPORTED, "%s: N*H*ceil(V/%d)=%lld blocks, at most %d", fn,
                          COLS, (long long)blocks, INT_MAX);
    if (blocks == 0) return SEQK_SUCCESS;
    const size_t smem = tt_smem_bytes<COLS>(a.K);
    if (smem > 48 * 1024)
        SEQK_CUDA_TRY(fn, cudaFuncSetAttribute(tt_recurrent_kernel<COLS>,
                                               cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               (int)smem));
    tt_recurrent_kernel<COLS><<<(unsigned)blocks, TT_THREADS, smem, stream>>>(a, nvb);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    return SEQK_SUCCESS;
}

extern "C" seqk_status seqk__cuda_titans(seqk_context *ctx, int mode, const seqk__lin *P,
                                         const float *eta, const float *theta,
                                         const float *alpha, int64_t minibatch,
                                         const float *state_in, float *state_out,
                                         const int32_t *cu_device)
{
    static const char fn[] = "seqk_titans (CUDA)";
    (void)mode; /* both modes: the recurrent kernel */
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
    if (P->V > INT_MAX)
        return seqk__fail(SEQK_ERROR_UNSUPPORTED, "%s: V=%lld, at most %d on CUDA", fn,
                          (long long)P->V, INT_MAX);
    seqk_status st;
    if (a.K <= 256) st = tt_launch<32>(fn, a, stream);
    else if (a.K <= 512) st = tt_launch<16>(fn, a, stream);
    else st = tt_launch<8>(fn, a, stream);
    if (st) return st;
    if (state_out && a.N * a.H > 0) {
        tt_positions_kernel<<<seqk__ceil_div(a.N * a.H, 256), 256, 0, stream>>>(a);
        SEQK_CUDA_CHECK_LAUNCH(fn);
    }
    return SEQK_SUCCESS;
}
