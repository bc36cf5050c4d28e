// LoraAdapter: creation with PEFT's initialisation, installation on the model's projections,
// merge/unmerge and the merged view of the weights. PEFT's file format is in peft_io.cc.
#include <cmath>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>

#include "lora/lora_adapter_impl.hpp"
#include "lora/peft_config.hpp"
#include "model/projection_group.hpp"
#include "util/status_macros.hpp"
#include "util/strings.hpp"
#include "util/torch_errors.hpp"

namespace temper {
namespace {

absl::Status check_options(const LoraOptions& o) {
  if (o.rank < 1) return absl::InvalidArgumentError(str_cat("LoRA rank must be at least 1, got ", o.rank));
  if (o.alpha && !(*o.alpha > 0 && *o.alpha <= kMaxLoraAlpha)) {
    return absl::InvalidArgumentError(str_cat("LoRA alpha must be a positive number at most ", kMaxLoraAlpha, ", got ", *o.alpha));
  }
  for (const auto& [key, alpha] : o.alpha_pattern) {
    if (!(alpha > 0 && alpha <= kMaxLoraAlpha)) {
      return absl::InvalidArgumentError(str_cat("alpha_pattern[\"", key, "\"] must be a positive number at most ",
                                                kMaxLoraAlpha, ", got ", alpha));
    }
  }
  if (!(o.dropout >= 0.0 && o.dropout < 1.0)) {
    return absl::InvalidArgumentError(str_cat("LoRA dropout must be in [0, 1), got ", o.dropout));
  }
  if (o.dtype != at::kFloat && o.dtype != at::kBFloat16 && o.dtype != at::kHalf) {
    return absl::InvalidArgumentError(str_cat("LoRA adapter dtype must be float32, bfloat16 or float16, not ",
                                              c10::toString(o.dtype)));
  }
  return absl::OkStatus();
}

template <typename T>
std::vector<std::pair<std::string, T>> entries(const std::map<std::string, T>& table) {
  return {table.begin(), table.end()};
}

// A and B as PEFT initialises them (LoraLayer.reset_lora_parameters), B = 0 so the adapter
// starts as the identity; DoRA's magnitude is then the row norm of W itself.
std::shared_ptr<LoraModule> init_module(const ModulePlan& plan, const LoraOptions& options, const Linear& base,
                                        at::Generator& gen) {
  auto m = std::make_shared<LoraModule>();
  m->name = plan.module.name;
  m->layer = plan.module.layer;
  m->slot = plan.module.slot;
  m->rank = plan.rank;
  m->alpha = plan.alpha;
  m->scale = lora_scale(plan.alpha, plan.rank, options.use_rslora);
  const at::TensorOptions fp32 = at::TensorOptions().dtype(at::kFloat);
  at::Tensor a = at::empty({plan.rank, plan.module.in_features}, fp32);
  if (options.init == LoraOptions::Init::kGaussian) {
    a.normal_(0.0, 1.0 / static_cast<double>(plan.rank), gen);
  } else {
    // kaiming_uniform_(a = sqrt(5)) on [r, in]: gain sqrt(2 / (1 + 5)), bound gain * sqrt(3 / fan_in) = 1 / sqrt(in).
    const double bound = 1.0 / std::sqrt(static_cast<double>(plan.module.in_features));
    a.uniform_(-bound, bound, gen);
  }
  const at::Device device = base.device();
  m->a = a.to(device, options.dtype).requires_grad_(true);
  m->b = at::zeros({plan.module.out_features, plan.rank}, fp32.device(device).dtype(options.dtype)).requires_grad_(true);
  if (options.use_dora) {
    at::NoGradGuard no_grad;
    m->magnitude = dora_weight_norm(*m, base.is_quantized() ? base.dense_weight(at::kFloat) : base.weight)
                       .to(options.dtype)
                       .requires_grad_(true);
  }
  return m;
}

}  // namespace

absl::StatusOr<std::unique_ptr<LoraAdapter::Impl>> install_adapter(Model::Impl& model, const LoraOptions& options,
                                                                    std::vector<std::shared_ptr<LoraModule>> modules) {
  auto impl = std::make_unique<LoraAdapter::Impl>();
  impl->model = &model;
  impl->options = options;
  impl->all_modules = linear_modules(model.config);
  impl->runtime = std::make_shared<LoraRuntime>();
  impl->runtime->dropout = options.dropout;
  impl->modules = std::move(modules);
  for (size_t i = 0; i < impl->modules.size(); ++i) {
    const LoraModule& m = *impl->modules[i];
    if (impl->linear(m).delta != nullptr) {
      return absl::FailedPreconditionError(
          str_cat(m.name, " already carries an adapter; remove() the other adapter before installing this one"));
    }
    impl->module_of_weight[m.name + ".weight"] = i;
  }
  return guarded("installing the LoRA adapter", [&]() -> absl::StatusOr<std::unique_ptr<LoraAdapter::Impl>> {
    // Only the adapter trains (PEFT's mark_only_adapters_as_trainable).
    model.for_each_parameter([](const ParamSpec&, at::Tensor& p) {
      if (p.defined()) p.requires_grad_(false);
    });
    // A frozen base on the GPU: q/k/v and gate/up run as one grouped projection each
    // (model/projection_group.hpp). On the CPU the member-by-member path stays (no gain there,
    // and packing would copy weights that loading mapped without copying).
    if (model.options.device.is_cuda()) {
      for (DecoderLayer& layer : model.layers) pack_projections(layer);
    }
    for (const auto& m : impl->modules) {
      auto delta = std::make_shared<const LoraDelta>(m, impl->runtime);
      impl->linear(*m).delta = delta;
      impl->deltas.push_back(std::move(delta));
    }
    return std::move(impl);
  });
}

at::Tensor LoraAdapter::Impl::folded(const std::string& name, const at::Tensor& tensor) const {
  auto it = module_of_weight.find(name);
  if (merged || it == module_of_weight.end()) return tensor;
  return merged_weight(*modules[it->second], tensor);
}

StatusOr<LoraAdapter> LoraAdapter::create(Model& model, const LoraOptions& options_in) {
  TEMPER_RETURN_IF_ERROR(check_options(options_in));
  LoraOptions options = options_in;
  if (!options.alpha) options.alpha = 2.0 * static_cast<double>(options.rank);
  Model::Impl& mi = model.impl();
  TEMPER_ASSIGN_OR_RETURN(std::vector<LinearModuleRef> targets,
                          select_targets(linear_modules(mi.config), options.target_modules));
  if (targets.empty()) return absl::InvalidArgumentError("LoRA targets select no module");
  TEMPER_ASSIGN_OR_RETURN(std::vector<ModulePlan> plans,
                          plan_modules(targets, options.rank, *options.alpha, entries(options.rank_pattern),
                                       entries(options.alpha_pattern), /*require_every_key=*/true));
  TEMPER_ASSIGN_OR_RETURN(std::vector<std::shared_ptr<LoraModule>> modules,
                          guarded("initialising LoRA tensors", [&]() -> StatusOr<std::vector<std::shared_ptr<LoraModule>>> {
                            // Drawn on the CPU in model order from one seeded generator, so the
                            // values depend on the seed alone, not on the device.
                            at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(options.seed);
                            std::vector<std::shared_ptr<LoraModule>> out;
                            for (const ModulePlan& plan : plans) {
                              out.push_back(init_module(plan, options, mi.layers[plan.module.layer].linear(plan.module.slot), gen));
                            }
                            return out;
                          }));
  TEMPER_ASSIGN_OR_RETURN(std::unique_ptr<Impl> impl, install_adapter(mi, options, std::move(modules)));
  return LoraAdapter(std::move(impl));
}

LoraAdapter::LoraAdapter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
LoraAdapter::LoraAdapter(LoraAdapter&&) noexcept = default;

LoraAdapter& LoraAdapter::operator=(LoraAdapter&& other) noexcept {
  if (this != &other) {
    remove();
    impl_ = std::move(other.impl_);
  }
  return *this;
}

LoraAdapter::~LoraAdapter() { remove(); }

void LoraAdapter::remove() {
  if (!impl_ || impl_->removed) return;
  for (size_t i = 0; i < impl_->modules.size(); ++i) {
    Linear& linear = impl_->linear(*impl_->modules[i]);
    if (linear.delta == impl_->deltas[i]) linear.delta.reset();
  }
  impl_->removed = true;
}

std::vector<std::pair<std::string, at::Tensor>> LoraAdapter::named_parameters() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& m : impl_->modules) {
    const std::string prefix = str_cat(kPeftKeyPrefix, m->name, ".");
    out.emplace_back(prefix + "lora_A.weight", m->a);
    out.emplace_back(prefix + "lora_B.weight", m->b);
    if (m->magnitude.defined()) out.emplace_back(prefix + "lora_magnitude_vector", m->magnitude);
  }
  return out;
}

