#!/usr/bin/env bash
# The main job: builds seqk-bench (Release; CUDA when a toolkit is present),
# runs the default sweep with 2 CPU threads (and the CUDA backend when a GPU is
# present): every suite (scan, linear, sscan, prefill, decode, memory, backward; see
# seqk-bench --help), then draws the PNGs (bench/plot.py, matplotlib: taken
# from the system when importable, else installed into a venv under
# build/benchvenv). Results: a table on stdout (also saved as seqk-bench.txt),
# JSON lines, CSV and PNGs in bench-results/ (or the --out DIR given).
# Extra arguments go to seqk-bench (e.g. --quick, --suite decode, --case titans).
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(bash scripts/setup.sh)"
cmake -S . -B build/bench -DCMAKE_BUILD_TYPE=Release -DSEQK_BUILD_TESTS=OFF >/dev/null
cmake --build build/bench -j"$(nproc 2>/dev/null || echo 2)" --target seqk-bench >/dev/null

# Where seqk-bench writes: its last --out, as it parses them.
out=bench-results
prev=""
for arg in "$@"; do
  case "$arg" in
    --out=*) out="${arg#--out=}" ;;
    *) [ "$prev" = "--out" ] && out="$arg" ;;
  esac
  prev="$arg"
done

mkdir -p "$out"
status=0
# OpenBLAS (the sgemm ceilings) picks its kernels by CPU model; on a VM that
# hides the model it falls back to generic SSE3 kernels ("core Prescott" in the
# table) and the ceiling reads 3-4x low. Name the kernel family from the CPU's
# flags unless the caller did (AMD's models are recognised: left alone).
if [ -z "${OPENBLAS_CORETYPE:-}" ] && [ -r /proc/cpuinfo ] && ! grep -q AuthenticAMD /proc/cpuinfo; then
  if grep -qw avx512f /proc/cpuinfo; then export OPENBLAS_CORETYPE=SkylakeX
  elif grep -qw avx2 /proc/cpuinfo; then export OPENBLAS_CORETYPE=Haswell; fi
fi
./build/bench/bench/seqk-bench --threads "${SEQK_BENCH_THREADS:-2}" --out bench-results "$@" \
  | tee "$out/seqk-bench.txt" || status=$?

# The plots: a Python with matplotlib and numpy, or a venv that gets them.
plots="not made"
py=""
if python3 -c 'import matplotlib, numpy' >/dev/null 2>&1; then
  py=python3
elif build/benchvenv/bin/python -c 'import matplotlib, numpy' >/dev/null 2>&1; then
  py=build/benchvenv/bin/python
else
  echo "bench.sh: installing matplotlib and numpy into build/benchvenv" >&2
  if python3 -m venv build/benchvenv >&2 &&
     build/benchvenv/bin/pip install -q --retries 1 --timeout 20 matplotlib numpy >&2; then
    py=build/benchvenv/bin/python
  else
    echo "bench.sh: could not install matplotlib (offline?); no PNGs this time. Later, on a" \
         "machine with it: python3 bench/plot.py $out/seqk-bench.jsonl" >&2
  fi
fi
if [ -n "$py" ] && [ -s "$out/seqk-bench.jsonl" ]; then
  rm -f "$out"/prefill_*.png "$out"/decode_*.png "$out"/memory_*.png "$out"/fraction_*.png \
    "$out"/backward_*.png
  if log="$("$py" bench/plot.py "$out/seqk-bench.jsonl" --out "$out")"; then
    plots="$(printf '%s\n' "$log" | sed -n 's|^plot.py: wrote .*/||p' | tr '\n' ' ')"
  else
    echo "bench.sh: bench/plot.py failed (the results above are complete)" >&2
  fi
fi

dir="$(cd "$out" && pwd)"
echo
echo "results in $dir/:"
echo "  table  seqk-bench.txt"
echo "  JSONL  seqk-bench.jsonl   (one record per measurement; ceilings, version, date)"
echo "  CSV    seqk-bench.csv"
echo "  PNGs   ${plots:-none}"
exit "$status"
