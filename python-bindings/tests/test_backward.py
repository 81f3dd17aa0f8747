"""The backward wrappers (linear_attention_backward, retention_backward,
gated_retention_backward, mamba2_backward, selective_scan_backward,
deltanet_backward and the *_backward_workspace_size queries) against central
finite differences, in float64, of the float64 numpy forward references of
reference.py.

For a loss L = <o, dout> + <final_state, dfinal_state> (+ <final_z, dfinal_z>)
and each gradient the library returns, a few random directions d compare the
directional derivative (L(x + h d) - L(x - h d)) / 2h of the reference with
<grad, d>, relative to the inner product's typical size |grad| |d| / sqrt(n)
(a fp32 gradient lands ~1e-6 from it; a wrong one ~1). Small odd shapes:
T = 17 (prime), H = 3, K != V, a batch of 2 with initial states, and varlen
(an empty and a length-1 sequence) with gradients at a zero initial state;
chunk sizes that do not divide T. Then the argument checks of every wrapper.
"""
import numpy as np
import pytest

from reference import deltanet_ref, f32, linear_state_ref, mamba2_ref, selective_scan_ref

seqk = pytest.importorskip("seqk")

BACKWARD_OPS = ["linear_attention_backward", "retention_backward", "gated_retention_backward", "mamba2_backward",
                "selective_scan_backward", "deltanet_backward"]
_missing = [o for o in BACKWARD_OPS if not seqk.has_op(o)]
if _missing:
    pytest.skip("the loaded libseqk does not export %s" % ", ".join(_missing), allow_module_level=True)

TOL = 1e-4
H_FD = 1e-5
NDIR = 3
T, H, K, V = 17, 3, 5, 4
CU = np.array([0, 6, 6, 7, 17], np.int32)  # 4 sequences: lengths 6, 0, 1, 10

# (B, cu_seqlens, chunk, initial state given): a batch with states and a
# chunk that does not divide T; varlen from zero states with the default chunk
CONFIGS = {"batch": (2, None, 4, True), "varlen": (1, CU, 0, False)}


def n_seqs(B, cu):
    return B if cu is None else len(cu) - 1


def check_fd(loss, base, grads, rng, ndir=NDIR, h=H_FD, tol=TOL, affine=("s0",)):
    """base: name -> float64 point; grads: name -> the library's gradient there;
    loss(**point) -> float. Asserts each directional derivative (returns the
    worst relative error). The loss is affine in the arguments named in
    `affine` (the initial state, for every op here): their differences use a
    step of 1, exact up to rounding, so that gradients that are tiny next to
    the loss (the initial state's, behind a decay of exp(-20)) are still
    checked to ~1e-4."""
    worst = 0.0
    for name, g in grads.items():
        g = np.asarray(g, np.float64)
        x0 = base[name]
        assert g.shape == x0.shape, (name, g.shape, x0.shape)
        assert np.all(np.isfinite(g)), name
        hn = 1.0 if name in affine else h
        for _ in range(ndir):
            d = rng.standard_normal(x0.shape)
            fd = (loss(**dict(base, **{name: x0 + hn * d})) - loss(**dict(base, **{name: x0 - hn * d}))) / (2 * hn)
            an = float((g * d).sum())
            den = max(np.linalg.norm(g) * np.linalg.norm(d) / np.sqrt(d.size), abs(fd), 1e-30)
            err = abs(fd - an) / den
            assert err < tol, "d%s: directional derivative %.9g (finite differences) vs <grad, d> %.9g, rel err %.2e" \
                % (name, fd, an, err)
            worst = max(worst, err)
    return worst


def f64(d):
    return {n: (None if x is None else np.asarray(x, np.float64)) for n, x in d.items()}


def _dot(a, b):
    return 0.0 if b is None else float((np.asarray(a) * np.asarray(b)).sum())


# --------------------------------------------------------------------------
# the checker itself
# --------------------------------------------------------------------------


