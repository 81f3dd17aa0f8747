"""seqk.torch.titans: PyTorch autograd through the Titans linear memory
(skipped when torch is not importable or the library has no
seqk_titans_backward).

The gradients of L = <o, W_o> + <final_state, W_s> (random W over the output
and the final state) from seqk.torch.titans (float32) are compared with
PyTorch autograd through a plain-PyTorch float64 token loop of the Titans
recurrence (torch_reference.py, from include/seqk.h), relative error
max|g - g_ref| / max|g_ref| <= 1e-4: T = 13 (prime), H = 3, K = 5 != V = 4,
mini-batches 1, 4 and 5, the L2 norm on and off, a batch of 2 with initial
states at random positions (Mhat read where the position is not 0), varlen
(an empty and a length-1 sequence) with initial states, and a plain call
without states. The gradient flows into q, k, v, eta, theta, alpha and the
initial state (its position and reserved floats get 0). Then one SGD step
of a tiny layer, the no_grad decoding path, and argument errors.
"""
import pytest

seqk = pytest.importorskip("seqk")
torch = pytest.importorskip("torch")
from seqk import torch as st  # noqa: E402  (needs torch)
from torch_reference import R, rel  # noqa: E402  (the plain-PyTorch references; needs torch)

if not seqk.has_op("titans_backward"):
    pytest.skip("the loaded libseqk has no seqk_titans_backward", allow_module_level=True)

TOL = 1e-4
T, H, K, V = 13, 3, 5, 4
KV = K * V
E = 3 * KV + 8
CU = [0, 5, 5, 6, 13]  # 4 sequences: lengths 5, 0, 1, 7


titans_ref = R.titans


def gen(shape, lo=None, hi=None, seed=[0]):  # noqa: B006 - a counter
    seed[0] += 1
    g = torch.Generator().manual_seed(2000 + seed[0])
    if lo is None:
        return torch.randn(*shape, generator=g)
    return lo + (hi - lo) * torch.rand(*shape, generator=g)


def inputs(B, l2norm):
    q = gen((B, T, H, K))
    k = gen((B, T, H, K))
    if not l2norm:  # keys of norm in [0.6, 1], the stable range
        k = k * gen((B, T, H, 1), 0.6, 1.0) / k.norm(dim=-1, keepdim=True)
    v = gen((B, T, H, V))
    eta = gen((B, T, H), 0.3, 1.0)
    eta[:, ::7] = 0.0
    eta[:, 1::5] = 1.0
    theta = gen((B, T, H), 0.0, 0.5)
    alpha = gen((B, T, H), 0.0, 0.3)
    alpha[:, 3::8] = 1.0
    return q, k, v, eta, theta, alpha


def state(N, b):
    s = gen((N, H, E), -0.5, 0.5)
    pos = torch.randint(0, b, (N, H), generator=torch.Generator().manual_seed(7))
    s[..., 3 * KV] = pos.float()
    s[..., 3 * KV + 1:] = 0.0
    return s


CONFIGS = {"batch": (2, None, True), "varlen": (1, CU, True), "plain": (2, None, False)}


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("b", [1, 4, 5])
@pytest.mark.parametrize("l2norm", [False, True])
def test_titans_grad(config, b, l2norm):
    B, cu, states = CONFIGS[config]
    N = B if cu is None else len(cu) - 1
    names = ["q", "k", "v", "eta", "theta", "alpha"]
    base = dict(zip(names, inputs(B, l2norm)))
    if states:
        base["initial_state"] = state(N, b)
    opts = dict(minibatch=b, l2norm_qk=l2norm, scale=0.7, output_final_state=states,
                cu_seqlens=None if cu is None else torch.tensor(cu, dtype=torch.int32))
    l32 = {n: x.detach().clone().requires_grad_(True) for n, x in base.items()}
    l64 = {n: x.detach().double().requires_grad_(True) for n, x in base.items()}
    r32 = st.titans(*[l32[n] for n in names], initial_state=l32.get("initial_state"), **opts)
    r64 = titans_ref(*[l64[n] for n in names], initial_state=l64.get("initial_state"), **opts)
    r32 = r32 if isinstance(r32, tuple) else (r32,)
    r64 = r64 if isinstance(r64, tuple) else (r64,)
    W = [gen(o.shape).double() for o in r64]
    for a, c in zip(r32, r64):
        assert a.dtype == torch.float32 and rel(a, c) < 1e-5
    sum((a.double() * w).sum() for a, w in zip(r32, W)).backward()
    sum((c * w).sum() for c, w in zip(r64, W)).backward()
    for n in l32:
        g32, g64 = l32[n].grad, l64[n].grad
        assert g32 is not None and g32.dtype == torch.float32 and g32.shape == l32[n].shape, n
        e = rel(g32, g64)
        assert e <= TOL, "titans: d%s rel err %.2e (config %s, b %d)" % (n, e, config, b)
    if states:  # the position and reserved floats get a zero gradient
        assert torch.all(l32["initial_state"].grad[..., 3 * KV:] == 0)


