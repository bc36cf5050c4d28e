// The inside of a Model, shared by temper's components that work on a model's layers (loading,
// LoRA, quantization, the trainer). Not installed.
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "model/architecture.hpp"
#include "temper/model.hpp"

namespace temper {

struct Linear;

// Something installed on a linear layer that changes its output (a LoRA or DoRA adapter). The
// base weight stays the layer's own and is never copied; the delta computes the whole output so
// that variants which rescale it (DoRA) need no second hook.
class LinearDelta {
 public:
  virtual ~LinearDelta() = default;
  // x [..., in] -> [..., out], given the layer it sits on.
  virtual at::Tensor forward(const at::Tensor& x, const Linear& base) const = 0;
};

struct Linear {
  at::Tensor weight;  // [out, in]
  at::Tensor bias;    // [out], undefined when the layer has none
  std::shared_ptr<const LinearDelta> delta;  // null: the plain layer

  // W x + b, without any delta: [..., in] -> [..., out]
  at::Tensor base_forward(const at::Tensor& x) const { return at::linear(x, weight, bias); }
  at::Tensor forward(const at::Tensor& x) const { return delta ? delta->forward(x, *this) : base_forward(x); }
};

struct DecoderLayer {
  at::Tensor attn_norm;  // [hidden]
  at::Tensor mlp_norm;   // [hidden]
  Linear q, k, v, o, gate, up, down;
  Linear& linear(LinearSlot slot);
  const Linear& linear(LinearSlot slot) const;
};

struct Model::Impl {
  ModelConfig config;
  ModelOptions options;
  at::Tensor embed;       // [vocab, hidden]
  std::vector<DecoderLayer> layers;
  at::Tensor final_norm;  // [hidden]
  at::Tensor lm_head;     // [vocab, hidden]; the same tensor as `embed` when tied
  at::Tensor inv_freq;    // [head_dim / 2] fp32 on the model's device, RoPE frequencies after scaling
  // config.json as loaded (or generated for Model::random; empty when the config has no Hugging
  // Face form) and the directory it came from (empty for Model::random): export writes them back.
  std::string config_json;
  std::filesystem::path source_dir;
  // Recompute each decoder layer in the backward pass instead of keeping its activations (set by
  // the Trainer; applies only while autograd records and no KV cache is used).
  bool gradient_checkpointing = false;

  // Calls `fn(spec, tensor slot)` for every parameter in model order (tied lm_head once, as
  // the embedding).
  void for_each_parameter(const std::function<void(const ParamSpec&, at::Tensor&)>& fn);
};

}  // namespace temper
