/*
 * gpu/selective_scan_backward.cu -- CUDA backend of the Mamba selective
 * scan's backward (seqk_selective_scan_backward, DESIGN 3.2 / 3.7). fp32,
 * CUDA cores; the simplest correct deterministic form (DESIGN 7), tested on
 * tools/cuda_emu and meant to be measured on a GPU before it is tuned.
 *
 * The math is ssm/selective_scan_backward.c's (and seqk.h's): with
 * a_t = exp(dt_t A), gy_t = dy_t silu(z_t), the adjoint
 * lam_t = C_t gy_t + a_{t+1} lam_{t+1} (carried backwards as
 * mu = a_t lam_t, starting from dstate_out), and per token
 * dC_t = sum_d gy h_t, dB_t = sum_d lam dt u, du = dt sum_n B lam + D gy,
 * d(dt) = sum_n lam (A a h_{t-1} + B u), dA += lam dt a h_{t-1}.
 *
 * One thread per (sequence, channel), as the forward's recurrent kernel,
 * SB = 16 state elements in registers per pass (Nst > 16: ceil(Nst/16)
 * passes; the per-channel sums du, d(dt) and yp = y before the gate are
 * accumulated in du, ddt, dz by the thread that owns them, pass after pass,
 * and finished in the last pass). A warp holds 32 consecutive channels of
 * one group (a group's last warp may be partial: its idle lanes run the
 * loops with zero contributions and store nothing). Per pass:
 *
 *   1. walk the sequence forward from state_in, storing the state at the
 *      start of every segment of SSB_K = 16 tokens into the workspace
 *      (ck [chunks][D][Nst], chunks numbered as the forward's chunked form:
 *      coff from seqk__chunk_prefix with varlen);
 *   2. walk the segments in reverse: recompute the segment's h_{t-1} into a
 *      per-thread array (local memory, SSB_K x SB floats), then its tokens in
 *      reverse, reducing every gradient on the fly. dB_t and dC_t are summed
 *      over the warp's channels by xor butterflies (fixed order), lane s
 *      storing state s's sum: into dBm, dCm when a group fits one warp, else
 *      into per-warp partial rows that ssb_sum_blocks_kernel adds in warp
 *      order.
 *
 * dA, dDskip, ddt_bias go to per-sequence partials [N][...] summed in
 * sequence order by ssb_sum_seqs_kernel. No atomics: the same bits on every
 * run. h is never stored for every token (DESIGN 3.2): the workspace holds
 * one state per 16 tokens.
 *
 * To do (measure first): a block-level scan over time (the forward's
 * chunked form) for few channels and long T; the warp reductions batched
 * (a transpose-reduce of the 16 sums).
 */
#include "common.cuh"

#include <limits.h>
#include <stdint.h>

enum {
    SSB_THREADS = 128, /* 4 warps, each 32 channels of one group */
    SSB_WARPS = SSB_THREADS / 32,
    SSB_K = 16,        /* tokens per segment */
    SSB_SB = 16,       /* state elements per pass */
    SSB_SUM_THREADS = 256,
    SSB_WS_ALIGN = 256
};

#define SSB_LOG2E 1.44269504088896341f

typedef struct ssb_args {
    int64_t T, D, Nst, G, N, pg, nwb, cps;
    int softplus;
    const float *u, *dt, *A, *Bm, *Cm, *Dskip, *z, *dt_bias, *s_in, *dy, *ds_out;
    float *du, *ddt, *dz, *ds_in;
    const int32_t *cu, *coff; /* device cu_seqlens, chunk offsets (varlen) */
    float *ck;                /* [chunks][D][Nst] segment start states */
    float *pB, *pC;           /* [rows][G][nwb][Nst] (nwb == 1: dBm, dCm) */
    float *pA, *pD, *pbias;   /* [N][D][Nst], [N][D], [N][D] */
} ssb_args;

static __device__ __forceinline__ float ssb_softplus(float x)
{
    return x > 20.0f ? x : log1pf(expf(x));
}

static __device__ __forceinline__ float ssb_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

