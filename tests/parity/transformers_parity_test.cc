// temper against transformers: tiny random models saved by transformers, and the logits, loss,
// gradients and greedy continuations transformers computed for them
// (tools/fixtures/make_parity_fixtures.py, tests/fixtures/parity/VERSIONS.json).
#include "io/safetensors.hpp"
#include "temper/generation.hpp"
#include "temper/model.hpp"
#include "test_support.hpp"

using namespace temper;
using namespace temper::testing;

namespace {

const char* const kFixtures[] = {"llama_gqa", "mistral_window", "qwen2_bias", "llama_bias_linear"};

std::filesystem::path fixture(const std::string& name) { return fixtures_dir() / "parity" / name; }

at::Tensor expected(const std::string& name, const std::string& key) {
  auto file = SafetensorsFile::open(fixture(name) / "expected.safetensors");
  REQUIRE_OK(file);
  auto t = file->tensor(key);
  REQUIRE_OK(t);
  return t->clone();
}

}  // namespace

TEST_CASE("logits, loss and gradients match transformers in fp32", "[parity]") {
  for (const std::string name : kFixtures) {
    INFO(name);
    auto model = Model::load(fixture(name));
    REQUIRE_OK(model);
    auto file = SafetensorsFile::open(fixture(name) / "expected.safetensors");
    REQUIRE_OK(file);
    for (auto& [param_name, p] : model->named_parameters()) p.requires_grad_(true);

    ForwardInput input;
    input.input_ids = expected(name, "input_ids");
    input.labels = expected(name, "labels");
    auto out = model->forward(input);
    REQUIRE_OK(out);
    CHECK(max_abs_diff(out->logits, expected(name, "logits")) < 1e-4);
    CHECK(std::abs(out->loss.item<double>() - expected(name, "loss").item<double>()) < 1e-4);

    out->loss.backward();
    int grads = 0;
    for (const auto& entry : file->entries()) {
      if (entry.name.rfind("grad.", 0) != 0) continue;
      const std::string param = entry.name.substr(5);
      INFO(param);
      auto p = model->parameter(param);
      REQUIRE_OK(p);
      REQUIRE(p->grad().defined());
      CHECK(max_abs_diff(p->grad(), expected(name, entry.name)) < 1e-4);
      ++grads;
    }
    CHECK(grads >= 3);
  }
}

TEST_CASE("greedy generation produces transformers' ids", "[parity]") {
  for (const std::string name : kFixtures) {
    INFO(name);
    auto model = Model::load(fixture(name));
    REQUIRE_OK(model);
    const at::Tensor prompt = expected(name, "generate_prompt");
    const at::Tensor reference = expected(name, "generate_output");
    std::vector<TokenId> prompt_ids(prompt.data_ptr<int64_t>(), prompt.data_ptr<int64_t>() + prompt.numel());
    GenerationOptions options;
    options.max_new_tokens = 8;
    auto generated = generate(*model, prompt_ids, options);
    REQUIRE_OK(generated);
    std::vector<TokenId> want(reference.data_ptr<int64_t>(), reference.data_ptr<int64_t>() + reference.numel());
    CHECK(*generated == want);
  }
}

TEST_CASE("a sharded transformers checkpoint loads to the same model", "[parity]") {
  auto sharded = Model::load(fixture("llama_gqa_sharded"));
  REQUIRE_OK(sharded);
  ForwardInput input;
  input.input_ids = expected("llama_gqa", "input_ids");
  at::NoGradGuard no_grad;
  auto out = sharded->forward(input);
  REQUIRE_OK(out);
  CHECK(max_abs_diff(out->logits, expected("llama_gqa", "logits")) < 1e-4);
}
