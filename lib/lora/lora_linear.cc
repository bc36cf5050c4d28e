#include "lora/lora_linear.hpp"

#include <cmath>

#include <ATen/core/grad_mode.h>

#include "lora/lora_projection.hpp"
#include "ops/nf4_linear.hpp"

namespace temper {
namespace {

// W + s B A [out, in] fp32, without gradient.
at::Tensor combined_weight(const LoraModule& module, const at::Tensor& weight) {
  at::NoGradGuard no_grad;
  return at::addmm(weight.detach().to(at::kFloat), module.b.detach().to(at::kFloat),
                   module.a.detach().to(at::kFloat), /*beta=*/1.0, /*alpha=*/module.scale);
}

at::Tensor row_norm(const at::Tensor& w) {  // [out, in] -> [out]
  return at::linalg_vector_norm(w, 2, at::IntArrayRef{1});
}

}  // namespace

double lora_scale(double alpha, int64_t rank, bool use_rslora) {
  return use_rslora ? alpha / std::sqrt(static_cast<double>(rank)) : alpha / static_cast<double>(rank);
}

at::Tensor LoraDelta::forward(const at::Tensor& x, const Linear& base) const {
  const LoraModule& m = *module_;
  const at::ScalarType dtype = x.scalar_type();
  const bool drop = runtime_->training && runtime_->dropout > 0.0;
  if (!m.magnitude.defined()) {  // LoRA: one autograd function (lora_projection.hpp says why)
    if (!drop && lora_projection_fusable(base)) return lora_projection(x, base, m.a, m.b, m.scale);
    const at::Tensor xd = drop ? at::dropout(x, runtime_->dropout, /*train=*/true) : x;
    return lora_add(base.base_forward(x), xd, m.a, m.b, m.scale);
  }
  const at::Tensor xd = drop ? at::dropout(x, runtime_->dropout, /*train=*/true) : x;
  // fp32 masters are cast to the activation dtype; the cast is differentiable, so gradients
  // reach the masters in fp32.
  const at::Tensor lora = at::linear(at::linear(xd, m.a.to(dtype)), m.b.to(dtype));  // [..., out]

  // DoRA. The ratio m / n is formed in fp32 before the cast: m / n - 1 is small and would lose
  // most of its bits if computed in bf16.
  const at::Tensor norm = dora_weight_norm(m, base.is_quantized() ? base.dense_weight(at::kFloat) : base.weight);
  const at::Tensor ratio = m.magnitude.to(at::kFloat) / norm;  // [out] fp32
  // W dropout(x); on an NF4 base through nf4_linear so no dense weight is saved for backward.
  const at::Tensor direct = base.is_quantized() ? nf4_linear(xd, base.quantized, at::Tensor()) : at::linear(xd, base.weight);
  at::Tensor result;
  if (drop) {
    result = base.base_forward(x);
  } else {
    result = base.bias.defined() ? direct + base.bias : direct;
  }
  return result + (ratio - 1.0).to(dtype) * direct + ratio.to(dtype) * (lora * m.scale);
}

std::optional<LowRankTerm> LoraDelta::low_rank_term() const {
  const LoraModule& m = *module_;
  if (m.magnitude.defined() || (runtime_->training && runtime_->dropout > 0.0)) return std::nullopt;
  return LowRankTerm{m.a, m.b, m.scale};
}

at::Tensor lora_delta_weight(const LoraModule& module) {
  at::NoGradGuard no_grad;
  return at::mm(module.b.detach().to(at::kFloat), module.a.detach().to(at::kFloat)) * module.scale;
}

at::Tensor dora_weight_norm(const LoraModule& module, const at::Tensor& weight) {
  at::NoGradGuard no_grad;
  return row_norm(combined_weight(module, weight));
}

at::Tensor merged_weight(const LoraModule& module, const at::Tensor& weight, at::Tensor* dora_factor) {
  at::NoGradGuard no_grad;
  at::Tensor combined = combined_weight(module, weight);  // [out, in] fp32
  at::Tensor factor;
  if (module.magnitude.defined()) {
    factor = module.magnitude.detach().to(at::kFloat) / row_norm(combined);
    combined.mul_(factor.unsqueeze(1));
  }
  if (dora_factor != nullptr) *dora_factor = factor;
  return combined.to(weight.scalar_type());
}

at::Tensor unmerged_weight(const LoraModule& module, const at::Tensor& merged, const at::Tensor& dora_factor) {
  at::NoGradGuard no_grad;
  at::Tensor w = merged.detach().to(at::kFloat, /*non_blocking=*/false, /*copy=*/true);
  if (dora_factor.defined()) w.div_(dora_factor.unsqueeze(1));
  w.sub_(lora_delta_weight(module));
  return w.to(merged.scalar_type());
}

}  // namespace temper
