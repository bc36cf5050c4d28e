// BLOOM's decoder layer (transformers' BloomBlock): LayerNorm with bias, a fused query_key_value
// projection laid out per head as (n_head, 3, head_dim), attention biased by ALiBi instead of
// rotated by RoPE, a GELU (tanh) MLP without a gate, and optionally residuals taken after the
// norm (apply_residual_connection_post_layernorm).
#pragma once

#include <cstdint>
#include <tuple>

#include <ATen/ATen.h>

#include "model/model_impl.hpp"
#include "temper/config.hpp"

namespace temper {

// ALiBi slopes [num_heads] fp32 (CPU) as BLOOM defines them (Press et al.; transformers'
// build_alibi_tensor): for the largest power of two n <= num_heads, slope_i = b^(i+1) with
// b = 2^(-8/n); the remaining heads take every other slope of the 2n-head sequence,
// c^(1), c^(3), ... with c = 2^(-8/(2n)). Computed as fp32 powers of an fp32 base, as transformers does.
at::Tensor alibi_slopes(int64_t num_heads);

// The additive attention bias for queries at positions past .. past+tq-1 over keys 0 .. past+tq-1:
// slope_h * (j - i) where key j may be seen by query i (j <= i, and with segment_ids [B, tq] the
// same segment), -inf elsewhere. Returns [1, H, tq, Tk] (or [B, H, tq, Tk] with segments) in `dtype`.
//
// transformers adds slope_h * j (the key's position) instead; per query row the two differ by the
// constant slope_h * i, which softmax ignores, and j - i keeps the biases of the nearby keys (the
// ones that matter) small and exact in bf16 however long the sequence. For packed sequences the
// same argument makes absolute positions inside the block-diagonal mask equal to per-document ones.
// slopes [H] fp32 on the target device.
at::Tensor alibi_attention_bias(const at::Tensor& slopes, int64_t past, int64_t tq, const at::Tensor& segment_ids,
                                at::ScalarType dtype);

// fused [B, T, H * 3 * D] (query_key_value's output) -> q, k, v [B, H, T, D] each.
std::tuple<at::Tensor, at::Tensor, at::Tensor> split_fused_qkv(const at::Tensor& fused, int64_t num_heads,
                                                               int64_t head_dim);

// h [B, T, hidden] -> [B, T, hidden]. bias from alibi_attention_bias() for this call's positions
// (built once per forward and shared by the layers). With cache slots (may be null), the new
// keys/values are appended to *cache_k / *cache_v ([B, H, past, D]).
at::Tensor bloom_layer_forward(const DecoderLayer& layer, const ModelConfig& config, const at::Tensor& h,
                               const at::Tensor& bias, at::Tensor* cache_k, at::Tensor* cache_v);

}  // namespace temper
