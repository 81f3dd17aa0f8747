#!/usr/bin/env bash
# Runs seqk's CUDA kernels on the CPU through a small emulator (see README.md
# beside this script): converts gpu/*.cu into C++ that calls the emulator,
# builds the library and the test programs against it, and runs every test
# program with SEQK_TEST_BACKEND=cuda. No GPU and no nvcc needed; no
# substitute for a GPU either (no timing, no memory model, no PTX).
#
#   tools/cuda_emu/run.sh [build-dir]      default build/cuda-emu
#   EMU_ORDER=fwd|rev|rand                 order of blocks and of threads at a barrier
#   EMU_RESIDENT=N                         N blocks of a grid resident at once, interleaved
#                                          (unset: one at a time; test_scan is run once more
#                                          with EMU_RESIDENT=8 EMU_ORDER=rand either way)
#   EMU_WATCHDOG=S                         stop a fiber that runs S s without yielding (60; 0 off)
#   EMU_ASAN=1                             build everything with AddressSanitizer
#   EMU_TESTS="scan titans"                a subset of the test programs
#   EMU_BENCH=1                            also run seqk-bench --quick --backend cuda (the
#                                          bench's CUDA code paths; its timings mean nothing)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
EMU="$ROOT/tools/cuda_emu"
OUT=$(mkdir -p "${1:-$ROOT/build/cuda-emu}" && cd "${1:-$ROOT/build/cuda-emu}" && pwd)
TESTS=${EMU_TESTS:-"core dtype dtype_native scan selective_scan softmax_attention linear_state deltanet titans linear_state_backward softmax_attention_backward selective_scan_backward deltanet_backward titans_backward regressions decay_precision"}
JOBS=$(nproc 2>/dev/null || echo 2)

SAN=()
[ "${EMU_ASAN:-0}" = 1 ] && SAN=(-fsanitize=address -fno-omit-frame-pointer)
CFLAGS=(-O2 -g -mavx2 -mfma -fopenmp -DSEQK__HAVE_CUDA=1 -I"$ROOT/include" "${SAN[@]}")
CXXFLAGS=(-std=c++17 -O1 -g -fopenmp -DSEQK__HAVE_CUDA=1 -I"$EMU/include" -I"$ROOT/include"
          -iquote "$ROOT/gpu" -w "${SAN[@]}")

