// temper's Trainer against PyTorch's training loop and PEFT: the same base model, data,
// optimizer, accumulation and clipping give the same loss trajectory
// (tools/fixtures/make_training_fixtures.py).
#include "io/safetensors.hpp"
#include "list_source.hpp"
#include "temper/lora_adapter.hpp"
#include "temper/trainer.hpp"
#include "test_support.hpp"

using namespace temper;
using namespace temper::testing;

namespace {

std::filesystem::path fixture() { return fixtures_dir() / "training"; }

std::vector<Batch> fixture_batches() {
  auto file = SafetensorsFile::open(fixture() / "data.safetensors");
  REQUIRE_OK(file);
  std::vector<Batch> batches;
  for (int i = 0; file->contains("input_ids_" + std::to_string(i)); ++i) {
    batches.push_back({file->tensor("input_ids_" + std::to_string(i)).value().clone(),
                       file->tensor("labels_" + std::to_string(i)).value().clone(),
                       {}});
  }
  return batches;
}

at::Tensor reference_losses(const std::string& file) {
  auto f = SafetensorsFile::open(fixture() / file);
  REQUIRE_OK(f);
  return f->tensor("losses").value().clone();
}

TrainerOptions reference_options(int64_t steps) {
  TrainerOptions options;
  options.max_steps = steps;
  options.gradient_accumulation_steps = 2;
  options.optimizer.lr = 1e-3;
  options.optimizer.weight_decay = 0.01;
  options.schedule = {ScheduleKind::kConstant, 0};
  options.max_grad_norm = 1.0;
  return options;
}

std::vector<double> run(Model& model, LoraAdapter* adapter, int64_t steps) {
  ListSource data(fixture_batches());
  TrainerOptions options = reference_options(steps);
  std::vector<double> losses;
  options.on_step = [&](const StepMetrics& m) { losses.push_back(m.loss); };
  auto trainer = Trainer::create(model, data, options, adapter);
  REQUIRE_OK(trainer);
  REQUIRE_OK(trainer->train());
  return losses;
}

}  // namespace

TEST_CASE("full fine-tuning follows PyTorch's AdamW loss trajectory", "[parity]") {
  if (!std::filesystem::exists(fixture() / "full.safetensors")) {
    WARN("tests/fixtures/training not generated yet (tools/fixtures/make_training_fixtures.py): skipped");
    return;
  }
  const at::Tensor reference = reference_losses("full.safetensors");
  auto model = Model::load(fixtures_dir() / "parity" / "llama_gqa");
  REQUIRE_OK(model);
  const auto losses = run(*model, nullptr, reference.numel());
  REQUIRE(static_cast<int64_t>(losses.size()) == reference.numel());
  for (size_t i = 0; i < losses.size(); ++i) {
    INFO("step " << i + 1);
    CHECK(losses[i] == Approx(reference[i].item<double>()).margin(1e-4));
  }
}

TEST_CASE("LoRA training follows PEFT's loss trajectory", "[parity]") {
  if (!std::filesystem::exists(fixture() / "lora.safetensors")) {
    WARN("tests/fixtures/training not generated yet (tools/fixtures/make_training_fixtures.py): skipped");
    return;
  }
  const at::Tensor reference = reference_losses("lora.safetensors");
  auto model = Model::load(fixtures_dir() / "parity" / "llama_gqa");
  REQUIRE_OK(model);
  auto adapter = LoraAdapter::load(*model, fixture() / "lora_init");
  REQUIRE_OK(adapter);
  const auto losses = run(*model, &*adapter, reference.numel());
  REQUIRE(static_cast<int64_t>(losses.size()) == reference.numel());
  for (size_t i = 0; i < losses.size(); ++i) {
    INFO("step " << i + 1);
    CHECK(losses[i] == Approx(reference[i].item<double>()).margin(1e-4));
  }
}
