// NF4 blockwise quantization and dequantization (bitsandbytes layout).
//
// What: quantize: per block of `blocksize` values, absmax = max|x|; each value's code is the
// number of NF4 decision thresholds strictly below x / absmax (an all-zero block gets code 7,
// the level 0.0); two codes per byte, the first value in the high nibble. Dequantize: x =
// level[code] * absmax[block].
// Why: QLoRA keeps base weights in 4 bits and dequantizes them inside each linear's forward and
// backward; the dequantized weight must not stay resident, so this runs once per use.
// Invariants: blocksize is even (a power of two, 32..4096), so a byte never straddles blocks.
// One thread block owns one quantization block (absmax by a block reduction, then one thread per
// byte); dequantization is one thread per byte. Reference: nf4_quantize_blocks_reference /
// nf4_dequantize_blocks_reference in lib/quant/nf4_ops.cc; parity test tests/cuda/nf4_kernel_test.cc.
// Dequantization takes 8-value chunks (4-byte loads, 16-byte stores, warp-coalesced) when
// n % 8 == 0 and the pointers are aligned, else one byte per thread; with double quantization the absmax decode
// is fused into the same kernel (no fp32 absmax array is materialised). On sm_90+ the default
// writes each thread block's chunks through a shared-memory tile and one TMA bulk copy.
#include "kernels/nf4.cuh"
#include "kernels/float_convert.cuh"

#include <algorithm>
#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "quant/nf4_codebook.hpp"

namespace temper {
namespace {

// bitsandbytes' decision thresholds (quant/nf4_codebook.hpp, the one table CPU and GPU share),
// passed by value so that the kernel compares against exactly the host's floats.
struct Nf4Thresholds {
  float v[15];
};

Nf4Thresholds host_thresholds() {
  Nf4Thresholds t{};
  for (int k = 0; k < 15; ++k) t.v[k] = kNf4Thresholds[k];
  return t;
}

__device__ __forceinline__ uint8_t nf4_code(float normalized, const Nf4Thresholds& t) {
  uint8_t code = 0;
#pragma unroll
  for (int k = 0; k < 15; ++k) code += normalized > t.v[k] ? 1 : 0;
  return code;
}

template <typename T>
__global__ void nf4_quantize_kernel(uint8_t* __restrict__ packed, float* __restrict__ absmax, const T* __restrict__ w,
                                    int64_t n, int64_t blocksize, Nf4Thresholds thresholds) {
  __shared__ float warp_max[32];
  __shared__ float block_max;
  const int64_t block = blockIdx.x;
  const int64_t begin = block * blocksize;
  const int64_t end = min(begin + blocksize, n);

  float local = 0.0f;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) local = fmaxf(local, fabsf(to_float(w[i])));
  for (int offset = 16; offset > 0; offset >>= 1) local = fmaxf(local, __shfl_xor_sync(0xffffffffu, local, offset));
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = local;
  __syncthreads();
  if (threadIdx.x == 0) {
    float m = 0.0f;
    for (int wi = 0; wi < (blockDim.x + 31) / 32; ++wi) m = fmaxf(m, warp_max[wi]);
    block_max = m;
    absmax[block] = m;
  }
  __syncthreads();
  const float scale = block_max > 0.0f ? block_max : 1.0f;

