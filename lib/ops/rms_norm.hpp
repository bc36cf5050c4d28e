// RMSNorm as transformers' LlamaRMSNorm computes it:
//   y = weight * (x * rsqrt(mean(x^2, -1) + eps)).to(x.dtype)
// with the statistics in fp32. On CUDA tensors a fused kernel (lib/kernels/rms_norm.cu) does the
// forward and backward in one pass each; elsewhere the reference below runs and autograd
// differentiates it.
#pragma once

#include <ATen/ATen.h>

namespace temper {

// x [..., H] float dtype, weight [H] same dtype -> [..., H]. Differentiable in x and weight.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

// The CPU/ATen reference, used on non-CUDA tensors and by the kernel's parity test.
at::Tensor rms_norm_reference(const at::Tensor& x, const at::Tensor& weight, double eps);

#ifdef TEMPER_WITH_CUDA
// The CUDA kernels directly (for the parity test): forward returns {y [N, H], rstd [N] fp32};
// backward returns {dx [N, H], dweight [H]} for x, weight, dy of shape [N, H] / [H]; with
// weight_grad false dweight is undefined and a dx-only kernel runs (same dx, bit for bit).
std::pair<at::Tensor, at::Tensor> rms_norm_cuda_forward(const at::Tensor& x, const at::Tensor& weight, double eps);
std::pair<at::Tensor, at::Tensor> rms_norm_cuda_backward(const at::Tensor& dy, const at::Tensor& x,
                                                         const at::Tensor& weight, const at::Tensor& rstd,
                                                         bool weight_grad = true);
#endif

}  // namespace temper
