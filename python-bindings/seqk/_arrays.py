"""Argument checking for the ops: numpy arrays and (optionally) torch tensors.

Every array argument is checked before the C call: type (numpy.ndarray or
torch.Tensor), dtype (float32; int32 for cu_seqlens and cache lengths) ->
TypeError; number of dimensions, shape consistency (dimension letters bound by
the first array that has them), C-contiguity, writability of outputs and the
memory kind versus the context's backend -> ValueError. Every message names
the function and the argument.

torch is never imported here: a tensor can only exist if the caller imported
torch, so ``sys.modules.get('torch')`` is enough to recognise one.
"""

import math
import numbers
import sys

import numpy as np

from ._core import Backend, Context, Mode, check, default_context
from ._lib import lib

# A valid host address for zero-element tensors whose data_ptr() is 0 (the C
# library rejects NULL for required arrays even when nothing is read).
_EMPTY_HOST = np.zeros(64, dtype=np.float32)

# Outputs seqk allocates are 64-byte aligned (a cache line; numpy's own
# allocations of large arrays usually start 16 bytes past one). Kernels that read a
# token's slice of a row, as the selective scan's backward does (16
# channels, one cache line when aligned), touch two lines per row otherwise:
# that backward measured 231 ms with 64-byte aligned outputs against 265 ms
# with numpy's (B = 1, T = 4096, D = 1536, N = 16, 2 threads, interleaved).
OUT_ALIGN = 64


