/*
 * gpu/selective_scan.cu -- CUDA backend of the Mamba selective scan
 * (seqk_selective_scan, DESIGN 3.2). fp32, CUDA cores. Written without a GPU
 * at hand: compiled warning-free for sm_80/sm_90; tests/test_selective_scan.c
 * runs it on every backend once a device is there (and compute-sanitizer).
 *
 * The math, per sequence n, channel d (of D, group g = d / (D/G)) and state
 * index s (of Nst):
 *
 *   dt_t  = softplus(dt_raw_t[d] + dt_bias[d])      (or without softplus)
 *   h_t[s] = exp(dt_t A[d,s]) h_{t-1}[s] + dt_t B_t[g,s] u_t[d]
 *   y_t[d] = (sum_s C_t[g,s] h_t[s] + Dskip[d] u_t[d]) * silu(z_t[d])
 *
 * Layout is token-major ([B,T,D]; B, C [B,T,G,Nst]), so a warp of 32
 * consecutive channels of one token reads 128 contiguous bytes of u, dt, z
 * and writes 128 of y; B_t, C_t are the same for every channel of a group:
 * uniform loads (one transaction, broadcast) through the read-only cache.
 * exp(dt A) is exp2f(dt * A log2 e) with A log2 e formed once per thread.
 *
 * A thread walks the tokens of one channel with SB = 16 state elements in
 * registers; Nst > 16 takes ceil(Nst/16) passes over the tokens, each pass
 * adding its part of sum_s C h to y (the first pass writes the D skip, the
 * last applies the gate; y is read back only by the thread that wrote it).
 *
 * Recurrent mode (and the parallel mode when it has enough channels):
 *   ss_recurrent_kernel: one thread per (sequence, channel) walks all the
 *   sequence's tokens from state_in, writes y and state_out.
 *   <<<(N, ceil(D/128)), 128>>>. This is the DESIGN 7 rule for scans: with
 *   many channels (N*D >= SS_WIDE, i.e. a good share of the machine's
 *   threads) one thread per channel walking T is bound by reading the
 *   inputs once and does the least work, so the parallel mode takes it too.
 *
 * Parallel mode with few channels (N*D < SS_WIDE) and more than one chunk:
 *   chunked over time with per-chunk carries. Each sequence is cut into
 *   chunks of L tokens (L a power of two in [16, 256], the largest that
 *   still gives >= SS_WIDE (chunk, channel) threads); chunks never cross a
 *   sequence boundary. Three kernels on the context's stream:
 *   1. ss_chunk_state_kernel, one thread per (chunk, channel):
 *      <<<(chunks, ceil(D/128)), 128>>>: the chunk's end state from a zero
 *      start, E_c[d,s] (into hc [chunks][D][Nst]), and sdt_c[d] = sum of dt
 *      over the chunk (so the chunk's decay is exp(A[d,s] sdt_c[d])).
 *   2. ss_carry_kernel, one thread per (sequence, state element d*Nst+s):
 *      walks the sequence's chunks in order, h_c = exp(A sdt_c) h_{c-1} + E_c
 *      from state_in, replacing E_c in place by the carry INTO chunk c, and
 *      writes state_out. This is the scan primitive over chunks (elements
 *      (exp(A sdt_c), E_c)); it is not a call to seqk__cuda_scan because
 *      the chunk count is small (T/L, where that would choose its serial
 *      kernel anyway, i.e. this loop), the decays are formed on the fly
 *      from sdt instead of materialised per state element, and the
 *      exclusive carries are written in place.
 *      <<<(ceil(D*Nst/256), min(N, 65535)), 256>>>, grid-stride over n.
 *   3. ss_chunk_output_kernel, one thread per (chunk, channel): re-walks
 *      the chunk from its carry, writing y. <<<(chunks, ceil(D/128)), 128>>>.
 *   The chunked form does the exp work twice (kernels 1 and 3) for T/L
 *   times the parallelism of the recurrent walk; h is never stored per
 *   token (DESIGN 3.2): the workspace holds one state per chunk,
 *   chunks*D*Nst floats, plus sdt (chunks*D) and, with varlen, the chunk
 *   offsets coff [N+1] (coff[n] = sum_{m<n} ceil(len_m / L)), computed on
 *   the device from cu_seqlens by seqk__chunk_prefix (common.cuh) in one
 *   block <<<1, 1024>>>; a chunk's sequence is found by binary search in
 *   coff.
 *
 * Aliasing: state_out may be state_in. In the recurrent kernel a thread
 * reads its state block before it writes the same elements of state_out;
 * in the chunked form only ss_carry_kernel touches the states, each element
 * by one thread, read before written.
 *
 * To do (measure first): B_t, C_t staged in shared memory per block of
 * tokens; bf16 inputs; a block-level scan over time inside the chunk (as
 * mamba's kernel does with its [B,D,T] layout) instead of the second walk.
 */
