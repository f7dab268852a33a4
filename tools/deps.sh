#!/usr/bin/env bash
# Installs the Debian packages v3c needs when they are missing (needs root or sudo).
set -euo pipefail
need=()
have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for p in cmake ninja-build flex bison pkg-config check graphviz clang libclang-rt-14-dev gcc make llvm-14-dev libopenblas-dev libopenmpi-dev openmpi-bin; do
  have_pkg "$p" || need+=("$p")
done
if ((${#need[@]})); then
  echo "deps: installing ${need[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
have_cmd flex && have_cmd bison && have_cmd cmake && pkg-config --exists check