def empty_aligned(shape, dtype=np.float32):
    """An uninitialised C-contiguous array whose data starts on an OUT_ALIGN-byte
    boundary (it keeps its buffer alive through .base)."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buf = np.empty(n + OUT_ALIGN, dtype=np.uint8)
    off = (-buf.__array_interface__["data"][0]) % OUT_ALIGN
    return buf[off:off + n].view(dtype).reshape(shape)

_NP_DTYPES = {"float32": np.dtype(np.float32), "int32": np.dtype(np.int32)}

# The activation arguments (seqk.h, "Dtypes"): per-token tensors with a feature
# axis and their gradients. With torch.bfloat16 / torch.float16 ones the op
# calls its _ex entry point with that dtype; every other array stays float32
# (int32). The dtype of a call is its primary (first) tensor's.
ACT_NAMES = frozenset(
    ["q", "k", "v", "o", "x", "B", "C", "z", "u", "dout", "dy", "k_new", "v_new", "k_cache", "v_cache",
     "out", "dq_out", "dk_out", "dv_out", "dx_out", "dB_out", "dC_out", "dz_out", "du_out"]
)
# seqk_dtype's values
DTYPE_CODES = {"float32": 0, "bfloat16": 1, "float16": 2}


def _torch():
    return sys.modules.get("torch")


def is_tensor(x):
    t = _torch()
    return t is not None and isinstance(x, t.Tensor)


def _fmt_shape(shape):
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _torch_dtype(name):
    return getattr(_torch(), name)


def raw_buffer(name, x, ctx):
    """(address, nbytes) of a contiguous numpy array or torch tensor (any dtype),
    for workspace / memcpy. With ctx, the memory kind is checked against it."""
    if isinstance(x, np.ndarray):
        if not x.flags.c_contiguous:
            raise ValueError("%s must be C-contiguous" % name)
        if ctx is not None and ctx.backend != "cpu":
            raise ValueError("%s is a numpy array (host memory) but the context is a CUDA context" % name)
        return x.__array_interface__["data"][0], x.nbytes
    if is_tensor(x):
        if not x.is_contiguous():
            raise ValueError("%s must be contiguous" % name)
        if ctx is not None:
            want = "cpu" if ctx.backend == "cpu" else "cuda"
            if x.device.type != want:
                raise ValueError("%s is on %s but the context is a %s context" % (name, x.device, want.upper()))
        return x.data_ptr(), x.numel() * x.element_size()
    raise TypeError("%s must be a numpy.ndarray, a torch.Tensor or an int address, got %s" % (name, type(x).__name__))


def scale_or_default(fn, scale, K):
    if scale is None:
        return 1.0 / math.sqrt(K) if K > 0 else 1.0
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError("%s: scale must be a real number, got %s" % (fn, type(scale).__name__))
    return float(scale)


def int_arg(fn, name, v, lo=None):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError("%s: %s must be an int, got %s" % (fn, name, type(v).__name__))
    v = int(v)
    if lo is not None and v < lo:
        raise ValueError("%s: %s=%d, must be >= %d" % (fn, name, v, lo))
    return v


def mode_arg(fn, mode):
    if isinstance(mode, Mode):
        return mode
    if isinstance(mode, str) and mode.lower() in ("parallel", "recurrent"):
        return Mode[mode.upper()]
    raise ValueError("%s: mode must be 'parallel' or 'recurrent', got %r" % (fn, mode))


class Call:
    """The arrays of one op call: checks them, binds the dimension letters,
    allocates the outputs and makes the C call on the right context."""

    def __init__(self, fn, cname, ctx, primary):
        self.fn = fn  # "seqk.retention"
        self.cname = cname  # "seqk_retention"
        self.dims = {}  # letter -> size
        self.origin = {}  # letter -> the argument that fixed it
        self.torch_like = primary if is_tensor(primary) else None
        self.uses_torch_cuda = False
        # the activations' dtype: bfloat16 / float16 from a torch primary when
        # the library has the op's _ex entry point, else float32
        self.act = "float32"
        if self.torch_like is not None and getattr(lib, cname + "_ex", None):
            name = str(primary.dtype).replace("torch.", "")
            if name in ("bfloat16", "float16"):
                self.act = name
        if ctx is None:
            if is_tensor(primary) and primary.device.type == "cuda":
                idx = primary.device.index
                ctx = default_context("cuda", 0 if idx is None else idx)
            else:
                ctx = default_context("cpu")
        elif not isinstance(ctx, Context):
            raise TypeError("%s: ctx must be a seqk.Context or None, got %s" % (fn, type(ctx).__name__))
        ctx.handle  # noqa: B018 - ValueError if closed
        self.ctx = ctx
        self.backend = ctx._backend  # fixed at creation: no C call needed
        self.device = ctx._device
        self.keep = []

    # -- checks ----------------------------------------------------------------
    def _expect_str(self, spec):
        labels, vals = [], []
        for s in spec:
            if isinstance(s, tuple):
                labels.append(s[0])
                vals.append(str(s[1]))
            else:
                labels.append(s)
                vals.append(str(self.dims[s]) if s in self.dims else "?")
        return "[%s] = (%s)" % (", ".join(labels), ", ".join(vals))

    def _check_type(self, name, x, dtype):
        if isinstance(x, np.ndarray):
            if x.dtype != _NP_DTYPES[dtype]:
                raise TypeError(
                    "%s: %s must be %s %s array, got dtype %s (convert with %s.astype(numpy.%s))"
                    % (self.fn, name, "an" if dtype[0] in "aeiou" else "a", dtype, x.dtype, name, dtype)
                )
            return "numpy"
        if is_tensor(x):
            if x.dtype != _torch_dtype(dtype):
                why = ""
                if self.act != "float32":
                    why = (
                        " (every activation tensor of one call has the first one's dtype, here %s)" % self.act
                        if name in ACT_NAMES
                        else " (gates, parameters and states stay float32 with %s activations)" % self.act
                    )
                raise TypeError(
                    "%s: %s must be a torch.%s tensor, got %s%s (convert with %s.to(torch.%s))"
                    % (self.fn, name, dtype, x.dtype, why, name, dtype)
                )
            return "torch"
        raise TypeError(
            "%s: %s must be a numpy.ndarray (or a torch.Tensor) of %s, got %s"
            % (self.fn, name, dtype, type(x).__name__)
        )

    def _check_shape(self, name, x, spec):
        shape = x.shape
        if len(shape) != len(spec):
            raise ValueError(
                "%s: %s must be %d-dimensional %s, got shape %s"
                % (self.fn, name, len(spec), self._expect_str(spec).split(" = ")[0], _fmt_shape(shape))
            )
        dims = self.dims
        new = None
        bad = False
        for s, d in zip(spec, shape):
            if s.__class__ is tuple:
                if d != s[1]:
                    bad = True
            else:
                v = dims.get(s)
                if v is None:
                    new = [(s, d)] if new is None else new + [(s, d)]
                elif v != d:
                    bad = True
        if bad:
            known = []
            for s in spec:
                if not isinstance(s, tuple) and s in self.dims and s not in known:
                    known.append(s)
            groups = {}
            for s in known:
                if self.origin.get(s):
                    groups.setdefault(self.origin[s], []).append(s)
            src = "; ".join("%s from %s" % (", ".join(ls), o) for o, ls in groups.items())
            raise ValueError(
                "%s: %s has shape %s, expected %s%s"
                % (self.fn, name, _fmt_shape(shape), self._expect_str(spec), (" (" + src + ")") if src else "")
            )
        if new:
            for s, d in new:
                dims[s] = int(d)
                self.origin[s] = name

    def _check_memory(self, name, x, kind, writable):
        if kind == "numpy":
            fl = x.flags
            if not fl.c_contiguous:
                raise ValueError(
                    "%s: %s must be C-contiguous, got shape %s with strides %s (use numpy.ascontiguousarray(%s))"
                    % (self.fn, name, _fmt_shape(x.shape), x.strides, name)
                )
            if not fl.aligned:
                raise ValueError("%s: %s is not aligned to its dtype" % (self.fn, name))
            if writable and not fl.writeable:
                raise ValueError("%s: %s is read-only, but it is written (an output)" % (self.fn, name))
            if self.backend != Backend.CPU:
                raise ValueError(
                    "%s: %s is a numpy array (host memory) but ctx is a CUDA context: numpy arrays "
                    "require a CPU context; pass torch CUDA tensors on device %d instead"
                    % (self.fn, name, self.device)
                )
            addr = x.ctypes.data
        else:
            if not x.is_contiguous():
                raise ValueError(
                    "%s: %s must be contiguous, got shape %s with strides %s (use %s.contiguous())"
                    % (self.fn, name, _fmt_shape(x.shape), tuple(x.stride()), name)
                )
            dev = x.device
            if self.backend == Backend.CPU:
                if dev.type != "cpu":
                    raise ValueError(
                        "%s: %s is on %s but ctx is a CPU context (pass ctx=seqk.Context('cuda', %s), "
                        "or no ctx)" % (self.fn, name, dev, dev.index)
                    )
            else:
                if dev.type != "cuda" or (dev.index if dev.index is not None else 0) != self.device:
                    raise ValueError(
                        "%s: %s is on %s but ctx is a CUDA context on device %d"
                        % (self.fn, name, dev, self.device)
                    )
                self.uses_torch_cuda = True
            addr = x.data_ptr()
        if addr == 0 and self.backend == Backend.CPU:
            # zero-element tensor with no storage: give the C library a valid
            # (never read) address
            addr = _EMPTY_HOST.__array_interface__["data"][0]
        self.keep.append(x)
        return addr

    def arr(self, name, x, spec, dtype="float32", optional=False, writable=False):
        """Check one array argument; returns its address (None for an absent
        optional one). spec: dimension letters (bound by the first array that
        has them) or (label, size) pairs."""
        if x is None:
            if optional:
                return None
            raise TypeError("%s: %s is required, got None" % (self.fn, name))
        if dtype == "float32" and name in ACT_NAMES:
            dtype = self.act
        kind = self._check_type(name, x, dtype)
        self._check_shape(name, x, spec)
        return self._check_memory(name, x, kind, writable)

    def out(self, name, x, spec):
        """An output: checked like arr() if given, else allocated like the primary
        input (numpy, or torch on its device). Returns (array, address)."""
        if x is None:
            shape = tuple(s[1] if isinstance(s, tuple) else self.dims[s] for s in spec)
            if self.torch_like is not None:
                t = _torch()
                dt = _torch_dtype(self.act if name in ACT_NAMES else "float32")
                x = t.empty(shape, dtype=dt, device=self.torch_like.device)
            else:
                x = empty_aligned(shape)
        return x, self.arr(name, x, spec, writable=True)

    # -- the call --------------------------------------------------------------
    def run(self, *args):
        f = getattr(lib, self.cname)
        if self.act != "float32":  # the _ex entry point: the dtype right after ctx
            f = getattr(lib, self.cname + "_ex")
            args = (DTYPE_CODES[self.act],) + args
        ctx = self.ctx
        with ctx._lock:
            h = ctx.handle
            if self.uses_torch_cuda:
                t = _torch()
                stream = t.cuda.current_stream(self.device).cuda_stream
                check(lib.seqk_context_set_stream(h, stream or None), "seqk_context_set_stream")
            st = f(h, *args)
            check(st, self.cname)
