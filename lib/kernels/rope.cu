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
// Speed: where head_dim / 2 is a multiple of the 16-byte pack width and every stride and pointer
// is pack-aligned (the model's projections always are), a thread rotates one pack of pairs:
// 16-byte loads of x[d..], x[d+h..], cos and sin, two 16-byte stores, and the (b, t, h) index
// decoded once per pack in 32-bit arithmetic. The one-pair kernel (2-byte accesses, four 64-bit
// divisions per pair) took 1.6 ms for the 32 forward calls of a 1B step (q and k of 16 layers:
// 84 MB read and written per layer in 100 us, under a fifth of the memory bandwidth;
// docs/performance.md). Both kernels compute each element by the same expression
// (rotate_pair), so they agree bit for bit.
#include "kernels/rope.cuh"
#include "kernels/float_convert.cuh"
#include "kernels/pack.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace temper {
namespace {

constexpr int kThreads = 256;
// Enough blocks to fill any current GPU several times over; larger inputs loop (grid stride).
constexpr int64_t kMaxBlocks = int64_t{1} << 16;

// One pair: (lo, hi) = (x[d], x[d + h]) rotated, each output rounded once to T.
template <typename T, bool kTransposed>
__device__ __forceinline__ void rotate_pair(T* out_lo, T* out_hi, T x_lo, T x_hi, T c_lo, T c_hi, T s_lo, T s_hi) {
  const float lo = to_float(x_lo);
  const float hi = to_float(x_hi);
  float sin_lo = to_float(s_lo);
  float sin_hi = to_float(s_hi);
  if (kTransposed) {
    const float s = sin_lo;
    sin_lo = -sin_hi;
    sin_hi = -s;
  }
  *out_lo = from_float<T>(__fsub_rn(__fmul_rn(lo, to_float(c_lo)), __fmul_rn(hi, sin_lo)));
  *out_hi = from_float<T>(__fadd_rn(__fmul_rn(hi, to_float(c_hi)), __fmul_rn(lo, sin_hi)));
}

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
    rotate_pair<T, kTransposed>(dst + d, dst + d + half, src[d], src[d + half], cos[angle + d], cos[angle + d + half],
                                sin[angle + d], sin[angle + d + half]);
  }
}

// One pack of pairs per thread: pack j of a head covers d = j * kWidth ... of its first half and
// the same lanes of its second half. Index: uint32_t when the pack count fits (always, for the
// shapes a model feeds), so that the decode is four 32-bit divisions per pack.
template <typename T, bool kTransposed, typename Index>
__global__ void rope_pack_kernel(T* __restrict__ out, const T* __restrict__ in, const T* __restrict__ cos,
                                 const T* __restrict__ sin, RopeShape shape, RopeLayout out_layout,
                                 RopeLayout in_layout, int64_t cos_stride_b, int64_t cos_stride_t) {
  constexpr int kWidth = Pack<T>::kWidth;
  const int64_t half = shape.head_dim / 2;
  const Index per_head = static_cast<Index>(half / kWidth);
  const Index heads = static_cast<Index>(shape.heads);
  const Index seq = static_cast<Index>(shape.seq);
  const Index packs = static_cast<Index>(shape.batch) * seq * heads * per_head;
  const Index step = static_cast<Index>(gridDim.x) * blockDim.x;
  for (Index i = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x; i < packs; i += step) {
    const Index j = i % per_head;
    Index rest = i / per_head;
    const Index h = rest % heads;
    rest /= heads;
    const Index t = rest % seq;
    const Index b = rest / seq;
    const int64_t d = static_cast<int64_t>(j) * kWidth;
    const T* src = in + b * in_layout.stride_b + h * in_layout.stride_h + t * in_layout.stride_t + d;
    T* dst = out + b * out_layout.stride_b + h * out_layout.stride_h + t * out_layout.stride_t + d;
    const int64_t angle = b * cos_stride_b + t * cos_stride_t + d;
    const Pack<T> x_lo = *reinterpret_cast<const Pack<T>*>(src);
    const Pack<T> x_hi = *reinterpret_cast<const Pack<T>*>(src + half);
    const Pack<T> c_lo = *reinterpret_cast<const Pack<T>*>(cos + angle);
    const Pack<T> c_hi = *reinterpret_cast<const Pack<T>*>(cos + angle + half);
    const Pack<T> s_lo = *reinterpret_cast<const Pack<T>*>(sin + angle);
    const Pack<T> s_hi = *reinterpret_cast<const Pack<T>*>(sin + angle + half);
    Pack<T> y_lo, y_hi;
#pragma unroll
    for (int k = 0; k < kWidth; ++k) {
      rotate_pair<T, kTransposed>(&y_lo.v[k], &y_hi.v[k], x_lo.v[k], x_hi.v[k], c_lo.v[k], c_hi.v[k], s_lo.v[k],
                                  s_hi.v[k]);
    }
    *reinterpret_cast<Pack<T>*>(dst) = y_lo;
    *reinterpret_cast<Pack<T>*>(dst + half) = y_hi;
  }
}

// Whether every access of the pack kernel is a whole, aligned pack.
template <typename T>
bool packs_apply(const T* out, const T* in, const T* cos, const T* sin, RopeShape shape, RopeLayout out_layout,
                 RopeLayout in_layout, int64_t cos_stride_b, int64_t cos_stride_t) {
  constexpr int64_t w = Pack<T>::kWidth;
  const int64_t strides[] = {out_layout.stride_b, out_layout.stride_h, out_layout.stride_t, in_layout.stride_b,
                             in_layout.stride_h,  in_layout.stride_t,  cos_stride_b,        cos_stride_t};
  bool ok = (shape.head_dim / 2) % w == 0 && pack_aligned(out) && pack_aligned(in) && pack_aligned(cos) &&
            pack_aligned(sin);
  for (const int64_t s : strides) ok = ok && s % w == 0;
  return ok;
}

template <typename T, bool kTransposed>
cudaError_t launch(T* out, const T* in, const T* cos, const T* sin, RopeShape shape, RopeLayout out_layout,
                   RopeLayout in_layout, int64_t cos_stride_b, int64_t cos_stride_t, cudaStream_t stream) {
  if (shape.batch < 0 || shape.heads < 0 || shape.seq < 0 || shape.head_dim <= 0 || shape.head_dim % 2 != 0) {
    return cudaErrorInvalidValue;
  }
  const int64_t pairs = shape.batch * shape.heads * shape.seq * (shape.head_dim / 2);
  if (pairs == 0) return cudaSuccess;
  if (packs_apply(out, in, cos, sin, shape, out_layout, in_layout, cos_stride_b, cos_stride_t)) {
    const int64_t packs = pairs / Pack<T>::kWidth;
    int64_t blocks = (packs + kThreads - 1) / kThreads;
    if (blocks > kMaxBlocks) blocks = kMaxBlocks;
    // 32-bit indices while i + step stays below 2^32.
    if (packs + blocks * kThreads < (int64_t{1} << 32)) {
      rope_pack_kernel<T, kTransposed, uint32_t><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
          out, in, cos, sin, shape, out_layout, in_layout, cos_stride_b, cos_stride_t);
    } else {
      rope_pack_kernel<T, kTransposed, int64_t><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
          out, in, cos, sin, shape, out_layout, in_layout, cos_stride_b, cos_stride_t);
    }
    return cudaGetLastError();
  }
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
