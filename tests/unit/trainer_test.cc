#include <ATen/core/grad_mode.h>
#include <fstream>
#include <sstream>

#include "io/safetensors.hpp"
#include "list_source.hpp"
#include "model_support.hpp"
#include "temper/batch.hpp"
#include "temper/log.hpp"
#include "temper/lora_adapter.hpp"
#include "temper/runtime.hpp"
#include "temper/trainer.hpp"
#include "train/checkpoint_dir.hpp"

using namespace temper;
using namespace temper::testing;

namespace {

std::vector<std::vector<TokenId>> documents(int count, int64_t vocab, uint64_t seed) {
  std::vector<std::vector<TokenId>> docs;
  std::mt19937 rng(static_cast<uint32_t>(seed));
  for (int d = 0; d < count; ++d) {
    std::vector<TokenId> doc;
    // A learnable pattern: arithmetic progressions with a random start.
    TokenId start = static_cast<TokenId>(rng() % vocab);
    for (int i = 0; i < 24; ++i) doc.push_back(static_cast<TokenId>((start + 3 * i) % vocab));
    docs.push_back(doc);
  }
  return docs;
}

std::unique_ptr<PackedTextSource> packed_source(const ModelConfig& config, uint64_t seed = 1) {
  PackedTextOptions options;
  options.batch_size = 4;
  options.seq_len = 16;
  options.seed = seed;
  return PackedTextSource::create(documents(20, config.vocab_size, seed), options).value();
}

EvalSet eval_set(const std::string& name, const ModelConfig& config, uint64_t seed) {
  auto source = packed_source(config, seed);
  EvalSet set{name, {}};
  for (int i = 0; i < 2; ++i) set.batches.push_back(source->next().value());
  return set;
}

TrainerOptions base_options() {
  TrainerOptions options;
  options.max_steps = 20;
  options.optimizer.lr = 3e-3;
  options.schedule = {ScheduleKind::kConstant, 0};
  return options;
}

std::vector<at::Tensor> snapshot(const Model& model) {
  std::vector<at::Tensor> out;
  for (const auto& [name, p] : model.named_parameters()) out.push_back(p.detach().clone());
  return out;
}

}  // namespace

TEST_CASE("full fine-tuning lowers the loss of continued pre-training", "[unit]") {
  const ModelConfig config = tiny_config();
  Model model = tiny_model(config, 61);
  auto data = packed_source(config);
  TrainerOptions options = base_options();
  options.eval_sets.push_back(eval_set("domain", config, 99));
  auto trainer = Trainer::create(model, *data, options);
  REQUIRE_OK(trainer);
  auto result = trainer->train();
  REQUIRE_OK(result);
  CHECK(result->steps == 20);
  CHECK(result->stop_reason == "max_steps");
  REQUIRE(result->evaluations.size() == 2);  // the base model's score, then the end
  CHECK(result->evaluations[0].step == 0);
  CHECK(result->evaluations[0].sets[0].loss_delta_from_base == 0.0);
  CHECK(result->evaluations[1].sets[0].loss_delta_from_base < -0.5);
  CHECK(result->evaluations[1].sets[0].perplexity == Approx(std::exp(result->evaluations[1].sets[0].loss)));
}

TEST_CASE("gradient accumulation normalises by the tokens of the whole step", "[unit]") {
  // Two micro-batches with 4 and 13 scored tokens: one accumulated step must equal one step on
  // both rows at once (a mean of micro-batch means would weight the 4 tokens 3x too much).
  const ModelConfig config = tiny_config();
  const at::Tensor ids = random_ids(2, 14, config.vocab_size, 71);
  at::Tensor labels = ids.clone();
  labels[0].narrow(0, 0, 10).fill_(-100);  // row 0 scores 4 tokens (shifted), row 1 scores 13
  Batch both{ids, labels, {}};
  Batch first{ids.narrow(0, 0, 1), labels.narrow(0, 0, 1), {}};
  Batch second{ids.narrow(0, 1, 1), labels.narrow(0, 1, 1), {}};

  auto run = [&](std::vector<Batch> batches, int64_t accumulation) {
    Model model = tiny_model(config, 72);
    ListSource data(std::move(batches));
    TrainerOptions options = base_options();
    options.max_steps = 1;
    options.gradient_accumulation_steps = accumulation;
    options.optimizer.kind = OptimizerKind::kSgd;
    options.optimizer.momentum = 0.0;
    options.max_grad_norm = 0.0;
    auto trainer = Trainer::create(model, data, options);
    auto step = trainer->step();
    REQUIRE_OK(step);
    CHECK(step->tokens == 17);
    return std::make_pair(snapshot(model), step->loss);
  };
  const auto [accumulated, loss_a] = run({first, second}, 2);
  const auto [single, loss_b] = run({both}, 1);
  CHECK(loss_a == Approx(loss_b).epsilon(1e-6));
  for (size_t i = 0; i < single.size(); ++i) CHECK(max_abs_diff(accumulated[i], single[i]) < 1e-6);
}

