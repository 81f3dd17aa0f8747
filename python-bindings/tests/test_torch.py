"""torch tensors: accepted without copies when torch is installed (skipped otherwise)."""

import numpy as np
import pytest

from reference import f32, rel_err, scan_ref

seqk = pytest.importorskip("seqk")
torch = pytest.importorskip("torch")

TOL = 1e-6


def t(x):
    return torch.from_numpy(np.ascontiguousarray(x))


def both(rng):
    q, k, v = f32(rng, 2, 19, 2, 8), f32(rng, 2, 19, 2, 8), f32(rng, 2, 19, 2, 6)
    g = f32(rng, 2, 19, 2, lo=-2, hi=0)
    return (q, k, v, g), tuple(t(x) for x in (q, k, v, g))


@pytest.mark.parametrize("mode", ["parallel", "recurrent"])
def test_cpu_tensors_linear_state(rng, mode):
    (q, k, v, g), (tq, tk, tv, tg) = both(rng)
    for name, args_np, args_t in [
        ("linear_attention", (q, k, v), (tq, tk, tv)),
        ("retention", (q, k, v), (tq, tk, tv)),
        ("gated_retention", (q, k, v, g), (tq, tk, tv, tg)),
    ]:
        f = getattr(seqk, name)
        o_np, s_np = f(*args_np, mode=mode, return_final_state=True)
        o_t, s_t = f(*args_t, mode=mode, return_final_state=True)
        assert isinstance(o_t, torch.Tensor) and o_t.dtype == torch.float32 and o_t.device.type == "cpu"
        assert isinstance(s_t, torch.Tensor)
        assert rel_err(o_t.numpy(), o_np) < TOL and rel_err(s_t.numpy(), s_np) < TOL


def test_cpu_tensors_other_ops(rng):
    a, b = f32(rng, 1, 30, 4, lo=0, hi=1), f32(rng, 1, 30, 4)
    h = seqk.scan(t(a), t(b))
    assert isinstance(h, torch.Tensor) and rel_err(h.numpy(), scan_ref(a, b)[0]) < 1e-5
    x, dt, A = f32(rng, 1, 12, 4, 3), f32(rng, 1, 12, 4), -f32(rng, 4, lo=0.5, hi=1)
    Bm, Cm = f32(rng, 1, 12, 2, 5), f32(rng, 1, 12, 2, 5)
    y = seqk.mamba2(t(x), t(dt), t(A), t(Bm), t(Cm), dt_softplus=True)
    assert rel_err(y.numpy(), seqk.mamba2(x, dt, A, Bm, Cm, dt_softplus=True)) < TOL
    if seqk.has_op("selective_scan"):
        u, A2 = f32(rng, 1, 12, 4), -f32(rng, 4, 5, lo=0.5, hi=1)
        y = seqk.selective_scan(t(u), t(dt), t(A2), t(Bm), t(Cm), dt_softplus=True)
        assert rel_err(y.numpy(), seqk.selective_scan(u, dt, A2, Bm, Cm, dt_softplus=True)) < TOL
    if seqk.has_op("attention_parallel"):
        q, k, v = f32(rng, 1, 9, 4, 8), f32(rng, 1, 9, 2, 8), f32(rng, 1, 9, 2, 8)
        o, lse = seqk.attention_parallel(t(q), t(k), t(v), causal=True, return_lse=True)
        o2, lse2 = seqk.attention_parallel(q, k, v, causal=True, return_lse=True)
        assert rel_err(o.numpy(), o2) < TOL and rel_err(lse.numpy(), lse2) < TOL
        kc, vc = torch.zeros(1, 12, 2, 8), torch.zeros(1, 12, 2, 8)
        kc[0, :8], vc[0, :8] = t(k[0, :8]), t(v[0, :8])
        od = seqk.attention_decode(t(q[:, 8]), t(k[:, 8]), t(v[:, 8]), kc, vc, torch.tensor([8], dtype=torch.int32))
        assert rel_err(od.numpy(), o2[:, 8]) < 1e-5
        assert torch.equal(kc[0, 8], t(k[0, 8]))  # the cache tensor was written in place


