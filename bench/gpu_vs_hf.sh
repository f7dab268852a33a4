#!/usr/bin/env bash
# v3c's CUDA backend against HF transformers' DeepseekV3 on the same GPU, the
# same config (../shared/bench/bench_config.json) and the same tokens (B=4, T=1024):
# training throughput, forward + backward, in tokens/s, and their ratio.
#   bench/gpu_vs_hf.sh [BUILD_DIR] [ITERS]   (default build/release, 5; run from the repository root;
#   BUILD_DIR may instead hold prebuilt v3c and gpu_step, as on a GPU machine: tools/device/check.sh)
# It builds v3c and gpu_step (bench/gpu_step.c) in BUILD_DIR (Release), runs
#   gpu_step models/deepseek_v3.v3 --config CONFIG --batch 4 --seq 1024 --precision f32|bf16 [--attention exact]
#     (v3c, no optimizer: weights resident and only the loss downloaded, HF's work; then every weight
#     uploaded and gradient downloaded; bf16: the GEMMs on bf16 operands, passes/bf16.h; attention
#     through cuBLASLt GEMMs, and once more in bf16 by the bit-exact fp64 kernels, to show what they cost)
#   python3 ../shared/bench/hf_peer.py CONFIG --batch 4 --seq 1024           (torch, bf16, no optimizer)
#   v3c train models/deepseek_v3.v3 --config CONFIG --batch 4 --seq 1024 --backend cuda --steps 3 --bf16
# (the whole train step: uploads, host AdamW, logging; for reference) and prints the table.
# Without a GPU it says so and exits 1 before building or printing any number.
set -euo pipefail
build=${1:-build/release}
iters=${2:-5}
config=../shared/bench/bench_config.json
peer=../shared/bench/hf_peer.py
batch=4
seq=1024

die() {
  echo "gpu_vs_hf: $*" >&2
  exit 1
}

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
  die "no NVIDIA GPU here (nvidia-smi lists none); this benchmark runs only on a GPU machine"
fi
[ -f "$config" ] || die "missing $config"
[ -f "$peer" ] || die "missing $peer"

# A folder of prebuilt binaries (tools/device/pack.sh's .device/bin: the GPU machines have no flex,
# bison, OpenBLAS or MPI to build with) is used as it is; a build folder is built.
if [ -f "$build/CMakeCache.txt" ] || [ ! -x "$build/gpu_step" ]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  ninja -C "$build" v3c gpu_step >/dev/null
fi

tmp=$(mktemp -d)
tokens_per_s() {
  python3 -c 'import json, sys; print(round(json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])["train_tokens_per_s"]))' "$1"
}
v3c_step() { # PRECISION ATTENTION
  "$build/gpu_step" models/deepseek_v3.v3 --config "$config" --batch $batch --seq $seq --iters "$iters" \
    --precision "$1" --attention "$2" >"$tmp/v3c_$1_$2.json" ||
    die "v3c's CUDA step ($1, $2 attention) failed (above)"
  echo "v3c, $1, $2 attention: $(tokens_per_s "$tmp/v3c_$1_$2.json") train tokens/s" >&2
}
# The two runs the ratio needs go first, each reported as it ends, so a run cut short by a time
# limit (tools/device/check.sh gives this 200 s) still shows both throughputs.
v3c_step bf16 gemm
python3 "$peer" "$config" --batch $batch --seq $seq >"$tmp/hf.json" || die "the HF peer failed (above)"
hf_tps=$(tokens_per_s "$tmp/hf.json") v3c_tps=$(tokens_per_s "$tmp/v3c_bf16_gemm.json")
echo "HF transformers, bf16: $hf_tps train tokens/s; v3c / HF: $(python3 -c "print(f'{$v3c_tps / $hf_tps:.3f}')")" >&2
v3c_step f32 gemm
v3c_step bf16 exact
"$build/v3c" train models/deepseek_v3.v3 --config "$config" --batch $batch --seq $seq --backend cuda --steps 3 --bf16 \
  --log "$tmp/train.jsonl" >"$tmp/train.out" || die "v3c train --backend cuda --bf16 failed (above)"

python3 - "$tmp/v3c_f32_gemm.json" "$tmp/v3c_bf16_gemm.json" "$tmp/v3c_bf16_exact.json" "$tmp/hf.json" \
  "$tmp/train.jsonl" <<'EOF'
import json, statistics, sys
last = lambda path: json.loads(open(path).read().strip().splitlines()[-1])
runs = {"fp32": last(sys.argv[1]), "bf16 GEMMs": last(sys.argv[2]), "bf16 GEMMs, exact fp64 attention": last(sys.argv[3])}
hf = last(sys.argv[4])
steps = [json.loads(l) for l in open(sys.argv[5]) if l.strip()]
train = statistics.median(s["tokens_per_s"] for s in steps[1:] or steps)  # step 1 includes warm-up
h = hf["train_tokens_per_s"]
v3c = runs["bf16 GEMMs"]
print(f"GPU: {hf['gpu']}; config ../shared/bench/bench_config.json, B={v3c['batch']}, T={v3c['seq']}")
print("| engine | what is timed | precision | train tokens/s |")
print("|---|---|---|---|")
print(f"| HF transformers {hf['transformers']} (torch {hf['torch']}) | forward + backward, median of 10 | bf16 | {h:.0f} |")
for prec, r in runs.items():
    n = r.get('iters', 'N')
    print(f"| v3c --backend cuda, weights resident | forward + backward, token ids up ({r['upload_mib']:.2f} MiB), loss down, "
          f"gradients left on the device, median of {n} | {prec} | {r['train_tokens_per_s']:.0f} |")
    print(f"| v3c --backend cuda, weights resident, device time only (CUDA events) | same step | {prec} | {r['event_tokens_per_s']:.0f} |")
    print(f"| v3c --backend cuda, full traffic | same, plus every weight up ({r['full_upload_mib']:.0f} MiB) and every "
          f"gradient down ({r['full_download_mib']:.0f} MiB), pageable memory, median of {n} | {prec} | {r['full_tokens_per_s']:.0f} |")
print(f"| v3c train --backend cuda --bf16 | whole step with host AdamW, median of steps 2-3 | bf16 GEMMs | {train:.0f} |")
print(f"ratio v3c / HF (forward + backward, weights resident, bf16 GEMMs): {v3c['train_tokens_per_s'] / h:.3f}")
print(f"v3c: prepare {v3c['prepare_s']:.1f} s ({v3c['kernels']} kernels: {v3c['compiled']} compiled, {v3c['cached']} cached), "
      f"{v3c['launches']} launches + {v3c['library_calls']} cuBLASLt calls per step, {v3c['device_gib']:.1f} GiB on the device "
      f"(values: a {v3c['arena_gib']:.1f} GiB arena shared by liveness, {v3c['values_gib']:.1f} GiB as one buffer each)")
EOF
