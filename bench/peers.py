#!/usr/bin/env python3
"""bench/peers.py -- seqk beside what a CPU user runs today, in one process,
on the same inputs, with the same thread count.

Peers:
  softmax_attention torch.nn.functional.scaled_dot_product_attention (PyTorch's
                    own fused CPU kernel), causal, timed on whichever of its
                    input layouts (a transposed view, a contiguous copy) is faster
  softmax_attention_backward
                    the same SDPA, forward + backward (autograd, leaves in its
                    own [B,H,T,D] layout) against seqk's forward (with lse) +
                    seqk_attention_parallel_backward; and the backward alone
                    (SDPA's graph kept with retain_graph, seqk from the saved
                    o and lse), in the columns "bwd"
and plain PyTorch, written here from the math as CPU users write it:
  linear_attention  chunked form (chunk states by a cumulative sum over chunks)
  gated_retention   chunked form with a segment-sum decay mask (the SSD
                    "minimal" form), chunk states by a loop over chunks
  selective_scan    the token loop of the selective_scan_ref form (Mamba1)
  selective_scan_backward
                    that selective_scan_ref as mamba_ssm writes it (dt_bias,
                    softplus, D skip, z gate, the final state; its per-step
                    slices by unbind: see torch_selective_scan_ref), forward +
                    backward by PyTorch autograd (dy and d(final state) given,
                    all eight inputs leaves) against seqk's forward (the faster
                    of its two modes) + seqk_selective_scan_backward; and the
                    backward alone (the graph kept), in the columns "bwd".
                    Issue #16's target: peer/seqk >= 20 (forward + backward)
  deltanet          the chunked WY form of gated DeltaNet (the chunk's
                    triangular system by torch.linalg.solve_triangular, loop
                    over chunks)
  <op>_fwdbwd       a training step of one layer: forward + backward through
                    seqk.torch (the autograd Functions; leaves with
                    requires_grad, loss (o * do).sum() with a fixed random do)
                    against PyTorch autograd through the plain forms here:
                    softmax_attention (SDPA), linear_attention,
                    retention (the gated form at g = log gamma),
                    gated_retention, mamba2 (torch_mamba2: the SSD form on
                    torch_gated_retention), deltanet and gated_deltanet
                    (torch_deltanet, the L2 norm of q, k in PyTorch),
                    titans (torch_titans, mini-batch b = 64), selective_scan
                    (torch_selective_scan_ref, D = H K channels, N = 16);
                    B=2 T=4096 H=8 K=V=64 (--quick: B=1 T=256 H=2 K=V=16);
                    rel err: the worst input gradient's (norm-wise)
Each case: both sides get the same data in their own layout (seqk token-major
[B,T,H,D]; the peers [B,H,T,D]), the outputs are compared (relative error
printed, so the two compute the same function), then calls are interleaved
(seqk, peer, seqk, peer, ...) and each figure is the median of --repeats.
The ratio is peer time / seqk time (> 1: seqk faster).

  SEQK_LIBRARY=build/libseqk.so python bench/peers.py --threads 2 [--quick]

Needs numpy and torch; seqk is imported from python-bindings/ of this tree.
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python-bindings"))
import seqk  # noqa: E402
from seqk import torch as ST  # noqa: E402  (the autograd Functions)
from seqk._arrays import empty_aligned  # noqa: E402  (outputs as seqk allocates them)


# ---- peers: plain PyTorch ----------------------------------------------------------------------

# CHUNK_SLICES: the loops over chunks (mini-batches, tokens) take their per-step slices by unbind,
# not by indexing (U[:, :, c]): under autograd each indexed slice's backward materialises a zero
# gradient of the whole tensor, which makes the backward quadratic in the number of chunks (the
# deltanet_fwdbwd row's peer at T = 4096: 28.5 s a call with indexing, 0.7-3.8 s with unbind, on the
# loaded 2-core machine), and any seqk backward look fast against it.

def torch_linear_attention(q, k, v, C=64):
    """o_t = sum_{s<=t} (q_t.k_s) v_s, chunked. q, k [B,H,T,K], v [B,H,T,V]; T % C == 0."""
    B, H, T, K = q.shape
    n = T // C
    q, k, v = (x.reshape(B, H, n, C, x.shape[-1]) for x in (q, k, v))
    kv = k.transpose(-1, -2) @ v                      # [B,H,n,K,V] chunk-local states
    s0 = kv.cumsum(2) - kv                            # state before each chunk
    mask = torch.ones(C, C, dtype=torch.bool).tril()
    o = q @ s0 + ((q @ k.transpose(-1, -2)).masked_fill(~mask, 0.0)) @ v
    return o.reshape(B, H, T, -1)


def torch_gated_retention(q, k, v, g, C=64):
    """S_t = exp(g_t) S_{t-1} + k_t v_t^T, o_t = S_t^T q_t, chunked; g [B,H,T]."""
    B, H, T, K = q.shape
    n = T // C
    q, k, v = (x.reshape(B, H, n, C, x.shape[-1]) for x in (q, k, v))
    G = g.reshape(B, H, n, C).cumsum(-1)
    mask = torch.ones(C, C, dtype=torch.bool).tril()
    decay = torch.exp((G[..., :, None] - G[..., None, :]).masked_fill(~mask, float("-inf")))
    o = ((q @ k.transpose(-1, -2)) * decay) @ v
    last = G[..., -1]                                 # [B,H,n]
    U = (k * torch.exp(last[..., None] - G)[..., None]).transpose(-1, -2) @ v
    S = torch.zeros(B, H, K, v.shape[-1])
    before = []
    for a, u in zip(torch.exp(last).unbind(2), U.unbind(2)):   # chunk slices by unbind: see CHUNK_SLICES
        before.append(S)
        S = a[..., None, None] * S + u
    o = o + (q * torch.exp(G)[..., None]) @ torch.stack(before, 2)
    return o.reshape(B, H, T, -1)


def torch_selective_scan_ref(u, delta, A, Bm, Cm, D, z=None, delta_bias=None, delta_softplus=False,
                             return_last_state=False):
    """mamba_ssm's selective_scan_ref (ops/selective_scan_interface.py), float32,
    B and C varying per token with one group: u, delta, z [B,D,L], A [D,N],
    Bm, Cm [B,N,L], D, delta_bias [D]; the loop over L as it writes it, but
    for one thing: the per-step slices come from unbind, not from indexing
    (dA[:, :, i]). The arithmetic is the same; the indexed form makes autograd
    quadratic in L (each step's select_backward materialises a zero gradient
    of the whole [B,D,L,N] tensor: 11 s at L=256, D=256 and 26-38 s at L=1024
    on 2 threads here, against 0.2-1 s and 0.6-0.7 s with unbind; hours at
    the backward suite's L=4096, D=1536), which would make any backward look
    fast against it. The forward row times the same function."""
    if delta_bias is not None:
        delta = delta + delta_bias[..., None]
    if delta_softplus:
        delta = torch.nn.functional.softplus(delta)
    dA = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    dBu = torch.einsum("bdl,bnl,bdl->bdln", delta, Bm, u)
    x = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for a, b, c in zip(dA.unbind(2), dBu.unbind(2), Cm.unbind(2)):
        x = a * x + b
        ys.append(torch.einsum("bdn,bn->bd", x, c))
    out = torch.stack(ys, dim=2) + u * D[None, :, None]
    if z is not None:
        out = out * torch.nn.functional.silu(z)
    return (out, x) if return_last_state else out


def torch_deltanet(q, k, v, beta, g=None, C=64):
    """DeltaNet (g None) / gated DeltaNet, the chunked WY form; beta, g [B,H,T].
    Within a chunk the delta rule's u = (I + L)^-1 diag(beta) (v - ...) with
    L_ij = beta_i (k_i.k_j) gamma_ij (j < i) comes from one batched
    triangular solve (differentiable, so autograd runs through it); the
    chunk states by a loop over chunks."""
    B, H, T, K = q.shape
    V = v.shape[-1]
    n = T // C
    q, k, v = (x.reshape(B, H, n, C, x.shape[-1]) for x in (q, k, v))
    beta = beta.reshape(B, H, n, C)
    incl = torch.ones(C, C, dtype=torch.bool).tril()
    eye = torch.eye(C)
    if g is None:
        G = q.new_zeros(B, H, n, C)
        gamma = incl.to(q.dtype)
    else:
        G = g.reshape(B, H, n, C).cumsum(-1)
        gamma = torch.exp((G[..., :, None] - G[..., None, :]).masked_fill(~incl, float("-inf")))
    L = (beta[..., None] * (k @ k.transpose(-1, -2)) * gamma).tril(-1)
    Tm = torch.linalg.solve_triangular(L + eye, eye.expand_as(L), upper=False, unitriangular=True)
    U = Tm @ (beta[..., None] * v)
    W = Tm @ (beta[..., None] * torch.exp(G)[..., None] * k)
    qk = (q @ k.transpose(-1, -2)) * gamma
    qg = q * torch.exp(G)[..., None]
    kd = k * torch.exp(G[..., -1:] - G)[..., None]
    S = q.new_zeros(B, H, K, V)
    out = []
    for u, w, qgc, qkc, kdc, a in zip(*(x.unbind(2) for x in (U, W, qg, qk, kd, torch.exp(G[..., -1])))):
        vnew = u - w @ S                              # (chunk slices by unbind: see CHUNK_SLICES)
        out.append(qgc @ S + qkc @ vnew)
        S = a[..., None, None] * S + kdc.transpose(-1, -2) @ vnew
    return torch.stack(out, 2).reshape(B, H, T, V)


def torch_mamba2(x, dt, A, Bm, Cm, D, dt_bias, C=64):
    """Mamba2 (SSD) as seqk_mamba2 defines it (include/seqk.h): d = softplus(dt +
    dt_bias), gated retention with q = C, k = B, v = d x, g = d A, scale 1,
    plus D x. x [B,H,T,P], dt [B,H,T], A, D, dt_bias [H], Bm, Cm [B,G,T,N]
    (head h reads group h / (H/G)); the chunked form of torch_gated_retention."""
    H = x.shape[1]
    grp = torch.arange(H) // (H // Bm.shape[1])
    d = torch.nn.functional.softplus(dt + dt_bias[:, None])
    y = torch_gated_retention(Cm[:, grp], Bm[:, grp], d[..., None] * x, d * A[:, None], C)
    return y + D[:, None, None] * x


def l2norm(x):
    """x / sqrt(sum x^2 + 1e-6) over the last dim, as seqk's *_L2NORM_QK flags."""
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + 1e-6)


