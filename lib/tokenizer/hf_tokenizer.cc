#include "tokenizer/hf_tokenizer.hpp"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <utf8proc.h>

#include "io/json_file.hpp"
#include "io/read_file.hpp"
#include "tokenizer/bpe_model.hpp"
#include "tokenizer/hf_regex.hpp"
#include "tokenizer/utf8_repair.hpp"
#include "util/status_macros.hpp"
#include "util/strings.hpp"

namespace temper {
namespace {

using json = nlohmann::json;

// tokenizers' ByteLevel pre-tokenizer regex (GPT-2's), compiled like any other pattern.
constexpr std::string_view kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

// ---------------------------------------------------------------------------------------------
// UTF-8 helpers

size_t utf8_len(unsigned char c) { return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }

// Decodes the (valid) character at s[i].
int32_t decode_at(std::string_view s, size_t i, size_t* n) {
  utf8proc_int32_t cp = 0;
  const utf8proc_ssize_t got = utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(s.data() + i),
                                                static_cast<utf8proc_ssize_t>(s.size() - i), &cp);
  *n = got > 0 ? static_cast<size_t>(got) : 1;
  return cp;
}

// The start of the last character of s (s non-empty, valid).
size_t last_char_start(std::string_view s) {
  size_t i = s.size() - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  return i;
}

// Unicode White_Space (what Rust's char::is_whitespace and regex \s test).
bool is_white_space(int32_t cp) {
  if ((cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680) return true;
  if ((cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000) {
    return true;
  }
  return false;
}

// Rust regex \w (Unicode word character): letters, marks, decimal and letter numbers, connector
// punctuation, and the joiners.
bool is_word_char(int32_t cp) {
  if (cp == 0x200C || cp == 0x200D) return true;
  switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_PC:
      return true;
    default:
      return false;
  }
}

bool is_ascii(std::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  }
  return true;
}

// GPT-2's byte <-> printable character table (bytes_to_unicode).
struct ByteTable {
  std::array<std::string, 256> byte_to_char;
  std::vector<int16_t> char_to_byte;  // code point (< 0x200) -> byte, -1 otherwise
  ByteTable() : char_to_byte(0x200, -1) {
    int next = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const int cp = printable ? b : 256 + next++;
      char buf[4];
      const utf8proc_ssize_t n = utf8proc_encode_char(cp, reinterpret_cast<utf8proc_uint8_t*>(buf));
      byte_to_char[b] = std::string(buf, static_cast<size_t>(n));
      char_to_byte[cp] = static_cast<int16_t>(b);
    }
  }
};

const ByteTable& byte_table() {
  static const ByteTable table;
  return table;
}

void byte_level_map(std::string_view text, std::string* out) {
  const ByteTable& table = byte_table();
  out->clear();
  out->reserve(text.size() * 2);
  for (unsigned char b : text) out->append(table.byte_to_char[b]);
}

// ---------------------------------------------------------------------------------------------
// Pipeline pieces

struct Piece {
  std::string_view text;
  TokenId id = -1;  // >= 0: an added token, not pre-tokenized nor modelled
};

// Storage for text a step creates; pieces view into it. A deque keeps views valid as it grows.
using Arena = std::deque<std::string>;

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

absl::StatusOr<SplitBehavior> parse_behavior(const json& value, std::string_view source) {
  const std::string name = value.is_string() ? value.get<std::string>() : std::string();
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  return absl::InvalidArgumentError(str_cat(source, ": Split behavior ", json_preview(value), " is not one of Removed, "
                                            "Isolated, MergedWithPrevious, MergedWithNext, Contiguous"));
}

// tokenizers' NormalizedString::split: `matches` cover the text as (range, is_match) in order;
// returns the ranges kept, empty ones dropped.
void apply_behavior(std::vector<std::pair<std::pair<size_t, size_t>, bool>>& spans, SplitBehavior behavior,
                    std::vector<std::pair<size_t, size_t>>* out) {
  out->clear();
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (const auto& [range, is_match] : spans) out->push_back(range);
      break;
    case SplitBehavior::kRemoved:
      for (const auto& [range, is_match] : spans) {
        if (!is_match) out->push_back(range);
      }
      break;
    case SplitBehavior::kMergedWithPrevious: {
      bool previous_match = false;
      for (const auto& [range, is_match] : spans) {
        if (is_match && !previous_match && !out->empty()) {
          out->back().second = range.second;
        } else {
          out->push_back(range);
        }
        previous_match = is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool previous_match = false;
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->second && !previous_match && !out->empty()) {
          out->back().first = it->first.first;
        } else {
          out->push_back(it->first);
        }
        previous_match = it->second;
      }
      std::reverse(out->begin(), out->end());
      break;
    }
    case SplitBehavior::kContiguous: {
      bool previous_match = false;
      for (const auto& [range, is_match] : spans) {
        if (is_match == previous_match && !out->empty()) {
          out->back().second = range.second;
        } else {
          out->push_back(range);
        }
        previous_match = is_match;
      }
      break;
    }
  }
}

