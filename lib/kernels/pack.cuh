// 16-byte packs of a kernel's element type: the unit of the vectorized (128-bit) loads and
// stores that memory-bound kernels need to approach the memory bandwidth (2-byte accesses leave
// most of each load/store instruction unused). Device code only.
#pragma once

#include <cstdint>

namespace temper {

constexpr int kPackBytes = 16;

// kWidth elements of T in one 16-byte load/store.
template <typename T>
struct alignas(kPackBytes) Pack {
  static constexpr int kWidth = kPackBytes / static_cast<int>(sizeof(T));
  T v[kWidth];
};

inline bool pack_aligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % kPackBytes == 0; }

}  // namespace temper