def test_titans_sgd_step():
    """One SGD step of a tiny layer (projections into q, k, v and the gates)
    through seqk and through the reference: same loss, same update."""
    torch.manual_seed(3)
    x = gen((1, T, 8))
    P = gen((8, H * (2 * K + V + 3))) * 0.3
    results = []
    for fn, dtype in ((st.titans, torch.float32), (titans_ref, torch.float64)):
        w = P.to(dtype).clone().requires_grad_(True)
        y = x.to(dtype) @ w
        q, k, v = (y[..., : H * K].reshape(1, T, H, K), y[..., H * K: 2 * H * K].reshape(1, T, H, K),
                   y[..., 2 * H * K: 2 * H * K + H * V].reshape(1, T, H, V))
        gates = torch.sigmoid(y[..., 2 * H * K + H * V:].reshape(1, T, H, 3))
        eta, theta, alpha = (gates[..., i].contiguous() for i in range(3))
        o = fn(q.contiguous(), k.contiguous(), v.contiguous(), eta, 0.5 * theta, 0.2 * alpha, minibatch=4,
               l2norm_qk=True)
        loss = (o * o).sum()
        loss.backward()
        results.append((float(loss.detach()), (w - 0.01 * w.grad).detach().double()))
    (l32, w32), (l64, w64) = results
    assert abs(l32 - l64) <= 1e-5 * abs(l64)
    assert rel(w32 - P.double(), w64 - P.double()) <= 1e-4


def test_titans_no_grad_decoding():
    """Under no_grad: a prefill then tokens decoded in place in the recurrent
    mode equal one call over the whole."""
    q, k, v, eta, theta, alpha = inputs(1, True)
    with torch.no_grad():
        o_all, s_all = st.titans(q, k, v, eta, theta, alpha, minibatch=4, l2norm_qk=True, output_final_state=True)
        o1, S = st.titans(q[:, :9], k[:, :9], v[:, :9], eta[:, :9], theta[:, :9], alpha[:, :9], minibatch=4,
                          l2norm_qk=True, output_final_state=True)
        outs = [o1]
        for t in range(9, T):
            sl = slice(t, t + 1)
            outs.append(st.titans(q[:, sl], k[:, sl], v[:, sl], eta[:, sl].contiguous(), theta[:, sl].contiguous(),
                                  alpha[:, sl].contiguous(), initial_state=S, final_state_out=S, mode="recurrent",
                                  minibatch=4, l2norm_qk=True))
    assert rel(torch.cat(outs, 1), o_all) < 1e-5
    assert rel(S, s_all) < 1e-5


def test_titans_errors():
    q, k, v, eta, theta, alpha = (x.requires_grad_(True) for x in inputs(1, False))
    with pytest.raises(TypeError, match="float32"):
        st.titans(q, k, v, eta.double(), theta, alpha, minibatch=4)
    with pytest.raises(ValueError, match="contiguous"):
        st.titans(q, k, v, eta.transpose(1, 2).contiguous().transpose(1, 2), theta, alpha, minibatch=4)
    with pytest.raises(ValueError, match="decoding without gradients"):
        st.titans(q, k, v, eta, theta, alpha, minibatch=4, mode="recurrent")
    with pytest.raises(TypeError):
        st.titans(q, k, v, eta, theta, alpha)  # minibatch is required
