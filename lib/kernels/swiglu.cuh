// Launchers of the fused SwiGLU kernels (swiglu.cu). Plain C++ declarations: lib/ops includes
// this header from host code compiled by g++.
//
// Element types: float, __nv_bfloat16, __half. Pointers are device pointers to n contiguous
// elements (any leading shape flattened); the maths is fp32 and each output is rounded to T once.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace temper {

// act = silu(gate) * up, silu(g) = g * sigmoid(g).
template <typename T>
cudaError_t launch_swiglu_forward(T* act,         // [n]
                                  const T* gate,  // [n]
                                  const T* up,    // [n]
                                  int64_t n, cudaStream_t stream);

// dgate = dact * up * silu'(gate), silu'(g) = s * (1 + g * (1 - s)), s = sigmoid(g);
// dup = dact * silu(gate).
template <typename T>
cudaError_t launch_swiglu_backward(T* dgate,       // [n]
                                   T* dup,         // [n]
                                   const T* dact,  // [n]
                                   const T* gate,  // [n]
                                   const T* up,    // [n]
                                   int64_t n, cudaStream_t stream);

}  // namespace temper
