// The inside of a Model, shared by temper's components that work on a model's layers (loading,
// LoRA, quantization, the trainer). Not installed.
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "model/architecture.hpp"
#include "temper/nf4_quantizer.hpp"
#include "temper/model.hpp"

namespace temper {

struct Linear;

// Something installed on a linear layer that changes its output (a LoRA or DoRA adapter). The
// base weight stays the layer's own and is never copied; the delta computes the whole output so
// that variants which rescale it (DoRA) need no second hook.
// A delta that is exactly s * B A added to the base output, y = W x + b + s * B (A x).
struct LowRankTerm {
  at::Tensor a;  // [r, in]
  at::Tensor b;  // [out, r]
  double scale = 0.0;
};

class LinearDelta {
 public:
  virtual ~LinearDelta() = default;
  // x [..., in] -> [..., out], given the layer it sits on.
  virtual at::Tensor forward(const at::Tensor& x, const Linear& base) const = 0;
  // The delta as a low-rank term when forward() is nothing more than that right now (LoRA
  // without active dropout), so that a grouped projection may compute it instead; else nullopt.
  virtual std::optional<LowRankTerm> low_rank_term() const { return std::nullopt; }
};

struct Linear {
  at::Tensor weight;  // [out, in]; undefined when the layer is quantized
  at::Tensor bias;    // [out], undefined when the layer has none
  std::shared_ptr<const QuantState> quantized;  // NF4 base weight (QLoRA), instead of `weight`
  std::shared_ptr<const LinearDelta> delta;     // null: the plain layer

  bool is_quantized() const { return quantized != nullptr; }
  at::Device device() const { return is_quantized() ? quantized->packed.device() : weight.device(); }
  // The weight as a dense tensor in `dtype` (for a quantized layer a fresh dequantized copy).
  at::Tensor dense_weight(at::ScalarType dtype) const;
  // W x + b, without any delta: [..., in] -> [..., out]
  at::Tensor base_forward(const at::Tensor& x) const;
  at::Tensor forward(const at::Tensor& x) const { return delta ? delta->forward(x, *this) : base_forward(x); }
};

// One group's packed tensors: weight [S, in] and bias [S] (undefined when not packed).
struct PackedGroup {
  at::Tensor weight;
  at::Tensor bias;
};

struct DecoderLayer {
  at::Tensor attn_norm;       // [hidden]
  at::Tensor mlp_norm;        // [hidden]
  at::Tensor attn_norm_bias;  // [hidden], LayerNorm families (bloom) only
  at::Tensor mlp_norm_bias;   // [hidden], LayerNorm families (bloom) only
  Linear q, k, v, o, gate, up, down;
  Linear qkv;  // bloom's fused query_key_value [n_head * 3 * head_dim, hidden], rows per head (q, k, v)
  // Packed weights (model/projection_group.hpp): [q+k+v rows, hidden] and [2 * intermediate,
  // hidden] whose row blocks q/k/v (gate/up) .weight are views of (and their biases, when every
  // member has one); undefined when not packed.
  PackedGroup packed_qkv;
  PackedGroup packed_gate_up;
  Linear& linear(LinearSlot slot);
  const Linear& linear(LinearSlot slot) const;
};

struct Model::Impl {
  ModelConfig config;
  ModelOptions options;
  at::Tensor embed;            // [vocab, hidden]
  at::Tensor embed_norm;       // [hidden] bloom's word_embeddings_layernorm; undefined for llama
  at::Tensor embed_norm_bias;  // [hidden] bloom only
  std::vector<DecoderLayer> layers;
  at::Tensor final_norm;       // [hidden]
  at::Tensor final_norm_bias;  // [hidden] bloom only
  at::Tensor lm_head;          // [vocab, hidden]; the same tensor as `embed` when tied
  at::Tensor inv_freq;         // [head_dim / 2] fp32 on the model's device, RoPE frequencies after scaling (RoPE families)
  at::Tensor alibi_slopes;     // [n_head] fp32 on the model's device (bloom)
  // config.json as loaded (or generated for Model::random; empty when the config has no Hugging
  // Face form) and the directory it came from (empty for Model::random): export writes them back.
  std::string config_json;
  std::filesystem::path source_dir;
  // Recompute each decoder layer in the backward pass instead of keeping its activations (set by
  // the Trainer; applies only while autograd records and no KV cache is used).
  bool gradient_checkpointing = false;

  // Calls `fn(spec, tensor slot)` for every parameter in model order (tied lm_head once, as
  // the embedding). The slot of a quantized linear weight is undefined.
  void for_each_parameter(const std::function<void(const ParamSpec&, at::Tensor&)>& fn);
  // Every parameter as a dense tensor, in model order: quantized linear weights come
  // dequantized to the model dtype (a fresh copy per call, so a caller that handles one at a
  // time never holds more than one).
  void for_each_dense_parameter(const std::function<void(const ParamSpec&, const at::Tensor&)>& fn);
  // The Linear whose weight is called `name` ("model.layers.3.mlp.up_proj.weight"), or null.
  const Linear* linear_of_weight(const std::string& name) const;
  // Replaces the blocks' linear weights with NF4 states (QLoRA); embeddings, norms and lm_head stay.
  absl::Status quantize_linears(const Nf4Options& options);
};

}  // namespace temper
