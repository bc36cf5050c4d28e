// The causal language-model loss as transformers defines it: logits at position t are scored
// against labels[t + 1] (the shift happens here, labels come unshifted), in fp32, positions whose
// label is -100 ignored.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

namespace temper {

inline constexpr int64_t kIgnoreIndex = -100;

struct TokenLoss {
  at::Tensor sum;          // [] fp32, summed negative log-likelihood of the scored tokens
  int64_t num_tokens = 0;  // scored tokens
};

// logits [B, T, V] any float dtype, labels [B, T] int64.
TokenLoss causal_lm_loss(const at::Tensor& logits, const at::Tensor& labels);

}  // namespace temper
