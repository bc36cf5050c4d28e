// grouped_projection (lib/ops/grouped_projection.hpp) against its members computed one by one as
// plain ATen expressions and differentiated by autograd (fp64 compute, fp32 masters, so the
// comparison is exact to rounding); its refusals; and packing a LoRA model's q/k/v and gate/up
// (lib/model/projection_group.hpp): same loss and adapter gradients as the unpacked model, the
// weights become views of the packed tensor, merge still works, and the cases that must fall back
// (DoRA, dropout while training) do. grouped_linear, the trained-weight form (full fine-tuning),
// against its members one by one; its refusals; and a packed model trained by the Trainer against
// the unpacked one (same losses and weights, updates written through the views).
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/autograd.h>

#include "model/model_impl.hpp"
#include "model/projection_group.hpp"
#include "model_support.hpp"
#include "ops/grouped_projection.hpp"
#include "list_source.hpp"
#include "temper/lora_adapter.hpp"
#include "temper/trainer.hpp"

using namespace temper;
using namespace temper::testing;

namespace {

at::Tensor leaf(at::IntArrayRef sizes, at::ScalarType dtype, double std) {
  return (at::randn(sizes, at::TensorOptions().dtype(at::kDouble)) * std).to(dtype).requires_grad_(true);
}

}  // namespace

TEST_CASE("grouped_projection equals its members computed one by one", "[unit]") {
  at::manual_seed(11);
  const int64_t in = 12;
  const std::vector<int64_t> outs = {8, 4, 6};
  const at::Tensor x = leaf({2, 5, in}, at::kDouble, 1.0);
  const at::Tensor weight = at::randn({18, in}, at::kDouble) * 0.3;  // frozen
  const at::Tensor bias = at::randn({18}, at::kDouble) * 0.1;
  // Members 0 and 2 carry adapters (ranks 2 and 4, fp32 masters); member 1 has none.
  const at::Tensor a0 = leaf({2, in}, at::kFloat, 0.3), b0 = leaf({8, 2}, at::kFloat, 0.3);
  const at::Tensor a2 = leaf({4, in}, at::kFloat, 0.3), b2 = leaf({6, 4}, at::kFloat, 0.3);
  const double s0 = 2.0, s2 = 0.5;

  for (const bool with_bias : {true, false}) {
    INFO("bias " << with_bias);
    const at::Tensor b = with_bias ? bias : at::Tensor();
    const at::Tensor got = grouped_projection(x, weight, b, {{8, a0, b0, s0}, {4, {}, {}, 0.0}, {6, a2, b2, s2}});
    std::vector<at::Tensor> parts;
    int64_t row = 0;
    for (size_t i = 0; i < outs.size(); ++i) {
      const at::Tensor w = weight.narrow(0, row, outs[i]);
      at::Tensor y = at::linear(x, w, with_bias ? bias.narrow(0, row, outs[i]) : at::Tensor());
      if (i == 0) y = y + at::linear(at::linear(x, a0.to(at::kDouble)), b0.to(at::kDouble)) * s0;
      if (i == 2) y = y + at::linear(at::linear(x, a2.to(at::kDouble)), b2.to(at::kDouble)) * s2;
      parts.push_back(y);
      row += outs[i];
    }
    const at::Tensor want = at::cat(parts, -1);
    CHECK(got.sizes() == at::IntArrayRef({2, 5, 18}));
    CHECK(rel_err(got, want) < 1e-12);

    const at::Tensor upstream = at::randn_like(want);
    const std::vector<at::Tensor> wrt = {x, a0, b0, a2, b2};
    const auto g_got = torch::autograd::grad({got}, wrt, {upstream});
    const auto g_want = torch::autograd::grad({want}, wrt, {upstream});
    for (size_t i = 0; i < wrt.size(); ++i) {
      INFO("gradient of input " << i << " (x, a0, b0, a2, b2)");
      CHECK(g_got[i].scalar_type() == wrt[i].scalar_type());
      // x's gradient in fp64; the masters' in fp32 (one rounding of an fp64 result).
      CHECK(rel_err(g_got[i], g_want[i]) < (i == 0 ? 1e-12 : 1e-6));
    }
  }
}

