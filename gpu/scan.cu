/*
 * gpu/scan.cu -- CUDA backend of the scan primitive (seqk_scan, DESIGN 3.6).
 *
 * Math: per channel c of sequence n, in scan order i = 0 .. L-1 (forward: row
 * start+i; reverse: row start+L-1-i, same-row coefficient a[row, c/block])
 *     h_i = a_i h_{i-1} + b_i,   h_{-1} = h0[n,c] or 0.
 * A run of steps is the affine map x -> A x + B (A = product of its a, B = its
 * scan from 0); maps compose by (A1,B1) o (A2,B2) = (A1 A2, A2 B1 + B2), 1 first.
 *
 * Strategy, from the sizes alone (plan_scan; so the workspace size needs no
 * cu_seqlens): serial when N*C >= 65536 or T < 256, chunked otherwise.
 *
 *  1. serial (also the reference): one thread per (sequence, channel) walks
 *     its rows, 16 rows of a and b loaded before the 16 dependent FMAs; a
 *     warp touches 32 consecutive floats of a row. <<<ceil(N*C/256), 256>>>.
 *     Bytes: the minimum, 4 (2 + 1/block) B*T*C + 8 N*C; no workspace.
 *
 *  2. chunked, one pass with decoupled look-back: channels in groups of CG
 *     (32 when C >= 32, else the next power of two >= C), each sequence's
 *     rows in tiles of TT = 4096/CG steps; one 256-thread block per (tile,
 *     group), <<<G * sum_n ceil(L_n/TT), 256>>>, ~35 KB static shared memory,
 *     80 registers (__launch_bounds__ min 3 blocks: 3 blocks/SM, 768 threads).
 *     A block takes its tile id from an atomic counter (ids run time-major,
 *     id = kg*G + g, so a tile's predecessor is id - G and has already
 *     started), loads the tile into shared memory (coalesced; identity (1,0)
 *     past the sequence end or past C), each thread scans 16 steps of one
 *     channel, a shuffle scan plus a scan of the 8 warp aggregates gives the
 *     in-tile prefixes, and one thread per channel publishes the tile's
 *     aggregate, looks back over id-G, id-2G, ... until it meets an
 *     inclusive prefix, and publishes its own (the state after the tile).
 *     Per (tile, channel) a flag 0/1/2 (none/aggregate/inclusive): value
 *     stored first, flag by st.release.gpu; read by ld.acquire.gpu, then the
 *     value from L2. Tiles never cross a sequence boundary; with varlen a
 *     one-block kernel <<<1, 1024>>> first writes tp[n] = sum_{m<n}
 *     ceil(L_m/TT) (and h_final of empty sequences) and each block finds its
 *     sequence by a 32-way warp search in tp. Bytes: as (1), plus ~36 B of
 *     flags/aggregates per (tile, channel) (about 2% at CG = 32, 0.1% at
 *     CG = 1) and 4 (N+1) B of tp. Workspace: counter, flags, aggregates,
 *     inclusive prefixes, tp; counter and flags zeroed by cudaMemsetAsync.
 *
 * h may be b: each b element is read (registers or shared memory) before the
 * same thread/block writes that h. h_final may be h0: an h0 element is read
 * before the h_final element that depends on it is written.
 */
#include "common.cuh"

#include <stdint.h>

/* ---- strategy and workspace plan (host) ---------------------------------- */

enum {
    SERIAL_THREADS = 256,
    SERIAL_UNROLL = 16,          /* rows of loads in flight per thread */
    CHUNK_THREADS = 256,
    CHUNK_STEPS = 16,            /* steps each thread scans serially */
    CHUNK_TILE_ELEMS = CHUNK_THREADS * CHUNK_STEPS,
    CHUNK_MAX_CHANNELS = 65536,  /* N*C at or above this: serial */
    CHUNK_MIN_T = 256,           /* T below this: serial */
    WS_ALIGN = 256
};

/* Status of a (tile, channel) in the look-back. */
enum { LB_NONE = 0, LB_AGGREGATE = 1, LB_INCLUSIVE = 2 };

typedef struct scan_plan {
    int chunked;
    int cg;             /* channels per tile */
    int64_t groups;     /* G = ceil(C / cg) */
    int64_t tt;         /* steps per tile */
    int64_t tiles;      /* upper bound on tiles (all groups) */
    size_t off_flags, off_agg, off_incl, off_tp, bytes;
} scan_plan;

