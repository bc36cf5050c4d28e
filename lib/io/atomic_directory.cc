#include "io/atomic_directory.hpp"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

#include "io/atomic_file.hpp"
#include "io/directory.hpp"
#include "io/os_error.hpp"
#include "util/status_macros.hpp"
#include "util/strings.hpp"

namespace temper {
namespace {

// A fresh empty directory "<parent>/.<name>.<tag>-XXXXXX".
absl::StatusOr<std::filesystem::path> make_temp_dir(const std::filesystem::path& parent, const std::string& name,
                                                    const char* tag) {
  std::string pattern = (parent / str_cat(".", name, ".", tag, "-XXXXXX")).string();
  if (::mkdtemp(pattern.data()) == nullptr) {
    return os_error(errno, str_cat("creating a temporary directory in ", parent.string()));
  }
  return std::filesystem::path(pattern);
}

// mkdtemp makes 0700 directories; the result gets the usual permissions (umask applies).
void give_usual_permissions(const std::filesystem::path& dir) {
  const mode_t mask = ::umask(0);
  ::umask(mask);
  ::chmod(dir.c_str(), 0777 & ~mask);
}

// Swaps `from` and `to` in one step. False (errno set) where the file system cannot.
bool exchange(const std::filesystem::path& from, const std::filesystem::path& to) {
#ifdef RENAME_EXCHANGE
  return ::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_EXCHANGE) == 0;
#else
  errno = ENOSYS;
  return false;
#endif
}

}  // namespace

absl::Status write_directory_atomic(const std::filesystem::path& dir,
                                    const std::function<absl::Status(const std::filesystem::path&)>& write_files,
                                    const std::function<absl::Status(const std::filesystem::path&)>& may_replace) {
  std::filesystem::path target = dir;
  if (!target.has_filename()) target = target.parent_path();  // "out/" names "out"
  if (target.empty() || target.filename() == "." || target.filename() == "..") {
    return absl::InvalidArgumentError(str_cat("\"", dir.string(), "\" does not name a directory to write"));
  }
  const std::filesystem::path parent = target.has_parent_path() ? target.parent_path() : std::filesystem::path(".");
  // Directories created on the way must be made durable too (their entries in their parents),
  // or the result could vanish with them after a power cut.
  std::vector<std::filesystem::path> created;
  for (std::filesystem::path p = parent; !p.empty() && ::access(p.c_str(), F_OK) != 0; p = p.parent_path()) {
    created.push_back(p);
    if (!p.has_parent_path() || p.parent_path() == p) break;
  }
  std::error_code ec;
  std::filesystem::create_directories(parent, ec);
  // The error code is an errno (system category): an unwritable location is PERMISSION_DENIED,
  // a full disk RESOURCE_EXHAUSTED, as for every other file operation.
  if (ec) return os_error(ec.value(), str_cat("creating ", parent.string()));
  for (const std::filesystem::path& dir_created : created) {
    TEMPER_RETURN_IF_ERROR(
        sync_directory(dir_created.has_parent_path() ? dir_created.parent_path() : std::filesystem::path(".")));
  }

  struct stat st {};
  const bool exists = ::lstat(target.c_str(), &st) == 0;
  if (!exists && errno != ENOENT) return os_error(errno, str_cat("inspecting ", target.string()));
  if (exists) {
    if (!S_ISDIR(st.st_mode)) {
      return absl::FailedPreconditionError(
          str_cat(target.string(), " exists and is not a directory; choose another output path"));
    }
    TEMPER_ASSIGN_OR_RETURN(std::vector<std::string> entries, list_directory(target));
    if (!entries.empty()) TEMPER_RETURN_IF_ERROR(may_replace(target));
  }

  const std::string name = target.filename().string();
  TEMPER_ASSIGN_OR_RETURN(std::filesystem::path tmp, make_temp_dir(parent, name, "tmp"));
  auto fail = [&](absl::Status status) {
    (void)remove_tree(tmp);
    return status;
  };
  absl::Status status = write_files(tmp);
  if (status.ok()) status = sync_directory(tmp);
  if (!status.ok()) return fail(status);
  give_usual_permissions(tmp);

  if (!exists) {
    if (::rename(tmp.c_str(), target.c_str()) != 0) {
      return fail(os_error(errno, str_cat("renaming ", tmp.string(), " to ", target.string())));
    }
    return sync_directory(parent);
  }
  if (exchange(tmp, target)) {
    // `tmp` now names the old directory.
    status = sync_directory(parent);
    (void)remove_tree(tmp);
    return status;
  }
  if (errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP) {
    return fail(os_error(errno, str_cat("replacing ", target.string())));
  }
  // No atomic exchange here: move the old directory aside (onto an empty directory, which
  // rename replaces), put the new one in place, then drop the old one.
  absl::StatusOr<std::filesystem::path> aside = make_temp_dir(parent, name, "old");
  if (!aside.ok()) return fail(aside.status());
  if (::rename(target.c_str(), aside->c_str()) != 0) {
    const absl::Status err = os_error(errno, str_cat("moving aside ", target.string()));
    (void)remove_tree(*aside);
    return fail(err);
  }
  if (::rename(tmp.c_str(), target.c_str()) != 0) {
    const absl::Status err = os_error(errno, str_cat("renaming ", tmp.string(), " to ", target.string()));
    (void)::rename(aside->c_str(), target.c_str());
    return fail(err);
  }
  status = sync_directory(parent);
  (void)remove_tree(*aside);
  return status;
}

}  // namespace temper
