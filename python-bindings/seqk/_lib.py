"""Finding and loading libseqk, and the ctypes declaration of every C function.

Search order (the first library that loads wins):

1. ``$SEQK_LIBRARY``: a path to libseqk.so (or to a folder holding it). When it
   is set it is the only place tried, so that a wrong path is an error rather
   than a silent fall-back to some other build.
2. Next to the package: ``seqk/libseqk.so*``, where ``pip install ./python-bindings``
   (or a wheel built from it) puts the libseqk it compiles.
3. The build trees of the source checkout the package lives in (an editable /
   develop install, or running from the source tree): the repository root is
   found by walking up from this file to the folder holding ``include/seqk.h``,
   then ``<repo>/build/libseqk.so``, ``<repo>/build/test/libseqk.so``,
   ``<repo>/build/*/libseqk.so`` and ``<repo>/build-*/libseqk.so``.
4. The standard install locations: ``ctypes.util.find_library('seqk')`` (the
   dynamic loader's cache), ``/usr/local/lib``, ``/usr/local/lib64``,
   ``/usr/lib``, ``/usr/lib64``, ``/usr/lib/x86_64-linux-gnu``, ``/opt/seqk/lib``.

A library built with AddressSanitizer is skipped (with the reason) unless the
sanitizer runtime is already loaded in the process: loading one into a plain
Python aborts the interpreter instead of raising an error.

If nothing loads, ImportError lists every place tried, with the loader's error
for each candidate that existed and the likely cause (a missing OpenMP runtime,
a missing CUDA runtime / cuBLAS, ...).
"""

import ctypes
import ctypes.util
import glob
import os
import sys

from ._version import __version__, version_number

LIBRARY_ENV = "SEQK_LIBRARY"

_PKG_DIR = os.path.dirname(os.path.realpath(__file__))

# --------------------------------------------------------------------------
# Where to look
# --------------------------------------------------------------------------


def _shared_name():
    if sys.platform == "darwin":
        return "libseqk.dylib"
    if sys.platform.startswith("win"):
        return "seqk.dll"
    return "libseqk.so"


def find_repo_root(start=_PKG_DIR):
    """The source checkout holding this package: the nearest ancestor folder of
    ``start`` with include/seqk.h and CMakeLists.txt, or None."""
    d = os.path.realpath(start)
    while True:
        if os.path.isfile(os.path.join(d, "include", "seqk.h")) and os.path.isfile(
            os.path.join(d, "CMakeLists.txt")
        ):
            return d
        parent = os.path.dirname(d)
        if parent == d:
            return None
        d = parent


def _candidates():
    """[(where, path)] in search order, without $SEQK_LIBRARY. `path` is a file
    path, or a bare soname for the dynamic loader to resolve."""
    name = _shared_name()
    out = []
    # 2. next to the package
    bundled = sorted(glob.glob(os.path.join(_PKG_DIR, name + "*")), key=lambda p: (len(p), p))
    if not bundled:
        bundled = [os.path.join(_PKG_DIR, name)]
    out += [("next to the package", p) for p in bundled]
    # 3. build trees of the checkout
    root = find_repo_root()
    if root is not None:
        build = os.path.join(root, "build")
        fixed = [os.path.join(build, name), os.path.join(build, "test", name)]
        out += [("build tree", p) for p in fixed]
        more = sorted(glob.glob(os.path.join(build, "*", name)))
        more += sorted(glob.glob(os.path.join(root, "build-*", name)))
        out += [("build tree", p) for p in more if p not in fixed]
    # 4. standard locations
    found = ctypes.util.find_library("seqk")
    out.append(("ctypes.util.find_library('seqk')", found))  # None: found nothing
    for d in (
        "/usr/local/lib",
        "/usr/local/lib64",
        "/usr/lib",
        "/usr/lib64",
        "/usr/lib/x86_64-linux-gnu",
        "/opt/seqk/lib",
    ):
        out.append(("standard location", os.path.join(d, name)))
    return out, root


