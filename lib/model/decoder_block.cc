#include "model/decoder_block.hpp"

#include "model/attention.hpp"
#include "model/rope.hpp"
#include "ops/rms_norm.hpp"
#include "ops/swiglu.hpp"

namespace temper {

at::Tensor decoder_layer_forward(const DecoderLayer& layer, const ModelConfig& config, const at::Tensor& h,
                                 const at::Tensor& cos, const at::Tensor& sin, at::Tensor* cache_k,
                                 at::Tensor* cache_v, const at::Tensor& segment_ids) {
  const int64_t batch = h.size(0);
  const int64_t seq = h.size(1);
  const int64_t d = config.head_dim;

  const at::Tensor x = rms_norm(h, layer.attn_norm, config.rms_norm_eps);
  // [B, T, H*D] -> [B, H, T, D]
  at::Tensor q = layer.q.forward(x).view({batch, seq, config.num_attention_heads, d}).transpose(1, 2);
  at::Tensor k = layer.k.forward(x).view({batch, seq, config.num_key_value_heads, d}).transpose(1, 2);
  at::Tensor v = layer.v.forward(x).view({batch, seq, config.num_key_value_heads, d}).transpose(1, 2);
  q = apply_rope(q, cos, sin);
  k = apply_rope(k, cos, sin);

  int64_t past = 0;
  if (cache_k != nullptr && cache_k->defined()) {
    past = cache_k->size(2);
    k = at::cat({*cache_k, k}, 2);
    v = at::cat({*cache_v, v}, 2);
  }
  if (cache_k != nullptr) {
    *cache_k = k;
    *cache_v = v;
  }
  const at::Tensor attn = causal_attention(q, k, v, past, config.sliding_window, segment_ids);  // [B, Hq, T, D]
  const at::Tensor merged = attn.transpose(1, 2).reshape({batch, seq, config.num_attention_heads * d});
  const at::Tensor h1 = h + layer.o.forward(merged);

  const at::Tensor y = rms_norm(h1, layer.mlp_norm, config.rms_norm_eps);
  const at::Tensor act = swiglu(layer.gate.forward(y), layer.up.forward(y));
  return h1 + layer.down.forward(act);
}

}  // namespace temper
