// Errors in temper's C++ API are absl::Status values; nothing in the public API throws.
// A status message says what was being done, on which file/tensor/line, and what would fix it.
#pragma once

#include <absl/status/status.h>
#include <absl/status/statusor.h>

namespace temper {

using absl::Status;
using absl::StatusOr;

}  // namespace temper
