// PEFT's adapter_config.json for LoRA adapters (peft tuners/lora/config.py), read and written.
//
// Reading accepts what PEFT versions write (unknown fields are ignored, as PEFT's own loader
// drops them) and refuses, as UNIMPLEMENTED naming the field, every feature that would make
// temper compute something other than PEFT: modules_to_save, fan_in_fan_out, bias terms,
// layer selection and replication, inits that rewrite the base weights (PiSSA, OLoRA, CorDA,
// LoftQ), QALoRA, trainable tokens, LoRA on parameters.
//
// Writing emits only fields that PEFT 0.12 already knows (older PEFT versions fail on unknown
// keys), with indent 2 and sorted keys as PEFT writes them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <absl/status/statusor.h>

namespace temper {

inline constexpr char kAdapterConfigFile[] = "adapter_config.json";
inline constexpr char kAdapterWeightsFile[] = "adapter_model.safetensors";
// PEFT's tensor names are the module names inside PeftModel -> LoraModel -> the transformers model.
inline constexpr char kPeftKeyPrefix[] = "base_model.model.";

// The largest LoRA alpha temper accepts: fp16's largest value, so that the scale alpha / r (or
// alpha / sqrt(r)) is representable in every adapter dtype; a larger one made libtorch throw when
// scaling (found by fuzz_capi_options). Published configurations use alphas up to a few hundred.
inline constexpr double kMaxLoraAlpha = 65504.0;

struct PeftLoraConfig {
  int64_t r = 8;
  double lora_alpha = 8.0;
  double lora_dropout = 0.0;
  bool use_rslora = false;
  bool use_dora = false;
  bool gaussian_init = false;                // init_lora_weights "gaussian" (else the default)
  std::vector<std::string> target_modules;   // list form: names or name suffixes
  std::optional<std::string> target_regex;   // string form: a regex over the whole name; "all-linear"
  std::vector<std::string> exclude_modules;  // list form
  std::optional<std::string> exclude_regex;  // string form
  // In the file's order, which is PEFT's precedence.
  std::vector<std::pair<std::string, int64_t>> rank_pattern;
  std::vector<std::pair<std::string, double>> alpha_pattern;
  std::string base_model_name_or_path;
};

// Parses adapter_config.json text; `source` names the file in messages.
absl::StatusOr<PeftLoraConfig> parse_peft_lora_config(std::string_view json_text, std::string_view source);

// The adapter_config.json text for `config` (list-form targets only).
std::string peft_lora_config_json(const PeftLoraConfig& config);

}  // namespace temper
