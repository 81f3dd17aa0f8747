"""seqk.torch with torch.bfloat16 / torch.float16 activations (seqk.h "Dtypes",
the _ex entry points' converting path), skipped when torch is not importable.

For every differentiable op, on odd shapes (T = 13, K = 5 != V = 4, a batch of
2 with initial states, and varlen with an empty and a length-1 sequence): the
activations (q, k, v, x, B, C, z, u) drawn in float32 and rounded to the dtype;
the op run twice, once on the dtype tensors and once in float32 on their exact
float32 values. The dtype run's outputs must be the float32 run's rounded to
the dtype, bit for bit, and so must its gradients of every activation
(softmax attention's within 2 units of the dtype's roundoff: its backward
takes the forward's output, which the dtype run keeps rounded; the
loss's weights rounded to the dtype in both runs, as autograd hands the dtype
output's gradient over in the dtype); the float32 tensors' gradients (gates,
parameters, initial states) and final states must equal the float32 run's
exactly. Gradients come back in each input's dtype. Then the errors: mixed
activation dtypes, a bfloat16 gate.
"""
import pytest

seqk = pytest.importorskip("seqk")
torch = pytest.importorskip("torch")
from seqk import torch as st  # noqa: E402  (needs torch)

if not seqk.has_op("gated_retention_backward") or not getattr(seqk._lib.lib, "seqk_gated_retention_ex", None):
    pytest.skip("the loaded libseqk has no _ex entry points", allow_module_level=True)

T, H, K, V = 13, 3, 5, 4
CU = [0, 5, 5, 6, 13]
DTYPES = [torch.bfloat16, torch.float16]


def _gen(shape, lo=-1.0, hi=1.0, seed=[0]):  # noqa: B006 - a counter
    seed[0] += 1
    g = torch.Generator().manual_seed(1000 + seed[0])
    return torch.rand(shape, generator=g, dtype=torch.float32) * (hi - lo) + lo


def _cu(varlen):
    return torch.tensor(CU, dtype=torch.int32) if varlen else None


def _states(varlen, shape):
    N = len(CU) - 1 if varlen else 2
    return _gen((N,) + shape, -0.5, 0.5)


def _case(op, varlen):
    """(act: name -> float32 tensor, fp: name -> float32 tensor, call(a, f) -> outputs)."""
    B = 1 if varlen else 2
    cu = _cu(varlen)
    if op == "attention_parallel":
        act = {"q": _gen((B, T, 4, K)), "k": _gen((B, T, 2, K)), "v": _gen((B, T, 2, V))}
        return act, {}, lambda a, f: (st.attention_parallel(a["q"], a["k"], a["v"], causal=True, cu_seqlens=cu),)
    act = {"q": _gen((B, T, H, K)), "k": _gen((B, T, H, K)), "v": _gen((B, T, H, V))}
    if op == "linear_attention":
        fp = {"s0": _states(varlen, (H, K, V))}
        return act, fp, lambda a, f: st.linear_attention(a["q"], a["k"], a["v"], initial_state=f["s0"],
                                                         output_final_state=True, cu_seqlens=cu, chunk=4)
    if op == "retention":
        fp = {"gamma": _gen((H,), 0.8, 1.0), "s0": _states(varlen, (H, K, V))}
        return act, fp, lambda a, f: st.retention(a["q"], a["k"], a["v"], f["gamma"], initial_state=f["s0"],
                                                  output_final_state=True, cu_seqlens=cu, chunk=4)
    if op == "gated_retention":
        fp = {"g": _gen((B, T, H), -1.0, 0.0), "s0": _states(varlen, (H, K, V))}
        return act, fp, lambda a, f: st.gated_retention(a["q"], a["k"], a["v"], f["g"], initial_state=f["s0"],
                                                        output_final_state=True, cu_seqlens=cu, chunk=4)
    if op == "deltanet":
        fp = {"beta": _gen((B, T, H), 0.0, 1.0), "g": _gen((B, T, H), -1.0, 0.0),
              "s0": _states(varlen, (H, K, V))}
        return act, fp, lambda a, f: st.deltanet(a["q"], a["k"], a["v"], f["beta"], f["g"], initial_state=f["s0"],
                                                 output_final_state=True, cu_seqlens=cu, chunk=4, l2norm_qk=True)
    if op == "titans":
        E = 3 * K * V + 8
        s0 = _states(varlen, (H, E))
        s0[..., 3 * K * V:] = 0.0  # position 0, reserved floats 0
        fp = {"eta": _gen((B, T, H), 0.0, 0.9), "theta": _gen((B, T, H), 0.0, 0.1),
              "alpha": _gen((B, T, H), 0.0, 0.5), "s0": s0}
        return act, fp, lambda a, f: st.titans(a["q"], a["k"], a["v"], f["eta"], f["theta"], f["alpha"],
                                               initial_state=f["s0"], output_final_state=True, cu_seqlens=cu,
                                               minibatch=4, l2norm_qk=True)
    if op == "mamba2":
        Hm, G, P, Nst = 4, 2, V, K
        act = {"x": _gen((B, T, Hm, P)), "B": _gen((B, T, G, Nst)), "C": _gen((B, T, G, Nst))}
        fp = {"dt": _gen((B, T, Hm)), "A": _gen((Hm,), -1.0, -0.1), "D": _gen((Hm,)),
              "dt_bias": _gen((Hm,), -0.5, 0.5), "s0": _states(varlen, (Hm, Nst, P))}
        return act, fp, lambda a, f: st.mamba2(a["x"], f["dt"], f["A"], a["B"], a["C"], f["D"],
                                               dt_bias=f["dt_bias"], dt_softplus=True, initial_state=f["s0"],
                                               output_final_state=True, cu_seqlens=cu, chunk=4)
    if op == "selective_scan":
        Dc, G, Nst = 6, 2, K
        act = {"u": _gen((B, T, Dc)), "B": _gen((B, T, G, Nst)), "C": _gen((B, T, G, Nst)),
               "z": _gen((B, T, Dc), -2.0, 2.0)}
        fp = {"dt": _gen((B, T, Dc)), "A": _gen((Dc, Nst), -1.0, -0.1), "D": _gen((Dc,)),
              "dt_bias": _gen((Dc,), -0.5, 0.5), "s0": _states(varlen, (Dc, Nst))}
        return act, fp, lambda a, f: st.selective_scan(a["u"], f["dt"], f["A"], a["B"], a["C"], f["D"], a["z"],
                                                       dt_bias=f["dt_bias"], dt_softplus=True,
                                                       initial_state=f["s0"], output_final_state=True,
                                                       cu_seqlens=cu)
    raise AssertionError(op)


