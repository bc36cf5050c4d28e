#include "data/reader_support.hpp"

#include <nlohmann/json.hpp>

#include "util/strings.hpp"

namespace temper {
namespace {

// Paths need not be valid UTF-8 but JSON text must be: invalid bytes become U+FFFD, on writing
// and when comparing on seek alike.
std::string json_safe(const std::string& text) {
  const std::string quoted = nlohmann::json(text).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  const nlohmann::json parsed = nlohmann::json::parse(quoted, nullptr, false);
  return parsed.is_string() ? parsed.get<std::string>() : std::string();
}

// A non-negative integer field, or an error naming it.
absl::StatusOr<int64_t> field(const nlohmann::json& obj, const char* name, std::string_view source,
                              const std::string& text) {
  auto it = obj.find(name);
  if (it == obj.end() || !it->is_number_integer() || it->get<int64_t>() < 0) {
    return absl::InvalidArgumentError(str_cat("source \"", source, "\": position ", text, " needs a non-negative integer \"",
                                              name, "\""));
  }
  return it->get<int64_t>();
}

}  // namespace

std::string line_origin(const std::filesystem::path& path, int64_t line) { return str_cat(path.string(), ":", line); }

std::string format_position(const ReaderPosition& position, ReaderPosition::Kind kind,
                            const std::vector<std::filesystem::path>& paths) {
  nlohmann::json out = nlohmann::json::object();
  out["file"] = position.file;
  if (position.file < paths.size()) out["path"] = json_safe(paths[position.file].string());
  switch (kind) {
    case ReaderPosition::Kind::kLine:
      out["offset"] = position.offset;
      out["line"] = position.line;
      break;
    case ReaderPosition::Kind::kDocument:
      out["doc"] = position.doc;
      break;
    case ReaderPosition::Kind::kFile:
      break;
  }
  return out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

absl::StatusOr<ReaderPosition> parse_position(const std::string& text, ReaderPosition::Kind kind,
                                              const std::vector<std::filesystem::path>& paths,
                                              std::string_view source_name) {
  const nlohmann::json obj = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!obj.is_object()) {
    return absl::InvalidArgumentError(str_cat("source \"", source_name, "\": position ", text, " is not a JSON object"));
  }
  ReaderPosition position;
  absl::StatusOr<int64_t> file = field(obj, "file", source_name, text);
  if (!file.ok()) return file.status();
  if (static_cast<uint64_t>(*file) > paths.size()) {
    return absl::InvalidArgumentError(str_cat("source \"", source_name, "\": position ", text, " names file ", *file,
                                              " but the source has ", paths.size(), " files"));
  }
  position.file = static_cast<size_t>(*file);
  if (position.file < paths.size()) {
    const std::string expected = json_safe(paths[position.file].string());
    auto it = obj.find("path");
    if (it == obj.end() || !it->is_string() || it->get<std::string>() != expected) {
      return absl::InvalidArgumentError(str_cat("source \"", source_name, "\": position ", text,
                                                " was taken over other files: file ", position.file, " is now ",
                                                expected));
    }
  }
  if (kind == ReaderPosition::Kind::kLine) {
    absl::StatusOr<int64_t> offset = field(obj, "offset", source_name, text);
    if (!offset.ok()) return offset.status();
    absl::StatusOr<int64_t> line = field(obj, "line", source_name, text);
    if (!line.ok()) return line.status();
    position.offset = *offset;
    position.line = *line;
  } else if (kind == ReaderPosition::Kind::kDocument) {
    absl::StatusOr<int64_t> doc = field(obj, "doc", source_name, text);
    if (!doc.ok()) return doc.status();
    position.doc = *doc;
  }
  return position;
}

}  // namespace temper
