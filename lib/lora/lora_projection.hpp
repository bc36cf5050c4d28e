// The LoRA projection y = W x + b + s * B (A x) as one autograd function, so that the adapter
// costs two small GEMMs and nothing else per direction.
//
// Why: written as ATen expressions (linear, linear, * s, +) the adapter adds two elementwise
// passes over the [tokens, out] output in the forward (the scale and the add) and two in the
// backward (the scale's gradient and the sum of the base's and the adapter's input gradients),
// plus their kernel launches: on a 1B model those made up most of the profile's `mul`/`add` rows
// (docs/performance.md). Here the scale is folded into a copy of B ([out, r], tiny) and the
// adapter's product is accumulated into the base output by the GEMM itself (addmm_, beta = 1);
// in the backward the adapter's input gradient is accumulated into the base's the same way.
// Numerics: the sum is rounded once (inside the GEMM's fp32 accumulator) where the expression
// rounds the scaled product and the sum separately; in fp32 both agree to rounding.
#pragma once

#include <ATen/ATen.h>

#include "model/model_impl.hpp"

namespace temper {

// y = base(x) + s * (x A^T) B^T. x [..., in] in the model dtype; a [r, in], b [out, r] in the
// adapter's dtype (fp32 masters or the model dtype) -> [..., out] in x's dtype. Differentiable in
// x, a and b. The base (dense or NF4) must be frozen: weight and bias without requires_grad
// (lora_projection_fusable says whether it is).
at::Tensor lora_projection(const at::Tensor& x, const Linear& base, const at::Tensor& a, const at::Tensor& b,
                           double scale);

// Whether lora_projection may take `base`: its weight and bias, where defined, need no gradient.
bool lora_projection_fusable(const Linear& base);

// y + s * (x A^T) B^T as a new tensor: y [..., out] (the base's output), x [..., in], a [r, in],
// b [out, r] as above. Differentiable in y, x, a and b. For what lora_projection cannot take:
// dropout on the adapter's input (x is then dropout(input), y the base's output of the undropped
// input) or a trainable base. Costs one copy of y; the scale still rides in the GEMM.
at::Tensor lora_add(const at::Tensor& y, const at::Tensor& x, const at::Tensor& a, const at::Tensor& b, double scale);

}  // namespace temper
