// The fused SwiGLU kernels against the maths in fp64 (lib/ops/swiglu.cc's references run on fp64
// copies of the same GPU data), forward and backward, fp32 and bf16/fp16; odd sizes, a view offset
// by one element (the scalar path), saturated and zero gates; and the autograd Function against
// autograd of the reference.
//
// Bounds, elementwise: |out - exact| <= unit * |exact| + comp * cond + floor, where
// - unit is the element type's unit roundoff (bf16 2^-8, fp16 2^-11, fp32 0: its rounding is part
//   of comp), since the kernel rounds its fp32 result to T once, to nearest;
// - comp bounds the fp32 arithmetic relative to cond, the sum of the magnitudes the result is made
//   of (so the zero of silu' near g = -1.28, where dgate cancels, is judged fairly): act and dup
//   are ~8 fp32 roundings deep counting expf's 2 ulp (8 * 2^-24 < 1e-6), dgate ~17 (2e-6);
// - floor covers results below the type's normal range: fp16's subnormal half-spacing 2^-25, else
//   1e-30 (fp32 and bf16 underflow only past |g| ~ 87, where the exact value is < 1e-36).
#include <cmath>
#include <cstdint>
#include <tuple>

#include <torch/csrc/autograd/function.h>

#include "ops/swiglu.hpp"
#include "test_support.hpp"

using namespace temper;
using namespace temper::testing;

#ifdef TEMPER_WITH_CUDA
namespace {

struct Bound {
  double unit, floor;
};

Bound bound_for(at::ScalarType dtype) {
  switch (dtype) {
    case at::kBFloat16: return {std::ldexp(1.0, -8), 1e-30};
    case at::kHalf: return {std::ldexp(1.0, -11), std::ldexp(1.0, -25)};
    default: return {0.0, 1e-30};
  }
}

// The worst |out - exact| / bound over all elements, in fp64 on the device; <= 1 passes, NaN fails.
double worst_ratio(const at::Tensor& out, const at::Tensor& exact, const at::Tensor& cond, double comp, Bound b) {
  const at::Tensor bound = b.unit * exact.abs() + comp * cond + b.floor;
  return ((out.to(at::kDouble) - exact).abs() / bound).max().item<double>();
}

struct Exact {
  at::Tensor act, dgate, dup;             // fp64, the shape of gate
  at::Tensor act_cond, dgate_cond, dup_cond;
};

// The exact (fp64) results and their condition magnitudes for inputs of any float dtype.
Exact exact_for(const at::Tensor& dact, const at::Tensor& gate, const at::Tensor& up) {
  const at::Tensor da = dact.to(at::kDouble), g = gate.to(at::kDouble), u = up.to(at::kDouble);
  Exact e;
  e.act = swiglu_reference(g, u);
  std::tie(e.dgate, e.dup) = swiglu_backward_reference(da, g, u);
  const at::Tensor s = at::sigmoid(g);
  e.act_cond = e.act.abs();
  e.dup_cond = e.dup.abs();
  e.dgate_cond = (da * u).abs() * s * (1 + g.abs() * (1 - s));
  return e;
}

// gate ~ 4 N(0, 1) with the saturated tails, the zero of silu' and exact zeros planted at the front.
at::Tensor make_gate(at::IntArrayRef shape, at::ScalarType dtype) {
  const auto options = at::TensorOptions().device(at::kCUDA).dtype(at::kFloat);
  at::Tensor g = at::randn(shape, options) * 4;
  const at::Tensor specials = at::tensor({-100.0f, 100.0f, -30.0f, 30.0f, -1.2785f, 0.0f, -0.0f, 1e-3f}, options);
  const int64_t k = std::min<int64_t>(specials.numel(), g.numel());
  g.view({-1}).narrow(0, 0, k).copy_(specials.narrow(0, 0, k));
  return g.to(dtype);
}

void check_kernels(const at::Tensor& dact, const at::Tensor& gate, const at::Tensor& up) {
  const Bound b = bound_for(gate.scalar_type());
  const Exact e = exact_for(dact, gate, up);
  const at::Tensor act = swiglu_cuda_forward(gate, up);
  const auto [dgate, dup] = swiglu_cuda_backward(dact, gate, up);
  CHECK(act.sizes() == gate.sizes());
  CHECK(worst_ratio(act, e.act, e.act_cond, 1e-6, b) <= 1.0);
  CHECK(worst_ratio(dgate, e.dgate, e.dgate_cond, 2e-6, b) <= 1.0);
  CHECK(worst_ratio(dup, e.dup, e.dup_cond, 1e-6, b) <= 1.0);
}

const at::ScalarType kDtypes[] = {at::kFloat, at::kBFloat16, at::kHalf};

}  // namespace
#endif

