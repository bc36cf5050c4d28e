#include <string>

#include "export/export_support.hpp"
#include "lora/lora_adapter_impl.hpp"
#include "model/model_impl.hpp"
#include "temper/export.hpp"
#include "util/status_macros.hpp"
#include "util/strings.hpp"
#include "util/torch_errors.hpp"

namespace temper {

Status export_merged_model(const Model& model, const LoraAdapter* adapter, const std::filesystem::path& dir,
                           at::ScalarType dtype) {
  if (export_dtype_name(dtype) == nullptr) {
    return absl::InvalidArgumentError(
        str_cat("export: dtype must be float32, bfloat16 or float16, not ", c10::toString(dtype)));
  }
  const Model::Impl& mi = model.impl();
  const LoraAdapter::Impl* lora = adapter != nullptr ? &adapter->impl() : nullptr;
  if (lora != nullptr && (lora->model != &mi || lora->removed)) {
    return absl::InvalidArgumentError(
        "export: the adapter is not installed on this model (created on another model, or removed)");
  }
  TEMPER_ASSIGN_OR_RETURN(nlohmann::ordered_json config, exported_config(mi, dtype));

  // One tensor at a time: fold, cast, move to the CPU, so that the peak is one export copy of
  // the weights plus one fp32 temporary.
  TEMPER_ASSIGN_OR_RETURN(NamedTensors tensors, guarded("export: preparing the weights", [&]() -> StatusOr<NamedTensors> {
                            NamedTensors out;
                            const_cast<Model&>(model).impl().for_each_dense_parameter(
                                [&](const ParamSpec& spec, const at::Tensor& tensor) {
                                  const at::Tensor folded = lora != nullptr ? lora->folded(spec.name, tensor) : tensor;
                                  out.emplace_back(spec.name, folded.detach().to(at::kCPU, dtype).contiguous());
                                });
                            return out;
                          }));

  return write_model_directory(mi, dir, tensors, config);
}

}  // namespace temper
