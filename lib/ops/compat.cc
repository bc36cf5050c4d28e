#include "ops/compat.hpp"

#include <cmath>
#include <limits>
#include <vector>

#include <torch/csrc/autograd/profiler_kineto.h>

namespace temper::compat {
namespace {

at::Tensor repeat_kv(const at::Tensor& x, int64_t groups) {
  if (groups == 1) return x;
  return x.repeat_interleave(groups, /*dim=*/1);
}

[[maybe_unused]] at::Tensor math_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                           const std::optional<at::Tensor>& mask, bool is_causal, double scale) {
  const int64_t groups = q.size(1) / k.size(1);
  const at::Tensor kk = repeat_kv(k, groups);
  const at::Tensor vv = repeat_kv(v, groups);
  at::Tensor scores = at::matmul(q, kk.transpose(-2, -1)) * scale;  // [B, H, Tq, Tk]
  std::optional<at::Tensor> allowed = mask;
  if (!allowed && is_causal) {
    allowed = at::ones({q.size(2), k.size(2)}, q.options().dtype(at::kBool)).tril();
  }
  if (allowed && allowed->scalar_type() == at::kBool) {
    scores = scores.masked_fill(allowed->logical_not(), -std::numeric_limits<float>::infinity());
  } else if (allowed) {
    scores = scores + *allowed;  // an additive bias (ALiBi), -inf where hidden
  }
  const at::Tensor probs = at::softmax(scores, -1, at::kFloat).to(q.scalar_type());
  return at::matmul(probs, vv);
}

}  // namespace

at::Tensor scaled_dot_product_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                        const std::optional<at::Tensor>& mask, bool is_causal,
                                        double scale) {
#if TEMPER_TORCH_AT_LEAST(2, 5)
  const bool gqa = q.size(1) != k.size(1);
  c10::optional<at::Tensor> attn_mask;
  if (mask) attn_mask = *mask;
  return at::scaled_dot_product_attention(q, k, v, attn_mask, /*dropout_p=*/0.0,
                                          /*is_causal=*/is_causal && !mask, scale, gqa);
#else
  return math_attention(q, k, v, mask, is_causal, scale);
#endif
}

std::optional<at::ScalarType> scalar_type_from_safetensors(std::string_view dtype) {
  if (dtype == "F64") return at::kDouble;
  if (dtype == "F32") return at::kFloat;
  if (dtype == "F16") return at::kHalf;
  if (dtype == "BF16") return at::kBFloat16;
  if (dtype == "I64") return at::kLong;
  if (dtype == "I32") return at::kInt;
  if (dtype == "I16") return at::kShort;
  if (dtype == "I8") return at::kChar;
  if (dtype == "U8") return at::kByte;
  if (dtype == "BOOL") return at::kBool;
#if TEMPER_TORCH_AT_LEAST(2, 1)
  if (dtype == "F8_E4M3") return at::kFloat8_e4m3fn;
  if (dtype == "F8_E5M2") return at::kFloat8_e5m2;
#endif
#if TEMPER_TORCH_AT_LEAST(2, 3)
  if (dtype == "U16") return at::kUInt16;
  if (dtype == "U32") return at::kUInt32;
  if (dtype == "U64") return at::kUInt64;
#endif
  return std::nullopt;
}

std::optional<std::string_view> safetensors_name(at::ScalarType type) {
  switch (type) {
    case at::kDouble: return "F64";
    case at::kFloat: return "F32";
    case at::kHalf: return "F16";
    case at::kBFloat16: return "BF16";
    case at::kLong: return "I64";
    case at::kInt: return "I32";
    case at::kShort: return "I16";
    case at::kChar: return "I8";
    case at::kByte: return "U8";
    case at::kBool: return "BOOL";
#if TEMPER_TORCH_AT_LEAST(2, 1)
    case at::kFloat8_e4m3fn: return "F8_E4M3";
    case at::kFloat8_e5m2: return "F8_E5M2";
#endif
#if TEMPER_TORCH_AT_LEAST(2, 3)
    case at::kUInt16: return "U16";
    case at::kUInt32: return "U32";
    case at::kUInt64: return "U64";
#endif
    default: return std::nullopt;
  }
}

bool fused_adamw_available(const at::Tensor& t) {
#if TEMPER_TORCH_AT_LEAST(2, 0)
  return t.defined() && t.is_cuda() && t.scalar_type() == at::kFloat;
#else
  return false;  // 1.13 has no fused AdamW kernel
#endif
}

void fused_adamw(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
                 const at::Tensor& step, double lr, double beta1, double beta2, double weight_decay, double eps) {
#if TEMPER_TORCH_AT_LEAST(2, 0)
  if (params.empty()) return;
  // The kernel reads one step tensor per parameter; they all hold the same count, so one shared
  // scalar serves every entry (it is only read).
  const std::vector<at::Tensor> steps(params.size(), step);
  at::_fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, /*max_exp_avg_sqs=*/at::TensorList(), steps, lr, beta1,
                    beta2, weight_decay, eps, /*amsgrad=*/false, /*maximize=*/false);
#else
  TORCH_CHECK(false, "compat::fused_adamw: this libtorch (", TORCH_VERSION_MAJOR, ".", TORCH_VERSION_MINOR,
              ") has no fused AdamW kernel; check fused_adamw_available() first");
#endif
}

std::vector<at::Tensor> foreach_norm_fp32(at::TensorList tensors) {
#if TEMPER_TORCH_AT_LEAST(2, 6)
  if (tensors.empty()) return {};
  return at::_foreach_norm(tensors, 2, at::kFloat);
#else
  std::vector<at::Tensor> norms;
  norms.reserve(tensors.size());
  for (const at::Tensor& t : tensors) {
    norms.push_back(at::linalg_vector_norm(t, 2, c10::nullopt, /*keepdim=*/false, at::kFloat));
  }
  return norms;
#endif
}

double profiler_event_duration_us(const torch::autograd::profiler::KinetoEvent& event) {
#if TEMPER_TORCH_AT_LEAST(2, 1)
  return static_cast<double>(event.durationNs()) / 1e3;
#else
  return static_cast<double>(event.durationUs());
#endif
}

double profiler_event_start_us(const torch::autograd::profiler::KinetoEvent& event) {
#if TEMPER_TORCH_AT_LEAST(2, 1)
  return static_cast<double>(event.startNs()) / 1e3;
#else
  return static_cast<double>(event.startUs());
#endif
}

}  // namespace temper::compat
