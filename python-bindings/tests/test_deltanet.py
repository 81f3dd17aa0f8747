import os
import re

import numpy as np
import pytest

from reference import deltanet_ref, f32, rel_err

seqk = pytest.importorskip("seqk")

TOL = 1e-5
MODES = ["parallel", "recurrent"]
B, T, H, K, V = 2, 37, 3, 8, 12


def unit_keys(rng, *shape):
    k = rng.standard_normal(shape)
    k *= rng.uniform(0.6, 1.0, size=shape[:-1] + (1,)) / np.linalg.norm(k, axis=-1, keepdims=True)
    return k.astype(np.float32)


def inputs(rng, Bt=B, Tt=T, l2norm=False, gated=True, neg=False):
    q = f32(rng, Bt, Tt, H, K)
    k = f32(rng, Bt, Tt, H, K) * 3 if l2norm else unit_keys(rng, Bt, Tt, H, K)
    v = f32(rng, Bt, Tt, H, V)
    beta = f32(rng, Bt, Tt, H, lo=0.0, hi=2.0 if neg else 1.0)
    beta[:, ::7] = 0.0
    beta[:, 1::5] = 2.0 if neg else 1.0
    g = None
    if gated:
        g = f32(rng, Bt, Tt, H, lo=-1.0, hi=0.0)
        g[:, ::9] = -20.0
        g[:, 2::6] = -1e-4
    return q, k, v, beta, g


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("l2norm", [False, True])
def test_deltanet(rng, mode, gated, l2norm):
    q, k, v, beta, g = inputs(rng, l2norm=l2norm, gated=gated)
    s0 = f32(rng, B, H, K, V) * 0.5
    o, s = seqk.deltanet(q, k, v, beta, g, mode=mode, scale=0.4, l2norm_qk=l2norm, initial_state=s0,
                         return_final_state=True, chunk=16)
    o_ref, s_ref = deltanet_ref(q, k, v, beta, g, 0.4, s0, l2norm=l2norm)
    assert o.dtype == np.float32 and o.shape == (B, T, H, V) and s.shape == (B, H, K, V)
    assert rel_err(o, o_ref) < TOL
    assert rel_err(s, s_ref) < TOL


@pytest.mark.parametrize("mode", MODES)
def test_deltanet_neg_eigval_and_default_scale(rng, mode):
    q, k, v, beta, g = inputs(rng, neg=True)
    o = seqk.deltanet(q, k, v, beta, g, mode=mode, allow_neg_eigval=True)
    o_ref, _ = deltanet_ref(q, k, v, beta, g, 1 / np.sqrt(K))
    assert rel_err(o, o_ref) < TOL
    with pytest.raises(seqk.SeqkError, match=r"seqk_deltanet: beta\[\d+\]=2, must be in \[0, 1\]"):
        seqk.deltanet(q, k, v, beta, g, mode=mode)


@pytest.mark.parametrize("chunk", [0, 1, 5, 64])
def test_deltanet_recurrent_equals_parallel(rng, chunk):
    q, k, v, beta, g = inputs(rng, l2norm=True)
    s0 = f32(rng, B, H, K, V)
    o_r, s_r = seqk.deltanet(q, k, v, beta, g, mode="recurrent", l2norm_qk=True, initial_state=s0,
                             return_final_state=True)
    o_p, s_p = seqk.deltanet(q, k, v, beta, g, mode="parallel", l2norm_qk=True, initial_state=s0,
                             return_final_state=True, chunk=chunk)
    assert rel_err(o_p, o_r) < TOL
    assert rel_err(s_p, s_r) < TOL


def test_deltanet_default_chunk(rng):
    """chunk=0 runs chunk_default(K, V, op="deltanet"): at K = V = 128 that is
    32 on the CPU, where the linear-state modules take 64; the same bits as
    passing it, not those of the other."""
    Kb = Vb = 128
    q, k, v = (f32(rng, 1, 70, 2, Kb) for _ in range(3))
    beta, g = f32(rng, 1, 70, 2, lo=0.0, hi=1.0), f32(rng, 1, 70, 2, lo=-1.0, hi=0.0)
    c = seqk.chunk_default(Kb, Vb, op="deltanet")
    assert c == 32 and seqk.chunk_default(Kb, Vb) == 64
    o0 = seqk.deltanet(q, k, v, beta, g, l2norm_qk=True)
    assert np.array_equal(o0, seqk.deltanet(q, k, v, beta, g, l2norm_qk=True, chunk=c))
    assert not np.array_equal(o0, seqk.deltanet(q, k, v, beta, g, l2norm_qk=True, chunk=64))


@pytest.mark.parametrize("mode", MODES)
def test_deltanet_varlen(rng, mode):
    cu = np.array([0, 11, 11, 12, 37], np.int32)
    q, k, v, beta, g = inputs(rng, Bt=1)
    s0 = f32(rng, 4, H, K, V)
    o, s = seqk.deltanet(q, k, v, beta, g, mode=mode, initial_state=s0, return_final_state=True,
                         cu_seqlens=cu, chunk=8)
    o_ref, s_ref = deltanet_ref(q, k, v, beta, g, 1 / np.sqrt(K), s0, cu=cu)
    assert rel_err(o, o_ref) < TOL
    assert rel_err(s, s_ref) < TOL


def test_deltanet_prefill_then_decode_in_place(rng):
    q, k, v, beta, g = inputs(rng, Tt=20)
    o_whole = seqk.deltanet(q, k, v, beta, g, mode="parallel")
    part = lambda a, s, e: np.ascontiguousarray(a[:, s:e])  # noqa: E731
    o_pre, state = seqk.deltanet(part(q, 0, 12), part(k, 0, 12), part(v, 0, 12), part(beta, 0, 12),
                                 part(g, 0, 12), mode="parallel", return_final_state=True)
    outs = [o_pre]
    for t in range(12, 20):
        outs.append(seqk.deltanet(part(q, t, t + 1), part(k, t, t + 1), part(v, t, t + 1), part(beta, t, t + 1),
                                  part(g, t, t + 1), mode="recurrent", initial_state=state,
                                  final_state_out=state))
    assert rel_err(np.concatenate(outs, axis=1), o_whole) < TOL


def test_deltanet_errors(rng):
    q, k, v, beta, g = inputs(rng)
    bad = beta.copy()
    bad.reshape(-1)[17] = 1.5
    with pytest.raises(seqk.SeqkError, match=re.escape(
            "seqk_deltanet: beta[17]=1.5, must be in [0, 1] (SEQK_DELTANET_ALLOW_NEG_EIGVAL allows [0, 2])")):
        seqk.deltanet(q, k, v, bad, g)
    with pytest.raises(ValueError):
        seqk.deltanet(q, k, v, beta[:, :5], g)  # beta's T does not match q's
    with pytest.raises(TypeError):
        seqk.deltanet(q, k, v, beta, g, l2norm_qk=1)


def test_deltanet_workspace_size():
    for mode in MODES:
        n = seqk.deltanet_workspace_size(1, 100, 2, 16, 16, mode=mode)
        assert isinstance(n, int) and n >= 0


def test_deltanet_flags_match_header():
    header = os.path.join(os.path.dirname(__file__), "..", "..", "include", "seqk.h")
    if not os.path.isfile(header):
        pytest.skip("include/seqk.h not found")
    text = open(header).read()
    for name in ("DELTANET_L2NORM_QK", "DELTANET_ALLOW_NEG_EIGVAL"):
        m = re.search(r"#define\s+SEQK_%s\s+(\d+)u" % name, text)
        assert m and int(m.group(1)) == getattr(seqk, name), name
