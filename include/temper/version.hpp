// Compile-time and run-time version of temper and the build it came from.
#pragma once

#include <string>

#include "temper/api.hpp"
#include "temper/build_info.hpp"

namespace temper {

// "MAJOR.MINOR.PATCH" of the library actually loaded (may differ from TEMPER_VERSION_STRING,
// the version of the headers compiled against).
TEMPER_API const char* version();

// One line: temper version, libtorch version, whether CUDA kernels are compiled in and usable.
TEMPER_API std::string build_info();

}  // namespace temper
