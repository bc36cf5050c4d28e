// Training-step benchmark on the GPU: temper's Trainer on the "1B" / "7B" shapes of
// ../shared/baselines.md with random weights and random tokens, bf16. Prints one JSON line:
// median step time over steps 3..N, tokens/s, peak allocated GPU memory, MFU.
//
//   train_bench --shape 1b --mode lora|qlora|full --batch 4 --seq 2048 --steps 6 [--ckpt]
// qlora: the decoder blocks' linear weights in NF4 with double quantization (bitsandbytes'
// defaults, blocksize 64), LoRA as in lora mode.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <c10/cuda/CUDACachingAllocator.h>

#include "temper/lora_adapter.hpp"
#include "temper/model.hpp"
#include "temper/trainer.hpp"

namespace {

temper::ModelConfig shape(const std::string& name) {
  temper::ModelConfig c;
  c.model_type = "llama";
  c.family = temper::ModelFamily::kLlama;
  c.rms_norm_eps = 1e-5;
  c.max_position_embeddings = 4096;
  if (name == "7b") {
    c.vocab_size = 32000, c.hidden_size = 4096, c.intermediate_size = 11008, c.num_layers = 32;
    c.num_attention_heads = 32, c.num_key_value_heads = 32, c.head_dim = 128, c.tie_word_embeddings = false;
  } else {
    c.vocab_size = 128256, c.hidden_size = 2048, c.intermediate_size = 8192, c.num_layers = 16;
    c.num_attention_heads = 32, c.num_key_value_heads = 8, c.head_dim = 64, c.tie_word_embeddings = true;
    c.rope_theta = 500000.0;
  }
  return c;
}

class RandomTokens final : public temper::BatchSource {
 public:
  RandomTokens(int64_t batch, int64_t seq, int64_t vocab) : batch_(batch), seq_(seq), vocab_(vocab) {}
  temper::StatusOr<temper::Batch> next() override {
    at::Tensor ids = at::randint(0, vocab_, {batch_, seq_}, at::TensorOptions().dtype(at::kLong).device(at::kCUDA));
    return temper::Batch{ids, ids, {}};
  }
  int64_t epochs_completed() const override { return 0; }
  temper::Objective objective() const override { return temper::Objective::kContinuedPretraining; }
  std::string save_state() const override { return "{}"; }
  temper::Status restore_state(const std::string&) override { return absl::OkStatus(); }

 private:
  int64_t batch_, seq_, vocab_;
};

std::string arg(int argc, char** argv, const char* name, const char* fallback) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], name) == 0) return argv[i + 1];
  }
  return fallback;
}

bool flag(int argc, char** argv, const char* name) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], name) == 0) return true;
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string shape_name = arg(argc, argv, "--shape", "1b");
  const std::string mode = arg(argc, argv, "--mode", "lora");
  const int64_t batch = std::stoll(arg(argc, argv, "--batch", "4"));
  const int64_t seq = std::stoll(arg(argc, argv, "--seq", "2048"));
  const int64_t steps = std::stoll(arg(argc, argv, "--steps", "6"));
  const bool ckpt = flag(argc, argv, "--ckpt");

  const temper::ModelConfig config = shape(shape_name);
  temper::ModelOptions model_options;
  model_options.dtype = at::kBFloat16;
  model_options.device = at::kCUDA;
  model_options.quantize_nf4 = mode == "qlora";
  auto model = temper::Model::random(config, model_options, 0);
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", std::string(model.status().ToString()).c_str());
    return 1;
  }
  std::optional<temper::LoraAdapter> adapter;
  if (mode == "lora" || mode == "qlora") {
    temper::LoraOptions lora;
    lora.rank = 16;
    lora.alpha = 32.0;  // baselines.md: r=16, alpha=32, dropout 0, all seven projections (temper's default targets)
    auto created = temper::LoraAdapter::create(*model, lora);
    if (!created.ok()) {
      std::fprintf(stderr, "%s\n", std::string(created.status().ToString()).c_str());
      return 1;
    }
    adapter.emplace(std::move(*created));
  }
  RandomTokens data(batch, seq, config.vocab_size);
  temper::TrainerOptions options;
  options.max_steps = steps;
  options.optimizer.lr = 1e-4;
  options.gradient_checkpointing = ckpt;
  std::vector<double> times;
  auto last = std::chrono::steady_clock::now();
  options.on_step = [&](const temper::StepMetrics&) {
    cudaDeviceSynchronize();
    const auto now = std::chrono::steady_clock::now();
    times.push_back(std::chrono::duration<double>(now - last).count());
    last = now;
  };
  auto trainer = temper::Trainer::create(*model, data, options, adapter ? &*adapter : nullptr);
  if (!trainer.ok()) {
    std::fprintf(stderr, "%s\n", std::string(trainer.status().ToString()).c_str());
    return 1;
  }
  c10::cuda::CUDACachingAllocator::resetPeakStats(0);
  cudaDeviceSynchronize();
  last = std::chrono::steady_clock::now();
  auto result = trainer->train();
  if (!result.ok()) {
    std::fprintf(stderr, "%s\n", std::string(result.status().ToString()).c_str());
    return 1;
  }
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(0);
  const double peak_gib = static_cast<double>(stats.allocated_bytes[0].peak) / (1024.0 * 1024.0 * 1024.0);
  std::vector<double> timed(times.begin() + std::min<size_t>(2, times.size()), times.end());
  std::sort(timed.begin(), timed.end());
  const double median = timed.empty() ? 0.0 : timed[timed.size() / 2];
  const double tokens_per_s = median > 0 ? static_cast<double>(batch * seq) / median : 0.0;
  const double n = static_cast<double>(model->num_parameters());
  const double attention = 12.0 * config.num_layers * seq * config.hidden_size;
  const double flops_per_token = (mode == "full" ? 6.0 : 4.0) * n + attention;
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf("{\"bench\":\"train_step\",\"impl\":\"temper\",\"device\":\"%s\",\"shape\":\"%s\",\"mode\":\"%s\","
              "\"batch\":%lld,\"seq\":%lld,\"ckpt\":%s,\"median_step_s\":%.4f,\"tokens_per_s\":%.0f,"
              "\"peak_gib\":%.2f,\"mfu_vs_790tflops\":%.3f}\n",
              prop.name, shape_name.c_str(), mode.c_str(), static_cast<long long>(batch), static_cast<long long>(seq),
              ckpt ? "true" : "false", median, tokens_per_s, peak_gib, tokens_per_s * flops_per_token / 790e12);
  return 0;
}
