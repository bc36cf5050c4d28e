// Files that appear whole or not at all.
//
// AtomicFileWriter writes to a temporary file beside the destination, and commit() makes it
// durable (fsync) before renaming it over the destination and syncing the directory, so a crash
// or a full disk at any moment leaves either the old file or the new one, never a torn mix.
// A writer destroyed without commit() removes its temporary file.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>

#include <absl/status/status.h>
#include <absl/status/statusor.h>

namespace temper {

class AtomicFileWriter {
 public:
  static absl::StatusOr<AtomicFileWriter> create(const std::filesystem::path& destination);

  AtomicFileWriter(AtomicFileWriter&& other) noexcept;
  AtomicFileWriter& operator=(AtomicFileWriter&& other) noexcept;
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  ~AtomicFileWriter();

  absl::Status append(const void* data, size_t size);
  absl::Status append(std::string_view bytes) { return append(bytes.data(), bytes.size()); }

  // Flushes, fsyncs, renames over the destination and fsyncs the directory.
  absl::Status commit();

  const std::filesystem::path& destination() const { return destination_; }

 private:
  AtomicFileWriter(std::filesystem::path destination, std::filesystem::path temp, int fd)
      : destination_(std::move(destination)), temp_(std::move(temp)), fd_(fd) {}
  absl::Status flush_buffer();
  void abandon();

  std::filesystem::path destination_;
  std::filesystem::path temp_;
  int fd_ = -1;
  std::string buffer_;
};

// Writes `contents` to `path` atomically (see AtomicFileWriter).
absl::Status write_file_atomic(const std::filesystem::path& path, std::string_view contents);

// fsync of a directory, so that a rename inside it survives a power cut.
absl::Status sync_directory(const std::filesystem::path& dir);

}  // namespace temper
