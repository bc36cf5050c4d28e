#include "ops/adamw_update.hpp"

#include <ATen/core/grad_mode.h>

#include <cmath>

#ifdef TEMPER_WITH_CUDA
#include "ops/cuda_dispatch.hpp"
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/adamw.cuh"
#endif

namespace temper {
namespace {

double bias_correction(double beta, int64_t step) { return 1.0 - std::pow(beta, static_cast<double>(step)); }

// A param that is the master (the same tensor, or another handle on the same memory and dtype)
// is not written separately: the update already wrote it.
bool param_is_master(const at::Tensor& param, const at::Tensor& master) {
  return !param.defined() || param.is_same(master) ||
         (param.scalar_type() == master.scalar_type() && param.data_ptr() == master.data_ptr());
}

void check_operands(const at::Tensor& master, const at::Tensor& exp_avg, const at::Tensor& exp_avg_sq,
                    const at::Tensor& grad, const at::Tensor& param, const char* op) {
  TORCH_CHECK(master.defined() && exp_avg.defined() && exp_avg_sq.defined() && grad.defined(), op,
              ": master, exp_avg, exp_avg_sq and grad must all be defined");
  TORCH_CHECK(at::isFloatingType(master.scalar_type()) && exp_avg.scalar_type() == master.scalar_type() &&
                  exp_avg_sq.scalar_type() == master.scalar_type(),
              op, ": master, exp_avg and exp_avg_sq must share one floating dtype; got ", master.scalar_type(), ", ",
              exp_avg.scalar_type(), ", ", exp_avg_sq.scalar_type());
  TORCH_CHECK(at::isFloatingType(grad.scalar_type()), op, ": grad must be a floating tensor; got ",
              grad.scalar_type());
  TORCH_CHECK(exp_avg.sizes() == master.sizes() && exp_avg_sq.sizes() == master.sizes() &&
                  grad.sizes() == master.sizes(),
              op, ": master ", master.sizes(), ", exp_avg ", exp_avg.sizes(), ", exp_avg_sq ", exp_avg_sq.sizes(),
              " and grad ", grad.sizes(), " must have one shape");
  TORCH_CHECK(exp_avg.device() == master.device() && exp_avg_sq.device() == master.device() &&
                  grad.device() == master.device(),
              op, ": master (", master.device(), "), exp_avg (", exp_avg.device(), "), exp_avg_sq (",
              exp_avg_sq.device(), ") and grad (", grad.device(), ") must be on one device");
  if (param.defined()) {
    TORCH_CHECK(at::isFloatingType(param.scalar_type()), op, ": param must be a floating tensor; got ",
                param.scalar_type());
    TORCH_CHECK(param.sizes() == master.sizes(), op, ": param ", param.sizes(), " and master ", master.sizes(),
                " must have one shape");
    TORCH_CHECK(param.device() == master.device(), op, ": param (", param.device(), ") and master (",
                master.device(), ") must be on one device");
  }
}

#ifdef TEMPER_WITH_CUDA
bool fused_dtype(at::ScalarType type) { return type == at::kFloat || type == at::kBFloat16 || type == at::kHalf; }

// True when adamw_update_cuda accepts these tensors.
bool kernel_applies(const at::Tensor& master, const at::Tensor& exp_avg, const at::Tensor& exp_avg_sq,
                    const at::Tensor& grad, const at::Tensor& param) {
  const bool write_param = !param_is_master(param, master);
  return master.is_cuda() && master.scalar_type() == at::kFloat && exp_avg.scalar_type() == at::kFloat &&
         exp_avg_sq.scalar_type() == at::kFloat && fused_dtype(grad.scalar_type()) &&
         (!write_param || fused_dtype(param.scalar_type())) && master.is_contiguous() && exp_avg.is_contiguous() &&
         exp_avg_sq.is_contiguous() && grad.is_contiguous() && (!write_param || param.is_contiguous());
}
#endif

}  // namespace

void adamw_update_reference(const at::Tensor& master, const at::Tensor& exp_avg, const at::Tensor& exp_avg_sq,
                            const at::Tensor& grad, const at::Tensor& param, const AdamwUpdateOptions& options) {
  check_operands(master, exp_avg, exp_avg_sq, grad, param, "adamw_update_reference");
  // The master is often the model's own leaf tensor (fp32 training), which autograd would not
  // let us change in place.
  at::NoGradGuard no_grad;
  at::Tensor g = grad.to(master.scalar_type());
  if (options.grad_scale != 1.0) g = g * options.grad_scale;
  // Each line is one op of torch.optim.AdamW's single-tensor path, in its order.
  if (options.weight_decay != 0.0) master.mul_(1.0 - options.lr * options.weight_decay);
  exp_avg.lerp_(g, 1.0 - options.beta1);
  exp_avg_sq.mul_(options.beta2).addcmul_(g, g, 1.0 - options.beta2);
  const double step_size = options.lr / bias_correction(options.beta1, options.step);
  const at::Tensor denom =
      (exp_avg_sq.sqrt() / std::sqrt(bias_correction(options.beta2, options.step))).add_(options.eps);
  master.addcdiv_(exp_avg, denom, -step_size);
  if (!param_is_master(param, master)) param.copy_(master);
}

#ifdef TEMPER_WITH_CUDA
void adamw_update_cuda(const at::Tensor& master, const at::Tensor& exp_avg, const at::Tensor& exp_avg_sq,
                       const at::Tensor& grad, const at::Tensor& param, const AdamwUpdateOptions& options) {
  constexpr const char* kOp = "adamw_update_cuda";
  check_operands(master, exp_avg, exp_avg_sq, grad, param, kOp);
  const bool write_param = !param_is_master(param, master);
  TORCH_CHECK(master.is_cuda(), kOp, ": the tensors must be CUDA tensors; got ", master.device());
  TORCH_CHECK(master.scalar_type() == at::kFloat, kOp, ": master, exp_avg and exp_avg_sq must be float32; got ",
              master.scalar_type());
  TORCH_CHECK(fused_dtype(grad.scalar_type()), kOp, ": grad must be float32, bfloat16 or float16; got ",
              grad.scalar_type());
  TORCH_CHECK(!write_param || fused_dtype(param.scalar_type()), kOp,
              ": param must be float32, bfloat16 or float16; got ", param.scalar_type());
  // The kernel walks flat memory: element i of every tensor must be the same element.
  TORCH_CHECK(master.is_contiguous() && exp_avg.is_contiguous() && exp_avg_sq.is_contiguous(), kOp,
              ": master, exp_avg and exp_avg_sq must be contiguous");
  TORCH_CHECK(grad.is_contiguous(), kOp, ": grad must be contiguous (strides ", grad.strides(), " for sizes ",
              grad.sizes(), ")");
  TORCH_CHECK(!write_param || param.is_contiguous(), kOp, ": param must be contiguous (strides ", param.strides(),
              " for sizes ", param.sizes(), ")");

  AdamwScalars scalars;
  scalars.lr = options.lr;
  scalars.beta1 = options.beta1;
  scalars.beta2 = options.beta2;
  scalars.eps = options.eps;
  scalars.weight_decay = options.weight_decay;
  scalars.bias_correction1 = bias_correction(options.beta1, options.step);
  scalars.bias_correction2 = bias_correction(options.beta2, options.step);
  scalars.grad_scale = options.grad_scale;

  const c10::cuda::CUDAGuard guard(master.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  float* p = master.data_ptr<float>();
  float* m = exp_avg.data_ptr<float>();
  float* v = exp_avg_sq.data_ptr<float>();
  const int64_t n = master.numel();
  dispatch_float_type(grad.scalar_type(), kOp, [&](auto grad_tag) {
    using G = decltype(grad_tag);
    const G* g = reinterpret_cast<const G*>(grad.data_ptr());
    if (!write_param) {
      check_cuda(launch_adamw_update<G, float>(p, m, v, g, nullptr, n, scalars, stream), "adamw update kernel");
      return;
    }
    dispatch_float_type(param.scalar_type(), kOp, [&](auto param_tag) {
      using P = decltype(param_tag);
      check_cuda(launch_adamw_update<G, P>(p, m, v, g, reinterpret_cast<P*>(param.data_ptr()), n, scalars, stream),
                 "adamw update kernel");
    });
  });
}
#endif

void adamw_update(const at::Tensor& master, const at::Tensor& exp_avg, const at::Tensor& exp_avg_sq,
                  const at::Tensor& grad, const at::Tensor& param, const AdamwUpdateOptions& options) {
#ifdef TEMPER_WITH_CUDA
  if (kernel_applies(master, exp_avg, exp_avg_sq, grad, param)) {
    adamw_update_cuda(master, exp_avg, exp_avg_sq, grad, param, options);
    return;
  }
#endif
  adamw_update_reference(master, exp_avg, exp_avg_sq, grad, param, options);
}

}  // namespace temper
