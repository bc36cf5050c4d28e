// What a decoder family is made of and what its tensors are called.
//
// The decoder (decoder_block.cc) is written once; a family is described here by its tensor
// names and shapes and by the switches in ModelConfig (biases, sliding window, tied lm_head).
// Adding a family (BLOOM: LayerNorm, ALiBi, fused qkv) means describing what differs here and
// adding the variant to the block, not copying the block.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "temper/config.hpp"

namespace temper {

// Where a parameter sits in the model; decides defaults such as "no weight decay on norms".
enum class ParamRole { kEmbedding, kNorm, kLinearWeight, kLinearBias, kLmHead };

struct ParamSpec {
  std::string name;            // Hugging Face name, e.g. "model.layers.0.self_attn.q_proj.weight"
  std::vector<int64_t> shape;  // Linear weights are [out, in]
  ParamRole role;
};

// The linear projections of one decoder layer, in the order the block uses them.
enum class LinearSlot { kQ, kK, kV, kO, kGate, kUp, kDown };
inline constexpr LinearSlot kLinearSlots[] = {LinearSlot::kQ,    LinearSlot::kK,  LinearSlot::kV,   LinearSlot::kO,
                                              LinearSlot::kGate, LinearSlot::kUp, LinearSlot::kDown};

struct ArchitectureNames {
  std::string embed;       // token embedding [vocab, hidden]
  std::string final_norm;  // [hidden]
  std::string lm_head;     // [vocab, hidden]; absent from checkpoints with tied embeddings
  std::string layer_prefix(int64_t layer) const;                 // "model.layers.{i}."
  std::string linear_module(int64_t layer, LinearSlot slot) const;  // "model.layers.{i}.self_attn.q_proj"
  std::string attn_norm(int64_t layer) const;
  std::string mlp_norm(int64_t layer) const;
};

const ArchitectureNames& architecture_names(ModelFamily family);

// [out, in] of a layer's linear projection.
std::vector<int64_t> linear_shape(const ModelConfig& config, LinearSlot slot);
bool linear_has_bias(const ModelConfig& config, LinearSlot slot);
// The module's own name ("q_proj"), as PEFT's target_modules use it.
const char* linear_slot_name(LinearSlot slot);

// Every parameter a checkpoint of `config` must hold, in model order.
std::vector<ParamSpec> parameter_specs(const ModelConfig& config);

// Names a checkpoint may carry that are not parameters (buffers older transformers saved).
bool is_ignorable_checkpoint_tensor(const std::string& name);

}  // namespace temper
