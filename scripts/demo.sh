#!/usr/bin/env bash
# Installs what is missing, derives the corpora, builds temper and runs the demo on the bundled
# model: held-out perplexity of general and medical text, and a generated continuation.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/deps.sh"
"$root/scripts/corpora.sh"
"$root/scripts/build.sh" temper_demo
"$root/build/examples/cpp/temper_demo" --model "$root/assets/model" --corpora "$root/data/corpora" "$@"
