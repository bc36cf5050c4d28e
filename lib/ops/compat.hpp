// The one place where temper's code differs between the libtorch versions it builds against:
// Debian's 1.13.1 (CPU, CI) and PyTorch 2.11 (CUDA, the GPU machine). Everything else in the
// code base is version-independent.
#pragma once

#include <optional>
#include <string_view>
#include <vector>

#include <ATen/ATen.h>
#include <torch/version.h>

#define TEMPER_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace c10d {
class ProcessGroup;
class Backend;
}  // namespace c10d

namespace torch::autograd::profiler {
struct KinetoEvent;
}  // namespace torch::autograd::profiler

namespace temper::compat {

// The c10d class whose collectives temper calls on a Gloo or NCCL group: torch 2.x splits the
// group into ProcessGroup (front) and Backend (ProcessGroupGloo/NCCL derive from it); in 1.13
// ProcessGroupGloo/NCCL derive from ProcessGroup itself. Both have the same allreduce/broadcast.
#if TEMPER_TORCH_AT_LEAST(2, 0)
using C10dGroup = c10d::Backend;
#else
using C10dGroup = c10d::ProcessGroup;
#endif

// Scaled dot-product attention over q [B, Hq, Tq, D], k/v [B, Hkv, Tk, D] (Hq a multiple of Hkv,
// grouped-query attention), any float dtype. `mask` is an optional boolean broadcastable to [B, Hq, Tq, Tk]
// (true = may attend), or a float bias in q's dtype added to the scaled scores (-inf hides a key),
// that replaces `is_causal` when given. Returns [B, Hq, Tq, D] in q's dtype.
// torch >= 2.5: at::scaled_dot_product_attention (flash / memory-efficient kernels on CUDA).
// Older: the math form, softmax in fp32, as transformers' eager attention computes it.
at::Tensor scaled_dot_product_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                        const std::optional<at::Tensor>& mask, bool is_causal,
                                        double scale);

// safetensors dtype name ("BF16", "F32", ...) -> the libtorch dtype, when this libtorch has one.
std::optional<at::ScalarType> scalar_type_from_safetensors(std::string_view dtype);
// The inverse; nullopt for dtypes safetensors cannot name.
std::optional<std::string_view> safetensors_name(at::ScalarType type);

// AdamW with decoupled weight decay over lists of tensors in torch's fused multi-tensor CUDA
// kernel (at::_fused_adamw_, torch >= 2.0): a few launches for all tensors together instead of
// about eight ATen kernels per tensor, which is what made full fine-tuning's optimizer step slow.
// True when this libtorch has that kernel for `t`: a fp32 CUDA tensor.
bool fused_adamw_available(const at::Tensor& t);

// One AdamW step in place. params, grads, exp_avgs, exp_avg_sqs: lists of equal length whose
// i-th tensors are fp32, non-overlapping and dense, on one CUDA device, with equal sizes and
// strides. `step`: a fp32 scalar tensor on that device holding this step's 1-based number; the
// kernel reads it for the bias corrections and does not change it. The rule is torch.optim.AdamW's
// (= Optimizer's per-tensor path): p *= 1 - lr*wd; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g;
// p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps). Call only where fused_adamw_available().
void fused_adamw(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
                 const at::Tensor& step, double lr, double beta1, double beta2, double weight_decay, double eps);

// The 2-norm of each tensor, each accumulated and returned as a [] fp32 tensor whatever the
// tensor's dtype (bf16 gradients included). torch >= 2.6: at::_foreach_norm with an fp32 result,
// a few multi-tensor launches for the whole list; older: one linalg_vector_norm per tensor.
std::vector<at::Tensor> foreach_norm_fp32(at::TensorList tensors);

// Duration of a Kineto profiler event (an op on the host, a kernel or copy on the device) in
// microseconds: KinetoEvent::durationUs() in 1.13, durationNs() since 2.1.
double profiler_event_duration_us(const torch::autograd::profiler::KinetoEvent& event);
// Its start on the profiler's clock, in microseconds (startUs() in 1.13, startNs() since 2.1).
double profiler_event_start_us(const torch::autograd::profiler::KinetoEvent& event);

}  // namespace temper::compat
