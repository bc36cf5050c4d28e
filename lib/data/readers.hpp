// Document readers: the first stage of the data pipeline. A reader streams the documents of one
// source (SourceSpec) from its files, in order, pass after pass, and can say where it is and
// return there exactly, so the mixer's checkpoint can resume a source mid-file.
//
// Memory stays bounded whatever the corpus size: text and JSONL are read through a fixed buffer
// (1 MiB) one line at a time, token shards are memory-mapped, and no document may exceed
// ReaderLimits::max_document_bytes (64 MiB); a larger one is malformed (skipped and counted, or
// fatal, per SourceSpec::on_malformed). Formats, positions and the token shard layout are
// described in docs/data.md ("Sources").
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <absl/status/status.h>
#include <absl/status/statusor.h>

#include "data/document.hpp"
#include "temper/data_options.hpp"
#include "temper/token.hpp"

namespace temper {

struct ReaderStats {
  // Both counts accumulate over every pass and are not part of position(): they describe what
  // this reader object has seen.
  int64_t documents = 0;  // documents returned by next()
  int64_t malformed = 0;  // records skipped as malformed (kSkip)
  std::vector<std::string> malformed_examples;  // "path:line: why", the first 5 distinct ones
};

class DocumentReader {
 public:
  virtual ~DocumentReader();

  // The next document, or nullopt at the end of this pass over the data (every file read). A
  // source with no documents at all returns nullopt at once; what to do then is the mixer's
  // decision. After nullopt, next() keeps returning nullopt until rewind().
  virtual absl::StatusOr<std::optional<Document>> next() = 0;
  // Starts the next pass at the first file.
  virtual absl::Status rewind() = 0;
  // Where the next call of next() will read, as compact JSON (file index, path, byte offset and
  // line number, or the document index of a token shard).
  virtual std::string position() const = 0;
  // Returns to a position() taken from a reader of the same source (same paths in the same
  // order); the following next() yields exactly what it would have yielded then.
  virtual absl::Status seek(const std::string& position) = 0;

  const ReaderStats& stats() const { return stats_; }

 protected:
  DocumentReader(std::string source_name, MalformedPolicy policy)
      : source_name_(std::move(source_name)), policy_(policy) {}

  // Records a malformed record at `where` ("path:line") per the policy: counts it and returns
  // OK under kSkip, returns INVALID_ARGUMENT "where: why" under kFail.
  absl::Status malformed(const std::string& where, const std::string& why);

  const std::string& source_name() const { return source_name_; }
  ReaderStats stats_;

 private:
  std::string source_name_;
  MalformedPolicy policy_;
};

// Bounds on what a reader holds in memory. The defaults suit real corpora; tests shrink them to
// exercise buffer refills and over-long documents on small files.
struct ReaderLimits {
  size_t buffer_bytes = size_t{1} << 20;          // read buffer of text and JSONL files
  int64_t max_document_bytes = int64_t{64} << 20;  // a longer line, block or file is malformed
};

// A reader for `spec`. Fails with INVALID_ARGUMENT when the spec has no paths, NOT_FOUND naming a
// missing file (for token shards: the token file or its ".idx"), and INVALID_ARGUMENT naming the
// file for a token shard whose index is corrupt.
absl::StatusOr<std::unique_ptr<DocumentReader>> open_reader(const SourceSpec& spec,
                                                            const ReaderLimits& limits = {});

}  // namespace temper