TEST_CASE("grouped_projection refuses what it cannot compute", "[unit]") {
  const at::Tensor x = at::randn({3, 4}, at::kDouble);
  const at::Tensor w = at::randn({6, 4}, at::kDouble);
  CHECK_THROWS_WITH(grouped_projection(x, w, {}, {{4, {}, {}, 0.0}}), Catch::Contains("sum to 4"));
  CHECK_THROWS_WITH(grouped_projection(x, w.clone().requires_grad_(true), {}, {{6, {}, {}, 0.0}}),
                    Catch::Contains("frozen"));
  CHECK_THROWS_WITH(grouped_projection(x.to(at::kFloat), w, {}, {{6, {}, {}, 0.0}}), Catch::Contains("packed weight is"));
  CHECK_THROWS_WITH(grouped_projection(x, w, {}, {{6, at::randn({2, 4}), at::randn({5, 2}), 1.0}}),
                    Catch::Contains("does not fit"));

  // The packed weight changed in place between forward and backward (a merge mid-step).
  const at::Tensor a = at::randn({2, 4}, at::kDouble).requires_grad_(true);
  const at::Tensor b = at::randn({6, 2}, at::kDouble).requires_grad_(true);
  const at::Tensor wv = w.clone();
  const at::Tensor y = grouped_projection(x, wv, {}, {{6, a, b, 1.0}});
  {
    at::NoGradGuard no_grad;
    wv.add_(1.0);
  }
  CHECK_THROWS_WITH(y.sum().backward(), Catch::Contains("modified in place"));
}

namespace {

struct LossAndGrads {
  double loss = 0.0;
  std::vector<at::Tensor> grads;  // the adapter's, in named_parameters() order
};

LossAndGrads loss_and_grads(const Model& model, const LoraAdapter& adapter, const at::Tensor& ids) {
  for (auto& [name, p] : adapter.named_parameters()) p.mutable_grad() = at::Tensor();
  ForwardInput input;
  input.input_ids = ids;
  input.labels = ids;
  auto out = model.forward(input);
  REQUIRE_OK(out);
  out->loss.backward();
  LossAndGrads r;
  r.loss = out->loss.item<double>();
  for (auto& [name, p] : adapter.named_parameters()) r.grads.push_back(p.grad().clone());
  return r;
}

void randomise_b(const LoraAdapter& adapter) {
  at::NoGradGuard no_grad;
  for (auto& [name, p] : adapter.named_parameters()) {
    if (name.find("lora_B") != std::string::npos) p.normal_(0.0, 0.2);
  }
}

void pack_all(Model& model) {
  for (DecoderLayer& layer : model.impl().layers) pack_projections(layer);
}

}  // namespace

TEST_CASE("packing q/k/v and gate/up leaves a LoRA model's loss and gradients unchanged", "[unit]") {
  for (const ModelFamily family : {ModelFamily::kLlama, ModelFamily::kQwen2}) {  // qwen2: q/k/v biases
    INFO(model_family_name(family));
    const ModelConfig config = tiny_config(family);
    Model model = tiny_model(config, 5);
    auto adapter = LoraAdapter::create(model);
    REQUIRE_OK(adapter);
    randomise_b(*adapter);
    const at::Tensor ids = random_ids(2, 11, config.vocab_size, 6);
    const LossAndGrads unpacked = loss_and_grads(model, *adapter, ids);

    CHECK_FALSE(model.impl().layers[0].packed_qkv.weight.defined());  // the CPU model is not packed by install
    pack_all(model);
    const DecoderLayer& layer = model.impl().layers[1];
    REQUIRE(layer.packed_qkv.weight.defined());
    REQUIRE(layer.packed_gate_up.weight.defined());
    CHECK(layer.packed_qkv.weight.sizes() == at::IntArrayRef({(4 + 2 + 2) * 8, 32}));
    CHECK(layer.packed_gate_up.weight.sizes() == at::IntArrayRef({2 * 48, 32}));
    // The weights are row blocks of the packed tensors, not copies.
    CHECK(layer.k.weight.data_ptr() == static_cast<char*>(layer.packed_qkv.weight.data_ptr()) + 32 * 32 * sizeof(float));
    CHECK(layer.up.weight.data_ptr() == static_cast<char*>(layer.packed_gate_up.weight.data_ptr()) + 48 * 32 * sizeof(float));
    const at::Tensor x = at::randn({1, 3, 32});
    CHECK(grouped_forward({&layer.q, &layer.k, &layer.v}, layer.packed_qkv, x).has_value());
    CHECK(grouped_forward({&layer.gate, &layer.up}, layer.packed_gate_up, x).has_value());

    const LossAndGrads packed = loss_and_grads(model, *adapter, ids);
    CHECK(std::abs(packed.loss - unpacked.loss) < 1e-5 * std::abs(unpacked.loss));
    REQUIRE(packed.grads.size() == unpacked.grads.size());
    for (size_t i = 0; i < packed.grads.size(); ++i) {
      INFO("adapter tensor " << adapter->named_parameters()[i].first);
      CHECK(rel_err(packed.grads[i], unpacked.grads[i]) < 1e-4);
    }

    // Merging writes through the views: the merged model (no adapter term) computes the same loss.
    REQUIRE_OK(adapter->merge());
    CHECK(layer.q.delta == nullptr);  // merged: the grouped path runs the base alone
    CHECK(grouped_forward({&layer.q, &layer.k, &layer.v}, layer.packed_qkv, x).has_value());
    {
      at::NoGradGuard no_grad;
      ForwardInput input;
      input.input_ids = ids;
      input.labels = ids;
      auto out = model.forward(input);
      REQUIRE_OK(out);
      CHECK(std::abs(out->loss.item<double>() - unpacked.loss) < 1e-4 * std::abs(unpacked.loss));
    }
  }
}

