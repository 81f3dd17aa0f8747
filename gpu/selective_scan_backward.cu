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
 * Like the forward's chunked form (gpu/selective_scan.cu), each sequence is
 * cut into chunks of L tokens (L a power of two in [16, 256], the largest
 * that still gives >= SSB_WIDE (chunk, channel) threads; chunks never cross
 * a sequence boundary), and both recurrences get their carries by a scan
 * over chunks. The adjoint depends on h nowhere (only on a, C, gy), so:
 *
 *   1. ssb_chunk_kernel, one thread per (chunk, channel): the chunk's end
 *      state from a zero start, E_c (into hc), the adjoint carry at its
 *      start from a zero end, M_c = a_1 lam_1 (into mc), and sdt_c = sum of
 *      dt over the chunk (its decay is exp(A sdt_c)).
 *   2. ssb_carry_kernel, one thread per (sequence, state element): the scan
 *      primitive over chunks in both directions, h into chunk c (in place
 *      of E_c, from state_in) and mu out of chunk c's end (in place of M_c,
 *      from dstate_out); the last mu is dstate_in.
 *   3. ssb_main_kernel, one thread per (chunk, channel), 32 consecutive
 *      channels of one group per warp (a group's last warp may be partial:
 *      its idle lanes run the loops with zero contributions and store
 *      nothing), SB = 16 state elements in registers per pass (Nst > 16:
 *      ceil(Nst/16) passes; the per-channel sums du, d(dt) and yp = y before
 *      the gate are accumulated in du, ddt, dz by the thread that owns them
 *      and finished in the last pass). Per pass: walk the chunk forward from
 *      its carry, storing the state at the start of every segment of SSB_K
 *      = 16 tokens (ck); then the segments in reverse: h_{t-1} of the
 *      segment recomputed into a per-thread array (local memory, 16 x 16
 *      floats), its tokens walked backwards from the adjoint carry, every
 *      gradient reduced on the fly. dB_t and dC_t are summed over the warp's
 *      channels by xor butterflies (fixed order), lane s storing state s's
 *      sum: into dBm, dCm when a group fits one warp, else into per-warp
 *      partial rows that ssb_sum_blocks_kernel adds in warp order.
 *
 * dA, dDskip, ddt_bias go to per-chunk partials summed in chunk order by
 * ssb_sum_chunks_kernel. No atomics: the same bits on every run. h is never
 * stored for every token (DESIGN 3.2): the workspace holds a few states per
 * chunk and one per 16 tokens.
 *
 * To do (measure first): the warp reductions batched (a transpose-reduce of
 * the 16 sums); B_t, C_t staged in shared memory.
 */
#include "chunks.cuh"
#include "common.cuh"

#include <limits.h>
#include <stdint.h>

enum {
    SSB_THREADS = 128, /* 4 warps, each 32 channels of one group */
    SSB_WARPS = SSB_THREADS / 32,
    SSB_K = 16,        /* tokens per segment */
    SSB_SB = 16,       /* state elements per pass */
    SSB_CARRY_THREADS = 256,
    SSB_SUM_THREADS = 256,
    SSB_WIDE = 65536,  /* (chunk, channel) threads wanted */
    SSB_MIN_CHUNK = 16,
    SSB_MAX_CHUNK = 256,
    SSB_WS_ALIGN = 256
};
static_assert(SSB_MIN_CHUNK % SSB_K == 0, "chunks are whole segments");

#define SSB_LOG2E 1.44269504088896341f

typedef struct ssb_args {
    int64_t T, D, Nst, G, N, pg, nwb;
    int64_t L, cps, spc; /* tokens per chunk, chunks per sequence (no varlen), segments per chunk */
    int softplus;
    const float *u, *dt, *A, *Bm, *Cm, *Dskip, *z, *dt_bias, *s_in, *dy, *ds_out;
    float *du, *ddt, *dz, *ds_in;
    const int32_t *cu, *coff; /* device cu_seqlens, chunk offsets (varlen) */
    float *hc, *mc;           /* [chunks][D][Nst]: E_c then h in; M_c then mu out */
    float *sdt;               /* [chunks][D] */
    float *ck;                /* [chunks * spc][D][Nst] segment start states */
    float *pB, *pC;           /* [rows][G][nwb][Nst] (nwb == 1: dBm, dCm) */
    float *pA, *pD, *pbias;   /* [chunks][D][Nst], [chunks][D], [chunks][D] */
} ssb_args;

static __device__ __forceinline__ float ssb_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

