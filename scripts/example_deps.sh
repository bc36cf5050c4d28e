#!/usr/bin/env bash
# Installs the toolchains of the C ABI's Rust and Go examples (examples/rust, examples/go) when
# they are missing: Debian's golang-go (Go 1.19; cgo, no modules fetched) and cargo (any cargo
# already on PATH, e.g. from rustup, is kept). Without them CTest reports examples.rust and
# examples.go as skipped. CI runs this before scripts/test.sh.
set -euo pipefail
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
missing=()
command -v go >/dev/null || missing+=(golang-go)
command -v cargo >/dev/null || missing+=(cargo)
if [ ${#missing[@]} -gt 0 ]; then
  echo "example deps: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