def test_checker_rejects_wrong_gradients(rng):
    """The finite-difference check is not vacuous: the exact gradient of a
    small bilinear loss passes, a 1% scaled or one-entry-perturbed one fails."""
    A = rng.standard_normal((7, 5))
    x = rng.standard_normal(7)
    y = rng.standard_normal(5)

    def loss(x, y):
        return float(x @ A @ y + (x ** 3).sum())

    base = {"x": x, "y": y}
    good = {"x": A @ y + 3 * x ** 2, "y": A.T @ x}
    assert check_fd(loss, base, good, rng) < 1e-8
    with pytest.raises(AssertionError, match="dx"):
        check_fd(loss, base, {"x": good["x"] * 1.01}, rng)
    bad = good["y"].copy()
    bad[2] += 0.05 * np.abs(bad).max()
    with pytest.raises(AssertionError, match="dy"):
        check_fd(loss, base, {"y": bad}, rng, ndir=4)


# --------------------------------------------------------------------------
# linear attention, retention, gated retention
# --------------------------------------------------------------------------


def _linear_inputs(rng, B, positive=False):
    if positive:
        return (f32(rng, B, T, H, K, lo=0.1, hi=1.0), f32(rng, B, T, H, K, lo=0.1, hi=1.0), f32(rng, B, T, H, V))
    return f32(rng, B, T, H, K), f32(rng, B, T, H, K), f32(rng, B, T, H, V)


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("feature_map,normalize", [("identity", False), ("elu1", False), ("elu1", True),
                                                   ("identity", True)])
def test_linear_attention_backward(rng, config, feature_map, normalize):
    B, cu, chunk, with_s0 = CONFIGS[config]
    N = n_seqs(B, cu)
    positive = normalize and feature_map == "identity"  # keep q~ . z away from 0
    q, k, v = _linear_inputs(rng, B, positive)
    dout = f32(rng, B, T, H, V)
    s0 = f32(rng, N, H, K, V) if with_s0 else None
    z0 = f32(rng, N, H, K, lo=0.5, hi=1.5) if (with_s0 and normalize) else None
    dfin = f32(rng, N, H, K, V)
    dz = f32(rng, N, H, K) if normalize else None
    scale = 0.7
    r = seqk.linear_attention_backward(q, k, v, dout, scale=scale, normalize=normalize, feature_map=feature_map,
                                       initial_state=s0, initial_z=z0, dfinal_state=dfin, dfinal_z=dz,
                                       cu_seqlens=cu, chunk=chunk, return_dinitial_state=True)
    assert len(r) == (5 if normalize else 4)
    for x in r:
        assert isinstance(x, np.ndarray) and x.dtype == np.float32
    grads = {"q": r[0], "k": r[1], "v": r[2], "s0": r[3]}
    if normalize:
        grads["z0"] = r[4]
    ones = np.ones((B, T, H))
    dout64, dfin64, dz64 = (None if x is None else x.astype(np.float64) for x in (dout, dfin, dz))

    def loss(q, k, v, s0, z0):
        o, S, z = linear_state_ref(q, k, v, ones, scale, s0, cu, normalize, feature_map == "elu1", z0)
        return _dot(o, dout64) + _dot(S, dfin64) + (_dot(z, dz64) if normalize else 0.0)

    base = f64({"q": q, "k": k, "v": v, "s0": s0 if with_s0 else np.zeros((N, H, K, V)),
                "z0": z0 if z0 is not None else np.zeros((N, H, K))})
    check_fd(loss, base, grads, rng)


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("with_gamma", [True, False])
def test_retention_backward(rng, config, with_gamma):
    B, cu, chunk, with_s0 = CONFIGS[config]
    N = n_seqs(B, cu)
    q, k, v = _linear_inputs(rng, B)
    dout = f32(rng, B, T, H, V)
    gamma = f32(rng, H, lo=0.6, hi=0.99) if with_gamma else None
    s0 = f32(rng, N, H, K, V) if with_s0 else None
    dfin = f32(rng, N, H, K, V)
    r = seqk.retention_backward(q, k, v, dout, gamma=gamma, initial_state=s0, dfinal_state=dfin, cu_seqlens=cu,
                                chunk=chunk, return_dinitial_state=True)
    assert len(r) == 4
    gam = gamma.astype(np.float64) if with_gamma else seqk.retention_default_gammas(H).astype(np.float64)
    decay = np.broadcast_to(gam, (B, T, H))
    scale = 1 / np.sqrt(K)

    def loss(q, k, v, s0):
        o, S, _ = linear_state_ref(q, k, v, decay, scale, s0, cu)
        return _dot(o, dout) + _dot(S, dfin)

    base = f64({"q": q, "k": k, "v": v, "s0": s0 if with_s0 else np.zeros((N, H, K, V))})
    check_fd(loss, base, dict(zip(("q", "k", "v", "s0"), r)), rng)
    # without the optional pieces: the same dq, dk, dv, nothing else returned
    r2 = seqk.retention_backward(q, k, v, dout, gamma=gamma, initial_state=s0, dfinal_state=dfin, cu_seqlens=cu,
                                 chunk=chunk)
    assert len(r2) == 3
    for a, b in zip(r, r2):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("strong", [False, True])
