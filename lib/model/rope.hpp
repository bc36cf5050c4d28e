// Rotary position embedding in Hugging Face's rotate-half convention (the first and second
// halves of each head are rotated as pairs), computed in fp32 as transformers does, then cast.
#pragma once

#include <utility>

#include <ATen/ATen.h>

#include "temper/config.hpp"

namespace temper {

// Frequencies [head_dim / 2] fp32, with the config's rope scaling applied.
at::Tensor rope_inv_freq(const ModelConfig& config);

// cos and sin [B, T, head_dim] in `dtype` for position_ids [B, T] int64.
std::pair<at::Tensor, at::Tensor> rope_cos_sin(const at::Tensor& inv_freq, const at::Tensor& position_ids,
                                               at::ScalarType dtype);

// x [B, H, T, D] rotated by cos/sin [B, T, D] (x's dtype). On CUDA tensors a fused kernel
// (lib/ops/rope.hpp) computes it in fp32 with one rounding and keeps only cos/sin for the
// backward; elsewhere apply_rope_reference runs.
at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

// The ATen form, transformers' apply_rotary_pos_emb: x * cos + rotate_half(x) * sin, rounded to
// x's dtype after each operation. Used off CUDA and by the kernel's parity test.
at::Tensor apply_rope_reference(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

}  // namespace temper
