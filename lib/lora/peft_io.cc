// LoraAdapter::load and ::save: PEFT's adapter directory (adapter_config.json +
// adapter_model.safetensors, tensors named base_model.model.<module>.lora_A.weight [r, in],
// .lora_B.weight [out, r], .lora_magnitude_vector [out]).
#include <regex>
#include <set>

#include <sys/stat.h>

#include "io/atomic_directory.hpp"
#include "io/atomic_file.hpp"
#include "io/read_file.hpp"
#include "io/safetensors.hpp"
#include "lora/lora_adapter_impl.hpp"
#include "lora/peft_config.hpp"
#include "util/status_macros.hpp"
#include "util/strings.hpp"
#include "util/torch_errors.hpp"

namespace temper {
namespace {

std::string shape_string(const std::vector<int64_t>& shape) {
  return str_cat("[", fmt::format("{}", fmt::join(shape, ", ")), "]");
}

bool path_exists(const std::filesystem::path& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

// PEFT's string form: one regular expression that must match the whole module name; nullopt
// when the config uses the list form (or, for target_modules, PEFT's keyword "all-linear").
absl::StatusOr<std::optional<std::regex>> string_form(const std::optional<std::string>& pattern, std::string_view source,
                                                      const char* field) {
  if (!pattern || (*pattern == "all-linear" && std::string_view(field) == "target_modules")) {
    return std::optional<std::regex>();
  }
  absl::StatusOr<std::regex> regex = compile_peft_regex(*pattern, str_cat(source, ": field \"", field, "\""));
  if (!regex.ok()) return regex.status();
  return std::optional<std::regex>(std::move(*regex));
}

// The modules a PEFT config adapts, in model order (tuners_utils.check_target_module_exists,
// then exclude_modules).
absl::StatusOr<std::vector<LinearModuleRef>> config_targets(const PeftLoraConfig& config,
                                                            const std::vector<LinearModuleRef>& modules,
                                                            std::string_view source) {
  TEMPER_ASSIGN_OR_RETURN(const std::optional<std::regex> target_regex,
                          string_form(config.target_regex, source, "target_modules"));
  TEMPER_ASSIGN_OR_RETURN(const std::optional<std::regex> exclude_regex,
                          string_form(config.exclude_regex, source, "exclude_modules"));
  std::vector<LinearModuleRef> out;
  for (const LinearModuleRef& m : modules) {
    bool selected = false;
    if (target_regex) {
      selected = std::regex_match(m.name, *target_regex);
    } else if (config.target_regex) {
      selected = true;  // "all-linear": every linear layer but the output head, i.e. every block projection
    } else {
      for (const std::string& entry : config.target_modules) selected = selected || peft_name_matches(entry, m.name);
    }
    bool excluded = false;
    if (exclude_regex) excluded = std::regex_match(m.name, *exclude_regex);
    for (const std::string& entry : config.exclude_modules) excluded = excluded || peft_name_matches(entry, m.name);
    if (selected && !excluded) out.push_back(m);
  }
  if (out.empty()) {
    return absl::InvalidArgumentError(str_cat(source, ": target_modules selects no linear projection of this model "
                                                      "(is the adapter for another architecture?)"));
  }
  return out;
}

enum class AdapterTensor { kA, kB, kMagnitude };

struct ExpectedTensor {
  std::string key;
  std::vector<int64_t> shape;
  size_t module = 0;  // index into the plans
  AdapterTensor kind = AdapterTensor::kA;
};

std::vector<ExpectedTensor> expected_tensors(const std::vector<ModulePlan>& plans, bool use_dora) {
  std::vector<ExpectedTensor> out;
  for (size_t i = 0; i < plans.size(); ++i) {
    const ModulePlan& p = plans[i];
    const std::string prefix = str_cat(kPeftKeyPrefix, p.module.name, ".");
    out.push_back({prefix + "lora_A.weight", {p.rank, p.module.in_features}, i, AdapterTensor::kA});
    out.push_back({prefix + "lora_B.weight", {p.module.out_features, p.rank}, i, AdapterTensor::kB});
    if (use_dora) {
      out.push_back({prefix + "lora_magnitude_vector", {p.module.out_features}, i, AdapterTensor::kMagnitude});
    }
  }
  return out;
}

// rank_pattern / alpha_pattern as they will be written: the adapter's own tables when, read in
// the sorted order PEFT will read them, they still give every module its rank and alpha;
// otherwise (tables read from a hand-written config whose order mattered) one exact key per
// module, which cannot be misread.
void write_patterns(const LoraAdapter::Impl& impl, const std::vector<LinearModuleRef>& targets,
                    PeftLoraConfig& config) {
  config.rank_pattern.assign(impl.options.rank_pattern.begin(), impl.options.rank_pattern.end());
  config.alpha_pattern.assign(impl.options.alpha_pattern.begin(), impl.options.alpha_pattern.end());
  absl::StatusOr<std::vector<ModulePlan>> plans =
      plan_modules(targets, config.r, config.lora_alpha, config.rank_pattern, config.alpha_pattern, false);
  bool same = plans.ok();
  for (size_t i = 0; same && i < impl.modules.size(); ++i) {
    same = (*plans)[i].rank == impl.modules[i]->rank && (*plans)[i].alpha == impl.modules[i]->alpha;
  }
  if (same) return;
  config.rank_pattern.clear();
  config.alpha_pattern.clear();
  for (const auto& m : impl.modules) {
    // "layers\.0\.self_attn\.q_proj": escaped, and without the leading "model." so that PEFT
    // versions that require a "." before the key (0.12) match it too.
    std::string key;
    const std::string relative = m->name.substr(m->name.find('.') + 1);
    for (char c : relative) {
      if (c == '.') key += '\\';
      key += c;
    }
    if (m->rank != config.r) config.rank_pattern.emplace_back(key, m->rank);
    if (m->alpha != config.lora_alpha) config.alpha_pattern.emplace_back(key, m->alpha);
  }
}

}  // namespace

StatusOr<LoraAdapter> LoraAdapter::load(Model& model, const std::filesystem::path& dir) {
  const std::filesystem::path config_path = dir / kAdapterConfigFile;
  if (!path_exists(config_path)) {
    if (!path_exists(dir)) return absl::NotFoundError(str_cat(dir.string(), ": no such directory"));
    return absl::NotFoundError(str_cat(dir.string(), ": no ", kAdapterConfigFile, " (is it a PEFT adapter directory?)"));
  }
  const std::string source = config_path.string();
  TEMPER_ASSIGN_OR_RETURN(std::string text, read_file(config_path));
  TEMPER_ASSIGN_OR_RETURN(PeftLoraConfig config, parse_peft_lora_config(text, source));

  const std::filesystem::path weights_path = dir / kAdapterWeightsFile;
  if (!path_exists(weights_path)) {
    if (path_exists(dir / "adapter_model.bin")) {
      return absl::UnimplementedError(str_cat(dir.string(), ": adapter_model.bin (pickle) is not read; save the adapter "
                                                            "with safe_serialization=True"));
    }
    return absl::NotFoundError(str_cat(dir.string(), ": no ", kAdapterWeightsFile));
  }

  Model::Impl& mi = model.impl();
  const std::vector<LinearModuleRef> modules = linear_modules(mi.config);
  TEMPER_ASSIGN_OR_RETURN(std::vector<LinearModuleRef> targets, config_targets(config, modules, source));
  absl::StatusOr<std::vector<ModulePlan>> planned =
      plan_modules(targets, config.r, config.lora_alpha, config.rank_pattern, config.alpha_pattern, false);
  if (!planned.ok()) {
    return absl::InvalidArgumentError(str_cat(source, ": ", std::string(planned.status().message()),
                                              " (is the adapter for another base model?)"));
  }
  const std::vector<ModulePlan>& plans = *planned;

  TEMPER_ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::open(weights_path));
  const std::string where = weights_path.string();
  const std::vector<ExpectedTensor> expected = expected_tensors(plans, config.use_dora);
  std::set<std::string> expected_keys;
  for (const ExpectedTensor& e : expected) {
    expected_keys.insert(e.key);
    const SafetensorsEntry* entry = file.find(e.key);
    if (entry == nullptr) {
      return absl::InvalidArgumentError(str_cat(where, ": tensor ", e.key, " is missing (", source, " targets ",
                                                plans[e.module].module.name, ")"));
    }
    if (entry->shape != e.shape) {
      const ModulePlan& p = plans[e.module];
      return absl::InvalidArgumentError(str_cat(
          where, ": tensor ", e.key, " has shape ", shape_string(entry->shape), ", expected ", shape_string(e.shape),
          " (r=", p.rank, ", layer weight [", p.module.out_features, ", ", p.module.in_features,
          "]); is the adapter for another base model?"));
    }
  }
  for (const SafetensorsEntry& entry : file.entries()) {
    if (!expected_keys.count(entry.name)) {
      return absl::InvalidArgumentError(str_cat(where, ": tensor ", entry.name, " is not one this ",
                                                mi.config.model_type, " model and ", kAdapterConfigFile,
                                                " expect (an adapter for another base, or a feature temper does not load)"));
    }
  }

