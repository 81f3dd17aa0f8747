import os
import re

import numpy as np
import pytest

from reference import f32, rel_err, titans_ref

seqk = pytest.importorskip("seqk")
if not seqk.has_op("titans"):
    pytest.skip("the loaded libseqk has no seqk_titans", allow_module_level=True)

TOL = 1e-5
MODES = ["parallel", "recurrent"]
B, T, H, K, V = 2, 37, 3, 8, 12
E = 3 * K * V + 8


def unit_keys(rng, *shape):
    k = rng.standard_normal(shape)
    k *= rng.uniform(0.6, 1.0, size=shape[:-1] + (1,)) / np.linalg.norm(k, axis=-1, keepdims=True)
    return k.astype(np.float32)


def inputs(rng, Bt=B, Tt=T, l2norm=False):
    q = f32(rng, Bt, Tt, H, K)
    k = f32(rng, Bt, Tt, H, K) * 3 if l2norm else unit_keys(rng, Bt, Tt, H, K)
    v = f32(rng, Bt, Tt, H, V)
    eta = f32(rng, Bt, Tt, H, lo=0.5, hi=1.0)
    eta[:, ::7] = 0.0
    eta[:, 1::5] = 1.0
    theta = f32(rng, Bt, Tt, H, lo=0.0, hi=0.5)
    theta[:, 2::9] = 0.0
    alpha = f32(rng, Bt, Tt, H, lo=0.0, hi=0.2)
    alpha[:, 3::8] = 1.0
    alpha[:, ::6] = 0.0
    return q, k, v, eta, theta, alpha


def state(rng, N, b):
    """A random state with random positions; Mhat NaN where pos = 0 (not read)."""
    s = f32(rng, N, H, E, lo=-0.5, hi=0.5)
    pos = rng.integers(0, b, size=(N, H))
    s[..., 3 * K * V] = pos
    s[..., 3 * K * V + 1:] = np.nan
    s[..., 2 * K * V:3 * K * V][pos == 0] = np.nan
    return s


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("b", [1, 4, 16])
@pytest.mark.parametrize("l2norm", [False, True])
def test_titans(rng, mode, b, l2norm):
    q, k, v, eta, theta, alpha = inputs(rng, l2norm=l2norm)
    s0 = state(rng, B, b)
    o, s = seqk.titans(q, k, v, eta, theta, alpha, minibatch=b, mode=mode, scale=0.4, l2norm_qk=l2norm,
                       initial_state=s0, return_final_state=True)
    o_ref, s_ref = titans_ref(q, k, v, eta, theta, alpha, b, 0.4, s0, l2norm=l2norm)
    assert o.dtype == np.float32 and o.shape == (B, T, H, V) and s.shape == (B, H, E)
    assert rel_err(o, o_ref) < TOL
    assert rel_err(s, s_ref) < TOL
    assert np.all(s[..., 3 * K * V] == (s0[..., 3 * K * V] + T) % b)


@pytest.mark.parametrize("b", [1, 5, 64])
def test_titans_recurrent_equals_parallel(rng, b):
    q, k, v, eta, theta, alpha = inputs(rng, l2norm=True)
    o_r, s_r = seqk.titans(q, k, v, eta, theta, alpha, minibatch=b, mode="recurrent", l2norm_qk=True,
                           return_final_state=True)
    o_p, s_p = seqk.titans(q, k, v, eta, theta, alpha, minibatch=b, mode="parallel", l2norm_qk=True,
                           return_final_state=True)
    assert rel_err(o_p, o_r) < TOL
    assert rel_err(s_p, s_r) < TOL


@pytest.mark.parametrize("mode", MODES)
def test_titans_varlen(rng, mode):
    cu = np.array([0, 11, 11, 12, 37], np.int32)
    q, k, v, eta, theta, alpha = inputs(rng, Bt=1)
    s0 = state(rng, 4, 4)
    o, s = seqk.titans(q, k, v, eta, theta, alpha, minibatch=4, mode=mode, initial_state=s0,
                       return_final_state=True, cu_seqlens=cu)
    o_ref, s_ref = titans_ref(q, k, v, eta, theta, alpha, 4, 1 / np.sqrt(K), s0, cu=cu)
    assert rel_err(o, o_ref) < TOL
    assert rel_err(s, s_ref) < TOL


