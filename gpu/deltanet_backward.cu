/*
 * gpu/deltanet_backward.cu -- CUDA backend of seqk_deltanet_backward: the
 * gradients of DeltaNet and gated DeltaNet (DESIGN 3.3, 3.7). The math is
 * the CPU backward's (ssm/deltanet_backward.c, whose top comment derives
 * it); this file computes the same per-chunk formulas with every chunk in
 * parallel. First, plain version: fp32 FFMA on CUDA cores, no tensor cores,
 * no cuBLAS. Deterministic: no atomics, every sum in a fixed order.
 * Written without a GPU at hand: compiled warning-free for sm_80/sm_90 and
 * run on the CPU emulator (tools/cuda_emu) against the float64 reference of
 * tests/test_deltanet_backward.c; not yet run on a GPU.
 *
 * Per chunk of L tokens (Lc in the last one), G the cumulative log-gate
 * inside it, Gamma_ij = exp(G_i - G_j) (i >= j), eq_i = exp(G_i), ek_i =
 * exp(G_L - G_i), S0 the state before the chunk, dS the gradient of the
 * state after it:
 *
 *   forward  A, P, U = T diag(beta) V, W = T diag(beta eq) K~ (T = (I + A)^-1),
 *            Vn = U - W S0, S_next = exp(G_L) S0 + (diag(ek) K~)^T Vn
 *   reverse  dVn = P^T dO + diag(ek) K~ dS,
 *            dS0 = exp(G_L) dS + (diag(eq) Q~)^T dO - W^T dVn
 *   local    X = T^T dVn (back substitution), Y = T^T dW = -X S0^T
 *            dA_ij = -(X_i . Vn_j), j < i
 *            M_ij = beta_i dA_ij Gamma_ij,  DA_ij = dA_ij Gamma_ij (k~_i . k~_j)
 *            dP_ij = (dO_i . Vn_j) Gamma_ij, j <= i
 *            dv_i = beta_i X_i
 *            dbeta_i = v_i . X_i + eq_i k~_i . Y_i + sum_j DA_ij
 *            dQ~_i = sum_{j<i} dP_ij k~_j + dP_ii k~_i + eq_i S0 dO_i
 *            dK~_i = sum_{l>i} dP_li q~_l + dP_ii q~_i + ek_i dS Vn_i
 *                    + beta_i eq_i Y_i + sum_l (M_il + M_li) k~_l
 *   gate     dg_t = sum_{i >= t} gt_i + sum_{j < t} bt_j + Dterm (per chunk),
 *            gt_i = q~_i . (the strict pairs of dQ~_i + eq_i S0 dO_i)
 *                   - k~_i . (the strict pairs of dK~_i)
 *                   + beta_i eq_i k~_i . Y_i + sum_{j<i} D_ij - sum_{l>i} D_li,
 *            D_ij = beta_i DA_ij, bt_j = ek_j k~_j . (dS Vn_j),
 *            Dterm = exp(G_L) <S0, dS>
 * (each term a pair on the two sides of t with its decay: dg keeps its
 * relative accuracy under strong decay, as on the CPU), then dq, dk through
 * scale and the optional L2 norm.
 *
 * Two products fold away (as on the CPU): with dW = -dVn S0^T, Y = T^T dW =
 * -T^T dVn S0^T = -X S0^T, so only the V columns of dVn are back-substituted
 * and Y is one L x K x V product after it; and dA = -(X U^T + Y W^T) =
 * -(X U^T - X S0^T W^T) = -X (U - W S0)^T = -X Vn^T, so dA reads Vn (kept
 * for dP anyway) and the backward keeps no U: stage 3 writes U into Vn's
 * region and stage 4 turns it into Vn = U - W S0 in place (the forward's
 * own in-place mode, dn_args.Vn NULL). Vn is the forward's own rounding of
 * U - W S0, so no new cancellation.
 *
 * Kernels, in launch order (nch = chunks x heads over all sequences):
 *   stages 0-3 of the forward (gpu/deltanet.cuh): chunk table (varlen), Qn,
 *     Kn, Gc (double), A, P, W, and U into Vn's region
 *   dn_state_kernel (stage 4) without outputs: Vn = U - W S0 in place and
 *     Sc, the state before every chunk; block per (sequence, head, 32
 *     state columns)
 *   dnb_dstate_kernel: the reverse pass, sequential over a sequence's
 *     chunks, block per (sequence, head, 32 columns) with its K x 32 slice
 *     of dS in shared memory (the columns of dS are independent): dSc, the
 *     gradient after every chunk, dVn (into X), dstate_in
 *   then every chunk in parallel, block per (chunk, head):
 *   dnb_backsolve_kernel X = T^T dVn in place: thread per column,
 *                       (I + A)^T X = dVn from the last row up
 *   dnb_y_kernel        Y = -X S0^T (thread per element; zero at a zero S0)
 *   dnb_pairs_kernel    dP, M, DA with dA = -X Vn^T (thread per pair)
 *   dnb_rows_kernel     warp per token: dq, dk, dv, dbeta, gt (into dg), bt
 *   dnb_gate_rev_kernel, dnb_gate_fwd_kernel (gated) warp per (chunk,
 *                       head): the two sums of dg and Dterm (gpu/chunks.cuh)
 *
 * Workspace (256-byte aligned regions; BT = B*T, nch = chunks x heads):
 * first [N+1] int32 (varlen), Gc [BT*H] doubles, Qn, Kn [BT*H*K], A, P, dP,
 * M, DA [nch*L*L], Vn (U before stage 4), X [nch*L*V], W, Y [nch*L*K], Sc,
 * dSc [nch*K*V], btb [BT*H]: about BT*H*(4K + 2V + 5L + 3) + 2 nch*K*V
 * floats (no U region: see above). Every chunk state is kept (the GPU has
 * the memory; every stage stays one launch).
 *
 * To tune (measure first): shared-memory tiles (64 x 64, as
 * gpu/linear_state_backward.cu) for the pair and row products, which read
 * their operands from global memory (cached) here; tensor cores; a blocked
 * back substitution; fusing the per-chunk kernels for small K, V.
 */
