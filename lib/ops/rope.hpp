// Rotary position embedding on CUDA tensors: the fused kernels of lib/kernels/rope.cu behind a
// custom autograd Function that saves only cos and sin (the rotation is linear in x, so its
// backward needs no activations). lib/model/rope.cc's apply_rope sends CUDA tensors here and runs
// the ATen reference (apply_rope_reference) everywhere else.
#pragma once

#include <ATen/ATen.h>

namespace temper {

#ifdef TEMPER_WITH_CUDA
// Whether the fused path takes these operands: CUDA tensors of one dtype (float, bf16 or fp16),
// x 4-D with an even last dim D, cos/sin of one shape [B or 1, T, D] that do not require grad.
bool rope_cuda_supports(const at::Tensor& x,     // [B, H, T, D]
                        const at::Tensor& cos,   // [B or 1, T, D]
                        const at::Tensor& sin);  // [B or 1, T, D]

// x [B, H, T, D] any strides over B, H, T (a transposed [B, T, H, D] view is read in place);
// cos/sin [B or 1, T, D] x's dtype -> [B, H, T, D] x's dtype, stored as a transposed contiguous
// [B, T, H, D] (so .transpose(1, 2) of it is contiguous). Differentiable in x only.
at::Tensor rope_cuda(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

// The kernels directly (for the parity test). Forward: x -> out as rope_cuda. Backward: dy
// [B, H, T, D] (any strides over B, H, T) -> dx [B, H, T, D] stored as a transposed [B, T, H, D].
at::Tensor rope_cuda_forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);
at::Tensor rope_cuda_backward(const at::Tensor& dy, const at::Tensor& cos, const at::Tensor& sin);
#endif

}  // namespace temper