def test_titans_prefill_then_decode_in_place(rng):
    """Split inside a mini-batch (b = 4, 10 tokens of prefill), then decoding
    one token at a time in place, equals one call over the whole."""
    q, k, v, eta, theta, alpha = inputs(rng, Tt=20)
    o_whole = seqk.titans(q, k, v, eta, theta, alpha, minibatch=4, mode="parallel")
    part = lambda a, s, e: np.ascontiguousarray(a[:, s:e])  # noqa: E731
    o_pre, st = seqk.titans(*(part(x, 0, 10) for x in (q, k, v, eta, theta, alpha)), minibatch=4,
                            mode="parallel", return_final_state=True)
    assert np.all(st[..., 3 * K * V] == 2)
    outs = [o_pre]
    for t in range(10, 20):
        outs.append(seqk.titans(*(part(x, t, t + 1) for x in (q, k, v, eta, theta, alpha)), minibatch=4,
                                mode="recurrent", initial_state=st, final_state_out=st))
    assert rel_err(np.concatenate(outs, axis=1), o_whole) < TOL


def test_titans_errors(rng):
    q, k, v, eta, theta, alpha = inputs(rng)
    bad = eta.copy()
    bad.reshape(-1)[17] = 1.5
    with pytest.raises(seqk.SeqkError, match=re.escape("seqk_titans: eta[17]=1.5, must be in [0, 1]")):
        seqk.titans(q, k, v, bad, theta, alpha, minibatch=4)
    with pytest.raises(seqk.SeqkError, match=re.escape("seqk_titans: theta[3]=-1, must be finite and >= 0")):
        th = theta.copy()
        th.reshape(-1)[3] = -1
        seqk.titans(q, k, v, eta, th, alpha, minibatch=4)
    with pytest.raises(seqk.SeqkError, match=re.escape("seqk_titans: minibatch=0, must be in [1, 1024]")):
        seqk.titans(q, k, v, eta, theta, alpha, minibatch=0)
    s0 = state(rng, B, 4)
    s0[1, 2, 3 * K * V] = 1.5
    with pytest.raises(seqk.SeqkError, match=re.escape("state_in position of sequence 1, head 2")):
        seqk.titans(q, k, v, eta, theta, alpha, minibatch=4, initial_state=s0)
    with pytest.raises(ValueError, match="initial_state has shape"):
        seqk.titans(q, k, v, eta, theta, alpha, minibatch=4, initial_state=np.zeros((B, H, E - 8), np.float32))
    with pytest.raises(TypeError, match="minibatch must be an int"):
        seqk.titans(q, k, v, eta, theta, alpha, minibatch=4.0)
    with pytest.raises(TypeError, match="l2norm_qk must be a bool"):
        seqk.titans(q, k, v, eta, theta, alpha, minibatch=4, l2norm_qk=1)


def test_titans_sizes():
    assert seqk.titans_state_size(K, V) == E
    with pytest.raises(seqk.SeqkError, match="K=0"):
        seqk.titans_state_size(0, V)
    for mode in MODES:
        n = seqk.titans_workspace_size(1, 100, 2, 16, 16, minibatch=16, mode=mode)
        assert isinstance(n, int) and n >= 0


def test_titans_flags_match_header():
    header = os.path.join(os.path.dirname(__file__), "..", "..", "include", "seqk.h")
    if not os.path.isfile(header):
        pytest.skip("include/seqk.h not found")
    m = re.search(r"#define\s+SEQK_TITANS_L2NORM_QK\s+(\d+)u", open(header).read())
    assert m and int(m.group(1)) == seqk.TITANS_L2NORM_QK
