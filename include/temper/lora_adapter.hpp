// LoraAdapter: low-rank adapters (LoRA, rsLoRA, DoRA) installed on a Model's linear
// projections, saved and loaded in PEFT's format (adapter_config.json +
// adapter_model.safetensors), merged into and out of the base weights.
//
// For a targeted projection with base weight W [out, in] and bias b:
//   LoRA:  y = W x + b + s * B(A(dropout(x))),   A [r, in], B [out, r]
//   DoRA:  y = (m / ||W + s B A||_row) * (W x + s B A x) + b,   m [out] trainable,
//          the row norm treated as a constant (no gradient), as the DoRA paper and PEFT do
// with s = alpha / r, or alpha / sqrt(r) with rsLoRA. The maths, defaults and PEFT
// compatibility are described in docs/lora.md.
//
// Ownership: an adapter keeps a reference to the Model it was created on or loaded onto; the
// Model must outlive it (or the adapter must be remove()d first). Base weights are never copied;
// creating an adapter freezes every model parameter (requires_grad false), as PEFT does, and only
// the adapter's own tensors train. One thread at a time.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "temper/api.hpp"
#include "temper/model.hpp"
#include "temper/status.hpp"

namespace temper {

struct LoraOptions {
  int64_t rank = 16;
  // Default 2 * rank (of the global rank: a module whose rank rank_pattern changes keeps this
  // alpha unless alpha_pattern changes it too, as PEFT's single lora_alpha does).
  std::optional<double> alpha;
  // Applied to the adapter's input while training (set_training(true)); 0 skips the mask.
  double dropout = 0.0;
  bool use_rslora = false;  // s = alpha / sqrt(r) instead of alpha / r
  bool use_dora = false;    // weight-decomposed LoRA (a trainable magnitude per output row)
  // Which projections get an adapter. An entry without wildcard names a module whose full name
  // equals it or ends with "." + it ("q_proj", "layers.0.self_attn.q_proj"), as PEFT's list
  // form; an entry with *, ? or [ is a glob over the full module name
  // ("model.layers.*.self_attn.q_proj"). Empty: every linear projection of every block
  // (q, k, v, o, gate, up, down for llama-family), the practice that works best.
  std::vector<std::string> target_modules;
  // Per-module overrides, keyed as PEFT keys them: a regular expression that must match a
  // suffix of the full module name starting after a "." ("q_proj", "layers\.0\..*"). The first
  // matching key in key order wins (PEFT reads them in the sorted order it writes them).
  std::map<std::string, int64_t> rank_pattern;
  std::map<std::string, double> alpha_pattern;
  // kPeft: A kaiming-uniform (a = sqrt(5)), B zeros; kGaussian: A normal(0, 1/r), B zeros.
  // Both make the adapter an identity at start.
  enum class Init { kPeft, kGaussian } init = Init::kPeft;
  uint64_t seed = 0;  // A's initial values are a function of the seed alone
  // Adapter parameter dtype: fp32 masters by default, cast to the activation dtype in forward.
  at::ScalarType dtype = at::kFloat;
};

class TEMPER_API LoraAdapter {
 public:
  // Installs a freshly initialised adapter on every targeted projection of `model`. Errors
  // (INVALID_ARGUMENT unless said otherwise) name what to fix: a target entry or pattern key that
  // matches nothing, a rank < 1 or larger than min(in, out) of a targeted layer, a dropout
  // outside [0, 1); FAILED_PRECONDITION when a projection already carries an adapter.
  static StatusOr<LoraAdapter> create(Model& model, const LoraOptions& options = {});

  // Loads a PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors) onto
  // `model`. Every tensor's name and shape is checked against the model and the config: an
  // adapter for another base is INVALID_ARGUMENT naming the first mismatching tensor with its
  // expected and actual shapes; a missing or unexpected tensor is named. peft_type must be LORA.
  // Features temper does not implement (modules_to_save, fan_in_fan_out, bias other than
  // "none", layers_to_transform, ...) are UNIMPLEMENTED naming the field. Tensors load as fp32.
  static StatusOr<LoraAdapter> load(Model& model, const std::filesystem::path& dir);

  LoraAdapter(LoraAdapter&&) noexcept;
  LoraAdapter& operator=(LoraAdapter&&) noexcept;
  LoraAdapter(const LoraAdapter&) = delete;
  LoraAdapter& operator=(const LoraAdapter&) = delete;
  // Uninstalls the adapter (see remove()).
  ~LoraAdapter();

  // Writes `dir` in PEFT's format (fields PEFT 0.12+ knows, JSON indent 2 with sorted keys,
  // tensors under PEFT's names). The directory appears whole or not at all; an existing one is
  // replaced only when it is empty or a PEFT adapter (FAILED_PRECONDITION otherwise).
  Status save(const std::filesystem::path& dir, std::string_view base_model_name_or_path) const;

  // The trainable tensors under their PEFT on-disk names, in model order (for each targeted
  // module: lora_A.weight [r, in], lora_B.weight [out, r], then lora_magnitude_vector [out] with
  // DoRA), all in options().dtype with requires_grad true. They are the adapter's own tensors:
  // an optimizer updates them in place.
  std::vector<std::pair<std::string, at::Tensor>> named_parameters() const;

  // Folds the adapter into the base weights (W += s B A computed in fp32, then cast; DoRA:
  // W = m / ||W + s B A||_row * (W + s B A)) so that forward costs nothing extra; the adapter
  // stops adding its delta while merged. unmerge() is the inverse up to rounding. Both are
  // no-ops when already in the requested state; neither is allowed after remove().
  Status merge();
  Status unmerge();
  bool merged() const;

  // Every model parameter under its Hugging Face name, in model order, with the adapter's
  // deltas folded into the targeted weights (new tensors in the model's dtype); the model is
  // not modified. Untargeted parameters are the model's own tensors.
  StatusOr<std::vector<std::pair<std::string, at::Tensor>>> merged_weights() const;

  // Uninstalls the adapter from the model. Unmerged: the model computes its base function
  // again. Merged: the merged weights stay (PEFT's merge_and_unload). Idempotent.
  void remove();

  // Dropout is applied only while training; evaluation and generation are deterministic.
  void set_training(bool training);
  bool training() const;

  // The options in effect (alpha resolved; for a loaded adapter, those of its config).
  const LoraOptions& options() const;
  // Full names of the adapted modules, in model order ("model.layers.0.self_attn.q_proj").
  std::vector<std::string> target_modules() const;
  int64_t num_parameters() const;

  struct Impl;
  // For temper's own components (export, trainer); not part of the stable API.
  const Impl& impl() const { return *impl_; }

 private:
  explicit LoraAdapter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace temper
