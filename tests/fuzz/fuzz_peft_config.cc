// PEFT's adapter_config.json (parse_peft_lora_config), then what loading does with a config
// before any tensor is read: its rank_pattern / alpha_pattern keys compiled as regular
// expressions and matched against a model's projections (plan_modules), and the writer's round
// trip for list-form targets.
#include "fuzz_support.hpp"
#include "lora/lora_targets.hpp"
#include "lora/peft_config.hpp"

using namespace temper;

namespace {

ModelConfig small_config() {
  ModelConfig c;
  c.model_type = "llama";
  c.vocab_size = 97;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.max_position_embeddings = 64;
  return c;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text = fuzz::as_text(data, size);
  absl::StatusOr<PeftLoraConfig> config = parse_peft_lora_config(text, "adapter_config.json");
  if (!config.ok()) {
    fuzz::expect_code(config.status(), {absl::StatusCode::kInvalidArgument, absl::StatusCode::kUnimplemented});
    return 0;
  }
  static const std::vector<LinearModuleRef> modules = linear_modules(small_config());
  std::vector<LinearModuleRef> targets;
  for (const LinearModuleRef& m : modules) {
    for (const std::string& entry : config->target_modules) {
      if (peft_name_matches(entry, m.name)) {
        targets.push_back(m);
        break;
      }
    }
  }
  if (targets.empty()) targets = modules;
  absl::StatusOr<std::vector<ModulePlan>> plans =
      plan_modules(targets, config->r, config->lora_alpha, config->rank_pattern, config->alpha_pattern, false);
  if (!plans.ok()) fuzz::expect_code(plans.status(), {absl::StatusCode::kInvalidArgument});

  if (!config->target_regex && !config->exclude_regex && config->exclude_modules.empty()) {
    absl::StatusOr<PeftLoraConfig> again = parse_peft_lora_config(peft_lora_config_json(*config), "written");
    fuzz::expect(again.ok(), "the written adapter_config.json does not parse");
    fuzz::expect(again->r == config->r && again->target_modules == config->target_modules &&
                     again->use_dora == config->use_dora && again->use_rslora == config->use_rslora,
                 "adapter_config.json does not round-trip");
  }
  return 0;
}
