// The Trainer's parts on their own: batch sources, optimizer update rules, schedules,
// checkpoint directories, activation checkpointing.
#include <cmath>
#include <fstream>

#include <fmt/format.h>

#include "model/model_impl.hpp"
#include "model_support.hpp"
#include "temper/batch.hpp"
#include "train/checkpoint_dir.hpp"
#include "train/optimizer.hpp"

using namespace temper;
using namespace temper::testing;

namespace {

std::vector<std::vector<TokenId>> numbered_documents(int count, int length) {
  std::vector<std::vector<TokenId>> docs;
  TokenId next = 0;
  for (int d = 0; d < count; ++d) {
    std::vector<TokenId> doc;
    for (int i = 0; i < length; ++i) doc.push_back(next++);
    docs.push_back(doc);
  }
  return docs;
}

}  // namespace

TEST_CASE("packed text covers every sequence once per epoch and resumes exactly", "[unit]") {
  PackedTextOptions options;
  options.batch_size = 3;
  options.seq_len = 4;
  options.seed = 5;
  auto source = PackedTextSource::create(numbered_documents(5, 9), options);  // 45 tokens -> 11 sequences
  REQUIRE_OK(source);
  CHECK((*source)->num_sequences() == 11);
  CHECK((*source)->dropped_tokens() == 1);

  std::vector<int64_t> firsts;
  std::string state_after_two;
  std::vector<at::Tensor> seen;
  for (int b = 0; b < 8; ++b) {
    if (b == 2) state_after_two = (*source)->save_state();
    auto batch = (*source)->next();
    REQUIRE_OK(batch);
    CHECK(at::equal(batch->labels, batch->input_ids));
    seen.push_back(batch->input_ids);
    for (int64_t r = 0; r < 3; ++r) firsts.push_back(batch->input_ids[r][0].item<int64_t>());
  }
  // The first 11 rows are a permutation of the 11 sequences (starts 0, 4, ..., 40).
  std::vector<int64_t> epoch0(firsts.begin(), firsts.begin() + 11);
  std::sort(epoch0.begin(), epoch0.end());
  for (int64_t i = 0; i < 11; ++i) CHECK(epoch0[i] == 4 * i);
  CHECK((*source)->epochs_completed() == 2);

  auto again = PackedTextSource::create(numbered_documents(5, 9), options);
  REQUIRE_OK((*again)->restore_state(state_after_two));
  for (int b = 2; b < 8; ++b) CHECK(at::equal((*again)->next().value().input_ids, seen[b]));
  auto other = PackedTextSource::create(numbered_documents(6, 9), options);
  CHECK((*other)->restore_state(state_after_two).code() == absl::StatusCode::kFailedPrecondition);
  CHECK(PackedTextSource::create(numbered_documents(1, 3), options).status().code() ==
        absl::StatusCode::kInvalidArgument);
}