/* Chunk c's sequence n and rows [r0, r0 + len). */
static __device__ __forceinline__ void ssb_chunk(const ssb_args &a, int64_t c, int64_t *n,
                                                 int64_t *r0, int64_t *len)
{
    seqk__chunk_locate(a.coff, a.cu, a.N, a.T, a.L, a.cps, c, n, r0, len);
}

/* This thread's warp tile: group g, warp block wb, channel d (idle lanes:
 * channel 0 of the group, valid false). False when the whole warp is past
 * the last tile. */
static __device__ __forceinline__ bool ssb_lane(const ssb_args &a, int64_t *g, int64_t *wb,
                                                int64_t *d, bool *valid)
{
    const int64_t wt = (int64_t)blockIdx.y * SSB_WARPS + (threadIdx.x >> 5);
    if (wt >= a.G * a.nwb) return false;
    *g = wt / a.nwb, *wb = wt % a.nwb;
    const int64_t jc = *wb * 32 + (threadIdx.x & 31);
    *valid = jc < a.pg;
    *d = *g * a.pg + (*valid ? jc : 0);
    return true;
}

static __device__ __forceinline__ float ssb_step(const ssb_args &a, int64_t o, float bias,
                                                 float *x)
{
    const float v = __ldg(a.dt + o) + bias;
    if (x) *x = v;
    return a.softplus ? seqk__dev_softplus(v) : v;
}

static __device__ __forceinline__ float ssb_gy(const ssb_args &a, int64_t o, float *zv)
{
    const float dyv = __ldg(a.dy + o);
    if (!a.z) return dyv;
    *zv = __ldg(a.z + o);
    return dyv * *zv * ssb_sigmoid(*zv);
}

/* 1. E_c, M_c, sdt_c of chunk blockIdx.x. */
static __global__ void __launch_bounds__(SSB_THREADS) ssb_chunk_kernel(ssb_args a)
{
    int64_t g, wb, d;
    bool valid;
    if (!ssb_lane(a, &g, &wb, &d, &valid) || !valid) return; /* no warp operations here */
    const int64_t c = blockIdx.x;
    int64_t n, r0, len;
    ssb_chunk(a, c, &n, &r0, &len);
    const int64_t D = a.D, Ns = a.Nst, GN = a.G * Ns;
    const float bias = a.dt_bias ? a.dt_bias[d] : 0.0f;
    double sum = 0.0; /* sdt in double, as the forward */
    for (int64_t s0 = 0; s0 < Ns; s0 += SSB_SB) {
        const int ns = (int)(Ns - s0 < SSB_SB ? Ns - s0 : SSB_SB);
        float h[SSB_SB], mu[SSB_SB], A2[SSB_SB];
#pragma unroll
        for (int j = 0; j < SSB_SB; j++) {
            h[j] = mu[j] = 0.0f;
            A2[j] = j < ns ? a.A[d * Ns + s0 + j] * SSB_LOG2E : 0.0f;
        }
        for (int64_t r = r0; r < r0 + len; r++) {
            const float dtv = ssb_step(a, r * D + d, bias, NULL);
            const float du = dtv * __ldg(a.u + r * D + d);
            const float *Bt = a.Bm + r * GN + g * Ns + s0;
            if (s0 == 0) sum += (double)dtv;
#pragma unroll
            for (int j = 0; j < SSB_SB; j++)
                if (j < ns) h[j] = fmaf(exp2f(dtv * A2[j]), h[j], du * __ldg(Bt + j));
        }
        for (int64_t r = r0 + len - 1; r >= r0; r--) {
            const float dtv = ssb_step(a, r * D + d, bias, NULL);
            float zv;
            const float gy = ssb_gy(a, r * D + d, &zv);
            const float *Ct = a.Cm + r * GN + g * Ns + s0;
#pragma unroll
            for (int j = 0; j < SSB_SB; j++)
                if (j < ns) mu[j] = exp2f(dtv * A2[j]) * fmaf(__ldg(Ct + j), gy, mu[j]);
        }
        float *hp = a.hc + (c * D + d) * Ns + s0, *mp = a.mc + (c * D + d) * Ns + s0;
#pragma unroll
        for (int j = 0; j < SSB_SB; j++)
            if (j < ns) hp[j] = h[j], mp[j] = mu[j];
    }
    a.sdt[c * D + d] = (float)sum;
}

/* 2. Per (sequence, state element): h into every chunk, mu out of every
 * chunk's end (in place of E_c, M_c); dstate_in. */
