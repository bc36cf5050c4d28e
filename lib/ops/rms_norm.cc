#include "ops/rms_norm.hpp"

#ifdef TEMPER_WITH_CUDA
#include "ops/cuda_dispatch.hpp"
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <torch/csrc/autograd/custom_function.h>

#include "kernels/rms_norm.cuh"
#endif

namespace temper {

at::Tensor rms_norm_reference(const at::Tensor& x, const at::Tensor& weight, double eps) {
  const at::Tensor xf = x.to(at::kFloat);
  const at::Tensor normed = xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * normed.to(x.scalar_type());
}

#ifdef TEMPER_WITH_CUDA
namespace {

class RmsNormFunction : public torch::autograd::Function<RmsNormFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            double eps) {
    auto [y, rstd] = rms_norm_cuda_forward(x, weight, eps);
    ctx->save_for_backward({x, weight, rstd});
    return y;
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    // A frozen weight (LoRA) skips the weight gradient and its cross-row reduction.
    auto [dx, dw] = rms_norm_cuda_backward(grads[0], saved[0], saved[1], saved[2], ctx->needs_input_grad(1));
    return {dx, dw, at::Tensor()};
  }
};

}  // namespace

std::pair<at::Tensor, at::Tensor> rms_norm_cuda_forward(const at::Tensor& x, const at::Tensor& weight, double eps) {
  TORCH_CHECK(x.is_cuda() && weight.is_cuda() && x.scalar_type() == weight.scalar_type(),
              "rms_norm_cuda_forward: x and weight must be CUDA tensors of one dtype");
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t hidden = x.size(-1);
  TORCH_CHECK(weight.numel() == hidden, "rms_norm: weight has ", weight.numel(), " elements, x's last dim is ", hidden);
  const at::Tensor xc = x.contiguous();
  const at::Tensor wc = weight.contiguous();
  const int64_t rows = xc.numel() / hidden;
  at::Tensor y = at::empty_like(xc);
  at::Tensor rstd = at::empty({rows}, xc.options().dtype(at::kFloat));
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  dispatch_float_type(x.scalar_type(), "rms_norm", [&](auto tag) {
    using T = decltype(tag);
    check_cuda(launch_rms_norm_forward(reinterpret_cast<T*>(y.data_ptr()), rstd.data_ptr<float>(),
                                       reinterpret_cast<const T*>(xc.data_ptr()),
                                       reinterpret_cast<const T*>(wc.data_ptr()), rows, hidden,
                                       static_cast<float>(eps), stream),
               "rms_norm forward kernel");
  });
  return {y, rstd};
}

std::pair<at::Tensor, at::Tensor> rms_norm_cuda_backward(const at::Tensor& dy, const at::Tensor& x,
                                                         const at::Tensor& weight, const at::Tensor& rstd,
                                                         bool weight_grad) {
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t hidden = x.size(-1);
  const int64_t rows = x.numel() / hidden;
  const at::Tensor dyc = dy.to(x.scalar_type()).contiguous();
  const at::Tensor xc = x.contiguous();
  const at::Tensor wc = weight.contiguous();
  at::Tensor dx = at::empty_like(xc);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  if (!weight_grad) {
    dispatch_float_type(x.scalar_type(), "rms_norm", [&](auto tag) {
      using T = decltype(tag);
      check_cuda(launch_rms_norm_backward_dx(reinterpret_cast<T*>(dx.data_ptr()),
                                             reinterpret_cast<const T*>(dyc.data_ptr()),
                                             reinterpret_cast<const T*>(xc.data_ptr()),
                                             reinterpret_cast<const T*>(wc.data_ptr()), rstd.data_ptr<float>(), rows,
                                             hidden, stream),
                 "rms_norm backward (dx) kernel");
    });
    return {dx, at::Tensor()};
  }
  const int64_t blocks = rms_norm_backward_partial_blocks(rows);
  at::Tensor partial = at::empty({blocks, hidden}, xc.options().dtype(at::kFloat));
  at::Tensor dw = at::empty_like(wc);
  dispatch_float_type(x.scalar_type(), "rms_norm", [&](auto tag) {
    using T = decltype(tag);
    check_cuda(launch_rms_norm_backward(reinterpret_cast<T*>(dx.data_ptr()), reinterpret_cast<T*>(dw.data_ptr()),
                                        partial.data_ptr<float>(), reinterpret_cast<const T*>(dyc.data_ptr()),
                                        reinterpret_cast<const T*>(xc.data_ptr()),
                                        reinterpret_cast<const T*>(wc.data_ptr()), rstd.data_ptr<float>(), rows,
                                        hidden, blocks, stream),
               "rms_norm backward kernel");
  });
  return {dx, dw};
}
#endif

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
#ifdef TEMPER_WITH_CUDA
  if (x.is_cuda() && x.scalar_type() == weight.scalar_type() &&
      (x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kHalf)) {
    return RmsNormFunction::apply(x, weight, eps);
  }
#endif
  return rms_norm_reference(x, weight, eps);
}

}  // namespace temper
