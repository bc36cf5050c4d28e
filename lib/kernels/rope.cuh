// Launchers of the fused rotary position embedding kernels (rope.cu). Plain C++ declarations:
// lib/ops includes this header from host code compiled by g++.
//
// Element types: float, __nv_bfloat16, __half; the arithmetic is fp32 and each output is rounded
// once. Pointers are device pointers. The four-dimensional tensors are indexed [b, h, t, d] with
// the given element strides for b, h and t and a contiguous last dim (stride 1), so transposed
// views of a projection output are read and written in place, without a copy. cos/sin are
// indexed [b, t, d] with strides for b and t (a batch stride of 0 broadcasts one row of
// positions over the batch) and a contiguous last dim.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace temper {

// Element strides of one [B, H, T, D] tensor over b, h and t (the last dim has stride 1).
struct RopeLayout {
  int64_t stride_b, stride_h, stride_t;
};

// Sizes shared by every operand of one call; head_dim must be even.
struct RopeShape {
  int64_t batch, heads, seq, head_dim;
};

// With h = head_dim / 2 and d < h:
//   out[d]     = x[d]     * cos[d]     - x[d + h] * sin[d]
//   out[d + h] = x[d + h] * cos[d + h] + x[d]     * sin[d + h]
template <typename T>
cudaError_t launch_rope_forward(T* out,          // [B, H, T, D] laid out by out_layout
                                const T* x,      // [B, H, T, D] laid out by x_layout
                                const T* cos,    // [B or 1, T, D], strides cos_stride_b (0 = broadcast) / cos_stride_t
                                const T* sin,    // [B or 1, T, D], same strides as cos
                                RopeShape shape, RopeLayout out_layout, RopeLayout x_layout, int64_t cos_stride_b,
                                int64_t cos_stride_t, cudaStream_t stream);

// The transpose of the forward's rotation (cos and sin are constants, so this is dx only):
//   dx[d]     = dy[d]     * cos[d]     + dy[d + h] * sin[d + h]
//   dx[d + h] = dy[d + h] * cos[d + h] - dy[d]     * sin[d]
template <typename T>
cudaError_t launch_rope_backward(T* dx,          // [B, H, T, D] laid out by dx_layout
                                 const T* dy,    // [B, H, T, D] laid out by dy_layout
                                 const T* cos,   // [B or 1, T, D] as in the forward
                                 const T* sin,   // [B or 1, T, D] as in the forward
                                 RopeShape shape, RopeLayout dx_layout, RopeLayout dy_layout, int64_t cos_stride_b,
                                 int64_t cos_stride_t, cudaStream_t stream);

}  // namespace temper
