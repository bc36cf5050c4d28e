// Host-side glue every CUDA op in lib/ops shares: a launcher's cudaError_t becomes a c10::Error
// (caught at the API boundary by guarded(), util/torch_errors.hpp), and an ATen dtype picks the
// kernel's element type. Only for TEMPER_WITH_CUDA builds.
#pragma once

#ifdef TEMPER_WITH_CUDA
#include <ATen/ATen.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

namespace temper {

inline void check_cuda(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, what, ": ", cudaGetErrorString(err));
}

// Calls `fn` with a value of the kernel's element type for `type` (float, bf16, fp16); `op`
// names the caller in the error for any other dtype.
template <typename Fn>
void dispatch_float_type(at::ScalarType type, const char* op, Fn&& fn) {
  switch (type) {
    case at::kFloat: fn(float{}); break;
    case at::kBFloat16: fn(__nv_bfloat16{}); break;
    case at::kHalf: fn(__half{}); break;
    default: TORCH_CHECK(false, op, ": unsupported dtype ", type);
  }
}

}  // namespace temper
#endif
