#include "io/directory.hpp"

#include <dirent.h>
#include <ftw.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>

#include "io/os_error.hpp"
#include "util/strings.hpp"

namespace temper {
namespace {

int remove_entry(const char* path, const struct stat*, int, struct FTW*) { return ::remove(path) == 0 ? 0 : errno; }

}  // namespace

absl::StatusOr<std::vector<std::string>> list_directory(const std::filesystem::path& dir) {
  DIR* handle = ::opendir(dir.c_str());
  if (handle == nullptr) return os_error(errno, str_cat("listing ", dir.string()));
  std::vector<std::string> names;
  errno = 0;
  while (const dirent* entry = ::readdir(handle)) {
    const std::string name = entry->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  const int err = errno;
  ::closedir(handle);
  if (err != 0) return os_error(err, str_cat("listing ", dir.string()));
  std::sort(names.begin(), names.end());
  return names;
}

absl::Status remove_tree(const std::filesystem::path& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    return errno == ENOENT ? absl::OkStatus() : os_error(errno, str_cat("inspecting ", path.string()));
  }
  // Depth-first (FTW_DEPTH) so directories are empty when removed; FTW_PHYS never follows links.
  const int rc = ::nftw(path.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS);
  if (rc != 0) return os_error(rc > 0 ? rc : errno, str_cat("removing ", path.string()));
  return absl::OkStatus();
}

}  // namespace temper
