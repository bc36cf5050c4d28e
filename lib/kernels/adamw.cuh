// Launcher of the fused AdamW update (adamw.cu). Plain C++ declarations: lib/ops includes this
// header from host code compiled by g++.
//
// Gradient type G and parameter type P: float, __nv_bfloat16, __half. Pointers are device
// pointers to n contiguous elements (any leading shape flattened). The maths is fp32; the
// parameter is the updated master rounded to P once.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace temper {

// The host's numbers for one tensor's update, in double as the caller computes them; the launcher
// derives the kernel's fp32 constants from them once (1 - lr*wd, 1 - beta1, lr/bc1, ...), the way
// ATen rounds a double scalar once when it meets a fp32 tensor.
struct AdamwScalars {
  double lr;
  double beta1;
  double beta2;
  double eps;
  double weight_decay;      // for this tensor; 0 = none
  double bias_correction1;  // 1 - beta1^t for this update's 1-based step t
  double bias_correction2;  // 1 - beta2^t
  double grad_scale;        // the gradient is used as grad * grad_scale (the clip coefficient)
};

// One torch.optim.AdamW step in place, with g = grad * grad_scale in fp32:
//   master *= 1 - lr*wd; exp_avg = lerp(exp_avg, g, 1 - beta1);
//   exp_avg_sq = beta2*exp_avg_sq + (1 - beta2)*g*g;
//   master -= (lr/bc1) * exp_avg / (sqrt(exp_avg_sq)/sqrt(bc2) + eps);
// then param = master rounded to P, unless param is null (the master is the parameter).
template <typename G, typename P>
cudaError_t launch_adamw_update(float* master,      // [n] fp32
                                float* exp_avg,     // [n] fp32
                                float* exp_avg_sq,  // [n] fp32
                                const G* grad,      // [n]
                                P* param,           // [n] or null
                                int64_t n, const AdamwScalars& scalars, cudaStream_t stream);

}  // namespace temper
