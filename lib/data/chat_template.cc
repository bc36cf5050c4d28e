#include "data/chat_template.hpp"

#include <algorithm>
#include <cctype>

#include <nlohmann/json.hpp>

#include "data/chat_segments.hpp"
#include "io/read_file.hpp"
#include "util/status_macros.hpp"
#include "util/strings.hpp"

namespace temper {
namespace {

struct NamedTemplate {
  const char* name;
  ChatTemplate chat_template;
};

// Canonical names first: chat_template_name() returns the first entry of each template.
constexpr NamedTemplate kNames[] = {
    {"chatml", ChatTemplate::kChatML}, {"llama2", ChatTemplate::kLlama2}, {"llama3", ChatTemplate::kLlama3},
    {"alpaca", ChatTemplate::kAlpaca}, {"plain", ChatTemplate::kPlain},   {"qwen", ChatTemplate::kChatML},
    {"qwen2", ChatTemplate::kChatML},  {"llama-2", ChatTemplate::kLlama2}, {"llama-3", ChatTemplate::kLlama3},
};

bool contains(std::string_view text, std::string_view what) { return text.find(what) != std::string_view::npos; }

// The template text of a tokenizer_config.json `chat_template` value: a string, or a list of
// {"name", "template"} of which "default" is the one applied when none is named.
std::optional<std::string> template_text(const nlohmann::json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (!value.is_array()) return std::nullopt;
  std::optional<std::string> first;
  for (const nlohmann::json& entry : value) {
    if (!entry.is_object()) continue;
    auto text = entry.find("template");
    if (text == entry.end() || !text->is_string()) continue;
    auto name = entry.find("name");
    if (name != entry.end() && name->is_string() && name->get<std::string>() == "default") return text->get<std::string>();
    if (!first) first = text->get<std::string>();
  }
  return first;
}

// Encodes text that continues a sequence, without the dummy-prefix space sentencepiece puts at
// the start of every encode() call: the text is encoded after an anchor ("\n", which stands
// alone in sentencepiece and byte-level vocabularies) and the anchor's ids are dropped. Where the
// anchor merged into the text, the text is encoded alone.
class ContinuationEncoder {
 public:
  explicit ContinuationEncoder(const Tokenizer& tokenizer) : tokenizer_(tokenizer) {}

  absl::StatusOr<std::vector<TokenId>> encode(const std::string& text) {
    if (!anchor_ids_) {
      TEMPER_ASSIGN_OR_RETURN(std::vector<TokenId> ids, tokenizer_.encode(kAnchor));
      anchor_ids_ = std::move(ids);
    }
    TEMPER_ASSIGN_OR_RETURN(std::vector<TokenId> ids, tokenizer_.encode(str_cat(kAnchor, text)));
    if (ids.size() > anchor_ids_->size() && std::equal(anchor_ids_->begin(), anchor_ids_->end(), ids.begin())) {
      ids.erase(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(anchor_ids_->size()));
      return ids;
    }
    return tokenizer_.encode(text);
  }