// Splits `text` with `regex` and `behavior` (invert: the non-matching parts are the delimiters),
// appending the kept parts to *out.
absl::Status regex_split(const HfRegex& regex, SplitBehavior behavior, bool invert, std::string_view text,
                         std::vector<Piece>* out) {
  thread_local std::vector<std::pair<size_t, size_t>> matches;
  thread_local std::vector<std::pair<std::pair<size_t, size_t>, bool>> spans;
  thread_local std::vector<std::pair<size_t, size_t>> kept;
  matches.clear();
  spans.clear();
  TEMPER_RETURN_IF_ERROR(regex.find_all(text, &matches));
  size_t prev = 0;
  for (const auto& [s, e] : matches) {
    if (prev != s) spans.push_back({{prev, s}, invert});
    spans.push_back({{s, e}, !invert});
    prev = e;
  }
  if (prev != text.size()) spans.push_back({{prev, text.size()}, invert});
  if (behavior == SplitBehavior::kIsolated) {
    for (const auto& [range, is_match] : spans) {
      if (range.second > range.first) out->push_back(Piece{text.substr(range.first, range.second - range.first)});
    }
    return absl::OkStatus();
  }
  apply_behavior(spans, behavior, &kept);
  for (const auto& [s, e] : kept) {
    if (e > s) out->push_back(Piece{text.substr(s, e - s)});
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Normalizers

struct Normalizer {
  enum class Kind { kNfc, kNfd, kNfkc, kNfkd, kPrepend, kReplace };
  Kind kind;
  std::string a;  // Prepend: the prefix; Replace: the pattern string
  std::string b;  // Replace: the content
};

std::string normalize_all(const std::vector<Normalizer>& steps, std::string_view text) {
  std::string current(text);
  for (const Normalizer& step : steps) {
    switch (step.kind) {
      case Normalizer::Kind::kNfc:
      case Normalizer::Kind::kNfd:
      case Normalizer::Kind::kNfkc:
      case Normalizer::Kind::kNfkd: {
        if (is_ascii(current)) break;  // every normal form of ASCII is itself
        int options = UTF8PROC_STABLE;
        if (step.kind == Normalizer::Kind::kNfc || step.kind == Normalizer::Kind::kNfkc) {
          options |= UTF8PROC_COMPOSE;
        } else {
          options |= UTF8PROC_DECOMPOSE;
        }
        if (step.kind == Normalizer::Kind::kNfkc || step.kind == Normalizer::Kind::kNfkd) options |= UTF8PROC_COMPAT;
        utf8proc_uint8_t* out = nullptr;
        const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(current.data()),
                                                static_cast<utf8proc_ssize_t>(current.size()), &out,
                                                static_cast<utf8proc_option_t>(options));
        if (n >= 0) current.assign(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
        std::free(out);  // (the text is valid UTF-8, so utf8proc_map does not fail)
        break;
      }
      case Normalizer::Kind::kPrepend:
        if (!current.empty()) current.insert(0, step.a);
        break;
      case Normalizer::Kind::kReplace: {
        if (step.a.empty()) break;
        std::string out;
        size_t pos = 0;
        for (size_t hit; (hit = current.find(step.a, pos)) != std::string::npos; pos = hit + step.a.size()) {
          out.append(current, pos, hit - pos);
          out += step.b;
        }
        out.append(current, pos, std::string::npos);
        current = std::move(out);
        break;
      }
    }
  }
  return current;
}

absl::Status parse_normalizer(const json& node, std::string_view source, std::vector<Normalizer>* out) {
  if (node.is_null()) return absl::OkStatus();
  if (!node.is_object() || !node.contains("type") || !node["type"].is_string()) {
    return absl::InvalidArgumentError(str_cat(source, ": normalizer ", json_preview(node), " has no \"type\""));
  }
  const std::string type = node["type"].get<std::string>();
  if (type == "Sequence") {
    auto it = node.find("normalizers");
    if (it == node.end() || !it->is_array()) {
      return absl::InvalidArgumentError(str_cat(source, ": normalizer Sequence needs a \"normalizers\" array"));
    }
    for (const json& child : *it) TEMPER_RETURN_IF_ERROR(parse_normalizer(child, source, out));
    return absl::OkStatus();
  }
  if (type == "NFC") return out->push_back({Normalizer::Kind::kNfc, {}, {}}), absl::OkStatus();
  if (type == "NFD") return out->push_back({Normalizer::Kind::kNfd, {}, {}}), absl::OkStatus();
  if (type == "NFKC") return out->push_back({Normalizer::Kind::kNfkc, {}, {}}), absl::OkStatus();
  if (type == "NFKD") return out->push_back({Normalizer::Kind::kNfkd, {}, {}}), absl::OkStatus();
  if (type == "Prepend") {
    TEMPER_ASSIGN_OR_RETURN(std::string prepend, json_string(node, "prepend", source));
    out->push_back({Normalizer::Kind::kPrepend, std::move(prepend), {}});
    return absl::OkStatus();
  }
  if (type == "Replace") {
    auto pattern = node.find("pattern");
    if (pattern == node.end() || !pattern->is_object() || !pattern->contains("String") ||
        !(*pattern)["String"].is_string()) {
      return absl::UnimplementedError(str_cat(source, ": normalizer Replace with pattern ",
                                              json_preview(pattern == node.end() ? json() : *pattern),
                                              ": only {\"String\": ...} patterns are supported"));
    }
    TEMPER_ASSIGN_OR_RETURN(std::string content, json_string(node, "content", source));
    out->push_back({Normalizer::Kind::kReplace, (*pattern)["String"].get<std::string>(), std::move(content)});
    return absl::OkStatus();
  }
  return absl::UnimplementedError(str_cat(source, ": normalizer type \"", type,
                                          "\" is not supported (supported: NFC, NFD, NFKC, NFKD, Prepend, "
                                          "Replace with a string pattern, Sequence)"));
}

// ---------------------------------------------------------------------------------------------
// Pre-tokenizers

struct PreTokenizer {
  enum class Kind { kSplit, kByteLevel };
  Kind kind;
  std::unique_ptr<HfRegex> regex;  // Split's pattern; ByteLevel's GPT-2 regex when use_regex
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
  bool add_prefix_space = false;
};

absl::Status parse_pre_tokenizer(const json& node, std::string_view source, std::vector<PreTokenizer>* out) {
  if (node.is_null()) return absl::OkStatus();
  if (!node.is_object() || !node.contains("type") || !node["type"].is_string()) {
    return absl::InvalidArgumentError(str_cat(source, ": pre_tokenizer ", json_preview(node), " has no \"type\""));
  }
  const std::string type = node["type"].get<std::string>();
  if (type == "Sequence") {
    auto it = node.find("pretokenizers");
    if (it == node.end() || !it->is_array()) {
      return absl::InvalidArgumentError(str_cat(source, ": pre_tokenizer Sequence needs a \"pretokenizers\" array"));
    }
    for (const json& child : *it) TEMPER_RETURN_IF_ERROR(parse_pre_tokenizer(child, source, out));
    return absl::OkStatus();
  }
  PreTokenizer step;
  if (type == "ByteLevel") {
    step.kind = PreTokenizer::Kind::kByteLevel;
    TEMPER_ASSIGN_OR_RETURN(std::optional<bool> prefix, json_optional_bool(node, "add_prefix_space", source));
    TEMPER_ASSIGN_OR_RETURN(std::optional<bool> use_regex, json_optional_bool(node, "use_regex", source));
    step.add_prefix_space = prefix.value_or(true);  // tokenizers' defaults
    if (use_regex.value_or(true)) {
      TEMPER_ASSIGN_OR_RETURN(step.regex, HfRegex::compile(kGpt2Pattern, false));
    }
    out->push_back(std::move(step));
    return absl::OkStatus();
  }
  if (type == "Split") {
    step.kind = PreTokenizer::Kind::kSplit;
    auto pattern = node.find("pattern");
    if (pattern == node.end() || !pattern->is_object()) {
      return absl::InvalidArgumentError(str_cat(source, ": Split needs a \"pattern\" object ({\"String\"} or {\"Regex\"})"));
    }
    if (pattern->contains("Regex") && (*pattern)["Regex"].is_string()) {
      TEMPER_ASSIGN_OR_RETURN(step.regex, HfRegex::compile((*pattern)["Regex"].get<std::string>(), false));
    } else if (pattern->contains("String") && (*pattern)["String"].is_string()) {
      TEMPER_ASSIGN_OR_RETURN(step.regex, HfRegex::compile((*pattern)["String"].get<std::string>(), true));
    } else {
      return absl::InvalidArgumentError(str_cat(source, ": Split pattern ", json_preview(*pattern),
                                                " is neither {\"String\": ...} nor {\"Regex\": ...}"));
    }
    auto behavior = node.find("behavior");
    if (behavior == node.end()) return absl::InvalidArgumentError(str_cat(source, ": Split needs a \"behavior\""));
    TEMPER_ASSIGN_OR_RETURN(step.behavior, parse_behavior(*behavior, source));
    TEMPER_ASSIGN_OR_RETURN(std::optional<bool> invert, json_optional_bool(node, "invert", source));
    step.invert = invert.value_or(false);
    out->push_back(std::move(step));
    return absl::OkStatus();
  }
  if (type == "Digits") {
    step.kind = PreTokenizer::Kind::kSplit;
    TEMPER_ASSIGN_OR_RETURN(std::optional<bool> individual, json_optional_bool(node, "individual_digits", source));
    // tokenizers splits on char::is_numeric (General_Category N), one by one or in runs.
    TEMPER_ASSIGN_OR_RETURN(step.regex, HfRegex::compile("\\p{N}", false));
    step.behavior = individual.value_or(false) ? SplitBehavior::kIsolated : SplitBehavior::kContiguous;
    out->push_back(std::move(step));
    return absl::OkStatus();
  }
  return absl::UnimplementedError(str_cat(source, ": pre_tokenizer type \"", type,
                                          "\" is not supported (supported: ByteLevel, Split, Digits, Sequence)"));
}

// ---------------------------------------------------------------------------------------------
// Added tokens

struct AddedToken {
  std::string content;
  TokenId id = -1;
  bool special = false;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
};

// Leftmost-longest matcher over a few hundred strings (a byte trie), as tokenizers' Aho-Corasick
// (MatchKind::LeftmostLongest) finds them.
class AddedTokenMatcher {
 public:
  void add(std::string_view text, size_t token) {
    if (text.empty()) return;
    first_byte_[static_cast<unsigned char>(text[0])] = true;
    size_t node = 0;
    for (unsigned char c : text) {
      auto& children = nodes_[node].children;
      auto it = std::find_if(children.begin(), children.end(), [c](const auto& e) { return e.first == c; });
      if (it == children.end()) {
        nodes_.push_back(Node{});
        nodes_[node].children.emplace_back(c, nodes_.size() - 1);
        node = nodes_.size() - 1;
      } else {
        node = it->second;
      }
    }
    nodes_[node].token = static_cast<int64_t>(token);
  }
  bool empty() const { return nodes_.size() == 1; }
  // The leftmost-longest match at or after `from`: (start, end, token index).
  bool find(std::string_view text, size_t from, size_t* start, size_t* end, size_t* token) const {
    for (size_t i = from; i < text.size(); ++i) {
      if (!first_byte_[static_cast<unsigned char>(text[i])]) continue;
      size_t node = 0;
      int64_t best = -1;
      size_t best_end = 0;
      for (size_t k = i; k < text.size(); ++k) {
        const auto c = static_cast<unsigned char>(text[k]);
        const auto& children = nodes_[node].children;
        auto it = std::find_if(children.begin(), children.end(), [c](const auto& e) { return e.first == c; });
        if (it == children.end()) break;
        node = it->second;
        if (nodes_[node].token >= 0) {
          best = nodes_[node].token;
          best_end = k + 1;
        }
      }
      if (best >= 0) {
        *start = i;
        *end = best_end;
        *token = static_cast<size_t>(best);
        return true;
      }
    }
    return false;
  }

 private:
  struct Node {
    std::vector<std::pair<unsigned char, size_t>> children;
    int64_t token = -1;
  };
  std::vector<Node> nodes_{Node{}};
  std::array<bool, 256> first_byte_{};
};

// ---------------------------------------------------------------------------------------------
// Post-processors and decoders

struct PostProcessor {
  // The ids around the sequence for a single input (pairs are not encoded by temper).
  std::vector<TokenId> prefix;
  std::vector<TokenId> suffix;
};

absl::Status parse_post_processor(const json& node, std::string_view source,
                                  const std::function<std::optional<TokenId>(std::string_view)>& to_id,
                                  PostProcessor* out) {
  if (node.is_null()) return absl::OkStatus();
  if (!node.is_object() || !node.contains("type") || !node["type"].is_string()) {
    return absl::InvalidArgumentError(str_cat(source, ": post_processor ", json_preview(node), " has no \"type\""));
  }
  const std::string type = node["type"].get<std::string>();
  if (type == "ByteLevel") return absl::OkStatus();  // only trims offsets; ids are unchanged
  if (type == "Sequence") {
    auto it = node.find("processors");
    if (it == node.end() || !it->is_array()) {
      return absl::InvalidArgumentError(str_cat(source, ": post_processor Sequence needs a \"processors\" array"));
    }
    for (const json& child : *it) TEMPER_RETURN_IF_ERROR(parse_post_processor(child, source, to_id, out));
    return absl::OkStatus();
  }
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    // {"cls": ["[CLS]", 101], "sep": ["[SEP]", 102]}
    std::vector<TokenId> ids;
    for (const char* field : {"cls", "sep"}) {
      auto it = node.find(field);
      if (it == node.end() || !it->is_array() || it->size() != 2 || !(*it)[1].is_number_integer()) {
        return absl::InvalidArgumentError(str_cat(source, ": ", type, " needs \"", field, "\": [token, id]"));
      }
      ids.push_back(static_cast<TokenId>((*it)[1].get<int64_t>()));
    }
    out->prefix.insert(out->prefix.begin(), ids[0]);
    out->suffix.push_back(ids[1]);
    return absl::OkStatus();
  }
  if (type == "TemplateProcessing") {
    auto single = node.find("single");
    auto specials = node.find("special_tokens");
    if (single == node.end() || !single->is_array()) {
      return absl::InvalidArgumentError(str_cat(source, ": TemplateProcessing needs a \"single\" array"));
    }
    std::vector<TokenId> before, after;
    bool seen_sequence = false;
    for (const json& part : *single) {
      if (part.is_object() && part.contains("Sequence")) {
        const json& seq = part["Sequence"];
        if (!seq.is_object() || seq.value("id", std::string()) != "A") {
          return absl::UnimplementedError(str_cat(source, ": TemplateProcessing single template part ",
                                                  json_preview(part), ": only sequence A is supported"));
        }
        if (seen_sequence) {
          return absl::UnimplementedError(str_cat(source, ": TemplateProcessing repeats sequence A"));
        }
        seen_sequence = true;
        continue;
      }
      if (part.is_object() && part.contains("SpecialToken") && part["SpecialToken"].is_object() &&
          part["SpecialToken"].contains("id") && part["SpecialToken"]["id"].is_string()) {
        const std::string name = part["SpecialToken"]["id"].get<std::string>();
        std::vector<TokenId> ids;
        const json* entry = nullptr;
        if (specials != node.end() && specials->is_object() && specials->contains(name)) entry = &(*specials)[name];
        if (entry != nullptr && entry->contains("ids") && (*entry)["ids"].is_array()) {
          for (const json& id : (*entry)["ids"]) {
            if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX) {
              return absl::InvalidArgumentError(str_cat(source, ": TemplateProcessing special token \"", name,
                                                        "\" has an id that is not a token id: ", json_preview(id)));
            }
            ids.push_back(static_cast<TokenId>(id.get<int64_t>()));
          }
        } else if (std::optional<TokenId> id = to_id(name)) {
          ids.push_back(*id);
        } else {
          return absl::InvalidArgumentError(
              str_cat(source, ": TemplateProcessing special token \"", name, "\" has no ids"));
        }
        auto& side = seen_sequence ? after : before;
        side.insert(side.end(), ids.begin(), ids.end());
        continue;
      }
      return absl::InvalidArgumentError(str_cat(source, ": TemplateProcessing part ", json_preview(part),
                                                " is neither {\"SpecialToken\"} nor {\"Sequence\"}"));
    }
    out->prefix.insert(out->prefix.begin(), before.begin(), before.end());
    out->suffix.insert(out->suffix.end(), after.begin(), after.end());
    return absl::OkStatus();
  }
  return absl::UnimplementedError(str_cat(source, ": post_processor type \"", type,
                                          "\" is not supported (supported: TemplateProcessing, ByteLevel, "
                                          "BertProcessing, RobertaProcessing, Sequence)"));
}