#include "chunks.cuh"
#include "common.cuh"

#include <limits.h>
#include <stdint.h>

enum {
    SS_THREADS = 128,      /* channels per block (recurrent, chunk kernels) */
    SS_CARRY_THREADS = 256,
    SB = 16,               /* state elements per thread and pass (registers) */
    SS_WIDE = 65536,       /* threads from which one thread per channel is enough */
    SS_MIN_CHUNK = 16,
    SS_MAX_CHUNK = 256,
    SS_WS_ALIGN = 256
};

#define SS_LOG2E 1.44269504088896341f

/* Everything the kernels need, by value. */
typedef struct ss_args {
    int64_t T;         /* tokens per batch entry (without varlen) */
    int64_t D, Nst, G, N;
    int64_t per_group; /* D / G */
    int softplus;
    const float *u, *dt, *A, *Bm, *Cm, *Dskip, *z, *dt_bias;
    float *y;
    const float *s_in;
    float *s_out;
    const int32_t *cu; /* device cu_seqlens [N+1] or NULL */
    /* chunked form */
    int64_t L;         /* tokens per chunk */
    int64_t cps;       /* chunks per sequence without varlen: ceil(T / L) */
    const int32_t *coff; /* varlen: device chunk offsets [N+1] */
    float *hc;         /* [chunks][D][Nst] chunk end states, then carries in */
    float *sdt;        /* [chunks][D] sum of dt over the chunk */
} ss_args;

/* ---- device helpers ------------------------------------------------------------- */

/* Chunk c's sequence n and rows [r0, r0 + len). */
static __device__ __forceinline__ void ss_chunk(const ss_args &a, int64_t c, int64_t *n,
                                                int64_t *r0, int64_t *len)
{
    seqk__chunk_locate(a.coff, a.cu, a.N, a.T, a.L, a.cps, c, n, r0, len);
}

/* dt of row r, channel d (bias already read). */
static __device__ __forceinline__ float ss_step(const ss_args &a, int64_t r, int64_t d,
                                                float bias)
{
    const float x = __ldg(a.dt + r * a.D + d) + bias;
    return a.softplus ? seqk__dev_softplus(x) : x;
}

/*
 * Channel d over rows [r0, r0 + len), from the state h0 [Nst] (NULL:
 * zeros): y of those rows and, when hend is not NULL, the end state. One
 * pass per block of SB state elements (see the top of the file). h0 may be
 * hend: each pass reads its block before writing it.
 */
