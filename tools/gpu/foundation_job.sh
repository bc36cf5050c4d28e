#!/usr/bin/env bash
# One device call: parity fixtures from transformers, pre-training of the bundled model (in the
# background while temper builds), then every test including [cuda]. Results go to $OUT.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
out=${OUT:-/tmp/out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/device.txt"

python3 tools/fixtures/make_parity_fixtures.py --out tests/fixtures/parity 2>&1 | tee "$out/fixtures.log"
tar czf "$out/parity_fixtures.tgz" tests/fixtures/parity

if [ "${SKIP_PRETRAIN:-0}" != 1 ]; then
  python3 tools/pretrain/pretrain.py --corpora data/corpora --tokenizer assets/model/tokenizer.model \
    --out assets/model --time-budget "${PRETRAIN_SECONDS:-240}" --device cuda > "$out/pretrain.log" 2>&1 &
  pretrain_pid=$!
fi

. tools/gpu/build.sh > "$out/build.log" 2>&1 || { tail -50 "$out/build.log"; exit 1; }
set +e  # build.sh, sourced, turned -e on
echo "build ok"
build-gpu/tests/temper_tests -r compact 2>&1 | tee "$out/tests.log" | tail -30

if [ -n "${pretrain_pid:-}" ]; then
  wait "$pretrain_pid"; echo "pretrain exit $?"
  tail -5 "$out/pretrain.log"
  tar czf "$out/bundled_model.tgz" assets/model
fi
