"""seqk.titans_backward (and titans_backward_workspace_size) against central
finite differences, in float64, of the float64 numpy forward reference
titans_ref of reference.py.

For the loss L = <o, dout> + <final_state, dfinal_state> (the final state's
M, S and Mhat; its position and reserved floats carry no gradient) and each
gradient the library returns, a few random directions d compare the
directional derivative (L(x + h d) - L(x - h d)) / 2h with <grad, d>,
relative to the inner product's typical size |grad| |d| / sqrt(n). The loss
is affine in the initial state (the forward is linear in M, S, Mhat), so its
difference uses a step of 1. Small odd shapes: T = 17 (prime), H = 3, K != V,
mini-batches 1, 4 and 7 (not dividing T), a batch of 2 with initial states
at random positions (Mhat read where the position is not 0), varlen (an
empty and a length-1 sequence) from zero states, the L2 norm on and off,
gates at the ends of their ranges. Then the argument checks.
"""
import numpy as np
import pytest

from reference import f32, titans_ref

seqk = pytest.importorskip("seqk")
if not seqk.has_op("titans_backward"):
    pytest.skip("the loaded libseqk has no seqk_titans_backward", allow_module_level=True)

TOL = 1e-4
H_FD = 1e-5
NDIR = 3
T, H, K, V = 17, 3, 5, 4
KV = K * V
E = 3 * KV + 8
CU = np.array([0, 6, 6, 7, 17], np.int32)  # 4 sequences: lengths 6, 0, 1, 10
SCALE = 0.6


def inputs(rng, B, l2norm):
    q = f32(rng, B, T, H, K)
    k = f32(rng, B, T, H, K)
    if not l2norm:  # keys of norm in [0.6, 1], the stable range
        k *= rng.uniform(0.6, 1.0, size=(B, T, H, 1)).astype(np.float32) / np.linalg.norm(k, axis=-1, keepdims=True)
    v = f32(rng, B, T, H, V)
    eta = f32(rng, B, T, H, lo=0.3, hi=1.0)
    eta[:, ::7] = 0.0
    eta[:, 1::5] = 1.0
    theta = f32(rng, B, T, H, lo=0.0, hi=0.5)
    theta[:, 2::9] = 0.0
    alpha = f32(rng, B, T, H, lo=0.0, hi=0.3)
    alpha[:, 3::8] = 1.0
    alpha[:, ::6] = 0.0
    return q, k, v, eta, theta, alpha


def state(rng, N, b):
    """A random state at random positions; Mhat NaN where pos = 0 (not read)."""
    s = f32(rng, N, H, E, lo=-0.5, hi=0.5)
    pos = rng.integers(0, b, size=(N, H))
    s[..., 3 * KV] = pos
    s[..., 3 * KV + 1:] = np.nan
    s[..., 2 * KV:3 * KV][pos == 0] = np.nan
    return s


def loss_fn(b, l2norm, cu, dout, dfin):
    def loss(q, k, v, eta, theta, alpha, s0):
        o, fin = titans_ref(q, k, v, eta, theta, alpha, b, SCALE, s0, cu=cu, l2norm=l2norm)
        total = float((o * dout).sum())
        if dfin is not None:
            total += float((fin[..., :3 * KV] * dfin[..., :3 * KV]).sum())
        return total

    return loss


def check_fd(loss, base, grads, rng, directions):
    """grads: name -> the library's gradient at base (float64 points);
    directions: name -> a function making a random direction (the initial
    state's leaves its positions, reserved floats and unread Mhats alone)."""
    worst = 0.0
    for name, g in grads.items():
        g = np.asarray(g, np.float64)
        x0 = base[name]
        assert g.shape == x0.shape, (name, g.shape, x0.shape)
        assert np.all(np.isfinite(g)), name
        h = 1.0 if name == "s0" else H_FD
        for _ in range(NDIR):
            d = directions.get(name, lambda: rng.standard_normal(x0.shape))()
            fd = (loss(**dict(base, **{name: x0 + h * d})) - loss(**dict(base, **{name: x0 - h * d}))) / (2 * h)
            an = float(np.nansum(g * d))
            den = max(np.linalg.norm(g) * np.linalg.norm(d) / np.sqrt(d.size), abs(fd), 1e-30)
            err = abs(fd - an) / den
            assert err < TOL, "d%s: directional derivative %.9g (finite differences) vs <grad, d> %.9g, " \
                              "rel err %.2e" % (name, fd, an, err)
            worst = max(worst, err)
    return worst


