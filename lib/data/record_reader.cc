// Sources whose documents come from the host program rather than files: a list of records held
// in memory (SourceSpec::records) or a RecordStream the host implements (SourceSpec::stream).
// Each record is one document, read as the source's format reads one line, with the same
// malformed-record policy and the same document size limit as the file readers.
#include <nlohmann/json.hpp>

#include "data/line_document_reader.hpp"
#include "data/reader_support.hpp"
#include "temper/record_stream.hpp"
#include "util/strings.hpp"

namespace temper {

RecordStream::~RecordStream() = default;

StatusOr<std::optional<std::string>> RecordStream::position() const { return std::optional<std::string>(); }

Status RecordStream::seek(const std::string& position) {
  return absl::UnimplementedError("this record stream cannot seek (its position() gives none)");
}

namespace {

class RecordReader final : public DocumentReader {
 public:
  RecordReader(const SourceSpec& spec, const ReaderLimits& limits)
      : DocumentReader(spec.name, spec.on_malformed),
        records_(spec.records),
        stream_(spec.stream),
        format_(spec.format),
        text_field_(spec.text_field),
        max_bytes_(limits.max_document_bytes) {}

  absl::StatusOr<std::optional<Document>> next() override {
    for (;;) {
      absl::StatusOr<std::optional<std::string_view>> record = raw_next();
      if (!record.ok()) return record.status();
      if (!*record) return std::optional<Document>();
      const std::string_view text = **record;
      const std::string where = str_cat(source_name(), "#", index_ - 1);
      if (static_cast<int64_t>(text.size()) > max_bytes_) {
        absl::Status status = malformed(where, str_cat("record longer than ", max_bytes_, " bytes"));
        if (!status.ok()) return status;
        continue;
      }
      if (is_white_space_only(text)) continue;
      Document doc;
      if (format_ == SourceFormat::kJsonlText || format_ == SourceFormat::kJsonlInstruction ||
          format_ == SourceFormat::kJsonlChat) {
        const std::string problem = parse_jsonl_record(text, format_, text_field_, &doc);
        if (!problem.empty()) {
          absl::Status status = malformed(where, problem);
          if (!status.ok()) return status;
          continue;
        }
      } else {
        doc.text = std::string(text);
      }
      doc.origin = where;
      ++stats_.documents;
      return std::optional<Document>(std::move(doc));
    }
  }

  absl::Status rewind() override {
    index_ = 0;
    ended_ = false;
    if (stream_) return annotate(stream_->rewind(), "rewind");
    return absl::OkStatus();
  }

  // {"record":12,"records":100} for a list (its size guards against resuming over another
  // list), {"record":12,"stream":"<the stream's own>"} or {"record":12,"stream":null} (replay)
  // for a stream. A stream that fails to give its position is recorded with the error, which
  // seek() reports: DocumentReader::position() cannot fail, a resume can.
  std::string position() const override {
    nlohmann::json out = {{"record", index_}};
    if (records_) {
      out["records"] = records_->size();
    } else {
      absl::StatusOr<std::optional<std::string>> position = stream_->position();
      if (!position.ok()) {
        out["stream_error"] = str_cat(absl::StatusCodeToString(position.status().code()), ": ", std::string(position.status().message()));
      } else if (*position) {
        out["stream"] = **position;
      } else {
        out["stream"] = nullptr;
      }
    }
    return out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }

  absl::Status seek(const std::string& text) override {
    const nlohmann::json obj = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    auto record = obj.is_object() ? obj.find("record") : obj.end();
    if (!obj.is_object() || record == obj.end() || !record->is_number_unsigned()) {
      return absl::InvalidArgumentError(str_cat("source \"", source_name(), "\": position ", text,
                                                " is not a record position"));
    }
    const int64_t target = record->get<int64_t>();
    if (records_) {
      auto size = obj.find("records");
      if (size == obj.end() || !size->is_number_unsigned() || size->get<uint64_t>() != records_->size()) {
        return absl::FailedPreconditionError(str_cat("source \"", source_name(), "\": position ", text,
                                                     " was taken over another list of records (this one has ",
                                                     records_->size(), ")"));
      }
      index_ = target;
      ended_ = false;
      return absl::OkStatus();
    }
    if (auto error = obj.find("stream_error"); error != obj.end()) {
      return absl::FailedPreconditionError(str_cat("source \"", source_name(), "\": the stream could not give its position ",
                                                   "when the state was saved: ", error->dump()));
    }
    auto position = obj.find("stream");
    if (position != obj.end() && position->is_string()) {
      absl::Status status = annotate(stream_->seek(position->get<std::string>()), "seek");
      if (!status.ok()) return status;
      index_ = target;
      ended_ = false;
      return absl::OkStatus();
    }
    // No position of its own: replay the pass up to the record, skipping records unread.
    absl::Status status = rewind();
    if (!status.ok()) return status;
    while (index_ < target) {
      absl::StatusOr<std::optional<std::string_view>> skipped = raw_next();
      if (!skipped.ok()) return skipped.status();
      if (!*skipped) {
        return absl::FailedPreconditionError(str_cat("source \"", source_name(), "\": resuming at record ", target,
                                                     " but the stream ended after ", index_,
                                                     " records; a stream without positions must replay the same records"));
      }
    }
    return absl::OkStatus();
  }

 private:
  // The next record, counting it, or nullopt at the end of the pass.
  absl::StatusOr<std::optional<std::string_view>> raw_next() {
    if (records_) {
      if (index_ >= static_cast<int64_t>(records_->size())) return std::optional<std::string_view>();
      return std::optional<std::string_view>((*records_)[index_++]);
    }
    if (ended_) return std::optional<std::string_view>();
    absl::StatusOr<std::optional<std::string_view>> record = stream_->next();
    if (!record.ok()) return annotate(record.status(), "next");
    if (!*record) {
      ended_ = true;
    } else {
      ++index_;
    }
    return record;
  }

  absl::Status annotate(const absl::Status& status, const char* what) const {
    if (status.ok()) return status;
    return absl::Status(status.code(), str_cat("source \"", source_name(), "\": the record stream's ", what,
                                               "() failed: ", std::string(status.message())));
  }

  std::shared_ptr<const std::vector<std::string>> records_;
  std::shared_ptr<RecordStream> stream_;
  SourceFormat format_;
  std::string text_field_;
  int64_t max_bytes_;
  int64_t index_ = 0;   // records taken in this pass
  bool ended_ = false;  // the stream said the pass is over (it is not asked again before rewind)
};

}  // namespace

std::unique_ptr<DocumentReader> make_record_reader(const SourceSpec& spec, const ReaderLimits& limits) {
  return std::make_unique<RecordReader>(spec, limits);
}

}  // namespace temper
