#!/usr/bin/env python3
"""Crash safety under SIGKILL (docs/reliability.md).

Runs temper_crash_writer once uninterrupted (the reference), then starts it again and again on
one run directory and kills it with SIGKILL at a random moment after a random step line (each
step is followed by a checkpoint write, so most kills land inside one: the hidden temporary
directories left behind count them). Every restart checks that each checkpoint visible under a
step name verifies against its manifest (the writer exits 3 otherwise) and resumes from the
newest. Finally one run completes. Checked:
  - no restart ever sees an incomplete checkpoint (exit 3), none fails otherwise;
  - every step's loss, from every run, killed or not, equals the reference's bit for bit
    (so each resume continued exactly);
  - the final weights equal the reference's byte for byte;
  - at least --min-mid-write kills landed inside a checkpoint write.
Usage: crash_test.py --writer <temper_crash_writer> --work <dir> [--iterations 30] [--seed 1]
"""
import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

STEP = re.compile(r"^step (\d+) (\S+)$")


def leftovers(run: Path):
    return sorted(p.name for p in run.iterdir() if p.name.startswith(".")) if run.is_dir() else []


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--writer", required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--min-mid-write", type=int, default=3)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    if a.work.exists():
        shutil.rmtree(a.work)
    a.work.mkdir(parents=True)
    env = dict(os.environ, OMP_NUM_THREADS="1")

    t0 = time.time()
    ref = subprocess.run([a.writer, str(a.work / "reference"), str(a.steps), "--final", str(a.work / "reference.safetensors")],
                         capture_output=True, text=True, env=env)
    if ref.returncode != 0:
        print(ref.stdout[-2000:], ref.stderr[-4000:])
        print("FAIL: the reference run failed")
        return 1
    reference = {}
    for line in ref.stdout.splitlines():
        m = STEP.match(line)
        if m:
            reference[int(m.group(1))] = m.group(2)
    if len(reference) != a.steps:
        print(f"FAIL: the reference run printed {len(reference)} steps, not {a.steps}")
        return 1
    ref_seconds = time.time() - t0
    print(f"reference: {a.steps} steps in {ref_seconds:.1f} s")

    run = a.work / "run"
    mismatches, mid_write, finished_early, killed = [], 0, 0, 0
    for i in range(a.iterations):
        proc = subprocess.Popen([a.writer, str(run), str(a.steps)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)
        # Kill after the k-th step line it prints, a random fraction of a step interval later.
        after_steps = rng.randint(1, 3)
        seen, lines, last = 0, [], None
        while True:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if line.startswith("step "):
                now = time.time()
                interval = (now - last) if last is not None else 0.02
                last = now
                seen += 1
                if seen == after_steps:
                    time.sleep(rng.uniform(0.0, 1.2 * interval))
                    proc.send_signal(signal.SIGKILL)
                    killed += 1
                    break
        rest, err = proc.communicate()
        lines += rest.splitlines()
        rc = proc.returncode
        for line in lines:
            m = STEP.match(line)
            if m and reference.get(int(m.group(1))) != m.group(2):
                mismatches.append((i, line, reference.get(int(m.group(1)))))
        if rc == 3 or any(l.startswith("BAD ") for l in lines):
            print("\n".join(lines[-5:]))
            print(f"FAIL: iteration {i}: an incomplete checkpoint was visible under a step name")
            return 1
        if rc not in (0, -signal.SIGKILL):
            print("\n".join(lines[-5:]), err[-3000:])
            print(f"FAIL: iteration {i}: the writer exited with {rc}")
            return 1
        if rc == 0:
            finished_early += 1
            break
        left = leftovers(run)
        if any(".tmp-" in n for n in left):
            mid_write += 1
        resumed = next((l for l in lines if l.startswith(("resumed", "fresh"))), "?")
        print(f"kill {i + 1:2d}: {resumed:12s} killed after {seen} step(s); hidden leftovers: {left}")

    final = subprocess.run([a.writer, str(run), str(a.steps), "--final", str(a.work / "final.safetensors")],
                           capture_output=True, text=True, env=env)
    if final.returncode != 0:
        print(final.stdout[-2000:], final.stderr[-4000:])
        print("FAIL: the final run failed")
        return 1
    for line in final.stdout.splitlines():
        m = STEP.match(line)
        if m and reference.get(int(m.group(1))) != m.group(2):
            mismatches.append(("final", line, reference.get(int(m.group(1)))))
    if mismatches:
        for m in mismatches[:10]:
            print("loss mismatch:", m)
        print(f"FAIL: {len(mismatches)} step losses differ from the uninterrupted run")
        return 1
    if (a.work / "final.safetensors").read_bytes() != (a.work / "reference.safetensors").read_bytes():
        print("FAIL: the final weights differ from the uninterrupted run's")
        return 1
    if leftovers(run):
        print(f"FAIL: hidden leftovers after a completed run: {leftovers(run)}")
        return 1
    print(f"{killed} kills ({mid_write} inside a checkpoint write), {finished_early} runs finished before their kill; "
          f"final weights and all step losses bit-identical to the uninterrupted run; {time.time() - t0:.1f} s")
    if mid_write < a.min_mid_write:
        print(f"FAIL: only {mid_write} kills landed inside a checkpoint write (want >= {a.min_mid_write})")
        return 1
    shutil.rmtree(a.work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
