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
  const std::filesystem::path parent = dir.has_parent_path() ? dir.parent_path() : std::filesystem::path(".");
  std::error_code ec;
  std::filesystem::create_directories(parent, ec);
  if (ec) return absl::InternalError(str_cat("creating ", parent.string(), ": ", ec.message()));
  std::string pattern = (parent / ("." + dir.filename().string() + ".tmp-XXXXXX")).string();
  if (::mkdtemp(pattern.data()) == nullptr) {
    return os_error(errno, str_cat("creating a temporary directory for ", dir.string()));
  }
  const std::filesystem::path tmp = pattern;
  auto fail = [&](absl::Status status) {
    (void)remove_tree(tmp);
    return status;
  };

  absl::Status status = write_files(tmp);
  if (!status.ok()) return fail(status);
  absl::StatusOr<std::vector<std::string>> names = list_directory(tmp);
  if (!names.ok()) return fail(names.status());
  nlohmann::ordered_json files = nlohmann::ordered_json::object();
  for (const std::string& name : *names) {
    status = sync_file(tmp / name);
    if (!status.ok()) return fail(status);
    absl::StatusOr<uint64_t> size = stat_size(tmp / name);
    absl::StatusOr<std::string> sum = size.ok() ? file_checksum(tmp / name) : size.status();
    if (!sum.ok()) return fail(sum.status());
    files[name] = {{"bytes", *size}, {"xxh3_64", *sum}};
  }
  const nlohmann::ordered_json manifest = {{"format", "temper-checkpoint"}, {"version", 1}, {"files", files}};
  status = write_file_atomic(tmp / kCheckpointManifest, manifest.dump(2) + "\n");
  if (status.ok()) status = sync_directory(tmp);
  if (!status.ok()) return fail(status);

  // An existing checkpoint of the same name moves aside first and goes only once the new one
  // is in place, so at every moment one complete checkpoint carries the name or its aside copy.
  std::filesystem::path aside;
  if (std::filesystem::exists(dir, ec)) {
    aside = parent / ("." + dir.filename().string() + ".old");
    (void)remove_tree(aside);
    if (::rename(dir.c_str(), aside.c_str()) != 0) return fail(os_error(errno, str_cat("moving aside ", dir.string())));
  }
  if (::rename(tmp.c_str(), dir.c_str()) != 0) {
    const absl::Status err = os_error(errno, str_cat("renaming ", tmp.string(), " to ", dir.string()));
    if (!aside.empty()) (void)::rename(aside.c_str(), dir.c_str());
    return fail(err);
  }
  status = sync_directory(parent);
  if (!aside.empty()) (void)remove_tree(aside);
  return status;
}

absl::Status verify_checkpoint_dir(const std::filesystem::path& dir) {
  const std::filesystem::path manifest_path = dir / kCheckpointManifest;
  std::error_code ec;
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
                                         entry.value("bytes", nlohmann::json()).dump()));
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

absl::Status prune_checkpoints(const std::filesystem::path& parent, const std::string& prefix, int64_t keep) {
  TEMPER_ASSIGN_OR_RETURN(std::vector<std::filesystem::path> all, list_checkpoints(parent, prefix));
  for (int64_t i = 0; i + std::max<int64_t>(keep, 1) < static_cast<int64_t>(all.size()); ++i) {
    TEMPER_RETURN_IF_ERROR(remove_tree(all[i]));
  }
  return absl::OkStatus();
}

}  // namespace temper
