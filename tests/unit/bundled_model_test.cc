// The bundled base model (assets/model) that the demo runs on: it loads with its tokenizer, and
// it has learned English (a sentence is far more likely than the same tokens shuffled).
#include <algorithm>
#include <random>

#include "temper/generation.hpp"
#include "temper/model.hpp"
#include "temper/tokenizer.hpp"
#include "test_support.hpp"

using namespace temper;
using namespace temper::testing;

TEST_CASE("the bundled model scores English far above shuffled English", "[unit]") {
  auto model = Model::load(bundled_model_dir());
  REQUIRE_OK(model);
  auto tokenizer = load_tokenizer(bundled_model_dir());
  REQUIRE_OK(tokenizer);
  CHECK(model->config().vocab_size == (*tokenizer)->vocab_size());
  CHECK(model->config().tie_word_embeddings);

  const std::string text =
      "The committee said that the city government had done a good job in the past year, and that the "
      "people of the state would have to decide on the new school program before the end of the month.";
  auto ids = (*tokenizer)->encode_with(text, true, true);
  REQUIRE_OK(ids);
  std::vector<TokenId> shuffled(ids->begin() + 1, ids->end() - 1);
  std::shuffle(shuffled.begin(), shuffled.end(), std::mt19937(7));
  shuffled.insert(shuffled.begin(), ids->front());
  shuffled.push_back(ids->back());

  auto ordered_ppl = evaluate_perplexity(*model, *ids);
  auto shuffled_ppl = evaluate_perplexity(*model, shuffled);
  REQUIRE_OK(ordered_ppl);
  REQUIRE_OK(shuffled_ppl);
  INFO("ordered " << ordered_ppl->perplexity << ", shuffled " << shuffled_ppl->perplexity);
  CHECK(ordered_ppl->perplexity < 100.0);
  CHECK(shuffled_ppl->perplexity > 5 * ordered_ppl->perplexity);

  GenerationOptions options;
  options.max_new_tokens = 12;
  auto continuation = generate(*model, *(*tokenizer)->encode_for_model("The doctor said that"), options);
  REQUIRE_OK(continuation);
  CHECK_FALSE(continuation->empty());
  REQUIRE_OK((*tokenizer)->decode(*continuation));
}