def torch_titans(q, k, v, eta, theta, alpha, b, scale):
    """The Titans linear memory as seqk_titans defines it (include/seqk.h, with
    SEQK_TITANS_L2NORM_QK; zero initial state), mini-batch by mini-batch: the
    mini-batch's gradients k_s e_s^T at the memory it started with (Gerr = K
    Mhat - V, one product), then its momentum and forgetting in closed form
    (m_t, beta_t: the products of eta and 1 - alpha over the mini-batch up to
    t, by cumulative sums of logs), o_t = beta_t M0^T q_t + f_t S0^T q_t -
    sum_{s<=t} Gmix_ts theta_s (q_t.k_s) Gerr_s with Gmix = Lb Lm (Lb_tr =
    beta_t/beta_r, Lm_rs = m_r/m_s, r >= s) and f = Lb m, and the state
    after it by two more products; a loop over mini-batches. q, k [B,H,T,K],
    v [B,H,T,V], gates [B,H,T] (eta > 0, alpha < 1: the logs); T % b == 0."""
    B, H, T, K = q.shape
    V = v.shape[-1]
    n = T // b
    q, k = l2norm(q) * scale, l2norm(k)
    q, k, v = (x.reshape(B, H, n, b, x.shape[-1]) for x in (q, k, v))
    theta = theta.reshape(B, H, n, b)
    lm = torch.log(eta).reshape(B, H, n, b).cumsum(-1)
    lb = torch.log1p(-alpha).reshape(B, H, n, b).cumsum(-1)
    incl = torch.ones(b, b, dtype=torch.bool).tril()
    ratio = lambda x: torch.exp((x[..., :, None] - x[..., None, :]).masked_fill(~incl, float("-inf")))  # noqa: E731
    Lb, Lm = ratio(lb), ratio(lm)
    Gmix = Lb @ Lm                                    # [B,H,n,b,b], lower triangular
    f = (Lb @ torch.exp(lm)[..., None])[..., 0]       # [B,H,n,b]
    Ain = (q @ k.transpose(-1, -2)) * Gmix * theta[..., None, :]
    wM = (Gmix[..., -1, :] * theta)[..., None]        # the end-of-mini-batch weights of Gerr
    wS = (torch.exp(lm[..., -1:] - lm) * theta)[..., None]
    beta = torch.exp(lb)
    ends = (x[..., -1, None, None] for x in (beta, f, torch.exp(lm)))   # [B,H,n,1,1] each
    M = q.new_zeros(B, H, K, V)
    S = q.new_zeros(B, H, K, V)
    out = []
    for qc, kc, vc, bc, fc, Ac, wMc, wSc, be, fe, me in zip(
            *(x.unbind(2) for x in (q, k, v, beta[..., None], f[..., None], Ain, wM, wS, *ends))):
        E = kc @ M - vc                               # Gerr, at Mhat = M (slices by unbind: see CHUNK_SLICES)
        out.append(bc * (qc @ M) + fc * (qc @ S) - Ac @ E)
        kT = kc.transpose(-1, -2)
        M, S = be * M + fe * S - kT @ (wMc * E), me * S - kT @ (wSc * E)
    return torch.stack(out, 2).reshape(B, H, T, V)


