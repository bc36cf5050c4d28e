// AdamW and SGD with momentum over fp32 master tensors, written out so that their state is
// ours to checkpoint and restore bit-exactly. The update rules are torch.optim's (the per-tensor
// ATen path follows its single-tensor implementations operation for operation; the fused kernels
// compute the same formula and agree to fp32 rounding). Each master may stand beside a model parameter of another dtype
// (bf16/fp16): a step leaves that parameter holding the master rounded to its dtype. AdamW on
// CUDA takes one of two fast paths: when every gradient is fp32, every master is its own
// parameter and this libtorch has torch's fused multi-tensor AdamW kernel (compat::fused_adamw,
// torch >= 2.0), that kernel updates all tensors in a few launches (torch.optim.AdamW with
// fused=True); otherwise, in a CUDA build, temper's fused kernel (ops/adamw_update.hpp) updates
// each tensor in one pass that reads the gradient in its own dtype, scales it and writes the
// parameter. CPU tensors, SGD and CUDA-less builds keep the per-tensor ATen path.
#pragma once

#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <absl/status/status.h>

#include "io/safetensors.hpp"
#include "temper/trainer.hpp"

namespace temper {

struct OptimizedTensor {
  std::string name;
  at::Tensor master;  // [...] fp32, updated in place
  bool decay = true;  // weight decay applies
  at::Tensor param{};  // [...] the model's tensor (fp32/bf16/fp16); the master itself when that is fp32.
                       // Left undefined, it is the master.
};

class Optimizer {
 public:
  Optimizer(const OptimizerOptions& options, std::vector<OptimizedTensor> tensors);

  // One update at learning rate `lr` with `grads`, one per tensor in the same order and shape,
  // each in its param's dtype or fp32; each is used as grad * grad_scale (the clip coefficient).
  // Afterwards every param that is not its master holds the master rounded to the param's dtype.
  // The grads' contents afterwards are unspecified: torch's fused path scales them in place.
  void step(const std::vector<at::Tensor>& grads, double lr, double grad_scale = 1.0);

  // Copies every master into its param (rounded to the param's dtype), for masters written
  // outside step() (the Trainer's resume writes them from a checkpoint through tensors()).
  void write_params();

  const std::vector<OptimizedTensor>& tensors() const { return tensors_; }
  int64_t steps_taken() const { return steps_; }
  // Whether the last step() went through torch's fused multi-tensor kernel (false before the
  // first step): lets tests and logs tell the paths apart, which compute the same update.
  bool last_step_fused() const { return last_step_fused_; }

  // Moments under "<name><suffix>" for each of state_suffixes(): ".exp_avg" and ".exp_avg_sq"
  // (AdamW) or ".momentum_buffer" (SGD); the step count is saved by the caller.
  NamedTensors state() const;
  static std::vector<std::string> state_suffixes(OptimizerKind kind);
  absl::Status load_state(const SafetensorsFile& file, int64_t steps_taken);

 private:
  OptimizerOptions options_;
  std::vector<OptimizedTensor> tensors_;
  std::vector<at::Tensor> exp_avg_;     // AdamW first moment, or SGD momentum buffer
  std::vector<at::Tensor> exp_avg_sq_;  // AdamW second moment
  int64_t steps_ = 0;

  // The state tensors of tensor i (handles to the live storage), in state_suffixes() order.
  std::vector<at::Tensor> state_of(size_t i) const;

  // torch's fused multi-tensor AdamW path (see the top of this file); false when these grads do
  // not fit it. Tensors are grouped by whether weight decay applies, since the kernel takes one
  // weight decay per call: group_[0] decays, group_[1] not.
  bool step_fused(const std::vector<at::Tensor>& grads, double lr, double grad_scale);
  // Tensor i alone: temper's fused kernel on CUDA, else the per-tensor ATen ops.
  void step_one(size_t i, const at::Tensor& grad, double lr, double grad_scale);
  struct FusedGroup {
    std::vector<size_t> index;  // positions in tensors_
    std::vector<at::Tensor> masters, exp_avg, exp_avg_sq;
  };
  bool fused_ = false;  // every tensor fits torch's fused path (grads permitting)
  bool last_step_fused_ = false;
  FusedGroup group_[2];
  at::Tensor step_count_;  // [] fp32 on the tensors' device: steps_, which the kernel reads
};

// Learning-rate multiplier for the optimizer step with 0-based index `step`, as transformers'
// get_{constant,linear,cosine}_schedule_with_warmup compute it.
double schedule_factor(const ScheduleOptions& schedule, int64_t step, int64_t total_steps);

}  // namespace temper
