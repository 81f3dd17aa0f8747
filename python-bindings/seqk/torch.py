"""seqk.torch: PyTorch autograd for seqk's ops (needs torch; ``import seqk``
alone never imports torch).

One ``torch.autograd.Function`` per differentiable op, and a functional
wrapper with the numpy op's argument names and layouts::

    attention_parallel(q, k, v, *, causal=False, scale=None, cu_seqlens=None)
    linear_attention(q, k, v, scale=None, initial_state=None, output_final_state=False,
                     cu_seqlens=None, chunk=0, *, normalize=False, feature_map="identity",
                     initial_z=None)
    retention(q, k, v, gamma=None, scale=None, initial_state=None, output_final_state=False,
              cu_seqlens=None, chunk=0)
    gated_retention(q, k, v, g, scale=None, initial_state=None, output_final_state=False,
                    cu_seqlens=None, chunk=0)
    mamba2(x, dt, A, B, C, D=None, *, dt_bias=None, dt_softplus=False, initial_state=None,
           output_final_state=False, cu_seqlens=None, chunk=0)
    selective_scan(u, dt, A, B, C, D=None, z=None, *, dt_bias=None, dt_softplus=False,
                   initial_state=None, output_final_state=False, cu_seqlens=None)
    deltanet(q, k, v, beta, g=None, scale=None, initial_state=None, output_final_state=False,
             cu_seqlens=None, chunk=0, *, l2norm_qk=False, allow_neg_eigval=False)
    titans(q, k, v, eta, theta, alpha, scale=None, initial_state=None, output_final_state=False,
           cu_seqlens=None, *, minibatch, l2norm_qk=False)

(every wrapper also takes ``ctx=``, a seqk.Context, keyword-only). Each returns
the output, or with ``output_final_state=True`` ``(output, final_state)`` like
flash-linear-attention's functions (``(o, final_state, final_z)`` for
linear_attention with normalize=True). Gradients flow through the output and
the final state into every tensor input: q, k, v, the gates (g, beta, dt, A,
D, z, dt_bias, gamma of retention, Titans' eta, theta, alpha), initial_state
(and initial_z). (Titans' state [N, H, 3KV + 8] carries the mini-batch
position and reserved floats: they get a zero gradient, and the final state's
gradient there is ignored.) Varlen
through ``cu_seqlens`` (int32, B = 1) as in the numpy ops.

The forward runs the op's parallel mode (softmax attention keeps o and the
log-sum-exp) and saves its inputs; the backward calls the C library's
backward (seqk.ops.*_backward) on the same tensors. No double backward.

Tensors: contiguous tensors, all on one device (CPU; CUDA on a libseqk built
with CUDA), used in place. The activations (q, k, v, x, B, C, z, u) are
torch.float32, torch.bfloat16 or torch.float16, all of one dtype: bfloat16 /
float16 ones run the C library's _ex entry points (seqk.h "Dtypes": fp32
accumulation and states, outputs rounded once), and their outputs and
gradients come back in that dtype; gates, parameters and states are always
torch.float32 (their gradients too). The wrong dtype, a numpy array or a
non-tensor raises TypeError; a non-contiguous tensor, tensors on different
devices or a device the context does not serve raise ValueError; nothing is
ever copied or converted silently (that would cut the graph or hide a cost).
The gradients given to the backward are made contiguous when autograd hands
over a strided one (e.g. from ``o.sum()``).

Decoding without gradients: every wrapper but attention_parallel also takes
``mode=`` ('parallel', the default, or 'recurrent') and ``final_state_out=``
(``final_z_out=`` too for linear_attention), keyword-only. When the call needs
no graph (under ``torch.no_grad()``, or no input requires grad) the wrapper
calls the op directly in that mode; final_state_out receives the state after
the last token and may be initial_state itself, so a decoding step updates
the state in place. With a graph, mode='recurrent' or a *_out tensor raises
ValueError (the training forward is the parallel mode)::

    import torch, seqk.torch as st
    with torch.no_grad():
        o, S = st.gated_retention(q, k, v, g, output_final_state=True)   # prefill [B, T, H, *]
        for _ in range(steps):
            q1, k1, v1, g1 = next_token()                                 # [B, 1, H, *]
            o1 = st.gated_retention(q1, k1, v1, g1, initial_state=S, final_state_out=S,
                                    mode="recurrent")

The same with the plain ops (seqk.gated_retention(..., mode="recurrent",
initial_state=S, final_state_out=S)), which take torch tensors too. Softmax
attention decodes with seqk.attention_decode and a key/value cache.
"""

