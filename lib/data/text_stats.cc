#include "data/text_stats.hpp"

#include <array>
#include <utility>

#include <utf8proc.h>

namespace temper {
namespace {

enum class CharClass : uint8_t { kLetter, kMark, kDigit, kPunctuation, kSymbol, kSpace, kControl, kOther };

CharClass class_of_category(int category) {
  switch (category) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
      return CharClass::kLetter;
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
      return CharClass::kMark;
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
      return CharClass::kDigit;
    case UTF8PROC_CATEGORY_PC:
    case UTF8PROC_CATEGORY_PD:
    case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PE:
    case UTF8PROC_CATEGORY_PI:
    case UTF8PROC_CATEGORY_PF:
    case UTF8PROC_CATEGORY_PO:
      return CharClass::kPunctuation;
    case UTF8PROC_CATEGORY_SM:
    case UTF8PROC_CATEGORY_SC:
    case UTF8PROC_CATEGORY_SK:
    case UTF8PROC_CATEGORY_SO:
      return CharClass::kSymbol;
    case UTF8PROC_CATEGORY_ZS:
    case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP:
      return CharClass::kSpace;
    case UTF8PROC_CATEGORY_CC:
      return CharClass::kControl;
    default:
      return CharClass::kOther;
  }
}

// The classes of the 128 ASCII code points, taken from utf8proc once, so that ASCII text (most
// of any corpus) costs a table load per byte instead of a library call.
const std::array<CharClass, 128>& ascii_classes() {
  static const std::array<CharClass, 128> classes = [] {
    std::array<CharClass, 128> table{};
    for (int c = 0; c < 128; ++c) table[c] = class_of_category(utf8proc_category(c));
    // Tab, newline and carriage return are Cc to Unicode but layout to every text corpus.
    table['\t'] = table['\n'] = table['\r'] = CharClass::kSpace;
    return table;
  }();
  return classes;
}

bool is_word_class(CharClass cls) {
  return cls == CharClass::kLetter || cls == CharClass::kMark || cls == CharClass::kDigit ||
         cls == CharClass::kSymbol || cls == CharClass::kOther;
}

}  // namespace

void measure_text(std::string_view text, bool collect_words, TextStats* stats) {
  std::vector<WordSpan> words = std::move(stats->words);
  words.clear();
  *stats = TextStats{};
  TextStats& s = *stats;

  const auto& ascii = ascii_classes();
  const auto* bytes = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  const size_t n = text.size();
  s.bytes = static_cast<int64_t>(n);

  bool in_word = false;
  bool word_is_wide = false;  // the open word is one East Asian wide letter (plus its marks)
  size_t word_begin = 0;
  uint32_t word_chars = 0;
  int32_t run_char = -1;
  int64_t run = 0;
  int64_t dots = 0;

  auto close_word = [&](size_t end) {
    if (!in_word) return;
    in_word = false;
    ++s.word_count;
    s.word_chars += word_chars;
    if (collect_words) {
      words.push_back({static_cast<uint32_t>(word_begin), static_cast<uint32_t>(end - word_begin), word_chars});
    }
  };

  size_t pos = 0;
  while (pos < n) {
    const unsigned char c = bytes[pos];
    int32_t cp = c;
    size_t len = 1;
    CharClass cls;
    bool wide_letter = false;
    if (c < 0x80) {
      cls = ascii[c];
    } else {
      utf8proc_int32_t decoded = 0;
      const utf8proc_ssize_t k = utf8proc_iterate(bytes + pos, static_cast<utf8proc_ssize_t>(n - pos), &decoded);
      if (k <= 0) {
        // An invalid byte breaks words and runs, and is skipped alone so that the rest of the
        // text is still measured.
        ++s.invalid;
        if (s.first_invalid < 0) s.first_invalid = static_cast<int64_t>(pos);
        close_word(pos);
        run_char = -1;
        run = 0;
        dots = 0;
        ++pos;
        continue;
      }
      cp = decoded;
      len = static_cast<size_t>(k);
      const utf8proc_property_t* property = utf8proc_get_property(decoded);
      cls = class_of_category(property->category);
      wide_letter = property->category == UTF8PROC_CATEGORY_LO && property->charwidth == 2;
    }
    ++s.code_points;

    switch (cls) {
      case CharClass::kLetter:
        ++s.letters;
        if (wide_letter) ++s.cjk_letters;
        break;
      case CharClass::kMark:
        ++s.letters;
        break;
      case CharClass::kDigit:
        ++s.digits;
        break;
      case CharClass::kPunctuation:
        ++s.punctuation;
        if (cp == '#') ++s.hash_signs;
        if (cp == 0x2026) ++s.ellipses;
        break;
      case CharClass::kSymbol:
        ++s.symbols;
        break;
      case CharClass::kSpace:
        ++s.whitespace;
        if (cp == '\n') ++s.lines;
        break;
      case CharClass::kControl:
        ++s.control;
        if (s.first_control < 0) {
          s.first_control = static_cast<int64_t>(pos);
          s.first_control_char = cp;
        }
        break;
      case CharClass::kOther:
        ++s.other;
        break;
    }

    if (cp == '.') {
      if (++dots == 3) ++s.ellipses;
    } else {
      dots = 0;
    }

    if (cls == CharClass::kSpace) {
      run_char = -1;
      run = 0;
    } else {
      run = cp == run_char ? run + 1 : 1;
      run_char = cp;
      if (run > s.longest_run) {
        s.longest_run = run;
        s.longest_run_char = cp;
      }
    }

    if (is_word_class(cls)) {
      if (in_word && (wide_letter || (word_is_wide && cls != CharClass::kMark))) close_word(pos);
      if (!in_word) {
        in_word = true;
        word_is_wide = wide_letter;
        word_begin = pos;
        word_chars = 0;
      }
      ++word_chars;
    } else {
      close_word(pos);
    }
    pos += len;
  }
  close_word(n);
  if (n > 0 && bytes[n - 1] != '\n') ++s.lines;
  s.words = std::move(words);
}

}  // namespace temper
