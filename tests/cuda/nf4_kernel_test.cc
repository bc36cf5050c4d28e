// The NF4 CUDA kernels (lib/kernels/nf4.cu) against the ATen reference, on random and
// adversarial data: zeros, constant blocks, values on the thresholds, huge and tiny magnitudes,
// odd sizes; and the QLoRA linear on CUDA.
#ifdef TEMPER_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <cuda_bf16.h>

#include "kernels/nf4.cuh"
#endif
#include "ops/nf4_linear.hpp"
#include "quant/nf4_codebook.hpp"
#include "quant/nf4_ops.hpp"
#include "test_support.hpp"

using namespace temper;
using namespace temper::testing;

TEST_CASE("NF4 kernels produce the reference's codes, absmax and values", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  at::manual_seed(7);
  std::vector<at::Tensor> cases = {at::randn({4096, 33}), at::zeros({2, 64}), at::full({3, 64}, 0.25),
                                   at::randn({1, 127}) * 1e30, at::randn({5, 64}) * 1e-30};
  const auto t = nf4_thresholds();
  cases.push_back(at::cat({at::ones({1}), at::tensor(std::vector<float>(t.begin(), t.end()))}).repeat({5}));
  for (const at::Tensor& c : cases) {
    for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
      for (int64_t blocksize : {32, 64, 4096}) {
        const at::Tensor w = c.to(dtype);
        if (!at::isfinite(w).all().item<bool>()) continue;  // fp16 cannot hold 1e30
        INFO(c10::toString(dtype) << " n " << w.numel() << " blocksize " << blocksize);
        auto [packed_ref, absmax_ref] = nf4_quantize_blocks_reference(w, blocksize);
        auto [packed, absmax] = nf4_quantize_blocks(w.cuda(), blocksize);
        CHECK(at::equal(packed.cpu(), packed_ref));
        CHECK(at::equal(absmax.cpu(), absmax_ref));
        const at::Tensor levels = at::tensor(std::vector<float>(kNf4Levels.begin(), kNf4Levels.end()));
        for (at::ScalarType out : {at::kFloat, at::kBFloat16}) {
          const at::Tensor ref = nf4_dequantize_blocks_reference(packed_ref, absmax_ref, levels, blocksize, w.numel(), out);
          const at::Tensor got = nf4_dequantize_blocks(packed, absmax, levels.cuda(), blocksize, w.numel(), out);
          CHECK(at::equal(got.cpu(), ref));
        }
      }
    }
  }
}

TEST_CASE("the NF4 linear on CUDA matches the CPU reference forward and backward", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  at::manual_seed(8);
  const at::Tensor w = at::randn({96, 160});
  auto cpu_state = Nf4Quantizer::quantize(w);
  auto gpu_state = Nf4Quantizer::quantize(w.cuda());
  REQUIRE_OK(cpu_state);
  REQUIRE_OK(gpu_state);
  const at::Tensor x = at::randn({4, 160});
  const at::Tensor xc = x.clone().requires_grad_(true);
  const at::Tensor xg = x.cuda().requires_grad_(true);
  const at::Tensor yc = nf4_linear(xc, std::make_shared<const QuantState>(*cpu_state), at::Tensor());
  const at::Tensor yg = nf4_linear(xg, std::make_shared<const QuantState>(*gpu_state), at::Tensor());
  CHECK(max_abs_diff(yc, yg) < 1e-3);
  yc.sum().backward();
  yg.sum().backward();
  CHECK(max_abs_diff(xc.grad(), xg.grad()) < 1e-3);
}

TEST_CASE("the fused double-quantized dequantize kernel matches the CPU reference bit for bit", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  at::manual_seed(9);
  // Sizes hit both kernel paths: n % 16 == 0 (16 values per thread) and odd n (one byte per thread),
  // with more blocks than one nested block of 256 so the nested scale index varies.
  for (const std::vector<int64_t>& shape : std::vector<std::vector<int64_t>>{{512, 96}, {301, 67}, {1, 48}, {4096, 40}}) {
    for (int64_t blocksize : {32, 64, 256}) {
      const at::Tensor w = at::randn(shape) * at::rand({shape[0], 1}) * 3;
      Nf4Options options;
      options.blocksize = blocksize;
      auto cpu = Nf4Quantizer::quantize(w, options);
      REQUIRE_OK(cpu);
      REQUIRE(cpu->double_quant());
      QuantState gpu = *cpu;
      for (at::Tensor* t : {&gpu.packed, &gpu.absmax, &gpu.quant_map, &gpu.nested_absmax, &gpu.nested_quant_map}) {
        *t = t->cuda();
      }
      for (at::ScalarType out : {at::kFloat, at::kBFloat16, at::kHalf}) {
        INFO("shape " << shape[0] << "x" << shape[1] << " blocksize " << blocksize << " " << c10::toString(out));
        auto ref = Nf4Quantizer::dequantize(*cpu, out);
        auto got = Nf4Quantizer::dequantize(gpu, out);
        REQUIRE_OK(ref);
        REQUIRE_OK(got);
        CHECK(at::equal(got->cpu(), *ref));
      }
    }
  }
}

