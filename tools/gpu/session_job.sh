#!/usr/bin/env bash
# One device call in two parts, for a session whose working tree holds other people's unfinished
# edits: the C++ build and tests use a clean snapshot of a commit (`git archive HEAD` unpacked into
# .deps/snap on the CPU machine and carried, see tools/gpu/README.md), the Python fixture scripts
# run from the working tree.
#   PART=fixtures  BLOOM + tokenizer fixtures (tools/fixtures), HF tokenizers' speed
#   PART=build     build the snapshot, every test including [cuda]
#   PART=tokbench  tokenizer.json encode speed, HF tokenizers and temper, single thread, same CPU
#   PART=bench     nf4_bench, train_bench (LoRA vs QLoRA at 7B with checkpointing, LoRA at 1B)
#                  beside the PEFT peer in the same call
# PART may list several, comma-separated. Results go to $OUT (few files: logs are tarred).
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
out=${OUT:-/tmp/out}
mkdir -p "$out/logs"
export PYTHONUNBUFFERED=1
part=",${PART:-fixtures,build,bench},"
snap="$root/.deps/snap"
[ -d "$snap" ] || snap="$root"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/logs/device.txt"

if [[ $part == *,fixtures,* ]]; then
  python3 tools/fixtures/make_bloom_fixtures.py > "$out/logs/bloom_fixtures.log" 2>&1; echo "bloom fixtures exit $?"
  tail -4 "$out/logs/bloom_fixtures.log"
  python3 tools/fixtures/make_tokenizer_fixtures.py --corpora data/corpora --out tests/fixtures/tokenizers \
    > "$out/logs/tokenizer_fixtures.log" 2>&1; echo "tokenizer fixtures exit $?"
  tail -5 "$out/logs/tokenizer_fixtures.log"
  python3 tools/fixtures/make_tokenizer_fixtures.py --bench --corpora data/corpora --out tests/fixtures/tokenizers \
    2>&1 | tee "$out/hf_tokenizers_bench.jsonl"
  tar czf "$out/fixtures.tgz" tests/fixtures/parity/bloom_4heads tests/fixtures/parity/bloom_6heads \
    tests/fixtures/parity/VERSIONS_bloom.json tests/fixtures/peft/bloom_lora tests/fixtures/tokenizers
fi

if [[ $part == *,build,* || $part == *,bench,* || $part == *,tokbench,* ]]; then
  mkdir -p "$snap/.deps"
  [ "$snap" = "$root" ] || ln -sfn "$root/.deps/debs" "$snap/.deps/debs"
  if ! (. "$snap/tools/gpu/build.sh" > "$out/logs/build.log" 2>&1); then
    echo "build FAILED"; grep -B2 -A12 "error" "$out/logs/build.log" | head -80
  fi
  . "$snap/tools/gpu/build.sh" > /dev/null 2>&1 || true
  set +e +u  # build.sh sets -e for itself; a failing test or bench must not end this job
fi

if [[ $part == *,build,* ]]; then
  (cd "$snap" && build-gpu/tests/temper_tests -r compact > "$out/logs/tests.log" 2>&1; echo "tests exit $?")
  tail -3 "$out/logs/tests.log"; grep -B4 -A10 "FAILED\|failed:" "$out/logs/tests.log" | head -80
  (cd "$snap" && build-gpu/tests/temper_tests "[cuda]" -r compact 2>&1 | tail -2)
fi

if [[ $part == *,tokbench,* ]]; then
  for i in 1 2; do  # twice each, interleaved: the machine's other work moves single-thread numbers
    python3 tools/fixtures/make_tokenizer_fixtures.py --bench --corpora data/corpora --out tests/fixtures/tokenizers \
      2>&1 | tee -a "$out/tokenizer_bench.jsonl"
    "$snap/build-gpu/bench/tokenizer_bench" --fixtures "$snap/tests/fixtures/tokenizers" --corpora data/corpora \
      --passes 3 2>&1 | tee -a "$out/tokenizer_bench.jsonl"
  done
fi

if [[ $part == *,bench,* ]]; then
  b="$snap/build-gpu/bench"
  "$b/nf4_bench" 2>&1 | tee "$out/nf4_bench.jsonl"
  for cmd in "$b/train_bench --shape 7b --mode lora --ckpt" "$b/train_bench --shape 7b --mode qlora --ckpt" \
             "python3 $snap/bench/peer_peft.py --shape 7b --mode lora --ckpt" \
             "$b/train_bench --shape 1b --mode lora" "$b/train_bench --shape 1b --mode qlora" \
             "python3 $snap/bench/peer_peft.py --shape 1b --mode lora" \
             "$b/train_bench --shape 1b --mode full" "python3 $snap/bench/peer_peft.py --shape 1b --mode full"; do
    echo "# $cmd" >> "$out/logs/train_bench.log"
    $cmd >> "$out/logs/train_bench.log" 2>&1
    tail -1 "$out/logs/train_bench.log" | tee -a "$out/train_bench.jsonl"
  done
fi
(cd "$out" && tar czf logs.tgz logs && rm -rf logs)