TEST_CASE("resuming from a checkpoint continues bit-identically", "[unit]") {
  const ModelConfig config = tiny_config();
  TempDir dir;
  TrainerOptions options = base_options();
  options.max_steps = 9;
  options.gradient_accumulation_steps = 3;  // 20 sequences / 4 per batch: epochs end mid-step
  options.schedule = {ScheduleKind::kCosine, 2};
  options.optimizer.weight_decay = 0.1;
  options.checkpoint_dir = dir / "run";
  options.checkpoint_every = 4;
  options.keep_last_checkpoints = 5;
  options.eval_sets.push_back(eval_set("general", config, 98));
  options.eval_every = 3;

  std::vector<double> uninterrupted;
  Model model_a = tiny_model(config, 81);
  auto data_a = packed_source(config, 3);
  TrainerOptions options_a = options;
  options_a.on_step = [&](const StepMetrics& m) { uninterrupted.push_back(m.loss); };
  auto trainer_a = Trainer::create(model_a, *data_a, options_a);
  REQUIRE_OK(trainer_a);
  auto result_a = trainer_a->train();
  REQUIRE_OK(result_a);
  REQUIRE(uninterrupted.size() == 9);
  CHECK(std::filesystem::exists(dir / "run" / "step-000004" / "manifest.json"));
  CHECK(std::filesystem::exists(dir / "run" / "step-000009"));

  std::vector<double> resumed;
  Model model_b = tiny_model(config, 81);
  auto data_b = packed_source(config, 3);
  TrainerOptions options_b = options;
  options_b.checkpoint_dir = dir / "run_b";
  options_b.on_step = [&](const StepMetrics& m) { resumed.push_back(m.loss); };
  auto trainer_b = Trainer::create(model_b, *data_b, options_b);
  REQUIRE_OK(trainer_b->resume(dir / "run" / "step-000004"));
  CHECK(trainer_b->global_step() == 4);
  auto result_b = trainer_b->train();
  REQUIRE_OK(result_b);
  REQUIRE(resumed.size() == 5);
  for (size_t i = 0; i < 5; ++i) CHECK(resumed[i] == uninterrupted[4 + i]);  // bit-identical
  const auto a = snapshot(model_a);
  const auto b = snapshot(model_b);
  for (size_t i = 0; i < a.size(); ++i) CHECK(at::equal(a[i], b[i]));
  // Evaluation deltas are still measured against the base model's score from the first run.
  CHECK(result_b->evaluations.back().sets[0].loss_delta_from_base ==
        result_a->evaluations.back().sets[0].loss_delta_from_base);
}

TEST_CASE("a checkpoint of another run or a damaged one is refused", "[unit]") {
  const ModelConfig config = tiny_config();
  TempDir dir;
  Model model = tiny_model(config, 82);
  auto data = packed_source(config);
  TrainerOptions options = base_options();
  options.max_steps = 2;
  auto trainer = Trainer::create(model, *data, options);
  REQUIRE_OK(trainer->train());
  REQUIRE_OK(trainer->save_checkpoint(dir / "ckpt"));

  ModelConfig other_config = config;
  other_config.intermediate_size = 40;
  Model other = tiny_model(other_config, 83);
  auto other_data = packed_source(other_config);
  auto other_trainer = Trainer::create(other, *other_data, options);
  CHECK(other_trainer->resume(dir / "ckpt").code() == absl::StatusCode::kFailedPrecondition);

  std::ofstream(dir / "ckpt" / "optimizer.safetensors", std::ios::app) << "junk";
  CHECK(trainer->resume(dir / "ckpt").code() == absl::StatusCode::kDataLoss);
  CHECK(trainer->resume(dir / "nowhere").code() == absl::StatusCode::kNotFound);
}

