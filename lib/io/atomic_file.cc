#include "io/atomic_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "util/strings.hpp"

#include "io/os_error.hpp"

namespace temper {
namespace {

// Large enough that the syscall count does not matter next to the disk.
constexpr size_t kBufferBytes = size_t{4} << 20;

absl::Status write_all(int fd, const char* data, size_t size, const std::filesystem::path& path) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return os_error(errno, str_cat("writing ", path.string()));
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<AtomicFileWriter> AtomicFileWriter::create(const std::filesystem::path& destination) {
  const std::filesystem::path dir =
      destination.has_parent_path() ? destination.parent_path() : std::filesystem::path(".");
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    return absl::NotFoundError(
        str_cat("writing ", destination.string(), ": directory ", dir.string(), " does not exist"));
  }
  // mkstemp gives a unique name, so concurrent writers of one destination never share a temp file.
  std::string pattern = (dir / ("." + destination.filename().string() + ".tmp-XXXXXX")).string();
  const int fd = ::mkostemp(pattern.data(), O_CLOEXEC);
  if (fd < 0) return os_error(errno, str_cat("creating a temporary file for ", destination.string()));
  AtomicFileWriter writer(destination, pattern, fd);
  writer.buffer_.reserve(kBufferBytes);
  return writer;
}

AtomicFileWriter::AtomicFileWriter(AtomicFileWriter&& other) noexcept
    : destination_(std::move(other.destination_)),
      temp_(std::move(other.temp_)),
      fd_(std::exchange(other.fd_, -1)),
      buffer_(std::move(other.buffer_)) {}

AtomicFileWriter& AtomicFileWriter::operator=(AtomicFileWriter&& other) noexcept {
  if (this != &other) {
    abandon();
    destination_ = std::move(other.destination_);
    temp_ = std::move(other.temp_);
    fd_ = std::exchange(other.fd_, -1);
    buffer_ = std::move(other.buffer_);
  }
  return *this;
}

AtomicFileWriter::~AtomicFileWriter() { abandon(); }

void AtomicFileWriter::abandon() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
    ::unlink(temp_.c_str());
  }
}

absl::Status AtomicFileWriter::flush_buffer() {
  absl::Status status = write_all(fd_, buffer_.data(), buffer_.size(), destination_);
  buffer_.clear();
  return status;
}

absl::Status AtomicFileWriter::append(const void* data, size_t size) {
  if (fd_ < 0) return absl::FailedPreconditionError("AtomicFileWriter used after commit or failure");
  const char* bytes = static_cast<const char*>(data);
  if (buffer_.size() + size <= kBufferBytes) {
    buffer_.append(bytes, size);
    return absl::OkStatus();
  }
  absl::Status status = flush_buffer();
  if (status.ok()) {
    if (size >= kBufferBytes) {
      status = write_all(fd_, bytes, size, destination_);
    } else {
      buffer_.append(bytes, size);
    }
  }
  if (!status.ok()) abandon();
  return status;
}

absl::Status AtomicFileWriter::commit() {
  if (fd_ < 0) return absl::FailedPreconditionError("AtomicFileWriter committed twice or after failure");
  absl::Status status = flush_buffer();
  if (status.ok() && ::fsync(fd_) != 0) status = os_error(errno, str_cat("syncing ", temp_.string()));
  if (!status.ok()) {
    abandon();
    return status;
  }
  // Files created by mkstemp are 0600; give the result the usual permissions (umask applies).
  const mode_t mask = ::umask(0);
  ::umask(mask);
  ::fchmod(fd_, 0666 & ~mask);
  ::close(std::exchange(fd_, -1));
  if (::rename(temp_.c_str(), destination_.c_str()) != 0) {
    const int err = errno;
    ::unlink(temp_.c_str());
    return os_error(err, str_cat("renaming ", temp_.string(), " to ", destination_.string()));
  }
  return sync_directory(destination_.has_parent_path() ? destination_.parent_path()
                                                       : std::filesystem::path("."));
}

absl::Status write_file_atomic(const std::filesystem::path& path, std::string_view contents) {
  absl::StatusOr<AtomicFileWriter> writer = AtomicFileWriter::create(path);
  if (!writer.ok()) return writer.status();
  absl::Status status = writer->append(contents);
  if (!status.ok()) return status;
  return writer->commit();
}

absl::Status sync_directory(const std::filesystem::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return os_error(errno, str_cat("opening directory ", dir.string()));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return os_error(err, str_cat("syncing directory ", dir.string()));
  return absl::OkStatus();
}

}  // namespace temper
