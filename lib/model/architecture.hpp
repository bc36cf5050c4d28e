// What a decoder family is made of and what its tensors are called.
//
// The llama-family decoder (decoder_block.cc) is written once; llama, mistral and qwen2 are
// described here by their tensor names and shapes and by the switches in ModelConfig (biases,
// sliding window, tied lm_head). BLOOM differs in every step of the block (LayerNorm with bias,
// fused per-head qkv, ALiBi instead of RoPE, GELU without a gate, optional post-norm residuals),
// so it has its own block (bloom_block.cc); everything around the block (loading, the Linear
// slots that LoRA and NF4 wrap, loss, generation, checkpointing, export) is shared and reads the
// family's description here.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "temper/config.hpp"

namespace temper {

// Where a parameter sits in the model; decides defaults such as "no weight decay on norms".
enum class ParamRole { kEmbedding, kNorm, kNormBias, kLinearWeight, kLinearBias, kLmHead };

struct ParamSpec {
  std::string name;            // Hugging Face name, e.g. "model.layers.0.self_attn.q_proj.weight"
  std::vector<int64_t> shape;  // Linear weights are [out, in]
  ParamRole role;
};

// The linear projections of one decoder layer. kQkv is BLOOM's fused query_key_value; BLOOM's
// dense, dense_h_to_4h and dense_4h_to_h sit in the kO, kUp and kDown slots.
enum class LinearSlot { kQ, kK, kV, kO, kGate, kUp, kDown, kQkv };
// The llama family's projections, in the order its block uses them.
inline constexpr LinearSlot kLinearSlots[] = {LinearSlot::kQ,    LinearSlot::kK,  LinearSlot::kV,   LinearSlot::kO,
                                              LinearSlot::kGate, LinearSlot::kUp, LinearSlot::kDown};
inline constexpr LinearSlot kBloomLinearSlots[] = {LinearSlot::kQkv, LinearSlot::kO, LinearSlot::kUp, LinearSlot::kDown};

// A family's projections in block order.
struct LinearSlots {
  const LinearSlot* first;
  const LinearSlot* last;
  const LinearSlot* begin() const { return first; }
  const LinearSlot* end() const { return last; }
};
LinearSlots linear_slots(ModelFamily family);

struct ArchitectureNames {
  ModelFamily family = ModelFamily::kLlama;
  std::string embed;       // token embedding [vocab, hidden]
  std::string embed_norm;  // [hidden] LayerNorm weight after the embedding; empty when the family has none
  std::string final_norm;  // [hidden]
  std::string lm_head;     // [vocab, hidden]; absent from checkpoints with tied embeddings
  std::string layers;      // "model.layers." / "transformer.h."
  std::string layer_prefix(int64_t layer) const;                 // "model.layers.{i}."
  std::string linear_module(int64_t layer, LinearSlot slot) const;  // "model.layers.{i}.self_attn.q_proj"
  std::string attn_norm(int64_t layer) const;  // the norm's weight
  std::string mlp_norm(int64_t layer) const;
};

const ArchitectureNames& architecture_names(ModelFamily family);
// Whether the family's norms are LayerNorms with a bias ("<norm>.bias" beside each "<norm>.weight").
bool norms_have_bias(ModelFamily family);
// "x.weight" -> "x.bias"
std::string norm_bias_name(const std::string& weight_name);
// BLOOM checkpoints saved from BloomModel rather than BloomForCausalLM name their tensors
// without the "transformer." prefix; this is the prefix that such checkpoints drop ("" for
// families without the variant).
const char* optional_checkpoint_prefix(ModelFamily family);

// [out, in] of a layer's linear projection.
std::vector<int64_t> linear_shape(const ModelConfig& config, LinearSlot slot);
bool linear_has_bias(const ModelConfig& config, LinearSlot slot);
// The module's own name ("q_proj", BLOOM "query_key_value"), as PEFT's target_modules use it.
const char* linear_slot_name(ModelFamily family, LinearSlot slot);

// Every parameter a checkpoint of `config` must hold, in model order.
std::vector<ParamSpec> parameter_specs(const ModelConfig& config);

// Names a checkpoint may carry that are not parameters (buffers older transformers saved).
bool is_ignorable_checkpoint_tensor(const std::string& name);

}  // namespace temper