TEST_CASE("a packed model falls back to the members for DoRA and for LoRA dropout while training", "[unit]") {
  const ModelConfig config = tiny_config();
  const at::Tensor ids = random_ids(2, 7, config.vocab_size, 8);
  const at::Tensor x = at::randn({1, 3, 32});

  SECTION("DoRA") {
    Model model = tiny_model(config, 9);
    LoraOptions options;
    options.use_dora = true;
    auto adapter = LoraAdapter::create(model, options);
    REQUIRE_OK(adapter);
    randomise_b(*adapter);
    const LossAndGrads unpacked = loss_and_grads(model, *adapter, ids);
    pack_all(model);
    const DecoderLayer& layer = model.impl().layers[0];
    REQUIRE(layer.packed_qkv.weight.defined());
    CHECK_FALSE(grouped_forward({&layer.q, &layer.k, &layer.v}, layer.packed_qkv, x).has_value());
    const LossAndGrads packed = loss_and_grads(model, *adapter, ids);
    CHECK(std::abs(packed.loss - unpacked.loss) < 1e-5 * std::abs(unpacked.loss));
  }
  SECTION("dropout, only while training") {
    Model model = tiny_model(config, 10);
    LoraOptions options;
    options.dropout = 0.1;
    auto adapter = LoraAdapter::create(model, options);
    REQUIRE_OK(adapter);
    pack_all(model);
    const DecoderLayer& layer = model.impl().layers[0];
    adapter->set_training(true);
    CHECK_FALSE(grouped_forward({&layer.gate, &layer.up}, layer.packed_gate_up, x).has_value());
    adapter->set_training(false);
    CHECK(grouped_forward({&layer.gate, &layer.up}, layer.packed_gate_up, x).has_value());
  }
  SECTION("a weight replaced after packing") {
    Model model = tiny_model(config, 12);
    auto adapter = LoraAdapter::create(model);
    REQUIRE_OK(adapter);
    pack_all(model);
    DecoderLayer& layer = model.impl().layers[0];
    layer.k.weight = layer.k.weight.clone();
    CHECK_FALSE(grouped_forward({&layer.q, &layer.k, &layer.v}, layer.packed_qkv, x).has_value());
  }
}

// ---- trained weights (full fine-tuning): grouped_linear ----

namespace {

// Packed [18, in] weight and [18] bias, and the members' row views made trainable, as packing and
// the Trainer leave them.
struct TrainedGroup {
  at::Tensor packed_w, packed_b;
  std::vector<at::Tensor> weights, biases;
};

TrainedGroup trained_group(int64_t in, const std::vector<int64_t>& outs, at::ScalarType dtype) {
  TrainedGroup g;
  int64_t total = 0;
  for (int64_t out : outs) total += out;
  g.packed_w = (at::randn({total, in}, at::kDouble) * 0.3).to(dtype);
  g.packed_b = (at::randn({total}, at::kDouble) * 0.1).to(dtype);
  int64_t row = 0;
  for (int64_t out : outs) {
    g.weights.push_back(g.packed_w.narrow(0, row, out).requires_grad_(true));
    g.biases.push_back(g.packed_b.narrow(0, row, out).requires_grad_(true));
    row += out;
  }
  return g;
}

}  // namespace