@pytest.mark.parametrize("b", [1, 4, 7])
@pytest.mark.parametrize("l2norm", [False, True])
@pytest.mark.parametrize("config", ["batch", "varlen"])
def test_titans_backward_fd(rng, b, l2norm, config):
    B, cu, with_s0 = (2, None, True) if config == "batch" else (1, CU, False)
    N = B if cu is None else len(cu) - 1
    q, k, v, eta, theta, alpha = inputs(rng, B, l2norm)
    s0 = state(rng, N, b) if with_s0 else None
    dout = f32(rng, B, T, H, V)
    dfin = f32(rng, N, H, E)  # its position and reserved floats must be ignored
    dq, dk, dv, deta, dtheta, dalpha, ds0 = seqk.titans_backward(
        q, k, v, eta, theta, alpha, dout, minibatch=b, scale=SCALE, l2norm_qk=l2norm, initial_state=s0,
        dfinal_state=dfin, cu_seqlens=cu, return_dinitial_state=True)
    for g in (dq, dk, dv, deta, dtheta, dalpha, ds0):
        assert g.dtype == np.float32
    assert ds0.shape == (N, H, E)
    assert np.all(ds0[..., 3 * KV:] == 0.0)  # position and reserved floats written 0
    if with_s0:  # Mhat not read where the position is 0: zero gradient there
        assert np.all(ds0[..., 2 * KV:3 * KV][s0[..., 3 * KV] == 0] == 0.0)
    base = {"q": q, "k": k, "v": v, "eta": eta, "theta": theta, "alpha": alpha, "s0": s0}
    base = {n: (None if x is None else np.asarray(x, np.float64)) for n, x in base.items()}
    grads = {"q": dq, "k": dk, "v": dv, "eta": deta, "theta": dtheta, "alpha": dalpha}
    directions = {}
    if with_s0:
        grads["s0"] = ds0
        read = np.zeros((N, H, E), bool)
        read[..., :2 * KV] = True
        read[..., 2 * KV:3 * KV] = (s0[..., 3 * KV] != 0)[..., None]
        base["s0"] = np.where(np.isnan(base["s0"]), 0.0, base["s0"])
        base["s0"][..., 3 * KV] = s0[..., 3 * KV]
        directions["s0"] = lambda: np.where(read, rng.standard_normal((N, H, E)), 0.0)
    loss = loss_fn(b, l2norm, cu, np.asarray(dout, np.float64), np.asarray(dfin, np.float64))
    check_fd(loss, base, grads, rng, directions)


def test_titans_backward_outputs_in_place(rng):
    """Given output arrays are written in place and returned; the gradient at a
    zero initial state comes without initial_state; no dfinal_state = zero."""
    B, b = 1, 4
    q, k, v, eta, theta, alpha = inputs(rng, B, False)
    dout = f32(rng, B, T, H, V)
    outs = [np.full((B, T, H, K), np.nan, np.float32), np.full((B, T, H, K), np.nan, np.float32),
            np.full((B, T, H, V), np.nan, np.float32)] + [np.full((B, T, H), np.nan, np.float32) for _ in range(3)]
    ds0_out = np.full((B, H, E), np.nan, np.float32)
    res = seqk.titans_backward(q, k, v, eta, theta, alpha, dout, minibatch=b, dq_out=outs[0], dk_out=outs[1],
                               dv_out=outs[2], deta_out=outs[3], dtheta_out=outs[4], dalpha_out=outs[5],
                               dinitial_state_out=ds0_out)
    assert len(res) == 6
    for r, o in zip(res, outs):
        assert r is o and np.all(np.isfinite(o))
    assert np.all(np.isfinite(ds0_out)) and np.all(ds0_out[..., 2 * KV:] == 0.0)
    ref = seqk.titans_backward(q, k, v, eta, theta, alpha, dout, minibatch=b, return_dinitial_state=True)
    for r, o in zip(ref, outs + [ds0_out]):
        np.testing.assert_array_equal(r, o)


def test_titans_backward_errors(rng):
    B, b = 1, 4
    q, k, v, eta, theta, alpha = inputs(rng, B, False)
    dout = f32(rng, B, T, H, V)
    with pytest.raises(TypeError):
        seqk.titans_backward(q, k, v, eta, theta, alpha, dout)  # minibatch is required
    with pytest.raises(ValueError, match="dout"):
        seqk.titans_backward(q, k, v, eta, theta, alpha, dout[:, :, :, :2], minibatch=b)
    with pytest.raises(ValueError, match="dfinal_state"):
        seqk.titans_backward(q, k, v, eta, theta, alpha, dout, minibatch=b, dfinal_state=f32(rng, B, H, K, V))
    with pytest.raises(TypeError):
        seqk.titans_backward(q, k, v, eta.astype(np.float64), theta, alpha, dout, minibatch=b)
    bad = eta.copy()
    bad[0, 3, 1] = 1.5
    with pytest.raises(seqk.SeqkError, match=r"seqk_titans_backward: eta\[10\]=1.5, must be in \[0, 1\]"):
        seqk.titans_backward(q, k, v, bad, theta, alpha, dout, minibatch=b)
    with pytest.raises(seqk.SeqkError, match="minibatch=0"):
        seqk.titans_backward(q, k, v, eta, theta, alpha, dout, minibatch=0)
    s0 = np.zeros((B, H, E), np.float32)
    s0[0, 1, 3 * KV] = 4.0
    with pytest.raises(seqk.SeqkError, match="position"):
        seqk.titans_backward(q, k, v, eta, theta, alpha, dout, minibatch=b, initial_state=s0)


def test_titans_backward_workspace_size():
    n = seqk.titans_backward_workspace_size(2, T, H, K, V, minibatch=4)
    assert isinstance(n, int) and n > 0
    assert seqk.titans_backward_workspace_size(1, T, H, K, V, minibatch=4, N=4) > 0
    with pytest.raises(seqk.SeqkError, match="minibatch=2000"):
        seqk.titans_backward_workspace_size(1, T, H, K, V, minibatch=2000)
    assert "titans_backward" in seqk.available_ops()
