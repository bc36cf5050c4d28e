#include "quant/nf4_ops.hpp"

#include <ATen/core/grad_mode.h>

#include "quant/nf4_codebook.hpp"

#ifdef TEMPER_WITH_CUDA
#include "ops/cuda_dispatch.hpp"
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/nf4.cuh"
#endif

namespace temper {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// [n] -> [ceil(n/bs), bs], zero-padded.
at::Tensor as_blocks(const at::Tensor& flat, int64_t blocksize) {
  const int64_t n = flat.numel();
  const int64_t pad = ceil_div(n, blocksize) * blocksize - n;
  const at::Tensor padded = pad > 0 ? at::cat({flat, at::zeros({pad}, flat.options())}) : flat;
  return padded.view({-1, blocksize});
}

at::Tensor thresholds_on(const at::Device& device) {
  const auto t = nf4_thresholds();
  return at::tensor(std::vector<float>(t.begin(), t.end())).to(device);
}


}  // namespace

std::pair<at::Tensor, at::Tensor> nf4_quantize_blocks_reference(const at::Tensor& w, int64_t blocksize) {
  at::NoGradGuard no_grad;
  const at::Tensor x = w.flatten().to(at::kFloat);
  const int64_t n = x.numel();
  const at::Tensor blocks = as_blocks(x, blocksize);
  const at::Tensor absmax = blocks.abs().amax(1);
  const at::Tensor safe = at::where(absmax > 0, absmax, at::ones_like(absmax));
  const at::Tensor normalized = blocks / safe.unsqueeze(1);
  // Index = the number of thresholds strictly below the value (equal takes the lower level).
  at::Tensor codes = at::bucketize(normalized, thresholds_on(w.device())).flatten().narrow(0, 0, n).to(at::kByte);
  if (n % 2 == 1) codes = at::cat({codes, at::zeros({1}, codes.options())});
  const at::Tensor pairs = codes.view({-1, 2});
  const at::Tensor packed = pairs.select(1, 0).bitwise_left_shift(4).bitwise_or(pairs.select(1, 1));
  return {packed.view({-1, 1}), absmax};
}

at::Tensor nf4_dequantize_blocks_reference(const at::Tensor& packed, const at::Tensor& absmax, const at::Tensor& levels,
                                           int64_t blocksize, int64_t n, at::ScalarType dtype) {
  at::NoGradGuard no_grad;
  const at::Tensor bytes = packed.flatten().to(at::kLong);
  const at::Tensor codes = at::stack({bytes.bitwise_right_shift(4), bytes.bitwise_and(15)}, 1).flatten().narrow(0, 0, n);
  const at::Tensor values = as_blocks(levels.to(at::kFloat).index_select(0, codes), blocksize);
  return (values * absmax.to(at::kFloat).unsqueeze(1)).flatten().narrow(0, 0, n).to(dtype);
}

std::pair<at::Tensor, at::Tensor> nf4_quantize_blocks(const at::Tensor& w, int64_t blocksize) {
#ifdef TEMPER_WITH_CUDA
  if (w.is_cuda()) {
    const c10::cuda::CUDAGuard guard(w.device());
    const at::Tensor x = w.contiguous();
    const int64_t n = x.numel();
    at::Tensor absmax = at::empty({ceil_div(n, blocksize)}, x.options().dtype(at::kFloat));
    at::Tensor packed = at::empty({ceil_div(n, 2), 1}, x.options().dtype(at::kByte));
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    dispatch_float_type(x.scalar_type(), "nf4", [&](auto tag) {
      using T = decltype(tag);
      check_cuda(launch_nf4_quantize(packed.data_ptr<uint8_t>(), absmax.data_ptr<float>(),
                                     reinterpret_cast<const T*>(x.data_ptr()), n, blocksize, stream),
                 "nf4 quantize kernel");
    });
    return {packed, absmax};
  }
#endif
  return nf4_quantize_blocks_reference(w, blocksize);
}

