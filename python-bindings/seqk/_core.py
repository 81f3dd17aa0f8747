"""Status codes, SeqkError, contexts, backends and backend memory."""

import ctypes
import enum
import threading

from ._lib import lib, library_path

# --------------------------------------------------------------------------
# Enums and flags (the values of include/seqk.h; they only ever grow)
# --------------------------------------------------------------------------


class Status(enum.IntEnum):
    """seqk_status."""

    SUCCESS = 0
    ERROR_INVALID_ARGUMENT = 1
    ERROR_UNSUPPORTED = 2
    ERROR_OUT_OF_MEMORY = 3
    ERROR_NOT_COMPILED = 4
    ERROR_NO_DEVICE = 5
    ERROR_BACKEND = 6
    ERROR_WORKSPACE_TOO_SMALL = 7
    ERROR_INTERNAL = 8


class Backend(enum.IntEnum):
    """seqk_backend."""

    CPU = 0
    CUDA = 1


class Mode(enum.IntEnum):
    """seqk_mode."""

    RECURRENT = 0
    PARALLEL = 1


class Dtype(enum.IntEnum):
    """seqk_dtype: the activations' element type of an op's _ex entry point
    (seqk.h "Dtypes"); the ops take it from the tensors (torch.bfloat16 /
    torch.float16 activations call the _ex functions)."""

    F32 = 0
    BF16 = 1
    F16 = 2


class CopyKind(enum.IntEnum):
    """seqk_copy_kind."""

    HOST_TO_BACKEND = 0
    BACKEND_TO_HOST = 1
    BACKEND_TO_BACKEND = 2


SCAN_REVERSE = 1
LINATTN_NORMALIZE = 1
LINATTN_ELU1 = 2
MAMBA2_DT_SOFTPLUS = 1
SSCAN_DT_SOFTPLUS = 1
ATTN_CAUSAL = 1
DELTANET_L2NORM_QK = 1
DELTANET_ALLOW_NEG_EIGVAL = 2
TITANS_L2NORM_QK = 1


def version():
    """The loaded C library's version string, "MAJOR.MINOR.PATCH"."""
    return lib.seqk_version().decode()


def status_string(status):
    """seqk_status_string: a short description of a status code."""
    return lib.seqk_status_string(int(status)).decode()


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


class SeqkError(Exception):
    """A seqk C function returned a status other than SEQK_SUCCESS.

    Attributes:
      status       the status code (a Status member, or an int the bindings do not know)
      status_name  its C name, e.g. "SEQK_ERROR_INVALID_ARGUMENT"
      description  seqk_status_string(status), e.g. "invalid argument"
      message      seqk_last_error(): the library's message naming the function,
                   the argument and the value
      function     the C function that failed
    """

    def __init__(self, status, message, function=None):
        try:
            self.status = Status(status)
            self.status_name = "SEQK_" + self.status.name
        except ValueError:
            self.status = int(status)
            self.status_name = "SEQK_STATUS_%d" % int(status)
        self.description = status_string(status)
        self.message = message
        self.function = function
        super().__init__("%s [%s: %s]" % (message, self.status_name, self.description))


def check(status, function):
    """Raise SeqkError with seqk_last_error() if status is not SEQK_SUCCESS.
    Must run on the thread that made the call (the message is per thread)."""
    if status != 0:
        msg = lib.seqk_last_error()
        msg = msg.decode("utf-8", "replace") if msg else ""
        raise SeqkError(status, msg or "%s failed" % function, function)


def _call(function, *args):
    check(getattr(lib, function)(*args), function)


# --------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------


def backend_compiled(backend):
    """True if this build of libseqk contains the backend ('cpu' or 'cuda')."""
    return bool(lib.seqk_backend_compiled(int(_backend(backend))))


def backends():
    """The backends compiled into the loaded library: ['cpu'] or ['cpu', 'cuda']."""
    return [b.name.lower() for b in Backend if lib.seqk_backend_compiled(int(b))]


def cuda_device_count():
    """Number of usable CUDA devices: 0 when the CUDA backend is compiled but no
    driver or device is present, and 0 when it is not compiled at all."""
    n = ctypes.c_int(0)
    st = lib.seqk_cuda_device_count(ctypes.byref(n))
    if st == Status.ERROR_NOT_COMPILED:
        return 0
    check(st, "seqk_cuda_device_count")
    return n.value


def _backend(backend):
    if isinstance(backend, Backend):
        return backend
    if isinstance(backend, str):
        try:
            return Backend[backend.strip().upper()]
        except KeyError:
            pass
    elif isinstance(backend, int) and not isinstance(backend, bool):
        try:
            return Backend(backend)
        except ValueError:
            pass
    raise ValueError("backend must be 'cpu' or 'cuda', got %r" % (backend,))


