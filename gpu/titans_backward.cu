/*
 * gpu/titans_backward.cu -- CUDA backend of seqk_titans_backward: the
 * gradients of the Titans linear memory (DESIGN 3.4, issue #16). The math is
 * the CPU backward's (ssm/titans_backward.c, whose top comment lists every
 * formula; docs/titans-backward.md, section 4, derives them): per (sequence,
 * head), a forward state pass over the segments (mini-batches, or the part
 * of one a call starts or ends inside) keeping the state before each segment
 * and its error Gerr, then a reverse pass carrying X = dL/dM, Y = dL/dS
 * through the segments, each one's gradients from n x n and n x {K, V}
 * products. First, plain version: fp32 FFMA on CUDA cores, no tensor cores.
 * Written without a GPU at hand: compiled warning-free by nvcc and run on the
 * CPU emulator (tools/cuda_emu) against the float64 reference of
 * tests/test_titans_backward.c; not yet run on a GPU.
 *
 * Layout of the work: one block of TB_THREADS threads per (sequence, head)
 * item (a grid of min(N H, TB_MAX_BLOCKS) blocks striding over the items),
 * which runs the CPU's per-item algorithm step by step, every step spread
 * over the block's threads: the products through tb_gemm (64 x 64 output
 * tiles, 32-deep slices of both operands staged in shared memory, two 4 x 4
 * register tiles per thread, gpu/chunks.cuh's seqk__tile4_*), the row dots a
 * warp per token, the element-wise steps a thread per element, the gate
 * recurrences of section 4.3 a thread per column (R, R') or per token (the
 * sums for deta, dalpha). Every step ends with a barrier. The per-item
 * intermediates live in the block's slice of the workspace.
 *
 * Deterministic: no atomics; every output element is written by one thread
 * of the one block that owns its item, every sum in a fixed order (the
 * products' inner dimension in order, the warp sums a fixed butterfly, the
 * block sums warp by warp).
 *
 * Memory (the rule include/seqk.h states): per block, the state before each
 * segment and the segment's Gerr (2 K V + b V floats per segment) are kept
 * whole when the longest sequence's fit min(SEQK__TT_BWD_FULL_BYTES (16 MiB,
 * the CPU's per-thread rule), TB_TOTAL_BYTES (1 GiB) / blocks); else the
 * state before every R-th segment (R the smallest with R^2 >= segments,
 * seqk__chunk_ckpt_plan) and each group of R recomputed from its checkpoint
 * during the reverse pass. Besides that, per block the segment scratch: 7
 * b x b matrices, about 13 b K + 2 b V + 5 K V floats and the gate vectors.
 *
 * To tune (measure first): more than one block per item (the state pass and
 * the carry are separable by state columns, as gpu/titans.cu's state pass
 * is; the rest is parallel over segments once the carries are known),
 * tensor cores for the products, the n x n matrices in shared memory for
 * small b.
 */
extern "C" {
#include "../core/internal.h"
#include "../scan/chunk.h"
#include "../scan/linear_state.h"
#include "../ssm/titans.h"
}

#include "chunks.cuh"

#include <limits.h>
#include <string.h>

enum {
    TB_THREADS = 128,
    TB_WARPS = TB_THREADS / 32,
    TB_TILE = 64,    /* output tile of tb_gemm: 64 x 64, two 4 x 4 register tiles per thread */
    TB_KSTEP = 32,   /* inner-dimension slice staged in shared memory */
    TB_ALIGN = 64,   /* floats: each scratch region starts 256 bytes after the previous */
    TB_MAX_BLOCKS = 1024
};
static_assert(TB_THREADS == 128, "tb_gemm: a 16 x 8 grid of two 4 x 4 register tiles");

/* The kept segment states of all blocks together, at most (bytes). */
#define TB_TOTAL_BYTES ((size_t)1 << 30)

/* tb_gemm's masks: which part of the product is needed or nonzero. */
enum {
    TB_FULL = 0,
    TB_LOWER_C = 1, /* only C[i][j], j <= i, is needed (tiles wholly above the diagonal skipped) */
    TB_LOWER_A = 2, /* op(A)[i][k] = 0 for k > i */
    TB_UPPER_A = 3  /* op(A)[i][k] = 0 for k < i */
};

/* Everything the kernel needs, by value. */
typedef struct tb_args {
    int64_t T, N, E; /* tokens per batch entry (without varlen), sequences, floats per state */
    int64_t H, K, V, b;
    float scale;
    int l2;
    const float *q, *k, *v, *eta, *theta, *alpha; /* [B*T, H, K|V], [B*T, H] */
    const float *s_in, *dout, *ds_out;            /* [N,H,E] or NULL, [B*T,H,V], [N,H,E] or NULL */
    float *dq, *dk, *dv, *deta, *dtheta, *dalpha; /* outputs */
    float *ds_in;                                 /* [N, H, E] or NULL */
    const int32_t *cu;                            /* device cu_seqlens or NULL */
    float *ws;                                    /* the blocks' scratch, `scratch` floats each */
    int64_t scratch, R, nckpt, ngerr;             /* the plan (tb_make_plan) */
} tb_args;

