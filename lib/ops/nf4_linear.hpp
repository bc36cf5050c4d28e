// y = x W^T + b for a weight held as NF4 (QuantState): the weight is dequantized to x's dtype
// inside the forward and again inside the backward, so no full-precision copy outlives either
// (autograd saves the quantized state, not the dequantized weight). The weight is frozen: only
// x (and a trainable bias) get gradients, which is what QLoRA needs.
#pragma once

#include <memory>

#include <ATen/ATen.h>

#include "temper/nf4_quantizer.hpp"

namespace temper {

// x [..., in], bias [out] or undefined -> [..., out]
at::Tensor nf4_linear(const at::Tensor& x, const std::shared_ptr<const QuantState>& weight, const at::Tensor& bias);

}  // namespace temper
