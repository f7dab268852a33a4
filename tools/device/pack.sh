#!/usr/bin/env bash
# Packs .device/ (ignored by git) for tools/device/check.sh on a lent GPU machine. Its image has
# CUDA, cmake, gcc and torch but no flex, bison, LLVM, Check, OpenBLAS or MPI, and ../shared does
# not travel; so the binaries are built here (-DV3C_LLVM=OFF: the GPU run needs no CPU kernels)
# and travel with the shared libraries they load beyond the C and C++ runtimes (gzipped: the
# 64 MiB limit on what travels), the golden tiny model, the peer benchmark, and the CPU reference
# of the bf16 training curve (made here with the release build, which has the cpu backend).
#   tools/device/pack.sh        from the repository root; then, through the device tool:
#   run(command="tools/device/check.sh", carry=[".device"], timeout_s=580)
set -euo pipefail
cd "$(dirname "$0")/../.."
build=build/device kit=.device steps=${V3C_DEVICE_STEPS:-300}
quiet() { local log; log=$(mktemp); "$@" >"$log" 2>&1 || { tail -n 40 "$log"; rm -f "$log"; exit 1; }; rm -f "$log"; }

echo "== building $build (release, no LLVM) and build/release"
quiet cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DV3C_LLVM=OFF -DV3C_TESTS=ON
quiet ninja -C "$build" v3c gpu_step test_cuda_exec test_comm
quiet cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release -DV3C_TESTS=ON
quiet ninja -C build/release v3c

rm -rf "$kit"
mkdir -p "$kit/bin" "$kit/lib" "$kit/shared/golden" "$kit/shared/bench" "$kit/ref"
bins=("$build/v3c" "$build/gpu_step" "$build/tests/test_cuda_exec" "$build/tests/test_comm")
cp "${bins[@]}" "$kit/bin/"
# Every library the binaries load except the C and C++ runtimes, which the image has (newer).
ldd "${bins[@]}" | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u |
  grep -Ev '/(libc|libm|libdl|libpthread|librt|libgcc_s|libstdc\+\+|ld-linux[^/]*)\.so' |
  while read -r lib; do cp -L "$lib" "$kit/lib/"; done
tar -C "$kit" -czf "$kit/lib.tar.gz" lib
rm -r "$kit/lib"
cp -r ../shared/golden/tiny "$kit/shared/golden/"
cp ../shared/bench/* "$kit/shared/bench/"

echo "== the CPU reference: v3c train models/tiny.v3 --backend cpu --bf16 --steps $steps"
quiet build/release/v3c train models/tiny.v3 --backend cpu --bf16 --steps "$steps" --log "$kit/ref/cpu_bf16.jsonl"
echo "$steps" >"$kit/ref/steps"
echo "== .device: $(du -sh "$kit" | cut -f1) ($(ls "$kit/bin" | tr '\n' ' '); libraries: $(tar -tzf "$kit/lib.tar.gz" | grep -c '\.so'))"
