#!/usr/bin/env bash
# Configures and builds temper into build/ (Release) on a Debian 12 machine prepared by deps.sh.
# Extra arguments are build targets.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cmake -S "$root" -B "$root/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DTEMPER_SENTENCEPIECE_ROOT="$root/.deps/sentencepiece" >/dev/null
if [ $# -gt 0 ]; then
  cmake --build "$root/build" --target "$@"
else
  cmake --build "$root/build"
fi