OPS = ["attention_parallel", "linear_attention", "retention", "gated_retention", "mamba2", "selective_scan",
       "deltanet", "titans"]


def _run(call, act, fp, weights, dtype):
    a = {n: x.detach().to(dtype).clone().requires_grad_() for n, x in act.items()}
    f = {n: x.detach().clone().requires_grad_() for n, x in fp.items()}
    outs = call(a, f)
    outs = outs if isinstance(outs, tuple) else (outs,)
    loss = sum((o.float() * w.to(o.dtype).float()).sum() for o, w in zip(outs, weights))
    loss.backward()
    return outs, a, f


@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "f16"])
@pytest.mark.parametrize("varlen", [False, True], ids=["batch", "varlen"])
@pytest.mark.parametrize("op", OPS)
def test_dtype_matches_float32_rounded(op, varlen, dtype):
    act, fp, call = _case(op, varlen)
    act = {n: x.to(dtype).float() for n, x in act.items()}  # values the dtype holds
    with torch.no_grad():
        shapes = call(act, fp)
    shapes = shapes if isinstance(shapes, tuple) else (shapes,)
    weights = [_gen(tuple(o.shape)) for o in shapes]
    weights = [w.to(dtype) if i == 0 else w for i, w in enumerate(weights)]  # dout in the dtype
    o32, a32, f32 = _run(call, act, fp, [w.float() for w in weights], torch.float32)
    odt, adt, fdt = _run(call, act, fp, weights, dtype)
    assert odt[0].dtype == dtype
    assert torch.equal(odt[0], o32[0].to(dtype)), "%s: the %s output is not the float32 one rounded" % (op, dtype)
    for x32, xdt in zip(o32[1:], odt[1:]):  # final states: float32, identical
        assert xdt.dtype == torch.float32 and torch.equal(xdt, x32)
    u = 2.0 ** -8 if dtype == torch.bfloat16 else 2.0 ** -11
    for n in act:
        assert adt[n].grad.dtype == dtype, "%s: d%s comes back as %s" % (op, n, adt[n].grad.dtype)
        if op == "attention_parallel":
            # the backward takes the forward's o, which the dtype run saved
            # rounded (D = dout . o): within 2 u, not bit for bit
            ref = a32[n].grad.to(dtype).double()
            err = (adt[n].grad.double() - ref).norm() / ref.norm()
            assert err <= 2 * u, "%s: d%s: %.3g u from the float32 run's" % (op, n, err / u)
            continue
        assert torch.equal(adt[n].grad, a32[n].grad.to(dtype)), "%s: d%s is not the float32 one rounded" % (op, n)
    for n in fp:
        assert fdt[n].grad.dtype == torch.float32
        assert torch.equal(fdt[n].grad, f32[n].grad), "%s: d%s differs from the float32 run" % (op, n)


def test_mixed_activation_dtypes_rejected():
    q = _gen((1, T, H, K)).to(torch.bfloat16)
    k = _gen((1, T, H, K)).to(torch.float16)
    v = _gen((1, T, H, V)).to(torch.bfloat16)
    g = _gen((1, T, H), -1.0, 0.0)
    with pytest.raises(TypeError, match="one dtype"):
        st.gated_retention(q, k, v, g)


def test_reduced_gate_rejected():
    q, k = _gen((1, T, H, K)).to(torch.bfloat16), _gen((1, T, H, K)).to(torch.bfloat16)
    v = _gen((1, T, H, V)).to(torch.bfloat16)
    g = _gen((1, T, H), -1.0, 0.0).to(torch.bfloat16)
    with pytest.raises(TypeError, match="stay float32 with torch.bfloat16"):
        st.gated_retention(q, k, v, g)


def test_plain_op_bfloat16_output_dtype():
    q, k = _gen((2, T, H, K)).to(torch.bfloat16), _gen((2, T, H, K)).to(torch.bfloat16)
    v = _gen((2, T, H, V)).to(torch.bfloat16)
    o = seqk.retention(q, k, v, mode="recurrent")
    ref = seqk.retention(q.float(), k.float(), v.float(), mode="recurrent")
    assert o.dtype == torch.bfloat16 and torch.equal(o, ref.to(torch.bfloat16))