Status LoraAdapter::merge() {
  if (impl_->removed) return absl::FailedPreconditionError("merge: the adapter was removed from its model");
  if (impl_->merged) return absl::OkStatus();
  for (const auto& m : impl_->modules) {
    if (impl_->linear(*m).is_quantized()) {
      return absl::FailedPreconditionError(str_cat(
          "merge: ", m->name, " is NF4-quantized; merging in place would need re-quantization. Use merged_weights() or "
          "export_merged_model(), which fold the adapter into the dequantized weight"));
    }
  }
  size_t done = 0;
  absl::Status status = guarded("merging the LoRA adapter", [&]() -> absl::Status {
    at::NoGradGuard no_grad;
    for (; done < impl_->modules.size(); ++done) {
      LoraModule& m = *impl_->modules[done];
      Linear& linear = impl_->linear(m);
      at::Tensor factor;
      const at::Tensor w = merged_weight(m, linear.weight, &factor);
      linear.weight.copy_(w);  // in place: every holder of the weight sees the merged model
      m.merged_factor = factor;
      linear.delta.reset();
    }
    return absl::OkStatus();
  });
  if (!status.ok()) {
    // Leave the model as it was: undo the modules merged before the failure.
    (void)guarded("undoing a partial merge", [&]() -> absl::Status {
      at::NoGradGuard no_grad;
      for (size_t i = 0; i < done; ++i) {
        LoraModule& m = *impl_->modules[i];
        Linear& linear = impl_->linear(m);
        linear.weight.copy_(unmerged_weight(m, linear.weight, m.merged_factor));
        m.merged_factor = at::Tensor();
        linear.delta = impl_->deltas[i];
      }
      return absl::OkStatus();
    });
    return status;
  }
  impl_->merged = true;
  return absl::OkStatus();
}

