// Fused RMSNorm forward and backward.
//
// What: y = w * T(x * rstd), rstd = rsqrt(mean(x^2) + eps) per row, exactly the operation order of
// transformers' LlamaRMSNorm (statistics in fp32, the normalised value rounded to the input dtype
// before the weight multiplies it), and its gradients.
// Why: unfused, the norm is 6+ memory-bound passes over the activations (square, mean, rsqrt,
// two multiplies, two casts) in the forward and more in the backward; here each direction reads
// its inputs once.
// Invariants: one thread block owns whole rows, so the row reduction needs no atomics; dw is
// accumulated per block in shared memory (each column owned by one thread) and the per-block
// partial rows are summed by a second kernel, so the result does not depend on scheduling
// (deterministic). When the weight is frozen (LoRA), a dx-only kernel runs one block per row
// with no accumulator and no second kernel; its dx is the same per-row code.
// Speed: where hidden is a multiple of the 16-byte pack width and the pointers are aligned (the
// model's activations always are), every thread reads and writes whole packs (kPacked): with
// 2-byte accesses the 1B model's [8192, 2048] rows ran at under a third of the memory bandwidth
// (48 us forward, 82 us backward per call, docs/performance.md). A thread's columns are the same
// in every row, so the dw accumulator stays owned column by column; it is read and written as
// float4 (conflict-free shared memory access for packs of 4 or 8 columns).
// Reference: rms_norm_reference in lib/ops/rms_norm.cc; parity test
// tests/cuda/rms_norm_kernel_test.cc.
#include "kernels/rms_norm.cuh"
#include "kernels/float_convert.cuh"
#include "kernels/pack.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <initializer_list>
#include <type_traits>