# ---- timing -------------------------------------------------------------------------------------

SETTLE_S = 0.02  # between calls: the other OpenMP runtime's spinning threads go to sleep


def timed(f):
    time.sleep(SETTLE_S)
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def interleaved(fns, repeats):
    """Median seconds of each fn, calls interleaved so noise hits all of them."""
    for f in fns:
        f()                                           # warm-up
    times = [[] for _ in fns]
    for _ in range(repeats):
        for i, f in enumerate(fns):
            times[i].append(timed(f))
    return [statistics.median(t) for t in times]


def rel_err(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def bhtd(x):
    """[B,T,H,D] numpy -> [B,H,T,D] contiguous torch tensor."""
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 2, 1, 3)))


# ---- cases --------------------------------------------------------------------------------------

def case_softmax(ctx, rng, B, T, H, D):
    q, k, v = (rng.standard_normal((B, T, H, D), dtype=np.float32) for _ in range(3))
    scale = 1.0 / D ** 0.5
    tq, tk, tv = (torch.from_numpy(x).transpose(1, 2) for x in (q, k, v))   # views, [B,H,T,D]
    cq, ck, cv = (x.contiguous() for x in (tq, tk, tv))
    out = np.empty_like(q)
    ours = lambda: seqk.attention_parallel(q, k, v, causal=True, scale=scale, out=out, ctx=ctx)

    def sdpa(a, b, c):
        with torch.no_grad():
            return torch.nn.functional.scaled_dot_product_attention(a, b, c, is_causal=True,
                                                                    scale=scale)
    views, contig = (lambda: sdpa(tq, tk, tv)), (lambda: sdpa(cq, ck, cv))
    peer = min((timed(views), 0, views), (timed(contig), 1, contig))[2]
    return ours, peer, lambda o, p: rel_err(o, p.numpy().transpose(0, 2, 1, 3)), None


