#include "model/architecture.hpp"

#include <cstring>

#include <absl/strings/match.h>
#include "util/strings.hpp"

namespace temper {
namespace {

const char* linear_path(ModelFamily family, LinearSlot slot) {
  if (family == ModelFamily::kBloom) {
    switch (slot) {
      case LinearSlot::kQkv: return "self_attention.query_key_value";
      case LinearSlot::kO: return "self_attention.dense";
      case LinearSlot::kUp: return "mlp.dense_h_to_4h";
      case LinearSlot::kDown: return "mlp.dense_4h_to_h";
      default: return "";
    }
  }
  switch (slot) {
    case LinearSlot::kQ: return "self_attn.q_proj";
    case LinearSlot::kK: return "self_attn.k_proj";
    case LinearSlot::kV: return "self_attn.v_proj";
    case LinearSlot::kO: return "self_attn.o_proj";
    case LinearSlot::kGate: return "mlp.gate_proj";
    case LinearSlot::kUp: return "mlp.up_proj";
    case LinearSlot::kDown: return "mlp.down_proj";
    case LinearSlot::kQkv: return "";
  }
  return "";
}

}  // namespace

LinearSlots linear_slots(ModelFamily family) {
  if (family == ModelFamily::kBloom) return {std::begin(kBloomLinearSlots), std::end(kBloomLinearSlots)};
  return {std::begin(kLinearSlots), std::end(kLinearSlots)};
}

std::string ArchitectureNames::layer_prefix(int64_t layer) const { return str_cat(layers, layer, "."); }

std::string ArchitectureNames::linear_module(int64_t layer, LinearSlot slot) const {
  return str_cat(layer_prefix(layer), linear_path(family, slot));
}

std::string ArchitectureNames::attn_norm(int64_t layer) const {
  return str_cat(layer_prefix(layer), "input_layernorm.weight");
}

std::string ArchitectureNames::mlp_norm(int64_t layer) const {
  return str_cat(layer_prefix(layer), "post_attention_layernorm.weight");
}

const ArchitectureNames& architecture_names(ModelFamily family) {
  // llama, mistral and qwen2 share Hugging Face's LlamaForCausalLM naming; BLOOM is named as
  // BloomForCausalLM saves it.
  static const ArchitectureNames kLlamaNames{ModelFamily::kLlama, "model.embed_tokens.weight", "",
                                             "model.norm.weight",  "lm_head.weight",            "model.layers."};
  static const ArchitectureNames kBloomNames{ModelFamily::kBloom,
                                             "transformer.word_embeddings.weight",
                                             "transformer.word_embeddings_layernorm.weight",
                                             "transformer.ln_f.weight",
                                             "lm_head.weight",
                                             "transformer.h."};
  switch (family) {
    case ModelFamily::kLlama:
    case ModelFamily::kMistral:
    case ModelFamily::kQwen2:
      return kLlamaNames;
    case ModelFamily::kBloom:
      return kBloomNames;
  }
  return kLlamaNames;
}

bool norms_have_bias(ModelFamily family) { return family == ModelFamily::kBloom; }

std::string norm_bias_name(const std::string& weight_name) {
  return weight_name.substr(0, weight_name.size() - std::strlen("weight")) + "bias";
}

const char* optional_checkpoint_prefix(ModelFamily family) {
  return family == ModelFamily::kBloom ? "transformer." : "";
}

const char* linear_slot_name(ModelFamily family, LinearSlot slot) {
  const char* path = linear_path(family, slot);
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
    case LinearSlot::kQkv: return {q_dim + 2 * kv_dim, c.hidden_size};
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
    case LinearSlot::kV:
    case LinearSlot::kQkv: return c.qkv_bias;
    case LinearSlot::kO: return c.o_bias;
    case LinearSlot::kGate:
    case LinearSlot::kUp:
    case LinearSlot::kDown: return c.mlp_bias;
  }
  return false;
}

std::vector<ParamSpec> parameter_specs(const ModelConfig& c) {
  const ArchitectureNames& names = architecture_names(c.family);
  const bool norm_bias = norms_have_bias(c.family);
  std::vector<ParamSpec> specs;
  auto add_norm = [&](const std::string& weight) {
    specs.push_back({weight, {c.hidden_size}, ParamRole::kNorm});
    if (norm_bias) specs.push_back({norm_bias_name(weight), {c.hidden_size}, ParamRole::kNormBias});
  };
  specs.push_back({names.embed, {c.vocab_size, c.hidden_size}, ParamRole::kEmbedding});
  if (!names.embed_norm.empty()) add_norm(names.embed_norm);
  for (int64_t layer = 0; layer < c.num_layers; ++layer) {
    add_norm(names.attn_norm(layer));
    // The MLP's norm comes right before its first projection (gate for llama, dense_h_to_4h for bloom).
    const LinearSlot first_mlp = c.family == ModelFamily::kBloom ? LinearSlot::kUp : LinearSlot::kGate;
    for (LinearSlot slot : linear_slots(c.family)) {
      if (slot == first_mlp) add_norm(names.mlp_norm(layer));
      const std::string module = names.linear_module(layer, slot);
      const std::vector<int64_t> shape = linear_shape(c, slot);
      specs.push_back({module + ".weight", shape, ParamRole::kLinearWeight});
      if (linear_has_bias(c, slot)) specs.push_back({module + ".bias", {shape[0]}, ParamRole::kLinearBias});
    }
  }
  add_norm(names.final_norm);
  if (!c.tie_word_embeddings) specs.push_back({names.lm_head, {c.vocab_size, c.hidden_size}, ParamRole::kLmHead});
  return specs;
}

bool is_ignorable_checkpoint_tensor(const std::string& name) {
  return absl::EndsWith(name, "rotary_emb.inv_freq");
}

}  // namespace temper
