import numpy as np
import pytest

from reference import f32, linear_state_ref, mamba2_ref, rel_err

seqk = pytest.importorskip("seqk")

TOL = 1e-5
MODES = ["parallel", "recurrent"]
B, T, H, K, V = 2, 37, 3, 8, 12


def qkv(rng, B=B, T=T, H=H, K=K, V=V):
    return f32(rng, B, T, H, K), f32(rng, B, T, H, K), f32(rng, B, T, H, V)


# ---------------------------------------------------------------- linear attention


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("feature_map,normalize", [("identity", False), ("elu1", False), ("elu1", True)])
def test_linear_attention(rng, mode, feature_map, normalize):
    q, k, v = qkv(rng)
    s0 = f32(rng, B, H, K, V) * 0.1
    z0 = np.abs(f32(rng, B, H, K)) if normalize else None
    res = seqk.linear_attention(q, k, v, mode=mode, scale=0.3, normalize=normalize, feature_map=feature_map,
                                initial_state=s0, initial_z=z0, return_final_state=True, chunk=16)
    o_ref, s_ref, z_ref = linear_state_ref(q, k, v, np.ones((B, T, H)), 0.3, s0, normalize=normalize,
                                           elu1=feature_map == "elu1", z0=z0)
    o, s = res[0], res[1]
    assert rel_err(o, o_ref) < TOL
    assert rel_err(s, s_ref) < TOL
    if normalize:
        assert len(res) == 3 and rel_err(res[2], z_ref) < TOL
    else:
        assert len(res) == 2


def test_linear_attention_default_scale(rng):
    q, k, v = qkv(rng)
    o = seqk.linear_attention(q, k, v)
    o_ref = linear_state_ref(q, k, v, np.ones((B, T, H)), 1 / np.sqrt(K))[0]
    assert rel_err(o, o_ref) < TOL


# ---------------------------------------------------------------- retention


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("custom_gamma", [False, True])
def test_retention(rng, mode, custom_gamma):
    q, k, v = qkv(rng)
    gamma = f32(rng, H, lo=0.7, hi=1.0) if custom_gamma else None
    g_ref = gamma if custom_gamma else 1 - 2.0 ** (-5 - np.arange(H))
    s0 = f32(rng, B, H, K, V)
    o, s = seqk.retention(q, k, v, gamma, mode=mode, initial_state=s0, return_final_state=True, chunk=16)
    decay = np.broadcast_to(np.asarray(g_ref, np.float64), (B, T, H))
    o_ref, s_ref, _ = linear_state_ref(q, k, v, decay, 1 / np.sqrt(K), s0)
    assert rel_err(o, o_ref) < TOL
    assert rel_err(s, s_ref) < TOL


def test_retention_default_gammas():
    g = seqk.retention_default_gammas(5)
    assert g.dtype == np.float32 and g.shape == (5,)
    np.testing.assert_allclose(g, 1 - 2.0 ** (-5 - np.arange(5)), rtol=1e-7)
    with pytest.raises(seqk.SeqkError, match="seqk_retention_default_gammas: H=0"):
        seqk.retention_default_gammas(0)


def test_chunk_default(rng):
    # seqk.h's rule on the CPU: 32 when K, V <= 64, else 64
    sizes = ((64, 64), (8, 24), (65, 64), (64, 128), (128, 128), (129, 16))
    assert [seqk.chunk_default(K_, V_) for K_, V_ in sizes] == [32, 32, 64, 64, 64, 64]
    assert [seqk.chunk_default(K_, V_, op="deltanet") for K_, V_ in sizes] == [32, 32, 32, 32, 32, 64]
    with pytest.raises(seqk.SeqkError, match="seqk_chunk_default: K=0"):
        seqk.chunk_default(0, 64)
    with pytest.raises(ValueError, match="seqk.chunk_default: op must be one of"):
        seqk.chunk_default(64, 64, op="mamba")
    # chunk=0 runs exactly that chunk: the same bits as passing it
    q, k, v = qkv(rng, B=1, T=150, H=2, K=64, V=64)
    g = f32(rng, 1, 150, 2, lo=-0.1, hi=0.0)
    o0 = seqk.gated_retention(q, k, v, g, scale=0.125)
    oc = seqk.gated_retention(q, k, v, g, scale=0.125, chunk=seqk.chunk_default(64, 64))
    assert np.array_equal(o0, oc)


# ---------------------------------------------------------------- gated retention


def gates(rng, B=B, T=T, H=H):
    g = f32(rng, B, T, H, lo=-3.0, hi=0.0)
    g[:, ::7] = -25.0  # strongly negative gates are safe
    g[:, 1::5] = -1e-4  # and gates near 0
    return g


@pytest.mark.parametrize("mode", MODES)
def test_gated_retention(rng, mode):
    q, k, v = qkv(rng)
    g = gates(rng)
    s0 = f32(rng, B, H, K, V)
    o, s = seqk.gated_retention(q, k, v, g, mode=mode, scale=0.5, initial_state=s0, return_final_state=True,
                                chunk=16)
    o_ref, s_ref, _ = linear_state_ref(q, k, v, np.exp(g.astype(np.float64)), 0.5, s0)
    assert rel_err(o, o_ref) < TOL
    assert rel_err(s, s_ref) < TOL


# ---------------------------------------------------------------- mamba2


