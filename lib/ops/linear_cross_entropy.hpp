// The causal-LM head and its loss in one op that never holds the [tokens, vocab] logits whole.
//
// At vocab 128k and 8k tokens a step's fp32 logits are 4 GiB, and cross-entropy keeps a second
// copy for its backward: the largest activation of the model. This op runs the head GEMM and the
// fp32 log-softmax over chunks of rows (~256 MiB of fp32 logits each). When a gradient will be
// needed it also forms d loss / d logits = softmax - onehot for the chunk right away and reduces
// it into the gradients of h and of the weight, so the backward only scales them by the incoming
// gradient (the loss is a scalar): no logits are kept and none are recomputed.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

namespace temper {

// Sum over rows of -log softmax(h @ weight^T)[label] in fp32, rows whose label is -100 skipped.
// h [N, H] float dtype, weight [V, H] same dtype, labels [N] int64 in [0, V) or -100 -> [] fp32.
// Differentiable in h and weight (which is not differentiated when it does not require grad,
// e.g. a frozen lm_head under LoRA). chunk_rows 0 picks ~256 MiB of fp32 logits per chunk, ~1 GiB
// when the weight trains (fewer fp32 weight-gradient accumulations).
at::Tensor linear_cross_entropy_sum(const at::Tensor& h, const at::Tensor& weight, const at::Tensor& labels,
                                    int64_t chunk_rows = 0);

}  // namespace temper
