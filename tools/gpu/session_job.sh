#!/usr/bin/env bash
# One device call in two parts, for a session whose working tree holds other people's unfinished
# edits: the C++ build and tests use a clean snapshot of a commit (`git archive HEAD` unpacked into
# .deps/snap on the CPU machine and carried, see tools/gpu/README.md), the Python fixture scripts
# run from the working tree.
#   PART=fixtures  BLOOM + tokenizer fixtures (tools/fixtures), HF tokenizers' speed
#   PART=build     build the snapshot, every test including [cuda]
#   PART=cudatests build the snapshot, only the [cuda] tests (each case's result in the log)
#   PART=tokbench  tokenizer.json encode speed, HF tokenizers and temper, single thread, same CPU
#   PART=bench     nf4_bench, optimizer_bench, then bench/compare.py: train_bench beside the
#                  PEFT / transformers peer in the same call (1B LoRA, 1B full, 7B LoRA and QLoRA
#                  with checkpointing) and the ratio table against the goals; 1B QLoRA alone.
#                  BENCH_CASES=1b-lora,... limits compare.py to those cases (and skips 1B QLoRA);
#                  NF4_SWEEP=1 adds nf4_bench's sweep of the dequantize kernel's launch shapes.
#                  With BENCH_PROFILE=1 instead: train_bench --profile (one step under the Kineto
#                  profiler) for 1B LoRA, 1B full and 7B QLoRA with checkpointing, per-op device time
#                  (PROFILE_RUNS="--shape 1b --mode lora;..." picks other train_bench argument sets)
#   PART=sdpa      bench/sdpa_backends.py: flash / cuDNN / memory-efficient SDPA, forward + backward,
#                  on the 1B and 7B attention shapes (needs no build)
#   PART=dist      (two GPUs: kind nvidia-h200-x2) the [cuda][distributed] tests (NCCL, bf16
#                  equivalence with one GPU), then data-parallel scaling: train_bench 1B LoRA and
#                  full fine-tuning on one GPU and on two through tools/temper-launch (same per-GPU
#                  batch), full fine-tuning also with ZeRO-1 (--zero); DIST_RUNS picks the runs,
#                  DIST_PROFILE=1 first profiles rank 0 of a two-GPU full fine-tuning step
#   PART=reducer   (one GPU) what data parallelism costs besides NCCL: train_bench 1B full fine-tuning
#                  and LoRA, each without and with --local-reducer (the gradient reducer on a world
#                  of one), in turn, twice; step time and peak memory side by side
#   PART=losscurve bench/loss_curve.py: temper's and transformers (+ PEFT)'s loss curves on the same
#                  tokens and initial adapter, LoRA and full fine-tuning, fp32 (needs data/corpora carried)
# PART may list several, comma-separated. Results go to $OUT (few files: logs are tarred).
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
work_root=$root  # sourcing build.sh below sets its own $root (the snapshot's)
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

if [[ $part == *,build,* || $part == *,cudatests,* || $part == *,bench,* || $part == *,tokbench,* || $part == *,dist,* ||
      $part == *,losscurve,* || $part == *,reducer,* ]]; then
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

if [[ $part == *,cudatests,* ]]; then
  (cd "$snap" && build-gpu/tests/temper_tests "[cuda]" -r compact > "$out/logs/cuda_tests.log" 2>&1; echo "cuda tests exit $?")
  tail -2 "$out/logs/cuda_tests.log"; grep -B4 -A10 "FAILED\|failed:" "$out/logs/cuda_tests.log" | head -60
fi

if [[ $part == *,tokbench,* ]]; then
  for i in 1 2; do  # twice each, interleaved: the machine's other work moves single-thread numbers
    python3 tools/fixtures/make_tokenizer_fixtures.py --bench --corpora data/corpora --out tests/fixtures/tokenizers \
      2>&1 | tee -a "$out/tokenizer_bench.jsonl"
    "$snap/build-gpu/bench/tokenizer_bench" --fixtures "$snap/tests/fixtures/tokenizers" --corpora data/corpora \
      --passes 3 2>&1 | tee -a "$out/tokenizer_bench.jsonl"
  done
fi

if [[ $part == *,bench,* && ${BENCH_PROFILE:-0} == 1 ]]; then
  b="$snap/build-gpu/bench"
  IFS=';' read -r -a profile_runs <<< "${PROFILE_RUNS:---shape 1b --mode lora;--shape 1b --mode full;--shape 7b --mode qlora --ckpt}"
  for args in "${profile_runs[@]}"; do
    echo "{\"bench\":\"profile_run\",\"args\":\"$args --profile\"}" | tee -a "$out/profile.jsonl"
    "$b/train_bench" $args --profile 2>> "$out/logs/profile.log" >> "$out/profile.jsonl"
    echo "exit $?"; grep '"profile_summary"\|"train_step"' "$out/profile.jsonl" | tail -2
  done
