import threading

import numpy as np
import pytest

from reference import f32, linear_state_ref, rel_err

seqk = pytest.importorskip("seqk")


def test_cpu_context_properties():
    with seqk.Context("cpu") as ctx:
        assert ctx.backend == "cpu" and ctx.device == 0
        assert ctx.threads >= 1
        ctx.threads = 1
        assert ctx.threads == 1
        ctx.threads = None  # back to the default
        assert ctx.threads >= 1
        assert ctx.stream is None
        ctx.synchronize()  # no-op on the CPU
        assert "cpu" in repr(ctx)
    assert ctx.closed and "closed" in repr(ctx)


def test_context_threads_argument_and_results(rng):
    q, k, v = f32(rng, 1, 50, 2, 8), f32(rng, 1, 50, 2, 8), f32(rng, 1, 50, 2, 8)
    g = f32(rng, 1, 50, 2, lo=-1, hi=0)
    res = []
    for n in (1, 2):
        with seqk.Context("cpu", threads=n) as ctx:
            assert ctx.threads == n
            res.append(seqk.gated_retention(q, k, v, g, ctx=ctx))
    ref = linear_state_ref(q, k, v, np.exp(g.astype(np.float64)), 1 / np.sqrt(8))[0]
    for r in res:
        assert rel_err(r, ref) < 1e-5


def test_bad_threads():
    with seqk.Context() as ctx:
        with pytest.raises(seqk.SeqkError, match="seqk_context_set_threads") as e:
            ctx.threads = -3
        assert e.value.status == seqk.Status.ERROR_INVALID_ARGUMENT
        with pytest.raises(TypeError):
            ctx.threads = 1.5


def test_stream_on_cpu_context_is_rejected():
    with seqk.Context() as ctx:
        with pytest.raises(seqk.SeqkError) as e:
            ctx.stream = 0x1234
        assert e.value.status_name == "SEQK_ERROR_INVALID_ARGUMENT"
        assert "seqk_context_set_stream" in str(e.value)
        with pytest.raises(TypeError):
            ctx.stream = "stream"


def test_closed_context_is_an_error(rng):
    ctx = seqk.Context()
    ctx.close()
    ctx.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        ctx.threads
    a = f32(rng, 1, 4, 2)
    with pytest.raises(ValueError, match="closed"):
        seqk.scan(a, a, ctx=ctx)


def test_bad_backend_and_device():
    with pytest.raises(ValueError, match="backend must be 'cpu' or 'cuda'"):
        seqk.Context("tpu")
    with pytest.raises(seqk.SeqkError, match="device=1 for the CPU backend"):
        seqk.Context("cpu", 1)
    with pytest.raises(TypeError):
        seqk.Context("cpu", "0")


def test_cuda_context_without_gpu():
    if "cuda" not in seqk.backends():
        with pytest.raises(seqk.SeqkError) as e:
            seqk.Context("cuda")
        assert e.value.status == seqk.Status.ERROR_NOT_COMPILED
        assert "no CUDA backend" in e.value.message
    elif seqk.cuda_device_count() == 0:
        with pytest.raises(seqk.SeqkError) as e:
            seqk.Context("cuda")
        assert e.value.status == seqk.Status.ERROR_NO_DEVICE
    else:
        with seqk.Context("cuda") as ctx:
            assert ctx.backend == "cuda"


def test_numpy_on_a_cuda_context_is_rejected(rng):
    """numpy arrays need a CPU context: checked before the C call (a stand-in
    context that reports 'cuda' shows the message without a GPU)."""

    ctx = seqk.Context("cpu")
    ctx._backend = seqk.Backend.CUDA  # what the bindings believe; the C context stays a CPU one
    a = f32(rng, 1, 4, 2)
    with pytest.raises(ValueError, match="numpy arrays require a CPU context"):
        seqk.scan(a, a, ctx=ctx)
    ctx.close()


def test_default_context():
    d = seqk.default_context()
    assert d is seqk.default_context() and d.backend == "cpu"
    d.close()
    d2 = seqk.default_context()  # recreated
    assert not d2.closed and d2 is not d