  for (int64_t i = begin + 2 * threadIdx.x; i < end; i += 2 * blockDim.x) {
    const uint8_t hi = nf4_code(to_float(w[i]) / scale, thresholds);
    const uint8_t lo = i + 1 < n ? nf4_code(to_float(w[i + 1]) / scale, thresholds) : uint8_t{0};
    packed[i / 2] = static_cast<uint8_t>((hi << 4) | lo);
  }
}

// Where a block's absmax comes from: stored in fp32, or double-quantized (8-bit code into the
// signed dynamic map, times the nested block's scale, plus the offset). The nested form rounds
// each operation as the ATen reference does (no fused multiply-add), so results are bit-equal.
struct PlainAbsmax {
  const float* absmax;
  __device__ __forceinline__ float operator()(int64_t block) const { return absmax[block]; }
};

struct NestedAbsmax {
  const uint8_t* codes;
  const float* map;  // [256]
  const float* nested_absmax;
  float offset;
  int nested_shift;  // log2(nested_blocksize)
  __device__ __forceinline__ float operator()(int64_t block) const {
    return __fadd_rn(__fmul_rn(__ldg(map + codes[block]), nested_absmax[block >> nested_shift]), offset);
  }
};

// One thread per byte: any n, any alignment.
template <typename T, typename Absmax>
__global__ void nf4_dequantize_kernel(T* __restrict__ out, const uint8_t* __restrict__ packed, Absmax absmax,
                                      const float* __restrict__ levels, int64_t n, int64_t blocksize) {
  __shared__ float lut[16];
  if (threadIdx.x < 16) lut[threadIdx.x] = levels[threadIdx.x];
  __syncthreads();
  const int64_t byte = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t first = 2 * byte;
  if (first >= n) return;
  const uint8_t b = packed[byte];
  const float scale = absmax(first / blocksize);
  out[first] = from_float<T>(lut[b >> 4] * scale);
  if (first + 1 < n) out[first + 1] = from_float<T>(lut[b & 15] * scale);
}

// The bandwidth path (docs/performance.md), for n % 8 == 0 with 16-byte aligned output and
// 4-byte aligned codes (what ATen's allocations give). Work comes in chunks of 8 values: one
// 4-byte load of codes, one 16-byte store per 8 bytes of output. Each thread takes kChunks chunks
// strided by the warp, so that every load and store instruction of a warp covers one contiguous
// span (128 bytes of codes, 512 bytes of bf16) — fully coalesced, where a thread writing its own
// 32 contiguous bytes would leave each store instruction half-used — and kChunks independent
// loads are in flight per thread. 8 divides every supported blocksize, so a chunk's values share
// one absmax. kStreaming stores with st.global.cs (evict-first); which launch shape is fastest
// is measured by nf4_bench's sweep, and Nf4DequantTuning's defaults hold the winner.
constexpr int kChunkValues = 8;
constexpr int64_t kMaxBulkTileBytes = 48 * 1024;

template <int kVectors, bool kStreaming>
__device__ __forceinline__ void store_chunk(uint4* dst, const uint4* src) {
#pragma unroll
  for (int v = 0; v < kVectors; ++v) {
    if constexpr (kStreaming) {
      __stcs(dst + v, src[v]);
    } else {
      dst[v] = src[v];
    }
  }
}

// One chunk's 8 values from its 4 code bytes: byte k of the (little-endian) word holds value 2k
// in its high nibble and value 2k + 1 in its low nibble.
template <typename T>
__device__ __forceinline__ void decode_chunk(uint32_t word, float scale, const float* lut, T* values) {
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const uint32_t byte = (word >> (8 * k)) & 0xffu;
    values[2 * k] = from_float<T>(lut[byte >> 4] * scale);
    values[2 * k + 1] = from_float<T>(lut[byte & 15] * scale);
  }
}

// __launch_bounds__(1024): every launch shape the tuning allows must fit in registers.
template <typename T, typename Absmax, int kChunks, bool kStreaming>
__global__ void __launch_bounds__(1024)
    nf4_dequantize8_kernel(T* __restrict__ out, const uint8_t* __restrict__ packed, Absmax absmax,
                           const float* __restrict__ levels, int64_t chunks, int blocksize_shift) {
  __shared__ float lut[16];
  if (threadIdx.x < 16) lut[threadIdx.x] = levels[threadIdx.x];
  __syncthreads();
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  const int64_t base = warp * 32 * kChunks + lane;
  uint32_t words[kChunks];
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    const int64_t chunk = base + 32 * c;
    words[c] = chunk < chunks ? __ldg(reinterpret_cast<const uint32_t*>(packed) + chunk) : 0u;
  }
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    const int64_t chunk = base + 32 * c;
    if (chunk >= chunks) break;
    const float scale = absmax((chunk * kChunkValues) >> blocksize_shift);
    alignas(16) T values[kChunkValues];
    decode_chunk(words[c], scale, lut, values);
    constexpr int kVectors = static_cast<int>(sizeof(T)) / 2;  // 8 values x sizeof(T) bytes / 16 bytes
    store_chunk<kVectors, kStreaming>(reinterpret_cast<uint4*>(out) + chunk * kVectors,
                                      reinterpret_cast<const uint4*>(values));
  }
}

