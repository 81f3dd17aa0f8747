"""The ops: one Python function per C function of seqk.h.

Common to every op
------------------
Arrays are numpy float32 arrays (int32 for ``cu_seqlens`` and ``cache_len``),
C-contiguous, or torch tensors of the same dtypes (contiguous) when the caller
uses torch. Shapes are inferred from the arrays; the letters are:

  B batch, T tokens (or scan steps), H heads, K key/query head dim,
  V value head dim, N number of sequences (B, or len(cu_seqlens) - 1),
  C scan channels.

Layout is token-major: q, k ``[B, T, H, K]``; v, o ``[B, T, H, V]``; per-token
scalars ``[B, T, H]``; per-head constants ``[H]``.

Memory: numpy arrays live in host memory and therefore **require a CPU
context** (a CUDA context raises ValueError). CPU torch tensors run on a CPU
context without a copy (through ``data_ptr()``); CUDA torch tensors run on a
CUDA context of their device, and the op first sets the context's stream to
``torch.cuda.current_stream()`` so that the work is ordered with torch's.
With ``ctx=None`` the module's default context is used (the default CPU
context, or for CUDA tensors the default CUDA context of their device).

Outputs (``out=``, ``final_state_out=``, ``lse_out=`` ...) are allocated when
not given (numpy, or torch on the input's device); when given they are checked
like inputs and written in place.

Varlen: ``cu_seqlens`` int32 ``[N+1]`` packs N sequences along T (B must be
1): ``cu_seqlens[0] = 0``, non-decreasing, ``cu_seqlens[N] = T``; no state
crosses a boundary. The C library validates the values (its message comes
through in SeqkError).

State: ``initial_state`` (None = zeros) and the final state, returned when
``return_final_state=True`` (or written to ``final_state_out``, which may be
the initial state array itself: an in-place decoding step). Passing one call's
final state as the next call's initial state equals one call over the
concatenation.

Errors: wrong dtype or array type -> TypeError; wrong shape, non-contiguous,
read-only output, wrong memory kind -> ValueError; an error of the C library
-> seqk.SeqkError with seqk_last_error()'s message.
"""

import numpy as np

from ._arrays import Call, int_arg, mode_arg, scale_or_default
from ._core import (
    ATTN_CAUSAL,
    DELTANET_ALLOW_NEG_EIGVAL,
    DELTANET_L2NORM_QK,
    LINATTN_ELU1,
    LINATTN_NORMALIZE,
    MAMBA2_DT_SOFTPLUS,
    SCAN_REVERSE,
    SSCAN_DT_SOFTPLUS,
    TITANS_L2NORM_QK,
    Mode,
    check,
    default_context,
)
from ._core import Context as _Context
from ._lib import lib

# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def _varlen(c, cu_seqlens):
    """Checks cu_seqlens (int32 [N+1], B == 1); binds N. Returns (address, N for C)."""
    if cu_seqlens is None:
        c.dims["N"] = c.dims["B"]
        c.origin["N"] = c.origin["B"]  # N = B
        return None, 0
    p = c.arr("cu_seqlens", cu_seqlens, ("N+1",), dtype="int32")
    n = c.dims["N+1"] - 1
    if n < 1:
        raise ValueError(
            "%s: cu_seqlens must hold N+1 >= 2 boundaries (N >= 1 sequences), got shape (%d,)"
            % (c.fn, n + 1)
        )
    if c.dims["B"] != 1:
        raise ValueError(
            "%s: with cu_seqlens the sequences are packed along T, so B must be 1; %s has B=%d"
            % (c.fn, c.origin["B"], c.dims["B"])
        )
    c.dims["N"] = n
    c.origin["N"] = "cu_seqlens"
    return p, n


def _bool(fn, name, v):
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError("%s: %s must be a bool, got %s" % (fn, name, type(v).__name__))
    return bool(v)


def _ctx(fn, ctx):
    if ctx is None:
        return default_context("cpu")
    if not isinstance(ctx, _Context):
        raise TypeError("%s: ctx must be a seqk.Context or None, got %s" % (fn, type(ctx).__name__))
    return ctx


def _size_query(fn, cname, ctx, *args):
    import ctypes

    n = ctypes.c_size_t(0)
    ctx = _ctx(fn, ctx)
    with ctx._lock:
        check(getattr(lib, cname)(ctx.handle, *args, ctypes.byref(n)), cname)
    return n.value


def has_op(name):
    """True if the loaded library exports the C function behind op `name`
    ('scan', 'retention', 'attention_parallel', ...)."""
    return bool(getattr(lib, "seqk_" + name, None))


def available_ops():
    """The ops whose C function the loaded library exports."""
    return [n for n in _OPS if has_op(n)]


# --------------------------------------------------------------------------
# scan
# --------------------------------------------------------------------------


