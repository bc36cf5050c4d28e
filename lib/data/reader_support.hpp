// What the document readers share: their position as JSON, and the per-format factories that
// open_reader() dispatches to.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <absl/status/statusor.h>

#include "data/readers.hpp"

namespace temper {

// Where a reader is: which file, and within it either a byte offset and line number (text and
// JSONL: the next unread line) or a document index (token shards). file == number of paths
// means the end of the pass.
struct ReaderPosition {
  enum class Kind { kLine, kFile, kDocument };
  size_t file = 0;
  int64_t offset = 0;  // kLine
  int64_t line = 1;    // kLine
  int64_t doc = 0;     // kDocument
};

// {"file":0,"path":"a.jsonl","offset":1234,"line":17}, {"file":1,"path":"b.txt"} or
// {"file":0,"path":"s.bin","doc":42}; the path is written so a position taken over other files
// is refused on seek.
std::string format_position(const ReaderPosition& position, ReaderPosition::Kind kind,
                            const std::vector<std::filesystem::path>& paths);
// The inverse, checked against this source's paths; errors name the source.
absl::StatusOr<ReaderPosition> parse_position(const std::string& text, ReaderPosition::Kind kind,
                                              const std::vector<std::filesystem::path>& paths,
                                              std::string_view source_name);

// "path:line", the origin of a document and the prefix of a malformed-record report.
std::string line_origin(const std::filesystem::path& path, int64_t line);

// Reads one JSONL record of `format` (kJsonlText, kJsonlInstruction, kJsonlChat) into *doc;
// returns why it is malformed, or an empty string when it is well formed.
std::string parse_jsonl_record(std::string_view text, SourceFormat format, const std::string& text_field, Document* doc);

std::unique_ptr<DocumentReader> make_text_reader(const SourceSpec& spec, const ReaderLimits& limits);
std::unique_ptr<DocumentReader> make_jsonl_reader(const SourceSpec& spec, const ReaderLimits& limits);
absl::StatusOr<std::unique_ptr<DocumentReader>> make_token_shard_reader(const SourceSpec& spec);
// Records from the host (SourceSpec::records or ::stream).
std::unique_ptr<DocumentReader> make_record_reader(const SourceSpec& spec, const ReaderLimits& limits);

}  // namespace temper
