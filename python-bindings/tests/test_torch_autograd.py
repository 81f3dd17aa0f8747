"""seqk.torch: PyTorch autograd through seqk's ops (skipped when torch is not
importable).

For every op, the gradients of a loss L = sum_i <out_i, W_i> (random W_i over
the output and the final state) from seqk.torch (float32) are compared with
PyTorch autograd through the plain-PyTorch float64 references of torch_reference.py (token
loops written from the math in include/seqk.h), relative error
max|g - g_ref| / max|g_ref| <= 1e-4, on odd shapes: T = 13 (prime), H = 3,
K = 5 != V = 4, a batch of 2 with initial states and a chunk that does not
divide T, varlen through cu_seqlens (an empty and a length-1 sequence) with
initial states, and a plain call without states. Then one SGD step of a tiny
one-layer model per op (seqk vs the reference: same loss to 1e-5, same
update to 1e-4), the no_grad decoding path, and the argument errors (dtype,
device, layout, shape, non-tensor), a test each with the message checked.
"""
import subprocess
import sys

import pytest

seqk = pytest.importorskip("seqk")
torch = pytest.importorskip("torch")
from seqk import torch as st  # noqa: E402  (needs torch)

F = torch.nn.functional
TOL = 1e-4
T, H, K, V = 13, 3, 5, 4
CU = [0, 5, 5, 6, 13]  # 4 sequences: lengths 5, 0, 1, 7

_OPS = {"attention_parallel": "attention_parallel_backward", "linear_attention": "linear_attention_backward",
        "retention": "retention_backward", "gated_retention": "gated_retention_backward",
        "mamba2": "mamba2_backward", "selective_scan": "selective_scan_backward", "deltanet": "deltanet_backward"}
_missing = [b for b in _OPS.values() if not seqk.has_op(b)]
if _missing:
    pytest.skip("the loaded libseqk does not export %s" % ", ".join(_missing), allow_module_level=True)


from torch_reference import R, rel  # noqa: E402  (the plain-PyTorch references; needs torch)


# --------------------------------------------------------------------------
# the gradient comparison
# --------------------------------------------------------------------------

# name -> (B, cu_seqlens, chunk, with initial state and final state)
CONFIGS = {"batch": (2, None, 4, True), "varlen": (1, CU, 0, True), "plain": (2, None, 0, False)}


def gen(shape, lo=None, hi=None, seed=[0]):  # noqa: B006 - a counter
    seed[0] += 1
    g = torch.Generator().manual_seed(1000 + seed[0])
    if lo is None:
        return torch.randn(*shape, generator=g)
    return lo + (hi - lo) * torch.rand(*shape, generator=g)


def compare(name, pos, kw, opts, tol=TOL):
    """pos: [(arg name, float32 tensor)] passed positionally, kw: {name: tensor
    or None} keyword tensors, opts: other keywords. Runs seqk.torch (float32)
    and R (float64), L = sum_i <out_i, W_i>, compares the outputs (1e-5) and
    the gradients of every tensor (tol). Returns the worst gradient error."""
    leaves32, leaves64 = {}, {}
    for n, x in list(pos) + list(kw.items()):
        if x is not None:
            leaves32[n] = x.detach().clone().requires_grad_(True)
            leaves64[n] = x.detach().double().requires_grad_(True)
    cu = opts.get("cu_seqlens")
    opts64 = dict(opts)
    outs = {}
    for tag, fn, leaves, o in (("seqk", getattr(st, name), leaves32, opts), ("ref", getattr(R, name), leaves64,
                                                                               opts64)):
        args = [leaves[n] for n, _ in pos]
        kws = {n: (leaves[n] if x is not None else None) for n, x in kw.items()}
        r = fn(*args, **kws, **o)
        outs[tag] = r if isinstance(r, tuple) else (r,)
    assert len(outs["seqk"]) == len(outs["ref"])
    W = [gen(o.shape).double() for o in outs["ref"]]
    for i, (a, b) in enumerate(zip(outs["seqk"], outs["ref"])):
        assert a.dtype == torch.float32 and a.shape == b.shape
        assert rel(a, b) < 1e-5, "%s output %d: rel err %.2e" % (name, i, rel(a, b))
    sum((a.double() * w).sum() for a, w in zip(outs["seqk"], W)).backward()
    sum((b * w).sum() for b, w in zip(outs["ref"], W)).backward()
    worst = 0.0
    for n in leaves32:
        g32, g64 = leaves32[n].grad, leaves64[n].grad
        assert g64 is not None, n
        assert g32 is not None, "%s: no gradient for %s" % (name, n)
        assert g32.dtype == torch.float32 and g32.shape == leaves32[n].shape
        e = rel(g32, g64)
        assert e <= tol, "%s: d%s rel err %.2e (cu_seqlens=%s)" % (name, n, e, cu)
        worst = max(worst, e)
    return worst


