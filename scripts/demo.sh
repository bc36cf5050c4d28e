#!/usr/bin/env bash
# Installs what is missing, derives the corpora, builds temper and runs the demo: LoRA continued
# pre-training of the bundled model on the bundled medical text (CPU, a few minutes), with the
# medical and general held-out perplexity before, during and after, and the adapter it wrote; then
# the same LoRA path on a BLOOM-architecture model (a tiny random one with a BLOOM-style
# tokenizer.json, seconds).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/deps.sh"
"$root/scripts/corpora.sh"
"$root/scripts/build.sh" temper_continued_pretraining temper_bloom_lora
cd "$root"
"$root/build/examples/cpp/temper_pretrain" "$@"
echo
echo "== BLOOM: LoRA on a tiny BLOOM-architecture model (ALiBi, fused query_key_value) =="
"$root/build/examples/cpp/temper_bloom_lora" --tokenizer=tests/fixtures/tokenizers/bloom --output=out/bloom-lora
