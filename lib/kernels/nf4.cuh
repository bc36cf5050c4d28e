// Launchers of the NF4 kernels (nf4.cu). Plain declarations for host code compiled by g++.
// Element types: float, __nv_bfloat16, __half. Device pointers, contiguous data.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace temper {

// w [n] -> packed [ceil(n/2)] (first value in the high nibble) and absmax [ceil(n/blocksize)].
template <typename T>
cudaError_t launch_nf4_quantize(uint8_t* packed, float* absmax, const T* w, int64_t n, int64_t blocksize,
                                cudaStream_t stream);

// The dequantize kernel's launch shape where n % 8 == 0 (its vector path): 8-value chunks per
// thread (1, 2, 4, 8 or 16), threads per block (a multiple of 32, at most 1024), and whether the
// output is written with evict-first stores. chunks_per_thread 0 (the default) takes what
// nf4_bench's sweeps measured fastest (docs/performance.md): on sm_90 and later bulk stores with
// 2 chunks x 128 threads for fp32 absmax and 4 x 128 for double-quantized absmax (an H100 sweep);
// before sm_90 register stores, 2 x 128 and 4 x 256 (an H200 sweep made before bulk stores);
// evict-first for all. Other values are for that sweep.
// bulk_stores stages each thread block's output tile (threads x chunks x 8 values) in shared
// memory and writes it with one Tensor Memory Accelerator bulk copy (sm_90+; with
// streaming_stores the copy carries an L2 evict-first policy). blocks_per_sm > 0 (bulk stores
// only, at most 32) caps the grid at that many blocks per SM, each looping over tiles with two
// buffers (measured slower than one tile per block; kept for the sweep). The tile, or both
// buffers, must fit 48 KiB. An invalid shape: cudaErrorInvalidValue; bulk stores below sm_90:
// cudaErrorNotSupported.
struct Nf4DequantTuning {
  int chunks_per_thread = 0;
  int threads = 0;
  bool streaming_stores = true;
  bool bulk_stores = false;
  int blocks_per_sm = 0;
};

// packed [ceil(n/2)], absmax [ceil(n/blocksize)] fp32, levels [16] fp32 -> out [n].
template <typename T>
cudaError_t launch_nf4_dequantize(T* out, const uint8_t* packed, const float* absmax, const float* levels, int64_t n,
                                  int64_t blocksize, cudaStream_t stream, Nf4DequantTuning tuning = {});

// As launch_nf4_dequantize, with the absmax values double-quantized (bitsandbytes'
// compress_statistics): absmax[b] = nested_map[absmax_codes[b]] * nested_absmax[b / nested_blocksize]
// + offset, in fp32 with each operation rounded separately (as the ATen reference).
// absmax_codes [ceil(n/blocksize)] uint8, nested_map [256] fp32, nested_absmax
// [ceil(blocks/nested_blocksize)] fp32; nested_blocksize a power of two.
template <typename T>
cudaError_t launch_nf4_dequantize_nested(T* out, const uint8_t* packed, const uint8_t* absmax_codes,
                                         const float* nested_map, const float* nested_absmax, float offset,
                                         const float* levels, int64_t n, int64_t blocksize, int64_t nested_blocksize,
                                         cudaStream_t stream, Nf4DequantTuning tuning = {});

}  // namespace temper
