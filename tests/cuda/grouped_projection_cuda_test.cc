// The grouped projection on CUDA: the op in bf16 with fp32 masters against its members computed in
// fp64 on the CPU; the packed SwiGLU kernels against the two-tensor kernels (bit for bit, both
// directions, packed and scalar paths); and a LoRA model on the GPU, whose q/k/v and gate/up the
// adapter packs, against the same model on the CPU, which runs member by member (fp32: loss and
// every adapter gradient); full fine-tuning likewise (the Trainer packs a CUDA model: three steps'
// losses and the trained weights), and grouped_linear's gradients in bf16 against fp64.
#include <torch/csrc/autograd/autograd.h>

#include "model/model_impl.hpp"
#include "model_support.hpp"
#include "ops/grouped_projection.hpp"
#include "ops/swiglu.hpp"
#include "list_source.hpp"
#include "temper/lora_adapter.hpp"
#include "temper/trainer.hpp"

using namespace temper;
using namespace temper::testing;

TEST_CASE("grouped_projection on CUDA in bf16 matches its members in fp64", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  at::manual_seed(31);
  const int64_t in = 256;
  const std::vector<int64_t> outs = {256, 64, 64};
  const at::Tensor x = at::randn({4, 33, in});
  const at::Tensor w = at::randn({384, in}) * 0.05;
  const at::Tensor bias = at::randn({384}) * 0.1;
  std::vector<at::Tensor> as, bs;
  for (int64_t out : outs) {
    as.push_back(at::randn({16, in}) * 0.1);
    bs.push_back(at::randn({out, 16}) * 0.1);
  }
  const double s = 2.0;
  const at::Tensor upstream = at::randn({4, 33, 384});

  const at::Tensor xg = x.to(at::kBFloat16).cuda().requires_grad_(true);
  const at::Tensor wg = w.to(at::kBFloat16).cuda();
  const at::Tensor bg = bias.to(at::kBFloat16).cuda();
  std::vector<ProjectionMember> members;
  std::vector<at::Tensor> wrt = {xg};
  for (size_t i = 0; i < outs.size(); ++i) {
    members.push_back({outs[i], as[i].cuda().requires_grad_(true), bs[i].cuda().requires_grad_(true), s});
    wrt.push_back(members.back().a);
    wrt.push_back(members.back().b);
  }
  const at::Tensor y = grouped_projection(xg, wg, bg, members);
  CHECK(y.scalar_type() == at::kBFloat16);
  const auto g = torch::autograd::grad({y}, wrt, {upstream.to(at::kBFloat16).cuda()});

  const at::Tensor xr = xg.detach().cpu().to(at::kDouble).requires_grad_(true);
  std::vector<at::Tensor> wrt_ref = {xr};
  std::vector<at::Tensor> parts;
  int64_t row = 0;
  for (size_t i = 0; i < outs.size(); ++i) {
    const at::Tensor ar = as[i].to(at::kDouble).requires_grad_(true);
    const at::Tensor br = bs[i].to(at::kDouble).requires_grad_(true);
    wrt_ref.push_back(ar);
    wrt_ref.push_back(br);
    parts.push_back(at::linear(xr, wg.cpu().to(at::kDouble).narrow(0, row, outs[i]),
                               bg.cpu().to(at::kDouble).narrow(0, row, outs[i])) +
                    at::linear(at::linear(xr, ar), br) * s);
    row += outs[i];
  }
  const at::Tensor yr = at::cat(parts, -1);
  const auto gr = torch::autograd::grad({yr}, wrt_ref, {upstream.to(at::kDouble)});
  CHECK(rel_err(y, yr) < 1e-2);
  for (size_t i = 0; i < wrt.size(); ++i) {
    INFO("gradient " << i << " (x, then a and b of each member)");
    if (i > 0) CHECK(g[i].scalar_type() == at::kFloat);
    CHECK(rel_err(g[i], gr[i]) < 1e-2);
  }
}