TEST_CASE("SFT batches score only response tokens, right-padded, truncating long responses", "[unit]") {
  std::vector<SftExample> examples = {{{10, 11, 12}, {20, 21}}, {{13}, {22, 23, 24, 25, 26, 27}}};
  SftOptions options;
  options.batch_size = 2;
  options.max_seq_len = 6;
  options.pad_id = 0;
  options.shuffle = false;
  auto source = SftSource::create(examples, options);
  REQUIRE_OK(source);
  CHECK((*source)->truncated_examples() == 1);
  auto batch = (*source)->next();
  REQUIRE_OK(batch);
  const std::vector<int64_t> ids0 = {10, 11, 12, 20, 21, 0};
  const std::vector<int64_t> labels0 = {-100, -100, -100, 20, 21, -100};
  const std::vector<int64_t> ids1 = {13, 22, 23, 24, 25, 26};
  const std::vector<int64_t> labels1 = {-100, 22, 23, 24, 25, 26};
  for (int64_t t = 0; t < 6; ++t) {
    CHECK(batch->input_ids[0][t].item<int64_t>() == ids0[t]);
    CHECK(batch->labels[0][t].item<int64_t>() == labels0[t]);
    CHECK(batch->input_ids[1][t].item<int64_t>() == ids1[t]);
    CHECK(batch->labels[1][t].item<int64_t>() == labels1[t]);
  }
  CHECK(scored_tokens(*batch) == 2 + 5);
  CHECK((*source)->objective() == Objective::kSft);

  auto dropping = SftSource::create({{{1, 2, 3, 4, 5, 6}, {7}}, {{1}, {2}}}, options);
  REQUIRE_OK(dropping);
  CHECK((*dropping)->dropped_examples() == 1);
  CHECK((*dropping)->num_examples() == 1);
  CHECK(SftSource::create({{{1, 2, 3, 4, 5, 6}, {7}}}, options).status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(SftSource::create({{{1}, {}}}, options).status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(SftSource::create({}, options).status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("AdamW follows torch.optim.AdamW's update rule", "[unit]") {
  // Reference: the rule evaluated in double precision for two steps.
  OptimizerOptions o;
  o.lr = 0.1;
  o.beta1 = 0.8;
  o.beta2 = 0.9;
  o.eps = 1e-3;
  o.weight_decay = 0.5;
  const at::Tensor start = at::tensor({1.0, -2.0, 0.5}, at::kFloat);
  Optimizer opt(o, {{"w", start.clone(), true}, {"b", start.clone(), false}});
  const at::Tensor g1v = at::tensor({0.3, -0.1, 2.0}, at::kFloat);
  const std::vector<at::Tensor> g1 = {g1v, g1v};
  const at::Tensor g2v = at::tensor({-0.2, 0.4, 1.0}, at::kFloat);
  const std::vector<at::Tensor> g2 = {g2v, g2v};
  opt.step(g1, 0.1);
  opt.step(g2, 0.05);
  CHECK_FALSE(opt.last_step_fused());  // CPU tensors take the per-tensor ATen path
  for (int decay = 0; decay < 2; ++decay) {
    for (int64_t i = 0; i < 3; ++i) {
      double p = start[i].item<double>(), m = 0, v = 0;
      const double lrs[2] = {0.1, 0.05};
      const double gs[2] = {g1[0][i].item<double>(), g2[0][i].item<double>()};
      for (int t = 1; t <= 2; ++t) {
        const double lr = lrs[t - 1], g = gs[t - 1];
        if (decay == 0) p *= 1 - lr * 0.5;  // tensor 0 decays, tensor 1 does not
        m = 0.8 * m + 0.2 * g;
        v = 0.9 * v + 0.1 * g * g;
        const double mhat = m / (1 - std::pow(0.8, t));
        const double denom = std::sqrt(v) / std::sqrt(1 - std::pow(0.9, t)) + 1e-3;
        p -= lr * mhat / denom;
      }
      CHECK(opt.tensors()[decay].master[i].item<double>() == Approx(p).epsilon(1e-5));
    }
  }
}

TEST_CASE("SGD with momentum follows torch.optim.SGD", "[unit]") {
  OptimizerOptions o;
  o.kind = OptimizerKind::kSgd;
  o.momentum = 0.9;
  o.weight_decay = 0.1;
  Optimizer opt(o, {{"w", at::tensor({1.0f}), true}});
  opt.step({at::tensor({0.5f})}, 0.1);  // d = 0.5 + 0.1*1 = 0.6; buf = 0.6; p = 1 - 0.06 = 0.94
  opt.step({at::tensor({0.5f})}, 0.1);  // d = 0.5 + 0.094 = 0.594; buf = 0.54 + 0.594 = 1.134; p = 0.94 - 0.1134
  CHECK(opt.tensors()[0].master.item<double>() == Approx(0.8266).epsilon(1e-5));
}

TEST_CASE("a step's grad_scale acts as the gradients scaled beforehand", "[unit]") {
  for (OptimizerKind kind : {OptimizerKind::kAdamW, OptimizerKind::kSgd}) {
    INFO((kind == OptimizerKind::kAdamW ? "AdamW" : "SGD"));
    OptimizerOptions o;
    o.kind = kind;
    o.eps = 0.1;  // large next to the gradients, so that AdamW's update depends on their scale
    o.momentum = 0.9;
    o.weight_decay = 0.1;
    const at::Tensor start = at::tensor({1.0f, -2.0f, 0.5f, 3.0f});
    const at::Tensor g = at::tensor({0.3f, -0.1f, 2.0f, -0.7f});
    Optimizer scaled(o, {{"w", start.clone(), true}});
    Optimizer prescaled(o, {{"w", start.clone(), true}});
    Optimizer unscaled(o, {{"w", start.clone(), true}});
    for (int t = 0; t < 3; ++t) {
      scaled.step({g.clone()}, 0.1, 0.37);
      prescaled.step({g * 0.37}, 0.1);
      unscaled.step({g.clone()}, 0.1);
    }
    // The same fp32 product either way, so bit-equal.
    CHECK(at::equal(scaled.tensors()[0].master, prescaled.tensors()[0].master));
    CHECK(at::equal(scaled.state()[0].second, prescaled.state()[0].second));
    // Not vacuous: ignoring the scale lands elsewhere.
    CHECK_FALSE(at::allclose(scaled.tensors()[0].master, unscaled.tensors()[0].master, 1e-4, 0.0));
  }
}

TEST_CASE("a bf16 parameter holds its fp32 master rounded after each step", "[unit]") {
  for (OptimizerKind kind : {OptimizerKind::kAdamW, OptimizerKind::kSgd}) {
    INFO((kind == OptimizerKind::kAdamW ? "AdamW" : "SGD"));
    OptimizerOptions o;
    o.kind = kind;
    o.weight_decay = 0.1;
    at::manual_seed(3);
    const at::Tensor start = at::randn({5, 7}).to(at::kBFloat16);
    const at::Tensor param = start.clone();
    const at::Tensor master = start.to(at::kFloat);
    // The same optimizer on an fp32 tensor alone, fed the bf16 gradients' values, is the reference.
    Optimizer mixed(o, {{"w", master, true, param}});
    Optimizer plain(o, {{"w", master.clone(), true}});
    for (int t = 0; t < 3; ++t) {
      const at::Tensor g = at::randn({5, 7}).to(at::kBFloat16);
      mixed.step({g}, 1e-2, 0.5);
      plain.step({g.to(at::kFloat)}, 1e-2, 0.5);
      INFO("step " << t);
      CHECK(at::equal(param.to(at::kFloat), master.to(at::kBFloat16).to(at::kFloat)));
    }
    CHECK(mixed.tensors()[0].param.is_same(param));
    CHECK(at::equal(master, plain.tensors()[0].master));
    // The master keeps what bf16 cannot hold, and the parameter did move.
    CHECK_FALSE(at::equal(master, param.to(at::kFloat)));
    CHECK_FALSE(at::equal(param.to(at::kFloat), start.to(at::kFloat)));
    // A gradient in a third dtype breaks the contract.
    CHECK_THROWS(mixed.step({at::zeros({5, 7}, at::kDouble)}, 1e-2));
  }
}

TEST_CASE("write_params copies the masters into parameters of other dtypes only", "[unit]") {
  const at::Tensor param = at::tensor({1.0f, 2.0f, 3.0f}).to(at::kBFloat16);
  const at::Tensor master = param.to(at::kFloat);
  const at::Tensor own = at::tensor({4.0f, 5.0f});
  Optimizer opt(OptimizerOptions{}, {{"w", master, true, param}, {"b", own, false}});
  CHECK(opt.tensors()[1].param.is_same(own));  // left undefined: the master is the parameter
  // As the Trainer's resume does: the masters are written outside step().
  master.copy_(at::tensor({1.00390625f + 0.001f, -7.0f, 0.1f}));
  CHECK(at::equal(param.to(at::kFloat), at::tensor({1.0f, 2.0f, 3.0f})));
  opt.write_params();
  CHECK(at::equal(param.to(at::kFloat), master.to(at::kBFloat16).to(at::kFloat)));
  CHECK(param.to(at::kFloat)[1].item<float>() == -7.0f);
  CHECK(at::equal(own, at::tensor({4.0f, 5.0f})));
}

TEST_CASE("a step with one bad gradient changes nothing", "[unit]") {
  const at::Tensor w = at::tensor({1.0f, 2.0f, 3.0f});
  const at::Tensor b = at::tensor({4.0f, 5.0f});
  Optimizer opt(OptimizerOptions{}, {{"w", w.clone(), true}, {"b", b.clone(), false}});
  // The first gradient is fine; the second has the wrong shape, found only after the first.
  CHECK_THROWS_WITH(opt.step({at::ones({3}), at::ones({3})}, 1e-1), Catch::Contains("\"b\" is [3]"));
  CHECK(opt.steps_taken() == 0);
  CHECK(at::equal(opt.tensors()[0].master, w));
  CHECK(at::equal(opt.tensors()[1].master, b));
  CHECK(at::equal(opt.state()[0].second, at::zeros({3})));  // w's first moment untouched
  // A param whose shape or device differs from its master is refused when the optimizer is made.
  CHECK_THROWS(Optimizer(OptimizerOptions{}, {{"w", w.clone(), true, at::zeros({2}, at::kBFloat16)}}));
}

TEST_CASE("learning-rate schedules match transformers' warm-up schedules", "[unit]") {
  ScheduleOptions s{ScheduleKind::kCosine, 10};
  CHECK(schedule_factor(s, 0, 110) == 0.0);
  CHECK(schedule_factor(s, 5, 110) == Approx(0.5));
  CHECK(schedule_factor(s, 10, 110) == Approx(1.0));
  CHECK(schedule_factor(s, 60, 110) == Approx(0.5));
  CHECK(schedule_factor(s, 110, 110) == Approx(0.0).margin(1e-12));
  s.kind = ScheduleKind::kLinear;
  CHECK(schedule_factor(s, 35, 110) == Approx(0.75));
  s.kind = ScheduleKind::kConstant;
  CHECK(schedule_factor(s, 100, 110) == 1.0);
}

TEST_CASE("checkpoint directories are sealed by a manifest and any damage is detected", "[unit]") {
  TempDir dir;
  const auto ckpt = dir / "step-000001";
  REQUIRE_OK(write_checkpoint_dir(ckpt, [](const std::filesystem::path& tmp) {
    std::ofstream(tmp / "a.bin") << "hello";
    std::ofstream(tmp / "b.json") << "{}";
    return absl::OkStatus();
  }));
  REQUIRE_OK(verify_checkpoint_dir(ckpt));
  CHECK(list_directory(dir.path()).value() == std::vector<std::string>{"step-000001"});

  std::ofstream(ckpt / "a.bin") << "HELLO";  // same size, other bytes
  CHECK(verify_checkpoint_dir(ckpt).code() == absl::StatusCode::kDataLoss);
  std::ofstream(ckpt / "a.bin") << "hi";  // other size
  CHECK(verify_checkpoint_dir(ckpt).code() == absl::StatusCode::kDataLoss);
  std::filesystem::remove(ckpt / "manifest.json");
  CHECK(verify_checkpoint_dir(ckpt).code() == absl::StatusCode::kDataLoss);
  // Without a manifest it is not a checkpoint, and a new checkpoint never replaces it.
  CHECK(write_checkpoint_dir(ckpt, [](const std::filesystem::path&) { return absl::OkStatus(); }).code() ==
        absl::StatusCode::kFailedPrecondition);
  REQUIRE_OK(remove_tree(ckpt));

  // A failing writer leaves the previous checkpoint and no temporary directory.
  REQUIRE_OK(write_checkpoint_dir(ckpt, [](const std::filesystem::path& tmp) {
    std::ofstream(tmp / "a.bin") << "v2";
    return absl::OkStatus();
  }));
  CHECK(write_checkpoint_dir(ckpt, [](const std::filesystem::path& tmp) {
          std::ofstream(tmp / "a.bin") << "v3";
          return absl::ResourceExhaustedError("disk full");
        }).code() == absl::StatusCode::kResourceExhausted);
  REQUIRE_OK(verify_checkpoint_dir(ckpt));
  std::ifstream in(ckpt / "a.bin");
  std::string contents((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK(contents == "v2");
  CHECK(list_directory(dir.path()).value() == std::vector<std::string>{"step-000001"});
}

TEST_CASE("pruning keeps the newest checkpoints by step number", "[unit]") {
  TempDir dir;
  for (int step : {5, 40, 100, 7}) {
    REQUIRE_OK(write_checkpoint_dir(dir / fmt::format("step-{:06d}", step), [](const std::filesystem::path&) {
      return absl::OkStatus();
    }));
  }
  std::ofstream(dir / "step-notanumber") << "x";
  REQUIRE_OK(prune_checkpoints(dir.path(), "step-", 2));
  CHECK(list_directory(dir.path()).value() == std::vector<std::string>{"step-000040", "step-000100", "step-notanumber"});
}

TEST_CASE("activation checkpointing gives the gradients of the plain backward pass", "[unit]") {
  const ModelConfig config = tiny_config(ModelFamily::kQwen2);
  Model model = tiny_model(config, 51);
  ForwardInput input;
  input.input_ids = random_ids(2, 10, config.vocab_size, 52);
  input.labels = input.input_ids;
  auto grads_with = [&](bool checkpointing, bool freeze_embedding) {
    model.impl().gradient_checkpointing = checkpointing;
    std::vector<at::Tensor> grads;
    for (auto& [name, p] : model.named_parameters()) {
      p.mutable_grad() = at::Tensor();
      p.requires_grad_(!(freeze_embedding && name == "model.embed_tokens.weight"));
    }
    model.forward(input).value().loss.backward();
    for (auto& [name, p] : model.named_parameters()) grads.push_back(p.grad().defined() ? p.grad().clone() : at::Tensor());
    return grads;
  };
  for (bool frozen_embedding : {false, true}) {
    INFO("frozen embedding " << frozen_embedding);
    const auto plain = grads_with(false, frozen_embedding);
    const auto recomputed = grads_with(true, frozen_embedding);
    REQUIRE(plain.size() == recomputed.size());
    for (size_t i = 0; i < plain.size(); ++i) {
      REQUIRE(plain[i].defined() == recomputed[i].defined());
      if (plain[i].defined()) CHECK(max_abs_diff(plain[i], recomputed[i]) < 1e-6);
    }
  }
  model.impl().gradient_checkpointing = false;
}
