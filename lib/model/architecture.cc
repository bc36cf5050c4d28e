#include "model/architecture.hpp"

#include <cstring>

#include <absl/strings/match.h>
#include "util/strings.hpp"

namespace temper {
namespace {

const char* linear_path(LinearSlot slot) {
  switch (slot) {
    case LinearSlot::kQ: return "self_attn.q_proj";
    case LinearSlot::kK: return "self_attn.k_proj";
    case LinearSlot::kV: return "self_attn.v_proj";
    case LinearSlot::kO: return "self_attn.o_proj";
    case LinearSlot::kGate: return "mlp.gate_proj";
    case LinearSlot::kUp: return "mlp.up_proj";
    case LinearSlot::kDown: return "mlp.down_proj";
  }
  return "";
}

}  // namespace

std::string ArchitectureNames::layer_prefix(int64_t layer) const { return str_cat("model.layers.", layer, "."); }

std::string ArchitectureNames::linear_module(int64_t layer, LinearSlot slot) const {
  return str_cat(layer_prefix(layer), linear_path(slot));
}

std::string ArchitectureNames::attn_norm(int64_t layer) const {
  return str_cat(layer_prefix(layer), "input_layernorm.weight");
}

std::string ArchitectureNames::mlp_norm(int64_t layer) const {
  return str_cat(layer_prefix(layer), "post_attention_layernorm.weight");
}

const ArchitectureNames& architecture_names(ModelFamily family) {
  // llama, mistral and qwen2 share Hugging Face's LlamaForCausalLM naming.
  static const ArchitectureNames kLlamaNames{"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"};
  switch (family) {
    case ModelFamily::kLlama:
    case ModelFamily::kMistral:
    case ModelFamily::kQwen2:
      return kLlamaNames;
  }
  return kLlamaNames;
}

const char* linear_slot_name(LinearSlot slot) {
  const char* path = linear_path(slot);
  const char* dot = std::strchr(path, '.');
  return dot == nullptr ? path : dot + 1;
}

std::vector<int64_t> linear_shape(const ModelConfig& c, LinearSlot slot) {
  const int64_t q_dim = c.num_attention_heads * c.head_dim;
  const int64_t kv_dim = c.num_key_value_heads * c.head_dim;
  switch (slot) {
    case LinearSlot::kQ: return {q_dim, c.hidden_size};
    case LinearSlot::kK:
    case LinearSlot::kV: return {kv_dim, c.hidden_size};
    case LinearSlot::kO: return {c.hidden_size, q_dim};
    case LinearSlot::kGate:
    case LinearSlot::kUp: return {c.intermediate_size, c.hidden_size};
    case LinearSlot::kDown: return {c.hidden_size, c.intermediate_size};
  }
  return {};
}

bool linear_has_bias(const ModelConfig& c, LinearSlot slot) {
  switch (slot) {
    case LinearSlot::kQ:
    case LinearSlot::kK:
    case LinearSlot::kV: return c.qkv_bias;
    case LinearSlot::kO: return c.o_bias;
    case LinearSlot::kGate:
    case LinearSlot::kUp:
    case LinearSlot::kDown: return c.mlp_bias;
  }
  return false;
}

std::vector<ParamSpec> parameter_specs(const ModelConfig& c) {
  const ArchitectureNames& names = architecture_names(c.family);
  std::vector<ParamSpec> specs;
  specs.push_back({names.embed, {c.vocab_size, c.hidden_size}, ParamRole::kEmbedding});
  for (int64_t layer = 0; layer < c.num_layers; ++layer) {
    specs.push_back({names.attn_norm(layer), {c.hidden_size}, ParamRole::kNorm});
    for (LinearSlot slot : kLinearSlots) {
      if (slot == LinearSlot::kGate) specs.push_back({names.mlp_norm(layer), {c.hidden_size}, ParamRole::kNorm});
      const std::string module = names.linear_module(layer, slot);
      const std::vector<int64_t> shape = linear_shape(c, slot);
      specs.push_back({module + ".weight", shape, ParamRole::kLinearWeight});
      if (linear_has_bias(c, slot)) specs.push_back({module + ".bias", {shape[0]}, ParamRole::kLinearBias});
    }
  }
  specs.push_back({names.final_norm, {c.hidden_size}, ParamRole::kNorm});
  if (!c.tie_word_embeddings) specs.push_back({names.lm_head, {c.vocab_size, c.hidden_size}, ParamRole::kLmHead});
  return specs;
}

bool is_ignorable_checkpoint_tensor(const std::string& name) {
  return absl::EndsWith(name, "rotary_emb.inv_freq");
}

}  // namespace temper