static __device__ void ss_walk_output(const ss_args &a, int64_t d, int64_t r0, int64_t len,
                                      const float *h0, float *hend)
{
    const int64_t Ns = a.Nst, g = d / a.per_group, D = a.D, GN = a.G * Ns;
    const float bias = a.dt_bias ? a.dt_bias[d] : 0.0f;
    const float dsk = a.Dskip ? a.Dskip[d] : 0.0f;
    const int64_t passes = (Ns + SB - 1) / SB;
    for (int64_t p = 0; p < passes; p++) {
        const int64_t s0 = p * SB;
        const int ns = (int)(Ns - s0 < SB ? Ns - s0 : SB);
        const bool first = p == 0, last = p == passes - 1;
        float h[SB], A2[SB];
#pragma unroll
        for (int j = 0; j < SB; j++) {
            h[j] = (j < ns && h0) ? h0[s0 + j] : 0.0f;
            A2[j] = j < ns ? a.A[d * Ns + s0 + j] * SS_LOG2E : 0.0f;
        }
        for (int64_t r = r0; r < r0 + len; r++) {
            const float dtv = ss_step(a, r, d, bias);
            const float uv = __ldg(a.u + r * D + d), du = dtv * uv;
            const float *Bt = a.Bm + r * GN + g * Ns + s0, *Ct = a.Cm + r * GN + g * Ns + s0;
            float acc = 0.0f;
#pragma unroll
            for (int j = 0; j < SB; j++) {
                if (j < ns) {
                    h[j] = fmaf(exp2f(dtv * A2[j]), h[j], du * __ldg(Bt + j));
                    acc = fmaf(__ldg(Ct + j), h[j], acc);
                }
            }
            float *yp = a.y + r * D + d;
            float yv = first ? acc + dsk * uv : *yp + acc;
            if (last && a.z) {
                const float zv = __ldg(a.z + r * D + d);
                yv *= zv / (1.0f + expf(-zv));
            }
            *yp = yv;
        }
        if (hend) {
#pragma unroll
            for (int j = 0; j < SB; j++) /* unrolled: h stays in registers */
                if (j < ns) hend[s0 + j] = h[j];
        }
    }
}

/* ---- kernels ------------------------------------------------------------------- */

static __global__ void __launch_bounds__(SS_THREADS) ss_recurrent_kernel(ss_args a)
{
    const int64_t d = (int64_t)blockIdx.y * SS_THREADS + threadIdx.x;
    const int64_t n = blockIdx.x;
    if (d >= a.D) return;
    int64_t r0, len;
    seqk__seq_rows(a.cu, a.T, n, &r0, &len);
    const int64_t st = (n * a.D + d) * a.Nst;
    ss_walk_output(a, d, r0, len, a.s_in ? a.s_in + st : NULL, a.s_out ? a.s_out + st : NULL);
}

/* Chunk c's end state from zero, into hc, and sdt = sum of dt over it. */
static __global__ void __launch_bounds__(SS_THREADS) ss_chunk_state_kernel(ss_args a)
{
    const int64_t d = (int64_t)blockIdx.y * SS_THREADS + threadIdx.x;
    const int64_t c = blockIdx.x;
    if (d >= a.D) return;
    int64_t n, r0, len;
    ss_chunk(a, c, &n, &r0, &len);
    const int64_t Ns = a.Nst, g = d / a.per_group, D = a.D, GN = a.G * Ns;
    const float bias = a.dt_bias ? a.dt_bias[d] : 0.0f;
    float *hout = a.hc + (c * D + d) * Ns;
    double sum = 0.0; /* sdt: the chunk's decay is exp(A sdt); summed in double */
    for (int64_t s0 = 0; s0 < Ns; s0 += SB) {
        const int ns = (int)(Ns - s0 < SB ? Ns - s0 : SB);
        float h[SB], A2[SB];
#pragma unroll
        for (int j = 0; j < SB; j++) {
            h[j] = 0.0f;
            A2[j] = j < ns ? a.A[d * Ns + s0 + j] * SS_LOG2E : 0.0f;
        }
        for (int64_t r = r0; r < r0 + len; r++) {
            const float dtv = ss_step(a, r, d, bias);
            const float du = dtv * __ldg(a.u + r * D + d);
            const float *Bt = a.Bm + r * GN + g * Ns + s0;
            if (s0 == 0) sum += (double)dtv;
#pragma unroll
            for (int j = 0; j < SB; j++)
                if (j < ns) h[j] = fmaf(exp2f(dtv * A2[j]), h[j], du * __ldg(Bt + j));
        }
#pragma unroll
        for (int j = 0; j < SB; j++)
            if (j < ns) hout[s0 + j] = h[j];
    }
    a.sdt[c * D + d] = (float)sum;
}