def _cfg(config):
    B, cu, chunk, states = CONFIGS[config]
    N = B if cu is None else len(cu) - 1
    opts = {"cu_seqlens": None if cu is None else torch.tensor(cu, dtype=torch.int32),
            "output_final_state": states}
    return B, N, chunk, states, opts


@pytest.mark.parametrize("config", ["batch", "varlen"])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("Hkv", [3, 1])
def test_attention_parallel_grad(config, causal, Hkv):
    B, N, _, _, opts = _cfg(config)
    del opts["output_final_state"]
    q, k, v = gen((B, T, H, K)), gen((B, T, Hkv, K)), gen((B, T, Hkv, V))
    compare("attention_parallel", [("q", q), ("k", k), ("v", v)], {}, dict(opts, causal=causal, scale=0.7))


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("feature_map,normalize", [("identity", False), ("elu1", False), ("elu1", True),
                                                   ("identity", True)])
def test_linear_attention_grad(config, feature_map, normalize):
    B, N, chunk, states, opts = _cfg(config)
    pos = normalize and feature_map == "identity"  # keep the normaliser away from 0
    q, k = (gen((B, T, H, K), 0.1, 1.0) if pos else gen((B, T, H, K)) for _ in range(2))
    kw = {"initial_state": gen((N, H, K, V)) if states else None}
    if normalize:
        kw["initial_z"] = gen((N, H, K), 0.5, 1.0) if states else None
    compare("linear_attention", [("q", q), ("k", k), ("v", gen((B, T, H, V)))], kw,
            dict(opts, chunk=chunk, normalize=normalize, feature_map=feature_map))


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("gamma", ["given", "default"])
def test_retention_grad(config, gamma):
    B, N, chunk, states, opts = _cfg(config)
    pos = [("q", gen((B, T, H, K))), ("k", gen((B, T, H, K))), ("v", gen((B, T, H, V)))]
    if gamma == "given":
        pos.append(("gamma", gen((H,), 0.6, 0.99)))  # a gradient for gamma too
    compare("retention", pos, {"initial_state": gen((N, H, K, V)) if states else None},
            dict(opts, chunk=chunk, scale=0.8))


@pytest.mark.parametrize("config", list(CONFIGS))
def test_gated_retention_grad(config):
    B, N, chunk, states, opts = _cfg(config)
    pos = [("q", gen((B, T, H, K))), ("k", gen((B, T, H, K))), ("v", gen((B, T, H, V))),
           ("g", gen((B, T, H), -1.5, 0.0))]
    compare("gated_retention", pos, {"initial_state": gen((N, H, K, V)) if states else None},
            dict(opts, chunk=chunk))


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("G", [1, 3])
def test_mamba2_grad(config, G):
    B, N, chunk, states, opts = _cfg(config)
    P, Nst = 4, 5
    pos = [("x", gen((B, T, H, P))), ("dt", gen((B, T, H))), ("A", -gen((H,), 0.5, 1.5)),
           ("B", gen((B, T, G, Nst))), ("C", gen((B, T, G, Nst))), ("D", gen((H,)))]
    kw = {"dt_bias": gen((H,), -0.5, 0.5), "initial_state": gen((N, H, Nst, P)) if states else None}
    compare("mamba2", pos, kw, dict(opts, chunk=chunk, dt_softplus=True))


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("extras", [True, False])
def test_selective_scan_grad(config, extras):
    B, N, _, states, opts = _cfg(config)
    Dc, G, Nst = 6, 2, 5
    pos = [("u", gen((B, T, Dc))), ("dt", gen((B, T, Dc), -1.0, 0.5)), ("A", -gen((Dc, Nst), 0.5, 1.5)),
           ("B", gen((B, T, G, Nst))), ("C", gen((B, T, G, Nst)))]
    kw = {"initial_state": gen((N, Dc, Nst)) if states else None}
    if extras:
        pos += [("D", gen((Dc,))), ("z", gen((B, T, Dc)))]
        kw["dt_bias"] = gen((Dc,), -0.5, 0.5)
    compare("selective_scan", pos, kw, dict(opts, dt_softplus=extras))


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("gated", [True, False])
def test_deltanet_grad(config, gated):
    B, N, chunk, states, opts = _cfg(config)
    # gated: raw q, k through the in-kernel L2 norm; plain: keys of norm <= 1 given
    q, k = gen((B, T, H, K)), gen((B, T, H, K))
    if not gated:
        k = (k / (k.norm(dim=-1, keepdim=True) + 0.2)).contiguous()
    pos = [("q", q), ("k", k), ("v", gen((B, T, H, V))), ("beta", gen((B, T, H), 0.1, 0.9))]
    if gated:
        pos.append(("g", gen((B, T, H), -1.0, 0.0)))
    compare("deltanet", pos, {"initial_state": gen((N, H, K, V)) * 0.3 if states else None},
            dict(opts, chunk=chunk, l2norm_qk=gated))