TEST_CASE("grouped_linear equals its trained members computed one by one", "[unit]") {
  at::manual_seed(21);
  const int64_t in = 12;
  const std::vector<int64_t> outs = {8, 4, 6};
  TrainedGroup g = trained_group(in, outs, at::kDouble);
  const at::Tensor x = leaf({2, 5, in}, at::kDouble, 1.0);
  for (const bool with_bias : {true, false}) {
    INFO("bias " << with_bias);
    const at::Tensor got = grouped_linear(x, g.packed_w, with_bias ? g.packed_b : at::Tensor(), g.weights,
                                          with_bias ? g.biases : std::vector<at::Tensor>{});
    std::vector<at::Tensor> parts;
    for (size_t i = 0; i < outs.size(); ++i) {
      parts.push_back(at::linear(x, g.weights[i], with_bias ? g.biases[i] : at::Tensor()));
    }
    const at::Tensor want = at::cat(parts, -1);
    CHECK(got.sizes() == at::IntArrayRef({2, 5, 18}));
    CHECK(rel_err(got, want) < 1e-12);

    const at::Tensor upstream = at::randn_like(want);
    std::vector<at::Tensor> wrt = {x};
    for (const at::Tensor& w : g.weights) wrt.push_back(w);
    if (with_bias) {
      for (const at::Tensor& b : g.biases) wrt.push_back(b);
    }
    const auto g_got = torch::autograd::grad({got}, wrt, {upstream});
    const auto g_want = torch::autograd::grad({want}, wrt, {upstream});
    for (size_t i = 0; i < wrt.size(); ++i) {
      INFO("gradient of input " << i << " (x, the weights, the biases)");
      CHECK(g_got[i].sizes() == wrt[i].sizes());
      CHECK(rel_err(g_got[i], g_want[i]) < 1e-12);
    }
  }

  // Accumulated by autograd, each member's .grad is its row block of one weight gradient (no
  // copy per member), and a second backward accumulates into those blocks.
  const at::Tensor y = grouped_linear(x, g.packed_w, g.packed_b, g.weights, g.biases);
  y.sum().backward();
  const at::Tensor first = g.weights[1].grad().clone();
  for (size_t i = 1; i < outs.size(); ++i) {
    CHECK(g.weights[i].grad().data_ptr() ==
          static_cast<char*>(g.weights[0].grad().data_ptr()) + (i == 1 ? 8 : 12) * in * sizeof(double));
  }
  grouped_linear(x, g.packed_w, g.packed_b, g.weights, g.biases).sum().backward();
  CHECK(rel_err(g.weights[1].grad(), first * 2) < 1e-12);
}

TEST_CASE("grouped_linear refuses members that are not the packed tensors' blocks", "[unit]") {
  at::manual_seed(22);
  TrainedGroup g = trained_group(4, {2, 3}, at::kDouble);
  const at::Tensor x = at::randn({3, 4}, at::kDouble);
  // A copy instead of the view: training it through the packed GEMM would be wrong.
  std::vector<at::Tensor> copied = {g.weights[0], g.weights[1].detach().clone().requires_grad_(true)};
  CHECK_THROWS_WITH(grouped_linear(x, g.packed_w, {}, copied, {}), Catch::Contains("member 1"));
  CHECK_THROWS_WITH(grouped_linear(x, g.packed_w, {}, {g.weights[1], g.weights[0]}, {}), Catch::Contains("member 0"));
  CHECK_THROWS_WITH(grouped_linear(x, g.packed_w, {}, {g.weights[0]}, {}), Catch::Contains("sum to 2"));
  CHECK_THROWS_WITH(grouped_linear(x, g.packed_w, g.packed_b, g.weights, {}), Catch::Contains("0 biases for 2"));
  CHECK_THROWS_WITH(grouped_linear(x, g.packed_w, g.packed_b, g.weights, {g.biases[1], g.biases[0]}),
                    Catch::Contains("bias is not"));
  CHECK_THROWS_WITH(grouped_linear(x.to(at::kFloat), g.packed_w, {}, g.weights, {}), Catch::Contains("packed weight is"));
  CHECK_THROWS_WITH(grouped_linear(x, g.packed_w.detach().clone().requires_grad_(true), {}, g.weights, {}),
                    Catch::Contains("carry no gradient"));
  // An optimizer step between the forward and the backward.
  const at::Tensor y = grouped_linear(x, g.packed_w, {}, g.weights, {});
  {
    at::NoGradGuard no_grad;
    g.weights[0].add_(1.0);  // through the view: the packed tensor's version moves too
  }
  CHECK_THROWS_WITH(y.sum().backward(), Catch::Contains("modified in place"));
}

