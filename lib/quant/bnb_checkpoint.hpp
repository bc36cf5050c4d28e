// Hugging Face checkpoints quantized by bitsandbytes (4-bit NF4): the `quantization_config` of
// their config.json and the names of the quant-state tensors beside each quantized weight
// (../shared/formats.md). Model::load reads such checkpoints with these; export_quantized_model
// writes them.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "temper/nf4_quantizer.hpp"

namespace temper {

struct BnbQuantizationConfig {
  bool double_quant = false;                  // bnb_4bit_use_double_quant
  at::ScalarType compute_dtype = at::kFloat;  // bnb_4bit_compute_dtype
};

// The bitsandbytes 4-bit config in `config_json` (a config.json's text), or nullopt when it has no
// quantization_config. Other quantization methods, 8-bit and fp4 are UNIMPLEMENTED naming the
// field; a malformed quantization_config is INVALID_ARGUMENT. `source` names the file in messages.
absl::StatusOr<std::optional<BnbQuantizationConfig>> parse_bnb_quantization_config(std::string_view config_json,
                                                                                   std::string_view source);

// quantization_config as transformers writes it for BitsAndBytesConfig(load_in_4bit=True,
// bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=options.double_quant,
// bnb_4bit_compute_dtype=compute_dtype).
nlohmann::ordered_json bnb_quantization_config(const Nf4Options& options, at::ScalarType compute_dtype);

// The JSON-bytes tensor that marks `weight_name` ("...q_proj.weight") as quantized.
std::string bnb_quant_state_name(const std::string& weight_name);

// True for the tensors bitsandbytes stores beside a quantized weight P.weight: P.weight.absmax,
// .quant_map, .nested_absmax, .nested_quant_map, .quant_state.bitsandbytes__nf4 / __fp4.
bool is_bnb_quant_state_tensor(const std::string& name);

}  // namespace temper
