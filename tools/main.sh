#!/usr/bin/env bash
# The main job: build v3c, show the bundled small model's IR summary and parameter
# counts, then train it on the bundled corpus with a progress line and a loss
# summary, on the default backend (cuda where a GPU answers, else cpu: LLVM-generated
# kernels and OpenBLAS GEMMs; the summary line names it).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh
cmake -S . -B build/main -G Ninja -DCMAKE_BUILD_TYPE=Release -DV3C_TESTS=OFF >/dev/null
ninja -C build/main v3c >/dev/null
echo "== v3c stats models/tiny.v3"
build/main/v3c stats models/tiny.v3
echo "== v3c eval models/tiny.v3 (untrained: IR summary and loss on data/kjv.txt)"
build/main/v3c eval models/tiny.v3 --data data/kjv.txt
echo "== v3c train models/tiny.v3 --steps 300 (log: build/train.jsonl, checkpoint: build/tiny-trained)"
rm -rf build/tiny-trained
build/main/v3c train models/tiny.v3 --data data/kjv.txt --steps 300 \
  --log build/train.jsonl --save build/tiny-trained "$@"
