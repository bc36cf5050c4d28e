// Special tokens from a Hugging Face tokenizer_config.json.
#pragma once

#include <filesystem>
#include <functional>
#include <optional>
#include <string_view>

#include <absl/status/statusor.h>

#include "temper/tokenizer.hpp"

namespace temper {

// Reads bos/eos/pad/unk_token (a string or {"content": ...}) and add_bos_token/add_eos_token
// from `path`, mapping pieces to ids with `piece_to_id`. Tokens the file does not name keep
// their value in `defaults`; a named token that is not in the vocabulary is an error.
absl::StatusOr<SpecialTokens> read_special_tokens(
    const std::filesystem::path& path, const SpecialTokens& defaults,
    const std::function<std::optional<TokenId>(std::string_view)>& piece_to_id);

}  // namespace temper
