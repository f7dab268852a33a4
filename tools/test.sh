#!/usr/bin/env bash
# The test job: the parser fuzzers for a bounded time, every Check suite under
# ASan+UBSan, then every suite on the optimised build (its ctest summary is last).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh
jobs=$(nproc)
cmake -S . -B build/asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DV3C_SANITIZE=ON >/dev/null
ninja -C build/asan -j "$jobs" >/dev/null
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C build/release -j "$jobs" >/dev/null
echo "== fuzzing (bounded)"
fuzz/run.sh build/fuzz "${V3C_FUZZ_SECONDS:-20}"
echo "== tests under ASan+UBSan"
(cd build/asan && ctest --output-on-failure -j "$jobs")
echo "== tests (release build)"
cd build/release && ctest --output-on-failure -j "$jobs"
