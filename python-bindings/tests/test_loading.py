"""Loading the library: search order, error messages, version check, and the
ctypes declarations against include/seqk.h."""

import ctypes
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

seqk = pytest.importorskip("seqk")
from seqk import _lib  # noqa: E402

HEADER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "include", "seqk.h")
PKG_DIR = os.path.dirname(os.path.abspath(seqk.__file__))
CC = shutil.which("cc") or shutil.which("gcc")


def run_python(code, env_update=None, unset=(), pythonpath=None, cwd=None):
    env = dict(os.environ)
    for k in unset:
        env.pop(k, None)
    env.update(env_update or {})
    # import the same seqk as this test process (installed, or the source tree)
    env["PYTHONPATH"] = pythonpath if pythonpath is not None else os.path.dirname(PKG_DIR)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=cwd or "/",
                          capture_output=True, text=True, timeout=120)


IMPORT_REPORT = """
import sys
try:
    import seqk
except ImportError as e:
    print("IMPORTERROR", e)
    sys.exit(3)
print("LOADED", seqk.library_path)
"""


def copy_package(dest_parent):
    dest = os.path.join(str(dest_parent), "seqk")
    shutil.copytree(PKG_DIR, dest, ignore=shutil.ignore_patterns("__pycache__", "libseqk.so*"))
    return dest


# ------------------------------------------------------------------ the loaded library


def test_version_matches():
    assert seqk.__version__ == "0.1.0"
    assert seqk.version() == seqk.__version__
    assert _lib.lib.seqk_version_number() == 100


def test_loaded_through_env():
    want = os.path.abspath(os.environ["SEQK_LIBRARY"])
    if os.path.isdir(want):
        want = os.path.join(want, "libseqk.so")
    assert seqk.library_path == want


def test_backends():
    b = seqk.backends()
    assert "cpu" in b and set(b) <= {"cpu", "cuda"}
    assert seqk.backend_compiled("cpu")
    assert seqk.backend_compiled("cuda") == ("cuda" in b)
    n = seqk.cuda_device_count()
    assert isinstance(n, int) and n >= 0
    if "cuda" not in b:
        assert n == 0


# ------------------------------------------------------------------ declarations vs. header


def _header_functions():
    if not os.path.isfile(HEADER):
        pytest.skip("include/seqk.h not found next to python-bindings (installed elsewhere?)")
    text = open(HEADER).read()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    decls = re.findall(r"SEQK_API\s+([^;()]*?)\b(seqk_\w+)\s*\(([^)]*)\)\s*;", text, flags=re.S)
    out = {}
    for ret, name, args in decls:
        args = " ".join(args.split())
        params = [] if args in ("", "void") else [a.strip() for a in args.split(",")]
        out[name] = (" ".join(ret.split()), params)
    assert len(out) > 25
    return out, text


def _ctype_for(param):
    t = re.sub(r"\b\w+$", "", param).strip() if not param.endswith("*") else param  # drop the name
    t = t.replace("const ", "").strip()
    stars = t.count("*")
    base = t.replace("*", "").strip()
    scalars = {"int64_t": ctypes.c_int64, "float": ctypes.c_float, "unsigned": ctypes.c_uint, "int": ctypes.c_int,
               "size_t": ctypes.c_size_t, "seqk_status": ctypes.c_int, "seqk_backend": ctypes.c_int,
               "seqk_mode": ctypes.c_int, "seqk_copy_kind": ctypes.c_int, "seqk_dtype": ctypes.c_int,
               "seqk_chunked_op": ctypes.c_int}
    if stars == 0:
        return scalars[base]
    if stars == 2:
        return ctypes.POINTER(ctypes.c_void_p)
    if base == "void" and stars == 1:
        return ctypes.c_void_p
    if base in ("int", "seqk_backend"):
        return ctypes.POINTER(ctypes.c_int)
    if base == "size_t":
        return ctypes.POINTER(ctypes.c_size_t)
    return ctypes.c_void_p  # arrays (float *, int32_t *) and seqk_context *


def test_every_header_function_is_declared():
    funcs, _ = _header_functions()
    missing = sorted(set(funcs) - set(_lib.SIGNATURES))
    extra = sorted(set(_lib.SIGNATURES) - set(funcs))
    assert not missing, "functions of seqk.h without a ctypes declaration: %s" % missing
    assert not extra, "declared but not in seqk.h: %s" % extra
    for name, (ret, params) in funcs.items():
        restype, argtypes = _lib.SIGNATURES[name]
        assert len(argtypes) == len(params), (name, params)
        want_ret = {"const char *": ctypes.c_char_p, "size_t": ctypes.c_size_t}.get(ret, ctypes.c_int)
        assert restype is want_ret, name
        for p, got in zip(params, argtypes):
            want = _ctype_for(p)
            assert got == want, "%s: parameter %r declared as %r, want %r" % (name, p, got, want)


