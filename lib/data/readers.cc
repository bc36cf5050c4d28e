#include "data/readers.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>

#include "data/reader_support.hpp"
#include "io/os_error.hpp"
#include "util/strings.hpp"

namespace temper {
namespace {

constexpr size_t kMaxMalformedExamples = 5;

// Every file of the source must exist before reading starts: a typo in the tenth path should
// fail the run at once, not hours later.
absl::Status check_regular_file(const SourceSpec& spec, const std::filesystem::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT) {
      return absl::NotFoundError(str_cat("source \"", spec.name, "\": ", path.string(), ": no such file"));
    }
    return os_error(err, str_cat("source \"", spec.name, "\": ", path.string()));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(str_cat("source \"", spec.name, "\": ", path.string(), " is not a regular file"));
  }
  return absl::OkStatus();
}

}  // namespace

DocumentReader::~DocumentReader() = default;

absl::Status DocumentReader::malformed(const std::string& where, const std::string& why) {
  std::string report = str_cat(where, ": ", why);
  if (policy_ == MalformedPolicy::kFail) {
    return absl::InvalidArgumentError(
        str_cat(report, " (source \"", source_name_, "\"; on_malformed = kSkip would skip and count it)"));
  }
  ++stats_.malformed;
  // Later passes meet the same records again; an example is kept once.
  auto& examples = stats_.malformed_examples;
  if (examples.size() < kMaxMalformedExamples && std::find(examples.begin(), examples.end(), report) == examples.end()) {
    examples.push_back(std::move(report));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<DocumentReader>> open_reader(const SourceSpec& spec, const ReaderLimits& limits) {
  if (spec.records || spec.stream) {
    if (spec.records && spec.stream) {
      return absl::InvalidArgumentError(str_cat("source \"", spec.name, "\": give records or a stream, not both"));
    }
    if (!spec.paths.empty()) {
      return absl::InvalidArgumentError(str_cat("source \"", spec.name, "\": give paths or records/a stream, not both"));
    }
    if (spec.format == SourceFormat::kTokenShard) {
      return absl::InvalidArgumentError(
          str_cat("source \"", spec.name, "\": token shards are read from files; records hold text or JSONL"));
    }
    if (spec.format == SourceFormat::kJsonlText && spec.text_field.empty()) {
      return absl::InvalidArgumentError(str_cat("source \"", spec.name, "\": text_field is empty"));
    }
    if (limits.max_document_bytes <= 0) {
      return absl::InvalidArgumentError(str_cat("source \"", spec.name, "\": max_document_bytes must be positive"));
    }
    return make_record_reader(spec, limits);
  }
  if (spec.paths.empty()) {
    return absl::InvalidArgumentError(str_cat("source \"", spec.name, "\": no paths given"));
  }
  if (limits.max_document_bytes <= 0) {
    return absl::InvalidArgumentError(str_cat("source \"", spec.name, "\": max_document_bytes must be positive"));
  }
  for (const std::filesystem::path& path : spec.paths) {
    absl::Status status = check_regular_file(spec, path);
    if (!status.ok()) return status;
    if (spec.format == SourceFormat::kTokenShard) {
      std::filesystem::path index = path;
      index += ".idx";
      status = check_regular_file(spec, index);
      if (!status.ok()) return status;
    }
  }
  switch (spec.format) {
    case SourceFormat::kTextLines:
    case SourceFormat::kTextBlocks:
    case SourceFormat::kTextFiles:
      return make_text_reader(spec, limits);
    case SourceFormat::kJsonlText:
      if (spec.text_field.empty()) {
        return absl::InvalidArgumentError(str_cat("source \"", spec.name, "\": text_field is empty"));
      }
      return make_jsonl_reader(spec, limits);
    case SourceFormat::kJsonlInstruction:
    case SourceFormat::kJsonlChat:
      return make_jsonl_reader(spec, limits);
    case SourceFormat::kTokenShard:
      return make_token_shard_reader(spec);
  }
  return absl::InvalidArgumentError(
      str_cat("source \"", spec.name, "\": unknown format ", static_cast<int>(spec.format)));
}

}  // namespace temper