// The same decoding with the stores handed to the Tensor Memory Accelerator (sm_90+): a thread
// block decodes a tile of blockDim.x * kChunks chunks into shared memory (lane-consecutive
// 16-byte stores, conflict-free for bf16/fp16), and one thread writes the whole tile with a
// single bulk copy (cp.async.bulk), so the SM issues one store instruction per tile instead of
// one per 16 bytes. The block waits only until a copy has read shared memory
// (wait_group.read), never for the global write. Chunks of a tile are strided by blockDim.x, so
// every warp-wide code load still covers 128 contiguous bytes. With fewer blocks than tiles
// (a persistent grid) each block loops over tiles and alternates two tile buffers, so decoding
// tile i+1 overlaps the copy of tile i. kEvictFirst attaches an L2 evict-first policy to the
// copies. Below sm_90 the kernel compiles to plain per-thread stores (the launcher refuses it).
template <typename T, typename Absmax, int kChunks, bool kEvictFirst>
__global__ void __launch_bounds__(1024)
    nf4_dequantize8_bulk_kernel(T* __restrict__ out, const uint8_t* __restrict__ packed, Absmax absmax,
                                const float* __restrict__ levels, int64_t chunks, int blocksize_shift) {
  extern __shared__ uint4 tiles[];  // [1 or 2][blockDim.x * kChunks * kVectors]
  __shared__ float lut[16];
  if (threadIdx.x < 16) lut[threadIdx.x] = levels[threadIdx.x];
  __syncthreads();
  constexpr int kVectors = static_cast<int>(sizeof(T)) / 2;
  const int64_t per_tile = static_cast<int64_t>(blockDim.x) * kChunks;
  const int64_t tile_count = (chunks + per_tile - 1) / per_tile;
  int parity = 0;
  for (int64_t t = blockIdx.x; t < tile_count; t += gridDim.x, parity ^= 1) {
    const int64_t first = t * per_tile;
    uint4* tile = tiles + parity * per_tile * kVectors;
    uint32_t words[kChunks];
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      const int64_t chunk = first + static_cast<int64_t>(c) * blockDim.x + threadIdx.x;
      words[c] = chunk < chunks ? __ldg(reinterpret_cast<const uint32_t*>(packed) + chunk) : 0u;
    }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (t >= blockIdx.x + 2 * static_cast<int64_t>(gridDim.x)) {
      // This buffer's previous copy (two tiles ago) must have read it; the last copy may run on.
      if (threadIdx.x == 0) asm volatile("cp.async.bulk.wait_group.read 1;" ::: "memory");
      __syncthreads();
    }
#endif
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      const int64_t local = static_cast<int64_t>(c) * blockDim.x + threadIdx.x;
      if (first + local >= chunks) break;
      const float scale = absmax(((first + local) * kChunkValues) >> blocksize_shift);
      alignas(16) T values[kChunkValues];
      decode_chunk(words[c], scale, lut, values);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
      store_chunk<kVectors, false>(tile + local * kVectors, reinterpret_cast<const uint4*>(values));
#else
      (void)tile;
      store_chunk<kVectors, false>(reinterpret_cast<uint4*>(out) + (first + local) * kVectors,
                                   reinterpret_cast<const uint4*>(values));
#endif
    }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    // Generic-proxy writes to shared memory must be made visible to the async proxy (the TMA)
    // by every writing thread before the barrier that hands the tile to the issuing thread.
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    __syncthreads();
    if (threadIdx.x == 0) {
      const auto bytes = static_cast<uint32_t>(min(per_tile, chunks - first) * kVectors * 16);
      const auto src = static_cast<uint32_t>(__cvta_generic_to_shared(tile));
      T* dst = out + first * kChunkValues;
      if constexpr (kEvictFirst) {
        uint64_t policy;
        asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
        asm volatile("cp.async.bulk.global.shared::cta.bulk_group.L2::cache_hint [%0], [%1], %2, %3;"
                     :
                     : "l"(dst), "r"(src), "r"(bytes), "l"(policy)
                     : "memory");
      } else {
        asm volatile("cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], %2;"
                     :
                     : "l"(dst), "r"(src), "r"(bytes)
                     : "memory");
      }
      asm volatile("cp.async.bulk.commit_group;" ::: "memory");
    }