/* One block's scratch (the CPU's ttb_scratch, without the packing). */
typedef struct tb_scr {
    double *lm, *lb;                             /* [b] cumulative logs of eta, a */
    float *mv, *bv, *fv, *av, *ev, *th, *gv, *mu; /* [b] m, beta, f, a, eta, theta, g, mu */
    float *bn, *xv, *yv, *zv, *zM, *rx, *ry, *rxp; /* [b] bn, x, y, z, zM, rx, ry, rx' */
    float *Q, *Kc;                               /* [b, K] q~, k~ rows */
    float *Db, *Gx, *QK, *DE, *P1, *P2, *At;     /* [b, b]; QK, DE then R, R' (rows t) */
    float *Gerr, *Wm;                            /* [b, V] */
    float *GXY, *dOMS, *QQ, *W2;                 /* [b, 2K] */
    float *Z, *dQt, *dKt;                        /* [b, K] */
    float *dH;                                   /* [K, V] */
    float *XY, *prod;                            /* [2K, V] */
    float *ckpt, *seg, *gk;                      /* [nckpt, 2KV], [R, 2KV], [ngerr, b, V] */
} tb_scr;

/* Carves one block's scratch from base (NULL: only counts); returns its floats. */
static __host__ __device__ int64_t tb_carve(tb_scr *w, float *base, int64_t b, int64_t K,
                                            int64_t V, int64_t R, int64_t nckpt, int64_t ngerr)
{
    int64_t o = 0;
#define TB_TAKE(type, field, n)                                                                \
    ((base ? (void)(w->field = (type *)(base + o)) : (void)0),                                 \
     o += ((int64_t)(n) + TB_ALIGN - 1) / TB_ALIGN * TB_ALIGN)
    TB_TAKE(double, lm, 2 * b);
    TB_TAKE(double, lb, 2 * b);
    TB_TAKE(float, mv, b), TB_TAKE(float, bv, b), TB_TAKE(float, fv, b), TB_TAKE(float, av, b);
    TB_TAKE(float, ev, b), TB_TAKE(float, th, b), TB_TAKE(float, gv, b), TB_TAKE(float, mu, b);
    TB_TAKE(float, bn, b), TB_TAKE(float, xv, b), TB_TAKE(float, yv, b), TB_TAKE(float, zv, b);
    TB_TAKE(float, zM, b), TB_TAKE(float, rx, b), TB_TAKE(float, ry, b), TB_TAKE(float, rxp, b);
    TB_TAKE(float, Q, b * K), TB_TAKE(float, Kc, b * K);
    TB_TAKE(float, Db, b * b), TB_TAKE(float, Gx, b * b), TB_TAKE(float, QK, b * b);
    TB_TAKE(float, DE, b * b), TB_TAKE(float, P1, b * b), TB_TAKE(float, P2, b * b);
    TB_TAKE(float, At, b * b);
    TB_TAKE(float, Gerr, b * V), TB_TAKE(float, Wm, b * V);
    TB_TAKE(float, GXY, 2 * b * K), TB_TAKE(float, dOMS, 2 * b * K);
    TB_TAKE(float, QQ, 2 * b * K), TB_TAKE(float, W2, 2 * b * K);
    TB_TAKE(float, Z, b * K), TB_TAKE(float, dQt, b * K), TB_TAKE(float, dKt, b * K);
    TB_TAKE(float, dH, K * V);
    TB_TAKE(float, XY, 2 * K * V), TB_TAKE(float, prod, 2 * K * V);
    TB_TAKE(float, ckpt, 2 * K * V * nckpt);
    TB_TAKE(float, seg, 2 * K * V * R);
    TB_TAKE(float, gk, b * V * ngerr);
#undef TB_TAKE
    return o;
}

/* ---- block-wide steps (every thread of the block calls; each ends with a barrier) -- */

/* C[M x Nn] = alpha op(A) op(B) (+ C with acc), op(A)[i][k] = tA ? A[k lda + i] :
 * A[i lda + k], op(B)[k][j] = tB ? B[j ldb + k] : B[k ldb + j], inner
 * dimension Kd; mask as above. Per output element one FMA per k, k in
 * order. C must not overlap A or B. Thread (tx, ty) = (tid % 16, tid / 16)
 * of an output tile holds rows ty + 8 m (m < 8: r0 the even m, r1 the odd
 * ones), columns tx + 16 j (j < 4). */
