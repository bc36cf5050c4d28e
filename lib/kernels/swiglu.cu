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
// Layout: a [rows, cols] matrix whose rows may be strided (swiglu.cuh), so that gate and up can be
// the two halves of one fused gate/up GEMM output and the backward can write its two gradients
// into one [rows, 2 * cols] buffer; flat tensors are one row.
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
#include "kernels/pack.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace temper {
namespace {

constexpr int kThreads = 256;
// Enough blocks to fill any current GPU several times over; larger inputs loop (grid stride).
constexpr int64_t kMaxBlocks = int64_t{1} << 16;

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

// Element i of a [rows, cols] matrix (row-major) as its row and column; one division per element
// or pack, shared by every operand's offset r * ld + c. The flat launchers pass rows = 1.
struct RowCol {
  int64_t r, c;
  __device__ __forceinline__ RowCol(int64_t i, int64_t cols) : r(i / cols), c(i - (i / cols) * cols) {}
  __device__ __forceinline__ int64_t at(int64_t ld) const { return r * ld + c; }
};

// Elements [0, rows * cols) one at a time.
template <typename T>
__global__ void swiglu_forward_kernel(T* __restrict__ act, const T* __restrict__ gate, const T* __restrict__ up,
                                      int64_t n, int64_t cols, int64_t act_ld, int64_t gu_ld) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    const RowCol rc(i, cols);
    const int64_t j = rc.at(gu_ld);
    act[rc.at(act_ld)] = from_float<T>(swiglu_value(to_float(gate[j]), to_float(up[j])));
  }
}

// `packs` 16-byte packs (cols, act_ld and gu_ld counted in packs); the pointers are 16-byte aligned.
template <typename T>
__global__ void swiglu_forward_packed_kernel(Pack<T>* __restrict__ act, const Pack<T>* __restrict__ gate,
                                             const Pack<T>* __restrict__ up, int64_t packs, int64_t cols,
                                             int64_t act_ld, int64_t gu_ld) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < packs; i += step) {
    const RowCol rc(i, cols);
    const int64_t j = rc.at(gu_ld);
    const Pack<T> g = gate[j];
    const Pack<T> u = up[j];
    Pack<T> a;
#pragma unroll
    for (int k = 0; k < Pack<T>::kWidth; ++k) a.v[k] = from_float<T>(swiglu_value(to_float(g.v[k]), to_float(u.v[k])));
    act[rc.at(act_ld)] = a;
  }
}

template <typename T>
__global__ void swiglu_backward_kernel(T* __restrict__ dgate, T* __restrict__ dup, const T* __restrict__ dact,
                                       const T* __restrict__ gate, const T* __restrict__ up, int64_t n, int64_t cols,
                                       int64_t act_ld, int64_t gu_ld) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    const RowCol rc(i, cols);
    const int64_t j = rc.at(gu_ld);
    float dg, du;
    swiglu_grads(to_float(dact[rc.at(act_ld)]), to_float(gate[j]), to_float(up[j]), &dg, &du);
    dgate[j] = from_float<T>(dg);
    dup[j] = from_float<T>(du);
  }
}

template <typename T>
__global__ void swiglu_backward_packed_kernel(Pack<T>* __restrict__ dgate, Pack<T>* __restrict__ dup,
                                              const Pack<T>* __restrict__ dact, const Pack<T>* __restrict__ gate,
                                              const Pack<T>* __restrict__ up, int64_t packs, int64_t cols,
                                              int64_t act_ld, int64_t gu_ld) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < packs; i += step) {
    const RowCol rc(i, cols);
    const int64_t j = rc.at(gu_ld);
    const Pack<T> da = dact[rc.at(act_ld)];
    const Pack<T> g = gate[j];
    const Pack<T> u = up[j];
    Pack<T> dg_out, du_out;
#pragma unroll
    for (int k = 0; k < Pack<T>::kWidth; ++k) {
      float dg, du;
      swiglu_grads(to_float(da.v[k]), to_float(g.v[k]), to_float(u.v[k]), &dg, &du);
      dg_out.v[k] = from_float<T>(dg);
      du_out.v[k] = from_float<T>(du);
    }
    dgate[j] = dg_out;
    dup[j] = du_out;
  }
}

