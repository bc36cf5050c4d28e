#include "temper/version.hpp"

#include "util/strings.hpp"
#include <torch/version.h>

namespace temper {

const char* version() { return TEMPER_VERSION_STRING; }

std::string build_info() {
#ifdef TEMPER_WITH_CUDA
  constexpr const char* kCuda = "CUDA kernels: built and used";
#else
  constexpr const char* kCuda = "CUDA kernels: not used (CPU libtorch)";
#endif
  return str_cat("temper ", TEMPER_VERSION_STRING, ", libtorch ", TORCH_VERSION, ", ", kCuda);
}

}  // namespace temper
