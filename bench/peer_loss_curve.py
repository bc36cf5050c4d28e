#!/usr/bin/env python3
"""The peer of bench/loss_curve (build*/bench/loss_curve): transformers, + PEFT for LoRA, trained on
the tokens that loss_curve wrote, from the same initial weights, with the same optimizer settings.
bench/loss_curve.py runs both and compares the curves.

    python3 bench/peer_loss_curve.py --model assets/model --dir DIR --mode lora|full \
        [--lr 1e-3] [--device cuda|cpu] [--dtype f32|bf16] [--attn sdpa|eager] [--max-grad-norm 1.0] [--seed 0]

Reads DIR/tokens.safetensors ("input_ids" int64 [steps, batch, seq]) and, for lora,
DIR/initial_adapter (temper's LoraAdapter::save before its first step). Writes DIR/peer.jsonl, one
line per step: {"impl":"transformers+peft"|"transformers","step":k,"loss":..,"grad_norm":..,...},
and DIR/peer_info.json (versions, device, attention, what was checked).

One step, as temper's Trainer takes it (lib/train/trainer.cc):
  loss = model(input_ids=ids, labels=ids).loss   the mean over the batch*(seq-1) shifted tokens
  loss.backward()
  grad_norm = clip_grad_norm_(params, 1.0)       2-norm of the per-tensor norms, before clipping;
                                                 gradients scaled by min(1, 1.0 / (norm + 1e-6))
  AdamW(betas (0.9, 0.999), eps 1e-8, weight_decay 0), constant lr: fused=True on CUDA (temper uses
  the same fused kernel there), the single-tensor loop on the CPU (temper's CPU path)
Trainable tensors that are not fp32 (full fine-tuning in bf16) train through fp32 masters, as
temper's do: the bf16 gradient is cast to fp32, clipped and stepped there, and the master is copied
back into the bf16 weight. LoRA adapters are fp32 in both (PEFT's autocast_adapter_dtype default).
A step whose loss or norm is not finite is skipped (no update), as temper skips it.
"""
import argparse
import json
import math
import os
import random
import sys

import torch
import transformers
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}


def load_base(args):
    """The checkpoint in the requested dtype with an explicit attention implementation."""
    major_minor = tuple(int(x) for x in transformers.__version__.split(".")[:2] if x.isdigit())
    # transformers 4.56 renamed from_pretrained's torch_dtype to dtype (5.x warns on the old name).
    dtype_key = "dtype" if major_minor >= (4, 56) else "torch_dtype"
    kwargs = {dtype_key: DTYPES[args.dtype], "attn_implementation": args.attn}
    model = AutoModelForCausalLM.from_pretrained(args.model, **kwargs)
    return model.to(args.device)


def peft_parameter_name(key):
    """The in-memory name PEFT gives an on-disk adapter tensor (it inserts the adapter name)."""
    return key.replace(".lora_A.", ".lora_A.default.").replace(".lora_B.", ".lora_B.default.")


