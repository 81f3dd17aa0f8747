#!/usr/bin/env bash
# The main job: builds seqk-bench (Release; CUDA when a toolkit is present) and
# runs the default sweep with 2 CPU threads (and the CUDA backend when a GPU is
# present). Results: a table on stdout; JSON lines and CSV in bench-results/.
# Extra arguments go to seqk-bench (see seqk-bench --help).
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(bash scripts/setup.sh)"
cmake -S . -B build/bench -DCMAKE_BUILD_TYPE=Release -DSEQK_BUILD_TESTS=OFF >/dev/null
cmake --build build/bench -j"$(nproc 2>/dev/null || echo 2)" --target seqk-bench >/dev/null
./build/bench/bench/seqk-bench --threads "${SEQK_BENCH_THREADS:-2}" --out bench-results "$@"
echo "results: $(pwd)/bench-results/seqk-bench.jsonl and seqk-bench.csv"
