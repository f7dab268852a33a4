#!/usr/bin/env bash
# The main job: build v3c, compile the bundled small model, show its IR summary and
# parameter counts, and measure its loss on the bundled corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release -DV3C_TESTS=OFF >/dev/null
ninja -C build/release v3c >/dev/null
echo "== v3c stats models/tiny.v3"
build/release/v3c stats models/tiny.v3
echo "== v3c eval models/tiny.v3 (forward on data/kjv.txt)"
build/release/v3c eval models/tiny.v3 --data data/kjv.txt --batch 4 --seq 64 "$@"
