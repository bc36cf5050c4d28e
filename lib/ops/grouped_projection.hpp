// Several projections of one input as one autograd function over a packed weight: the llama
// block's q/k/v (and gate/up), over a frozen base each optionally carrying a low-rank (LoRA) term
// (grouped_projection), or over trained weights (grouped_linear, below).
//
//   y = x W^T + b + [ s_i (x A_i^T) B_i^T ]_i        W = [W_1; W_2; ...]  [S, in], S = sum out_i
//
// Why: run member by member (lib/lora/lora_projection.hpp) a LoRA'd q/k/v costs three base GEMMs,
// three adapter input GEMMs, three adapter accumulations and, in the backward, three input
// gradients that autograd then sums with two more passes over [tokens, in]. Grouped: one base GEMM
// over the packed weight (larger, so also better shaped for the tensor cores), one GEMM for every
// member's x A_i^T at once (A stacked [R, in], R = sum r_i), and one accumulation of all adapters
// into the output through a block-diagonal [S, R] matrix of the scaled B_i; the backward mirrors
// it, and the input gradient is one GEMM plus one accumulation, with nothing left to sum.
// The block-diagonal matrix spends R / r_i times the minimum FLOPs on the adapters' output side,
// which at ranks of 8-64 is a rounding error next to the base GEMM.
// Numerics: as lora_projection (each adapter product accumulated into the fp32 accumulator of
// a GEMM with beta = 1); in fp32 the result agrees with the member-by-member form to rounding.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

namespace temper {

struct ProjectionMember {
  int64_t out = 0;  // rows of W (and of the output) that are this member's
  at::Tensor a;     // [r, in] the adapter's dtype, or undefined: no low-rank term
  at::Tensor b;     // [out, r] the adapter's dtype (defined exactly when a is)
  double scale = 0.0;
};

// x [..., in] in the compute dtype; weight [S, in] (frozen: no requires_grad) in x's dtype; bias
// [S] or undefined (frozen); members in row order, their outs summing to S -> [..., S] in x's
// dtype. Differentiable in x and every member's a and b (gradients in their own dtypes).
// An in-place change of `weight` between the forward and the backward fails the backward.
at::Tensor grouped_projection(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                              const std::vector<ProjectionMember>& members);

// The same grouping for trained weights (full fine-tuning): y = x W^T + b with W = [W_1; W_2; ...]
// whose row blocks are the members' trained weights. Why: member by member, the backward runs
// three weight-gradient GEMMs, three input-gradient GEMMs and two sums of [tokens, in] for q/k/v;
// here one GEMM gives the packed [S, in] weight gradient, one the input gradient, and each
// member's gradient is its row block of the former (no copy: autograd keeps the view as .grad).
// x [..., in] in the compute dtype; packed_weight [S, in] and packed_bias [S] (or undefined): the
// tensors whose row blocks the members' tensors are, without requires_grad themselves; weights:
// each member's [out_i, in] row-block view of packed_weight, in order, all requiring grad;
// biases: empty, or each member's [out_i] view of packed_bias, in order -> [..., S] in x's dtype.
// Differentiable in x, every weight and every bias. An in-place change of the packed weight
// between the forward and the backward (an optimizer step) fails the backward.
at::Tensor grouped_linear(const at::Tensor& x, const at::Tensor& packed_weight, const at::Tensor& packed_bias,
                          at::TensorList weights, at::TensorList biases);

}  // namespace temper
