"""Installation as a user does it: `pip wheel ./python-bindings` compiles libseqk
through CMake (scikit-build-core) and bundles it as seqk/libseqk.so; the wheel,
installed into a fresh virtual environment, imports with no environment
variable and computes.

The builds here leave the CUDA backend out (cmake.define.SEQK_CUDA=OFF) to
stay quick: about 15 s of compiling on two cores each. pip fetches the build
backend (scikit-build-core) and numpy from PyPI, or takes them from its cache.
SEQK_TEST_INSTALL=0 skips this file (e.g. offline).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PKG_SRC = os.path.dirname(HERE)  # python-bindings/
REPO = os.path.dirname(PKG_SRC)

if os.environ.get("SEQK_TEST_INSTALL", "1") == "0":
    pytest.skip("SEQK_TEST_INSTALL=0", allow_module_level=True)
if not (os.path.isfile(os.path.join(PKG_SRC, "pyproject.toml"))
        and os.path.isfile(os.path.join(REPO, "include", "seqk.h"))):
    pytest.skip("not run from a source checkout (no python-bindings/pyproject.toml next to include/seqk.h)",
                allow_module_level=True)

with open(os.path.join(PKG_SRC, "seqk", "_version.py")) as _f:
    VERSION = re.search(r'^__version__ = "([^"]+)"', _f.read(), re.M).group(1)  # the checkout's

NO_CUDA = ["-C", "cmake.define.SEQK_CUDA=OFF"]


def clean_env():
    """The environment of a user who has set nothing for seqk."""
    env = dict(os.environ)
    for k in ("SEQK_LIBRARY", "PYTHONPATH", "PYTHONHOME", "LD_PRELOAD", "VIRTUAL_ENV"):
        env.pop(k, None)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def run(cmd, cwd, timeout=600):
    p = subprocess.run(cmd, cwd=str(cwd), env=clean_env(), capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, "%s failed (exit %d):\n%s\n%s" % (
        " ".join(map(str, cmd)), p.returncode, p.stdout[-6000:], p.stderr[-6000:])
    return p


def only_wheel(folder):
    wheels = [f for f in os.listdir(str(folder)) if f.endswith(".whl")]
    assert len(wheels) == 1, wheels
    return os.path.join(str(folder), wheels[0])


def check_wheel(path):
    name = os.path.basename(path)
    # ctypes, no extension module: any Python 3, one platform
    assert name.startswith("seqk-%s-py3-none-" % VERSION), name
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
        assert "seqk/libseqk.so" in names, sorted(names)
        assert z.read("seqk/libseqk.so")[:4] == b"\x7fELF"
        for f in ("seqk/__init__.py", "seqk/_lib.py", "seqk/ops.py", "seqk/torch.py", "seqk/py.typed"):
            assert f in names, f
        # nothing of the C project's own install (headers, static library, CMake/pkg-config files)
        # and one copy of the library (no versioned names)
        extra = sorted(n for n in names if not n.startswith(("seqk/", "seqk-%s.dist-info/" % VERSION)))
        assert extra == [], extra
        assert sorted(n for n in names if "libseqk" in n) == ["seqk/libseqk.so"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(wheel path, CMake build folder): pip wheel --no-deps ./python-bindings, CUDA off."""
    tmp = tmp_path_factory.mktemp("wheel")
    out, build = tmp / "dist", tmp / "build"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), PKG_SRC] + NO_CUDA
        + ["-C", "build-dir=%s" % build], cwd=tmp)
    return only_wheel(out), str(build)


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A fresh virtual environment with numpy; returns its python."""
    d = tmp_path_factory.mktemp("venv") / "env"
    run([sys.executable, "-m", "venv", str(d)], cwd=d.parent)
    py = str(d / "bin" / "python")
    run([py, "-m", "pip", "install", "--quiet", "numpy"], cwd=d.parent)
    return py


USE = r"""
import json, os, sys, sysconfig
import numpy as np
import seqk

rng = np.random.default_rng(7)
B, T, C = 2, 37, 6
a = rng.uniform(0.5, 1.0, (B, T, C)).astype(np.float32)
b = rng.standard_normal((B, T, C)).astype(np.float32)
h = seqk.scan(a, b)
ref = np.zeros_like(b, dtype=np.float64)
prev = np.zeros((B, C))
for t in range(T):
    prev = a[:, t] * prev + b[:, t]
    ref[:, t] = prev
