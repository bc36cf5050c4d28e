// Fused RMSNorm (lib/kernels/rms_norm.cu) against the unfused reference (the same maths as ATen
// ops, as transformers' LlamaRMSNorm runs it), forward + backward under autograd, bf16.
// Prints one JSON line per shape and variant: median milliseconds over timed iterations and the
// effective bandwidth of the minimal traffic (fwd: read x, write y; bwd: read dy and x, write dx).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#include <ATen/ATen.h>

#include "ops/rms_norm.hpp"

namespace {

template <typename Fn>
double median_ms(Fn&& fn, int warmup = 10, int iters = 50) {
  for (int i = 0; i < warmup; ++i) fn();
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  std::vector<float> times;
  for (int i = 0; i < iters; ++i) {
    cudaEventRecord(start);
    fn();
    cudaEventRecord(stop);
    cudaEventSynchronize(stop);
    float ms = 0;
    cudaEventElapsedTime(&ms, start, stop);
    times.push_back(ms);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

}  // namespace

int main() {
  const int64_t shapes[][2] = {{8192, 2048}, {8192, 4096}, {16384, 4096}};
  for (const auto& s : shapes) {
    const int64_t rows = s[0], hidden = s[1];
    const auto opts = at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16);
    const at::Tensor x = at::randn({rows, hidden}, opts).requires_grad_(true);
    const at::Tensor w = at::ones({hidden}, opts).requires_grad_(true);
    const at::Tensor dy = at::randn({rows, hidden}, opts);
    const double bytes = static_cast<double>(rows) * hidden * 2 * 5;  // fwd 2 passes + bwd 3 passes
    for (const bool fused : {false, true}) {
      const double ms = median_ms([&] {
        const at::Tensor y = fused ? temper::rms_norm(x, w, 1e-5) : temper::rms_norm_reference(x, w, 1e-5);
        y.backward(dy);
      });
      std::printf("{\"bench\":\"rms_norm_fwd_bwd\",\"variant\":\"%s\",\"rows\":%lld,\"hidden\":%lld,\"dtype\":\"bf16\","
                  "\"median_ms\":%.4f,\"effective_GBps\":%.1f}\n",
                  fused ? "temper_fused" : "aten_reference", static_cast<long long>(rows),
                  static_cast<long long>(hidden), ms, bytes / (ms * 1e-3) / 1e9);
    }
  }
  return 0;
}