def case_softmax_backward(ctx, rng, B, T, H, D):
    q, k, v, dout = (rng.standard_normal((B, T, H, D), dtype=np.float32) for _ in range(4))
    scale = 1.0 / D ** 0.5
    o, lse = np.empty_like(q), np.empty((B, H, T), np.float32)
    grads = tuple(np.empty_like(x) for x in (q, k, v))

    def ours_bwd():
        return seqk.attention_parallel_backward(q, k, v, o, lse, dout, causal=True, scale=scale,
                                                dq_out=grads[0], dk_out=grads[1], dv_out=grads[2],
                                                ctx=ctx)

    def ours():
        seqk.attention_parallel(q, k, v, causal=True, scale=scale, out=o, lse_out=lse, ctx=ctx)
        return ours_bwd()

    tq, tk, tv = (bhtd(x).requires_grad_() for x in (q, k, v))
    tdo = bhtd(dout)

    def grads_of(out):
        for t in (tq, tk, tv):
            t.grad = None
        out.backward(tdo, retain_graph=True)
        return tq.grad, tk.grad, tv.grad

    def sdpa():
        return torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=True, scale=scale)

    peer = lambda: grads_of(sdpa())
    kept = sdpa()                                     # the graph the backward-alone timing reuses
    peer_bwd = lambda: grads_of(kept)

    def compare(ours_grads, peer_grads):
        a = np.concatenate([g.ravel() for g in ours_grads])
        b = np.concatenate([g.numpy().transpose(0, 2, 1, 3).ravel() for g in peer_grads])
        return rel_err(a, b)
    return ours, peer, compare, None, (ours_bwd, peer_bwd)


def case_linear(ctx, rng, B, T, H, K, scale):
    q, k, v = (rng.standard_normal((B, T, H, K), dtype=np.float32) * s for s in (scale, scale, 1.0))
    tq, tk, tv = bhtd(q), bhtd(k), bhtd(v)
    ours = lambda: seqk.linear_attention(q, k, v, mode="parallel", scale=1.0, ctx=ctx)
    rec = lambda: seqk.linear_attention(q, k, v, mode="recurrent", scale=1.0, ctx=ctx)
    peer = lambda: torch_linear_attention(tq, tk, tv)
    return ours, peer, lambda o, p: rel_err(o, p.numpy().transpose(0, 2, 1, 3)), rec


def case_gated(ctx, rng, B, T, H, K, scale):
    q, k, v = (rng.standard_normal((B, T, H, K), dtype=np.float32) * s for s in (scale, scale, 1.0))
    g = rng.uniform(-0.1, 0.0, (B, T, H)).astype(np.float32)
    tq, tk, tv = bhtd(q), bhtd(k), bhtd(v)
    tg = torch.from_numpy(np.ascontiguousarray(g.transpose(0, 2, 1)))
    ours = lambda: seqk.gated_retention(q, k, v, g, mode="parallel", scale=1.0, ctx=ctx)
    rec = lambda: seqk.gated_retention(q, k, v, g, mode="recurrent", scale=1.0, ctx=ctx)
    peer = lambda: torch_gated_retention(tq, tk, tv, tg)
    return ours, peer, lambda o, p: rel_err(o, p.numpy().transpose(0, 2, 1, 3)), rec


def case_deltanet(ctx, rng, B, T, H, K, scale):
    q = rng.standard_normal((B, T, H, K), dtype=np.float32)
    k = rng.standard_normal((B, T, H, K), dtype=np.float32)
    k /= np.linalg.norm(k, axis=-1, keepdims=True)
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    v = rng.standard_normal((B, T, H, K), dtype=np.float32)
    beta = rng.uniform(0, 1, (B, T, H)).astype(np.float32)
    g = rng.uniform(-0.1, 0.0, (B, T, H)).astype(np.float32)
    tq, tk, tv = bhtd(q), bhtd(k), bhtd(v)
    tb, tg = (torch.from_numpy(np.ascontiguousarray(x.transpose(0, 2, 1))) for x in (beta, g))
    ours = lambda: seqk.deltanet(q, k, v, beta, g, mode="parallel", scale=1.0, ctx=ctx)
    rec = lambda: seqk.deltanet(q, k, v, beta, g, mode="recurrent", scale=1.0, ctx=ctx)
    peer = lambda: torch_deltanet(tq, tk, tv, tb, tg)
    return ours, peer, lambda o, p: rel_err(o, p.numpy().transpose(0, 2, 1, 3)), rec


def case_selective(ctx, rng, B, T, D, N):
    u = rng.standard_normal((B, T, D), dtype=np.float32)
    dt = rng.uniform(0.001, 0.1, (B, T, D)).astype(np.float32)
    A = -np.exp(rng.uniform(-1, 1, (D, N))).astype(np.float32)
    Bm = rng.standard_normal((B, T, 1, N), dtype=np.float32)
    Cm = rng.standard_normal((B, T, 1, N), dtype=np.float32)
    Dk = rng.standard_normal(D, dtype=np.float32)
    tu, tdt = (torch.from_numpy(np.ascontiguousarray(x.transpose(0, 2, 1))) for x in (u, dt))
    tB, tC = (torch.from_numpy(np.ascontiguousarray(x[:, :, 0, :].transpose(0, 2, 1))) for x in (Bm, Cm))
    tA, tD = torch.from_numpy(A), torch.from_numpy(Dk)
    ours = lambda: seqk.selective_scan(u, dt, A, Bm, Cm, Dk, mode="parallel", ctx=ctx)
    rec = lambda: seqk.selective_scan(u, dt, A, Bm, Cm, Dk, mode="recurrent", ctx=ctx)
    peer = lambda: torch_selective_scan_ref(tu, tdt, tA, tB, tC, tD)
    return ours, peer, lambda o, p: rel_err(o, p.numpy().transpose(0, 2, 1)), rec


