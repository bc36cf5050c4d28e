// One adapted projection: its LoRA/DoRA tensors, the LinearDelta that computes its output, and
// the weight maths that merge() and export use.
//
//   LoRA:  y = W x + b + s * B(A(dropout(x)))
//   DoRA:  y = W x + b + (m/n - 1) * W dropout(x) + (m/n) * s * B(A(dropout(x))),
//          n = ||W + s B A||_row (fp32, no gradient)
// Without dropout (or when not training) DoRA's form is (m/n) * (W x + s B A x) + b. The DoRA
// expression is PEFT's (tuners/lora/dora.py), so outputs and gradients match it term by term.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <ATen/ATen.h>

#include "model/architecture.hpp"
#include "model/model_impl.hpp"

namespace temper {

struct LoraModule {
  std::string name;  // full module name, "model.layers.0.self_attn.q_proj"
  int64_t layer = 0;
  LinearSlot slot = LinearSlot::kQ;
  int64_t rank = 0;
  double alpha = 0.0;
  double scale = 0.0;      // alpha / r, or alpha / sqrt(r) with rsLoRA
  at::Tensor a;            // [r, in] adapter dtype, requires_grad
  at::Tensor b;            // [out, r] adapter dtype, requires_grad
  at::Tensor magnitude;    // [out] adapter dtype, requires_grad; DoRA only (undefined for LoRA)
  // DoRA while merged: m / ||W + s B A||_row [out] fp32 as it was at merge time, which unmerge
  // divides by (the merged weight's own norm differs).
  at::Tensor merged_factor;
};

// What every module of one adapter shares and may change after installation.
struct LoraRuntime {
  double dropout = 0.0;
  bool training = false;
};

class LoraDelta final : public LinearDelta {
 public:
  LoraDelta(std::shared_ptr<const LoraModule> module, std::shared_ptr<const LoraRuntime> runtime)
      : module_(std::move(module)), runtime_(std::move(runtime)) {}
  // x [..., in] in the model dtype -> [..., out] in the model dtype.
  at::Tensor forward(const at::Tensor& x, const Linear& base) const override;
  // LoRA (not DoRA) while its dropout is inactive.
  std::optional<LowRankTerm> low_rank_term() const override;

 private:
  std::shared_ptr<const LoraModule> module_;
  std::shared_ptr<const LoraRuntime> runtime_;
};

// s = alpha / r, or alpha / sqrt(r) with rsLoRA (rank-stabilised: the update's scale no longer
// shrinks as the rank grows).
double lora_scale(double alpha, int64_t rank, bool use_rslora);

// s * B @ A [out, in] fp32, without gradient.
at::Tensor lora_delta_weight(const LoraModule& module);

// DoRA's n = ||W + s B A||_row [out] fp32 for base weight `weight` [out, in], without gradient.
at::Tensor dora_weight_norm(const LoraModule& module, const at::Tensor& weight);

// The base weight `weight` [out, in] with the module folded in, in `weight`'s dtype: W + s B A
// (LoRA) or m / n * (W + s B A) (DoRA), computed in fp32. With `dora_factor` non-null it receives
// m / n [out] fp32 (undefined for LoRA).
at::Tensor merged_weight(const LoraModule& module, const at::Tensor& weight, at::Tensor* dora_factor = nullptr);

// The inverse of merged_weight() for a weight merged with `dora_factor` (undefined for LoRA).
at::Tensor unmerged_weight(const LoraModule& module, const at::Tensor& merged, const at::Tensor& dora_factor);

}  // namespace temper
