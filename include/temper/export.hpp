// Export of a (fine-tuned) model as a Hugging Face model directory that transformers, vLLM and
// llama.cpp's converters load: safetensors weights (sharded above 5 GB, with
// model.safetensors.index.json), config.json, and the tokenizer files of the directory the model
// was loaded from.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "temper/api.hpp"
#include "temper/lora_adapter.hpp"
#include "temper/model.hpp"
#include "temper/nf4_quantizer.hpp"
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

// What re-quantizing one merged linear weight costs. An adapter trained on an NF4 base learned
// its update against dequant(W4); the merged weight W = dequant(W4) + dW is exact in `dtype`, but
// quantizing it again moves every value to an NF4 level, and an update smaller than the
// quantization step is largely rounded away.
struct RequantizationError {
  std::string name;           // the weight's Hugging Face name
  double delta_norm = 0;      // ||dW||_F: the adapter's update folded into this weight (0: none)
  double error_norm = 0;      // ||dequant(quant(W)) - W||_F
  double relative_error = 0;  // error_norm / delta_norm; 0 when delta_norm is 0
};

struct QuantizedExportOptions {
  Nf4Options nf4;                        // bitsandbytes' QLoRA settings by default (blocksize 64, double quant)
  at::ScalarType dtype = at::kBFloat16;  // dense tensors, the quantized weights' original dtype, compute dtype
  double warn_relative_error = 0.5;      // warn for layers whose relative error is above this
};

struct QuantizedExportReport {
  std::vector<RequantizationError> layers;  // every quantized weight, in model order
  double max_relative_error = 0;
  std::vector<std::string> warnings;        // one per layer past options.warn_relative_error
};

// Writes `model` (with `adapter` folded in when not null) as a bitsandbytes 4-bit checkpoint that
// transformers loads with its quantization_config (and Model::load reads back quantized): the
// decoder blocks' linear weights in NF4 (bitsandbytes' tensor names and quant_state JSON),
// embeddings, norms and lm_head in options.dtype. Returns the per-layer re-quantization report;
// warnings also go to the log sink (temper/log.hpp). The directory rules are those of
// export_merged_model. Peak memory: the model plus one merged weight in fp32 plus the quantized
// copy of the model on the CPU.
TEMPER_API StatusOr<QuantizedExportReport> export_quantized_model(const Model& model, const LoraAdapter* adapter,
                                                                  const std::filesystem::path& dir,
                                                                  const QuantizedExportOptions& options = {});

}  // namespace temper
