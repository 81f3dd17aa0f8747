#!/usr/bin/env bash
# Weak scaling of libseqk_mpi (context parallelism over MPI): seqk-mpi-weak
# (bench/mpi/mpi_weak.c) under mpiexec with 1, 2 and 4 ranks, a fixed number
# of tokens per rank (gated retention and DeltaNet, forward and backward; the
# bytes each rank sent next to the state-size formula). On a machine with
# fewer cores than ranks the ranks oversubscribe the cores: the times then
# measure the sharing, not the scaling (say so with the results).
#   scripts/bench_mpi.sh [BUILD_DIR] [seqk-mpi-weak args, e.g. --tokens 65536 --reps 5]
# Needs MPI (Debian: openmpi-bin libopenmpi-dev; scripts/setup.sh installs
# them); without it, it says so and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
build=build/bench-mpi
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then build=$1; shift; fi
if ! command -v mpiexec >/dev/null 2>&1; then
  echo "bench_mpi.sh: no mpiexec (install openmpi-bin libopenmpi-dev): skipped"
  exit 0
fi
# a fresh build directory is configured here; an existing one (with libseqk_mpi) is kept as it is
if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DSEQK_BUILD_TESTS=OFF -DSEQK_MPI=ON >/dev/null
fi
cmake --build "$build" -j"$(nproc 2>/dev/null || echo 2)" --target seqk-mpi-weak >/dev/null
cores=$(nproc --all 2>/dev/null || echo '?') # before OMP_NUM_THREADS, which nproc obeys
# Open MPI as root, and shared memory without the single-copy mechanism
# (containers often forbid it)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none OMP_NUM_THREADS=1
over=""
mpiexec --version 2>&1 | grep -qiE "open ?mpi|openrte" && over=--oversubscribe
echo "# cores: $cores, $(date -u +%Y-%m-%d), $(uname -m), load average: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
for n in 1 2 4; do
  mpiexec -n "$n" $over "$build/seqk-mpi-weak" "$@"
done
