#!/usr/bin/env python3
"""temper's loss curve beside transformers + PEFT's on the same tokens and initial weights (issue 7).

    python3 bench/loss_curve.py --device cuda --dtype f32 --out-jsonl loss_curve.jsonl > loss_curve.md
    python3 bench/loss_curve.py --modes lora --steps 10 --dtype bf16      # a subset; bf16 tolerance 2e-2
    python3 bench/loss_curve.py --dry-run                                 # canned curves: the table, nothing run
    (on the GPU machine after tools/gpu/build.sh, or PART=losscurve tools/gpu/session_job.sh; data/corpora
    comes from scripts/corpora.sh and must travel with the tree)

For each mode (lora, full): build-gpu (else build)/bench/loss_curve writes WORK/<mode>/tokens.safetensors
and, for lora, the initial PEFT adapter, trains and writes temper.jsonl; bench/peer_loss_curve.py then
trains transformers (+ PEFT) from those files and writes peer.jsonl. Prints a markdown table per mode
(step, losses, grad norms, relative differences |temper - peer| / |peer|) and a summary; exit 1 when a
run failed or the largest loss difference exceeds --tol (default 1e-3 for f32, 2e-2 for bf16), else 0.
--out-jsonl gets every row and each mode's summary. Standard library only.
"""
import argparse
import json
import math
import os
import subprocess
import sys

from jsonl import parse_json_lines  # bench/jsonl.py: the scripts run from bench/

MODES = ("lora", "full")
DEFAULT_TOL = {"f32": 1e-3, "bf16": 2e-2}


def read_steps(path):
    """{step: record} of a jsonl file's step records; ({}, reason) when it is missing or has none."""
    if not os.path.exists(path):
        return {}, "%s is missing" % path
    with open(path) as f:
        records = [r for r in parse_json_lines(f.read()) if isinstance(r.get("step"), int)]
    if not records:
        return {}, "%s has no step line" % path
    return {r["step"]: r for r in records}, None


def rel_diff(a, b):
    """|a - b| / |b|, None when either is missing or not finite."""
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
        return None
    return abs(a - b) / max(abs(b), 1e-12)


def fmt(x, spec):
    return "—" if x is None else format(x, spec)


def max_or_none(values):
    values = [v for v in values if v is not None]
    return max(values) if values else None


def compare(mode, temper, peer):
    """Rows (dicts) for every step either side has, and the mode's summary dict."""
    rows = []
    for step in sorted(set(temper) | set(peer)):
        t, q = temper.get(step, {}), peer.get(step, {})
        row = {"type": "step", "mode": mode, "step": step,
               "temper_loss": t.get("loss"), "peer_loss": q.get("loss"),
               "temper_grad_norm": t.get("grad_norm"), "peer_grad_norm": q.get("grad_norm"),
               "temper_tokens": t.get("tokens"), "peer_tokens": q.get("tokens"),
               "peer_impl": q.get("impl")}
        row["loss_rel_diff"] = rel_diff(row["temper_loss"], row["peer_loss"])
        row["grad_norm_rel_diff"] = rel_diff(row["temper_grad_norm"], row["peer_grad_norm"])
        rows.append(row)
    problems = []
    missing = [r["step"] for r in rows if r["loss_rel_diff"] is None]
    if missing:
        problems.append("steps without a finite loss on both sides: %s" % missing[:10])
    tokens = [r["step"] for r in rows if r["temper_tokens"] is not None and r["peer_tokens"] is not None
              and r["temper_tokens"] != r["peer_tokens"]]
    if tokens:
        problems.append("scored-token counts differ at steps %s" % tokens[:10])
    skipped = [r for r in list(temper.values()) + list(peer.values()) if r.get("skipped")]
    if skipped:
        problems.append("%d skipped (non-finite) steps" % len(skipped))
    summary = {"type": "summary", "mode": mode, "steps": len(rows),
               "max_loss_rel_diff": max_or_none(r["loss_rel_diff"] for r in rows),
               "max_grad_norm_rel_diff": max_or_none(r["grad_norm_rel_diff"] for r in rows),
               "first_loss": rows[0]["temper_loss"] if rows else None,
               "last_loss": rows[-1]["temper_loss"] if rows else None,
               "problems": problems}
    return rows, summary


