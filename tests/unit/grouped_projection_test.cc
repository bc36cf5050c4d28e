// grouped_projection (lib/ops/grouped_projection.hpp) against its members computed one by one as
// plain ATen expressions and differentiated by autograd (fp64 compute, fp32 masters, so the
// comparison is exact to rounding); its refusals; and packing a LoRA model's q/k/v and gate/up
// (lib/model/projection_group.hpp): same loss and adapter gradients as the unpacked model, the
// weights become views of the packed tensor, merge still works, and the cases that must fall back
// (DoRA, dropout while training) do.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/autograd.h>

#include "model/model_impl.hpp"
#include "model/projection_group.hpp"
#include "model_support.hpp"
#include "ops/grouped_projection.hpp"
#include "temper/lora_adapter.hpp"

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
  for (DecoderLayer& layer : model.impl().layers) pack_frozen_projections(layer);
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

    CHECK_FALSE(model.impl().layers[0].packed_qkv.defined());  // the CPU model is not packed by install
    pack_all(model);
    const DecoderLayer& layer = model.impl().layers[1];
    REQUIRE(layer.packed_qkv.defined());
    REQUIRE(layer.packed_gate_up.defined());
    CHECK(layer.packed_qkv.sizes() == at::IntArrayRef({(4 + 2 + 2) * 8, 32}));
    CHECK(layer.packed_gate_up.sizes() == at::IntArrayRef({2 * 48, 32}));
    // The weights are row blocks of the packed tensors, not copies.
    CHECK(layer.k.weight.data_ptr() == static_cast<char*>(layer.packed_qkv.data_ptr()) + 32 * 32 * sizeof(float));
    CHECK(layer.up.weight.data_ptr() == static_cast<char*>(layer.packed_gate_up.data_ptr()) + 48 * 32 * sizeof(float));
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
    REQUIRE(layer.packed_qkv.defined());
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
