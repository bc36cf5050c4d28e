#include "io/mapped_file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "util/strings.hpp"

#include "io/os_error.hpp"

namespace temper {

absl::StatusOr<std::shared_ptr<MappedFile>> MappedFile::open(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return os_error(errno, str_cat("opening ", path.string()));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return os_error(err, str_cat("reading the size of ", path.string()));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(str_cat(path.string(), ": not a regular file"));
  }
  const size_t size = static_cast<size_t>(st.st_size);
  void* data = nullptr;
  if (size > 0) {
    data = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (data == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return os_error(err, str_cat("mapping ", path.string()));
    }
  }
  ::close(fd);  // the mapping keeps the file alive
  return std::shared_ptr<MappedFile>(new MappedFile(path, static_cast<uint8_t*>(data), size, /*mapped=*/true));
}

std::shared_ptr<MappedFile> MappedFile::from_bytes(std::filesystem::path name, std::string_view bytes) {
  uint8_t* data = nullptr;
  if (!bytes.empty()) {
    data = new uint8_t[bytes.size()];
    std::memcpy(data, bytes.data(), bytes.size());
  }
  return std::shared_ptr<MappedFile>(new MappedFile(std::move(name), data, bytes.size(), /*mapped=*/false));
}

MappedFile::~MappedFile() {
  if (data_ == nullptr) return;
  if (mapped_) {
    ::munmap(data_, size_);
  } else {
    delete[] data_;
  }
}

}  // namespace temper
