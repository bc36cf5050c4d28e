// Launchers of the NF4 kernels (nf4.cu). Plain declarations for host code compiled by g++.
// Element types: float, __nv_bfloat16, __half. Device pointers, contiguous data.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace temper {

// w [n] -> packed [ceil(n/2)] (first value in the high nibble) and absmax [ceil(n/blocksize)].
template <typename T>
cudaError_t launch_nf4_quantize(uint8_t* packed, float* absmax, const T* w, int64_t n, int64_t blocksize,
                                cudaStream_t stream);

// packed [ceil(n/2)], absmax [ceil(n/blocksize)] fp32, levels [16] fp32 -> out [n].
template <typename T>
cudaError_t launch_nf4_dequantize(T* out, const uint8_t* packed, const float* absmax, const float* levels, int64_t n,
                                  int64_t blocksize, cudaStream_t stream);

}  // namespace temper
