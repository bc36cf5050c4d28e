#!/usr/bin/env python3
"""Pre-trains temper's bundled base model: a small LLaMA-architecture causal LM, from scratch.

Data: data/corpora/general_train.txt (Brown Corpus paragraphs, one per line), tokenized with
assets/model/tokenizer.model; each document becomes <s> ids </s>, the documents are concatenated
and cut into sequences of --seq-len tokens (the remainder is dropped). Held-out loss is measured
the same way on general_heldout.txt and medical_heldout.txt.

Training stops at --max-epochs, --max-steps or the --time-budget (seconds of wall time from the
first step, evaluations included), whichever comes first. The learning rate warms up linearly,
then follows a cosine to 10% of its peak over the larger of the step progress and the
time-budget progress, so a run that the budget cuts short still ends on a decayed rate.
The weights with the lowest general held-out loss are kept and saved in bfloat16.

Writes to --out: config.json, model.safetensors, generation_config.json, tokenizer.model,
tokenizer_config.json, training_metrics.json; prints the metrics as one JSON line at the end.

Needs torch, transformers (5.x), sentencepiece; no network.
GPU:   python3 tools/pretrain/pretrain.py --device cuda
Smoke: python3 tools/pretrain/pretrain.py --device cpu --max-steps 3 --out /tmp/pretrain-smoke
"""

import argparse
import copy
import inspect
import json
import math
import os
import random
import shutil
import sys
import time

import sentencepiece as spm
import torch
import transformers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

MODEL = dict(
    hidden_size=256,
    intermediate_size=704,
    num_hidden_layers=6,
    num_attention_heads=8,
    num_key_value_heads=4,
    max_position_embeddings=1024,
    rms_norm_eps=1e-5,
    hidden_act="silu",
    initializer_range=0.02,
    tie_word_embeddings=True,
    attention_bias=False,
    mlp_bias=False,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=None,
)
ROPE_THETA = 10000.0


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpora", default="data/corpora")
    ap.add_argument("--tokenizer", default="assets/model/tokenizer.model")
    ap.add_argument("--out", default="assets/model")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--time-budget", type=float, default=240.0, help="seconds of training")
    ap.add_argument("--max-epochs", type=float, default=16.0)
    ap.add_argument("--max-steps", type=int, default=0, help="0: no limit")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--min-lr-ratio", type=float, default=0.1)
    ap.add_argument("--warmup-steps", type=int, default=100)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--beta1", type=float, default=0.9)
    ap.add_argument("--beta2", type=float, default=0.95)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--eval-every", type=int, default=100, help="steps between evaluations")
    ap.add_argument("--eval-max-batches", type=int, default=None,
                    help="cap on held-out batches per evaluation (default: all on GPU, 4 on CPU)")
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    return ap.parse_args()


def log(msg):
    print(msg, flush=True)


def read_docs(path):
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def pack(sp, docs, seq_len):
    """<s> ids </s> per document, concatenated, cut into [n, seq_len] (remainder dropped)."""
    ids = []
    bos, eos = sp.bos_id(), sp.eos_id()
    for piece_ids in sp.encode(docs, out_type=int):
        ids.append(bos)
        ids.extend(piece_ids)
        ids.append(eos)
    n = len(ids) // seq_len
    if n == 0:
        raise SystemExit(f"fewer than {seq_len} tokens to pack")
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len), len(ids)


def make_config(vocab_size):
    kwargs = dict(MODEL, vocab_size=vocab_size)
    params = inspect.signature(LlamaConfig).parameters
    if "rope_parameters" in params or "rope_theta" not in params:
        # transformers 5: rotary settings live in rope_parameters.
        try:
            return LlamaConfig(**kwargs, rope_parameters={"rope_type": "default",
                                                          "rope_theta": ROPE_THETA})
        except TypeError:
            pass
    return LlamaConfig(**kwargs, rope_theta=ROPE_THETA)


