// Fused softmax cross-entropy over rows of logits, forward and gradient in one kernel.
//
// What: per row, logsumexp in fp32 (one pass with an online max: each thread keeps (m, s) with
// s = sum exp(x - m), rescaled when m grows; the block combines the pairs), the row's loss
// lse - x[label], and with write_grad a second pass that overwrites the row with
// exp(x - lse) - [i == label], rounded once to T.
// Why: the chunked head + cross-entropy (lib/ops/linear_cross_entropy.cc) otherwise casts each
// [rows, vocab] chunk of logits to fp32 and runs logsumexp, sub, exp, scatter, mul and a cast
// back as separate passes over it (by count, about nine fp32 reads and writes per logit): 15.6 ms
// of kernel time in a profiled 1B LoRA step of 143 ms on an H200 at vocab 128k
// (docs/performance.md, run E). Here a logit is read twice and written once, in its own dtype,
// and no fp32 copy of the chunk exists.
// Invariants: one thread block per row; a thread reads and then writes only its own elements,
// so the in-place update needs no synchronisation beyond the one after the label's logit is read.
// The reduction order is fixed (per-thread strides, then a warp shuffle tree, then warp 0), so the
// result is deterministic run to run. 16-byte loads where the row is 16-byte aligned (vocab a
// multiple of 16 / sizeof(T)), else one element at a time; both paths do the same maths in the
// same order per element. A NaN logit makes the row's loss and gradient NaN (it propagates
// through the sum), which the Trainer's non-finite check reports. exp is expf, not __expf: the
// gradient must match the ATen reference to fp32 rounding.
// Reference: softmax_cross_entropy_rows_reference_ in lib/ops/linear_cross_entropy.cc; parity
// test tests/cuda/cross_entropy_kernel_test.cc.
#include "kernels/cross_entropy.cuh"
#include "kernels/float_convert.cuh"
#include "kernels/pack.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>

namespace temper {
namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
constexpr int64_t kIgnore = -100;

// Running (max, sum of exp(x - max)); m = -inf with s = 0 is the empty state.
struct MaxSum {
  float m;
  float s;
};

__device__ __forceinline__ void add_value(MaxSum& a, float x) {
  if (x > a.m) {
    a.s = a.s * expf(a.m - x) + 1.0f;  // exp(-inf) = 0 on the first value
    a.m = x;
  } else if (x != -INFINITY) {  // a -inf logit adds 0 (and must not form -inf - -inf)
    a.s += expf(x - a.m);        // also where x is NaN (the comparison fails): s becomes NaN
  }
}

__device__ __forceinline__ MaxSum combine(MaxSum a, MaxSum b) {
  if (b.m > a.m) {
    const MaxSum t = a;
    a = b;
    b = t;
  }
  if (b.m == -INFINITY) return a;  // b empty (or the whole row -inf: s stays as a's)
  return {a.m, a.s + b.s * expf(b.m - a.m)};
}

__device__ __forceinline__ MaxSum block_reduce(MaxSum v, MaxSum* shared) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    const MaxSum other{__shfl_xor_sync(0xffffffffu, v.m, offset), __shfl_xor_sync(0xffffffffu, v.s, offset)};
    v = combine(v, other);
  }
  const int warp = threadIdx.x / 32;
  if (threadIdx.x % 32 == 0) shared[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = threadIdx.x < kWarps ? shared[threadIdx.x] : MaxSum{-INFINITY, 0.0f};
    for (int offset = 16; offset > 0; offset >>= 1) {
      const MaxSum other{__shfl_xor_sync(0xffffffffu, v.m, offset), __shfl_xor_sync(0xffffffffu, v.s, offset)};
      v = combine(v, other);
    }
    if (threadIdx.x == 0) shared[0] = v;
  }
  __syncthreads();
  return shared[0];
}

template <typename T, bool kPacked>
__global__ void __launch_bounds__(kThreads)
    softmax_cross_entropy_kernel(T* __restrict__ logits, float* __restrict__ loss, const int64_t* __restrict__ labels,
                                 int64_t vocab, bool write_grad) {
  __shared__ MaxSum partial[kWarps];
  T* row = logits + static_cast<int64_t>(blockIdx.x) * vocab;
  const int64_t label = labels[blockIdx.x];
  constexpr int kWidth = Pack<T>::kWidth;
  const int64_t packs = kPacked ? vocab / kWidth : 0;

  MaxSum acc{-INFINITY, 0.0f};
  if constexpr (kPacked) {
    const Pack<T>* p = reinterpret_cast<const Pack<T>*>(row);
    for (int64_t i = threadIdx.x; i < packs; i += kThreads) {
      const Pack<T> v = p[i];
#pragma unroll
      for (int k = 0; k < kWidth; ++k) add_value(acc, to_float(v.v[k]));
    }
  } else {
    for (int64_t i = threadIdx.x; i < vocab; i += kThreads) add_value(acc, to_float(row[i]));
  }
  const MaxSum total = block_reduce(acc, partial);
  const float lse = total.m + logf(total.s);
  const bool ignored = label == kIgnore;
  const bool in_range = label >= 0 && label < vocab;
  if (threadIdx.x == 0) {
    loss[blockIdx.x] = ignored ? 0.0f : (in_range ? lse - to_float(row[label]) : NAN);
  }
  if (!write_grad) return;
  __syncthreads();  // the label's logit is read before any thread overwrites it

  if constexpr (kPacked) {
    Pack<T>* p = reinterpret_cast<Pack<T>*>(row);
    for (int64_t i = threadIdx.x; i < packs; i += kThreads) {
      Pack<T> v = p[i];
#pragma unroll
      for (int k = 0; k < kWidth; ++k) {
        const int64_t col = i * kWidth + k;
        const float g = ignored ? 0.0f : expf(to_float(v.v[k]) - lse) - (col == label ? 1.0f : 0.0f);
        v.v[k] = from_float<T>(g);
      }
      p[i] = v;
    }
  } else {
    for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
      const float g = ignored ? 0.0f : expf(to_float(row[i]) - lse) - (i == label ? 1.0f : 0.0f);
      row[i] = from_float<T>(g);
    }
  }
}

}  // namespace

template <typename T>
cudaError_t launch_softmax_cross_entropy_rows(T* logits, float* loss, const int64_t* labels, int64_t rows,
                                              int64_t vocab, bool write_grad, cudaStream_t stream) {
  if (rows <= 0 || vocab <= 0 || rows > 0x7fffffff) return cudaErrorInvalidValue;
  const bool packed = vocab % Pack<T>::kWidth == 0 && pack_aligned(logits);
  const auto grid = static_cast<unsigned>(rows);
  if (packed) {
    softmax_cross_entropy_kernel<T, true><<<grid, kThreads, 0, stream>>>(logits, loss, labels, vocab, write_grad);
  } else {
    softmax_cross_entropy_kernel<T, false><<<grid, kThreads, 0, stream>>>(logits, loss, labels, vocab, write_grad);
  }
  return cudaGetLastError();
}

template cudaError_t launch_softmax_cross_entropy_rows<float>(float*, float*, const int64_t*, int64_t, int64_t, bool,
                                                              cudaStream_t);
template cudaError_t launch_softmax_cross_entropy_rows<__nv_bfloat16>(__nv_bfloat16*, float*, const int64_t*, int64_t,
                                                                      int64_t, bool, cudaStream_t);
template cudaError_t launch_softmax_cross_entropy_rows<__half>(__half*, float*, const int64_t*, int64_t, int64_t, bool,
                                                               cudaStream_t);

}  // namespace temper
