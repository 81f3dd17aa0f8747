"""float64 numpy references for the tests: plain token loops, written from the
math in include/seqk.h, independent of the library's algorithms."""

import numpy as np


def rel_err(x, ref):
    """max |x - ref| / max |ref| (0 when both are empty)."""
    x = np.asarray(x, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert x.shape == ref.shape, (x.shape, ref.shape)
    if ref.size == 0:
        return 0.0
    den = max(np.abs(ref).max(), 1e-30)
    return float(np.abs(x - ref).max() / den)


def f32(rng, *shape, lo=None, hi=None):
    if lo is None:
        return rng.standard_normal(shape).astype(np.float32)
    return rng.uniform(lo, hi, size=shape).astype(np.float32)


def seq_bounds(B, T, cu):
    """[(batch index, start, end)] of every sequence."""
    if cu is None:
        return [(b, 0, T) for b in range(B)]
    return [(0, int(cu[n]), int(cu[n + 1])) for n in range(len(cu) - 1)]


def scan_ref(a, b, h0=None, block=1, reverse=False, cu=None):
    a = np.repeat(np.asarray(a, np.float64), block, axis=-1)
    b = np.asarray(b, np.float64)
    B, T, C = b.shape
    seqs = seq_bounds(B, T, cu)
    h = np.zeros_like(b)
    fin = np.zeros((len(seqs), C))
    for n, (bi, s, e) in enumerate(seqs):
        state = np.zeros(C) if h0 is None else np.asarray(h0[n], np.float64).copy()
        steps = range(e - 1, s - 1, -1) if reverse else range(s, e)
        for t in steps:
            state = a[bi, t] * state + b[bi, t]
            h[bi, t] = state
        fin[n] = state
    return h, fin


def _phi(x, elu1):
    return np.where(x > 0, x + 1.0, np.exp(np.minimum(x, 0.0))) if elu1 else x


def linear_state_ref(q, k, v, decay, scale, s0=None, cu=None, normalize=False, elu1=False, z0=None):
    """decay: [B, T, H] multiplicative decay a_t (ones for linear attention).
    Returns (o, final_state, final_z)."""
    q = _phi(np.asarray(q, np.float64), elu1)
    k = _phi(np.asarray(k, np.float64), elu1)
    v = np.asarray(v, np.float64)
    decay = np.asarray(decay, np.float64)
    B, T, H, K = q.shape
    V = v.shape[-1]
    seqs = seq_bounds(B, T, cu)
    o = np.zeros((B, T, H, V))
    S_fin = np.zeros((len(seqs), H, K, V))
    z_fin = np.zeros((len(seqs), H, K))
    for n, (bi, s, e) in enumerate(seqs):
        S = np.zeros((H, K, V)) if s0 is None else np.asarray(s0[n], np.float64).copy()
        z = np.zeros((H, K)) if z0 is None else np.asarray(z0[n], np.float64).copy()
        for t in range(s, e):
            a = decay[bi, t][:, None, None]
            S = a * S + k[bi, t][:, :, None] * v[bi, t][:, None, :]
            z = decay[bi, t][:, None] * z + k[bi, t]
            qs = scale * q[bi, t]
            out = np.einsum("hk,hkv->hv", qs, S)
            if normalize:
                out = out / (np.einsum("hk,hk->h", qs, z) + 1e-6)[:, None]
            o[bi, t] = out
        S_fin[n] = S
        z_fin[n] = z
    return o, S_fin, z_fin


def mamba2_ref(x, dt, A, Bm, Cm, D=None, dt_bias=None, softplus=False, s0=None, cu=None):
    x = np.asarray(x, np.float64)
    d = np.asarray(dt, np.float64)
    if dt_bias is not None:
        d = d + np.asarray(dt_bias, np.float64)
    if softplus:
        d = np.log1p(np.exp(d))
    Bt, T, H, P = x.shape
    G, Nst = Bm.shape[2], Bm.shape[3]
    grp = np.arange(H) // (H // G)
    Bh = np.asarray(Bm, np.float64)[:, :, grp]  # [Bt, T, H, Nst]
    Ch = np.asarray(Cm, np.float64)[:, :, grp]
    A = np.asarray(A, np.float64)
    seqs = seq_bounds(Bt, T, cu)
    y = np.zeros_like(x)
    fin = np.zeros((len(seqs), H, Nst, P))
    for n, (bi, s, e) in enumerate(seqs):
        S = np.zeros((H, Nst, P)) if s0 is None else np.asarray(s0[n], np.float64).copy()
        for t in range(s, e):
            dec = np.exp(d[bi, t] * A)[:, None, None]
            S = dec * S + Bh[bi, t][:, :, None] * (d[bi, t][:, None] * x[bi, t])[:, None, :]
            yt = np.einsum("hn,hnp->hp", Ch[bi, t], S)
            if D is not None:
                yt = yt + np.asarray(D, np.float64)[:, None] * x[bi, t]
            y[bi, t] = yt
        fin[n] = S
    return y, fin


def attention_ref(q, k, v, scale, causal=False, cu=None):
    """Returns (o [B,T,Hq,V], lse [B,Hq,T])."""
    q = np.asarray(q, np.float64)
    k = np.asarray(k, np.float64)
    v = np.asarray(v, np.float64)
    B, T, Hq, K = q.shape
    Hkv, V = k.shape[2], v.shape[3]
    rep = Hq // Hkv
    o = np.zeros((B, T, Hq, V))
    lse = np.zeros((B, Hq, T))
    for bi, s, e in seq_bounds(B, T, cu):
        if e == s:
            continue
        for h in range(Hq):
            g = h // rep
            sc = scale * q[bi, s:e, h] @ k[bi, s:e, g].T  # [L, L]
            if causal:
                sc = np.where(np.tril(np.ones_like(sc, dtype=bool)), sc, -np.inf)
            m = sc.max(axis=1, keepdims=True)
            w = np.exp(sc - m)
            l = w.sum(axis=1, keepdims=True)
            o[bi, s:e, h] = (w / l) @ v[bi, s:e, g]
            lse[bi, h, s:e] = (m + np.log(l))[:, 0]
    return o, lse


def selective_scan_ref(u, dt, A, Bm, Cm, D=None, z=None, dt_bias=None, softplus=False, s0=None, cu=None):
    """Mamba1 selective scan. Returns (y [B,T,Dc], final_state [N,Dc,Nst])."""
    u = np.asarray(u, np.float64)
    d = np.asarray(dt, np.float64)
    if dt_bias is not None:
        d = d + np.asarray(dt_bias, np.float64)
    if softplus:
        d = np.log1p(np.exp(d))
    Bt, T, Dc = u.shape
    G, Nst = Bm.shape[2], Bm.shape[3]
    grp = np.arange(Dc) // (Dc // G)
    Bd = np.asarray(Bm, np.float64)[:, :, grp]  # [Bt, T, Dc, Nst]
    Cd = np.asarray(Cm, np.float64)[:, :, grp]
    A = np.asarray(A, np.float64)
    seqs = seq_bounds(Bt, T, cu)
    y = np.zeros_like(u)
    fin = np.zeros((len(seqs), Dc, Nst))
    for n, (bi, s, e) in enumerate(seqs):
        h = np.zeros((Dc, Nst)) if s0 is None else np.asarray(s0[n], np.float64).copy()
        for t in range(s, e):
            h = np.exp(d[bi, t][:, None] * A) * h + (d[bi, t] * u[bi, t])[:, None] * Bd[bi, t]
            yt = (Cd[bi, t] * h).sum(axis=1)
            if D is not None:
                yt = yt + np.asarray(D, np.float64) * u[bi, t]
            if z is not None:
                zt = np.asarray(z[bi, t], np.float64)
                yt = yt * zt / (1.0 + np.exp(-zt))
            y[bi, t] = yt
        fin[n] = h
    return y, fin


def deltanet_ref(q, k, v, beta, g=None, scale=1.0, s0=None, cu=None, l2norm=False):
    """DeltaNet / gated DeltaNet, the token loop:
    S' = exp(g_t) S;  S = S' + beta_t k_t (v_t - S'^T k_t)^T;  o_t = S^T (scale q_t),
    with q, k -> x / sqrt(sum x^2 + 1e-6) first when l2norm. Returns (o, final_state)."""
    q = np.asarray(q, np.float64)
    k = np.asarray(k, np.float64)
    v = np.asarray(v, np.float64)
    beta = np.asarray(beta, np.float64)
    if l2norm:
        q = q / np.sqrt((q * q).sum(-1, keepdims=True) + 1e-6)
        k = k / np.sqrt((k * k).sum(-1, keepdims=True) + 1e-6)
    B, T, H, K = q.shape
    V = v.shape[-1]
    decay = np.ones((B, T, H)) if g is None else np.exp(np.asarray(g, np.float64))
    seqs = seq_bounds(B, T, cu)
    o = np.zeros((B, T, H, V))
    fin = np.zeros((len(seqs), H, K, V))
    for n, (bi, s, e) in enumerate(seqs):
        S = np.zeros((H, K, V)) if s0 is None else np.asarray(s0[n], np.float64).copy()
        for t in range(s, e):
            S = decay[bi, t][:, None, None] * S
            u = np.einsum("hk,hkv->hv", k[bi, t], S)
            S = S + beta[bi, t][:, None, None] * k[bi, t][:, :, None] * (v[bi, t] - u)[:, None, :]
            o[bi, t] = np.einsum("hk,hkv->hv", scale * q[bi, t], S)
        fin[n] = S
    return o, fin


def titans_ref(q, k, v, eta, theta, alpha, b, scale=1.0, s0=None, cu=None, l2norm=False):
    """The Titans linear memory, the token loop, with the state block
    [M | S | Mhat | pos | 7 reserved] (E = 3KV + 8) per (sequence, head):
    Mhat = M where pos = 0;  S = eta S - theta k (Mhat^T k - v)^T;
    M = (1 - alpha) M + S;  o = M^T (scale q);  pos = (pos + 1) mod b.
    Returns (o, final_state) with the final state in that layout."""
    q = np.asarray(q, np.float64)
    k = np.asarray(k, np.float64)
    v = np.asarray(v, np.float64)
    if l2norm:
        q = q / np.sqrt((q * q).sum(-1, keepdims=True) + 1e-6)
        k = k / np.sqrt((k * k).sum(-1, keepdims=True) + 1e-6)
    eta = np.asarray(eta, np.float64)
    theta = np.asarray(theta, np.float64)
    a = 1.0 - np.asarray(alpha, np.float64)
    B, T, H, K = q.shape
    V = v.shape[-1]
    KV = K * V
    seqs = seq_bounds(B, T, cu)
    o = np.zeros((B, T, H, V))
    fin = np.zeros((len(seqs), H, 3 * KV + 8))
    for n, (bi, s, e) in enumerate(seqs):
        for h in range(H):
            if s0 is None:
                M, S, Mh, pos = np.zeros((K, V)), np.zeros((K, V)), np.zeros((K, V)), 0
            else:
                blk = np.asarray(s0[n, h], np.float64)
                M, S = blk[:KV].reshape(K, V).copy(), blk[KV:2 * KV].reshape(K, V).copy()
                pos = int(blk[3 * KV])
                Mh = blk[2 * KV:3 * KV].reshape(K, V).copy() if pos else M.copy()
            for t in range(s, e):
                if pos == 0:
                    Mh = M.copy()
                err = Mh.T @ k[bi, t, h] - v[bi, t, h]
                S = eta[bi, t, h] * S - theta[bi, t, h] * np.outer(k[bi, t, h], err)
                M = a[bi, t, h] * M + S
                o[bi, t, h] = M.T @ (scale * q[bi, t, h])
                pos = (pos + 1) % b
            if pos == 0:
                Mh = M.copy()
            fin[n, h, :3 * KV] = np.concatenate([M.ravel(), S.ravel(), Mh.ravel()])
            fin[n, h, 3 * KV] = pos
    return o, fin
