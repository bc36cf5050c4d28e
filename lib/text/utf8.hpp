// UTF-8 validation (utf8proc decides what is valid: no overlong forms, no surrogates, nothing
// above U+10FFFF).
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>

namespace temper {

// The byte offset of the first invalid sequence, or nullopt when `text` is valid UTF-8.
std::optional<size_t> first_invalid_utf8(std::string_view text);

}  // namespace temper
