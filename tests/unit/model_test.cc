#include <ATen/core/grad_mode.h>
#include <fstream>

#include <nlohmann/json.hpp>

#include "model/rope.hpp"
#include "model_support.hpp"
#include "temper/model.hpp"

using namespace temper;
using namespace temper::testing;

namespace {

// Writes `model`'s weights and a config.json for `config` into `dir`.
void save_model_dir(const std::filesystem::path& dir, const Model& model, const nlohmann::json& config_json,
                    const NamedTensors& replace = {}) {
  NamedTensors tensors = model.named_parameters();
  for (const auto& [name, t] : replace) {
    bool found = false;
    for (auto& entry : tensors) {
      if (entry.first == name) {
        entry.second = t;
        found = true;
      }
    }
    if (!found) tensors.emplace_back(name, t);
  }
  REQUIRE_OK(write_checkpoint(dir, tensors));
  std::ofstream(dir / "config.json") << config_json.dump();
}

nlohmann::json config_json(const ModelConfig& c) {
  return {{"model_type", c.model_type},
          {"vocab_size", c.vocab_size},
          {"hidden_size", c.hidden_size},
          {"intermediate_size", c.intermediate_size},
          {"num_hidden_layers", c.num_layers},
          {"num_attention_heads", c.num_attention_heads},
          {"num_key_value_heads", c.num_key_value_heads},
          {"max_position_embeddings", c.max_position_embeddings},
          {"rms_norm_eps", c.rms_norm_eps},
          {"eos_token_id", 2}};
}

}  // namespace

TEST_CASE("the decoder is causal: a later token never changes earlier logits", "[unit]") {
  const ModelConfig config = tiny_config();
  const Model model = tiny_model(config);
  at::NoGradGuard no_grad;
  at::Tensor ids = random_ids(1, 12, config.vocab_size, 1);
  const at::Tensor before = logits_of(model, ids);
  ids[0][8] = (ids[0][8].item<int64_t>() + 1) % config.vocab_size;
  const at::Tensor after = logits_of(model, ids);
  CHECK(max_abs_diff(before.narrow(1, 0, 8), after.narrow(1, 0, 8)) == 0.0);
  CHECK(max_abs_diff(before.narrow(1, 8, 4), after.narrow(1, 8, 4)) > 1e-3);
}

TEST_CASE("decoding with a KV cache gives the logits of a full forward pass", "[unit]") {
  for (ModelFamily family : {ModelFamily::kLlama, ModelFamily::kQwen2}) {
    ModelConfig config = tiny_config(family);
    const Model model = tiny_model(config, 3);
    at::NoGradGuard no_grad;
    const at::Tensor ids = random_ids(2, 10, config.vocab_size, 2);
    const at::Tensor full = logits_of(model, ids);
    KvCache cache;
    ForwardInput prefill;
    prefill.input_ids = ids.narrow(1, 0, 6);
    auto first = model.forward(prefill, &cache);
    REQUIRE_OK(first);
    CHECK(cache.length == 6);
    CHECK(max_abs_diff(first->logits, full.narrow(1, 0, 6)) < 1e-5);
    // Two new tokens at once, then one at a time.
    ForwardInput step;
    step.input_ids = ids.narrow(1, 6, 2);
    auto two = model.forward(step, &cache);
    REQUIRE_OK(two);
    CHECK(max_abs_diff(two->logits, full.narrow(1, 6, 2)) < 1e-5);
    for (int64_t t = 8; t < 10; ++t) {
      step.input_ids = ids.narrow(1, t, 1);
      auto one = model.forward(step, &cache);
      REQUIRE_OK(one);
      CHECK(max_abs_diff(one->logits, full.narrow(1, t, 1)) < 1e-5);
    }
  }
}

