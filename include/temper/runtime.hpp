// What the process can compute on: devices visible to the libtorch temper was built with.
#pragma once

#include <cstdint>

#include "temper/api.hpp"

namespace temper {

// Number of CUDA devices libtorch can use: 0 with a CPU-only libtorch, without a driver or
// without a GPU (never an error: "no device" is an answer). ModelOptions::device picks one.
TEMPER_API int64_t cuda_device_count();

}  // namespace temper
