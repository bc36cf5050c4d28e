#!/usr/bin/env bash
# The PEFT round trip in one device call, from the repository root after `. tools/gpu/build.sh`
# (which builds build-gpu and sets LD_LIBRARY_PATH):
#   1. PEFT -> temper: PEFT makes adapters with non-zero B for the llama_gqa parity model
#      (tools/fixtures/make_peft_fixtures.py) and temper's [parity] tests load them.
#   2. temper -> PEFT: temper saves adapters (tools/peft/temper_adapter_for_peft), PEFT loads
#      them (check_temper_adapter.py) and must compute temper's logits.
#   3. temper's merged export is loaded by transformers (check_merged_export.py).
# Logs and the new fixtures (peft_fixtures.tgz) go to $OUT; adapters and exports to a temp dir.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
out=${OUT:-/tmp/out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
status=0
work=$(mktemp -d /tmp/peft-round-trip.XXXXXX)  # adapters and exports stay off $OUT (few files come back)

python3 tools/fixtures/make_peft_fixtures.py --out tests/fixtures/peft 2>&1 | tee "$out/peft_fixtures.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
tar czf "$out/peft_fixtures.tgz" tests/fixtures/peft

build-gpu/tests/temper_tests "[parity]" 2>&1 | tee "$out/parity.log" | tail -4
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

for v in lora rslora dora; do
  build-gpu/tools/peft/temper_adapter_for_peft --variant "$v" --out "$work/temper_$v" --export "$work/merged_$v" \
    2>&1 | tee -a "$out/round_trip.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  python3 tools/peft/check_temper_adapter.py "$work/temper_$v" 2>&1 | tee -a "$out/round_trip.log" | tail -1
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  python3 tools/peft/check_merged_export.py "$work/merged_$v" 2>&1 | tee -a "$out/round_trip.log" | tail -1
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
done
echo "peft round trip: $([ "$status" -eq 0 ] && echo PASS || echo FAIL)"
exit "$status"
