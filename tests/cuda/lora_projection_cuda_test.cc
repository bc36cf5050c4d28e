// lora_projection / lora_add on CUDA in bf16 with fp32 masters (what LoRA and QLoRA training run)
// against the unfused expression computed in fp64 on the CPU: output and gradients within bf16
// rounding, on a dense and an NF4 base.
#include <torch/csrc/autograd/autograd.h>

#include "lora/lora_projection.hpp"
#include "temper/nf4_quantizer.hpp"
#include "test_support.hpp"

using namespace temper;
using namespace temper::testing;

TEST_CASE("lora_projection on CUDA in bf16 matches the fp64 expression", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  at::manual_seed(21);
  const int64_t in = 256, out = 192, r = 16;
  const double s = 2.0;
  const at::Tensor x = at::randn({4, 33, in});
  const at::Tensor w = at::randn({out, in}) * 0.05;
  const at::Tensor a = at::randn({r, in}) * 0.1;
  const at::Tensor b = at::randn({out, r}) * 0.1;
  const at::Tensor upstream = at::randn({4, 33, out});
  for (bool quantized : {false, true}) {
    INFO((quantized ? "NF4 base" : "dense base"));
    Linear base;
    at::Tensor w_ref = w;  // what the base computes with, in fp64
    if (quantized) {
      auto state = Nf4Quantizer::quantize(w.cuda());
      REQUIRE_OK(state);
      base.quantized = std::make_shared<const QuantState>(std::move(*state));
      w_ref = base.dense_weight(at::kFloat).cpu();
    } else {
      base.weight = w.to(at::kBFloat16).cuda();
      w_ref = base.weight.cpu();
    }
    base.bias = at::randn({out}).to(at::kBFloat16).cuda();
    const at::Tensor xg = x.to(at::kBFloat16).cuda().requires_grad_(true);
    const at::Tensor ag = a.cuda().requires_grad_(true);  // fp32 masters
    const at::Tensor bg = b.cuda().requires_grad_(true);
    const at::Tensor y = lora_projection(xg, base, ag, bg, s);
    CHECK(y.scalar_type() == at::kBFloat16);
    const auto g = torch::autograd::grad({y}, {xg, ag, bg}, {upstream.to(at::kBFloat16).cuda()});

    const at::Tensor xr = xg.detach().cpu().to(at::kDouble).requires_grad_(true);
    const at::Tensor ar = a.to(at::kDouble).requires_grad_(true);
    const at::Tensor br = b.to(at::kDouble).requires_grad_(true);
    const at::Tensor yr = at::linear(xr, w_ref.to(at::kDouble), base.bias.cpu().to(at::kDouble)) +
                          at::linear(at::linear(xr, ar), br) * s;
    const auto gr = torch::autograd::grad({yr}, {xr, ar, br}, {upstream.to(at::kDouble)});
    CHECK(rel_err(y, yr) < 1e-2);
    CHECK(g[1].scalar_type() == at::kFloat);
    CHECK(g[2].scalar_type() == at::kFloat);
    for (size_t i = 0; i < 3; ++i) {
      INFO("gradient " << i << " (x, a, b)");
      CHECK(rel_err(g[i], gr[i]) < 1e-2);
    }
  }
}
