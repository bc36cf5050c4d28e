#!/usr/bin/env bash
# Installs what is missing, derives the corpora, builds temper and runs the demo: LoRA continued
# pre-training of the bundled model on the bundled medical text (CPU, a few minutes), with the
# medical and general held-out perplexity before, during and after, and the adapter it wrote.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/deps.sh"
"$root/scripts/corpora.sh"
"$root/scripts/build.sh" temper_continued_pretraining
cd "$root"
"$root/build/examples/cpp/temper_pretrain" "$@"