unsigned grid_for(int64_t work) {
  const int64_t blocks = (work + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

bool valid_layout(int64_t rows, int64_t cols, int64_t act_ld, int64_t gu_ld) {
  return rows >= 0 && cols >= 0 && (rows <= 1 || (act_ld >= cols && gu_ld >= cols));
}

}  // namespace

template <typename T>
cudaError_t launch_swiglu_forward_2d(T* act, const T* gate, const T* up, int64_t rows, int64_t cols, int64_t act_ld,
                                     int64_t gu_ld, cudaStream_t stream) {
  if (!valid_layout(rows, cols, act_ld, gu_ld)) return cudaErrorInvalidValue;
  const int64_t n = rows * cols;
  if (n == 0) return cudaSuccess;
  constexpr int width = Pack<T>::kWidth;
  // Packs never straddle rows: every row start must be pack-aligned, which the widths ensure.
  if (cols % width == 0 && act_ld % width == 0 && gu_ld % width == 0 && pack_aligned(act) && pack_aligned(gate) &&
      pack_aligned(up)) {
    swiglu_forward_packed_kernel<T><<<grid_for(n / width), kThreads, 0, stream>>>(
        reinterpret_cast<Pack<T>*>(act), reinterpret_cast<const Pack<T>*>(gate), reinterpret_cast<const Pack<T>*>(up),
        n / width, cols / width, act_ld / width, gu_ld / width);
  } else {
    swiglu_forward_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(act, gate, up, n, cols, act_ld, gu_ld);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_swiglu_backward_2d(T* dgate, T* dup, const T* dact, const T* gate, const T* up, int64_t rows,
                                      int64_t cols, int64_t act_ld, int64_t gu_ld, cudaStream_t stream) {
  if (!valid_layout(rows, cols, act_ld, gu_ld)) return cudaErrorInvalidValue;
  const int64_t n = rows * cols;
  if (n == 0) return cudaSuccess;
  constexpr int width = Pack<T>::kWidth;
  if (cols % width == 0 && act_ld % width == 0 && gu_ld % width == 0 && pack_aligned(dgate) && pack_aligned(dup) &&
      pack_aligned(dact) && pack_aligned(gate) && pack_aligned(up)) {
    swiglu_backward_packed_kernel<T><<<grid_for(n / width), kThreads, 0, stream>>>(
        reinterpret_cast<Pack<T>*>(dgate), reinterpret_cast<Pack<T>*>(dup), reinterpret_cast<const Pack<T>*>(dact),
        reinterpret_cast<const Pack<T>*>(gate), reinterpret_cast<const Pack<T>*>(up), n / width, cols / width,
        act_ld / width, gu_ld / width);
  } else {
    swiglu_backward_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(dgate, dup, dact, gate, up, n, cols, act_ld,
                                                                     gu_ld);
  }
  return cudaGetLastError();
}

// The flat forms: one row of n elements.
template <typename T>
cudaError_t launch_swiglu_forward(T* act, const T* gate, const T* up, int64_t n, cudaStream_t stream) {
  if (n < 0) return cudaErrorInvalidValue;
  return launch_swiglu_forward_2d(act, gate, up, 1, n, n, n, stream);
}

template <typename T>
cudaError_t launch_swiglu_backward(T* dgate, T* dup, const T* dact, const T* gate, const T* up, int64_t n,
                                   cudaStream_t stream) {
  if (n < 0) return cudaErrorInvalidValue;
  return launch_swiglu_backward_2d(dgate, dup, dact, gate, up, 1, n, n, n, stream);
}

#define TEMPER_INSTANTIATE_SWIGLU(T)                                                                           \
  template cudaError_t launch_swiglu_forward<T>(T*, const T*, const T*, int64_t, cudaStream_t);                \
  template cudaError_t launch_swiglu_backward<T>(T*, T*, const T*, const T*, const T*, int64_t, cudaStream_t);  \
  template cudaError_t launch_swiglu_forward_2d<T>(T*, const T*, const T*, int64_t, int64_t, int64_t, int64_t,   \
                                                   cudaStream_t);                                              \
  template cudaError_t launch_swiglu_backward_2d<T>(T*, T*, const T*, const T*, const T*, int64_t, int64_t,      \
                                                    int64_t, int64_t, cudaStream_t);

TEMPER_INSTANTIATE_SWIGLU(float)
TEMPER_INSTANTIATE_SWIGLU(__nv_bfloat16)
TEMPER_INSTANTIATE_SWIGLU(__half)

}  // namespace temper
