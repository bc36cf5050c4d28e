#include "ops/linear_cross_entropy.hpp"

#include <algorithm>

#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/custom_function.h>

namespace temper {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

constexpr int64_t kIgnore = -100;
constexpr int64_t kChunkLogitBytes = int64_t{256} << 20;
// When the head's weight trains (full fine-tuning), every chunk adds its [V, H] weight gradient
// into an fp32 buffer: at vocab 128k that is a 1 GiB read-modify-write per chunk (15 ms of a
// 200 ms step with 16 chunks on an H200, docs/performance.md), so fewer, larger chunks win there.
constexpr int64_t kChunkLogitBytesTrainedHead = int64_t{1} << 30;

class LinearCrossEntropy : public torch::autograd::Function<LinearCrossEntropy> {
 public:
  // want_grad: grad mode was on at the call (inside forward it is off).
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& h, const at::Tensor& weight,
                            const at::Tensor& labels, int64_t chunk_rows, bool want_grad) {
    const int64_t n = h.size(0);
    const int64_t vocab = weight.size(0);
    const bool grad_h = want_grad && h.requires_grad();
    const bool grad_w = want_grad && weight.requires_grad();
    at::Tensor loss = at::zeros({}, h.options().dtype(at::kFloat));
    at::Tensor dh = grad_h ? at::empty_like(h) : at::Tensor();
    at::Tensor dw = grad_w ? at::zeros(weight.sizes(), weight.options().dtype(at::kFloat)) : at::Tensor();
    const at::Tensor w_t = weight.t();
    for (int64_t start = 0; start < n; start += chunk_rows) {
      const int64_t rows = std::min(chunk_rows, n - start);
      const at::Tensor hc = h.narrow(0, start, rows);
      const at::Tensor lc = labels.narrow(0, start, rows);
      // Logits in h's dtype as the unfused head computes them, then fp32 as transformers' loss.
      at::Tensor logits = at::matmul(hc, w_t).to(at::kFloat);  // [rows, V]
      const at::Tensor valid = lc.ne(kIgnore);
      const at::Tensor target = at::where(valid, lc, at::zeros_like(lc)).unsqueeze(1);
      const at::Tensor lse = at::logsumexp(logits, {1});
      const at::Tensor picked = logits.gather(1, target).squeeze(1);
      loss.add_(((lse - picked) * valid).sum());
      if (!grad_h && !grad_w) continue;
      // d loss / d logits = softmax - onehot(label), zero on ignored rows; in place over the logits.
      at::Tensor& p = logits;
      p.sub_(lse.unsqueeze(1)).exp_();
      const at::Tensor validf = valid.to(at::kFloat).unsqueeze(1);
      p.scatter_add_(1, target, -validf);
      p.mul_(validf);
      const at::Tensor pd = p.to(h.scalar_type());
      if (grad_h) dh.narrow(0, start, rows).copy_(at::matmul(pd, weight));
      if (grad_w) dw.add_(at::matmul(pd.t(), hc));
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

at::Tensor linear_cross_entropy_sum(const at::Tensor& h, const at::Tensor& weight, const at::Tensor& labels,
                                    int64_t chunk_rows) {
  TORCH_CHECK(h.dim() == 2 && weight.dim() == 2 && h.size(1) == weight.size(1), "linear_cross_entropy_sum: h [N, H] and "
              "weight [V, H] expected, got ", h.sizes(), " and ", weight.sizes());
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == h.size(0), "linear_cross_entropy_sum: labels [N] expected");
  const bool want_grad = at::GradMode::is_enabled() && (h.requires_grad() || weight.requires_grad());
  if (chunk_rows <= 0) {
    const int64_t budget = want_grad && weight.requires_grad() ? kChunkLogitBytesTrainedHead : kChunkLogitBytes;
    chunk_rows = std::max<int64_t>(1, budget / (4 * std::max<int64_t>(weight.size(0), 1)));
  }
  return LinearCrossEntropy::apply(h, weight, labels.to(at::kLong), chunk_rows, want_grad);
}

}  // namespace temper
