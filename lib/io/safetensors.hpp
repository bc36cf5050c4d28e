// safetensors files (format in docs/formats.md): an 8-byte little-endian header length N, N
// bytes of JSON describing each tensor (dtype, shape, [begin, end) offsets into the data that
// follows), then the data.
//
// Reading maps the file and validates the whole header before any tensor is handed out: every
// offset in bounds, tensors contiguous and covering the data exactly, sizes equal to
// prod(shape) * itemsize with overflow checks. A tensor is a zero-copy view of the mapping when
// its bytes are aligned for its dtype, a copy otherwise.
//
// Writing is atomic (AtomicFileWriter): the destination holds either the old file or the whole
// new one.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <absl/status/status.h>
#include <absl/status/statusor.h>

namespace temper {

class MappedFile;

// The safetensors spec caps the JSON header at 100 MB; larger is treated as corrupt.
inline constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;

struct SafetensorsEntry {
  std::string name;
  std::string dtype;            // as written in the file: "BF16", "F32", ...
  std::vector<int64_t> shape;
  uint64_t begin = 0;           // byte offsets relative to the start of the data section
  uint64_t end = 0;
};

class SafetensorsFile {
 public:
  static absl::StatusOr<SafetensorsFile> open(const std::filesystem::path& path);
  // The same validation over bytes in memory (copied); `name` stands for the path in messages.
  // The fuzzers reach the parser through it.
  static absl::StatusOr<SafetensorsFile> from_bytes(std::string_view bytes, const std::filesystem::path& name);

  const std::filesystem::path& path() const;
  // Entries sorted by name.
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool contains(std::string_view name) const { return find(name) != nullptr; }
  const SafetensorsEntry* find(std::string_view name) const;

  // The tensor `name` on the CPU, in its stored dtype. NOT_FOUND when absent; UNIMPLEMENTED when
  // this libtorch has no such dtype.
  absl::StatusOr<at::Tensor> tensor(std::string_view name) const;

 private:
  SafetensorsFile() = default;
  static absl::StatusOr<SafetensorsFile> parse(std::shared_ptr<MappedFile> file);

  std::shared_ptr<MappedFile> file_;
  uint64_t data_start_ = 0;  // 8 + header length
  std::vector<SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
};

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// Writes `tensors` (any device; copied to CPU as needed) in the given order. Names must be
// unique and non-empty. `metadata` goes to "__metadata__"; {"format": "pt"} is added when absent
// because transformers refuses files without it.
absl::Status write_safetensors(const std::filesystem::path& path, const NamedTensors& tensors,
                               const std::map<std::string, std::string>& metadata = {});

}  // namespace temper