TEST_CASE("a sliding window hides keys older than the window", "[unit]") {
  ModelConfig config = tiny_config(ModelFamily::kMistral);
  config.num_layers = 1;  // one layer: the receptive field is exactly the window
  config.sliding_window = 4;
  const Model model = tiny_model(config, 5);
  at::NoGradGuard no_grad;
  at::Tensor ids = random_ids(1, 12, config.vocab_size, 4);
  const at::Tensor before = logits_of(model, ids);
  ids[0][2] = (ids[0][2].item<int64_t>() + 1) % config.vocab_size;
  const at::Tensor after = logits_of(model, ids);
  // Position t sees keys t-3..t: a change at 2 reaches positions 2..5 only.
  CHECK(max_abs_diff(before.narrow(1, 2, 4), after.narrow(1, 2, 4)) > 1e-3);
  CHECK(max_abs_diff(before.narrow(1, 6, 6), after.narrow(1, 6, 6)) == 0.0);

  // The cache path applies the same window.
  KvCache cache;
  ForwardInput input;
  input.input_ids = ids.narrow(1, 0, 7);
  REQUIRE_OK(model.forward(input, &cache));
  input.input_ids = ids.narrow(1, 7, 5);
  auto rest = model.forward(input, &cache);
  REQUIRE_OK(rest);
  CHECK(max_abs_diff(rest->logits, after.narrow(1, 7, 5)) < 1e-5);
}

TEST_CASE("grouped-query attention equals full attention with each KV head repeated per group", "[unit]") {
  // Reference: a model with as many KV heads as query heads whose k/v weights repeat each GQA
  // head for its group (head h uses KV head h / group, as transformers' repeat_kv does).
  const ModelConfig gqa_config = tiny_config();
  const Model gqa = tiny_model(gqa_config, 7);
  ModelConfig mha_config = gqa_config;
  mha_config.num_key_value_heads = mha_config.num_attention_heads;
  Model mha = Model::random(mha_config).value();
  const int64_t group = gqa_config.num_attention_heads / gqa_config.num_key_value_heads;
  {
    at::NoGradGuard no_grad;
    for (auto& [name, p] : mha.named_parameters()) {
      const at::Tensor src = gqa.parameter(name).value();
      if (src.sizes() == p.sizes()) {
        p.copy_(src);
      } else {  // k_proj / v_proj: [Hkv * D, hidden] -> [Hq * D, hidden]
        const auto d = gqa_config.head_dim;
        p.copy_(src.view({-1, d, src.size(1)}).repeat_interleave(group, 0).reshape(p.sizes()));
      }
    }
  }
  at::NoGradGuard no_grad;
  const at::Tensor ids = random_ids(2, 9, gqa_config.vocab_size, 8);
  CHECK(max_abs_diff(logits_of(gqa, ids), logits_of(mha, ids)) < 1e-5);
}

TEST_CASE("the loss is the mean shifted cross-entropy over labels that are not -100", "[unit]") {
  const ModelConfig config = tiny_config();
  const Model model = tiny_model(config, 11);
  at::NoGradGuard no_grad;
  const at::Tensor ids = random_ids(2, 7, config.vocab_size, 12);
  at::Tensor labels = ids.clone();
  labels[0][3] = -100;
  labels[1][0] = -100;  // position 0 is never scored anyway
  ForwardInput input;
  input.input_ids = ids;
  input.labels = labels;
  auto out = model.forward(input);
  REQUIRE_OK(out);

  // Reference: explicit log-softmax and gather over each scored position.
  const at::Tensor logp = at::log_softmax(out->logits.to(at::kDouble), -1);
  double sum = 0.0;
  int64_t n = 0;
  for (int64_t b = 0; b < 2; ++b) {
    for (int64_t t = 0; t + 1 < 7; ++t) {
      const int64_t target = labels[b][t + 1].item<int64_t>();
      if (target == -100) continue;
      sum -= logp[b][t][target].item<double>();
      ++n;
    }
  }
  CHECK(out->num_tokens == n);
  CHECK(n == 11);
  CHECK(out->loss_sum.item<double>() == Approx(sum).epsilon(1e-5));
  CHECK(out->loss.item<double>() == Approx(sum / n).epsilon(1e-5));

  input.labels = at::full_like(ids, -100);
  auto none = model.forward(input);
  REQUIRE_OK(none);
  CHECK(none->num_tokens == 0);
  CHECK(none->loss.item<double>() == 0.0);
}

TEST_CASE("the loss is differentiable in every parameter", "[unit]") {
  const ModelConfig config = tiny_config(ModelFamily::kQwen2);
  const Model model = tiny_model(config, 13);
  for (auto& [name, p] : model.named_parameters()) p.requires_grad_(true);
  ForwardInput input;
  input.input_ids = random_ids(2, 8, config.vocab_size, 14);
  input.labels = input.input_ids;
  auto out = model.forward(input);
  REQUIRE_OK(out);
  out->loss.backward();
  for (auto& [name, p] : model.named_parameters()) {
    INFO(name);
    REQUIRE(p.grad().defined());
    CHECK(p.grad().abs().sum().item<double>() > 0.0);
  }
}

