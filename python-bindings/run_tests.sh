#!/usr/bin/env bash
# Tests of the Python bindings against a built libseqk.
#
#   bash python-bindings/run_tests.sh build/test/libseqk.so [pytest arguments...]
#
# Creates (or reuses) a virtual environment in <repo>/build/pyvenv ($SEQK_PYVENV
# names another), installs numpy, pytest, nbclient, nbformat, ipykernel,
# matplotlib, torch (for the autograd tests; from PyPI, about 3 GB with its
# CUDA libraries, installed only when `import torch` fails; SEQK_TEST_TORCH=0
# skips it) and the Python package (./python-bindings, freshly each run,
# without compiling libseqk: the tests use the given library), checks that
# `import seqk` loads the given library, then runs pytest with SEQK_LIBRARY
# pointing at it. tests/test_install.py builds and installs a wheel with its
# own libseqk on top (SEQK_TEST_INSTALL=0 skips it). The exit code is
# pytest's; "no tests collected" (pytest's 5) counts as a failure.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

if [ $# -lt 1 ]; then
  echo "usage: $0 /path/to/libseqk.so [pytest arguments...]" >&2
  exit 2
fi
lib=$1
shift
if [ ! -e "$lib" ]; then
  echo "error: $lib does not exist (build the library first)" >&2
  exit 2
fi
lib=$(cd "$(dirname "$lib")" && pwd)/$(basename "$lib")

python=${PYTHON:-python3}
venv=${SEQK_PYVENV:-$repo/build/pyvenv}
export PIP_DISABLE_PIP_VERSION_CHECK=1

echo "== Python bindings: venv $venv =="
if ! command -v "$python" >/dev/null 2>&1; then
  echo "error: $python not found (set PYTHON=/path/to/python3 >= 3.8)" >&2
  exit 1
fi
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
  mkdir -p "$repo/build"
  rm -rf "$venv"
  if ! "$python" -m venv "$venv"; then
    echo "error: '$python -m venv' failed; on Debian/Ubuntu: apt-get install python3-venv" >&2
    exit 1
  fi
fi
"$venv/bin/python" -m pip install --quiet numpy pytest nbclient nbformat ipykernel matplotlib
if [ "${SEQK_TEST_TORCH:-1}" = 0 ]; then
  echo "== Python bindings: torch not installed (SEQK_TEST_TORCH=0); the torch tests skip without it =="
elif "$venv/bin/python" -c 'import torch' >/dev/null 2>&1; then
  echo "== Python bindings: torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)') already in the venv =="
else
  echo "== Python bindings: installing torch from PyPI (about 3 GB with its CUDA libraries; SEQK_TEST_TORCH=0 skips) =="
  t0=$SECONDS
  if ! "$venv/bin/python" -m pip install --quiet torch; then
    echo "error: 'pip install torch' failed; SEQK_TEST_TORCH=0 runs the suite without the torch tests" >&2
    exit 1
  fi
  echo "   torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)') installed in $((SECONDS - t0)) s"
fi
# the bindings as a user gets them (not the source tree), reinstalled every
# run; wheel.cmake=false: the Python package only, libseqk is the one given
"$venv/bin/python" -m pip install --quiet --force-reinstall --no-deps --config-settings=wheel.cmake=false "$here"

export SEQK_LIBRARY="$lib"
echo "== Python bindings: import check with SEQK_LIBRARY=$SEQK_LIBRARY =="
# run from / so that the installed package is imported, not ./seqk
if ! (cd / && "$venv/bin/python" -c 'import seqk; print("seqk", seqk.__version__, "loaded", seqk.library_path, "backends", seqk.backends())'); then
  echo "error: the bindings cannot load $SEQK_LIBRARY (see the ImportError above)" >&2
  exit 1
fi

echo "== Python bindings: pytest =="
cd "$here"
set +e
# the pytest script (not `python -m pytest`) keeps ./ off sys.path, so the
# installed copy of the package is what is tested
"$venv/bin/pytest" -p no:cacheprovider -ra tests "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