#include "deltanet.cuh"

#include <string.h>

enum { DNB_THREADS = DN_THREADS, DNB_WARPS = DN_WARPS };

/* The backward's arrays besides the forward's (a). */
typedef struct dnb_args {
    dn_args a;
    const float *dout, *ds_out;   /* [B*T, H, V]; [N, H, K, V] or NULL */
    float *dq, *dk, *dv, *dbeta;  /* outputs */
    float *dg, *ds_in;            /* [B*T, H] (gated) or NULL; [N, H, K, V] or NULL */
    float *dSc;                   /* [nch, K, V] the gradient of the state after each chunk */
    float *X, *Y;                 /* [nch, L, V] dVn -> X; [nch, L, K] Y = -X S0^T */
    float *dP, *M, *DA;           /* [nch, L, L] */
    float *btb;                   /* [B*T, H] */
} dnb_args;

/* The chunk and head of a block of a per-(chunk, head) kernel. */
typedef struct dnb_chunk {
    int64_t ch, r0; /* c H + h; the chunk's first token row */
    int h, Lc;
} dnb_chunk;

static __device__ __forceinline__ dnb_chunk dnb_chunk_of(const dn_args &a)
{
    dnb_chunk q;
    q.ch = blockIdx.x;
    const int64_t c = q.ch / a.H;
    q.h = (int)(q.ch - c * a.H);
    seqk__chunk_rows(a.map, c, &q.r0, &q.Lc);
    return q;
}

/* ---- the reverse pass over the chunks ------------------------------------------------ */

