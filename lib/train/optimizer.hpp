// AdamW and SGD with momentum over fp32 master tensors, written out so that their state is
// ours to checkpoint and restore bit-exactly. The update rules follow torch.optim's
// single-tensor implementations operation for operation (so a PyTorch run and a temper run
// agree to rounding). When every tensor is a fp32 CUDA tensor of one device and this libtorch
// has torch's fused multi-tensor AdamW kernel (compat::fused_adamw, torch >= 2.0), AdamW runs
// through it instead: the same rule in a few launches for all tensors (torch.optim.AdamW with
// fused=True); CPU tensors and libtorch 1.13 keep the per-tensor path.
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
  at::Tensor master;  // fp32, updated in place
  bool decay = true;  // weight decay applies
};

class Optimizer {
 public:
  Optimizer(const OptimizerOptions& options, std::vector<OptimizedTensor> tensors);

  // One update with `grads` (fp32, one per tensor, same order) at learning rate `lr`.
  void step(const std::vector<at::Tensor>& grads, double lr);

  const std::vector<OptimizedTensor>& tensors() const { return tensors_; }
  int64_t steps_taken() const { return steps_; }

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

  // The fused AdamW path (see the top of this file). Tensors are grouped by whether weight decay
  // applies, since the kernel takes one weight decay per call: group_[0] decays, group_[1] not.
  bool step_fused(const std::vector<at::Tensor>& grads, double lr);
  struct FusedGroup {
    std::vector<size_t> index;  // positions in tensors_
    std::vector<at::Tensor> masters, exp_avg, exp_avg_sq;
  };
  bool fused_ = false;
  FusedGroup group_[2];
  at::Tensor step_count_;  // [] fp32 on the tensors' device: steps_, which the kernel reads
};

// Learning-rate multiplier for the optimizer step with 0-based index `step`, as transformers'
// get_{constant,linear,cosine}_schedule_with_warmup compute it.
double schedule_factor(const ScheduleOptions& schedule, int64_t step, int64_t total_steps);

}  // namespace temper