def test_gated_retention_backward(rng, config, strong):
    B, cu, chunk, with_s0 = CONFIGS[config]
    N = n_seqs(B, cu)
    q, k, v = _linear_inputs(rng, B)
    dout = f32(rng, B, T, H, V)
    g = f32(rng, B, T, H, lo=-1.0, hi=0.0)
    if strong:
        g[:, ::5] = -20.0  # decays of ~2e-9 every fifth token
    s0 = f32(rng, N, H, K, V) if with_s0 else None
    dfin = f32(rng, N, H, K, V)
    r = seqk.gated_retention_backward(q, k, v, g, dout, initial_state=s0, dfinal_state=dfin, cu_seqlens=cu,
                                      chunk=chunk, return_dinitial_state=True)
    assert len(r) == 5
    scale = 1 / np.sqrt(K)

    def loss(q, k, v, g, s0):
        o, S, _ = linear_state_ref(q, k, v, np.exp(g), scale, s0, cu)
        return _dot(o, dout) + _dot(S, dfin)

    base = f64({"q": q, "k": k, "v": v, "g": g, "s0": s0 if with_s0 else np.zeros((N, H, K, V))})
    check_fd(loss, base, dict(zip(("q", "k", "v", "g", "s0"), r)), rng)


def test_gated_retention_backward_outputs_and_no_dfinal(rng):
    """Given outputs are written in place and returned; dfinal_state=None is a
    zero final-state gradient; the result does not depend on the chunk size
    beyond rounding and is bitwise repeatable."""
    B = 2
    q, k, v = _linear_inputs(rng, B)
    g = f32(rng, B, T, H, lo=-1.0, hi=0.0)
    dout = f32(rng, B, T, H, V)
    outs = [np.full(s, np.nan, np.float32) for s in ((B, T, H, K), (B, T, H, K), (B, T, H, V), (B, T, H),
                                                     (B, H, K, V))]
    r = seqk.gated_retention_backward(q, k, v, g, dout, chunk=3, dq_out=outs[0], dk_out=outs[1], dv_out=outs[2],
                                      dg_out=outs[3], dinitial_state_out=outs[4])
    assert len(r) == 4 and all(a is b for a, b in zip(r, outs))
    zero = np.zeros((B, H, K, V), np.float32)
    r0 = seqk.gated_retention_backward(q, k, v, g, dout, dfinal_state=zero, chunk=3, return_dinitial_state=True)
    for a, b in zip(outs, r0):
        np.testing.assert_array_equal(a, b)
    r64 = seqk.gated_retention_backward(q, k, v, g, dout, return_dinitial_state=True)
    for a, b in zip(outs, r64):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * np.abs(b).max())


