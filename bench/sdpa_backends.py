#!/usr/bin/env python3
"""Which of PyTorch's SDPA backends is fastest for the benchmark shapes' attention (forward +
backward, causal, bf16), so temper can ask for it instead of taking the default order.

    python3 bench/sdpa_backends.py            # one JSON line per (shape, backend)

Shapes: ../shared/baselines.md's 1B (32 query heads, 8 KV heads, head dim 64) and 7B (32 heads, no
GQA, head dim 128), batch 4 x 2048. GQA is run two ways: enable_gqa=True on the 8 KV heads, and
K/V expanded to 32 heads (what a backend without GQA support would need). Times are CUDA-event
medians over 20 iterations after 5 warm-up ones; a backend that refuses the inputs is reported
with its error.
"""
import json
import statistics

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

SHAPES = {"1b": (4, 32, 8, 2048, 64), "7b": (4, 32, 32, 2048, 128)}
BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION}


def time_ms(fn, iters=20, warmup=5):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main():
    torch.manual_seed(0)
    for shape, (b, hq, hkv, t, d) in SHAPES.items():
        q = torch.randn(b, hq, t, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        k = torch.randn(b, hkv, t, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        v = torch.randn(b, hkv, t, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        dy = torch.randn(b, hq, t, d, device="cuda", dtype=torch.bfloat16)
        variants = [("gqa", k, v, hq != hkv)]
        if hq != hkv:
            ke = k.detach().repeat_interleave(hq // hkv, 1).requires_grad_()
            ve = v.detach().repeat_interleave(hq // hkv, 1).requires_grad_()
            variants.append(("expanded", ke, ve, False))
        for name, backend in BACKENDS.items():
            for layout, kk, vv, gqa in variants:
                row = {"bench": "sdpa", "device": torch.cuda.get_device_name(0), "shape": shape, "backend": name,
                       "kv": layout, "torch": torch.__version__}
                try:
                    with sdpa_kernel(backend):
                        def fwd():
                            return F.scaled_dot_product_attention(q, kk, vv, is_causal=True, enable_gqa=gqa)

                        def step():
                            out = fwd()
                            out.backward(dy)
                            q.grad = kk.grad = vv.grad = None

                        row["forward_ms"] = round(time_ms(lambda: fwd().detach()), 3)
                        row["forward_backward_ms"] = round(time_ms(step), 3)
                except Exception as e:  # a backend that does not take these inputs
                    row["error"] = str(e).splitlines()[0][:200]
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
