#!/usr/bin/env bash
# One device call: parity fixtures from transformers (unless SKIP_FIXTURES=1), pre-training of
# the bundled model (in the background while temper builds), every test including [cuda], and
# the kernel benchmark. Results go to $OUT.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
out=${OUT:-/tmp/out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/device.txt"

if [ "${SKIP_FIXTURES:-0}" != 1 ]; then
  python3 tools/fixtures/make_parity_fixtures.py --out tests/fixtures/parity > "$out/fixtures.log" 2>&1
  tar czf "$out/parity_fixtures.tgz" tests/fixtures/parity
fi
if [ "${SKIP_PRETRAIN:-0}" != 1 ]; then
  python3 tools/pretrain/pretrain.py --corpora data/corpora --tokenizer assets/model/tokenizer.model \
    --out assets/model --time-budget "${PRETRAIN_SECONDS:-240}" --device cuda > "$out/pretrain.log" 2>&1 &
  pretrain_pid=$!
fi

if (. tools/gpu/build.sh > "$out/build.log" 2>&1); then
  echo "build ok"
  . tools/gpu/build.sh > /dev/null 2>&1  # environment for running (already built)
  set +e
  build-gpu/tests/temper_tests -r compact 2>&1 | tee "$out/tests.log" | tail -25
  build-gpu/bench/rms_norm_bench 2>&1 | tee "$out/bench.jsonl"
else
  echo "build FAILED"; grep -B2 -A12 "error" "$out/build.log" | head -60
fi

if [ -n "${pretrain_pid:-}" ]; then
  wait "$pretrain_pid"; echo "pretrain exit $?"
  tail -3 "$out/pretrain.log"
  tar czf "$out/bundled_model.tgz" assets/model
fi
