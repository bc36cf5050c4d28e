// config.json -> ModelConfig. Two generations of transformers write RoPE settings differently:
// up to 4.x `rope_theta` + `rope_scaling` ({"type"|"rope_type": ...}); 5.x a `rope_parameters`
// object holding `rope_type` and `rope_theta` too. Both are accepted.
#include "util/strings.hpp"
#include <nlohmann/json.hpp>

#include "io/read_file.hpp"
#include "io/json_file.hpp"
#include "temper/config.hpp"
#include "util/status_macros.hpp"

namespace temper {
namespace {

absl::Status invalid(std::string_view source, std::string_view message) {
  return absl::InvalidArgumentError(str_cat(source, ": ", message));
}

// Bounds on sizes, far above any published model, that keep every size computation in int64:
// a dimension fits 31 bits (token ids are int32; libtorch kernels index with int32 in places), so
// the product of two dimensions (a weight's element count) fits 62. The layer count is bounded
// because the loader lists every parameter of every layer before it reads the checkpoint: a
// config.json claiming 10^12 layers must be an error, not an endless loop.
constexpr int64_t kMaxDimension = (int64_t{1} << 31) - 1;
constexpr int64_t kMaxLayers = 1 << 14;

absl::StatusOr<int64_t> positive_int(const nlohmann::json& obj, std::string_view field, std::string_view source,
                                     int64_t max = kMaxDimension) {
  TEMPER_ASSIGN_OR_RETURN(int64_t value, json_int(obj, field, source));
  if (value <= 0) return invalid(source, str_cat("field \"", field, "\" must be positive, found ", value));
  if (value > max) {
    return invalid(source, str_cat("field \"", field, "\" is ", value, ", above temper's limit of ", max,
                                   " (a corrupt config.json?)"));
  }
  return value;
}

// Accepts an id, a list of ids, or null.
absl::StatusOr<std::vector<int64_t>> id_list(const nlohmann::json& obj, std::string_view field, std::string_view source) {
  std::vector<int64_t> ids;
  auto it = obj.find(std::string(field));
  if (it == obj.end() || it->is_null()) return ids;
  if (it->is_number_integer()) {
    ids.push_back(it->get<int64_t>());
    return ids;
  }
  if (it->is_array()) {
    for (const auto& v : *it) {
      if (!v.is_number_integer()) return invalid(source, str_cat("field \"", field, "\" must hold integer ids"));
      ids.push_back(v.get<int64_t>());
    }
    return ids;
  }
  return invalid(source, str_cat("field \"", field, "\" must be an id or a list of ids"));
}

absl::Status parse_rope(const nlohmann::json& obj, std::string_view source, ModelConfig& config) {
  const nlohmann::json* params = nullptr;
  for (const char* key : {"rope_parameters", "rope_scaling"}) {
    auto it = obj.find(key);
    if (it != obj.end() && !it->is_null()) {
      if (!it->is_object()) return invalid(source, str_cat("field \"", key, "\" must be an object"));
      params = &*it;
      break;
    }
  }
  TEMPER_ASSIGN_OR_RETURN(std::optional<double> theta, json_optional_number(obj, "rope_theta", source));
  if (params != nullptr) {
    TEMPER_ASSIGN_OR_RETURN(std::optional<double> inner_theta, json_optional_number(*params, "rope_theta", source));
    if (inner_theta) theta = inner_theta;
  }
  config.rope_theta = theta.value_or(10000.0);
  if (config.rope_theta <= 0) return invalid(source, "rope_theta must be positive");
  if (params == nullptr) return absl::OkStatus();

  TEMPER_ASSIGN_OR_RETURN(std::optional<std::string> type, json_optional_string(*params, "rope_type", source));
  if (!type) {
    TEMPER_ASSIGN_OR_RETURN(type, json_optional_string(*params, "type", source));
  }
  const std::string kind = type.value_or("default");
  RopeScaling& scaling = config.rope_scaling;
  if (kind == "default") {
    scaling.type = RopeScalingType::kNone;
    return absl::OkStatus();
  }
  TEMPER_ASSIGN_OR_RETURN(scaling.factor, json_number(*params, "factor", source));
  if (!(scaling.factor > 0)) return invalid(source, "rope scaling factor must be positive");
  if (kind == "linear") {
    scaling.type = RopeScalingType::kLinear;
    return absl::OkStatus();
  }
  if (kind == "llama3") {
    scaling.type = RopeScalingType::kLlama3;
    TEMPER_ASSIGN_OR_RETURN(scaling.low_freq_factor, json_number(*params, "low_freq_factor", source));
    TEMPER_ASSIGN_OR_RETURN(scaling.high_freq_factor, json_number(*params, "high_freq_factor", source));
    TEMPER_ASSIGN_OR_RETURN(scaling.original_max_position_embeddings,
                            positive_int(*params, "original_max_position_embeddings", source));
    if (!(scaling.high_freq_factor > scaling.low_freq_factor)) {
      return invalid(source, "llama3 rope scaling needs high_freq_factor > low_freq_factor");
    }
    return absl::OkStatus();
  }
  return absl::UnimplementedError(
      str_cat(source, ": rope type \"", kind, "\" is not supported (supported: default, linear, llama3)"));
}

absl::Status parse_dtype_and_token_ids(const nlohmann::json& obj, std::string_view source, ModelConfig& c) {
  TEMPER_ASSIGN_OR_RETURN(std::optional<std::string> dtype, json_optional_string(obj, "dtype", source));
  if (!dtype) {
    TEMPER_ASSIGN_OR_RETURN(dtype, json_optional_string(obj, "torch_dtype", source));
  }
  c.torch_dtype = dtype.value_or("");
  TEMPER_ASSIGN_OR_RETURN(c.bos_token_id, json_optional_int(obj, "bos_token_id", source));
  TEMPER_ASSIGN_OR_RETURN(c.pad_token_id, json_optional_int(obj, "pad_token_id", source));
  TEMPER_ASSIGN_OR_RETURN(c.eos_token_ids, id_list(obj, "eos_token_id", source));
  return absl::OkStatus();
}

// A size BLOOM configs spell two ways (BloomConfig's attribute_map and n_embed): the first name
// present wins; both present with different values is an error.
absl::StatusOr<int64_t> aliased_positive_int(const nlohmann::json& obj, const char* name, const char* alias,
                                             std::string_view source, int64_t max = kMaxDimension) {
  const bool has_name = obj.contains(name) && !obj.at(name).is_null();
  const bool has_alias = obj.contains(alias) && !obj.at(alias).is_null();
  if (!has_name && has_alias) return positive_int(obj, alias, source, max);
  TEMPER_ASSIGN_OR_RETURN(int64_t value, positive_int(obj, name, source, max));
  if (has_alias) {
    TEMPER_ASSIGN_OR_RETURN(int64_t other, positive_int(obj, alias, source, max));
    if (other != value) {
      return invalid(source, str_cat("fields \"", name, "\" (", value, ") and \"", alias, "\" (", other,
                                     ") disagree"));
    }
  }
  return value;
}

// BLOOM (transformers' BloomConfig): no RoPE (ALiBi), MLP width 4 x hidden, every linear layer
// and LayerNorm with a bias, tied lm_head unless tie_word_embeddings says otherwise.
// pretraining_tp / slow_but_exact only change how Megatron split the same products; ignored.
absl::Status parse_bloom(const nlohmann::json& obj, std::string_view source, ModelConfig& c) {
  TEMPER_ASSIGN_OR_RETURN(c.vocab_size, positive_int(obj, "vocab_size", source));
  TEMPER_ASSIGN_OR_RETURN(c.hidden_size, aliased_positive_int(obj, "hidden_size", "n_embed", source));
  TEMPER_ASSIGN_OR_RETURN(c.num_layers, aliased_positive_int(obj, "n_layer", "num_hidden_layers", source, kMaxLayers));
  TEMPER_ASSIGN_OR_RETURN(c.num_attention_heads, aliased_positive_int(obj, "n_head", "num_attention_heads", source));
  if (c.hidden_size % c.num_attention_heads != 0) {
    return invalid(source, str_cat("hidden_size (", c.hidden_size, ") is not divisible by n_head (",
                                   c.num_attention_heads, ")"));
  }
  if (c.hidden_size > kMaxDimension / 4) {
    return invalid(source, str_cat("hidden_size ", c.hidden_size, " is above temper's limit of ", kMaxDimension / 4,
                                   " for BLOOM (the MLP is 4 x hidden_size wide)"));
  }
  c.num_key_value_heads = c.num_attention_heads;
  c.head_dim = c.hidden_size / c.num_attention_heads;
  c.intermediate_size = 4 * c.hidden_size;
  // ALiBi sets no length limit; seq_length (the training length, in BigScience's configs) only
  // serves as the default evaluation window.
  TEMPER_ASSIGN_OR_RETURN(std::optional<int64_t> seq_length, json_optional_int(obj, "seq_length", source));
  c.max_position_embeddings = seq_length.value_or(2048);
  if (c.max_position_embeddings <= 0) return invalid(source, "seq_length must be positive");
  TEMPER_ASSIGN_OR_RETURN(std::optional<double> eps, json_optional_number(obj, "layer_norm_epsilon", source));
  c.layer_norm_eps = eps.value_or(1e-5);
  if (!(c.layer_norm_eps > 0)) return invalid(source, "layer_norm_epsilon must be positive");
  TEMPER_ASSIGN_OR_RETURN(std::optional<bool> post,
                          json_optional_bool(obj, "apply_residual_connection_post_layernorm", source));
  c.apply_residual_connection_post_layernorm = post.value_or(false);
  TEMPER_ASSIGN_OR_RETURN(std::optional<bool> tie, json_optional_bool(obj, "tie_word_embeddings", source));
  c.tie_word_embeddings = tie.value_or(true);
  c.qkv_bias = c.o_bias = c.mlp_bias = true;
  return parse_dtype_and_token_ids(obj, source, c);
}

}  // namespace

std::string_view model_family_name(ModelFamily family) {
  switch (family) {
    case ModelFamily::kLlama: return "llama";
    case ModelFamily::kMistral: return "mistral";
    case ModelFamily::kQwen2: return "qwen2";
    case ModelFamily::kBloom: return "bloom";
  }
  return "unknown";
}

StatusOr<ModelConfig> parse_model_config(std::string_view json_text, std::string_view source) {
  TEMPER_ASSIGN_OR_RETURN(nlohmann::json obj, parse_json(json_text, source));
  if (!obj.is_object()) return invalid(source, "config is not a JSON object");

  ModelConfig c;
  TEMPER_ASSIGN_OR_RETURN(c.model_type, json_string(obj, "model_type", source));
  if (c.model_type == "llama") {
    c.family = ModelFamily::kLlama;
  } else if (c.model_type == "mistral") {
    c.family = ModelFamily::kMistral;
  } else if (c.model_type == "qwen2") {
    c.family = ModelFamily::kQwen2;
  } else if (c.model_type == "bloom") {
    c.family = ModelFamily::kBloom;
    TEMPER_RETURN_IF_ERROR(parse_bloom(obj, source, c));
    return c;
  } else {
    return absl::UnimplementedError(str_cat(source, ": model_type \"", c.model_type,
                                                 "\" is not supported (supported: llama, mistral, qwen2, bloom)"));
  }

  TEMPER_ASSIGN_OR_RETURN(c.vocab_size, positive_int(obj, "vocab_size", source));
  TEMPER_ASSIGN_OR_RETURN(c.hidden_size, positive_int(obj, "hidden_size", source));
  TEMPER_ASSIGN_OR_RETURN(c.intermediate_size, positive_int(obj, "intermediate_size", source));
  TEMPER_ASSIGN_OR_RETURN(c.num_layers, positive_int(obj, "num_hidden_layers", source, kMaxLayers));
  TEMPER_ASSIGN_OR_RETURN(c.num_attention_heads, positive_int(obj, "num_attention_heads", source));
  TEMPER_ASSIGN_OR_RETURN(std::optional<int64_t> kv_heads, json_optional_int(obj, "num_key_value_heads", source));
  c.num_key_value_heads = kv_heads.value_or(c.num_attention_heads);
  if (c.num_key_value_heads <= 0 || c.num_attention_heads % c.num_key_value_heads != 0) {
    return invalid(source, str_cat("num_attention_heads (", c.num_attention_heads,
                                        ") must be a positive multiple of num_key_value_heads (", c.num_key_value_heads, ")"));
  }
  TEMPER_ASSIGN_OR_RETURN(std::optional<int64_t> head_dim, json_optional_int(obj, "head_dim", source));
  if (head_dim) {
    c.head_dim = *head_dim;
  } else {
    if (c.hidden_size % c.num_attention_heads != 0) {
      return invalid(source, str_cat("hidden_size (", c.hidden_size, ") is not divisible by num_attention_heads (",
                                          c.num_attention_heads, ") and no head_dim is given"));
    }
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  if (c.head_dim <= 0 || c.head_dim % 2 != 0 || c.head_dim > kMaxDimension) {
    return invalid(source, str_cat("head_dim must be positive and even for RoPE, found ", c.head_dim));
  }
  // Both factors are below 2^31, so the products cannot overflow.
  if (c.num_attention_heads * c.head_dim > kMaxDimension) {
    return invalid(source, str_cat("num_attention_heads x head_dim (", c.num_attention_heads, " x ", c.head_dim,
                                   ") is above temper's limit of ", kMaxDimension, " (a corrupt config.json?)"));
  }
  TEMPER_ASSIGN_OR_RETURN(std::optional<int64_t> max_pos, json_optional_int(obj, "max_position_embeddings", source));
  c.max_position_embeddings = max_pos.value_or(2048);
  if (c.max_position_embeddings <= 0) {
    return invalid(source, str_cat("field \"max_position_embeddings\" must be positive, found ", c.max_position_embeddings));
  }
  TEMPER_ASSIGN_OR_RETURN(std::optional<double> eps, json_optional_number(obj, "rms_norm_eps", source));
  c.rms_norm_eps = eps.value_or(1e-6);
  if (!(c.rms_norm_eps > 0)) return invalid(source, "rms_norm_eps must be positive");
  TEMPER_RETURN_IF_ERROR(parse_rope(obj, source, c));

  TEMPER_ASSIGN_OR_RETURN(std::optional<std::string> act, json_optional_string(obj, "hidden_act", source));
  if (act && *act != "silu" && *act != "swish") {
    return absl::UnimplementedError(str_cat(source, ": hidden_act \"", *act, "\" is not supported (silu only)"));
  }
  TEMPER_ASSIGN_OR_RETURN(std::optional<bool> tie, json_optional_bool(obj, "tie_word_embeddings", source));
  c.tie_word_embeddings = tie.value_or(false);
  TEMPER_ASSIGN_OR_RETURN(std::optional<bool> attention_bias, json_optional_bool(obj, "attention_bias", source));
  TEMPER_ASSIGN_OR_RETURN(std::optional<bool> mlp_bias, json_optional_bool(obj, "mlp_bias", source));
  switch (c.family) {
    case ModelFamily::kLlama:
      c.qkv_bias = c.o_bias = attention_bias.value_or(false);
      c.mlp_bias = mlp_bias.value_or(false);
      break;
    case ModelFamily::kMistral: {
      TEMPER_ASSIGN_OR_RETURN(std::optional<int64_t> window, json_optional_int(obj, "sliding_window", source));
      if (window && *window <= 0) return invalid(source, "sliding_window must be positive");
      c.sliding_window = window;
      break;
    }
    case ModelFamily::kQwen2: {
      c.qkv_bias = true;
      TEMPER_ASSIGN_OR_RETURN(std::optional<bool> use_window, json_optional_bool(obj, "use_sliding_window", source));
      if (use_window.value_or(false)) {
        return absl::UnimplementedError(str_cat(source, ": qwen2 use_sliding_window=true is not supported"));
      }
      break;
    }
    case ModelFamily::kBloom: break;  // parsed above
  }
  TEMPER_RETURN_IF_ERROR(parse_dtype_and_token_ids(obj, source, c));
  return c;
}

StatusOr<ModelConfig> load_model_config(const std::filesystem::path& model_dir) {
  const std::filesystem::path path = model_dir / "config.json";
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return absl::NotFoundError(str_cat(path.string(), ": not found (is ", model_dir.string(),
                                            " a Hugging Face model directory?)"));
  }
  TEMPER_ASSIGN_OR_RETURN(std::string text, read_file(path));
  return parse_model_config(text, path.string());
}

}  // namespace temper