static __global__ void __launch_bounds__(DNB_THREADS) dnb_dstate_kernel(dnb_args b, int nvb)
{
    extern __shared__ float sm[];
    const dn_args &a = b.a;
    const int K = a.K, V = a.V, H = a.H, L = a.map.L;
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
    const dn_slice sl = dn_slice_of(a, nvb);
    float *S = sm;                         /* [K][32] dS */
    float *eg = S + (size_t)K * DN_COLS;   /* [L] exp(G_i) */
    float *ek = eg + L;                    /* [L] exp(G_Lc - G_i) */

    dn_slice_load(a, sl, b.ds_out, S);
    int64_t row0, len, cb, ce;
    seqk__chunks_seq(a.map, sl.n, &row0, &len);
    seqk__chunks_range(a.map, sl.n, &cb, &ce);
    for (int64_t c = ce - 1; c >= cb; c--) {
        const int64_t r0 = row0 + (c - cb) * L;
        const int Lc = (int)(len - (c - cb) * L < L ? len - (c - cb) * L : L);
        const int64_t ch = c * H + sl.h;
        const float *Pc = a.P + ch * L * L, *Wc = a.W + ch * L * K;
        float *Xc = b.X + ch * L * V;
        __syncthreads(); /* the previous chunk is done with eg, ek and S */
        dn_slice_store(a, sl, ch, S, b.dSc); /* the gradient after the chunk */
        dn_chunk_decays(a, r0, Lc, sl.h, eg, ek);
        __syncthreads();
        /* dVn_i = sum_{l >= i} P_li dO_l + ek_i k~_i . dS (column col) */
        for (int i = w; i < Lc; i += DNB_WARPS) {
            const float *ki = a.Kn + ((r0 + i) * H + sl.h) * K;
            float kd = 0.0f, acc = 0.0f;
            for (int kk = 0; kk < K; kk++) kd = fmaf(ki[kk], S[kk * DN_COLS + lane], kd);
            if (sl.colok) {
                for (int l = i; l < Lc; l++)
                    acc = fmaf(Pc[(int64_t)l * L + i], b.dout[((r0 + l) * H + sl.h) * V + sl.col],
                               acc);
                Xc[(int64_t)i * V + sl.col] = fmaf(ek[i], kd, acc);
            }
        }
        __syncthreads(); /* dVn visible; every read of dS done */
        /* dS0 = exp(G_L) dS + sum_i eq_i q~_i dO_i - sum_i W_i dVn_i */
        const float ac = a.gated ? expf((float)a.Gc[(r0 + Lc - 1) * H + sl.h]) : 1.0f;
        for (int kk = w; kk < K; kk += DNB_WARPS) {
            float acc = 0.0f;
            if (sl.colok)
                for (int i = 0; i < Lc; i++) {
                    const int64_t rh = (r0 + i) * H + sl.h;
                    acc = fmaf(eg[i] * a.Qn[rh * K + kk], b.dout[rh * V + sl.col], acc);
                    acc = fmaf(-Wc[(int64_t)i * K + kk], Xc[(int64_t)i * V + sl.col], acc);
                }
            S[kk * DN_COLS + lane] = fmaf(ac, S[kk * DN_COLS + lane], acc);
        }
    }
    __syncthreads();
    dn_slice_store(a, sl, sl.nh, S, b.ds_in);
}

/* ---- per chunk ---------------------------------------------------------------------------- */

/* X = T^T dVn in place: per column of X, (I + A)^T X = dVn, X_i = dVn_i -
 * sum_{j > i} A_ji X_j from the last row up. (Y = T^T dW needs no solve of
 * its own: it is -X S0^T, dnb_y_kernel.) */
static __global__ void __launch_bounds__(DNB_THREADS) dnb_backsolve_kernel(dnb_args b)
{
    const dn_args &a = b.a;
    const dnb_chunk q = dnb_chunk_of(a);
    const int V = a.V, L = a.map.L;
    const float *Am = a.A + q.ch * L * L;
    for (int col = threadIdx.x; col < V; col += DNB_THREADS) {
        float *Z = b.X + q.ch * L * V + col;
        for (int i = q.Lc - 1; i >= 0; i--) {
            float z = Z[(int64_t)i * V];
            for (int j = i + 1; j < q.Lc; j++)
                z = fmaf(-Am[(int64_t)j * L + i], Z[(int64_t)j * V], z);
            Z[(int64_t)i * V] = z;
        }
    }
}

/* Y = T^T dW = -T^T dVn S0^T = -X S0^T (thread per element; at a zero
 * initial state Sc holds zeros and Y is zero, as dW was). */
static __global__ void __launch_bounds__(DNB_THREADS) dnb_y_kernel(dnb_args b)
{
    const dn_args &a = b.a;
    const dnb_chunk q = dnb_chunk_of(a);
    const int K = a.K, V = a.V, L = a.map.L;
    const float *Xc = b.X + q.ch * L * V, *S0 = a.Sc + q.ch * (int64_t)K * V;
    float *Yc = b.Y + q.ch * L * K;
    for (int64_t e = threadIdx.x; e < (int64_t)q.Lc * K; e += DNB_THREADS) {
        const int i = (int)(e / K), kk = (int)(e - (int64_t)i * K);
        const float *xi = Xc + (int64_t)i * V, *sk = S0 + (int64_t)kk * V;
        float acc = 0.0f;
        for (int v = 0; v < V; v++) acc = fmaf(xi[v], sk[v], acc);
        Yc[(int64_t)i * K + kk] = -acc;
    }
}