static __global__ void __launch_bounds__(SSB_THREADS) ssb_main_kernel(ssb_args a)
{
    const int lane = threadIdx.x & 31;
    const int64_t wt = (int64_t)blockIdx.y * SSB_WARPS + (threadIdx.x >> 5);
    if (wt >= a.G * a.nwb) return; /* whole warps */
    const int64_t n = blockIdx.x, g = wt / a.nwb, wb = wt % a.nwb;
    const int64_t jc = wb * 32 + lane;
    const bool valid = jc < a.pg;
    const int64_t d = g * a.pg + (valid ? jc : 0); /* idle lanes read channel 0 of the group */
    const int64_t D = a.D, Ns = a.Nst, GN = a.G * Ns;
    int64_t r0, len;
    seqk__seq_rows(a.cu, a.T, n, &r0, &len);
    const int64_t c0 = a.coff ? a.coff[n] : n * a.cps;
    const int64_t nseg = (len + SSB_K - 1) / SSB_K;
    const float bias = a.dt_bias ? a.dt_bias[d] : 0.0f;
    const float dsk = a.Dskip ? a.Dskip[d] : 0.0f;
    const float vmask = valid ? 1.0f : 0.0f;
    const int64_t passes = (Ns + SSB_SB - 1) / SSB_SB;
    const int64_t st = (n * D + d) * Ns;
    for (int64_t p = 0; p < passes; p++) {
        const int64_t s0 = p * SSB_SB;
        const int ns = (int)(Ns - s0 < SSB_SB ? Ns - s0 : SSB_SB);
        const bool first = p == 0, last = p == passes - 1;
        float h[SSB_SB], A2[SSB_SB], Ad[SSB_SB], mu[SSB_SB], dA[SSB_SB];
#pragma unroll
        for (int j = 0; j < SSB_SB; j++) {
            const float av = j < ns ? a.A[d * Ns + s0 + j] : 0.0f;
            Ad[j] = av, A2[j] = av * SSB_LOG2E;
            h[j] = (j < ns && a.s_in) ? a.s_in[st + s0 + j] : 0.0f;
            mu[j] = (j < ns && a.ds_out) ? a.ds_out[st + s0 + j] : 0.0f;
            dA[j] = 0.0f;
        }
        /* 1. the segment start states */
        for (int64_t k = 0; k < nseg; k++) {
            float *ckp = a.ck + ((c0 + k) * D + d) * Ns + s0;
            if (valid) {
#pragma unroll
                for (int j = 0; j < SSB_SB; j++)
                    if (j < ns) ckp[j] = h[j];
            }
            if (k == nseg - 1) break; /* the last segment's end state is not needed */
            for (int64_t r = r0 + k * SSB_K; r < r0 + (k + 1) * SSB_K; r++) {
                float dtv = __ldg(a.dt + r * D + d) + bias;
                if (a.softplus) dtv = ssb_softplus(dtv);
                const float du = dtv * __ldg(a.u + r * D + d);
                const float *Bt = a.Bm + r * GN + g * Ns + s0;
#pragma unroll
                for (int j = 0; j < SSB_SB; j++)
                    if (j < ns) h[j] = fmaf(exp2f(dtv * A2[j]), h[j], du * __ldg(Bt + j));
            }
        }
        /* 2. the segments in reverse */
        float accD = 0.0f, accb = 0.0f;
        for (int64_t k = nseg - 1; k >= 0; k--) {
            const int64_t rs = r0 + k * SSB_K;
            const int L = (int)(len - k * SSB_K < SSB_K ? len - k * SSB_K : SSB_K);
            float hs[SSB_K][SSB_SB]; /* h_{t-1} of the segment's tokens */
            const float *ckp = a.ck + ((c0 + k) * D + d) * Ns + s0;
#pragma unroll
            for (int j = 0; j < SSB_SB; j++) h[j] = j < ns ? ckp[j] : 0.0f;
            for (int i = 0; i < L; i++) {
                const int64_t r = rs + i;
                float dtv = __ldg(a.dt + r * D + d) + bias;
                if (a.softplus) dtv = ssb_softplus(dtv);
                const float du = dtv * __ldg(a.u + r * D + d);
                const float *Bt = a.Bm + r * GN + g * Ns + s0;
#pragma unroll
                for (int j = 0; j < SSB_SB; j++) {
                    hs[i][j] = h[j];
                    if (j < ns) h[j] = fmaf(exp2f(dtv * A2[j]), h[j], du * __ldg(Bt + j));
                }
            }
            for (int i = L - 1; i >= 0; i--) {
                const int64_t r = rs + i, o = r * D + d;
                const float x = __ldg(a.dt + o) + bias;
                const float dtv = a.softplus ? ssb_softplus(x) : x;
                const float uv = __ldg(a.u + o), dyv = __ldg(a.dy + o);
                float gy = dyv, zv = 0.0f;
                if (a.z) {
                    zv = __ldg(a.z + o);
                    gy = dyv * zv * ssb_sigmoid(zv);
                }
                gy *= vmask; /* idle lanes: no contribution */
                const float dlu = dtv * uv;
                const float *Bt = a.Bm + r * GN + g * Ns + s0, *Ct = a.Cm + r * GN + g * Ns + s0;
                float sA = 0.0f, sB = 0.0f, yp = 0.0f, myB = 0.0f, myC = 0.0f;
#pragma unroll
                for (int j = 0; j < SSB_SB; j++) {
                    if (j < ns) {
                        const float bj = __ldg(Bt + j), cj = __ldg(Ct + j);
                        const float av = exp2f(dtv * A2[j]), hp = hs[i][j];
                        const float hc = fmaf(av, hp, dlu * bj);
                        const float lam = fmaf(cj, gy, mu[j]);
                        const float q = lam * av * hp;
                        sA = fmaf(Ad[j], q, sA);
                        sB = fmaf(bj, lam, sB);
                        yp = fmaf(cj, hc, yp);
                        dA[j] = fmaf(dtv, q, dA[j]);
                        mu[j] = av * lam;
                        const float xb = seqk__warp_sum(lam * dlu * vmask);
                        const float xc = seqk__warp_sum(gy * hc);
                        if (lane == j) myB = xb, myC = xc;
                    }
                }
                if (lane < ns) {
                    const int64_t pr = ((r * a.G + g) * a.nwb + wb) * Ns + s0 + lane;
                    a.pB[pr] = myB;
                    a.pC[pr] = myC;
                }
                if (!valid) continue;
                /* the per-channel sums: accumulated over passes, finished in the last */
                float dd = fmaf(uv, sB, sA), dut = dtv * sB, ypt = yp;
                if (first) {
                    dut = fmaf(dsk, gy, dut);
                    ypt = fmaf(dsk, uv, ypt);
                } else {
                    dd += a.ddt[o];
                    dut += a.du[o];
                    if (a.z) ypt += a.dz[o];
                }
                if (last) {
                    if (a.softplus) dd *= ssb_sigmoid(x);
                    accb += dd;
                    accD = fmaf(gy, uv, accD);
                    if (a.z) {
                        const float sg = ssb_sigmoid(zv);
                        ypt = dyv * ypt * sg * fmaf(zv, 1.0f - sg, 1.0f);
                    }
                }
                a.ddt[o] = dd;
                a.du[o] = dut;
                if (a.z) a.dz[o] = ypt;
            }
        }
        if (valid) {
#pragma unroll
            for (int j = 0; j < SSB_SB; j++) {
                if (j < ns) {
                    a.pA[st + s0 + j] = dA[j];
                    if (a.ds_in) a.ds_in[st + s0 + j] = mu[j];
                }
            }
            if (last) {
                a.pD[n * D + d] = accD;
                a.pbias[n * D + d] = accb;
            }
        }
    }
}

