// Regular expressions of tokenizer.json files, run with PCRE2.
//
// Hugging Face tokenizers compiles Split / ByteLevel patterns with Oniguruma (Ruby syntax, UTF-8).
// PCRE2 (UTF + UCP, JIT) runs the same backtracking, leftmost-first semantics, but a few
// constructs read differently, so a pattern is first translated (translate_onig_pattern):
//   - `\s`/`\S`: Oniguruma's Unicode whitespace is [\t\n\v\f\r\x85] plus General_Category Z;
//     PCRE2's UCP `\s` also has U+180E (in its \h list). Spelled out so both agree.
//   - `\h`/`\H` are hex digits in Oniguruma (horizontal space in PCRE2); `\w` is
//     Letter|Mark|Number|Connector_Punctuation in Oniguruma; `\uHHHH` is PCRE2's `\x{HHHH}`.
//   - `[` inside a class opens a nested class (a union) in Oniguruma and is a literal in PCRE2.
//     BLOOM's pattern " ?[^(\s|[.,!?…。，、।۔،])]+" relies on it; a non-negated nested class is
//     flattened into its parent. Negated nested classes and `&&` are UNIMPLEMENTED.
//   - `^`/`$` are line anchors in Ruby syntax: PCRE2_MULTILINE, newline LF.
// Successive matches follow rust-onig's find_iter: an empty match right where the previous match
// ended is skipped (the search moves one character on).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <absl/status/statusor.h>

namespace temper {

// The PCRE2 spelling of an Oniguruma (Ruby syntax) pattern; see above.
absl::StatusOr<std::string> translate_onig_pattern(std::string_view pattern);

class HfRegex {
 public:
  // `literal`: the pattern is a plain string (Split's {"String": ...}).
  static absl::StatusOr<std::unique_ptr<HfRegex>> compile(std::string_view pattern, bool literal);
  ~HfRegex();
  HfRegex(const HfRegex&) = delete;
  HfRegex& operator=(const HfRegex&) = delete;

  // Appends the byte ranges [begin, end) of the successive non-overlapping matches in `text`
  // (valid UTF-8; not checked again). Thread-safe: match state is per thread.
  absl::Status find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>* matches) const;

  const std::string& source() const { return source_; }

 private:
  HfRegex() = default;
  void* code_ = nullptr;  // pcre2_code_8*
  std::string source_;
};

}  // namespace temper