static __global__ void __launch_bounds__(SSB_CARRY_THREADS) ssb_carry_kernel(ssb_args a)
{
    const int64_t DN = a.D * a.Nst;
    const int64_t e = (int64_t)blockIdx.x * SSB_CARRY_THREADS + threadIdx.x; /* d*Nst + s */
    if (e >= DN) return;
    const int64_t d = e / a.Nst;
    const float A2 = a.A[e] * SSB_LOG2E;
    for (int64_t n = blockIdx.y; n < a.N; n += gridDim.y) {
        const int64_t c0 = a.coff ? a.coff[n] : n * a.cps;
        const int64_t c1 = a.coff ? a.coff[n + 1] : (n + 1) * a.cps;
        (void)seqk__sscan_carry(a.hc, a.sdt, DN, a.D, e, d, A2, c0, c1,
                                a.s_in ? a.s_in[n * DN + e] : 0.0f);
        float mu = a.ds_out ? a.ds_out[n * DN + e] : 0.0f;
        for (int64_t c = c1 - 1; c >= c0; c--) {
            float *mp = a.mc + c * DN + e;
            const float m = *mp;
            *mp = mu;
            mu = fmaf(exp2f(A2 * a.sdt[c * a.D + d]), mu, m);
        }
        if (a.ds_in) a.ds_in[n * DN + e] = mu;
    }
}