import torch
from torch.autograd.function import once_differentiable

from . import ops as _ops
from ._arrays import ACT_NAMES as _ACT_NAMES

_ACT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

__all__ = [
    "attention_parallel",
    "linear_attention",
    "retention",
    "gated_retention",
    "mamba2",
    "selective_scan",
    "deltanet",
    "titans",
    "AttentionParallelFunction",
    "LinearAttentionFunction",
    "RetentionFunction",
    "GatedRetentionFunction",
    "Mamba2Function",
    "SelectiveScanFunction",
    "DeltaNetFunction",
    "TitansFunction",
]


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def _check(fn, *named):
    """named: (name, tensor or None) pairs. Every given one must be a contiguous
    tensor, all on the first one's device: the activations (q, k, v, x, B, C,
    z, u: seqk.h "Dtypes") float32, bfloat16 or float16, all of one dtype;
    everything else (gates, parameters, states) float32."""
    dev, first, act = None, None, None
    for name, x in named:
        if x is None:
            continue
        if not isinstance(x, torch.Tensor):
            raise TypeError("%s: %s must be a torch.Tensor, got %s (seqk.torch works on torch tensors; "
                            "the numpy ops are seqk.%s)" % (fn, name, type(x).__name__, fn.rsplit(".", 1)[-1]))
        if name in _ACT_NAMES and x.dtype in _ACT_DTYPES:
            if act is None:
                act = (x.dtype, name)
            elif x.dtype != act[0]:
                raise TypeError("%s: %s is %s but %s is %s: every activation tensor of one call (q, k, v, x, B, "
                                "C, z, u) has one dtype (float32, bfloat16 or float16)"
                                % (fn, name, x.dtype, act[1], act[0]))
        elif x.dtype != torch.float32:
            why = ""
            if act is not None and act[0] != torch.float32:
                why = "gates, parameters and states stay float32 with %s activations; " % act[0]
            elif name in _ACT_NAMES:
                why = "activations may also be torch.bfloat16 / torch.float16; "
            raise TypeError("%s: %s must be a torch.float32 tensor, got %s (%sconvert it yourself with "
                            "%s.float(); seqk.torch never copies an input)" % (fn, name, x.dtype, why, name))
        if dev is None:
            dev, first = x.device, name
        elif x.device != dev:
            raise ValueError("%s: %s is on %s but %s is on %s: every tensor of one call must be on one device"
                             % (fn, name, x.device, first, dev))
        if not x.is_contiguous():
            raise ValueError("%s: %s must be contiguous, got shape %s with strides %s (use %s.contiguous(); "
                             "seqk.torch never copies an input)" % (fn, name, tuple(x.shape), tuple(x.stride()), name))


def _c(g):
    """An incoming gradient, contiguous (autograd may hand over an expanded one)."""
    return None if g is None else g.contiguous()


def _flag(fn, name, v):
    if not isinstance(v, bool):
        raise TypeError("%s: %s must be a bool, got %s" % (fn, name, type(v).__name__))
    return v


def _graphless(fn, mode, tensors, outs):
    """True when the call needs no autograd graph (grad mode off, or no input
    requires grad): the wrapper then calls the op directly, in either mode,
    writing the final state into a caller's tensor when given (decoding).
    With a graph, mode must be 'parallel' and no *_out tensor given (an
    in-place write would corrupt what the backward saved). outs: (name,
    tensor or None) pairs of the *_out arguments."""
    if mode not in ("parallel", "recurrent"):
        raise ValueError("%s: mode must be 'parallel' or 'recurrent', got %r" % (fn, mode))
    _check(fn, *outs)
    if not (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)):
        return True
    given = [n for n, t in outs if t is not None]
    if mode != "parallel" or given:
        raise ValueError("%s: %s is for decoding without gradients: call it under torch.no_grad() (or with "
                         "inputs that do not require grad); with gradients the forward runs mode='parallel' "
                         "and returns the final state with output_final_state=True"
                         % (fn, "mode=%r" % mode if mode != "parallel" else given[0]))
    return False