TEST_CASE("llama3 rope scaling matches the published frequency rule", "[unit]") {
  // Independent reference: the rule of Llama 3.1 evaluated per frequency in double precision.
  ModelConfig config = tiny_config();
  config.head_dim = 64;
  config.rope_theta = 500000.0;
  config.rope_scaling = {RopeScalingType::kLlama3, 8.0, 1.0, 4.0, 8192};
  const at::Tensor inv_freq = rope_inv_freq(config);
  REQUIRE(inv_freq.numel() == 32);
  for (int64_t i = 0; i < 32; ++i) {
    const double base = 1.0 / std::pow(500000.0, (2.0 * i) / 64.0);
    const double wavelen = 2 * M_PI / base;
    double expected = base;
    if (wavelen > 8192.0 / 1.0) {
      expected = base / 8.0;
    } else if (wavelen >= 8192.0 / 4.0) {
      const double smooth = (8192.0 / wavelen - 1.0) / (4.0 - 1.0);
      expected = (1 - smooth) * base / 8.0 + smooth * base;
    }
    INFO(i);
    CHECK(inv_freq[i].item<double>() == Approx(expected).epsilon(1e-5));
  }
}

TEST_CASE("forward rejects bad input with the position named", "[unit]") {
  const ModelConfig config = tiny_config();
  const Model model = tiny_model(config);
  ForwardInput input;
  input.input_ids = at::zeros({1, 5}, at::kLong);
  input.input_ids[0][3] = config.vocab_size;
  auto out = model.forward(input);
  CHECK(out.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(out.status().message()), Catch::Contains("input_ids[0, 3]") && Catch::Contains("97"));

  input.input_ids = at::full({1, 2}, -1, at::kLong);
  CHECK(model.forward(input).status().code() == absl::StatusCode::kInvalidArgument);
  input.input_ids = at::zeros({1, 0}, at::kLong);
  CHECK(model.forward(input).status().code() == absl::StatusCode::kInvalidArgument);
  input.input_ids = at::zeros({4}, at::kLong);
  CHECK(model.forward(input).status().code() == absl::StatusCode::kInvalidArgument);
  input.input_ids = at::zeros({1, 4}, at::kFloat);
  CHECK(model.forward(input).status().code() == absl::StatusCode::kInvalidArgument);
  input.input_ids = at::zeros({1, 4}, at::kInt);  // int32 ids are fine
  REQUIRE_OK(model.forward(input));
  input.labels = at::zeros({1, 3}, at::kLong);
  CHECK_THAT(std::string(model.forward(input).status().message()), Catch::Contains("labels"));
  input.labels = at::full({1, 4}, 500, at::kLong);
  CHECK(model.forward(input).status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("Model::random is reproducible from its seed", "[unit]") {
  const ModelConfig config = tiny_config();
  const Model a = Model::random(config, {}, 42).value();
  const Model b = Model::random(config, {}, 42).value();
  const Model c = Model::random(config, {}, 43).value();
  const auto pa = a.parameter("model.layers.1.mlp.up_proj.weight").value();
  CHECK(at::equal(pa, b.parameter("model.layers.1.mlp.up_proj.weight").value()));
  CHECK_FALSE(at::equal(pa, c.parameter("model.layers.1.mlp.up_proj.weight").value()));
  CHECK(pa.std().item<double>() == Approx(0.02).epsilon(0.1));
  CHECK(Model::random(config, {at::kLong}).status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("loading a saved model gives the same logits, in fp32 and converted", "[unit]") {
  const ModelConfig config = tiny_config();
  const Model model = tiny_model(config, 21);
  TempDir dir;
  save_model_dir(dir.path(), model, config_json(config));
  auto loaded = Model::load(dir.path());
  REQUIRE_OK(loaded);
  at::NoGradGuard no_grad;
  const at::Tensor ids = random_ids(1, 6, config.vocab_size, 22);
  CHECK(max_abs_diff(logits_of(model, ids), logits_of(*loaded, ids)) == 0.0);
  CHECK(loaded->num_parameters() == model.num_parameters());

  auto as_double_check = Model::load(dir.path(), {at::kBFloat16});
  REQUIRE_OK(as_double_check);
  CHECK(as_double_check->parameter("model.norm.weight").value().scalar_type() == at::kBFloat16);
}

TEST_CASE("loading reports missing, unexpected, misshapen and non-float tensors by name", "[unit]") {
  const ModelConfig config = tiny_config();
  const Model model = tiny_model(config);
  const auto json = config_json(config);
  auto load_message = [&](const NamedTensors& replace, bool drop_q = false) {
    TempDir dir;
    save_model_dir(dir.path(), model, json, replace);
    if (drop_q) {
      NamedTensors kept;
      for (auto& entry : model.named_parameters()) {
        if (entry.first != "model.layers.1.self_attn.q_proj.weight") kept.push_back(entry);
      }
      REQUIRE_OK(write_checkpoint(dir.path(), kept));
    }
    auto result = Model::load(dir.path());
    REQUIRE_FALSE(result.ok());
    CHECK(result.status().code() == absl::StatusCode::kInvalidArgument);
    return std::string(result.status().message());
  };
  CHECK_THAT(load_message({}, true), Catch::Contains("lacks 1") && Catch::Contains("layers.1.self_attn.q_proj.weight"));
  CHECK_THAT(load_message({{"model.layers.9.mlp.extra.weight", at::ones({2})}}),
             Catch::Contains("does not use") && Catch::Contains("layers.9.mlp.extra"));
  CHECK_THAT(load_message({{"model.norm.weight", at::ones({31})}}),
             Catch::Contains("model.norm.weight is [31], expected [32]"));
  CHECK_THAT(load_message({{"model.norm.weight", at::ones({32}, at::kLong)}}), Catch::Contains("floating point"));
}

TEST_CASE("loading reports missing directories, configs and weights", "[unit]") {
  TempDir dir;
  CHECK(Model::load(dir / "absent").status().code() == absl::StatusCode::kNotFound);
  CHECK(Model::load(dir.path()).status().code() == absl::StatusCode::kNotFound);  // no config.json
  std::ofstream(dir / "config.json") << config_json(tiny_config()).dump();
  auto no_weights = Model::load(dir.path());
  CHECK(no_weights.status().code() == absl::StatusCode::kNotFound);
  CHECK_THAT(std::string(no_weights.status().message()), Catch::Contains("model.safetensors"));
  std::ofstream(dir / "model.safetensors") << "garbage that is not a safetensors file";
  CHECK(Model::load(dir.path()).status().code() == absl::StatusCode::kInvalidArgument);
  auto json = config_json(tiny_config());
  json["model_type"] = "falcon";
  std::ofstream(dir / "config.json") << json.dump();
  CHECK(Model::load(dir.path()).status().code() == absl::StatusCode::kUnimplemented);
}

TEST_CASE("packed documents with segment ids and restarted positions equal each document alone", "[unit]") {
  for (ModelFamily family : {ModelFamily::kLlama, ModelFamily::kMistral}) {
    ModelConfig config = tiny_config(family);
    if (family == ModelFamily::kMistral) config.sliding_window = 4;
    const Model model = tiny_model(config, 95);
    const at::Tensor a = random_ids(1, 7, config.vocab_size, 96);
    const at::Tensor b = random_ids(1, 5, config.vocab_size, 97);
    ForwardInput packed;
    packed.input_ids = at::cat({a, b}, 1);
    packed.position_ids = at::cat({at::arange(7, at::kLong), at::arange(5, at::kLong)}).unsqueeze(0);
    packed.segment_ids = at::cat({at::zeros({7}, at::kLong), at::ones({5}, at::kLong)}).unsqueeze(0);
    at::NoGradGuard no_grad;
    auto out = model.forward(packed);
    REQUIRE_OK(out);
    CHECK(max_abs_diff(out->logits.narrow(1, 0, 7), logits_of(model, a)) < 1e-5);
    CHECK(max_abs_diff(out->logits.narrow(1, 7, 5), logits_of(model, b)) < 1e-5);
    KvCache cache;
    CHECK(model.forward(packed, &cache).status().code() == absl::StatusCode::kInvalidArgument);
  }
}
