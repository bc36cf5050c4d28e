// A read-only view of a whole file through mmap, shared by every tensor that points into it.
//
// The mapping is private and writable (copy-on-write): tensors made zero-copy over it may be
// written in place (an optimizer step) without touching the file and without a crash; only the
// pages written are copied.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>

#include <absl/status/statusor.h>

namespace temper {

class MappedFile {
 public:
  static absl::StatusOr<std::shared_ptr<MappedFile>> open(const std::filesystem::path& path);

  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  // Null for an empty file.
  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  MappedFile(std::filesystem::path path, uint8_t* data, size_t size)
      : path_(std::move(path)), data_(data), size_(size) {}

  std::filesystem::path path_;
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace temper
