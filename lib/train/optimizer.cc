#include "train/optimizer.hpp"

#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>

#include "ops/adamw_update.hpp"
#include "ops/compat.hpp"
#include "util/strings.hpp"

namespace temper {

Optimizer::Optimizer(const OptimizerOptions& options, std::vector<OptimizedTensor> tensors)
    : options_(options), tensors_(std::move(tensors)) {
  for (auto& t : tensors_) {
    if (!t.param.defined()) t.param = t.master;
    TORCH_CHECK(t.param.sizes() == t.master.sizes() && t.param.device() == t.master.device() &&
                    at::isFloatingType(t.param.scalar_type()) && t.master.scalar_type() == at::kFloat,
                "Optimizer: \"", t.name, "\" has param ", t.param.sizes(), " ", t.param.scalar_type(), " on ",
                t.param.device(), " but master ", t.master.sizes(), " ", t.master.scalar_type(), " on ",
                t.master.device(), " (same shape and device, an fp32 master expected)");
    exp_avg_.push_back(at::zeros_like(t.master));
    exp_avg_sq_.push_back(options_.kind == OptimizerKind::kAdamW ? at::zeros_like(t.master) : at::Tensor());
  }
  fused_ = options_.kind == OptimizerKind::kAdamW && !tensors_.empty();
  for (const auto& t : tensors_) {
    fused_ = fused_ && compat::fused_adamw_available(t.master) && t.master.device() == tensors_[0].master.device() &&
             t.master.is_non_overlapping_and_dense() && t.param.is_same(t.master);
  }
  if (!fused_) return;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    // Without weight decay every tensor goes in one call.
    FusedGroup& g = group_[tensors_[i].decay && options_.weight_decay != 0.0 ? 0 : 1];
    g.index.push_back(i);
    g.masters.push_back(tensors_[i].master);
    g.exp_avg.push_back(exp_avg_[i]);
    g.exp_avg_sq.push_back(exp_avg_sq_[i]);
  }
  step_count_ = at::zeros({}, tensors_[0].master.options());
}

bool Optimizer::step_fused(const std::vector<at::Tensor>& grads, double lr, double grad_scale) {
  // The kernel needs each gradient laid out as its master: the Trainer's are (fp32 parameters'
  // own .grad, or the reducer's fp32 sums); a caller's other layout takes the per-tensor path.
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const at::Tensor& m = tensors_[i].master;
    const at::Tensor& g = grads[i];
    if (g.scalar_type() != at::kFloat || g.device() != m.device() || g.sizes() != m.sizes() ||
        g.strides() != m.strides()) {
      return false;
    }
  }
  if (grad_scale != 1.0) {
    // Scaled in place, in one multi-tensor pass (compat::fused_adamw does not pass torch's
    // grad_scale on; the Trainer drops its gradients after the step, so their values need not
    // survive). A gradient passed for two tensors would be scaled twice: such a call takes the
    // per-tensor path, which scales copies.
    std::vector<const void*> data;
    data.reserve(grads.size());
    for (const at::Tensor& g : grads) data.push_back(g.data_ptr());
    std::sort(data.begin(), data.end());
    if (std::adjacent_find(data.begin(), data.end()) != data.end()) return false;
    at::_foreach_mul_(grads, grad_scale);
  }
  // Written on the device (no host sync) before the kernel reads it; load_state's step count thus
  // reaches the kernel at the next step.
  step_count_.fill_(static_cast<double>(steps_));
  for (int k = 0; k < 2; ++k) {
    const FusedGroup& group = group_[k];
    if (group.index.empty()) continue;
    std::vector<at::Tensor> group_grads;
    group_grads.reserve(group.index.size());
    for (size_t i : group.index) group_grads.push_back(grads[i]);
    compat::fused_adamw(group.masters, group_grads, group.exp_avg, group.exp_avg_sq, step_count_, lr, options_.beta1,
                        options_.beta2, k == 0 ? options_.weight_decay : 0.0, options_.eps);
  }
  return true;
}

void Optimizer::step_one(size_t i, const at::Tensor& grad, double lr, double grad_scale) {
  const OptimizedTensor& t = tensors_[i];
  const double wd = t.decay ? options_.weight_decay : 0.0;
  if (options_.kind == OptimizerKind::kAdamW) {
    AdamwUpdateOptions o;
    o.lr = lr;
    o.beta1 = options_.beta1;
    o.beta2 = options_.beta2;
    o.eps = options_.eps;
    o.weight_decay = wd;
    o.step = steps_;
    o.grad_scale = grad_scale;
    adamw_update(t.master, exp_avg_[i], exp_avg_sq_[i], grad, t.param, o);
    return;
  }
  const at::Tensor& p = t.master;
  at::Tensor g = grad.to(at::kFloat);
  if (grad_scale != 1.0) g = g * grad_scale;
  const at::Tensor d_p = wd != 0.0 ? g.add(p, wd) : g;
  if (options_.momentum != 0.0) {
    if (steps_ == 1) {
      exp_avg_[i].copy_(d_p);
    } else {
      exp_avg_[i].mul_(options_.momentum).add_(d_p);
    }
    p.add_(exp_avg_[i], -lr);
  } else {
    p.add_(d_p, -lr);
  }
  if (!t.param.is_same(p)) t.param.copy_(p);
}

