#include <ATen/core/grad_mode.h>
#include <cmath>

#include "model_support.hpp"
#include "temper/generation.hpp"

using namespace temper;
using namespace temper::testing;

namespace {

// Reference for greedy decoding: a full forward pass over the whole sequence at every step,
// no cache.
std::vector<TokenId> greedy_without_cache(const Model& model, std::vector<TokenId> seq, int64_t steps,
                                          TokenId stop) {
  at::NoGradGuard no_grad;
  std::vector<TokenId> out;
  for (int64_t s = 0; s < steps; ++s) {
    at::Tensor ids = at::empty({1, static_cast<int64_t>(seq.size())}, at::kLong);
    for (size_t i = 0; i < seq.size(); ++i) ids[0][static_cast<int64_t>(i)] = seq[i];
    ForwardInput input;
    input.input_ids = ids;
    const TokenId next = static_cast<TokenId>(model.forward(input).value().logits[0][-1].argmax().item<int64_t>());
    out.push_back(next);
    seq.push_back(next);
    if (next == stop) break;
  }
  return out;
}

}  // namespace

TEST_CASE("greedy generation with the KV cache equals argmax over full forward passes", "[unit]") {
  ModelConfig config = tiny_config();
  config.eos_token_ids = {};  // no stop token
  const Model model = tiny_model(config, 31);
  const std::vector<TokenId> prompt = {5, 17, 42, 8};
  GenerationOptions options;
  options.max_new_tokens = 12;
  auto generated = generate(model, prompt, options);
  REQUIRE_OK(generated);
  CHECK(generated->size() == 12);
  CHECK(*generated == greedy_without_cache(model, prompt, 12, -1));
}

TEST_CASE("generation stops after a stop token and includes it", "[unit]") {
  ModelConfig config = tiny_config();
  const Model model = tiny_model(config, 31);
  const std::vector<TokenId> prompt = {5, 17, 42, 8};
  GenerationOptions options;
  options.max_new_tokens = 12;
  options.stop_token_ids = {};
  const std::vector<TokenId> free_run = greedy_without_cache(model, prompt, 12, -1);
  options.stop_token_ids = {free_run[2]};
  auto stopped = generate(model, prompt, options);
  REQUIRE_OK(stopped);
  // Ends at the first occurrence of the stop token.
  const auto first = std::find(free_run.begin(), free_run.end(), free_run[2]) - free_run.begin();
  CHECK(stopped->size() == static_cast<size_t>(first + 1));
  CHECK(stopped->back() == free_run[2]);
}

TEST_CASE("sampling is reproducible from the seed and top_p near 0 is greedy", "[unit]") {
  ModelConfig config = tiny_config();
  config.eos_token_ids = {};
  const Model model = tiny_model(config, 33);
  const std::vector<TokenId> prompt = {1, 2, 3};
  GenerationOptions options;
  options.max_new_tokens = 16;
  options.temperature = 1.5;
  options.seed = 7;
  auto a = generate(model, prompt, options);
  auto b = generate(model, prompt, options);
  REQUIRE_OK(a);
  REQUIRE_OK(b);
  CHECK(*a == *b);
  options.seed = 8;
  CHECK(*generate(model, prompt, options) != *a);
  options.top_p = 1e-9;
  CHECK(*generate(model, prompt, options) == greedy_without_cache(model, prompt, 16, -1));
}

TEST_CASE("generate rejects an empty prompt, bad options and out-of-vocabulary ids", "[unit]") {
  const Model model = tiny_model(tiny_config());
  CHECK(generate(model, {}).status().code() == absl::StatusCode::kInvalidArgument);
  GenerationOptions bad;
  bad.top_p = 0.0;
  CHECK(generate(model, {1}, bad).status().code() == absl::StatusCode::kInvalidArgument);
  bad = {};
  bad.temperature = -1;
  CHECK(generate(model, {1}, bad).status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(generate(model, {1, 100000}).status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("perplexity is exp of the mean NLL over non-overlapping windows", "[unit]") {
  const ModelConfig config = tiny_config();
  const Model model = tiny_model(config, 35);
  std::vector<TokenId> tokens;
  for (int i = 0; i < 23; ++i) tokens.push_back(static_cast<TokenId>((i * 37 + 11) % config.vocab_size));
  PerplexityOptions options;
  options.window = 8;
  options.batch_size = 2;
  auto result = evaluate_perplexity(model, tokens, options);
  REQUIRE_OK(result);

  // Reference: windows [0,8) [8,16) [16,23), each scored alone.
  at::NoGradGuard no_grad;
  double nll = 0;
  int64_t scored = 0;
  for (int64_t begin = 0; begin < 23; begin += 8) {
    const int64_t len = std::min<int64_t>(8, 23 - begin);
    at::Tensor ids = at::empty({1, len}, at::kLong);
    for (int64_t t = 0; t < len; ++t) ids[0][t] = tokens[begin + t];
    ForwardInput input;
    input.input_ids = ids;
    const at::Tensor logp = at::log_softmax(model.forward(input).value().logits.to(at::kDouble), -1);
    for (int64_t t = 0; t + 1 < len; ++t) {
      nll -= logp[0][t][tokens[begin + t + 1]].item<double>();
      ++scored;
    }
  }
  CHECK(result->tokens == scored);
  CHECK(result->tokens == 20);
  CHECK(result->mean_nll == Approx(nll / scored).epsilon(1e-6));
  CHECK(result->perplexity == Approx(std::exp(nll / scored)).epsilon(1e-6));

  CHECK(evaluate_perplexity(model, {3}).status().code() == absl::StatusCode::kInvalidArgument);
  options.window = 1;
  CHECK(evaluate_perplexity(model, tokens, options).status().code() == absl::StatusCode::kInvalidArgument);
}