/* dBm, dCm [rows*G*Nst] = the warps' partial rows summed in warp order. */
static __global__ void __launch_bounds__(SSB_SUM_THREADS)
    ssb_sum_blocks_kernel(int64_t nrow, int64_t Nst, int64_t nwb, const float *pB,
                          const float *pC, float *dB, float *dC)
{
    for (int64_t e = (int64_t)blockIdx.x * SSB_SUM_THREADS + threadIdx.x; e < nrow * Nst;
         e += (int64_t)gridDim.x * SSB_SUM_THREADS) {
        const int64_t rg = e / Nst, s = e % Nst;
        const float *pb = pB + rg * nwb * Nst + s, *pc = pC + rg * nwb * Nst + s;
        float sb = pb[0], sc = pc[0];
        for (int64_t w = 1; w < nwb; w++) sb += pb[w * Nst], sc += pc[w * Nst];
        dB[e] = sb;
        dC[e] = sc;
    }
}

/* dA, dDskip, ddt_bias = the sequences' partials summed in sequence order. */
static __global__ void __launch_bounds__(SSB_SUM_THREADS)
    ssb_sum_seqs_kernel(int64_t N, int64_t D, int64_t Nst, const float *pA, const float *pD,
                        const float *pbias, float *dA, float *dD, float *dbias)
{
    const int64_t DN = D * Nst;
    for (int64_t e = (int64_t)blockIdx.x * SSB_SUM_THREADS + threadIdx.x; e < DN + 2 * D;
         e += (int64_t)gridDim.x * SSB_SUM_THREADS) {
        const float *src;
        float *dst;
        int64_t stride, i;
        if (e < DN) src = pA, dst = dA, stride = DN, i = e;
        else if (e < DN + D) src = pD, dst = dD, stride = D, i = e - DN;
        else src = pbias, dst = dbias, stride = D, i = e - DN - D;
        if (!dst) continue;
        float s = 0.0f;
        for (int64_t n = 0; n < N; n++) s += src[n * stride + i];
        dst[i] = s;
    }
}

