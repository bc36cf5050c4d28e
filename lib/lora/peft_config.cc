#include "lora/peft_config.hpp"

#include <cmath>

#include <nlohmann/json.hpp>

#include "io/json_file.hpp"
#include "util/status_macros.hpp"
#include "util/strings.hpp"

namespace temper {
namespace {

absl::Status invalid(std::string_view source, std::string_view message) {
  return absl::InvalidArgumentError(str_cat(source, ": ", message));
}

// A field holds something other than its "feature off" value (absent, null, false, "", [], {}).
bool is_set(const nlohmann::json& obj, const char* field) {
  auto it = obj.find(field);
  if (it == obj.end() || it->is_null()) return false;
  if (it->is_boolean()) return it->get<bool>();
  if (it->is_string() || it->is_array() || it->is_object()) return !it->empty();
  return true;
}

absl::Status refuse_unsupported(const nlohmann::json& obj, std::string_view source) {
  struct Feature {
    const char* field;
    const char* why;
  };
  static const Feature kFeatures[] = {
      {"modules_to_save", "fully trained copies of whole modules are not supported; temper adapters hold LoRA tensors only"},
      {"fan_in_fan_out", "weights stored [in, out] (GPT-2's Conv1D) do not occur in the families temper implements"},
      {"layers_to_transform", "selecting layers by index is not supported; list the modules in target_modules instead"},
      {"layer_replication", "layer replication is not supported"},
      {"lora_bias", "a bias on lora_B is not supported"},
      {"use_qalora", "QALoRA is not supported"},
      {"trainable_token_indices", "trainable tokens are not supported"},
      {"target_parameters", "LoRA on parameters (rather than modules) is not supported"},
      {"alora_invocation_tokens", "activated LoRA is not supported"},
      {"megatron_config", "Megatron parallel layers are not supported"},
      {"arrow_config", "Arrow routing is not supported"},
  };
  for (const Feature& f : kFeatures) {
    if (is_set(obj, f.field)) {
      return absl::UnimplementedError(
          str_cat(source, ": field \"", f.field, "\" is ", json_preview(obj.at(f.field)), ": ", f.why));
    }
  }
  auto bias = obj.find("bias");
  if (bias != obj.end() && !bias->is_null() && *bias != "none") {
    return absl::UnimplementedError(
        str_cat(source, ": field \"bias\" is ", json_preview(*bias), ": only \"none\" is supported (no trained biases)"));
  }
  return absl::OkStatus();
}

// init_lora_weights: true/false or the name of an init. Those that rewrite the base weights
// (PiSSA, OLoRA, CorDA, LoftQ) need the rewritten base, which temper does not have.
absl::Status read_init(const nlohmann::json& obj, std::string_view source, PeftLoraConfig& config) {
  auto it = obj.find("init_lora_weights");
  if (it == obj.end() || it->is_null() || it->is_boolean()) return absl::OkStatus();
  if (!it->is_string()) return invalid(source, "field \"init_lora_weights\" must be a boolean or a string");
  const std::string init = it->get<std::string>();
  if (init == "gaussian") {
    config.gaussian_init = true;
    return absl::OkStatus();
  }
  if (init == "eva" || init == "orthogonal") return absl::OkStatus();  // A and B only; the base is untouched
  return absl::UnimplementedError(str_cat(
      source, ": field \"init_lora_weights\" is \"", init,
      "\": this init rewrites the base weights, so the adapter only works on that rewritten base; convert it to a "
      "plain LoRA adapter first (PEFT: save_pretrained(..., path_initial_model_for_weight_conversion=...))"));
}

// target_modules / exclude_modules: a list of names or one regular expression.
absl::Status read_modules(const nlohmann::json& obj, const char* field, std::string_view source,
                          std::vector<std::string>& list, std::optional<std::string>& regex) {
  auto it = obj.find(field);
  if (it == obj.end() || it->is_null()) return absl::OkStatus();
  if (it->is_string()) {
    regex = it->get<std::string>();
    return absl::OkStatus();
  }
  if (!it->is_array()) return invalid(source, str_cat("field \"", field, "\" must be a list of names or a string"));
  for (const auto& v : *it) {
    if (!v.is_string()) return invalid(source, str_cat("field \"", field, "\" must hold strings, found ", json_preview(v)));
    list.push_back(v.get<std::string>());
  }
  return absl::OkStatus();
}

template <typename T>
absl::Status read_pattern(const nlohmann::ordered_json& obj, const char* field, std::string_view source,
                          std::vector<std::pair<std::string, T>>& out) {
  auto it = obj.find(field);
  if (it == obj.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_object()) return invalid(source, str_cat("field \"", field, "\" must be an object"));
  for (auto entry = it->begin(); entry != it->end(); ++entry) {
    const bool ok = std::is_integral_v<T> ? entry.value().is_number_integer() : entry.value().is_number();
    if (!ok) {
      return invalid(source, str_cat("field \"", field, "\": the value of \"", entry.key(), "\" must be ",
                                     std::is_integral_v<T> ? "an integer" : "a number", ", found ",
                                     json_preview(entry.value())));
    }
    out.emplace_back(entry.key(), entry.value().get<T>());
  }
  return absl::OkStatus();
}

// The same document with its objects' keys in file order.
absl::StatusOr<nlohmann::ordered_json> parse_ordered(std::string_view text, std::string_view source) {
  try {
    return nlohmann::ordered_json::parse(text.begin(), text.end());
  } catch (const std::exception& e) {
    return invalid(source, str_cat("invalid JSON: ", e.what()));
  }
}

nlohmann::json number(double value) {
  if (std::floor(value) == value && std::abs(value) < 1e15) return static_cast<int64_t>(value);
  return value;
}

}  // namespace

absl::StatusOr<PeftLoraConfig> parse_peft_lora_config(std::string_view json_text, std::string_view source) {
  TEMPER_ASSIGN_OR_RETURN(nlohmann::json obj, parse_json(json_text, source));
  if (!obj.is_object()) return invalid(source, "adapter config is not a JSON object");
  TEMPER_ASSIGN_OR_RETURN(std::string peft_type, json_string(obj, "peft_type", source));
  if (peft_type != "LORA") {
    return invalid(source, str_cat("field \"peft_type\" is \"", peft_type, "\"; temper loads LoRA adapters (\"LORA\") only"));
  }
  TEMPER_RETURN_IF_ERROR(refuse_unsupported(obj, source));

  PeftLoraConfig config;
  TEMPER_ASSIGN_OR_RETURN(config.r, json_int(obj, "r", source));
  if (config.r < 1) return invalid(source, str_cat("field \"r\" must be at least 1, found ", config.r));
  TEMPER_ASSIGN_OR_RETURN(config.lora_alpha, json_number(obj, "lora_alpha", source));
  if (!(std::abs(config.lora_alpha) <= kMaxLoraAlpha)) {
    return invalid(source, str_cat("field \"lora_alpha\" must be a number of magnitude at most ", kMaxLoraAlpha,
                                   ", found ", config.lora_alpha));
  }
  TEMPER_ASSIGN_OR_RETURN(std::optional<double> dropout, json_optional_number(obj, "lora_dropout", source));
  config.lora_dropout = dropout.value_or(0.0);
  if (!(config.lora_dropout >= 0.0 && config.lora_dropout < 1.0)) {
    return invalid(source, str_cat("field \"lora_dropout\" must be in [0, 1), found ", config.lora_dropout));
  }
  TEMPER_ASSIGN_OR_RETURN(std::optional<bool> rslora, json_optional_bool(obj, "use_rslora", source));
  config.use_rslora = rslora.value_or(false);
  TEMPER_ASSIGN_OR_RETURN(std::optional<bool> dora, json_optional_bool(obj, "use_dora", source));
  config.use_dora = dora.value_or(false);
  TEMPER_RETURN_IF_ERROR(read_init(obj, source, config));

  if (!obj.contains("target_modules") || obj["target_modules"].is_null()) {
    return invalid(source, "field \"target_modules\" is missing; PEFT would fall back to per-architecture defaults, "
                           "temper needs the modules named");
  }
  TEMPER_RETURN_IF_ERROR(read_modules(obj, "target_modules", source, config.target_modules, config.target_regex));
  TEMPER_RETURN_IF_ERROR(read_modules(obj, "exclude_modules", source, config.exclude_modules, config.exclude_regex));

  // The pattern tables keep the file's order: PEFT's first match wins in that order.
  TEMPER_ASSIGN_OR_RETURN(nlohmann::ordered_json ordered, parse_ordered(json_text, source));
  TEMPER_RETURN_IF_ERROR(read_pattern(ordered, "rank_pattern", source, config.rank_pattern));
  TEMPER_RETURN_IF_ERROR(read_pattern(ordered, "alpha_pattern", source, config.alpha_pattern));
  for (const auto& [key, rank] : config.rank_pattern) {
    if (rank < 1) return invalid(source, str_cat("rank_pattern[\"", key, "\"] must be at least 1, found ", rank));
  }
  for (const auto& [key, alpha] : config.alpha_pattern) {
    if (!(std::abs(alpha) <= kMaxLoraAlpha)) {
      return invalid(source, str_cat("alpha_pattern[\"", key, "\"] must be a number of magnitude at most ", kMaxLoraAlpha,
                                     ", found ", alpha));
    }
  }
  TEMPER_ASSIGN_OR_RETURN(std::optional<std::string> base, json_optional_string(obj, "base_model_name_or_path", source));
  config.base_model_name_or_path = base.value_or("");
  return config;
}

std::string peft_lora_config_json(const PeftLoraConfig& config) {
  // nlohmann::json objects are std::maps: keys come out sorted, as PEFT's json.dumps(sort_keys=True).
  nlohmann::json rank_pattern = nlohmann::json::object();
  for (const auto& [key, rank] : config.rank_pattern) rank_pattern[key] = rank;
  nlohmann::json alpha_pattern = nlohmann::json::object();
  for (const auto& [key, alpha] : config.alpha_pattern) alpha_pattern[key] = number(alpha);
  nlohmann::json obj = {
      {"alpha_pattern", alpha_pattern},
      {"base_model_name_or_path", config.base_model_name_or_path},
      {"bias", "none"},
      {"fan_in_fan_out", false},
      {"inference_mode", true},
      {"init_lora_weights", config.gaussian_init ? nlohmann::json("gaussian") : nlohmann::json(true)},
      {"lora_alpha", number(config.lora_alpha)},
      {"lora_dropout", config.lora_dropout},
      {"modules_to_save", nullptr},
      {"peft_type", "LORA"},
      {"r", config.r},
      {"rank_pattern", rank_pattern},
      {"target_modules", config.target_modules},
      {"task_type", "CAUSAL_LM"},
      {"use_dora", config.use_dora},
      {"use_rslora", config.use_rslora},
  };
  return obj.dump(2) + "\n";
}

}  // namespace temper
