// lora_projection / lora_add (lib/lora/lora_projection.hpp) against the adapter written as plain
// ATen expressions, differentiated by autograd: outputs and the gradients of x, A and B (and of y
// for lora_add) on dense and NF4 bases, with and without a bias, masters in fp32 and compute in
// fp64 (so the comparison is exact to rounding) or both in fp32.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <catch2/catch.hpp>
#include <torch/csrc/autograd/autograd.h>

#include "lora/lora_projection.hpp"
#include "ops/nf4_linear.hpp"
#include "temper/nf4_quantizer.hpp"
#include "test_support.hpp"

using namespace temper;
using namespace temper::testing;

namespace {

struct Case {
  at::Tensor x, a, b;  // x [2, 5, in] compute dtype; a [r, in], b [out, r] master dtype, leaves
};

Case make_case(at::ScalarType compute, at::ScalarType master, int64_t in, int64_t out, int64_t r, bool x_grad) {
  Case c;
  c.x = at::randn({2, 5, in}, at::TensorOptions().dtype(compute)).requires_grad_(x_grad);
  c.a = (at::randn({r, in}, at::TensorOptions().dtype(master)) * 0.3).requires_grad_(true);
  c.b = (at::randn({out, r}, at::TensorOptions().dtype(master)) * 0.3).requires_grad_(true);
  return c;
}

// The unfused expression: base + linear(linear(x, A), B) * s, masters cast to the compute dtype.
at::Tensor reference(const at::Tensor& base_out, const at::Tensor& x, const at::Tensor& a, const at::Tensor& b,
                     double s) {
  return base_out + at::linear(at::linear(x, a.to(x.scalar_type())), b.to(x.scalar_type())) * s;
}

std::vector<at::Tensor> grads_of(const at::Tensor& y, const at::Tensor& upstream, const std::vector<at::Tensor>& wrt) {
  return torch::autograd::grad({y}, wrt, {upstream}, /*retain_graph=*/false, /*create_graph=*/false,
                               /*allow_unused=*/true);
}

// got and want agree, and so do their gradients with respect to each of `wrt` (named in `names`
// for the failure message) under the same upstream gradient.
void check_same(const at::Tensor& got, const at::Tensor& want, const at::Tensor& upstream,
                const std::vector<at::Tensor>& wrt, const char* names, double tol) {
  CHECK(got.sizes() == want.sizes());
  CHECK(got.scalar_type() == want.scalar_type());
  CHECK(rel_err(got, want) < tol);
  const auto g_got = grads_of(got, upstream, wrt);
  const auto g_want = grads_of(want, upstream, wrt);
  for (size_t i = 0; i < wrt.size(); ++i) {
    INFO("gradient " << i << " of " << names);
    REQUIRE(g_got[i].defined());
    CHECK(g_got[i].scalar_type() == wrt[i].scalar_type());
    CHECK(rel_err(g_got[i], g_want[i]) < tol);
  }
}

void check_projection(at::ScalarType compute, at::ScalarType master, bool bias, bool x_grad, double tol) {
  at::manual_seed(7);
  const int64_t in = 12, out = 9, r = 3;
  const double s = 2.5;
  Case c = make_case(compute, master, in, out, r, x_grad);
  Linear base;
  base.weight = at::randn({out, in}, at::TensorOptions().dtype(compute));
  if (bias) base.bias = at::randn({out}, at::TensorOptions().dtype(compute));
  REQUIRE(lora_projection_fusable(base));
  const at::Tensor upstream = at::randn({2, 5, out}, at::TensorOptions().dtype(compute));

  const at::Tensor got = lora_projection(c.x, base, c.a, c.b, s);
  const at::Tensor want = reference(at::linear(c.x, base.weight, base.bias), c.x, c.a, c.b, s);
  CHECK(got.scalar_type() == compute);
  std::vector<at::Tensor> wrt = {c.a, c.b};
  if (x_grad) wrt.push_back(c.x);
  check_same(got, want, upstream, wrt, "(a, b, x)", tol);
}

}  // namespace

