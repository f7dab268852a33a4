#!/usr/bin/env bash
# The layout is the architecture: every #include must point down (DESIGN.md).
# Allowed targets per folder; a folder may always include its own files.
set -u
cd "$(dirname "$0")/.."
declare -A allowed=(
  [base]="base"
  [ir]="base ir"
  [frontend]="base ir frontend"
  [passes]="base ir passes"
  [codegen]="base ir codegen"
  [runtime]="base ir codegen runtime"
)
bad=0
for folder in "${!allowed[@]}"; do
  [ -d "$folder" ] || continue
  while IFS= read -r line; do
    file=${line%%:*}
    target=$(sed -E 's/.*#include "(\.\.\/)+([a-z]+)\/.*/\2/' <<<"$line")
    [[ " ${allowed[$folder]} " == *" $target "* ]] && continue
    echo "layering: $file includes $target/ (a $folder/ file may include only: ${allowed[$folder]})"
    bad=1
  done < <(grep -rnE '#include "(\.\./)+[a-z]+/' "$folder" --include='*.[chly]' 2>/dev/null)
done
[ $bad = 0 ] && echo "layering: all includes point down"
exit $bad
