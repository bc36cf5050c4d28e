// AdamW on the GPU: checks that Optimizer's fused path (compat::fused_adamw, torch's multi-tensor
// kernel) follows the per-tensor path, then times one optimizer step over the fp32 masters of
// the "1B" shape of ../shared/baselines.md (what full fine-tuning updates every step).
//
// Check (exit 1 when it fails): the same tensors (odd sizes, with and without weight decay) and
// gradients through an Optimizer on CPU (the per-tensor ATen path the CPU tests pin to
// torch.optim.AdamW) and one on CUDA, 5 steps at varying learning rates: masters and moments
// must agree to fp32 rounding; and a CUDA run resumed from its state() after 3 steps must end
// bit-identical to an uninterrupted one (the fused kernel's step count follows load_state).
// Timing: median of 10 Optimizer::step calls after 3 warm-ups, CUDA events, beside the same
// rule as separate ATen ops per tensor on the same device (the path libtorch 1.13 takes).
//
//   optimizer_bench
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>

#include "io/directory.hpp"
#include "io/safetensors.hpp"
#include "ops/compat.hpp"
#include "train/optimizer.hpp"

namespace {

using temper::Optimizer;
using temper::OptimizedTensor;

temper::OptimizerOptions adamw_options() {
  temper::OptimizerOptions o;
  o.lr = 1e-2;
  o.beta1 = 0.9;
  o.beta2 = 0.99;
  o.eps = 1e-8;
  o.weight_decay = 0.1;
  return o;
}

// name, shape, decay: odd sizes so the kernel's vectorised and tail paths both run.
struct Spec {
  std::string name;
  std::vector<int64_t> shape;
  bool decay;
};

std::vector<OptimizedTensor> make_tensors(const std::vector<Spec>& specs, const std::vector<at::Tensor>& init,
                                          at::Device device) {
  std::vector<OptimizedTensor> out;
  for (size_t i = 0; i < specs.size(); ++i) out.push_back({specs[i].name, init[i].to(device).clone(), specs[i].decay});
  return out;
}

// max|a - b| over max|b|: normwise, because elementwise ratios blow up where a moment or weight
// happens to be near zero (fp32 rounding of another operation order, FMA on the GPU, leaves
// absolute differences of ~1e-7 of the tensor's scale there), while a wrong formula (weight
// decay, bias correction, step count) moves the whole tensor by far more than 1e-5 of its scale.
double max_rel_diff(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor x = a.cpu().to(at::kDouble), y = b.cpu().to(at::kDouble);
  return (x - y).abs().max().item<double>() / (y.abs().max().item<double>() + 1e-30);
}

bool check(const char* what, double value, double limit) {
  const bool ok = value <= limit;
  std::printf("{\"bench\":\"optimizer\",\"check\":\"%s\",\"value\":%.3g,\"limit\":%.3g,\"ok\":%s}\n", what, value,
              limit, ok ? "true" : "false");
  return ok;
}

bool parity() {
  const std::vector<Spec> specs = {{"w1", {33, 17}, true},  {"b1", {17}, false}, {"w2", {7, 5, 3}, true},
                                   {"s", {1}, false},       {"big", {1000003}, true}};
  at::manual_seed(0);
  std::vector<at::Tensor> init;
  for (const Spec& s : specs) init.push_back(at::randn(s.shape, at::kFloat));
  std::vector<std::vector<at::Tensor>> grads;  // [step][tensor], CPU
  for (int t = 0; t < 5; ++t) {
    std::vector<at::Tensor> g;
    for (const Spec& s : specs) g.push_back(at::randn(s.shape, at::kFloat) * (t + 1));
    grads.push_back(std::move(g));
  }
  const double lrs[5] = {1e-2, 5e-3, 2e-2, 1e-3, 1e-2};
  auto on = [](const std::vector<at::Tensor>& g, at::Device d) {
    std::vector<at::Tensor> out;
    for (const at::Tensor& t : g) out.push_back(t.to(d));
    return out;
  };
  const at::Device cuda(at::kCUDA);
  Optimizer reference(adamw_options(), make_tensors(specs, init, at::kCPU));
  Optimizer fused(adamw_options(), make_tensors(specs, init, cuda));
  for (int t = 0; t < 5; ++t) {
    reference.step(grads[t], lrs[t]);
    fused.step(on(grads[t], cuda), lrs[t]);
  }
  const bool fused_used = temper::compat::fused_adamw_available(fused.tensors()[0].master);
  std::printf("{\"bench\":\"optimizer\",\"fused_adamw\":%s}\n", fused_used ? "true" : "false");
  double masters = 0, moments = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    masters = std::max(masters, max_rel_diff(fused.tensors()[i].master, reference.tensors()[i].master));
  }
  const temper::NamedTensors a = fused.state(), b = reference.state();
  bool ok = a.size() == b.size();
  for (size_t i = 0; ok && i < a.size(); ++i) {
    ok = a[i].first == b[i].first;
    moments = std::max(moments, max_rel_diff(a[i].second, b[i].second));
  }
  if (!ok) std::printf("{\"bench\":\"optimizer\",\"check\":\"state names\",\"ok\":false}\n");
  // fp32 rounding of a different but equivalent order of operations, over 5 steps.
  ok = check("masters: CUDA vs CPU path, max relative difference", masters, 1e-5) && ok;
  ok = check("moments: CUDA vs CPU path, max relative difference", moments, 1e-5) && ok;

