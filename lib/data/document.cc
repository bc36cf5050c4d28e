#include "data/document.hpp"

namespace temper {

std::string document_text(const Document& doc) {
  if (doc.messages.empty()) return doc.text;
  size_t size = doc.messages.size();
  for (const ChatMessage& message : doc.messages) size += message.content.size();
  std::string text;
  text.reserve(size);
  for (size_t i = 0; i < doc.messages.size(); ++i) {
    if (i > 0) text += '\n';
    text += doc.messages[i].content;
  }
  return text;
}

}  // namespace temper
