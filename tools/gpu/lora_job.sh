#!/usr/bin/env bash
# One device call for the Trainer/LoRA issue: build, training-trajectory fixtures (PyTorch),
# PEFT fixtures and the PEFT round trip (tools/peft/peft_job.sh), every test including [cuda] and
# [parity], then the 1B-shape LoRA step benchmark of temper and of transformers+PEFT side by side.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
out=${OUT:-/tmp/out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/device.txt"
if ! (. tools/gpu/build.sh > "$out/build.log" 2>&1); then
  echo "build FAILED"; grep -B2 -A12 "error" "$out/build.log" | head -80; exit 1
fi
. tools/gpu/build.sh > /dev/null 2>&1
set +e
python3 tools/fixtures/make_training_fixtures.py --out tests/fixtures/training > "$out/training_fixtures.log" 2>&1
tail -3 "$out/training_fixtures.log"
tar czf "$out/training_fixtures.tgz" tests/fixtures/training
tools/peft/peft_job.sh 2>&1 | tail -12
(cd build-gpu && ctest -j 12 -E package --output-on-failure > "$out/ctest.log" 2>&1; tail -4 "$out/ctest.log"; grep -A25 "FAILED\|Failed" "$out/ctest.log" | head -60)
for b in "build-gpu/bench/train_bench --shape 1b --mode lora" "python3 bench/peer_peft.py --shape 1b --mode lora"; do
  $b 2>&1 | tail -1 | tee -a "$out/bench.jsonl"
done
# Few files come back from a device call: pack the logs.
(cd "$out" && tar czf logs.tgz ./*.log device.txt && rm -f ./*.log device.txt)
