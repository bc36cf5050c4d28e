#include "temper/runtime.hpp"

#include <ATen/detail/CUDAHooksInterface.h>

namespace temper {

int64_t cuda_device_count() {
  // The hooks answer 0 when libtorch has no CUDA; a broken driver makes them throw, which is
  // also "no usable device" here.
  try {
    return static_cast<int64_t>(at::detail::getCUDAHooks().getNumGPUs());
  } catch (...) {
    return 0;
  }
}

}  // namespace temper