def test_gradient_through_final_state_only():
    """o unused: autograd hands the backward a zero dout; only the final state
    carries the loss."""
    q, k, v, g = gen((2, T, H, K)), gen((2, T, H, K)), gen((2, T, H, V)), gen((2, T, H), -1, 0)
    s0 = gen((2, H, K, V))
    grads = []
    for fn, dt in ((st.gated_retention, torch.float32), (R.gated_retention, torch.float64)):
        xs = [x.detach().to(dt).clone().requires_grad_(True) for x in (q, k, v, g, s0)]
        o, S = fn(*xs[:4], initial_state=xs[4], output_final_state=True)
        (S.double() ** 2).sum().backward()
        grads.append([x.grad for x in xs])
    assert grads[1][0] is None and float(grads[0][0].abs().max()) == 0  # q does not reach S
    for a, b in list(zip(*grads))[1:]:
        assert rel(a, b) < TOL


def test_shared_input_accumulates():
    """The same tensor as q and k: autograd sums both gradients."""
    x, v, g = gen((1, T, H, K)), gen((1, T, H, V)), gen((1, T, H), -1, 0)
    x32, x64 = x.clone().requires_grad_(True), x.double().requires_grad_(True)
    st.gated_retention(x32, x32, v, g).sum().backward()
    R.gated_retention(x64, x64, v.double(), g.double()).sum().backward()
    assert rel(x32.grad, x64.grad) < TOL


# --------------------------------------------------------------------------
# one training step of a tiny one-layer model
# --------------------------------------------------------------------------

DM = 8  # model width


def _layer(name, impl, x, P):
    """A one-layer mixer: projections of x [B, T, DM] into the op's inputs, the
    op (impl: seqk.torch or R), an output projection."""
    B_, T_ = x.shape[:2]
    f = getattr(impl, name)

    def proj(w, *shape):
        return (x @ P[w]).reshape(B_, T_, *shape)

    if name == "attention_parallel":
        o = f(proj("q", H, K), proj("k", H, K), proj("v", H, V), causal=True)
    elif name == "linear_attention":
        o = f(proj("q", H, K), proj("k", H, K), proj("v", H, V), feature_map="elu1", normalize=True)
    elif name == "retention":
        o = f(proj("q", H, K), proj("k", H, K), proj("v", H, V), torch.sigmoid(P["gl"]))
    elif name == "gated_retention":
        o = f(proj("q", H, K), proj("k", H, K), proj("v", H, V), F.logsigmoid(proj("g", H)))
    elif name == "deltanet":
        o = f(proj("q", H, K), proj("k", H, K), proj("v", H, V), torch.sigmoid(proj("b", H)),
              F.logsigmoid(proj("g", H)), l2norm_qk=True)
    elif name == "mamba2":
        o = f(proj("v", H, V), proj("g", H), -torch.exp(P["al"]), proj("bm", 1, K), proj("cm", 1, K), P["d"],
              dt_bias=P["db"], dt_softplus=True)
    elif name == "selective_scan":
        o = f(proj("u", H * V), proj("uu", H * V), -torch.exp(P["as"]), proj("bm", 1, K), proj("cm", 1, K),
              P["ds"], proj("z", H * V), dt_bias=P["dbs"], dt_softplus=True)
    return o.reshape(B_, T_, H * V) @ P["o"]


def _params(gen_):
    shapes = {"q": (DM, H * K), "k": (DM, H * K), "v": (DM, H * V), "g": (DM, H), "b": (DM, H), "u": (DM, H * V),
              "uu": (DM, H * V), "z": (DM, H * V), "bm": (DM, K), "cm": (DM, K), "o": (H * V, DM), "gl": (H,), "al": (H,), "d": (H,), "db": (H,),
              "as": (H * V, K), "ds": (H * V,), "dbs": (H * V,)}
    return {n: gen_(s) * (0.4 if len(s) == 2 else 1.0) for n, s in shapes.items()}


@pytest.mark.parametrize("name", list(_OPS))
def test_sgd_step_matches_reference(name):
    """Same seed, same data: one SGD step with seqk's function (float32) and
    with the float64 reference gives the same loss (1e-5) and update (1e-4)."""
    torch.manual_seed(7)
    P0 = _params(lambda s: torch.randn(*s))
    x, y = torch.randn(2, T, DM), torch.randn(2, T, DM)
    res = {}
    for tag, impl, dt in (("seqk", st, torch.float32), ("ref", R, torch.float64)):
        P = {n: torch.nn.Parameter(p.to(dt).clone()) for n, p in P0.items()}
        opt = torch.optim.SGD(P.values(), lr=0.1)
        opt.zero_grad()
        loss = F.mse_loss(_layer(name, impl, x.to(dt), P), y.to(dt))
        loss.backward()
        opt.step()
        res[tag] = (loss.item(), {n: (P[n].detach().double() - P0[n].double()) for n in P if P[n].grad is not None})
    (l32, d32), (l64, d64) = res["seqk"], res["ref"]
    assert abs(l32 - l64) <= 1e-5 * abs(l64), (l32, l64)
    assert set(d32) == set(d64) and d64
    for n in d64:
        if float(d64[n].abs().max()) == 0:
            continue
        e = rel(d32[n], d64[n])
        assert e <= 1e-4, "%s: update of %s rel err %.2e" % (name, n, e)