struct Decoder {
  bool byte_level = false;  // tokens are ByteLevel characters: map back to bytes, lossy UTF-8
  bool present = false;     // without a decoder tokenizers joins tokens with spaces
};

absl::Status parse_decoder(const json& node, std::string_view source, Decoder* out) {
  if (node.is_null()) return absl::OkStatus();
  if (!node.is_object() || !node.contains("type") || !node["type"].is_string()) {
    return absl::InvalidArgumentError(str_cat(source, ": decoder ", json_preview(node), " has no \"type\""));
  }
  const std::string type = node["type"].get<std::string>();
  out->present = true;
  if (type == "ByteLevel") {
    if (out->byte_level) return absl::UnimplementedError(str_cat(source, ": decoder ByteLevel appears twice"));
    out->byte_level = true;
    return absl::OkStatus();
  }
  if (type == "Sequence") {
    auto it = node.find("decoders");
    if (it == node.end() || !it->is_array()) {
      return absl::InvalidArgumentError(str_cat(source, ": decoder Sequence needs a \"decoders\" array"));
    }
    for (const json& child : *it) TEMPER_RETURN_IF_ERROR(parse_decoder(child, source, out));
    return absl::OkStatus();
  }
  return absl::UnimplementedError(
      str_cat(source, ": decoder type \"", type, "\" is not supported (supported: ByteLevel, Sequence)"));
}

