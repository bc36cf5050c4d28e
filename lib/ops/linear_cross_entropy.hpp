// The causal-LM head and its loss in one op that never holds the [tokens, vocab] logits whole.
//
// At vocab 128k and 8k tokens a step's fp32 logits are 4 GiB, and cross-entropy keeps a second
// copy for its backward: the largest activation of the model. This op runs the head GEMM and the
// fp32 log-softmax over chunks of rows (as many rows as ~256 MiB of fp32 logits would hold; the
// chunk's logits are in h's dtype, and only the CPU reference makes an fp32 working copy). When a
// gradient will be needed it also forms d loss / d logits = softmax - onehot for the chunk right away and reduces
// it into the gradients of h and of the weight, so the backward only scales them by the incoming
// gradient (the loss is a scalar): no logits are kept and none are recomputed. On CUDA the
// softmax, loss and gradient of a chunk are one fused kernel (lib/kernels/cross_entropy.cu) that
// works on the logits in h's dtype in place; elsewhere the ATen reference below.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

namespace temper {

// Sum over rows of -log softmax(h @ weight^T)[label] in fp32, rows whose label is -100 skipped.
// h [N, H] float dtype, weight [V, H] same dtype, labels [N] int64 in [0, V) or -100 -> [] fp32.
// Differentiable in h and weight (which is not differentiated when it does not require grad,
// e.g. a frozen lm_head under LoRA). chunk_rows 0 picks ~256 MiB of fp32 logits per chunk; when
// the weight trains, ~1 GiB on the CPU and ~8 GiB (4 GiB of bf16 logits) on CUDA: fewer fp32
// weight-gradient accumulations, none when one chunk holds every row.
at::Tensor linear_cross_entropy_sum(const at::Tensor& h, const at::Tensor& weight, const at::Tensor& labels,
                                    int64_t chunk_rows = 0);

// Per row: loss [rows] fp32 = logsumexp(logits[r]) - logits[r, labels[r]] (0 where the label is
// -100), the softmax in fp32. With write_grad, `logits` [rows, V] (float dtype, contiguous) is
// overwritten by d sum(loss) / d logits = softmax - onehot (zero rows where the label is -100), in
// its own dtype. labels [rows] int64 in [0, V) or -100, on logits' device. On CUDA (float, bf16,
// fp16) the fused kernel, where a label outside [0, V) gives that row a NaN loss; elsewhere the
// reference, where it raises.
at::Tensor softmax_cross_entropy_rows_(const at::Tensor& logits, const at::Tensor& labels, bool write_grad);

// The ATen reference of softmax_cross_entropy_rows_ (any device, float dtypes): the logits cast to
// fp32, logsumexp, gather, exp, scatter of the one-hot, cast back.
at::Tensor softmax_cross_entropy_rows_reference_(const at::Tensor& logits, const at::Tensor& labels, bool write_grad);

}  // namespace temper