# --------------------------------------------------------------------------
# Mamba2
# --------------------------------------------------------------------------


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("variant", ["full", "bare"])
def test_mamba2_backward(rng, config, variant):
    B, cu, chunk, with_s0 = CONFIGS[config]
    N = n_seqs(B, cu)
    P, Nst = 4, 5
    full = variant == "full"
    G = 1 if full else 3  # every head reads one group (sums over 3 heads) / one group per head
    x = f32(rng, B, T, H, P)
    dt = f32(rng, B, T, H, lo=-1.0, hi=1.0) if full else f32(rng, B, T, H, lo=0.1, hi=0.6)
    A = f32(rng, H, lo=-1.5, hi=-0.5)
    Bm, Cm = f32(rng, B, T, G, Nst), f32(rng, B, T, G, Nst)
    D = f32(rng, H) if full else None
    dt_bias = f32(rng, H, lo=0.0, hi=0.3) if full else None
    dy = f32(rng, B, T, H, P)
    s0 = f32(rng, N, H, Nst, P) if with_s0 else None
    dfin = f32(rng, N, H, Nst, P)
    r = seqk.mamba2_backward(x, dt, A, Bm, Cm, dy, D=D, dt_bias=dt_bias, dt_softplus=full, initial_state=s0,
                             dfinal_state=dfin, cu_seqlens=cu, chunk=chunk, return_ddt_bias=True,
                             return_dinitial_state=True)
    names = ["x", "dt", "A", "B", "C"] + (["D"] if full else []) + ["dt_bias", "s0"]
    assert len(r) == len(names)

    def loss(x, dt, A, B, C, D, dt_bias, s0):
        y, S = mamba2_ref(x, dt, A, B, C, D, dt_bias, full, s0, cu)
        return _dot(y, dy) + _dot(S, dfin)

    base = f64({"x": x, "dt": dt, "A": A, "B": Bm, "C": Cm, "D": D,
                "dt_bias": dt_bias if full else np.zeros(H),  # without a bias: the gradient at a zero bias
                "s0": s0 if with_s0 else np.zeros((N, H, Nst, P))})
    check_fd(loss, base, dict(zip(names, r)), rng)


# --------------------------------------------------------------------------
# selective scan (Mamba1)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("variant", ["full", "bare"])
def test_selective_scan_backward(rng, config, variant):
    B, cu, _, with_s0 = CONFIGS[config]
    N = n_seqs(B, cu)
    Dc, Nst = 6, 5
    full = variant == "full"
    G = 2 if full else 1
    u = f32(rng, B, T, Dc)
    dt = f32(rng, B, T, Dc, lo=-1.0, hi=1.0) if full else f32(rng, B, T, Dc, lo=0.1, hi=0.6)
    A = f32(rng, Dc, Nst, lo=-1.5, hi=-0.2)
    Bm, Cm = f32(rng, B, T, G, Nst), f32(rng, B, T, G, Nst)
    D = f32(rng, Dc) if full else None
    z = f32(rng, B, T, Dc) if full else None
    dt_bias = f32(rng, Dc, lo=0.0, hi=0.3) if full else None
    dy = f32(rng, B, T, Dc)
    s0 = f32(rng, N, Dc, Nst) if with_s0 else None
    dfin = f32(rng, N, Dc, Nst)
    r = seqk.selective_scan_backward(u, dt, A, Bm, Cm, dy, D=D, z=z, dt_bias=dt_bias, dt_softplus=full,
                                     initial_state=s0, dfinal_state=dfin, cu_seqlens=cu, return_ddt_bias=True,
                                     return_dinitial_state=True)
    names = ["u", "dt", "A", "B", "C"] + (["D", "z"] if full else []) + ["dt_bias", "s0"]
    assert len(r) == len(names)

    def loss(u, dt, A, B, C, D, z, dt_bias, s0):
        y, S = selective_scan_ref(u, dt, A, B, C, D, z, dt_bias, full, s0, cu)
        return _dot(y, dy) + _dot(S, dfin)

    base = f64({"u": u, "dt": dt, "A": A, "B": Bm, "C": Cm, "D": D, "z": z,
                "dt_bias": dt_bias if full else np.zeros(Dc),
                "s0": s0 if with_s0 else np.zeros((N, Dc, Nst))})
    check_fd(loss, base, dict(zip(names, r)), rng)