# --------------------------------------------------------------------------
# softmax attention
# --------------------------------------------------------------------------


class AttentionParallelFunction(torch.autograd.Function):
    """apply(q, k, v, causal, scale, cu_seqlens, sctx) -> o. Forward:
    attention_parallel with return_lse (saves q, k, v, o, lse); backward:
    attention_parallel_backward."""

    @staticmethod
    def forward(fctx, q, k, v, causal, scale, cu_seqlens, sctx):
        o, lse = _ops.attention_parallel(q, k, v, causal=causal, scale=scale, cu_seqlens=cu_seqlens,
                                         return_lse=True, ctx=sctx)
        fctx.save_for_backward(q, k, v, o, lse)
        fctx.opts = dict(causal=causal, scale=scale, cu_seqlens=cu_seqlens, ctx=sctx)
        return o

    @staticmethod
    @once_differentiable
    def backward(fctx, do):
        q, k, v, o, lse = fctx.saved_tensors
        dq, dk, dv = _ops.attention_parallel_backward(q, k, v, o, lse, _c(do), **fctx.opts)
        return dq, dk, dv, None, None, None, None


def attention_parallel(q, k, v, *, causal=False, scale=None, cu_seqlens=None, ctx=None):
    """Softmax attention (seqk.attention_parallel: q [B, T, Hq, K], k
    [B, T, Hkv, K], v [B, T, Hkv, V], Hq % Hkv == 0) with gradients into q, k, v.
    Returns o [B, T, Hq, V]."""
    fn = "seqk.torch.attention_parallel"
    _check(fn, ("q", q), ("k", k), ("v", v))
    _flag(fn, "causal", causal)
    return AttentionParallelFunction.apply(q, k, v, causal, scale, cu_seqlens, ctx)


attention = attention_parallel


# --------------------------------------------------------------------------
# linear-state family
# --------------------------------------------------------------------------


class LinearAttentionFunction(torch.autograd.Function):
    """apply(q, k, v, initial_state, initial_z, scale, normalize, feature_map,
    output_final_state, cu_seqlens, chunk, sctx) -> o, (o, S), or (o, S, z)."""

    @staticmethod
    def forward(fctx, q, k, v, initial_state, initial_z, scale, normalize, feature_map, output_final_state,
                cu_seqlens, chunk, sctx):
        res = _ops.linear_attention(q, k, v, mode="parallel", scale=scale, normalize=normalize,
                                    feature_map=feature_map, initial_state=initial_state, initial_z=initial_z,
                                    return_final_state=output_final_state, cu_seqlens=cu_seqlens, chunk=chunk,
                                    ctx=sctx)
        fctx.save_for_backward(q, k, v, initial_state, initial_z)
        fctx.opts = dict(scale=scale, normalize=normalize, feature_map=feature_map, cu_seqlens=cu_seqlens,
                         chunk=chunk, ctx=sctx)
        return res

    @staticmethod
    @once_differentiable
    def backward(fctx, do, dS=None, dz=None):
        q, k, v, s0, z0 = fctx.saved_tensors
        normalize = fctx.opts["normalize"]
        need = fctx.needs_input_grad
        want0 = (s0 is not None and need[3]) or (z0 is not None and need[4])
        r = _ops.linear_attention_backward(q, k, v, _c(do), initial_state=s0, initial_z=z0, dfinal_state=_c(dS),
                                           dfinal_z=_c(dz) if normalize else None, return_dinitial_state=want0,
                                           **fctx.opts)
        ds0 = r[3] if want0 and s0 is not None else None
        dz0 = r[4] if want0 and normalize and z0 is not None else None
        return (r[0], r[1], r[2], ds0, dz0) + (None,) * 7


