// The inside of a LoraAdapter, shared with the components that read it (export, trainer).
// Not installed.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <absl/status/statusor.h>

#include "lora/lora_linear.hpp"
#include "lora/lora_targets.hpp"
#include "model/model_impl.hpp"
#include "temper/lora_adapter.hpp"

namespace temper {

struct LoraAdapter::Impl {
  Model::Impl* model = nullptr;  // not owned; outlives the adapter
  LoraOptions options;           // alpha resolved
  std::vector<LinearModuleRef> all_modules;            // every projection of the model, for target lists
  std::vector<std::shared_ptr<LoraModule>> modules;    // the adapted ones, in model order
  std::vector<std::shared_ptr<const LinearDelta>> deltas;  // deltas[i] computes modules[i]
  std::map<std::string, size_t> module_of_weight;      // "<module>.weight" -> index into modules
  std::shared_ptr<LoraRuntime> runtime;
  bool merged = false;
  bool removed = false;

  Linear& linear(const LoraModule& module) const { return model->layers[module.layer].linear(module.slot); }

  // The parameter `name` ([out, in] for a targeted weight) as the adapted model sees it: with the
  // module folded in (a new tensor in `tensor`'s dtype) when it is a targeted weight and the
  // adapter is not merged, else `tensor` itself.
  at::Tensor folded(const std::string& name, const at::Tensor& tensor) const;
};

// Builds the inside of an adapter from its initialised or loaded modules (model order), checks
// that no projection already carries an adapter (FAILED_PRECONDITION), freezes every model
// parameter and installs the deltas.
absl::StatusOr<std::unique_ptr<LoraAdapter::Impl>> install_adapter(Model::Impl& model, const LoraOptions& options,
                                                                    std::vector<std::shared_ptr<LoraModule>> modules);

}  // namespace temper
