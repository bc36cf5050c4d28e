// The reader of pre-tokenized shards: documents in index order, shard after shard. Every
// shard's index is checked when the reader opens, so a corrupt shard fails the run at once; a
// shard is mapped only while it is being read.
#include <optional>

#include "data/reader_support.hpp"
#include "data/token_shard.hpp"
#include "util/strings.hpp"

namespace temper {
namespace {

class TokenShardReader final : public DocumentReader {
 public:
  explicit TokenShardReader(const SourceSpec& spec)
      : DocumentReader(spec.name, spec.on_malformed), paths_(spec.paths) {}

  absl::StatusOr<std::optional<Document>> next() override {
    while (file_ < paths_.size()) {
      if (!shard_) {
        absl::StatusOr<TokenShard> shard = TokenShard::open(paths_[file_]);
        if (!shard.ok()) return shard.status();
        shard_ = std::move(*shard);
      }
      if (doc_ >= shard_->num_documents()) {
        shard_.reset();
        ++file_;
        doc_ = 0;
        continue;
      }
      const uint64_t index = doc_++;
      const std::string where = str_cat(paths_[file_].string(), "#", index);
      Document doc;
      absl::Status problem = shard_->document_size(index) == 0 ? absl::InvalidArgumentError("empty document")
                                                                : shard_->read_document(index, &doc.tokens);
      if (!problem.ok()) {
        absl::Status status = malformed(where, std::string(problem.message()));
        if (!status.ok()) return status;
        continue;
      }
      doc.origin = where;
      ++stats_.documents;
      return std::optional<Document>(std::move(doc));
    }
    return std::optional<Document>();
  }

  absl::Status rewind() override {
    shard_.reset();
    file_ = 0;
    doc_ = 0;
    return absl::OkStatus();
  }

  std::string position() const override {
    ReaderPosition position;
    position.file = file_;
    position.doc = static_cast<int64_t>(doc_);
    return format_position(position, ReaderPosition::Kind::kDocument, paths_);
  }

  absl::Status seek(const std::string& text) override {
    absl::StatusOr<ReaderPosition> position =
        parse_position(text, ReaderPosition::Kind::kDocument, paths_, source_name());
    if (!position.ok()) return position.status();
    shard_.reset();
    if (position->file < paths_.size()) {
      absl::StatusOr<TokenShard> shard = TokenShard::open(paths_[position->file]);
      if (!shard.ok()) return shard.status();
      if (static_cast<uint64_t>(position->doc) > shard->num_documents()) {
        return absl::InvalidArgumentError(str_cat("source \"", source_name(), "\": position ", text, " is beyond the ",
                                                  shard->num_documents(), " documents of ",
                                                  paths_[position->file].string()));
      }
      shard_ = std::move(*shard);
    }
    file_ = position->file;
    doc_ = static_cast<uint64_t>(position->doc);
    return absl::OkStatus();
  }

 private:
  std::vector<std::filesystem::path> paths_;
  size_t file_ = 0;
  uint64_t doc_ = 0;
  std::optional<TokenShard> shard_;  // the mapped shard file_, while it is read
};

}  // namespace

absl::StatusOr<std::unique_ptr<DocumentReader>> make_token_shard_reader(const SourceSpec& spec) {
  for (const std::filesystem::path& path : spec.paths) {
    absl::StatusOr<TokenShard> shard = TokenShard::open(path);
    if (!shard.ok()) {
      return absl::Status(shard.status().code(), str_cat("source \"", spec.name, "\": ", std::string(shard.status().message())));
    }
  }
  return std::unique_ptr<DocumentReader>(new TokenShardReader(spec));
}

}  // namespace temper
