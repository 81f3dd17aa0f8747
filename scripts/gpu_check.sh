#!/usr/bin/env bash
# Everything a lent GPU machine should run, in one call of the device tool
#   run command="bash scripts/gpu_check.sh" carry=[".whl"] timeout_s=600
# within a time budget (BUDGET seconds, default 520: every step's timeout is
# cut to what is left, so the logs always come back), logs under $OUT
# (default ./gpu-out):
#   1. configure with SEQK_CUDA=ON, build (Release, sm_90)
#   2. the whole CTest suite (every case on every backend, CUDA included)
#   3. the Python package's pytest suite against the CUDA build
#   4. seqk-bench on the CUDA backend (and the device copy ceiling)
#   5. bench/peers_gpu.py: seqk's CUDA ops beside PyTorch SDPA and
#      flash-linear-attention, first the bf16 rows (phase peers_bf16: issue
#      #21's targets, seqk's _ex entry points on the same bf16 tensors as
#      fla's chunk kernels and SDPA; peers-gpu-bf16.jsonl), then the fp32 ones
#      (phase peers) (fla-core, from wheels in .whl/: before the call,
#      here, `mkdir -p .git/info; echo /.whl/ >> .git/info/exclude` and
#      `python3 -m pip download --no-deps --only-binary=:all: --python-version
#      3.12 -d .whl fla-core==0.6.0`, then name .whl in the call's carry;
#      einops, torch, triton are on the machine)
#   6. compute-sanitizer memcheck over every test program's CUDA cases
#      (MEMCHECK_TESTS narrows the list), racecheck and synccheck over the
#      kernels with shared-memory exchanges (SAN_TESTS); last, since they are
#      the slowest and a cut one loses least
# PHASES (comma list, default all of the above) picks what runs; SAN_TESTS
# names the test programs for racecheck/synccheck. Each step's log is its own
# file, packed into gpu-logs.tar.gz (the device tool returns at most 8 files);
# summary.txt (one line per step and its log's tail) and the bench JSONL come
# back as they are.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
BUDGET=${BUDGET:-520}
T_START=$SECONDS
LOGS=$(mktemp -d)
export PATH=/usr/local/cuda/bin:$PATH
summary="$OUT/summary.txt"
: >"$summary"
left() { echo $((BUDGET - (SECONDS - T_START))); }
step() { # name, cap seconds, command...
  local name=$1 cap=$2; shift 2
  local t0=$SECONDS rem
  rem=$(( $(left) - 15 ))
  if [ "$rem" -lt 5 ]; then echo "$name: not run (budget spent)" | tee -a "$summary"; return 124; fi
  [ "$cap" -gt "$rem" ] && cap=$rem
  timeout -k 5 "$cap" "$@" >"$LOGS/$name.log" 2>&1
  local rc=$?
  echo "$name: rc=$rc ($((SECONDS - t0)) s, cap $cap s)" | tee -a "$summary"
  tail -n 4 "$LOGS/$name.log" | cut -c1-200 | sed 's/^/    /' | tee -a "$summary"
  return $rc
}
pack() {
  cp "$summary" "$LOGS/" 2>/dev/null
  tar czf "$OUT/gpu-logs.tar.gz" -C "$LOGS" .
  cp "$LOGS"/bench/seqk-bench.jsonl "$LOGS"/bench/peers-gpu.jsonl "$OUT/" 2>/dev/null || true
  cp "$LOGS"/bench-bf16/peers-gpu.jsonl "$OUT/peers-gpu-bf16.jsonl" 2>/dev/null || true
}
trap pack EXIT
PHASES=${PHASES:-build,ctest,pytest,bench,peers_bf16,peers,memcheck,racecheck,synccheck}
want() { [[ ",$PHASES," == *",$1,"* ]]; }
nvidia-smi >"$LOGS/nvidia-smi.txt" 2>&1 || true
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw \
  --format=csv | tee -a "$summary"
if want build; then
  step configure 60 cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release -DSEQK_CUDA=ON \
    -DSEQK_WERROR=ON -DCMAKE_CUDA_ARCHITECTURES="${SEQK_CUDA_ARCHITECTURES:-90}" || exit 1
  step build 180 cmake --build build/gpu -j"$(nproc)" || exit 1
fi
want ctest && step ctest 120 ctest --test-dir build/gpu --output-on-failure -j4
want bench && step bench 90 ./build/gpu/bench/seqk-bench --backend cuda --threads 16 \
  --out "$LOGS/bench"
# the Python package against the CUDA build (no network there, so no venv)
want pytest && step pytest 45 env SEQK_LIBRARY="$PWD/build/gpu/libseqk.so" \
  PYTHONPATH="$PWD/python-bindings" python3 -m pytest -q -x -p no:cacheprovider python-bindings/tests
if want peers || want peers_bf16; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    step fla-install 60 python3 -m pip install -q --no-index --no-deps --no-compile \
      --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  fi
  want peers_bf16 && step peers-bf16 "${PEERS_BF16_CAP:-150}" env \
    SEQK_LIBRARY="$PWD/build/gpu/libseqk.so" PYTHONUNBUFFERED=1 \
    python3 bench/peers_gpu.py --dtype bf16 --out "$LOGS/bench-bf16"
  want peers && step peers "${PEERS_CAP:-200}" env SEQK_LIBRARY="$PWD/build/gpu/libseqk.so" \
    PYTHONUNBUFFERED=1 python3 bench/peers_gpu.py --dtype f32 --out "$LOGS/bench"
fi
# sanitizers: the CUDA backend only (the CPU cases are covered by ASan in CI)
SAN_TESTS=${SAN_TESTS:-test_scan test_dtype_native test_linear_state test_linear_state_backward test_softmax_attention test_softmax_attention_backward test_selective_scan_backward test_deltanet test_deltanet_backward test_titans test_titans_backward}
for tool in memcheck racecheck synccheck; do
  want "$tool" || continue
  if [ "$tool" = memcheck ]; then list=${MEMCHECK_TESTS:-$(cd build/gpu/tests && ls test_*)}; else list=$SAN_TESTS; fi
  for t in $list; do
    [ -x "build/gpu/tests/$t" ] || continue
    step "san-$tool-$t" "${SAN_CAP:-25}" env SEQK_TEST_BACKEND=cuda \
      compute-sanitizer --tool "$tool" --error-exitcode 3 "build/gpu/tests/$t"
  done
done
echo "total $((SECONDS - T_START)) s; logs: gpu-logs.tar.gz" | tee -a "$summary"
