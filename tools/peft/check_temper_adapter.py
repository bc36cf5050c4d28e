#!/usr/bin/env python3
"""PEFT loads an adapter that temper saved and must compute temper's logits.

    python3 tools/peft/check_temper_adapter.py DIR [--base tests/fixtures/parity/llama_gqa]

DIR is written by temper_adapter_for_peft (tools/peft): adapter_config.json and
adapter_model.safetensors from LoraAdapter::save, plus temper_logits.safetensors (input_ids, logits).
Checks that PeftModel.from_pretrained loads every tensor of the file into the module PEFT names
by it, and that its logits are within --tolerance of temper's. Prints one JSON line; exits 1 on
failure.
"""
import argparse
import json
import os
import sys

import peft
import torch
import transformers
from peft import PeftModel
from safetensors.torch import load_file


def peft_parameter_name(key):
    """The in-memory name of an on-disk adapter tensor (PEFT inserts the adapter name)."""
    if key.endswith(".lora_magnitude_vector"):
        return key + ".default.weight"
    return key.replace(".lora_A.", ".lora_A.default.").replace(".lora_B.", ".lora_B.default.")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("--base", default="tests/fixtures/parity/llama_gqa")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()

    reference = load_file(os.path.join(args.dir, "temper_logits.safetensors"))
    base = transformers.AutoModelForCausalLM.from_pretrained(args.base, dtype=torch.float32,
                                                             attn_implementation="eager")
    model = PeftModel.from_pretrained(base, args.dir).eval()

    params = dict(model.named_parameters())
    problems = []
    stored = load_file(os.path.join(args.dir, "adapter_model.safetensors"))
    for key, value in stored.items():
        name = peft_parameter_name(key)
        if name not in params:
            problems.append(f"{key}: PEFT has no parameter {name}")
        elif not torch.equal(params[name].detach().float().cpu(), value.float()):
            problems.append(f"{key}: PEFT holds other values than the file")
    adapter_params = [n for n in params if "lora_" in n]
    if len(adapter_params) != len(stored):
        problems.append(f"PEFT built {len(adapter_params)} adapter tensors, the file holds {len(stored)}")

    with torch.no_grad():
        logits = model(input_ids=reference["input_ids"]).logits.float()
        with model.disable_adapter():
            base_logits = model(input_ids=reference["input_ids"]).logits.float()
    diff = (logits - reference["logits"]).abs().max().item()
    effect = (base_logits - reference["logits"]).abs().max().item()
    if diff > args.tolerance:
        problems.append(f"max |PEFT - temper| = {diff:.3g} > {args.tolerance}")
    if effect < 1e-2:
        problems.append("the adapter barely changes the logits: the check would prove nothing")
    print(json.dumps({"adapter": args.dir, "max_abs_diff": diff, "adapter_effect": effect,
                      "tensors": len(stored), "peft": peft.__version__, "transformers": transformers.__version__,
                      "ok": not problems, "problems": problems}))
    sys.exit(0 if not problems else 1)


if __name__ == "__main__":
    main()
