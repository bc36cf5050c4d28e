#include "data/filters.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include <utf8proc.h>
#include <xxhash.h>

#include "data/text_stats.hpp"
#include "util/strings.hpp"

namespace temper {
namespace {

// Buffers reused across the documents one thread checks, so that checking allocates only while
// documents grow.
struct Scratch {
  TextStats stats;
  std::vector<uint64_t> word_hashes;
  std::vector<std::pair<uint64_t, uint32_t>> ngrams;  // (hash, first word)
  std::vector<uint8_t> covered;                        // per word
  std::vector<uint64_t> line_hashes;
};

Scratch& thread_scratch() {
  thread_local Scratch scratch;
  return scratch;
}

FilterVerdict reject(const char* filter, std::string reason) {
  return FilterVerdict{false, filter, std::move(reason)};
}

// Three significant digits, so that a value just over its limit does not print as the limit.
std::string percent(double fraction) { return fmt::format("{:.3g}%", fraction * 100.0); }

// A code point as a reader can see it: quoted when printable, U+XXXX otherwise.
std::string describe_char(int32_t cp) {
  const utf8proc_category_t category = utf8proc_category(cp);
  if (category == UTF8PROC_CATEGORY_CC || category == UTF8PROC_CATEGORY_CF || category == UTF8PROC_CATEGORY_CN ||
      category == UTF8PROC_CATEGORY_ZS || category == UTF8PROC_CATEGORY_ZL || category == UTF8PROC_CATEGORY_ZP) {
    return fmt::format("U+{:04X}", cp);
  }
  utf8proc_uint8_t buffer[4];
  const utf8proc_ssize_t n = utf8proc_encode_char(cp, buffer);
  return str_cat("'", std::string_view(reinterpret_cast<const char*>(buffer), static_cast<size_t>(n)), "'");
}

// A piece of the document for a reason string, cut at a code point boundary when long.
std::string excerpt(std::string_view text) {
  constexpr size_t kMaxBytes = 40;
  if (text.size() <= kMaxBytes) return str_cat("'", text, "'");
  size_t end = kMaxBytes;
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  return str_cat("'", text.substr(0, end), "...'");
}

std::string_view word_text(std::string_view text, const WordSpan& word) {
  return text.substr(word.begin, word.size);
}

std::string_view ngram_text(std::string_view text, const std::vector<WordSpan>& words, size_t first, size_t n) {
  const WordSpan& last = words[first + n - 1];
  return text.substr(words[first].begin, last.begin + last.size - words[first].begin);
}

// Hashes every word n-gram into scratch.ngrams, sorted by hash and then position, so that equal
// n-grams are adjacent with their earliest occurrence first.
void sorted_ngrams(size_t n, Scratch& scratch) {
  const std::vector<uint64_t>& hashes = scratch.word_hashes;
  scratch.ngrams.clear();
  if (hashes.size() < n) return;
  for (size_t i = 0; i + n <= hashes.size(); ++i) {
    scratch.ngrams.emplace_back(XXH3_64bits(&hashes[i], n * sizeof(uint64_t)), static_cast<uint32_t>(i));
  }
  std::sort(scratch.ngrams.begin(), scratch.ngrams.end());
}

// Characters of the words an n-gram occurrence starting at `first` covers that no earlier marked
// occurrence covered (overlapping occurrences are not counted twice).
int64_t cover(size_t first, size_t n, const std::vector<WordSpan>& words, std::vector<uint8_t>& covered) {
  int64_t chars = 0;
  for (size_t w = first; w < first + n; ++w) {
    if (!covered[w]) {
      covered[w] = 1;
      chars += words[w].chars;
    }
  }
  return chars;
}

// Gopher's "fraction of characters contained in the most frequent n-gram": the characters of the
// words that the occurrences of the most frequent n-gram cover, over all characters. Gopher
// judged documents of 50 words and more; temper also keeps short ones (glossary entries), where
// an n-gram seen twice is ordinary ("Brachial: ... as, the brachial artery; the brachial nerve."
// gives "the brachial" 24%), so an n-gram counts only from its third occurrence on. Ties go to the longer n-gram.
constexpr size_t kMinTopNgramCount = 3;

double top_ngram_fraction(std::string_view text, const TextStats& stats, size_t n, Scratch& scratch,
                          std::string* top) {
  sorted_ngrams(n, scratch);
  const auto& ngrams = scratch.ngrams;
  const std::vector<WordSpan>& words = stats.words;
  size_t best_begin = 0, best_count = 0;
  int64_t best_chars = 0;
  for (size_t i = 0; i < ngrams.size();) {
    size_t j = i;
    while (j < ngrams.size() && ngrams[j].first == ngrams[i].first) ++j;
    const size_t count = j - i;
    if (count >= kMinTopNgramCount) {
      int64_t chars = 0;
      for (size_t w = ngrams[i].second; w < ngrams[i].second + n; ++w) chars += words[w].chars;
      if (count > best_count || (count == best_count && chars > best_chars)) {
        best_begin = i;
        best_count = count;
        best_chars = chars;
      }
    }
    i = j;
  }
  if (best_count == 0 || stats.code_points == 0) return 0.0;
  scratch.covered.assign(words.size(), 0);
  int64_t covered_chars = 0;
  for (size_t k = best_begin; k < best_begin + best_count; ++k) {
    covered_chars += cover(ngrams[k].second, n, words, scratch.covered);
  }
  *top = ngram_text(text, words, ngrams[best_begin].second, n);
  return static_cast<double>(covered_chars) / static_cast<double>(stats.code_points);
}

// Gopher's "fraction of characters contained in duplicate n-grams": the characters of the words
// covered by every occurrence of an n-gram after its first one, over all characters.
double duplicate_ngram_fraction(const TextStats& stats, size_t n, Scratch& scratch) {
  sorted_ngrams(n, scratch);
  const auto& ngrams = scratch.ngrams;
  if (ngrams.empty() || stats.code_points == 0) return 0.0;
  scratch.covered.assign(stats.words.size(), 0);
  int64_t covered_chars = 0;
  for (size_t k = 1; k < ngrams.size(); ++k) {
    if (ngrams[k].first == ngrams[k - 1].first) covered_chars += cover(ngrams[k].second, n, stats.words, scratch.covered);
  }
  return static_cast<double>(covered_chars) / static_cast<double>(stats.code_points);
}

FilterVerdict check_repetition(std::string_view text, const FilterOptions& options, Scratch& scratch) {
  const TextStats& stats = scratch.stats;
  if (stats.longest_run > options.max_char_run) {
    return reject("repetition", str_cat("character run of ", stats.longest_run, " x ", describe_char(stats.longest_run_char)));
  }

  const std::vector<WordSpan>& words = stats.words;
  for (size_t i = 0; i < words.size();) {
    size_t j = i + 1;
    while (j < words.size() && word_text(text, words[j]) == word_text(text, words[i])) ++j;
    if (static_cast<int64_t>(j - i) > options.max_word_run) {
      return reject("repetition", str_cat("word ", excerpt(word_text(text, words[i])), " repeated ", j - i, " times in a row"));
    }
    i = j;
  }

  scratch.word_hashes.clear();
  for (const WordSpan& word : words) scratch.word_hashes.push_back(XXH3_64bits(text.data() + word.begin, word.size));

  std::string top;
  const double top_fraction = top_ngram_fraction(text, stats, 2, scratch, &top);
  if (top_fraction > options.max_top_ngram_fraction) {
    return reject("repetition", str_cat("2-gram ", excerpt(top), " covers ", percent(top_fraction),
                                        " of characters (max ", percent(options.max_top_ngram_fraction), ")"));
  }
  const double duplicate_fraction = duplicate_ngram_fraction(stats, 5, scratch);
  if (duplicate_fraction > options.max_duplicate_ngram_fraction) {
    return reject("repetition", str_cat("repeated 5-grams cover ", percent(duplicate_fraction), " of characters (max ",
                                        percent(options.max_duplicate_ngram_fraction), ")"));
  }
  return {};
}

FilterVerdict check_non_word(const FilterOptions& options, const TextStats& stats) {
  const int64_t visible = stats.non_space();
  if (visible == 0) return reject("non_word", "no visible characters");
  const double letter_fraction = static_cast<double>(stats.letters) / static_cast<double>(visible);
  if (letter_fraction < options.min_letter_fraction) {
    return reject("non_word", str_cat("letters are ", percent(letter_fraction), " of non-space characters (min ",
                                      percent(options.min_letter_fraction), ")"));
  }
  const int64_t marks = stats.hash_signs + stats.ellipses;
  if (marks > 0 && static_cast<double>(marks) > options.max_symbol_word_ratio * static_cast<double>(stats.word_count)) {
    return reject("non_word", str_cat(marks, " '#' or ellipses for ", stats.word_count, " words (max ",
                                      options.max_symbol_word_ratio, " per word)"));
  }
  return {};
}

bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

// Lines (trimmed, blank ones skipped) that repeat an earlier line of the same document: menus,
// cookie banners and navigation that a scraper copied into every page section.
FilterVerdict check_boilerplate(std::string_view text, const FilterOptions& options, Scratch& scratch) {
  std::vector<uint64_t>& hashes = scratch.line_hashes;
  hashes.clear();
  size_t begin = 0;
  while (begin < text.size()) {
    size_t end = text.find('\n', begin);
    if (end == std::string_view::npos) end = text.size();
    size_t b = begin, e = end;
    while (b < e && is_blank(text[b])) ++b;
    while (e > b && is_blank(text[e - 1])) --e;
    if (e > b) hashes.push_back(XXH3_64bits(text.data() + b, e - b));
    begin = end + 1;
  }
  // With fewer than three lines a single repeat is already half the document.
  if (hashes.size() < 3) return {};
  std::sort(hashes.begin(), hashes.end());
  const size_t unique = static_cast<size_t>(std::unique(hashes.begin(), hashes.end()) - hashes.begin());
  const size_t lines = hashes.size();
  const size_t repeated = lines - unique;
  const double fraction = static_cast<double>(repeated) / static_cast<double>(lines);
  if (fraction > options.max_duplicate_line_fraction) {
    return reject("boilerplate", str_cat(repeated, " of ", lines, " lines repeat an earlier line (max ",
                                         percent(options.max_duplicate_line_fraction), ")"));
  }
  return {};
}

absl::Status check_fraction(const char* name, double value) {
  if (!(value >= 0.0 && value <= 1.0)) {
    return absl::InvalidArgumentError(str_cat("FilterOptions.", name, " = ", value, ": must be a fraction in [0, 1]"));
  }
  return absl::OkStatus();
}

absl::Status check_bounds(const char* min_name, int64_t min, const char* max_name, int64_t max) {
  if (min < 0) return absl::InvalidArgumentError(str_cat("FilterOptions.", min_name, " = ", min, ": must be >= 0"));
  if (max < 0) {
    return absl::InvalidArgumentError(str_cat("FilterOptions.", max_name, " = ", max, ": must be >= 0 (0 = no upper bound)"));
  }
  if (max > 0 && max < min) {
    return absl::InvalidArgumentError(str_cat("FilterOptions.", max_name, " = ", max, " is below ", min_name, " = ", min,
                                              ": no document could pass (0 = no upper bound)"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<DocumentFilter> DocumentFilter::create(const FilterOptions& options) {
  absl::Status status = check_bounds("min_chars", options.min_chars, "max_chars", options.max_chars);
  if (status.ok()) status = check_bounds("min_tokens", options.min_tokens, "max_tokens", options.max_tokens);
  if (status.ok() && options.max_char_run < 1) {
    status = absl::InvalidArgumentError(str_cat("FilterOptions.max_char_run = ", options.max_char_run, ": must be >= 1"));
  }
  if (status.ok() && options.max_word_run < 1) {
    status = absl::InvalidArgumentError(str_cat("FilterOptions.max_word_run = ", options.max_word_run, ": must be >= 1"));
  }
  if (status.ok()) status = check_fraction("max_top_ngram_fraction", options.max_top_ngram_fraction);
  if (status.ok()) status = check_fraction("max_duplicate_ngram_fraction", options.max_duplicate_ngram_fraction);
  if (status.ok()) status = check_fraction("min_letter_fraction", options.min_letter_fraction);
  if (status.ok()) status = check_fraction("max_duplicate_line_fraction", options.max_duplicate_line_fraction);
  if (status.ok() && !(options.max_symbol_word_ratio >= 0.0 && std::isfinite(options.max_symbol_word_ratio))) {
    status = absl::InvalidArgumentError(str_cat("FilterOptions.max_symbol_word_ratio = ", options.max_symbol_word_ratio,
                                                ": must be a finite ratio >= 0"));
  }
  if (!status.ok()) return status;
  return DocumentFilter(options);
}

FilterVerdict DocumentFilter::check(std::string_view text) const {
  const FilterOptions& o = options_;
  // Word offsets are 32-bit; a document this large is no training document in any case.
  if (text.size() > std::numeric_limits<uint32_t>::max()) {
    return reject("length", str_cat(text.size(), " bytes: documents of 4 GiB or more are not supported"));
  }
  Scratch& scratch = thread_scratch();
  measure_text(text, o.check_repetition, &scratch.stats);
  const TextStats& stats = scratch.stats;

  if (o.check_utf8) {
    if (stats.invalid > 0) return reject("utf8", str_cat("invalid UTF-8 at byte ", stats.first_invalid));
    if (stats.control > 0) {
      return reject("utf8", str_cat("control character ", fmt::format("U+{:04X}", stats.first_control_char), " at byte ",
                                    stats.first_control));
    }
  }
  if (o.check_length) {
    if (stats.code_points < o.min_chars) {
      return reject("length", str_cat(stats.code_points, " characters, fewer than min_chars ", o.min_chars));
    }
    if (o.max_chars > 0 && stats.code_points > o.max_chars) {
      return reject("length", str_cat(stats.code_points, " characters, more than max_chars ", o.max_chars));
    }
  }
  if (o.check_repetition) {
    FilterVerdict verdict = check_repetition(text, o, scratch);
    if (!verdict.keep) return verdict;
  }
  if (o.check_non_word) {
    FilterVerdict verdict = check_non_word(o, stats);
    if (!verdict.keep) return verdict;
  }
  if (o.check_boilerplate) return check_boilerplate(text, o, scratch);
  return {};
}

FilterVerdict DocumentFilter::check_tokens(int64_t token_count) const {
  const FilterOptions& o = options_;
  if (!o.check_length) return {};
  if (token_count < o.min_tokens) return reject("length", str_cat(token_count, " tokens, fewer than min_tokens ", o.min_tokens));
  if (o.max_tokens > 0 && token_count > o.max_tokens) {
    return reject("length", str_cat(token_count, " tokens, more than max_tokens ", o.max_tokens));
  }
  return {};
}

}  // namespace temper
