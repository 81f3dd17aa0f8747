"""seqk.torch decoding under torch.no_grad(): every wrapper's mode='recurrent'
with the state carried between calls (final_state_out = initial_state, in
place) reproduces the training forward (the parallel mode, with a graph)
token by token: a prefill of P tokens, then one token per call. Softmax
attention decodes through seqk.attention_decode with a torch key/value cache.
Plus the rules: a graph with mode='recurrent' or a *_out tensor is a
ValueError. Skipped without torch.
"""
import pytest

seqk = pytest.importorskip("seqk")
torch = pytest.importorskip("torch")
from seqk import torch as st  # noqa: E402  (needs torch)

F = torch.nn.functional
B, T, H, K, V, P = 2, 13, 3, 5, 4, 6  # P: prefill length (then T - P single-token steps)


def rel(x, ref):
    x, ref = x.detach().double(), ref.detach().double()
    assert x.shape == ref.shape, (x.shape, ref.shape)
    return float((x - ref).abs().max() / max(float(ref.abs().max()), 1e-30))


def _gen(seed):
    g = torch.Generator().manual_seed(seed)

    def gen(shape, lo=None, hi=None):
        if lo is None:
            return torch.randn(*shape, generator=g)
        return lo + (hi - lo) * torch.rand(*shape, generator=g)
    return gen


def _inputs(name):
    """(token-major tensors [B, T, ...], per-call constants, keywords, state
    shape(s)) of one op."""
    gen = _gen(sum(map(ord, name)))  # deterministic (str hash is salted)
    if name == "linear_attention":
        return ([gen((B, T, H, K)), gen((B, T, H, K)), gen((B, T, H, V))], [],
                dict(feature_map="elu1", normalize=True), [(B, H, K, V), (B, H, K)])
    if name == "retention":
        return [gen((B, T, H, K)), gen((B, T, H, K)), gen((B, T, H, V))], [gen((H,), 0.7, 0.99)], {}, [(B, H, K, V)]
    if name == "gated_retention":
        return ([gen((B, T, H, K)), gen((B, T, H, K)), gen((B, T, H, V)), gen((B, T, H), -1.0, 0.0)], [], {},
                [(B, H, K, V)])
    if name == "deltanet":
        return ([gen((B, T, H, K)), gen((B, T, H, K)), gen((B, T, H, V)), gen((B, T, H), 0.1, 0.9),
                 gen((B, T, H), -1.0, 0.0)], [], dict(l2norm_qk=True), [(B, H, K, V)])
    if name == "mamba2":
        G, Nst, Pd = 1, 5, 4
        return ([gen((B, T, H, Pd)), gen((B, T, H)), None, gen((B, T, G, Nst)), gen((B, T, G, Nst))],
                [-gen((H,), 0.5, 1.5), gen((H,))], dict(dt_bias=gen((H,), -0.5, 0.5), dt_softplus=True),
                [(B, H, Nst, Pd)])
    if name == "selective_scan":
        Dc, G, Nst = 6, 2, 5
        return ([gen((B, T, Dc)), gen((B, T, Dc), -1.0, 0.5), None, gen((B, T, G, Nst)), gen((B, T, G, Nst)),
                 None, gen((B, T, Dc))], [-gen((Dc, Nst), 0.5, 1.5), gen((Dc,))],
                dict(dt_bias=gen((Dc,), -0.5, 0.5), dt_softplus=True), [(B, Dc, Nst)])
    raise KeyError(name)


def _call(name, seq, const, kw, **more):
    """seq: the per-token tensors (None where a constant goes, in order)."""
    f = getattr(st, name)
    c = iter(const)
    if name in ("mamba2", "selective_scan"):
        args = [next(c) if x is None else x for x in seq]
        if name == "mamba2":
            args.append(next(c))  # D
        return f(*args, **kw, **more)
    if name == "retention":
        return f(*seq, const[0], **kw, **more)
    if name == "deltanet":
        q, k, v, beta, g = seq
        return f(q, k, v, beta, g, **kw, **more)
    return f(*seq, **kw, **more)


NAMES = ["linear_attention", "retention", "gated_retention", "mamba2", "selective_scan", "deltanet"]


