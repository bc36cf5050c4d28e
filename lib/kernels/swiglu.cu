// Fused SwiGLU (the Llama MLP's activation) forward and backward.
//
// What: act = silu(gate) * up with silu(g) = g * s, s = sigmoid(g); the backward gives
// dgate = dact * up * s * (1 + g * (1 - s)) and dup = dact * silu(g). All in fp32, each output
// rounded to the element type once.
// Why: unfused, silu and the multiply are separate memory-bound passes over [B, T, I] (I, the
// intermediate size, is the widest activation of the block), silu(gate) is materialised and kept
// for the backward, and the backward runs three more passes (two multiplies, silu_backward). Here
// each direction reads its inputs once, and the backward recomputes s from gate instead of reading
// a saved silu(gate).
// Invariants: purely elementwise, one thread per element (or per 16-byte pack), so no thread
// shares an output and the result is deterministic. The 16-byte path is taken only when n is a
// multiple of the pack width and every pointer is 16-byte aligned; anything else (odd widths,
// views offset into a buffer) takes the scalar path, which is the same maths. exp is expf, not
// __expf: the kernel is memory bound, and the accurate exp keeps fp32 within a few ulp of the
// fp64 maths. For |g| past ~88 an expf overflows to inf and the sigmoid it feeds becomes exactly
// 0, which is the limit, so no NaN arises (0 * finite).
// Reference: swiglu_reference / swiglu_backward_reference in lib/ops/swiglu.cc; parity test
// tests/cuda/swiglu_kernel_test.cc.
#include "kernels/swiglu.cuh"
#include "kernels/float_convert.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace temper {
namespace {

constexpr int kThreads = 256;
// Enough blocks to fill any current GPU several times over; larger inputs loop (grid stride).
constexpr int64_t kMaxBlocks = int64_t{1} << 16;
constexpr int kPackBytes = 16;

__device__ __forceinline__ float silu(float g) { return g / (1.0f + expf(-g)); }

// One element of each direction; the scalar and packed kernels share these so both paths agree
// bit for bit.
__device__ __forceinline__ float swiglu_value(float g, float u) { return silu(g) * u; }

__device__ __forceinline__ void swiglu_grads(float da, float g, float u, float* dg, float* du) {
  const float s = 1.0f / (1.0f + expf(-g));
  // 1 - s as sigmoid(-g), not by subtraction: for large g, s rounds to within an ulp of 1 and
  // 1 - s would lose all its bits, while g * (1 - s) still matters next to 1 (g = 15: 4.6e-6).
  const float one_minus_s = 1.0f / (1.0f + expf(g));
  *dg = da * u * (s * (1.0f + g * one_minus_s));
  *du = da * silu(g);
}

// kWidth elements of T in one 16-byte load/store.
template <typename T>
struct alignas(kPackBytes) Pack {
  static constexpr int kWidth = kPackBytes / static_cast<int>(sizeof(T));
  T v[kWidth];
};

// Elements [0, n) one at a time.
template <typename T>
__global__ void swiglu_forward_kernel(T* __restrict__ act, const T* __restrict__ gate, const T* __restrict__ up,
                                      int64_t n) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    act[i] = from_float<T>(swiglu_value(to_float(gate[i]), to_float(up[i])));
  }
}

// `packs` 16-byte packs; the pointers are 16-byte aligned.
template <typename T>
__global__ void swiglu_forward_packed_kernel(Pack<T>* __restrict__ act, const Pack<T>* __restrict__ gate,
                                             const Pack<T>* __restrict__ up, int64_t packs) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < packs; i += step) {
    const Pack<T> g = gate[i];
    const Pack<T> u = up[i];
    Pack<T> a;
#pragma unroll
    for (int k = 0; k < Pack<T>::kWidth; ++k) a.v[k] = from_float<T>(swiglu_value(to_float(g.v[k]), to_float(u.v[k])));
    act[i] = a;
  }
}

template <typename T>
__global__ void swiglu_backward_kernel(T* __restrict__ dgate, T* __restrict__ dup, const T* __restrict__ dact,
                                       const T* __restrict__ gate, const T* __restrict__ up, int64_t n) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    float dg, du;
    swiglu_grads(to_float(dact[i]), to_float(gate[i]), to_float(up[i]), &dg, &du);
    dgate[i] = from_float<T>(dg);
    dup[i] = from_float<T>(du);
  }
}

template <typename T>
__global__ void swiglu_backward_packed_kernel(Pack<T>* __restrict__ dgate, Pack<T>* __restrict__ dup,
                                              const Pack<T>* __restrict__ dact, const Pack<T>* __restrict__ gate,
                                              const Pack<T>* __restrict__ up, int64_t packs) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < packs; i += step) {
    const Pack<T> da = dact[i];
    const Pack<T> g = gate[i];
    const Pack<T> u = up[i];
    Pack<T> dg_out, du_out;
#pragma unroll
    for (int k = 0; k < Pack<T>::kWidth; ++k) {
      float dg, du;
      swiglu_grads(to_float(da.v[k]), to_float(g.v[k]), to_float(u.v[k]), &dg, &du);
      dg_out.v[k] = from_float<T>(dg);
      du_out.v[k] = from_float<T>(du);
    }
    dgate[i] = dg_out;
    dup[i] = du_out;
  }
}

bool aligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % kPackBytes == 0; }

unsigned grid_for(int64_t work) {
  const int64_t blocks = (work + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

}  // namespace

template <typename T>
cudaError_t launch_swiglu_forward(T* act, const T* gate, const T* up, int64_t n, cudaStream_t stream) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  constexpr int width = Pack<T>::kWidth;
  if (n % width == 0 && aligned(act) && aligned(gate) && aligned(up)) {
    const int64_t packs = n / width;
    swiglu_forward_packed_kernel<T><<<grid_for(packs), kThreads, 0, stream>>>(
        reinterpret_cast<Pack<T>*>(act), reinterpret_cast<const Pack<T>*>(gate), reinterpret_cast<const Pack<T>*>(up),
        packs);
  } else {
    swiglu_forward_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(act, gate, up, n);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_swiglu_backward(T* dgate, T* dup, const T* dact, const T* gate, const T* up, int64_t n,
                                   cudaStream_t stream) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  constexpr int width = Pack<T>::kWidth;
  if (n % width == 0 && aligned(dgate) && aligned(dup) && aligned(dact) && aligned(gate) && aligned(up)) {
    const int64_t packs = n / width;
    swiglu_backward_packed_kernel<T><<<grid_for(packs), kThreads, 0, stream>>>(
        reinterpret_cast<Pack<T>*>(dgate), reinterpret_cast<Pack<T>*>(dup), reinterpret_cast<const Pack<T>*>(dact),
        reinterpret_cast<const Pack<T>*>(gate), reinterpret_cast<const Pack<T>*>(up), packs);
  } else {
    swiglu_backward_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(dgate, dup, dact, gate, up, n);
  }
  return cudaGetLastError();
}

#define TEMPER_INSTANTIATE_SWIGLU(T)                                                                           \
  template cudaError_t launch_swiglu_forward<T>(T*, const T*, const T*, int64_t, cudaStream_t);                \
  template cudaError_t launch_swiglu_backward<T>(T*, T*, const T*, const T*, const T*, int64_t, cudaStream_t);

TEMPER_INSTANTIATE_SWIGLU(float)
TEMPER_INSTANTIATE_SWIGLU(__nv_bfloat16)
TEMPER_INSTANTIATE_SWIGLU(__half)

}  // namespace temper
