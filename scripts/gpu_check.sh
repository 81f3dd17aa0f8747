#!/usr/bin/env bash
# Everything a lent GPU machine should run, in one or two calls (device tool:
#   run command="bash scripts/gpu_check.sh"), logs under $OUT (default ./gpu-out):
#   1. configure with SEQK_CUDA=ON, build (Release, sm_90 + sm_80)
#   2. the whole CTest suite (every case on every backend, CUDA included)
#   3. compute-sanitizer memcheck, racecheck and synccheck over the CUDA cases
#   4. the Python package's pytest suite against the CUDA build
#   5. seqk-bench on every backend (and the device copy ceiling)
#   6. bench/peers_gpu.py: seqk's CUDA ops beside PyTorch SDPA and
#      flash-linear-attention (fla-core, from wheels in .whl/: before the call,
#      here, `echo /.whl/ >> .git/info/exclude` and `python3 -m pip download
#      --no-deps --only-binary=:all: --python-version 3.12 -d .whl fla-core==0.6.0`,
#      then name .whl in the device call's carry; einops, torch, triton are there)
# Each step's log is its own file; a summary line per step goes to summary.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
# The device tool returns at most 8 files: logs go to LOGS, packed into one
# archive at the end; summary.txt and the bench JSON come back as they are.
FINAL_OUT=$OUT
OUT=$(mktemp -d)
export PATH=/usr/local/cuda/bin:$PATH
summary="$OUT/summary.txt"
: >"$summary"
step() { # name, command...
  local name=$1; shift
  local t0=$SECONDS
  "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name: rc=$rc ($((SECONDS - t0)) s)" | tee -a "$summary"
  tail -n 5 "$OUT/$name.log" | sed 's/^/    /' | tee -a "$summary"
  return $rc
}
# PHASES (default: all of them) picks what runs, so that the work fits the
# device tool's 10 minutes a call: e.g. PHASES=build,ctest,memcheck in one
# call and PHASES=build,racecheck,synccheck,pytest,bench in the next (the
# build is incremental on a warm machine). Each sanitizer run has a time cap.
PHASES=${PHASES:-build,ctest,memcheck,racecheck,synccheck,pytest,bench,peers}
want() { [[ ",$PHASES," == *",$1,"* ]]; }
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || true
if want build; then
  step configure cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release -DSEQK_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES="${SEQK_CUDA_ARCHITECTURES:-90}" || exit 1
  step build cmake --build build/gpu -j"$(nproc)" || exit 1
fi
want ctest && step ctest ctest --test-dir build/gpu --output-on-failure -j1
# sanitizers: the CUDA backend only (the CPU cases are covered by ASan in CI)
for tool in memcheck racecheck synccheck; do
  want "$tool" || continue
  for t in build/gpu/tests/test_*; do
    [ -x "$t" ] || continue
    step "sanitizer-$tool-$(basename "$t")" env SEQK_TEST_BACKEND=cuda \
      timeout "${SANITIZER_TIMEOUT:-100}" compute-sanitizer --tool "$tool" --error-exitcode 3 "$t"
  done
done
# the Python package against the CUDA build (torch CUDA tensors included; the
# machine has pytest, numpy and torch but no network, so no venv here)
want pytest && step pytest env SEQK_LIBRARY="$PWD/build/gpu/libseqk.so" \
  PYTHONPATH="$PWD/python-bindings" python3 -m pytest -q -p no:cacheprovider python-bindings/tests
want bench && step bench timeout 240 ./build/gpu/bench/seqk-bench --backend all --threads 16 \
  --out "$OUT/bench"
if want peers; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    step fla-install python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  fi
  step peers env SEQK_LIBRARY="$PWD/build/gpu/libseqk.so" PYTHONUNBUFFERED=1 \
    timeout "${PEERS_TIMEOUT:-300}" python3 bench/peers_gpu.py --out "$OUT/bench"
fi
tar czf "$FINAL_OUT/gpu-logs.tar.gz" -C "$OUT" .
cp "$summary" "$FINAL_OUT/summary.txt"
cp "$OUT"/bench/seqk-bench.jsonl "$OUT"/bench/peers-gpu.jsonl "$FINAL_OUT/" 2>/dev/null || true
echo "logs: $FINAL_OUT/gpu-logs.tar.gz" | tee -a "$FINAL_OUT/summary.txt"
