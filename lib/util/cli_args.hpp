// The tiny command-line reading temper's own programs share (benchmarks, test workers): named
// options "--name value" and flags "--name", anywhere on the line. Not part of the library API.
#pragma once

#include <cstring>
#include <string>

namespace temper::cli {

// The value after `name`, or `fallback` when `name` is absent (or last, without a value).
inline std::string arg(int argc, char** argv, const char* name, const char* fallback) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], name) == 0) return argv[i + 1];
  }
  return fallback;
}

inline bool flag(int argc, char** argv, const char* name) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], name) == 0) return true;
  }
  return false;
}

}  // namespace temper::cli
