#!/usr/bin/env bash
# Sanitizer and fuzzing pass (docs/reliability.md), run by CI after scripts/test.sh.
#
#   1. builds temper with clang, ASan + UBSan and libFuzzer coverage into build-asan/
#      (cmake/TemperSanitizers.cmake: TEMPER_FUZZ=ON), separate from the Release build/;
#   2. runs the whole unit/parity test binary under ASan + UBSan (any report fails it);
#   3. runs the crash-safety and resource-failure tests (also sanitized);
#   4. replays every fuzz target over its committed regressions and its seed corpus;
#   5. fuzzes each target for TEMPER_FUZZ_SECONDS (default 60) from its seeds.
#
# Environment: TEMPER_FUZZ_SECONDS (0 skips step 5), TEMPER_ASAN_BUILD_DIR (default build-asan),
# TEMPER_FUZZ_TARGETS (space-separated subset), TEMPER_SANITIZE_SKIP_TESTS=1 (steps 4-5 only).
# Each step prints its wall time; the script fails on the first failing step.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build="${TEMPER_ASAN_BUILD_DIR:-$root/build-asan}"
fuzz_seconds="${TEMPER_FUZZ_SECONDS:-60}"
jobs="$(nproc)"

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

step_start=0
step() { step_start=$(date +%s); echo "== sanitize: $*"; }
step_done() { echo "== sanitize: done in $(( $(date +%s) - step_start )) s"; }

step "dependencies (scripts/deps.sh, clang-14, compiler-rt, llvm-symbolizer)"
"$root/scripts/deps.sh"
missing=()
for p in clang-14 libclang-rt-14-dev llvm-14; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "sanitize: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
step_done

step "configure + build ($build)"
# The CUDA kernels are left out: nvcc would not take the sanitizer flags, and no GPU runs here.
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 \
  -DTEMPER_FUZZ=ON -DTEMPER_BUILD_KERNELS=OFF -DTEMPER_BUILD_EXAMPLES=OFF \
  -DTEMPER_SENTENCEPIECE_ROOT="$root/.deps/sentencepiece" >/dev/null
cmake --build "$build" --target temper_tests temper_crash_writer fuzz_all -- -j "$jobs"
step_done

# ASan/UBSan settings. Leak checking is off: libtorch and the libraries it loads keep global
# allocations alive to exit, which LeakSanitizer would report on every test (docs/reliability.md).
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1:symbolize=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export ASAN_SYMBOLIZER_PATH="${ASAN_SYMBOLIZER_PATH:-$(command -v llvm-symbolizer-14 || command -v llvm-symbolizer || true)}"
export OMP_NUM_THREADS=1

if [ "${TEMPER_SANITIZE_SKIP_TESTS:-0}" != 1 ]; then
  step "test suite under ASan + UBSan"
  # One process for all cases (per-case processes would pay the sanitized startup ~400 times).
  # [cuda] cases skip without a GPU.
  (cd "$build" && ./tests/temper_tests --order decl --reporter compact "~[cuda]")
  step_done

  step "crash safety (SIGKILL during checkpoint writes) and resource failures"
  (cd "$build" && ctest --output-on-failure -V -L reliability | grep -E "^[0-9]+: (reference|[0-9]+ kills|FAIL)|tests passed|tests failed")
  step_done
fi

step "fuzz: replay regressions and seeds"
(cd "$build" && ctest --output-on-failure -j "$jobs" -L fuzz)
step_done

if [ "$fuzz_seconds" -gt 0 ]; then
  targets="${TEMPER_FUZZ_TARGETS:-$(cat "$build/tests/fuzz/targets.txt")}"
  for target in $targets; do
    step "fuzz: $target for $fuzz_seconds s"
    corpus="$build/fuzz-corpus/$target"
    mkdir -p "$corpus" "$build/fuzz-artifacts/$target"
    dict=()
    # Every input but a token shard is JSON or holds a JSON header.
    if [ "$target" != fuzz_token_shard ]; then dict=(-dict="$root/tests/fuzz/json.dict"); fi
    # New inputs go to the build's corpus (seeds are read, never written); a crash's input lands
    # in fuzz-artifacts/<target>/ and fails the script: commit it under
    # tests/fuzz/regressions/<target>/ with the fix. Scratch files live in /dev/shm when there is one.
    scratch_tmp=/tmp
    if [ -d /dev/shm ] && [ -w /dev/shm ]; then scratch_tmp=/dev/shm; fi
    log="$build/fuzz-artifacts/$target.log"
    set +e
    TMPDIR="$scratch_tmp" "$build/tests/fuzz/$target" "$corpus" "$build/fuzz-seeds/$target" \
      "${dict[@]}" -max_total_time="$fuzz_seconds" -timeout=20 -rss_limit_mb=4096 \
      -max_len=65536 -print_final_stats=1 \
      -artifact_prefix="$build/fuzz-artifacts/$target/" >"$log" 2>&1
    rc=$?
    set -e
    if [ "$rc" -ne 0 ]; then
      tail -n 80 "$log"
      echo "sanitize: $target failed (exit $rc); inputs in $build/fuzz-artifacts/$target/"
      exit 1
    fi
    grep -E "^(INFO: seed corpus|stat::number_of_executed_units|stat::new_units_added|Done )" "$log" || true
    step_done
  done
fi
echo "sanitize: all clean"
