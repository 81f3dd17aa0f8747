"""One training step of a small two-layer model through seqk.torch equals the
same step through the plain-PyTorch references (issue #17; skipped without
torch).

The model: a token embedding, then per layer the projections of x into the
mixer's inputs (q, k, v and the gates of the op, each by its own linear
layer, gates through logsigmoid / sigmoid / softplus as models make them),
the mixer, an output projection, a residual and a LayerNorm; then a
readout and the cross-entropy against next tokens. It is built once with
seqk.torch's functional op (float32) and with torch_reference.R (the
float64 token loops of the autograd tests) in float64 and in float32, from
one seed with the same initial parameters (the state dict copied), and one
optimizer step (SGD, Adam) is taken on the same batch. For every op (softmax
attention, linear attention, retention, gated retention, Mamba2, the
selective scan, DeltaNet, gated DeltaNet, Titans), on odd shapes (T = 13
prime, H = 3, K = 5 != V = 4) as a batch of 2 and as varlen (cu_seqlens, one
sequence of length 1):

  loss       |l - l_ref| <= 1e-5 |l_ref|
  update     ||dp - dp_ref|| / ||dp_ref|| <= 1e-4 for every parameter p,
             dp = p_after - p_before (norm-wise, over the whole tensor)

against the float64 reference and against the float32 reference. Against
float64, dp_ref is the reference's step as a float32 parameter receives it,
float32(p_before + dp_64) - p_before: storing p_after in float32 rounds it by
up to half an ulp of p, which is up to 3.6e-4 of the update of a parameter
with a small gradient (the selective scan's A_log here), in PyTorch's own
float32 model as in seqk's. Adam runs with eps = 1e-6: its first step is
lr g / (|g| + eps), which multiplies a gradient's rounding by up to
lr / (4 eps) where |g| ~ eps; with the default 1e-8 one entry of linear
attention's k projection (gradient 7e-8) moves by 1.3e-4 of the update's
norm, through seqk and through the float32 reference alike (7e-5 with
1e-6). Measured, seqk vs float64 over the 36 cases: loss <= 1.3e-7 relative,
updates <= 7.0e-5 (that Adam case; SGD <= 3.6e-5); vs float32 <= 5.4e-5.
Against the float32 reference the bound adds that reference's own distance
from float64: Adam's first step on gated retention's layer-0 gate projection
(gradients down to 9e-8 beside eps) moves PyTorch's float32 update 5.8e-5
from float64's and seqk's 7.3e-5, so the two float32 updates differ by 1.3e-4
while each is within 1e-4 of float64.
"""
import pytest

seqk = pytest.importorskip("seqk")
torch = pytest.importorskip("torch")
from seqk import torch as st  # noqa: E402  (needs torch)
from torch_reference import R  # noqa: E402  (the plain-PyTorch references; needs torch)

if not all(seqk.has_op(n) for n in ("attention_parallel_backward", "deltanet_backward", "titans_backward",
                                    "selective_scan_backward", "mamba2_backward")):
    pytest.skip("the loaded libseqk lacks a backward", allow_module_level=True)

F = torch.nn.functional
nn = torch.nn
LOSS_TOL, UPDATE_TOL = 1e-5, 1e-4
T, H, K, V = 13, 3, 5, 4
DM, VOCAB, LAYERS = 12, 11, 2
CU = [0, 5, 6, 13]  # varlen: sequences of 5, 1 and 7 tokens
OPS = ["attention", "linear_attention", "retention", "gated_retention", "mamba2", "selective_scan", "deltanet",
       "gated_deltanet", "titans"]
NST = K  # the state size of Mamba2 / the selective scan
DC = H * V  # the selective scan's channels


