// The fused RoPE kernels (lib/kernels/rope.cu) against the ATen reference (apply_rope_reference,
// lib/model/rope.cc) on the same GPU data, forward and backward, fp32/bf16/fp16, odd shapes, the
// transposed projection view the model passes, positions with an offset (a KV-cache decode step)
// and cos/sin broadcast over the batch; the packed and one-pair kernels bit for bit.
//
// Bounds, elementwise, with u the dtype's unit roundoff (2^-24 fp32, 2^-8 bf16, 2^-11 fp16) and
// M = |x[d]| |cos[d]| + |x[d+h]| |sin[d]| (the magnitudes of the two products; likewise for the
// backward): the reference rounds each product and the sum to the dtype (error <= 2u M), the
// kernel computes in fp32 (error <= 2^-23 M) and rounds once (<= u |exact|), so
//   |kernel - reference| <= 4u M   and   |kernel - exact| <= u |exact| + 2^-22 M,
// plus 2^-23 absolute for fp16, whose products of small values may land among the subnormals.
// For fp32 that is <= 2.4e-7 M, inside the 1e-6 relative asked of it.
#include <cmath>

#include "model/rope.hpp"
#include "ops/rope.hpp"
#include "test_support.hpp"

using namespace temper;
using namespace temper::testing;

#ifdef TEMPER_WITH_CUDA
namespace {

double unit_roundoff(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return std::ldexp(1.0, -24);
    case at::kBFloat16: return std::ldexp(1.0, -8);
    default: return std::ldexp(1.0, -11);
  }
}

double absolute_slack(at::ScalarType dtype) { return dtype == at::kHalf ? std::ldexp(1.0, -23) : 1e-30; }

// cos/sin [Bc, T, D] in `dtype` on the GPU for positions offset, offset + 1, ... (Bc rows alike).
std::pair<at::Tensor, at::Tensor> tables(int64_t cos_batch, int64_t seq, int64_t dim, int64_t offset,
                                         at::ScalarType dtype) {
  ModelConfig config;
  config.head_dim = dim;
  config.rope_theta = 10000.0;
  const auto long_cuda = at::TensorOptions().dtype(at::kLong).device(at::kCUDA);
  const at::Tensor positions = at::arange(offset, offset + seq, long_cuda).unsqueeze(0).expand({cos_batch, seq});
  return rope_cos_sin(rope_inv_freq(config).to(at::kCUDA), positions, dtype);
}

at::Tensor f64(const at::Tensor& t) { return t.to(at::kCPU, at::kDouble); }

// |a| * |c| + swap_halves(|a|) * swap_halves(|s|) for the backward, or with |s| unswapped for the
// forward; a [B, H, T, D], c/s [Bc, T, D].
at::Tensor magnitude(const at::Tensor& a, const at::Tensor& c, const at::Tensor& s, bool backward) {
  const int64_t half = a.size(-1) / 2;
  const at::Tensor aa = f64(a).abs();
  const at::Tensor ac = f64(c).abs().unsqueeze(1);
  const at::Tensor as = f64(s).abs().unsqueeze(1);
  const at::Tensor swapped = at::cat({aa.narrow(-1, half, half), aa.narrow(-1, 0, half)}, -1);
  const at::Tensor sin_part =
      backward ? at::cat({as.narrow(-1, half, half), as.narrow(-1, 0, half)}, -1) : as;
  return aa * ac + swapped * sin_part;
}

// Largest excess of |a - b| over the elementwise bound (<= 0 passes).
double excess(const at::Tensor& a, const at::Tensor& b, const at::Tensor& bound) {
  return ((f64(a) - f64(b)).abs() - bound).max().item<double>();
}

struct Case {
  int64_t batch, heads, seq, dim, cos_batch, offset;
};

const Case kCases[] = {
    {2, 3, 5, 64, 2, 0},  {2, 3, 5, 128, 2, 0},  {2, 3, 5, 80, 2, 0},  {1, 1, 1, 2, 1, 0},
    {3, 4, 1, 128, 3, 37},  // one decode step after 37 cached positions
    {2, 5, 7, 64, 1, 11},   // cos/sin of one row of positions, broadcast over the batch
    {2, 32, 129, 128, 2, 0},
    {2, 3, 5, 12, 2, 0},  // half 6: no whole packs, the one-pair kernel in every dtype
};

}  // namespace
#endif

