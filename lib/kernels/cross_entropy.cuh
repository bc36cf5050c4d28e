// Launcher of the fused softmax cross-entropy over rows of logits (cross_entropy.cu). Plain C++
// declarations: lib/ops includes this header from host code compiled by g++.
//
// Element types: float, __nv_bfloat16, __half. Device pointers, contiguous rows.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace temper {

// Per row r of `logits` [rows, vocab] with label y = labels[r] (int64):
//   loss[r] = logsumexp(logits[r]) - logits[r, y]      (fp32; 0 where y == -100, NaN where y is
//                                                        outside [0, vocab) and not -100)
// and, with write_grad, logits[r] is overwritten in place by d loss[r] / d logits[r] =
// softmax(logits[r]) - onehot(y), rounded to T (a row of zeros where y == -100).
template <typename T>
cudaError_t launch_softmax_cross_entropy_rows(T* logits,              // [rows, vocab] in; gradient out
                                              float* loss,            // [rows]
                                              const int64_t* labels,  // [rows]
                                              int64_t rows, int64_t vocab, bool write_grad,
                                              cudaStream_t stream);

}  // namespace temper
