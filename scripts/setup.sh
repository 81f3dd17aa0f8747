#!/usr/bin/env bash
# Installs what building and testing seqk needs, if it is missing: a C
# compiler with OpenMP (and g++ for tools/cuda_emu), CMake >= 3.22,
# pkg-config. Debian/Ubuntu (apt-get); elsewhere it only says what is
# missing. The CUDA toolkit is optional (found by CMake when nvcc is on PATH
# or in /usr/local/cuda).
set -euo pipefail
missing=()
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
command -v g++ >/dev/null 2>&1 || missing+=(g++) # tools/cuda_emu (the CUDA kernels on the CPU)
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if command -v dpkg >/dev/null 2>&1 && ! dpkg -s libopenblas-dev >/dev/null 2>&1; then missing+=(libopenblas-dev libopenblas-openmp-dev); fi # seqk-bench's sgemm ceilings (optional)
# clang with libFuzzer and its OpenMP (scripts/fuzz.sh, optional: test.sh skips the fuzzers without it)
if command -v dpkg >/dev/null 2>&1; then
  command -v clang >/dev/null 2>&1 || missing+=(clang)
  dpkg -s libclang-rt-dev >/dev/null 2>&1 || ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1 || missing+=(libclang-rt-dev)
  dpkg -s libomp-dev >/dev/null 2>&1 || missing+=(libomp-dev)
  # Open MPI: libseqk_mpi (context parallelism) and its tests (optional: built when CMake finds MPI)
  dpkg -s openmpi-bin >/dev/null 2>&1 || missing+=(openmpi-bin)
  dpkg -s libopenmpi-dev >/dev/null 2>&1 || missing+=(libopenmpi-dev)
fi
if ((${#missing[@]})); then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    echo "setup: installing ${missing[*]}" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: please install: ${missing[*]}" >&2
    exit 1
  fi
fi
# nvcc is usually not on PATH in a plain shell; let CMake find it.
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  echo "export PATH=/usr/local/cuda/bin:\$PATH"
fi