// ---------------------------------------------------------------------------------------------

class HfTokenizer final : public Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<HfTokenizer>> load(const std::filesystem::path& path);

  StatusOr<std::vector<TokenId>> encode(std::string_view text) const override {
    std::vector<TokenId> ids;
    TEMPER_RETURN_IF_ERROR(encode_into(text, &ids));
    return ids;
  }

  StatusOr<std::vector<TokenId>> encode_for_model(std::string_view text) const override {
    std::vector<TokenId> ids(post_.prefix);
    TEMPER_RETURN_IF_ERROR(encode_into(text, &ids));
    ids.insert(ids.end(), post_.suffix.begin(), post_.suffix.end());
    return ids;
  }

  StatusOr<std::string> decode(const std::vector<TokenId>& ids) const override { return decode_impl(ids, true); }
  StatusOr<std::string> decode_with_special(const std::vector<TokenId>& ids) const override {
    return decode_impl(ids, false);
  }

  int32_t vocab_size() const override { return id_limit_; }

  std::optional<TokenId> piece_to_id(std::string_view piece) const override {
    for (const AddedToken& token : added_) {
      if (token.content == piece) return token.id;
    }
    return model_->token_to_id(piece);
  }

 private:
  absl::Status encode_into(std::string_view text, std::vector<TokenId>* ids) const;
  absl::Status split_added(std::string_view text, const AddedTokenMatcher& matcher, std::vector<Piece>* out) const;
  absl::Status pre_tokenize_and_model(std::string_view text, std::vector<TokenId>* ids) const;
  StatusOr<std::string> decode_impl(const std::vector<TokenId>& ids, bool skip_special) const;

  std::string source_;
  std::vector<Normalizer> normalizers_;
  std::vector<PreTokenizer> pre_tokenizers_;
  std::unique_ptr<BpeModel> model_;
  std::vector<AddedToken> added_;
  std::vector<int32_t> added_by_id_;  // id -> index in added_, or -1
  AddedTokenMatcher raw_matcher_;      // added tokens with normalized = false
  AddedTokenMatcher normalized_matcher_;
  PostProcessor post_;
  Decoder decoder_;
  int32_t id_limit_ = 0;
};