class Mixer(nn.Module):
    """The projections of one layer into the op's inputs, the op (impl:
    seqk.torch or R), the output projection."""

    def __init__(self, op):
        super().__init__()
        self.op = op
        lin = {}
        if op in ("mamba2", "selective_scan"):
            lin.update(x=DC, dt=H if op == "mamba2" else DC, B=NST, C=NST)
            if op == "selective_scan":
                lin["z"] = DC
        else:
            lin.update(q=H * K, k=H * K, v=H * V)
        if op == "gated_retention" or op == "gated_deltanet":
            lin["g"] = H
        if op in ("deltanet", "gated_deltanet"):
            lin["beta"] = H
        if op == "titans":
            lin.update(eta=H, theta=H, alpha=H)
        self.proj = nn.ModuleDict({n: nn.Linear(DM, d, bias=n not in ("q", "k", "v")) for n, d in lin.items()})
        self.out = nn.Linear(H * V, DM, bias=False)
        if op == "retention":
            self.gamma_logit = nn.Parameter(torch.linspace(2.0, 4.0, H))  # gamma = sigmoid: 0.88 .. 0.98
        if op == "mamba2":
            self.A_log = nn.Parameter(torch.log(torch.linspace(0.5, 1.5, H)))
            self.D = nn.Parameter(torch.ones(H))
            self.dt_bias = nn.Parameter(torch.linspace(-1.0, 0.0, H))
        if op == "selective_scan":
            self.A_log = nn.Parameter(torch.log(torch.arange(1, NST + 1, dtype=torch.float32)).repeat(DC, 1))
            self.D = nn.Parameter(torch.ones(DC))
            self.dt_bias = nn.Parameter(torch.linspace(-1.0, 0.0, DC))

    def forward(self, x, impl, cu):
        B_ = x.shape[0]
        p = {n: lin(x) for n, lin in self.proj.items()}
        heads = lambda n, d: p[n].reshape(B_, T, H, d)  # noqa: E731
        kw = {"cu_seqlens": cu}
        op = self.op
        if op == "attention":
            o = impl.attention_parallel(heads("q", K), heads("k", K), heads("v", V), causal=True, **kw)
        elif op == "linear_attention":
            o = impl.linear_attention(heads("q", K), heads("k", K), heads("v", V), feature_map="elu1",
                                      normalize=True, **kw)
        elif op == "retention":
            o = impl.retention(heads("q", K), heads("k", K), heads("v", V), torch.sigmoid(self.gamma_logit), **kw)
        elif op == "gated_retention":
            o = impl.gated_retention(heads("q", K), heads("k", K), heads("v", V), F.logsigmoid(p["g"]), **kw)
        elif op in ("deltanet", "gated_deltanet"):
            g = F.logsigmoid(p["g"]) if op == "gated_deltanet" else None
            o = impl.deltanet(heads("q", K), heads("k", K), heads("v", V), torch.sigmoid(p["beta"]), g,
                              l2norm_qk=True, **kw)
        elif op == "titans":
            o = impl.titans(heads("q", K), heads("k", K), heads("v", V), torch.sigmoid(p["eta"]),
                            0.5 * torch.sigmoid(p["theta"]), torch.sigmoid(p["alpha"]), minibatch=4, l2norm_qk=True,
                            **kw)
        elif op == "mamba2":
            o = impl.mamba2(heads("x", V), p["dt"], -torch.exp(self.A_log), p["B"].reshape(B_, T, 1, NST),
                            p["C"].reshape(B_, T, 1, NST), self.D, dt_bias=self.dt_bias, dt_softplus=True, **kw)
        elif op == "selective_scan":
            o = impl.selective_scan(p["x"], p["dt"], -torch.exp(self.A_log), p["B"].reshape(B_, T, 1, NST),
                                    p["C"].reshape(B_, T, 1, NST), self.D, p["z"], dt_bias=self.dt_bias,
                                    dt_softplus=True, **kw)
        return self.out(o.reshape(B_, T, H * V))


class Model(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, DM)
        self.mixers = nn.ModuleList([Mixer(op) for _ in range(LAYERS)])
        self.norms = nn.ModuleList([nn.LayerNorm(DM) for _ in range(LAYERS)])
        self.readout = nn.Linear(DM, VOCAB)

    def forward(self, tokens, targets, impl, cu=None):
        x = self.embed(tokens)
        for mix, norm in zip(self.mixers, self.norms):
            x = norm(x + mix(x, impl, cu))
        return F.cross_entropy(self.readout(x).reshape(-1, VOCAB), targets.reshape(-1))


def _step(op, impl, dtype, state, tokens, targets, cu, optim):
    """The loss and every parameter's update of one step from `state`."""
    model = Model(op)
    model.load_state_dict(state)
    model.to(dtype)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = (torch.optim.SGD(model.parameters(), lr=0.5) if optim == "sgd"
           else torch.optim.Adam(model.parameters(), lr=1e-2, eps=1e-6))
    opt.zero_grad()
    loss = model(tokens, targets, impl, cu)
    loss.backward()
    opt.step()
    return float(loss.detach()), {n: p.detach().double() - before[n].double() for n, p in model.named_parameters()}


def _norm_err(x, ref):
    return float((x - ref).norm() / max(float(ref.norm()), 1e-300))


@pytest.mark.parametrize("optim", ["sgd", "adam"])
@pytest.mark.parametrize("layout", ["batch", "varlen"])
@pytest.mark.parametrize("op", OPS)
def test_train_step_matches_reference(op, layout, optim):
    torch.manual_seed(17)
    state = Model(op).state_dict()  # the initial parameters (float32), copied into every model
    B_ = 2 if layout == "batch" else 1
    cu = torch.tensor(CU, dtype=torch.int32) if layout == "varlen" else None
    tokens = torch.randint(0, VOCAB, (B_, T + 1))
    inp, tgt = tokens[:, :-1], tokens[:, 1:]
    l32, d32 = _step(op, st, torch.float32, state, inp, tgt, cu, optim)
    d64 = None
    for ref_dtype in (torch.float64, torch.float32):
        lref, dref = _step(op, R, ref_dtype, state, inp, tgt, cu, optim)
        if ref_dtype == torch.float64:  # the step as float32 parameters receive it
            dref = {n: (state[n].double() + d).float().double() - state[n].double() for n, d in dref.items()}
            d64 = dref
        assert abs(l32 - lref) <= LOSS_TOL * abs(lref), (op, ref_dtype, l32, lref)
        assert set(d32) == set(dref)
        for n in dref:
            assert float(dref[n].norm()) > 0, "%s: %s not updated by the reference (%s)" % (op, n, ref_dtype)
            e = _norm_err(d32[n], dref[n])
            # against the float32 reference: its own distance from float64 is
            # allowed on top (two float32 computations, each within its
            # rounding of float64, differ by up to the sum)
            tol = UPDATE_TOL + (_norm_err(dref[n], d64[n]) if ref_dtype == torch.float32 else 0.0)
            assert e <= tol, "%s/%s/%s: update of %s rel err %.2e vs the %s reference (bound %.2e)" % (
                op, layout, optim, n, e, ref_dtype, tol)