@pytest.mark.parametrize("name", NAMES)
def test_decode_token_by_token_equals_training_forward(name):
    seq, const, kw, sshapes = _inputs(name)
    # the training forward: a graph (inputs require grad), the parallel mode
    leaves = [None if x is None else x.clone().requires_grad_(True) for x in seq]
    r = _call(name, leaves, const, kw, output_final_state=True)
    o_full, fin_full = r[0], r[1:]
    assert o_full.requires_grad
    with torch.no_grad():
        sl = lambda a, b: [None if x is None else x[:, a:b].contiguous() for x in seq]  # noqa: E731
        r = _call(name, sl(0, P), const, kw, output_final_state=True)
        outs, states = [r[0]], list(r[1:])
        ptrs = [s.data_ptr() for s in states]
        for t in range(P, T):
            more = dict(initial_state=states[0], final_state_out=states[0], mode="recurrent")
            if name == "linear_attention":
                more.update(initial_z=states[1], final_z_out=states[1])
            o1 = _call(name, sl(t, t + 1), const, kw, **more)
            assert isinstance(o1, torch.Tensor) and not o1.requires_grad and o1.shape[1] == 1
            outs.append(o1)
    assert [s.data_ptr() for s in states] == ptrs  # updated in place
    assert [tuple(s.shape) for s in states] == sshapes
    e = rel(torch.cat(outs, 1), o_full)
    assert e < 1e-5, "%s: decoded output rel err %.2e" % (name, e)
    for a, b in zip(states, fin_full):
        assert rel(a, b) < 1e-5, "%s: carried state rel err %.2e" % (name, rel(a, b))


@pytest.mark.parametrize("name", NAMES)
def test_recurrent_mode_whole_sequence_no_grad(name):
    """mode='recurrent' over the whole sequence without a graph returns the
    parallel forward's output and final state (no state given: zeros)."""
    seq, const, kw, _ = _inputs(name)
    o_par, *s_par = _call(name, seq, const, kw, output_final_state=True)
    with torch.no_grad():
        o_rec, *s_rec = _call(name, seq, const, kw, output_final_state=True, mode="recurrent")
    assert rel(o_rec, o_par) < 1e-5
    for a, b in zip(s_rec, s_par):
        assert rel(a, b) < 1e-5


def test_softmax_attention_decode_with_torch_cache():
    gen = _gen(5)
    Hkv, L = 1, 16
    q, k, v = gen((B, T, H, K)), gen((B, T, Hkv, K)), gen((B, T, Hkv, V))
    o_full = st.attention_parallel(q.requires_grad_(True), k, v, causal=True)
    with torch.no_grad():
        kc, vc = torch.zeros(B, L, Hkv, K), torch.zeros(B, L, Hkv, V)
        n = torch.zeros(B, dtype=torch.int32)
        outs = []
        for t in range(T):
            outs.append(seqk.attention_decode(q[:, t].contiguous(), k[:, t].contiguous(), v[:, t].contiguous(),
                                              kc, vc, n))
            n += 1
    assert rel(torch.stack(outs, 1), o_full) < 1e-5
    assert rel(kc[:, :T], k) == 0.0


def test_graph_with_recurrent_or_out_raises():
    seq, _, _, _ = _inputs("gated_retention")
    q = seq[0].clone().requires_grad_(True)
    S = torch.zeros(B, H, K, V)
    with pytest.raises(ValueError, match=r"seqk.torch.gated_retention: mode='recurrent' is for decoding without "
                                         r"gradients: call it under torch.no_grad\(\)"):
        st.gated_retention(q, *seq[1:], mode="recurrent")
    with pytest.raises(ValueError, match=r"seqk.torch.gated_retention: final_state_out is for decoding without "
                                         r"gradients"):
        st.gated_retention(q, *seq[1:], final_state_out=S)
    with pytest.raises(ValueError, match=r"mode must be 'parallel' or 'recurrent', got 'chunk'"):
        st.gated_retention(*seq, mode="chunk")
    with pytest.raises(TypeError, match=r"final_state_out must be a torch.float32 tensor"):
        with torch.no_grad():
            st.gated_retention(*seq, final_state_out=S.double())
    # no graph needed (nothing requires grad): allowed with grad mode on
    o = st.gated_retention(*seq, mode="recurrent", final_state_out=S)
    assert not o.requires_grad and float(S.abs().max()) > 0
