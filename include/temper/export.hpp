// Export of a (fine-tuned) model as a Hugging Face model directory that transformers, vLLM and
// llama.cpp's converters load: safetensors weights (sharded above 5 GB, with
// model.safetensors.index.json), config.json, and the tokenizer files of the directory the model
// was loaded from.
#pragma once

#include <filesystem>

#include <ATen/ATen.h>

#include "temper/api.hpp"
#include "temper/lora_adapter.hpp"
#include "temper/model.hpp"
#include "temper/status.hpp"

namespace temper {

// Writes `model`, with `adapter`'s deltas folded into the weights when `adapter` is not null,
// into `dir` in `dtype` (float32, bfloat16 or float16). The model is not modified. config.json is
// the model's own (as loaded, or generated for Model::random) with its dtype set to `dtype`;
// tokenizer and generation files are copied when the source directory had them. The directory
// appears whole or not at all; an existing one is replaced only when it is empty or a model
// directory (holds config.json), FAILED_PRECONDITION otherwise.
//
// `adapter` (not owned, may be null) must be installed on `model` (INVALID_ARGUMENT otherwise).
// Peak memory: the model plus one copy of its weights in `dtype` on the CPU.
TEMPER_API Status export_merged_model(const Model& model, const LoraAdapter* adapter, const std::filesystem::path& dir,
                                      at::ScalarType dtype = at::kBFloat16);

}  // namespace temper
