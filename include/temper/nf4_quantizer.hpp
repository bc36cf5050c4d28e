// Nf4Quantizer: 4-bit NormalFloat quantization exactly as bitsandbytes lays it out, so that
// temper reads and writes bitsandbytes-quantized checkpoints (QLoRA bases).
//
// Blockwise: the weight is flattened row-major and cut into blocks of `blocksize` values; each
// block stores absmax = max|x| and, per value, the index of the nearest of 16 NF4 levels to
// x / absmax (decided by the midpoints between neighbouring levels), two indices per byte with
// the first value in the high nibble. Double quantization stores the per-block absmax values
// themselves in 8 bits: offset = mean(absmax), then (absmax - offset) quantized in blocks of 256
// with bitsandbytes' signed dynamic 8-bit map, one fp32 scale per 256. Layout and memory maths:
// docs/quantization.md.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "temper/api.hpp"
#include "temper/status.hpp"

namespace temper {

struct Nf4Options {
  int64_t blocksize = 64;         // bitsandbytes supports 32, 64, 128, ..., 4096
  bool double_quant = true;       // compress the absmax values (QLoRA's default)
  int64_t nested_blocksize = 256;
};

// A quantized weight. The tensors are what bitsandbytes stores, on any device.
struct QuantState {
  at::Tensor packed;            // [ceil(n/2), 1] uint8: two NF4 codes per byte, first value high nibble
  at::Tensor absmax;            // [n_blocks] fp32, or uint8 codes of the dynamic map with double quant
  at::Tensor quant_map;         // [16] fp32, the NF4 levels
  at::Tensor nested_absmax;     // [ceil(n_blocks / nested_blocksize)] fp32 (double quant only)
  at::Tensor nested_quant_map;  // [256] fp32, the signed dynamic map (double quant only)
  double nested_offset = 0.0;   // mean of absmax (double quant only)
  int64_t blocksize = 64;
  int64_t nested_blocksize = 256;
  std::vector<int64_t> shape;   // the original weight's shape ([out, in] for a linear)
  at::ScalarType dtype = at::kBFloat16;  // the original (and default dequantized) dtype
  bool double_quant() const { return nested_absmax.defined(); }
  int64_t numel() const;
  int64_t nbytes() const;  // bytes held by the state's tensors
};

class TEMPER_API Nf4Quantizer {
 public:
  // w: any float tensor, finite (a NaN or Inf is INVALID_ARGUMENT naming its flat index: a
  // block's absmax would carry it into every value of the block). CPU tensors use the ATen
  // reference; CUDA tensors the kernels of lib/kernels/nf4.cu.
  static StatusOr<QuantState> quantize(const at::Tensor& w, const Nf4Options& options = {});
  // The weight in `dtype` (default: the original dtype) on the state's device.
  static StatusOr<at::Tensor> dequantize(const QuantState& state, std::optional<at::ScalarType> dtype = std::nullopt);

  // bitsandbytes' serialised form for module prefix P ("model.layers.0.self_attn.q_proj"):
  // P.weight, P.weight.absmax, P.weight.quant_map, P.weight.nested_absmax,
  // P.weight.nested_quant_map, P.weight.quant_state.bitsandbytes__nf4 (JSON bytes).
  static std::vector<std::pair<std::string, at::Tensor>> to_tensors(const QuantState& state, const std::string& prefix);
  // The inverse; `lookup(name)` returns the tensor or NOT_FOUND. Disagreements between the JSON,
  // the shapes and the dtypes are INVALID_ARGUMENT naming the tensor; fp4 is UNIMPLEMENTED.
  static StatusOr<QuantState> from_tensors(const std::function<StatusOr<at::Tensor>(const std::string&)>& lookup,
                                           const std::string& prefix);

  // The 16 NF4 levels, literal values from bitsandbytes (see nf4_codebook.cc), fp32 [16].
  static at::Tensor nf4_levels();
  // bitsandbytes' signed dynamic 8-bit map (create_dynamic_map(signed=True)), fp32 [256].
  static at::Tensor dynamic_map();
};

}  // namespace temper
