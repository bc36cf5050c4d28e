// LoraAdapter and export_merged_model on tiny random models: the maths against references
// computed here in fp64, PEFT's file format, merge/unmerge, and the errors for bad input.
#include <ATen/core/grad_mode.h>
#include <sys/stat.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "io/directory.hpp"
#include "io/read_file.hpp"
#include "io/safetensors.hpp"
#include "model/model_impl.hpp"
#include "model_support.hpp"
#include "temper/export.hpp"
#include "temper/lora_adapter.hpp"

using namespace temper;
using namespace temper::testing;

namespace {

constexpr char kPrefix[] = "base_model.model.";

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool file_exists(const std::filesystem::path& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

// Gives B (and DoRA's magnitude) random values, so that the adapter changes the output.
void randomise(const LoraAdapter& adapter, uint64_t seed, double b_std = 0.2) {
  at::NoGradGuard no_grad;
  at::manual_seed(static_cast<int64_t>(seed));
  for (auto& [name, p] : adapter.named_parameters()) {
    if (ends_with(name, "lora_B.weight")) p.normal_(0.0, b_std);
    if (ends_with(name, "lora_magnitude_vector")) p.mul_(1.0 + 0.2 * at::rand_like(p));
  }
}

at::Tensor tensor_of(const LoraAdapter& adapter, const std::string& name) {
  for (auto& [n, t] : adapter.named_parameters()) {
    if (n == name) return t;
  }
  FAIL("no adapter tensor " << name);
  return {};
}

at::Tensor a_of(const LoraAdapter& adapter, const std::string& module) {
  return tensor_of(adapter, kPrefix + module + ".lora_A.weight");
}
at::Tensor b_of(const LoraAdapter& adapter, const std::string& module) {
  return tensor_of(adapter, kPrefix + module + ".lora_B.weight");
}

// (W + s B A) x + b in fp64, for the projection `module` of layer 0/1 of `model`.
at::Tensor lora_reference(const Linear& linear, const at::Tensor& a, const at::Tensor& b, double scale,
                          const at::Tensor& x) {
  const at::Tensor w = linear.weight.to(at::kDouble) + scale * at::mm(b.to(at::kDouble), a.to(at::kDouble));
  at::Tensor y = at::matmul(x.to(at::kDouble), w.t());
  if (linear.bias.defined()) y = y + linear.bias.to(at::kDouble);
  return y;
}

// DoRA as the paper writes it: m / ||W + s B A||_row * (W + s B A) x + b, in fp64.
at::Tensor dora_reference(const Linear& linear, const at::Tensor& a, const at::Tensor& b, const at::Tensor& m,
                          double scale, const at::Tensor& x) {
  const at::Tensor v = linear.weight.to(at::kDouble) + scale * at::mm(b.to(at::kDouble), a.to(at::kDouble));
  const at::Tensor norm = v.pow(2).sum(1).sqrt();
  const at::Tensor w = (m.to(at::kDouble) / norm).unsqueeze(1) * v;
  at::Tensor y = at::matmul(x.to(at::kDouble), w.t());
  if (linear.bias.defined()) y = y + linear.bias.to(at::kDouble);
  return y;
}

at::Tensor layer_output(const Linear& linear, const at::Tensor& x) {
  at::NoGradGuard no_grad;
  return linear.forward(x);
}

LoraOptions rank_options(int64_t rank) {
  LoraOptions options;
  options.rank = rank;
  return options;
}

std::string status_message(const absl::Status& s) { return std::string(s.message()); }

void write_text(const std::filesystem::path& path, const std::string& text) { std::ofstream(path) << text; }

nlohmann::json read_json(const std::filesystem::path& path) { return nlohmann::json::parse(read_file(path).value()); }

}  // namespace

TEST_CASE("a fresh LoRA adapter leaves the logits unchanged and covers every projection", "[unit]") {
  const ModelConfig config = tiny_config();
  Model model = tiny_model(config, 1);
  const at::Tensor ids = random_ids(2, 9, config.vocab_size, 2);
  const at::Tensor before = logits_of(model, ids);

  auto adapter = LoraAdapter::create(model);
  REQUIRE_OK(adapter);
  CHECK(adapter->options().alpha.value() == 32.0);  // 2 * rank
  CHECK(adapter->target_modules().size() == 14);
  const auto params = adapter->named_parameters();
  REQUIRE(params.size() == 28);
  CHECK(params[0].first == "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
  CHECK(params[0].second.sizes() == at::IntArrayRef({16, 32}));
  CHECK(params[1].first == "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight");
  CHECK(params[1].second.sizes() == at::IntArrayRef({32, 16}));
  CHECK(params[27].first == "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight");
  for (const auto& [name, t] : params) {
    INFO(name);
    CHECK(t.requires_grad());
    CHECK(t.scalar_type() == at::kFloat);
    if (ends_with(name, "lora_B.weight")) CHECK(t.abs().max().item<double>() == 0.0);
  }
  CHECK(adapter->num_parameters() == 2 * (16 * (32 + 32) + 2 * 16 * (32 + 16) + 16 * (32 + 32) +
                                          2 * 16 * (32 + 48) + 16 * (48 + 32)));
  CHECK(max_abs_diff(logits_of(model, ids), before) == 0.0);
}

TEST_CASE("LoRA forward equals (W + s B A) x + b computed independently", "[unit]") {
  const ModelConfig config = tiny_config(ModelFamily::kQwen2);  // q/k/v carry biases
  Model model = tiny_model(config, 3);
  LoraOptions options;
  options.rank = 4;
  options.alpha = 12.0;
  auto adapter = LoraAdapter::create(model, options);
  REQUIRE_OK(adapter);
  randomise(*adapter, 4);
  const double scale = 12.0 / 4;

  const at::Tensor x = at::randn({2, 5, config.hidden_size});
  for (const char* module : {"model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.o_proj"}) {
    INFO(module);
    const Linear& linear = std::string(module).find("q_proj") != std::string::npos ? model.impl().layers[0].q
                                                                                     : model.impl().layers[1].o;
    const at::Tensor in = linear.weight.size(1) == config.hidden_size ? x : at::randn({2, 5, linear.weight.size(1)});
    CHECK(max_abs_diff(layer_output(linear, in), lora_reference(linear, a_of(*adapter, module), b_of(*adapter, module),
                                                                scale, in)) < 1e-5);
  }

  // The whole model: the same logits as a copy whose weights hold W + s B A.
  Model reference = tiny_model(config, 3);
  {
    at::NoGradGuard no_grad;
    for (const std::string& module : adapter->target_modules()) {
      const at::Tensor w = reference.parameter(module + ".weight").value();
      w.copy_(w.to(at::kDouble) + scale * at::mm(b_of(*adapter, module).to(at::kDouble),
                                                 a_of(*adapter, module).to(at::kDouble)));
    }
  }
  const at::Tensor ids = random_ids(2, 8, config.vocab_size, 5);
  const at::Tensor adapted = logits_of(model, ids);
  CHECK(max_abs_diff(adapted, logits_of(reference, ids)) < 1e-4);
  CHECK(max_abs_diff(adapted, logits_of(tiny_model(config, 3), ids)) > 1e-2);
}

TEST_CASE("rsLoRA scales by alpha / sqrt(r)", "[unit]") {
  const ModelConfig config = tiny_config();
  for (bool rslora : {false, true}) {
    INFO("rslora " << rslora);
    Model model = tiny_model(config, 6);
    LoraOptions options;
    options.rank = 4;
    options.alpha = 8.0;
    options.use_rslora = rslora;
    options.target_modules = {"v_proj"};
    auto adapter = LoraAdapter::create(model, options);
    REQUIRE_OK(adapter);
    randomise(*adapter, 7);
    const std::string module = "model.layers.0.self_attn.v_proj";
    const Linear& linear = model.impl().layers[0].v;
    const at::Tensor x = at::randn({3, config.hidden_size});
    const double scale = rslora ? 8.0 / 2.0 : 8.0 / 4.0;
    CHECK(max_abs_diff(layer_output(linear, x),
                       lora_reference(linear, a_of(*adapter, module), b_of(*adapter, module), scale, x)) < 1e-5);
  }
}

TEST_CASE("rank_pattern and alpha_pattern override rank and alpha per module as PEFT keys them", "[unit]") {
  const ModelConfig config = tiny_config();
  Model model = tiny_model(config, 8);
  LoraOptions options;
  options.rank = 8;
  options.alpha = 16.0;
  options.rank_pattern = {{"q_proj", 4}, {"layers\\.1\\.mlp\\.down_proj", 2}};
  options.alpha_pattern = {{"model.layers.0.self_attn.v_proj", 3.0}};
  auto adapter = LoraAdapter::create(model, options);
  REQUIRE_OK(adapter);
  CHECK(a_of(*adapter, "model.layers.0.self_attn.q_proj").size(0) == 4);
  CHECK(a_of(*adapter, "model.layers.1.self_attn.q_proj").size(0) == 4);
  CHECK(a_of(*adapter, "model.layers.1.mlp.down_proj").size(0) == 2);
  CHECK(a_of(*adapter, "model.layers.0.mlp.down_proj").size(0) == 8);
  CHECK(b_of(*adapter, "model.layers.1.mlp.down_proj").size(1) == 2);

  randomise(*adapter, 9);
  const at::Tensor x = at::randn({3, config.hidden_size});
  const std::string v0 = "model.layers.0.self_attn.v_proj";
  const std::string v1 = "model.layers.1.self_attn.v_proj";
  CHECK(max_abs_diff(layer_output(model.impl().layers[0].v, x),
                     lora_reference(model.impl().layers[0].v, a_of(*adapter, v0), b_of(*adapter, v0), 3.0 / 8, x)) < 1e-5);
  CHECK(max_abs_diff(layer_output(model.impl().layers[1].v, x),
                     lora_reference(model.impl().layers[1].v, a_of(*adapter, v1), b_of(*adapter, v1), 16.0 / 8, x)) < 1e-5);
  // A module whose rank the pattern changes keeps the global alpha (PEFT has one lora_alpha).
  const std::string q0 = "model.layers.0.self_attn.q_proj";
  CHECK(max_abs_diff(layer_output(model.impl().layers[0].q, x),
                     lora_reference(model.impl().layers[0].q, a_of(*adapter, q0), b_of(*adapter, q0), 16.0 / 4, x)) < 1e-5);
}

TEST_CASE("LoRA targets by module name, name suffix and glob", "[unit]") {
  const ModelConfig config = tiny_config();
  struct Case {
    std::vector<std::string> targets;
    std::vector<std::string> expected;
  };
  const Case cases[] = {
      {{"q_proj"}, {"model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"}},
      {{"layers.1.mlp.up_proj", "o_proj"},
       {"model.layers.0.self_attn.o_proj", "model.layers.1.self_attn.o_proj", "model.layers.1.mlp.up_proj"}},
      {{"model.layers.*.self_attn.[kv]_proj"},
       {"model.layers.0.self_attn.k_proj", "model.layers.0.self_attn.v_proj", "model.layers.1.self_attn.k_proj",
        "model.layers.1.self_attn.v_proj"}},
      {{"model.layers.1.mlp.*"}, {"model.layers.1.mlp.gate_proj", "model.layers.1.mlp.up_proj", "model.layers.1.mlp.down_proj"}},
  };
  for (const Case& c : cases) {
    INFO(c.targets.front());
    Model model = tiny_model(config, 10);
    LoraOptions options;
    options.rank = 2;
    options.target_modules = c.targets;
    auto adapter = LoraAdapter::create(model, options);
    REQUIRE_OK(adapter);
    CHECK(adapter->target_modules() == c.expected);
    int with_delta = 0;
    for (const DecoderLayer& layer : model.impl().layers) {
      for (LinearSlot slot : kLinearSlots) with_delta += layer.linear(slot).delta != nullptr;
    }
    CHECK(with_delta == static_cast<int>(c.expected.size()));
  }
}

TEST_CASE("bad LoRA options are errors that name what to fix", "[unit]") {
  const ModelConfig config = tiny_config();
  Model model = tiny_model(config, 11);
  auto expect = [&](const LoraOptions& options, absl::StatusCode code, const std::string& needle) {
    auto adapter = LoraAdapter::create(model, options);
    INFO(status_text(adapter));
    REQUIRE_FALSE(adapter.ok());
    CHECK(adapter.status().code() == code);
    CHECK(status_message(adapter.status()).find(needle) != std::string::npos);
  };
  LoraOptions o;
  o.target_modules = {"q_proj", "qproj"};
  expect(o, absl::StatusCode::kInvalidArgument, "\"qproj\"");
  o = {};
  o.target_modules = {"model.layers.7.*"};
  expect(o, absl::StatusCode::kInvalidArgument, "model.layers.7.*");
  o = {};
  o.rank = 17;  // k_proj is [16, 32]
  expect(o, absl::StatusCode::kInvalidArgument, "model.layers.0.self_attn.k_proj");
  o = {};
  o.rank = 0;
  expect(o, absl::StatusCode::kInvalidArgument, "rank");
  o = {};
  o.rank_pattern = {{"mlp\\.up_proj", 40}};  // up_proj is [48, 32]
  expect(o, absl::StatusCode::kInvalidArgument, "model.layers.0.mlp.up_proj");
  o = {};
  o.rank_pattern = {{"qproj", 2}};
  expect(o, absl::StatusCode::kInvalidArgument, "\"qproj\"");
  o = {};
  o.alpha_pattern = {{"(q_proj", 2.0}};
  expect(o, absl::StatusCode::kInvalidArgument, "(q_proj");
  o = {};
  o.dropout = 1.0;
  expect(o, absl::StatusCode::kInvalidArgument, "dropout");
  o = {};
  o.target_modules = {""};
  expect(o, absl::StatusCode::kInvalidArgument, "empty");

  LoraOptions small;
  small.rank = 2;
  auto first = LoraAdapter::create(model, small);
  REQUIRE_OK(first);
  expect(small, absl::StatusCode::kFailedPrecondition, "already carries an adapter");
  first->remove();
  REQUIRE_OK(LoraAdapter::create(model, small));
}

TEST_CASE("gradients reach only the adapter's tensors", "[unit]") {
  for (bool dora : {false, true}) {
    INFO("dora " << dora);
    const ModelConfig config = tiny_config(ModelFamily::kQwen2);
    Model model = tiny_model(config, 12);
    for (auto& [name, p] : model.named_parameters()) p.requires_grad_(true);  // create() freezes them
    LoraOptions options;
    options.rank = 4;
    options.use_dora = dora;
    auto adapter = LoraAdapter::create(model, options);
    REQUIRE_OK(adapter);
    randomise(*adapter, 13);
    ForwardInput input;
    input.input_ids = random_ids(2, 7, config.vocab_size, 14);
    input.labels = input.input_ids;
    auto out = model.forward(input);
    REQUIRE_OK(out);
    out->loss.backward();
    for (auto& [name, p] : model.named_parameters()) {
      INFO(name);
      CHECK_FALSE(p.requires_grad());
      CHECK_FALSE(p.grad().defined());
    }
    for (auto& [name, p] : adapter->named_parameters()) {
      INFO(name);
      REQUIRE(p.grad().defined());
      CHECK(p.grad().abs().sum().item<double>() > 0.0);
    }
  }
}

TEST_CASE("merging equals the unmerged forward and unmerging restores the base weights", "[unit]") {
  for (bool dora : {false, true}) {
    INFO("dora " << dora);
    const ModelConfig config = tiny_config(ModelFamily::kQwen2);
    Model model = tiny_model(config, 15);
    const std::vector<std::pair<std::string, at::Tensor>> base = [&] {
      std::vector<std::pair<std::string, at::Tensor>> copy;
      for (auto& [name, p] : model.named_parameters()) copy.emplace_back(name, p.clone());
      return copy;
    }();
    LoraOptions options;
    options.rank = 4;
    options.use_dora = dora;
    auto adapter = LoraAdapter::create(model, options);
    REQUIRE_OK(adapter);
    randomise(*adapter, 16);
    const at::Tensor ids = random_ids(2, 8, config.vocab_size, 17);
    const at::Tensor unmerged = logits_of(model, ids);

    auto folded = adapter->merged_weights();
    REQUIRE_OK(folded);
    for (size_t i = 0; i < base.size(); ++i) CHECK(max_abs_diff(model.named_parameters()[i].second, base[i].second) == 0.0);

    REQUIRE_OK(adapter->merge());
    CHECK(adapter->merged());
    REQUIRE_OK(adapter->merge());  // already merged: nothing happens
    CHECK(max_abs_diff(logits_of(model, ids), unmerged) < 1e-4);
    // merged_weights() of a merged adapter is the model's weights, which equal the folded ones.
    const auto params = model.named_parameters();
    for (size_t i = 0; i < params.size(); ++i) {
      INFO(params[i].first);
      CHECK(folded->at(i).first == params[i].first);
      CHECK(max_abs_diff(folded->at(i).second, params[i].second) < 1e-6);
    }

    REQUIRE_OK(adapter->unmerge());
    CHECK_FALSE(adapter->merged());
    for (size_t i = 0; i < base.size(); ++i) {
      INFO(base[i].first);
      CHECK(max_abs_diff(model.named_parameters()[i].second, base[i].second) < 1e-6);
    }
    CHECK(max_abs_diff(logits_of(model, ids), unmerged) < 1e-5);
  }
}

TEST_CASE("removing an adapter restores the base model, or keeps the merged weights", "[unit]") {
  const ModelConfig config = tiny_config();
  Model model = tiny_model(config, 18);
  const at::Tensor ids = random_ids(1, 6, config.vocab_size, 19);
  const at::Tensor base = logits_of(model, ids);
  at::Tensor adapted;
  {
    auto adapter = LoraAdapter::create(model, rank_options(2));
    REQUIRE_OK(adapter);
    randomise(*adapter, 20);
    adapted = logits_of(model, ids);
    CHECK(max_abs_diff(adapted, base) > 1e-3);
  }  // the destructor uninstalls
  CHECK(max_abs_diff(logits_of(model, ids), base) == 0.0);

  auto adapter = LoraAdapter::create(model, rank_options(2));
  REQUIRE_OK(adapter);
  randomise(*adapter, 20);
  REQUIRE_OK(adapter->merge());
  adapter->remove();
  adapter->remove();
  CHECK(max_abs_diff(logits_of(model, ids), adapted) < 1e-4);  // merge_and_unload
  CHECK(adapter->merge().code() == absl::StatusCode::kFailedPrecondition);
}

TEST_CASE("LoRA dropout applies only while training", "[unit]") {
  const ModelConfig config = tiny_config();
  Model model = tiny_model(config, 21);
  LoraOptions options;
  options.rank = 4;
  options.dropout = 0.5;
  options.target_modules = {"q_proj"};
  auto adapter = LoraAdapter::create(model, options);
  REQUIRE_OK(adapter);
  randomise(*adapter, 22);
  const Linear& linear = model.impl().layers[0].q;
  const at::Tensor x = at::randn({4, config.hidden_size});
  const std::string q = "model.layers.0.self_attn.q_proj";
  const at::Tensor reference = lora_reference(linear, a_of(*adapter, q), b_of(*adapter, q), 8.0 / 4, x);  // alpha = 2r
  CHECK_FALSE(adapter->training());
  CHECK(max_abs_diff(layer_output(linear, x), reference) < 1e-5);
  adapter->set_training(true);
  CHECK(max_abs_diff(layer_output(linear, x), reference) > 1e-3);
  // The base path never sees the mask: with B = 0 training changes nothing.
  {
    at::NoGradGuard no_grad;
    b_of(*adapter, q).zero_();
  }
  CHECK(max_abs_diff(layer_output(linear, x), linear.base_forward(x)) == 0.0);
}

TEST_CASE("LoRA initialisation is seeded and follows PEFT", "[unit]") {
  const ModelConfig config = tiny_config();
  auto a_values = [&](const LoraOptions& options) {
    Model model = tiny_model(config, 23);
    auto adapter = LoraAdapter::create(model, options);
    REQUIRE_OK(adapter);
    std::vector<at::Tensor> out;
    for (auto& [name, t] : adapter->named_parameters()) {
      if (ends_with(name, "lora_A.weight")) out.push_back(t.detach().clone());
    }
    return out;
  };
  LoraOptions options;
  options.rank = 4;
  options.seed = 7;
  const auto first = a_values(options);
  const auto again = a_values(options);
  options.seed = 8;
  const auto other = a_values(options);
  for (size_t i = 0; i < first.size(); ++i) {
    CHECK(max_abs_diff(first[i], again[i]) == 0.0);
    CHECK(max_abs_diff(first[i], other[i]) > 0.0);
    // kaiming_uniform(a = sqrt(5)) on [r, in]: U(-1/sqrt(in), 1/sqrt(in)).
    const double bound = 1.0 / std::sqrt(static_cast<double>(first[i].size(1)));
    CHECK(first[i].abs().max().item<double>() <= bound);
    CHECK(first[i].abs().max().item<double>() > 0.8 * bound);
  }
  options.init = LoraOptions::Init::kGaussian;
  const auto gaussian = a_values(options);
  std::vector<at::Tensor> flat;
  for (const auto& t : gaussian) flat.push_back(t.flatten());
  CHECK(at::cat(flat).std().item<double>() == Approx(1.0 / 4).epsilon(0.1));
}

TEST_CASE("DoRA starts as the base model and computes PEFT's formula", "[unit]") {
  const ModelConfig config = tiny_config(ModelFamily::kQwen2);
  Model model = tiny_model(config, 24);
  const at::Tensor ids = random_ids(2, 7, config.vocab_size, 25);
  const at::Tensor base = logits_of(model, ids);
  LoraOptions options;
  options.rank = 4;
  options.alpha = 6.0;
  options.use_dora = true;
  auto adapter = LoraAdapter::create(model, options);
  REQUIRE_OK(adapter);
  CHECK(adapter->named_parameters().size() == 3 * 14);
  const std::string q = "model.layers.0.self_attn.q_proj";
  const at::Tensor magnitude = tensor_of(*adapter, kPrefix + q + ".lora_magnitude_vector");
  const Linear& linear = model.impl().layers[0].q;
  CHECK(magnitude.sizes() == at::IntArrayRef({linear.weight.size(0)}));
  CHECK(max_abs_diff(magnitude, linear.weight.pow(2).sum(1).sqrt()) < 1e-5);  // ||W||_row
  CHECK(max_abs_diff(logits_of(model, ids), base) < 1e-5);

  randomise(*adapter, 26);
  const at::Tensor x = at::randn({2, 3, config.hidden_size});
  CHECK(max_abs_diff(layer_output(linear, x),
                     dora_reference(linear, a_of(*adapter, q), b_of(*adapter, q), magnitude, 6.0 / 4, x)) < 1e-5);
  CHECK(max_abs_diff(logits_of(model, ids), base) > 1e-3);
}

TEST_CASE("save then load gives the same adapter and logits, in PEFT's format", "[unit]") {
  const ModelConfig config = tiny_config();
  for (bool dora : {false, true}) {
    INFO("dora " << dora);
    TempDir tmp;
    Model model = tiny_model(config, 27);
    LoraOptions options;
    options.rank = 4;
    options.alpha = 8.0;
    options.use_dora = dora;
    options.use_rslora = dora;
    options.dropout = 0.05;
    options.target_modules = {"q_proj", "v_proj", "model.layers.1.mlp.*"};
    options.rank_pattern = {{"v_proj", 2}};
    options.alpha_pattern = {{"layers\\.1\\.mlp\\.down_proj", 3.5}};
    auto adapter = LoraAdapter::create(model, options);
    REQUIRE_OK(adapter);
    randomise(*adapter, 28);
    const at::Tensor ids = random_ids(2, 8, config.vocab_size, 29);
    const at::Tensor adapted = logits_of(model, ids);
    const std::filesystem::path dir = tmp / "adapter";
    REQUIRE_OK(adapter->save(dir, "org/tiny-base"));

    const std::string text = read_file(dir / "adapter_config.json").value();
    const nlohmann::json cfg = nlohmann::json::parse(text);
    CHECK(text == cfg.dump(2) + "\n");  // indent 2, keys sorted
    std::vector<std::string> keys;
    for (auto it = cfg.begin(); it != cfg.end(); ++it) keys.push_back(it.key());
    CHECK(keys == std::vector<std::string>{"alpha_pattern", "base_model_name_or_path", "bias", "fan_in_fan_out",
                                           "inference_mode", "init_lora_weights", "lora_alpha", "lora_dropout",
                                           "modules_to_save", "peft_type", "r", "rank_pattern", "target_modules",
                                           "task_type", "use_dora", "use_rslora"});
    CHECK(cfg["peft_type"] == "LORA");
    CHECK(cfg["task_type"] == "CAUSAL_LM");
    CHECK(cfg["r"] == 4);
    CHECK(cfg["lora_alpha"] == 8);
    CHECK(cfg["use_dora"] == dora);
    CHECK(cfg["base_model_name_or_path"] == "org/tiny-base");
    CHECK(cfg["target_modules"] == nlohmann::json({"model.layers.1.mlp.down_proj", "model.layers.1.mlp.gate_proj",
                                                   "model.layers.1.mlp.up_proj", "q_proj", "v_proj"}));
    CHECK(cfg["rank_pattern"] == nlohmann::json({{"v_proj", 2}}));
    CHECK(cfg["alpha_pattern"] == nlohmann::json({{"layers\\.1\\.mlp\\.down_proj", 3.5}}));

    auto file = SafetensorsFile::open(dir / "adapter_model.safetensors");
    REQUIRE_OK(file);
    CHECK(file->entries().size() == (dora ? 3u : 2u) * 7);
    const SafetensorsEntry* v = file->find("base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight");
    REQUIRE(v != nullptr);
    CHECK(v->shape == std::vector<int64_t>{2, 32});
    CHECK(v->dtype == "F32");
    CHECK(file->contains("base_model.model.model.layers.1.mlp.up_proj.lora_B.weight"));
    CHECK(file->contains("base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector") == dora);

    Model fresh = tiny_model(config, 27);
    auto loaded = LoraAdapter::load(fresh, dir);
    REQUIRE_OK(loaded);
    CHECK(max_abs_diff(logits_of(fresh, ids), adapted) == 0.0);
    CHECK(loaded->target_modules() == adapter->target_modules());
    CHECK(loaded->options().dropout == 0.05);
    CHECK(loaded->options().use_dora == dora);
    const auto saved = adapter->named_parameters();
    const auto read = loaded->named_parameters();
    REQUIRE(saved.size() == read.size());
    for (size_t i = 0; i < saved.size(); ++i) {
      CHECK(saved[i].first == read[i].first);
      CHECK(max_abs_diff(saved[i].second, read[i].second) == 0.0);
      CHECK(read[i].second.requires_grad());
    }
  }
}

TEST_CASE("an adapter for another base model is refused, naming the first mismatching tensor", "[unit]") {
  TempDir tmp;
  ModelConfig config = tiny_config();
  Model model = tiny_model(config, 30);
  auto adapter = LoraAdapter::create(model, rank_options(4));
  REQUIRE_OK(adapter);
  REQUIRE_OK(adapter->save(tmp / "adapter", "tiny"));

  ModelConfig wider = config;
  wider.hidden_size = 48;
  wider.head_dim = 12;
  Model other = tiny_model(wider, 30);
  auto loaded = LoraAdapter::load(other, tmp / "adapter");
  INFO(status_text(loaded));
  REQUIRE_FALSE(loaded.ok());
  CHECK(loaded.status().code() == absl::StatusCode::kInvalidArgument);
  const std::string message = status_message(loaded.status());
  CHECK(message.find("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight has shape [4, 32], expected [4, 48]") !=
        std::string::npos);
  for (const DecoderLayer& layer : other.impl().layers) CHECK(layer.q.delta == nullptr);

  ModelConfig deeper = config;
  deeper.num_layers = 3;
  Model third = tiny_model(deeper, 30);
  auto missing = LoraAdapter::load(third, tmp / "adapter");
  INFO(status_text(missing));
  REQUIRE_FALSE(missing.ok());
  CHECK(status_message(missing.status()).find("base_model.model.model.layers.2.self_attn.q_proj.lora_A.weight is missing") !=
        std::string::npos);

  ModelConfig shallower = config;
  shallower.num_layers = 1;
  Model fourth = tiny_model(shallower, 30);
  auto unexpected = LoraAdapter::load(fourth, tmp / "adapter");
  INFO(status_text(unexpected));
  REQUIRE_FALSE(unexpected.ok());
  CHECK(status_message(unexpected.status()).find("model.layers.1.") != std::string::npos);
}

TEST_CASE("corrupt and unsupported adapter configs are refused with the field named", "[unit]") {
  TempDir tmp;
  const ModelConfig config = tiny_config();
  Model model = tiny_model(config, 31);
  {
    auto adapter = LoraAdapter::create(model, rank_options(2));
    REQUIRE_OK(adapter);
    REQUIRE_OK(adapter->save(tmp / "good", "tiny"));
  }
  const nlohmann::json good = read_json(tmp / "good" / "adapter_config.json");
  int n = 0;
  auto expect = [&](const std::function<void(nlohmann::json&)>& edit, absl::StatusCode code, const std::string& needle,
                    const std::string& raw = "") {
    const std::filesystem::path dir = tmp / ("case" + std::to_string(n++));
    std::filesystem::create_directories(dir);
    std::filesystem::copy_file(tmp / "good" / "adapter_model.safetensors", dir / "adapter_model.safetensors");
    nlohmann::json cfg = good;
    edit(cfg);
    write_text(dir / "adapter_config.json", raw.empty() ? cfg.dump(2) : raw);
    auto loaded = LoraAdapter::load(model, dir);
    INFO(status_text(loaded));
    REQUIRE_FALSE(loaded.ok());
    CHECK(loaded.status().code() == code);
    CHECK(status_message(loaded.status()).find(needle) != std::string::npos);
  };
  using Code = absl::StatusCode;
  expect([](nlohmann::json&) {}, Code::kInvalidArgument, "invalid JSON", "{\"peft_type\": \"LORA\", ");
  expect([](nlohmann::json& c) { c["peft_type"] = "PREFIX_TUNING"; }, Code::kInvalidArgument, "peft_type");
  expect([](nlohmann::json& c) { c.erase("r"); }, Code::kInvalidArgument, "\"r\"");
  expect([](nlohmann::json& c) { c["r"] = "two"; }, Code::kInvalidArgument, "\"r\"");
  expect([](nlohmann::json& c) { c["r"] = 3; }, Code::kInvalidArgument, "has shape [2, 32], expected [3, 32]");
  expect([](nlohmann::json& c) { c["target_modules"] = nlohmann::json::array(); }, Code::kInvalidArgument,
         "selects no linear projection");
  expect([](nlohmann::json& c) { c["target_modules"] = {"q_proj"}; }, Code::kInvalidArgument,
         "layers.0.mlp.down_proj.lora_A.weight is not one");
  expect([](nlohmann::json& c) { c["use_dora"] = true; }, Code::kInvalidArgument, "lora_magnitude_vector is missing");
  expect([](nlohmann::json& c) { c["modules_to_save"] = {"lm_head"}; }, Code::kUnimplemented, "modules_to_save");
  expect([](nlohmann::json& c) { c["fan_in_fan_out"] = true; }, Code::kUnimplemented, "fan_in_fan_out");
  expect([](nlohmann::json& c) { c["bias"] = "all"; }, Code::kUnimplemented, "bias");
  expect([](nlohmann::json& c) { c["layers_to_transform"] = {0}; }, Code::kUnimplemented, "layers_to_transform");
  expect([](nlohmann::json& c) { c["init_lora_weights"] = "pissa"; }, Code::kUnimplemented, "init_lora_weights");
  expect([](nlohmann::json& c) { c["lora_bias"] = true; }, Code::kUnimplemented, "lora_bias");

  // Fields of newer PEFT versions that change nothing are accepted.
  {
    const std::filesystem::path dir = tmp / "newer";
    std::filesystem::create_directories(dir);
    std::filesystem::copy_file(tmp / "good" / "adapter_model.safetensors", dir / "adapter_model.safetensors");
    nlohmann::json cfg = good;
    cfg["peft_version"] = "0.21.0";
    cfg["exclude_modules"] = nullptr;
    cfg["lora_bias"] = false;
    cfg["megatron_core"] = "megatron.core";
    cfg["loftq_config"] = nlohmann::json::object();
    cfg["layer_replication"] = nullptr;
    cfg["target_modules"] = ".*\\.(q|k|v|o|gate|up|down)_proj";
    write_text(dir / "adapter_config.json", cfg.dump(2));
    auto loaded = LoraAdapter::load(model, dir);
    REQUIRE_OK(loaded);
    CHECK(loaded->target_modules().size() == 14);
  }

  CHECK(LoraAdapter::load(model, tmp / "nowhere").status().code() == Code::kNotFound);
  std::filesystem::create_directories(tmp / "no_weights");
  std::filesystem::copy_file(tmp / "good" / "adapter_config.json", tmp / "no_weights" / "adapter_config.json");
  CHECK(LoraAdapter::load(model, tmp / "no_weights").status().code() == Code::kNotFound);
}

TEST_CASE("saving replaces an adapter directory whole and refuses to replace anything else", "[unit]") {
  TempDir tmp;
  const ModelConfig config = tiny_config();
  Model model = tiny_model(config, 32);
  auto adapter = LoraAdapter::create(model, rank_options(2));
  REQUIRE_OK(adapter);
  const std::filesystem::path dir = tmp / "out";
  REQUIRE_OK(adapter->save(dir, "a"));
  REQUIRE_OK(adapter->save(dir, "b"));
  CHECK(read_json(dir / "adapter_config.json")["base_model_name_or_path"] == "b");
  CHECK(list_directory(tmp.path()).value() == std::vector<std::string>{"out"});  // no temporaries left
  CHECK(list_directory(dir).value() == std::vector<std::string>{"adapter_config.json", "adapter_model.safetensors"});

  const std::filesystem::path precious = tmp / "precious";
  std::filesystem::create_directories(precious);
  write_text(precious / "notes.txt", "keep me");
  const absl::Status refused = adapter->save(precious, "a");
  CHECK(refused.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(read_file(precious / "notes.txt").value() == "keep me");
  CHECK(list_directory(tmp.path()).value() == std::vector<std::string>{"out", "precious"});

  std::filesystem::create_directories(tmp / "empty");
  REQUIRE_OK(adapter->save(tmp / "empty", "a"));
  CHECK(file_exists(tmp / "empty" / "adapter_model.safetensors"));
}

TEST_CASE("export_merged_model writes a model that loads with the adapted logits", "[unit]") {
  TempDir tmp;
  const ModelConfig config = tiny_config(ModelFamily::kQwen2);
  Model model = tiny_model(config, 33);
  LoraOptions options;
  options.rank = 4;
  options.use_dora = true;
  auto adapter = LoraAdapter::create(model, options);
  REQUIRE_OK(adapter);
  randomise(*adapter, 34);
  const at::Tensor ids = random_ids(2, 8, config.vocab_size, 35);
  const at::Tensor adapted = logits_of(model, ids);

  REQUIRE_OK(export_merged_model(model, &*adapter, tmp / "merged", at::kFloat));
  auto exported = Model::load(tmp / "merged");
  REQUIRE_OK(exported);
  CHECK(max_abs_diff(logits_of(*exported, ids), adapted) < 1e-4);
  CHECK_FALSE(adapter->merged());
  const nlohmann::json cfg = read_json(tmp / "merged" / "config.json");
  CHECK(cfg["torch_dtype"] == "float32");
  CHECK(cfg["architectures"] == nlohmann::json({"Qwen2ForCausalLM"}));

  // Without an adapter: the base model, here in bf16.
  REQUIRE_OK(export_merged_model(model, nullptr, tmp / "base_bf16"));
  auto file = SafetensorsFile::open(tmp / "base_bf16" / "model.safetensors");
  REQUIRE_OK(file);
  CHECK(file->find("model.layers.0.self_attn.q_proj.weight")->dtype == "BF16");
  CHECK(read_json(tmp / "base_bf16" / "config.json")["torch_dtype"] == "bfloat16");
  Model other = tiny_model(config, 36);
  CHECK(export_merged_model(other, &*adapter, tmp / "x").code() == absl::StatusCode::kInvalidArgument);
  auto base_bf16 = Model::load(tmp / "base_bf16");
  REQUIRE_OK(base_bf16);
  adapter->remove();
  CHECK(export_merged_model(model, &*adapter, tmp / "x").code() == absl::StatusCode::kInvalidArgument);
  CHECK(max_abs_diff(logits_of(*base_bf16, ids), logits_of(model, ids)) < 0.1);
  CHECK(export_merged_model(model, nullptr, tmp / "x", at::kInt).code() == absl::StatusCode::kInvalidArgument);
  std::filesystem::create_directories(tmp / "precious");
  write_text(tmp / "precious" / "notes.txt", "keep me");
  CHECK(export_merged_model(model, nullptr, tmp / "precious", at::kFloat).code() == absl::StatusCode::kFailedPrecondition);
}

TEST_CASE("export carries the source directory's config and tokenizer files", "[unit]") {
  TempDir tmp;
  auto model = Model::load(bundled_model_dir());
  REQUIRE_OK(model);
  auto adapter = LoraAdapter::create(*model, rank_options(4));
  REQUIRE_OK(adapter);
  randomise(*adapter, 37, 0.05);
  REQUIRE_OK(export_merged_model(*model, &*adapter, tmp / "merged", at::kFloat));
  for (const char* name : {"tokenizer.model", "tokenizer_config.json", "generation_config.json"}) {
    INFO(name);
    CHECK(read_file(tmp / "merged" / name).value() == read_file(bundled_model_dir() / name).value());
  }
  CHECK_FALSE(file_exists(tmp / "merged" / "training_metrics.json"));
  nlohmann::json source = read_json(bundled_model_dir() / "config.json");
  nlohmann::json written = read_json(tmp / "merged" / "config.json");
  for (const char* key : {"dtype", "torch_dtype"}) {
    if (source.contains(key)) source[key] = "float32";
  }
  if (!source.contains("dtype") && !source.contains("torch_dtype")) source["torch_dtype"] = "float32";
  CHECK(written == source);
  auto exported = Model::load(tmp / "merged");
  REQUIRE_OK(exported);
  const at::Tensor ids = random_ids(1, 10, model->config().vocab_size, 38);
  CHECK(max_abs_diff(logits_of(*exported, ids), logits_of(*model, ids)) < 1e-4);
}

TEST_CASE("model_config_to_json round-trips through parse_model_config", "[unit]") {
  for (ModelFamily family : {ModelFamily::kLlama, ModelFamily::kMistral, ModelFamily::kQwen2}) {
    ModelConfig c = tiny_config(family);
    c.bos_token_id = 1;
    c.eos_token_ids = {2, 7};
    c.torch_dtype = "float32";
    if (family == ModelFamily::kLlama) {
      c.rope_scaling = {RopeScalingType::kLlama3, 8.0, 1.0, 4.0, 32};
      c.mlp_bias = true;
    }
    if (family == ModelFamily::kMistral) c.sliding_window = 5;
    INFO(model_family_name(family));
    auto json = model_config_to_json(c);
    REQUIRE_OK(json);
    auto back = parse_model_config(*json, "generated");
    REQUIRE_OK(back);
    CHECK(back->model_type == c.model_type);
    CHECK(back->hidden_size == c.hidden_size);
    CHECK(back->num_key_value_heads == c.num_key_value_heads);
    CHECK(back->head_dim == c.head_dim);
    CHECK(back->rms_norm_eps == c.rms_norm_eps);
    CHECK(back->rope_scaling.type == c.rope_scaling.type);
    CHECK(back->rope_scaling.original_max_position_embeddings == c.rope_scaling.original_max_position_embeddings);
    CHECK(back->sliding_window == c.sliding_window);
    CHECK(back->qkv_bias == c.qkv_bias);
    CHECK(back->o_bias == c.o_bias);
    CHECK(back->mlp_bias == c.mlp_bias);
    CHECK(back->eos_token_ids == c.eos_token_ids);
    CHECK(back->bos_token_id == c.bos_token_id);
    CHECK(back->torch_dtype == c.torch_dtype);
  }
  ModelConfig odd = tiny_config();
  odd.qkv_bias = true;  // llama has one attention_bias for q/k/v and o
  CHECK(model_config_to_json(odd).status().code() == absl::StatusCode::kInvalidArgument);
}
