// NF4 kernel benchmark on the GPU: dequantize (bf16 out) of the weight shapes QLoRA meets most
// (4096x11008: a 7B MLP projection; 8192x8192), with and without double quantization, against a
// device-to-device copy of the same output size (the practical HBM ceiling on this GPU), and
// quantize speed. One JSON line per measurement; median of 50 timed runs after 5 warm-ups,
// timed with CUDA events.
//
//   nf4_bench
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>

#include "temper/nf4_quantizer.hpp"

namespace {

double median_ms(const std::function<void()>& fn) {
  for (int i = 0; i < 5; ++i) fn();
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  std::vector<float> ms;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  for (int i = 0; i < 50; ++i) {
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

void report(const char* device, const char* op, int64_t rows, int64_t cols, bool double_quant, double ms, double bytes,
            double copy_gbps) {
  const double gbps = bytes / (ms * 1e-3) / 1e9;
  std::printf("{\"bench\":\"nf4\",\"device\":\"%s\",\"op\":\"%s\",\"shape\":[%lld,%lld],\"double_quant\":%s,"
              "\"median_ms\":%.4f,\"bytes\":%.0f,\"gb_per_s\":%.1f,\"fraction_of_copy\":%.3f}\n",
              device, op, static_cast<long long>(rows), static_cast<long long>(cols), double_quant ? "true" : "false",
              ms, bytes, gbps, copy_gbps > 0 ? gbps / copy_gbps : 0.0);
}

}  // namespace

int main() {
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{4096, 11008}, {11008, 4096}, {8192, 8192}};
  for (const auto& [rows, cols] : shapes) {
    const double n = static_cast<double>(rows * cols);
    const at::Tensor w = at::randn({rows, cols}, at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA));
    // Copy of a bf16 tensor of the dequantized size: 2n bytes read + 2n written.
    at::Tensor dst = at::empty_like(w);
    const double copy_ms = median_ms([&] { dst.copy_(w); });
    const double copy_gbps = 4 * n / (copy_ms * 1e-3) / 1e9;
    report(prop.name, "copy_bf16", rows, cols, false, copy_ms, 4 * n, copy_gbps);
    for (bool dq : {false, true}) {
      temper::Nf4Options options;
      options.double_quant = dq;
      auto state = temper::Nf4Quantizer::quantize(w, options);
      if (!state.ok()) {
        std::fprintf(stderr, "%s\n", std::string(state.status().ToString()).c_str());
        return 1;
      }
      const double state_bytes = static_cast<double>(state->nbytes());
      const double deq_ms = median_ms([&] { (void)temper::Nf4Quantizer::dequantize(*state, at::kBFloat16); });
      // Bytes the kernel must move: the quantized state read once, the bf16 weight written once.
      report(prop.name, "dequantize_bf16", rows, cols, dq, deq_ms, state_bytes + 2 * n, copy_gbps);
      const double q_ms = median_ms([&] { (void)temper::Nf4Quantizer::quantize(w, options); });
      report(prop.name, "quantize_from_bf16", rows, cols, dq, q_ms, 2 * n + state_bytes, copy_gbps);
    }
  }
  return 0;
}
