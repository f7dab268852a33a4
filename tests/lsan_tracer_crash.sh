#!/usr/bin/env bash
# tools/test.sh reruns failed sanitized suites only when LeakSanitizer's tracer
# crashed and nothing else went wrong.
set -u
cd "$(dirname "$0")/.."
source tools/lsan_tracer_crash.sh
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
crash='Tracer caught signal 11: addr=0x200000d08 pc=0x7efdee0e80f0 sp=0x7efdcf439d10
==18051==LeakSanitizer has encountered a fatal error.
96%: Checks: 26, Failures: 0, Errors: 1
/w/tests/test_cuda_codegen.c:745:E:nvrtc:test_nvrtc_cache_keeps_ptx:0: (after this point) Early exit with return value 1'
bad=0
cases=0
expect() { # expect rerun|fail WHAT LOG-TEXT
  printf '%s\n' "$3" > "$dir/log"
  local got=fail
  lsan_tracer_crash_only "$dir/log" && got=rerun
  cases=$((cases + 1))
  [ "$got" = "$1" ] || { echo "FAIL: $2: expected $1, got $got"; bad=1; }
}
expect rerun "a tracer crash alone" "$crash"
expect fail "no tracer crash" "/w/t.c:9:E:s:t:0: (after this point) Early exit with return value 1"
expect fail "a failed check too" "$crash
/w/t.c:3:F:s:t:0: Assertion 'x == 1' failed"
expect fail "a leak report too" "$crash
==7==ERROR: LeakSanitizer: detected memory leaks"
expect fail "an ASan report too" "$crash
==7==ERROR: AddressSanitizer: heap-use-after-free"
expect fail "a UBSan report too" "$crash
ir/x.c:4:5: runtime error: signed integer overflow"
expect fail "more early exits than crashes" "$crash
/w/t.c:9:E:s:u:0: (after this point) Early exit with return value 1"
expect fail "another kind of error" "$crash
/w/t.c:9:E:s:u:0: (after this point) Received signal 11 (Segmentation fault)"
[ "$bad" = 0 ] && echo "lsan_tracer_crash: $cases cases passed"
exit "$bad"