/* dot of n floats, one FMA per term in order */
static __device__ __forceinline__ float dnb_dot(const float *x, const float *y, int n)
{
    float s = 0.0f;
    for (int i = 0; i < n; i++) s = fmaf(x[i], y[i], s);
    return s;
}

/* Thread per pair (i, j) of the chunk: dP_ij = (dO_i . Vn_j) Gamma_ij (j <=
 * i; zero above), and for j < i M_ij = beta_i dA_ij Gamma_ij, DA_ij = dA_ij
 * Gamma_ij (k~_i . k~_j), dA_ij = -(X_i . U_j + Y_i . W_j) = -(X_i . Vn_j)
 * (zero elsewhere; see the top comment). */
static __global__ void __launch_bounds__(DNB_THREADS) dnb_pairs_kernel(dnb_args b)
{
    const dn_args &a = b.a;
    const dnb_chunk q = dnb_chunk_of(a);
    const int K = a.K, V = a.V, L = a.map.L, H = a.H;
    const int64_t LL = (int64_t)L * L;
    const float *Vc = a.Vn + q.ch * L * V, *Xc = b.X + q.ch * L * V;
    float *dPc = b.dP + q.ch * LL, *Mc = b.M + q.ch * LL, *DAc = b.DA + q.ch * LL;
    for (int64_t e = threadIdx.x; e < (int64_t)q.Lc * q.Lc; e += DNB_THREADS) {
        const int i = (int)(e / q.Lc), j = (int)(e - (int64_t)i * q.Lc);
        const int64_t o = (int64_t)i * L + j, ri = (q.r0 + i) * H + q.h, rj = (q.r0 + j) * H + q.h;
        float dp = 0.0f, m = 0.0f, da = 0.0f;
        if (j <= i) {
            const float gam = (a.gated && j < i) ? dn_decay(a.Gc, ri, rj) : 1.0f;
            dp = gam * dnb_dot(b.dout + ri * V, Vc + (int64_t)j * V, V);
            if (j < i) {
                const float dA = -dnb_dot(Xc + (int64_t)i * V, Vc + (int64_t)j * V, V);
                m = a.beta[ri] * (dA * gam);
                da = (dA * gam) * dnb_dot(a.Kn + ri * K, a.Kn + rj * K, K);
            }
        }
        dPc[o] = dp, Mc[o] = m, DAc[o] = da;
    }
}

/* Warp per token i of the chunk (block per (chunk, head)): dv, dbeta, dq,
 * dk, and the gate terms gt (into dg) and bt (into btb); see the top
 * comment. */
