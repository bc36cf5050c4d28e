// A document as it flows through the data pipeline: read -> filter -> dedup -> tokenize ->
// format -> pack.
#pragma once

#include <string>
#include <vector>

#include "temper/token.hpp"

namespace temper {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

struct Document {
  std::string text;                   // text sources
  std::vector<ChatMessage> messages;  // instruction and chat sources
  std::vector<TokenId> tokens;        // pre-tokenized sources
  std::string origin;                 // "path:line" (or "path#doc") for reports
};

// The text a filter or deduplicator looks at: the text itself, or the messages' contents joined
// by newlines.
std::string document_text(const Document& doc);

}  // namespace temper