TEST_CASE("a packed model trains its full weights like the unpacked one", "[unit]") {
  for (const ModelFamily family : {ModelFamily::kLlama, ModelFamily::kQwen2}) {  // qwen2: trained q/k/v biases
    INFO(model_family_name(family));
    const ModelConfig config = tiny_config(family);
    Model plain = tiny_model(config, 23);
    Model packed = tiny_model(config, 23);
    pack_all(packed);  // what the Trainer does for CUDA models, here on the CPU
    DecoderLayer& layer = packed.impl().layers[1];
    REQUIRE(layer.packed_qkv.weight.defined());
    CHECK(layer.packed_qkv.bias.defined() == (family == ModelFamily::kQwen2));
    std::vector<Batch> batches;
    for (int i = 0; i < 3; ++i) batches.push_back({random_ids(2, 11, config.vocab_size, 25 + i), {}, {}, {}});
    for (Batch& b : batches) b.labels = b.input_ids;
    TrainerOptions options;
    options.max_steps = 3;
    options.optimizer.lr = 1e-2;
    options.schedule = {ScheduleKind::kConstant, 0};
    std::vector<double> losses[2];
    for (int m = 0; m < 2; ++m) {
      Model& model = m == 0 ? plain : packed;
      ListSource data(batches);
      TrainerOptions o = options;
      o.on_step = [&losses, m](const StepMetrics& s) { losses[m].push_back(s.loss); };
      auto trainer = Trainer::create(model, data, o);
      REQUIRE_OK(trainer);
      if (m == 1) {
        // The trained tensors are the packed views, so the grouped (trained) path runs.
        const at::Tensor x = at::randn({1, 3, config.hidden_size});
        CHECK(layer.q.weight.requires_grad());
        CHECK(grouped_forward({&layer.q, &layer.k, &layer.v}, layer.packed_qkv, x).has_value());
        CHECK(grouped_forward({&layer.gate, &layer.up}, layer.packed_gate_up, x).has_value());
      }
      REQUIRE_OK(trainer->train());
    }
    REQUIRE(losses[0].size() == 3);
    REQUIRE(losses[1].size() == 3);
    for (int s = 0; s < 3; ++s) CHECK(std::abs(losses[1][s] - losses[0][s]) < 1e-5 * std::abs(losses[0][s]));
    CHECK(losses[0][2] != losses[0][0]);  // the weights did move
    // The updates went through the views into the packed tensors, and match the plain model's.
    const auto want = plain.named_parameters();
    const auto got = packed.named_parameters();
    // 1e-4: the packed GEMMs sum in another order, and AdamW divides each gradient by its own
    // magnitude, so a rounding difference in a near-zero gradient entry (a bias) becomes a
    // visible difference in its update (1.06e-5 seen on an AMD EPYC's OpenBLAS); a wrong row
    // block or a missed update is off by O(1).
    for (size_t i = 0; i < want.size(); ++i) {
      INFO(want[i].first);
      CHECK(rel_err(got[i].second, want[i].second) < 1e-4);
    }
    CHECK(at::equal(layer.packed_qkv.weight.narrow(0, 0, layer.q.weight.size(0)), layer.q.weight));
    CHECK(at::equal(layer.packed_gate_up.weight.narrow(0, layer.gate.weight.size(0), layer.up.weight.size(0)),
                    layer.up.weight));
  }
}

TEST_CASE("a packed model falls back to the members when only some of a group trains", "[unit]") {
  const ModelConfig config = tiny_config();
  Model model = tiny_model(config, 26);
  pack_all(model);
  DecoderLayer& layer = model.impl().layers[0];
  const at::Tensor x = at::randn({1, 3, config.hidden_size});
  layer.q.weight.requires_grad_(true);  // q trains, k and v do not (a trainable pattern could do this)
  CHECK_FALSE(grouped_forward({&layer.q, &layer.k, &layer.v}, layer.packed_qkv, x).has_value());
  layer.k.weight.requires_grad_(true);
  layer.v.weight.requires_grad_(true);
  CHECK(grouped_forward({&layer.q, &layer.k, &layer.v}, layer.packed_qkv, x).has_value());
}