absl::StatusOr<std::unique_ptr<HfTokenizer>> HfTokenizer::load(const std::filesystem::path& path) {
  TEMPER_ASSIGN_OR_RETURN(json doc, read_json_file(path));
  std::unique_ptr<HfTokenizer> tok(new HfTokenizer());
  tok->source_ = path.string();
  const std::string& source = tok->source_;
  if (!doc.is_object()) return absl::InvalidArgumentError(str_cat(source, ": not a JSON object"));
  auto model = doc.find("model");
  if (model == doc.end() || !model->is_object()) {
    return absl::InvalidArgumentError(str_cat(source, ": no \"model\" object"));
  }
  const std::string model_type = model->value("type", std::string("BPE"));
  if (model_type != "BPE") {
    return absl::UnimplementedError(str_cat(source, ": model type \"", model_type,
                                            "\" is not supported (temper runs BPE models of tokenizer.json)"));
  }
  TEMPER_ASSIGN_OR_RETURN(tok->model_, BpeModel::from_json(*model, source));
  const json null_json;
  const auto field = [&](const char* name) -> const json& {
    auto it = doc.find(name);
    return it == doc.end() ? null_json : *it;
  };
  TEMPER_RETURN_IF_ERROR(parse_normalizer(field("normalizer"), source, &tok->normalizers_));
  TEMPER_RETURN_IF_ERROR(parse_pre_tokenizer(field("pre_tokenizer"), source, &tok->pre_tokenizers_));
  TEMPER_RETURN_IF_ERROR(parse_decoder(field("decoder"), source, &tok->decoder_));

  int64_t limit = tok->model_->id_limit();
  const json& added = field("added_tokens");
  if (!added.is_null() && !added.is_array()) {
    return absl::InvalidArgumentError(str_cat(source, ": \"added_tokens\" must be an array"));
  }
  if (added.is_array()) {
    for (const json& entry : added) {
      if (!entry.is_object()) {
        return absl::InvalidArgumentError(str_cat(source, ": added token ", json_preview(entry), " is not an object"));
      }
      AddedToken token;
      TEMPER_ASSIGN_OR_RETURN(token.content, json_string(entry, "content", source));
      TEMPER_ASSIGN_OR_RETURN(int64_t id, json_int(entry, "id", source));
      if (id < 0 || id >= (int64_t{1} << 26)) {
        return absl::InvalidArgumentError(str_cat(source, ": added token \"", token.content, "\" has id ", id));
      }
      if (token.content.empty()) {
        return absl::InvalidArgumentError(str_cat(source, ": added token ", id, " has empty content"));
      }
      token.id = static_cast<TokenId>(id);
      for (const auto& [name, slot] :
           {std::pair<const char*, bool*>{"special", &token.special}, {"single_word", &token.single_word},
            {"lstrip", &token.lstrip}, {"rstrip", &token.rstrip}, {"normalized", &token.normalized}}) {
        TEMPER_ASSIGN_OR_RETURN(std::optional<bool> flag, json_optional_bool(entry, name, source));
        // tokenizers' default: normalized = !special
        *slot = flag.value_or(std::string_view(name) == "normalized" ? !token.special : false);
      }
      limit = std::max(limit, id + 1);
      tok->added_.push_back(std::move(token));
    }
  }
  tok->id_limit_ = static_cast<int32_t>(limit);
  tok->added_by_id_.assign(static_cast<size_t>(limit), -1);
  for (size_t i = 0; i < tok->added_.size(); ++i) {
    AddedToken& token = tok->added_[i];
    tok->added_by_id_[token.id] = static_cast<int32_t>(i);
    if (token.normalized && !tok->normalizers_.empty()) {
      tok->normalized_matcher_.add(normalize_all(tok->normalizers_, token.content), i);
    } else if (token.normalized) {
      tok->normalized_matcher_.add(token.content, i);
    } else {
      tok->raw_matcher_.add(token.content, i);
    }
  }

  HfTokenizer* raw = tok.get();
  TEMPER_RETURN_IF_ERROR(parse_post_processor(field("post_processor"), source,
                                              [raw](std::string_view piece) { return raw->piece_to_id(piece); },
                                              &tok->post_));
  // Every id the post-processor adds must name a token, or encode_for_model would emit ids that
  // decode refuses (an id inside the range can still be a gap; found by fuzz_tokenizer_json).
  for (const std::vector<TokenId>* side : {&tok->post_.prefix, &tok->post_.suffix}) {
    for (TokenId id : *side) {
      const bool known = id >= 0 && id < tok->id_limit_ &&
                         (tok->added_by_id_[id] >= 0 || tok->model_->id_to_token(id) != nullptr);
      if (!known) {
        return absl::InvalidArgumentError(str_cat(source, ": post_processor id ", id, " is not in the vocabulary"));
      }
    }
  }
  // Special tokens temper's data pipeline uses; tokenizer_config.json (load_tokenizer) overrides.
  SpecialTokens special;
  special.unk = tok->model_->unk_id();
  if (tok->post_.prefix.size() == 1) special.bos = tok->post_.prefix[0];
  if (tok->post_.suffix.size() == 1) special.eos = tok->post_.suffix[0];
  special.add_bos = special.bos.has_value();
  special.add_eos = special.eos.has_value();
  tok->special_ = special;
  return tok;
}