def test_every_declared_function_is_exported():
    assert _lib.lib.missing == [], "the loaded library lacks %s" % _lib.lib.missing
    for name, (restype, argtypes) in _lib.SIGNATURES.items():
        f = getattr(_lib.lib, name)
        assert f.restype is restype and list(f.argtypes) == list(argtypes)


def test_enums_and_flags_match_header():
    _, text = _header_functions()
    values = {n: int(v) for n, v in re.findall(r"\bSEQK_(\w+)\s*=\s*(\d+)", text)}
    values.update({n: int(v) for n, v in re.findall(r"#define\s+SEQK_(\w+)\s+(\d+)u\b", text)})
    for m in seqk.Status:
        assert values[m.name if m.name == "SUCCESS" else m.name] == m.value, m
    assert len(seqk.Status) == len([n for n in values if n == "SUCCESS" or n.startswith("ERROR_")])
    for m in seqk.Backend:
        assert values["BACKEND_" + m.name] == m.value
    for m in seqk.Mode:
        assert values["MODE_" + m.name] == m.value
    for m in seqk.CopyKind:
        assert values["COPY_" + m.name] == m.value
    for flag in ("SCAN_REVERSE", "LINATTN_NORMALIZE", "LINATTN_ELU1", "MAMBA2_DT_SOFTPLUS", "SSCAN_DT_SOFTPLUS",
                 "ATTN_CAUSAL"):
        assert getattr(seqk, flag) == values[flag], flag
    for st in seqk.Status:
        assert seqk.status_string(st) == _lib.lib.seqk_status_string(int(st)).decode()


# ------------------------------------------------------------------ failures


def test_env_pointing_nowhere(tmp_path):
    bad = str(tmp_path / "nowhere" / "libseqk.so")
    r = run_python(IMPORT_REPORT, {"SEQK_LIBRARY": bad})
    assert r.returncode == 3, r.stdout + r.stderr
    assert "IMPORTERROR" in r.stdout and bad in r.stdout and "not found" in r.stdout
    assert "SEQK_LIBRARY" in r.stdout


def test_env_not_a_library(tmp_path):
    bad = tmp_path / "libseqk.so"
    bad.write_text("this is not ELF\n")
    r = run_python(IMPORT_REPORT, {"SEQK_LIBRARY": str(bad)})
    assert r.returncode == 3, r.stdout + r.stderr
    assert "failed to load" in r.stdout and "not a shared library" in r.stdout


