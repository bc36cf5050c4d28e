// The chunked head + cross-entropy against the unfused reference (linear, then fp32
// cross-entropy as transformers computes it): loss and gradients, odd chunkings, frozen weights,
// no-grad mode, and the model path the Trainer uses.
#include <ATen/core/grad_mode.h>

#include "model_support.hpp"
#include "ops/linear_cross_entropy.hpp"

using namespace temper;
using namespace temper::testing;

namespace {

at::Tensor reference_sum(const at::Tensor& h, const at::Tensor& w, const at::Tensor& labels) {
  return at::cross_entropy_loss(at::linear(h, w).to(at::kFloat), labels, {}, at::Reduction::Sum, -100);
}

}  // namespace

TEST_CASE("linear_cross_entropy_sum matches linear + cross-entropy in loss and gradients", "[unit]") {
  at::manual_seed(11);
  const at::Tensor h0 = at::randn({37, 16});
  const at::Tensor w0 = at::randn({53, 16}) * 0.5;
  at::Tensor labels = at::randint(0, 53, {37}, at::kLong);
  labels.index_put_({at::tensor({0, 5, 6, 36}, at::kLong)}, -100);
  for (int64_t chunk : {1, 5, 36, 37, 1000, 0}) {
    INFO("chunk rows " << chunk);
    at::Tensor h = h0.clone().requires_grad_(true), w = w0.clone().requires_grad_(true);
    at::Tensor hr = h0.clone().requires_grad_(true), wr = w0.clone().requires_grad_(true);
    const at::Tensor got = linear_cross_entropy_sum(h, w, labels, chunk);
    const at::Tensor ref = reference_sum(hr, wr, labels);
    CHECK(got.scalar_type() == at::kFloat);
    CHECK(got.item<double>() == Approx(ref.item<double>()).epsilon(1e-6));
    (got * 0.37).backward();  // an upstream gradient other than 1, as gradient accumulation gives
    (ref * 0.37).backward();
    CHECK(at::allclose(h.grad(), hr.grad(), 1e-5, 1e-6));
    CHECK(at::allclose(w.grad(), wr.grad(), 1e-5, 1e-6));
  }
}

TEST_CASE("linear_cross_entropy_sum leaves a frozen weight alone and costs nothing extra without grad", "[unit]") {
  at::manual_seed(12);
  const at::Tensor w = at::randn({29, 8});  // a frozen lm_head
  const at::Tensor labels = at::randint(0, 29, {10}, at::kLong);
  at::Tensor h = at::randn({10, 8}).requires_grad_(true);
  at::Tensor hr = h.detach().clone().requires_grad_(true);
  linear_cross_entropy_sum(h, w, labels).backward();
  reference_sum(hr, w, labels).backward();
  CHECK(!w.grad().defined());
  CHECK(at::allclose(h.grad(), hr.grad(), 1e-5, 1e-6));
  {
    at::NoGradGuard no_grad;
    const at::Tensor loss = linear_cross_entropy_sum(h, w, labels);
    CHECK(!loss.requires_grad());
    CHECK(loss.item<double>() == Approx(reference_sum(h, w, labels).item<double>()).epsilon(1e-6));
  }
  // Every label ignored: a zero sum, zero gradients.
  at::Tensor h2 = at::randn({4, 8}).requires_grad_(true);
  const at::Tensor none = linear_cross_entropy_sum(h2, w, at::full({4}, -100, at::kLong));
  CHECK(none.item<double>() == 0.0);
  none.backward();
  CHECK(h2.grad().abs().sum().item<double>() == 0.0);
}

TEST_CASE("the model's loss without logits equals the loss computed from the logits", "[unit]") {
  Model model = tiny_model(tiny_config());
  const at::Tensor ids = random_ids(3, 11, 97, 4);
  at::Tensor labels = ids.clone();
  labels.index_put_({1, at::indexing::Slice(2, 6)}, -100);
  std::vector<at::Tensor> grads;
  std::vector<double> sums;
  for (bool logits : {true, false}) {
    for (auto& [name, p] : model.named_parameters()) {
      p.requires_grad_(true);
      p.mutable_grad() = at::Tensor();
    }
    ForwardInput input;
    input.input_ids = ids;
    input.labels = labels;
    input.return_logits = logits;
    auto out = model.forward(input);
    REQUIRE_OK(out);
    CHECK(out->logits.defined() == logits);
    CHECK(out->num_tokens == 3 * 10 - 4);
    sums.push_back(out->loss_sum.item<double>());
    out->loss.backward();
    grads.push_back(model.parameter("lm_head.weight").value().grad().clone());
    grads.push_back(model.parameter("model.layers.1.mlp.down_proj.weight").value().grad().clone());
  }
  CHECK(sums[0] == Approx(sums[1]).epsilon(1e-6));
  CHECK(at::allclose(grads[0], grads[2], 1e-5, 1e-6));
  CHECK(at::allclose(grads[1], grads[3], 1e-5, 1e-6));
}
