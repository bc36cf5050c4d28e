#include "data/dedup_normalize.hpp"

#include <cstdlib>

#include <utf8proc.h>

namespace temper {
namespace {

bool is_ascii_space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

bool is_space(utf8proc_int32_t cp) {
  if (cp < 0x80) return is_ascii_space(static_cast<unsigned char>(cp));
  if (cp == 0x85) return true;  // NEL: Cc to Unicode, a line break to every text tool
  const utf8proc_category_t category = utf8proc_category(cp);
  return category == UTF8PROC_CATEGORY_ZS || category == UTF8PROC_CATEGORY_ZL || category == UTF8PROC_CATEGORY_ZP;
}

// Appends `text` lower-cased byte by byte, whitespace runs as one space. For ASCII text this is
// exactly NFKC + case folding; for text utf8proc rejects it is the best that bytes allow.
void fold_bytes(std::string_view text, std::string* out) {
  bool pending_space = false;
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (is_ascii_space(c)) {
      pending_space = !out->empty();
      continue;
    }
    if (pending_space) out->push_back(' ');
    pending_space = false;
    out->push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : ch);
  }
}

bool is_ascii(std::string_view text) {
  for (const char ch : text) {
    if (static_cast<unsigned char>(ch) >= 0x80) return false;
  }
  return true;
}

}  // namespace

void normalize_for_dedup(std::string_view text, std::string* out) {
  out->clear();
  if (is_ascii(text)) {
    fold_bytes(text, out);
    return;
  }
  utf8proc_uint8_t* mapped = nullptr;
  const utf8proc_ssize_t size =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()), static_cast<utf8proc_ssize_t>(text.size()),
                   &mapped,
                   static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT |
                                                  UTF8PROC_CASEFOLD | UTF8PROC_IGNORE));
  if (size < 0) {
    fold_bytes(text, out);
    return;
  }
  // Whitespace is collapsed after normalisation because NFKC turns some characters (NBSP,
  // ideographic space) into plain spaces.
  out->reserve(static_cast<size_t>(size));
  bool pending_space = false;
  utf8proc_ssize_t pos = 0;
  while (pos < size) {
    utf8proc_int32_t cp = 0;
    const utf8proc_ssize_t n = utf8proc_iterate(mapped + pos, size - pos, &cp);
    if (n <= 0) break;  // utf8proc's own output is valid; this only guards the loop
    if (is_space(cp)) {
      pending_space = !out->empty();
    } else {
      if (pending_space) out->push_back(' ');
      pending_space = false;
      out->append(reinterpret_cast<const char*>(mapped + pos), static_cast<size_t>(n));
    }
    pos += n;
  }
  std::free(mapped);
}

}  // namespace temper
