// Tiny models for tests that need one without a fixture.
#pragma once

#include "io/checkpoint.hpp"
#include "temper/model.hpp"
#include "test_support.hpp"

namespace temper::testing {

inline ModelConfig tiny_config(ModelFamily family = ModelFamily::kLlama) {
  ModelConfig c;
  c.model_type = std::string(model_family_name(family));
  c.family = family;
  c.vocab_size = 97;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.max_position_embeddings = 64;
  c.rms_norm_eps = 1e-5;
  c.qkv_bias = family == ModelFamily::kQwen2;
  c.eos_token_ids = {2};
  return c;
}

// A random model whose weights are larger than transformers' init, so outputs carry signal.
inline Model tiny_model(const ModelConfig& config, uint64_t seed = 0) {
  Model model = Model::random(config, {}, seed).value();
  at::NoGradGuard no_grad;
  at::manual_seed(static_cast<int64_t>(seed) + 1);
  for (auto& [name, p] : model.named_parameters()) {
    if (p.dim() == 2) p.normal_(0.0, 0.15);
    else p.add_(at::randn_like(p) * 0.1);
  }
  return model;
}

inline at::Tensor random_ids(int64_t batch, int64_t seq, int64_t vocab, uint64_t seed) {
  at::manual_seed(static_cast<int64_t>(seed));
  return at::randint(0, vocab, {batch, seq}, at::kLong);
}

// Logits [B, T, vocab] of a forward pass without autograd; the test fails on an error status.
inline at::Tensor logits_of(const Model& model, const at::Tensor& ids) {
  at::NoGradGuard no_grad;
  ForwardInput input;
  input.input_ids = ids;
  auto out = model.forward(input);
  REQUIRE_OK(out);
  return out->logits;
}

}  // namespace temper::testing
