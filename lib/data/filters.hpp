// The noise filters of the data pipeline: one verdict per document, naming the first filter that
// rejects it and why. The measures and their thresholds are documented in docs/data.md
// ("Noise filters"); the options in temper/data_options.hpp.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <absl/status/statusor.h>

#include "temper/data_options.hpp"

namespace temper {

struct FilterVerdict {
  bool keep = true;
  std::string filter;  // the rejecting filter: "utf8", "length", "repetition", "non_word", "boilerplate"
  std::string reason;  // short human detail, e.g. "character run of 45 x '='"
};

class DocumentFilter {
 public:
  // INVALID_ARGUMENT naming the option when a threshold is out of range (negative lengths,
  // fractions outside [0, 1], NaN, runs below 1, max below min).
  static absl::StatusOr<DocumentFilter> create(const FilterOptions& options);

  // Judges a document's text with every enabled filter, in the order utf8, length (characters),
  // repetition, non_word, boilerplate; the first rejection is returned. Thread-safe.
  FilterVerdict check(std::string_view text) const;
  // The token half of the length filter, for after tokenization.
  FilterVerdict check_tokens(int64_t token_count) const;

  const FilterOptions& options() const { return options_; }

 private:
  explicit DocumentFilter(const FilterOptions& options) : options_(options) {}
  FilterOptions options_;
};

}  // namespace temper
