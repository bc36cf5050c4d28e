// The model on the GPU: bf16 against transformers' bf16 logits, and fp32 CUDA against fp32 CPU.
#include <ATen/core/grad_mode.h>
#include "io/safetensors.hpp"
#include "model_support.hpp"
#include "temper/model.hpp"

using namespace temper;
using namespace temper::testing;

TEST_CASE("bf16 on CUDA matches transformers' bf16 logits within bf16 tolerance", "[cuda][parity]") {
  SKIP_WITHOUT_CUDA();
  for (const std::string name : {"llama_gqa", "mistral_window", "qwen2_bias", "llama_bias_linear"}) {
    INFO(name);
    const auto dir = fixtures_dir() / "parity" / name;
    auto model = Model::load(dir, {at::kBFloat16, at::kCUDA});
    REQUIRE_OK(model);
    auto file = SafetensorsFile::open(dir / "expected.safetensors");
    REQUIRE_OK(file);
    REQUIRE(file->contains("logits_bf16"));
    ForwardInput input;
    input.input_ids = file->tensor("input_ids").value();
    at::NoGradGuard no_grad;
    auto out = model->forward(input);
    REQUIRE_OK(out);
    const at::Tensor reference = file->tensor("logits_bf16").value();
    const at::Tensor fp32 = file->tensor("logits").value();
    const double scale = fp32.abs().max().item<double>();
    const double ours = max_abs_diff(out->logits, fp32);
    const double theirs = max_abs_diff(reference, fp32);
    INFO("temper bf16 vs fp32: " << ours << ", transformers bf16 vs fp32: " << theirs << ", scale " << scale);
    // Both bf16 runs deviate from fp32 by rounding; temper's deviation stays of the same order.
    CHECK(ours <= std::max(2.0 * theirs, 0.02 * scale));
    CHECK(max_abs_diff(out->logits, reference) <= std::max(3.0 * theirs, 0.03 * scale));
  }
}

TEST_CASE("fp32 forward and backward on CUDA equal the CPU ones", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  const ModelConfig config = tiny_config(ModelFamily::kQwen2);
  const Model cpu = tiny_model(config, 41);
  TempDir dir;
  REQUIRE_OK(write_checkpoint(dir.path(), cpu.named_parameters()));
  ForwardInput input;
  input.input_ids = random_ids(2, 12, config.vocab_size, 42);
  input.labels = input.input_ids;
  Model gpu = Model::random(config, {at::kFloat, at::kCUDA}).value();
  {
    at::NoGradGuard no_grad;
    for (auto& [name, p] : gpu.named_parameters()) p.copy_(cpu.parameter(name).value());
  }
  for (auto& [name, p] : cpu.named_parameters()) p.requires_grad_(true);
  for (auto& [name, p] : gpu.named_parameters()) p.requires_grad_(true);
  auto a = cpu.forward(input);
  auto b = gpu.forward(input);
  REQUIRE_OK(a);
  REQUIRE_OK(b);
  CHECK(max_abs_diff(a->logits, b->logits) < 1e-3);
  a->loss.backward();
  b->loss.backward();
  for (const char* name : {"model.norm.weight", "model.layers.0.input_layernorm.weight", "model.layers.1.self_attn.q_proj.bias"}) {
    INFO(name);
    CHECK(max_abs_diff(cpu.parameter(name).value().grad(), gpu.parameter(name).value().grad()) < 1e-3);
  }
}