/* coff[n] = sum_{m<n} ceil(len_m / SSB_K), n = 0..N (one block). */
static __global__ void __launch_bounds__(SEQK__PREFIX_THREADS)
    ssb_chunk_offsets_kernel(const int32_t *cu, int64_t N, int32_t *coff)
{
    seqk__chunk_prefix(cu, N, SSB_K, coff);
}

/* ---- host ---------------------------------------------------------------------- */

static size_t ssb_align(size_t n) { return seqk__align_up(n, SSB_WS_ALIGN); }

typedef struct {
    size_t ck, pb, pa, coff, total;
} ssb_ws;

static ssb_ws ssb_workspace(int64_t B, int64_t T, int64_t D, int64_t Nst, int64_t G, int64_t N,
                            const int32_t *cu_host)
{
    const int64_t pg = D / G, nwb = (pg + 31) / 32, rows = B * T;
    const int64_t chunks = seqk__count_chunks(cu_host, N, B, T, SSB_K);
    ssb_ws w;
    w.ck = ssb_align((size_t)chunks * (size_t)(D * Nst) * sizeof(float));
    w.pb = nwb > 1 ? ssb_align((size_t)(rows * G * nwb * Nst) * sizeof(float)) : 0;
    w.pa = ssb_align((size_t)(N * D * (Nst + 2)) * sizeof(float));
    w.coff = ssb_align((size_t)(N + 1) * sizeof(int32_t)); /* varlen calls only; counted always */
    w.total = w.ck + 2 * w.pb + w.pa + w.coff;
    return w;
}

extern "C" size_t seqk__cuda_selective_scan_backward_workspace(int64_t B, int64_t T, int64_t D,
                                                               int64_t Nst, int64_t G, int64_t N,
                                                               const int32_t *cu_host)
{
    return ssb_workspace(B, T, D, Nst, G, N, cu_host).total;
}