absl::Status HfTokenizer::split_added(std::string_view text, const AddedTokenMatcher& matcher,
                                      std::vector<Piece>* out) const {
  if (matcher.empty()) {
    if (!text.empty()) out->push_back(Piece{text});
    return absl::OkStatus();
  }
  size_t start_offset = 0;  // end of the previous split
  size_t search = 0;
  size_t start = 0, stop = 0, index = 0;
  while (search < text.size() && matcher.find(text, search, &start, &stop, &index)) {
    search = stop;  // matches never overlap, accepted or not
    const AddedToken& token = added_[index];
    if (token.single_word) {
      bool start_space = start == 0;
      if (!start_space) {
        size_t n = 0;
        start_space = !is_word_char(decode_at(text, last_char_start(text.substr(0, start)), &n));
      }
      bool stop_space = stop == text.size();
      if (!stop_space) {
        size_t n = 0;
        stop_space = !is_word_char(decode_at(text, stop, &n));
      }
      if (!start_space || !stop_space) continue;
    }
    if (token.lstrip) {
      size_t s = start;
      while (s > 0) {
        const size_t prev = last_char_start(text.substr(0, s));
        size_t n = 0;
        if (!is_white_space(decode_at(text, prev, &n))) break;
        s = prev;
      }
      start = std::max(s, start_offset);
    }
    if (token.rstrip) {
      while (stop < text.size()) {
        size_t n = 0;
        if (!is_white_space(decode_at(text, stop, &n))) break;
        stop += n;
      }
      search = stop;
    }
    if (start_offset < start) out->push_back(Piece{text.substr(start_offset, start - start_offset)});
    out->push_back(Piece{text.substr(start, stop - start), token.id});
    start_offset = stop;
  }
  if (start_offset < text.size()) out->push_back(Piece{text.substr(start_offset)});
  return absl::OkStatus();
}

