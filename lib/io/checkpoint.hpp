// The weights of a Hugging Face model directory: one `model.safetensors`, or shards
// `model-0000i-of-0000n.safetensors` listed by `model.safetensors.index.json`
// ({"metadata": {...}, "weight_map": {tensor: file}}). Reading keeps each shard mapped and hands
// out zero-copy tensors; writing splits tensors into shards of a maximum size and writes the
// index last, every file atomically.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <absl/status/status.h>
#include <absl/status/statusor.h>

#include "io/safetensors.hpp"

namespace temper {

inline constexpr char kSafetensorsFile[] = "model.safetensors";
inline constexpr char kSafetensorsIndexFile[] = "model.safetensors.index.json";

class CheckpointReader {
 public:
  // `dir` holds model.safetensors or model.safetensors.index.json + its shards.
  static absl::StatusOr<CheckpointReader> open(const std::filesystem::path& dir);

  // Every tensor name, sorted.
  std::vector<std::string> names() const;
  bool contains(const std::string& name) const { return location_.count(name) != 0; }
  // The tensor on the CPU in its stored dtype (zero-copy where aligned).
  absl::StatusOr<at::Tensor> tensor(const std::string& name) const;
  // The stored dtype and shape, without reading data.
  const SafetensorsEntry* entry(const std::string& name) const;
  // The file a tensor lives in, for messages.
  std::filesystem::path file_of(const std::string& name) const;

 private:
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t> location_;  // tensor name -> index into files_
};

// Writes `tensors` into `dir` as model.safetensors, or as shards plus index when they exceed
// `max_shard_bytes` (0 = never shard). The index is written after every shard, so a reader never
// sees an index naming a missing shard; the single-file and sharded forms replace each other.
absl::Status write_checkpoint(const std::filesystem::path& dir, const NamedTensors& tensors,
                              uint64_t max_shard_bytes = 0);

}  // namespace temper
