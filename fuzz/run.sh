#!/bin/sh
# Builds the libFuzzer targets in BUILD_DIR and runs each for SECONDS (default 30)
# over a temporary copy of its seed corpus (fuzz/corpus/<name without fuzz_>/),
# so fuzz/corpus is never written. Exits non-zero if any target crashes.
#   usage: fuzz/run.sh BUILD_DIR [SECONDS]
set -eu
if [ $# -lt 1 ]; then
    echo "usage: $0 BUILD_DIR [SECONDS]" >&2
    exit 2
fi
build=$1
seconds=${2:-30}
root=$(cd "$(dirname "$0")/.." && pwd)

cmake -S "$root" -B "$build" -G Ninja -DCMAKE_C_COMPILER=clang -DV3C_FUZZ=ON -DV3C_TESTS=OFF \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C "$build" fuzz

status=0
for src in "$root"/fuzz/fuzz_*.c; do
    name=$(basename "$src" .c)
    work=$(mktemp -d "${TMPDIR:-/tmp}/v3c-$name-XXXXXX")
    mkdir -p "$work/corpus" "$work/artifacts"
    seeds="$root/fuzz/corpus/${name#fuzz_}"
    if [ -d "$seeds" ]; then cp -R "$seeds/." "$work/corpus/"; fi
    echo "== $name: ${seconds}s, work dir $work"
    if "$build/fuzz/$name" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$work/artifacts/" "$work/corpus" >"$work/log" 2>&1; then
        tail -n 3 "$work/log"
    else
        echo "!! $name failed; log and crashing input in $work" >&2
        tail -n 40 "$work/log" >&2
        status=1
    fi
done
exit $status
