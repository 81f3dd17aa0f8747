#!/usr/bin/env bash
# The libFuzzer harnesses of tests/fuzz (one per entry-point family, each
# with the float64 references as its oracle; see tests/fuzz/fuzz_common.h):
# builds them with clang (SEQK_FUZZ=ON: the library with coverage, ASan and
# UBSan) in build/fuzz and runs each for FUZZ_SECONDS (default 30) from its
# committed seed corpus tests/fuzz/corpus/<name> (new inputs go to
# build/fuzz/corpus/<name>, the committed one is only read). Fails on the
# first finding and leaves its reproducer in build/fuzz/findings/; replay it
# with build/fuzz/tests/fuzz/<name> <file> (SEQK_FUZZ_TRACE=1 prints the
# decoded call for fuzz_linear, fuzz_deltanet, fuzz_titans, fuzz_attention).
#
#   FUZZ_SECONDS=600 bash scripts/fuzz.sh          a longer local run
#   FUZZ_ONLY=fuzz_linear bash scripts/fuzz.sh     one harness (or a list:
#                                                  fuzz_linear,fuzz_titans)
#   FUZZ_MERGE=1 bash scripts/fuzz.sh              then fold the new inputs
#                                                  that add coverage into
#                                                  the committed seed corpus
#   FUZZ_CFLAGS=-DSEQK__LIN_BWD_FULL_BYTES=2048 FUZZ_BUILD_DIR=build/fuzz-small \
#     bash scripts/fuzz.sh                         the library built with extra
#                                                  C flags (scripts/test.sh:
#                                                  the backwards' byte limits
#                                                  made small, so that tiny
#                                                  shapes take the checkpointed
#                                                  and capped paths)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-30}
bdir=${FUZZ_BUILD_DIR:-build/fuzz}
cc=${FUZZ_CC:-clang}
jobs=$(nproc 2>/dev/null || echo 2)

if ! command -v "$cc" >/dev/null 2>&1; then
  echo "fuzz.sh: $cc not found (install clang and its libFuzzer runtime, e.g. apt-get install clang libclang-rt-dev libomp-dev)" >&2
  exit 2
fi
cmake -S . -B "$bdir" -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSEQK_CUDA=OFF \
  -DSEQK_FUZZ=ON -DSEQK_BUILD_TESTS=OFF -DSEQK_BUILD_BENCH=OFF -DSEQK_WERROR=ON \
  -DCMAKE_C_FLAGS="${FUZZ_CFLAGS:-}" >/dev/null
cmake --build "$bdir" -j"$jobs"

mkdir -p "$bdir/findings"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
for exe in "$bdir"/tests/fuzz/fuzz_*; do
  [ -x "$exe" ] && [ -f "$exe" ] || continue
  name=$(basename "$exe")
  if [ -n "${FUZZ_ONLY:-}" ]; then
    case " ${FUZZ_ONLY//,/ } " in *" $name "*) ;; *) continue ;; esac
  fi
  seeds=tests/fuzz/corpus/$name
  work=$bdir/corpus/$name
  mkdir -p "$work" "$seeds"
  echo "== $name: ${secs} s from $(ls "$seeds" | wc -l) seeds =="
  if ! "$exe" -max_total_time="$secs" -max_len=512 -timeout=20 -rss_limit_mb=4096 \
      -print_final_stats=1 -artifact_prefix="$bdir/findings/$name-" "$work" "$seeds" \
      >"$bdir/$name.log" 2>&1; then
    echo "fuzz.sh: $name found a problem (reproducer in $bdir/findings/); the end of its log:" >&2
    tail -n 40 "$bdir/$name.log" >&2
    status=1
    break
  fi
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$bdir/$name.log" | tr '\n' ' '
  echo
  if [ "${FUZZ_MERGE:-0}" = 1 ]; then
    "$exe" -merge=1 -max_len=512 "$seeds" "$work" >/dev/null 2>&1
  fi
done
exit $status
