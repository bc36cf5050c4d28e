// temper against PEFT: adapters that PEFT saved for the llama_gqa parity model, with non-zero B
// (and a perturbed DoRA magnitude), and the logits PEFT computed with them
// (tools/fixtures/make_peft_fixtures.py, tests/fixtures/peft/VERSIONS.json).
#include <sys/stat.h>

#include "io/safetensors.hpp"
#include "temper/export.hpp"
#include "temper/lora_adapter.hpp"
#include "temper/model.hpp"
#include "model_support.hpp"

using namespace temper;
using namespace temper::testing;

namespace {

const char* const kVariants[] = {"lora", "rslora", "dora"};

std::filesystem::path peft_fixtures() { return fixtures_dir() / "peft"; }
std::filesystem::path base_dir() { return fixtures_dir() / "parity" / "llama_gqa"; }

bool have_fixtures() {
  struct stat st {};
  return ::stat(peft_fixtures().c_str(), &st) == 0;
}

at::Tensor stored(const std::filesystem::path& file, const std::string& key) {
  auto f = SafetensorsFile::open(file);
  REQUIRE_OK(f);
  auto t = f->tensor(key);
  REQUIRE_OK(t);
  return t->clone();
}

}  // namespace

TEST_CASE("adapters saved by PEFT give PEFT's logits", "[parity]") {
  if (!have_fixtures()) {
    WARN("tests/fixtures/peft is missing (tools/fixtures/make_peft_fixtures.py makes it on the GPU machine): skipped");
    return;
  }
  const at::Tensor ids = stored(base_dir() / "expected.safetensors", "input_ids");
  for (const std::string variant : kVariants) {
    INFO(variant);
    const std::filesystem::path dir = peft_fixtures() / variant;
    auto model = Model::load(base_dir());
    REQUIRE_OK(model);
    const at::Tensor base = logits_of(*model, ids);
    auto adapter = LoraAdapter::load(*model, dir);
    REQUIRE_OK(adapter);
    const at::Tensor expected = stored(dir / "expected.safetensors", "logits");
    const at::Tensor adapted = logits_of(*model, ids);
    CHECK(max_abs_diff(adapted, expected) < 1e-4);
    CHECK(max_abs_diff(base, expected) > 1e-2);  // the fixture's adapter does change the model

    REQUIRE_OK(adapter->merge());
    CHECK(max_abs_diff(logits_of(*model, ids), expected) < 1e-4);
    REQUIRE_OK(adapter->unmerge());

    // temper's own save of the PEFT adapter loads back to the same logits.
    TempDir tmp;
    REQUIRE_OK(adapter->save(tmp / "resaved", "llama_gqa"));
    adapter->remove();
    auto again = LoraAdapter::load(*model, tmp / "resaved");
    REQUIRE_OK(again);
    CHECK(max_abs_diff(logits_of(*model, ids), expected) < 1e-4);

    REQUIRE_OK(export_merged_model(*model, &*again, tmp / "merged", at::kFloat));
    auto merged = Model::load(tmp / "merged");
    REQUIRE_OK(merged);
    CHECK(max_abs_diff(logits_of(*merged, ids), expected) < 1e-4);
  }
}