/* Per (sequence, state element): the carries into its chunks, in place of
 * the chunk end states, and state_out. */
static __global__ void __launch_bounds__(SS_CARRY_THREADS) ss_carry_kernel(ss_args a)
{
    const int64_t DN = a.D * a.Nst;
    const int64_t e = (int64_t)blockIdx.x * SS_CARRY_THREADS + threadIdx.x; /* d*Nst + s */
    if (e >= DN) return;
    const int64_t d = e / a.Nst;
    const float A2 = a.A[e] * SS_LOG2E; /* A is [D, Nst]: element e */
    for (int64_t n = blockIdx.y; n < a.N; n += gridDim.y) {
        const int64_t c0 = a.coff ? a.coff[n] : n * a.cps;
        const int64_t c1 = a.coff ? a.coff[n + 1] : (n + 1) * a.cps;
        const float h = seqk__sscan_carry(a.hc, a.sdt, DN, a.D, e, d, A2, c0, c1,
                                          a.s_in ? a.s_in[n * DN + e] : 0.0f);
        if (a.s_out) a.s_out[n * DN + e] = h;
    }
}

/* y over chunk c from its carry. */
static __global__ void __launch_bounds__(SS_THREADS) ss_chunk_output_kernel(ss_args a)
{
    const int64_t d = (int64_t)blockIdx.y * SS_THREADS + threadIdx.x;
    const int64_t c = blockIdx.x;
    if (d >= a.D) return;
    int64_t n, r0, len;
    ss_chunk(a, c, &n, &r0, &len);
    ss_walk_output(a, d, r0, len, a.hc + (c * a.D + d) * a.Nst, NULL);
}

/* ---- host ---------------------------------------------------------------------- */

static size_t ss_align(size_t n) { return seqk__align_up(n, SS_WS_ALIGN); }