static __device__ void tb_gemm(bool tA, bool tB, int64_t M, int64_t Nn, int64_t Kd, float alpha,
                               const float *A, int64_t lda, const float *B, int64_t ldb, bool acc,
                               float *C, int64_t ldc, int mask)
{
    __shared__ float As[TB_KSTEP][TB_TILE]; /* op(A) slice, k-major */
    __shared__ float Bs[TB_KSTEP][TB_TILE]; /* op(B) slice */
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    static_assert(TB_THREADS / 16 == 8, "rows ty + 8 m");
    for (int64_t i0 = 0; i0 < M; i0 += TB_TILE)
        for (int64_t j0 = 0; j0 < Nn; j0 += TB_TILE) {
            if (mask == TB_LOWER_C && j0 > i0 + TB_TILE - 1) continue; /* uniform over the block */
            int64_t kb = 0, ke = Kd;
            if (mask == TB_LOWER_A && i0 + TB_TILE < ke) ke = i0 + TB_TILE;
            if (mask == TB_UPPER_A) kb = i0;
            float r0[4][4], r1[4][4];
            seqk__tile4_zero(r0);
            seqk__tile4_zero(r1);
            for (int64_t k0 = kb; k0 < ke; k0 += TB_KSTEP) {
                for (int e = tid; e < TB_KSTEP * TB_TILE; e += TB_THREADS) {
                    /* consecutive threads along the operand's contiguous index */
                    const int ka = tA ? e / TB_TILE : e % TB_KSTEP;
                    const int ia = tA ? e % TB_TILE : e / TB_KSTEP;
                    const int kbb = tB ? e % TB_KSTEP : e / TB_TILE;
                    const int jb = tB ? e / TB_KSTEP : e % TB_TILE;
                    const int64_t gi = i0 + ia, gka = k0 + ka, gj = j0 + jb, gkb = k0 + kbb;
                    As[ka][ia] = (gi < M && gka < ke)
                                     ? (tA ? A[gka * lda + gi] : A[gi * lda + gka])
                                     : 0.0f;
                    Bs[kbb][jb] = (gj < Nn && gkb < ke)
                                      ? (tB ? B[gj * ldb + gkb] : B[gkb * ldb + gj])
                                      : 0.0f;
                }
                __syncthreads();
                /* only threads with an output inside C, over the slice's valid k */
                const int kn = ke - k0 < TB_KSTEP ? (int)(ke - k0) : TB_KSTEP;
                if (i0 + ty < M && j0 + tx < Nn)
                    for (int kk = 0; kk < kn; kk++) {
                        seqk__tile4_step(r0, &As[kk][ty], 16, &Bs[kk][tx], 16);
                        seqk__tile4_step(r1, &As[kk][ty + 8], 16, &Bs[kk][tx], 16);
                    }
                __syncthreads(); /* the slices are rewritten next */
            }
#pragma unroll
            for (int m = 0; m < 8; m++)
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    const int64_t gi = i0 + ty + 8 * m, gj = j0 + tx + 16 * j;
                    if (gi < M && gj < Nn) {
                        const float x = alpha * (m % 2 ? r1[m / 2][j] : r0[m / 2][j]);
                        C[gi * ldc + gj] = acc ? C[gi * ldc + gj] + x : x;
                    }
                }
        }
    __syncthreads();
}

static __device__ void tb_copy(float *dst, const float *src, int64_t n)
{
    for (int64_t e = threadIdx.x; e < n; e += TB_THREADS) dst[e] = src[e];
    __syncthreads();
}

static __device__ void tb_zero(float *dst, int64_t n)
{
    for (int64_t e = threadIdx.x; e < n; e += TB_THREADS) dst[e] = 0.0f;
    __syncthreads();
}

/* The inner products <S0, X>, <S0, Y>, <M0, X> of MS = [M0; S0] and XY =
 * [X; Y] (KV floats each) into c[0..2], in double: per thread a strided
 * sum, then the warps' sums in order; every thread gets them. */
static __device__ void tb_dots(const float *MS, const float *XY, int64_t KV, float c[3])
{
    __shared__ double red[3][TB_WARPS];
    double s[3] = {0.0, 0.0, 0.0};
    for (int64_t e = threadIdx.x; e < KV; e += TB_THREADS) {
        const double m = MS[e], sv = MS[KV + e], x = XY[e];
        s[0] += sv * x;
        s[1] += sv * (double)XY[KV + e];
        s[2] += m * x;
    }
    for (int i = 0; i < 3; i++) {
        s[i] = seqk__warp_sum_d(s[i]);
        if ((threadIdx.x & 31) == 0) red[i][threadIdx.x >> 5] = s[i];
    }
    __syncthreads();
    for (int i = 0; i < 3; i++) {
        double t = 0.0;
        for (int w = 0; w < TB_WARPS; w++) t += red[i][w];
        c[i] = (float)t;
    }
    __syncthreads(); /* red is rewritten by the next call */
}

/* The dot of two K-rows by a warp, in every lane. */
static __device__ __forceinline__ float tb_warp_dot(const float *x, const float *y, int64_t K)
{
    float s = 0.0f;
    for (int64_t i = threadIdx.x & 31; i < K; i += 32) s = fmaf(x[i], y[i], s);
    return seqk__warp_sum(s);
}

/* ---- one segment ------------------------------------------------------------------ */

/* exp(min(lt - ls, 0)) (a ratio of cumulated gates; the min guards rounding). */
static __device__ __forceinline__ float tb_ratio(double lt, double ls)
{
    const double d = lt - ls;
    return expf((float)(d < 0.0 ? d : 0.0));
}

/* log x for the cumulated gates (ssm/titans.h's seqk__titans_log_gate). */
static __device__ __forceinline__ double tb_log_gate(float x)
{
    return x > 0.0f ? log((double)x) : -1.0e4;
}

/* The rows of the segment [r0, r0 + n) of head h: Q = q~ (with the scale;
 * with_q), Kc = k~; a warp per token. */
static __device__ void tb_load(const tb_args &a, const tb_scr &w, int64_t r0, int64_t n, int64_t h,
                               bool with_q)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t K = a.K;
    for (int64_t t = warp; t < n; t += TB_WARPS) {
        const int64_t rh = (r0 + t) * a.H + h;
        const float *q = a.q + rh * K, *k = a.k + rh * K;
        const float2 f = seqk__warp_qk_factors(q, k, (int)K, a.scale, a.l2, SEQK__LIN_L2NORM_EPS);
        for (int64_t i = lane; i < K; i += 32) {
            if (with_q) w.Q[t * K + i] = f.x * q[i];
            w.Kc[t * K + i] = f.y * k[i];
        }
    }
    __syncthreads();
}

