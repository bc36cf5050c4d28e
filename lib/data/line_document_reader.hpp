// The base of the readers whose documents are made of lines (text lines and blocks, JSONL):
// position, seek and rewind are the LineCursor's; subclasses say how lines become documents.
#pragma once

#include <string>
#include <string_view>

#include "data/line_cursor.hpp"
#include "data/reader_support.hpp"
#include "data/readers.hpp"
#include "util/strings.hpp"

namespace temper {

class LineDocumentReader : public DocumentReader {
 public:
  LineDocumentReader(const SourceSpec& spec, const ReaderLimits& limits)
      : DocumentReader(spec.name, spec.on_malformed),
        cursor_(spec.paths, limits.buffer_bytes, limits.max_document_bytes),
        max_document_bytes_(limits.max_document_bytes) {}

  absl::Status rewind() override {
    cursor_.rewind();
    return absl::OkStatus();
  }

  std::string position() const override {
    ReaderPosition position;
    position.file = cursor_.file();
    position.offset = cursor_.offset();
    position.line = cursor_.line();
    return format_position(position, ReaderPosition::Kind::kLine, cursor_.paths());
  }

  absl::Status seek(const std::string& text) override {
    absl::StatusOr<ReaderPosition> position =
        parse_position(text, ReaderPosition::Kind::kLine, cursor_.paths(), source_name());
    if (!position.ok()) return position.status();
    absl::Status status = cursor_.seek(position->file, position->offset, position->line);
    if (!status.ok()) return absl::Status(status.code(), str_cat("source \"", source_name(), "\": ", std::string(status.message())));
    return absl::OkStatus();
  }

 protected:
  // "path:line" of a line the cursor returned.
  std::string origin(const LineCursor::Line& line) const { return line_origin(cursor_.paths()[line.file], line.number); }

  // A line longer than the document limit, reported per the malformed policy.
  absl::Status too_long(const LineCursor::Line& line) {
    return malformed(origin(line), str_cat("line longer than ", max_document_bytes_, " bytes"));
  }

  LineCursor cursor_;
  int64_t max_document_bytes_;
};

// True when `text` holds nothing but ASCII white space: such lines separate text blocks, and
// they (or such files) are not documents, nor JSONL records.
inline bool is_white_space_only(std::string_view text) {
  return text.find_first_not_of(" \t\n\r\f\v") == std::string_view::npos;
}

}  // namespace temper