 private:
  static constexpr const char* kAnchor = "\n";
  const Tokenizer& tokenizer_;
  std::optional<std::vector<TokenId>> anchor_ids_;
};

}  // namespace

absl::StatusOr<ChatTemplate> parse_chat_template_name(std::string_view name) {
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  for (const NamedTemplate& entry : kNames) {
    if (lower == entry.name) return entry.chat_template;
  }
  return absl::InvalidArgumentError(str_cat("unknown chat template \"", name,
                                            "\"; expected chatml (qwen, qwen2), llama2, llama3, alpaca or plain"));
}

std::string_view chat_template_name(ChatTemplate chat_template) {
  for (const NamedTemplate& entry : kNames) {
    if (entry.chat_template == chat_template) return entry.name;
  }
  return "unknown";
}

std::optional<ChatTemplate> detect_chat_template_source(std::string_view jinja) {
  if (contains(jinja, "<|start_header_id|>") && contains(jinja, "<|eot_id|>")) return ChatTemplate::kLlama3;
  if (contains(jinja, "<|im_start|>") && contains(jinja, "<|im_end|>")) return ChatTemplate::kChatML;
  if (contains(jinja, "[INST]") && contains(jinja, "<<SYS>>")) return ChatTemplate::kLlama2;
  if (contains(jinja, "### Instruction:") && contains(jinja, "### Response:")) return ChatTemplate::kAlpaca;
  return std::nullopt;
}

std::optional<ChatTemplate> detect_chat_template(const std::filesystem::path& model_dir) {
  // Newer transformers versions save the template beside the config as chat_template.jinja.
  if (absl::StatusOr<std::string> config = read_file(model_dir / "tokenizer_config.json"); config.ok()) {
    const nlohmann::json parsed = nlohmann::json::parse(*config, nullptr, /*allow_exceptions=*/false);
    if (parsed.is_object()) {
      auto it = parsed.find("chat_template");
      if (it != parsed.end()) {
        if (std::optional<std::string> text = template_text(*it)) return detect_chat_template_source(*text);
      }
    }
  }
  if (absl::StatusOr<std::string> jinja = read_file(model_dir / "chat_template.jinja"); jinja.ok()) {
    return detect_chat_template_source(*jinja);
  }
  return std::nullopt;
}

absl::StatusOr<std::string> render_chat_text(ChatTemplate chat_template, const std::vector<ChatMessage>& messages,
                                             bool add_bos, std::string_view bos, std::string_view eos) {
  TEMPER_ASSIGN_OR_RETURN(std::vector<ChatSegment> segments, chat_segments(chat_template, messages, add_bos));
  std::string text;
  for (const ChatSegment& segment : segments) {
    switch (segment.kind) {
      case ChatSegment::Kind::kText:
      case ChatSegment::Kind::kMarker:
        text += segment.text;
        break;
      case ChatSegment::Kind::kBos:
        text += bos;
        break;
      case ChatSegment::Kind::kEos:
        text += eos;
        break;
    }
  }
  return text;
}

absl::StatusOr<RenderedExample> render_chat(ChatTemplate chat_template, const std::vector<ChatMessage>& messages,
                                            const Tokenizer& tokenizer, bool add_bos) {
  TEMPER_ASSIGN_OR_RETURN(std::vector<ChatSegment> segments, chat_segments(chat_template, messages, add_bos));

  RenderedExample out;
  ContinuationEncoder continuation(tokenizer);
  bool at_start = true;  // nothing but BOS so far: the next text starts the sequence
  std::string pending;   // text with the same target flag, tokenized in one piece
  bool pending_target = false;
  bool pending_at_start = false;

  const auto flush = [&]() -> absl::Status {
    if (pending.empty()) return absl::OkStatus();
    absl::StatusOr<std::vector<TokenId>> ids =
        pending_at_start ? tokenizer.encode(pending) : continuation.encode(pending);
    if (!ids.ok()) return ids.status();
    out.ids.insert(out.ids.end(), ids->begin(), ids->end());
    out.is_target.insert(out.is_target.end(), ids->size(), pending_target);
    pending.clear();
    at_start = false;
    return absl::OkStatus();
  };
  const auto add_text = [&](const std::string& text, bool target) -> absl::Status {
    if (text.empty()) return absl::OkStatus();
    if (!pending.empty() && pending_target != target) TEMPER_RETURN_IF_ERROR(flush());
    if (pending.empty()) {
      pending_target = target;
      pending_at_start = at_start;
    }
    pending += text;
    return absl::OkStatus();
  };
  const auto add_id = [&](TokenId id, bool target) -> absl::Status {
    TEMPER_RETURN_IF_ERROR(flush());
    out.ids.push_back(id);
    out.is_target.push_back(target);
    return absl::OkStatus();
  };

  const SpecialTokens& special = tokenizer.special_tokens();
  for (const ChatSegment& segment : segments) {
    switch (segment.kind) {
      case ChatSegment::Kind::kText:
        TEMPER_RETURN_IF_ERROR(add_text(segment.text, segment.target));
        break;
      case ChatSegment::Kind::kMarker:
        if (std::optional<TokenId> id = tokenizer.piece_to_id(segment.text)) {
          TEMPER_RETURN_IF_ERROR(add_id(*id, segment.target));
          at_start = false;
        } else {
          TEMPER_RETURN_IF_ERROR(add_text(segment.text, segment.target));
        }
        break;
      case ChatSegment::Kind::kBos:
        if (special.bos) {
          TEMPER_RETURN_IF_ERROR(add_id(*special.bos, segment.target));
          at_start = true;
        }
        break;
      case ChatSegment::Kind::kEos:
        if (!special.eos) {
          return absl::InvalidArgumentError(str_cat("chat template ", chat_template_name(chat_template),
                                                    " ends assistant turns with EOS, but the tokenizer has no EOS "
                                                    "token (set one with Tokenizer::set_special_tokens)"));
        }
        TEMPER_RETURN_IF_ERROR(add_id(*special.eos, segment.target));
        at_start = false;
        break;
    }
  }
  TEMPER_RETURN_IF_ERROR(flush());
  return out;
}

}  // namespace temper