# --------------------------------------------------------------------------
# DeltaNet, gated DeltaNet
# --------------------------------------------------------------------------


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("variant", ["plain", "gated_l2norm", "neg_eigval"])
def test_deltanet_backward(rng, config, variant):
    B, cu, chunk, with_s0 = CONFIGS[config]
    if chunk == 0:
        chunk = 5  # the default (64) is one chunk here; 5 does not divide T either
    N = n_seqs(B, cu)
    q, k, v = _linear_inputs(rng, B)
    l2 = variant != "plain"
    if not l2:  # the stable regime: unit-norm keys
        k = (k / np.linalg.norm(k, axis=-1, keepdims=True)).astype(np.float32)
    beta = f32(rng, B, T, H, lo=0.0, hi=2.0 if variant == "neg_eigval" else 1.0)
    g = f32(rng, B, T, H, lo=-1.0, hi=0.0) if variant == "gated_l2norm" else None
    dout = f32(rng, B, T, H, V)
    s0 = f32(rng, N, H, K, V) if with_s0 else None
    dfin = f32(rng, N, H, K, V)
    scale = 0.8
    r = seqk.deltanet_backward(q, k, v, beta, dout, g=g, scale=scale, l2norm_qk=l2,
                               allow_neg_eigval=variant == "neg_eigval", initial_state=s0, dfinal_state=dfin,
                               cu_seqlens=cu, chunk=chunk, return_dinitial_state=True)
    names = ["q", "k", "v", "beta"] + (["g"] if g is not None else []) + ["s0"]
    assert len(r) == len(names)

    def loss(q, k, v, beta, g, s0):
        o, S = deltanet_ref(q, k, v, beta, g, scale, s0, cu, l2)
        return _dot(o, dout) + _dot(S, dfin)

    base = f64({"q": q, "k": k, "v": v, "beta": beta, "g": g,
                "s0": s0 if with_s0 else np.zeros((N, H, K, V))})
    check_fd(loss, base, dict(zip(names, r)), rng)


# --------------------------------------------------------------------------
# package surface, workspace sizes, torch
# --------------------------------------------------------------------------

WORKSPACE_QUERIES = ["linear_state_backward_workspace_size", "selective_scan_backward_workspace_size",
                     "deltanet_backward_workspace_size"]


def test_exported():
    for name in BACKWARD_OPS + WORKSPACE_QUERIES:
        assert name in seqk.__all__ and callable(getattr(seqk, name))
    for name in BACKWARD_OPS:
        assert name in seqk.available_ops()


def test_workspace_sizes():
    assert seqk.linear_state_backward_workspace_size(2, 128, 4, 64, 64) > 0
    assert seqk.linear_state_backward_workspace_size(1, 128, 8, 16, 64, G=2, N=3, chunk=32) > 0
    assert seqk.selective_scan_backward_workspace_size(2, 128, 64, 16, 1) > 0
    assert seqk.deltanet_backward_workspace_size(1, 128, 4, 64, 64, N=2) > 0
    with pytest.raises(seqk.SeqkError):
        seqk.selective_scan_backward_workspace_size(1, 16, 6, 4, 4)  # D % G != 0


def test_torch_tensors(rng):
    torch = pytest.importorskip("torch")
    q, k, v = _linear_inputs(rng, 1)
    g = f32(rng, 1, T, H, lo=-1.0, hi=0.0)
    dout = f32(rng, 1, T, H, V)
    want = seqk.gated_retention_backward(q, k, v, g, dout, cu_seqlens=CU, return_dinitial_state=True)
    got = seqk.gated_retention_backward(*(torch.from_numpy(x) for x in (q, k, v, g, dout)),
                                        cu_seqlens=torch.from_numpy(CU), return_dinitial_state=True)
    for a, b in zip(got, want):
        assert isinstance(a, torch.Tensor) and a.dtype == torch.float32
        np.testing.assert_array_equal(a.numpy(), b)


