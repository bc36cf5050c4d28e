// The process that tests/reliability/crash_test.py kills with SIGKILL, over and over, while it
// writes checkpoints (docs/reliability.md, "Crash safety").
//
//   temper_crash_writer <run_dir> <max_steps> [--final <weights.safetensors>]
//
// Trains a tiny LLaMA model on the CPU for max_steps, with a checkpoint after every step (so a
// random kill most likely lands inside a checkpoint write) and the newest three kept. At start
// it checks every checkpoint in run_dir: each one listed under a step name must verify against
// its manifest (exit 3 otherwise: a partially written or partially deleted checkpoint was
// visible), then resumes from the newest. Every step prints "step <n> <loss as hex float>"
// so the driver can check that a resumed run repeats the uninterrupted run's losses bit for
// bit; --final writes the trained weights when the run completes.
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>  // at::NoGradGuard: libtorch 2.x no longer brings it with ATen.h

#include "io/safetensors.hpp"
#include "temper/batch.hpp"
#include "temper/model.hpp"
#include "temper/trainer.hpp"
#include "train/checkpoint_dir.hpp"

using namespace temper;

namespace {

int fail(const std::string& what, const absl::Status& status) {
  std::fprintf(stderr, "crash_writer: %s: %s\n", what.c_str(), status.ToString().c_str());
  return 2;
}

ModelConfig tiny_config() {
  ModelConfig c;
  c.model_type = "llama";
  c.family = ModelFamily::kLlama;
  c.vocab_size = 97;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.max_position_embeddings = 64;
  c.rms_norm_eps = 1e-5;
  c.eos_token_ids = {2};
  return c;
}

std::vector<std::vector<TokenId>> documents(int count, int64_t vocab) {
  std::vector<std::vector<TokenId>> docs;
  std::mt19937 rng(11);
  for (int d = 0; d < count; ++d) {
    std::vector<TokenId> doc;
    const TokenId start = static_cast<TokenId>(rng() % vocab);
    for (int i = 0; i < 24; ++i) doc.push_back(static_cast<TokenId>((start + 3 * i) % vocab));
    docs.push_back(doc);
  }
  return docs;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 && argc != 5) {
    std::fprintf(stderr, "usage: %s <run_dir> <max_steps> [--final <weights.safetensors>]\n", argv[0]);
    return 1;
  }
  const std::filesystem::path run_dir = argv[1];
  const int64_t max_steps = std::stoll(argv[2]);
  const std::filesystem::path final_path = argc == 5 ? argv[4] : "";
  constexpr char kPrefix[] = "step-";

  // Every checkpoint visible under a step name must be complete.
  absl::StatusOr<std::vector<std::filesystem::path>> listed = list_checkpoints(run_dir, kPrefix);
  if (!listed.ok()) return fail("listing checkpoints", listed.status());
  for (const std::filesystem::path& dir : *listed) {
    const absl::Status status = verify_checkpoint_dir(dir);
    if (!status.ok()) {
      std::printf("BAD %s %s\n", dir.string().c_str(), status.ToString().c_str());
      std::fflush(stdout);
      return 3;
    }
  }

  const ModelConfig config = tiny_config();
  absl::StatusOr<Model> model = Model::random(config, {}, 7);
  if (!model.ok()) return fail("creating the model", model.status());
  {
    at::NoGradGuard no_grad;
    at::manual_seed(8);
    for (auto& [name, p] : model->named_parameters()) {
      if (p.dim() == 2) p.normal_(0.0, 0.15);
      else p.add_(at::randn_like(p) * 0.1);
    }
  }
  PackedTextOptions data_options;
  data_options.batch_size = 4;
  data_options.seq_len = 16;
  data_options.seed = 5;
  auto data = PackedTextSource::create(documents(20, config.vocab_size), data_options);
  if (!data.ok()) return fail("creating the data source", data.status());

  TrainerOptions options;
  options.max_steps = max_steps;
  options.optimizer.lr = 3e-3;
  options.optimizer.weight_decay = 0.1;
  options.schedule = {ScheduleKind::kCosine, 3};
  options.gradient_accumulation_steps = 2;
  options.checkpoint_dir = run_dir;
  options.checkpoint_every = 1;
  options.keep_last_checkpoints = 3;
  options.on_step = [](const StepMetrics& m) {
    std::printf("step %lld %a\n", static_cast<long long>(m.step), m.loss);
    std::fflush(stdout);
  };
  auto trainer = Trainer::create(*model, **data, options);
  if (!trainer.ok()) return fail("creating the trainer", trainer.status());
  if (!listed->empty()) {
    const absl::Status status = trainer->resume(listed->back());
    if (!status.ok()) return fail("resuming", status);
    std::printf("resumed %lld\n", static_cast<long long>(trainer->global_step()));
  } else {
    std::printf("fresh\n");
  }
  std::fflush(stdout);
  if (trainer->global_step() < max_steps) {
    const auto result = trainer->train();
    if (!result.ok()) return fail("training", result.status());
  }
  if (!final_path.empty()) {
    NamedTensors weights;
    for (const auto& [name, p] : model->named_parameters()) weights.emplace_back(name, p.detach());
    const absl::Status status = write_safetensors(final_path, weights);
    if (!status.ok()) return fail("writing the final weights", status);
  }
  std::printf("done\n");
  return 0;
}