TEST_CASE("fused SwiGLU kernels match the fp64 maths within one rounding", "[cuda]") {
  SKIP_WITHOUT_CUDA();
#ifndef TEMPER_WITH_CUDA
  FAIL("a CUDA device is present but temper was built without CUDA");
#else
  // n = 1, 777 (odd: scalar path), 640 and 4 * 33 * 1024 (packed), 2^24 + 3 (scalar, past one grid).
  const std::vector<std::vector<int64_t>> shapes = {{1}, {3, 7, 37}, {2, 5, 64}, {4, 33, 1024}, {(1 << 24) + 3}};
  for (at::ScalarType dtype : kDtypes) {
    for (const auto& shape : shapes) {
      INFO(c10::toString(dtype) << " shape " << at::IntArrayRef(shape));
      at::manual_seed(static_cast<uint64_t>(shape.back()) * 7 + static_cast<uint64_t>(dtype));
      const auto options = at::TensorOptions().device(at::kCUDA).dtype(at::kFloat);
      const at::Tensor gate = make_gate(shape, dtype);
      const at::Tensor up = at::randn(shape, options).to(dtype);
      const at::Tensor dact = at::randn(shape, options).to(dtype);
      check_kernels(dact, gate, up);
    }
  }
#endif
}

TEST_CASE("fused SwiGLU kernels take views offset by one element and all-zero inputs", "[cuda]") {
  SKIP_WITHOUT_CUDA();
#ifndef TEMPER_WITH_CUDA
  FAIL("a CUDA device is present but temper was built without CUDA");
#else
  for (at::ScalarType dtype : kDtypes) {
    INFO(c10::toString(dtype));
    at::manual_seed(5);
    // n = 1536 is a multiple of every pack width, so only the misalignment forces the scalar path.
    const std::vector<int64_t> shape = {3, 8, 64};
    const int64_t n = 3 * 8 * 64;
    const auto options = at::TensorOptions().device(at::kCUDA).dtype(at::kFloat);
    auto offset_view = [&](const at::Tensor& t) {
      at::Tensor buffer = at::empty({n + 1}, t.options());
      buffer.narrow(0, 1, n).copy_(t.reshape({n}));
      return buffer.narrow(0, 1, n).view(shape);
    };
    const at::Tensor gate = make_gate(shape, dtype);
    const at::Tensor up = at::randn(shape, options).to(dtype);
    const at::Tensor dact = at::randn(shape, options).to(dtype);
    const at::Tensor gate_off = offset_view(gate), up_off = offset_view(up), dact_off = offset_view(dact);
    REQUIRE(gate_off.is_contiguous());
    REQUIRE(reinterpret_cast<uintptr_t>(gate_off.data_ptr()) % 16 != 0);
    check_kernels(dact_off, gate_off, up_off);
    check_kernels(dact_off, gate, up);  // only the incoming gradient misaligned
    // The scalar and packed paths run the same maths, so they agree bit for bit.
    CHECK(at::equal(swiglu_cuda_forward(gate_off, up_off), swiglu_cuda_forward(gate, up)));
    CHECK(at::equal(swiglu_cuda_backward(dact_off, gate_off, up_off).first, swiglu_cuda_backward(dact, gate, up).first));

    const at::Tensor zeros = at::zeros(shape, options.dtype(dtype));
    CHECK(swiglu_cuda_forward(zeros, zeros).abs().max().item<double>() == 0.0);
    const auto [dg, du] = swiglu_cuda_backward(zeros, zeros, zeros);
    CHECK(dg.abs().max().item<double>() == 0.0);
    CHECK(du.abs().max().item<double>() == 0.0);
    // dgate at g = 0 is dact * up * 1/2: exact in every type for these dyadic inputs.
    const at::Tensor ones = at::ones(shape, options.dtype(dtype));
    CHECK(at::equal(swiglu_cuda_backward(ones, zeros, ones * 3).first, ones * 1.5));
  }
#endif
}