def likely_cause(message):
    """A hint for a loader error message (OSError text), or ''."""
    m = message.lower()
    hints = []
    if "gomp" in m or "libomp" in m or "libiomp" in m:
        hints.append(
            "the OpenMP runtime is missing: libseqk's CPU backend links libgomp "
            "(Debian/Ubuntu: apt-get install libgomp1; Fedora/RHEL: dnf install libgomp) "
            "or libomp for a clang build"
        )
    if "cudart" in m or "cublas" in m or "libcuda." in m or "libcuda.so" in m:
        hints.append(
            "the CUDA runtime / cuBLAS is missing: this libseqk was built with the CUDA "
            "backend; install the CUDA runtime and cuBLAS, add their folder (e.g. "
            "/usr/local/cuda/lib64) to LD_LIBRARY_PATH, or use a build configured with "
            "-DSEQK_CUDA=OFF"
        )
    if "asan" in m or "sanitizer" in m:
        hints.append(
            "a sanitizer build: run Python with LD_PRELOAD=$(gcc -print-file-name=libasan.so) "
            "or use a build without -DSEQK_SANITIZE=ON"
        )
    if "wrong elf class" in m:
        hints.append("the library is built for another word size (32 vs 64 bit) than this Python")
    if "invalid elf header" in m or "file too short" in m or "not a mach-o" in m:
        hints.append("the file is not a shared library (a static archive, a text file, a truncated copy?)")
    if "undefined symbol" in m:
        hints.append("libseqk or one of its dependencies is out of date: rebuild it")
    if not hints and "cannot open shared object file" in m:
        hints.append("a library it depends on is missing: `ldd <path>` shows which")
    return "; ".join(hints)


def _sanitizer_build(path):
    """True if the file links a sanitizer runtime (checks the dynamic string table)."""
    try:
        with open(path, "rb") as f:
            data = f.read(64 << 20)
    except OSError:
        return False
    return b"libasan.so" in data or b"libclang_rt.asan" in data


def _sanitizer_loaded():
    try:
        with open("/proc/self/maps") as f:
            maps = f.read()
        return "libasan" in maps or "clang_rt.asan" in maps
    except OSError:
        return False


class _Attempt:
    def __init__(self, where, path, outcome):
        self.where, self.path, self.outcome = where, path, outcome

    def __str__(self):
        return "  - %s (%s): %s" % (self.path, self.where, self.outcome)


def _try_load(where, path, attempts, is_file=True):
    if is_file and not os.path.exists(path):
        attempts.append(_Attempt(where, path, "not found"))
        return None
    if is_file and _sanitizer_build(path) and not _sanitizer_loaded():
        attempts.append(
            _Attempt(
                where,
                path,
                "skipped: built with AddressSanitizer (loading it would abort Python); "
                + likely_cause("asan"),
            )
        )
        return None
    try:
        lib = ctypes.CDLL(path)
    except OSError as e:
        cause = likely_cause(str(e))
        attempts.append(
            _Attempt(where, path, "exists but failed to load: %s%s" % (e, (" -- likely cause: " + cause) if cause else ""))
        )
        return None
    if not hasattr(lib, "seqk_version_number"):
        attempts.append(_Attempt(where, path, "loaded, but it is not libseqk (no seqk_version_number)"))
        return None
    return lib


def _load():
    attempts = []
    env = os.environ.get(LIBRARY_ENV)
    if env:
        path = os.path.expanduser(env)
        if os.path.isdir(path):
            path = os.path.join(path, _shared_name())
        lib = _try_load("$" + LIBRARY_ENV, path, attempts)
        if lib is not None:
            return lib, os.path.abspath(path)
        raise ImportError(
            "seqk: cannot load the C library named by $%s=%r (when %s is set no other place "
            "is tried):\n%s\nPoint %s at a libseqk.so built with "
            "`cmake -S . -B build && cmake --build build`, or unset it to search the usual places."
            % (LIBRARY_ENV, env, LIBRARY_ENV, "\n".join(str(a) for a in attempts), LIBRARY_ENV)
        )
    cands, root = _candidates()
    for where, path in cands:
        if path is None:
            attempts.append(_Attempt(where, "libseqk", "not in the dynamic loader's search path"))
            continue
        is_file = not (where.startswith("ctypes.util") and os.sep not in path)
        lib = _try_load(where, path, attempts, is_file=is_file)
        if lib is not None:
            return lib, os.path.abspath(path) if is_file else path
    raise ImportError(
        "seqk: cannot find a loadable libseqk. Places tried, in order:\n%s\n%s"
        "Install the package with the library it builds (pip install <repo>/python-bindings), or "
        "build it (cmake -S <repo> -B <repo>/build && cmake --build <repo>/build) and set "
        "%s=/path/to/libseqk.so, or install it (cmake --install build --prefix /usr/local)."
        % (
            "\n".join(str(a) for a in attempts),
            "" if root else "(no source checkout found above %s, so no build tree was searched)\n" % _PKG_DIR,
            LIBRARY_ENV,
        )
    )


