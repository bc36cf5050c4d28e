// BLOOM against transformers and PEFT: tiny random BloomForCausalLM models (4 heads: power-of-two
// ALiBi slopes; 6 heads: the extra slopes, and post-layernorm residuals), the logits, loss,
// gradients, slopes and greedy continuations transformers computed for them, and a PEFT LoRA
// adapter with PEFT's logits (tools/fixtures/make_bloom_fixtures.py,
// tests/fixtures/parity/VERSIONS_bloom.json).
#include <ATen/core/grad_mode.h>

#include "io/safetensors.hpp"
#include "model/model_impl.hpp"
#include "model_support.hpp"
#include "temper/export.hpp"
#include "temper/generation.hpp"
#include "temper/lora_adapter.hpp"
#include "temper/model.hpp"

using namespace temper;
using namespace temper::testing;

namespace {

const char* const kBloomFixtures[] = {"bloom_4heads", "bloom_6heads"};

std::filesystem::path fixture(const std::string& name) { return fixtures_dir() / "parity" / name; }

at::Tensor stored(const std::filesystem::path& file, const std::string& key) {
  auto f = SafetensorsFile::open(file);
  REQUIRE_OK(f);
  auto t = f->tensor(key);
  REQUIRE_OK(t);
  return t->clone();
}

at::Tensor expected(const std::string& name, const std::string& key) {
  return stored(fixture(name) / "expected.safetensors", key);
}

}  // namespace

TEST_CASE("BLOOM logits, loss, gradients and ALiBi slopes match transformers in fp32", "[parity]") {
  for (const std::string name : kBloomFixtures) {
    INFO(name);
    auto model = Model::load(fixture(name));
    REQUIRE_OK(model);
    CHECK(model->config().family == ModelFamily::kBloom);
    CHECK(at::equal(model->impl().alibi_slopes, expected(name, "alibi_slopes")));
    auto file = SafetensorsFile::open(fixture(name) / "expected.safetensors");
    REQUIRE_OK(file);
    for (auto& [param_name, p] : model->named_parameters()) p.requires_grad_(true);

    ForwardInput input;
    input.input_ids = expected(name, "input_ids");
    input.labels = expected(name, "labels");
    auto out = model->forward(input);
    REQUIRE_OK(out);
    CHECK(max_abs_diff(out->logits, expected(name, "logits")) < 1e-4);
    CHECK(std::abs(out->loss.item<double>() - expected(name, "loss").item<double>()) < 1e-5);

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
    CHECK(grads == 7);
  }
}

TEST_CASE("BLOOM greedy generation produces transformers' ids", "[parity]") {
  for (const std::string name : kBloomFixtures) {
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

TEST_CASE("a BLOOM adapter saved by PEFT gives PEFT's logits, and temper's save of it loads back", "[parity]") {
  const std::filesystem::path dir = fixtures_dir() / "peft" / "bloom_lora";
  const at::Tensor ids = stored(dir / "expected.safetensors", "input_ids");
  const at::Tensor want = stored(dir / "expected.safetensors", "logits");
  auto model = Model::load(fixture("bloom_4heads"));
  REQUIRE_OK(model);
  const at::Tensor base = logits_of(*model, ids);
  auto adapter = LoraAdapter::load(*model, dir);
  REQUIRE_OK(adapter);
  CHECK(adapter->target_modules().size() == 8);  // query_key_value, dense, dense_h_to_4h, dense_4h_to_h x 2 layers
  CHECK(max_abs_diff(logits_of(*model, ids), want) < 1e-4);
  CHECK(max_abs_diff(base, want) > 1e-2);  // the fixture's adapter does change the model

  REQUIRE_OK(adapter->merge());
  CHECK(max_abs_diff(logits_of(*model, ids), want) < 1e-4);
  REQUIRE_OK(adapter->unmerge());

  TempDir tmp;
  REQUIRE_OK(adapter->save(tmp / "resaved", "bloom_4heads"));
  auto resaved = SafetensorsFile::open(tmp / "resaved" / "adapter_model.safetensors");
  REQUIRE_OK(resaved);
  auto original = SafetensorsFile::open(dir / "adapter_model.safetensors");
  REQUIRE_OK(original);
  // The same tensor names as PEFT's (base_model.model.transformer.h.{i}.self_attention...).
  std::vector<std::string> ours, theirs;
  for (const auto& e : resaved->entries()) ours.push_back(e.name);
  for (const auto& e : original->entries()) theirs.push_back(e.name);
  std::sort(ours.begin(), ours.end());
  std::sort(theirs.begin(), theirs.end());
  CHECK(ours == theirs);
  CHECK(resaved->contains("base_model.model.transformer.h.1.self_attention.query_key_value.lora_A.weight"));
  adapter->remove();
  auto again = LoraAdapter::load(*model, tmp / "resaved");
  REQUIRE_OK(again);
  CHECK(max_abs_diff(logits_of(*model, ids), want) < 1e-4);

  REQUIRE_OK(export_merged_model(*model, &*again, tmp / "merged", at::kFloat));
  auto merged = Model::load(tmp / "merged");
  REQUIRE_OK(merged);
  CHECK(max_abs_diff(logits_of(*merged, ids), want) < 1e-4);
}

TEST_CASE("BLOOM bf16 on CUDA matches transformers' bf16 logits within bf16 tolerance", "[cuda][parity]") {
  SKIP_WITHOUT_CUDA();
  for (const std::string name : kBloomFixtures) {
    INFO(name);
    auto model = Model::load(fixture(name), {at::kBFloat16, at::kCUDA});
    REQUIRE_OK(model);
    const at::Tensor reference = expected(name, "logits_bf16");
    const at::Tensor fp32 = expected(name, "logits");
    ForwardInput input;
    input.input_ids = expected(name, "input_ids");
    at::NoGradGuard no_grad;
    auto out = model->forward(input);
    REQUIRE_OK(out);
    const double scale = fp32.abs().max().item<double>();
    const double ours = max_abs_diff(out->logits, fp32);
    const double theirs = max_abs_diff(reference, fp32);
    INFO("temper bf16 vs fp32: " << ours << ", transformers bf16 vs fp32: " << theirs << ", scale " << scale);
    CHECK(ours <= std::max(2.0 * theirs, 0.02 * scale));
    CHECK(max_abs_diff(out->logits, reference) <= std::max(3.0 * theirs, 0.03 * scale));
  }
}