def linear_attention(q, k, v, scale=None, initial_state=None, output_final_state=False, cu_seqlens=None, chunk=0,
                     *, normalize=False, feature_map="identity", initial_z=None, mode="parallel",
                     final_state_out=None, final_z_out=None, ctx=None):
    """Linear attention (seqk.linear_attention; feature_map 'identity' or
    'elu1', normalize=True: the Katharopoulos normaliser with its state z) with
    gradients into q, k, v, initial_state and initial_z. Returns o, or with
    output_final_state (o, final_state), or (o, final_state, final_z) when
    normalize=True."""
    fn = "seqk.torch.linear_attention"
    _check(fn, ("q", q), ("k", k), ("v", v), ("initial_state", initial_state), ("initial_z", initial_z))
    _flag(fn, "output_final_state", output_final_state)
    _flag(fn, "normalize", normalize)
    if _graphless(fn, mode, (q, k, v, initial_state, initial_z),
                  (("final_state_out", final_state_out), ("final_z_out", final_z_out))):
        return _ops.linear_attention(q, k, v, mode=mode, scale=scale, normalize=normalize, feature_map=feature_map,
                                     initial_state=initial_state, initial_z=initial_z,
                                     return_final_state=output_final_state, final_state_out=final_state_out,
                                     final_z_out=final_z_out, cu_seqlens=cu_seqlens, chunk=chunk, ctx=ctx)
    return LinearAttentionFunction.apply(q, k, v, initial_state, initial_z, scale, normalize, feature_map,
                                         output_final_state, cu_seqlens, chunk, ctx)


class RetentionFunction(torch.autograd.Function):
    """apply(q, k, v, gamma, initial_state, scale, output_final_state,
    cu_seqlens, chunk, sctx) -> o or (o, S). gamma's gradient (when asked for)
    comes from gated retention's backward at g = log(gamma):
    dgamma_h = sum_t dg_t,h / gamma_h."""

    @staticmethod
    def forward(fctx, q, k, v, gamma, initial_state, scale, output_final_state, cu_seqlens, chunk, sctx):
        res = _ops.retention(q, k, v, gamma, mode="parallel", scale=scale, initial_state=initial_state,
                             return_final_state=output_final_state, cu_seqlens=cu_seqlens, chunk=chunk, ctx=sctx)
        fctx.save_for_backward(q, k, v, gamma, initial_state)
        fctx.opts = dict(scale=scale, cu_seqlens=cu_seqlens, chunk=chunk, ctx=sctx)
        return res

    @staticmethod
    @once_differentiable
    def backward(fctx, do, dS=None):
        q, k, v, gamma, s0 = fctx.saved_tensors
        need = fctx.needs_input_grad
        want0 = s0 is not None and need[4]
        dgamma = None
        if gamma is not None and need[3]:
            B, T, H = q.shape[0], q.shape[1], q.shape[2]
            g = torch.log(gamma).expand(B, T, H).contiguous()
            r = _ops.gated_retention_backward(q, k, v, g, _c(do), initial_state=s0, dfinal_state=_c(dS),
                                              return_dinitial_state=want0, **fctx.opts)
            dgamma = r[3].sum(dim=(0, 1)) / gamma
            r = r[:3] + r[4:]
        else:
            r = _ops.retention_backward(q, k, v, _c(do), gamma=gamma, initial_state=s0, dfinal_state=_c(dS),
                                        return_dinitial_state=want0, **fctx.opts)
        return (r[0], r[1], r[2], dgamma, r[3] if want0 else None) + (None,) * 5


def retention(q, k, v, gamma=None, scale=None, initial_state=None, output_final_state=False, cu_seqlens=None,
              chunk=0, *, mode="parallel", final_state_out=None, ctx=None):
    """RetNet retention (seqk.retention; gamma [H] decays, None = RetNet's
    defaults) with gradients into q, k, v, gamma (when it requires grad) and
    initial_state. Returns o, or (o, final_state) with output_final_state."""
    fn = "seqk.torch.retention"
    _check(fn, ("q", q), ("k", k), ("v", v), ("gamma", gamma), ("initial_state", initial_state))
    _flag(fn, "output_final_state", output_final_state)
    if _graphless(fn, mode, (q, k, v, gamma, initial_state), (("final_state_out", final_state_out),)):
        return _ops.retention(q, k, v, gamma, mode=mode, scale=scale, initial_state=initial_state,
                              return_final_state=output_final_state, final_state_out=final_state_out,
                              cu_seqlens=cu_seqlens, chunk=chunk, ctx=ctx)
    return RetentionFunction.apply(q, k, v, gamma, initial_state, scale, output_final_state, cu_seqlens, chunk, ctx)