# --------------------------------------------------------------------------
# The C API: every function of include/seqk.h with its argtypes and restype
# --------------------------------------------------------------------------

_ctx = ctypes.c_void_p  # seqk_context *
_ptr = ctypes.c_void_p  # float * / const float * / int32_t * / void * (an address)
_i64 = ctypes.c_int64
_int = ctypes.c_int  # enums: seqk_status, seqk_backend, seqk_mode, seqk_copy_kind
_uint = ctypes.c_uint  # flags
_flt = ctypes.c_float
_size = ctypes.c_size_t
_p_int = ctypes.POINTER(ctypes.c_int)
_p_ptr = ctypes.POINTER(ctypes.c_void_p)
_p_size = ctypes.POINTER(ctypes.c_size_t)

# name -> (restype, [argtypes]); `required` names must exist for the import to
# succeed; the others (ops) raise NotImplementedError when called if absent.
SIGNATURES = {
    # version, status, errors
    "seqk_version": (ctypes.c_char_p, []),
    "seqk_version_number": (_int, []),
    "seqk_status_string": (ctypes.c_char_p, [_int]),
    "seqk_last_error": (ctypes.c_char_p, []),
    "seqk_dtype_string": (ctypes.c_char_p, [_int]),
    "seqk_dtype_size": (_size, [_int]),
    # ctx, mode, B, T, D, Nst, G, N, bytes
    "seqk_selective_scan_workspace_size": (_int, [_ctx, _int, _i64, _i64, _i64, _i64, _i64, _i64, _p_size]),
    # backends and contexts
    "seqk_backend_compiled": (_int, [_int]),
    "seqk_cuda_device_count": (_int, [_p_int]),
    "seqk_context_create": (_int, [_p_ptr, _int, _int]),
    "seqk_context_destroy": (_int, [_ctx]),
    "seqk_context_backend": (_int, [_ctx, _p_int]),
    "seqk_context_device": (_int, [_ctx, _p_int]),
    "seqk_context_set_threads": (_int, [_ctx, _int]),
    "seqk_context_threads": (_int, [_ctx, _p_int]),
    "seqk_context_set_stream": (_int, [_ctx, _ptr]),
    "seqk_context_stream": (_int, [_ctx, _p_ptr]),
    "seqk_context_synchronize": (_int, [_ctx]),
    "seqk_context_set_workspace": (_int, [_ctx, _ptr, _size]),
    "seqk_context_reserve_workspace": (_int, [_ctx, _size]),
    # memory
    "seqk_malloc": (_int, [_ctx, _size, _p_ptr]),
    "seqk_free": (_int, [_ctx, _ptr]),
    "seqk_memcpy": (_int, [_ctx, _ptr, _ptr, _size, _int]),
    # scan: ctx, B, T, C, block, flags, a, b, h0, h, h_final, cu_seqlens, N
    "seqk_scan": (_int, [_ctx, _i64, _i64, _i64, _i64, _uint, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _i64]),
    # ctx, B, T, C, block, flags, N, bytes
    "seqk_scan_workspace_size": (_int, [_ctx, _i64, _i64, _i64, _i64, _uint, _i64, _p_size]),
    # ctx, mode, B, T, H, K, V, scale, flags, q, k, v, o, state_in, state_out, z_in, z_out,
    # cu_seqlens, N, chunk
    "seqk_linear_attention": (
        _int,
        [_ctx, _int, _i64, _i64, _i64, _i64, _i64, _flt, _uint, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _i64, _i64],
    ),
    # ctx, mode, B, T, H, K, V, scale, gamma, q, k, v, o, state_in, state_out, cu_seqlens, N, chunk
    "seqk_retention": (
        _int,
        [_ctx, _int, _i64, _i64, _i64, _i64, _i64, _flt, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _i64, _i64],
    ),
    "seqk_retention_default_gammas": (_int, [_i64, _ptr]),
    # ctx, mode, B, T, H, K, V, scale, q, k, v, g, o, state_in, state_out, cu_seqlens, N, chunk
    "seqk_gated_retention": (
        _int,
        [_ctx, _int, _i64, _i64, _i64, _i64, _i64, _flt, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _i64, _i64],
    ),
    # ctx, mode, B, T, H, P, G, Nst, flags, x, dt, A, Bm, Cm, D, dt_bias, y, state_in,
    # state_out, cu_seqlens, N, chunk
    "seqk_mamba2": (
        _int,
        [_ctx, _int, _i64, _i64, _i64, _i64, _i64, _i64, _uint, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _i64, _i64],
    ),
    # ctx, mode, B, T, D, Nst, G, flags, u, dt, A, Bm, Cm, Dskip, z, dt_bias, y, state_in,
    # state_out, cu_seqlens, N
    "seqk_selective_scan": (
        _int,
        [_ctx, _int, _i64, _i64, _i64, _i64, _i64, _uint, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _i64],
    ),
    # ctx, mode, B, T, H, K, V, scale, flags, q, k, v, beta, g, o, state_in, state_out,
    # cu_seqlens, N, chunk
    "seqk_deltanet": (
        _int,
        [_ctx, _int, _i64, _i64, _i64, _i64, _i64, _flt, _uint, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _i64, _i64],
    ),
    # ctx, mode, B, T, H, K, V, N, chunk, bytes
    "seqk_deltanet_workspace_size": (_int, [_ctx, _int, _i64, _i64, _i64, _i64, _i64, _i64, _i64, _p_size]),
    # ctx, mode, B, T, H, K, V, scale, flags, minibatch, q, k, v, eta, theta, alpha, o, state_in,
    # state_out, cu_seqlens, N
    "seqk_titans": (
        _int,
        [_ctx, _int, _i64, _i64, _i64, _i64, _i64, _flt, _uint, _i64, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _i64],
    ),
    # K, V, floats
    "seqk_titans_state_size": (_int, [_i64, _i64, _p_size]),
    # ctx, mode, B, T, H, K, V, minibatch, N, bytes
    "seqk_titans_workspace_size": (_int, [_ctx, _int, _i64, _i64, _i64, _i64, _i64, _i64, _i64, _p_size]),
    # ctx, op, K, V, chunk (out)
    "seqk_chunk_default": (_int, [_ctx, _int, _i64, _i64, _ptr]),
    # ctx, mode, B, T, H, K, V, N, chunk, bytes
    "seqk_linear_state_workspace_size": (_int, [_ctx, _int, _i64, _i64, _i64, _i64, _i64, _i64, _i64, _p_size]),
    # backward of the linear-state modules (every input's gradient; see seqk.h)
    # ctx, B, T, H, K, V, scale, flags, q, k, v, dout, state_in, z_in, dstate_out, dz_out,
    # dq, dk, dv, dstate_in, dz_in, cu_seqlens, N, chunk
    "seqk_linear_attention_backward": (
        _int,
        [_ctx, _i64, _i64, _i64, _i64, _i64, _flt, _uint] + [_ptr] * 14 + [_i64, _i64],
    ),
    # ctx, B, T, H, K, V, scale, gamma, q, k, v, dout, state_in, dstate_out, dq, dk, dv,
    # dstate_in, cu_seqlens, N, chunk
    "seqk_retention_backward": (
        _int,
        [_ctx, _i64, _i64, _i64, _i64, _i64, _flt] + [_ptr] * 12 + [_i64, _i64],
    ),
    # ctx, B, T, H, K, V, scale, q, k, v, g, dout, state_in, dstate_out, dq, dk, dv, dg,
    # dstate_in, cu_seqlens, N, chunk
    "seqk_gated_retention_backward": (
        _int,
        [_ctx, _i64, _i64, _i64, _i64, _i64, _flt] + [_ptr] * 13 + [_i64, _i64],
    ),
    # ctx, B, T, H, P, G, Nst, flags, x, dt, A, Bm, Cm, D, dt_bias, state_in, dy, dstate_out,
    # dx, ddt, dA, dBm, dCm, dD, ddt_bias, dstate_in, cu_seqlens, N, chunk
    "seqk_mamba2_backward": (
        _int,
        [_ctx, _i64, _i64, _i64, _i64, _i64, _i64, _uint] + [_ptr] * 19 + [_i64, _i64],
    ),
    # ctx, B, T, H, G, K, V, N, chunk, bytes
    "seqk_linear_state_backward_workspace_size": (
        _int,
        [_ctx, _i64, _i64, _i64, _i64, _i64, _i64, _i64, _i64, _p_size],
    ),
    # ctx, B, T, D, Nst, G, flags, u, dt, A, Bm, Cm, Dskip, z, dt_bias, state_in, dy,
    # dstate_out, du, ddt, dA, dBm, dCm, dDskip, dz, ddt_bias, dstate_in, cu_seqlens, N
    "seqk_selective_scan_backward": (
        _int,
        [_ctx, _i64, _i64, _i64, _i64, _i64, _uint] + [_ptr] * 21 + [_i64],
    ),
    # ctx, B, T, D, Nst, G, N, bytes
    "seqk_selective_scan_backward_workspace_size": (
        _int,
        [_ctx, _i64, _i64, _i64, _i64, _i64, _i64, _p_size],
    ),
    # ctx, B, T, H, K, V, scale, flags, q, k, v, beta, g, state_in, dout, dstate_out, dq, dk,
    # dv, dbeta, dg, dstate_in, cu_seqlens, N, chunk
    "seqk_deltanet_backward": (
        _int,
        [_ctx, _i64, _i64, _i64, _i64, _i64, _flt, _uint] + [_ptr] * 15 + [_i64, _i64],
    ),
    # ctx, B, T, H, K, V, N, chunk, bytes
    "seqk_deltanet_backward_workspace_size": (
        _int,
        [_ctx, _i64, _i64, _i64, _i64, _i64, _i64, _i64, _p_size],
    ),
    # ctx, B, T, H, K, V, scale, flags, minibatch, q, k, v, eta, theta, alpha, state_in, dout,
    # dstate_out, dq, dk, dv, deta, dtheta, dalpha, dstate_in, cu_seqlens, N
    "seqk_titans_backward": (
        _int,
        [_ctx, _i64, _i64, _i64, _i64, _i64, _flt, _uint, _i64] + [_ptr] * 17 + [_i64],
    ),
    # ctx, B, T, H, K, V, minibatch, N, bytes
    "seqk_titans_backward_workspace_size": (
        _int,
        [_ctx, _i64, _i64, _i64, _i64, _i64, _i64, _i64, _p_size],
    ),
    # ctx, B, T, Hq, Hkv, K, V, scale, flags, q, k, v, o, lse, cu_seqlens, N
    "seqk_attention_parallel": (
        _int,
        [_ctx, _i64, _i64, _i64, _i64, _i64, _i64, _flt, _uint, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _i64],
    ),
    # ctx, B, T, Hq, Hkv, K, V, flags, N, bytes
    "seqk_attention_parallel_workspace_size": (_int, [_ctx, _i64, _i64, _i64, _i64, _i64, _i64, _uint, _i64, _p_size]),
    # ctx, B, T, Hq, Hkv, K, V, scale, flags, q, k, v, o, lse, dout, dq, dk, dv, cu_seqlens, N
    "seqk_attention_parallel_backward": (
        _int,
        [_ctx, _i64, _i64, _i64, _i64, _i64, _i64, _flt, _uint, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr,
         _ptr, _ptr, _i64],
    ),
    # ctx, B, T, Hq, Hkv, K, V, flags, N, bytes
    "seqk_attention_parallel_backward_workspace_size": (
        _int,
        [_ctx, _i64, _i64, _i64, _i64, _i64, _i64, _uint, _i64, _p_size],
    ),
    # ctx, B, Hq, Hkv, K, V, max_len, scale, q, k_new, v_new, k_cache, v_cache, cache_len, o, lse
    "seqk_attention_decode": (
        _int,
        [_ctx, _i64, _i64, _i64, _i64, _i64, _i64, _flt, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr],
    ),
    # ctx, B, Hq, Hkv, K, V, max_len, bytes
    "seqk_attention_decode_workspace_size": (_int, [_ctx, _i64, _i64, _i64, _i64, _i64, _i64, _p_size]),
}

