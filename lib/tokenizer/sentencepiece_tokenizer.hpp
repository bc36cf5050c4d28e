#pragma once

#include <filesystem>
#include <memory>

#include <absl/status/statusor.h>

#include "temper/tokenizer.hpp"

namespace temper {

// A Tokenizer over a sentencepiece model file; special tokens from the model's own ids.
absl::StatusOr<std::unique_ptr<Tokenizer>> make_sentencepiece_tokenizer(const std::filesystem::path& model_file);

}  // namespace temper