def case_selective_backward(ctx, rng, B, T, D, N):
    """The training step of the selective scan with the seqk-bench backward suite's
    inputs (bench/modules.c: softplus dt, dt_bias, D skip, z gate, one group)."""
    f32 = np.float32
    u, z, dy = (rng.uniform(-1, 1, (B, T, D)).astype(f32) for _ in range(3))
    dt = rng.uniform(-3, -1, (B, T, D)).astype(f32)
    A = rng.uniform(-4, -0.5, (D, N)).astype(f32)
    Bm, Cm = (rng.uniform(-1, 1, (B, T, 1, N)).astype(f32) for _ in range(2))
    Dk = rng.uniform(0.5, 1.5, D).astype(f32)
    bias = rng.uniform(-1, 0, D).astype(f32)
    dlast = rng.uniform(-0.1, 0.1, (B, D, N)).astype(f32)
    kw = dict(D=Dk, z=z, dt_bias=bias, dt_softplus=True)
    # outputs allocated once, outside the timing, as seqk allocates its own (64-byte
    # aligned: seqk/_arrays.py); the inputs stay numpy's, as the peer's
    out = lambda x: empty_aligned(x.shape)            # noqa: E731
    y = out(u)
    grads = dict(du_out=out(u), ddt_out=out(u), dA_out=out(A), dB_out=out(Bm), dC_out=out(Cm),
                 dD_out=out(Dk), dz_out=out(z), ddt_bias_out=out(bias))

    def ours_bwd():
        return seqk.selective_scan_backward(u, dt, A, Bm, Cm, dy, dfinal_state=dlast,
                                            return_ddt_bias=True, ctx=ctx, **kw, **grads)

    def forward(mode):
        return lambda: seqk.selective_scan(u, dt, A, Bm, Cm, Dk, z, dt_bias=bias, dt_softplus=True,
                                           mode=mode, out=y, ctx=ctx)
    modes = ("parallel", "recurrent")
    for m in modes:
        forward(m)()                                  # warm-up
    fwd = forward(min((timed(forward(m)), m) for m in modes)[1])  # the faster mode

    def ours():
        fwd()
        return ours_bwd()

    bdl = lambda x: torch.from_numpy(np.ascontiguousarray(x.transpose(0, 2, 1)))  # [B,T,D] -> [B,D,T]
    bnl = lambda x: torch.from_numpy(np.ascontiguousarray(x[:, :, 0, :].transpose(0, 2, 1)))
    leaves = [bdl(u), bdl(dt), torch.from_numpy(A), bnl(Bm), bnl(Cm), torch.from_numpy(Dk),
              bdl(z), torch.from_numpy(bias)]
    for t in leaves:
        t.requires_grad_()
    tdy, tdlast = bdl(dy), torch.from_numpy(dlast)

    def ref():
        tu, tdt, tA, tB, tC, tD, tz, tbias = leaves
        return torch_selective_scan_ref(tu, tdt, tA, tB, tC, tD, z=tz, delta_bias=tbias,
                                        delta_softplus=True, return_last_state=True)

    def grads_of(outs):
        for t in leaves:
            t.grad = None
        torch.autograd.backward(outs, (tdy, tdlast), retain_graph=True)
        return [t.grad for t in leaves]

    peer = lambda: grads_of(ref())
    kept = ref()                                      # the graph the backward-alone timing reuses
    peer_bwd = lambda: grads_of(kept)

    def compare(ours_grads, peer_grads):
        du, ddt, dA, dB, dC, dD, dz, dbias = ours_grads
        ours_flat = [du, ddt, dA, dB[:, :, 0, :], dC[:, :, 0, :], dD, dz, dbias]
        peer_flat = [g.numpy() for g in peer_grads]
        for i in (0, 1, 3, 4, 6):                     # [B,D,T] / [B,N,T] -> token-major
            peer_flat[i] = peer_flat[i].transpose(0, 2, 1)
        # each gradient's relative error; the worst is the row's
        return max(rel_err(a, b) for a, b in zip(ours_flat, peer_flat))
    return ours, peer, compare, None, (ours_bwd, peer_bwd)


# ---- forward + backward through seqk.torch against PyTorch autograd through the peers -----------

# how a seqk-layout array becomes the peer's ([B,T,H,D] -> [B,H,T,D], [B,T,H] -> [B,H,T], [B,T,G,N]
# -> [B,G,T,N]: the same transposition), and the peer's gradient back (the same again)
HEADS = lambda x: x.swapaxes(1, 2)                    # noqa: E731
AS_IS = lambda x: x                                   # noqa: E731