class GatedRetentionFunction(torch.autograd.Function):
    """apply(q, k, v, g, initial_state, scale, output_final_state, cu_seqlens,
    chunk, sctx) -> o or (o, S)."""

    @staticmethod
    def forward(fctx, q, k, v, g, initial_state, scale, output_final_state, cu_seqlens, chunk, sctx):
        res = _ops.gated_retention(q, k, v, g, mode="parallel", scale=scale, initial_state=initial_state,
                                   return_final_state=output_final_state, cu_seqlens=cu_seqlens, chunk=chunk,
                                   ctx=sctx)
        fctx.save_for_backward(q, k, v, g, initial_state)
        fctx.opts = dict(scale=scale, cu_seqlens=cu_seqlens, chunk=chunk, ctx=sctx)
        return res

    @staticmethod
    @once_differentiable
    def backward(fctx, do, dS=None):
        q, k, v, g, s0 = fctx.saved_tensors
        want0 = s0 is not None and fctx.needs_input_grad[4]
        r = _ops.gated_retention_backward(q, k, v, g, _c(do), initial_state=s0, dfinal_state=_c(dS),
                                          return_dinitial_state=want0, **fctx.opts)
        return (r[0], r[1], r[2], r[3], r[4] if want0 else None) + (None,) * 5


def gated_retention(q, k, v, g, scale=None, initial_state=None, output_final_state=False, cu_seqlens=None, chunk=0,
                    *, mode="parallel", final_state_out=None, ctx=None):
    """Gated retention (seqk.gated_retention; g [B, T, H] log-gates) with
    gradients into q, k, v, g and initial_state. Returns o, or
    (o, final_state) with output_final_state."""
    fn = "seqk.torch.gated_retention"
    _check(fn, ("q", q), ("k", k), ("v", v), ("g", g), ("initial_state", initial_state))
    _flag(fn, "output_final_state", output_final_state)
    if _graphless(fn, mode, (q, k, v, g, initial_state), (("final_state_out", final_state_out),)):
        return _ops.gated_retention(q, k, v, g, mode=mode, scale=scale, initial_state=initial_state,
                                    return_final_state=output_final_state, final_state_out=final_state_out,
                                    cu_seqlens=cu_seqlens, chunk=chunk, ctx=ctx)
    return GatedRetentionFunction.apply(q, k, v, g, initial_state, scale, output_final_state, cu_seqlens, chunk, ctx)


# --------------------------------------------------------------------------
# Mamba2 and the selective scan
# --------------------------------------------------------------------------


class Mamba2Function(torch.autograd.Function):
    """apply(x, dt, A, B, C, D, dt_bias, initial_state, dt_softplus,
    output_final_state, cu_seqlens, chunk, sctx) -> y or (y, S)."""

    @staticmethod
    def forward(fctx, x, dt, A, B, C, D, dt_bias, initial_state, dt_softplus, output_final_state, cu_seqlens, chunk,
                sctx):
        res = _ops.mamba2(x, dt, A, B, C, D, dt_bias=dt_bias, dt_softplus=dt_softplus, mode="parallel",
                          initial_state=initial_state, return_final_state=output_final_state, cu_seqlens=cu_seqlens,
                          chunk=chunk, ctx=sctx)
        fctx.save_for_backward(x, dt, A, B, C, D, dt_bias, initial_state)
        fctx.opts = dict(dt_softplus=dt_softplus, cu_seqlens=cu_seqlens, chunk=chunk, ctx=sctx)
        return res

    @staticmethod
    @once_differentiable
    def backward(fctx, dy, dS=None):
        x, dt, A, B, C, D, dt_bias, s0 = fctx.saved_tensors
        need = fctx.needs_input_grad
        want_bias = dt_bias is not None and need[6]
        want0 = s0 is not None and need[7]
        r = list(_ops.mamba2_backward(x, dt, A, B, C, _c(dy), D=D, dt_bias=dt_bias, initial_state=s0,
                                      dfinal_state=_c(dS), return_ddt_bias=want_bias, return_dinitial_state=want0,
                                      **fctx.opts))
        dx, ddt, dA, dB, dC = r[:5]
        rest = r[5:]
        dD = rest.pop(0) if D is not None else None
        dbias = rest.pop(0) if want_bias else None
        ds0 = rest.pop(0) if want0 else None
        return (dx, ddt, dA, dB, dC, dD, dbias, ds0) + (None,) * 5