static size_t align_ws(size_t n) { return seqk__align_up(n, WS_ALIGN); }

/* The strategy and workspace layout for these sizes. Depends only on the
 * arguments of seqk__cuda_scan_workspace_size: with B = 1 the bound on tiles
 * covers any cu_seqlens (sum_n ceil(L_n/TT) <= T/TT + N) and tp is reserved. */
static scan_plan plan_scan(int64_t B, int64_t T, int64_t C, int64_t N)
{
    scan_plan p = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    if (T < CHUNK_MIN_T || N >= CHUNK_MAX_CHANNELS || N * C >= CHUNK_MAX_CHANNELS) return p;
    int cg = 1;
    while (cg < 32 && cg < C) cg *= 2;
    const int64_t tt = CHUNK_TILE_ELEMS / cg;
    const int64_t groups = (C + cg - 1) / cg;
    const int64_t per_group = B == 1 ? T / tt + N : B * ((T + tt - 1) / tt);
    const int64_t tiles = groups * per_group;
    if (tiles > INT32_MAX) return p; /* cannot happen for sizes that fit in memory */
    const size_t slots = (size_t)tiles * (size_t)cg;
    p.chunked = 1;
    p.cg = cg;
    p.groups = groups;
    p.tt = tt;
    p.tiles = tiles;
    p.off_flags = WS_ALIGN; /* the tile counter lives at offset 0 */
    p.off_agg = p.off_flags + align_ws(slots * sizeof(unsigned));
    p.off_incl = p.off_agg + align_ws(slots * sizeof(float2));
    p.off_tp = p.off_incl + align_ws(slots * sizeof(float));
    p.bytes = p.off_tp + (B == 1 ? align_ws((size_t)(N + 1) * sizeof(int32_t)) : 0);
    return p;
}

/* ---- device helpers ------------------------------------------------------- */