def load_lora(base, adapter_dir):
    """PeftModel over `base` with temper's initial adapter, checked tensor by tensor; a description."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(base, adapter_dir, is_trainable=True)
    with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
        config = json.load(f)
    scaling = config["lora_alpha"] / (math.sqrt(config["r"]) if config.get("use_rslora") else config["r"])
    stored = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    params = dict(model.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    problems = []
    for key, value in stored.items():
        name = peft_parameter_name(key)
        if name not in params:
            problems.append("%s: PEFT has no parameter %s" % (key, name))
        elif not torch.equal(params[name].detach().float().cpu(), value.float()):
            problems.append("%s: PEFT holds other values than the file" % key)
        elif name not in trainable:
            problems.append("%s: loaded but not trainable" % key)
    if len(trainable) != len(stored):
        problems.append("PEFT trains %d tensors, the adapter file holds %d" % (len(trainable), len(stored)))
    modules = 0
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            modules += 1
            if abs(module.scaling["default"] - scaling) > 1e-12:
                problems.append("%s: scaling %r, expected alpha/r = %r" % (name, module.scaling["default"], scaling))
            dropout = module.lora_dropout["default"]
            if not isinstance(dropout, torch.nn.Identity) and getattr(dropout, "p", 0.0) != 0.0:
                problems.append("%s: LoRA dropout %r is not 0" % (name, dropout))
    if problems:
        raise SystemExit("peer_loss_curve: the initial adapter did not load as temper wrote it:\n  " +
                         "\n  ".join(problems[:20]))
    adapter_dtypes = sorted({str(params[peft_parameter_name(k)].dtype) for k in stored})
    return model, {"adapter_tensors": len(stored), "adapter_modules": modules, "scaling": scaling,
                   "adapter_dtypes": adapter_dtypes, "adapter_checked": "values equal to the file, all trainable"}


def total_norm(grads):
    """What clip_grad_norm_ returns: the 2-norm of the per-tensor 2-norms."""
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the Hugging Face model directory loss_curve loaded")
    p.add_argument("--dir", required=True, help="loss_curve's --out directory")
    p.add_argument("--mode", choices=["lora", "full"], required=True)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--dtype", default="f32", choices=sorted(DTYPES))
    p.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"],
                   help="sdpa: torch's scaled_dot_product_attention, what temper calls with libtorch >= 2.5")
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("peer_loss_curve: --device cuda but torch sees no GPU")
    args.device = torch.device("cuda", 0) if args.device == "cuda" else torch.device("cpu")

    # Nothing here draws random numbers (dropout is 0, the adapter is loaded), but seed anyway.
    random.seed(args.seed)
    torch.manual_seed(args.seed)  # every device's generator
    # fp32 matmuls in full fp32 (no TF32), libtorch's default, which temper keeps.
    torch.set_float32_matmul_precision("highest")

    ids_all = load_file(os.path.join(args.dir, "tokens.safetensors"))["input_ids"]  # [steps, B, T] int64
    if ids_all.dim() != 3 or ids_all.dtype != torch.int64:
        raise SystemExit("peer_loss_curve: tokens.safetensors: input_ids must be int64 [steps, batch, seq], got %s %s"
                         % (ids_all.dtype, list(ids_all.shape)))

    model = load_base(args)
    info = {"torch": torch.__version__, "transformers": transformers.__version__, "mode": args.mode,
            "dtype": args.dtype, "attn": args.attn, "device": str(args.device),
            "device_name": torch.cuda.get_device_name(0) if args.device.type == "cuda" else "cpu",
            "float32_matmul_precision": torch.get_float32_matmul_precision()}
    if args.mode == "lora":
        import peft

        info["peft"] = peft.__version__
        model, described = load_lora(model, os.path.join(args.dir, "initial_adapter"))
        info.update(described)
        impl = "transformers+peft"
    else:
        for q in model.parameters():
            q.requires_grad_(True)
        impl = "transformers"
    model.train()

    params = [q for q in model.parameters() if q.requires_grad]  # tied weights appear once
    uses_masters = any(q.dtype != torch.float32 for q in params)
    masters = [q.detach().float().clone() for q in params] if uses_masters else params
    on_cuda = args.device.type == "cuda"
    opt = torch.optim.AdamW(masters, lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                            **({"fused": True} if on_cuda else {"foreach": False}))
    info.update({"trainable_tensors": len(params), "trainable_elements": sum(q.numel() for q in params),
                 "fp32_masters": uses_masters, "adamw": "fused" if on_cuda else "single-tensor",
                 "steps": ids_all.size(0), "batch": ids_all.size(1), "seq": ids_all.size(2), "lr": args.lr,
                 "max_grad_norm": args.max_grad_norm})
    with open(os.path.join(args.dir, "peer_info.json"), "w") as f:
        json.dump(info, f, indent=2, sort_keys=True)
    print("peer_loss_curve: " + json.dumps(info, sort_keys=True), file=sys.stderr, flush=True)

    with open(os.path.join(args.dir, "peer.jsonl"), "w") as out:
        for k in range(ids_all.size(0)):
            ids = ids_all[k].to(args.device)  # [B, T]
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss
            loss.backward()
            if uses_masters:
                for m, q in zip(masters, params):
                    m.grad = q.grad.float() if q.grad is not None else torch.zeros_like(m)
                    q.grad = None
            for m in masters:  # a tensor the loss does not reach counts as a zero gradient, as in temper
                if m.grad is None:
                    m.grad = torch.zeros_like(m)
            loss_value = loss.item()
            if args.max_grad_norm > 0:
                norm = torch.nn.utils.clip_grad_norm_(masters, args.max_grad_norm).item()
            else:
                norm = total_norm([m.grad for m in masters]).item()
            skipped = not (math.isfinite(loss_value) and math.isfinite(norm))
            if not skipped:
                opt.step()
                if uses_masters:
                    with torch.no_grad():
                        for m, q in zip(masters, params):
                            q.copy_(m)
            opt.zero_grad(set_to_none=True)
            model.zero_grad(set_to_none=True)
            line = json.dumps({"impl": impl, "mode": args.mode, "step": k + 1, "loss": loss_value, "grad_norm": norm,
                               "tokens": int(ids[:, 1:].ne(-100).sum().item()), "lr": args.lr, "skipped": skipped})
            print(line, flush=True)
            out.write(line + "\n")
            out.flush()


if __name__ == "__main__":
    main()
