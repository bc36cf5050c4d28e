// SwiGLU, the Llama MLP's activation: act = silu(gate) * up, as transformers' LlamaMLP computes
// it (act_fn(gate_proj(x)) * up_proj(x)). On CUDA tensors a fused kernel (lib/kernels/swiglu.cu)
// does the forward and backward in one pass each and keeps only gate and up for the backward;
// elsewhere the reference below runs and autograd differentiates it.
#pragma once

#include <utility>

#include <ATen/ATen.h>

namespace temper {

// gate [..., I], up [..., I] float dtype -> [..., I]. Differentiable in gate and up.
at::Tensor swiglu(const at::Tensor& gate, const at::Tensor& up);

// SwiGLU over the output of one fused gate/up GEMM: gate_up [..., 2I] float dtype holds gate in
// the first I columns and up in the last I -> [..., I]. Differentiable in gate_up. On CUDA the
// kernels read both halves in place and the backward writes the gradient of both into one
// [..., 2I] tensor (what the fused GEMM's backward takes), so neither direction copies a half.
at::Tensor swiglu_packed(const at::Tensor& gate_up);

// The ATen reference, at::silu(gate) * up: used on non-CUDA tensors and by the kernel's tests.
at::Tensor swiglu_reference(const at::Tensor& gate, const at::Tensor& up);

// The closed-form gradients the fused backward computes, in ATen ops (any dtype; the tests run it
// in fp64): returns {dgate, dup}, each [..., I] like gate, for dact, gate, up [..., I].
std::pair<at::Tensor, at::Tensor> swiglu_backward_reference(const at::Tensor& dact, const at::Tensor& gate,
                                                            const at::Tensor& up);

#ifdef TEMPER_WITH_CUDA
// The CUDA kernels directly (for the parity test), on CUDA tensors of one shape and dtype
// (float, bf16, fp16); non-contiguous inputs are made contiguous first.
// Forward: act [..., I] like gate. Backward: {dgate, dup} [..., I] like gate.
at::Tensor swiglu_cuda_forward(const at::Tensor& gate, const at::Tensor& up);
std::pair<at::Tensor, at::Tensor> swiglu_cuda_backward(const at::Tensor& dact, const at::Tensor& gate,
                                                       const at::Tensor& up);
// The packed form's kernels: gate_up [..., 2I] -> act [..., I]; backward dact [..., I] ->
// dgate_up [..., 2I]. A non-contiguous gate_up is made contiguous first.
at::Tensor swiglu_packed_cuda_forward(const at::Tensor& gate_up);
at::Tensor swiglu_packed_cuda_backward(const at::Tensor& dact, const at::Tensor& gate_up);
#endif

}  // namespace temper