def mamba2(x, dt, A, B, C, D=None, *, dt_bias=None, dt_softplus=False, initial_state=None, output_final_state=False,
           cu_seqlens=None, chunk=0, mode="parallel", final_state_out=None, ctx=None):
    """Mamba2 / SSD (seqk.mamba2: x [Bt, T, H, P], dt [Bt, T, H], A [H], B, C
    [Bt, T, G, Nst], D [H], dt_bias [H], state [N, H, Nst, P]) with gradients
    into every tensor input. Returns y, or (y, final_state) with
    output_final_state."""
    fn = "seqk.torch.mamba2"
    _check(fn, ("x", x), ("dt", dt), ("A", A), ("B", B), ("C", C), ("D", D), ("dt_bias", dt_bias),
           ("initial_state", initial_state))
    _flag(fn, "output_final_state", output_final_state)
    _flag(fn, "dt_softplus", dt_softplus)
    if _graphless(fn, mode, (x, dt, A, B, C, D, dt_bias, initial_state), (("final_state_out", final_state_out),)):
        return _ops.mamba2(x, dt, A, B, C, D, dt_bias=dt_bias, dt_softplus=dt_softplus, mode=mode,
                           initial_state=initial_state, return_final_state=output_final_state,
                           final_state_out=final_state_out, cu_seqlens=cu_seqlens, chunk=chunk, ctx=ctx)
    return Mamba2Function.apply(x, dt, A, B, C, D, dt_bias, initial_state, dt_softplus, output_final_state,
                                cu_seqlens, chunk, ctx)


class SelectiveScanFunction(torch.autograd.Function):
    """apply(u, dt, A, B, C, D, z, dt_bias, initial_state, dt_softplus,
    output_final_state, cu_seqlens, sctx) -> y or (y, h)."""

    @staticmethod
    def forward(fctx, u, dt, A, B, C, D, z, dt_bias, initial_state, dt_softplus, output_final_state, cu_seqlens,
                sctx):
        res = _ops.selective_scan(u, dt, A, B, C, D, z, dt_bias=dt_bias, dt_softplus=dt_softplus, mode="parallel",
                                  initial_state=initial_state, return_final_state=output_final_state,
                                  cu_seqlens=cu_seqlens, ctx=sctx)
        fctx.save_for_backward(u, dt, A, B, C, D, z, dt_bias, initial_state)
        fctx.opts = dict(dt_softplus=dt_softplus, cu_seqlens=cu_seqlens, ctx=sctx)
        return res

    @staticmethod
    @once_differentiable
    def backward(fctx, dy, dS=None):
        u, dt, A, B, C, D, z, dt_bias, s0 = fctx.saved_tensors
        need = fctx.needs_input_grad
        want_bias = dt_bias is not None and need[7]
        want0 = s0 is not None and need[8]
        r = list(_ops.selective_scan_backward(u, dt, A, B, C, _c(dy), D=D, z=z, dt_bias=dt_bias, initial_state=s0,
                                              dfinal_state=_c(dS), return_ddt_bias=want_bias,
                                              return_dinitial_state=want0, **fctx.opts))
        du, ddt, dA, dB, dC = r[:5]
        rest = r[5:]
        dD = rest.pop(0) if D is not None else None
        dz = rest.pop(0) if z is not None else None
        dbias = rest.pop(0) if want_bias else None
        ds0 = rest.pop(0) if want0 else None
        return (du, ddt, dA, dB, dC, dD, dz, dbias, ds0) + (None,) * 4


