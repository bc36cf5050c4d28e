#!/usr/bin/env python3
"""temper beside its peers in one command: runs build-gpu/bench/train_bench and bench/peer_peft.py
back to back on the cases of the GPU-performance issue, parses their JSON lines and prints the
ratio table against the goals (markdown). Standard library only.

    python3 bench/compare.py --out results.jsonl                 # on the GPU machine, after tools/gpu/build.sh
    python3 bench/compare.py --dry-run                           # canned output: shows the table, runs nothing
    python3 bench/compare.py --cases 1b-lora,7b-qlora --profile  # a subset; --profile passes to train_bench

Cases (batch 4 x 2048 and the shapes of ../shared/baselines.md, set by the two programs):
  1b-lora   LoRA 1B, no checkpointing        peer: PEFT LoRA
  1b-full   full fine-tuning 1B              peer: transformers
  7b-lora   LoRA 7B, gradient checkpointing  peer: PEFT LoRA
  7b-qlora  QLoRA 7B, gradient checkpointing peer: PEFT + bitsandbytes, recorded (not installed on the
            GPU machine); also against temper LoRA 7B (runs 7b-lora's temper command too)

--out FILE gets every JSON line the programs printed (train_step lines, and profile lines with
--profile), in run order, each run's lines after a {"bench":"compare_run","cmd":...,"exit":...}
line. Exit status: 0 when every run exited 0 with its train_step line (goals met or not: the
table says), 1 otherwise.
"""
import argparse
import json
import os
import subprocess
import sys

from jsonl import parse_json_lines  # bench/jsonl.py: the scripts run from bench/

# PEFT + bitsandbytes QLoRA, 7B shape, gradient checkpointing, batch 4 x 2048, one H200:
# the recorded row of ../shared/baselines.md (2026-11-28, bitsandbytes 0.50.2). bitsandbytes is not
# installed on the GPU machine, so this peer cannot run in the same call.
PEFT_BNB_QLORA_7B_TOKENS_PER_S = 6604
PEFT_BNB_QLORA_7B_PEAK_GIB = 9.65

# name -> (temper arguments, peer arguments or None, tokens/s goal, peak goal or None, label)
# Goals of issue 7: temper / peer at least `tok_goal` in tokens/s, at most `peak_goal` in peak memory.
CASES = {
    "1b-lora": (["--shape", "1b", "--mode", "lora"], ["--shape", "1b", "--mode", "lora"], 2.0, 0.5,
                "1B LoRA (peer: PEFT)"),
    "1b-full": (["--shape", "1b", "--mode", "full"], ["--shape", "1b", "--mode", "full"], 1.3, None,
                "1B full fine-tuning (peer: transformers)"),
    "7b-lora": (["--shape", "7b", "--mode", "lora", "--ckpt"], ["--shape", "7b", "--mode", "lora", "--ckpt"], 1.7,
                None, "7B LoRA, ckpt (peer: PEFT)"),
    "7b-qlora": (["--shape", "7b", "--mode", "qlora", "--ckpt"], None, 1.7, 0.8,
                 "7B QLoRA, ckpt (peer: PEFT + bnb, recorded)"),
}
# QLoRA at most 5% slower than temper LoRA on the same shape.
QLORA_VS_LORA_GOAL = 0.95


def train_step(records):
    """The last train_step record of one run, or None."""
    steps = [r for r in records if r.get("bench") == "train_step"]
    return steps[-1] if steps else None


class Runner:
    """Runs each distinct command once and keeps what it printed."""

    def __init__(self, args):
        self.args = args
        self.results = {}    # command tuple -> (exit code, records, stderr tail)
        self.raw = []        # every JSON line, in run order
        self.failed = False  # a run exited non-zero or printed no train_step line

    def run(self, cmd):
        key = tuple(cmd)
        if key in self.results:
            return self.results[key]
        print("# " + " ".join(cmd), file=sys.stderr, flush=True)
        if self.args.dry_run:
            code, stdout, stderr = 0, canned_output(cmd), ""
        else:
            try:
                p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   timeout=self.args.timeout)
                code, stdout, stderr = p.returncode, p.stdout, p.stderr
            except subprocess.TimeoutExpired as e:
                code, stdout, stderr = "timeout", e.stdout or "", "timed out after %s s" % self.args.timeout
                if isinstance(stdout, bytes):
                    stdout = stdout.decode(errors="replace")
            except OSError as e:
                code, stdout, stderr = "not run", "", str(e)
        records = parse_json_lines(stdout)
        # A marker line before each run's own lines, so profile lines can be told apart per run.
        self.raw.append(json.dumps({"bench": "compare_run", "cmd": " ".join(cmd), "exit": code},
                                   separators=(",", ":")))
        self.raw.extend(json.dumps(r, separators=(",", ":")) for r in records)
        tail = "\n".join(stderr.strip().splitlines()[-5:])
        self.results[key] = (code, records, tail)
        if code != 0 or train_step(records) is None:
            self.failed = True
            print("  failed (exit %s, %s): %s" % (code, "no train_step line" if train_step(records) is None
                                                   else "train_step line present", tail), file=sys.stderr)
        return self.results[key]


def fmt_int(x):
    return "—" if x is None else "{:,.0f}".format(x)


def fmt_gib(x):
    return "—" if x is None else "%.2f" % x


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def fmt_ratio(r):
    return "—" if r is None else "%.2fx" % r


def verdict(r, goal, at_least):
    if goal is None:
        return ""
    if r is None:
        return "no data"
    return "met" if (r >= goal if at_least else r <= goal) else "missed"


