#!/usr/bin/env bash
# Every GPU check issue 5 asks for, in one call on a lent GPU machine, from the repository root,
# with .device carried (tools/device/pack.sh made it here):
#   run(command="tools/device/check.sh", carry=[".device"], timeout_s=580)
# Each step runs under its own time limit, so one that hangs leaves time to the others, and
# writes its log to $OUT; $OUT/summary.txt says what passed, with each log's last lines:
#   1. tests: test_cuda_exec's device cases (tiny.v3 forward against the interpreter, bf16,
#      FP8 scale layouts, the general strided GEMM on cuBLASLt), and test_comm's NCCL case at
#      world size 1 (issue 6); a case that skips (no GPU answered, no libnccl) fails the step;
#   2. golden: `v3c run --backend cuda --grads` on ../shared/golden/tiny in fp32 (forward, MTP,
#      every gradient) at the golden README's tolerances;
#   3. curve: `v3c train models/tiny.v3 --backend cuda --bf16` against the CPU's bf16 curve;
#   4. bench: bench/gpu_vs_hf.sh (v3c and HF transformers side by side, and their ratio);
#   5. kernels: every kernel compiled above (.cu, .ptx, .cubin) with its SASS from nvdisasm, in
#      $OUT/kernels.tar.gz, for reading what the GPU ran.
set -uo pipefail
cd "$(dirname "$0")/../.."
kit=.device out=${OUT:-/tmp/v3c-device-out}
mkdir -p "$out"
summary="$out/summary.txt"
: >"$summary"
say() { echo "$*" | tee -a "$summary"; }

# step NAME SECONDS COMMAND...: runs it into $out/NAME.log and says how it ended.
step() {
  local name=$1 limit=$2 start rc
  shift 2
  start=$(date +%s)
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  rc=$?
  case $rc in 0) verdict=passed ;; 124) verdict="TIMED OUT after $limit s" ;; *) verdict="FAILED (exit $rc)" ;; esac
  say "== $name: $verdict in $(($(date +%s) - start)) s"
  tail -n 12 "$out/$name.log" | sed 's/^/   /' >>"$summary"
}

[ -f "$kit/lib.tar.gz" ] || { say "no $kit/lib.tar.gz: run tools/device/pack.sh here and carry .device"; exit 1; }
mkdir -p /tmp/v3c-kit && tar -C /tmp/v3c-kit -xzf "$kit/lib.tar.gz"
export LD_LIBRARY_PATH=/tmp/v3c-kit/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export V3C_CACHE_DIR=/tmp/v3c-kit/cache
# The tests and the golden read ../shared, which does not travel.
[ -e ../shared/golden/tiny/expected.safetensors ] || ln -sfn "$PWD/$kit/shared" ../shared ||
  { say "cannot link ../shared to $kit/shared"; exit 1; }
say "GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)"
say "kit: $(ls "$kit/bin" | tr '\n' ' ')"

golden() {
  "$kit/bin/v3c" run models/deepseek_v3.v3 --checkpoint ../shared/golden/tiny \
    --input ../shared/golden/tiny/expected.safetensors --output /tmp/v3c-kit/golden.safetensors --backend cuda --grads &&
    python3 tools/device/compare.py golden ../shared/golden/tiny/expected.safetensors /tmp/v3c-kit/golden.safetensors
}
curve() {
  set -o pipefail # a train that fails says so, rather than the comparison of a log it never wrote
  "$kit/bin/v3c" train models/tiny.v3 --backend cuda --bf16 --steps "$(cat "$kit/ref/steps")" \
    --log "$out/cuda_bf16.jsonl" | tail -n 3 &&
    python3 tools/device/compare.py curve "$kit/ref/cpu_bf16.jsonl" "$out/cuda_bf16.jsonl"
}

tests() {
  local log=/tmp/v3c-kit/tests.out rc
  { CK_RUN_CASE=device "$kit/bin/test_cuda_exec" && CK_RUN_CASE=nccl "$kit/bin/test_comm"; } >"$log" 2>&1
  rc=$?
  cat "$log"
  [ $rc -eq 0 ] || return $rc
  if grep -q 'skipp' "$log"; then echo "FAIL: a device case skipped instead of running"; return 1; fi
}

export kit out
export -f golden curve tests
step tests 150 bash -c tests
step golden 90 bash -c golden
step curve 120 bash -c curve
kernels() {
  PATH=$PATH:/usr/local/cuda/bin
  if ! compgen -G "$V3C_CACHE_DIR/*/kernel.cubin" >/dev/null; then
    echo "no kernel was compiled: the cache $V3C_CACHE_DIR holds no cubin"
    return 1
  fi
  # The cubins, sources and PTX are worth bringing back even where the toolkit has no disassembler.
  local disasm=()
  if command -v nvdisasm >/dev/null; then disasm=(nvdisasm)
  elif command -v cuobjdump >/dev/null; then disasm=(cuobjdump -sass)
  else echo "neither nvdisasm nor cuobjdump found: the kernels come back without their SASS"
  fi
  if [ ${#disasm[@]} -gt 0 ]; then
    for entry in "$V3C_CACHE_DIR"/*/; do
      "${disasm[@]}" "$entry/kernel.cubin" >"$entry/kernel.sass" || return 1
    done
  fi
  tar -C "$V3C_CACHE_DIR" -czf "$out/kernels.tar.gz" --exclude='.tmp.*' . && ls "$V3C_CACHE_DIR" | wc -l
}
export -f kernels
step bench 200 bench/gpu_vs_hf.sh "$kit/bin" 5
step kernels 40 bash -c kernels
say "== done; logs: $(ls "$out" | tr '\n' ' ')"
