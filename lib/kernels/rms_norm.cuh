// Launchers of the fused RMSNorm kernels (rms_norm.cu). Plain C++ declarations: lib/ops includes
// this header from host code compiled by g++.
//
// Element types: float, __nv_bfloat16, __half. Pointers are device pointers to contiguous
// row-major data; statistics and partial sums are fp32.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace temper {

// y[r, :] = w * T(x[r, :] * rstd[r]),  rstd[r] = 1 / sqrt(mean(x[r, :]^2) + eps)
template <typename T>
cudaError_t launch_rms_norm_forward(T* y,             // [rows, hidden]
                                    float* rstd,      // [rows] fp32, kept for the backward
                                    const T* x,       // [rows, hidden]
                                    const T* weight,  // [hidden]
                                    int64_t rows, int64_t hidden, float eps, cudaStream_t stream);

// dx = rstd * (dy*w - n * mean(dy*w*n)), n = x * rstd;  dw = sum over rows of dy * n.
// `partial` is scratch of [partial_blocks, hidden] fp32 where partial_blocks comes from
// rms_norm_backward_partial_blocks(rows).
template <typename T>
cudaError_t launch_rms_norm_backward(T* dx,             // [rows, hidden]
                                     T* dweight,        // [hidden]
                                     float* partial,    // [partial_blocks, hidden] fp32 scratch
                                     const T* dy,       // [rows, hidden]
                                     const T* x,        // [rows, hidden]
                                     const T* weight,   // [hidden]
                                     const float* rstd, // [rows] fp32 from the forward
                                     int64_t rows, int64_t hidden, int64_t partial_blocks, cudaStream_t stream);

// dx alone, as launch_rms_norm_backward computes it (bit for bit), for a weight that takes no
// gradient: no scratch, one block per row.
template <typename T>
cudaError_t launch_rms_norm_backward_dx(T* dx,              // [rows, hidden]
                                        const T* dy,        // [rows, hidden]
                                        const T* x,         // [rows, hidden]
                                        const T* weight,    // [hidden]
                                        const float* rstd,  // [rows] fp32 from the forward
                                        int64_t rows, int64_t hidden, cudaStream_t stream);

// How many blocks the backward spreads rows over (each keeps one partial dw row).
int64_t rms_norm_backward_partial_blocks(int64_t rows);

}  // namespace temper