elif [[ $part == *,bench,* ]]; then
  b="$snap/build-gpu/bench"
  sweep=(); [[ ${NF4_SWEEP:-0} == 1 ]] && sweep=(--sweep)
  "$b/nf4_bench" "${sweep[@]}" > "$out/nf4_bench.jsonl" 2>&1; echo "nf4_bench exit $?"
  grep -v '"dequantize_kernel_sweep"' "$out/nf4_bench.jsonl" | grep '"batched"' | grep 'copy\|memset\|kernel'
  [[ -z ${BENCH_CASES:-} ]] && "$b/optimizer_bench" 2>&1 | tee "$out/optimizer_bench.jsonl"
  cases=(); [[ -n ${BENCH_CASES:-} ]] && cases=(--cases "$BENCH_CASES")
  # The ratio table (markdown) to stdout and compare.md; every JSON line to train_bench.jsonl.
  python3 "$snap/bench/compare.py" "${cases[@]}" --train-bench "$b/train_bench" --peer "$snap/bench/peer_peft.py" \
    --out "$out/train_bench.jsonl" 2> "$out/logs/compare.log" | tee "$out/compare.md"
  echo "compare exit ${PIPESTATUS[0]}"; grep -A3 "failed" "$out/logs/compare.log" | head -40
  # 1B QLoRA has no peer in the table (bitsandbytes' 1B row was not a goal); kept for the record.
  [[ -z ${BENCH_CASES:-} ]] && "$b/train_bench" --shape 1b --mode qlora 2>> "$out/logs/compare.log" | tail -1 \
    | tee -a "$out/train_bench.jsonl"
fi
if [[ $part == *,sdpa,* ]]; then
  python3 "$snap/bench/sdpa_backends.py" 2> "$out/logs/sdpa.log" | tee "$out/sdpa_backends.jsonl"
  echo "sdpa exit ${PIPESTATUS[0]}"; tail -3 "$out/logs/sdpa.log"
fi
if [[ $part == *,losscurve,* ]]; then
  # The table to loss_curve.md, every row to loss_curve.jsonl; tokens, adapters and run logs under logs/.
  python3 "$snap/bench/loss_curve.py" --loss-curve "$snap/build-gpu/bench/loss_curve" --model "$snap/assets/model" \
    --text "$work_root/data/corpora/medical_train.txt" --work "$out/logs/loss_curve" --modes lora,full \
    --steps 30 --batch 8 --seq 256 --lr 1e-3 --device cuda --dtype f32 --attn sdpa \
    --out-jsonl "$out/loss_curve.jsonl" 2> "$out/logs/loss_curve.log" | tee "$out/loss_curve.md"
  echo "loss_curve exit ${PIPESTATUS[0]}"; tail -5 "$out/logs/loss_curve.log"
fi
if [[ $part == *,reducer,* ]]; then
  for mode in full lora; do
    for flags in "" --local-reducer "" --local-reducer; do
      "$snap/build-gpu/bench/train_bench" --shape 1b --mode $mode --steps 8 $flags 2>> "$out/logs/reducer_bench.log" \
        | tee -a "$out/reducer_bench.jsonl"
    done
  done
fi

if [[ $part == *,dist,* ]]; then
  export NCCL_NVLS_ENABLE=0  # NVLink multicast stays off on the lent machines
  (cd "$snap" && build-gpu/tests/temper_tests "[cuda][distributed]" -r compact > "$out/logs/dist_tests.log" 2>&1; \
   echo "dist tests exit $?"); tail -3 "$out/logs/dist_tests.log"
  b="$snap/build-gpu/bench"
  # DIST_PROFILE=1: first, one profiled step of rank 0 in a two-GPU 1B full fine-tuning run
  # (train_bench --profile: per-op device time and where the device idles) to dist_profile.jsonl.
  if [[ ${DIST_PROFILE:-0} == 1 ]]; then
    "$snap/tools/temper-launch" --nproc 2 -- "$b/train_bench" --shape 1b --mode full --steps 4 --profile \
      2>> "$out/logs/dist_bench.log" > "$out/dist_profile.jsonl"
    echo "profile launch exit $?"; grep '"profile_summary"\|"profile_idle"' "$out/dist_profile.jsonl" | cut -c1-300
  fi
  # DIST_RUNS="--shape 1b --mode full;..." picks the argument sets (default: LoRA, full, full + ZeRO-1).
  IFS=';' read -r -a dist_runs <<< "${DIST_RUNS:---shape 1b --mode lora;--shape 1b --mode full;--shape 1b --mode full --zero}"
  for args in "${dist_runs[@]}"; do
    "$snap/tools/temper-launch" --nproc 2 -- "$b/train_bench" $args --steps 8 2>> "$out/logs/dist_bench.log" \
      | tee -a "$out/dist_bench.jsonl"
    echo "launch exit ${PIPESTATUS[0]}"
    if [[ $args != *--zero* ]]; then
      "$b/train_bench" $args --steps 8 2>> "$out/logs/dist_bench.log" | tee -a "$out/dist_bench.jsonl"
    fi
  done
fi

(cd "$out" && tar czf logs.tgz logs && rm -rf logs)
