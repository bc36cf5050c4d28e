#include "io/read_file.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "io/os_error.hpp"
#include "util/strings.hpp"

namespace temper {

absl::StatusOr<std::string> read_file(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return os_error(errno, str_cat("opening ", path.string()));
  std::string contents;
  char chunk[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, chunk, sizeof chunk);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      return os_error(err, str_cat("reading ", path.string()));
    }
    if (n == 0) break;
    contents.append(chunk, static_cast<size_t>(n));
  }
  ::close(fd);
  return contents;
}

}  // namespace temper
