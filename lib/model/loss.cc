#include "model/loss.hpp"

namespace temper {

TokenLoss causal_lm_loss(const at::Tensor& logits, const at::Tensor& labels) {
  const int64_t vocab = logits.size(-1);
  const at::Tensor shifted_logits = logits.narrow(1, 0, logits.size(1) - 1).to(at::kFloat).reshape({-1, vocab});
  const at::Tensor shifted_labels = labels.narrow(1, 1, labels.size(1) - 1).reshape({-1});
  TokenLoss out;
  out.num_tokens = shifted_labels.ne(kIgnoreIndex).sum().item<int64_t>();
  out.sum = at::cross_entropy_loss(shifted_logits, shifted_labels, /*weight=*/{}, at::Reduction::Sum, kIgnoreIndex);
  return out;
}

}  // namespace temper