/* The gates of the segment (the CPU's seg_gates): the vectors m, beta, f, a,
 * eta, theta, g, mu, bn and, with full, the n x n matrices beta_u / beta_t
 * (Db) and Gmix (Gx), zero above the diagonal. */
static __device__ void tb_gates(const tb_args &a, const tb_scr &w, int64_t r0, int64_t n, int64_t h,
                                bool full)
{
    const int tid = threadIdx.x;
    for (int64_t t = tid; t < n; t += TB_THREADS) {
        const int64_t rh = (r0 + t) * a.H + h;
        w.av[t] = 1.0f - a.alpha[rh];
        w.ev[t] = a.eta[rh];
        w.th[t] = a.theta[rh];
    }
    __syncthreads();
    if (tid == 0) { /* the cumulated gates, in order */
        double am = 0.0, ab = 0.0;
        float f = 0.0f;
        for (int64_t t = 0; t < n; t++) {
            am += tb_log_gate(w.ev[t]);
            ab += tb_log_gate(w.av[t]);
            w.lm[t] = am, w.lb[t] = ab;
            w.mv[t] = (float)exp(am);
            w.bv[t] = (float)exp(ab);
            f = w.av[t] * f + w.mv[t];
            w.fv[t] = f;
        }
    }
    __syncthreads();
    const double lmL = w.lm[n - 1], lbL = w.lb[n - 1];
    for (int64_t s = tid; s < n; s += TB_THREADS) { /* Gmix column s: the row recurrence */
        w.mu[s] = tb_ratio(lmL, w.lm[s]);
        w.bn[s] = tb_ratio(lbL, w.lb[s]);
        float g = 1.0f;
        if (full) w.Gx[s * n + s] = 1.0f;
        for (int64_t u = s + 1; u < n; u++) {
            g = fmaf(w.av[u], g, tb_ratio(w.lm[u], w.lm[s]));
            if (full) w.Gx[u * n + s] = g;
        }
        w.gv[s] = g;
    }
    if (full)
        for (int64_t e = tid; e < n * n; e += TB_THREADS) {
            const int64_t u = e / n, s = e % n;
            if (s <= u) w.Db[e] = tb_ratio(w.lb[u], w.lb[s]);
            else w.Db[e] = w.Gx[e] = 0.0f;
        }
    __syncthreads();
}

/* G = K~ Hm - V for the loaded segment (Hm K x V; G n x V). */
static __device__ void tb_gerr(const tb_args &a, const tb_scr &w, int64_t r0, int64_t n, int64_t h,
                               const float *Hm, float *G)
{
    const int64_t V = a.V;
    for (int64_t e = threadIdx.x; e < n * V; e += TB_THREADS)
        G[e] = -a.v[((r0 + e / V) * a.H + h) * V + e % V];
    __syncthreads();
    tb_gemm(false, false, n, V, a.K, 1.0f, w.Kc, a.K, Hm, V, true, G, V, TB_FULL);
}

/* The state after the segment [r0, r0 + n): MSn = [M'; S'] from MS = [M0; S0]
 * (2K x V; MSn may be MS) and the Mhat Hm (may be M0); Gerr to G. */
static __device__ void tb_advance(const tb_args &a, const tb_scr &w, int64_t r0, int64_t n,
                                  int64_t h, const float *MS, const float *Hm, float *MSn,
                                  float *G)
{
    const int64_t K = a.K, K2 = 2 * K, KV = K * a.V;
    tb_load(a, w, r0, n, h, false);
    tb_gates(a, w, r0, n, h, false);
    tb_gerr(a, w, r0, n, h, Hm, G);
    for (int64_t e = threadIdx.x; e < n * K; e += TB_THREADS) {
        const int64_t s = e / K, j = e % K;
        const float kv = w.Kc[e];
        w.W2[s * K2 + j] = -w.th[s] * w.gv[s] * kv;
        w.W2[s * K2 + K + j] = -w.th[s] * w.mu[s] * kv;
    }
    const float bL = w.bv[n - 1], fL = w.fv[n - 1], mL = w.mv[n - 1];
    for (int64_t e = threadIdx.x; e < KV; e += TB_THREADS) {
        const float m = MS[e], s = MS[KV + e];
        MSn[e] = bL * m + fL * s;
        MSn[KV + e] = mL * s;
    }
    __syncthreads();
    tb_gemm(true, false, K2, a.V, n, 1.0f, w.W2, K2, G, a.V, true, MSn, a.V, TB_FULL);
}

/* The backward of the segment [row, row + n) of head h (the CPU's
 * seg_backward): MS = [M0; S0] the state before it, Hm its Mhat, w.XY the
 * gradient of the state after it (replaced by that of the state before it),
 * dHx the extra gradient of its Mhat or NULL, starts: it starts a
 * mini-batch (dH then goes into X; else to dMh, if not NULL). Gk: its Gerr
 * kept by the state pass, or NULL. */