print(json.dumps({
    "library_path": seqk.library_path,
    "package": os.path.dirname(seqk.__file__),
    "platlib": sysconfig.get_paths()["platlib"],
    "version": seqk.__version__,
    "c_version": seqk.version(),
    "backends": seqk.backends(),
    "max_err": float(np.max(np.abs(h - ref))),
}))
"""


def import_and_use(py, cwd):
    """Runs USE with `py` in a clean environment from `cwd` (outside the
    repository, so that neither ./seqk nor the checkout's build trees count)."""
    p = run([py, "-c", USE], cwd=cwd, timeout=120)
    return json.loads(p.stdout.strip().splitlines()[-1])


def check_use(r, py):
    real = os.path.realpath
    # the library bundled in the venv's site-packages, found with no SEQK_LIBRARY
    assert real(r["package"]) == os.path.join(real(r["platlib"]), "seqk"), r
    assert real(r["library_path"]) == os.path.join(real(r["platlib"]), "seqk", "libseqk.so"), r
    assert real(r["platlib"]).startswith(real(os.path.dirname(os.path.dirname(py)))), r
    assert r["version"] == r["c_version"] == VERSION, r
    assert r["backends"] == ["cpu"], r  # built with SEQK_CUDA=OFF
    assert r["max_err"] < 1e-4, r


def test_wheel_bundles_the_library(built):
    wheel, build = built
    check_wheel(wheel)
    with open(os.path.join(build, "CMakeCache.txt")) as f:
        cache = f.read()
    assert "CMAKE_BUILD_TYPE:STRING=Release" in cache
    assert "SEQK_CUDA:STRING=OFF" in cache
    # tests and benchmark are not configured (not built)
    assert not os.path.exists(os.path.join(build, "seqk-c", "tests"))
    assert not os.path.exists(os.path.join(build, "seqk-c", "bench"))


def test_installed_wheel_imports_without_environment(built, venv, tmp_path):
    wheel, _ = built
    run([venv, "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall", wheel], cwd=tmp_path)
    check_use(import_and_use(venv, tmp_path), venv)


def test_sdist_carries_the_c_sources_and_builds(venv, tmp_path):
    """An sdist made from the checkout holds the C sources (csrc/) and builds a
    working wheel away from the repository."""
    run([venv, "-m", "pip", "install", "--quiet", "scikit-build-core"], cwd=tmp_path)
    dist = tmp_path / "sdist"
    dist.mkdir()
    code = "import sys; from scikit_build_core.build import build_sdist; print(build_sdist(sys.argv[1]))"
    name = run([venv, "-c", code, str(dist)], cwd=PKG_SRC).stdout.strip().splitlines()[-1]
    sdist = str(dist / name)
    top = "seqk-%s/" % VERSION
    with tarfile.open(sdist) as t:
        names = set(t.getnames())
    for f in ("pyproject.toml", "CMakeLists.txt", "seqk/_lib.py", "csrc/CMakeLists.txt", "csrc/include/seqk.h",
              "csrc/cmake/seqk.pc.in", "csrc/core/context.c", "csrc/gpu/scan.cu"):
        assert top + f in names, f
    assert not any(n.startswith(top + "build/") for n in names)
    # the wheel is built from the unpacked sdist in pip's temporary folder
    out = tmp_path / "dist"
    run([venv, "-m", "pip", "wheel", "--no-deps", "-w", str(out), sdist] + NO_CUDA, cwd=tmp_path)
    wheel = only_wheel(out)
    check_wheel(wheel)
    run([venv, "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall", wheel], cwd=tmp_path)
    check_use(import_and_use(venv, tmp_path), venv)


def test_missing_sources_are_a_clear_error(tmp_path):
    """The package folder alone (no C sources beside or inside it) fails with a
    message that says what to do."""
    src = tmp_path / "python-bindings"
    shutil.copytree(PKG_SRC, str(src), ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__",
                                                                      "libseqk.so*", ".pytest_cache"))
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path / "dist"), str(src)]
                       + NO_CUDA, cwd=str(tmp_path), env=clean_env(), capture_output=True, text=True, timeout=600)
    assert p.returncode != 0
    assert "the C library's sources are not here" in p.stdout + p.stderr, p.stdout[-4000:] + p.stderr[-4000:]