TEST_CASE("swiglu routes CUDA tensors through the fused autograd Function with the reference's gradients",
          "[cuda]") {
  SKIP_WITHOUT_CUDA();
#ifndef TEMPER_WITH_CUDA
  FAIL("a CUDA device is present but temper was built without CUDA");
#else
  for (at::ScalarType dtype : kDtypes) {
    INFO(c10::toString(dtype));
    at::manual_seed(9);
    const std::vector<int64_t> shape = {2, 5, 88};
    const auto options = at::TensorOptions().device(at::kCUDA).dtype(at::kFloat);
    const at::Tensor gate = make_gate(shape, dtype).requires_grad_(true);
    const at::Tensor up = at::randn(shape, options).to(dtype).requires_grad_(true);
    const at::Tensor dact = at::randn(shape, options).to(dtype);

    const at::Tensor act = swiglu(gate, up);
    REQUIRE(act.grad_fn() != nullptr);
    CHECK(act.grad_fn()->name().find("SwigluFunction") != std::string::npos);
    act.backward(dact);

    // Autograd of the reference in fp64 on the same data is the exact gradient.
    const at::Tensor g64 = gate.detach().to(at::kDouble).requires_grad_(true);
    const at::Tensor u64 = up.detach().to(at::kDouble).requires_grad_(true);
    const at::Tensor act64 = swiglu_reference(g64, u64);
    act64.backward(dact.to(at::kDouble));
    const Exact e = exact_for(dact, gate.detach(), up.detach());
    const Bound b = bound_for(dtype);
    CHECK(worst_ratio(act.detach(), act64.detach(), e.act_cond, 1e-6, b) <= 1.0);
    CHECK(worst_ratio(gate.grad(), g64.grad(), e.dgate_cond, 2e-6, b) <= 1.0);
    CHECK(worst_ratio(up.grad(), u64.grad(), e.dup_cond, 1e-6, b) <= 1.0);

    // The gradient of sum() arrives as an expanded (stride 0) tensor; the backward copes.
    gate.grad().zero_();
    swiglu(gate, up).sum().backward();
    const at::Tensor ones = at::ones(shape, options.dtype(dtype));
    CHECK(at::equal(gate.grad(), swiglu_cuda_backward(ones, gate.detach(), up.detach()).first));
  }
#endif
}

TEST_CASE("swiglu keeps the reference for CUDA inputs the kernel does not cover", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  const auto options = at::TensorOptions().device(at::kCUDA);
  const at::Tensor gate = at::randn({2, 3, 8}, options);
  const at::Tensor up = at::randn({8}, options);  // broadcast
  CHECK(at::equal(swiglu(gate, up), swiglu_reference(gate, up)));
  const at::Tensor up64 = at::randn({2, 3, 8}, options.dtype(at::kDouble));  // fp64: no kernel
  CHECK(at::equal(swiglu(gate.to(at::kDouble), up64), swiglu_reference(gate.to(at::kDouble), up64)));
}