namespace temper {
namespace {

constexpr int kThreads = 256;
// Blocks of the backward with dw: each loops over rows / blocks rows. 256 blocks (32 rows each at
// 8k tokens) kept about two blocks per SM and ran at a sixth of the memory bandwidth (167 us per
// call on the 1B model's [8192, 2048], docs/performance.md); 1024 give every SM several blocks (a
// change measured only together with another in run H), and the partial sums they leave
// ([1024, hidden] fp32) are reduced by many threads per column (below).
constexpr int64_t kMaxPartialBlocks = 1024;
// sum_partials_kernel's block: 32 columns (one coalesced warp per partial row) x 32 lanes over the
// partial rows.
constexpr int kSumCols = 32;
constexpr int kSumLanes = 32;

// Sum over the block; every thread gets the result. `scratch` holds one float per warp.
__device__ float block_sum(float value, float* scratch) {
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_xor_sync(0xffffffffu, value, offset);
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (lane == 0) scratch[warp] = value;
  __syncthreads();
  const int warps = (blockDim.x + 31) / 32;
  float total = lane < warps ? scratch[lane] : 0.0f;
  for (int offset = 16; offset > 0; offset >>= 1) total += __shfl_xor_sync(0xffffffffu, total, offset);
  __syncthreads();  // scratch may be reused by the next call
  return total;
}

// kPacked: hidden % Pack<T>::kWidth == 0 and every pointer 16-byte aligned; each thread then
// takes whole packs (kWidth columns) where it would take single columns.
template <typename T, bool kPacked>
struct Cols {
  static constexpr int kWidth = kPacked ? Pack<T>::kWidth : 1;
  using Unit = typename std::conditional<kPacked, Pack<T>, T>::type;
  __device__ static T get(const Unit& u, int k) {
    if constexpr (kPacked) {
      return u.v[k];
    } else {
      return u;
    }
  }
  __device__ static void set(Unit& u, int k, T v) {
    if constexpr (kPacked) {
      u.v[k] = v;
    } else {
      u = v;
    }
  }
};

template <typename T, bool kPacked>
__global__ void rms_norm_forward_kernel(T* __restrict__ y, float* __restrict__ rstd, const T* __restrict__ x,
                                        const T* __restrict__ weight, int64_t hidden, float eps) {
  using C = Cols<T, kPacked>;
  using Unit = typename C::Unit;
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const Unit* xr = reinterpret_cast<const Unit*>(x + row * hidden);
  const Unit* wr = reinterpret_cast<const Unit*>(weight);
  Unit* yr = reinterpret_cast<Unit*>(y + row * hidden);
  const int64_t units = hidden / C::kWidth;

  float sum_sq = 0.0f;
  for (int64_t j = threadIdx.x; j < units; j += blockDim.x) {
    const Unit xv = xr[j];
#pragma unroll
    for (int k = 0; k < C::kWidth; ++k) {
      const float v = to_float(C::get(xv, k));
      sum_sq += v * v;
    }
  }
  const float r = rsqrtf(block_sum(sum_sq, scratch) / static_cast<float>(hidden) + eps);
  if (threadIdx.x == 0) rstd[row] = r;
  for (int64_t j = threadIdx.x; j < units; j += blockDim.x) {
    const Unit xv = xr[j];
    const Unit wv = wr[j];
    Unit out;
#pragma unroll
    for (int k = 0; k < C::kWidth; ++k) {
      const float normed = to_float(from_float<T>(to_float(C::get(xv, k)) * r));
      C::set(out, k, from_float<T>(normed * to_float(C::get(wv, k))));
    }
    yr[j] = out;
  }
}

// One row of the backward, by the whole block: dx for the row and, with dw_acc non-null, its
// dy * n added to the block's dw accumulator. Both backward kernels run exactly this, so dx is
// the same bit for bit whether the weight's gradient is wanted or not.
template <typename T, bool kPacked>
__device__ __forceinline__ void backward_row(T* __restrict__ dx_row, const T* __restrict__ dy_row,
                                             const T* __restrict__ x_row, const T* __restrict__ weight, float r,
                                             int64_t hidden, float* scratch, float* dw_acc) {
  using C = Cols<T, kPacked>;
  using Unit = typename C::Unit;
  const Unit* dyr = reinterpret_cast<const Unit*>(dy_row);
  const Unit* xr = reinterpret_cast<const Unit*>(x_row);
  const Unit* wr = reinterpret_cast<const Unit*>(weight);
  Unit* dxr = reinterpret_cast<Unit*>(dx_row);
  const int64_t units = hidden / C::kWidth;
  float dot = 0.0f;
  for (int64_t j = threadIdx.x; j < units; j += blockDim.x) {
    const Unit g = dyr[j], w = wr[j], xv = xr[j];
#pragma unroll
    for (int k = 0; k < C::kWidth; ++k) {
      dot = __fadd_rn(dot, __fmul_rn(__fmul_rn(to_float(C::get(g, k)), to_float(C::get(w, k))),
                                     __fmul_rn(to_float(C::get(xv, k)), r)));
    }
  }
  const float mean_dot = block_sum(dot, scratch) / static_cast<float>(hidden);
  for (int64_t j = threadIdx.x; j < units; j += blockDim.x) {
    const Unit gv = dyr[j], w = wr[j], xv = xr[j];
    Unit out;
    float gn[C::kWidth];
#pragma unroll
    for (int k = 0; k < C::kWidth; ++k) {
      const float n = __fmul_rn(to_float(C::get(xv, k)), r);
      const float g = to_float(C::get(gv, k));
      // Here and above: rounded step by step (no contraction into FMAs), so that the two kernels
      // that inline this cannot round dx differently.
      C::set(out, k, from_float<T>(__fmul_rn(r, __fsub_rn(__fmul_rn(g, to_float(C::get(w, k))), __fmul_rn(n, mean_dot)))));
      gn[k] = g * n;
    }
    dxr[j] = out;
    if (dw_acc != nullptr) {
      if constexpr (kPacked) {
        // Whole float4s (kWidth is 4 or 8): conflict-free, where scalar accesses kWidth apart
        // would meet kWidth-way bank conflicts.
        float4* acc = reinterpret_cast<float4*>(dw_acc + j * C::kWidth);
#pragma unroll
        for (int q = 0; q < C::kWidth / 4; ++q) {
          float4 a = acc[q];
          a.x += gn[4 * q];
          a.y += gn[4 * q + 1];
          a.z += gn[4 * q + 2];
          a.w += gn[4 * q + 3];
          acc[q] = a;
        }
      } else {
        dw_acc[j] += gn[0];
      }
    }
  }
}

template <typename T, bool kPacked>
__global__ void rms_norm_backward_kernel(T* __restrict__ dx, float* __restrict__ partial, const T* __restrict__ dy,
                                         const T* __restrict__ x, const T* __restrict__ weight,
                                         const float* __restrict__ rstd, int64_t rows, int64_t hidden) {
  extern __shared__ float4 dw_acc4[];  // [hidden] floats, 16-byte aligned for the packed accesses
  float* dw_acc = reinterpret_cast<float*>(dw_acc4);
  __shared__ float scratch[32];
  for (int64_t j = threadIdx.x; j < hidden; j += blockDim.x) dw_acc[j] = 0.0f;
  __syncthreads();  // the packed path's threads own other columns than this zeroing loop's

  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    backward_row<T, kPacked>(dx + row * hidden, dy + row * hidden, x + row * hidden, weight, rstd[row], hidden,
                             scratch, dw_acc);
  }
  __syncthreads();
  for (int64_t j = threadIdx.x; j < hidden; j += blockDim.x) partial[blockIdx.x * hidden + j] = dw_acc[j];
}

// dx only (a frozen weight, as under LoRA): one block per row, like the forward, so every row
// runs in parallel instead of the row-looping blocks that the dw accumulation needs.
template <typename T, bool kPacked>
__global__ void rms_norm_backward_dx_kernel(T* __restrict__ dx, const T* __restrict__ dy, const T* __restrict__ x,
                                            const T* __restrict__ weight, const float* __restrict__ rstd,
                                            int64_t hidden) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  backward_row<T, kPacked>(dx + row * hidden, dy + row * hidden, x + row * hidden, weight, rstd[row], hidden, scratch,
                           static_cast<float*>(nullptr));
}