#endif
  }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // Shared memory must outlive the copies' reads of it; the global writes may still be in flight.
  if (threadIdx.x == 0) asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory");
#endif
}

int log2_exact(int64_t v) {
  int shift = 0;
  while ((int64_t{1} << shift) < v) ++shift;
  return shift;
}

bool valid_tuning(const Nf4DequantTuning& t) {
  const int c = t.chunks_per_thread;
  const bool chunks = c == 1 || c == 2 || c == 4 || c == 8 || c == 16;
  // A persistent grid (blocks_per_sm > 0) only for the bulk-store kernel, which loops over tiles.
  const bool grid = t.blocks_per_sm == 0 || (t.bulk_stores && t.blocks_per_sm > 0 && t.blocks_per_sm <= 32);
  return chunks && grid && t.threads >= 32 && t.threads <= 1024 && t.threads % 32 == 0;
}

template <typename T, typename Absmax, int kChunks, bool kStreaming>
void launch_direct(unsigned grid, int threads, T* out, const uint8_t* packed, Absmax absmax, const float* levels,
                   int64_t chunks, int shift, cudaStream_t stream) {
  nf4_dequantize8_kernel<T, Absmax, kChunks, kStreaming>
      <<<grid, threads, 0, stream>>>(out, packed, absmax, levels, chunks, shift);
}

// shared_bytes: one tile, or two on a persistent grid (launch_dequantize sizes and checks it).
template <typename T, typename Absmax, int kChunks, bool kEvictFirst>
void launch_bulk(unsigned grid, int threads, size_t shared_bytes, T* out, const uint8_t* packed, Absmax absmax,
                 const float* levels, int64_t chunks, int shift, cudaStream_t stream) {
  nf4_dequantize8_bulk_kernel<T, Absmax, kChunks, kEvictFirst>
      <<<grid, threads, shared_bytes, stream>>>(out, packed, absmax, levels, chunks, shift);
}

template <typename T, typename Absmax, int kChunks>
void launch_vector(const Nf4DequantTuning& tuning, unsigned grid, size_t shared_bytes, T* out, const uint8_t* packed,
                   Absmax absmax, const float* levels, int64_t chunks, int shift, cudaStream_t stream) {
  const int threads = tuning.threads;
  if (tuning.bulk_stores) {
    if (tuning.streaming_stores) {
      launch_bulk<T, Absmax, kChunks, true>(grid, threads, shared_bytes, out, packed, absmax, levels, chunks, shift,
                                            stream);
    } else {
      launch_bulk<T, Absmax, kChunks, false>(grid, threads, shared_bytes, out, packed, absmax, levels, chunks, shift,
                                             stream);
    }
  } else if (tuning.streaming_stores) {
    launch_direct<T, Absmax, kChunks, true>(grid, threads, out, packed, absmax, levels, chunks, shift, stream);
  } else {
    launch_direct<T, Absmax, kChunks, false>(grid, threads, out, packed, absmax, levels, chunks, shift, stream);
  }
}