TEST_CASE("fused RoPE forward matches the reference and rounds once", "[cuda]") {
  SKIP_WITHOUT_CUDA();
#ifndef TEMPER_WITH_CUDA
  FAIL("a CUDA device is present but temper was built without CUDA");
#else
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
    const double u = unit_roundoff(dtype);
    for (const Case& k : kCases) {
      INFO(c10::toString(dtype) << " B " << k.batch << " H " << k.heads << " T " << k.seq << " D " << k.dim
                                << " cos batch " << k.cos_batch << " offset " << k.offset);
      at::manual_seed(k.heads * 1000 + k.seq * 10 + k.dim);
      const auto options = at::TensorOptions().device(at::kCUDA).dtype(at::kFloat);
      // The projection output [B, T, H, D] seen as [B, H, T, D], as decoder_block passes it.
      const at::Tensor x = (at::randn({k.batch, k.seq, k.heads, k.dim}, options) * 2).to(dtype).transpose(1, 2);
      if (k.heads > 1 && k.seq > 1) REQUIRE_FALSE(x.is_contiguous());
      const auto [c, s] = tables(k.cos_batch, k.seq, k.dim, k.offset, dtype);
      REQUIRE(rope_cuda_supports(x, c, s));

      const at::Tensor out = rope_cuda_forward(x, c, s);
      CHECK(out.sizes() == x.sizes());
      CHECK(out.scalar_type() == dtype);
      CHECK(out.transpose(1, 2).is_contiguous());
      const at::Tensor ref = apply_rope_reference(x, c, s);
      const at::Tensor exact = apply_rope_reference(f64(x), f64(c), f64(s));
      const at::Tensor m = magnitude(x, c, s, /*backward=*/false);
      CHECK(excess(out, ref, 4 * u * m + absolute_slack(dtype)) <= 0);
      CHECK(excess(out, exact, u * f64(exact).abs() + std::ldexp(1.0, -22) * m + absolute_slack(dtype)) <= 0);
      if (dtype == at::kFloat) CHECK(max_abs_diff(out, ref) <= 1e-6 * std::max(1.0, ref.abs().max().item<double>()));
      // A contiguous [B, H, T, D] input gives the same values.
      CHECK(at::equal(rope_cuda_forward(x.contiguous(), c, s), out));
      // So does an input one element off 16-byte alignment, which the one-pair kernel takes
      // where the aligned one ran the packed kernel (when head_dim allows packs): the two
      // kernels agree bit for bit, forward and backward.
      const int64_t n = x.numel();
      const at::Tensor shifted =
          at::empty({n + 1}, x.options()).narrow(0, 1, n).view({k.batch, k.heads, k.seq, k.dim}).copy_(x);
      CHECK(at::equal(rope_cuda_forward(shifted, c, s), out));
      CHECK(at::equal(rope_cuda_backward(shifted, c, s), rope_cuda_backward(x.contiguous(), c, s)));
    }
  }
#endif
}

TEST_CASE("fused RoPE backward matches autograd of the reference", "[cuda]") {
  SKIP_WITHOUT_CUDA();
#ifndef TEMPER_WITH_CUDA
  FAIL("a CUDA device is present but temper was built without CUDA");
#else
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
    const double u = unit_roundoff(dtype);
    for (const Case& k : kCases) {
      INFO(c10::toString(dtype) << " B " << k.batch << " H " << k.heads << " T " << k.seq << " D " << k.dim
                                << " cos batch " << k.cos_batch << " offset " << k.offset);
      at::manual_seed(k.heads * 1000 + k.seq * 10 + k.dim + 1);
      const auto options = at::TensorOptions().device(at::kCUDA).dtype(at::kFloat);
      const at::Tensor x = at::randn({k.batch, k.seq, k.heads, k.dim}, options).to(dtype).transpose(1, 2);
      const auto [c, s] = tables(k.cos_batch, k.seq, k.dim, k.offset, dtype);
      // SDPA hands back grads as transposed [B, T, H, D]; also try a dense [B, H, T, D] one.
      for (bool transposed_grad : {true, false}) {
        INFO("transposed dy " << transposed_grad);
        const at::Tensor dy = transposed_grad
                                  ? at::randn({k.batch, k.seq, k.heads, k.dim}, options).to(dtype).transpose(1, 2)
                                  : at::randn({k.batch, k.heads, k.seq, k.dim}, options).to(dtype);
        const at::Tensor dx = rope_cuda_backward(dy, c, s);
        CHECK(dx.sizes() == x.sizes());

        const at::Tensor xr = x.detach().clone().requires_grad_(true);
        apply_rope_reference(xr, c, s).backward(dy);
        const at::Tensor xe = f64(x).requires_grad_(true);
        apply_rope_reference(xe, f64(c), f64(s)).backward(f64(dy));
        const at::Tensor m = magnitude(dy, c, s, /*backward=*/true);
        CHECK(excess(dx, xr.grad(), 4 * u * m + absolute_slack(dtype)) <= 0);
        CHECK(excess(dx, xe.grad(), u * xe.grad().abs() + std::ldexp(1.0, -22) * m + absolute_slack(dtype)) <= 0);
      }
    }
  }
#endif
}

TEST_CASE("apply_rope routes CUDA tensors through the fused autograd Function", "[cuda]") {
  SKIP_WITHOUT_CUDA();
#ifndef TEMPER_WITH_CUDA
  FAIL("a CUDA device is present but temper was built without CUDA");
#else
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    INFO(c10::toString(dtype));
    const double u = unit_roundoff(dtype);
    at::manual_seed(5);
    const auto options = at::TensorOptions().device(at::kCUDA).dtype(at::kFloat);
    const at::Tensor proj = at::randn({2, 9, 6, 64}, options).to(dtype);  // [B, T, H, D]
    const at::Tensor weight = at::randn({2, 6, 9, 64}, options);
    const auto [c, s] = tables(2, 9, 64, 3, dtype);

    const at::Tensor leaf = proj.clone().requires_grad_(true);
    const at::Tensor out = apply_rope(leaf.transpose(1, 2), c, s);
    CHECK(out.grad_fn() != nullptr);
    CHECK(out.transpose(1, 2).is_contiguous());  // the fused path's layout: it ran
    (out.to(at::kFloat) * weight).sum().backward();

    const at::Tensor leaf_ref = proj.clone().requires_grad_(true);
    const at::Tensor out_ref = apply_rope_reference(leaf_ref.transpose(1, 2), c, s);
    (out_ref.to(at::kFloat) * weight).sum().backward();

    CHECK(excess(out, out_ref, 4 * u * magnitude(proj.transpose(1, 2), c, s, false) + 1e-30) <= 0);
    // dy = weight rounded to the dtype by the cast's backward, the same in both.
    const at::Tensor dy = weight.to(dtype);
    const at::Tensor m = magnitude(dy, c, s, /*backward=*/true).transpose(1, 2);
    CHECK(excess(leaf.grad(), leaf_ref.grad(), 4 * u * m + 1e-30) <= 0);
  }
#endif
}