extern "C" seqk_status seqk__cuda_selective_scan(
    seqk_context *ctx, int mode, int64_t B, int64_t T, int64_t D, int64_t Nst, int64_t G,
    unsigned flags, const float *u, const float *dt, const float *A, const float *Bm,
    const float *Cm, const float *Dskip, const float *z, const float *dt_bias, float *y,
    const float *state_in, float *state_out, const int32_t *cu, const int32_t *cu_host,
    int64_t N)
{
    static const char fn[] = "seqk_selective_scan (CUDA)";
    SEQK_CUDA_TRY(fn, cudaSetDevice(ctx->device));
    const cudaStream_t stream = seqk__stream(ctx);
    if (!cu) N = B;
    const int64_t cblocks = (D + SS_THREADS - 1) / SS_THREADS;
    if (cblocks > 65535)
        return seqk__fail(SEQK_ERROR_UNSUPPORTED, "%s: D=%lld, at most %d on CUDA", fn,
                          (long long)D, 65535 * SS_THREADS);
    if (N > INT_MAX)
        return seqk__fail(SEQK_ERROR_UNSUPPORTED, "%s: N=%lld sequences, at most %d on CUDA", fn,
                          (long long)N, INT_MAX);
    const int64_t eblocks = (D * Nst + SS_CARRY_THREADS - 1) / SS_CARRY_THREADS;
    if (eblocks > INT_MAX) /* cannot happen with D <= 65535*128, Nst <= 256 */
        return seqk__fail(SEQK_ERROR_UNSUPPORTED, "%s: D*Nst=%lld, too many on CUDA", fn,
                          (long long)(D * Nst));
    ss_args a = {};
    a.T = T;
    a.D = D, a.Nst = Nst, a.G = G, a.N = N;
    a.per_group = D / G;
    a.softplus = (flags & SEQK_SSCAN_DT_SOFTPLUS) != 0;
    a.u = u, a.dt = dt, a.A = A, a.Bm = Bm, a.Cm = Cm, a.Dskip = Dskip, a.z = z;
    a.dt_bias = dt_bias;
    a.y = y;
    a.s_in = state_in;
    a.s_out = state_out;
    a.cu = cu_host ? cu : NULL;

    /* the chunked form: parallel mode, few channels, more than one chunk somewhere */
    int64_t L = 0, chunks = 0;
    if (mode == SEQK_MODE_PARALLEL && N * D < SS_WIDE) {
        int64_t longest = T;
        if (cu_host) {
            longest = 0;
            for (int64_t n = 0; n < N; n++)
                if (cu_host[n + 1] - cu_host[n] > longest) longest = cu_host[n + 1] - cu_host[n];
        }
        if (longest > SS_MIN_CHUNK) {
            L = SS_MAX_CHUNK;
            while (L > SS_MIN_CHUNK && seqk__count_chunks(cu_host, N, B, T, L) * D < SS_WIDE) L /= 2;
            if (longest <= L) L = 0; /* one chunk per sequence: the walk is the same */
            else chunks = seqk__count_chunks(cu_host, N, B, T, L);
        }
    }
    if (L == 0) {
        ss_recurrent_kernel<<<dim3((unsigned)N, (unsigned)cblocks), SS_THREADS, 0, stream>>>(a);
        SEQK_CUDA_CHECK_LAUNCH(fn);
        return SEQK_SUCCESS;
    }
    if (chunks > INT32_MAX)
        return seqk__fail(SEQK_ERROR_UNSUPPORTED, "%s: %lld chunks of %lld tokens, at most %d",
                          fn, (long long)chunks, (long long)L, INT32_MAX);

    /* workspace: hc [chunks][D][Nst], sdt [chunks][D], coff [N+1] (varlen) */
    const size_t hc_bytes = ss_align((size_t)chunks * (size_t)(D * Nst) * sizeof(float));
    const size_t sdt_bytes = ss_align((size_t)chunks * (size_t)D * sizeof(float));
    const size_t coff_bytes = cu_host ? ss_align((size_t)(N + 1) * sizeof(int32_t)) : 0;
    void *ws = NULL;
    seqk_status st = seqk__workspace(fn, ctx, hc_bytes + sdt_bytes + coff_bytes, &ws);
    if (st != SEQK_SUCCESS) return st;
    char *w = (char *)ws;
    a.hc = (float *)w;
    a.sdt = (float *)(w + hc_bytes);
    a.L = L;
    a.cps = (T + L - 1) / L;
    if (cu_host) {
        int32_t *coff = (int32_t *)(w + hc_bytes + sdt_bytes);
        seqk__chunk_first_kernel<<<1, SEQK__PREFIX_THREADS, 0, stream>>>(cu, N, L, coff);
        SEQK_CUDA_CHECK_LAUNCH(fn);
        a.coff = coff;
    }
    const dim3 cgrid((unsigned)chunks, (unsigned)cblocks);
    ss_chunk_state_kernel<<<cgrid, SS_THREADS, 0, stream>>>(a);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    const dim3 egrid((unsigned)eblocks, (unsigned)(N < 65535 ? N : 65535));
    ss_carry_kernel<<<egrid, SS_CARRY_THREADS, 0, stream>>>(a);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    ss_chunk_output_kernel<<<cgrid, SS_THREADS, 0, stream>>>(a);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    return SEQK_SUCCESS;
}

/* An upper bound of the workspace seqk__cuda_selective_scan takes for these
 * sizes and any cu_seqlens of N sequences (N = B without varlen): the
 * chunked form's carries at the smallest chunk length it picks. */
extern "C" size_t seqk__cuda_selective_scan_workspace(int mode, int64_t B, int64_t T, int64_t D,
                                                      int64_t Nst, int64_t N)
{
    if (mode != SEQK_MODE_PARALLEL || N * D >= SS_WIDE || T <= SS_MIN_CHUNK) return 0;
    const int64_t chunks = seqk__count_chunks(NULL, N, B, T, SS_MIN_CHUNK);
    return ss_align((size_t)chunks * (size_t)(D * Nst) * sizeof(float)) +
           ss_align((size_t)chunks * (size_t)D * sizeof(float)) +
           ss_align((size_t)(N + 1) * sizeof(int32_t));
}