def selective_scan(u, dt, A, B, C, D=None, z=None, *, dt_bias=None, dt_softplus=False, initial_state=None,
                   output_final_state=False, cu_seqlens=None, mode="parallel", final_state_out=None, ctx=None):
    """The Mamba1 selective scan (seqk.selective_scan: u, dt, z [Bt, T, Dc],
    A [Dc, Nst], B, C [Bt, T, G, Nst], D, dt_bias [Dc], state [N, Dc, Nst])
    with gradients into every tensor input. Returns y, or (y, final_state)
    with output_final_state."""
    fn = "seqk.torch.selective_scan"
    _check(fn, ("u", u), ("dt", dt), ("A", A), ("B", B), ("C", C), ("D", D), ("z", z), ("dt_bias", dt_bias),
           ("initial_state", initial_state))
    _flag(fn, "output_final_state", output_final_state)
    _flag(fn, "dt_softplus", dt_softplus)
    if _graphless(fn, mode, (u, dt, A, B, C, D, z, dt_bias, initial_state), (("final_state_out", final_state_out),)):
        return _ops.selective_scan(u, dt, A, B, C, D, z, dt_bias=dt_bias, dt_softplus=dt_softplus, mode=mode,
                                   initial_state=initial_state, return_final_state=output_final_state,
                                   final_state_out=final_state_out, cu_seqlens=cu_seqlens, ctx=ctx)
    return SelectiveScanFunction.apply(u, dt, A, B, C, D, z, dt_bias, initial_state, dt_softplus, output_final_state,
                                       cu_seqlens, ctx)


# --------------------------------------------------------------------------
# DeltaNet and gated DeltaNet
# --------------------------------------------------------------------------


class DeltaNetFunction(torch.autograd.Function):
    """apply(q, k, v, beta, g, initial_state, scale, l2norm_qk,
    allow_neg_eigval, output_final_state, cu_seqlens, chunk, sctx) -> o or
    (o, S)."""

    @staticmethod
    def forward(fctx, q, k, v, beta, g, initial_state, scale, l2norm_qk, allow_neg_eigval, output_final_state,
                cu_seqlens, chunk, sctx):
        res = _ops.deltanet(q, k, v, beta, g, mode="parallel", scale=scale, l2norm_qk=l2norm_qk,
                            allow_neg_eigval=allow_neg_eigval, initial_state=initial_state,
                            return_final_state=output_final_state, cu_seqlens=cu_seqlens, chunk=chunk, ctx=sctx)
        fctx.save_for_backward(q, k, v, beta, g, initial_state)
        fctx.opts = dict(scale=scale, l2norm_qk=l2norm_qk, allow_neg_eigval=allow_neg_eigval, cu_seqlens=cu_seqlens,
                         chunk=chunk, ctx=sctx)
        return res

    @staticmethod
    @once_differentiable
    def backward(fctx, do, dS=None):
        q, k, v, beta, g, s0 = fctx.saved_tensors
        want0 = s0 is not None and fctx.needs_input_grad[5]
        r = list(_ops.deltanet_backward(q, k, v, beta, _c(do), g=g, initial_state=s0, dfinal_state=_c(dS),
                                        return_dinitial_state=want0, **fctx.opts))
        dq, dk, dv, dbeta = r[:4]
        rest = r[4:]
        dg = rest.pop(0) if g is not None else None
        ds0 = rest.pop(0) if want0 else None
        return (dq, dk, dv, dbeta, dg, ds0) + (None,) * 7