#ifdef TEMPER_WITH_CUDA
// Every launch shape nf4_bench's sweep may pick (lib/kernels/nf4.cuh) must give the same bits,
// including sizes whose last thread block is partly empty; an invalid shape is refused.
TEST_CASE("every dequantize launch shape matches the CPU reference bit for bit", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  at::manual_seed(10);
  const at::Tensor levels = at::tensor(std::vector<float>(kNf4Levels.begin(), kNf4Levels.end()));
  for (int64_t n : {int64_t{8}, int64_t{64 * 1000}, int64_t{64 * 4099}}) {
    const at::Tensor w = at::randn({n}) * 2;
    auto [packed_ref, absmax_ref] = nf4_quantize_blocks_reference(w, 64);
    const at::Tensor ref = nf4_dequantize_blocks_reference(packed_ref, absmax_ref, levels, 64, n, at::kBFloat16);
    const at::Tensor packed = packed_ref.cuda(), absmax = absmax_ref.cuda(), lv = levels.cuda();
    for (int chunks : {1, 2, 4, 8, 16}) {
      for (int threads : {32, 128, 1024}) {
        for (bool streaming : {false, true}) {
          INFO("n " << n << " chunks " << chunks << " threads " << threads << " streaming " << streaming);
          at::Tensor out = at::full({n}, 7.0, at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA));
          const cudaError_t err = launch_nf4_dequantize(
              reinterpret_cast<__nv_bfloat16*>(out.data_ptr()), packed.data_ptr<uint8_t>(), absmax.data_ptr<float>(),
              lv.data_ptr<float>(), n, 64, at::cuda::getCurrentCUDAStream(), Nf4DequantTuning{chunks, threads, streaming});
          REQUIRE(err == cudaSuccess);
          CHECK(at::equal(out.cpu(), ref));
        }
      }
    }
  }
  at::Tensor out = at::empty({64}, at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA));
  const at::Tensor packed = at::zeros({32}, at::TensorOptions().dtype(at::kByte).device(at::kCUDA));
  const at::Tensor absmax = at::ones({1}, at::TensorOptions().device(at::kCUDA));
  for (const Nf4DequantTuning bad : {Nf4DequantTuning{3, 256, false}, Nf4DequantTuning{4, 48, false},
                                     Nf4DequantTuning{4, 2048, false}}) {
    CHECK(launch_nf4_dequantize(reinterpret_cast<__nv_bfloat16*>(out.data_ptr()), packed.data_ptr<uint8_t>(),
                                absmax.data_ptr<float>(), absmax.data_ptr<float>(), 64, 64,
                                at::cuda::getCurrentCUDAStream(), bad) == cudaErrorInvalidValue);
  }
}

// The raw launcher for `state` (on the GPU) into `out` (fp32 or bf16 [n], on the GPU).
template <typename T>
cudaError_t dequantize_into(const QuantState& state, at::Tensor& out, Nf4DequantTuning tuning) {
  T* dst = reinterpret_cast<T*>(out.data_ptr());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  if (state.double_quant()) {
    return launch_nf4_dequantize_nested(dst, state.packed.data_ptr<uint8_t>(), state.absmax.data_ptr<uint8_t>(),
                                        state.nested_quant_map.data_ptr<float>(),
                                        state.nested_absmax.data_ptr<float>(), static_cast<float>(state.nested_offset),
                                        state.quant_map.data_ptr<float>(), state.numel(), state.blocksize,
                                        state.nested_blocksize, stream, tuning);
  }
  return launch_nf4_dequantize(dst, state.packed.data_ptr<uint8_t>(), state.absmax.data_ptr<float>(),
                               state.quant_map.data_ptr<float>(), state.numel(), state.blocksize, stream, tuning);
}