def test_ctx_must_be_a_context(rng):
    a = f32(rng, 1, 4, 2)
    with pytest.raises(TypeError, match="ctx must be a seqk.Context"):
        seqk.scan(a, a, ctx="cpu")


def test_memory_roundtrip():
    with seqk.Context() as ctx:
        host = np.arange(64, dtype=np.float32)
        back = np.zeros_like(host)
        p = ctx.malloc(host.nbytes)
        assert p % 256 == 0
        ctx.memcpy(p, host, host.nbytes, "host_to_backend")
        ctx.memcpy(back, p, host.nbytes, seqk.CopyKind.BACKEND_TO_HOST)
        ctx.free(p)
        np.testing.assert_array_equal(back, host)
        ctx.free(None)
        with pytest.raises(ValueError, match="kind must be"):
            ctx.memcpy(back, host, 4, "sideways")
        with pytest.raises(ValueError, match="more than"):
            ctx.memcpy(back, host, host.nbytes + 4, "backend_to_backend")
        with pytest.raises(seqk.SeqkError):
            ctx.malloc(0)


def test_workspace(rng):
    q, k, v = f32(rng, 1, 100, 2, 16), f32(rng, 1, 100, 2, 16), f32(rng, 1, 100, 2, 16)
    with seqk.Context() as ctx:
        need = seqk.linear_state_workspace_size(1, 100, 2, 16, 16, ctx=ctx)
        ctx.reserve_workspace(need)
        ref = seqk.retention(q, k, v, ctx=ctx)
        # a caller-owned workspace: 256-byte aligned, from seqk_malloc
        p = ctx.malloc(max(need, 256))
        ctx.set_workspace(p, max(need, 256))
        np.testing.assert_array_equal(seqk.retention(q, k, v, ctx=ctx), ref)
        if need > 0:
            ctx.set_workspace(p, 1)  # too small
            with pytest.raises(seqk.SeqkError) as e:
                seqk.retention(q, k, v, ctx=ctx)
            assert e.value.status == seqk.Status.ERROR_WORKSPACE_TOO_SMALL
        ctx.set_workspace(None)  # back to the owned workspace
        np.testing.assert_array_equal(seqk.retention(q, k, v, ctx=ctx), ref)
        ctx.free(p)


def test_threads_share_the_default_context_safely(rng):
    """Python threads calling ops on one context concurrently are serialised."""
    q = f32(rng, 1, 64, 2, 8)
    ref = seqk.retention(q, q, q)
    errors = []

    def work():
        try:
            for _ in range(20):
                np.testing.assert_array_equal(seqk.retention(q, q, q), ref)
        except Exception as e:  # pragma: no cover
            errors.append(e)

    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors


def test_seqk_error_attributes(rng):
    a = f32(rng, 1, 4, 2)
    with pytest.raises(seqk.SeqkError) as e:
        seqk.scan(a, a, cu_seqlens=np.array([1, 4], np.int32))
    err = e.value
    assert isinstance(err, Exception)
    assert err.status == seqk.Status.ERROR_INVALID_ARGUMENT == 1
    assert err.status_name == "SEQK_ERROR_INVALID_ARGUMENT"
    assert err.description == "invalid argument"
    assert err.message == "seqk_scan: cu_seqlens[0]=1, must be 0"
    assert err.function == "seqk_scan"
    assert err.message in str(err)


def test_workspace_from_an_array(rng):
    q = f32(rng, 1, 100, 2, 16)
    with seqk.Context() as ctx:
        need = max(seqk.linear_state_workspace_size(1, 100, 2, 16, 16, ctx=ctx), 256)
        buf = np.zeros(need + 512, np.uint8)
        off = (-buf.ctypes.data) % 256
        with pytest.raises(seqk.SeqkError, match="not 256-byte aligned"):
            ctx.set_workspace(buf[off + 1:])
        ctx.set_workspace(buf[off:off + need])  # the context keeps a reference to the array
        ref = seqk.retention(q, q, q)
        np.testing.assert_array_equal(seqk.retention(q, q, q, ctx=ctx), ref)
        ctx.set_workspace(None)