#ifdef TEMPER_WITH_CUDA  // the kernels' entry points exist in CUDA builds only
TEST_CASE("packed SwiGLU kernels equal the two-tensor kernels bit for bit", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  at::manual_seed(32);
  for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
    for (const int64_t half : {64, 13}) {  // 16-byte packs, and the scalar path
      INFO(dtype << ", I = " << half);
      const at::Tensor gu = (at::randn({3, 7, 2 * half}) * 3).to(dtype).cuda();
      const at::Tensor gate = gu.narrow(-1, 0, half).contiguous();
      const at::Tensor up = gu.narrow(-1, half, half).contiguous();
      const at::Tensor act = swiglu_packed_cuda_forward(gu);
      CHECK(act.sizes() == at::IntArrayRef({3, 7, half}));
      CHECK(at::equal(act, swiglu_cuda_forward(gate, up)));
      const at::Tensor dact = at::randn({3, 7, half}).to(dtype).cuda();
      const at::Tensor dgu = swiglu_packed_cuda_backward(dact, gu);
      auto [dgate, dup] = swiglu_cuda_backward(dact, gate, up);
      CHECK(at::equal(dgu.narrow(-1, 0, half), dgate));
      CHECK(at::equal(dgu.narrow(-1, half, half), dup));

      // Through autograd: swiglu_packed's gradient is the packed backward's.
      const at::Tensor leaf = gu.clone().requires_grad_(true);
      const auto g = torch::autograd::grad({swiglu_packed(leaf)}, {leaf}, {dact});
      CHECK(at::equal(g[0], dgu));
    }
  }
  CHECK_THROWS_WITH(swiglu_packed(at::randn({2, 5}).cuda()), Catch::Contains("even last dimension"));
}
#endif

namespace {

// The same weights in an fp32 model on the GPU.
Model fp32_copy_on_gpu(const Model& cpu, const ModelConfig& config) {
  Model gpu = Model::random(config, {at::kFloat, at::kCUDA}).value();
  at::NoGradGuard no_grad;
  for (auto& [name, p] : gpu.named_parameters()) p.copy_(cpu.parameter(name).value());
  return gpu;
}

}  // namespace

TEST_CASE("a LoRA model packed on the GPU trains like the unpacked one on the CPU", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  for (const ModelFamily family : {ModelFamily::kLlama, ModelFamily::kQwen2}) {
    INFO(model_family_name(family));
    const ModelConfig config = tiny_config(family);
    Model cpu = tiny_model(config, 43);
    Model gpu = fp32_copy_on_gpu(cpu, config);
    auto cpu_adapter = LoraAdapter::create(cpu);
    auto gpu_adapter = LoraAdapter::create(gpu);
    REQUIRE_OK(cpu_adapter);
    REQUIRE_OK(gpu_adapter);
    {
      at::NoGradGuard no_grad;
      at::manual_seed(44);
      const auto cpu_params = cpu_adapter->named_parameters();
      const auto gpu_params = gpu_adapter->named_parameters();
      for (size_t i = 0; i < cpu_params.size(); ++i) {
        if (cpu_params[i].first.find("lora_B") != std::string::npos) cpu_params[i].second.normal_(0.0, 0.2);
        gpu_params[i].second.copy_(cpu_params[i].second);
      }
    }
    CHECK_FALSE(cpu.impl().layers[0].packed_qkv.weight.defined());
    REQUIRE(gpu.impl().layers[0].packed_qkv.weight.defined());  // installing on a CUDA model packs
    REQUIRE(gpu.impl().layers[0].packed_gate_up.weight.defined());
    ForwardInput input;
    input.input_ids = random_ids(2, 12, config.vocab_size, 45);
    input.labels = input.input_ids;
    auto a = cpu.forward(input);
    auto b = gpu.forward(input);
    REQUIRE_OK(a);
    REQUIRE_OK(b);
    CHECK(std::abs(a->loss.item<double>() - b->loss.item<double>()) < 1e-4);
    a->loss.backward();
    b->loss.backward();
    const auto cpu_params = cpu_adapter->named_parameters();
    const auto gpu_params = gpu_adapter->named_parameters();
    for (size_t i = 0; i < cpu_params.size(); ++i) {
      INFO(cpu_params[i].first);
      REQUIRE(gpu_params[i].second.grad().defined());
      CHECK(rel_err(gpu_params[i].second.grad(), cpu_params[i].second.grad()) < 1e-3);
    }
  }
}

