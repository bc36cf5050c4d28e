// Invalid UTF-8 -> U+FFFD, as Python's bytes.decode("utf-8", errors="replace") and Rust's
// String::from_utf8_lossy do: each maximal subpart of an ill-formed sequence (a valid lead byte
// followed by the valid continuation bytes that came before the failure, or else a single byte)
// becomes one U+FFFD (Unicode 15, section 3.9, "U+FFFD Substitution of Maximal Subparts").
#pragma once

#include <string>
#include <string_view>

namespace temper {

// True when `text` is valid UTF-8 (no overlong forms, surrogates or values above U+10FFFF).
bool is_valid_utf8(std::string_view text);

// `text` with every maximal ill-formed subpart replaced by U+FFFD (EF BF BD).
std::string replace_invalid_utf8(std::string_view text);

}  // namespace temper