static __global__ void __launch_bounds__(DNB_THREADS) dnb_rows_kernel(dnb_args b)
{
    const dn_args &a = b.a;
    const dnb_chunk q = dnb_chunk_of(a);
    const int K = a.K, V = a.V, L = a.map.L, H = a.H, Lc = q.Lc;
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const int64_t LL = (int64_t)L * L, KV = (int64_t)K * V;
    const float *Vc = a.Vn + q.ch * L * V, *Xc = b.X + q.ch * L * V, *Yc = b.Y + q.ch * L * K;
    const float *dPc = b.dP + q.ch * LL, *Mc = b.M + q.ch * LL, *DAc = b.DA + q.ch * LL;
    const float *S0 = a.Sc + q.ch * KV, *dS = b.dSc + q.ch * KV;
    const double glast = a.gated ? a.Gc[(q.r0 + Lc - 1) * H + q.h] : 0.0;
    for (int i = w; i < Lc; i += DNB_WARPS) {
        const int64_t rh = (q.r0 + i) * H + q.h;
        const double gi = a.gated ? a.Gc[rh] : 0.0;
        const float eq = expf((float)gi), ek = expf((float)(glast - gi)), bi = a.beta[rh];
        const float *xi = Xc + (int64_t)i * V, *vi = a.v + rh * V, *vn = Vc + (int64_t)i * V;
        const float *doi = b.dout + rh * V, *yi = Yc + (int64_t)i * K;
        const float *qi = a.Qn + rh * K, *ki = a.Kn + rh * K;
        /* dv, v . X */
        float dbv = 0.0f;
        for (int c = lane; c < V; c += 32) {
            dbv = fmaf(vi[c], xi[c], dbv);
            b.dv[rh * V + c] = bi * xi[c];
        }
        /* A's pairs: sum_j DA_ij (dbeta), D's row sum minus its column sum (gt) */
        float dba = 0.0f, rs = 0.0f, cs = 0.0f;
        for (int j = lane; j < Lc; j += 32) {
            if (j < i) dba += DAc[(int64_t)i * L + j];
            if (j > i) cs = fmaf(a.beta[(q.r0 + j) * H + q.h], DAc[(int64_t)j * L + i], cs);
        }
        rs = bi * dba;
        const float diag = dPc[(int64_t)i * L + i];
        float gt = 0.0f, bt = 0.0f, ky = 0.0f;
        float *oq = b.dq + rh * K, *ok = b.dk + rh * K;
        for (int kk = lane; kk < K; kk += 32) {
            float sq = 0.0f, sk = 0.0f, sm = 0.0f;
            for (int j = 0; j < i; j++) {
                const float kj = a.Kn[((q.r0 + j) * H + q.h) * K + kk];
                sq = fmaf(dPc[(int64_t)i * L + j], kj, sq);
                sm = fmaf(Mc[(int64_t)i * L + j], kj, sm);
            }
            for (int l = i + 1; l < Lc; l++) {
                const int64_t rl = ((q.r0 + l) * H + q.h) * K + kk;
                sk = fmaf(dPc[(int64_t)l * L + i], a.Qn[rl], sk);
                sm = fmaf(Mc[(int64_t)l * L + i], a.Kn[rl], sm);
            }
            const float ss = dnb_dot(doi, S0 + (int64_t)kk * V, V); /* (S0 dO_i)_kk */
            const float sd = dnb_dot(vn, dS + (int64_t)kk * V, V);  /* (dS Vn_i)_kk */
            const float sy = yi[kk];
            const float dQ = fmaf(diag, ki[kk], fmaf(eq, ss, sq));
            const float dK = sk + diag * qi[kk] + ek * sd + bi * eq * sy + sm;
            gt = fmaf(qi[kk], fmaf(eq, ss, sq), gt);
            gt = fmaf(-ki[kk], sk, gt);
            bt = fmaf(ki[kk], sd, bt);
            ky = fmaf(ki[kk], sy, ky);
            oq[kk] = dQ;
            ok[kk] = dK;
        }
        dbv = seqk__warp_sum(dbv);
        dba = seqk__warp_sum(dba);
        rs = seqk__warp_sum(rs);
        cs = seqk__warp_sum(cs);
        gt = seqk__warp_sum(gt);
        bt = seqk__warp_sum(bt);
        ky = seqk__warp_sum(ky);
        if (lane == 0) {
            b.dbeta[rh] = dbv + eq * ky + dba;
            if (b.dg) {
                b.dg[rh] = gt + bi * eq * ky + (rs - cs);
                b.btb[rh] = ek * bt;
            }
        }
        /* the raw gradients: dq = scale n'(q) dQ~, dk = n'(k) dK~ (each lane
         * rereads only the elements it wrote) */
        if (!a.l2) {
            for (int kk = lane; kk < K; kk += 32) oq[kk] *= a.scale;
            continue;
        }
        /* x~ = x / r: dx = (dx~ - x^ (x^ . dx~)) / r, x^ = x / r */
        const float *qr = a.q + rh * K, *kr = a.k + rh * K;
        const float2 inv = seqk__warp_qk_factors(qr, kr, K, 1.0f, true, SEQK__LIN_L2NORM_EPS);
        float pq = 0.0f, pk = 0.0f;
        for (int kk = lane; kk < K; kk += 32) {
            pq = fmaf(qr[kk], oq[kk], pq);
            pk = fmaf(ki[kk], ok[kk], pk);
        }
        pq = seqk__warp_sum(pq) * inv.x;
        pk = seqk__warp_sum(pk);
        for (int kk = lane; kk < K; kk += 32) {
            oq[kk] = a.scale * (oq[kk] - qr[kk] * inv.x * pq) * inv.x;
            ok[kk] = (ok[kk] - ki[kk] * pk) * inv.y;
        }
    }
}

/* Warp per (chunk, head), gated: dg (holding gt) <- its reverse inclusive
 * sum inside the chunk (gpu/chunks.cuh). */
