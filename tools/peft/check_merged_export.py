#!/usr/bin/env python3
"""transformers loads a merged model that temper exported and must compute temper's logits.

    python3 tools/peft/check_merged_export.py DIR

DIR is written by temper_adapter_for_peft --export (tools/peft): export_merged_model's
safetensors + config.json, plus temper_logits.safetensors (input_ids, logits) that temper computed
from the exported directory. Checks that AutoModelForCausalLM loads it without missing,
unexpected or misshapen tensors and that its logits are within --tolerance of temper's. Prints
one JSON line; exits 1 on failure.
"""
import argparse
import json
import os
import sys

import torch
import transformers
from safetensors.torch import load_file


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()

    reference = load_file(os.path.join(args.dir, "temper_logits.safetensors"))
    kwargs = dict(dtype=torch.float32, attn_implementation="eager")
    try:
        model, info = transformers.AutoModelForCausalLM.from_pretrained(args.dir, output_loading_info=True, **kwargs)
    except TypeError:  # a transformers without output_loading_info: the logits still decide
        model, info = transformers.AutoModelForCausalLM.from_pretrained(args.dir, **kwargs), {}
    model.eval()
    problems = [f"{kind}: {sorted(info[kind])}" for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")
                if info.get(kind)]
    with torch.no_grad():
        logits = model(input_ids=reference["input_ids"]).logits.float()
    diff = (logits - reference["logits"]).abs().max().item()
    if diff > args.tolerance:
        problems.append(f"max |transformers - temper| = {diff:.3g} > {args.tolerance}")
    print(json.dumps({"export": args.dir, "class": type(model).__name__, "max_abs_diff": diff,
                      "transformers": transformers.__version__, "ok": not problems, "problems": problems}))
    sys.exit(0 if not problems else 1)


if __name__ == "__main__":
    main()
