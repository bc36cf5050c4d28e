// Plain text sources: one document per line, per blank-line-separated block, or per file.
// Text is passed on as read, invalid UTF-8 included (the filters decide about it); lines and
// blocks of white space only are separators, not documents.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "data/line_document_reader.hpp"
#include "data/reader_support.hpp"
#include "io/os_error.hpp"
#include "util/strings.hpp"

namespace temper {
namespace {

class TextLinesReader final : public LineDocumentReader {
 public:
  using LineDocumentReader::LineDocumentReader;

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
          if (is_white_space_only(line->text)) continue;
          Document doc;
          doc.text = std::string(line->text);
          doc.origin = origin(*line);
          ++stats_.documents;
          return std::optional<Document>(std::move(doc));
      }
    }
  }
};

// A block is the run of non-blank lines up to a blank line or the end of its file, joined with
// '\n'. next() always consumes the blank line that ends a block, so the cursor's position is
// the reader's position.
class TextBlocksReader final : public LineDocumentReader {
 public:
  using LineDocumentReader::LineDocumentReader;

  absl::StatusOr<std::optional<Document>> next() override {
    for (;;) {
      Document doc;
      int64_t first_line = 0;
      size_t file = 0;
      bool too_long = false;
      bool ended_pass = false;
      for (;;) {
        absl::StatusOr<LineCursor::Line> line = cursor_.next();
        if (!line.ok()) return line.status();
        const LineCursor::Line::Kind kind = line->kind;
        if (kind == LineCursor::Line::Kind::kEndOfPass) {
          ended_pass = true;
          break;
        }
        if (kind == LineCursor::Line::Kind::kEndOfFile) {
          if (first_line > 0) break;
          continue;
        }
        if (kind == LineCursor::Line::Kind::kText && is_white_space_only(line->text)) {
          if (first_line > 0) break;
          continue;
        }
        if (first_line == 0) {
          first_line = line->number;
          file = line->file;
        }
        if (kind == LineCursor::Line::Kind::kTooLong ||
            static_cast<int64_t>(doc.text.size() + (doc.text.empty() ? 0 : 1) + line->text.size()) > max_document_bytes_) {
          // The rest of the block is read and dropped, keeping memory bounded.
          too_long = true;
          doc.text.clear();
          continue;
        }
        if (too_long) continue;
        if (!doc.text.empty()) doc.text.push_back('\n');
        doc.text.append(line->text);
      }
      if (first_line == 0) {
        if (ended_pass) return std::optional<Document>();
        continue;
      }
      const std::string where = line_origin(cursor_.paths()[file], first_line);
      if (too_long) {
        absl::Status status = malformed(where, str_cat("block longer than ", max_document_bytes_, " bytes"));
        if (!status.ok()) return status;
        continue;
      }
      doc.origin = where;
      ++stats_.documents;
      return std::optional<Document>(std::move(doc));
    }
  }
};

// One document per file, read whole (up to the document limit) when its turn comes.
class TextFilesReader final : public DocumentReader {
 public:
  TextFilesReader(const SourceSpec& spec, const ReaderLimits& limits)
      : DocumentReader(spec.name, spec.on_malformed), paths_(spec.paths), max_bytes_(limits.max_document_bytes) {}

  absl::StatusOr<std::optional<Document>> next() override {
    while (file_ < paths_.size()) {
      const std::filesystem::path& path = paths_[file_];
      bool over_limit = false;
      absl::StatusOr<std::string> text = read_capped(path, &over_limit);
      if (!text.ok()) return text.status();
      ++file_;
      if (over_limit) {
        absl::Status status = malformed(path.string(), str_cat("file longer than ", max_bytes_, " bytes (one document)"));
        if (!status.ok()) return status;
        continue;
      }
      if (is_white_space_only(*text)) continue;
      Document doc;
      doc.text = std::move(*text);
      doc.origin = path.string();
      ++stats_.documents;
      return std::optional<Document>(std::move(doc));
    }
    return std::optional<Document>();
  }

  absl::Status rewind() override {
    file_ = 0;
    return absl::OkStatus();
  }

  std::string position() const override {
    ReaderPosition position;
    position.file = file_;
    return format_position(position, ReaderPosition::Kind::kFile, paths_);
  }

  absl::Status seek(const std::string& text) override {
    absl::StatusOr<ReaderPosition> position = parse_position(text, ReaderPosition::Kind::kFile, paths_, source_name());
    if (!position.ok()) return position.status();
    file_ = position->file;
    return absl::OkStatus();
  }

 private:
  // The file's contents without a leading byte-order mark; `*over_limit` set (and nothing kept)
  // when it is larger than one document may be.
  absl::StatusOr<std::string> read_capped(const std::filesystem::path& path, bool* over_limit) const {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return os_error(errno, str_cat("opening ", path.string()));
    std::string contents;
    struct stat st {};
    if (::fstat(fd, &st) == 0 && st.st_size > max_bytes_) {
      ::close(fd);
      *over_limit = true;
      return contents;
    }
    char chunk[1 << 16];
    for (;;) {
      const ssize_t n = ::read(fd, chunk, sizeof chunk);
      if (n < 0) {
        if (errno == EINTR) continue;
        const int err = errno;
        ::close(fd);
        return os_error(err, str_cat("reading ", path.string()));
      }
      if (n == 0) break;
      contents.append(chunk, static_cast<size_t>(n));
      if (static_cast<int64_t>(contents.size()) > max_bytes_) {  // the file grew since fstat
        ::close(fd);
        *over_limit = true;
        return std::string();
      }
    }
    ::close(fd);
    if (contents.compare(0, 3, "\xEF\xBB\xBF") == 0) contents.erase(0, 3);
    return contents;
  }

  std::vector<std::filesystem::path> paths_;
  int64_t max_bytes_;
  size_t file_ = 0;
};

}  // namespace

std::unique_ptr<DocumentReader> make_text_reader(const SourceSpec& spec, const ReaderLimits& limits) {
  switch (spec.format) {
    case SourceFormat::kTextBlocks:
      return std::make_unique<TextBlocksReader>(spec, limits);
    case SourceFormat::kTextFiles:
      return std::make_unique<TextFilesReader>(spec, limits);
    default:
      return std::make_unique<TextLinesReader>(spec, limits);
  }
}

}  // namespace temper
