#!/usr/bin/env bash
# On the CPU (Debian 12) machine: download the Debian packages the GPU build needs into
# .deps/debs (ignored by git; pass `.deps/debs` in the device call's carry list).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
mkdir -p "$root/.deps/debs"
cd "$root/.deps/debs"
apt-get download libfmt-dev libfmt9 libabsl-dev libabsl20220623 libsentencepiece-dev libsentencepiece0 \
  sentencepiece catch2 nlohmann-json3-dev libutf8proc-dev libutf8proc2 libxxhash-dev libxxhash0 \
  libpcre2-dev libpcre2-8-0
