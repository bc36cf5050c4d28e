// Model: a decoder-only language model loaded from a Hugging Face checkpoint directory
// (config.json + safetensors), with a forward pass that returns logits and, given labels, the
// causal-LM loss exactly as transformers computes it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "temper/api.hpp"
#include "temper/config.hpp"
#include "temper/nf4_quantizer.hpp"
#include "temper/status.hpp"

namespace temper {

struct ModelOptions {
  // Parameter and compute dtype. fp32 on CPU (libtorch 1.13's bf16 CPU kernels accumulate in
  // bf16); bf16 on GPUs.
  at::ScalarType dtype = at::kFloat;
  at::Device device = at::kCPU;
  // QLoRA: hold the decoder blocks' linear weights in NF4 (bitsandbytes' layout,
  // include/temper/nf4_quantizer.hpp); embeddings, norms and lm_head stay in `dtype`. Each
  // quantized layer dequantizes inside its forward and backward; only adapters can train it.
  bool quantize_nf4 = false;
  Nf4Options nf4;
};

struct ForwardInput {
  at::Tensor input_ids;     // [B, T] int64 (int32 accepted), each in [0, vocab_size)
  // [B, T] int64, unshifted as in transformers: position t is scored on labels[t + 1];
  // -100 marks positions without loss. Undefined: no loss.
  at::Tensor labels;
  // [B, T] int64, optional. Default: cache length + 0..T-1 for every row. RoPE families only:
  // bloom (ALiBi) sees only distances between positions and ignores it, as transformers does.
  at::Tensor position_ids;
  // [B, T] integer, optional: packed sequences. A position attends only to earlier positions of
  // the same segment (block-diagonal causal attention), so packed documents never see each
  // other. Not combinable with a KV cache.
  at::Tensor segment_ids;
  // With labels: false computes the loss without the [B, T, vocab] logits (chunked head +
  // cross-entropy, lib/ops/linear_cross_entropy.hpp), leaving ForwardOutput::logits undefined;
  // what training wants. Without labels it has no effect.
  bool return_logits = true;
};

struct ForwardOutput {
  at::Tensor logits;    // [B, T, vocab] in the model dtype; undefined when return_logits was false
  at::Tensor loss;      // [] fp32: mean over scored tokens (0 when there are none); undefined without labels
  at::Tensor loss_sum;  // [] fp32: sum over scored tokens, for token-normalised gradient accumulation
  int64_t num_tokens = 0;  // scored tokens (labels != -100 after the shift)
};

// Keys and values of the positions seen so far, per layer, for incremental decoding.
// One cache serves one sequence batch; clear() before reusing it for another.
struct KvCache {
  std::vector<at::Tensor> keys;    // per layer [B, Hkv, length, head_dim]
  std::vector<at::Tensor> values;  // per layer [B, Hkv, length, head_dim]
  int64_t length = 0;
  void clear() {
    keys.clear();
    values.clear();
    length = 0;
  }
};

class TEMPER_API Model {
 public:
  // Loads `<dir>/config.json` and the safetensors weights. Every parameter's shape is checked;
  // missing and unexpected tensors are reported by name. Weights are converted to
  // `options.dtype` and moved to `options.device`.
  static StatusOr<Model> load(const std::filesystem::path& dir, const ModelOptions& options = {});

  // A model with freshly initialised weights, as transformers initialises them (normal(0, 0.02)
  // for embeddings and linear weights, ones for norms, zeros for biases), seeded.
  static StatusOr<Model> random(const ModelConfig& config, const ModelOptions& options = {}, uint64_t seed = 0);

  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;
  ~Model();

  const ModelConfig& config() const;
  const ModelOptions& options() const;

  // Runs the model. With a cache, the new positions are appended to it and attend to all cached
  // ones. Bad input (shapes, dtypes, ids out of range) is INVALID_ARGUMENT naming the position;
  // running out of memory is RESOURCE_EXHAUSTED.
  StatusOr<ForwardOutput> forward(const ForwardInput& input, KvCache* cache = nullptr) const;

  // Parameters in model order with their Hugging Face names. The tensors are the model's own
  // (not copies): setting requires_grad on them makes forward() differentiable in them.
  std::vector<std::pair<std::string, at::Tensor>> named_parameters() const;
  StatusOr<at::Tensor> parameter(const std::string& name) const;

  // Total number of parameter elements (tied weights counted once).
  int64_t num_parameters() const;

  struct Impl;
  // For temper's own components (LoRA, quantization, trainer); not part of the stable API.
  Impl& impl() { return *impl_; }
  const Impl& impl() const { return *impl_; }

 private:
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace temper