Status LoraAdapter::unmerge() {
  if (impl_->removed) return absl::FailedPreconditionError("unmerge: the adapter was removed from its model");
  if (!impl_->merged) return absl::OkStatus();
  TEMPER_RETURN_IF_ERROR(guarded("unmerging the LoRA adapter", [&]() -> absl::Status {
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < impl_->modules.size(); ++i) {
      LoraModule& m = *impl_->modules[i];
      if (impl_->linear(m).delta != nullptr) continue;  // restored by an earlier, interrupted call
      Linear& linear = impl_->linear(m);
      linear.weight.copy_(unmerged_weight(m, linear.weight, m.merged_factor));
      m.merged_factor = at::Tensor();
      linear.delta = impl_->deltas[i];
    }
    return absl::OkStatus();
  }));
  impl_->merged = false;
  return absl::OkStatus();
}

bool LoraAdapter::merged() const { return impl_->merged; }

StatusOr<std::vector<std::pair<std::string, at::Tensor>>> LoraAdapter::merged_weights() const {
  return guarded("computing merged weights", [&]() -> StatusOr<std::vector<std::pair<std::string, at::Tensor>>> {
    std::vector<std::pair<std::string, at::Tensor>> out;
    impl_->model->for_each_dense_parameter(
        [&](const ParamSpec& spec, const at::Tensor& tensor) { out.emplace_back(spec.name, impl_->folded(spec.name, tensor)); });
    return out;
  });
}

void LoraAdapter::set_training(bool training) { impl_->runtime->training = training; }
bool LoraAdapter::training() const { return impl_->runtime->training; }
const LoraOptions& LoraAdapter::options() const { return impl_->options; }

std::vector<std::string> LoraAdapter::target_modules() const {
  std::vector<std::string> out;
  for (const auto& m : impl_->modules) out.push_back(m->name);
  return out;
}

int64_t LoraAdapter::num_parameters() const {
  int64_t total = 0;
  for (const auto& [name, t] : named_parameters()) total += t.numel();
  return total;
}

}  // namespace temper