def scan(a, b, h0=None, *, block=1, reverse=False, cu_seqlens=None, out=None, return_final=False,
         final_out=None, ctx=None):
    """First-order linear recurrence over B*C independent channels (seqk_scan).

    Forward, for t = 0 .. T-1, starting from h[-1] = h0:

        h[t] = a[t] * h[t-1] + b[t]

    reverse=True runs from the last step back, starting from h[T] = h0:

        h[t] = a[t] * h[t+1] + b[t]          (note: a[t], not a[t+1])

    elementwise per channel. One coefficient may be shared by `block`
    consecutive channels (block divides C; block = C: one scalar per step),
    which is how a matrix state times a scalar decay is scanned.

    Args:
      a           [B, T, C/block] float32 coefficients
      b           [B, T, C] float32 inputs
      h0          [N, C] initial state per sequence, or None (zeros)
      block       coefficient block size (1 <= block <= C, C % block == 0)
      reverse     scan from the last step to the first
      cu_seqlens  int32 [N+1] or None: varlen (B must be 1)
      out         [B, T, C] output for every h[t], or None (allocated); may be
                  `b` itself (in place)
      return_final  also return the state after each sequence's last step
                  (forward: h[end-1]; reverse: h[start]; empty sequence: h0)
      final_out   [N, C] where to write that final state, or None
      ctx         seqk.Context or None (default context)

    Returns: h, or (h, h_final) when return_final.
    """
    fn = "seqk.scan"
    c = Call(fn, "seqk_scan", ctx, b)
    block = int_arg(fn, "block", block, 1)
    reverse = _bool(fn, "reverse", reverse)
    pb = c.arr("b", b, ("B", "T", "C"))
    B, T, C = c.dims["B"], c.dims["T"], c.dims["C"]
    if C % block:
        raise ValueError("%s: block=%d must divide C=%d (the last dimension of b)" % (fn, block, C))
    pa = c.arr("a", a, ("B", "T", ("C/block", C // block)))
    pcu, n_arg = _varlen(c, cu_seqlens)
    ph0 = c.arr("h0", h0, ("N", "C"), optional=True)
    h, ph = c.out("out", out, ("B", "T", "C"))
    fin, pfin = (None, None)
    if return_final or final_out is not None:
        fin, pfin = c.out("final_out", final_out, ("N", "C"))
    c.run(B, T, C, block, SCAN_REVERSE if reverse else 0, pa, pb, ph0, ph, pfin, pcu, n_arg)
    return (h, fin) if return_final else h


def scan_workspace_size(B, T, C, *, block=1, reverse=False, N=0, ctx=None):
    """Workspace bytes seqk_scan needs for these sizes on this context (N: the
    number of sequences with varlen, else 0)."""
    return _size_query("seqk.scan_workspace_size", "seqk_scan_workspace_size", ctx, int(B), int(T), int(C),
                       int(block), SCAN_REVERSE if reverse else 0, int(N))


# --------------------------------------------------------------------------
# linear-state modules
# --------------------------------------------------------------------------

_LINEAR_DOC = """
    The state S is a K x V matrix per sequence and head; each token updates it
    and reads it:

        S_t = a_t * S_{t-1} + k_t v_t^T,        o_t = S_t^T (scale * q_t)

    mode='recurrent' runs token by token (O(1) memory per step: decoding);
    mode='parallel' runs chunkwise with matrix products (training, prefill).
    Both give the same result up to fp32 rounding. A decoding step is
    mode='recurrent' with T = 1 and final_state_out=initial_state (in place).

    Shared arguments:
      q, k            [B, T, H, K] float32 (1 <= K <= 1024)
      v               [B, T, H, V] float32
      mode            'parallel' (default) or 'recurrent'
      scale           multiplies q; None = 1/sqrt(K)
      initial_state   [N, H, K, V] or None (zeros)
      return_final_state  also return the state after the last token
      final_state_out [N, H, K, V] where to write it, or None (allocated when
                      asked for); may be initial_state itself
      cu_seqlens      int32 [N+1] or None (varlen; B must be 1)
      chunk           chunk size of the parallel mode (1..1024), 0 = chunk_default(K, V)
      out             [B, T, H, V] output o, or None (allocated); must not
                      overlap an input
      ctx             seqk.Context or None (default context)
"""


def _append_doc(f, text):
    if f.__doc__:  # None under python -OO
        f.__doc__ += text


def _linear_inputs(c, q, k, v, cu_seqlens):
    pq = c.arr("q", q, ("B", "T", "H", "K"))
    pk = c.arr("k", k, ("B", "T", "H", "K"))
    pv = c.arr("v", v, ("B", "T", "H", "V"))
    pcu, n_arg = _varlen(c, cu_seqlens)
    return pq, pk, pv, pcu, n_arg


def _state(c, initial_state, final_state_out, return_final_state, spec):
    ps0 = c.arr("initial_state", initial_state, spec, optional=True)
    fin, pfin = (None, None)
    if return_final_state or final_state_out is not None:
        fin, pfin = c.out("final_state_out", final_state_out, spec)
    return ps0, fin, pfin


def linear_attention(q, k, v, *, mode="parallel", scale=None, normalize=False, feature_map="identity",
                     initial_state=None, initial_z=None, return_final_state=False, final_state_out=None,
                     final_z_out=None, cu_seqlens=None, chunk=0, out=None, ctx=None):
    """Linear attention (seqk_linear_attention): a_t = 1, with a feature map phi
    on q and k:

        S_t = S_{t-1} + phi(k_t) v_t^T,        o_t = S_t^T (scale * phi(q_t))

    feature_map='identity' (phi(x) = x) or 'elu1' (phi(x) = elu(x) + 1).
    normalize=True divides by the Katharopoulos normaliser, whose state
    z (a K-vector per sequence and head) sums the keys:

        z_t = z_{t-1} + phi(k_t),    o_t = S_t^T (scale phi(q_t)) / (scale phi(q_t) . z_t + 1e-6)

    Extra arguments (with normalize=True only):
      initial_z    [N, H, K] or None (zeros)
      final_z_out  [N, H, K] where to write the final z, or None
    """
    fn = "seqk.linear_attention"
    c = Call(fn, "seqk_linear_attention", ctx, q)
    m = mode_arg(fn, mode)
    normalize = _bool(fn, "normalize", normalize)
    if feature_map in (None, "identity"):
        flags = 0
    elif feature_map in ("elu1", "elu+1"):
        flags = LINATTN_ELU1
    else:
        raise ValueError("%s: feature_map must be 'identity' or 'elu1', got %r" % (fn, feature_map))
    if normalize:
        flags |= LINATTN_NORMALIZE
    elif initial_z is not None or final_z_out is not None:
        raise ValueError("%s: initial_z / final_z_out need normalize=True" % fn)
    chunk = int_arg(fn, "chunk", chunk)
    pq, pk, pv, pcu, n_arg = _linear_inputs(c, q, k, v, cu_seqlens)
    B, T, H, K, V = (c.dims[x] for x in "BTHKV")
    sc = scale_or_default(fn, scale, K)
    ps0, fin, pfin = _state(c, initial_state, final_state_out, return_final_state, ("N", "H", "K", "V"))
    pz0 = c.arr("initial_z", initial_z, ("N", "H", "K"), optional=True)
    z, pz = (None, None)
    if normalize and (return_final_state or final_z_out is not None):
        z, pz = c.out("final_z_out", final_z_out, ("N", "H", "K"))
    o, po = c.out("out", out, ("B", "T", "H", "V"))
    c.run(int(m), B, T, H, K, V, sc, flags, pq, pk, pv, po, ps0, pfin, pz0, pz, pcu, n_arg, chunk)
    if return_final_state:
        return (o, fin, z) if normalize else (o, fin)
    return o


_append_doc(linear_attention, _LINEAR_DOC + """
    Returns: o; with return_final_state, (o, final_state), or
    (o, final_state, final_z) when normalize=True.
""")


def retention(q, k, v, gamma=None, *, mode="parallel", scale=None, initial_state=None,
              return_final_state=False, final_state_out=None, cu_seqlens=None, chunk=0, out=None,
              ctx=None):
    """RetNet retention (seqk_retention): a constant decay gamma_h per head:

        S_t = gamma_h S_{t-1} + k_t v_t^T,        o_t = S_t^T (scale * q_t)

    Extra argument:
      gamma   [H] float32 decays in (0, 1], or None for RetNet's defaults
              gamma_h = 1 - 2^(-5-h) (see retention_default_gammas)
    """
    fn = "seqk.retention"
    c = Call(fn, "seqk_retention", ctx, q)
    m = mode_arg(fn, mode)
    chunk = int_arg(fn, "chunk", chunk)
    pq, pk, pv, pcu, n_arg = _linear_inputs(c, q, k, v, cu_seqlens)
    B, T, H, K, V = (c.dims[x] for x in "BTHKV")
    sc = scale_or_default(fn, scale, K)
    pg = c.arr("gamma", gamma, ("H",), optional=True)
    ps0, fin, pfin = _state(c, initial_state, final_state_out, return_final_state, ("N", "H", "K", "V"))
    o, po = c.out("out", out, ("B", "T", "H", "V"))
    c.run(int(m), B, T, H, K, V, sc, pg, pq, pk, pv, po, ps0, pfin, pcu, n_arg, chunk)
    return (o, fin) if return_final_state else o


_append_doc(retention, _LINEAR_DOC + """
    Returns: o, or (o, final_state) with return_final_state.
""")


def retention_default_gammas(H):
    """RetNet's default decays gamma_h = 1 - 2^(-5-h), h = 0 .. H-1, as a float32
    numpy array [H] (seqk_retention_default_gammas)."""
    H = int_arg("seqk.retention_default_gammas", "H", H)
    # the library checks 1 <= H <= 2^20 before it writes anything
    g = np.empty(H if 1 <= H <= (1 << 20) else 1, dtype=np.float32)
    check(lib.seqk_retention_default_gammas(H, g.__array_interface__["data"][0]), "seqk_retention_default_gammas")
    return g


def gated_retention(q, k, v, g, *, mode="parallel", scale=None, initial_state=None, return_final_state=False,
                    final_state_out=None, cu_seqlens=None, chunk=0, out=None, ctx=None):
    """Gated retention (seqk_gated_retention): gated linear attention with one
    scalar log-gate per token and head (Mamba2 / SSD):

        S_t = exp(g_t) S_{t-1} + k_t v_t^T,        o_t = S_t^T (scale * q_t)

    Extra argument:
      g     [B, T, H] float32 log-gates, finite, normally <= 0 (decays in
            (0, 1]); very negative gates (-20 and below) are safe
    """
    fn = "seqk.gated_retention"
    c = Call(fn, "seqk_gated_retention", ctx, q)
    m = mode_arg(fn, mode)
    chunk = int_arg(fn, "chunk", chunk)
    pq, pk, pv, pcu, n_arg = _linear_inputs(c, q, k, v, cu_seqlens)
    B, T, H, K, V = (c.dims[x] for x in "BTHKV")
    sc = scale_or_default(fn, scale, K)
    pg = c.arr("g", g, ("B", "T", "H"))
    ps0, fin, pfin = _state(c, initial_state, final_state_out, return_final_state, ("N", "H", "K", "V"))
    o, po = c.out("out", out, ("B", "T", "H", "V"))
    c.run(int(m), B, T, H, K, V, sc, pq, pk, pv, pg, po, ps0, pfin, pcu, n_arg, chunk)
    return (o, fin) if return_final_state else o


_append_doc(gated_retention, _LINEAR_DOC + """
    Returns: o, or (o, final_state) with return_final_state.
""")


def mamba2(x, dt, A, B, C, D=None, *, dt_bias=None, dt_softplus=False, mode="parallel", initial_state=None,
           return_final_state=False, final_state_out=None, cu_seqlens=None, chunk=0, out=None, ctx=None):
    """The Mamba2 (SSD) layer's sequence mixing (seqk_mamba2), computed as gated
    retention with q = C, k = B, v = dt * x, g = dt * A and scale 1:

        dt_t = softplus(dt_raw_t + dt_bias)    (dt_softplus=True; else dt_raw_t + dt_bias)
        S_t  = exp(dt_t A_h) S_{t-1} + B_t (dt_t x_t)^T        S: [Nst, P] per head
        y_t  = S_t^T C_t + D_h x_t

    Head h reads B/C group h // (H / G).

    Args:
      x             [Bt, T, H, P] float32 inputs (Bt: batch)
      dt            [Bt, T, H] raw dt
      A             [H] (negative: A = -exp(A_log))
      B, C          [Bt, T, G, Nst] (H % G == 0)
      D             [H] skip weights, or None (no skip)
      dt_bias       [H] or None (zero)
      dt_softplus   apply softplus to dt + dt_bias (mamba_ssm's dt_softplus)
      mode          'parallel' (default) or 'recurrent'
      initial_state [N, H, Nst, P] or None (zeros). Note: mamba_ssm stores
                    this state transposed, [N, H, P, Nst].
      return_final_state, final_state_out [N, H, Nst, P]: as for the other
                    linear-state ops (final_state_out may be initial_state)
      cu_seqlens    int32 [N+1] or None (varlen; batch must be 1)
      chunk         chunk size of the parallel mode, 0 = chunk_default(K, V)
      out           [Bt, T, H, P] output y, or None (allocated)
      ctx           seqk.Context or None

    Returns: y, or (y, final_state) with return_final_state.
    """
    fn = "seqk.mamba2"
    c = Call(fn, "seqk_mamba2", ctx, x)
    m = mode_arg(fn, mode)
    chunk = int_arg(fn, "chunk", chunk)
    dt_softplus = _bool(fn, "dt_softplus", dt_softplus)
    px = c.arr("x", x, ("B", "T", "H", "P"))
    pdt = c.arr("dt", dt, ("B", "T", "H"))
    pA = c.arr("A", A, ("H",))
    pB = c.arr("B", B, ("B", "T", "G", "Nst"))
    pC = c.arr("C", C, ("B", "T", "G", "Nst"))
    pD = c.arr("D", D, ("H",), optional=True)
    pbias = c.arr("dt_bias", dt_bias, ("H",), optional=True)
    Bt, T, H, P, G, Nst = (c.dims[n] for n in ("B", "T", "H", "P", "G", "Nst"))
    if G == 0 or H % G:
        raise ValueError("%s: H=%d (from x) must be a multiple of the number of groups G=%d (from B)" % (fn, H, G))
    pcu, n_arg = _varlen(c, cu_seqlens)
    ps0, fin, pfin = _state(c, initial_state, final_state_out, return_final_state, ("N", "H", "Nst", "P"))
    y, py = c.out("out", out, ("B", "T", "H", "P"))
    flags = MAMBA2_DT_SOFTPLUS if dt_softplus else 0
    c.run(int(m), Bt, T, H, P, G, Nst, flags, px, pdt, pA, pB, pC, pD, pbias, py, ps0, pfin, pcu, n_arg, chunk)
    return (y, fin) if return_final_state else y


_CHUNKED_OPS = {"linear_state": 0, "deltanet": 1}  # seqk_chunked_op


def chunk_default(K, V, *, op="linear_state", ctx=None):
    """The chunk size that chunk=0 means with these head sizes on this context
    (seqk_chunk_default), for op "linear_state" (linear_attention, retention,
    gated_retention, mamba2 with K = Nst and V = P) or "deltanet": on the CPU
    32 when K and V are at most 64 (deltanet: 128), else 64; on CUDA 64."""
    import ctypes

    fn = "seqk.chunk_default"
    if op not in _CHUNKED_OPS:
        raise ValueError("%s: op must be one of %s, got %r" % (fn, ", ".join(map(repr, _CHUNKED_OPS)), op))
    K, V = int_arg(fn, "K", K), int_arg(fn, "V", V)
    out = ctypes.c_int64(0)
    ctx = _ctx(fn, ctx)
    with ctx._lock:
        check(lib.seqk_chunk_default(ctx.handle, _CHUNKED_OPS[op], K, V, ctypes.addressof(out)),
              "seqk_chunk_default")
    return out.value


def linear_state_workspace_size(B, T, H, K, V, *, mode="parallel", N=0, chunk=0, ctx=None):
    """An upper bound of the workspace bytes any linear-state op (linear_attention,
    retention, gated_retention, mamba2) needs for these sizes and mode on this
    context (seqk_linear_state_workspace_size; N: sequences with varlen, else 0)."""
    fn = "seqk.linear_state_workspace_size"
    m = mode_arg(fn, mode)
    return _size_query(fn, "seqk_linear_state_workspace_size", ctx, int(m), int(B), int(T), int(H), int(K),
                       int(V), int(N), int(chunk))

# --------------------------------------------------------------------------
# gradients of the linear-state modules
# --------------------------------------------------------------------------

_LINEAR_BACKWARD_DOC = """
    The gradients of the function the forward computes (both modes compute
    the same one) of a loss L, given dout = dL/do and optionally
    dfinal_state = dL/d(final state). Per head, with q~ = scale q,
    dS_T = dfinal_state and a_t the decay:

        dS_{t-1} = a_t dS_t + q~_t dout_t^T          (walking t backwards)
        dq_t = scale S_t dout_t,   dk_t = dS_t v_t,   dv_t = dS_t^T k_t
        dinitial_state = dS_0

    computed chunkwise with recomputed chunk states (the library's
    DESIGN 3.7); deterministic (the same bits for any thread count). Every
    gradient is overwritten, never accumulated.

    Shared arguments (the forward's inputs and sizes exactly as in the forward
    call; there is no mode: both modes have one gradient):
      q, k, v         the forward's inputs, [B, T, H, K], [B, T, H, K], [B, T, H, V]
      dout            [B, T, H, V] float32 dL/do
      scale           as the forward; None = 1/sqrt(K)
      initial_state   [N, H, K, V] the forward's initial state, or None (zeros)
      dfinal_state    [N, H, K, V] dL/d(final state), or None (zero: the final
                      state was not used)
      cu_seqlens      int32 [N+1] or None (varlen; B must be 1)
      chunk           chunk size (1..1024), 0 = chunk_default(K, V); any chunk gives the same
                      gradient up to fp32 rounding
      return_dinitial_state  also return dinitial_state = dL/d(initial_state)
                      (at a zero state when initial_state is None)
      dq_out, dk_out, dv_out   where to write dq [B, T, H, K], dk [B, T, H, K],
                      dv [B, T, H, V], or None (allocated like the forward's
                      out); must not overlap each other or an input
      dinitial_state_out  [N, H, K, V] where to write dinitial_state, or None
                      (allocated when asked for)
      ctx             seqk.Context or None (default context)
"""


def _linear_backward_inputs(c, q, k, v, dout, cu_seqlens, initial_state, dfinal_state):
    pq, pk, pv, pcu, n_arg = _linear_inputs(c, q, k, v, cu_seqlens)
    pdo = c.arr("dout", dout, ("B", "T", "H", "V"))
    spec = ("N", "H", "K", "V")
    ps0 = c.arr("initial_state", initial_state, spec, optional=True)
    pdfin = c.arr("dfinal_state", dfinal_state, spec, optional=True)
    return pq, pk, pv, pdo, pcu, n_arg, ps0, pdfin


def _linear_backward_outputs(c, dq_out, dk_out, dv_out):
    dq, pdq = c.out("dq_out", dq_out, ("B", "T", "H", "K"))
    dk, pdk = c.out("dk_out", dk_out, ("B", "T", "H", "K"))
    dv, pdv = c.out("dv_out", dv_out, ("B", "T", "H", "V"))
    return dq, pdq, dk, pdk, dv, pdv


def _dinitial(c, return_dinitial_state, dinitial_state_out, spec):
    if return_dinitial_state or dinitial_state_out is not None:
        return c.out("dinitial_state_out", dinitial_state_out, spec)
    return None, None


def linear_attention_backward(q, k, v, dout, *, scale=None, normalize=False, feature_map="identity",
                              initial_state=None, initial_z=None, dfinal_state=None, dfinal_z=None,
                              cu_seqlens=None, chunk=0, return_dinitial_state=False, dq_out=None, dk_out=None,
                              dv_out=None, dinitial_state_out=None, dinitial_z_out=None, ctx=None):
    """The gradients of linear_attention (seqk_linear_attention_backward), through
    the feature map (feature_map='elu1') and, with normalize=True, through the
    Katharopoulos normaliser and its state z (o_t = S_t^T q~_t / (q~_t . z_t + 1e-6)).

    Extra arguments (normalize=True only; ValueError otherwise):
      initial_z       [N, H, K] the forward's initial_z, or None (zeros)
      dfinal_z        [N, H, K] dL/d(final z), or None (zero)
      dinitial_z_out  [N, H, K] where to write dinitial_z = dL/d(initial_z)
                      (returned with return_dinitial_state), or None
    """
    fn = "seqk.linear_attention_backward"
    c = Call(fn, "seqk_linear_attention_backward", ctx, q)
    normalize = _bool(fn, "normalize", normalize)
    return_dinitial_state = _bool(fn, "return_dinitial_state", return_dinitial_state)
    if feature_map in (None, "identity"):
        flags = 0
    elif feature_map in ("elu1", "elu+1"):
        flags = LINATTN_ELU1
    else:
        raise ValueError("%s: feature_map must be 'identity' or 'elu1', got %r" % (fn, feature_map))
    if normalize:
        flags |= LINATTN_NORMALIZE
    else:
        for name, x in (("initial_z", initial_z), ("dfinal_z", dfinal_z), ("dinitial_z_out", dinitial_z_out)):
            if x is not None:
                raise ValueError("%s: %s needs normalize=True (z is the normaliser's state)" % (fn, name))
    chunk = int_arg(fn, "chunk", chunk)
    pq, pk, pv, pdo, pcu, n_arg, ps0, pdfin = _linear_backward_inputs(c, q, k, v, dout, cu_seqlens, initial_state,
                                                                      dfinal_state)
    B, T, H, K, V = (c.dims[x] for x in "BTHKV")
    sc = scale_or_default(fn, scale, K)
    pz0 = c.arr("initial_z", initial_z, ("N", "H", "K"), optional=True)
    pdz = c.arr("dfinal_z", dfinal_z, ("N", "H", "K"), optional=True)
    dq, pdq, dk, pdk, dv, pdv = _linear_backward_outputs(c, dq_out, dk_out, dv_out)
    ds0, pds0 = _dinitial(c, return_dinitial_state, dinitial_state_out, ("N", "H", "K", "V"))
    dz0, pdz0 = (None, None)
    if normalize and (return_dinitial_state or dinitial_z_out is not None):
        dz0, pdz0 = c.out("dinitial_z_out", dinitial_z_out, ("N", "H", "K"))
    c.run(B, T, H, K, V, sc, flags, pq, pk, pv, pdo, ps0, pz0, pdfin, pdz, pdq, pdk, pdv, pds0, pdz0, pcu, n_arg,
          chunk)
    if return_dinitial_state:
        return (dq, dk, dv, ds0, dz0) if normalize else (dq, dk, dv, ds0)
    return dq, dk, dv


_append_doc(linear_attention_backward, _LINEAR_BACKWARD_DOC + """
    Returns: (dq, dk, dv); with return_dinitial_state, (dq, dk, dv,
    dinitial_state), or (dq, dk, dv, dinitial_state, dinitial_z) when
    normalize=True.
""")


def retention_backward(q, k, v, dout, *, gamma=None, scale=None, initial_state=None, dfinal_state=None,
                       cu_seqlens=None, chunk=0, return_dinitial_state=False, dq_out=None, dk_out=None, dv_out=None,
                       dinitial_state_out=None, ctx=None):
    """The gradients of retention (seqk_retention_backward); a_t = gamma_h.

    Extra argument:
      gamma   [H] the forward's decays, or None for RetNet's defaults (a
              constant: no gradient). Keyword-only here (the forward takes it
              positionally after v).
    """
    fn = "seqk.retention_backward"
    c = Call(fn, "seqk_retention_backward", ctx, q)
    return_dinitial_state = _bool(fn, "return_dinitial_state", return_dinitial_state)
    chunk = int_arg(fn, "chunk", chunk)
    pq, pk, pv, pdo, pcu, n_arg, ps0, pdfin = _linear_backward_inputs(c, q, k, v, dout, cu_seqlens, initial_state,
                                                                      dfinal_state)
    B, T, H, K, V = (c.dims[x] for x in "BTHKV")
    sc = scale_or_default(fn, scale, K)
    pg = c.arr("gamma", gamma, ("H",), optional=True)
    dq, pdq, dk, pdk, dv, pdv = _linear_backward_outputs(c, dq_out, dk_out, dv_out)
    ds0, pds0 = _dinitial(c, return_dinitial_state, dinitial_state_out, ("N", "H", "K", "V"))
    c.run(B, T, H, K, V, sc, pg, pq, pk, pv, pdo, ps0, pdfin, pdq, pdk, pdv, pds0, pcu, n_arg, chunk)
    return (dq, dk, dv, ds0) if return_dinitial_state else (dq, dk, dv)


_append_doc(retention_backward, _LINEAR_BACKWARD_DOC + """
    Returns: (dq, dk, dv), or (dq, dk, dv, dinitial_state) with
    return_dinitial_state.
""")


def gated_retention_backward(q, k, v, g, dout, *, scale=None, initial_state=None, dfinal_state=None, cu_seqlens=None,
                             chunk=0, return_dinitial_state=False, dq_out=None, dk_out=None, dv_out=None,
                             dg_out=None, dinitial_state_out=None, ctx=None):
    """The gradients of gated_retention (seqk_gated_retention_backward), the
    log-gates' included; a_t = exp(g_t):

        dg_t = <dS_t, exp(g_t) S_{t-1}>      (dS_t = dL/dS_t, S_{t-1} the state
                                              before token t)

    Extra arguments:
      g       [B, T, H] the forward's log-gates
      dg_out  [B, T, H] where to write dg, or None (allocated)
    """
    fn = "seqk.gated_retention_backward"
    c = Call(fn, "seqk_gated_retention_backward", ctx, q)
    return_dinitial_state = _bool(fn, "return_dinitial_state", return_dinitial_state)
    chunk = int_arg(fn, "chunk", chunk)
    pq, pk, pv, pdo, pcu, n_arg, ps0, pdfin = _linear_backward_inputs(c, q, k, v, dout, cu_seqlens, initial_state,
                                                                      dfinal_state)
    B, T, H, K, V = (c.dims[x] for x in "BTHKV")
    sc = scale_or_default(fn, scale, K)
    pg = c.arr("g", g, ("B", "T", "H"))
    dq, pdq, dk, pdk, dv, pdv = _linear_backward_outputs(c, dq_out, dk_out, dv_out)
    dg, pdg = c.out("dg_out", dg_out, ("B", "T", "H"))
    ds0, pds0 = _dinitial(c, return_dinitial_state, dinitial_state_out, ("N", "H", "K", "V"))
    c.run(B, T, H, K, V, sc, pq, pk, pv, pg, pdo, ps0, pdfin, pdq, pdk, pdv, pdg, pds0, pcu, n_arg, chunk)
    return (dq, dk, dv, dg, ds0) if return_dinitial_state else (dq, dk, dv, dg)


_append_doc(gated_retention_backward, _LINEAR_BACKWARD_DOC + """
    Returns: (dq, dk, dv, dg), or (dq, dk, dv, dg, dinitial_state) with
    return_dinitial_state.
""")


def mamba2_backward(x, dt, A, B, C, dy, *, D=None, dt_bias=None, dt_softplus=False, initial_state=None,
                    dfinal_state=None, cu_seqlens=None, chunk=0, return_ddt_bias=False, return_dinitial_state=False,
                    dx_out=None, ddt_out=None, dA_out=None, dB_out=None, dC_out=None, dD_out=None, ddt_bias_out=None,
                    dinitial_state_out=None, ctx=None):
    """The gradients of mamba2 (seqk_mamba2_backward): the linear-state backward
    of gated retention with q = C, k = B, v = dt x, g = dt A, then through
    those maps, the skip D x and the softplus:

        dx   = dt * dv + D * dy                       [Bt, T, H, P]
        ddt  = (dv . x + dg A) * sigmoid(dt_raw + dt_bias)   (the softplus
               factor only with dt_softplus)          [Bt, T, H]
        dA   = sum over tokens of dg dt               [H]
        dB, dC  summed over the heads of each group   [Bt, T, G, Nst]
        dD   = sum over tokens of dy . x              [H]
        ddt_bias = sum over tokens of ddt             [H]

    Reductions run in a fixed order (deterministic).

    Args:
      x, dt, A, B, C  the forward's inputs (shapes as in mamba2)
      dy              [Bt, T, H, P] float32 dL/dy
      D, dt_bias, dt_softplus   as the forward call (keyword-only here)
      initial_state   [N, H, Nst, P] the forward's initial state, or None
      dfinal_state    [N, H, Nst, P] dL/d(final state), or None (zero)
      cu_seqlens, chunk   as the forward
      return_ddt_bias also return ddt_bias (the gradient at a zero bias when
                      dt_bias is None)
      return_dinitial_state  also return dinitial_state = dL/d(initial_state)
      dx_out, ddt_out, dA_out, dB_out, dC_out, dD_out, ddt_bias_out,
      dinitial_state_out   where to write each gradient, or None (allocated);
                      dD_out only with D
      ctx             seqk.Context or None

    Returns: (dx, ddt, dA, dB, dC), followed by dD when D is given, by
    ddt_bias with return_ddt_bias, and by dinitial_state with
    return_dinitial_state (in that order).
    """
    fn = "seqk.mamba2_backward"
    c = Call(fn, "seqk_mamba2_backward", ctx, x)
    chunk = int_arg(fn, "chunk", chunk)
    dt_softplus = _bool(fn, "dt_softplus", dt_softplus)
    return_ddt_bias = _bool(fn, "return_ddt_bias", return_ddt_bias)
    return_dinitial_state = _bool(fn, "return_dinitial_state", return_dinitial_state)
    if D is None and dD_out is not None:
        raise ValueError("%s: dD_out needs D (there is no skip without D)" % fn)
    px = c.arr("x", x, ("B", "T", "H", "P"))
    pdt = c.arr("dt", dt, ("B", "T", "H"))
    pA = c.arr("A", A, ("H",))
    pB = c.arr("B", B, ("B", "T", "G", "Nst"))
    pC = c.arr("C", C, ("B", "T", "G", "Nst"))
    pD = c.arr("D", D, ("H",), optional=True)
    pbias = c.arr("dt_bias", dt_bias, ("H",), optional=True)
    Bt, T, H, P, G, Nst = (c.dims[n] for n in ("B", "T", "H", "P", "G", "Nst"))
    if G == 0 or H % G:
        raise ValueError("%s: H=%d (from x) must be a multiple of the number of groups G=%d (from B)" % (fn, H, G))
    pdy = c.arr("dy", dy, ("B", "T", "H", "P"))
    pcu, n_arg = _varlen(c, cu_seqlens)
    spec = ("N", "H", "Nst", "P")
    ps0 = c.arr("initial_state", initial_state, spec, optional=True)
    pdfin = c.arr("dfinal_state", dfinal_state, spec, optional=True)
    dx, pdx = c.out("dx_out", dx_out, ("B", "T", "H", "P"))
    ddt, pddt = c.out("ddt_out", ddt_out, ("B", "T", "H"))
    dA, pdA = c.out("dA_out", dA_out, ("H",))
    dB, pdB = c.out("dB_out", dB_out, ("B", "T", "G", "Nst"))
    dC, pdC = c.out("dC_out", dC_out, ("B", "T", "G", "Nst"))
    dD, pdD = c.out("dD_out", dD_out, ("H",)) if D is not None else (None, None)
    dbias, pdbias = (None, None)
    if return_ddt_bias or ddt_bias_out is not None:
        dbias, pdbias = c.out("ddt_bias_out", ddt_bias_out, ("H",))
    ds0, pds0 = _dinitial(c, return_dinitial_state, dinitial_state_out, spec)
    flags = MAMBA2_DT_SOFTPLUS if dt_softplus else 0
    c.run(Bt, T, H, P, G, Nst, flags, px, pdt, pA, pB, pC, pD, pbias, ps0, pdy, pdfin, pdx, pddt, pdA, pdB, pdC,
          pdD, pdbias, pds0, pcu, n_arg, chunk)
    res = (dx, ddt, dA, dB, dC)
    if D is not None:
        res += (dD,)
    if return_ddt_bias:
        res += (dbias,)
    if return_dinitial_state:
        res += (ds0,)
    return res


def linear_state_backward_workspace_size(B, T, H, K, V, *, G=None, N=0, chunk=0, ctx=None):
    """An upper bound of the workspace bytes any linear-state backward
    (linear_attention_backward, retention_backward, gated_retention_backward,
    mamba2_backward) needs for these sizes on this context
    (seqk_linear_state_backward_workspace_size). G: the q/k head groups,
    None = H (for mamba2_backward: K = Nst, V = P and G its B/C groups);
    N: sequences with varlen, else 0."""
    fn = "seqk.linear_state_backward_workspace_size"
    G = H if G is None else G
    return _size_query(fn, "seqk_linear_state_backward_workspace_size", ctx, int(B), int(T), int(H), int(G), int(K),
                       int(V), int(N), int(chunk))


# --------------------------------------------------------------------------
# Mamba selective scan (Mamba1)
# --------------------------------------------------------------------------


def selective_scan(u, dt, A, B, C, D=None, z=None, *, dt_bias=None, dt_softplus=False, mode="parallel",
                   initial_state=None, return_final_state=False, final_state_out=None, cu_seqlens=None, out=None,
                   ctx=None):
    """The Mamba (Mamba1) selective scan (seqk_selective_scan): per channel d and
    state index n, a diagonal recurrence with input-dependent coefficients,

        dt_t[d]  = softplus(dt_raw_t[d] + dt_bias[d])     (dt_softplus=True; else without softplus)
        h_t[d,n] = exp(dt_t[d] A[d,n]) h_{t-1}[d,n] + dt_t[d] B_t[g,n] u_t[d]
        y_t[d]   = sum_n C_t[g,n] h_t[d,n] + D[d] u_t[d]
        y_t[d]  *= silu(z_t[d])                           (when z is given)

    with g = d // (Dc / G) the group of channel d (Dc channels, G groups).
    mode='recurrent' walks the tokens; mode='parallel' runs the scan primitive
    over chunks of time (same result up to fp32 rounding).

    Args:
      u, dt         [Bt, T, Dc] float32 inputs and raw step sizes (token-major;
                    mamba_ssm uses [Bt, Dc, T])
      A             [Dc, Nst] (negative: A = -exp(A_log))
      B, C          [Bt, T, G, Nst] (Dc % G == 0)
      D             [Dc] skip weights, or None
      z             [Bt, T, Dc] gate, or None (no gate)
      dt_bias       [Dc] or None (zero)
      dt_softplus   apply softplus to dt + dt_bias
      mode          'parallel' (default) or 'recurrent'
      initial_state [N, Dc, Nst] or None (zeros)
      return_final_state, final_state_out [N, Dc, Nst]: as for the
                    linear-state ops (final_state_out may be initial_state)
      cu_seqlens    int32 [N+1] or None (varlen; batch must be 1)
      out           [Bt, T, Dc] output y, or None (allocated)
      ctx           seqk.Context or None

    Returns: y, or (y, final_state) with return_final_state.
    """
    fn = "seqk.selective_scan"
    c = Call(fn, "seqk_selective_scan", ctx, u)
    m = mode_arg(fn, mode)
    dt_softplus = _bool(fn, "dt_softplus", dt_softplus)
    pu = c.arr("u", u, ("B", "T", "D"))
    pdt = c.arr("dt", dt, ("B", "T", "D"))
    pA = c.arr("A", A, ("D", "Nst"))
    pB = c.arr("B", B, ("B", "T", "G", "Nst"))
    pC = c.arr("C", C, ("B", "T", "G", "Nst"))
    pD = c.arr("D", D, ("D",), optional=True)
    pz = c.arr("z", z, ("B", "T", "D"), optional=True)
    pbias = c.arr("dt_bias", dt_bias, ("D",), optional=True)
    Bt, T, Dc, Nst, G = (c.dims[n] for n in ("B", "T", "D", "Nst", "G"))
    if G == 0 or Dc % G:
        raise ValueError("%s: the channel count D=%d (from u) must be a multiple of the number of groups G=%d "
                         "(from B)" % (fn, Dc, G))
    pcu, n_arg = _varlen(c, cu_seqlens)
    ps0, fin, pfin = _state(c, initial_state, final_state_out, return_final_state, ("N", "D", "Nst"))
    y, py = c.out("out", out, ("B", "T", "D"))
    flags = SSCAN_DT_SOFTPLUS if dt_softplus else 0
    c.run(int(m), Bt, T, Dc, Nst, G, flags, pu, pdt, pA, pB, pC, pD, pz, pbias, py, ps0, pfin, pcu, n_arg)
    return (y, fin) if return_final_state else y

def selective_scan_backward(u, dt, A, B, C, dy, *, D=None, z=None, dt_bias=None, dt_softplus=False,
                            initial_state=None, dfinal_state=None, cu_seqlens=None, return_ddt_bias=False,
                            return_dinitial_state=False, du_out=None, ddt_out=None, dA_out=None, dB_out=None,
                            dC_out=None, dD_out=None, dz_out=None, ddt_bias_out=None, dinitial_state_out=None,
                            ctx=None):
    """The gradients of selective_scan (seqk_selective_scan_backward; both modes
    compute one function). Per channel d and state index n, with
    x_t = dt_raw_t + dt_bias, dt_t = softplus(x_t) (or x_t), a_t = exp(dt_t A),
    yp_t the output before the gate and gy_t = dy_t silu(z_t) (dy_t without z):

        lam_t  = C_t gy_t + a_{t+1} lam_{t+1}     (dL/dh_t, walking t backwards;
                                                   after the last token: dfinal_state)
        du_t   = dt_t sum_n B_t lam_t + D gy_t
        ddt_t  = sum_n lam_t (A a_t h_{t-1} + B_t u_t)  (* sigmoid(x_t) with dt_softplus)
        dA     = sum over tokens of lam_t dt_t a_t h_{t-1}
        dB_t, dC_t  summed over the channels of each group
        dz_t   = dy_t yp_t silu'(z_t),   dD = sum_t gy_t u_t,   ddt_bias = sum_t ddt_t
        dinitial_state = a_1 lam_1

    h is recomputed per time segment, never stored for every token; sums
    over channels and sequences run in a fixed order (deterministic).

    Args:
      u, dt, A, B, C  the forward's inputs (shapes as in selective_scan)
      dy              [Bt, T, Dc] float32 dL/dy
      D, z, dt_bias, dt_softplus   as the forward call (keyword-only here)
      initial_state   [N, Dc, Nst] the forward's initial state, or None (zeros)
      dfinal_state    [N, Dc, Nst] dL/d(final state), or None (zero)
      cu_seqlens      int32 [N+1] or None (varlen; batch must be 1)
      return_ddt_bias also return ddt_bias (at a zero bias when dt_bias is None)
      return_dinitial_state  also return dinitial_state = dL/d(initial_state)
      du_out, ddt_out, dA_out, dB_out, dC_out, dD_out, dz_out, ddt_bias_out,
      dinitial_state_out   where to write each gradient, or None (allocated);
                      dD_out only with D, dz_out only with z
      ctx             seqk.Context or None

    Returns: (du, ddt, dA, dB, dC), followed by dD when D is given, dz when z
    is given, ddt_bias with return_ddt_bias and dinitial_state with
    return_dinitial_state (in that order).
    """
    fn = "seqk.selective_scan_backward"
    c = Call(fn, "seqk_selective_scan_backward", ctx, u)
    dt_softplus = _bool(fn, "dt_softplus", dt_softplus)
    return_ddt_bias = _bool(fn, "return_ddt_bias", return_ddt_bias)
    return_dinitial_state = _bool(fn, "return_dinitial_state", return_dinitial_state)
    if D is None and dD_out is not None:
        raise ValueError("%s: dD_out needs D (there is no skip without D)" % fn)
    if z is None and dz_out is not None:
        raise ValueError("%s: dz_out needs z (there is no gate without z)" % fn)
    pu = c.arr("u", u, ("B", "T", "D"))
    pdt = c.arr("dt", dt, ("B", "T", "D"))
    pA = c.arr("A", A, ("D", "Nst"))
    pB = c.arr("B", B, ("B", "T", "G", "Nst"))
    pC = c.arr("C", C, ("B", "T", "G", "Nst"))
    pD = c.arr("D", D, ("D",), optional=True)
    pz = c.arr("z", z, ("B", "T", "D"), optional=True)
    pbias = c.arr("dt_bias", dt_bias, ("D",), optional=True)
    Bt, T, Dc, Nst, G = (c.dims[n] for n in ("B", "T", "D", "Nst", "G"))
    if G == 0 or Dc % G:
        raise ValueError("%s: the channel count D=%d (from u) must be a multiple of the number of groups G=%d "
                         "(from B)" % (fn, Dc, G))
    pdy = c.arr("dy", dy, ("B", "T", "D"))
    pcu, n_arg = _varlen(c, cu_seqlens)
    spec = ("N", "D", "Nst")
    ps0 = c.arr("initial_state", initial_state, spec, optional=True)
    pdfin = c.arr("dfinal_state", dfinal_state, spec, optional=True)
    du, pdu = c.out("du_out", du_out, ("B", "T", "D"))
    ddt, pddt = c.out("ddt_out", ddt_out, ("B", "T", "D"))
    dA, pdA = c.out("dA_out", dA_out, ("D", "Nst"))
    dB, pdB = c.out("dB_out", dB_out, ("B", "T", "G", "Nst"))
    dC, pdC = c.out("dC_out", dC_out, ("B", "T", "G", "Nst"))
    dD, pdD = c.out("dD_out", dD_out, ("D",)) if D is not None else (None, None)
    dz, pdz = c.out("dz_out", dz_out, ("B", "T", "D")) if z is not None else (None, None)
    dbias, pdbias = (None, None)
    if return_ddt_bias or ddt_bias_out is not None:
        dbias, pdbias = c.out("ddt_bias_out", ddt_bias_out, ("D",))
    ds0, pds0 = _dinitial(c, return_dinitial_state, dinitial_state_out, spec)
    flags = SSCAN_DT_SOFTPLUS if dt_softplus else 0
    c.run(Bt, T, Dc, Nst, G, flags, pu, pdt, pA, pB, pC, pD, pz, pbias, ps0, pdy, pdfin, pdu, pddt, pdA, pdB, pdC,
          pdD, pdz, pdbias, pds0, pcu, n_arg)
    res = (du, ddt, dA, dB, dC)
    if D is not None:
        res += (dD,)
    if z is not None:
        res += (dz,)
    if return_ddt_bias:
        res += (dbias,)
    if return_dinitial_state:
        res += (ds0,)
    return res


def selective_scan_backward_workspace_size(B, T, D, Nst, G, *, N=0, ctx=None):
    """The workspace bytes seqk_selective_scan_backward needs for these sizes on
    this context (Bt, T, channels D, state size Nst, groups G; N: sequences
    with varlen, else 0: then an upper bound for any cu_seqlens)."""
    return _size_query("seqk.selective_scan_backward_workspace_size", "seqk_selective_scan_backward_workspace_size",
                       ctx, int(B), int(T), int(D), int(Nst), int(G), int(N))


# --------------------------------------------------------------------------
# DeltaNet and gated DeltaNet
# --------------------------------------------------------------------------


def deltanet(q, k, v, beta, g=None, *, mode="parallel", scale=None, l2norm_qk=False, allow_neg_eigval=False,
             initial_state=None, return_final_state=False, final_state_out=None, cu_seqlens=None, chunk=0, out=None,
             ctx=None):
    """DeltaNet, and gated DeltaNet when g is given (seqk_deltanet): the delta
    rule on a K x V state per sequence and head,

        S'  = exp(g_t) S_{t-1}                          (g=None: S' = S_{t-1})
        S_t = S' + beta_t k_t (v_t - S'^T k_t)^T
        o_t = S_t^T (scale * q_t)

    l2norm_qk=True first replaces q_t and k_t by x / sqrt(sum x^2 + 1e-6)
    (inside the kernel); without it, pass keys of norm <= 1 (the stable
    regime). beta must lie in [0, 1], or in [0, 2] with allow_neg_eigval=True
    (checked by the library on a CPU context, not on CUDA).

    mode='recurrent' runs token by token (decoding: T = 1 with
    final_state_out=initial_state); mode='parallel' runs the chunked WY / UT
    form (training, prefill). Both give the same result up to fp32 rounding.

    Args:
      q, k            [B, T, H, K] float32 (1 <= K <= 1024)
      v               [B, T, H, V] float32
      beta            [B, T, H] float32 writing strengths
      g               [B, T, H] float32 log-gates (<= 0), or None (plain DeltaNet)
      mode            'parallel' (default) or 'recurrent'
      scale           multiplies q (after the L2 norm); None = 1/sqrt(K)
      l2norm_qk       L2-normalise q and k in the kernel
      allow_neg_eigval  allow beta in [0, 2]
      initial_state   [N, H, K, V] or None (zeros)
      return_final_state  also return the state after the last token
      final_state_out [N, H, K, V] where to write it, or None (allocated when
                      asked for); may be initial_state itself
      cu_seqlens      int32 [N+1] or None (varlen; B must be 1)
      chunk           chunk size of the parallel mode (1..1024), 0 =
                      chunk_default(K, V, op="deltanet")
      out             [B, T, H, V] output o, or None (allocated); must not
                      overlap an input
      ctx             seqk.Context or None (default context)

    Returns: o, or (o, final_state) with return_final_state.
    """
    fn = "seqk.deltanet"
    c = Call(fn, "seqk_deltanet", ctx, q)
    m = mode_arg(fn, mode)
    chunk = int_arg(fn, "chunk", chunk)
    flags = 0
    if _bool(fn, "l2norm_qk", l2norm_qk):
        flags |= DELTANET_L2NORM_QK
    if _bool(fn, "allow_neg_eigval", allow_neg_eigval):
        flags |= DELTANET_ALLOW_NEG_EIGVAL
    pq, pk, pv, pcu, n_arg = _linear_inputs(c, q, k, v, cu_seqlens)
    B, T, H, K, V = (c.dims[x] for x in "BTHKV")
    sc = scale_or_default(fn, scale, K)
    pb = c.arr("beta", beta, ("B", "T", "H"))
    pg = c.arr("g", g, ("B", "T", "H"), optional=True)
    ps0, fin, pfin = _state(c, initial_state, final_state_out, return_final_state, ("N", "H", "K", "V"))
    o, po = c.out("out", out, ("B", "T", "H", "V"))
    c.run(int(m), B, T, H, K, V, sc, flags, pq, pk, pv, pb, pg, po, ps0, pfin, pcu, n_arg, chunk)
    return (o, fin) if return_final_state else o


def deltanet_workspace_size(B, T, H, K, V, *, mode="parallel", N=0, chunk=0, ctx=None):
    """An upper bound of the workspace bytes seqk_deltanet needs for these sizes
    and mode on this context (seqk_deltanet_workspace_size; N: sequences with
    varlen, else 0)."""
    fn = "seqk.deltanet_workspace_size"
    m = mode_arg(fn, mode)
    return _size_query(fn, "seqk_deltanet_workspace_size", ctx, int(m), int(B), int(T), int(H), int(K), int(V),
                       int(N), int(chunk))

def deltanet_backward(q, k, v, beta, dout, *, g=None, scale=None, l2norm_qk=False, allow_neg_eigval=False,
                      initial_state=None, dfinal_state=None, cu_seqlens=None, chunk=0, return_dinitial_state=False,
                      dq_out=None, dk_out=None, dv_out=None, dbeta_out=None, dg_out=None, dinitial_state_out=None,
                      ctx=None):
    """The gradients of deltanet / gated DeltaNet (seqk_deltanet_backward; both
    modes compute one function). Per sequence and head, with a_t = exp(g_t)
    (1 without g), q~ = scale n(q), k~ = n(k) (n the optional L2 norm),
    S' = a_t S_{t-1}, walking t backwards from dS = dfinal_state:

        dq~_t = S_t dout_t;   dS += q~_t dout_t^T;   u = v_t - S'^T k~_t;   e = dS^T k~_t
        dv_t = beta_t e,   dbeta_t = e . u,   dk~_t = beta_t (dS u - S' e)
        dS' = (I - beta_t k~ k~^T) dS,   dg_t = <dS', S'>,   dS_{t-1} = a_t dS'

    with dinitial_state = dS_0 and, through the L2 norm (x~ = x / r,
    r = sqrt(x . x + 1e-6)), dx = (dx~ - x~ (x~ . dx~)) / r. Computed
    chunkwise (about three times the parallel forward's work); deterministic,
    on CPU and CUDA contexts.

    Args:
      q, k, v, beta   the forward's inputs (shapes as in deltanet; beta is
                      checked as there)
      dout            [B, T, H, V] float32 dL/do
      g, scale, l2norm_qk, allow_neg_eigval   as the forward call (g
                      keyword-only here)
      initial_state   [N, H, K, V] the forward's initial state, or None (zeros)
      dfinal_state    [N, H, K, V] dL/d(final state), or None (zero)
      cu_seqlens, chunk   as the forward
      return_dinitial_state  also return dinitial_state = dL/d(initial_state)
                      (at a zero state when initial_state is None)
      dq_out, dk_out, dv_out, dbeta_out, dg_out, dinitial_state_out   where to
                      write each gradient, or None (allocated); dg_out only
                      with g. dq, dk are the gradients of the raw q, k
                      (through the L2 norm with l2norm_qk)
      ctx             seqk.Context or None

    Returns: (dq, dk, dv, dbeta), followed by dg when g is given and by
    dinitial_state with return_dinitial_state.
    """
    fn = "seqk.deltanet_backward"
    c = Call(fn, "seqk_deltanet_backward", ctx, q)
    chunk = int_arg(fn, "chunk", chunk)
    return_dinitial_state = _bool(fn, "return_dinitial_state", return_dinitial_state)
    flags = 0
    if _bool(fn, "l2norm_qk", l2norm_qk):
        flags |= DELTANET_L2NORM_QK
    if _bool(fn, "allow_neg_eigval", allow_neg_eigval):
        flags |= DELTANET_ALLOW_NEG_EIGVAL
    if g is None and dg_out is not None:
        raise ValueError("%s: dg_out needs g (plain DeltaNet has no gates)" % fn)
    pq, pk, pv, pcu, n_arg = _linear_inputs(c, q, k, v, cu_seqlens)
    B, T, H, K, V = (c.dims[x] for x in "BTHKV")
    sc = scale_or_default(fn, scale, K)
    pb = c.arr("beta", beta, ("B", "T", "H"))
    pg = c.arr("g", g, ("B", "T", "H"), optional=True)
    pdo = c.arr("dout", dout, ("B", "T", "H", "V"))
    spec = ("N", "H", "K", "V")
    ps0 = c.arr("initial_state", initial_state, spec, optional=True)
    pdfin = c.arr("dfinal_state", dfinal_state, spec, optional=True)
    dq, pdq, dk, pdk, dv, pdv = _linear_backward_outputs(c, dq_out, dk_out, dv_out)
    dbeta, pdbeta = c.out("dbeta_out", dbeta_out, ("B", "T", "H"))
    dg, pdg = c.out("dg_out", dg_out, ("B", "T", "H")) if g is not None else (None, None)
    ds0, pds0 = _dinitial(c, return_dinitial_state, dinitial_state_out, spec)
    c.run(B, T, H, K, V, sc, flags, pq, pk, pv, pb, pg, ps0, pdo, pdfin, pdq, pdk, pdv, pdbeta, pdg, pds0, pcu, n_arg,
          chunk)
    res = (dq, dk, dv, dbeta)
    if g is not None:
        res += (dg,)
    if return_dinitial_state:
        res += (ds0,)
    return res


def deltanet_backward_workspace_size(B, T, H, K, V, *, N=0, chunk=0, ctx=None):
    """An upper bound of the workspace bytes seqk_deltanet_backward needs for
    these sizes on this context (N: sequences with varlen, else 0; it depends
    on the context's thread count)."""
    return _size_query("seqk.deltanet_backward_workspace_size", "seqk_deltanet_backward_workspace_size", ctx,
                       int(B), int(T), int(H), int(K), int(V), int(N), int(chunk))


# --------------------------------------------------------------------------
# Titans linear memory
# --------------------------------------------------------------------------


def titans_state_size(K, V):
    """Floats per (sequence, head) of the Titans state: E = 3*K*V + 8
    (seqk_titans_state_size). A state is an array [N, H, E]."""
    import ctypes

    fn = "seqk.titans_state_size"
    n = ctypes.c_size_t(0)
    check(lib.seqk_titans_state_size(int_arg(fn, "K", K), int_arg(fn, "V", V), ctypes.byref(n)),
          "seqk_titans_state_size")
    return n.value


def titans(q, k, v, eta, theta, alpha, *, minibatch, mode="parallel", scale=None, l2norm_qk=False,
           initial_state=None, return_final_state=False, final_state_out=None, cu_seqlens=None, out=None, ctx=None):
    """The Titans linear memory (seqk_titans): a K x V memory M per sequence and
    head, trained at test time by mini-batch gradient descent with momentum S
    and forgetting on l_t(M) = 1/2 ||M^T k_t - v_t||^2:

        Mhat = M_{t-1}                  when token t starts a mini-batch of `minibatch` tokens
        S_t  = eta_t S_{t-1} - theta_t k_t (Mhat^T k_t - v_t)^T
        M_t  = (1 - alpha_t) M_{t-1} + S_t
        o_t  = M_t^T (scale * q_t)

    minibatch (b) is part of the function: b = 1 is the pure online rule; a
    larger b takes a mini-batch's gradients at the memory it started with.
    mode='recurrent' walks the tokens (decoding: T = 1 with
    final_state_out=initial_state); mode='parallel' works per mini-batch with
    matrix products. Both give the same result up to fp32 rounding.

    The state is [N, H, E] float32 with E = titans_state_size(K, V) = 3KV + 8:
    per (sequence, head) M (K x V), S, Mhat, then the position inside the
    current mini-batch (an integer-valued float in [0, b)) and 7 reserved
    floats. Where the position is 0, Mhat is not read. A sequence split
    anywhere and continued from the state equals one call over the whole.

    Args:
      q, k            [B, T, H, K] float32 (1 <= K <= 1024)
      v               [B, T, H, V] float32
      eta             [B, T, H] momentum factors in [0, 1]
      theta           [B, T, H] learning rates, finite, >= 0
      alpha           [B, T, H] forgetting factors in [0, 1]
      minibatch       b, 1 <= b <= 1024 (keyword)
      mode            'parallel' (default) or 'recurrent'
      scale           multiplies q (after the L2 norm); None = 1/sqrt(K)
      l2norm_qk       L2-normalise q and k in the kernel
      initial_state   [N, H, E] or None (zeros)
      return_final_state  also return the state after the last token
      final_state_out [N, H, E] where to write it, or None (allocated when
                      asked for); may be initial_state itself
      cu_seqlens      int32 [N+1] or None (varlen; B must be 1)
      out             [B, T, H, V] output o, or None (allocated)
      ctx             seqk.Context or None (default context)

    The library checks the gates' ranges and the state's positions on a CPU
    context (SeqkError naming the first bad value), not on CUDA.

    Returns: o, or (o, final_state) with return_final_state.
    """
    fn = "seqk.titans"
    c = Call(fn, "seqk_titans", ctx, q)
    m = mode_arg(fn, mode)
    minibatch = int_arg(fn, "minibatch", minibatch)
    flags = TITANS_L2NORM_QK if _bool(fn, "l2norm_qk", l2norm_qk) else 0
    pq, pk, pv, pcu, n_arg = _linear_inputs(c, q, k, v, cu_seqlens)
    B, T, H, K, V = (c.dims[x] for x in "BTHKV")
    sc = scale_or_default(fn, scale, K)
    pe = c.arr("eta", eta, ("B", "T", "H"))
    pth = c.arr("theta", theta, ("B", "T", "H"))
    pa = c.arr("alpha", alpha, ("B", "T", "H"))
    E = 3 * K * V + 8
    ps0, fin, pfin = _state(c, initial_state, final_state_out, return_final_state, ("N", "H", ("3KV+8", E)))
    o, po = c.out("out", out, ("B", "T", "H", "V"))
    c.run(int(m), B, T, H, K, V, sc, flags, minibatch, pq, pk, pv, pe, pth, pa, po, ps0, pfin, pcu, n_arg)
    return (o, fin) if return_final_state else o


def titans_backward(q, k, v, eta, theta, alpha, dout, *, minibatch, scale=None, l2norm_qk=False,
                    initial_state=None, dfinal_state=None, cu_seqlens=None, return_dinitial_state=False,
                    dq_out=None, dk_out=None, dv_out=None, deta_out=None, dtheta_out=None, dalpha_out=None,
                    dinitial_state_out=None, ctx=None):
    """The gradients of titans (seqk_titans_backward; both modes compute one
    function for a given minibatch). Per sequence and head, with a_t =
    1 - alpha_t, q~ = scale n(q), k~ = n(k) (n the optional L2 norm), H_t the
    Mhat token t's error e_t = H_t^T k~_t - v_t is taken at, walking t
    backwards from dM = dM_fin, dS = dS_fin, dH = dMhat_fin (dMhat_fin goes
    into dM instead when the final position is 0):

        dM += q~_t dout_t^T;  dq~_t = M_t dout_t;  G = dS + dM
        dalpha_t = -<dM, M_{t-1}>;  deta_t = <G, S_{t-1}>;  w = G^T k~_t
        dv_t = theta_t w;  de = -theta_t w;  z = G e_t;  dtheta_t = -k~_t . z
        dk~_t = H_t de - theta_t z;  dH += k~_t de^T
        dM = a_t dM;  dS = eta_t G;  if token t starts a mini-batch: dM += dH, dH = 0

    with dinitial_state = [dM | dS | dH | 0 ...] at the start (dH = 0 where the
    initial position is 0: Mhat is not read then) and, through the L2 norm
    (x~ = x / r, r = sqrt(x . x + 1e-6)), dx = (dx~ - x~ (x~ . dx~)) / r.
    Computed per mini-batch with matrix products (about three times the
    parallel forward's time); deterministic. CPU only for now: a CUDA context
    raises SeqkError (UNSUPPORTED).

    Args:
      q, k, v, eta, theta, alpha   the forward's inputs (shapes as in titans;
                      the gates and the state's positions are checked as there)
      dout            [B, T, H, V] float32 dL/do
      minibatch, scale, l2norm_qk   as the forward call (keyword)
      initial_state   [N, H, E] the forward's initial state, or None (zeros)
      dfinal_state    [N, H, E] dL/d(final state) in the state layout (dM, dS,
                      dMhat; the position and reserved floats are ignored), or
                      None (zero)
      cu_seqlens      as the forward
      return_dinitial_state  also return dinitial_state = dL/d(initial_state)
                      [N, H, E] (position and reserved floats 0; at a zero
                      state when initial_state is None)
      dq_out, dk_out, dv_out, deta_out, dtheta_out, dalpha_out,
      dinitial_state_out   where to write each gradient, or None (allocated);
                      dq, dk are the gradients of the raw q, k (through the L2
                      norm with l2norm_qk)
      ctx             seqk.Context or None

    Returns: (dq, dk, dv, deta, dtheta, dalpha), followed by dinitial_state
    with return_dinitial_state.
    """
    fn = "seqk.titans_backward"
    c = Call(fn, "seqk_titans_backward", ctx, q)
    minibatch = int_arg(fn, "minibatch", minibatch)
    return_dinitial_state = _bool(fn, "return_dinitial_state", return_dinitial_state)
    flags = TITANS_L2NORM_QK if _bool(fn, "l2norm_qk", l2norm_qk) else 0
    pq, pk, pv, pcu, n_arg = _linear_inputs(c, q, k, v, cu_seqlens)
    B, T, H, K, V = (c.dims[x] for x in "BTHKV")
    sc = scale_or_default(fn, scale, K)
    pe = c.arr("eta", eta, ("B", "T", "H"))
    pth = c.arr("theta", theta, ("B", "T", "H"))
    pa = c.arr("alpha", alpha, ("B", "T", "H"))
    pdo = c.arr("dout", dout, ("B", "T", "H", "V"))
    spec = ("N", "H", ("3KV+8", 3 * K * V + 8))
    ps0 = c.arr("initial_state", initial_state, spec, optional=True)
    pdfin = c.arr("dfinal_state", dfinal_state, spec, optional=True)
    dq, pdq, dk, pdk, dv, pdv = _linear_backward_outputs(c, dq_out, dk_out, dv_out)
    deta, pdeta = c.out("deta_out", deta_out, ("B", "T", "H"))
    dtheta, pdtheta = c.out("dtheta_out", dtheta_out, ("B", "T", "H"))
    dalpha, pdalpha = c.out("dalpha_out", dalpha_out, ("B", "T", "H"))
    ds0, pds0 = _dinitial(c, return_dinitial_state, dinitial_state_out, spec)
    c.run(B, T, H, K, V, sc, flags, minibatch, pq, pk, pv, pe, pth, pa, ps0, pdo, pdfin, pdq, pdk, pdv, pdeta,
          pdtheta, pdalpha, pds0, pcu, n_arg)
    res = (dq, dk, dv, deta, dtheta, dalpha)
    if return_dinitial_state:
        res += (ds0,)
    return res


def titans_backward_workspace_size(B, T, H, K, V, *, minibatch, N=0, ctx=None):
    """An upper bound of the workspace bytes seqk_titans_backward needs for
    these sizes and mini-batch size on this context (N: sequences with varlen,
    else 0; it depends on the context's thread count). SeqkError
    (UNSUPPORTED) on a CUDA context for now."""
    return _size_query("seqk.titans_backward_workspace_size", "seqk_titans_backward_workspace_size", ctx,
                       int(B), int(T), int(H), int(K), int(V), int(minibatch), int(N))


def titans_workspace_size(B, T, H, K, V, *, minibatch, mode="parallel", N=0, ctx=None):
    """An upper bound of the workspace bytes seqk_titans needs for these sizes,
    mode and mini-batch size on this context (seqk_titans_workspace_size; N:
    sequences with varlen, else 0)."""
    fn = "seqk.titans_workspace_size"
    m = mode_arg(fn, mode)
    return _size_query(fn, "seqk_titans_workspace_size", ctx, int(m), int(B), int(T), int(H), int(K), int(V),
                       int(minibatch), int(N))


# --------------------------------------------------------------------------
# softmax attention
# --------------------------------------------------------------------------


def attention_parallel(q, k, v, *, causal=False, scale=None, cu_seqlens=None, out=None, return_lse=False,
                       lse_out=None, ctx=None):
    """Softmax attention over whole sequences (seqk_attention_parallel;
    FlashAttention-style: the T x T scores are never stored). For each
    batch entry (or sequence), query token t and query head h, with key/value
    head g = h // (Hq / Hkv) (grouped-query attention):

        lse[t] = log sum_{s in S(t)} exp(scale q[t].k[s])          (natural log)
        o[t]   = sum_{s in S(t)} exp(scale q[t].k[s] - lse[t]) v[s]

    S(t) is every token of t's sequence, or only s <= t with causal=True. With
    cu_seqlens no token attends across a sequence boundary.

    Args:
      q           [B, T, Hq, K] float32
      k           [B, T, Hkv, K] float32 (Hq % Hkv == 0; Hkv == Hq: multi-head,
                  Hkv == 1: multi-query)
      v           [B, T, Hkv, V] float32
      causal      mask keys after the query
      scale       multiplies q.k; None = 1/sqrt(K)
      cu_seqlens  int32 [N+1] or None (varlen; B must be 1)
      out         [B, T, Hq, V] output, or None (allocated); must not overlap an input
      return_lse  also return the log-sum-exp
      lse_out     [B, Hq, T] where to write it, or None
      ctx         seqk.Context or None

    Returns: o, or (o, lse) with return_lse.
    """
    fn = "seqk.attention_parallel"
    c = Call(fn, "seqk_attention_parallel", ctx, q)
    causal = _bool(fn, "causal", causal)
    pq = c.arr("q", q, ("B", "T", "Hq", "K"))
    pk = c.arr("k", k, ("B", "T", "Hkv", "K"))
    pv = c.arr("v", v, ("B", "T", "Hkv", "V"))
    B, T, Hq, Hkv, K, V = (c.dims[n] for n in ("B", "T", "Hq", "Hkv", "K", "V"))
    if Hkv == 0 or Hq % Hkv:
        raise ValueError("%s: Hq=%d (from q) must be a multiple of Hkv=%d (from k)" % (fn, Hq, Hkv))
    sc = scale_or_default(fn, scale, K)
    pcu, n_arg = _varlen(c, cu_seqlens)
    o, po = c.out("out", out, ("B", "T", "Hq", "V"))
    lse, plse = (None, None)
    if return_lse or lse_out is not None:
        lse, plse = c.out("lse_out", lse_out, ("B", "Hq", "T"))
    c.run(B, T, Hq, Hkv, K, V, sc, ATTN_CAUSAL if causal else 0, pq, pk, pv, po, plse, pcu, n_arg)
    return (o, lse) if return_lse else o


def attention_parallel_workspace_size(B, T, Hq, Hkv, K, V, *, causal=False, N=0, ctx=None):
    """Workspace bytes seqk_attention_parallel needs for these sizes on this
    context (on the CPU it depends on the context's thread count)."""
    return _size_query("seqk.attention_parallel_workspace_size", "seqk_attention_parallel_workspace_size", ctx,
                       int(B), int(T), int(Hq), int(Hkv), int(K), int(V), ATTN_CAUSAL if causal else 0, int(N))


def attention_parallel_backward(q, k, v, o, lse, dout, *, causal=False, scale=None, cu_seqlens=None,
                                dq_out=None, dk_out=None, dv_out=None, ctx=None):
    """The gradients of attention_parallel (seqk_attention_parallel_backward;
    FlashAttention-2's backward, the T x T matrices never stored), from the
    forward's output o and log-sum-exp lse and dout = dL/do. Per query token
    t and head h, with p[t,s] = exp(scale q[t].k[s] - lse[t]) and
    D[t] = dout[t].o[t]:

        dv[s] = sum_t p[t,s] dout[t]
        ds    = p[t,s] (dout[t].v[s] - D[t])
        dq[t] = scale sum_s ds k[s],   dk[s] = scale sum_t ds q[t]

    dk, dv of a key/value head are summed over its Hq/Hkv query heads in a
    fixed order: the same inputs give the same bits on every run.

    Args:
      q, k, v     the forward's inputs, [B,T,Hq,K], [B,T,Hkv,K], [B,T,Hkv,V]
      o           [B, T, Hq, V] the forward's output
      lse         [B, Hq, T] the forward's log-sum-exp (return_lse=True)
      dout        [B, T, Hq, V] dL/do
      causal, scale, cu_seqlens   as the forward call
      dq_out, dk_out, dv_out      where to write dq [B,T,Hq,K], dk [B,T,Hkv,K],
                  dv [B,T,Hkv,V], or None (allocated); must not overlap each
                  other or an input
      ctx         seqk.Context or None

    Returns: (dq, dk, dv).
    """
    fn = "seqk.attention_parallel_backward"
    c = Call(fn, "seqk_attention_parallel_backward", ctx, q)
    causal = _bool(fn, "causal", causal)
    pq = c.arr("q", q, ("B", "T", "Hq", "K"))
    pk = c.arr("k", k, ("B", "T", "Hkv", "K"))
    pv = c.arr("v", v, ("B", "T", "Hkv", "V"))
    B, T, Hq, Hkv, K, V = (c.dims[n] for n in ("B", "T", "Hq", "Hkv", "K", "V"))
    if Hkv == 0 or Hq % Hkv:
        raise ValueError("%s: Hq=%d (from q) must be a multiple of Hkv=%d (from k)" % (fn, Hq, Hkv))
    po = c.arr("o", o, ("B", "T", "Hq", "V"))
    plse = c.arr("lse", lse, ("B", "Hq", "T"))
    pdo = c.arr("dout", dout, ("B", "T", "Hq", "V"))
    sc = scale_or_default(fn, scale, K)
    pcu, n_arg = _varlen(c, cu_seqlens)
    dq, pdq = c.out("dq_out", dq_out, ("B", "T", "Hq", "K"))
    dk, pdk = c.out("dk_out", dk_out, ("B", "T", "Hkv", "K"))
    dv, pdv = c.out("dv_out", dv_out, ("B", "T", "Hkv", "V"))
    c.run(B, T, Hq, Hkv, K, V, sc, ATTN_CAUSAL if causal else 0, pq, pk, pv, po, plse, pdo, pdq, pdk, pdv,
          pcu, n_arg)
    return dq, dk, dv


def attention_parallel_backward_workspace_size(B, T, Hq, Hkv, K, V, *, causal=False, N=0, ctx=None):
    """Workspace bytes seqk_attention_parallel_backward needs for these sizes on
    this context (on the CPU it depends on the context's thread count)."""
    return _size_query("seqk.attention_parallel_backward_workspace_size",
                       "seqk_attention_parallel_backward_workspace_size", ctx,
                       int(B), int(T), int(Hq), int(Hkv), int(K), int(V), ATTN_CAUSAL if causal else 0, int(N))


def attention_decode(q, k_new, v_new, k_cache, v_cache, cache_len, *, scale=None, out=None, return_lse=False,
                     lse_out=None, ctx=None):
    """One decoding step of softmax attention with a caller-owned key/value cache
    (seqk_attention_decode). For each batch entry b, with p = cache_len[b]
    tokens already cached, and each query head h (key/value head
    g = h // (Hq / Hkv)):

        k_cache[b, p, g] = k_new[b, g];   v_cache[b, p, g] = v_new[b, g]     (append)
        lse[b, h] = log sum_{s=0..p} exp(scale q[b,h].k_cache[b,s,g])
        o[b, h]   = sum_{s=0..p} exp(scale q[b,h].k_cache[b,s,g] - lse[b,h]) v_cache[b,s,g]

    i.e. the last row of causal attention_parallel over the p+1 tokens. The
    step does NOT advance cache_len: add 1 yourself after the call (entries
    may differ per batch entry: ragged batches).

    Args:
      q          [B, Hq, K] float32 the new token's queries
      k_new      [B, Hkv, K] the new token's keys (Hq % Hkv == 0)
      v_new      [B, Hkv, V] the new token's values
      k_cache    [B, max_len, Hkv, K] read and written at position cache_len[b]
      v_cache    [B, max_len, Hkv, V] read and written at position cache_len[b]
      cache_len  int32 [B], 0 <= cache_len[b] < max_len (checked by the library)
      scale      multiplies q.k; None = 1/sqrt(K)
      out        [B, Hq, V] output, or None (allocated)
      return_lse also return the log-sum-exp
      lse_out    [B, Hq] where to write it, or None
      ctx        seqk.Context or None

    Returns: o, or (o, lse) with return_lse.
    """
    fn = "seqk.attention_decode"
    c = Call(fn, "seqk_attention_decode", ctx, q)
    pq = c.arr("q", q, ("B", "Hq", "K"))
    pk = c.arr("k_new", k_new, ("B", "Hkv", "K"))
    pv = c.arr("v_new", v_new, ("B", "Hkv", "V"))
    B, Hq, Hkv, K, V = (c.dims[n] for n in ("B", "Hq", "Hkv", "K", "V"))
    if Hkv == 0 or Hq % Hkv:
        raise ValueError("%s: Hq=%d (from q) must be a multiple of Hkv=%d (from k_new)" % (fn, Hq, Hkv))
    pkc = c.arr("k_cache", k_cache, ("B", "max_len", "Hkv", "K"), writable=True)
    pvc = c.arr("v_cache", v_cache, ("B", "max_len", "Hkv", "V"), writable=True)
    pcl = c.arr("cache_len", cache_len, ("B",), dtype="int32")
    max_len = c.dims["max_len"]
    sc = scale_or_default(fn, scale, K)
    o, po = c.out("out", out, ("B", "Hq", "V"))
    lse, plse = (None, None)
    if return_lse or lse_out is not None:
        lse, plse = c.out("lse_out", lse_out, ("B", "Hq"))
    c.run(B, Hq, Hkv, K, V, max_len, sc, pq, pk, pv, pkc, pvc, pcl, po, plse)
    return (o, lse) if return_lse else o


def attention_decode_workspace_size(B, Hq, Hkv, K, V, max_len, *, ctx=None):
    """Workspace bytes seqk_attention_decode needs for these sizes on this
    context (the split-KV partials; on the CPU for its current thread count)."""
    return _size_query("seqk.attention_decode_workspace_size", "seqk_attention_decode_workspace_size", ctx,
                       int(B), int(Hq), int(Hkv), int(K), int(V), int(max_len))


_OPS = (
    "scan",
    "linear_attention",
    "retention",
    "gated_retention",
    "mamba2",
    "selective_scan",
    "deltanet",
    "titans",
    "attention_parallel",
    "attention_decode",
    "linear_attention_backward",
    "retention_backward",
    "gated_retention_backward",
    "mamba2_backward",
    "selective_scan_backward",
    "deltanet_backward",
    "titans_backward",
    "attention_parallel_backward",
)

__all__ = [
    "scan",
    "scan_workspace_size",
    "linear_attention",
    "retention",
    "retention_default_gammas",
    "chunk_default",
    "gated_retention",
    "mamba2",
    "linear_state_workspace_size",
    "linear_attention_backward",
    "retention_backward",
    "gated_retention_backward",
    "mamba2_backward",
    "linear_state_backward_workspace_size",
    "selective_scan",
    "selective_scan_backward",
    "selective_scan_backward_workspace_size",
    "deltanet",
    "deltanet_workspace_size",
    "deltanet_backward",
    "deltanet_backward_workspace_size",
    "titans",
    "titans_state_size",
    "titans_workspace_size",
    "titans_backward",
    "titans_backward_workspace_size",
    "attention_parallel",
    "attention_parallel_workspace_size",
    "attention_parallel_backward",
    "attention_parallel_backward_workspace_size",
    "attention_decode",
    "attention_decode_workspace_size",
    "has_op",
    "available_ops",
    "Mode",
]