def markdown(mode, rows, summary, tol):
    label = {"lora": "LoRA r 16, alpha 32, q k v o gate up down (peer: transformers + PEFT)",
             "full": "full fine-tuning (peer: transformers)"}.get(mode, mode)
    lines = ["## %s" % label, "",
             "| step | temper loss | peer loss | loss rel. diff | temper grad norm | peer grad norm | norm rel. diff |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append("| %d | %s | %s | %s | %s | %s | %s |" % (
            r["step"], fmt(r["temper_loss"], ".6f"), fmt(r["peer_loss"], ".6f"), fmt(r["loss_rel_diff"], ".2e"),
            fmt(r["temper_grad_norm"], ".6f"), fmt(r["peer_grad_norm"], ".6f"), fmt(r["grad_norm_rel_diff"], ".2e")))
    worst = summary["max_loss_rel_diff"]
    verdict = "no data" if worst is None else ("within" if worst <= tol and not summary["problems"] else "OUTSIDE")
    lines += ["", "%s: max loss rel. diff %s, max grad-norm rel. diff %s over %d steps; loss %s -> %s; "
              "tolerance %.0e: %s%s" % (mode, fmt(worst, ".2e"), fmt(summary["max_grad_norm_rel_diff"], ".2e"),
                                        summary["steps"], fmt(summary["first_loss"], ".4f"),
                                        fmt(summary["last_loss"], ".4f"), tol, verdict,
                                        "".join("; " + p for p in summary["problems"])), ""]
    return lines


def run(cmd, timeout, log):
    """Runs `cmd`; stdout and stderr go to `log` (a file object). Returns the exit code, or a reason string."""
    print("# " + " ".join(cmd), file=sys.stderr, flush=True)
    log.write("# " + " ".join(cmd) + "\n")
    log.flush()
    try:
        return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        return "timed out after %s s" % timeout
    except OSError as e:
        return "not run: %s" % e


