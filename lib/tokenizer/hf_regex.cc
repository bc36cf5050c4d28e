#include "tokenizer/hf_regex.hpp"

#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>

#include "util/strings.hpp"

namespace temper {
namespace {

// Oniguruma's Unicode \s (see the header), as class members.
constexpr std::string_view kSpaceMembers = "\\t\\n\\x{0B}\\f\\r\\x{85}\\p{Z}";
constexpr std::string_view kWordMembers = "\\p{L}\\p{M}\\p{N}\\p{Pc}";
constexpr std::string_view kHexMembers = "0-9a-fA-F";

bool is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

// Per-thread PCRE2 match state: one match-data block (only the whole match is read) and a JIT
// stack large enough for long whitespace runs under `\s+(?!\S)`.
struct MatchState {
  pcre2_match_data* data = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* stack = nullptr;
  MatchState() {
    data = pcre2_match_data_create(1, nullptr);
    context = pcre2_match_context_create(nullptr);
    stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
    if (context != nullptr && stack != nullptr) pcre2_jit_stack_assign(context, nullptr, stack);
  }
  ~MatchState() {
    pcre2_jit_stack_free(stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
  MatchState(const MatchState&) = delete;
  MatchState& operator=(const MatchState&) = delete;
};

MatchState& match_state() {
  thread_local MatchState state;
  return state;
}

size_t utf8_length_at(std::string_view text, size_t i) {
  const auto c = static_cast<unsigned char>(text[i]);
  size_t n = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
  return std::min(n, text.size() - i);
}

}  // namespace

absl::StatusOr<std::string> translate_onig_pattern(std::string_view p) {
  std::string out;
  out.reserve(p.size() * 2);
  int depth = 0;            // class nesting depth
  bool class_start = false; // just after `[` or `[^`: a `]` here is a literal
  const auto unsupported = [&](std::string_view what) {
    return absl::UnimplementedError(str_cat("tokenizer.json regex \"", p, "\": ", what,
                                            " has no PCRE2 translation in temper"));
  };
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    const bool at_class_start = class_start;
    class_start = false;
    if (c == '\\') {
      if (i + 1 >= p.size()) return absl::InvalidArgumentError(str_cat("tokenizer.json regex \"", p, "\": ends with a backslash"));
      const char e = p[++i];
      switch (e) {
        case 's': out += depth > 0 ? str_cat(kSpaceMembers) : str_cat("[", kSpaceMembers, "]"); continue;
        case 'w': out += depth > 0 ? str_cat(kWordMembers) : str_cat("[", kWordMembers, "]"); continue;
        case 'h': out += depth > 0 ? str_cat(kHexMembers) : str_cat("[", kHexMembers, "]"); continue;
        case 'S':
        case 'W':
        case 'H':
          if (depth > 0) return unsupported(str_cat("\\", std::string(1, e), " inside a character class"));
          out += str_cat("[^", e == 'S' ? kSpaceMembers : e == 'W' ? kWordMembers : kHexMembers, "]");
          continue;
        case 'u':
          if (i + 4 < p.size() + 0 && is_hex(p[i + 1]) && is_hex(p[i + 2]) && is_hex(p[i + 3]) && is_hex(p[i + 4])) {
            out += str_cat("\\x{", p.substr(i + 1, 4), "}");
            i += 4;
            continue;
          }
          return unsupported("\\u without four hex digits");
        case 'p':
        case 'P':
        case 'x':
          out += '\\';
          out += e;
          if (i + 1 < p.size() && p[i + 1] == '{') {
            const size_t close = p.find('}', i + 1);
            if (close == std::string_view::npos) return unsupported("an unclosed \\p{ or \\x{");
            out.append(p.substr(i + 1, close - i));
            i = close;
          }
          continue;
        default:
          out += '\\';
          out += e;
          continue;
      }
    }
    if (depth == 0) {
      if (c == '[') {
        ++depth;
        out += '[';
        if (i + 1 < p.size() && p[i + 1] == '^') {
          out += '^';
          ++i;
        }
        class_start = true;
        continue;
      }
      out += c;
      continue;
    }
    // Inside a class.
    if (c == ']' && !at_class_start) {
      --depth;
      if (depth == 0) out += ']';  // nested closes vanish: their members joined the parent
      continue;
    }
    if (c == ']') {
      out += "\\]";
      continue;
    }
    if (c == '[' && i + 1 < p.size() && p[i + 1] == ':') {
      const size_t close = p.find(":]", i + 2);
      if (close == std::string_view::npos) return unsupported("an unclosed POSIX class");
      out.append(p.substr(i, close + 2 - i));
      i = close + 1;
      continue;
    }
    if (c == '[') {
      if (i + 1 < p.size() && p[i + 1] == '^') return unsupported("a negated nested character class");
      ++depth;
      class_start = true;
      continue;
    }
    if (c == '&' && i + 1 < p.size() && p[i + 1] == '&') return unsupported("class intersection (&&)");
    if (c == '-' && (at_class_start || (i + 1 < p.size() && (p[i + 1] == ']' || p[i + 1] == '[')))) {
      out += "\\-";  // a `-` at the edge of a flattened nested class stays a literal
      continue;
    }
    if (c == '[' || c == '^') {
      out += '\\';
    }
    out += c;
  }
  if (depth != 0) return absl::InvalidArgumentError(str_cat("tokenizer.json regex \"", p, "\": unclosed character class"));
  return out;
}

absl::StatusOr<std::unique_ptr<HfRegex>> HfRegex::compile(std::string_view pattern, bool literal) {
  std::string translated;
  if (literal) {
    translated = std::string(pattern);
  } else {
    absl::StatusOr<std::string> t = translate_onig_pattern(pattern);
    if (!t.ok()) return t.status();
    translated = *std::move(t);
  }
  pcre2_compile_context* context = pcre2_compile_context_create(nullptr);
  if (context == nullptr) return absl::ResourceExhaustedError("pcre2: out of memory");
  pcre2_set_newline(context, PCRE2_NEWLINE_LF);
  // (PCRE2_LITERAL admits no UCP, which a literal does not need.)
  const uint32_t options = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP | PCRE2_MULTILINE);
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(), options, &error,
                                   &offset, context);
  pcre2_compile_context_free(context);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    return absl::InvalidArgumentError(str_cat("tokenizer.json regex \"", pattern, "\" (PCRE2: \"", translated,
                                              "\") does not compile at offset ", offset, ": ",
                                              reinterpret_cast<const char*>(message)));
  }
  // JIT makes matching several times faster; without it (an unsupported CPU) PCRE2 interprets.
  (void)pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  std::unique_ptr<HfRegex> regex(new HfRegex());
  regex->code_ = code;
  regex->source_ = std::string(pattern);
  return regex;
}

HfRegex::~HfRegex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

absl::Status HfRegex::find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>* matches) const {
  MatchState& state = match_state();
  if (state.data == nullptr || state.context == nullptr) return absl::ResourceExhaustedError("pcre2: out of memory");
  auto* code = static_cast<const pcre2_code*>(code_);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t start = 0;
  size_t last_end = std::string_view::npos;
  while (start <= text.size()) {
    const int rc = pcre2_match(code, subject, text.size(), start, PCRE2_NO_UTF_CHECK, state.data, state.context);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(rc, message, sizeof(message));
      return absl::ResourceExhaustedError(str_cat("tokenizer.json regex \"", source_, "\": matching failed: ",
                                                  reinterpret_cast<const char*>(message)));
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(state.data);
    const size_t s = ovector[0];
    const size_t e = ovector[1];
    if (s == e && e == last_end) {
      // rust-onig: no empty match right after the previous match; move one character on.
      if (start >= text.size()) break;
      start += utf8_length_at(text, start);
      continue;
    }
    matches->emplace_back(s, e);
    last_end = e;
    start = e;
  }
  return absl::OkStatus();
}

}  // namespace temper
