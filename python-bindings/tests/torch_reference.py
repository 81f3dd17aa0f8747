"""Plain-PyTorch references of seqk.torch's ops, shared by the torch tests
(test_torch_autograd.py, test_torch_titans.py, test_torch_train_step.py):
token loops written from the math in include/seqk.h, sharing no code with
the library, dtype-agnostic (the tests run them in float64, and in float32
for the train-step test), with seqk.torch's signatures (class R). Imports
torch: import it after pytest.importorskip("torch")."""
import torch

F = torch.nn.functional


def rel(x, ref):
    x, ref = x.detach().double(), ref.detach().double()
    assert x.shape == ref.shape, (x.shape, ref.shape)
    if ref.numel() == 0:
        return 0.0
    return float((x - ref).abs().max() / max(float(ref.abs().max()), 1e-30))


# --------------------------------------------------------------------------
# plain-PyTorch references (float64 in the tests), same signatures as seqk.torch
# --------------------------------------------------------------------------


def _bounds(B, T_, cu):
    if cu is None:
        return [(b, 0, T_) for b in range(B)]
    cu = [int(c) for c in cu]
    return [(0, cu[n], cu[n + 1]) for n in range(len(cu) - 1)]


def _assemble(B, pieces):
    """pieces: [(batch, tensor [L, ...])] in token order -> [B, T, ...]."""
    return torch.stack([torch.cat([p for b, p in pieces if b == bi], 0) for bi in range(B)], 0)


def _out(o, fin, output_final_state):
    return (o, fin) if output_final_state else o


def _l2n(x):
    return x / torch.sqrt((x * x).sum(-1, keepdim=True) + 1e-6)


