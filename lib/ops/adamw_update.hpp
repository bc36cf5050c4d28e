// One AdamW step for one tensor with fp32 master weights: torch.optim.AdamW's single-tensor rule
// on the master and its two moments, the gradient read in its own dtype and scaled by the clip
// coefficient, and the model's parameter (bf16/fp16/fp32) rewritten from the master. On CUDA a
// fused kernel (lib/kernels/adamw.cu) does all of it in one pass; the reference below is the same
// rule in ATen ops, used elsewhere and by the kernel's test.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

namespace temper {

struct AdamwUpdateOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;  // for this tensor; 0 = none
  int64_t step = 1;           // 1-based number of this update (the bias corrections use it)
  double grad_scale = 1.0;    // the gradient is used as grad * grad_scale
};

// In place, with g = grad * grad_scale in master's dtype:
//   master *= 1 - lr*wd; exp_avg = lerp(exp_avg, g, 1 - beta1);
//   exp_avg_sq = beta2*exp_avg_sq + (1 - beta2)*g*g;
//   master -= (lr/(1 - beta1^step)) * exp_avg / (sqrt(exp_avg_sq)/sqrt(1 - beta2^step) + eps);
// then, when param is defined and is not master itself, param = master rounded to param's dtype.
// master, exp_avg, exp_avg_sq [...] fp32 (the Optimizer; the tests use fp64), one device, one shape;
// grad [...] any float dtype, same shape and device; param [...] any float dtype or undefined.
// A NaN gradient makes the master NaN; the Trainer skips non-finite steps before calling.

// The ATen reference: the per-tensor ops of torch.optim.AdamW's single-tensor path on any device.
void adamw_update_reference(const at::Tensor& master, const at::Tensor& exp_avg, const at::Tensor& exp_avg_sq,
                            const at::Tensor& grad, const at::Tensor& param, const AdamwUpdateOptions& options);

// The fused kernel where it applies (CUDA build, CUDA tensors, contiguous, master and moments
// fp32, grad and param fp32/bf16/fp16), the reference otherwise.
void adamw_update(const at::Tensor& master, const at::Tensor& exp_avg, const at::Tensor& exp_avg_sq,
                  const at::Tensor& grad, const at::Tensor& param, const AdamwUpdateOptions& options);

#ifdef TEMPER_WITH_CUDA
// The CUDA kernel directly (for the parity test): all tensors on one CUDA device and contiguous,
// master/exp_avg/exp_avg_sq fp32, grad and param (if defined) fp32, bf16 or fp16; anything else
// is a c10::Error that names the offending tensor.
void adamw_update_cuda(const at::Tensor& master, const at::Tensor& exp_avg, const at::Tensor& exp_avg_sq,
                       const at::Tensor& grad, const at::Tensor& param, const AdamwUpdateOptions& options);
#endif

}  // namespace temper