def autocast(device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


@torch.no_grad()
def evaluate(model, data, batch_size, device, max_batches=None):
    """Mean next-token loss over the packed sequences (all sequences have equal length)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for b, start in enumerate(range(0, data.size(0), batch_size)):
        if max_batches is not None and b >= max_batches:
            break
        x = data[start:start + batch_size].to(device, non_blocking=True)
        with autocast(device):
            loss = model(input_ids=x, labels=x, use_cache=False).loss
        total += loss.float().item() * x.size(0)
        count += x.size(0)
    if was_training:
        model.train()
    mean = total / count
    return {"loss": mean, "ppl": math.exp(min(mean, 50.0)), "sequences": count}


def lr_factor(step, warmup, total_steps, elapsed, budget, min_ratio):
    if step < warmup:
        return (step + 1) / warmup
    p_steps = (step - warmup) / max(1, total_steps - warmup)
    p_time = elapsed / budget if budget > 0 else 0.0
    p = min(1.0, max(p_steps, p_time))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))


def save_model_dir(model, sp_path, out_dir, seq_max):
    os.makedirs(out_dir, exist_ok=True)
    save_kwargs = {}
    if "safe_serialization" in inspect.signature(model.save_pretrained).parameters:
        save_kwargs["safe_serialization"] = True
    model.save_pretrained(out_dir, **save_kwargs)
    GenerationConfig(bos_token_id=MODEL["bos_token_id"], eos_token_id=MODEL["eos_token_id"],
                     max_length=seq_max).save_pretrained(out_dir)
    dst = os.path.join(out_dir, "tokenizer.model")
    if not (os.path.exists(dst) and os.path.samefile(sp_path, dst)):
        shutil.copyfile(sp_path, dst)
    tok_cfg = {
        "tokenizer_class": "LlamaTokenizer",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": None,
        "add_bos_token": True,
        "add_eos_token": False,
        "model_max_length": seq_max,
        "clean_up_tokenization_spaces": False,
        "legacy": False,
    }
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(tok_cfg, f, indent=2)
        f.write("\n")


def check_saved(out_dir, sp, docs, reference_model, device):
    """Reloads what was saved: the weights must give the same loss, and the Hugging Face
    tokenizer built from tokenizer_config.json should encode like sentencepiece (reported only)."""
    result = {}
    reloaded = LlamaForCausalLM.from_pretrained(out_dir, dtype=torch.float32).to(device)
    x = pack(sp, docs[:64], 64)[0][:8].to(device)
    with torch.no_grad():
        a = reloaded(input_ids=x, labels=x, use_cache=False).loss.item()
        b = reference_model.float()(input_ids=x, labels=x, use_cache=False).loss.item()
    result["reload_loss_abs_diff"] = abs(a - b)
    try:
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(out_dir)
        # Ordinary text only: the two differ on text that starts with a space (sentencepiece
        # keeps it as an extra "▁") and on "</s>" written in the text (special to Hugging Face).
        sample = docs[:300] + ["Hello  world,  café 1913 ½", "tabs\tand\nnewline"]
        same = sum(tok(s)["input_ids"] == [sp.bos_id()] + sp.encode(s) for s in sample)
        result["hf_tokenizer_matches_sentencepiece"] = same == len(sample)
        result["hf_tokenizer_sample_matches"] = f"{same}/{len(sample)}"
    except Exception as e:  # reported, not fatal: the C++ side uses tokenizer.model directly
        result["hf_tokenizer_matches_sentencepiece"] = None
        result["hf_tokenizer_error"] = f"{type(e).__name__}: {e}"[:300]
    return result


def main():
    args = parse_args()
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.manual_seed_all(args.seed)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    eval_max = args.eval_max_batches
    if eval_max is None and device.type != "cuda":
        eval_max = 4
    eval_max = eval_max or None

    sp = spm.SentencePieceProcessor(model_file=args.tokenizer)
    if (sp.bos_id(), sp.eos_id()) != (MODEL["bos_token_id"], MODEL["eos_token_id"]):
        raise SystemExit(f"tokenizer has bos/eos {sp.bos_id()}/{sp.eos_id()}, expected 1/2")

    t0 = time.monotonic()
    docs = {name: read_docs(os.path.join(args.corpora, name + ".txt"))
            for name in ("general_train", "general_heldout", "medical_heldout")}
    data, ntok = {}, {}
    for name, d in docs.items():
        data[name], ntok[name] = pack(sp, d, args.seq_len)
        log(f"data {name}: {len(d)} documents, {ntok[name]} tokens, "
            f"{data[name].size(0)} sequences of {args.seq_len}")
    log(f"tokenized in {time.monotonic() - t0:.1f}s")

    config = make_config(sp.get_piece_size())
    model = LlamaForCausalLM(config).to(device)
    if model.get_output_embeddings().weight is not model.get_input_embeddings().weight:
        raise SystemExit("expected tied input and output embeddings")
    n_params = sum(p.numel() for p in model.parameters())  # tied weights counted once
    log(f"model: {n_params} parameters, transformers {transformers.__version__}, "
        f"torch {torch.__version__}, device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt_kwargs = dict(lr=args.lr, betas=(args.beta1, args.beta2), eps=1e-8)
    if device.type == "cuda":
        opt_kwargs["fused"] = True
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], **opt_kwargs)

    step_model = torch.compile(model) if args.compile else model

    train = data["general_train"].to(device)
    n_seq = train.size(0)
    steps_per_epoch = n_seq // args.batch_size
    if steps_per_epoch == 0:
        raise SystemExit("fewer training sequences than one batch")
    total_steps = max(1, int(args.max_epochs * steps_per_epoch))
    if args.max_steps:
        total_steps = min(total_steps, args.max_steps)
    warmup = max(1, min(args.warmup_steps, total_steps // 10))
    log(f"plan: {steps_per_epoch} steps/epoch, at most {total_steps} steps, warm-up {warmup}, "
        f"time budget {args.time_budget:.0f}s")

    gen = torch.Generator().manual_seed(args.seed)
    history = []
    best = None
    best_state = None

    def run_eval(step, epoch, elapsed):
        nonlocal best, best_state
        g = evaluate(model, data["general_heldout"], args.batch_size, device, eval_max)
        m = evaluate(model, data["medical_heldout"], args.batch_size, device, eval_max)
        rec = {"step": step, "epoch": round(epoch, 3), "elapsed_s": round(elapsed, 1),
               "general_heldout_loss": g["loss"], "medical_heldout_loss": m["loss"]}
        history.append(rec)
        mark = ""
        if best is None or g["loss"] < best["general_heldout_loss"]:
            best = dict(rec, general_heldout_ppl=g["ppl"], medical_heldout_ppl=m["ppl"])
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            mark = " *best"
        log(f"eval step {step} epoch {epoch:.2f}: general held-out loss {g['loss']:.4f} "
            f"ppl {g['ppl']:.1f} | medical held-out loss {m['loss']:.4f} ppl {m['ppl']:.1f}"
            f"{mark}")

    model.train()
    step = 0
    perm = None
    loss_sum = torch.zeros((), device=device)
    loss_n = 0
    last_train_loss = float("nan")
    start = time.monotonic()
    last_log = start
    stop_reason = "max_steps" if args.max_steps and total_steps == args.max_steps else "max_epochs"
    while step < total_steps:
        elapsed = time.monotonic() - start
        if elapsed >= args.time_budget:
            stop_reason = "time_budget"
            break
        pos = step % steps_per_epoch
        if pos == 0:
            perm = torch.randperm(n_seq, generator=gen).to(device)
        idx = perm[pos * args.batch_size:(pos + 1) * args.batch_size]
        x = train[idx]
        f = lr_factor(step, warmup, total_steps, elapsed, args.time_budget, args.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = args.lr * f
        with autocast(device):
            loss = step_model(input_ids=x, labels=x, use_cache=False).loss
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_sum += loss.detach().float()
        loss_n += 1
        step += 1

        if step % args.log_every == 0 or step == total_steps:
            now = time.monotonic()
            last_train_loss = (loss_sum / loss_n).item()
            tok_s = loss_n * x.numel() / max(now - last_log, 1e-9)
            log(f"step {step}/{total_steps} epoch {step / steps_per_epoch:.2f} "
                f"lr {args.lr * f:.2e} loss {last_train_loss:.4f} {tok_s:,.0f} tok/s "
                f"elapsed {now - start:.1f}s")
            loss_sum.zero_()
            loss_n = 0
            last_log = now
        if step % args.eval_every == 0:
            run_eval(step, step / steps_per_epoch, time.monotonic() - start)
    if loss_n:
        last_train_loss = (loss_sum / loss_n).item()
    train_s = time.monotonic() - start
    if not history or history[-1]["step"] != step:
        run_eval(step, step / steps_per_epoch, train_s)
    log(f"stopped after {step} steps ({step / steps_per_epoch:.2f} epochs, {train_s:.1f}s): "
        f"{stop_reason}; best general held-out loss {best['general_heldout_loss']:.4f} "
        f"at step {best['step']}")

    # Ship the best weights in bfloat16 and measure what ships.
    model.load_state_dict(best_state)
    model.to(torch.bfloat16)
    # On a CPU, bf16 arithmetic is slow and less exact: compute with the bf16-rounded weights
    # held in float32 there; on a GPU run the bf16 weights under autocast.
    shipped = model if device.type == "cuda" else copy.deepcopy(model).float()
    shipped_g = evaluate(shipped, data["general_heldout"], args.batch_size, device, eval_max)
    shipped_m = evaluate(shipped, data["medical_heldout"], args.batch_size, device, eval_max)
    del shipped
    save_model_dir(model, args.tokenizer, args.out, MODEL["max_position_embeddings"])
    checks = check_saved(args.out, sp, docs["general_heldout"], model, device)

    metrics = {
        "model": "LlamaForCausalLM",
        "parameters": n_params,
        "config": dict({k: v for k, v in MODEL.items()}, vocab_size=sp.get_piece_size(),
                       rope_theta=ROPE_THETA),
        "data": {"train_tokens": ntok["general_train"], "train_sequences": n_seq,
                 "general_heldout_tokens": ntok["general_heldout"],
                 "medical_heldout_tokens": ntok["medical_heldout"], "seq_len": args.seq_len},
        "training": {"steps": step, "epochs": round(step / steps_per_epoch, 3),
                     "tokens_seen": step * args.batch_size * args.seq_len,
                     "train_seconds": round(train_s, 1), "stop_reason": stop_reason,
                     "batch_size": args.batch_size, "lr": args.lr,
                     "min_lr_ratio": args.min_lr_ratio, "warmup_steps": warmup,
                     "weight_decay": args.weight_decay, "betas": [args.beta1, args.beta2],
                     "grad_clip": args.grad_clip, "seed": args.seed,
                     "time_budget_s": args.time_budget, "max_epochs": args.max_epochs,
                     "last_train_loss": last_train_loss,
                     "eval_max_batches": eval_max},
        "best": best,
        "shipped_bf16": {"general_heldout_loss": shipped_g["loss"],
                         "general_heldout_ppl": shipped_g["ppl"],
                         "medical_heldout_loss": shipped_m["loss"],
                         "medical_heldout_ppl": shipped_m["ppl"]},
        "checks": checks,
        "history": history,
        "environment": {"device": str(device),
                        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda"
                        else None,
                        "torch": torch.__version__, "transformers": transformers.__version__,
                        "sentencepiece": spm.__version__, "python": sys.version.split()[0]},
    }
    with open(os.path.join(args.out, "training_metrics.json"), "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=2)
        f.write("\n")
    summary = {k: metrics[k] for k in ("parameters", "best", "shipped_bf16", "checks")}
    summary["training"] = {k: metrics["training"][k]
                           for k in ("steps", "epochs", "train_seconds", "stop_reason")}
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