namespace temper {
namespace {

const char* architecture_class(ModelFamily family) {
  switch (family) {
    case ModelFamily::kLlama: return "LlamaForCausalLM";
    case ModelFamily::kMistral: return "MistralForCausalLM";
    case ModelFamily::kQwen2: return "Qwen2ForCausalLM";
    case ModelFamily::kBloom: return "BloomForCausalLM";
  }
  return "";
}

void write_dtype_and_token_ids(const ModelConfig& c, nlohmann::ordered_json& j) {
  j["bos_token_id"] = c.bos_token_id ? nlohmann::ordered_json(*c.bos_token_id) : nlohmann::ordered_json();
  if (c.eos_token_ids.size() == 1) {
    j["eos_token_id"] = c.eos_token_ids[0];
  } else if (!c.eos_token_ids.empty()) {
    j["eos_token_id"] = c.eos_token_ids;
  }
  if (c.pad_token_id) j["pad_token_id"] = *c.pad_token_id;
  if (!c.torch_dtype.empty()) j["torch_dtype"] = c.torch_dtype;
}

StatusOr<std::string> bloom_config_to_json(const ModelConfig& c) {
  auto inexpressible = [](std::string_view what) {
    return absl::InvalidArgumentError(str_cat("model_config_to_json: a bloom config.json cannot express ", what));
  };
  if (c.num_key_value_heads != c.num_attention_heads) return inexpressible("grouped-query attention");
  if (c.num_attention_heads <= 0 || c.head_dim * c.num_attention_heads != c.hidden_size) {
    return inexpressible("a head_dim other than hidden_size / n_head");
  }
  if (c.intermediate_size != 4 * c.hidden_size) return inexpressible("an MLP width other than 4 x hidden_size");
  if (!c.qkv_bias || !c.o_bias || !c.mlp_bias) return inexpressible("linear layers without biases");
  if (c.sliding_window) return inexpressible("a sliding window");
  nlohmann::ordered_json j;
  j["architectures"] = {architecture_class(c.family)};
  j["model_type"] = "bloom";
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["n_layer"] = c.num_layers;
  j["n_head"] = c.num_attention_heads;
  j["layer_norm_epsilon"] = c.layer_norm_eps;
  j["apply_residual_connection_post_layernorm"] = c.apply_residual_connection_post_layernorm;
  j["seq_length"] = c.max_position_embeddings;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  write_dtype_and_token_ids(c, j);
  return j.dump(2) + "\n";
}

}  // namespace

StatusOr<std::string> model_config_to_json(const ModelConfig& c) {
  if (c.family == ModelFamily::kBloom) return bloom_config_to_json(c);
  const std::string_view family = model_family_name(c.family);
  auto inexpressible = [&](std::string_view what) {
    return absl::InvalidArgumentError(str_cat("model_config_to_json: a ", family, " config.json cannot express ", what));
  };
  nlohmann::ordered_json j;
  j["architectures"] = {architecture_class(c.family)};
  j["model_type"] = std::string(family);
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  if (c.num_attention_heads <= 0 || c.head_dim * c.num_attention_heads != c.hidden_size) j["head_dim"] = c.head_dim;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  switch (c.rope_scaling.type) {
    case RopeScalingType::kNone: break;
    case RopeScalingType::kLinear:
      j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", c.rope_scaling.factor}};
      break;
    case RopeScalingType::kLlama3:
      j["rope_scaling"] = {{"rope_type", "llama3"},
                           {"factor", c.rope_scaling.factor},
                           {"low_freq_factor", c.rope_scaling.low_freq_factor},
                           {"high_freq_factor", c.rope_scaling.high_freq_factor},
                           {"original_max_position_embeddings", c.rope_scaling.original_max_position_embeddings}};
      break;
  }
  j["hidden_act"] = "silu";
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  switch (c.family) {
    case ModelFamily::kLlama:
      if (c.qkv_bias != c.o_bias) return inexpressible("different q/k/v and o_proj biases (one attention_bias)");
      j["attention_bias"] = c.qkv_bias;
      j["mlp_bias"] = c.mlp_bias;
      break;
    case ModelFamily::kMistral:
      if (c.qkv_bias || c.o_bias || c.mlp_bias) return inexpressible("biases");
      j["sliding_window"] = c.sliding_window ? nlohmann::ordered_json(*c.sliding_window) : nlohmann::ordered_json();
      break;
    case ModelFamily::kQwen2:
      if (!c.qkv_bias || c.o_bias || c.mlp_bias) return inexpressible("biases other than on q/k/v");
      if (c.sliding_window) return inexpressible("a sliding window");
      j["use_sliding_window"] = false;
      break;
    case ModelFamily::kBloom: break;  // bloom_config_to_json
  }
  write_dtype_and_token_ids(c, j);
  return j.dump(2) + "\n";
}

}  // namespace temper
