#include "model/decoder_block.hpp"

#include "model/attention.hpp"
#include "model/projection_group.hpp"
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
  const int64_t hq = config.num_attention_heads;
  const int64_t hkv = config.num_key_value_heads;
  at::Tensor q, k, v;  // [B, T, H*D]
  if (std::optional<at::Tensor> qkv = grouped_forward({&layer.q, &layer.k, &layer.v}, layer.packed_qkv, x)) {
    // One autograd node splits the [B, T, (Hq + 2 Hkv) D] output, so the backward joins the three
    // gradients with one copy. v is made contiguous: attention then sees the layout it sees unpacked.
    std::vector<at::Tensor> parts = at::split_with_sizes(*qkv, {hq * d, hkv * d, hkv * d}, -1);
    q = parts[0];
    k = parts[1];
    v = parts[2].contiguous();
  } else {
    q = layer.q.forward(x);
    k = layer.k.forward(x);
    v = layer.v.forward(x);
  }
  // [B, T, H*D] -> [B, H, T, D]
  q = q.view({batch, seq, hq, d}).transpose(1, 2);
  k = k.view({batch, seq, hkv, d}).transpose(1, 2);
  v = v.view({batch, seq, hkv, d}).transpose(1, 2);
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
  std::optional<at::Tensor> gate_up = grouped_forward({&layer.gate, &layer.up}, layer.packed_gate_up, y);
  const at::Tensor act = gate_up ? swiglu_packed(*gate_up) : swiglu(layer.gate.forward(y), layer.up.forward(y));
  return h1 + layer.down.forward(act);
}

}  // namespace temper
