"""seqk.torch against finite differences of itself (torch.autograd.gradcheck).

test_torch_autograd.py compares seqk's gradients with autograd through
float64 references; this checks each op's backward against central
differences of its own forward, with no reference in between: the function
under test takes float64 leaves, runs the float32 op and returns float64, so
gradcheck's Jacobians are those of seqk's forward (rounded in float32: eps
3e-3 and tolerances 3e-3 leave room for that rounding, while a wrong gradient
is off by O(1)). Tiny odd shapes with a chunk that does not divide T, an
initial state and the final state as a second output; gradcheck also checks
an undefined output gradient and that the backward is deterministic.
"""
import pytest

seqk = pytest.importorskip("seqk")
torch = pytest.importorskip("torch")
from seqk import torch as st  # noqa: E402  (needs torch)

B, T, H, K, V = 1, 7, 2, 3, 2
CHECK = dict(eps=3e-3, atol=3e-3, rtol=3e-3, nondet_tol=0.0)


def leaf(*shape, lo=-1.0, hi=1.0, seed=[0]):  # noqa: B006 - a counter
    seed[0] += 1
    g = torch.Generator().manual_seed(77 + seed[0])
    return (lo + (hi - lo) * torch.rand(*shape, generator=g, dtype=torch.float64)).requires_grad_(True)


def as32(fn):
    """fn on float32 copies of float64 leaves, its outputs as float64."""
    def wrapped(*xs):
        out = fn(*[x.float() for x in xs])
        return tuple(o.double() for o in out) if isinstance(out, tuple) else out.double()
    return wrapped


def check(fn, *xs):
    assert torch.autograd.gradcheck(as32(fn), xs, **CHECK)


def test_linear_attention():
    check(lambda q, k, v, s0: st.linear_attention(q, k, v, scale=0.7, initial_state=s0, output_final_state=True,
                                                  chunk=4),
          leaf(B, T, H, K), leaf(B, T, H, K), leaf(B, T, H, V), leaf(B, H, K, V))


def test_retention_with_gamma():
    check(lambda q, k, v, gm, s0: st.retention(q, k, v, gm, scale=0.8, initial_state=s0, output_final_state=True,
                                               chunk=4),
          leaf(B, T, H, K), leaf(B, T, H, K), leaf(B, T, H, V), leaf(H, lo=0.6, hi=0.95), leaf(B, H, K, V))


def test_gated_retention():
    check(lambda q, k, v, g, s0: st.gated_retention(q, k, v, g, initial_state=s0, output_final_state=True, chunk=4),
          leaf(B, T, H, K), leaf(B, T, H, K), leaf(B, T, H, V), leaf(B, T, H, lo=-1.0, hi=-0.05),
          leaf(B, H, K, V))


def test_mamba2():
    P, Nst = 2, 3
    check(lambda x, dt, A, Bm, Cm, D, bias, s0: st.mamba2(x, dt, A, Bm, Cm, D, dt_bias=bias, initial_state=s0,
                                                          output_final_state=True, chunk=4, dt_softplus=True),
          leaf(B, T, H, P), leaf(B, T, H), leaf(H, lo=-1.5, hi=-0.5), leaf(B, T, 1, Nst), leaf(B, T, 1, Nst),
          leaf(H), leaf(H, lo=-0.5, hi=0.5), leaf(B, H, Nst, P))


def test_selective_scan():
    Dc, Nst = 3, 2
    check(lambda u, dt, A, Bm, Cm, D, z, s0: st.selective_scan(u, dt, A, Bm, Cm, D, z, initial_state=s0,
                                                               output_final_state=True, dt_softplus=True),
          leaf(B, T, Dc), leaf(B, T, Dc, lo=-1.0, hi=0.5), leaf(Dc, Nst, lo=-1.5, hi=-0.5), leaf(B, T, 1, Nst),
          leaf(B, T, 1, Nst), leaf(Dc), leaf(B, T, Dc), leaf(B, Dc, Nst))


def test_gated_deltanet():
    check(lambda q, k, v, beta, g, s0: st.deltanet(q, k, v, beta, g, initial_state=s0, output_final_state=True,
                                                   chunk=4, l2norm_qk=True),
          leaf(B, T, H, K), leaf(B, T, H, K), leaf(B, T, H, V), leaf(B, T, H, lo=0.1, hi=0.9),
          leaf(B, T, H, lo=-1.0, hi=-0.05), leaf(B, H, K, V, lo=-0.3, hi=0.3))


@pytest.mark.parametrize("causal", [True, False])
def test_attention_parallel(causal):
    check(lambda q, k, v: st.attention_parallel(q, k, v, causal=causal, scale=0.7),
          leaf(B, T, H, K), leaf(B, T, 1, K), leaf(B, T, 1, V))


def test_titans():
    check(lambda q, k, v, eta, theta, alpha: st.titans(q, k, v, eta, theta, alpha, minibatch=3, l2norm_qk=True),
          leaf(B, T, H, K), leaf(B, T, H, K), leaf(B, T, H, V), leaf(B, T, H, lo=0.5, hi=0.9),
          leaf(B, T, H, lo=0.0, hi=0.2), leaf(B, T, H, lo=0.0, hi=0.1))
