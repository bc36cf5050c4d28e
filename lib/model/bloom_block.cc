#include "model/bloom_block.hpp"

#include <cmath>
#include <limits>

#include "ops/compat.hpp"

namespace temper {

at::Tensor alibi_slopes(int64_t num_heads) {
  const int64_t closest = int64_t{1} << static_cast<int>(std::floor(std::log2(static_cast<double>(num_heads))));
  // 2^(-(2^-(log2(n) - 3))) = 2^(-8/n), evaluated as transformers writes it and then rounded to fp32.
  auto base_of = [](int64_t n) {
    const double value = std::pow(2.0, -std::pow(2.0, -(std::log2(static_cast<double>(n)) - 3.0)));
    return at::full({}, value, at::kFloat);
  };
  const auto ints = at::TensorOptions().dtype(at::kInt);
  at::Tensor slopes = at::pow(base_of(closest), at::arange(1, 1 + closest, ints));
  if (closest != num_heads) {
    const int64_t remaining = num_heads - closest;  // < closest
    const at::Tensor extra = at::pow(base_of(2 * closest), at::arange(1, 1 + 2 * remaining, 2, ints));
    slopes = at::cat({slopes, extra});
  }
  return slopes.to(at::kFloat);
}

at::Tensor alibi_attention_bias(const at::Tensor& slopes, int64_t past, int64_t tq, const at::Tensor& segment_ids,
                                at::ScalarType dtype) {
  const int64_t tk = past + tq;
  const auto long_options = at::TensorOptions().dtype(at::kLong).device(slopes.device());
  const at::Tensor qpos = at::arange(past, tk, long_options).unsqueeze(1);  // [Tq, 1]
  const at::Tensor kpos = at::arange(0, tk, long_options).unsqueeze(0);     // [1, Tk]
  at::Tensor allowed = (kpos <= qpos).unsqueeze(0).unsqueeze(0);         // [1, 1, Tq, Tk]
  if (segment_ids.defined()) {
    allowed = allowed & (segment_ids.unsqueeze(2) == segment_ids.unsqueeze(1)).unsqueeze(1);  // [B, 1, Tq, Tk]
  }
  const at::Tensor distance = (kpos - qpos).to(at::kFloat);                   // [Tq, Tk], <= 0 where allowed
  const at::Tensor bias = slopes.view({-1, 1, 1}) * distance.unsqueeze(0);    // [H, Tq, Tk] fp32
  return bias.unsqueeze(0).masked_fill(allowed.logical_not(), -std::numeric_limits<float>::infinity()).to(dtype);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> split_fused_qkv(const at::Tensor& fused, int64_t num_heads,
                                                               int64_t head_dim) {
  const at::Tensor per_head = fused.view({fused.size(0), fused.size(1), num_heads, 3, head_dim});
  auto part = [&](int64_t i) { return per_head.select(3, i).transpose(1, 2); };  // [B, H, T, D]
  return {part(0), part(1), part(2)};
}

at::Tensor bloom_layer_forward(const DecoderLayer& layer, const ModelConfig& config, const at::Tensor& h,
                               const at::Tensor& bias, at::Tensor* cache_k, at::Tensor* cache_v) {
  const int64_t batch = h.size(0);
  const int64_t seq = h.size(1);
  const int64_t heads = config.num_attention_heads;
  const int64_t d = config.head_dim;
  const double eps = config.layer_norm_eps;
  const bool post = config.apply_residual_connection_post_layernorm;

  const at::Tensor x = at::layer_norm(h, {config.hidden_size}, layer.attn_norm, layer.attn_norm_bias, eps);
  auto [q, k, v] = split_fused_qkv(layer.qkv.forward(x), heads, d);
  if (cache_k != nullptr && cache_k->defined()) {
    k = at::cat({*cache_k, k}, 2);
    v = at::cat({*cache_v, v}, 2);
  }
  if (cache_k != nullptr) {
    *cache_k = k;
    *cache_v = v;
  }
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  const at::Tensor attn = compat::scaled_dot_product_attention(q, k, v, bias, /*is_causal=*/false, scale);
  const at::Tensor merged = attn.transpose(1, 2).reshape({batch, seq, heads * d});
  const at::Tensor h1 = (post ? x : h) + layer.o.forward(merged);

  const at::Tensor y = at::layer_norm(h1, {config.hidden_size}, layer.mlp_norm, layer.mlp_norm_bias, eps);
  const at::Tensor act = at::gelu(layer.up.forward(y), "tanh");
  return (post ? y : h1) + layer.down.forward(act);
}

}  // namespace temper
