// errno -> absl::Status with the operation and path in the message. Disk-full and quota
// errors map to RESOURCE_EXHAUSTED (retry after freeing space), missing files to NOT_FOUND,
// permissions to PERMISSION_DENIED; the rest to the closest Abseil code.
#pragma once

#include <cerrno>
#include <cstring>
#include <string_view>

#include <absl/status/status.h>
#include "util/strings.hpp"

namespace temper {

inline absl::Status os_error(int err, std::string_view what) {
  // Abseil maps EFBIG (a file-size limit such as RLIMIT_FSIZE, or the file system's maximum)
  // to OUT_OF_RANGE; for a writer it is the same situation as a full disk.
  if (err == ENOSPC || err == EDQUOT || err == EFBIG) {
    return absl::ResourceExhaustedError(str_cat(what, ": ", std::strerror(err)));
  }
  return absl::Status(absl::ErrnoToStatusCode(err), str_cat(what, ": ", std::strerror(err)));
}

}  // namespace temper
