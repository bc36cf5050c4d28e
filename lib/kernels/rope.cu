// Fused rotary position embedding (RoPE) forward and backward, rotate-half convention.
//
// What: with h = D / 2, each head's pair (x[d], x[d + h]) is rotated by the angle whose cos/sin
// rope_cos_sin tabulated: out[d] = x[d] cos[d] - x[d+h] sin[d], out[d+h] = x[d+h] cos[d+h] +
// x[d] sin[d+h]. The backward applies the transposed rotation to dy. Both in fp32, rounded to the
// element type once.
// Why: the ATen form (cat(-x2, x1), two multiplies, an add) is five memory-bound passes over
// [B, H, T, D] per call and keeps x and the rotated copy alive for the backward; here each
// direction reads its input once and writes its output once, and the backward needs only cos and
// sin, which the model already holds for every layer.
// Invariants: one thread owns one (d, d + h) pair, so threads share no outputs and need no
// synchronisation (out and in must not overlap: they are __restrict__); the flat index walks pairs in
// (b, t, h, d) order, which is memory order for the [B, T, H, D] projection output the model
// passes as a transposed view, so reads and writes coalesce. The backward is the forward with
// (sin[d], sin[d + h]) replaced by (-sin[d + h], -sin[d]); negation is exact, so one kernel serves
// both. Reference: apply_rope_reference in lib/model/rope.cc; parity test
// tests/cuda/rope_kernel_test.cc.
#include "kernels/rope.cuh"
#include "kernels/float_convert.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace temper {
namespace {

constexpr int kThreads = 256;
// Enough blocks to fill any current GPU several times over; larger inputs loop (grid stride).
constexpr int64_t kMaxBlocks = int64_t{1} << 16;

// kTransposed = false: the forward rotation; true: its transpose (the backward).
template <typename T, bool kTransposed>
__global__ void rope_kernel(T* __restrict__ out, const T* __restrict__ in, const T* __restrict__ cos,
                            const T* __restrict__ sin, RopeShape shape, RopeLayout out_layout, RopeLayout in_layout,
                            int64_t cos_stride_b, int64_t cos_stride_t) {
  const int64_t half = shape.head_dim / 2;
  const int64_t pairs = shape.batch * shape.seq * shape.heads * half;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < pairs; i += step) {
    const int64_t d = i % half;
    int64_t rest = i / half;
    const int64_t h = rest % shape.heads;
    rest /= shape.heads;
    const int64_t t = rest % shape.seq;
    const int64_t b = rest / shape.seq;

    const T* src = in + b * in_layout.stride_b + h * in_layout.stride_h + t * in_layout.stride_t;
    T* dst = out + b * out_layout.stride_b + h * out_layout.stride_h + t * out_layout.stride_t;
    const int64_t angle = b * cos_stride_b + t * cos_stride_t;
    const float lo = to_float(src[d]);
    const float hi = to_float(src[d + half]);
    const float cos_lo = to_float(cos[angle + d]);
    const float cos_hi = to_float(cos[angle + d + half]);
    float sin_lo = to_float(sin[angle + d]);
    float sin_hi = to_float(sin[angle + d + half]);
    if (kTransposed) {
      const float s = sin_lo;
      sin_lo = -sin_hi;
      sin_hi = -s;
    }
    dst[d] = from_float<T>(lo * cos_lo - hi * sin_lo);
    dst[d + half] = from_float<T>(hi * cos_hi + lo * sin_hi);
  }
}

template <typename T, bool kTransposed>
cudaError_t launch(T* out, const T* in, const T* cos, const T* sin, RopeShape shape, RopeLayout out_layout,
                   RopeLayout in_layout, int64_t cos_stride_b, int64_t cos_stride_t, cudaStream_t stream) {
  if (shape.batch < 0 || shape.heads < 0 || shape.seq < 0 || shape.head_dim <= 0 || shape.head_dim % 2 != 0) {
    return cudaErrorInvalidValue;
  }
  const int64_t pairs = shape.batch * shape.heads * shape.seq * (shape.head_dim / 2);
  if (pairs == 0) return cudaSuccess;
  int64_t blocks = (pairs + kThreads - 1) / kThreads;
  if (blocks > kMaxBlocks) blocks = kMaxBlocks;
  rope_kernel<T, kTransposed><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      out, in, cos, sin, shape, out_layout, in_layout, cos_stride_b, cos_stride_t);
  return cudaGetLastError();
}

}  // namespace

template <typename T>
cudaError_t launch_rope_forward(T* out, const T* x, const T* cos, const T* sin, RopeShape shape,
                                RopeLayout out_layout, RopeLayout x_layout, int64_t cos_stride_b,
                                int64_t cos_stride_t, cudaStream_t stream) {
  return launch<T, false>(out, x, cos, sin, shape, out_layout, x_layout, cos_stride_b, cos_stride_t, stream);
}

template <typename T>
cudaError_t launch_rope_backward(T* dx, const T* dy, const T* cos, const T* sin, RopeShape shape,
                                 RopeLayout dx_layout, RopeLayout dy_layout, int64_t cos_stride_b,
                                 int64_t cos_stride_t, cudaStream_t stream) {
  return launch<T, true>(dx, dy, cos, sin, shape, dx_layout, dy_layout, cos_stride_b, cos_stride_t, stream);
}

#define TEMPER_INSTANTIATE_ROPE(T)                                                                         \
  template cudaError_t launch_rope_forward<T>(T*, const T*, const T*, const T*, RopeShape, RopeLayout,     \
                                              RopeLayout, int64_t, int64_t, cudaStream_t);                 \
  template cudaError_t launch_rope_backward<T>(T*, const T*, const T*, const T*, RopeShape, RopeLayout,    \
                                               RopeLayout, int64_t, int64_t, cudaStream_t);

TEMPER_INSTANTIATE_ROPE(float)
TEMPER_INSTANTIATE_ROPE(__nv_bfloat16)
TEMPER_INSTANTIATE_ROPE(__half)

}  // namespace temper
