#!/usr/bin/env bash
# Builds bench/cpu_vs_interp.c against a release build and prints the interp vs cpu table.
#   bench/cpu_vs_interp.sh [BUILD_DIR]   (default build/release; run from the repository root)
set -euo pipefail
build=${1:-build/release}
cc -O2 -std=c11 -D_GNU_SOURCE -o "$build/cpu_vs_interp" bench/cpu_vs_interp.c \
  "$build/libv3c_frontend.a" "$build/libv3c_runtime.a" "$build/codegen/libv3c_codegen.a" "$build/libv3c_ir.a" \
  "$build/libv3c_base.a" $(llvm-config-14 --ldflags --libs core orcjit native passes) -lopenblas -lpthread -lm
echo "| model | size | plan | compile | interp forward | cpu forward | speed-up |"
echo "|---|---|---|---|---|---|---|"
"$build/cpu_vs_interp" models/tiny.v3 --batch 8 --seq 64 --iters 3
"$build/cpu_vs_interp" models/tiny.v3 --set hidden_size=256,intermediate_size=512,moe_intermediate_size=128,num_hidden_layers=6 --batch 8 --seq 64 --iters 2