static __device__ void tb_seg_backward(const tb_args &a, const tb_scr &w, int64_t row, int64_t n,
                                       int64_t h, const float *MS, const float *Hm, const float *Gk,
                                       const float *dHx, bool starts, float *dMh)
{
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int64_t K = a.K, V = a.V, H = a.H, K2 = 2 * K, KV = K * V, ldo = H * V;
    const float *dO = a.dout + (row * H + h) * V;
    float *X = w.XY, *Y = w.XY + KV;
    tb_load(a, w, row, n, h, true);
    tb_gates(a, w, row, n, h, true);
    const float *Gerr = Gk;
    if (!Gerr) {
        tb_gerr(a, w, row, n, h, Hm, w.Gerr);
        Gerr = w.Gerr;
    }

    /* the n x n matrices: QK = Q K^T, DE = dO Gerr^T (lower), P1, P2, At (A^T);
     * W2 = [diag(g) K~ | diag(mu) K~] */
    tb_gemm(false, true, n, n, K, 1.0f, w.Q, K, w.Kc, K, false, w.QK, n, TB_LOWER_C);
    tb_gemm(false, true, n, n, V, 1.0f, dO, ldo, Gerr, V, false, w.DE, n, TB_LOWER_C);
    for (int64_t e = tid; e < n * n; e += TB_THREADS) {
        const bool on = e % n <= e / n;
        const float qk = on ? w.QK[e] : 0.0f, de = on ? w.DE[e] : 0.0f, gx = w.Gx[e];
        w.P1[e] = gx * qk;
        w.P2[e] = gx * de;
        w.At[e] = qk * de;
    }
    for (int64_t e = tid; e < n * K; e += TB_THREADS) {
        const int64_t s = e / K, j = e % K;
        w.W2[s * K2 + j] = w.gv[s] * w.Kc[e];
        w.W2[s * K2 + K + j] = w.mu[s] * w.Kc[e];
    }
    __syncthreads();

    /* W = W2 [X; Y] + P1^T dO; dv = theta W; dE = -theta W (in Wm) */
    tb_gemm(false, false, n, V, K2, 1.0f, w.W2, K2, w.XY, V, false, w.Wm, V, TB_FULL);
    tb_gemm(true, false, n, V, n, 1.0f, w.P1, n, dO, ldo, true, w.Wm, V, TB_UPPER_A);
    for (int64_t e = tid; e < n * V; e += TB_THREADS) {
        const int64_t s = e / V, j = e % V;
        const float t = w.th[s], x = w.Wm[e];
        a.dv[((row + s) * H + h) * V + j] = t * x;
        w.Wm[e] = -t * x;
    }
    __syncthreads();
    const float *dE = w.Wm;
    /* dH = K^T dE (+ dHx) */
    tb_gemm(true, false, K, V, n, 1.0f, w.Kc, K, dE, V, false, w.dH, V, TB_FULL);
    if (dHx) {
        for (int64_t e = tid; e < KV; e += TB_THREADS) w.dH[e] += dHx[e];
        __syncthreads();
    }

    /* Z = P2^T Q + diag(g) Gerr X^T + diag(mu) Gerr Y^T; x, y; dtheta */
    tb_gemm(false, true, n, K2, V, 1.0f, Gerr, V, w.XY, V, false, w.GXY, K2, TB_FULL);
    for (int64_t s = warp; s < n; s += TB_WARPS) {
        const float *gx = w.GXY + s * K2, *gy = gx + K, *kr = w.Kc + s * K;
        const float xs = tb_warp_dot(kr, gx, K), ys = tb_warp_dot(kr, gy, K);
        if (lane == 0) w.xv[s] = xs, w.yv[s] = ys;
        const float g = w.gv[s], mu = w.mu[s];
        for (int64_t j = lane; j < K; j += 32) w.Z[s * K + j] = g * gx[j] + mu * gy[j];
    }
    __syncthreads();
    tb_gemm(true, false, n, K, n, 1.0f, w.P2, n, w.Q, K, true, w.Z, K, TB_UPPER_A);
    for (int64_t s = warp; s < n; s += TB_WARPS) {
        const float d = tb_warp_dot(w.Kc + s * K, w.Z + s * K, K);
        if (lane == 0) a.dtheta[(row + s) * H + h] = -d;
    }
    /* dK~ = dE H^T - diag(theta) Z (dKt is not read above: no barrier needed) */
    tb_gemm(false, true, n, K, V, 1.0f, dE, V, Hm, V, false, w.dKt, K, TB_FULL);
    for (int64_t e = tid; e < n * K; e += TB_THREADS) {
        const float t = w.th[e / K];
        w.dKt[e] -= t * w.Z[e];
        w.QQ[e] = t * w.Kc[e]; /* diag(theta) K~, until the carry's product */
    }
    __syncthreads();

    /* dO [M0; S0]^T; zM, z; dQ~ = diag(beta) dO M0^T + diag(f) dO S0^T - P2 diag(theta) K~ */
    tb_gemm(false, true, n, K2, V, 1.0f, dO, ldo, MS, V, false, w.dOMS, K2, TB_FULL);
    tb_gemm(false, false, n, K, n, 1.0f, w.P2, n, w.QQ, K, false, w.dQt, K, TB_LOWER_A);
    for (int64_t t = warp; t < n; t += TB_WARPS) {
        const float *qr = w.Q + t * K, *om = w.dOMS + t * K2, *os = om + K;
        const float zm = tb_warp_dot(qr, om, K), zs = tb_warp_dot(qr, os, K);
        if (lane == 0) w.zM[t] = zm, w.zv[t] = zs;
        const float b = w.bv[t], f = w.fv[t];
        for (int64_t j = lane; j < K; j += 32) {
            float *d = w.dQt + t * K + j;
            *d = b * om[j] + f * os[j] - *d;
        }
    }
    __syncthreads();

    /* the gates (section 4.3): R_tu, R'_tu (into QK, DE: row t, column u >= t),
     * a thread per column u; rx, ry, rx' (the values before step t) by one thread */
    float c3[3];
    tb_dots(MS, w.XY, KV, c3);
    const float cSX = c3[0], cSY = c3[1], cMX = c3[2];
    float *Rm = w.QK, *Rp = w.DE;
    for (int64_t u = tid; u < n; u += TB_THREADS) {
        float r = 0.0f, rp = 0.0f;
        for (int64_t t = 0; t <= u; t++) {
            Rm[t * n + u] = r, Rp[t * n + u] = rp;
            r = w.ev[t] * r + w.th[t] * w.At[u * n + t];
            rp = w.av[t] * rp + r;
        }
    }
    if (tid == TB_THREADS - 1) {
        float rx = 0.0f, ry = 0.0f, rxp = 0.0f;
        for (int64_t t = 0; t < n; t++) {
            w.rx[t] = rx, w.ry[t] = ry, w.rxp[t] = rxp;
            rx = w.ev[t] * rx + w.th[t] * w.xv[t];
            ry = w.ev[t] * ry + w.th[t] * w.yv[t];
            rxp = w.av[t] * rxp + rx;
        }
    }
    __syncthreads();
    for (int64_t t = tid; t < n; t += TB_THREADS) {
        float sgz = 0.0f, sgr = 0.0f, sbzm = 0.0f, sbz = 0.0f, sbr = 0.0f;
        for (int64_t u = t; u < n; u++) {
            const float gx = w.Gx[u * n + t], db = w.Db[u * n + t];
            sgz += gx * w.zv[u];
            sgr += gx * Rm[t * n + u];
            sbzm += db * w.zM[u];
            sbz += db * w.zv[u];
            sbr += db * Rp[t * n + u];
        }
        const float g = w.gv[t], mu = w.mu[t], bnt = w.bn[t];
        const float mp = t > 0 ? w.mv[t - 1] : 1.0f, bp = t > 0 ? w.bv[t - 1] : 1.0f;
        const float fp = t > 0 ? w.fv[t - 1] : 0.0f;
        const int64_t rh = (row + t) * H + h;
        a.deta[rh] = mp * (sgz + g * cSX + mu * cSY) - (sgr + g * w.rx[t] + mu * w.ry[t]);
        a.dalpha[rh] = -(bp * (sbzm + bnt * cMX) + fp * (sbz + bnt * cSX) - (sbr + bnt * w.rxp[t]));
    }

    /* the carry: [X; Y] <- [Q^T diag(beta) dO; Q^T diag(f) dO] + ... */
    for (int64_t e = tid; e < n * K; e += TB_THREADS) {
        const int64_t t = e / K, j = e % K;
        w.QQ[t * K2 + j] = w.bv[t] * w.Q[e];
        w.QQ[t * K2 + K + j] = w.fv[t] * w.Q[e];
    }
    __syncthreads();
    tb_gemm(true, false, K2, V, n, 1.0f, w.QQ, K2, dO, ldo, false, w.prod, V, TB_FULL);
    const float bL = w.bv[n - 1], fL = w.fv[n - 1], mL = w.mv[n - 1];
    for (int64_t e = tid; e < KV; e += TB_THREADS) {
        const float xo = X[e], yo = Y[e];
        Y[e] = w.prod[KV + e] + fL * xo + mL * yo;
        X[e] = w.prod[e] + bL * xo + (starts ? w.dH[e] : 0.0f);
        if (!starts && dMh) dMh[e] = w.dH[e];
    }

    /* through the norms: dq = scale n'(q) dQ~, dk = n'(k) dK~; a warp per token */
    for (int64_t i = warp; i < n; i += TB_WARPS) {
        const int64_t rh = (row + i) * H + h;
        const float *dq = w.dQt + i * K, *dk = w.dKt + i * K;
        float *oq = a.dq + rh * K, *ok = a.dk + rh * K;
        if (!a.l2) {
            for (int64_t j = lane; j < K; j += 32) {
                oq[j] = a.scale * dq[j];
                ok[j] = dk[j];
            }
            continue;
        }
        const float *q = a.q + rh * K, *k = a.k + rh * K, *kc = w.Kc + i * K;
        const float2 inv = seqk__warp_qk_factors(q, k, (int)K, 1.0f, true, SEQK__LIN_L2NORM_EPS);
        const float pq = tb_warp_dot(q, dq, K) * inv.x, pk = tb_warp_dot(kc, dk, K);
        for (int64_t j = lane; j < K; j += 32) {
            oq[j] = a.scale * (dq[j] - q[j] * inv.x * pq) * inv.x;
            ok[j] = (dk[j] - kc[j] * pk) * inv.y;
        }
    }
    __syncthreads();
}

