#include "ops/linear_cross_entropy.hpp"

#include <algorithm>
#include <utility>

#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/custom_function.h>

#ifdef TEMPER_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "kernels/cross_entropy.cuh"
#include "ops/cuda_dispatch.hpp"
#endif

namespace temper {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

constexpr int64_t kIgnore = -100;
// Chunk budgets, counted as fp32 logits (the reference's working copy); the fused CUDA kernel
// works on the chunk in h's dtype, so a bf16 chunk takes half.
constexpr int64_t kChunkLogitBytes = int64_t{256} << 20;
// When the head's weight trains (full fine-tuning), every chunk adds its [V, H] weight gradient
// into an fp32 buffer: at vocab 128k that is a 1 GiB read-modify-write per chunk (15 ms of a
// 200 ms step with 16 chunks on an H200, docs/performance.md), so fewer, larger chunks win there;
// when one chunk holds every row (the 1B benchmark's 8k tokens: 2 GiB of bf16 logits) the weight
// gradient is one GEMM in the weight's dtype, with no fp32 buffer at all (3.9 ms of a 136 ms step).
constexpr int64_t kChunkLogitBytesTrainedHeadCuda = int64_t{8} << 30;
// On the CPU the reference adds an fp32 copy of the whole chunk, so the trained head keeps 1 GiB.
constexpr int64_t kChunkLogitBytesTrainedHeadCpu = int64_t{1} << 30;

class LinearCrossEntropy : public torch::autograd::Function<LinearCrossEntropy> {
 public:
  // want_grad: grad mode was on at the call (inside forward it is off).
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& h, const at::Tensor& weight,
                            const at::Tensor& labels, int64_t chunk_rows, bool want_grad) {
    const int64_t n = h.size(0);
    const bool grad_h = want_grad && h.requires_grad();
    const bool grad_w = want_grad && weight.requires_grad();
    at::Tensor loss = at::zeros({}, h.options().dtype(at::kFloat));
    at::Tensor dh = grad_h ? at::empty(h.sizes(), h.options()) : at::Tensor();  // contiguous, for mm_out by rows
    // Several chunks sum their weight gradients in fp32; a single chunk's is its GEMM's output.
    const bool one_chunk = chunk_rows >= n;
    at::Tensor dw = grad_w && !one_chunk ? at::zeros(weight.sizes(), weight.options().dtype(at::kFloat)) : at::Tensor();
    const at::Tensor w_t = weight.t();
    for (int64_t start = 0; start < n; start += chunk_rows) {
      const int64_t rows = std::min(chunk_rows, n - start);
      const at::Tensor hc = h.narrow(0, start, rows);
      const at::Tensor lc = labels.narrow(0, start, rows);
      // Logits in h's dtype as the unfused head computes them; the softmax in fp32 as
      // transformers' loss. With a gradient due, the logits become d loss / d logits in place.
      const at::Tensor logits = at::matmul(hc, w_t);  // [rows, V]
      loss.add_(softmax_cross_entropy_rows_(logits, lc, grad_h || grad_w).sum());
      if (!grad_h && !grad_w) continue;
      if (grad_h) {
        at::Tensor dh_rows = dh.narrow(0, start, rows);  // contiguous: rows of a contiguous [N, H]
        at::mm_out(dh_rows, logits, weight);
      }
      if (grad_w) {
        at::Tensor part = at::matmul(logits.t(), hc);  // [V, H] in the weight's dtype
        if (one_chunk) {
          dw = std::move(part);
        } else {
          dw.add_(part);
        }
      }
    }
    ctx->save_for_backward({dh, grad_w ? dw.to(weight.scalar_type()) : at::Tensor()});
    return loss;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& g = grads[0];  // [] fp32
    at::Tensor dh = saved[0].defined() ? saved[0] * g.to(saved[0].scalar_type()) : at::Tensor();
    at::Tensor dw = saved[1].defined() ? saved[1] * g.to(saved[1].scalar_type()) : at::Tensor();
    return {dh, dw, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor softmax_cross_entropy_rows_reference_(const at::Tensor& logits, const at::Tensor& labels, bool write_grad) {
  const at::Tensor lf = logits.to(at::kFloat);  // logits itself when already fp32
  const at::Tensor valid = labels.ne(kIgnore);
  const at::Tensor target = at::where(valid, labels, at::zeros_like(labels)).unsqueeze(1);
  const at::Tensor lse = at::logsumexp(lf, {1});
  const at::Tensor loss = (lse - lf.gather(1, target).squeeze(1)) * valid;
  if (write_grad) {
    // softmax - onehot(label), zero on ignored rows; in place over the fp32 logits.
    lf.sub_(lse.unsqueeze(1)).exp_();
    const at::Tensor validf = valid.to(at::kFloat).unsqueeze(1);
    lf.scatter_add_(1, target, -validf);
    lf.mul_(validf);
    if (!lf.is_same(logits)) logits.copy_(lf);
  }
  return loss;
}

at::Tensor softmax_cross_entropy_rows_(const at::Tensor& logits, const at::Tensor& labels, bool write_grad) {
  TORCH_CHECK(logits.dim() == 2 && labels.dim() == 1 && labels.size(0) == logits.size(0),
              "softmax_cross_entropy_rows_: logits [rows, V] and labels [rows] expected, got ", logits.sizes(), " and ",
              labels.sizes());
  TORCH_CHECK(labels.scalar_type() == at::kLong && labels.device() == logits.device(),
              "softmax_cross_entropy_rows_: labels must be int64 on the logits' device");
#ifdef TEMPER_WITH_CUDA
  const at::ScalarType t = logits.scalar_type();
  if (logits.is_cuda() && logits.is_contiguous() && (t == at::kFloat || t == at::kBFloat16 || t == at::kHalf) &&
      logits.numel() > 0) {
    const c10::cuda::CUDAGuard guard(logits.device());
    const at::Tensor lc = labels.contiguous();
    at::Tensor loss = at::empty({logits.size(0)}, logits.options().dtype(at::kFloat));
    dispatch_float_type(t, "softmax_cross_entropy_rows_", [&](auto tag) {
      using T = decltype(tag);
      check_cuda(launch_softmax_cross_entropy_rows(reinterpret_cast<T*>(logits.data_ptr()), loss.data_ptr<float>(),
                                                   lc.data_ptr<int64_t>(), logits.size(0), logits.size(1), write_grad,
                                                   at::cuda::getCurrentCUDAStream()),
                 "softmax cross-entropy kernel");
    });
    return loss;
  }
#endif
  return softmax_cross_entropy_rows_reference_(logits, labels, write_grad);
}

at::Tensor linear_cross_entropy_sum(const at::Tensor& h, const at::Tensor& weight, const at::Tensor& labels,
                                    int64_t chunk_rows) {
  TORCH_CHECK(h.dim() == 2 && weight.dim() == 2 && h.size(1) == weight.size(1), "linear_cross_entropy_sum: h [N, H] and "
              "weight [V, H] expected, got ", h.sizes(), " and ", weight.sizes());
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == h.size(0), "linear_cross_entropy_sum: labels [N] expected");
  const bool want_grad = at::GradMode::is_enabled() && (h.requires_grad() || weight.requires_grad());
  if (chunk_rows <= 0) {
    const int64_t trained_head = h.is_cuda() ? kChunkLogitBytesTrainedHeadCuda : kChunkLogitBytesTrainedHeadCpu;
    const int64_t budget = want_grad && weight.requires_grad() ? trained_head : kChunkLogitBytes;
    chunk_rows = std::max<int64_t>(1, budget / (4 * std::max<int64_t>(weight.size(0), 1)));
  }
  return LinearCrossEntropy::apply(h, weight, labels.to(at::kLong), chunk_rows, want_grad);
}

}  // namespace temper
