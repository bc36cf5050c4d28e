// The fused RMSNorm kernels against the ATen reference (lib/ops/rms_norm.cc), forward and
// backward, fp32 and bf16/fp16, including sizes that are not multiples of the block or warp.
#include "ops/rms_norm.hpp"
#include "test_support.hpp"

using namespace temper;
using namespace temper::testing;

TEST_CASE("fused RMSNorm matches the reference forward and backward", "[cuda]") {
  SKIP_WITHOUT_CUDA();
#ifndef TEMPER_WITH_CUDA
  FAIL("a CUDA device is present but temper was built without CUDA");
#else
  struct Shape {
    int64_t rows, hidden;
  };
  const Shape shapes[] = {{1, 1}, {3, 33}, {7, 256}, {257, 1000}, {64, 4097}, {2, 16384}, {600, 2048}, {2500, 512}};  // the last: more rows than backward blocks
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
    const double tol = dtype == at::kFloat ? 1e-5 : 2e-2;
    for (const Shape& s : shapes) {
      INFO(c10::toString(dtype) << " rows " << s.rows << " hidden " << s.hidden);
      at::manual_seed(s.rows * 131 + s.hidden);
      const auto options = at::TensorOptions().device(at::kCUDA).dtype(dtype);
      const at::Tensor x = (at::randn({s.rows, s.hidden}, options.dtype(at::kFloat)) * 3).to(dtype);
      const at::Tensor w = (at::randn({s.hidden}, options.dtype(at::kFloat)) * 0.5 + 1).to(dtype);
      const at::Tensor dy = at::randn({s.rows, s.hidden}, options.dtype(at::kFloat)).to(dtype);

      // Reference in fp32 on the CPU, differentiated by autograd.
      const at::Tensor xr = x.to(at::kCPU, at::kFloat).requires_grad_(true);
      const at::Tensor wr = w.to(at::kCPU, at::kFloat).requires_grad_(true);
      const at::Tensor yr = rms_norm_reference(xr, wr, 1e-5);
      yr.backward(dy.to(at::kCPU, at::kFloat));

      auto [y, rstd] = rms_norm_cuda_forward(x, w, 1e-5);
      auto [dx, dw] = rms_norm_cuda_backward(dy, x, w, rstd);
      const double scale_y = yr.abs().max().item<double>();
      CHECK(max_abs_diff(y, yr.detach()) <= tol * std::max(1.0, scale_y));
      CHECK(max_abs_diff(dx, xr.grad()) <= tol * std::max(1.0, xr.grad().abs().max().item<double>()));
      CHECK(max_abs_diff(dw, wr.grad()) <= tol * std::max(1.0, wr.grad().abs().max().item<double>()));
      // A frozen weight: the dx-only kernel gives the same dx bit for bit, and no dweight.
      auto [dx_only, no_dw] = rms_norm_cuda_backward(dy, x, w, rstd, /*weight_grad=*/false);
      CHECK(at::equal(dx_only, dx));
      CHECK_FALSE(no_dw.defined());
    }
  }
#endif
}

TEST_CASE("rms_norm routes CUDA tensors through the fused kernel under autograd", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  at::manual_seed(3);
  const at::Tensor x = at::randn({4, 5, 96}, at::TensorOptions().device(at::kCUDA)).requires_grad_(true);
  const at::Tensor w = at::randn({96}, at::TensorOptions().device(at::kCUDA)).requires_grad_(true);
  const at::Tensor y = rms_norm(x, w, 1e-6);
  y.pow(2).sum().backward();
  const at::Tensor xr = x.detach().cpu().requires_grad_(true);
  const at::Tensor wr = w.detach().cpu().requires_grad_(true);
  rms_norm_reference(xr, wr, 1e-6).pow(2).sum().backward();
  CHECK(max_abs_diff(y, rms_norm_reference(xr, wr, 1e-6).detach()) < 1e-4);
  CHECK(max_abs_diff(x.grad(), xr.grad()) < 1e-3);
  CHECK(max_abs_diff(w.grad(), wr.grad()) < 1e-3);
}

TEST_CASE("rms_norm with a frozen weight gives x the same gradient and the weight none", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  at::manual_seed(4);
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    INFO(c10::toString(dtype));
    const auto options = at::TensorOptions().device(at::kCUDA).dtype(dtype);
    const at::Tensor x0 = at::randn({3, 70, 512}, options);
    const at::Tensor w_frozen = at::randn({512}, options);
    const at::Tensor w_trained = w_frozen.clone().requires_grad_(true);
    const at::Tensor xa = x0.clone().requires_grad_(true), xb = x0.clone().requires_grad_(true);
    const at::Tensor dy = at::randn({3, 70, 512}, options);
    rms_norm(xa, w_frozen, 1e-6).backward(dy);
    rms_norm(xb, w_trained, 1e-6).backward(dy);
    CHECK(at::equal(xa.grad(), xb.grad()));
    CHECK_FALSE(w_frozen.grad().defined());
    CHECK(w_trained.grad().defined());
  }
}