def fwdbwd(rng, inputs, ours_fn, peer_fn):
    """A training step's forward + backward: inputs [(array in seqk's layout,
    layout function, requires grad)]; ours_fn / peer_fn take the tensors (the
    peer's in its layout) and return the output, seqk's [B,T,H,V] (or
    [B,T,D]), the peer's in HEADS of it. Loss (o * do).sum() with one fixed
    random do; each call zeroes the grads, runs forward + backward and
    returns the leaves' gradients. compare: the worst gradient's relative
    error (norm-wise), the peer's mapped back to seqk's layout."""
    def leaves(peer):
        return [torch.from_numpy(np.ascontiguousarray(lay(x) if peer else x)).requires_grad_(grad)
                for x, lay, grad in inputs]
    ours_in, peer_in = leaves(False), leaves(True)
    with torch.no_grad():
        shape = ours_fn(*ours_in).shape
    do = rng.standard_normal(tuple(shape), dtype=np.float32)
    do_ours, do_peer = torch.from_numpy(do), torch.from_numpy(np.ascontiguousarray(HEADS(do)))

    def step(fn, xs, do_t):
        for x in xs:
            x.grad = None
        (fn(*xs) * do_t).sum().backward()
        return [x.grad for x in xs if x.requires_grad]

    def compare(ours_grads, peer_grads):
        lays = [lay for _, lay, grad in inputs if grad]
        return max(rel_err(a.numpy(), lay(b.numpy())) for a, b, lay in zip(ours_grads, peer_grads, lays))
    return (lambda: step(ours_fn, ours_in, do_ours)), (lambda: step(peer_fn, peer_in, do_peer)), compare, None


def qkv(rng, B, T, H, K, scale=1.0):
    return [(rng.standard_normal((B, T, H, K), dtype=np.float32) * s, HEADS, True) for s in (scale, scale, 1.0)]


def gate(rng, B, T, H, lo, hi, grad=True):
    return (rng.uniform(lo, hi, (B, T, H)).astype(np.float32), HEADS, grad)


def case_softmax_fwdbwd(ctx, rng, B, T, H, K):
    scale = K ** -0.5
    return fwdbwd(rng, qkv(rng, B, T, H, K),
                  lambda q, k, v: ST.attention_parallel(q, k, v, causal=True, scale=scale, ctx=ctx),
                  lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                                                   scale=scale))


def case_linear_fwdbwd(ctx, rng, B, T, H, K):
    return fwdbwd(rng, qkv(rng, B, T, H, K, K ** -0.5),
                  lambda q, k, v: ST.linear_attention(q, k, v, scale=1.0, ctx=ctx), torch_linear_attention)


def case_retention_fwdbwd(ctx, rng, B, T, H, K):
    """RetNet's fixed decays (seqk's default gamma_h = 1 - 2^(-5-h)), no gradient
    into them; the peer: the gated chunked form at g = log gamma."""
    gamma = (1.0 - 2.0 ** (-5.0 - np.arange(H))).astype(np.float32)
    g = torch.from_numpy(np.log(gamma))[None, :, None].expand(B, H, T)
    return fwdbwd(rng, qkv(rng, B, T, H, K, K ** -0.5) + [(gamma, AS_IS, False)],
                  lambda q, k, v, gm: ST.retention(q, k, v, gm, scale=1.0, ctx=ctx),
                  lambda q, k, v, gm: torch_gated_retention(q, k, v, g))


def case_gated_fwdbwd(ctx, rng, B, T, H, K):
    return fwdbwd(rng, qkv(rng, B, T, H, K, K ** -0.5) + [gate(rng, B, T, H, -0.1, 0.0)],
                  lambda q, k, v, g: ST.gated_retention(q, k, v, g, scale=1.0, ctx=ctx), torch_gated_retention)


def case_mamba2_fwdbwd(ctx, rng, B, T, H, K):
    """x [B,T,H,P=K], Nst = K, one group, softplus dt with dt_bias, D skip (the
    seqk-bench backward suite's ranges); gradients into all seven."""
    f32 = np.float32
    inputs = [(rng.standard_normal((B, T, H, K), dtype=f32), HEADS, True),     # x
              gate(rng, B, T, H, -3.0, -1.0),                                  # raw dt
              (rng.uniform(-2.0, -0.5, H).astype(f32), AS_IS, True),           # A
              (rng.standard_normal((B, T, 1, K), dtype=f32), HEADS, True),     # B
              (rng.standard_normal((B, T, 1, K), dtype=f32), HEADS, True),     # C
              (rng.uniform(0.5, 1.5, H).astype(f32), AS_IS, True),             # D
              (rng.uniform(-1.0, 0.0, H).astype(f32), AS_IS, True)]            # dt_bias
    return fwdbwd(rng, inputs,
                  lambda x, dt, A, Bm, Cm, D, bias: ST.mamba2(x, dt, A, Bm, Cm, D, dt_bias=bias, dt_softplus=True,
                                                             ctx=ctx),
                  torch_mamba2)


def case_deltanet_fwdbwd(ctx, rng, B, T, H, K, gated=False):
    """q, k through the L2 norm (in seqk's kernel; in PyTorch for the peer), beta
    in (0, 1), with gated: g in (-0.1, 0)."""
    inputs = qkv(rng, B, T, H, K) + [gate(rng, B, T, H, 0.0, 1.0)]
    if gated:
        inputs.append(gate(rng, B, T, H, -0.1, 0.0))
    return fwdbwd(rng, inputs,
                  lambda q, k, v, beta, g=None: ST.deltanet(q, k, v, beta, g, scale=1.0, l2norm_qk=True, ctx=ctx),
                  lambda q, k, v, beta, g=None: torch_deltanet(l2norm(q), l2norm(k), v, beta, g))