TEST_CASE("non-finite steps are skipped, counted, and stop training when they persist", "[unit]") {
  const ModelConfig config = tiny_config();
  Model model = tiny_model(config, 84);
  {
    at::NoGradGuard no_grad;
    model.parameter("model.norm.weight").value()[0] = std::numeric_limits<float>::quiet_NaN();
  }
  auto data = packed_source(config);
  TrainerOptions options = base_options();
  options.trainable_patterns = {"model.layers.*"};  // the NaN itself is not trained away
  options.max_consecutive_nonfinite = 3;
  std::vector<std::string> logs;
  options.on_log = [&](const std::string& line) { logs.push_back(line); };
  const auto before = snapshot(model);
  auto trainer = Trainer::create(model, *data, options);
  auto step = trainer->step();
  REQUIRE_OK(step);
  CHECK(step->skipped);
  const auto after = snapshot(model);
  for (size_t i = 0; i < before.size(); ++i) CHECK(at::equal(before[i].nan_to_num(), after[i].nan_to_num()));
  auto result = trainer->train();
  CHECK(result.status().code() == absl::StatusCode::kAborted);
  CHECK_THAT(std::string(result.status().message()), Catch::Contains("non-finite"));
  CHECK(logs.size() >= 4);
}

TEST_CASE("a step whose batches score no token is an error", "[unit]") {
  const ModelConfig config = tiny_config();
  Model model = tiny_model(config, 85);
  const at::Tensor ids = random_ids(2, 8, config.vocab_size, 86);
  ListSource data({Batch{ids, at::full_like(ids, -100), {}}});
  auto trainer = Trainer::create(model, data, base_options());
  auto step = trainer->step();
  CHECK(step.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(step.status().message()), Catch::Contains("no scored token"));
}