def mamba_inputs(rng, Bt=2, T=T, H=4, P=6, G=2, Nst=5):
    return dict(
        x=f32(rng, Bt, T, H, P),
        dt=f32(rng, Bt, T, H, lo=-2.0, hi=1.0),
        A=-f32(rng, H, lo=0.5, hi=1.5),
        B=f32(rng, Bt, T, G, Nst),
        C=f32(rng, Bt, T, G, Nst),
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("extras", [False, True])
def test_mamba2(rng, mode, extras):
    inp = mamba_inputs(rng)
    H, P, Nst = 4, 6, 5
    D = f32(rng, H) if extras else None
    dt_bias = f32(rng, H, lo=-0.5, hi=0.5) if extras else None
    s0 = f32(rng, 2, H, Nst, P) if extras else None
    softplus = extras
    if not softplus:
        inp["dt"] = np.abs(inp["dt"])  # dt itself must then be positive (decays in (0, 1])
    y, s = seqk.mamba2(**inp, D=D, dt_bias=dt_bias, dt_softplus=softplus, mode=mode, initial_state=s0,
                       return_final_state=True, chunk=16)
    y_ref, s_ref = mamba2_ref(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], D, dt_bias, softplus, s0)
    assert rel_err(y, y_ref) < TOL
    assert rel_err(s, s_ref) < TOL


# ---------------------------------------------------------------- modes, varlen, chaining, decoding


def make_op(name, rng, Bt=B, Tt=T):
    """(inputs dict, call(inputs, **kw)) for each linear-state op."""
    if name == "mamba2":
        inp = mamba_inputs(rng, Bt=Bt, T=Tt)
        inp["D"] = f32(rng, 4)
        return inp, lambda i, **kw: seqk.mamba2(**i, dt_softplus=True, **kw), (4, 5, 6)
    q, k, v = qkv(rng, B=Bt, T=Tt)
    inp = dict(q=q, k=k, v=v)
    if name == "linear_attention":
        return inp, lambda i, **kw: seqk.linear_attention(**i, scale=0.2, **kw), (H, K, V)
    if name == "retention":
        return inp, lambda i, **kw: seqk.retention(**i, **kw), (H, K, V)
    inp["g"] = gates(rng, B=Bt, T=Tt)
    return inp, lambda i, **kw: seqk.gated_retention(**i, **kw), (H, K, V)


LINEAR_OPS = ["linear_attention", "retention", "gated_retention", "mamba2"]


def _slice_T(inp, s, e):
    return {n: (np.ascontiguousarray(a[:, s:e]) if a.ndim >= 3 else a) for n, a in inp.items()}


@pytest.mark.parametrize("name", LINEAR_OPS)
@pytest.mark.parametrize("chunk", [0, 1, 5, 64])
def test_recurrent_equals_parallel(rng, name, chunk):
    inp, call, (Hs, Ks, Vs) = make_op(name, rng)
    s0 = f32(rng, B, Hs, Ks, Vs)
    o_r, s_r = call(inp, mode="recurrent", initial_state=s0, return_final_state=True)
    o_p, s_p = call(inp, mode="parallel", initial_state=s0, return_final_state=True, chunk=chunk)
    assert rel_err(o_p, o_r) < TOL
    assert rel_err(s_p, s_r) < TOL


@pytest.mark.parametrize("name", LINEAR_OPS)
@pytest.mark.parametrize("mode", MODES)
def test_varlen_equals_separate_calls(rng, name, mode):
    cu = np.array([0, 11, 11, 12, 37], np.int32)
    inp, call, (Hs, Ks, Vs) = make_op(name, rng, Bt=1, Tt=37)
    N = len(cu) - 1
    s0 = f32(rng, N, Hs, Ks, Vs)
    o, s = call(inp, mode=mode, initial_state=s0, return_final_state=True, cu_seqlens=cu)
    assert s.shape == (N, Hs, Ks, Vs)
    for n in range(N):
        a, e = int(cu[n]), int(cu[n + 1])
        part = _slice_T(inp, a, e)
        o_n, s_n = call(part, mode=mode, initial_state=np.ascontiguousarray(s0[n:n + 1]), return_final_state=True)
        if e > a:
            assert rel_err(o[:, a:e], o_n) < TOL
        assert rel_err(s[n:n + 1], s_n) < TOL


@pytest.mark.parametrize("name", LINEAR_OPS)
def test_chaining_and_in_place_decoding(rng, name):
    inp, call, (Hs, Ks, Vs) = make_op(name, rng, Bt=2, Tt=20)
    o_whole, s_whole = call(inp, mode="parallel", return_final_state=True)
    # prefill 12 tokens in parallel, then decode token by token in place
    o_pre, state = call(_slice_T(inp, 0, 12), mode="parallel", return_final_state=True)
    outs = [o_pre]
    for t in range(12, 20):
        before = state.__array_interface__["data"][0]
        o_t = call(_slice_T(inp, t, t + 1), mode="recurrent", initial_state=state, final_state_out=state)
        assert state.__array_interface__["data"][0] == before
        outs.append(o_t)
    assert rel_err(np.concatenate(outs, axis=1), o_whole) < TOL
    assert rel_err(state, s_whole) < TOL


def test_linear_state_workspace_size():
    for mode in MODES:
        n = seqk.linear_state_workspace_size(2, 100, 4, 16, 16, mode=mode)
        assert isinstance(n, int) and n >= 0
