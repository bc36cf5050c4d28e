#include "data/chat_segments.hpp"

#include "util/strings.hpp"

namespace temper {
namespace {

// The code point starting at text[i] and its length in bytes, for sequences of up to three
// bytes (every white-space code point is below U+10000); length 0 for anything else.
std::pair<char32_t, size_t> decode_at(std::string_view text, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char lead = byte(i);
  if (lead < 0x80) return {lead, 1};
  const auto continuation = [&](size_t k) { return k < text.size() && (byte(k) & 0xC0) == 0x80; };
  if ((lead & 0xE0) == 0xC0 && continuation(i + 1)) {
    return {static_cast<char32_t>(((lead & 0x1F) << 6) | (byte(i + 1) & 0x3F)), 2};
  }
  if ((lead & 0xF0) == 0xE0 && continuation(i + 1) && continuation(i + 2)) {
    return {static_cast<char32_t>(((lead & 0x0F) << 12) | ((byte(i + 1) & 0x3F) << 6) | (byte(i + 2) & 0x3F)), 3};
  }
  return {0, 0};
}

// Python's str.isspace(): bidirectional class WS, B or S, or general category Zs.
bool is_python_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

absl::Status check_messages(ChatTemplate chat_template, const std::vector<ChatMessage>& messages) {
  const std::string_view name = chat_template_name(chat_template);
  if (messages.empty()) return absl::InvalidArgumentError(str_cat("chat template ", name, ": no messages to render"));
  bool has_assistant = false;
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& role = messages[i].role;
    if (role != "system" && role != "user" && role != "assistant") {
      return absl::InvalidArgumentError(str_cat("chat template ", name, ": message ", i, " has the role \"", role,
                                                "\"; expected system, user or assistant"));
    }
    has_assistant = has_assistant || role == "assistant";
  }
  if (!has_assistant) {
    return absl::InvalidArgumentError(
        str_cat("chat template ", name, ": no assistant message, so nothing for the loss to cover"));
  }
  return absl::OkStatus();
}

// Llama-2 and Alpaca raise in their templates unless the messages are an optional system
// message followed by user/assistant turns alternating from a user turn.
absl::Status check_alternation(ChatTemplate chat_template, const std::vector<ChatMessage>& messages) {
  const size_t first = messages[0].role == "system" ? 1 : 0;
  for (size_t i = first; i < messages.size(); ++i) {
    const char* expected = (i - first) % 2 == 0 ? "user" : "assistant";
    if (messages[i].role != expected) {
      return absl::InvalidArgumentError(str_cat("chat template ", chat_template_name(chat_template), ": message ", i,
                                                " is \"", messages[i].role, "\" where \"", expected,
                                                "\" is expected (an optional system message first, then user and "
                                                "assistant alternating)"));
    }
  }
  return absl::OkStatus();
}

class Segments {
 public:
  void text(std::string value, bool target = false) {
    segments_.push_back({ChatSegment::Kind::kText, std::move(value), target});
  }
  void marker(const char* spelling, bool target = false) {
    segments_.push_back({ChatSegment::Kind::kMarker, spelling, target});
  }
  void bos() { segments_.push_back({ChatSegment::Kind::kBos, "", false}); }
  void eos(bool target) { segments_.push_back({ChatSegment::Kind::kEos, "", target}); }
  std::vector<ChatSegment> take() { return std::move(segments_); }

 private:
  std::vector<ChatSegment> segments_;
};

std::string stripped(std::string_view text) { return std::string(python_strip(text)); }

void chatml(const std::vector<ChatMessage>& messages, Segments* out) {
  for (const ChatMessage& m : messages) {
    const bool target = m.role == "assistant";
    out->marker("<|im_start|>");
    out->text(m.role + "\n");
    out->text(m.content, target);
    out->marker("<|im_end|>", target);
    out->text("\n");
  }
}

void llama2(const std::vector<ChatMessage>& messages, bool add_bos, Segments* out) {
  const bool has_system = messages[0].role == "system";
  const size_t first = has_system ? 1 : 0;
  for (size_t i = first; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role == "user") {
      if (i > first || add_bos) out->bos();
      // The template strips the system block and the first user message together.
      const std::string content =
          i == first && has_system ? str_cat("<<SYS>>\n", messages[0].content, "\n<</SYS>>\n\n", m.content) : m.content;
      out->text(str_cat("[INST] ", python_strip(content), " [/INST]"));
    } else {
      out->text(str_cat(" ", python_strip(m.content), " "), true);
      out->eos(true);
    }
  }
}

void llama3(const std::vector<ChatMessage>& messages, bool add_bos, Segments* out) {
  if (add_bos) out->bos();
  for (const ChatMessage& m : messages) {
    const bool target = m.role == "assistant";
    out->marker("<|start_header_id|>");
    out->text(m.role);
    out->marker("<|end_header_id|>");
    out->text("\n\n");
    out->text(stripped(m.content), target);
    out->marker("<|eot_id|>", target);
  }
}

void alpaca(const std::vector<ChatMessage>& messages, bool add_bos, Segments* out) {
  if (add_bos) out->bos();
  const size_t first = messages[0].role == "system" ? 1 : 0;
  if (first == 1) out->text(str_cat(python_strip(messages[0].content), "\n\n"));
  for (size_t i = first; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role == "user") {
      out->text(str_cat("### Instruction:\n", python_strip(m.content), "\n\n"));
    } else {
      out->text("### Response:\n");
      out->text(stripped(m.content), true);
      out->eos(true);
      out->text("\n\n");
    }
  }
}

void plain(const std::vector<ChatMessage>& messages, bool add_bos, Segments* out) {
  if (add_bos) out->bos();
  for (const ChatMessage& m : messages) {
    const bool target = m.role == "assistant";
    out->text(m.role + ": ");
    out->text(m.content, target);
    if (target) out->eos(true);
    out->text("\n");
  }
}

}  // namespace

std::string_view python_strip(std::string_view text) {
  while (!text.empty()) {
    const auto [c, length] = decode_at(text, 0);
    if (length == 0 || !is_python_space(c)) break;
    text.remove_prefix(length);
  }
  while (!text.empty()) {
    size_t start = text.size() - 1;
    while (start > 0 && text.size() - start < 3 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
    const auto [c, length] = decode_at(text, start);
    if (length == 0 || start + length != text.size() || !is_python_space(c)) break;
    text.remove_suffix(length);
  }
  return text;
}

absl::StatusOr<std::vector<ChatSegment>> chat_segments(ChatTemplate chat_template,
                                                       const std::vector<ChatMessage>& messages, bool add_bos) {
  absl::Status status = check_messages(chat_template, messages);
  if (!status.ok()) return status;
  Segments out;
  switch (chat_template) {
    case ChatTemplate::kChatML:
      if (add_bos) out.bos();
      chatml(messages, &out);
      break;
    case ChatTemplate::kLlama2:
      status = check_alternation(chat_template, messages);
      if (!status.ok()) return status;
      llama2(messages, add_bos, &out);
      break;
    case ChatTemplate::kLlama3:
      llama3(messages, add_bos, &out);
      break;
    case ChatTemplate::kAlpaca:
      status = check_alternation(chat_template, messages);
      if (!status.ok()) return status;
      alpaca(messages, add_bos, &out);
      break;
    case ChatTemplate::kPlain:
      plain(messages, add_bos, &out);
      break;
  }
  return out.take();
}

}  // namespace temper
