#!/usr/bin/env bash
# Builds and runs the Rust example (tests/capi registers it with CTest).
# Usage: run.sh <dir of libtemper_c.so> <dir of temper.h> <work dir> <model dir> <text file>
# Exits 77 (CTest: skipped) when cargo is missing.
set -euo pipefail
lib_dir=$(realpath "$1") include_dir=$(realpath "$2") work=$(realpath -m "$3") model=$(realpath "$4") text=$(realpath "$5")
if ! command -v cargo >/dev/null; then
  echo "cargo not found: the Rust example is skipped (scripts/deps.sh installs it)"
  exit 77
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$work"
export TEMPER_LIB_DIR=$lib_dir CARGO_TARGET_DIR=$work/target
cargo build --offline --release --quiet --manifest-path "$here/Cargo.toml"
"$work/target/release/temper-finetune" "$model" "$text" "$work/out"
