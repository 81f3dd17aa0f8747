import numpy as np
import pytest

from reference import attention_ref, f32, rel_err

seqk = pytest.importorskip("seqk")

TOL = 1e-5

if not (seqk.has_op("attention_parallel") and seqk.has_op("attention_decode")):
    pytest.skip("the loaded libseqk does not export softmax attention yet", allow_module_level=True)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("Hq,Hkv", [(4, 4), (6, 2), (3, 1)])  # MHA, GQA, MQA
def test_attention_parallel(rng, causal, Hq, Hkv):
    B, T, K, V = 2, 29, 16, 8
    q, k, v = f32(rng, B, T, Hq, K), f32(rng, B, T, Hkv, K), f32(rng, B, T, Hkv, V)
    o, lse = seqk.attention_parallel(q, k, v, causal=causal, return_lse=True)
    o_ref, lse_ref = attention_ref(q, k, v, 1 / np.sqrt(K), causal)
    assert o.shape == (B, T, Hq, V) and lse.shape == (B, Hq, T)
    assert rel_err(o, o_ref) < TOL
    assert rel_err(lse, lse_ref) < TOL


def test_attention_parallel_scale_and_out(rng):
    q, k, v = f32(rng, 1, 10, 2, 4), f32(rng, 1, 10, 2, 4), f32(rng, 1, 10, 2, 4)
    out = np.empty((1, 10, 2, 4), np.float32)
    lse = np.empty((1, 2, 10), np.float32)
    r = seqk.attention_parallel(q, k, v, scale=0.7, causal=True, out=out, lse_out=lse)
    assert r is out
    o_ref, lse_ref = attention_ref(q, k, v, 0.7, True)
    assert rel_err(out, o_ref) < TOL and rel_err(lse, lse_ref) < TOL


@pytest.mark.parametrize("causal", [False, True])
def test_attention_parallel_varlen(rng, causal):
    cu = np.array([0, 7, 7, 8, 25], np.int32)
    T, Hq, Hkv, K, V = 25, 4, 2, 8, 6
    q, k, v = f32(rng, 1, T, Hq, K), f32(rng, 1, T, Hkv, K), f32(rng, 1, T, Hkv, V)
    o = np.zeros((1, T, Hq, V), np.float32)
    o, lse = seqk.attention_parallel(q, k, v, causal=causal, cu_seqlens=cu, return_lse=True, out=o)
    o_ref, lse_ref = attention_ref(q, k, v, 1 / np.sqrt(K), causal, cu)
    assert rel_err(o, o_ref) < TOL
    assert rel_err(lse, lse_ref) < TOL


@pytest.mark.parametrize("Hq,Hkv", [(4, 4), (4, 2), (4, 1)])
def test_decode_equals_parallel(rng, Hq, Hkv):
    """Decoding token by token with a cache == the rows of causal parallel attention."""
    B, T, K, V, max_len = 2, 23, 8, 12, 32
    q, k, v = f32(rng, B, T, Hq, K), f32(rng, B, T, Hkv, K), f32(rng, B, T, Hkv, V)
    o_par, lse_par = seqk.attention_parallel(q, k, v, causal=True, return_lse=True)
    o_ref, lse_ref = attention_ref(q, k, v, 1 / np.sqrt(K), True)
    k_cache = np.zeros((B, max_len, Hkv, K), np.float32)
    v_cache = np.zeros((B, max_len, Hkv, V), np.float32)
    cache_len = np.zeros(B, np.int32)
    for t in range(T):
        o_t, lse_t = seqk.attention_decode(
            np.ascontiguousarray(q[:, t]), np.ascontiguousarray(k[:, t]), np.ascontiguousarray(v[:, t]),
            k_cache, v_cache, cache_len, return_lse=True)
        assert o_t.shape == (B, Hq, V) and lse_t.shape == (B, Hq)
        assert rel_err(o_t, o_par[:, t]) < TOL
        assert rel_err(lse_t, lse_par[:, :, t]) < TOL
        assert rel_err(o_t, o_ref[:, t]) < TOL
        cache_len += 1  # the caller advances the cache
    np.testing.assert_array_equal(k_cache[:, :T], k)
    np.testing.assert_array_equal(v_cache[:, :T], v)


def test_decode_ragged_batch(rng):
    """Entries of a batch at different cache lengths."""
    Hq, Hkv, K, V, max_len = 2, 1, 4, 4, 16
    lens = [3, 9]
    seqs = [(f32(rng, 1, L + 1, Hq, K), f32(rng, 1, L + 1, Hkv, K), f32(rng, 1, L + 1, Hkv, V)) for L in lens]
    k_cache = np.zeros((2, max_len, Hkv, K), np.float32)
    v_cache = np.zeros((2, max_len, Hkv, V), np.float32)
    for b, (L, (q, k, v)) in enumerate(zip(lens, seqs)):
        k_cache[b, :L] = k[0, :L]
        v_cache[b, :L] = v[0, :L]
    q_new = np.stack([s[0][0, -1] for s in seqs])
    k_new = np.stack([s[1][0, -1] for s in seqs])
    v_new = np.stack([s[2][0, -1] for s in seqs])
    o = seqk.attention_decode(q_new, k_new, v_new, k_cache, v_cache, np.array(lens, np.int32), scale=0.9)
    for b, (q, k, v) in enumerate(seqs):
        o_ref = attention_ref(q, k, v, 0.9, True)[0][0, -1]
        assert rel_err(o[b], o_ref) < TOL


def test_attention_workspace_sizes():
    assert seqk.attention_parallel_workspace_size(1, 128, 4, 2, 64, 64, causal=True) >= 0
    # CPU: the split-cache partials (grows with max_len, then stays)
    ws = seqk.attention_decode_workspace_size(2, 4, 2, 64, 64, 1024)
    assert ws > 0
    assert seqk.attention_decode_workspace_size(2, 4, 2, 64, 64, 65536) >= ws
