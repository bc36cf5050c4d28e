// Evaluation helpers on a Model: text generation with a KV cache, and perplexity.
#pragma once

#include <cstdint>
#include <vector>

#include "temper/api.hpp"
#include "temper/model.hpp"
#include "temper/status.hpp"
#include "temper/token.hpp"

namespace temper {

struct GenerationOptions {
  int64_t max_new_tokens = 32;
  // 0 = greedy (argmax); otherwise logits are divided by the temperature before sampling.
  double temperature = 0.0;
  // Nucleus sampling: sample among the most likely tokens whose probabilities sum to top_p.
  double top_p = 1.0;
  uint64_t seed = 0;
  // Generation stops after emitting one of these. Empty: the config's eos_token_id(s).
  std::vector<TokenId> stop_token_ids;
};

// Continues `prompt` (non-empty, ids in the vocabulary) and returns only the new tokens,
// including the stop token when one ended the generation. Deterministic for a given seed.
TEMPER_API StatusOr<std::vector<TokenId>> generate(const Model& model, const std::vector<TokenId>& prompt,
                                                   const GenerationOptions& options = {});

struct PerplexityOptions {
  // Tokens per evaluated window; 0 = the model's max_position_embeddings (capped at 1024).
  int64_t window = 0;
  int64_t batch_size = 8;  // windows per forward pass
};

struct PerplexityResult {
  double mean_nll = 0.0;    // mean negative log-likelihood per scored token (nats)
  double perplexity = 0.0;  // exp(mean_nll)
  int64_t tokens = 0;       // scored tokens
};

// Perplexity of a token stream, cut into non-overlapping windows; the first token of each
// window is context only (not scored). Needs at least 2 tokens.
TEMPER_API StatusOr<PerplexityResult> evaluate_perplexity(const Model& model, const std::vector<TokenId>& tokens,
                                                          const PerplexityOptions& options = {});

}  // namespace temper
