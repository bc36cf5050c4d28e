// NF4 kernel benchmark on the GPU: dequantize (bf16 out) of the weight shapes QLoRA meets most
// (4096x11008: a 7B MLP projection; 8192x8192; and 16384x16384, long enough that a launch's
// ramp-up and drain vanish), with and without double quantization, against a
// device-to-device copy of the same output size (the practical HBM ceiling on this GPU), and
// quantize speed. One JSON line per measurement; median of 50 timed runs after 5 warm-ups,
// timed with CUDA events.
//
// Each dequantize call moves only 40-70 us of data, so the way it is timed matters:
//   "timing":"single"   one call between an event pair: launch latency, the output allocation
//                       and the wrapper's checks are inside the measurement (what one QLoRA
//                       linear pays when the GPU is otherwise idle);
//   "timing":"batched"  kBatch calls back to back between one event pair, time / kBatch: the
//                       host work of call i+1 overlaps the kernel of call i, as in a training
//                       step where the GPU runs behind the host.
// The copy baseline is measured both ways, and each dequantize row's fraction_of_copy is against
// the copy row of the same timing. "op":"dequantize_kernel_bf16" times the raw launcher
// (lib/kernels/nf4.cuh) into a preallocated output: the kernel's own bandwidth, no allocation.
// fraction_of_nominal is against the device's nominal bandwidth, 2 x memory clock x bus width
// (from cudaDeviceGetAttribute: CUDA 13 dropped memoryClockRate from cudaDeviceProp), or null
// where the device does not report them.
//
//   nf4_bench [--sweep]    --sweep: every launch shape of the dequantize kernel's vector path
//                          (register or bulk stores, grids; lib/kernels/nf4.cuh), batched.
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>

#include "kernels/nf4.cuh"
#include "temper/nf4_quantizer.hpp"

