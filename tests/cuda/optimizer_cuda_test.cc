// AdamW on CUDA (libtorch >= 2: torch's fused multi-tensor kernel, lib/train/optimizer.cc)
// against the per-tensor ATen reference on the CPU: the same masters and moments after several
// steps with changing learning rates, weight decay on some tensors only, and a tensor of one
// element and one of an odd million. Differences are measured normwise (max |a - b| over
// max |b|): fp32 rounding of another operation order is ~1e-7 of a tensor's scale, while a wrong
// formula (decay, bias correction, step count) moves it by ~1e-3 per step at these settings.
#include <ATen/ATen.h>
#include <catch2/catch.hpp>

#include "ops/compat.hpp"
#include "test_support.hpp"
#include "train/optimizer.hpp"

using namespace temper;
using namespace temper::testing;

namespace {

double normwise_diff(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor x = a.cpu().to(at::kDouble), y = b.cpu().to(at::kDouble);
  return (x - y).abs().max().item<double>() / (y.abs().max().item<double>() + 1e-30);
}

}  // namespace

TEST_CASE("AdamW on CUDA matches the CPU reference step for step", "[cuda][optimizer]") {
  SKIP_WITHOUT_CUDA();
  struct Spec {
    const char* name;
    std::vector<int64_t> shape;
    bool decay;
  };
  const std::vector<Spec> specs = {
      {"w1", {33, 17}, true}, {"b1", {17}, false}, {"w2", {7, 5, 3}, true}, {"s", {1}, false}, {"big", {1000003}, true}};
  OptimizerOptions options;
  options.lr = 1e-2;
  options.beta1 = 0.9;
  options.beta2 = 0.99;
  options.eps = 1e-8;
  options.weight_decay = 0.1;
  at::manual_seed(0);
  std::vector<OptimizedTensor> cpu_tensors, cuda_tensors;
  std::vector<at::Tensor> inits;
  for (const Spec& s : specs) {
    const at::Tensor init = at::randn(s.shape, at::kFloat);
    inits.push_back(init.clone());
    cpu_tensors.push_back({s.name, init.clone(), s.decay});
    cuda_tensors.push_back({s.name, init.to(at::kCUDA), s.decay});
  }
  Optimizer reference(options, std::move(cpu_tensors));
  Optimizer device(options, std::move(cuda_tensors));
  const double lrs[6] = {1e-2, 5e-3, 2e-2, 1e-3, 1e-2, 0.0};
  for (int t = 0; t < 6; ++t) {
    std::vector<at::Tensor> cpu_grads, cuda_grads;
    for (const Spec& s : specs) {
      const at::Tensor g = at::randn(s.shape, at::kFloat) * (t + 1);
      cpu_grads.push_back(g);
      cuda_grads.push_back(g.to(at::kCUDA));
    }
    reference.step(cpu_grads, lrs[t]);
    device.step(cuda_grads, lrs[t]);
  }
  INFO("fused kernel in use: " << compat::fused_adamw_available(device.tensors()[0].master));
  for (size_t i = 0; i < specs.size(); ++i) {
    INFO(specs[i].name);
    CHECK(device.tensors()[i].master.is_cuda());
    CHECK(normwise_diff(device.tensors()[i].master, reference.tensors()[i].master) <= 1e-5);
    // Not vacuous: the weights moved by far more than the tolerance.
    CHECK(normwise_diff(reference.tensors()[i].master, inits[i]) > 1e-3);
  }
  const NamedTensors a = device.state(), b = reference.state();
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    INFO(a[i].first);
    CHECK(a[i].first == b[i].first);
    CHECK(normwise_diff(a[i].second, b[i].second) <= 1e-5);
  }
  CHECK(device.steps_taken() == 6);
}