/* ---- one (sequence, head) item: the CPU's run_item -------------------------------- */

/* The position of (n, h) in state_in; 0 without it or when out of range (not
 * validated on CUDA, as in the forward). */
static __device__ __forceinline__ int64_t tb_pos_in(const tb_args &a, int64_t nh)
{
    if (!a.s_in) return 0;
    const float p = a.s_in[nh * a.E + 3 * a.K * a.V];
    return (p >= 0.0f && p < (float)a.b) ? (int64_t)p : 0;
}

static __device__ void tb_item(const tb_args &a, const tb_scr &w, int64_t n, int64_t h)
{
    const int64_t H = a.H, K = a.K, V = a.V, KV = K * V, E2 = 2 * KV, R = a.R, b = a.b, bV = b * V;
    int64_t r0, len;
    seqk__seq_rows(a.cu, a.T, n, &r0, &len);
    const int64_t nh = n * H + h, pos0 = tb_pos_in(a, nh);
    const int64_t nseg = seqk__titans_seg_count(len, pos0, b), pL = (pos0 + len) % b;
    const float *blk = a.s_in ? a.s_in + nh * a.E : NULL;
    const float *Mh_in = pos0 != 0 ? blk + 2 * KV : NULL; /* pos0 != 0 only with s_in */
    /* pass 1: the states before the segments (R = 1: one after another in
     * ckpt, with every segment's Gerr; else the running state in seg[0],
     * every R-th copied to ckpt) */
    float *S = R == 1 ? w.ckpt : w.seg;
    if (blk) tb_copy(S, blk, E2);
    else tb_zero(S, E2);
    for (int64_t j = 0; j + 1 < nseg; j++) { /* the last segment's state after it is not needed */
        if (R > 1 && j % R == 0) tb_copy(w.ckpt + j / R * E2, S, E2);
        int64_t t0, ns;
        seqk__titans_seg_range(j, len, pos0, b, &t0, &ns);
        const float *Hm = (j == 0 && pos0 != 0) ? Mh_in : S;
        if (R == 1) {
            tb_advance(a, w, r0 + t0, ns, h, S, Hm, S + E2, w.gk + j * bV);
            S += E2;
        } else {
            tb_advance(a, w, r0 + t0, ns, h, S, Hm, S, w.Gerr);
        }
    }
    if (R > 1 && nseg > 0 && (nseg - 1) % R == 0) tb_copy(w.ckpt + (nseg - 1) / R * E2, S, E2);
    /* the gradient of the final state */
    const float *dso = a.ds_out ? a.ds_out + nh * a.E : NULL;
    const float *dHx = NULL;
    if (dso) {
        for (int64_t e = threadIdx.x; e < KV; e += TB_THREADS) {
            w.XY[e] = dso[e] + (pL == 0 ? dso[2 * KV + e] : 0.0f);
            w.XY[KV + e] = dso[KV + e];
        }
        __syncthreads();
        if (pL != 0) dHx = dso + 2 * KV;
    } else {
        tb_zero(w.XY, E2);
    }
    float *dsi = a.ds_in ? a.ds_in + nh * a.E : NULL;
    /* the reverse walk, group by group of R segments from the last */
    for (int64_t s = (nseg + R - 1) / R - 1; s >= 0; s--) {
        const int64_t j0 = s * R, cnt = nseg - j0 < R ? nseg - j0 : R;
        float *sg = R == 1 ? w.ckpt + j0 * E2 : w.seg;
        if (R > 1) {
            tb_copy(sg, w.ckpt + s * E2, E2);
            for (int64_t i = 0; i + 1 < cnt; i++) {
                const int64_t j = j0 + i;
                int64_t t0, ns;
                seqk__titans_seg_range(j, len, pos0, b, &t0, &ns);
                const float *Hm = (j == 0 && pos0 != 0) ? Mh_in : sg + i * E2;
                tb_advance(a, w, r0 + t0, ns, h, sg + i * E2, Hm, sg + (i + 1) * E2, w.gk + i * bV);
            }
        }
        for (int64_t i = cnt - 1; i >= 0; i--) {
            const seqk__titans_walk g =
                seqk__titans_walk_seg(j0, i, cnt, nseg, R, len, pos0, b);
            const float *MS = sg + i * E2;
            tb_seg_backward(a, w, r0 + g.t0, g.n, h, MS, g.starts ? MS : Mh_in,
                            g.gerr >= 0 ? w.gk + g.gerr * bV : NULL, g.last ? dHx : NULL,
                            g.starts, dsi ? dsi + 2 * KV : NULL);
        }
    }
    if (!dsi) return;
    /* dM_0, dS_0; dMhat_in (0 at pos0 = 0; with no tokens dMhat_fin; else
     * written by segment 0); pos and the reserved floats 0 */
    for (int64_t e = threadIdx.x; e < KV; e += TB_THREADS) {
        dsi[e] = w.XY[e];
        dsi[KV + e] = w.XY[KV + e];
        if (pos0 == 0) dsi[2 * KV + e] = 0.0f;
        else if (nseg == 0) dsi[2 * KV + e] = dHx ? dHx[e] : 0.0f;
    }
    if (threadIdx.x < SEQK__TITANS_PAD) dsi[3 * KV + threadIdx.x] = 0.0f;
    __syncthreads(); /* w is reused by the block's next item */
}