def test_no_copies(rng):
    """Outputs are written into the given tensors; in-place works on tensors."""
    a, b = t(f32(rng, 1, 10, 3, lo=0, hi=1)), t(f32(rng, 1, 10, 3))
    ref = scan_ref(a.numpy(), b.numpy())[0]
    ptr = b.data_ptr()
    r = seqk.scan(a, b, out=b)
    assert r is b and b.data_ptr() == ptr
    assert rel_err(b.numpy(), ref) < 1e-5
    (q, k, v, g), (tq, tk, tv, tg) = both(rng)
    state = torch.zeros(2, 2, 8, 6)
    seqk.retention(tq, tk, tv, initial_state=state, final_state_out=state)  # in place
    assert rel_err(state.numpy(), seqk.retention(q, k, v, return_final_state=True)[1]) < TOL


def test_views_and_requires_grad(rng):
    x = t(f32(rng, 1, 8, 2, 4)).requires_grad_(True)
    o = seqk.retention(x, x, x)  # data_ptr works on leaf tensors that require grad
    assert rel_err(o.numpy(), seqk.retention(*(x.detach().numpy(),) * 3)) < TOL
    y = t(f32(rng, 1, 8, 4, 4))[:, :, ::2]  # a view: not contiguous
    with pytest.raises(ValueError, match=r"q must be contiguous.*q.contiguous\(\)"):
        seqk.retention(y, y, y)
    z = t(f32(rng, 2, 8, 2, 4))[1:]  # a contiguous view with a storage offset
    assert rel_err(seqk.retention(z, z, z).numpy(), seqk.retention(*(z.numpy(),) * 3)) < TOL


def test_torch_errors(rng):
    x = torch.zeros(1, 4, 2, 4, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"q must be a torch.float32 tensor, got torch.float64"):
        seqk.retention(x, x, x)
    x = torch.zeros(1, 4, 2, 4)
    with pytest.raises(TypeError, match=r"cu_seqlens must be a torch.int32 tensor"):
        seqk.retention(x, x, x, cu_seqlens=torch.tensor([0, 4]))
    with pytest.raises(seqk.SeqkError, match=r"cu_seqlens\[1\]=2 < cu_seqlens\[0\]=3|cu_seqlens\[0\]=3, must be 0"):
        seqk.retention(x, x, x, cu_seqlens=torch.tensor([3, 2, 4], dtype=torch.int32))


def test_mixing_numpy_and_cpu_tensors(rng):
    q = f32(rng, 1, 8, 2, 4)
    o = seqk.retention(t(q), q, t(q))
    assert isinstance(o, torch.Tensor)  # outputs follow the first array
    o2 = seqk.retention(q, t(q), q)
    assert isinstance(o2, np.ndarray)
    assert rel_err(o.numpy(), o2) < TOL


def _cuda_ready():
    return torch.cuda.is_available() and "cuda" in seqk.backends() and seqk.cuda_device_count() > 0


@pytest.mark.skipif(not _cuda_ready(), reason="needs torch with CUDA, a GPU and a libseqk built with CUDA")
def test_cuda_tensors(rng):
    a, b = f32(rng, 2, 300, 64, lo=0.5, hi=1), f32(rng, 2, 300, 64)
    ta, tb = t(a).cuda(), t(b).cuda()
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        h = seqk.scan(ta, tb)  # default CUDA context, torch's current stream
        assert h.device.type == "cuda"
    s.synchronize()
    assert rel_err(h.cpu().numpy(), scan_ref(a, b)[0]) < 1e-5
    with seqk.Context("cuda", 0) as ctx:
        with pytest.raises(ValueError, match="numpy arrays require a CPU context"):
            seqk.scan(a, b, ctx=ctx)
        with pytest.raises(ValueError, match="is on cpu but ctx is a CUDA context"):
            seqk.scan(t(a), t(b), ctx=ctx)
    with pytest.raises(ValueError, match="is on cuda:0 but ctx is a CPU context"):
        seqk.scan(ta, tb, ctx=seqk.default_context())
