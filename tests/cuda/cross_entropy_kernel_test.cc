// The fused softmax cross-entropy kernel (lib/kernels/cross_entropy.cu) against its ATen
// reference (softmax_cross_entropy_rows_reference_): losses and in-place gradients, fp32 / bf16 /
// fp16, vocabularies on the 16-byte path and off it, ignored rows, labels at both ends, large
// logits; a NaN logit and an out-of-range label give a NaN loss.
#include "ops/linear_cross_entropy.hpp"
#include "test_support.hpp"

using namespace temper;
using namespace temper::testing;

TEST_CASE("the fused cross-entropy kernel matches the ATen reference", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  at::manual_seed(31);
  for (int64_t vocab : {int64_t{8}, int64_t{1001}, int64_t{32000}}) {
    for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
      for (bool write_grad : {false, true}) {
        INFO("vocab " << vocab << " " << c10::toString(dtype) << " write_grad " << write_grad);
        const int64_t rows = 37;
        // Large offsets on some rows: the max subtraction must keep exp in range.
        const at::Tensor base = at::randn({rows, vocab}) * 3 + at::randint(-40, 40, {rows, 1});
        at::Tensor labels = at::randint(0, vocab, {rows}, at::kLong);
        labels[0] = 0;
        labels[1] = vocab - 1;
        labels[2] = -100;
        labels[5] = -100;
        // CPU, rounded as the GPU input is; a copy, since the reference overwrites it (and .to(kFloat)
        // of fp32 would alias base).
        const at::Tensor ref_logits = base.to(dtype).clone();
        const at::Tensor ref_loss = softmax_cross_entropy_rows_reference_(ref_logits, labels, write_grad);
        const at::Tensor logits = base.to(dtype).cuda();
        const at::Tensor loss = softmax_cross_entropy_rows_(logits, labels.cuda(), write_grad);
        CHECK(loss.scalar_type() == at::kFloat);
        CHECK(max_abs_diff(loss, ref_loss) < 1e-4);
        CHECK(loss[2].item<float>() == 0.0f);
        if (write_grad) {
          // Both round exp(x - lse) - onehot once to dtype; lse differs only in fp32 summation order.
          const double tol = dtype == at::kFloat ? 5e-5 : (dtype == at::kBFloat16 ? 4e-3 : 1e-3);
          CHECK(max_abs_diff(logits, ref_logits) < tol);
          CHECK(logits[2].abs().max().item<float>() == 0.0f);
          // Each gradient row of a scored row sums to 0 (softmax sums to 1, minus the one-hot).
          CHECK(logits[0].to(at::kDouble).sum().abs().item<double>() < (dtype == at::kFloat ? 1e-5 : 5e-2));
        } else {
          CHECK(at::equal(logits.cpu(), base.to(dtype)));  // untouched
        }
      }
    }
  }
}

TEST_CASE("the fused cross-entropy kernel reports NaN for a NaN logit or an out-of-range label", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  at::Tensor logits = at::randn({3, 64}, at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16));
  logits[1][7] = std::numeric_limits<float>::quiet_NaN();
  const at::Tensor labels = at::tensor(std::vector<int64_t>{3, 3, 64}).cuda();
  const at::Tensor loss = softmax_cross_entropy_rows_(logits, labels, true).cpu();
  CHECK(std::isfinite(loss[0].item<float>()));
  CHECK(std::isnan(loss[1].item<float>()));
  CHECK(std::isnan(loss[2].item<float>()));
}

TEST_CASE("linear_cross_entropy_sum on CUDA in bf16 matches the CPU fp32 computation", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  at::manual_seed(32);
  const at::Tensor h = (at::randn({300, 64}) * 0.5).to(at::kBFloat16);
  const at::Tensor w = (at::randn({5000, 64}) * 0.5).to(at::kBFloat16);
  at::Tensor labels = at::randint(0, 5000, {300}, at::kLong);
  labels.narrow(0, 0, 10).fill_(-100);
  // 64 rows per chunk: the weight gradient summed over chunks in fp32; 0 (the default budget):
  // one chunk, the weight gradient straight from one GEMM.
  for (const int64_t chunk : {64, 0}) {
    INFO("chunk rows " << chunk);
    const at::Tensor hc = h.to(at::kFloat).requires_grad_(true), wc = w.to(at::kFloat).requires_grad_(true);
    const at::Tensor hg = h.cuda().requires_grad_(true), wg = w.cuda().requires_grad_(true);
    const at::Tensor lc = linear_cross_entropy_sum(hc, wc, labels, 64);
    const at::Tensor lg = linear_cross_entropy_sum(hg, wg, labels.cuda(), chunk);
    lc.backward();
    lg.backward();
    CHECK(std::abs(lg.item<double>() - lc.item<double>()) / lc.item<double>() < 1e-3);
    CHECK((hg.grad().cpu().to(at::kFloat) - hc.grad()).norm().item<double>() / hc.grad().norm().item<double>() < 2e-2);
    CHECK(wg.grad().scalar_type() == at::kBFloat16);
    CHECK((wg.grad().cpu().to(at::kFloat) - wc.grad()).norm().item<double>() / wc.grad().norm().item<double>() < 2e-2);
  }
}
