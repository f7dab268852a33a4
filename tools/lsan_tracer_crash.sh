# Sourced by tools/test.sh and tests/lsan_tracer_crash.sh.
# LeakSanitizer's own stop-the-world tracer now and then segfaults at a process's
# exit ("Tracer caught signal 11", google/sanitizers#1353): a crash of the checker,
# not a leak or a failed check; Check reports it as an early exit. Only when every
# complaint in the ctest log $1 is such a crash does this succeed, and the failed
# suites run once more (a real failure fails again).
lsan_tracer_crash_only() {
  local crashes early others
  crashes=$(grep -c "Tracer caught signal" "$1" || true)
  early=$(grep -c ":E:.*Early exit with return value 1" "$1" || true)
  others=$(grep -Ec "ERROR: (AddressSanitizer|LeakSanitizer): |runtime error:|:F:|:E:" "$1" || true)
  [ "$crashes" -gt 0 ] && [ "$early" -le "$crashes" ] && [ "$others" -eq "$early" ]
}
