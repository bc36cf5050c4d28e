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

// The packed form: saves gate_up only, returns the gradient of both halves as one tensor.
class SwigluPackedFunction : public torch::autograd::Function<SwigluPackedFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& gate_up) {
    ctx->save_for_backward({gate_up});
    return swiglu_packed_cuda_forward(gate_up);
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    return {swiglu_packed_cuda_backward(grads[0], ctx->get_saved_variables()[0])};
  }
};

// [..., 2I] -> its size I, checked: CUDA, a kernel dtype, an even last dim.
int64_t packed_half(const at::Tensor& gate_up, const char* what) {
  TORCH_CHECK(gate_up.is_cuda() && fused_dtype(gate_up.scalar_type()), what,
              ": gate_up must be a float, bfloat16 or half CUDA tensor; got ", gate_up.scalar_type(), " on ",
              gate_up.device());
  TORCH_CHECK(gate_up.dim() >= 1 && gate_up.size(-1) % 2 == 0, what, ": gate_up ", gate_up.sizes(),
              " must have an even last dimension (gate, then up)");
  return gate_up.size(-1) / 2;
}

}  // namespace

at::Tensor swiglu_packed_cuda_forward(const at::Tensor& gate_up) {
  const int64_t half = packed_half(gate_up, "swiglu_packed_cuda_forward");
  const c10::cuda::CUDAGuard guard(gate_up.device());
  const at::Tensor gu = gate_up.contiguous();
  auto sizes = gu.sizes().vec();
  sizes.back() = half;
  at::Tensor act = at::empty(sizes, gu.options());
  const int64_t rows = half == 0 ? 0 : gu.numel() / (2 * half);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  dispatch_float_type(gu.scalar_type(), "swiglu_packed", [&](auto tag) {
    using T = decltype(tag);
    const T* g = reinterpret_cast<const T*>(gu.data_ptr());
    check_cuda(launch_swiglu_forward_2d(reinterpret_cast<T*>(act.data_ptr()), g, g + half, rows, half, half,
                                        2 * half, stream),
               "swiglu packed forward kernel");
  });
  return act;
}

at::Tensor swiglu_packed_cuda_backward(const at::Tensor& dact, const at::Tensor& gate_up) {
  const int64_t half = packed_half(gate_up, "swiglu_packed_cuda_backward");
  auto act_sizes = gate_up.sizes().vec();
  act_sizes.back() = half;
  TORCH_CHECK(dact.sizes() == at::IntArrayRef(act_sizes), "swiglu_packed_cuda_backward: dact ", dact.sizes(),
              " must be gate_up ", gate_up.sizes(), " with the last dimension halved");
  const c10::cuda::CUDAGuard guard(gate_up.device());
  const at::Tensor gu = gate_up.contiguous();
  const at::Tensor dc = dact.to(gu.scalar_type()).contiguous();
  at::Tensor dgu = at::empty_like(gu, at::MemoryFormat::Contiguous);
  const int64_t rows = half == 0 ? 0 : gu.numel() / (2 * half);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  dispatch_float_type(gu.scalar_type(), "swiglu_packed", [&](auto tag) {
    using T = decltype(tag);
    const T* g = reinterpret_cast<const T*>(gu.data_ptr());
    T* dg = reinterpret_cast<T*>(dgu.data_ptr());
    check_cuda(launch_swiglu_backward_2d(dg, dg + half, reinterpret_cast<const T*>(dc.data_ptr()), g, g + half, rows,
                                         half, half, 2 * half, stream),
               "swiglu packed backward kernel");
  });
  return dgu;
}

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

at::Tensor swiglu_packed(const at::Tensor& gate_up) {
  TORCH_CHECK(gate_up.dim() >= 1 && gate_up.size(-1) % 2 == 0, "swiglu_packed: gate_up ", gate_up.sizes(),
              " must have an even last dimension (gate, then up)");
#ifdef TEMPER_WITH_CUDA
  if (gate_up.is_cuda() && fused_dtype(gate_up.scalar_type())) return SwigluPackedFunction::apply(gate_up);
#endif
  const int64_t half = gate_up.size(-1) / 2;
  return swiglu_reference(gate_up.narrow(-1, 0, half), gate_up.narrow(-1, half, half));
}

}  // namespace temper