mkdir -p "$OUT/gpu" "$OUT/obj"
rm -f "$OUT"/obj/*.o
# 1. The CUDA sources, converted (launches, __shared__, workspace poisoning).
for f in "$ROOT"/gpu/*.cu "$ROOT"/gpu/*.cuh; do
    python3 "$EMU/convert.py" "$f" "$OUT/gpu/$(basename "$f")"
done

# 2. Everything compiled: the emulator, the converted kernels, the C library
#    with its CUDA dispatch on, and the tests with their float64 references.
jobs=()
jobs+=("g++ ${CXXFLAGS[*]} -c $EMU/emu.cpp -o $OUT/obj/emu_runtime.o")
jobs+=("gcc -c $EMU/ctxsw.S -o $OUT/obj/emu_ctxsw.o")
for f in "$OUT"/gpu/*.cu; do
    jobs+=("g++ ${CXXFLAGS[*]} -x c++ -c $f -o $OUT/obj/gpu_$(basename "$f" .cu).o")
done
for f in "$ROOT"/core/*.c "$ROOT"/scan/*.c "$ROOT"/attention/*.c "$ROOT"/ssm/*.c; do
    d=$(basename "$(dirname "$f")")
    jobs+=("gcc -std=c11 ${CFLAGS[*]} -c $f -o $OUT/obj/lib_${d}_$(basename "$f" .c).o")
done
for f in "$ROOT"/tests/*.c "$ROOT"/tests/ref/*.c; do
    jobs+=("gcc -std=c11 ${CFLAGS[*]} -I$ROOT/tests -c $f -o $OUT/obj/t_$(basename "$f" .c).o")
done
if [ "${EMU_BENCH:-0}" = 1 ]; then
    for f in "$ROOT"/bench/*.c; do
        jobs+=("gcc -std=c11 ${CFLAGS[*]} -D_POSIX_C_SOURCE=200809L -DSEQK_BENCH_HAVE_CBLAS=0 -DSEQK_BENCH_HAVE_OPENBLAS=0 -c $f -o $OUT/obj/b_$(basename "$f" .c).o")
    done
fi
printf '%s\n' "${jobs[@]}" | xargs -P "$JOBS" -I{} sh -c '{}'

# The emulator's cuBLAS (include/cublas_v2.h) against plain loops, first.
g++ -std=c++17 -O1 -g "${SAN[@]}" -I"$EMU/include" -o "$OUT/test_cublas" "$EMU/test_cublas.cpp"
"$OUT/test_cublas" >"$OUT/test_cublas.log" 2>&1 ||
    { tail -20 "$OUT/test_cublas.log"; echo "cuda_emu: test_cublas FAILED" >&2; exit 1; }
echo "cublas (emulator) $(tail -1 "$OUT/test_cublas.log")"

LIBOBJ=("$OUT"/obj/emu_*.o "$OUT"/obj/gpu_*.o "$OUT"/obj/lib_*.o)
TESTLIB=("$OUT"/obj/t_harness.o "$OUT"/obj/t_fixtures.o "$OUT"/obj/t_ref_*.o)
for t in $TESTS; do
    g++ "${SAN[@]}" -fopenmp -o "$OUT/test_$t" "$OUT/obj/t_test_$t.o" "${TESTLIB[@]}" "${LIBOBJ[@]}" -lm
done

if [ "${EMU_BENCH:-0}" = 1 ]; then
    g++ "${SAN[@]}" -fopenmp -o "$OUT/seqk-bench" "$OUT"/obj/b_*.o "${LIBOBJ[@]}" -lm
fi

# 3. Run: one program per core at a time, each log kept, a summary at the end.
export SEQK_TEST_BACKEND=cuda EMU_ORDER=${EMU_ORDER:-fwd}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:detect_stack_use_after_return=0}
export OMP_NUM_THREADS=1
run_one() {
    local t=$1 s=$SECONDS rc=0
    "$OUT/test_$t" >"$OUT/test_$t.log" 2>&1 || rc=$?
    echo "$t rc=$rc $((SECONDS - s))s $(tail -1 "$OUT/test_$t.log")"
    return 0
}
export -f run_one
export OUT
printf '%s\n' $TESTS | xargs -P "$JOBS" -I{} bash -c 'run_one {}' | tee "$OUT/summary.txt"
if grep -qv ' rc=0 ' "$OUT/summary.txt"; then
    echo "cuda_emu: FAILED (logs in $OUT/test_*.log)" >&2
    exit 1
fi
# 4. The look-back of gpu/scan.cu against unfinished predecessors: test_scan
#    again with 8 blocks resident at once, in a random order (README.md).
if [[ " $TESTS " == *" scan "* ]] && [ -z "${EMU_RESIDENT:-}" ]; then
    s=$SECONDS rc=0
    EMU_RESIDENT=8 EMU_ORDER=rand "$OUT/test_scan" >"$OUT/test_scan_resident.log" 2>&1 || rc=$?
    echo "scan (EMU_RESIDENT=8 EMU_ORDER=rand) rc=$rc $((SECONDS - s))s $(tail -1 "$OUT/test_scan_resident.log")"
    [ "$rc" = 0 ] || { echo "cuda_emu: FAILED (log in $OUT/test_scan_resident.log)" >&2; exit 1; }
fi
if [ "${EMU_BENCH:-0}" = 1 ]; then
    echo "== seqk-bench --quick --backend cuda (emulated: the code paths, not the timings)"
    "$OUT/seqk-bench" --quick --backend cuda --out "$OUT/bench" >"$OUT/bench.log" 2>&1 ||
        { tail -20 "$OUT/bench.log"; echo "cuda_emu: seqk-bench FAILED" >&2; exit 1; }
    grep -c '"backend":"cuda"' "$OUT"/bench/*.jsonl | sed 's/^/cuda records: /'
fi
echo "cuda_emu: all test programs pass on the emulated CUDA backend (order $EMU_ORDER${EMU_RESIDENT:+, $EMU_RESIDENT resident blocks})"
