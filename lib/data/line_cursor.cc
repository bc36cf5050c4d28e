#include "data/line_cursor.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "io/os_error.hpp"
#include "util/status_macros.hpp"
#include "util/strings.hpp"

namespace temper {
namespace {

constexpr char kByteOrderMark[] = "\xEF\xBB\xBF";
constexpr size_t kByteOrderMarkSize = 3;

std::string_view without_carriage_return(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  return line;
}

}  // namespace

LineCursor::LineCursor(std::vector<std::filesystem::path> paths, size_t buffer_bytes, int64_t max_line_bytes)
    : paths_(std::move(paths)),
      max_line_bytes_(max_line_bytes),
      // A few bytes at least, so that a byte-order mark always fits in the first read.
      buffer_(std::max<size_t>(buffer_bytes, 16)) {}

LineCursor::~LineCursor() { close_current(); }

void LineCursor::close_current() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  begin_ = end_ = 0;
}

absl::Status LineCursor::open_current() {
  const std::filesystem::path& path = paths_[file_];
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) return os_error(errno, str_cat("opening ", path.string()));
  // Sequential reads: the kernel may read ahead generously and drop pages behind us.
  (void)::posix_fadvise(fd_, 0, 0, POSIX_FADV_SEQUENTIAL);
  if (offset_ > 0 && ::lseek(fd_, static_cast<off_t>(offset_), SEEK_SET) < 0) {
    const int err = errno;
    close_current();
    return os_error(err, str_cat("seeking to byte ", offset_, " of ", path.string()));
  }
  if (offset_ == 0) {
    TEMPER_ASSIGN_OR_RETURN(const bool any, refill());
    if (any && end_ - begin_ >= kByteOrderMarkSize &&
        std::memcmp(buffer_.data() + begin_, kByteOrderMark, kByteOrderMarkSize) == 0) {
      begin_ += kByteOrderMarkSize;
      offset_ += kByteOrderMarkSize;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<bool> LineCursor::refill() {
  begin_ = end_ = 0;
  for (;;) {
    const ssize_t n = ::read(fd_, buffer_.data(), buffer_.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return os_error(errno, str_cat("reading ", paths_[file_].string(), " at byte ", offset_));
    }
    end_ = static_cast<size_t>(n);
    return n > 0;
  }
}

absl::StatusOr<LineCursor::Line> LineCursor::next() {
  for (;;) {
    if (file_ >= paths_.size()) return Line{Line::Kind::kEndOfPass, {}, file_, 0};
    if (fd_ < 0) TEMPER_RETURN_IF_ERROR(open_current());

    const int64_t number = line_;
    long_line_.clear();
    bool too_long = false;
    bool any = false;
    for (;;) {
      if (begin_ == end_) {
        TEMPER_ASSIGN_OR_RETURN(const bool more, refill());
        if (!more) {
          if (!any) {
            close_current();
            const size_t ended = file_;
            ++file_;
            offset_ = 0;
            line_ = 1;
            return Line{Line::Kind::kEndOfFile, {}, ended, 0};
          }
          ++line_;  // a last line without '\n'
          if (too_long) return Line{Line::Kind::kTooLong, {}, file_, number};
          return finish(without_carriage_return(long_line_), number);
        }
      }
      any = true;
      const char* start = buffer_.data() + begin_;
      const char* newline = static_cast<const char*>(std::memchr(start, '\n', end_ - begin_));
      const size_t chunk = newline != nullptr ? static_cast<size_t>(newline - start) : end_ - begin_;

      // The common case: the whole line is in the buffer and is returned without a copy.
      if (newline != nullptr && long_line_.empty() && !too_long) {
        const size_t consumed = chunk + 1;
        begin_ += consumed;
        offset_ += static_cast<int64_t>(consumed);
        ++line_;
        return finish(without_carriage_return(std::string_view(start, chunk)), number);
      }

      if (!too_long) {
        // One byte of slack for the '\r' of a CRLF line, which is not part of the line.
        if (static_cast<int64_t>(long_line_.size() + chunk) > max_line_bytes_ + 1) {
          too_long = true;
          long_line_.clear();
        } else {
          long_line_.append(start, chunk);
        }
      }
      begin_ += chunk;
      offset_ += static_cast<int64_t>(chunk);
      if (newline != nullptr) {
        ++begin_;
        ++offset_;
        ++line_;
        if (too_long) return Line{Line::Kind::kTooLong, {}, file_, number};
        return finish(without_carriage_return(long_line_), number);
      }
    }
  }
}

LineCursor::Line LineCursor::finish(std::string_view text, int64_t number) const {
  if (static_cast<int64_t>(text.size()) > max_line_bytes_) return Line{Line::Kind::kTooLong, {}, file_, number};
  return Line{Line::Kind::kText, text, file_, number};
}

void LineCursor::rewind() {
  close_current();
  file_ = 0;
  offset_ = 0;
  line_ = 1;
}

absl::Status LineCursor::seek(size_t file, int64_t offset, int64_t line) {
  close_current();
  if (file > paths_.size()) {
    return absl::InvalidArgumentError(str_cat("file index ", file, " is beyond the ", paths_.size(), " files"));
  }
  if (offset < 0 || line < 1) {
    return absl::InvalidArgumentError(str_cat("byte offset ", offset, " and line ", line, " must be >= 0 and >= 1"));
  }
  if (file == paths_.size()) {
    file_ = file;
    offset_ = 0;
    line_ = 1;
    return absl::OkStatus();
  }
  const std::filesystem::path& path = paths_[file];
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return os_error(errno, str_cat("opening ", path.string()));
  struct stat st {};
  absl::Status status;
  if (::fstat(fd, &st) != 0) {
    status = os_error(errno, str_cat("reading the size of ", path.string()));
  } else if (offset > st.st_size) {
    status = absl::InvalidArgumentError(
        str_cat(path.string(), ": byte offset ", offset, " is beyond the end of the file (", st.st_size, " bytes)"));
  } else if (offset > 0 && offset < st.st_size) {
    // A position is always taken at the start of a line: after a '\n', or after the byte-order
    // mark that opens the file (or at the end of the file).
    char head[kByteOrderMarkSize] = {};
    char before = 0;
    const bool after_newline = ::pread(fd, &before, 1, offset - 1) == 1 && before == '\n';
    const bool after_bom = offset == static_cast<int64_t>(kByteOrderMarkSize) &&
                           ::pread(fd, head, kByteOrderMarkSize, 0) == static_cast<ssize_t>(kByteOrderMarkSize) &&
                           std::memcmp(head, kByteOrderMark, kByteOrderMarkSize) == 0;
    if (!after_newline && !after_bom) {
      status = absl::InvalidArgumentError(
          str_cat(path.string(), ": byte offset ", offset, " is not at the start of a line (has the file changed?)"));
    }
  }
  ::close(fd);
  if (!status.ok()) return status;
  file_ = file;
  offset_ = offset;
  line_ = line;
  return absl::OkStatus();
}

}  // namespace temper