TEST_CASE("early stopping ends training when the watched set stops improving", "[unit]") {
  const ModelConfig config = tiny_config();
  Model model = tiny_model(config, 87);
  auto data = packed_source(config);
  TrainerOptions options = base_options();
  options.max_steps = 50;
  options.eval_sets.push_back(eval_set("domain", config, 97));
  options.eval_every = 2;
  options.early_stopping = {"domain", 2, 1e9};  // no improvement can be large enough
  auto trainer = Trainer::create(model, *data, options);
  auto result = trainer->train();
  REQUIRE_OK(result);
  CHECK(result->stop_reason == "early_stopping");
  // The first evaluation after training starts sets the reference; two more without improvement stop.
  CHECK(result->steps == 6);
  options.early_stopping.eval_set = "missing";
  CHECK(Trainer::create(model, *data, options).status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("more than 3 epochs of SFT data logs a warning once", "[unit]") {
  const ModelConfig config = tiny_config();
  Model model = tiny_model(config, 88);
  std::vector<SftExample> examples = {{{5, 6, 7}, {8, 9, 2}}, {{10, 11}, {12, 2}}};
  SftOptions sft;
  sft.batch_size = 2;
  auto data = SftSource::create(examples, sft);
  TrainerOptions options = base_options();
  options.max_steps = 6;
  std::vector<std::string> logs;
  options.on_log = [&](const std::string& line) { logs.push_back(line); };
  auto trainer = Trainer::create(model, **data, options);
  REQUIRE_OK(trainer->train());
  REQUIRE(logs.size() == 1);
  CHECK_THAT(logs[0], Catch::Contains("epoch 4") && Catch::Contains("overfit"));
}

TEST_CASE("last step and evaluations read back; without on_log, warnings reach the log sink", "[unit]") {
  const ModelConfig config = tiny_config();
  Model model = tiny_model(config, 87);
  std::vector<SftExample> examples = {{{5, 6, 7}, {8, 9, 2}}, {{10, 11}, {12, 2}}};
  SftOptions sft;
  sft.batch_size = 2;
  auto data = SftSource::create(examples, sft);
  TrainerOptions options = base_options();
  options.max_steps = 5;
  options.eval_sets.push_back(eval_set("general", config, 97));
  options.eval_every = 2;
  std::vector<std::pair<LogLevel, std::string>> logs;
  set_log_sink([&](LogLevel level, std::string_view line) { logs.emplace_back(level, std::string(line)); });
  int64_t seen_in_callback = -1;
  Trainer* self = nullptr;
  options.on_eval = [&](const EvalMetrics& m) { seen_in_callback = self->evaluations().back().step; };
  auto trainer = Trainer::create(model, **data, options);
  self = &*trainer;
  CHECK_FALSE(trainer->last_step_metrics().has_value());
  auto step = trainer->step();
  REQUIRE_OK(step);
  REQUIRE(trainer->last_step_metrics().has_value());
  CHECK(trainer->last_step_metrics()->loss == step->loss);
  REQUIRE_OK(trainer->train());
  set_log_sink(nullptr);
  CHECK(trainer->last_step_metrics()->step == 5);
  // step() came first, so train() has no base evaluation: steps 2 and 4, and the end (5).
  REQUIRE(trainer->evaluations().size() == 3);
  CHECK(trainer->evaluations().back().step == 5);
  CHECK(seen_in_callback == 5);
  CHECK(trainer->options().eval_sets[0].name == "general");
  REQUIRE(logs.size() == 1);
  CHECK(logs[0].first == LogLevel::kWarning);
  CHECK_THAT(logs[0].second, Catch::Contains("overfit"));
  CHECK((cuda_device_count() > 0) == has_cuda_device());
}

TEST_CASE("trainable patterns choose what full fine-tuning updates", "[unit]") {
  const ModelConfig config = tiny_config();
  Model model = tiny_model(config, 89);
  auto data = packed_source(config);
  TrainerOptions options = base_options();
  options.max_steps = 2;
  options.trainable_patterns = {"model.layers.1.mlp.*"};
  const auto before = model.named_parameters();
  std::vector<at::Tensor> copies;
  for (const auto& [name, p] : before) copies.push_back(p.detach().clone());
  auto trainer = Trainer::create(model, *data, options);
  REQUIRE_OK(trainer->train());
  const auto after = model.named_parameters();
  for (size_t i = 0; i < after.size(); ++i) {
    INFO(after[i].first);
    const bool trained = after[i].first.rfind("model.layers.1.mlp.", 0) == 0;
    CHECK(at::equal(after[i].second, copies[i]) != trained);
  }
  options.trainable_patterns = {"model.layers.9.*"};
  CHECK(Trainer::create(model, *data, options).status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("metrics go to JSONL and request_stop ends training between steps", "[unit]") {
  const ModelConfig config = tiny_config();
  Model model = tiny_model(config, 90);
  auto data = packed_source(config);
  TempDir dir;
  TrainerOptions options = base_options();
  options.metrics_jsonl = dir / "metrics.jsonl";
  options.eval_sets.push_back(eval_set("general", config, 96));
  Trainer* self = nullptr;
  options.on_step = [&](const StepMetrics& m) {
    if (m.step == 3) self->request_stop();
  };
  auto trainer = Trainer::create(model, *data, options);
  self = &*trainer;
  auto result = trainer->train();
  REQUIRE_OK(result);
  CHECK(result->stop_reason == "requested");
  CHECK(result->steps == 3);
  std::ifstream in(dir / "metrics.jsonl");
  std::string line;
  int steps = 0, evals = 0;
  while (std::getline(in, line)) {
    steps += line.find("\"type\":\"step\"") != std::string::npos;
    evals += line.find("\"type\":\"eval\"") != std::string::npos;
  }
  CHECK(steps == 3);
  CHECK(evals == 2);
}

TEST_CASE("mixed precision keeps fp32 masters for bf16 parameters", "[unit]") {
  const ModelConfig config = tiny_config();
  Model model = Model::random(config, {at::kBFloat16}).value();
  auto data = packed_source(config);
  TrainerOptions options = base_options();
  options.max_steps = 2;
  options.optimizer.lr = 1e-4;  // updates below bf16's resolution accumulate in the master
  options.trainable_patterns = {"model.norm.weight"};
  auto trainer = Trainer::create(model, *data, options);
  REQUIRE_OK(trainer);
  REQUIRE_OK(trainer->train());
  TempDir dir;
  REQUIRE_OK(trainer->save_checkpoint(dir / "c"));
  auto saved = SafetensorsFile::open(dir / "c" / "trainable.safetensors");
  REQUIRE_OK(saved);
  const at::Tensor master = saved->tensor("model.norm.weight").value();
  CHECK(master.scalar_type() == at::kFloat);
  CHECK(at::equal(master.to(at::kBFloat16), model.parameter("model.norm.weight").value()));
  CHECK((master - 1.0).abs().max().item<double>() > 0.0);  // it moved, though bf16 may not show it
}

TEST_CASE("LoRA training updates only the adapter and resumes exactly", "[unit]") {
  const ModelConfig config = tiny_config();
  TempDir dir;
  auto run = [&](const std::filesystem::path& resume_from, int64_t steps, std::vector<double>* losses) {
    Model model = tiny_model(config, 91);
    const auto base = snapshot(model);
    LoraOptions lora;
    lora.rank = 4;
    lora.seed = 3;
    auto adapter = LoraAdapter::create(model, lora);
    REQUIRE_OK(adapter);
    auto data = packed_source(config, 4);
    TrainerOptions options = base_options();
    options.max_steps = steps;
    options.gradient_accumulation_steps = 2;
    options.checkpoint_dir = dir / (resume_from.empty() ? "a" : "b");
    options.checkpoint_every = 3;
    options.keep_last_checkpoints = 5;
    options.on_step = [&](const StepMetrics& m) { losses->push_back(m.loss); };
    auto trainer = Trainer::create(model, *data, options, &*adapter);
    REQUIRE_OK(trainer);
    if (!resume_from.empty()) REQUIRE_OK(trainer->resume(resume_from));
    REQUIRE_OK(trainer->train());
    const auto after = snapshot(model);
    for (size_t i = 0; i < base.size(); ++i) CHECK(at::equal(base[i], after[i]));  // the base never moves
    std::vector<at::Tensor> adapter_values;
    for (const auto& [name, t] : adapter->named_parameters()) adapter_values.push_back(t.detach().clone());
    return adapter_values;
  };
  std::vector<double> full, resumed;
  const auto a = run({}, 8, &full);
  REQUIRE(full.size() == 8);
  CHECK(full.back() < full.front());
  const auto b = run(dir / "a" / "step-000003", 8, &resumed);
  REQUIRE(resumed.size() == 5);
  for (size_t i = 0; i < 5; ++i) CHECK(resumed[i] == full[3 + i]);
  for (size_t i = 0; i < a.size(); ++i) CHECK(at::equal(a[i], b[i]));

  // An adapter installed on another model is refused: its tensors would never see a gradient.
  Model one = tiny_model(config, 93), other = tiny_model(config, 94);
  LoraOptions small;
  small.rank = 2;
  auto foreign = LoraAdapter::create(other, small);
  REQUIRE_OK(foreign);
  auto data = packed_source(config);
  CHECK(Trainer::create(one, *data, base_options(), &*foreign).status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("a checkpoint of another format version is refused with FAILED_PRECONDITION", "[unit]") {
  const ModelConfig config = tiny_config();
  TempDir dir;
  Model model = tiny_model(config, 92);
  auto data = packed_source(config);
  TrainerOptions options = base_options();
  options.max_steps = 1;
  auto trainer = Trainer::create(model, *data, options);
  REQUIRE_OK(trainer->train());
  REQUIRE_OK(trainer->save_checkpoint(dir / "good"));
  // The same files, sealed again with a state that claims a future version.
  REQUIRE_OK(write_checkpoint_dir(dir / "future", [&](const std::filesystem::path& tmp) -> absl::Status {
    for (const char* name : {"trainable.safetensors", "optimizer.safetensors", "rng.safetensors"}) {
      std::filesystem::copy_file(dir / "good" / name, tmp / name);
    }
    std::ifstream in(dir / "good" / "trainer_state.json");
    std::string state((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto pos = state.find("\"version\": 1");
    REQUIRE(pos != std::string::npos);
    state.replace(pos, 12, "\"version\": 99");
    std::ofstream(tmp / "trainer_state.json") << state;
    return absl::OkStatus();
  }));
  const absl::Status status = trainer->resume(dir / "future");
  CHECK(status.code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(status.message()), Catch::Contains("version 99"));
  REQUIRE_OK(trainer->resume(dir / "good"));
}