# The _ex entry points (seqk.h, "Dtypes"): the fp32 function's arguments with
# the dtype (an int) right after ctx.
for _name in (
    "seqk_linear_attention", "seqk_retention", "seqk_gated_retention", "seqk_mamba2",
    "seqk_selective_scan", "seqk_deltanet", "seqk_titans", "seqk_attention_parallel",
    "seqk_attention_decode", "seqk_linear_attention_backward", "seqk_retention_backward",
    "seqk_gated_retention_backward", "seqk_mamba2_backward", "seqk_selective_scan_backward",
    "seqk_deltanet_backward", "seqk_titans_backward", "seqk_attention_parallel_backward",
    "seqk_linear_state_workspace_size", "seqk_linear_state_backward_workspace_size",
    "seqk_selective_scan_workspace_size", "seqk_selective_scan_backward_workspace_size",
    "seqk_deltanet_workspace_size",
    "seqk_deltanet_backward_workspace_size", "seqk_titans_workspace_size",
    "seqk_titans_backward_workspace_size", "seqk_attention_parallel_workspace_size",
    "seqk_attention_parallel_backward_workspace_size", "seqk_attention_decode_workspace_size",
):
    _res, _args = SIGNATURES[_name]
    SIGNATURES[_name + "_ex"] = (_res, [_args[0], _int] + list(_args[1:]))
