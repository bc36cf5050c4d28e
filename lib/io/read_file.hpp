// Whole-file reads of small files (configs, JSON, text), reported as statuses.
#pragma once

#include <filesystem>
#include <string>

#include <absl/status/statusor.h>

namespace temper {

absl::StatusOr<std::string> read_file(const std::filesystem::path& path);

}  // namespace temper
