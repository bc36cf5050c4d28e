#include "ops/swiglu.hpp"

#ifdef TEMPER_WITH_CUDA
#include "ops/cuda_dispatch.hpp"
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <torch/csrc/autograd/custom_function.h>

#include "kernels/swiglu.cuh"
#endif

namespace temper {

at::Tensor swiglu_reference(const at::Tensor& gate, const at::Tensor& up) { return at::silu(gate) * up; }

std::pair<at::Tensor, at::Tensor> swiglu_backward_reference(const at::Tensor& dact, const at::Tensor& gate,
                                                            const at::Tensor& up) {
  const at::Tensor s = at::sigmoid(gate);
  return {dact * up * (s * (1 + gate * (1 - s))), dact * (gate * s)};
}

#ifdef TEMPER_WITH_CUDA
namespace {

bool fused_dtype(at::ScalarType type) {
  return type == at::kFloat || type == at::kBFloat16 || type == at::kHalf;
}

void check_operands(const at::Tensor& gate, const at::Tensor& up, const char* what) {
  TORCH_CHECK(gate.is_cuda() && up.is_cuda() && gate.device() == up.device(), what,
              ": gate and up must be CUDA tensors on one device");
  TORCH_CHECK(gate.scalar_type() == up.scalar_type() && fused_dtype(gate.scalar_type()), what,
              ": gate and up must share one of float, bfloat16, half; got ", gate.scalar_type(), " and ",
              up.scalar_type());
  TORCH_CHECK(gate.sizes() == up.sizes(), what, ": gate ", gate.sizes(), " and up ", up.sizes(),
              " must have one shape");
}

// Saves gate and up only: the backward recomputes sigmoid(gate), so the [..., I] silu(gate) that
// the unfused ops keep alive until the backward is never stored.
class SwigluFunction : public torch::autograd::Function<SwigluFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& gate, const at::Tensor& up) {
    ctx->save_for_backward({gate, up});
    return swiglu_cuda_forward(gate, up);
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    auto [dgate, dup] = swiglu_cuda_backward(grads[0], saved[0], saved[1]);
    return {dgate, dup};
  }
};

}  // namespace

at::Tensor swiglu_cuda_forward(const at::Tensor& gate, const at::Tensor& up) {
  check_operands(gate, up, "swiglu_cuda_forward");
  const c10::cuda::CUDAGuard guard(gate.device());
  const at::Tensor gc = gate.contiguous();
  const at::Tensor uc = up.contiguous();
  at::Tensor act = at::empty_like(gc, at::MemoryFormat::Contiguous);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  dispatch_float_type(gate.scalar_type(), "swiglu", [&](auto tag) {
    using T = decltype(tag);
    check_cuda(launch_swiglu_forward(reinterpret_cast<T*>(act.data_ptr()), reinterpret_cast<const T*>(gc.data_ptr()),
                                     reinterpret_cast<const T*>(uc.data_ptr()), gc.numel(), stream),
               "swiglu forward kernel");
  });
  return act;
}

std::pair<at::Tensor, at::Tensor> swiglu_cuda_backward(const at::Tensor& dact, const at::Tensor& gate,
                                                       const at::Tensor& up) {
  check_operands(gate, up, "swiglu_cuda_backward");
  TORCH_CHECK(dact.sizes() == gate.sizes(), "swiglu_cuda_backward: dact ", dact.sizes(), " and gate ", gate.sizes(),
              " must have one shape");
  const c10::cuda::CUDAGuard guard(gate.device());
  // Incoming gradients are often expanded or strided views (the backward of sum() is a
  // broadcast scalar); the kernel reads flat memory.
  const at::Tensor dc = dact.to(gate.scalar_type()).contiguous();
  const at::Tensor gc = gate.contiguous();
  const at::Tensor uc = up.contiguous();
  at::Tensor dgate = at::empty_like(gc, at::MemoryFormat::Contiguous);
  at::Tensor dup = at::empty_like(gc, at::MemoryFormat::Contiguous);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  dispatch_float_type(gate.scalar_type(), "swiglu", [&](auto tag) {
    using T = decltype(tag);
    check_cuda(launch_swiglu_backward(reinterpret_cast<T*>(dgate.data_ptr()), reinterpret_cast<T*>(dup.data_ptr()),
                                      reinterpret_cast<const T*>(dc.data_ptr()),
                                      reinterpret_cast<const T*>(gc.data_ptr()),
                                      reinterpret_cast<const T*>(uc.data_ptr()), gc.numel(), stream),
               "swiglu backward kernel");
  });
  return {dgate, dup};
}
#endif

at::Tensor swiglu(const at::Tensor& gate, const at::Tensor& up) {
#ifdef TEMPER_WITH_CUDA
  // Anything the kernel does not cover (mixed dtypes, broadcasting, other devices) keeps the
  // reference, which ATen handles in general.
  if (gate.is_cuda() && up.is_cuda() && gate.device() == up.device() && gate.scalar_type() == up.scalar_type() &&
      fused_dtype(gate.scalar_type()) && gate.sizes() == up.sizes()) {
    return SwigluFunction::apply(gate, up);
  }
#endif
  return swiglu_reference(gate, up);
}

}  // namespace temper