def write_canned(work, mode, steps):
    """--dry-run: what the two programs would leave in `work` (a peer a few ulps-of-f32 away)."""
    os.makedirs(work, exist_ok=True)
    with open(os.path.join(work, "temper.jsonl"), "w") as t, open(os.path.join(work, "peer.jsonl"), "w") as q:
        q.write("a warning line the peer printed\n{not json\n")
        for k in range(1, steps + 1):
            loss = 5.5 - 0.6 * (1 - math.exp(-k / 10.0)) + 0.05 * math.sin(1.7 * k)
            norm = (0.9 if mode == "lora" else 4.0) * (1 + 0.2 * math.cos(k))
            drift = 3e-6 * math.sin(3.0 * k) * k / steps
            t.write(json.dumps({"impl": "temper", "mode": mode, "step": k, "loss": loss, "grad_norm": norm,
                                "tokens": 2040, "lr": 1e-3, "skipped": False}) + "\n")
            q.write(json.dumps({"impl": "transformers+peft" if mode == "lora" else "transformers", "mode": mode,
                                "step": k, "loss": loss * (1 + drift), "grad_norm": norm * (1 - 4 * drift),
                                "tokens": 2040, "lr": 1e-3, "skipped": False}) + "\n")
    with open(os.path.join(work, "peer_info.json"), "w") as f:
        json.dump({"torch": "canned", "transformers": "canned", "peft": "canned", "device_name": "dry run",
                   "attn": "sdpa", "dtype": "f32"}, f)


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    binary = os.path.join(root, "build-gpu", "bench", "loss_curve")
    if not os.path.exists(binary):
        binary = os.path.join(root, "build", "bench", "loss_curve")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--loss-curve", default=binary, help="temper's program (default: build-gpu, else build)")
    p.add_argument("--peer", default=os.path.join(here, "peer_loss_curve.py"))
    p.add_argument("--python", default=sys.executable or "python3", help="interpreter for the peer script")
    p.add_argument("--model", default=os.path.join(root, "assets", "model"))
    p.add_argument("--text", default=os.path.join(root, "data", "corpora", "medical_train.txt"))
    p.add_argument("--work", default=os.path.join("/tmp", "temper_loss_curve"),
                   help="each mode's files go to WORK/<mode> (tokens, initial adapter, both jsonl)")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of " + ", ".join(MODES))
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate of LoRA (and of full unless --full-lr)")
    p.add_argument("--full-lr", type=float, default=None, help="learning rate of full fine-tuning (default: --lr)")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--dtype", default="f32", choices=sorted(DEFAULT_TOL))
    p.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"], help="the peer's attention implementation")
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tol", type=float, default=None, help="largest allowed loss rel. diff (default by --dtype)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per run")
    p.add_argument("--out-jsonl", default=None, help="every comparison row and summary as JSON lines")
    p.add_argument("--dry-run", action="store_true", help="canned curves instead of running the programs")
    args = p.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        p.error("unknown or no mode(s) %s; known: %s" % (", ".join(unknown), ", ".join(MODES)))
    tol = args.tol if args.tol is not None else DEFAULT_TOL[args.dtype]

    failed = []
    all_rows = []
    out = ["# Loss curves: temper and transformers + PEFT, same tokens and initial weights", ""]
    info_line = None
    for mode in modes:
        work = os.path.join(args.work, mode)
        lr = args.full_lr if mode == "full" and args.full_lr is not None else args.lr
        if args.dry_run:
            write_canned(work, mode, args.steps)
        else:
            os.makedirs(work, exist_ok=True)
            temper_cmd = [args.loss_curve, "--model", args.model, "--text", args.text, "--out", work, "--mode", mode,
                          "--steps", str(args.steps), "--batch", str(args.batch), "--seq", str(args.seq),
                          "--lr", repr(lr), "--device", args.device, "--dtype", args.dtype,
                          "--max-grad-norm", repr(args.max_grad_norm), "--seed", str(args.seed)]
            peer_cmd = [args.python, args.peer, "--model", args.model, "--dir", work, "--mode", mode,
                        "--lr", repr(lr), "--device", args.device, "--dtype", args.dtype, "--attn", args.attn,
                        "--max-grad-norm", repr(args.max_grad_norm), "--seed", str(args.seed)]
            for name in ("temper.jsonl", "peer.jsonl", "peer_info.json"):  # no stale curve survives a failed run
                if os.path.exists(os.path.join(work, name)):
                    os.remove(os.path.join(work, name))
            with open(os.path.join(work, "run.log"), "w") as log:
                code = run(temper_cmd, args.timeout, log)
                if code != 0:
                    failed.append("%s: loss_curve exit %s (see %s)" % (mode, code, log.name))
                else:  # the peer needs the tokens and adapter temper wrote
                    code = run(peer_cmd, args.timeout, log)
                    if code != 0:
                        failed.append("%s: peer exit %s (see %s)" % (mode, code, log.name))
        temper, why_t = read_steps(os.path.join(work, "temper.jsonl"))
        peer, why_p = read_steps(os.path.join(work, "peer.jsonl"))
        failed += ["%s: %s" % (mode, why) for why in (why_t, why_p) if why]
        info_path = os.path.join(work, "peer_info.json")
        if info_line is None and os.path.exists(info_path):
            with open(info_path) as f:
                info = json.load(f)
            info_line = ("peer: torch %s, transformers %s%s, attention %s, on %s" % (
                info.get("torch"), info.get("transformers"),
                ", peft %s" % info["peft"] if "peft" in info else "", info.get("attn"), info.get("device_name")))
        rows, summary = compare(mode, temper, peer)
        summary.update({"lr": lr, "dtype": args.dtype, "device": args.device, "tol": tol})
        all_rows += rows + [summary]
        out += markdown(mode, rows, summary, tol)
        worst = summary["max_loss_rel_diff"]
        if worst is None or worst > tol or summary["problems"]:
            failed.append("%s: max loss rel. diff %s (tolerance %g)%s" % (
                mode, fmt(worst, ".2e"), tol, "".join("; " + q for q in summary["problems"])))

    header = ("%s %s, %d steps of %d x %d tokens, lr %g%s, max grad norm %g, AdamW (0.9, 0.999, 1e-8, wd 0), "
              "constant schedule%s" % (args.device, args.dtype, args.steps, args.batch, args.seq, args.lr,
                                       "" if args.full_lr is None else " (full: %g)" % args.full_lr,
                                       args.max_grad_norm, " — dry run: canned curves" if args.dry_run else ""))
    out[2:2] = [header, info_line or "peer: no peer_info.json", ""]
    summaries = [r for r in all_rows if r["type"] == "summary"]
    out.append("summary: max loss rel. diff %s, max grad-norm rel. diff %s (%s); tolerance %g: %s" % (
        fmt(max_or_none(s["max_loss_rel_diff"] for s in summaries), ".2e"),
        fmt(max_or_none(s["max_grad_norm_rel_diff"] for s in summaries), ".2e"),
        ", ".join(s["mode"] for s in summaries), tol, "FAILED" if failed else "agree"))
    print("\n".join(out))
    for reason in failed:
        print("loss_curve.py: " + reason, file=sys.stderr)
    if args.out_jsonl:
        with open(args.out_jsonl, "w") as f:
            for row in all_rows:
                f.write(json.dumps(row, separators=(",", ":")) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
