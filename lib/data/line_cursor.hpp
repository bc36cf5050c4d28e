// Lines of a sequence of files, read through one fixed buffer, with the byte offset and line
// number of the next unread line always known, so a reader can report its position and return
// to it (seek) without rereading anything before it.
//
// Lines end at '\n'; a '\r' before it (CRLF files) and a UTF-8 byte-order mark at the start of
// a file are dropped. A last line without '\n' is still a line. Memory is the buffer plus the
// longest line kept (at most max_line_bytes): a longer line is consumed without being kept and
// reported as kTooLong.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <absl/status/status.h>
#include <absl/status/statusor.h>

namespace temper {

class LineCursor {
 public:
  struct Line {
    enum class Kind {
      kText,       // `text` holds the line (valid until the next call)
      kTooLong,    // the line exceeded max_line_bytes and was skipped
      kEndOfFile,  // file `file` ended; the next call reads the next file
      kEndOfPass,  // every file has been read
    };
    Kind kind = Kind::kEndOfPass;
    std::string_view text;
    size_t file = 0;      // index into the paths
    int64_t number = 0;   // 1-based line number within the file
  };

  LineCursor(std::vector<std::filesystem::path> paths, size_t buffer_bytes, int64_t max_line_bytes);
  ~LineCursor();
  LineCursor(const LineCursor&) = delete;
  LineCursor& operator=(const LineCursor&) = delete;

  absl::StatusOr<Line> next();

  // Back to the start of the first file.
  void rewind();
  // Continues at `offset` (the start of a line, numbered `line`) of file `file`; file ==
  // paths().size() means the end of the pass. Fails when the file is shorter than offset or
  // offset is not at the start of a line.
  absl::Status seek(size_t file, int64_t offset, int64_t line);

  // The next unread line: its file, byte offset and 1-based number.
  size_t file() const { return file_; }
  int64_t offset() const { return offset_; }
  int64_t line() const { return line_; }
  const std::vector<std::filesystem::path>& paths() const { return paths_; }

 private:
  absl::Status open_current();
  void close_current();
  // Reads more of the current file into the buffer; false at end of file.
  absl::StatusOr<bool> refill();
  // The line `text` numbered `number`, or kTooLong when it exceeds max_line_bytes.
  Line finish(std::string_view text, int64_t number) const;

  std::vector<std::filesystem::path> paths_;
  int64_t max_line_bytes_;
  std::vector<char> buffer_;
  size_t begin_ = 0;  // unread bytes are buffer_[begin_, end_)
  size_t end_ = 0;
  int fd_ = -1;
  size_t file_ = 0;
  int64_t offset_ = 0;  // file offset of buffer_[begin_]
  int64_t line_ = 1;
  std::string long_line_;  // a line that spans buffer refills
};

}  // namespace temper