// An attribute of the current device.
cudaError_t device_attribute(cudaDeviceAttr attribute, int* value) {
  int device = 0;
  if (const cudaError_t err = cudaGetDevice(&device); err != cudaSuccess) return err;
  return cudaDeviceGetAttribute(value, attribute, device);
}

// chunks_per_thread 0: the launch shape nf4_bench's sweeps measured fastest (docs/performance.md).
// sm_90 and later (NVIDIA H100 sweep, 2026-12-07): bulk stores, 2 chunks x 128 threads for fp32
// absmax and 4 x 128 for double-quantized absmax, 0.5-3% above the best register-store shape.
// Before sm_90 (no TMA): the register-store shapes an H200 sweep picked before bulk stores
// existed (2 x 128 and 4 x 256); not measured on such a device.
Nf4DequantTuning resolve_default(Nf4DequantTuning tuning, bool nested_absmax, int major) {
  if (tuning.chunks_per_thread != 0) return tuning;
  const bool streaming = tuning.streaming_stores;
  if (major >= 9) return Nf4DequantTuning{nested_absmax ? 4 : 2, 128, streaming, true, 0};
  return nested_absmax ? Nf4DequantTuning{4, 256, streaming} : Nf4DequantTuning{2, 128, streaming};
}

template <typename T, typename Absmax>
cudaError_t launch_dequantize(T* out, const uint8_t* packed, Absmax absmax, const float* levels, int64_t n,
                              int64_t blocksize, Nf4DequantTuning tuning, cudaStream_t stream) {
  // One query of the device per call (this runs in every QLoRA linear's forward and backward).
  int major = 0;
  if (const cudaError_t err = device_attribute(cudaDevAttrComputeCapabilityMajor, &major); err != cudaSuccess) {
    return err;
  }
  tuning = resolve_default(tuning, std::is_same_v<Absmax, NestedAbsmax>, major);
  if (!valid_tuning(tuning)) return cudaErrorInvalidValue;
  const bool vector = n % kChunkValues == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0 &&
                      reinterpret_cast<uintptr_t>(packed) % 4 == 0;
  if (!vector) {
    constexpr int kThreads = 256;
    const int64_t bytes = (n + 1) / 2;
    const int64_t grid = (bytes + kThreads - 1) / kThreads;
    if (grid > 0x7fffffff) return cudaErrorInvalidValue;
    nf4_dequantize_kernel<T, Absmax><<<static_cast<unsigned>(grid), kThreads, 0, stream>>>(out, packed, absmax, levels,
                                                                                            n, blocksize);
    return cudaGetLastError();
  }
  const int64_t chunks = n / kChunkValues;
  const int64_t per_block = int64_t{tuning.threads} * tuning.chunks_per_thread;
  const int64_t grid64 = (chunks + per_block - 1) / per_block;
  if (grid64 > 0x7fffffff) return cudaErrorInvalidValue;
  auto grid = static_cast<unsigned>(grid64);
  const int shift = log2_exact(blocksize);
  size_t shared_bytes = 0;  // the bulk-store kernel's tile buffers
  if (tuning.bulk_stores) {
    if (tuning.blocks_per_sm > 0) {
      int sms = 0;
      if (const cudaError_t err = device_attribute(cudaDevAttrMultiProcessorCount, &sms); err != cudaSuccess) {
        return err;
      }
      grid = static_cast<unsigned>(std::min<int64_t>(grid64, int64_t{sms} * tuning.blocks_per_sm));
    }
    // The tile (two when the grid is persistent) lives in shared memory: at most the 48 KiB a
    // launch gets without opting in. The bulk copy needs the Tensor Memory Accelerator (sm_90+).
    const int64_t buffers = grid < grid64 ? 2 : 1;
    const int64_t bytes = buffers * per_block * kChunkValues * static_cast<int64_t>(sizeof(T));
    if (bytes > kMaxBulkTileBytes) return cudaErrorInvalidValue;
    if (major < 9) return cudaErrorNotSupported;
    shared_bytes = static_cast<size_t>(bytes);
  }
  switch (tuning.chunks_per_thread) {
    case 1: launch_vector<T, Absmax, 1>(tuning, grid, shared_bytes, out, packed, absmax, levels, chunks, shift, stream); break;
    case 2: launch_vector<T, Absmax, 2>(tuning, grid, shared_bytes, out, packed, absmax, levels, chunks, shift, stream); break;
    case 4: launch_vector<T, Absmax, 4>(tuning, grid, shared_bytes, out, packed, absmax, levels, chunks, shift, stream); break;
    case 8: launch_vector<T, Absmax, 8>(tuning, grid, shared_bytes, out, packed, absmax, levels, chunks, shift, stream); break;
    default: launch_vector<T, Absmax, 16>(tuning, grid, shared_bytes, out, packed, absmax, levels, chunks, shift, stream);
  }
  return cudaGetLastError();
}

