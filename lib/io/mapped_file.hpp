// A read-only view of a whole file through mmap, shared by every tensor that points into it.
//
// The mapping is private and writable (copy-on-write): tensors made zero-copy over it may be
// written in place (an optimizer step) without touching the file and without a crash; only the
// pages written are copied.
//
// from_bytes() holds a heap copy of some bytes behind the same interface, so that parsers built
// on MappedFile (safetensors) run their production code on in-memory input: the fuzzers use it,
// and a heap buffer of the exact size lets AddressSanitizer see a read even one byte too far,
// which a page-granular mapping would hide.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string_view>

#include <absl/status/statusor.h>

namespace temper {

class MappedFile {
 public:
  static absl::StatusOr<std::shared_ptr<MappedFile>> open(const std::filesystem::path& path);
  // A copy of `bytes`; `name` stands for the path in messages.
  static std::shared_ptr<MappedFile> from_bytes(std::filesystem::path name, std::string_view bytes);

  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  // Null for an empty file.
  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  MappedFile(std::filesystem::path path, uint8_t* data, size_t size, bool mapped)
      : path_(std::move(path)), data_(data), size_(size), mapped_(mapped) {}

  std::filesystem::path path_;
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = true;  // false: data_ is a new[] buffer of from_bytes()
};

}  // namespace temper
