// What the model exports share: the config.json they write and the atomic model directory
// (weights, config.json, the tokenizer/generation files of the source directory).
#pragma once

#include <filesystem>
#include <string>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "io/checkpoint.hpp"
#include "model/model_impl.hpp"

namespace temper {

// "float32", "bfloat16", "float16", or nullptr for other dtypes.
const char* export_dtype_name(at::ScalarType dtype);

// The model's config.json with its dtype field(s) naming `dtype` (transformers 5 writes "dtype",
// earlier versions "torch_dtype"; both are kept where present) and without a quantization_config.
// FAILED_PRECONDITION for a model without one.
absl::StatusOr<nlohmann::ordered_json> exported_config(const Model::Impl& model, at::ScalarType dtype);

// Writes `tensors` (sharded above 5 GB), `config` and the carried tokenizer/generation files
// into `dir`, which appears whole or not at all; an existing `dir` is replaced only when it is
// empty or a model directory (holds config.json), FAILED_PRECONDITION otherwise.
absl::Status write_model_directory(const Model::Impl& model, const std::filesystem::path& dir,
                                   const NamedTensors& tensors, const nlohmann::ordered_json& config);

}  // namespace temper