TEST_CASE("full fine-tuning on the GPU (packed q/k/v, gate/up) follows the CPU (unpacked)", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  for (const ModelFamily family : {ModelFamily::kLlama, ModelFamily::kQwen2}) {
    INFO(model_family_name(family));
    const ModelConfig config = tiny_config(family);
    Model cpu = tiny_model(config, 46);
    Model gpu = fp32_copy_on_gpu(cpu, config);
    std::vector<Batch> batches;
    for (int i = 0; i < 3; ++i) {
      const at::Tensor ids = random_ids(2, 12, config.vocab_size, 47 + i);
      batches.push_back({ids, ids, {}, {}});
    }
    std::vector<double> losses[2];
    for (int m = 0; m < 2; ++m) {
      ListSource data(batches);
      TrainerOptions options;
      options.max_steps = 3;
      options.optimizer.lr = 1e-2;
      options.schedule = {ScheduleKind::kConstant, 0};
      options.on_step = [&losses, m](const StepMetrics& s) { losses[m].push_back(s.loss); };
      auto trainer = Trainer::create(m == 0 ? cpu : gpu, data, options);
      REQUIRE_OK(trainer);
      REQUIRE_OK(trainer->train());
    }
    const DecoderLayer& layer = gpu.impl().layers[0];
    CHECK_FALSE(cpu.impl().layers[0].packed_qkv.weight.defined());
    REQUIRE(layer.packed_qkv.weight.defined());  // the Trainer packs a CUDA model it fine-tunes
    REQUIRE(layer.packed_gate_up.weight.defined());
    CHECK(layer.k.weight.data_ptr() ==
          static_cast<char*>(layer.packed_qkv.weight.data_ptr()) + layer.q.weight.numel() * sizeof(float));
    REQUIRE(losses[0].size() == 3);
    REQUIRE(losses[1].size() == 3);
    for (int s = 0; s < 3; ++s) CHECK(std::abs(losses[1][s] - losses[0][s]) < 1e-4 * std::abs(losses[0][s]));
    const auto want = cpu.named_parameters();
    const auto got = gpu.named_parameters();
    for (size_t i = 0; i < want.size(); ++i) {
      INFO(want[i].first);
      CHECK(rel_err(got[i].second.cpu(), want[i].second) < 1e-3);
    }
  }
}

TEST_CASE("grouped_linear's member gradients are row blocks of one GEMM on CUDA", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  at::manual_seed(48);
  const at::Tensor packed = (at::randn({384, 256}) * 0.05).to(at::kBFloat16).cuda();
  std::vector<at::Tensor> weights = {packed.narrow(0, 0, 256).requires_grad_(true),
                                     packed.narrow(0, 256, 64).requires_grad_(true),
                                     packed.narrow(0, 320, 64).requires_grad_(true)};
  const at::Tensor x = at::randn({4, 33, 256}).to(at::kBFloat16).cuda().requires_grad_(true);
  const at::Tensor upstream = at::randn({4, 33, 384});
  grouped_linear(x, packed, {}, weights, {}).backward(upstream.to(at::kBFloat16).cuda());
  // autograd kept each view as .grad (torch 2.x's AccumulateGrad steals it as 1.13's does)
  CHECK(weights[2].grad().data_ptr() == static_cast<char*>(weights[0].grad().data_ptr()) + 320 * 256 * 2);
  const at::Tensor xr = x.detach().cpu().to(at::kDouble);
  const at::Tensor gr = upstream.to(at::kDouble).reshape({-1, 384});
  const at::Tensor dw = gr.t().mm(xr.reshape({-1, 256}));  // [384, 256] in fp64
  CHECK(rel_err(weights[1].grad().cpu(), dw.narrow(0, 256, 64)) < 1e-2);
  CHECK(rel_err(x.grad().cpu(), gr.mm(packed.cpu().to(at::kDouble)).view({4, 33, 256})) < 1e-2);
}