# --------------------------------------------------------------------------
# decoding without gradients (the plain ops, recurrent mode, state carried)
# --------------------------------------------------------------------------


def test_no_grad_decoding_matches_training_forward():
    q, k, v = gen((1, T, H, K)), gen((1, T, H, K)), gen((1, T, H, V))
    g = gen((1, T, H), -1, 0)
    o_full = st.gated_retention(q, k, v, g)
    with torch.no_grad():
        P = 6
        o, S = st.gated_retention(q[:, :P].contiguous(), k[:, :P].contiguous(), v[:, :P].contiguous(),
                                  g[:, :P].contiguous(), output_final_state=True)
        steps = [o]
        for t in range(P, T):
            x = [a[:, t:t + 1].contiguous() for a in (q, k, v, g)]
            steps.append(seqk.gated_retention(*x, mode="recurrent", initial_state=S, final_state_out=S))
    assert rel(torch.cat(steps, 1), o_full) < 1e-5


def test_import_seqk_does_not_import_torch():
    code = "import sys, seqk; assert 'torch' not in sys.modules, 'seqk imported torch'; print('ok')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


# --------------------------------------------------------------------------
# errors: never a silent copy
# --------------------------------------------------------------------------


def _qkvg():
    return gen((1, 7, 2, 4)), gen((1, 7, 2, 4)), gen((1, 7, 2, 3)), gen((1, 7, 2), -1, 0)


def test_error_wrong_dtype():
    q, k, v, g = _qkvg()
    with pytest.raises(TypeError, match=r"seqk.torch.gated_retention: k must be a torch.float32 tensor, got "
                                        r"torch.float64 .*never copies"):
        st.gated_retention(q, k.double(), v, g)
    with pytest.raises(TypeError, match=r"seqk.torch.attention_parallel: k is torch.float32 but q is "
                                        r"torch.float16: every activation tensor of one call .* has one dtype"):
        st.attention_parallel(q.half(), k, v)  # float16 activations are taken, but all of one dtype
    with pytest.raises(TypeError, match=r"seqk.torch.gated_retention: g must be a torch.float32 tensor, got "
                                        r"torch.float16 \(gates, parameters and states stay float32"):
        st.gated_retention(q.half(), k.half(), v.half(), g.half())


def test_error_wrong_device():
    q, k, v, g = _qkvg()
    with pytest.raises(ValueError, match=r"seqk.torch.gated_retention: v is on meta but q is on cpu: every tensor "
                                         r"of one call must be on one device"):
        st.gated_retention(q, k, v.to("meta"), g)
    m = [x.to("meta") for x in (q, k, v, g)]
    with pytest.raises(ValueError, match=r"q is on meta but ctx is a CPU context"):
        st.gated_retention(*m)
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"is on cuda:0 but ctx is a CPU context"):
            st.gated_retention(*(x.cuda() for x in (q, k, v, g)), ctx=seqk.default_context())


def test_error_non_contiguous():
    q, k, v, g = _qkvg()
    qt = gen((1, 7, 4, 2)).transpose(2, 3)  # the right shape, strided
    with pytest.raises(ValueError, match=r"seqk.torch.gated_retention: q must be contiguous, got shape "
                                         r"\(1, 7, 2, 4\) with strides .*q.contiguous\(\)"):
        st.gated_retention(qt, k, v, g)
    s0 = gen((1, 2, 3, 4)).transpose(2, 3)
    with pytest.raises(ValueError, match=r"initial_state must be contiguous"):
        st.gated_retention(q, k, v, g, initial_state=s0)


def test_error_shape_and_type():
    q, k, v, g = _qkvg()
    with pytest.raises(ValueError, match=r"seqk.gated_retention: g has shape \(1, 7, 3\), expected \[B, T, H\]"):
        st.gated_retention(q, k, v, gen((1, 7, 3)))
    with pytest.raises(TypeError, match=r"seqk.torch.gated_retention: q must be a torch.Tensor, got ndarray"):
        st.gated_retention(q.numpy(), k, v, g)
    with pytest.raises(TypeError, match=r"output_final_state must be a bool"):
        st.gated_retention(q, k, v, g, output_final_state=1)
