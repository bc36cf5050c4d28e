// RoPE off CUDA: apply_rope is the ATen reference, bit for bit, and the closed-form backward that
// the fused CUDA kernel implements (lib/kernels/rope.cuh) is the gradient of that reference.
#include "model/rope.hpp"
#include "test_support.hpp"

using namespace temper;
using namespace temper::testing;

namespace {

// cos/sin [B, T, D] for positions offset .. offset + T - 1.
std::pair<at::Tensor, at::Tensor> tables(int64_t batch, int64_t seq, int64_t dim, int64_t offset,
                                         at::ScalarType dtype) {
  ModelConfig config;
  config.head_dim = dim;
  config.rope_theta = 10000.0;
  const at::Tensor positions = at::arange(offset, offset + seq, at::kLong).unsqueeze(0).expand({batch, seq});
  return rope_cos_sin(rope_inv_freq(config), positions, dtype);
}

}  // namespace

TEST_CASE("apply_rope on the CPU is the rotate-half formula, bit for bit", "[unit]") {
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    for (int64_t offset : {int64_t{0}, int64_t{21}}) {
      INFO(c10::toString(dtype) << " offset " << offset);
      at::manual_seed(7 + offset);
      const int64_t batch = 2, heads = 3, seq = offset == 0 ? 5 : 1, dim = 80, half = dim / 2;
      const at::Tensor x = at::randn({batch, seq, heads, dim}).to(dtype).transpose(1, 2);
      const auto [c, s] = tables(batch, seq, dim, offset, dtype);
      const at::Tensor out = apply_rope(x, c, s);
      CHECK(at::equal(out, apply_rope_reference(x, c, s)));
      // The same operations written per half: x1 c1 + (-x2) s1 | x2 c2 + x1 s2.
      const at::Tensor x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
      const at::Tensor c4 = c.unsqueeze(1), s4 = s.unsqueeze(1);
      const at::Tensor lo = x1 * c4.narrow(-1, 0, half) + (-x2) * s4.narrow(-1, 0, half);
      const at::Tensor hi = x2 * c4.narrow(-1, half, half) + x1 * s4.narrow(-1, half, half);
      CHECK(at::equal(out, at::cat({lo, hi}, -1)));
    }
  }
}

TEST_CASE("the fused kernel's closed-form RoPE backward is the reference's gradient", "[unit]") {
  at::manual_seed(11);
  const int64_t dim = 64, half = dim / 2;
  const at::Tensor x = at::randn({2, 3, 5, dim}, at::kDouble).requires_grad_(true);
  const auto [c, s] = tables(2, 5, dim, 4, at::kDouble);
  const at::Tensor dy = at::randn({2, 3, 5, dim}, at::kDouble);
  apply_rope(x, c, s).backward(dy);
  // dx[d] = dy[d] cos[d] + dy[d+h] sin[d+h];  dx[d+h] = dy[d+h] cos[d+h] - dy[d] sin[d]
  const at::Tensor c4 = c.unsqueeze(1), s4 = s.unsqueeze(1);
  const at::Tensor dy1 = dy.narrow(-1, 0, half), dy2 = dy.narrow(-1, half, half);
  const at::Tensor lo = dy1 * c4.narrow(-1, 0, half) + dy2 * s4.narrow(-1, half, half);
  const at::Tensor hi = dy2 * c4.narrow(-1, half, half) - dy1 * s4.narrow(-1, 0, half);
  CHECK(max_abs_diff(x.grad(), at::cat({lo, hi}, -1)) < 1e-12);
}
