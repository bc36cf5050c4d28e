// SwiGLU off CUDA: swiglu is the ATen reference, bit for bit, differentiable like it, and the
// closed-form backward that the fused CUDA kernel implements (lib/kernels/swiglu.cuh) is the
// gradient of that reference.
#include "ops/swiglu.hpp"
#include "test_support.hpp"

using namespace temper;
using namespace temper::testing;

TEST_CASE("swiglu on the CPU is silu(gate) * up, bit for bit, with the same gradients", "[unit]") {
  at::manual_seed(11);
  const at::Tensor g = (at::randn({2, 3, 37}) * 4).requires_grad_(true);
  const at::Tensor u = at::randn({2, 3, 37}).requires_grad_(true);
  const at::Tensor dact = at::randn({2, 3, 37});
  const at::Tensor act = swiglu(g, u);
  CHECK(at::equal(act, at::silu(g) * u));
  act.backward(dact);
  const at::Tensor dg = g.grad().clone(), du = u.grad().clone();

  const at::Tensor g2 = g.detach().clone().requires_grad_(true);
  const at::Tensor u2 = u.detach().clone().requires_grad_(true);
  (at::silu(g2) * u2).backward(dact);
  CHECK(at::equal(dg, g2.grad()));
  CHECK(at::equal(du, u2.grad()));
}

TEST_CASE("the closed-form swiglu backward is the gradient of the reference", "[unit]") {
  at::manual_seed(12);
  // Spread over the saturated tails and the zero of silu' near -1.28; exact zeros included.
  at::Tensor g = at::cat({at::linspace(-30, 30, 601, at::kDouble), at::zeros({7}, at::kDouble)});
  g = g.requires_grad_(true);
  const at::Tensor u = at::randn({g.numel()}, at::kDouble).requires_grad_(true);
  const at::Tensor dact = at::randn({g.numel()}, at::kDouble);
  swiglu_reference(g, u).backward(dact);
  const auto [dg, du] = swiglu_backward_reference(dact, g.detach(), u.detach());
  CHECK(max_abs_diff(dg, g.grad()) <= 1e-12 * std::max(1.0, g.grad().abs().max().item<double>()));
  CHECK(max_abs_diff(du, u.grad()) <= 1e-12 * std::max(1.0, u.grad().abs().max().item<double>()));
}