// Whether the packed kernels apply: whole packs per row, every pointer aligned.
template <typename T>
bool packed_rows(int64_t hidden, std::initializer_list<const void*> pointers) {
  bool ok = hidden % Pack<T>::kWidth == 0;
  for (const void* p : pointers) ok = ok && pack_aligned(p);
  return ok;
}

// dweight[j] = the sum of partial[:, j]. Lane y sums partial rows y, y + 32, ... in order; lane 0
// then adds the 32 lane sums in order: a fixed order, so the result is deterministic.
template <typename T>
__global__ void sum_partials_kernel(T* __restrict__ dweight, const float* __restrict__ partial, int64_t blocks,
                                    int64_t hidden) {
  __shared__ float lane_sums[kSumLanes][kSumCols + 1];  // +1: no bank conflicts down a column
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kSumCols + threadIdx.x;
  float total = 0.0f;
  if (j < hidden) {
    for (int64_t b = threadIdx.y; b < blocks; b += kSumLanes) total += partial[b * hidden + j];
  }
  lane_sums[threadIdx.y][threadIdx.x] = total;
  __syncthreads();
  if (threadIdx.y != 0 || j >= hidden) return;
  float sum = 0.0f;
  for (int lane = 0; lane < kSumLanes; ++lane) sum += lane_sums[lane][threadIdx.x];
  dweight[j] = from_float<T>(sum);
}

}  // namespace

int64_t rms_norm_backward_partial_blocks(int64_t rows) { return rows < kMaxPartialBlocks ? rows : kMaxPartialBlocks; }

template <typename T>
cudaError_t launch_rms_norm_forward(T* y, float* rstd, const T* x, const T* weight, int64_t rows, int64_t hidden,
                                    float eps, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  if (hidden <= 0 || rows > 0x7fffffff) return cudaErrorInvalidValue;
  const auto kernel = packed_rows<T>(hidden, {y, x, weight}) ? rms_norm_forward_kernel<T, true>
                                                               : rms_norm_forward_kernel<T, false>;
  kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(y, rstd, x, weight, hidden, eps);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_rms_norm_backward(T* dx, T* dweight, float* partial, const T* dy, const T* x, const T* weight,
                                     const float* rstd, int64_t rows, int64_t hidden, int64_t partial_blocks,
                                     cudaStream_t stream) {
  if (hidden <= 0 || partial_blocks != rms_norm_backward_partial_blocks(rows)) return cudaErrorInvalidValue;
  if (rows == 0) return cudaMemsetAsync(dweight, 0, hidden * sizeof(T), stream);
  const size_t smem = static_cast<size_t>(hidden) * sizeof(float);
  const auto kernel = packed_rows<T>(hidden, {dx, dy, x, weight}) ? rms_norm_backward_kernel<T, true>
                                                                  : rms_norm_backward_kernel<T, false>;
  // Rows wider than the default 48 KiB of dynamic shared memory ask for more (up to 227 KiB on Hopper).
  if (smem > 48 * 1024) {
    const cudaError_t err =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (err != cudaSuccess) return err;
  }
  kernel<<<static_cast<unsigned>(partial_blocks), kThreads, smem, stream>>>(dx, partial, dy, x, weight, rstd, rows,
                                                                             hidden);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  const unsigned sum_blocks = static_cast<unsigned>((hidden + kSumCols - 1) / kSumCols);
  sum_partials_kernel<T><<<sum_blocks, dim3(kSumCols, kSumLanes), 0, stream>>>(dweight, partial, partial_blocks,
                                                                                hidden);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_rms_norm_backward_dx(T* dx, const T* dy, const T* x, const T* weight, const float* rstd,
                                        int64_t rows, int64_t hidden, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  if (hidden <= 0 || rows > 0x7fffffff) return cudaErrorInvalidValue;
  const auto kernel = packed_rows<T>(hidden, {dx, dy, x, weight}) ? rms_norm_backward_dx_kernel<T, true>
                                                                  : rms_norm_backward_dx_kernel<T, false>;
  kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(dx, dy, x, weight, rstd, hidden);
  return cudaGetLastError();
}

#define TEMPER_INSTANTIATE_RMS_NORM(T)                                                                          \
  template cudaError_t launch_rms_norm_forward<T>(T*, float*, const T*, const T*, int64_t, int64_t, float,      \
                                                  cudaStream_t);                                                \
  template cudaError_t launch_rms_norm_backward<T>(T*, T*, float*, const T*, const T*, const T*, const float*, \
                                                   int64_t, int64_t, int64_t, cudaStream_t);                  \
  template cudaError_t launch_rms_norm_backward_dx<T>(T*, const T*, const T*, const T*, const float*, int64_t,  \
                                                      int64_t, cudaStream_t);

TEMPER_INSTANTIATE_RMS_NORM(float)
TEMPER_INSTANTIATE_RMS_NORM(__nv_bfloat16)
TEMPER_INSTANTIATE_RMS_NORM(__half)

}  // namespace temper
