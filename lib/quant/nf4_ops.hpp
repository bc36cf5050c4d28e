// The array operations behind Nf4Quantizer, one function per step so each has a reference and,
// where it pays, a CUDA kernel (lib/kernels/nf4.cu, used for CUDA tensors in CUDA builds).
#pragma once

#include <cstdint>
#include <utility>

#include <ATen/ATen.h>

namespace temper {

// w: any float tensor of n values -> {packed [ceil(n/2), 1] uint8, absmax [ceil(n/blocksize)] fp32}.
// An all-zero block has absmax 0 and codes 7 (the level 0.0).
std::pair<at::Tensor, at::Tensor> nf4_quantize_blocks(const at::Tensor& w, int64_t blocksize);
// packed [ceil(n/2), 1] uint8, absmax [blocks] fp32, levels [16] fp32 -> [n] in `dtype`.
at::Tensor nf4_dequantize_blocks(const at::Tensor& packed, const at::Tensor& absmax, const at::Tensor& levels,
                                 int64_t blocksize, int64_t n, at::ScalarType dtype);

// nf4_dequantize_blocks with double-quantized absmax (bitsandbytes' compress_statistics):
// absmax_codes [blocks] uint8, nested_absmax [ceil(blocks/nested_blocksize)] fp32, nested_map [256]
// fp32 -> [n] in `dtype`. On CUDA one fused kernel (no fp32 absmax array); on CPU the reference:
// dequantize_blockwise_8bit(...) + offset, then nf4_dequantize_blocks.
at::Tensor nf4_dequantize_nested_blocks(const at::Tensor& packed, const at::Tensor& absmax_codes,
                                        const at::Tensor& nested_absmax, const at::Tensor& nested_map, float offset,
                                        const at::Tensor& levels, int64_t blocksize, int64_t nested_blocksize,
                                        int64_t n, at::ScalarType dtype);

// Blockwise 8-bit quantization with a sorted 256-value map (nearest value), as bitsandbytes'
// quantize_blockwise: values [m] fp32 -> {codes [m] uint8, scales [ceil(m/blocksize)] fp32}.
std::pair<at::Tensor, at::Tensor> quantize_blockwise_8bit(const at::Tensor& values, const at::Tensor& map,
                                                          int64_t blocksize);
// codes [m] uint8, scales fp32, map [256] fp32 -> [m] fp32.
at::Tensor dequantize_blockwise_8bit(const at::Tensor& codes, const at::Tensor& scales, const at::Tensor& map,
                                     int64_t blocksize);

// The ATen reference of nf4_quantize_blocks / nf4_dequantize_blocks (the kernels' parity tests
// compare against these).
std::pair<at::Tensor, at::Tensor> nf4_quantize_blocks_reference(const at::Tensor& w, int64_t blocksize);
at::Tensor nf4_dequantize_blocks_reference(const at::Tensor& packed, const at::Tensor& absmax, const at::Tensor& levels,
                                           int64_t blocksize, int64_t n, at::ScalarType dtype);

}  // namespace temper
