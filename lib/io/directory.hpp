// Directory listing and recursive removal through POSIX calls.
//
// Why not std::filesystem::directory_iterator / remove_all: PyTorch's libtorch (2.x wheels, built
// with an older GCC toolset) exports its own copies of libstdc++'s directory-iterator internals,
// and a program compiled with GCC 13 that calls remove_all() beside it jumps into the older
// layout and crashes (seen on the GPU machine). Path arithmetic and stat-like calls are fine.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <absl/status/status.h>
#include <absl/status/statusor.h>

namespace temper {

// Names of the entries of `dir` (not "." or ".."), sorted.
absl::StatusOr<std::vector<std::string>> list_directory(const std::filesystem::path& dir);

// Removes `path` and, for a directory, everything below it (symbolic links are removed, never
// followed). A missing path is OK.
absl::Status remove_tree(const std::filesystem::path& path);

}  // namespace temper
