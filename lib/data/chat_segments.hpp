// The layout of each built-in chat template, as a list of segments: text, markers and BOS/EOS,
// each either covered by the loss or not. render_chat() tokenizes them; render_chat_text()
// joins them. Keeping the layout apart from tokenization lets tests compare it character for
// character with what the Hugging Face templates render.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <absl/status/statusor.h>

#include "data/chat_template.hpp"
#include "data/document.hpp"

namespace temper {

struct ChatSegment {
  enum class Kind {
    kText,    // literal text
    kMarker,  // a special token spelt `text` (<|im_start|>): its id when the tokenizer has it, else text
    kBos,     // the tokenizer's beginning-of-sequence token
    kEos,     // the tokenizer's end-of-sequence token
  };
  Kind kind = Kind::kText;
  std::string text;
  bool target = false;  // covered by the loss
};

// The segments of `messages` under `chat_template`, after the checks listed at render_chat().
absl::StatusOr<std::vector<ChatSegment>> chat_segments(ChatTemplate chat_template,
                                                       const std::vector<ChatMessage>& messages, bool add_bos);

// `text` without leading and trailing white space as Python's str.strip() (and so Jinja's trim
// filter, which the templates use) defines it: ASCII white space, the separators \x1c-\x1f,
// U+0085, U+00A0 and the Unicode space and line/paragraph separators.
std::string_view python_strip(std::string_view text);

}  // namespace temper
