// Pre-tokenized shards: documents already turned into token ids, read without tokenizing.
//
// A shard is two files. `<path>` holds the token ids of every document back to back, as
// little-endian uint16 or uint32 (no header, so other tools can write or mmap it as a flat
// array). `<path>.idx` is a binary index, little-endian:
//
//   bytes 0-7    magic "TMPRSHD1"
//   bytes 8-11   uint32 bytes per token: 2 (uint16 ids) or 4 (uint32 ids)
//   bytes 12-15  uint32 reserved, 0
//   bytes 16-23  uint64 number of documents N
//   bytes 24-    uint64 offsets[N + 1], in tokens: offsets[0] = 0, non-decreasing,
//                offsets[N] = the number of tokens in `<path>`
//
// Document i is tokens [offsets[i], offsets[i+1]). A binary index rather than JSON: 8 bytes a
// document, read by mmap with no parsing, so a shard of millions of documents opens at once.
// Both files are memory-mapped; pages are read as documents are touched.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <absl/status/status.h>
#include <absl/status/statusor.h>

#include "io/mapped_file.hpp"
#include "temper/token.hpp"

namespace temper {

class TokenShard {
 public:
  // Maps `path` and `path`.idx and checks the index: magic, token width, size, offsets
  // non-decreasing and ending at the token file's size. Errors name the file and what is wrong.
  static absl::StatusOr<TokenShard> open(const std::filesystem::path& path);

  uint64_t num_documents() const { return num_documents_; }
  int bytes_per_token() const { return bytes_per_token_; }
  uint64_t document_size(uint64_t doc) const { return offset(doc + 1) - offset(doc); }

  // The ids of document `doc` (< num_documents()) into *ids. An id above 2^31-1 (possible only
  // in uint32 shards) does not fit a TokenId: the result is an error naming it.
  absl::Status read_document(uint64_t doc, std::vector<TokenId>* ids) const;

 private:
  TokenShard() = default;
  uint64_t offset(uint64_t i) const;

  std::shared_ptr<MappedFile> tokens_;
  std::shared_ptr<MappedFile> index_;
  int bytes_per_token_ = 0;
  uint64_t num_documents_ = 0;
};

// Writes `docs` as a shard at `path` (tokens) and `path`.idx, each atomically, the index last.
// uint16 ids when every id is below 65536, uint32 otherwise. Negative ids and empty documents
// are INVALID_ARGUMENT.
absl::Status write_token_shard(const std::filesystem::path& path, const std::vector<std::vector<TokenId>>& docs);

// `path` + ".idx".
std::filesystem::path token_shard_index_path(const std::filesystem::path& path);

}  // namespace temper