TEST_CASE("lora_projection equals the unfused adapter on a dense base", "[unit]") {
  SECTION("fp64 compute, fp32 masters, bias, x needs a gradient") { check_projection(at::kDouble, at::kFloat, true, true, 1e-12); }
  SECTION("fp64 compute, no bias, x a leaf without gradient") { check_projection(at::kDouble, at::kDouble, false, false, 1e-12); }
  SECTION("fp32 throughout") { check_projection(at::kFloat, at::kFloat, true, true, 1e-5); }
}

TEST_CASE("lora_projection on an NF4 base equals nf4_linear plus the unfused adapter", "[unit]") {
  at::manual_seed(11);
  const int64_t in = 64, out = 8, r = 4;
  const double s = 0.5;
  Case c = make_case(at::kFloat, at::kFloat, in, out, r, true);
  Linear base;
  auto state = Nf4Quantizer::quantize(at::randn({out, in}), Nf4Options{});
  REQUIRE(state.ok());
  base.quantized = std::make_shared<const QuantState>(std::move(*state));
  base.bias = at::randn({out});
  REQUIRE(lora_projection_fusable(base));
  const at::Tensor upstream = at::randn({2, 5, out});

  const at::Tensor got = lora_projection(c.x, base, c.a, c.b, s);
  const at::Tensor want = reference(nf4_linear(c.x, base.quantized, base.bias), c.x, c.a, c.b, s);
  check_same(got, want, upstream, {c.a, c.b, c.x}, "(a, b, x)", 1e-5);
}

TEST_CASE("lora_projection refuses a trainable base, lora_add takes it", "[unit]") {
  at::manual_seed(3);
  const int64_t in = 6, out = 4, r = 2;
  const double s = 1.5;
  Case c = make_case(at::kDouble, at::kFloat, in, out, r, true);
  Linear base;
  base.weight = at::randn({out, in}, at::TensorOptions().dtype(at::kDouble)).requires_grad_(true);
  base.bias = at::randn({out}, at::TensorOptions().dtype(at::kDouble)).requires_grad_(true);
  CHECK_FALSE(lora_projection_fusable(base));
  CHECK_THROWS_WITH(lora_projection(c.x, base, c.a, c.b, s), Catch::Contains("frozen"));

  // lora_add with a different adapter input (as dropout makes it): the base sees x, the adapter xd.
  const at::Tensor xd = (c.x * 0.7).detach().requires_grad_(true);
  const at::Tensor upstream = at::randn({2, 5, out}, at::TensorOptions().dtype(at::kDouble));
  // linear with a bias on 3-D input returns a view: lora_add must not write into it.
  const at::Tensor y_base = at::linear(c.x, base.weight, base.bias);
  const at::Tensor got = lora_add(y_base, xd, c.a, c.b, s);
  const at::Tensor want = reference(at::linear(c.x, base.weight, base.bias), xd, c.a, c.b, s);
  CHECK(rel_err(y_base, at::linear(c.x, base.weight, base.bias)) == 0.0);  // the base output is untouched
  check_same(got, want, upstream, {c.a, c.b, c.x, xd, base.weight, base.bias}, "(a, b, x, xd, weight, bias)", 1e-12);
}

TEST_CASE("lora_projection runs without autograd and under no_grad", "[unit]") {
  at::manual_seed(5);
  Case c = make_case(at::kFloat, at::kFloat, 8, 5, 2, false);
  Linear base;
  base.weight = at::randn({5, 8});
  at::Tensor got;
  {
    at::NoGradGuard no_grad;
    got = lora_projection(c.x, base, c.a, c.b, 3.0);
  }
  CHECK_FALSE(got.requires_grad());
  at::NoGradGuard no_grad;
  CHECK(rel_err(got, reference(at::linear(c.x, base.weight), c.x, c.a, c.b, 3.0)) < 1e-5);
}

TEST_CASE("lora_projection's backward refuses a base weight changed in place after the forward", "[unit]") {
  at::manual_seed(6);
  Case c = make_case(at::kFloat, at::kFloat, 8, 5, 2, true);
  Linear base;
  base.weight = at::randn({5, 8});
  const at::Tensor y = lora_projection(c.x, base, c.a, c.b, 2.0);
  {
    at::NoGradGuard no_grad;
    base.weight.add_(1.0);  // what merging the adapter mid-step would do
  }
  CHECK_THROWS_WITH(y.sum().backward(), Catch::Contains("modified in place"));
}
