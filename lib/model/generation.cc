#include "temper/generation.hpp"

#include <algorithm>
#include <cmath>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include "util/strings.hpp"

#include "util/status_macros.hpp"
#include "util/torch_errors.hpp"

namespace temper {
namespace {

at::Tensor ids_tensor(const std::vector<TokenId>& ids, int64_t begin, int64_t count) {
  at::Tensor t = at::empty({1, count}, at::kLong);
  auto acc = t.accessor<int64_t, 2>();
  for (int64_t i = 0; i < count; ++i) acc[0][i] = ids[begin + i];
  return t;
}

// Picks the next token from logits [vocab] (fp32, CPU).
StatusOr<TokenId> pick(const at::Tensor& logits, const GenerationOptions& options, at::Generator& gen) {
  if (!at::isfinite(logits).all().item<bool>()) {
    return absl::FailedPreconditionError("generate: the model produced a NaN or infinite logit (non-finite weights?)");
  }
  if (options.temperature <= 0.0) return static_cast<TokenId>(logits.argmax().item<int64_t>());
  // In double (a float scalar would round a temperature below ~1e-45 to 0), with the maximum
  // taken off first so that every scaled logit is <= 0: a tiny temperature sends the others to
  // -inf (probability 0) instead of overflowing to inf - inf = NaN in the softmax.
  const at::Tensor scaled = logits.to(at::kDouble);
  at::Tensor probs = at::softmax((scaled - scaled.max()) / options.temperature, -1);
  if (options.top_p < 1.0) {
    auto [sorted, order] = probs.sort(/*dim=*/-1, /*descending=*/true);
    const at::Tensor before = sorted.cumsum(-1) - sorted;  // mass of strictly more likely tokens
    sorted.masked_fill_(before >= options.top_p, 0.0);     // always keeps the most likely token
    probs = at::zeros_like(probs).scatter_(-1, order, sorted);
  }
  return static_cast<TokenId>(at::multinomial(probs, 1, /*replacement=*/false, gen).item<int64_t>());
}

}  // namespace

StatusOr<std::vector<TokenId>> generate(const Model& model, const std::vector<TokenId>& prompt,
                                        const GenerationOptions& options) {
  if (prompt.empty()) return absl::InvalidArgumentError("generate: the prompt is empty");
  if (options.max_new_tokens < 0) return absl::InvalidArgumentError("generate: max_new_tokens must be >= 0");
  if (!(options.temperature >= 0.0) || !(options.top_p > 0.0 && options.top_p <= 1.0)) {
    return absl::InvalidArgumentError(str_cat("generate: need temperature >= 0 and top_p in (0, 1], got ",
                                                   options.temperature, " and ", options.top_p));
  }
  std::vector<int64_t> stops(options.stop_token_ids.begin(), options.stop_token_ids.end());
  if (stops.empty()) stops = model.config().eos_token_ids;

  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(options.seed);
  std::vector<TokenId> out;
  KvCache cache;
  at::NoGradGuard no_grad;
  ForwardInput input;
  input.input_ids = ids_tensor(prompt, 0, static_cast<int64_t>(prompt.size()));
  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    TEMPER_ASSIGN_OR_RETURN(ForwardOutput fwd, model.forward(input, &cache));
    TEMPER_ASSIGN_OR_RETURN(const TokenId next, guarded("generate: sampling", [&]() -> StatusOr<TokenId> {
                              return pick(fwd.logits[0][-1].to(at::kCPU, at::kFloat), options, gen);
                            }));
    out.push_back(next);
    if (std::find(stops.begin(), stops.end(), next) != stops.end()) break;
    input.input_ids = at::full({1, 1}, static_cast<int64_t>(next), at::kLong);
  }
  return out;
}

StatusOr<PerplexityResult> evaluate_perplexity(const Model& model, const std::vector<TokenId>& tokens,
                                               const PerplexityOptions& options) {
  if (tokens.size() < 2) return absl::InvalidArgumentError("evaluate_perplexity: need at least 2 tokens");
  int64_t window = options.window > 0 ? options.window : std::min<int64_t>(model.config().max_position_embeddings, 1024);
  if (window < 2) return absl::InvalidArgumentError("evaluate_perplexity: window must be at least 2 tokens");
  if (options.batch_size < 1) return absl::InvalidArgumentError("evaluate_perplexity: batch_size must be >= 1");

  at::NoGradGuard no_grad;
  const int64_t total = static_cast<int64_t>(tokens.size());
  double nll = 0.0;
  int64_t scored = 0;
  // Full windows go in batches; the tail (if it holds anything to score) runs alone.
  for (int64_t begin = 0; begin < total - 1;) {
    const int64_t full_windows = std::min(options.batch_size, (total - begin) / window);
    const int64_t rows = full_windows > 0 ? full_windows : 1;
    const int64_t len = full_windows > 0 ? window : total - begin;
    at::Tensor ids = at::empty({rows, len}, at::kLong);
    auto acc = ids.accessor<int64_t, 2>();
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t t = 0; t < len; ++t) acc[r][t] = tokens[begin + r * len + t];
    }
    ForwardInput input;
    input.input_ids = ids;
    input.labels = ids;
    TEMPER_ASSIGN_OR_RETURN(ForwardOutput out, model.forward(input));
    nll += out.loss_sum.item<double>();
    scored += out.num_tokens;
    begin += rows * len;
  }
  PerplexityResult result;
  result.tokens = scored;
  result.mean_nll = nll / static_cast<double>(scored);
  result.perplexity = std::exp(result.mean_nll);
  return result;
}

}  // namespace temper
