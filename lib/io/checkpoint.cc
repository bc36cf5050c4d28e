#include "io/checkpoint.hpp"

#include <cstdio>

#include "util/strings.hpp"
#include <nlohmann/json.hpp>

#include "io/atomic_file.hpp"
#include "io/json_file.hpp"
#include "util/status_macros.hpp"

namespace temper {

absl::StatusOr<CheckpointReader> CheckpointReader::open(const std::filesystem::path& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    return absl::NotFoundError(str_cat(dir.string(), ": model directory does not exist"));
  }
  CheckpointReader reader;
  const std::filesystem::path index_path = dir / kSafetensorsIndexFile;
  const std::filesystem::path single_path = dir / kSafetensorsFile;

  if (std::filesystem::exists(index_path, ec)) {
    TEMPER_ASSIGN_OR_RETURN(nlohmann::json index, read_json_file(index_path));
    auto map = index.is_object() ? index.find("weight_map") : index.end();
    if (map == index.end() || !map->is_object()) {
      return absl::InvalidArgumentError(str_cat(index_path.string(), ": missing object \"weight_map\""));
    }
    std::map<std::string, size_t> file_index;
    for (auto it = map->begin(); it != map->end(); ++it) {
      if (!it->is_string()) {
        return absl::InvalidArgumentError(
            str_cat(index_path.string(), ": weight_map entry \"", it.key(), "\" is not a file name"));
      }
      const std::string file = it->get<std::string>();
      // Shards must live in the model directory itself.
      if (file.empty() || file.find('/') != std::string::npos || file == "." || file == "..") {
        return absl::InvalidArgumentError(
            str_cat(index_path.string(), ": weight_map names an invalid shard file \"", file, "\""));
      }
      auto [pos, inserted] = file_index.emplace(file, reader.files_.size());
      if (inserted) {
        TEMPER_ASSIGN_OR_RETURN(SafetensorsFile shard, SafetensorsFile::open(dir / file));
        reader.files_.push_back(std::make_shared<SafetensorsFile>(std::move(shard)));
      }
      if (!reader.files_[pos->second]->contains(it.key())) {
        return absl::InvalidArgumentError(str_cat(index_path.string(), ": tensor \"", it.key(),
                                                       "\" is mapped to ", file, ", which does not contain it"));
      }
      reader.location_.emplace(it.key(), pos->second);
    }
    return reader;
  }
  if (std::filesystem::exists(single_path, ec)) {
    TEMPER_ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::open(single_path));
    reader.files_.push_back(std::make_shared<SafetensorsFile>(std::move(file)));
    for (const auto& e : reader.files_[0]->entries()) reader.location_.emplace(e.name, 0);
    return reader;
  }
  return absl::NotFoundError(str_cat(dir.string(), ": neither ", kSafetensorsFile, " nor ", kSafetensorsIndexFile,
                                          " found (only safetensors checkpoints are supported)"));
}

std::vector<std::string> CheckpointReader::names() const {
  std::vector<std::string> out;
  out.reserve(location_.size());
  for (const auto& [name, _] : location_) out.push_back(name);
  return out;
}

absl::StatusOr<at::Tensor> CheckpointReader::tensor(const std::string& name) const {
  auto it = location_.find(name);
  if (it == location_.end()) return absl::NotFoundError(str_cat("checkpoint has no tensor \"", name, "\""));
  return files_[it->second]->tensor(name);
}

const SafetensorsEntry* CheckpointReader::entry(const std::string& name) const {
  auto it = location_.find(name);
  return it == location_.end() ? nullptr : files_[it->second]->find(name);
}

std::filesystem::path CheckpointReader::file_of(const std::string& name) const {
  auto it = location_.find(name);
  return it == location_.end() ? std::filesystem::path() : files_[it->second]->path();
}

absl::Status write_checkpoint(const std::filesystem::path& dir, const NamedTensors& tensors, uint64_t max_shard_bytes) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError(str_cat("creating ", dir.string(), ": ", ec.message()));

  std::vector<NamedTensors> shards(1);
  uint64_t shard_bytes = 0;
  uint64_t total_bytes = 0;
  for (const auto& named : tensors) {
    const uint64_t bytes = named.second.numel() * named.second.element_size();
    if (max_shard_bytes > 0 && shard_bytes > 0 && shard_bytes + bytes > max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(named);
    shard_bytes += bytes;
    total_bytes += bytes;
  }

  if (shards.size() == 1) {
    TEMPER_RETURN_IF_ERROR(write_safetensors(dir / kSafetensorsFile, shards[0]));
    // A single file supersedes an earlier sharded export in the same directory.
    std::filesystem::remove(dir / kSafetensorsIndexFile, ec);
    return absl::OkStatus();
  }
  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string file = fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, shards.size());
    TEMPER_RETURN_IF_ERROR(write_safetensors(dir / file, shards[i]));
    for (const auto& named : shards[i]) weight_map[named.first] = file;
  }
  nlohmann::ordered_json index = {{"metadata", {{"total_size", total_bytes}}}, {"weight_map", weight_map}};
  TEMPER_RETURN_IF_ERROR(write_file_atomic(dir / kSafetensorsIndexFile, index.dump(2) + "\n"));
  std::filesystem::remove(dir / kSafetensorsFile, ec);
  return absl::OkStatus();
}

}  // namespace temper