at::Tensor nf4_dequantize_blocks(const at::Tensor& packed, const at::Tensor& absmax, const at::Tensor& levels,
                                 int64_t blocksize, int64_t n, at::ScalarType dtype) {
#ifdef TEMPER_WITH_CUDA
  if (packed.is_cuda()) {
    const c10::cuda::CUDAGuard guard(packed.device());
    const at::Tensor p = packed.contiguous();
    const at::Tensor a = absmax.to(at::kFloat).contiguous();
    const at::Tensor l = levels.to(at::kFloat).contiguous();
    at::Tensor out = at::empty({n}, p.options().dtype(dtype));
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    dispatch_float_type(dtype, "nf4", [&](auto tag) {
      using T = decltype(tag);
      check_cuda(launch_nf4_dequantize(reinterpret_cast<T*>(out.data_ptr()), p.data_ptr<uint8_t>(), a.data_ptr<float>(),
                                       l.data_ptr<float>(), n, blocksize, stream),
                 "nf4 dequantize kernel");
    });
    return out;
  }
#endif
  return nf4_dequantize_blocks_reference(packed, absmax, levels, blocksize, n, dtype);
}

at::Tensor nf4_dequantize_nested_blocks(const at::Tensor& packed, const at::Tensor& absmax_codes,
                                        const at::Tensor& nested_absmax, const at::Tensor& nested_map, float offset,
                                        const at::Tensor& levels, int64_t blocksize, int64_t nested_blocksize,
                                        int64_t n, at::ScalarType dtype) {
#ifdef TEMPER_WITH_CUDA
  if (packed.is_cuda()) {
    const c10::cuda::CUDAGuard guard(packed.device());
    const at::Tensor p = packed.contiguous();
    const at::Tensor codes = absmax_codes.contiguous();
    const at::Tensor scales = nested_absmax.to(at::kFloat).contiguous();
    const at::Tensor map = nested_map.to(at::kFloat).contiguous();
    const at::Tensor l = levels.to(at::kFloat).contiguous();
    at::Tensor out = at::empty({n}, p.options().dtype(dtype));
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    dispatch_float_type(dtype, "nf4", [&](auto tag) {
      using T = decltype(tag);
      check_cuda(launch_nf4_dequantize_nested(reinterpret_cast<T*>(out.data_ptr()), p.data_ptr<uint8_t>(),
                                              codes.data_ptr<uint8_t>(), map.data_ptr<float>(), scales.data_ptr<float>(),
                                              offset, l.data_ptr<float>(), n, blocksize, nested_blocksize, stream),
                 "nf4 nested dequantize kernel");
    });
    return out;
  }
#endif
  const at::Tensor absmax = dequantize_blockwise_8bit(absmax_codes, nested_absmax, nested_map, nested_blocksize) + offset;
  return nf4_dequantize_blocks(packed, absmax, levels, blocksize, n, dtype);
}

std::pair<at::Tensor, at::Tensor> quantize_blockwise_8bit(const at::Tensor& values, const at::Tensor& map,
                                                          int64_t blocksize) {
  at::NoGradGuard no_grad;
  const at::Tensor x = values.flatten().to(at::kFloat);
  const int64_t m = x.numel();
  const at::Tensor blocks = as_blocks(x, blocksize);
  const at::Tensor scales = blocks.abs().amax(1);
  const at::Tensor safe = at::where(scales > 0, scales, at::ones_like(scales));
  const at::Tensor normalized = blocks / safe.unsqueeze(1);
  const at::Tensor sorted = map.to(at::kFloat);
  const at::Tensor mids = (sorted.narrow(0, 0, 255) + sorted.narrow(0, 1, 255)) / 2.0;
  const at::Tensor codes = at::bucketize(normalized, mids).flatten().narrow(0, 0, m).to(at::kByte);
  return {codes, scales};
}

at::Tensor dequantize_blockwise_8bit(const at::Tensor& codes, const at::Tensor& scales, const at::Tensor& map,
                                     int64_t blocksize) {
  at::NoGradGuard no_grad;
  const int64_t m = codes.numel();
  const at::Tensor values = as_blocks(map.to(at::kFloat).index_select(0, codes.flatten().to(at::kLong)), blocksize);
  return (values * scales.to(at::kFloat).unsqueeze(1)).flatten().narrow(0, 0, m);
}

}  // namespace temper