del _name, _res, _args

REQUIRED = (
    "seqk_version",
    "seqk_version_number",
    "seqk_status_string",
    "seqk_last_error",
    "seqk_backend_compiled",
    "seqk_cuda_device_count",
    "seqk_context_create",
    "seqk_context_destroy",
    "seqk_context_backend",
    "seqk_context_device",
    "seqk_context_set_threads",
    "seqk_context_threads",
    "seqk_context_set_stream",
    "seqk_context_stream",
    "seqk_context_synchronize",
)


class _Missing:
    """Stands in for a C function this build of libseqk does not export."""

    def __init__(self, name, path):
        self.__name__ = name
        self._path = path

    def __call__(self, *args):
        raise NotImplementedError(
            "%s is not exported by the loaded libseqk (%s): the library predates it; "
            "rebuild libseqk" % (self.__name__, self._path)
        )

    def __bool__(self):
        return False


class _Functions:
    """The declared C functions as attributes (``lib.seqk_scan(...)``)."""

    def __init__(self, cdll, path):
        self.cdll = cdll
        self.path = path
        self.missing = []
        for name, (restype, argtypes) in SIGNATURES.items():
            try:
                f = getattr(cdll, name)
            except AttributeError:
                if name in REQUIRED:
                    raise ImportError(
                        "seqk: %s does not export %s: it is not a compatible libseqk" % (path, name)
                    )
                self.missing.append(name)
                setattr(self, name, _Missing(name, path))
                continue
            f.restype = restype
            f.argtypes = argtypes
            setattr(self, name, f)


def check_version(lib, path):
    """ImportError unless the library's seqk_version_number() equals the package's."""
    want = version_number(__version__)
    got = int(lib.seqk_version_number())
    if got != want:
        try:
            got_s = lib.seqk_version().decode()
        except Exception:  # pragma: no cover - a broken library
            got_s = "%d.%d.%d" % (got // 10000, got // 100 % 100, got % 100)
        raise ImportError(
            "seqk: the Python package is version %s (SEQK_VERSION_NUMBER %d) but the C library "
            "%s is version %s (%d); install the bindings that match the library, or point %s at "
            "a matching libseqk" % (__version__, want, path, got_s, got, LIBRARY_ENV)
        )


_cdll, library_path = _load()
lib = _Functions(_cdll, library_path)
check_version(lib, library_path)