def case_gated_deltanet_fwdbwd(ctx, rng, B, T, H, K):
    return case_deltanet_fwdbwd(ctx, rng, B, T, H, K, gated=True)


TITANS_B = 64  # the mini-batch of the titans rows


def case_titans_fwdbwd(ctx, rng, B, T, H, K):
    """The seqk-bench ranges (eta in (0.8, 0.95), theta in (0, 0.1), alpha in
    (0, 0.05)), the L2 norm, mini-batch TITANS_B, scale K^-1/2."""
    b, scale = min(TITANS_B, T), K ** -0.5
    inputs = qkv(rng, B, T, H, K) + [gate(rng, B, T, H, 0.8, 0.95), gate(rng, B, T, H, 0.0, 0.1),
                                     gate(rng, B, T, H, 0.0, 0.05)]
    return fwdbwd(rng, inputs,
                  lambda q, k, v, eta, theta, alpha: ST.titans(q, k, v, eta, theta, alpha, scale=scale, minibatch=b,
                                                               l2norm_qk=True, ctx=ctx),
                  lambda q, k, v, eta, theta, alpha: torch_titans(q, k, v, eta, theta, alpha, b, scale))


def case_selective_fwdbwd(ctx, rng, B, T, H, K):
    """The Mamba1 selective scan with D = H K channels, Nst = 16, one group,
    softplus dt with dt_bias, D skip, z gate (case_selective_backward's
    ranges), gradients into all eight; the peer: torch_selective_scan_ref.
    Its channels-first layout [B,D,T] is HEADS of [B,T,D]; B, C [B,T,1,N] go to
    [B,N,T] and their gradients back (bc)."""
    f32, D, N = np.float32, H * K, 16
    bc = lambda x: (x[:, :, 0, :].swapaxes(1, 2) if x.ndim == 4 else x.swapaxes(1, 2)[:, :, None, :])  # noqa: E731
    inputs = [(rng.uniform(-1, 1, (B, T, D)).astype(f32), HEADS, True),     # u
              (rng.uniform(-3, -1, (B, T, D)).astype(f32), HEADS, True),    # raw dt
              (rng.uniform(-4, -0.5, (D, N)).astype(f32), AS_IS, True),     # A
              (rng.uniform(-1, 1, (B, T, 1, N)).astype(f32), bc, True),     # B
              (rng.uniform(-1, 1, (B, T, 1, N)).astype(f32), bc, True),     # C
              (rng.uniform(0.5, 1.5, D).astype(f32), AS_IS, True),          # D
              (rng.uniform(-1, 1, (B, T, D)).astype(f32), HEADS, True),     # z
              (rng.uniform(-1, 0, D).astype(f32), AS_IS, True)]             # dt_bias
    return fwdbwd(rng, inputs,
                  lambda u, dt, A, Bm, Cm, Dk, z, bias: ST.selective_scan(u, dt, A, Bm, Cm, Dk, z, dt_bias=bias,
                                                                         dt_softplus=True, ctx=ctx),
                  lambda u, dt, A, Bm, Cm, Dk, z, bias: torch_selective_scan_ref(u, dt, A, Bm, Cm, Dk, z=z,
                                                                                 delta_bias=bias,
                                                                                 delta_softplus=True))


