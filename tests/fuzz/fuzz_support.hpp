// What the libFuzzer targets share: the contract they check and scratch files.
//
// A target fails (abort, which libFuzzer reports as a crash and saves the input) when temper
// crashes, when a sanitizer reports, and also when a parser answers with a status code its
// contract does not allow: a bad file must get INVALID_ARGUMENT (or UNIMPLEMENTED for a feature
// temper refuses), never INTERNAL, which would mean an exception or a broken invariant slipped
// through.
#pragma once

#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>
#include <string_view>

#include <absl/status/status.h>

#include "io/directory.hpp"

namespace temper::fuzz {

inline std::string_view as_text(const uint8_t* data, size_t size) {
  return std::string_view(reinterpret_cast<const char*>(data), size);
}

[[noreturn]] inline void fail(std::string_view what) {
  std::fprintf(stderr, "fuzz contract violated: %.*s\n", static_cast<int>(what.size()), what.data());
  std::fflush(stderr);
  std::abort();
}

// Aborts unless `status` is OK or has one of `allowed` codes.
inline void expect_code(const absl::Status& status, std::initializer_list<absl::StatusCode> allowed) {
  if (status.ok()) return;
  for (absl::StatusCode code : allowed) {
    if (status.code() == code) return;
  }
  fail(std::string(status.ToString()));
}

inline void expect(bool condition, std::string_view what) {
  if (!condition) fail(what);
}

// A directory of this fuzzing process (under TMPDIR; /dev/shm is a good TMPDIR), removed at exit.
class ScratchDir {
 public:
  ScratchDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "temper-fuzz-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) fail("mkdtemp failed");
    path_ = pattern;
  }
  ~ScratchDir() { (void)remove_tree(path_); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

inline const std::filesystem::path& scratch_dir() {
  static ScratchDir dir;
  return dir.path();
}

inline void write_bytes(const std::filesystem::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) fail("writing a scratch file failed");
}

// Inputs made of two files: a 4-byte little-endian length L, L bytes of the first file, the rest
// the second. Short inputs give an empty second part, so every input is valid.
struct TwoParts {
  std::string_view first;
  std::string_view second;
};

inline TwoParts split_two(const uint8_t* data, size_t size) {
  if (size < 4) return {as_text(data, size), {}};
  const uint32_t len = data[0] | (data[1] << 8) | (data[2] << 16) | (static_cast<uint32_t>(data[3]) << 24);
  const std::string_view rest = as_text(data + 4, size - 4);
  if (len >= rest.size()) return {rest, {}};
  return {rest.substr(0, len), rest.substr(len)};
}

}  // namespace temper::fuzz