def deltanet(q, k, v, beta, g=None, scale=None, initial_state=None, output_final_state=False, cu_seqlens=None,
             chunk=0, *, l2norm_qk=False, allow_neg_eigval=False, mode="parallel", final_state_out=None, ctx=None):
    """DeltaNet, gated DeltaNet with g (seqk.deltanet: beta, g [B, T, H]) with
    gradients into q, k, v, beta, g and initial_state (through the in-kernel
    L2 norm with l2norm_qk). Returns o, or (o, final_state) with
    output_final_state. The backward runs on a CPU context only for now."""
    fn = "seqk.torch.deltanet"
    _check(fn, ("q", q), ("k", k), ("v", v), ("beta", beta), ("g", g), ("initial_state", initial_state))
    _flag(fn, "output_final_state", output_final_state)
    _flag(fn, "l2norm_qk", l2norm_qk)
    _flag(fn, "allow_neg_eigval", allow_neg_eigval)
    if _graphless(fn, mode, (q, k, v, beta, g, initial_state), (("final_state_out", final_state_out),)):
        return _ops.deltanet(q, k, v, beta, g, mode=mode, scale=scale, l2norm_qk=l2norm_qk,
                             allow_neg_eigval=allow_neg_eigval, initial_state=initial_state,
                             return_final_state=output_final_state, final_state_out=final_state_out,
                             cu_seqlens=cu_seqlens, chunk=chunk, ctx=ctx)
    return DeltaNetFunction.apply(q, k, v, beta, g, initial_state, scale, l2norm_qk, allow_neg_eigval,
                                  output_final_state, cu_seqlens, chunk, ctx)


# --------------------------------------------------------------------------
# Titans
# --------------------------------------------------------------------------


class TitansFunction(torch.autograd.Function):
    """apply(q, k, v, eta, theta, alpha, initial_state, minibatch, scale,
    l2norm_qk, output_final_state, cu_seqlens, sctx) -> o or (o, S)."""

    @staticmethod
    def forward(fctx, q, k, v, eta, theta, alpha, initial_state, minibatch, scale, l2norm_qk, output_final_state,
                cu_seqlens, sctx):
        res = _ops.titans(q, k, v, eta, theta, alpha, minibatch=minibatch, mode="parallel", scale=scale,
                          l2norm_qk=l2norm_qk, initial_state=initial_state, return_final_state=output_final_state,
                          cu_seqlens=cu_seqlens, ctx=sctx)
        fctx.save_for_backward(q, k, v, eta, theta, alpha, initial_state)
        fctx.opts = dict(minibatch=minibatch, scale=scale, l2norm_qk=l2norm_qk, cu_seqlens=cu_seqlens, ctx=sctx)
        return res

    @staticmethod
    @once_differentiable
    def backward(fctx, do, dS=None):
        q, k, v, eta, theta, alpha, s0 = fctx.saved_tensors
        want0 = s0 is not None and fctx.needs_input_grad[6]
        r = _ops.titans_backward(q, k, v, eta, theta, alpha, _c(do), initial_state=s0, dfinal_state=_c(dS),
                                 return_dinitial_state=want0, **fctx.opts)
        ds0 = r[6] if want0 else None
        return tuple(r[:6]) + (ds0,) + (None,) * 6


def titans(q, k, v, eta, theta, alpha, scale=None, initial_state=None, output_final_state=False, cu_seqlens=None,
           *, minibatch, l2norm_qk=False, mode="parallel", final_state_out=None, ctx=None):
    """The Titans linear memory (seqk.titans: eta, theta, alpha [B, T, H];
    state [N, H, 3KV + 8]; minibatch b keyword-only) with gradients into q, k,
    v, eta, theta, alpha and initial_state (through the in-kernel L2 norm with
    l2norm_qk; the state's position and reserved floats get 0). Returns o, or
    (o, final_state) with output_final_state. The backward runs on a CPU
    context only for now."""
    fn = "seqk.torch.titans"
    _check(fn, ("q", q), ("k", k), ("v", v), ("eta", eta), ("theta", theta), ("alpha", alpha),
           ("initial_state", initial_state))
    _flag(fn, "output_final_state", output_final_state)
    _flag(fn, "l2norm_qk", l2norm_qk)
    if _graphless(fn, mode, (q, k, v, eta, theta, alpha, initial_state), (("final_state_out", final_state_out),)):
        return _ops.titans(q, k, v, eta, theta, alpha, minibatch=minibatch, mode=mode, scale=scale,
                           l2norm_qk=l2norm_qk, initial_state=initial_state, return_final_state=output_final_state,
                           final_state_out=final_state_out, cu_seqlens=cu_seqlens, ctx=ctx)
    return TitansFunction.apply(q, k, v, eta, theta, alpha, initial_state, minibatch, scale, l2norm_qk,
                                output_final_state, cu_seqlens, ctx)