FWDBWD = [("softmax_attention", case_softmax_fwdbwd), ("linear_attention", case_linear_fwdbwd),
          ("retention", case_retention_fwdbwd), ("gated_retention", case_gated_fwdbwd),
          ("mamba2", case_mamba2_fwdbwd), ("deltanet", case_deltanet_fwdbwd),
          ("gated_deltanet", case_gated_deltanet_fwdbwd), ("titans", case_titans_fwdbwd),
          ("selective_scan", case_selective_fwdbwd)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="small shapes, a smoke test")
    ap.add_argument("--only", default="", help="comma-separated modules to run")
    ap.add_argument("--out", default="bench-results", help="directory for peers.jsonl")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    ctx = seqk.Context("cpu", threads=args.threads)
    rng = np.random.default_rng(0)
    T = 512 if args.quick else 4096
    softmax = [(1, 512, 8, 64)] if args.quick else [
        (B, Ts, 8, D) for B in (1, 4) for D in (64, 128) for Ts in (1024, 2048, 4096, 8192)]
    shapes = [("softmax_attention", case_softmax, s, f"B={s[0]} T={s[1]} H=8 K=V={s[3]} causal")
              for s in softmax]
    backward = [(1, 512, 8, 64)] if args.quick else [
        (1, 2048, 8, 64), (1, 4096, 8, 64), (4, 2048, 8, 64), (1, 4096, 8, 128)]
    shapes += [("softmax_attention_backward", case_softmax_backward, s,
                f"B={s[0]} T={s[1]} H=8 K=V={s[3]} causal") for s in backward]
    shapes += [  # module, case builder, its arguments, description
        ("linear_attention", case_linear, (2, T, 8, 64, 0.125), f"B=2 T={T} H=8 K=V=64"),
        ("linear_attention", case_linear, (1, T, 8, 128, 0.09), f"B=1 T={T} H=8 K=V=128"),
        ("gated_retention", case_gated, (2, T, 8, 64, 0.125), f"B=2 T={T} H=8 K=V=64"),
        ("gated_retention", case_gated, (1, T, 8, 128, 0.09), f"B=1 T={T} H=8 K=V=128"),
        ("deltanet", case_deltanet, (1, T, 8, 128, 1.0), f"B=1 T={T} H=8 K=V=128"),
        ("selective_scan", case_selective, (1, 256 if args.quick else 2048, 768, 16),
         f"B=1 T={256 if args.quick else 2048} D=768 N=16"),
    ]
    # the seqk-bench backward suite's selective scan shape (--quick: its quick one)
    sb = (1, 256, 256, 16) if args.quick else (1, 4096, 1536, 16)
    shapes += [("selective_scan_backward", case_selective_backward, sb,
                f"B={sb[0]} T={sb[1]} D={sb[2]} N={sb[3]} fwd+bwd")]
    # a training step's forward + backward of one layer through seqk.torch (issue #17)
    fb = (1, 256, 2, 16) if args.quick else (2, 4096, 8, 64)
    for name, build in FWDBWD:
        dims = f"D={fb[2] * fb[3]} N=16" if name == "selective_scan" else f"H={fb[2]} K=V={fb[3]}"
        shapes.append((name + "_fwdbwd", build, fb, f"B={fb[0]} T={fb[1]} {dims} fwd+bwd"))
    only = set(filter(None, args.only.split(",")))
    os.makedirs(args.out, exist_ok=True)
    rows = []
    with open(os.path.join(args.out, "peers.jsonl"), "w") as log:
        for module, build, shape, desc in shapes:
            if only and module not in only:
                continue
            if module == "deltanet" and not seqk.has_op("deltanet"):
                print(f"{module}: not in this library, skipped", file=sys.stderr)
                continue
            ours, peer, compare, ours_rec, *more = build(ctx, rng, *shape)
            bwd = more[0] if more else None           # (seqk, peer) backward alone
            err = compare(ours(), peer())
            fns = [ours, peer] + ([ours_rec] if ours_rec else []) + (list(bwd) if bwd else [])
            times = interleaved(fns, args.repeats)
            t_ours, t_peer = times[0], times[1]
            t_rec = times[2] if ours_rec else None
            t_bwd = times[-2:] if bwd else None
            rec = {"module": module, "shape": desc, "threads": args.threads,
                   "seqk_s": t_ours, "peer_s": t_peer, "peer_over_seqk": t_peer / t_ours,
                   "seqk_recurrent_s": t_rec,
                   "peer_over_seqk_recurrent": t_peer / t_rec if t_rec else None,
                   "seqk_backward_s": t_bwd[0] if t_bwd else None,
                   "peer_backward_s": t_bwd[1] if t_bwd else None,
                   "peer_over_seqk_backward": t_bwd[1] / t_bwd[0] if t_bwd else None,
                   "rel_err_vs_peer": err, "peer": "plain PyTorch " + torch.__version__,
                   "seqk_version": seqk.version(),
                   "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            log.write(json.dumps(rec) + "\n")
            rows.append(rec)
            bwd_note = (f"; backward alone seqk {t_bwd[0] * 1e3:.1f} ms, peer {t_bwd[1] * 1e3:.1f} ms, "
                        f"ratio {t_bwd[1] / t_bwd[0]:.2f}x" if t_bwd else "")
            print(f"[{module} {desc}] seqk {t_ours * 1e3:.1f} ms, peer {t_peer * 1e3:.1f} ms, "
                  f"ratio {t_peer / t_ours:.2f}x, rel err {err:.1e}{bwd_note}", file=sys.stderr)
    print("\nseqk: its parallel mode (the chunked form, like the peers'); seqk rec: its recurrent "
          "mode, the same function; softmax_attention_backward, selective_scan_backward: forward + "
          "backward (peer: PyTorch autograd), and in the rec columns the backward alone (bwd ms, "
          "peer bwd / seqk bwd); *_fwdbwd: forward + backward through seqk.torch against PyTorch "
          "autograd through the peer; rel err: the worst gradient's")
    print(f"\n{'module':23} {'shape':34} {'thr':>3} {'seqk ms':>9} {'peer ms':>9} {'peer/seqk':>9} "
          f"{'rec|bwd ms':>10} {'peer/rec':>9} {'rel err':>8}")
    for r in rows:
        t_rec = r['seqk_recurrent_s'] or r.get('seqk_backward_s')
        ratio = r['peer_over_seqk_recurrent'] or r.get('peer_over_seqk_backward')
        rec_cols = (f"{t_rec * 1e3:10.2f} {ratio:9.2f}" if t_rec else f"{'-':>10} {'-':>9}")
        print(f"{r['module']:23} {r['shape']:34} {r['threads']:3d} {r['seqk_s'] * 1e3:9.2f} "
              f"{r['peer_s'] * 1e3:9.2f} {r['peer_over_seqk']:9.2f} {rec_cols} "
              f"{r['rel_err_vs_peer']:8.1e}")
    print(f"\nrecords: {os.path.join(args.out, 'peers.jsonl')}")


if __name__ == "__main__":
    main()