  // Resume: 3 steps, state() to a file, a fresh Optimizer from those masters + load_state, 2 more.
  Optimizer first(adamw_options(), make_tensors(specs, init, cuda));
  for (int t = 0; t < 3; ++t) first.step(on(grads[t], cuda), lrs[t]);
  const std::filesystem::path file =
      std::filesystem::temp_directory_path() / ("temper-optimizer-bench-" + std::to_string(std::random_device{}()));
  std::vector<at::Tensor> saved;
  for (const auto& t : first.tensors()) saved.push_back(t.master.cpu());
  if (!temper::write_safetensors(file, first.state()).ok()) return false;
  auto state = temper::SafetensorsFile::open(file);
  Optimizer resumed(adamw_options(), make_tensors(specs, saved, cuda));
  const bool loaded = state.ok() && resumed.load_state(*state, 3).ok();
  (void)temper::remove_tree(file);
  if (!loaded) {
    std::printf("{\"bench\":\"optimizer\",\"check\":\"load_state\",\"ok\":false}\n");
    return false;
  }
  for (int t = 3; t < 5; ++t) resumed.step(on(grads[t], cuda), lrs[t]);
  double resume_diff = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    const at::Tensor diff = (resumed.tensors()[i].master - fused.tensors()[i].master).abs();
    resume_diff = std::max(resume_diff, diff.max().item<double>());
  }
  ok = check("resumed after 3 steps vs uninterrupted, max absolute difference", resume_diff, 0.0) && ok;
  return ok;
}

double median_ms(const std::function<void()>& fn) {
  for (int i = 0; i < 3; ++i) fn();
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  std::vector<float> ms;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  for (int i = 0; i < 10; ++i) {
    cudaEventRecord(start, stream);
    fn();
    cudaEventRecord(stop, stream);
    cudaEventSynchronize(stop);
    float t = 0;
    cudaEventElapsedTime(&t, start, stop);
    ms.push_back(t);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// The "1B" shape's trainable tensors (Llama-3.2-1B: tied embedding, 16 layers).
std::vector<Spec> one_b() {
  const int64_t h = 2048, kv = 512, ffn = 8192;
  std::vector<Spec> s = {{"embed", {128256, h}, true}};
  for (int l = 0; l < 16; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    const std::vector<std::tuple<std::string, int64_t, int64_t>> linears = {
        {"q", h, h}, {"k", kv, h}, {"v", kv, h}, {"o", h, h}, {"gate", ffn, h}, {"up", ffn, h}, {"down", h, ffn}};
    for (const auto& [name, rows, cols] : linears) {
      s.push_back({p + name, {rows, cols}, true});
    }
    s.push_back({p + "input_norm", {h}, false});
    s.push_back({p + "post_norm", {h}, false});
  }
  s.push_back({"norm", {h}, false});
  return s;
}

void timing() {
  const std::vector<Spec> specs = one_b();
  const at::TensorOptions f32 = at::TensorOptions().dtype(at::kFloat).device(at::kCUDA);
  std::vector<at::Tensor> init, grads;
  int64_t params = 0;
  for (const Spec& s : specs) {
    init.push_back(at::randn(s.shape, f32) * 0.02);
    grads.push_back(at::randn(s.shape, f32) * 1e-3);
    params += init.back().numel();
  }
  const temper::OptimizerOptions o = adamw_options();
  Optimizer opt(o, make_tensors(specs, init, at::kCUDA));
  const double temper_ms = median_ms([&] { opt.step(grads, 1e-4); });
  const bool fused = temper::compat::fused_adamw_available(opt.tensors()[0].master);
  std::printf("{\"bench\":\"optimizer\",\"impl\":\"%s\",\"shape\":\"1b\",\"tensors\":%zu,\"params\":%lld,"
              "\"median_ms\":%.3f}\n",
              fused ? "temper_fused_adamw" : "temper_per_tensor", specs.size(), static_cast<long long>(params),
              temper_ms);
  std::fflush(stdout);
  // The per-tensor rule of lib/train/optimizer.cc as separate ATen ops, on the same device.
  std::vector<at::Tensor> p, m, v;
  for (const at::Tensor& t : init) {
    p.push_back(t.clone());
    m.push_back(at::zeros_like(t));
    v.push_back(at::zeros_like(t));
  }
  int64_t step = 0;
  const double per_tensor_ms = median_ms([&] {
    ++step;
    const double lr = 1e-4;
    const double bc1 = 1.0 - std::pow(o.beta1, static_cast<double>(step));
    const double bc2 = 1.0 - std::pow(o.beta2, static_cast<double>(step));
    for (size_t i = 0; i < p.size(); ++i) {
      if (specs[i].decay) p[i].mul_(1.0 - lr * o.weight_decay);
      m[i].lerp_(grads[i], 1.0 - o.beta1);
      v[i].mul_(o.beta2).addcmul_(grads[i], grads[i], 1.0 - o.beta2);
      p[i].addcdiv_(m[i], (v[i].sqrt() / std::sqrt(bc2)).add_(o.eps), -lr / bc1);
    }
  });
  std::printf("{\"bench\":\"optimizer\",\"impl\":\"per_tensor_aten\",\"shape\":\"1b\",\"tensors\":%zu,\"params\":%lld,"
              "\"median_ms\":%.3f}\n",
              specs.size(), static_cast<long long>(params), per_tensor_ms);
}

}  // namespace

int main() {
  const bool ok = parity();
  std::fflush(stdout);
  timing();
  return ok ? 0 : 1;
}
