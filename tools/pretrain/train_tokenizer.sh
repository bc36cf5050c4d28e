#!/usr/bin/env bash
# Trains the bundled tokenizer, assets/model/tokenizer.model: an 8,000-piece sentencepiece BPE
# model on the general (Brown Corpus) training text, with LLaMA's conventions: byte fallback,
# digits split, no normalisation (identity), a dummy prefix space, whitespace kept as written,
# <unk>=0 <s>=1 </s>=2 and no pad piece.
#
# Needs data/corpora/ (scripts/corpora.sh) and spm_train (Debian package sentencepiece).
# Usage: tools/pretrain/train_tokenizer.sh [output_dir]   (default: assets/model)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
input="$root/data/corpora/general_train.txt"
out_dir="${1:-$root/assets/model}"

[ -s "$input" ] || { echo "train_tokenizer: $input missing; run scripts/corpora.sh" >&2; exit 1; }
command -v spm_train >/dev/null || { echo "train_tokenizer: spm_train missing (apt-get install sentencepiece)" >&2; exit 1; }

mkdir -p "$out_dir"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/temper-spm.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# --input_sentence_size is far above the corpus' ~15k lines: every document is used, and the
# shuffle (seeded) only matters if the corpus ever grows past it. --max_sentence_length is raised
# so that long Brown paragraphs are not skipped (the default is 4192 bytes).
# The model records its trainer options (paths, threads): relative paths and a fixed thread
# count keep the file byte-identical wherever it is rebuilt.
ln -s "$input" "$tmp/general_train.txt"
(cd "$tmp" && spm_train \
  --input=general_train.txt \
  --model_prefix=tokenizer \
  --model_type=bpe \
  --vocab_size=8000 \
  --character_coverage=1.0 \
  --byte_fallback=true \
  --split_digits=true \
  --allow_whitespace_only_pieces=true \
  --normalization_rule_name=identity \
  --add_dummy_prefix=true \
  --remove_extra_whitespaces=false \
  --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 \
  --input_sentence_size=2000000 \
  --shuffle_input_sentence=true \
  --max_sentence_length=32768 \
  --random_seed=0 \
  --num_threads=2 \
  --minloglevel=1)

cp "$tmp/tokenizer.model" "$out_dir/tokenizer.model"
echo "train_tokenizer: wrote $out_dir/tokenizer.model ($(wc -c <"$out_dir/tokenizer.model") bytes)"