void Optimizer::step(const std::vector<at::Tensor>& grads, double lr, double grad_scale) {
  TORCH_CHECK(grads.size() == tensors_.size(), "Optimizer::step: ", grads.size(), " gradients for ", tensors_.size(),
              " tensors");
  // Every gradient is checked before any tensor is touched: a bad one found half-way would leave
  // the masters, the moments and the step count out of step with each other.
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const OptimizedTensor& t = tensors_[i];
    const at::ScalarType type = grads[i].scalar_type();
    TORCH_CHECK(type == at::kFloat || type == t.param.scalar_type(), "Optimizer::step: the gradient of \"", t.name,
                "\" is ", type, "; expected float32 or the parameter's ", t.param.scalar_type());
    TORCH_CHECK(grads[i].sizes() == t.master.sizes() && grads[i].device() == t.master.device(),
                "Optimizer::step: the gradient of \"", t.name, "\" is ", grads[i].sizes(), " on ", grads[i].device(),
                "; expected ", t.master.sizes(), " on ", t.master.device());
  }
  ++steps_;
  at::NoGradGuard no_grad;
  last_step_fused_ = fused_ && step_fused(grads, lr, grad_scale);
  if (last_step_fused_) return;
  for (size_t i = 0; i < tensors_.size(); ++i) step_one(i, grads[i], lr, grad_scale);
}

void Optimizer::write_params() {
  at::NoGradGuard no_grad;
  for (const OptimizedTensor& t : tensors_) {
    if (!t.param.is_same(t.master)) t.param.copy_(t.master);
  }
}

std::vector<std::string> Optimizer::state_suffixes(OptimizerKind kind) {
  if (kind == OptimizerKind::kAdamW) return {".exp_avg", ".exp_avg_sq"};
  return {".momentum_buffer"};
}

std::vector<at::Tensor> Optimizer::state_of(size_t i) const {
  if (options_.kind == OptimizerKind::kAdamW) return {exp_avg_[i], exp_avg_sq_[i]};
  return {exp_avg_[i]};
}

NamedTensors Optimizer::state() const {
  NamedTensors out;
  const std::vector<std::string> suffixes = state_suffixes(options_.kind);
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const std::vector<at::Tensor> state = state_of(i);
    for (size_t k = 0; k < suffixes.size(); ++k) out.emplace_back(tensors_[i].name + suffixes[k], state[k]);
  }
  return out;
}

absl::Status Optimizer::load_state(const SafetensorsFile& file, int64_t steps_taken) {
  auto load_into = [&](const std::string& key, at::Tensor& dst) -> absl::Status {
    absl::StatusOr<at::Tensor> t = file.tensor(key);
    if (!t.ok()) return t.status();
    if (t->sizes() != dst.sizes() || t->scalar_type() != dst.scalar_type()) {
      return absl::InvalidArgumentError(str_cat(file.path().string(), ": optimizer state \"", key,
                                                "\" does not match the tensor being trained (another model or adapter?)"));
    }
    at::NoGradGuard no_grad;
    dst.copy_(*t);
    return absl::OkStatus();
  };
  const std::vector<std::string> suffixes = state_suffixes(options_.kind);
  for (size_t i = 0; i < tensors_.size(); ++i) {
    std::vector<at::Tensor> state = state_of(i);
    for (size_t k = 0; k < suffixes.size(); ++k) {
      if (absl::Status s = load_into(tensors_[i].name + suffixes[k], state[k]); !s.ok()) return s;
    }
  }
  steps_ = steps_taken;
  return absl::OkStatus();
}

double schedule_factor(const ScheduleOptions& schedule, int64_t step, int64_t total_steps) {
  if (step < schedule.warmup_steps) {
    return static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, schedule.warmup_steps));
  }
  const double progress = static_cast<double>(step - schedule.warmup_steps) /
                          static_cast<double>(std::max<int64_t>(1, total_steps - schedule.warmup_steps));
  switch (schedule.kind) {
    case ScheduleKind::kConstant: return 1.0;
    case ScheduleKind::kLinear: return std::max(0.0, 1.0 - progress);
    case ScheduleKind::kCosine: return std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));
  }
  return 1.0;
}

}  // namespace temper
