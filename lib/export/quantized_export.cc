// export_quantized_model: a merged model written as a bitsandbytes NF4 checkpoint, with the
// per-layer cost of re-quantization (include/temper/export.hpp).
#include <cmath>
#include <string>

#include <ATen/core/grad_mode.h>

#include "export/export_support.hpp"
#include "lora/lora_adapter_impl.hpp"
#include "model/model_impl.hpp"
#include "quant/bnb_checkpoint.hpp"
#include "temper/export.hpp"
#include "util/log.hpp"
#include "util/status_macros.hpp"
#include "util/strings.hpp"
#include "util/torch_errors.hpp"

namespace temper {

StatusOr<QuantizedExportReport> export_quantized_model(const Model& model, const LoraAdapter* adapter,
                                                       const std::filesystem::path& dir,
                                                       const QuantizedExportOptions& options) {
  if (export_dtype_name(options.dtype) == nullptr) {
    return absl::InvalidArgumentError(
        str_cat("export: dtype must be float32, bfloat16 or float16, not ", c10::toString(options.dtype)));
  }
  if (!(options.warn_relative_error >= 0)) {
    return absl::InvalidArgumentError("export: warn_relative_error must be a non-negative number");
  }
  const Model::Impl& mi = model.impl();
  const LoraAdapter::Impl* lora = adapter != nullptr ? &adapter->impl() : nullptr;
  if (lora != nullptr && (lora->model != &mi || lora->removed)) {
    return absl::InvalidArgumentError(
        "export: the adapter is not installed on this model (created on another model, or removed)");
  }
  // Refuse bad NF4 options before any work (quantize() would, at the first layer).
  const int64_t b = options.nf4.blocksize;
  if (b < 32 || b > 4096 || (b & (b - 1)) != 0) {
    return absl::InvalidArgumentError(str_cat("export: NF4 blocksize ", b, " is not a power of two in [32, 4096]"));
  }
  TEMPER_ASSIGN_OR_RETURN(nlohmann::ordered_json config, exported_config(mi, options.dtype));
  config["quantization_config"] = bnb_quantization_config(options.nf4, options.dtype);

  QuantizedExportReport report;
  NamedTensors tensors;
  absl::Status status = absl::OkStatus();
  TEMPER_RETURN_IF_ERROR(guarded("export: quantizing the weights", [&]() -> absl::Status {
    at::NoGradGuard no_grad;
    const_cast<Model&>(model).impl().for_each_dense_parameter([&](const ParamSpec& spec, const at::Tensor& tensor) {
      if (!status.ok()) return;
      const at::Tensor folded = lora != nullptr ? lora->folded(spec.name, tensor) : tensor;
      if (mi.linear_of_weight(spec.name) == nullptr) {
        tensors.emplace_back(spec.name, folded.detach().to(at::kCPU, options.dtype).contiguous());
        return;
      }
      // What bitsandbytes would quantize: the merged weight in the export dtype.
      const at::Tensor merged = folded.detach().to(options.dtype);
      absl::StatusOr<QuantState> state = Nf4Quantizer::quantize(merged, options.nf4);
      if (!state.ok()) {
        status = absl::Status(state.status().code(), str_cat(spec.name, ": ", std::string(state.status().message())));
        return;
      }
      absl::StatusOr<at::Tensor> back = Nf4Quantizer::dequantize(*state, at::kFloat);
      if (!back.ok()) {
        status = back.status();
        return;
      }
      RequantizationError error;
      error.name = spec.name;
      const at::Tensor merged32 = folded.detach().to(at::kFloat);
      error.delta_norm = (merged32 - tensor.detach().to(at::kFloat)).norm().item<double>();
      error.error_norm = (*back - merged32).norm().item<double>();
      error.relative_error = error.delta_norm > 0 ? error.error_norm / error.delta_norm : 0.0;
      if (error.delta_norm > 0 && error.relative_error > options.warn_relative_error) {
        report.warnings.push_back(str_cat(spec.name, ": re-quantization error is ", error.relative_error,
                                          "x the adapter's update (||dW|| = ", error.delta_norm, ")"));
      }
      report.max_relative_error = std::max(report.max_relative_error, error.relative_error);
      report.layers.push_back(std::move(error));
      const std::string prefix = spec.name.substr(0, spec.name.size() - std::string(".weight").size());
      for (auto& [name, t] : Nf4Quantizer::to_tensors(*state, prefix)) {
        tensors.emplace_back(name, t.to(at::kCPU).contiguous());
      }
    });
    return absl::OkStatus();
  }));
  TEMPER_RETURN_IF_ERROR(status);
  if (!report.warnings.empty()) {
    log_message(LogLevel::kWarning,
                str_cat("export_quantized_model: ", report.warnings.size(), " of ", report.layers.size(),
                        " layers lose more than ", options.warn_relative_error,
                        " of their adapter update to re-quantization (largest: ", report.max_relative_error,
                        "x); export_merged_model keeps the merged weights exact"));
  }
  TEMPER_RETURN_IF_ERROR(write_model_directory(mi, dir, tensors, config));
  return report;
}

}  // namespace temper