# --------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------


def _lin_args(rng):
    q, k, v = _linear_inputs(rng, 1)
    return q, k, v, f32(rng, 1, T, H, V)


def test_linear_attention_backward_errors(rng):
    q, k, v, dout = _lin_args(rng)
    f = seqk.linear_attention_backward
    with pytest.raises(TypeError, match="dout"):
        f(q, k, v, dout.astype(np.float64))
    with pytest.raises(ValueError, match="dfinal_state"):
        f(q, k, v, dout, dfinal_state=np.zeros((1, H, V, K), np.float32))
    with pytest.raises(ValueError, match="dout"):
        f(q, k, v, dout[:, :, :, :3].copy())
    with pytest.raises(ValueError, match="dfinal_z"):
        f(q, k, v, dout, dfinal_z=np.zeros((1, H, K), np.float32))  # needs normalize=True
    with pytest.raises(ValueError, match="initial_z"):
        f(q, k, v, dout, normalize=True, initial_z=np.zeros((1, H, K + 1), np.float32))
    with pytest.raises(ValueError, match="feature_map"):
        f(q, k, v, dout, feature_map="relu")
    with pytest.raises(ValueError, match="dq_out"):
        f(q, k, v, dout, dq_out=np.empty((1, T, H, K), np.float32)[:, ::-1])
    with pytest.raises(seqk.SeqkError):
        f(q, k, v, dout, chunk=2000)


def test_retention_backward_errors(rng):
    q, k, v, dout = _lin_args(rng)
    f = seqk.retention_backward
    with pytest.raises(TypeError, match="gamma"):
        f(q, k, v, dout, gamma=np.ones(H, np.float64))
    with pytest.raises(ValueError, match="gamma"):
        f(q, k, v, dout, gamma=np.ones(H + 1, np.float32))
    with pytest.raises(ValueError, match="initial_state"):
        f(q, k, v, dout, initial_state=np.zeros((2, H, K, V), np.float32))
    with pytest.raises(TypeError):
        f(q, k, v, np.ones(H, np.float32), dout)  # gamma is keyword-only


def test_gated_retention_backward_errors(rng):
    q, k, v, dout = _lin_args(rng)
    g = f32(rng, 1, T, H, lo=-1.0, hi=0.0)
    f = seqk.gated_retention_backward
    with pytest.raises(TypeError, match="g must"):
        f(q, k, v, g.astype(np.float16), dout)
    with pytest.raises(ValueError, match="dg_out"):
        f(q, k, v, g, dout, dg_out=np.empty((1, T, H + 1), np.float32))
    with pytest.raises(ValueError, match="dinitial_state_out"):
        f(q, k, v, g, dout, dinitial_state_out=np.empty((1, H, K, V), np.float32)[..., :2])
    with pytest.raises(ValueError, match="read-only"):
        ro = np.empty((1, T, H, V), np.float32)
        ro.flags.writeable = False
        f(q, k, v, g, dout, dv_out=ro)
    with pytest.raises(seqk.SeqkError, match="cu_seqlens"):
        f(q, k, v, g, dout, cu_seqlens=np.array([0, 9, 5, T], np.int32))


def _mamba2_args(rng):
    P, G, Nst = 4, 1, 5
    return (f32(rng, 1, T, H, P), f32(rng, 1, T, H, lo=0.1, hi=0.5), f32(rng, H, lo=-1.0, hi=-0.5),
            f32(rng, 1, T, G, Nst), f32(rng, 1, T, G, Nst), f32(rng, 1, T, H, P))