namespace {

constexpr int kBatch = 20;

// Median milliseconds per call of `fn`, with `calls` calls between one event pair.
double median_ms(const std::function<void()>& fn, int calls) {
  for (int i = 0; i < 5; ++i) fn();
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  std::vector<float> ms;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  for (int i = 0; i < 50; ++i) {
    cudaEventRecord(start, stream);
    for (int c = 0; c < calls; ++c) fn();
    cudaEventRecord(stop, stream);
    cudaEventSynchronize(stop);
    float t = 0;
    cudaEventElapsedTime(&t, start, stop);
    ms.push_back(t / static_cast<float>(calls));
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// Nominal DRAM bandwidth in GB/s: double data rate x memory clock x bus width.
std::optional<double> nominal_gbps(int device, int* clock_khz, int* bus_bits) {
  *clock_khz = 0;
  *bus_bits = 0;
  if (cudaDeviceGetAttribute(clock_khz, cudaDevAttrMemoryClockRate, device) != cudaSuccess ||
      cudaDeviceGetAttribute(bus_bits, cudaDevAttrGlobalMemoryBusWidth, device) != cudaSuccess) {
    cudaGetLastError();  // clear the error so later calls do not report it
    return std::nullopt;
  }
  if (*clock_khz <= 0 || *bus_bits <= 0) return std::nullopt;
  return 2.0 * (*clock_khz * 1e3) * (*bus_bits / 8.0) / 1e9;
}

std::string json_number_or_null(std::optional<double> v, const char* format) {
  if (!v) return "null";
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, *v);
  return buf;
}

struct Row {
  const char* op;
  int calls;  // per event pair: 1 ("single") or kBatch ("batched")
  int64_t rows, cols;
  bool double_quant;
  double ms;     // per call
  double bytes;  // moved per call
};

void report(const char* device, const Row& r, double copy_gbps, std::optional<double> nominal) {
  const double gbps = r.bytes / (r.ms * 1e-3) / 1e9;
  const std::optional<double> of_nominal = nominal ? std::optional<double>(gbps / *nominal) : std::nullopt;
  std::printf("{\"bench\":\"nf4\",\"device\":\"%s\",\"op\":\"%s\",\"timing\":\"%s\",\"calls_per_event\":%d,"
              "\"shape\":[%lld,%lld],\"double_quant\":%s,\"median_ms\":%.4f,\"bytes\":%.0f,\"gb_per_s\":%.1f,"
              "\"fraction_of_copy\":%.3f,\"fraction_of_nominal\":%s}\n",
              device, r.op, r.calls == 1 ? "single" : "batched", r.calls,
              static_cast<long long>(r.rows), static_cast<long long>(r.cols), r.double_quant ? "true" : "false", r.ms,
              r.bytes, gbps, copy_gbps > 0 ? gbps / copy_gbps : 0.0, json_number_or_null(of_nominal, "%.3f").c_str());
  std::fflush(stdout);
}

// The raw launcher into `out` (bf16 [n], preallocated): what the kernel alone costs.
cudaError_t launch_raw(const temper::QuantState& s, at::Tensor& out, temper::Nf4DequantTuning tuning = {}) {
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  auto* dst = reinterpret_cast<__nv_bfloat16*>(out.data_ptr());
  if (s.double_quant()) {
    return temper::launch_nf4_dequantize_nested(dst, s.packed.data_ptr<uint8_t>(), s.absmax.data_ptr<uint8_t>(),
                                                s.nested_quant_map.data_ptr<float>(), s.nested_absmax.data_ptr<float>(),
                                                static_cast<float>(s.nested_offset), s.quant_map.data_ptr<float>(),
                                                s.numel(), s.blocksize, s.nested_blocksize, stream, tuning);
  }
  return temper::launch_nf4_dequantize(dst, s.packed.data_ptr<uint8_t>(), s.absmax.data_ptr<float>(),
                                       s.quant_map.data_ptr<float>(), s.numel(), s.blocksize, stream, tuning);
}

}  // namespace

// Every launch shape of the vector path, batched, against the same-timing copy.
int sweep(const char* device, const temper::QuantState& state, at::Tensor& out, int64_t rows, int64_t cols,
          double bytes, double copy_gbps, std::optional<double> nominal) {
  std::vector<temper::Nf4DequantTuning> shapes;
  for (int chunks : {1, 2, 4, 8, 16}) {
    for (int threads : {128, 256, 512, 1024}) {
      for (bool streaming : {false, true}) {
        // 16 chunks in registers were measured slower (docs/performance.md); bulk stores stage
        // the block's bf16 tile (16 bytes per chunk; two tiles on a persistent grid) in at most
        // 48 KiB of shared memory, and a persistent grid keeps at most 2048 threads per SM.
        const int tile = threads * chunks * 16;
        if (chunks < 16) shapes.push_back({chunks, threads, streaming, false, 0});
        if (tile <= 48 * 1024) shapes.push_back({chunks, threads, streaming, true, 0});
        for (int blocks_per_sm : {2, 4, 8, 16}) {
          if (2 * tile <= 48 * 1024 && threads * blocks_per_sm <= 2048) {
            shapes.push_back({chunks, threads, streaming, true, blocks_per_sm});
          }
        }
      }
    }
  }
  for (const temper::Nf4DequantTuning& tuning : shapes) {
    if (const cudaError_t err = launch_raw(state, out, tuning); err != cudaSuccess) {
      std::fprintf(stderr, "nf4 dequantize sweep %d/%d/%d/%d/%d: %s\n", tuning.chunks_per_thread, tuning.threads,
                   tuning.streaming_stores, tuning.bulk_stores, tuning.blocks_per_sm, cudaGetErrorString(err));
      return 1;
    }
    const double ms = median_ms([&] { (void)launch_raw(state, out, tuning); }, kBatch);
    const double gbps = bytes / (ms * 1e-3) / 1e9;
    const std::optional<double> of_nominal = nominal ? std::optional<double>(gbps / *nominal) : std::nullopt;
    std::printf("{\"bench\":\"nf4\",\"device\":\"%s\",\"op\":\"dequantize_kernel_sweep\",\"timing\":\"batched\","
                "\"shape\":[%lld,%lld],\"double_quant\":%s,\"chunks_per_thread\":%d,\"threads\":%d,"
                "\"streaming_stores\":%s,\"bulk_stores\":%s,\"blocks_per_sm\":%d,\"median_ms\":%.4f,"
                "\"gb_per_s\":%.1f,\"fraction_of_copy\":%.3f,\"fraction_of_nominal\":%s}\n",
                device, static_cast<long long>(rows), static_cast<long long>(cols),
                state.double_quant() ? "true" : "false", tuning.chunks_per_thread, tuning.threads,
                tuning.streaming_stores ? "true" : "false", tuning.bulk_stores ? "true" : "false",
                tuning.blocks_per_sm, ms, gbps,
                gbps / copy_gbps, json_number_or_null(of_nominal, "%.3f").c_str());
    std::fflush(stdout);
  }
  // The sweep ends on another shape: the default again, so later rows time what the library runs.
  return launch_raw(state, out) == cudaSuccess ? 0 : 1;
}

int main(int argc, char** argv) {
  const bool do_sweep = argc > 1 && std::string(argv[1]) == "--sweep";
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  int clock_khz = 0, bus_bits = 0;
  const std::optional<double> nominal = nominal_gbps(0, &clock_khz, &bus_bits);
  std::printf("{\"bench\":\"nf4_device\",\"device\":\"%s\",\"memory_clock_khz\":%d,\"bus_width_bits\":%d,"
              "\"nominal_gb_per_s\":%s}\n",
              prop.name, clock_khz, bus_bits, json_number_or_null(nominal, "%.1f").c_str());
  const int calls[2] = {1, kBatch};
  // The shapes (7B MLP, both ways, and 8192 x 8192; 30-45 us per call on an H200, so a
  // launch's ramp-up and drain are a few percent of it), then a 512 MiB output where they are
  // under 1%: the kernels' steady-state bandwidth.
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{4096, 11008}, {11008, 4096}, {8192, 8192}, {16384, 16384}};
  for (const auto& [rows, cols] : shapes) {
    const double n = static_cast<double>(rows * cols);
    const at::Tensor w = at::randn({rows, cols}, at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA));
    // Copy of a bf16 tensor of the dequantized size: 2n bytes read + 2n written.
    at::Tensor dst = at::empty_like(w);
    double copy_gbps[2];
    for (int t = 0; t < 2; ++t) {
      const double ms = median_ms([&] { dst.copy_(w); }, calls[t]);
      copy_gbps[t] = 4 * n / (ms * 1e-3) / 1e9;
      report(prop.name, {"copy_bf16", calls[t], rows, cols, false, ms, 4 * n}, copy_gbps[t], nominal);
    }
    {  // writing alone: 2n bytes, nothing read (the driver's memset, not ATen's fill kernel)
      const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
      const double ms = median_ms([&] { cudaMemsetAsync(dst.data_ptr(), 0, 2 * rows * cols, stream); }, kBatch);
      report(prop.name, {"memset", kBatch, rows, cols, false, ms, 2 * n}, copy_gbps[1], nominal);
    }
    for (bool dq : {false, true}) {
      temper::Nf4Options options;
      options.double_quant = dq;
      auto state = temper::Nf4Quantizer::quantize(w, options);
      if (!state.ok()) {
        std::fprintf(stderr, "%s\n", std::string(state.status().ToString()).c_str());
        return 1;
      }
      // Bytes the kernel must move: the quantized state read once, the bf16 weight written once.
      const double bytes = static_cast<double>(state->nbytes()) + 2 * n;
      for (int t = 0; t < 2; ++t) {
        const double ms = median_ms([&] { (void)temper::Nf4Quantizer::dequantize(*state, at::kBFloat16); }, calls[t]);
        report(prop.name, {"dequantize_bf16", calls[t], rows, cols, dq, ms, bytes}, copy_gbps[t], nominal);
      }
      at::Tensor out = at::empty({state->numel()}, w.options());
      if (const cudaError_t err = launch_raw(*state, out); err != cudaSuccess) {
        std::fprintf(stderr, "nf4 dequantize launcher: %s\n", cudaGetErrorString(err));
        return 1;
      }
      // The raw launcher must produce what the library call does (same kernel, other entry).
      const auto expected = temper::Nf4Quantizer::dequantize(*state, at::kBFloat16);
      if (!expected.ok() || !at::equal(out, expected->flatten())) {
        std::fprintf(stderr, "nf4 dequantize launcher output differs from Nf4Quantizer::dequantize\n");
        return 1;
      }
      for (int t = 0; t < 2; ++t) {
        const double ms = median_ms([&] { (void)launch_raw(*state, out); }, calls[t]);
        report(prop.name, {"dequantize_kernel_bf16", calls[t], rows, cols, dq, ms, bytes}, copy_gbps[t], nominal);
      }
      // The sweep covers the shapes; on the steady-state one it would take a minute more.
      const bool sweep_here = do_sweep && rows * cols <= int64_t{8192} * 8192;
      if (sweep_here && sweep(prop.name, *state, out, rows, cols, bytes, copy_gbps[1], nominal) != 0) return 1;
      const double q_ms = median_ms([&] { (void)temper::Nf4Quantizer::quantize(w, options); }, 1);
      report(prop.name, {"quantize_from_bf16", 1, rows, cols, dq, q_ms, 2 * n + static_cast<double>(state->nbytes())},
             copy_gbps[0], nominal);
    }
  }
  return 0;
}
