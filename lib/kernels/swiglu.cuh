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

// The same over a [rows, cols] matrix whose rows are strided: element (r, c) of act/dact at
// r * act_ld + c, of gate, up, dgate and dup at r * gu_ld + c. This lets gate and up be the two
// halves of one [rows, 2 * cols] GEMM output (gate = gu, up = gu + cols, gu_ld = 2 * cols) and the
// backward write both halves of its gradient in place, with no copy in either direction.
template <typename T>
cudaError_t launch_swiglu_forward_2d(T* act,         // [rows, act_ld]
                                     const T* gate,  // [rows, gu_ld]
                                     const T* up,    // [rows, gu_ld]
                                     int64_t rows, int64_t cols, int64_t act_ld, int64_t gu_ld, cudaStream_t stream);

template <typename T>
cudaError_t launch_swiglu_backward_2d(T* dgate,       // [rows, gu_ld]
                                      T* dup,         // [rows, gu_ld]
                                      const T* dact,  // [rows, act_ld]
                                      const T* gate,  // [rows, gu_ld]
                                      const T* up,    // [rows, gu_ld]
                                      int64_t rows, int64_t cols, int64_t act_ld, int64_t gu_ld,
                                      cudaStream_t stream);

}  // namespace temper