static __global__ void __launch_bounds__(TB_THREADS) tb_kernel(tb_args a)
{
    tb_scr w;
    tb_carve(&w, a.ws + (int64_t)blockIdx.x * a.scratch, a.b, a.K, a.V, a.R, a.nckpt, a.ngerr);
    for (int64_t item = blockIdx.x; item < a.N * a.H; item += gridDim.x)
        tb_item(a, w, item / a.H, item % a.H);
}

/* ---- host ------------------------------------------------------------------------- */

typedef struct tb_plan {
    int64_t blocks, R, nckpt, ngerr, scratch; /* scratch: floats per block */
    size_t bytes;
} tb_plan;

/* The kept-state budget of one block: 16 MiB, less when the blocks together
 * would pass TB_TOTAL_BYTES. */
static size_t tb_budget(int64_t blocks)
{
    const size_t share = TB_TOTAL_BYTES / (size_t)blocks;
    return share < (size_t)SEQK__TT_BWD_FULL_BYTES ? share : (size_t)SEQK__TT_BWD_FULL_BYTES;
}

static tb_plan tb_make_plan(const seqk__lin *P, int64_t b, int64_t longest)
{
    tb_plan pl;
    memset(&pl, 0, sizeof pl);
    const int64_t items = P->N * P->H;
    const int64_t most = TB_MAX_BLOCKS;
    pl.blocks = items < most ? (items > 0 ? items : 1) : most;
    const int64_t nseg = longest == 0 ? 0 : (longest + b - 1) / b + 1; /* pos0 != 0: +1 */
    seqk__chunk_ckpt_plan(nseg, 2 * P->K * P->V + b * P->V, tb_budget(pl.blocks), &pl.R, &pl.nckpt);
    pl.ngerr = pl.R == 1 ? pl.nckpt : pl.R;
    pl.scratch = tb_carve(NULL, NULL, b, P->K, P->V, pl.R, pl.nckpt, pl.ngerr);
    const double total = (double)pl.scratch * (double)pl.blocks * sizeof(float);
    /* + 256: the base aligned up (a caller's workspace may start anywhere) */
    pl.bytes = total > 4.0e18 ? SIZE_MAX /* the allocation fails, naming the size */
                              : (size_t)pl.scratch * (size_t)pl.blocks * sizeof(float) + 256;
    return pl;
}

