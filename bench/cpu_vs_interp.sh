#!/usr/bin/env bash
# A training step (forward + backward) on the interpreter and on the cpu backend, side by side:
# the bundled models/tiny.v3 at `v3c train`'s default B=4, T=64, and bench/cpu_large.v3
# (hidden 256, 6 layers, 8 heads) at B=4, T=128.
#   bench/cpu_vs_interp.sh [BUILD_DIR] [ITERS]   (default build/release, 5; run from the repository root)
set -euo pipefail
build=${1:-build/release}
iters=${2:-5}
ninja -C "$build" cpu_vs_interp >/dev/null
echo "| model | size | plan | compile | interp step | cpu step | speed-up |"
echo "|---|---|---|---|---|---|---|"
"$build/cpu_vs_interp" models/tiny.v3 --batch 4 --seq 64 --iters "$iters"
"$build/cpu_vs_interp" bench/cpu_large.v3 --batch 4 --seq 128 --iters "$iters"
