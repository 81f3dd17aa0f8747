import numpy as np
import pytest

from reference import f32, rel_err, selective_scan_ref

seqk = pytest.importorskip("seqk")

TOL = 1e-5
MODES = ["parallel", "recurrent"]

if not seqk.has_op("selective_scan"):
    pytest.skip("the loaded libseqk does not export seqk_selective_scan", allow_module_level=True)


def inputs(rng, Bt=2, T=70, Dc=20, G=2, Nst=6):
    return dict(
        u=f32(rng, Bt, T, Dc),
        dt=f32(rng, Bt, T, Dc, lo=-2.0, hi=1.0),
        A=-f32(rng, Dc, Nst, lo=0.3, hi=2.0),
        B=f32(rng, Bt, T, G, Nst),
        C=f32(rng, Bt, T, G, Nst),
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("extras", [False, True])
def test_selective_scan(rng, mode, extras):
    inp = inputs(rng)
    Dc, Nst = 20, 6
    kw = {}
    if extras:
        kw = dict(D=f32(rng, Dc), z=f32(rng, 2, 70, Dc), dt_bias=f32(rng, Dc, lo=-0.5, hi=0.5))
        s0 = f32(rng, 2, Dc, Nst)
    else:
        inp["dt"] = np.abs(inp["dt"])
        s0 = None
    y, s = seqk.selective_scan(**inp, **kw, dt_softplus=extras, mode=mode, initial_state=s0,
                               return_final_state=True)
    y_ref, s_ref = selective_scan_ref(inp["u"], inp["dt"], inp["A"], inp["B"], inp["C"], kw.get("D"), kw.get("z"),
                                      kw.get("dt_bias"), extras, s0)
    assert y.shape == (2, 70, Dc) and s.shape == (2, Dc, Nst)
    assert rel_err(y, y_ref) < TOL
    assert rel_err(s, s_ref) < TOL


def test_selective_scan_recurrent_equals_parallel_varlen(rng):
    cu = np.array([0, 3, 3, 70, 90], np.int32)
    inp = inputs(rng, Bt=1, T=90)
    s0 = f32(rng, 4, 20, 6)
    res = {m: seqk.selective_scan(**inp, dt_softplus=True, mode=m, cu_seqlens=cu, initial_state=s0,
                                  return_final_state=True) for m in MODES}
    assert rel_err(res["parallel"][0], res["recurrent"][0]) < TOL
    assert rel_err(res["parallel"][1], res["recurrent"][1]) < TOL
    y_ref, s_ref = selective_scan_ref(inp["u"], inp["dt"], inp["A"], inp["B"], inp["C"], softplus=True, s0=s0, cu=cu)
    assert rel_err(res["parallel"][0], y_ref) < TOL
    assert rel_err(res["parallel"][1], s_ref) < TOL


def test_selective_scan_decoding_in_place(rng):
    inp = inputs(rng, Bt=1, T=12)
    y_whole, s_whole = seqk.selective_scan(**inp, dt_softplus=True, return_final_state=True)
    state = np.zeros((1, 20, 6), np.float32)
    for t in range(12):
        step = {n: (np.ascontiguousarray(a[:, t:t + 1]) if a.ndim >= 3 else a) for n, a in inp.items()}
        y_t = seqk.selective_scan(**step, dt_softplus=True, mode="recurrent", initial_state=state,
                                  final_state_out=state)
        assert rel_err(y_t, y_whole[:, t:t + 1]) < TOL
    assert rel_err(state, s_whole) < TOL


def test_selective_scan_bad_groups(rng):
    inp = inputs(rng, G=3, Dc=20)
    with pytest.raises(ValueError, match="multiple of the number of groups G=3"):
        seqk.selective_scan(**inp)


def test_allocated_outputs_are_cache_line_aligned(rng):
    """Outputs seqk allocates start on a 64-byte boundary (numpy's own large
    arrays usually start 16 bytes past one, not always; see seqk/_arrays.py),
    are ordinary writable C-contiguous float32 arrays, and equal, bit for bit,
    the same call into caller-given arrays 16 bytes off a cache line."""
    inp = inputs(rng, T=300, Dc=40)
    inp["dt"] = np.abs(inp["dt"])
    y, s = seqk.selective_scan(**inp, return_final_state=True)
    dy = f32(rng, 2, 300, 40)
    grads = seqk.selective_scan_backward(inp["u"], inp["dt"], inp["A"], inp["B"], inp["C"], dy)
    for x in (y, s) + tuple(grads):
        assert x.__array_interface__["data"][0] % 64 == 0
        assert x.dtype == np.float32 and x.flags.c_contiguous and x.flags.writeable
    # a caller-given array 16 bytes past a 64-byte boundary, whatever numpy's
    # allocator returned this time (it may itself hand back an aligned block)
    buf = np.empty(y.size + 16, dtype=np.float32)
    lead = ((16 - buf.__array_interface__["data"][0] % 64) % 64) // 4
    y2 = buf[lead:lead + y.size].reshape(y.shape)
    assert y2.__array_interface__["data"][0] % 64 == 16
    seqk.selective_scan(**inp, out=y2)
    assert np.all(np.isfinite(y)) and np.array_equal(y, y2)
    y[...] = 0.0  # writable, and its own memory
    assert not np.array_equal(y, y2)