def field(record, name):
    return None if record is None else record.get(name)


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-bench", default=os.path.join(root, "build-gpu", "bench", "train_bench"))
    p.add_argument("--peer", default=os.path.join(here, "peer_peft.py"))
    p.add_argument("--python", default=sys.executable or "python3", help="interpreter for the peer script")
    p.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of " + ", ".join(CASES))
    p.add_argument("--steps", type=int, default=None, help="passed to both programs (their default: 6)")
    p.add_argument("--profile", action="store_true", help="pass --profile to train_bench (profile lines go to --out)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per run")
    p.add_argument("--out", default=None, help="write every JSON line printed to this file")
    p.add_argument("--dry-run", action="store_true", help="use canned output instead of running anything")
    args = p.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        p.error("unknown case(s) %s; known: %s" % (", ".join(unknown), ", ".join(CASES)))

    extra = ["--steps", str(args.steps)] if args.steps else []
    temper_extra = extra + (["--profile"] if args.profile else [])

    def temper_cmd(case):
        return [args.train_bench] + CASES[case][0] + temper_extra

    def peer_cmd(case):
        return [args.python, args.peer] + CASES[case][1] + extra

    runner = Runner(args)
    rows = []  # markdown rows
    device = None
    for case in cases:
        t_args, peer_args, tok_goal, peak_goal, label = CASES[case]
        t = train_step(runner.run(temper_cmd(case))[1])
        if peer_args is not None:
            peer = train_step(runner.run(peer_cmd(case))[1])
            peer_tok, peer_peak = field(peer, "tokens_per_s"), field(peer, "peak_gib")
        else:
            peer_tok, peer_peak = PEFT_BNB_QLORA_7B_TOKENS_PER_S, PEFT_BNB_QLORA_7B_PEAK_GIB
        device = device or field(t, "device")
        tok, peak = field(t, "tokens_per_s"), field(t, "peak_gib")
        r_tok, r_peak = ratio(tok, peer_tok), ratio(peak, peer_peak)
        rows.append([label, fmt_int(tok), fmt_int(peer_tok), fmt_ratio(r_tok), "≥ %.1fx" % tok_goal,
                     verdict(r_tok, tok_goal, True), fmt_gib(peak), fmt_gib(peer_peak), fmt_ratio(r_peak),
                     "≤ %.1fx" % peak_goal if peak_goal else "", verdict(r_peak, peak_goal, False)])
        if case == "7b-qlora":
            lora = train_step(runner.run(temper_cmd("7b-lora"))[1])
            l_tok, l_peak = field(lora, "tokens_per_s"), field(lora, "peak_gib")
            r = ratio(tok, l_tok)
            rows.append(["7B QLoRA vs temper LoRA, ckpt", fmt_int(tok), fmt_int(l_tok), fmt_ratio(r),
                         "≥ %.2fx" % QLORA_VS_LORA_GOAL, verdict(r, QLORA_VS_LORA_GOAL, True), fmt_gib(peak),
                         fmt_gib(l_peak), fmt_ratio(ratio(peak, l_peak)), "", ""])

    header = ["case", "temper tok/s", "peer tok/s", "ratio", "goal", "met?", "temper peak GiB", "peer peak GiB",
              "ratio", "goal", "met?"]
    print("device: %s%s" % (device or "unknown", " (dry run: canned numbers)" if args.dry_run else ""))
    print()
    print("| " + " | ".join(header) + " |")
    print("| " + " | ".join("---" for _ in header) + " |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if args.out:
        with open(args.out, "w") as f:
            for line in runner.raw:
                f.write(line + "\n")
    return 1 if runner.failed else 0


# Canned output for --dry-run: what the programs printed in the session of docs/performance.md
# (run B), with the noise and extra lines a real run has, so the parsing is exercised too.
_CANNED = {
    ("temper", "1b", "lora", False): (47538, 14.40),
    ("temper", "1b", "full", False): (41059, 29.41),
    ("temper", "7b", "lora", True): (9722, 16.64),
    ("temper", "7b", "qlora", True): (9546, 7.69),
    ("peer", "1b", "lora", False): (36323, 33.56),
    ("peer", "1b", "full", False): (50074, 32.10),
    ("peer", "7b", "lora", True): (6806, 18.12),
}


def canned_output(cmd):
    def value(name, fallback):
        return cmd[cmd.index(name) + 1] if name in cmd else fallback

    impl = "peer" if any(c.endswith(".py") for c in cmd) else "temper"
    shape, mode, ckpt = value("--shape", "1b"), value("--mode", "lora"), "--ckpt" in cmd
    tok, peak = _CANNED[(impl, shape, mode, ckpt)]
    seq, batch = 2048, 4
    peer_impl = "transformers" if mode == "full" else "transformers+peft"
    record = {"bench": "train_step", "impl": "temper" if impl == "temper" else peer_impl, "device": "NVIDIA H200",
              "shape": shape, "mode": mode, "batch": batch, "seq": seq, "ckpt": ckpt,
              "median_step_s": round(batch * seq / tok, 4), "tokens_per_s": tok, "peak_gib": peak}
    lines = ["a log line the program printed", "{not json"]
    if impl == "temper" and "--profile" in cmd:
        lines.append(json.dumps({"bench": "profile", "op": "aten::mm", "calls": 10, "kernels": 10,
                                 "device_ms": 1.0, "share": 0.5}))
    lines.append(json.dumps(record))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