/* 3. The gradients of chunk blockIdx.x from its carries. */
static __global__ void __launch_bounds__(SSB_THREADS) ssb_main_kernel(ssb_args a)
{
    int64_t g, wb, d;
    bool valid;
    if (!ssb_lane(a, &g, &wb, &d, &valid)) return; /* whole warps */
    const int lane = threadIdx.x & 31;
    const int64_t c = blockIdx.x;
    int64_t n, r0, len;
    ssb_chunk(a, c, &n, &r0, &len);
    const int64_t D = a.D, Ns = a.Nst, GN = a.G * Ns;
    const int64_t nseg = (len + SSB_K - 1) / SSB_K;
    const float bias = a.dt_bias ? a.dt_bias[d] : 0.0f;
    const float dsk = a.Dskip ? a.Dskip[d] : 0.0f;
    const float vmask = valid ? 1.0f : 0.0f;
    const int64_t passes = (Ns + SSB_SB - 1) / SSB_SB;
    const int64_t st = (c * D + d) * Ns;
    for (int64_t p = 0; p < passes; p++) {
        const int64_t s0 = p * SSB_SB;
        const int ns = (int)(Ns - s0 < SSB_SB ? Ns - s0 : SSB_SB);
        const bool first = p == 0, last = p == passes - 1;
        float h[SSB_SB], A2[SSB_SB], Ad[SSB_SB], mu[SSB_SB], dA[SSB_SB];
#pragma unroll
        for (int j = 0; j < SSB_SB; j++) {
            const float av = j < ns ? a.A[d * Ns + s0 + j] : 0.0f;
            Ad[j] = av, A2[j] = av * SSB_LOG2E;
            h[j] = j < ns ? a.hc[st + s0 + j] : 0.0f;
            mu[j] = j < ns ? a.mc[st + s0 + j] : 0.0f;
            dA[j] = 0.0f;
        }
        /* the segment start states */
        for (int64_t k = 0; k + 1 < nseg; k++) {
            float *ckp = a.ck + ((c * a.spc + k + 1) * D + d) * Ns + s0;
            for (int64_t r = r0 + k * SSB_K; r < r0 + (k + 1) * SSB_K; r++) {
                const float dtv = ssb_step(a, r * D + d, bias, NULL);
                const float du = dtv * __ldg(a.u + r * D + d);
                const float *Bt = a.Bm + r * GN + g * Ns + s0;
#pragma unroll
                for (int j = 0; j < SSB_SB; j++)
                    if (j < ns) h[j] = fmaf(exp2f(dtv * A2[j]), h[j], du * __ldg(Bt + j));
            }
            if (valid) {
#pragma unroll
                for (int j = 0; j < SSB_SB; j++)
                    if (j < ns) ckp[j] = h[j];
            }
        }
        /* the segments in reverse */
        float accD = 0.0f, accb = 0.0f;
        for (int64_t k = nseg - 1; k >= 0; k--) {
            const int64_t rs = r0 + k * SSB_K;
            const int L = (int)(len - k * SSB_K < SSB_K ? len - k * SSB_K : SSB_K);
            float hs[SSB_K][SSB_SB]; /* h_{t-1} of the segment's tokens */
            const float *ckp = k ? a.ck + ((c * a.spc + k) * D + d) * Ns + s0 : a.hc + st + s0;
#pragma unroll
            for (int j = 0; j < SSB_SB; j++) h[j] = j < ns ? ckp[j] : 0.0f;
            for (int i = 0; i < L; i++) {
                const int64_t r = rs + i;
                const float dtv = ssb_step(a, r * D + d, bias, NULL);
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
                float x, zv = 0.0f;
                const float dtv = ssb_step(a, o, bias, &x);
                const float uv = __ldg(a.u + o);
                const float gy = ssb_gy(a, o, &zv) * vmask; /* idle lanes: no contribution */
                const float dlu = dtv * uv;
                const float *Bt = a.Bm + r * GN + g * Ns + s0, *Ct = a.Cm + r * GN + g * Ns + s0;
                float sA = 0.0f, sB = 0.0f, yp = 0.0f, myB = 0.0f, myC = 0.0f;
#pragma unroll
                for (int j = 0; j < SSB_SB; j++) {
                    if (j < ns) {
                        const float bj = __ldg(Bt + j), cj = __ldg(Ct + j);
                        const float av = exp2f(dtv * A2[j]), hp = hs[i][j];
                        const float hcur = fmaf(av, hp, dlu * bj);
                        const float lam = fmaf(cj, gy, mu[j]);
                        const float q = lam * av * hp;
                        sA = fmaf(Ad[j], q, sA);
                        sB = fmaf(bj, lam, sB);
                        yp = fmaf(cj, hcur, yp);
                        dA[j] = fmaf(dtv, q, dA[j]);
                        mu[j] = av * lam;
                        const float xb = seqk__warp_sum(lam * dlu * vmask);
                        const float xc = seqk__warp_sum(gy * hcur);
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
                        const float sg = ssb_sigmoid(zv), dyv = __ldg(a.dy + o);
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
            for (int j = 0; j < SSB_SB; j++)
                if (j < ns) a.pA[st + s0 + j] = dA[j];
            if (last) {
                a.pD[c * D + d] = accD;
                a.pbias[c * D + d] = accb;
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

/* dA, dDskip, ddt_bias = the chunks' partials summed in chunk order (zeros
 * without chunks). */
static __global__ void __launch_bounds__(SSB_SUM_THREADS)
    ssb_sum_chunks_kernel(int64_t chunks, int64_t D, int64_t Nst, const float *pA,
                          const float *pD, const float *pbias, float *dA, float *dD, float *dbias)
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
        for (int64_t c = 0; c < chunks; c++) s += src[c * stride + i];
        dst[i] = s;
    }
}

/* ---- host ---------------------------------------------------------------------- */

static size_t ssb_align(size_t n) { return seqk__align_up(n, SSB_WS_ALIGN); }

/* Tokens per chunk: the largest power of two in [16, 256] that still gives
 * SSB_WIDE (chunk, channel) threads. */
static int64_t ssb_chunk_len(int64_t B, int64_t T, int64_t D, int64_t N, const int32_t *cu_host)
{
    int64_t L = SSB_MAX_CHUNK;
    while (L > SSB_MIN_CHUNK && seqk__count_chunks(cu_host, N, B, T, L) * D < SSB_WIDE) L /= 2;
    return L;
}

typedef struct {
    size_t hc, sdt, ck, pb, pa, coff, total;
} ssb_ws;

static ssb_ws ssb_workspace(int64_t B, int64_t T, int64_t D, int64_t Nst, int64_t G, int64_t N,
                            const int32_t *cu_host, int64_t L)
{
    const int64_t pg = D / G, nwb = (pg + 31) / 32, rows = B * T;
    const int64_t chunks = seqk__count_chunks(cu_host, N, B, T, L);
    const size_t cf = (size_t)chunks * (size_t)D * sizeof(float);
    ssb_ws w;
    w.hc = ssb_align(cf * (size_t)Nst); /* and mc */
    w.sdt = ssb_align(cf);
    w.ck = ssb_align(cf * (size_t)Nst * (size_t)(L / SSB_K));
    w.pb = nwb > 1 ? ssb_align((size_t)(rows * G * nwb * Nst) * sizeof(float)) : 0;
    w.pa = ssb_align(cf * (size_t)(Nst + 2));
    w.coff = ssb_align((size_t)(N + 1) * sizeof(int32_t)); /* varlen calls only */
    w.total = 2 * w.hc + w.sdt + w.ck + 2 * w.pb + w.pa + w.coff;
    return w;
}

extern "C" size_t seqk__cuda_selective_scan_backward_workspace(int64_t B, int64_t T, int64_t D,
                                                               int64_t Nst, int64_t G, int64_t N,
                                                               const int32_t *cu_host)
{
    if (cu_host || N == B)
        return ssb_workspace(B, T, D, Nst, G, N, cu_host, ssb_chunk_len(B, T, D, N, cu_host))
            .total;
    size_t most = 0; /* a varlen query: any chunk length the call may pick */
    for (int64_t L = SSB_MIN_CHUNK; L <= SSB_MAX_CHUNK; L *= 2) {
        const size_t b = ssb_workspace(B, T, D, Nst, G, N, NULL, L).total;
        most = b > most ? b : most;
    }
    return most;
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
    const int64_t eblocks = (D * Nst + SSB_CARRY_THREADS - 1) / SSB_CARRY_THREADS;
    if (N > INT_MAX || eblocks > INT_MAX)
        return seqk__fail(SEQK_ERROR_UNSUPPORTED, "%s: N=%lld, D*Nst=%lld, too many on CUDA", fn,
                          (long long)N, (long long)(D * Nst));
    const int64_t L = ssb_chunk_len(B, T, D, N, cu_host);
    const int64_t chunks = seqk__count_chunks(cu_host, N, B, T, L);
    if (chunks * (L / SSB_K) > INT32_MAX)
        return seqk__fail(SEQK_ERROR_UNSUPPORTED, "%s: %lld chunks of %lld tokens, too many", fn,
                          (long long)chunks, (long long)L);
    const ssb_ws W = ssb_workspace(B, T, D, Nst, G, N, cu_host, L);
    void *ws = NULL;
    seqk_status st = seqk__workspace(fn, ctx, W.total, &ws);
    if (st != SEQK_SUCCESS) return st;
    char *w = (char *)ws;
    ssb_args a = {};
    a.T = T, a.D = D, a.Nst = Nst, a.G = G, a.N = N, a.pg = pg, a.nwb = nwb;
    a.L = L, a.cps = (T + L - 1) / L, a.spc = L / SSB_K;
    a.softplus = (flags & SEQK_SSCAN_DT_SOFTPLUS) != 0;
    a.u = u, a.dt = dt, a.A = A, a.Bm = Bm, a.Cm = Cm, a.Dskip = Dskip, a.z = z;
    a.dt_bias = dt_bias, a.s_in = state_in, a.dy = dy, a.ds_out = dstate_out;
    a.du = du, a.ddt = ddt, a.dz = dz, a.ds_in = dstate_in;
    a.cu = cu_host ? cu : NULL;
    a.hc = (float *)w, a.mc = (float *)(w + W.hc);
    w += 2 * W.hc;
    a.sdt = (float *)w;
    w += W.sdt;
    a.ck = (float *)w;
    w += W.ck;
    if (nwb > 1) {
        a.pB = (float *)w, a.pC = (float *)(w + W.pb);
        w += 2 * W.pb;
    } else {
        a.pB = dBm, a.pC = dCm;
    }
    a.pA = (float *)w;
    a.pD = a.pA + chunks * D * Nst;
    a.pbias = a.pD + chunks * D;
    w += W.pa;
    if (cu_host) {
        int32_t *coff = (int32_t *)w;
        seqk__chunk_first_kernel<<<1, SEQK__PREFIX_THREADS, 0, stream>>>(cu, N, L, coff);
        SEQK_CUDA_CHECK_LAUNCH(fn);
        a.coff = coff;
    }
    if (chunks > 0) {
        const dim3 cgrid((unsigned)chunks, (unsigned)wblocks);
        ssb_chunk_kernel<<<cgrid, SSB_THREADS, 0, stream>>>(a);
        SEQK_CUDA_CHECK_LAUNCH(fn);
    }
    const dim3 egrid((unsigned)eblocks, (unsigned)(N < 65535 ? N : 65535));
    ssb_carry_kernel<<<egrid, SSB_CARRY_THREADS, 0, stream>>>(a);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    if (chunks > 0) {
        const dim3 cgrid((unsigned)chunks, (unsigned)wblocks);
        ssb_main_kernel<<<cgrid, SSB_THREADS, 0, stream>>>(a);
        SEQK_CUDA_CHECK_LAUNCH(fn);
    }
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
    ssb_sum_chunks_kernel<<<(unsigned)(blocks < 65535 ? blocks : 65535), SSB_SUM_THREADS, 0,
                            stream>>>(chunks, D, Nst, a.pA, a.pD, a.pbias, dA, dDskip, ddt_bias);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    return SEQK_SUCCESS;
}
