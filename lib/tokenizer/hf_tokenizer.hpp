// Hugging Face tokenizer.json (byte-level BPE: BLOOM, Qwen2, LLaMA-3, GPT-2 and alike), run as
// the `tokenizers` library runs it. docs/tokenizers.md lists what is supported; anything else in
// a file is refused at load with UNIMPLEMENTED naming the component.
#pragma once

#include <filesystem>
#include <memory>

#include <absl/status/statusor.h>

#include "temper/tokenizer.hpp"

namespace temper {

// Loads `path` (a tokenizer.json file). Special tokens: BOS/EOS from the post-processor's template
// when it has one, UNK from the model; load_tokenizer() then applies tokenizer_config.json.
absl::StatusOr<std::unique_ptr<Tokenizer>> make_hf_tokenizer(const std::filesystem::path& path);

}  // namespace temper