cudaError_t dequantize_into(const QuantState& state, at::Tensor& out, Nf4DequantTuning tuning) {
  return out.scalar_type() == at::kFloat ? dequantize_into<float>(state, out, tuning)
                                         : dequantize_into<__nv_bfloat16>(state, out, tuning);
}

// The bulk-store kernel (Tensor Memory Accelerator copies of a shared-memory tile) for every tile
// that fits, in fp32 (two 16-byte vectors per chunk) and bf16, with fp32 and double-quantized
// absmax, including sizes whose last block copies a partial tile; below sm_90 it is refused.
TEST_CASE("bulk-store dequantize matches the CPU reference bit for bit", "[cuda]") {
  SKIP_WITHOUT_CUDA();
  at::manual_seed(11);
  const bool tma = at::cuda::getCurrentDeviceProperties()->major >= 9;
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  std::vector<Nf4DequantTuning> shapes;
  for (int chunks : {1, 2, 4, 16}) {  // 2 x 128 and 4 x 128: the defaults on sm_90+
    for (int threads : {32, 128, 1024}) {
      for (bool streaming : {false, true}) {
        for (int blocks_per_sm : {0, 1, 3}) shapes.push_back({chunks, threads, streaming, true, blocks_per_sm});
      }
    }
  }
  for (int64_t n : {int64_t{8}, int64_t{64 * 1000}, int64_t{64 * 4099}}) {
    const at::Tensor w = at::randn({n}) * at::rand({n}) * 3;
    auto plain = Nf4Quantizer::quantize(w, Nf4Options{64, false});
    auto nested = Nf4Quantizer::quantize(w, Nf4Options{64, true});
    REQUIRE_OK(plain);
    REQUIRE_OK(nested);
    for (const QuantState* cpu : {&*plain, &*nested}) {
      QuantState gpu = *cpu;
      for (at::Tensor* t : {&gpu.packed, &gpu.absmax, &gpu.quant_map, &gpu.nested_absmax, &gpu.nested_quant_map}) {
        if (t->defined()) *t = t->cuda();
      }
      for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
        auto ref = Nf4Quantizer::dequantize(*cpu, dtype);
        REQUIRE_OK(ref);
        for (const Nf4DequantTuning& tuning : shapes) {
          // A persistent grid smaller than the tile count double-buffers its tiles.
          const int64_t per_tile = int64_t{tuning.threads} * tuning.chunks_per_thread;
          const int64_t tiles = (n / 8 + per_tile - 1) / per_tile;
          const bool looping = tuning.blocks_per_sm > 0 && sms * tuning.blocks_per_sm < tiles;
          const bool fits = (looping ? 2 : 1) * per_tile * 8 * at::elementSize(dtype) <= 48 * 1024;
          INFO("n " << n << " double quant " << cpu->double_quant() << " " << c10::toString(dtype) << " chunks "
                    << tuning.chunks_per_thread << " threads " << tuning.threads << " streaming "
                    << tuning.streaming_stores << " blocks per SM " << tuning.blocks_per_sm);
          at::Tensor out = at::full({n}, 7.0, at::TensorOptions().dtype(dtype).device(at::kCUDA));
          const cudaError_t err = dequantize_into(gpu, out, tuning);
          if (!fits) {
            CHECK(err == cudaErrorInvalidValue);
          } else if (!tma) {
            CHECK(err == cudaErrorNotSupported);
          } else {
            REQUIRE(err == cudaSuccess);
            CHECK(at::equal(out.cpu(), *ref));
          }
        }
      }
    }
  }
  // A persistent grid is the bulk-store kernel's alone, and at most 32 blocks per SM.
  at::Tensor out = at::empty({64}, at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA));
  const at::Tensor packed = at::zeros({32}, at::TensorOptions().dtype(at::kByte).device(at::kCUDA));
  const at::Tensor absmax = at::ones({1}, at::TensorOptions().device(at::kCUDA));
  for (const Nf4DequantTuning bad : {Nf4DequantTuning{4, 256, false, false, 2}, Nf4DequantTuning{4, 256, false, true, 33},
                                     Nf4DequantTuning{4, 256, false, true, -1}}) {
    CHECK(launch_nf4_dequantize(reinterpret_cast<__nv_bfloat16*>(out.data_ptr()), packed.data_ptr<uint8_t>(),
                                absmax.data_ptr<float>(), absmax.data_ptr<float>(), 64, 64,
                                at::cuda::getCurrentCUDAStream(), bad) == cudaErrorInvalidValue);
  }
}
#endif
