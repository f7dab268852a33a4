#!/usr/bin/env bash
# The test job: the parser fuzzers for a bounded time, every Check suite under
# ASan+UBSan, then every suite on the optimised build (its ctest summary is last).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh
jobs=$(nproc)
# Builds quietly; on failure shows the compiler's output.
quiet() { local log; log=$(mktemp); "$@" >"$log" 2>&1 || { tail -n 60 "$log"; rm -f "$log"; exit 1; }; rm -f "$log"; }
echo "== building (ASan+UBSan debug, release)"
# Both builds' suites share one kernel cache and one emulation cache (content-keyed), so
# the second run takes every cubin and CPU object from the first; only the emulated CUDA
# kernels are built again, as the sanitized suites instrument theirs (tests/testutil.c).
caches=(-DV3C_TEST_KERNEL_CACHE="$PWD/build/kernel-cache" -DV3C_TEST_EMU_CACHE="$PWD/build/emu-cache")
quiet cmake -S . -B build/asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DV3C_SANITIZE=ON -DV3C_TESTS=ON "${caches[@]}"
quiet ninja -C build/asan -j "$jobs"
quiet cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release -DV3C_TESTS=ON "${caches[@]}"
quiet ninja -C build/release -j "$jobs"
echo "== fuzzing (bounded)"
fuzz/run.sh build/fuzz "${V3C_FUZZ_SECONDS:-20}"
# A crash of LeakSanitizer's own tracer is not a test failure: see the file.
source tools/lsan_tracer_crash.sh
sanitized_suites() {
  local log status=0; log=$(mktemp)
  (cd build/asan && ctest --output-on-failure -j "$jobs") 2>&1 | tee "$log" || status=$?
  if [ "$status" -ne 0 ] && lsan_tracer_crash_only "$log"; then
    echo "== LeakSanitizer's tracer crashed (no test failed): running the failed suites once more"
    status=0
    (cd build/asan && ctest --output-on-failure --rerun-failed) || status=$?
  fi
  rm -f "$log"
  return "$status"
}
echo "== tests under ASan+UBSan"
sanitized_suites
echo "== tests (release build)"
cd build/release && ctest --output-on-failure -j "$jobs"
