#!/usr/bin/env bash
# Every test of seqk: build (CUDA backend compiled when a toolkit is present),
# run the CTest suite on every backend (a backend without a device reports its
# cases as skipped), then build and run the suite again under
# AddressSanitizer + UndefinedBehaviorSanitizer (CPU backend), and run the
# CUDA backend's kernels through the CPU emulator of tools/cuda_emu (their
# logic, barriers and shared-memory sizes, and gpu/scan.cu's look-back once
# more with 8 blocks resident at once; no substitute for a GPU run, which is
# scripts/gpu_check.sh). SEQK_TEST_EMU=0 skips the emulator (~6 minutes on
# two cores).
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(bash scripts/setup.sh)"
jobs=$(nproc 2>/dev/null || echo 2)

echo "== build (Release, SEQK_CUDA=${SEQK_CUDA:-AUTO}, warnings are errors) =="
cmake -S . -B build/test -DCMAKE_BUILD_TYPE=Release -DSEQK_CUDA="${SEQK_CUDA:-AUTO}" -DSEQK_WERROR=ON
cmake --build build/test -j"$jobs"
echo "== tests =="
ctest --test-dir build/test --output-on-failure -j1
echo "== Python bindings (pytest, against build/test/libseqk.so) =="
bash python-bindings/run_tests.sh build/test/libseqk.so

echo "== build (AddressSanitizer + UndefinedBehaviorSanitizer, CPU) =="
cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSEQK_CUDA=OFF -DSEQK_SANITIZE=ON \
  -DSEQK_BUILD_BENCH=OFF -DSEQK_WERROR=ON
cmake --build build/asan -j"$jobs"
echo "== tests under sanitizers =="
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build/asan --output-on-failure -j1

# The backwards keep every chunk state of a sequence (and DeltaNet its chunk
# products) only up to a byte limit per thread, and walk several heads at
# once only within it; past it they checkpoint and recompute. Real shapes
# cross those limits at T in the thousands, the tests' shapes never do, so
# this build makes the limits tiny (a state of 2 x 2 floats already
# checkpoints) and runs the suite again: the gradients, determinism and
# queried workspaces of the checkpointed and capped paths (the linear-state
# engine's staged drivers, forward and backward, DeltaNet's split forward and
# its chunk-parallel backward run here in windows of a chunk or a few).
SMALL_LIMITS="-DSEQK__LIN_BWD_FULL_BYTES=64 -DSEQK__LIN_BWD_STAGED_BYTES=512 -DSEQK__DN_BWD_FULL_BYTES=64"
SMALL_LIMITS="$SMALL_LIMITS -DSEQK__DN_BWD_KEEP_BYTES=512 -DSEQK__TT_BWD_FULL_BYTES=128"
SMALL_LIMITS="$SMALL_LIMITS -DSEQK__LIN_FWD_WINDOW_BYTES=256 -DSEQK__DN_FWD_WINDOW_BYTES=256"
SMALL_LIMITS="$SMALL_LIMITS -DSEQK__DN_BWD_STAGED_BYTES=512"
echo "== build (CPU, the backwards' byte limits made small) =="
cmake -S . -B build/small-limits -DCMAKE_BUILD_TYPE=Release -DSEQK_CUDA=OFF -DSEQK_BUILD_BENCH=OFF \
  -DSEQK_WERROR=ON -DCMAKE_C_FLAGS="$SMALL_LIMITS" >/dev/null
cmake --build build/small-limits -j"$jobs"
echo "== tests with small byte limits =="
ctest --test-dir build/small-limits --output-on-failure -j1 -E "install_consumer|mpi"

# ThreadSanitizer: tests/test_threads (several caller threads, each with its
# own context) built with clang -fsanitize=thread and its libomp (gcc's
# libgomp gives false reports); tests/tsan.supp drops libomp's own
# allocator calls. SEQK_TEST_TSAN=0 skips.
if [ "${SEQK_TEST_TSAN:-1}" = 0 ]; then
  echo "== ThreadSanitizer skipped (SEQK_TEST_TSAN=0) =="
elif command -v clang >/dev/null 2>&1; then
  echo "== ThreadSanitizer (clang, test_threads) =="
  cmake -S . -B build/tsan -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSEQK_CUDA=OFF \
    -DSEQK_BUILD_BENCH=OFF -DCMAKE_C_FLAGS=-fsanitize=thread -DCMAKE_EXE_LINKER_FLAGS=-fsanitize=thread \
    -DCMAKE_SHARED_LINKER_FLAGS=-fsanitize=thread >/dev/null
  cmake --build build/tsan -j"$jobs" --target test_threads
  TSAN_OPTIONS="halt_on_error=1 suppressions=$PWD/tests/tsan.supp" build/tsan/tests/test_threads
else
  echo "== ThreadSanitizer skipped (no clang) =="
fi

# The libFuzzer harnesses (tests/fuzz), FUZZ_SECONDS (default 30) each from
# the committed seed corpus; any finding fails. Needs clang with libFuzzer.
if [ "${SEQK_TEST_FUZZ:-1}" = 0 ]; then
  echo "== fuzzers skipped (SEQK_TEST_FUZZ=0) =="
elif command -v clang >/dev/null 2>&1 && printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { (void)d; (void)n; return 0; }\n' |
    clang -fsanitize=fuzzer,address,undefined -x c - -o /tmp/seqk_fuzz_probe.$$ >/dev/null 2>&1; then
  rm -f /tmp/seqk_fuzz_probe.$$
  echo "== fuzzers (libFuzzer + ASan + UBSan, ${FUZZ_SECONDS:-30} s each) =="
  bash scripts/fuzz.sh
  echo "== fuzzers of the backwards with small byte limits (${FUZZ_SECONDS_SMALL:-20} s each) =="
  FUZZ_SECONDS=${FUZZ_SECONDS_SMALL:-20} FUZZ_BUILD_DIR=build/fuzz-small FUZZ_CFLAGS="$SMALL_LIMITS" \
    FUZZ_ONLY=fuzz_linear,fuzz_deltanet,fuzz_titans bash scripts/fuzz.sh
else
  echo "== fuzzers skipped (no clang with libFuzzer: apt-get install clang libclang-rt-dev libomp-dev) =="
fi

if [ "${SEQK_TEST_EMU:-1}" != 0 ] && [ "$(uname -m)" = x86_64 ] && command -v g++ >/dev/null; then
  echo "== CUDA kernels on the CPU emulator (tools/cuda_emu, EMU_BENCH=1) =="
  EMU_BENCH=1 bash tools/cuda_emu/run.sh build/cuda-emu
else
  echo "== CUDA emulator skipped (SEQK_TEST_EMU=0, not x86-64, or no g++) =="
fi