static __device__ __forceinline__ unsigned ld_acquire(const unsigned *p)
{
    unsigned v;
#if __CUDA_ARCH__ >= 700
    asm volatile("ld.acquire.gpu.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
#else
    v = *(const volatile unsigned *)p;
    __threadfence();
#endif
    return v;
}

static __device__ __forceinline__ void st_release(unsigned *p, unsigned v)
{
#if __CUDA_ARCH__ >= 700
    asm volatile("st.release.gpu.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
#else
    __threadfence();
    *(volatile unsigned *)p = v;
#endif
}

static __device__ __forceinline__ void backoff(void)
{
#if __CUDA_ARCH__ >= 700
    __nanosleep(32);
#endif
}

/* The operands of one call, as both strategies' kernels read them. */
typedef struct scan_operands {
    const float *a, *b, *h0;
    float *h, *h_final;
    const int32_t *cu; /* device cu_seqlens, or NULL: sequence n is rows n*T .. n*T+T-1 */
    int64_t T, C, CA, block;
    int rev;
} scan_operands;

/* ---- strategy 1: one thread per (sequence, channel) ----------------------- */

typedef struct serial_args {
    scan_operands io;
    int64_t NC;
} serial_args;

static __global__ void __launch_bounds__(SERIAL_THREADS) scan_serial_kernel(serial_args p)
{
    const int64_t idx = (int64_t)blockIdx.x * SERIAL_THREADS + threadIdx.x;
    if (idx >= p.NC) return;
    const int64_t n = idx / p.io.C, c = idx - n * p.io.C;
    int64_t start, L;
    seqk__seq_rows(p.io.cu, p.io.T, n, &start, &L);
    float s = p.io.h0 ? p.io.h0[idx] : 0.0f;
    if (L > 0) {
        const int64_t row0 = p.io.rev ? start + L - 1 : start;
        const int64_t sb = p.io.rev ? -p.io.C : p.io.C, sa = p.io.rev ? -p.io.CA : p.io.CA;
        const float *pb = p.io.b + row0 * p.io.C + c;
        const float *pa = p.io.a + row0 * p.io.CA + c / p.io.block;
        float *ph = p.io.h + row0 * p.io.C + c;
        for (int64_t i = 0; i < L; i += SERIAL_UNROLL) {
            const int64_t rem = L - i;
            float av[SERIAL_UNROLL], bv[SERIAL_UNROLL];
#pragma unroll
            for (int u = 0; u < SERIAL_UNROLL; u++) {
                av[u] = 1.0f;
                bv[u] = 0.0f;
                if (u < rem) {
                    av[u] = *pa; /* plain load: ptxas sank __ldg loads next to their FMAs */
                    bv[u] = *pb; /* plain load: b may be h */
                    pa += sa;
                    pb += sb;
                }
            }
#pragma unroll
            for (int u = 0; u < SERIAL_UNROLL; u++) {
                if (u < rem) {
                    s = fmaf(av[u], s, bv[u]);
                    *ph = s;
                    ph += sb;
                }
            }
        }
    }
    if (p.io.h_final) p.io.h_final[idx] = s;
}

/* ---- strategy 2: tiles with decoupled look-back --------------------------- */

typedef struct chunk_args {
    scan_operands io;
    const int32_t *tp; /* [N+1] tile prefix per sequence (varlen), or NULL */
    unsigned *counter; /* next tile id */
    unsigned *flags;   /* [tiles, CG] look-back status */
    float2 *agg;       /* [tiles, CG] tile aggregate (A, B) */
    float *incl;       /* [tiles, CG] state after the tile */
    int64_t N;
    int64_t groups;    /* G */
    int64_t kps;       /* tiles per sequence without varlen: ceil(T / TT) */
} chunk_args;

/* Warp-wide: the largest n in [0, N) with tp[n] <= kg, given tp[0] = 0 <= kg
 * < tp[N] and tp non-decreasing (so sequence n is non-empty). 32-way search:
 * each round probes 32 evenly spaced positions and keeps the last good one. */
static __device__ int64_t find_sequence(const int32_t *tp, int64_t N, int64_t kg, int lane)
{
    int64_t lo = 0, hi = N; /* tp[lo] <= kg < tp[hi] */
    while (hi - lo > 1) {
        const int64_t step = (hi - lo + 31) / 32;
        const int64_t q = lo + lane * step;
        const bool ok = q < hi && __ldg(tp + q) <= kg;
        const unsigned m = __ballot_sync(SEQK__FULL_MASK, ok); /* bit 0 is set: q = lo */
        lo += (31 - __clz(m)) * step;
        hi = hi < lo + step ? hi : lo + step;
    }
    return lo;
}

/* Decoupled look-back for one channel of tile `id` (not the first of its
 * chain): the state before the tile. Walks predecessors id-G, id-2G, ...,
 * composing their aggregates until one has its inclusive prefix; the chain's
 * first tile always publishes an inclusive prefix, so this ends. */
template <int CG>
static __device__ float look_back(const chunk_args &p, int64_t id, int j)
{
    float cA = 1.0f, cB = 0.0f; /* map over tiles q+1 .. id-G: x -> cA x + cB */
    for (int64_t q = id - p.groups;; q -= p.groups) {
        const int64_t slot = q * CG + j;
        unsigned st = ld_acquire(p.flags + slot);
        while (st == LB_NONE) {
            backoff();
            st = ld_acquire(p.flags + slot);
        }
        if (st == LB_INCLUSIVE) return fmaf(cA, __ldcg(p.incl + slot), cB);
        const float2 ag = __ldcg(p.agg + slot);
        cB = fmaf(cA, ag.y, cB);
        cA *= ag.x;
    }
}

/*
 * One block = one tile of TT = R*S steps (scan order) x CG channels.
 * Thread tid = r*CG + j scans steps r*S .. r*S+S-1 of channel j.
 * Shared layout: element (step i, channel j) at (i%S)*PITCH + (i/S)*CG + j,
 * so that in the scan phase thread tid reads s*PITCH + tid (consecutive), and
 * PITCH = NT + max(CG, 32/S) % 32 makes the coalesced fill conflict-free too.
 */
template <int CG>
static __global__ void __launch_bounds__(CHUNK_THREADS, 3) scan_chunked_kernel(chunk_args p)
{
    constexpr int NT = CHUNK_THREADS, S = CHUNK_STEPS, R = NT / CG, TT = R * S, NW = NT / 32;
    constexpr int PAD = (CG > 32 / S ? CG : 32 / S) % 32;
    constexpr int PITCH = NT + PAD;
    static_assert(CG >= 1 && CG <= 32 && (CG & (CG - 1)) == 0, "CG: power of two <= 32");
    static_assert(NT % 32 == 0 && R * CG == NT, "block shape");

    __shared__ float sa[S * PITCH], sb[S * PITCH];
    __shared__ float wA[NW][CG], wB[NW][CG]; /* per-warp aggregates */
    __shared__ float s_carry[CG];            /* state before the tile */
    __shared__ int64_t s_tile[4];            /* id, n, k, tiles of sequence n */

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int j = tid % CG, r = tid / CG;

    /* 1. Which tile: id from the counter, then (sequence n, tile k of n). */
    if (warp == 0) {
        unsigned uid = 0;
        if (lane == 0) uid = atomicAdd(p.counter, 1u);
        uid = __shfl_sync(SEQK__FULL_MASK, uid, 0);
        const int64_t id = uid, kg = id / p.groups;
        int64_t n, k, nk;
        if (p.tp) {
            n = find_sequence(p.tp, p.N, kg, lane);
            const int64_t t0 = __ldg(p.tp + n);
            k = kg - t0;
            nk = __ldg(p.tp + n + 1) - t0;
        } else {
            n = kg / p.kps;
            k = kg - n * p.kps;
            nk = p.kps;
        }
        if (lane == 0) {
            s_tile[0] = id;
            s_tile[1] = n;
            s_tile[2] = k;
            s_tile[3] = nk;
        }
    }
    __syncthreads();
    const int64_t id = s_tile[0], n = s_tile[1], k = s_tile[2], nk = s_tile[3];
    const int64_t c = (id % p.groups) * CG + j;
    const bool c_ok = c < p.io.C;
    int64_t start, L;
    if (p.io.cu) {
        start = __ldg(p.io.cu + n);
        L = __ldg(p.io.cu + n + 1) - start;
    } else {
        start = n * p.io.T;
        L = p.io.T;
    }
    const int64_t first = k * TT; /* first step of the tile, in scan order */
    const int len = (int)(L - first < TT ? L - first : TT);
    const int64_t row0 = p.io.rev ? start + L - 1 - first : start + first;
    const int64_t sbs = p.io.rev ? -p.io.C : p.io.C; /* b/h stride of one scan step */

    /* 2. Load the tile: all loads in flight, then into shared memory. */
    {
        const int64_t sas = p.io.rev ? -p.io.CA : p.io.CA;
        const float *pb = p.io.b + row0 * p.io.C + (c_ok ? c : 0);
        const float *pa = p.io.a + row0 * p.io.CA + (c_ok ? c / p.io.block : 0);
        float av[S], bv[S];
#pragma unroll
        for (int m = 0; m < S; m++) {
            const int i = m * R + r;
            av[m] = 1.0f; /* identity past the end or past C */
            bv[m] = 0.0f;
            if (c_ok && i < len) {
                av[m] = __ldg(pa + i * sas);
                bv[m] = pb[i * sbs]; /* plain load: b may be h */
            }
        }
#pragma unroll
        for (int m = 0; m < S; m++) {
            const int i = m * R + r;
            const int si = (i % S) * PITCH + (i / S) * CG + j;
            sa[si] = av[m];
            sb[si] = bv[m];
        }
    }
    __syncthreads();

    /* 3. Each thread's run of S steps from 0: the map (A, B). */
    float A = 1.0f, Bv = 0.0f;
#pragma unroll
    for (int s = 0; s < S; s++) {
        const float x = sa[s * PITCH + tid];
        Bv = fmaf(x, Bv, sb[s * PITCH + tid]);
        A *= x;
    }
    /* Inclusive warp scan over the runs of the same channel (lanes j, j+CG, ...). */
#pragma unroll
    for (int d = CG; d < 32; d *= 2) {
        const float pA = __shfl_up_sync(SEQK__FULL_MASK, A, d);
        const float pB = __shfl_up_sync(SEQK__FULL_MASK, Bv, d);
        if (lane >= d) {
            Bv = fmaf(A, pB, Bv);
            A *= pA;
        }
    }
    /* Exclusive: the runs of this warp before this thread's run. */
    float eA = 1.0f, eB = 0.0f;
    if (CG < 32) {
        const int d = CG < 32 ? CG : 1;
        const float tA = __shfl_up_sync(SEQK__FULL_MASK, A, d);
        const float tB = __shfl_up_sync(SEQK__FULL_MASK, Bv, d);
        if (lane >= d) {
            eA = tA;
            eB = tB;
        }
    }
    if (lane >= 32 - CG) { /* the warp's last run: the warp's aggregate */
        wA[warp][j] = A;
        wB[warp][j] = Bv;
    }
    __syncthreads();

    /* 4. One thread per channel: publish, look back, publish the inclusive prefix. */
    if (tid < CG) {
        float TA = 1.0f, TB = 0.0f;
#pragma unroll
        for (int w = 0; w < NW; w++) {
            TB = fmaf(wA[w][j], TB, wB[w][j]);
            TA *= wA[w][j];
        }
        const int64_t slot = id * CG + j;
        float carry;
        if (k == 0) {
            /* plain load: h0 may be h_final */
            carry = p.io.h0 && c_ok ? p.io.h0[n * p.io.C + c] : 0.0f;
        } else {
            __stcg(p.agg + slot, make_float2(TA, TB));
            st_release(p.flags + slot, LB_AGGREGATE);
            carry = look_back<CG>(p, id, j);
        }
        const float after = fmaf(TA, carry, TB);
        if (k + 1 < nk) {
            __stcg(p.incl + slot, after);
            st_release(p.flags + slot, LB_INCLUSIVE);
        } else if (p.io.h_final && c_ok) {
            p.io.h_final[n * p.io.C + c] = after;
        }
        s_carry[j] = carry;
    }
    __syncthreads();

    /* 5. Rescan the run from its true starting state, into sb. */
    float x = s_carry[j];
    for (int w = 0; w < warp; w++) x = fmaf(wA[w][j], x, wB[w][j]);
    x = fmaf(eA, x, eB);
#pragma unroll
    for (int s = 0; s < S; s++) {
        const int si = s * PITCH + tid;
        x = fmaf(sa[si], x, sb[si]);
        sb[si] = x;
    }
    __syncthreads();

    /* 6. Store the tile (same coalesced pattern as the load). */
    if (c_ok) {
        float *ph = p.io.h + row0 * p.io.C + c;
#pragma unroll
        for (int m = 0; m < S; m++) {
            const int i = m * R + r;
            if (i < len) ph[i * sbs] = sb[(i % S) * PITCH + (i / S) * CG + j];
        }
    }
}

/* Varlen, one block of SEQK__PREFIX_THREADS: tp[n] = sum_{m<n} ceil(L_m / tt),
 * tp[N] = the total (seqk__chunk_prefix); and h_final = h0 (or 0) for empty
 * sequences. */
static __global__ void __launch_bounds__(SEQK__PREFIX_THREADS)
    scan_tile_prefix_kernel(const int32_t *cu, int64_t N, int64_t C, int64_t tt, int32_t *tp,
                            const float *h0, float *h_final)
{
    seqk__chunk_prefix(cu, N, tt, tp);
    if (h_final)
        for (int64_t e = threadIdx.x; e < N * C; e += SEQK__PREFIX_THREADS) {
            const int64_t n = e / C;
            if (cu[n + 1] == cu[n]) h_final[e] = h0 ? h0[e] : 0.0f;
        }
}

/* ---- entry points ---------------------------------------------------------- */

extern "C" size_t seqk__cuda_scan_workspace_size(int64_t B, int64_t T, int64_t C, int64_t block,
                                                 unsigned flags, int64_t N)
{
    (void)block;
    (void)flags;
    return plan_scan(B, T, C, N).bytes;
}

static seqk_status launch_chunked(const char *fn, cudaStream_t stream, int cg, unsigned grid,
                                  const chunk_args &args)
{
    switch (cg) {
    case 1: scan_chunked_kernel<1><<<grid, CHUNK_THREADS, 0, stream>>>(args); break;
    case 2: scan_chunked_kernel<2><<<grid, CHUNK_THREADS, 0, stream>>>(args); break;
    case 4: scan_chunked_kernel<4><<<grid, CHUNK_THREADS, 0, stream>>>(args); break;
    case 8: scan_chunked_kernel<8><<<grid, CHUNK_THREADS, 0, stream>>>(args); break;
    case 16: scan_chunked_kernel<16><<<grid, CHUNK_THREADS, 0, stream>>>(args); break;
    case 32: scan_chunked_kernel<32><<<grid, CHUNK_THREADS, 0, stream>>>(args); break;
    default: return seqk__fail(SEQK_ERROR_INTERNAL, "%s: channel group %d", fn, cg);
    }
    SEQK_CUDA_CHECK_LAUNCH(fn);
    return SEQK_SUCCESS;
}

extern "C" seqk_status seqk__cuda_scan(seqk_context *ctx, int64_t B, int64_t T, int64_t C,
                                       int64_t block, unsigned flags, const float *a,
                                       const float *b, const float *h0, float *h, float *h_final,
                                       const int32_t *cu, const int32_t *cu_host, int64_t N)
{
    static const char fn[] = "seqk_scan";
    SEQK_CUDA_TRY(fn, cudaSetDevice(ctx->device));
    cudaStream_t stream = seqk__stream(ctx);
    if (!cu) N = B;
    const int rev = (flags & SEQK_SCAN_REVERSE) != 0;

    const scan_plan pl = plan_scan(B, T, C, N);
    void *ws = NULL;
    seqk_status st = seqk__workspace(fn, ctx, pl.bytes, &ws);
    if (st != SEQK_SUCCESS) return st;

    if (T == 0) { /* every sequence is empty: h_final = h0 (or zeros) */
        if (!h_final) return SEQK_SUCCESS;
        const size_t bytes = (size_t)(N * C) * sizeof(float);
        if (!h0)
            SEQK_CUDA_TRY(fn, cudaMemsetAsync(h_final, 0, bytes, stream));
        else if (h0 != h_final)
            SEQK_CUDA_TRY(fn, cudaMemcpyAsync(h_final, h0, bytes, cudaMemcpyDeviceToDevice,
                                              stream));
        return SEQK_SUCCESS;
    }

    scan_operands io;
    io.a = a;
    io.b = b;
    io.h0 = h0;
    io.h = h;
    io.h_final = h_final;
    io.cu = cu;
    io.T = T;
    io.C = C;
    io.CA = C / block;
    io.block = block;
    io.rev = rev;
    if (!pl.chunked) {
        serial_args args;
        args.io = io;
        args.NC = N * C;
        const int64_t blocks = (args.NC + SERIAL_THREADS - 1) / SERIAL_THREADS;
        if (blocks > INT32_MAX)
            return seqk__fail(SEQK_ERROR_INVALID_ARGUMENT, "%s: N*C=%lld channels is too many",
                              fn, (long long)args.NC);
        scan_serial_kernel<<<(unsigned)blocks, SERIAL_THREADS, 0, stream>>>(args);
        SEQK_CUDA_CHECK_LAUNCH(fn);
        return SEQK_SUCCESS;
    }

    /* Tiles per channel group, exactly as the device counts them (N = B without cu). */
    const int64_t per_group = seqk__count_chunks(cu ? cu_host : NULL, N, B, T, pl.tt);
    const int64_t tiles = per_group * pl.groups; /* >= 1 since T > 0; <= pl.tiles */

    char *w = (char *)ws;
    chunk_args args;
    args.io = io;
    args.tp = cu ? (const int32_t *)(w + pl.off_tp) : NULL;
    args.counter = (unsigned *)w;
    args.flags = (unsigned *)(w + pl.off_flags);
    args.agg = (float2 *)(w + pl.off_agg);
    args.incl = (float *)(w + pl.off_incl);
    args.N = N;
    args.groups = pl.groups;
    args.kps = (T + pl.tt - 1) / pl.tt;

    SEQK_CUDA_TRY(fn, cudaMemsetAsync(ws, 0,
                                      pl.off_flags + (size_t)tiles * (size_t)pl.cg *
                                                         sizeof(unsigned),
                                      stream));
    if (cu) {
        scan_tile_prefix_kernel<<<1, SEQK__PREFIX_THREADS, 0, stream>>>(
            cu, N, C, pl.tt, (int32_t *)(w + pl.off_tp), h0, h_final);
        SEQK_CUDA_CHECK_LAUNCH(fn);
    }
    return launch_chunked(fn, stream, pl.cg, (unsigned)tiles, args);
}
