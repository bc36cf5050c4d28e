#!/usr/bin/env bash
# Builds and runs the Go example (tests/capi registers it with CTest). No modules are fetched.
# Usage: run.sh <dir of libtemper_c.so> <dir of temper.h> <work dir> <model dir> <text file>
# Exits 77 (CTest: skipped) when go is missing.
set -euo pipefail
lib_dir=$(realpath "$1") include_dir=$(realpath "$2") work=$(realpath -m "$3") model=$(realpath "$4") text=$(realpath "$5")
if ! command -v go >/dev/null; then
  echo "go not found: the Go example is skipped (scripts/deps.sh installs golang-go)"
  exit 77
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$work"
export CGO_ENABLED=1 GOPROXY=off GOFLAGS=-mod=mod
export GOCACHE=${GOCACHE:-$work/go-cache}
export CGO_CFLAGS="-I$include_dir"
export CGO_LDFLAGS="-L$lib_dir -Wl,-rpath,$lib_dir"
(cd "$here" && go build -o "$work/finetune" .)
"$work/finetune" "$model" "$text" "$work/out"
