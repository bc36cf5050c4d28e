// config.json (parse_model_config): every field combination, then what a loader does next with
// a parsed config (parameter_specs: names and shapes of every tensor) and the writer's round
// trip (model_config_to_json must express any config the parser accepted, and read back equal).
#include "fuzz_support.hpp"
#include "model/architecture.hpp"
#include "temper/config.hpp"

using namespace temper;

namespace {

bool same(const ModelConfig& a, const ModelConfig& b) {
  return a.family == b.family && a.vocab_size == b.vocab_size && a.hidden_size == b.hidden_size &&
         a.intermediate_size == b.intermediate_size && a.num_layers == b.num_layers &&
         a.num_attention_heads == b.num_attention_heads && a.num_key_value_heads == b.num_key_value_heads &&
         a.head_dim == b.head_dim && a.max_position_embeddings == b.max_position_embeddings &&
         a.rms_norm_eps == b.rms_norm_eps && a.rope_theta == b.rope_theta &&
         a.rope_scaling.type == b.rope_scaling.type && a.sliding_window == b.sliding_window &&
         a.tie_word_embeddings == b.tie_word_embeddings && a.qkv_bias == b.qkv_bias && a.o_bias == b.o_bias &&
         a.mlp_bias == b.mlp_bias && a.bos_token_id == b.bos_token_id && a.eos_token_ids == b.eos_token_ids &&
         a.pad_token_id == b.pad_token_id && a.torch_dtype == b.torch_dtype;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  StatusOr<ModelConfig> config = parse_model_config(fuzz::as_text(data, size), "config.json");
  if (!config.ok()) {
    fuzz::expect_code(config.status(), {absl::StatusCode::kInvalidArgument, absl::StatusCode::kUnimplemented});
    return 0;
  }
  const std::vector<ParamSpec> specs = parameter_specs(*config);
  for (const ParamSpec& spec : specs) {
    for (int64_t d : spec.shape) fuzz::expect(d > 0, "a parameter of a parsed config has a non-positive dimension");
  }
  StatusOr<std::string> json = model_config_to_json(*config);
  fuzz::expect(json.ok(), "model_config_to_json refused a config parse_model_config accepted");
  StatusOr<ModelConfig> again = parse_model_config(*json, "written config.json");
  fuzz::expect(again.ok(), "the written config.json does not parse");
  fuzz::expect(same(*config, *again), "config.json does not round-trip");
  return 0;
}
