// One pass over a UTF-8 document that measures what the noise filters judge: code points by
// Unicode category, invalid sequences, control characters, the longest run of one character,
// lines and words.
//
// Categories come from utf8proc (never from tables of our own). Words are maximal runs of
// letters, marks, digits and symbols, split at whitespace, punctuation and control characters;
// an East Asian wide letter (a Han ideograph, kana, a Hangul syllable: category Lo of East Asian
// width W/F) is a word by itself, because Chinese and Japanese put no spaces between words and a
// character is the unit their repetition and ratio measures can count.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace temper {

// A word of the measured text. Offsets are 32-bit to halve the memory of long documents; the
// caller never measures texts of 4 GiB or more.
struct WordSpan {
  uint32_t begin = 0;  // byte offset in the text
  uint32_t size = 0;   // bytes
  uint32_t chars = 0;  // code points
};

struct TextStats {
  int64_t bytes = 0;
  int64_t code_points = 0;  // invalid bytes not included
  int64_t letters = 0;      // categories L* and M* (a combining mark is part of its letter)
  int64_t cjk_letters = 0;  // of `letters`: East Asian wide letters (Han, kana, Hangul)
  int64_t digits = 0;       // N*
  int64_t punctuation = 0;  // P*
  int64_t symbols = 0;      // S*
  int64_t whitespace = 0;   // Z* and \t \n \r
  int64_t control = 0;      // Cc other than \t \n \r (so \v, \f and NEL count here)
  int64_t other = 0;        // Cf (format), Co (private use), Cn (unassigned)
  int64_t invalid = 0;      // bytes that start no valid UTF-8 sequence
  int64_t first_invalid = -1;        // byte offset, -1 when none
  int64_t first_control = -1;        // byte offset, -1 when none
  int32_t first_control_char = 0;    // its code point
  int64_t hash_signs = 0;   // '#'
  int64_t ellipses = 0;     // U+2026, or a run of three or more '.'
  int64_t lines = 0;        // '\n'-terminated lines plus a final unterminated one
  int64_t longest_run = 0;  // longest run of one repeated non-whitespace code point
  int32_t longest_run_char = 0;
  int64_t word_count = 0;
  int64_t word_chars = 0;      // code points inside words
  std::vector<WordSpan> words;  // filled only when asked for (measure_text's collect_words)

  int64_t non_space() const { return code_points - whitespace; }
};

// Measures `text` into `stats`, reusing the capacity of `stats->words` (so a caller measuring
// many documents allocates only while its documents grow). Requires text.size() < 2^32.
void measure_text(std::string_view text, bool collect_words, TextStats* stats);

inline TextStats measure_text(std::string_view text, bool collect_words = true) {
  TextStats stats;
  measure_text(text, collect_words, &stats);
  return stats;
}

}  // namespace temper