bool valid_blocksize(int64_t b) { return b >= 32 && b <= 4096 && (b & (b - 1)) == 0; }

}  // namespace

template <typename T>
cudaError_t launch_nf4_quantize(uint8_t* packed, float* absmax, const T* w, int64_t n, int64_t blocksize,
                                cudaStream_t stream) {
  if (n <= 0 || !valid_blocksize(blocksize)) return cudaErrorInvalidValue;
  const int64_t blocks = (n + blocksize - 1) / blocksize;
  if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
  const int threads = static_cast<int>(blocksize / 2 < 256 ? blocksize / 2 : 256);
  nf4_quantize_kernel<T><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(packed, absmax, w, n, blocksize,
                                                                                     host_thresholds());
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_nf4_dequantize(T* out, const uint8_t* packed, const float* absmax, const float* levels, int64_t n,
                                  int64_t blocksize, cudaStream_t stream, Nf4DequantTuning tuning) {
  if (n <= 0 || !valid_blocksize(blocksize)) return cudaErrorInvalidValue;
  return launch_dequantize(out, packed, PlainAbsmax{absmax}, levels, n, blocksize, tuning, stream);
}

template <typename T>
cudaError_t launch_nf4_dequantize_nested(T* out, const uint8_t* packed, const uint8_t* absmax_codes,
                                         const float* nested_map, const float* nested_absmax, float offset,
                                         const float* levels, int64_t n, int64_t blocksize, int64_t nested_blocksize,
                                         cudaStream_t stream, Nf4DequantTuning tuning) {
  if (n <= 0 || !valid_blocksize(blocksize) || nested_blocksize <= 0 ||
      (nested_blocksize & (nested_blocksize - 1)) != 0) {
    return cudaErrorInvalidValue;
  }
  const NestedAbsmax absmax{absmax_codes, nested_map, nested_absmax, offset, log2_exact(nested_blocksize)};
  return launch_dequantize(out, packed, absmax, levels, n, blocksize, tuning, stream);
}

#define TEMPER_INSTANTIATE_NF4(T)                                                                               \
  template cudaError_t launch_nf4_quantize<T>(uint8_t*, float*, const T*, int64_t, int64_t, cudaStream_t);     \
  template cudaError_t launch_nf4_dequantize<T>(T*, const uint8_t*, const float*, const float*, int64_t, int64_t, \
                                                cudaStream_t, Nf4DequantTuning);                                \
  template cudaError_t launch_nf4_dequantize_nested<T>(T*, const uint8_t*, const uint8_t*, const float*, const float*, \
                                                       float, const float*, int64_t, int64_t, int64_t, cudaStream_t, \
                                                       Nf4DequantTuning);

TEMPER_INSTANTIATE_NF4(float)
TEMPER_INSTANTIATE_NF4(__nv_bfloat16)
TEMPER_INSTANTIATE_NF4(__half)

}  // namespace temper