def test_env_may_name_a_folder(tmp_path):
    os.symlink(os.path.realpath(os.environ["SEQK_LIBRARY"]), str(tmp_path / "libseqk.so"))
    r = run_python(IMPORT_REPORT, {"SEQK_LIBRARY": str(tmp_path)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "LOADED %s" % (tmp_path / "libseqk.so") in r.stdout


def test_sanitizer_build_is_skipped_not_crashing(tmp_path):
    if _lib._sanitizer_loaded():
        pytest.skip("this Python has the sanitizer runtime preloaded: sanitizer builds load normally")
    fake = tmp_path / "libseqk.so"
    fake.write_bytes(b"\x7fELF" + b"\0" * 60 + b"libasan.so.8\0")
    r = run_python(IMPORT_REPORT, {"SEQK_LIBRARY": str(fake)})
    assert r.returncode == 3, r.stdout + r.stderr
    assert "AddressSanitizer" in r.stdout


def test_search_lists_every_place(tmp_path):
    """No SEQK_LIBRARY and no build tree: the error lists each place tried."""
    copy_package(tmp_path)
    r = run_python(IMPORT_REPORT, unset=["SEQK_LIBRARY"], pythonpath=str(tmp_path))
    if r.returncode == 0:  # a libseqk is installed on this machine: it must be a standard one
        assert any(d in r.stdout for d in ("/usr/local/lib", "/usr/lib", "/opt/seqk/lib", "libseqk.so")), r.stdout
        return
    assert r.returncode == 3, r.stdout + r.stderr
    msg = r.stdout
    for place in ("next to the package", str(tmp_path / "seqk" / "libseqk.so"), "find_library('seqk')",
                  "/usr/local/lib/libseqk.so", "/usr/lib/libseqk.so", "/opt/seqk/lib/libseqk.so"):
        assert place in msg, (place, msg)
    assert "no source checkout found" in msg


def test_search_finds_bundled_library(tmp_path):
    pkg = copy_package(tmp_path)
    os.symlink(os.path.realpath(os.environ["SEQK_LIBRARY"]), os.path.join(pkg, "libseqk.so"))
    r = run_python(IMPORT_REPORT, unset=["SEQK_LIBRARY"], pythonpath=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "LOADED " + os.path.join(pkg, "libseqk.so") in r.stdout


@pytest.mark.parametrize("sub", ["build", "build/test", "build/release"])
def test_search_finds_build_tree(tmp_path, sub):
    """A develop install: the package sits in <repo>/python-bindings/seqk."""
    repo = tmp_path / "repo"
    (repo / "include").mkdir(parents=True)
    (repo / "include" / "seqk.h").write_text("/* stand-in */\n")
    (repo / "CMakeLists.txt").write_text("# stand-in\n")
    (repo / "python-bindings").mkdir()
    copy_package(repo / "python-bindings")
    (repo / sub).mkdir(parents=True, exist_ok=True)
    target = repo / sub / "libseqk.so"
    os.symlink(os.path.realpath(os.environ["SEQK_LIBRARY"]), str(target))
    r = run_python(IMPORT_REPORT, unset=["SEQK_LIBRARY"], pythonpath=str(repo / "python-bindings"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "LOADED %s" % target in r.stdout


def test_find_repo_root(tmp_path):
    repo = tmp_path / "repo"
    (repo / "include").mkdir(parents=True)
    (repo / "include" / "seqk.h").write_text("")
    (repo / "CMakeLists.txt").write_text("")
    deep = repo / "python-bindings" / "seqk"
    deep.mkdir(parents=True)
    assert _lib.find_repo_root(str(deep)) == str(repo.resolve())
    assert _lib.find_repo_root(str(tmp_path)) in (None, _lib.find_repo_root("/"))


def test_likely_causes():
    assert "OpenMP" in _lib.likely_cause("libgomp.so.1: cannot open shared object file: No such file or directory")
    assert "OpenMP" in _lib.likely_cause("libomp.so: cannot open shared object file")
    assert "CUDA runtime" in _lib.likely_cause("libcublas.so.12: cannot open shared object file")
    assert "CUDA runtime" in _lib.likely_cause("libcudart.so.12: cannot open shared object file")
    assert "ldd" in _lib.likely_cause("libfoo.so.3: cannot open shared object file")
    assert "not a shared library" in _lib.likely_cause("/x/libseqk.so: invalid ELF header")
    assert _lib.likely_cause("something else") == ""


def _compile(tmp_path, name, source, libs=()):
    if CC is None:
        pytest.skip("no C compiler to build a stand-in library")
    src = tmp_path / (name + ".c")
    src.write_text(source)
    out = tmp_path / name
    cmd = [CC, "-shared", "-fPIC", "-o", str(out), str(src), "-L" + str(tmp_path)] + list(libs)
    subprocess.run(cmd, check=True, capture_output=True)
    return out


@pytest.mark.parametrize("dep,cause", [("gomp_seqktest", "OpenMP runtime"), ("cudart_seqktest", "CUDA runtime")])
def test_missing_dependency_is_explained(tmp_path, dep, cause):
    """A library whose dependency is gone: the loader's error and the likely cause."""
    _compile(tmp_path, "lib%s.so" % dep, "int seqk_dep_stub(void) { return 1; }\n")
    fake = _compile(tmp_path, "libseqk.so",
                    "int seqk_dep_stub(void);\nint seqk_version_number(void) { return seqk_dep_stub(); }\n",
                    ["-l" + dep])
    os.remove(str(tmp_path / ("lib%s.so" % dep)))
    r = run_python(IMPORT_REPORT, {"SEQK_LIBRARY": str(fake)})
    assert r.returncode == 3, r.stdout + r.stderr
    assert "lib%s.so" % dep in r.stdout and "cannot open shared object file" in r.stdout
    assert cause in r.stdout


def test_version_mismatch_raises(tmp_path):
    stubs = "\n".join("int %s(void) { return 0; }" % n for n in _lib.REQUIRED
                      if n not in ("seqk_version", "seqk_version_number"))
    fake = _compile(tmp_path, "libseqk.so", stubs + """
const char *seqk_version(void) { return "0.2.0"; }
int seqk_version_number(void) { return 200; }
""")
    r = run_python(IMPORT_REPORT, {"SEQK_LIBRARY": str(fake)})
    assert r.returncode == 3, r.stdout + r.stderr
    assert "0.1.0" in r.stdout and "0.2.0" in r.stdout and str(fake) in r.stdout


def test_not_libseqk(tmp_path):
    fake = _compile(tmp_path, "libseqk.so", "int something_else(void) { return 0; }\n")
    r = run_python(IMPORT_REPORT, {"SEQK_LIBRARY": str(fake)})
    assert r.returncode == 3 and "not libseqk" in r.stdout, r.stdout + r.stderr


def test_check_version_unit():
    class Fake:
        def seqk_version_number(self):
            return 10203

        def seqk_version(self):
            return b"1.2.3"

    with pytest.raises(ImportError, match=r"0\.1\.0.*1\.2\.3"):
        _lib.check_version(Fake(), "/somewhere/libseqk.so")