# --------------------------------------------------------------------------
# Contexts
# --------------------------------------------------------------------------


def _stream_address(stream):
    """None / int / ctypes.c_void_p / an object with .cuda_stream (torch.cuda.Stream)."""
    if stream is None:
        return None
    if hasattr(stream, "cuda_stream"):
        stream = stream.cuda_stream
    if isinstance(stream, ctypes.c_void_p):
        return stream.value
    if isinstance(stream, int) and not isinstance(stream, bool):
        return stream or None
    raise TypeError(
        "stream must be None, an int (a cudaStream_t address) or an object with .cuda_stream "
        "(torch.cuda.Stream), got %s" % type(stream).__name__
    )


class Context:
    """A seqk context: the backend, the device, the CPU thread count, the CUDA
    stream and the workspace every op runs with (seqk_context).

        ctx = seqk.Context("cpu")            # or Context("cuda", device=0)
        ctx.threads = 2
        with seqk.Context("cpu", threads=1) as ctx:
            o = seqk.retention(q, k, v, ctx=ctx)

    Arrays passed to ops with a context must live where its backend computes:
    numpy arrays and CPU torch tensors need a CPU context, CUDA torch tensors a
    CUDA context on their device. Calls on one context are serialised by a lock
    (the C library does not allow concurrent calls on one context); use one
    context per thread for parallel calls. close() (or leaving a ``with``
    block) frees it; using a closed context raises ValueError.
    """

    def __init__(self, backend="cpu", device=0, *, threads=None, stream=None):
        b = _backend(backend)
        if isinstance(device, bool) or not isinstance(device, int):
            raise TypeError("device must be an int, got %s" % type(device).__name__)
        self._lock = threading.RLock()
        self._handle = None
        self._workspace_ref = None
        h = ctypes.c_void_p()
        check(lib.seqk_context_create(ctypes.byref(h), int(b), int(device)), "seqk_context_create")
        self._handle = h.value
        self._backend = b
        self._device = device
        try:
            if threads is not None:
                self.threads = threads
            if stream is not None:
                self.stream = stream
        except BaseException:
            self.close()
            raise

    # -- lifetime ----------------------------------------------------------
    @property
    def handle(self):
        """The seqk_context* address (int). ValueError once closed."""
        h = self._handle
        if h is None:
            raise ValueError("this seqk.Context is closed")
        return h

    @property
    def closed(self):
        return self._handle is None

    def close(self):
        """Frees the context and the workspace it owns (seqk_context_destroy).
        Idempotent."""
        lock = getattr(self, "_lock", None)
        if lock is None:
            return
        with lock:
            h, self._handle = self._handle, None
            self._workspace_ref = None
            if h is not None:
                check(lib.seqk_context_destroy(h), "seqk_context_destroy")

    def __enter__(self):
        self.handle  # noqa: B018 - raises if closed
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self):
        if self._handle is None:
            return "<seqk.Context closed>"
        return "<seqk.Context backend=%r device=%d threads=%d>" % (self.backend, self.device, self.threads)

    # -- properties ----------------------------------------------------------
    def _get_int(self, fn):
        v = ctypes.c_int()
        with self._lock:
            _call(fn, self.handle, ctypes.byref(v))
        return v.value

    @property
    def backend(self):
        """'cpu' or 'cuda' (seqk_context_backend)."""
        return Backend(self._get_int("seqk_context_backend")).name.lower()

    @property
    def device(self):
        """The CUDA device ordinal (0 for the CPU) (seqk_context_device)."""
        return self._get_int("seqk_context_device")

    @property
    def threads(self):
        """CPU threads every op on this context uses. Set an int >= 1, or 0 / None
        for the default (OpenMP's maximum). Ignored by the CUDA kernels."""
        return self._get_int("seqk_context_threads")

    @threads.setter
    def threads(self, n):
        if n is None:
            n = 0
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError("threads must be an int, got %s" % type(n).__name__)
        with self._lock:
            _call("seqk_context_set_threads", self.handle, n)

    @property
    def stream(self):
        """The CUDA stream (a cudaStream_t address as int; None = the default
        stream). Setting accepts None, an int or a torch.cuda.Stream. Setting a
        stream on a CPU context raises SeqkError (invalid argument)."""
        v = ctypes.c_void_p()
        with self._lock:
            _call("seqk_context_stream", self.handle, ctypes.byref(v))
        return v.value

    @stream.setter
    def stream(self, stream):
        addr = _stream_address(stream)
        with self._lock:
            _call("seqk_context_set_stream", self.handle, addr)

    def synchronize(self):
        """Waits until all work queued on the context is done (no-op on the CPU)."""
        with self._lock:
            _call("seqk_context_synchronize", self.handle)

    # -- workspace -----------------------------------------------------------
    def reserve_workspace(self, nbytes):
        """Grows the context-owned workspace to at least nbytes now, so that later
        ops allocate nothing (seqk_context_reserve_workspace)."""
        with self._lock:
            _call("seqk_context_reserve_workspace", self.handle, int(nbytes))

    def set_workspace(self, buffer=None, nbytes=None):
        """Hands the context a caller-owned workspace (seqk_context_set_workspace).

        buffer: None (go back to the context-owned workspace), an int address
        (then nbytes is required), or an array (numpy / torch) on the context's
        backend, 256-byte aligned; the context keeps a reference to it. Ops that
        need more than it holds then fail with SEQK_ERROR_WORKSPACE_TOO_SMALL."""
        from ._arrays import raw_buffer

        with self._lock:
            if buffer is None:
                _call("seqk_context_set_workspace", self.handle, None, 0)
                self._workspace_ref = None
                return
            if isinstance(buffer, int) and not isinstance(buffer, bool):
                if nbytes is None:
                    raise TypeError("set_workspace: nbytes is required with an address")
                addr, size, ref = buffer, int(nbytes), None
            else:
                addr, size = raw_buffer("buffer", buffer, self)
                ref = buffer
                if nbytes is not None:
                    if nbytes > size:
                        raise ValueError("set_workspace: nbytes=%d > the buffer's %d bytes" % (nbytes, size))
                    size = int(nbytes)
            _call("seqk_context_set_workspace", self.handle, addr, size)
            self._workspace_ref = ref

    # -- memory ----------------------------------------------------------------
    def malloc(self, nbytes):
        """Allocates nbytes (> 0) on the context's backend, 256-byte aligned;
        returns the address (int). Free it with ctx.free(ptr)."""
        p = ctypes.c_void_p()
        with self._lock:
            _call("seqk_malloc", self.handle, int(nbytes), ctypes.byref(p))
        return p.value

    def free(self, ptr):
        """Frees memory from ctx.malloc (None is accepted)."""
        with self._lock:
            _call("seqk_free", self.handle, ptr)

    def memcpy(self, dst, src, nbytes, kind):
        """Copies nbytes (seqk_memcpy); dst, src are addresses (int) or arrays;
        kind is 'host_to_backend', 'backend_to_host', 'backend_to_backend' or a
        CopyKind. Synchronous with respect to the host."""
        from ._arrays import raw_buffer

        if isinstance(kind, str):
            try:
                kind = CopyKind[kind.upper()]
            except KeyError:
                raise ValueError(
                    "kind must be 'host_to_backend', 'backend_to_host' or 'backend_to_backend', got %r" % kind
                ) from None
        kind = CopyKind(kind)
        nbytes = int(nbytes)
        addrs = []
        for name, x in (("dst", dst), ("src", src)):
            if isinstance(x, int) and not isinstance(x, bool):
                addrs.append(x)
            else:
                addr, size = raw_buffer(name, x, None)
                if nbytes > size:
                    raise ValueError("memcpy: nbytes=%d is more than %s's %d bytes" % (nbytes, name, size))
                addrs.append(addr)
        with self._lock:
            _call("seqk_memcpy", self.handle, addrs[0], addrs[1], nbytes, int(kind))


_defaults = {}
_defaults_lock = threading.Lock()


def default_context(backend="cpu", device=0):
    """The module-level context used when an op gets no ctx: one per (backend,
    device), created on first use (CPU: OpenMP's default thread count). A
    CUDA tensor passed without ctx runs on the default CUDA context of its
    device. Closing a default context makes the next call create a new one."""
    b = _backend(backend)
    key = (b, device)
    with _defaults_lock:
        ctx = _defaults.get(key)
        if ctx is None or ctx.closed:
            ctx = Context(b, device)
            _defaults[key] = ctx
        return ctx


__all__ = [
    "Status",
    "Backend",
    "Mode",
    "CopyKind",
    "SCAN_REVERSE",
    "LINATTN_NORMALIZE",
    "LINATTN_ELU1",
    "MAMBA2_DT_SOFTPLUS",
    "SSCAN_DT_SOFTPLUS",
    "ATTN_CAUSAL",
    "DELTANET_L2NORM_QK",
    "DELTANET_ALLOW_NEG_EIGVAL",
    "TITANS_L2NORM_QK",
    "SeqkError",
    "Context",
    "default_context",
    "backends",
    "backend_compiled",
    "cuda_device_count",
    "version",
    "status_string",
    "library_path",
]
