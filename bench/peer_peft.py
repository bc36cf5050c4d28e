#!/usr/bin/env python3
"""The peer of bench/train_bench: transformers (+ PEFT for LoRA) on the same shapes and settings,
as ../shared/baselines.md measured them: random weights, bf16, sdpa, AdamW(fused), labels = inputs,
median step of steps 3..N, torch.cuda.max_memory_allocated. Prints one JSON line.

    python3 bench/peer_peft.py --shape 1b --mode lora --batch 4 --seq 2048 --steps 6 [--ckpt]
"""
import argparse
import json
import statistics
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

SHAPES = {
    "1b": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
               num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=True, rope_theta=500000.0),
    "7b": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=32, tie_word_embeddings=False),
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shape", default="1b")
    p.add_argument("--mode", default="lora")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--ckpt", action="store_true")
    a = p.parse_args()
    torch.manual_seed(0)
    config = LlamaConfig(**SHAPES[a.shape], max_position_embeddings=4096, rms_norm_eps=1e-5)
    model = LlamaForCausalLM(config).to(device="cuda", dtype=torch.bfloat16)
    model.config._attn_implementation = "sdpa"
    if a.ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if a.mode == "lora":
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM",
                                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                                 "gate_proj", "up_proj", "down_proj"]))
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=True)
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(a.steps):
        ids = torch.randint(0, config.vocab_size, (a.batch, a.seq), device="cuda")
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    median = statistics.median(times[2:])
    print(json.dumps({"bench": "train_step", "impl": "transformers+peft" if a.mode == "lora" else "transformers",
                      "device": torch.cuda.get_device_name(0), "shape": a.shape, "mode": a.mode, "batch": a.batch,
                      "seq": a.seq, "ckpt": a.ckpt, "median_step_s": round(median, 4),
                      "tokens_per_s": round(a.batch * a.seq / median),
                      "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}))


if __name__ == "__main__":
    main()