absl::Status HfTokenizer::encode_into(std::string_view input, std::vector<TokenId>* ids) const {
  // Invalid UTF-8 becomes U+FFFD (maximal subparts), as Python's decode(errors="replace") would
  // have done before handing the text to tokenizers.
  std::string repaired;
  std::string_view text = input;
  if (!is_valid_utf8(input)) {
    repaired = replace_invalid_utf8(input);
    text = repaired;
  }
  // 1. Added tokens matched on the raw text.
  std::vector<Piece> raw_pieces;
  TEMPER_RETURN_IF_ERROR(split_added(text, raw_matcher_, &raw_pieces));
  for (const Piece& piece : raw_pieces) {
    if (piece.id >= 0) {
      ids->push_back(piece.id);
      continue;
    }
    // 2. Normalize the rest, then match the normalized added tokens.
    std::string normalized_storage;
    std::string_view normalized = piece.text;
    if (!normalizers_.empty()) {
      normalized_storage = normalize_all(normalizers_, piece.text);
      normalized = normalized_storage;
    }
    if (normalized_matcher_.empty()) {
      TEMPER_RETURN_IF_ERROR(pre_tokenize_and_model(normalized, ids));
      continue;
    }
    std::vector<Piece> pieces;
    TEMPER_RETURN_IF_ERROR(split_added(normalized, normalized_matcher_, &pieces));
    for (const Piece& p : pieces) {
      if (p.id >= 0) {
        ids->push_back(p.id);
      } else {
        TEMPER_RETURN_IF_ERROR(pre_tokenize_and_model(p.text, ids));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status HfTokenizer::pre_tokenize_and_model(std::string_view text, std::vector<TokenId>* ids) const {
  if (text.empty()) return absl::OkStatus();
  thread_local std::vector<Piece> current;
  thread_local std::vector<Piece> next;
  thread_local std::string mapped;
  thread_local Arena arena;  // per thread and reused: a fresh deque allocates on construction
  arena.clear();
  current.clear();
  current.push_back(Piece{text});
  // A ByteLevel step that is the last one maps bytes while feeding the model (no copy per piece).
  bool map_at_model = false;
  for (size_t s = 0; s < pre_tokenizers_.size(); ++s) {
    const PreTokenizer& step = pre_tokenizers_[s];
    next.clear();
    if (step.kind == PreTokenizer::Kind::kSplit) {
      for (const Piece& piece : current) TEMPER_RETURN_IF_ERROR(regex_split(*step.regex, step.behavior, step.invert, piece.text, &next));
    } else {
      for (const Piece& piece : current) {
        std::string_view t = piece.text;
        if (step.add_prefix_space && (t.empty() || t[0] != ' ')) {
          arena.push_back(str_cat(" ", t));
          t = arena.back();
        }
        if (step.regex) {
          TEMPER_RETURN_IF_ERROR(regex_split(*step.regex, SplitBehavior::kIsolated, false, t, &next));
        } else if (!t.empty()) {
          next.push_back(Piece{t});
        }
      }
      if (s + 1 == pre_tokenizers_.size()) {
        map_at_model = true;
      } else {
        for (Piece& piece : next) {
          arena.emplace_back();
          byte_level_map(piece.text, &arena.back());
          piece.text = arena.back();
        }
      }
    }
    std::swap(current, next);
  }
  for (const Piece& piece : current) {
    if (map_at_model) {
      byte_level_map(piece.text, &mapped);
      model_->tokenize(mapped, ids);
    } else {
      model_->tokenize(piece.text, ids);
    }
  }
  return absl::OkStatus();
}

StatusOr<std::string> HfTokenizer::decode_impl(const std::vector<TokenId>& ids, bool skip_special) const {
  std::vector<const std::string*> tokens;
  tokens.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    const TokenId id = ids[i];
    const std::string* token = nullptr;
    if (id >= 0 && id < id_limit_ && added_by_id_[id] >= 0) {
      const AddedToken& added = added_[added_by_id_[id]];
      if (skip_special && added.special) continue;
      token = &added.content;
    } else {
      token = model_->id_to_token(id);
    }
    if (token == nullptr) {
      return absl::InvalidArgumentError(str_cat("tokenizer ", source_, ": id ", id, " at position ", i,
                                                " is not in the vocabulary (ids run to ", id_limit_, ")"));
    }
    tokens.push_back(token);
  }
  if (!decoder_.present) {
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i > 0) out += ' ';
      out += *tokens[i];
    }
    return out;
  }
  std::string text;
  if (decoder_.byte_level) {
    const ByteTable& table = byte_table();
    std::string bytes;
    for (const std::string* token : tokens) {
      // Characters outside the byte alphabet make tokenizers keep the token's own UTF-8 bytes.
      const size_t mark = bytes.size();
      bool all_mapped = true;
      for (size_t i = 0; i < token->size();) {
        size_t n = 0;
        const int32_t cp = decode_at(*token, i, &n);
        i += n;
        if (cp < 0 || cp >= static_cast<int32_t>(table.char_to_byte.size()) || table.char_to_byte[cp] < 0) {
          all_mapped = false;
          break;
        }
        bytes.push_back(static_cast<char>(table.char_to_byte[cp]));
      }
      if (!all_mapped) {
        bytes.resize(mark);
        bytes += *token;
      }
    }
    text = is_valid_utf8(bytes) ? std::move(bytes) : replace_invalid_utf8(bytes);
  } else {
    for (const std::string* token : tokens) text += *token;
  }
  return text;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> make_hf_tokenizer(const std::filesystem::path& path) {
  // A field of an unexpected JSON type that a reader did not check first throws from nlohmann
  // (found by fuzz_tokenizer_json: "type": 1 in the model); it is a malformed file, never a
  // reason to terminate the host.
  try {
    TEMPER_ASSIGN_OR_RETURN(std::unique_ptr<HfTokenizer> tokenizer, HfTokenizer::load(path));
    return std::unique_ptr<Tokenizer>(std::move(tokenizer));
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(str_cat(path.string(), ": malformed tokenizer.json (", e.what(), ")"));
  }
}

}  // namespace temper
