"""seqk.attention_parallel_backward against a float64 numpy backward written
from the softmax's Jacobian (and that one against finite differences of
attention_ref), with GQA, causal and not, varlen, and the errors."""
import numpy as np
import pytest

from reference import attention_ref, f32, rel_err, seq_bounds

seqk = pytest.importorskip("seqk")

TOL = 1e-4

if not seqk.has_op("attention_parallel_backward"):
    pytest.skip("the loaded libseqk does not export the attention backward yet", allow_module_level=True)


def attention_backward_ref(q, k, v, dout, scale, causal=False, cu=None):
    """(dq, dk, dv) of L = sum o * dout in float64, per sequence and head:
    P = softmax(scale Q K^T), dV = P^T dO, dS = P * (dO V^T - rowsum(P * dO V^T)),
    dQ = scale dS K, dK = scale dS^T Q (dk, dv summed over a kv head's query heads)."""
    q, k, v, dout = (np.asarray(x, np.float64) for x in (q, k, v, dout))
    B, T, Hq, K = q.shape
    Hkv = k.shape[2]
    rep = Hq // Hkv
    dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
    for bi, s, e in seq_bounds(B, T, cu):
        if e == s:
            continue
        for h in range(Hq):
            g = h // rep
            sc = scale * q[bi, s:e, h] @ k[bi, s:e, g].T
            if causal:
                sc = np.where(np.tril(np.ones_like(sc, dtype=bool)), sc, -np.inf)
            P = np.exp(sc - sc.max(axis=1, keepdims=True))
            P /= P.sum(axis=1, keepdims=True)
            dP = dout[bi, s:e, h] @ v[bi, s:e, g].T
            dS = P * (dP - (P * dP).sum(axis=1, keepdims=True))
            dv[bi, s:e, g] += P.T @ dout[bi, s:e, h]
            dq[bi, s:e, h] = scale * dS @ k[bi, s:e, g]
            dk[bi, s:e, g] += scale * dS.T @ q[bi, s:e, h]
    return dq, dk, dv


def test_reference_against_finite_differences(rng):
    B, T, Hq, Hkv, K, V, scale = 1, 5, 2, 1, 3, 2, 0.8
    q, k, v, dout = (rng.standard_normal(s) for s in
                     ((B, T, Hq, K), (B, T, Hkv, K), (B, T, Hkv, V), (B, T, Hq, V)))
    grads = attention_backward_ref(q, k, v, dout, scale, causal=True)
    h = 1e-6
    for x, g in zip((q, k, v), grads):
        fd = np.zeros_like(x)
        for i in np.ndindex(x.shape):
            x0 = x[i]
            x[i] = x0 + h
            lp = (attention_ref(q, k, v, scale, True)[0] * dout).sum()
            x[i] = x0 - h
            lm = (attention_ref(q, k, v, scale, True)[0] * dout).sum()
            x[i] = x0
            fd[i] = (lp - lm) / (2 * h)
        assert rel_err(fd, g) < 1e-7


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("Hq,Hkv", [(4, 4), (4, 2), (3, 1)])  # MHA, GQA, MQA
def test_attention_backward(rng, causal, Hq, Hkv):
    B, T, K, V = 2, 37, 16, 12
    q, k, v = f32(rng, B, T, Hq, K), f32(rng, B, T, Hkv, K), f32(rng, B, T, Hkv, V)
    dout = f32(rng, B, T, Hq, V)
    o, lse = seqk.attention_parallel(q, k, v, causal=causal, return_lse=True)
    dq, dk, dv = seqk.attention_parallel_backward(q, k, v, o, lse, dout, causal=causal)
    assert dq.shape == q.shape and dk.shape == k.shape and dv.shape == v.shape
    rq, rk, rv = attention_backward_ref(q, k, v, dout, 1 / np.sqrt(K), causal)
    assert rel_err(dq, rq) < TOL
    assert rel_err(dk, rk) < TOL
    assert rel_err(dv, rv) < TOL


def test_attention_backward_varlen_scale_and_outputs(rng):
    cu = np.array([0, 7, 7, 8, 25], np.int32)  # an empty and a length-1 sequence
    T, Hq, Hkv, K, V, scale = 25, 4, 2, 8, 6, 0.6
    q, k, v = f32(rng, 1, T, Hq, K), f32(rng, 1, T, Hkv, K), f32(rng, 1, T, Hkv, V)
    dout = f32(rng, 1, T, Hq, V)
    o, lse = seqk.attention_parallel(q, k, v, causal=True, scale=scale, cu_seqlens=cu, return_lse=True)
    outs = [np.full(x.shape, np.nan, np.float32) for x in (q, k, v)]
    r = seqk.attention_parallel_backward(q, k, v, o, lse, dout, causal=True, scale=scale, cu_seqlens=cu,
                                         dq_out=outs[0], dk_out=outs[1], dv_out=outs[2])
    assert all(a is b for a, b in zip(r, outs))
    for got, want in zip(outs, attention_backward_ref(q, k, v, dout, scale, True, cu)):
        assert rel_err(got, want) < TOL


def test_attention_backward_deterministic(rng):
    q, k, v = f32(rng, 1, 130, 4, 32), f32(rng, 1, 130, 2, 32), f32(rng, 1, 130, 2, 32)
    dout = f32(rng, 1, 130, 4, 32)
    o, lse = seqk.attention_parallel(q, k, v, causal=True, return_lse=True)
    a = seqk.attention_parallel_backward(q, k, v, o, lse, dout, causal=True)
    b = seqk.attention_parallel_backward(q, k, v, o, lse, dout, causal=True)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_attention_backward_errors(rng):
    q, k, v = f32(rng, 1, 6, 4, 8), f32(rng, 1, 6, 2, 8), f32(rng, 1, 6, 2, 8)
    o, lse = seqk.attention_parallel(q, k, v, return_lse=True)
    dout = f32(rng, 1, 6, 4, 8)
    with pytest.raises(ValueError, match="lse"):
        seqk.attention_parallel_backward(q, k, v, o, lse[:, :, :5].copy(), dout)
    with pytest.raises(TypeError, match="dout"):
        seqk.attention_parallel_backward(q, k, v, o, lse, None)
    dq = np.empty_like(q)
    with pytest.raises(seqk.SeqkError, match="dk="):  # the library's overlap rule
        seqk.attention_parallel_backward(q, k, v, o, lse, dout, dq_out=dq, dk_out=dq.reshape(-1)[:k.size].reshape(k.shape))
    assert seqk.attention_parallel_backward_workspace_size(1, 128, 4, 2, 64, 64, causal=True) > 0