class R:
    """The float64 references."""

    @staticmethod
    def attention_parallel(q, k, v, *, causal=False, scale=None, cu_seqlens=None):
        B, T_, Hq, K_ = q.shape
        rep = Hq // k.shape[2]
        scale = K_ ** -0.5 if scale is None else scale
        pieces = []
        for b, s, e in _bounds(B, T_, cu_seqlens):
            kk = k[b, s:e].repeat_interleave(rep, 1)
            vv = v[b, s:e].repeat_interleave(rep, 1)
            sc = scale * torch.einsum("thk,shk->hts", q[b, s:e], kk)
            if causal:
                sc = sc.masked_fill(~torch.ones(e - s, e - s, dtype=torch.bool).tril(), float("-inf"))
            pieces.append((b, torch.einsum("hts,shv->thv", torch.softmax(sc, -1), vv)))
        return _assemble(B, pieces)

    @staticmethod
    def _linear(q, k, v, decay, scale, s0, cu, normalize=False, z0=None):
        """S_t = a_t S_{t-1} + k_t v_t^T, o_t = S_t^T (scale q_t) [/ (scale q_t . z_t + 1e-6)]."""
        B, T_, H_, K_ = q.shape
        V_ = v.shape[-1]
        pieces, fins, zs = [], [], []
        for n, (b, s, e) in enumerate(_bounds(B, T_, cu)):
            S = q.new_zeros(H_, K_, V_) if s0 is None else s0[n]
            z = q.new_zeros(H_, K_) if z0 is None else z0[n]
            outs = []
            for t in range(s, e):
                S = decay[b, t][:, None, None] * S + k[b, t][:, :, None] * v[b, t][:, None, :]
                z = decay[b, t][:, None] * z + k[b, t]
                qs = scale * q[b, t]
                o = torch.einsum("hk,hkv->hv", qs, S)
                if normalize:
                    o = o / ((qs * z).sum(-1) + 1e-6)[:, None]
                outs.append(o)
            pieces.append((b, torch.stack(outs, 0) if outs else q.new_zeros(0, H_, V_)))
            fins.append(S)
            zs.append(z)
        return _assemble(B, pieces), torch.stack(fins, 0), torch.stack(zs, 0)

    @staticmethod
    def linear_attention(q, k, v, scale=None, initial_state=None, output_final_state=False, cu_seqlens=None,
                         chunk=0, *, normalize=False, feature_map="identity", initial_z=None):
        if feature_map == "elu1":
            q, k = F.elu(q) + 1, F.elu(k) + 1
        scale = q.shape[-1] ** -0.5 if scale is None else scale
        o, S, z = R._linear(q, k, v, torch.ones_like(q[..., 0]), scale, initial_state, cu_seqlens, normalize,
                            initial_z)
        if not output_final_state:
            return o
        return (o, S, z) if normalize else (o, S)

    @staticmethod
    def retention(q, k, v, gamma=None, scale=None, initial_state=None, output_final_state=False, cu_seqlens=None,
                  chunk=0):
        if gamma is None:
            gamma = 1 - 2.0 ** (-5 - torch.arange(q.shape[2], dtype=q.dtype))
        scale = q.shape[-1] ** -0.5 if scale is None else scale
        o, S, _ = R._linear(q, k, v, gamma.expand(q.shape[:3]), scale, initial_state, cu_seqlens)
        return _out(o, S, output_final_state)

    @staticmethod
    def gated_retention(q, k, v, g, scale=None, initial_state=None, output_final_state=False, cu_seqlens=None,
                        chunk=0):
        scale = q.shape[-1] ** -0.5 if scale is None else scale
        o, S, _ = R._linear(q, k, v, torch.exp(g), scale, initial_state, cu_seqlens)
        return _out(o, S, output_final_state)

    @staticmethod
    def mamba2(x, dt, A, B, C, D=None, *, dt_bias=None, dt_softplus=False, initial_state=None,
               output_final_state=False, cu_seqlens=None, chunk=0):
        d = dt if dt_bias is None else dt + dt_bias
        if dt_softplus:
            d = F.softplus(d)
        H_ = x.shape[2]
        grp = torch.arange(H_) // (H_ // B.shape[2])
        # gated retention with q = C, k = B (per head), v = dt x, g = dt A, scale 1
        y, S, _ = R._linear(C[:, :, grp], B[:, :, grp], d[..., None] * x, torch.exp(d * A), 1.0, initial_state,
                            cu_seqlens)
        if D is not None:
            y = y + D[:, None] * x
        return _out(y, S, output_final_state)

    @staticmethod
    def selective_scan(u, dt, A, B, C, D=None, z=None, *, dt_bias=None, dt_softplus=False, initial_state=None,
                       output_final_state=False, cu_seqlens=None):
        d = dt if dt_bias is None else dt + dt_bias
        if dt_softplus:
            d = F.softplus(d)
        Bt, T_, Dc = u.shape
        grp = torch.arange(Dc) // (Dc // B.shape[2])
        Bd, Cd = B[:, :, grp], C[:, :, grp]  # [Bt, T, Dc, Nst]
        pieces, fins = [], []
        for n, (b, s, e) in enumerate(_bounds(Bt, T_, cu_seqlens)):
            h = u.new_zeros(Dc, A.shape[1]) if initial_state is None else initial_state[n]
            ys = []
            for t in range(s, e):
                h = torch.exp(d[b, t][:, None] * A) * h + (d[b, t] * u[b, t])[:, None] * Bd[b, t]
                yt = (Cd[b, t] * h).sum(-1)
                if D is not None:
                    yt = yt + D * u[b, t]
                if z is not None:
                    yt = yt * F.silu(z[b, t])
                ys.append(yt)
            pieces.append((b, torch.stack(ys, 0) if ys else u.new_zeros(0, Dc)))
            fins.append(h)
        return _out(_assemble(Bt, pieces), torch.stack(fins, 0), output_final_state)

    @staticmethod
    def deltanet(q, k, v, beta, g=None, scale=None, initial_state=None, output_final_state=False, cu_seqlens=None,
                 chunk=0, *, l2norm_qk=False, allow_neg_eigval=False):
        if l2norm_qk:
            q, k = _l2n(q), _l2n(k)
        scale = q.shape[-1] ** -0.5 if scale is None else scale
        B_, T_, H_, K_ = q.shape
        V_ = v.shape[-1]
        pieces, fins = [], []
        for n, (b, s, e) in enumerate(_bounds(B_, T_, cu_seqlens)):
            S = q.new_zeros(H_, K_, V_) if initial_state is None else initial_state[n]
            outs = []
            for t in range(s, e):
                if g is not None:
                    S = torch.exp(g[b, t])[:, None, None] * S
                u = torch.einsum("hk,hkv->hv", k[b, t], S)
                S = S + beta[b, t][:, None, None] * k[b, t][:, :, None] * (v[b, t] - u)[:, None, :]
                outs.append(torch.einsum("hk,hkv->hv", scale * q[b, t], S))
            pieces.append((b, torch.stack(outs, 0) if outs else q.new_zeros(0, H_, V_)))
            fins.append(S)
        return _out(_assemble(B_, pieces), torch.stack(fins, 0), output_final_state)


    @staticmethod
    def titans(q, k, v, eta, theta, alpha, scale=None, initial_state=None, output_final_state=False,
               cu_seqlens=None, *, minibatch, l2norm_qk=False):
        """The Titans recurrence, token by token (seqk.h): Mhat = M_{t-1} when token
        t starts a mini-batch; S = eta S - theta k (Mhat^T k - v)^T;
        M = (1 - alpha) M + S; o = M^T (scale q). State [N, H, 3KV + 8]: M, S,
        Mhat, pos, 7 reserved (Mhat = M where the final pos is 0)."""
        if l2norm_qk:
            q, k = _l2n(q), _l2n(k)
        B_, T_, H_, K_ = q.shape
        V_ = v.shape[-1]
        kv = K_ * V_
        scale = K_ ** -0.5 if scale is None else scale
        pieces, fins = [], []
        for n, (b, s, e) in enumerate(_bounds(B_, T_, cu_seqlens)):
            heads_o, heads_s = [], []
            for h in range(H_):
                if initial_state is None:
                    M = q.new_zeros(K_, V_)
                    S = q.new_zeros(K_, V_)
                    pos = 0
                    Mh = M
                else:
                    blk = initial_state[n, h]
                    M, S = blk[:kv].reshape(K_, V_), blk[kv:2 * kv].reshape(K_, V_)
                    pos = int(blk[3 * kv].item())
                    Mh = blk[2 * kv:3 * kv].reshape(K_, V_) if pos else M
                outs = []
                for t in range(s, e):
                    if pos == 0:
                        Mh = M
                    kt = k[b, t, h]
                    err = Mh.T @ kt - v[b, t, h]
                    S = eta[b, t, h] * S - theta[b, t, h] * torch.outer(kt, err)
                    M = (1 - alpha[b, t, h]) * M + S
                    outs.append(M.T @ (scale * q[b, t, h]))
                    pos = (pos + 1) % minibatch
                if pos == 0:
                    Mh = M
                heads_o.append(torch.stack(outs, 0) if outs else q.new_zeros(0, V_))
                tail = q.new_zeros(8)
                tail[0] = pos
                heads_s.append(torch.cat([M.reshape(-1), S.reshape(-1), Mh.reshape(-1), tail]))
            pieces.append((b, torch.stack(heads_o, 1)))
            fins.append(torch.stack(heads_s, 0))
        return _out(_assemble(B_, pieces), torch.stack(fins, 0), output_final_state)
