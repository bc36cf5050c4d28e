// JSONL sources: one JSON object per line, holding a text, an instruction record or a chat.
// A line that is not valid JSON (JSON text is UTF-8, so invalid UTF-8 makes it invalid), lacks
// a field, has a field of the wrong type or an empty content is malformed: skipped and counted,
// or fatal, per the source's policy, and reported as "path:line: why". Blank lines are skipped.
#include <nlohmann/json.hpp>

#include "data/line_document_reader.hpp"
#include "util/strings.hpp"

namespace temper {
namespace {

using nlohmann::json;

// Why a record is malformed; empty when it is well formed.
using Problem = std::string;

// The string field `name` of `obj` into *out. Absent and null are the same: a problem when
// `required`, otherwise *out is left empty. Blank strings count as empty.
Problem string_field(const json& obj, const std::string& name, bool required, std::string* out,
                     const std::string& label = {}) {
  const std::string shown = label.empty() ? str_cat("field \"", name, "\"") : label;
  auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) return required ? str_cat(shown, " is missing") : Problem();
  if (!it->is_string()) return str_cat(shown, " must be a string, not ", it->type_name());
  const std::string& value = it->get_ref<const std::string&>();
  if (is_white_space_only(value)) return required ? str_cat(shown, " is empty") : Problem();
  *out = value;
  return Problem();
}

Problem read_text(const json& record, const std::string& field, Document* doc) {
  return string_field(record, field, /*required=*/true, &doc->text);
}

// {"instruction", "input"?, "output", "system"?}: the user turn is the instruction, followed by
// the input after a blank line when there is one.
Problem read_instruction(const json& record, Document* doc) {
  std::string instruction, input, output, system;
  for (Problem problem : {string_field(record, "instruction", true, &instruction),
                          string_field(record, "input", false, &input), string_field(record, "output", true, &output),
                          string_field(record, "system", false, &system)}) {
    if (!problem.empty()) return problem;
  }
  if (!system.empty()) doc->messages.push_back({"system", std::move(system)});
  doc->messages.push_back({"user", input.empty() ? std::move(instruction) : str_cat(instruction, "\n\n", input)});
  doc->messages.push_back({"assistant", std::move(output)});
  return Problem();
}

// {"messages": [{"role", "content"}, ...]} with roles system, user and assistant, and at least
// one assistant turn (a chat without one teaches nothing under SFT).
Problem read_chat(const json& record, Document* doc) {
  auto it = record.find("messages");
  if (it == record.end() || it->is_null()) return "field \"messages\" is missing";
  if (!it->is_array()) return str_cat("field \"messages\" must be an array, not ", it->type_name());
  if (it->empty()) return "field \"messages\" is empty";
  bool has_assistant = false;
  for (size_t i = 0; i < it->size(); ++i) {
    const json& message = (*it)[i];
    if (!message.is_object()) return str_cat("messages[", i, "] must be an object, not ", message.type_name());
    ChatMessage out;
    Problem problem = string_field(message, "role", true, &out.role, str_cat("messages[", i, "].role"));
    if (!problem.empty()) return problem;
    if (out.role != "system" && out.role != "user" && out.role != "assistant") {
      return str_cat("messages[", i, "].role \"", out.role, "\" is not system, user or assistant");
    }
    problem = string_field(message, "content", true, &out.content, str_cat("messages[", i, "].content"));
    if (!problem.empty()) return problem;
    has_assistant = has_assistant || out.role == "assistant";
    doc->messages.push_back(std::move(out));
  }
  if (!has_assistant) return "no assistant message";
  return Problem();
}

}  // namespace

std::string parse_jsonl_record(std::string_view text, SourceFormat format, const std::string& text_field, Document* doc) {
  json record;
  try {
    record = json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    // what() opens with "[json.exception.parse_error.101] ", which says nothing to a user.
    std::string_view what = e.what();
    const size_t bracket = what.find("] ");
    if (bracket != std::string_view::npos) what.remove_prefix(bracket + 2);
    return str_cat("invalid JSON: ", what);
  }
  if (!record.is_object()) return str_cat("a record must be a JSON object, not ", record.type_name());
  switch (format) {
    case SourceFormat::kJsonlInstruction:
      return read_instruction(record, doc);
    case SourceFormat::kJsonlChat:
      return read_chat(record, doc);
    default:
      return read_text(record, text_field, doc);
  }
}

namespace {

class JsonlReader final : public LineDocumentReader {
 public:
  JsonlReader(const SourceSpec& spec, const ReaderLimits& limits)
      : LineDocumentReader(spec, limits), format_(spec.format), text_field_(spec.text_field) {}

  absl::StatusOr<std::optional<Document>> next() override {
    for (;;) {
      absl::StatusOr<LineCursor::Line> line = cursor_.next();
      if (!line.ok()) return line.status();
      switch (line->kind) {
        case LineCursor::Line::Kind::kEndOfPass:
          return std::optional<Document>();
        case LineCursor::Line::Kind::kEndOfFile:
          continue;
        case LineCursor::Line::Kind::kTooLong: {
          absl::Status status = too_long(*line);
          if (!status.ok()) return status;
          continue;
        }
        case LineCursor::Line::Kind::kText:
          break;
      }
      if (is_white_space_only(line->text)) continue;
      Document doc;
      Problem problem = parse(line->text, &doc);
      if (!problem.empty()) {
        absl::Status status = malformed(origin(*line), problem);
        if (!status.ok()) return status;
        continue;
      }
      doc.origin = origin(*line);
      ++stats_.documents;
      return std::optional<Document>(std::move(doc));
    }
  }

 private:
  Problem parse(std::string_view text, Document* doc) const { return parse_jsonl_record(text, format_, text_field_, doc); }

  SourceFormat format_;
  std::string text_field_;
};

}  // namespace

std::unique_ptr<DocumentReader> make_jsonl_reader(const SourceSpec& spec, const ReaderLimits& limits) {
  return std::make_unique<JsonlReader>(spec, limits);
}

}  // namespace temper