def test_mamba2_backward_errors(rng):
    x, dt, A, Bm, Cm, dy = _mamba2_args(rng)
    f = seqk.mamba2_backward
    with pytest.raises(TypeError, match="dy"):
        f(x, dt, A, Bm, Cm, dy.astype(np.float64))
    with pytest.raises(ValueError, match="A"):
        f(x, dt, np.ones(H + 1, np.float32), Bm, Cm, dy)
    with pytest.raises(ValueError, match="dfinal_state"):
        f(x, dt, A, Bm, Cm, dy, dfinal_state=np.zeros((1, H, 4, 5), np.float32))  # [N,H,P,Nst]: transposed
    with pytest.raises(ValueError, match="dD_out"):
        f(x, dt, A, Bm, Cm, dy, dD_out=np.empty(H, np.float32))  # no D
    with pytest.raises(ValueError, match="groups"):
        f(x, dt, A, f32(rng, 1, T, 2, 5), f32(rng, 1, T, 2, 5), dy)  # H=3 % G=2
    with pytest.raises(ValueError, match="B must be 1"):
        f(*(np.concatenate([a, a]) if a.ndim > 1 else a for a in (x, dt, A, Bm, Cm, dy)),
          cu_seqlens=np.array([0, T], np.int32))


def test_selective_scan_backward_errors(rng):
    Dc, Nst = 6, 4
    u, dt, dy = f32(rng, 1, T, Dc), f32(rng, 1, T, Dc, lo=0.1, hi=0.5), f32(rng, 1, T, Dc)
    A = f32(rng, Dc, Nst, lo=-1.0, hi=-0.5)
    Bm, Cm = f32(rng, 1, T, 2, Nst), f32(rng, 1, T, 2, Nst)
    f = seqk.selective_scan_backward
    with pytest.raises(TypeError, match="dy"):
        f(u, dt, A, Bm, Cm, list(dy))
    with pytest.raises(TypeError, match="cu_seqlens"):
        f(u, dt, A, Bm, Cm, dy, cu_seqlens=np.array([0, T], np.int64))
    with pytest.raises(ValueError, match="A"):
        f(u, dt, A.T.copy(), Bm, Cm, dy)
    with pytest.raises(ValueError, match="dz_out"):
        f(u, dt, A, Bm, Cm, dy, dz_out=np.empty((1, T, Dc), np.float32))  # no z
    with pytest.raises(ValueError, match="z"):
        f(u, dt, A, Bm, Cm, dy, z=f32(rng, 1, T, Dc + 1))
    with pytest.raises(ValueError, match="dinitial_state_out"):
        f(u, dt, A, Bm, Cm, dy, dinitial_state_out=np.empty((1, Nst, Dc), np.float32))


def test_deltanet_backward_errors(rng):
    q, k, v, dout = _lin_args(rng)
    k = (k / np.linalg.norm(k, axis=-1, keepdims=True)).astype(np.float32)
    beta = f32(rng, 1, T, H, lo=0.0, hi=1.0)
    f = seqk.deltanet_backward
    with pytest.raises(TypeError, match="beta"):
        f(q, k, v, beta.astype(np.float64), dout)
    with pytest.raises(ValueError, match="beta"):
        f(q, k, v, beta[:, :-1].copy(), dout)
    with pytest.raises(ValueError, match="dg_out"):
        f(q, k, v, beta, dout, dg_out=np.empty((1, T, H), np.float32))  # no g
    with pytest.raises(ValueError, match="dbeta_out"):
        f(q, k, v, beta, dout, dbeta_out=np.empty((1, T, H, 1), np.float32))
    bad = beta.copy()
    bad[0, 3, 1] = 1.5  # > 1 without allow_neg_eigval: the library's range check
    with pytest.raises(seqk.SeqkError, match="beta"):
        f(q, k, v, bad, dout)
    f(q, k, v, bad, dout, allow_neg_eigval=True)


def test_bool_and_ctx_arguments(rng):
    q, k, v, dout = _lin_args(rng)
    with pytest.raises(TypeError, match="return_dinitial_state"):
        seqk.retention_backward(q, k, v, dout, return_dinitial_state=1)
    with pytest.raises(TypeError, match="ctx"):
        seqk.linear_attention_backward(q, k, v, dout, ctx="cpu")
    with seqk.Context("cpu", threads=2) as ctx:
        a = seqk.retention_backward(q, k, v, dout, ctx=ctx)
    b = seqk.retention_backward(q, k, v, dout)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)  # deterministic for any thread count