extern "C" size_t seqk__cuda_titans_backward_workspace(const seqk__lin *P, int64_t minibatch)
{
    if (P->cu) return tb_make_plan(P, minibatch, seqk__lin_longest(P)).bytes;
    /* a query: the kept states are not monotone in the longest length (all of
     * them up to the budget, then ~2 sqrt(segments)): the larger of the plans
     * for T and for the longest length that keeps all */
    const tb_plan full = tb_make_plan(P, minibatch, P->T);
    const size_t seg_bytes = (size_t)(2 * P->K * P->V + minibatch * P->V) * sizeof(float);
    int64_t cap_len = ((int64_t)(tb_budget(full.blocks) / seg_bytes) - 1) * minibatch;
    if (cap_len > P->T) cap_len = P->T;
    if (cap_len < 0) cap_len = 0;
    const size_t w2 = tb_make_plan(P, minibatch, cap_len).bytes;
    return full.bytes > w2 ? full.bytes : w2;
}

extern "C" seqk_status seqk__cuda_titans_backward(
    seqk_context *ctx, const seqk__lin *P, const float *eta, const float *theta,
    const float *alpha, int64_t minibatch, const float *state_in, const float *dout,
    const float *dstate_out, float *dq, float *dk, float *dv, float *deta, float *dtheta,
    float *dalpha, float *dstate_in, const int32_t *cu_device)
{
    static const char fn[] = "seqk_titans_backward (CUDA)";
    SEQK_CUDA_TRY(fn, cudaSetDevice(ctx->device));
    const cudaStream_t stream = seqk__stream(ctx);
    if (P->N * P->H == 0 || (P->B * P->T == 0 && !dstate_in)) return SEQK_SUCCESS;
    tb_args a;
    memset(&a, 0, sizeof a);
    a.T = P->T, a.N = P->N, a.E = seqk__titans_state_floats(P->K, P->V);
    a.H = P->H, a.K = P->K, a.V = P->V, a.b = minibatch;
    a.scale = P->scale;
    a.l2 = (P->flags & SEQK__LIN_L2NORM) != 0;
    a.q = P->q, a.k = P->k, a.v = P->v, a.eta = eta, a.theta = theta, a.alpha = alpha;
    a.s_in = state_in, a.dout = dout, a.ds_out = dstate_out;
    a.dq = dq, a.dk = dk, a.dv = dv, a.deta = deta, a.dtheta = dtheta, a.dalpha = dalpha;
    a.ds_in = dstate_in;
    a.cu = P->cu ? cu_device : NULL;
    const tb_plan pl = tb_make_plan(P, minibatch, seqk__lin_longest(P));
    a.scratch = pl.scratch, a.R = pl.R, a.nckpt = pl.nckpt, a.ngerr = pl.ngerr;
    void *base = NULL;
    seqk_status st = seqk__workspace(fn, ctx, pl.bytes, &base);
    if (st) return st;
    a.ws = (float *)seqk__align_up((uintptr_t)base, 256);
    tb_kernel<<<(unsigned)pl.blocks, TB_THREADS, 0, stream>>>(a);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    return SEQK_SUCCESS;
}