static __global__ void __launch_bounds__(DNB_THREADS) dnb_gate_rev_kernel(dnb_args b, int64_t nwork)
{
    int64_t c, r0;
    int h, Lc;
    if (!seqk__chunk_head_warp(b.a.map, b.a.H, DNB_WARPS, nwork, &c, &h, &r0, &Lc)) return;
    seqk__chunk_gate_rev(b.dg, r0, Lc, b.a.H, h);
}

/* Then, warp per (chunk, head): Dterm = exp(G_L) <S0, dS> and dg += Dterm +
 * the exclusive forward sum of bt (a second launch: a lane reads what
 * others wrote in the first). */
static __global__ void __launch_bounds__(DNB_THREADS) dnb_gate_fwd_kernel(dnb_args b, int64_t nwork)
{
    const dn_args &a = b.a;
    const int lane = threadIdx.x & 31;
    int64_t c, r0;
    int h, Lc;
    if (!seqk__chunk_head_warp(a.map, a.H, DNB_WARPS, nwork, &c, &h, &r0, &Lc)) return;
    const int64_t ch = c * a.H + h, KV = (int64_t)a.K * a.V;
    const float *S0 = a.Sc + ch * KV, *dS = b.dSc + ch * KV;
    float s = 0.0f;
    for (int64_t e = lane; e < KV; e += 32) s = fmaf(S0[e], dS[e], s);
    s = seqk__warp_sum(s);
    const float Dterm = expf((float)a.Gc[(r0 + Lc - 1) * a.H + h]) * s;
    seqk__chunk_gate_fwd(b.dg, b.btb, Dterm, r0, Lc, a.H, h);
}

/* ---- host ---------------------------------------------------------------------------------- */

typedef struct dnb_plan {
    int64_t nchunks;
    size_t off_first, off_gc, off_qn, off_kn, off_a, off_p, off_dp, off_m, off_da, off_vn,
        off_x, off_w, off_y, off_s, off_ds, off_bt, bytes;
} dnb_plan;

static size_t dnb_align(size_t n) { return seqk__align_up(n, DN_WS_ALIGN); }

static dnb_plan dnb_make_plan(const seqk__lin *P)
{
    dnb_plan pl;
    memset(&pl, 0, sizeof pl);
    const size_t f = sizeof(float), rows = (size_t)(P->B * P->T), H = (size_t)P->H;
    const size_t L = (size_t)P->chunk, K = (size_t)P->K, V = (size_t)P->V;
    pl.nchunks = seqk__count_chunks(P->cu, P->N, P->B, P->T, P->chunk);
    const size_t nch = (size_t)pl.nchunks * H;
    size_t o = 0;
#define DNB_REGION(name, bytes) (pl.name = o, o += dnb_align(bytes))
    DNB_REGION(off_first, (size_t)(P->N + 1) * sizeof(int32_t));
    DNB_REGION(off_gc, rows * H * sizeof(double));
    DNB_REGION(off_qn, rows * H * K * f);
    DNB_REGION(off_kn, rows * H * K * f);
    DNB_REGION(off_a, nch * L * L * f);
    DNB_REGION(off_p, nch * L * L * f);
    DNB_REGION(off_dp, nch * L * L * f);
    DNB_REGION(off_m, nch * L * L * f);
    DNB_REGION(off_da, nch * L * L * f);
    DNB_REGION(off_vn, nch * L * V * f);
    DNB_REGION(off_x, nch * L * V * f);
    DNB_REGION(off_w, nch * L * K * f);
    DNB_REGION(off_y, nch * L * K * f);
    DNB_REGION(off_s, nch * K * V * f);
    DNB_REGION(off_ds, nch * K * V * f);
    DNB_REGION(off_bt, rows * H * f);
#undef DNB_REGION
    pl.bytes = o;
    return pl;
}

extern "C" size_t seqk__cuda_deltanet_backward_workspace(const seqk__lin *P)
{
    return dnb_make_plan(P).bytes;
}