  LoraOptions options;
  options.rank = config.r;
  options.alpha = config.lora_alpha;
  options.dropout = config.lora_dropout;
  options.use_rslora = config.use_rslora;
  options.use_dora = config.use_dora;
  options.init = config.gaussian_init ? LoraOptions::Init::kGaussian : LoraOptions::Init::kPeft;
  options.rank_pattern = {config.rank_pattern.begin(), config.rank_pattern.end()};
  options.alpha_pattern = {config.alpha_pattern.begin(), config.alpha_pattern.end()};
  options.dtype = at::kFloat;
  if (config.target_regex || !config.exclude_modules.empty() || config.exclude_regex) {
    for (const LinearModuleRef& t : targets) options.target_modules.push_back(t.name);
  } else {
    options.target_modules = config.target_modules;
  }

  std::vector<std::shared_ptr<LoraModule>> loaded;
  for (const ModulePlan& p : plans) {
    auto m = std::make_shared<LoraModule>();
    m->name = p.module.name;
    m->layer = p.module.layer;
    m->slot = p.module.slot;
    m->rank = p.rank;
    m->alpha = p.alpha;
    m->scale = lora_scale(p.alpha, p.rank, config.use_rslora);
    loaded.push_back(std::move(m));
  }
  const at::Device device = mi.embed.device();
  for (const ExpectedTensor& e : expected) {
    TEMPER_ASSIGN_OR_RETURN(at::Tensor stored, file.tensor(e.key));
    if (!at::isFloatingType(stored.scalar_type())) {
      return absl::InvalidArgumentError(str_cat(where, ": tensor ", e.key, " has dtype ",
                                                c10::toString(stored.scalar_type()), "; adapter tensors are floating point"));
    }
    TEMPER_ASSIGN_OR_RETURN(at::Tensor value, guarded(str_cat("loading ", e.key), [&]() -> StatusOr<at::Tensor> {
                              // An owned copy: the adapter trains in place and must not pin the file.
                              return stored.to(device, at::kFloat, /*non_blocking=*/false, /*copy=*/true).requires_grad_(true);
                            }));
    // A NaN or infinity in an adapter would reach every output of its module (and, merged, the
    // base weights): refuse the file rather than load a poisoned adapter.
    TEMPER_ASSIGN_OR_RETURN(const int64_t bad, guarded(str_cat("checking ", e.key), [&]() -> StatusOr<int64_t> {
                              const at::Tensor nonfinite = at::isfinite(value).logical_not().flatten().nonzero();
                              return nonfinite.numel() == 0 ? int64_t{-1} : nonfinite[0].item<int64_t>();
                            }));
    if (bad >= 0) {
      return absl::InvalidArgumentError(str_cat(where, ": tensor ", e.key, " holds a NaN or infinity (flat index ", bad,
                                                "); the adapter file is damaged or its training diverged"));
    }
    LoraModule& m = *loaded[e.module];
    switch (e.kind) {
      case AdapterTensor::kA: m.a = value; break;
      case AdapterTensor::kB: m.b = value; break;
      case AdapterTensor::kMagnitude: m.magnitude = value; break;
    }
  }
  TEMPER_ASSIGN_OR_RETURN(std::unique_ptr<Impl> impl, install_adapter(mi, options, std::move(loaded)));
  return LoraAdapter(std::move(impl));
}

Status LoraAdapter::save(const std::filesystem::path& dir, std::string_view base_model_name_or_path) const {
  PeftLoraConfig config;
  config.r = impl_->options.rank;
  config.lora_alpha = impl_->options.alpha.value_or(2.0 * static_cast<double>(impl_->options.rank));
  config.lora_dropout = impl_->options.dropout;
  config.use_rslora = impl_->options.use_rslora;
  config.use_dora = impl_->options.use_dora;
  config.gaussian_init = impl_->options.init == LoraOptions::Init::kGaussian;
  std::vector<LinearModuleRef> targets;
  for (const LinearModuleRef& ref : impl_->all_modules) {
    if (impl_->module_of_weight.count(ref.name + ".weight")) targets.push_back(ref);
  }
  config.target_modules = peft_target_list(impl_->all_modules, targets);
  write_patterns(*impl_, targets, config);
  config.base_model_name_or_path = std::string(base_model_name_or_path);
  const std::string json = peft_lora_config_json(config);
  const NamedTensors tensors = named_parameters();

  return write_directory_atomic(
      dir,
      [&](const std::filesystem::path& tmp) -> absl::Status {
        TEMPER_RETURN_IF_ERROR(write_safetensors(tmp / kAdapterWeightsFile, tensors));
        return write_file_atomic(tmp / kAdapterConfigFile, json);
      },
      [](const std::filesystem::path& existing) -> absl::Status {
        if (path_exists(existing / kAdapterConfigFile)) return absl::OkStatus();
        return absl::FailedPreconditionError(str_cat(existing.string(), " exists and is not a PEFT adapter directory (no ",
                                                     kAdapterConfigFile, "); refusing to replace it; choose a new or "
                                                     "empty directory"));
      });
}

}  // namespace temper
