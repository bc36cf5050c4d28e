#include "train/checkpoint_dir.hpp"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cerrno>
#include <cstdio>

#include <nlohmann/json.hpp>
#include <xxhash.h>

#include "io/atomic_directory.hpp"
#include "io/atomic_file.hpp"
#include "io/directory.hpp"
#include "io/json_file.hpp"
#include "io/mapped_file.hpp"
#include "io/os_error.hpp"
#include "util/status_macros.hpp"
#include "util/strings.hpp"

namespace temper {
namespace {

absl::Status sync_file(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return os_error(errno, str_cat("opening ", path.string()));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  return rc == 0 ? absl::OkStatus() : os_error(err, str_cat("syncing ", path.string()));
}

absl::StatusOr<uint64_t> stat_size(const std::filesystem::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return os_error(errno, str_cat("inspecting ", path.string()));
  return static_cast<uint64_t>(st.st_size);
}

}  // namespace

absl::StatusOr<std::string> file_checksum(const std::filesystem::path& path) {
  TEMPER_ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> file, MappedFile::open(path));
  const XXH64_hash_t hash = XXH3_64bits(file->data(), file->size());
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(hash));
  return std::string(hex);
}

absl::Status write_checkpoint_dir(const std::filesystem::path& dir,
                                  const std::function<absl::Status(const std::filesystem::path&)>& write_files) {
  auto write_sealed = [&](const std::filesystem::path& tmp) -> absl::Status {
    TEMPER_RETURN_IF_ERROR(write_files(tmp));
    TEMPER_ASSIGN_OR_RETURN(std::vector<std::string> names, list_directory(tmp));
    nlohmann::ordered_json files = nlohmann::ordered_json::object();
    for (const std::string& name : names) {
      TEMPER_RETURN_IF_ERROR(sync_file(tmp / name));
      TEMPER_ASSIGN_OR_RETURN(const uint64_t size, stat_size(tmp / name));
      TEMPER_ASSIGN_OR_RETURN(std::string sum, file_checksum(tmp / name));
      files[name] = {{"bytes", size}, {"xxh3_64", sum}};
    }
    const nlohmann::ordered_json manifest = {{"format", "temper-checkpoint"}, {"version", 1}, {"files", files}};
    // The manifest goes last: a directory without it is never taken for a checkpoint.
    return write_file_atomic(tmp / kCheckpointManifest, manifest.dump(2) + "\n");
  };
  // Only a checkpoint (one with a manifest) may be replaced by another.
  auto may_replace = [](const std::filesystem::path& existing) -> absl::Status {
    std::error_code ec;
    if (std::filesystem::exists(existing / kCheckpointManifest, ec)) return absl::OkStatus();
    return absl::FailedPreconditionError(
        str_cat(existing.string(), " exists and is not a temper checkpoint; it is left alone"));
  };
  absl::Status status = write_directory_atomic(dir, write_sealed, may_replace);
  if (status.ok()) return status;
  // The failing file is named by its temporary path; say which checkpoint was being written,
  // and that nothing of it is left (write_directory_atomic removed the temporary).
  return absl::Status(status.code(), str_cat("writing checkpoint ", dir.string(), " (not written; ",
                                             "any previous checkpoint there is unchanged): ", std::string(status.message())));
}