extern "C" seqk_status seqk__cuda_deltanet_backward(seqk_context *ctx, const seqk__lin *P,
                                                    const float *beta, const float *dout,
                                                    const float *dstate_out, float *dq,
                                                    float *dk, float *dv, float *dbeta,
                                                    float *dg, float *dstate_in,
                                                    const int32_t *cu_device)
{
    static const char fn[] = "seqk_deltanet_backward (CUDA)";
    SEQK_CUDA_TRY(fn, cudaSetDevice(ctx->device));
    const cudaStream_t stream = seqk__stream(ctx);
    dnb_args b;
    memset(&b, 0, sizeof b);
    b.a = dn_args_of(P, beta, cu_device);
    b.a.o = NULL, b.a.s_out = NULL; /* the rerun of the forward writes no outputs */
    b.dout = dout, b.ds_out = dstate_out;
    b.dq = dq, b.dk = dk, b.dv = dv, b.dbeta = dbeta;
    b.dg = P->g ? dg : NULL, b.ds_in = dstate_in;
    const int nvb = (int)((P->V + DN_COLS - 1) / DN_COLS);
    const int64_t blocks = P->N * P->H * nvb;
    if (blocks > INT_MAX)
        return seqk__fail(SEQK_ERROR_UNSUPPORTED, "%s: N*H*ceil(V/32)=%lld blocks, at most %d", fn,
                          (long long)blocks, INT_MAX);

    const dnb_plan pl = dnb_make_plan(P);
    char *ws = NULL;
    {
        /* (this form, st then &base, is the one tools/cuda_emu poisons) */
        void *base = NULL;
        const seqk_status st = seqk__workspace(fn, ctx, pl.bytes, &base);
        if (st) return st;
        ws = (char *)base;
    }
    dn_args &a = b.a;
    a.Gc = (double *)(ws + pl.off_gc);
    a.Qn = (float *)(ws + pl.off_qn), a.Kn = (float *)(ws + pl.off_kn);
    a.A = (float *)(ws + pl.off_a), a.P = (float *)(ws + pl.off_p);
    /* U into Vn's region, Vn = U - W S0 in place by stage 4 (a.Vn NULL:
     * the forward's in-place mode); after it a.Vn names the region and
     * nothing reads U (dA = -X Vn^T, see the top comment) */
    a.U = (float *)(ws + pl.off_vn), a.W = (float *)(ws + pl.off_w);
    a.Vn = NULL, a.Sc = (float *)(ws + pl.off_s);
    b.dSc = (float *)(ws + pl.off_ds);
    b.X = (float *)(ws + pl.off_x), b.Y = (float *)(ws + pl.off_y);
    b.dP = (float *)(ws + pl.off_dp), b.M = (float *)(ws + pl.off_m);
    b.DA = (float *)(ws + pl.off_da);
    b.btb = (float *)(ws + pl.off_bt);
    const int64_t nch = pl.nchunks * P->H;
    seqk_status st = dn_launch_prep(fn, &a, (int32_t *)(ws + pl.off_first), P->B * P->T, nch,
                                    stream);
    if (st) return st;
    if (nch > 0 && (st = dn_launch_state(fn, a, blocks, nvb, stream))) return st;
    a.Vn = a.U, a.U = NULL;
    /* the reverse pass (with no chunks: dstate_in = dstate_out) */
    const size_t smem = dn_state_smem(a.K, a.map.L);
    if ((st = seqk__smem_optin(fn, dnb_dstate_kernel, smem))) return st;
    dnb_dstate_kernel<<<(unsigned)blocks, DNB_THREADS, smem, stream>>>(b, nvb);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    if (nch == 0) return SEQK_SUCCESS;
    dnb_backsolve_kernel<<<(unsigned)nch, DNB_THREADS, 0, stream>>>(b);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    dnb_y_kernel<<<(unsigned)nch, DNB_THREADS, 0, stream>>>(b);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    dnb_pairs_kernel<<<(unsigned)nch, DNB_THREADS, 0, stream>>>(b);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    dnb_rows_kernel<<<(unsigned)nch, DNB_THREADS, 0, stream>>>(b);
    SEQK_CUDA_CHECK_LAUNCH(fn);
    if (b.dg) {
        const unsigned gw = seqk__ceil_div(nch, DNB_WARPS);
        dnb_gate_rev_kernel<<<gw, DNB_THREADS, 0, stream>>>(b, nch);
        SEQK_CUDA_CHECK_LAUNCH(fn);
        dnb_gate_fwd_kernel<<<gw, DNB_THREADS, 0, stream>>>(b, nch);
        SEQK_CUDA_CHECK_LAUNCH(fn);
    }
    return SEQK_SUCCESS;
}