extern "C" seqk_status seqk__cuda_selective_scan_backward(
    seqk_context *ctx, int64_t B, int64_t T, int64_t D, int64_t Nst, int64_t G, unsigned flags,
    const float *u, const float *dt, const float *A, const float *Bm, const float *Cm,
    const float *Dskip, const float *z, const float *dt_bias, const float *state_in,
    const float *dy, const float *dstate_out, float *du, float *ddt, float *dA, float *dBm,
    float *dCm, float *dDskip, float *dz, float *ddt_bias, float *dstate_in, const int32_t *cu,
    const int32_t *cu_host, int64_t N)
{
    static const char fn[] = "seqk_selective_scan_backward (CUDA)";
    SEQK_CUDA_TRY(fn, cudaSetDevice(ctx->device));
    const cudaStream_t stream = seqk__stream(ctx);
    if (!cu_host) N = B;
    const int64_t pg = D / G, nwb = (pg + 31) / 32, wblocks = (G * nwb + SSB_WARPS - 1) / SSB_WARPS;
    if (wblocks > 65535)
        return seqk__fail(SEQK_ERROR_UNSUPPORTED, "%s: D=%lld in G=%lld groups, too many warps",
                          fn, (long long)D, (long long)G);
    if (N > INT_MAX)
        return seqk__fail(SEQK_ERROR_UNSUPPORTED, "%s: N=%lld sequences, at most %d on CUDA", fn,
                          (long long)N, INT_MAX);
    const int64_t chunks = seqk__count_chunks(cu_host, N, B, T, SSB_K);
    if (chunks > INT32_MAX)
        return seqk__fail(SEQK_ERROR_UNSUPPORTED, "%s: %lld segments, at most %d", fn,
                          (long long)chunks, INT32_MAX);
    const ssb_ws W = ssb_workspace(B, T, D, Nst, G, N, cu_host);
    void *ws = NULL;
    seqk_status st = seqk__workspace(fn, ctx, W.total, &ws);
    if (st != SEQK_SUCCESS) return st;
    char *w = (char *)ws;
    ssb_args a = {};
    a.T = T, a.D = D, a.Nst = Nst, a.G = G, a.N = N, a.pg = pg, a.nwb = nwb;
    a.cps = (T + SSB_K - 1) / SSB_K;
    a.softplus = (flags & SEQK_SSCAN_DT_SOFTPLUS) != 0;
    a.u = u, a.dt = dt, a.A = A, a.Bm = Bm, a.Cm = Cm, a.Dskip = Dskip, a.z = z;
    a.dt_bias = dt_bias, a.s_in = state_in, a.dy = dy, a.ds_out = dstate_out;
    a.du = du, a.ddt = ddt, a.dz = dz, a.ds_in = dstate_in;
    a.cu = cu_host ? cu : NULL;
    a.ck = (float *)w;
    w += W.ck;
    if (nwb > 1) {
        a.pB = (float *)w, a.pC = (float *)(w + W.pb);
        w += 2 * W.pb;
    } else {
        a.pB = dBm, a.pC = dCm;
    }
    a.pA = (float *)w;
    a.pD = a.pA + N * D * Nst;
    a.pbias = a.pD + N * D;
    w += W.pa;
    if (cu_host) {
        int32_t *coff = (int32_t *)w;
        ssb_chunk_offsets_kernel<<<1, SEQK__PREFIX_THREADS, 0, stream>>>(cu, N, coff);
        SEQK_CUDA_CHECK_LAUNCH(fn);
        a.coff = coff;
    }
    ssb_main_kernel<<<dim3((unsigned)N, (unsigned)wblocks), SSB_THREADS, 0, stream>>>(a);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    const int64_t rows = B * T;
    if (nwb > 1 && rows > 0) {
        const int64_t ne = rows * G * Nst;
        const int64_t blocks = (ne + SSB_SUM_THREADS - 1) / SSB_SUM_THREADS;
        ssb_sum_blocks_kernel<<<(unsigned)(blocks < 65535 ? blocks : 65535), SSB_SUM_THREADS, 0,
                                stream>>>(rows * G, Nst, nwb, a.pB, a.pC, dBm, dCm);
        SEQK_CUDA_CHECK_LAUNCH(fn);
    }
    const int64_t ne = D * Nst + 2 * D;
    const int64_t blocks = (ne + SSB_SUM_THREADS - 1) / SSB_SUM_THREADS;
    ssb_sum_seqs_kernel<<<(unsigned)(blocks < 65535 ? blocks : 65535), SSB_SUM_THREADS, 0,
                          stream>>>(N, D, Nst, a.pA, a.pD, a.pbias, dA, dDskip, ddt_bias);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    return SEQK_SUCCESS;
}