absl::Status verify_checkpoint_dir(const std::filesystem::path& dir) {
  const std::filesystem::path manifest_path = dir / kCheckpointManifest;
  std::error_code ec;
  if (!std::filesystem::exists(dir, ec)) {
    return absl::NotFoundError(str_cat(dir.string(), ": no such checkpoint directory"));
  }
  if (!std::filesystem::exists(manifest_path, ec)) {
    return absl::DataLossError(str_cat(dir.string(), ": no ", kCheckpointManifest, " (incomplete or not a temper checkpoint)"));
  }
  TEMPER_ASSIGN_OR_RETURN(nlohmann::json manifest, read_json_file(manifest_path));
  auto files = manifest.is_object() ? manifest.find("files") : manifest.end();
  if (files == manifest.end() || !files->is_object()) {
    return absl::DataLossError(str_cat(manifest_path.string(), ": no \"files\" object"));
  }
  for (auto it = files->begin(); it != files->end(); ++it) {
    const std::filesystem::path path = dir / it.key();
    if (it.key().find('/') != std::string::npos || !it->is_object()) {
      return absl::DataLossError(str_cat(manifest_path.string(), ": invalid entry \"", it.key(), "\""));
    }
    absl::StatusOr<uint64_t> size = stat_size(path);
    if (!size.ok()) return absl::DataLossError(str_cat(dir.string(), ": ", it.key(), " listed in the manifest is missing"));
    const nlohmann::json& entry = *it;
    if (!entry.contains("bytes") || entry["bytes"] != *size) {
      return absl::DataLossError(str_cat(dir.string(), ": ", it.key(), " has ", *size, " bytes, the manifest says ",
                                         json_preview(entry.value("bytes", nlohmann::json()))));
    }
    TEMPER_ASSIGN_OR_RETURN(std::string sum, file_checksum(path));
    if (!entry.contains("xxh3_64") || entry["xxh3_64"] != sum) {
      return absl::DataLossError(str_cat(dir.string(), ": ", it.key(), " does not match its checksum (corrupt file)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::filesystem::path>> list_checkpoints(const std::filesystem::path& parent,
                                                                    const std::string& prefix) {
  std::vector<std::pair<int64_t, std::filesystem::path>> found;
  std::error_code ec;
  if (!std::filesystem::is_directory(parent, ec)) return std::vector<std::filesystem::path>();
  TEMPER_ASSIGN_OR_RETURN(std::vector<std::string> names, list_directory(parent));
  for (const std::string& name : names) {
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string digits = name.substr(prefix.size());
    if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) continue;
    int64_t number = 0;
    const auto [end, err] = std::from_chars(digits.data(), digits.data() + digits.size(), number);
    if (err != std::errc() || end != digits.data() + digits.size()) continue;
    found.emplace_back(number, parent / name);
  }
  std::sort(found.begin(), found.end());
  std::vector<std::filesystem::path> out;
  for (auto& [n, path] : found) out.push_back(path);
  return out;
}

namespace {

// "<digits>" followed by ".tmp-" or ".trash-" and anything: a hidden leftover after ".<prefix>".
bool is_leftover_suffix(const std::string& rest) {
  size_t i = 0;
  while (i < rest.size() && rest[i] >= '0' && rest[i] <= '9') ++i;
  if (i == 0) return false;
  return rest.compare(i, 5, ".tmp-") == 0 || rest.compare(i, 7, ".trash-") == 0;
}

}  // namespace

absl::Status prune_checkpoints(const std::filesystem::path& parent, const std::string& prefix, int64_t keep) {
  TEMPER_ASSIGN_OR_RETURN(std::vector<std::filesystem::path> all, list_checkpoints(parent, prefix));
  for (int64_t i = 0; i + std::max<int64_t>(keep, 1) < static_cast<int64_t>(all.size()); ++i) {
    // Out of sight first (one rename), then deleted: a kill in between leaves a hidden leftover,
    // never a visible checkpoint with some of its files gone.
    std::string pattern = (parent / str_cat(".", all[i].filename().string(), ".trash-XXXXXX")).string();
    if (::mkdtemp(pattern.data()) == nullptr) return os_error(errno, str_cat("creating a directory in ", parent.string()));
    if (::rename(all[i].c_str(), pattern.c_str()) != 0) {
      const absl::Status err = os_error(errno, str_cat("moving aside ", all[i].string()));
      (void)::rmdir(pattern.c_str());
      return err;
    }
    TEMPER_RETURN_IF_ERROR(remove_tree(pattern));
  }
  TEMPER_ASSIGN_OR_RETURN(std::vector<std::string> names, list_directory(parent));
  const std::string hidden = str_cat(".", prefix);
  for (const std::string& name : names) {
    if (name.compare(0, hidden.size(), hidden) == 0 && is_leftover_suffix(name.substr(hidden.size()))) {
      TEMPER_RETURN_IF_ERROR(remove_tree(parent / name));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::filesystem::path> latest_complete_checkpoint(const std::filesystem::path& parent,
                                                                 const std::string& prefix,
                                                                 std::vector<std::string>* skipped) {
  TEMPER_ASSIGN_OR_RETURN(std::vector<std::filesystem::path> all, list_checkpoints(parent, prefix));
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    const absl::Status status = verify_checkpoint_dir(*it);
    if (status.ok()) return *it;
    if (skipped != nullptr) skipped->push_back(std::string(status.message()));
  }
  return absl::NotFoundError(str_cat("no complete checkpoint \"", prefix, "<step>\" in ", parent.string()));
}

}  // namespace temper
