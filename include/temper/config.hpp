// ModelConfig: what temper reads from a Hugging Face `config.json`.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "temper/api.hpp"
#include "temper/status.hpp"

namespace temper {

// Decoder families temper implements. Each is described by what differs from the others
// (lib/model/architecture.hpp), not by a copy of the block.
enum class ModelFamily {
  kLlama,    // model_type "llama": RMSNorm, RoPE, GQA, SwiGLU
  kMistral,  // model_type "mistral": llama + optional sliding-window attention
  kQwen2,    // model_type "qwen2": llama + biases on q/k/v
  kBloom,    // model_type "bloom" (BLOOM, BLOOMZ): LayerNorm, ALiBi, fused per-head qkv, GELU MLP
};

enum class RopeScalingType {
  kNone,    // plain RoPE ("default")
  kLinear,  // positions divided by `factor`
  kLlama3,  // Llama 3.1's smooth per-frequency interpolation
};

struct RopeScaling {
  RopeScalingType type = RopeScalingType::kNone;
  double factor = 1.0;
  double low_freq_factor = 1.0;                  // llama3 only
  double high_freq_factor = 4.0;                 // llama3 only
  int64_t original_max_position_embeddings = 0;  // llama3 only
};

struct ModelConfig {
  std::string model_type;  // as written in config.json
  ModelFamily family = ModelFamily::kLlama;

  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;             // num_hidden_layers
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;    // == num_attention_heads without GQA
  int64_t head_dim = 0;               // hidden_size / num_attention_heads unless given
  int64_t max_position_embeddings = 0;  // bloom (ALiBi, no limit): seq_length, the training length
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  std::optional<int64_t> sliding_window;  // mistral: a query attends to the last `sliding_window` keys
  // bloom: LayerNorm epsilon (layer_norm_epsilon), and whether each residual branch adds to the
  // normalised input rather than the raw one (apply_residual_connection_post_layernorm).
  double layer_norm_eps = 1e-5;
  bool apply_residual_connection_post_layernorm = false;

  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // llama attention_bias, always true for qwen2 and bloom
  bool o_bias = false;    // llama attention_bias; always true for bloom
  bool mlp_bias = false;  // llama mlp_bias; always true for bloom

  std::string torch_dtype;  // "bfloat16", "float16", "float32" or "" when absent
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;  // config.json may give one id or a list
  std::optional<int64_t> pad_token_id;
};

// Parses config.json text; `source` names it in error messages. Unknown model_type, a missing
// or ill-typed field, inconsistent sizes, or an unsupported feature (rope type, activation) are
// errors naming the field.
TEMPER_API StatusOr<ModelConfig> parse_model_config(std::string_view json_text, std::string_view source);

// Reads `<model_dir>/config.json`.
TEMPER_API StatusOr<ModelConfig> load_model_config(const std::filesystem::path& model_dir);

TEMPER_API std::string_view model_family_name(ModelFamily family);

// config.json text (indent 2) that parse_model_config and transformers read back as `config`
// (RoPE written as rope_theta + rope_scaling, which every transformers version reads).
// INVALID_ARGUMENT when `config` has no Hugging Face form, e.g. llama with q/k/v biases but no
// o_proj bias.
TEMPER_API StatusOr<std::string> model_config_to_json(const ModelConfig& config);

}  // namespace temper
