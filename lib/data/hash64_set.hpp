// A set of 64-bit hashes in one flat open-addressing table: 16 bytes per entry at most, against
// 40 or more for std::unordered_set's nodes, for the exact-duplicate index that holds one hash
// per unique document of a corpus.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace temper {

class Hash64Set {
 public:
  // True when `hash` was not in the set (and is now).
  bool insert(uint64_t hash) {
    if (hash == kEmpty) {
      const bool added = !has_empty_value_;
      has_empty_value_ = true;
      return added;
    }
    if ((size_ + 1) * 2 > slots_.size()) grow();
    const size_t mask = slots_.size() - 1;
    for (size_t i = home(hash, mask);; i = (i + 1) & mask) {
      if (slots_[i] == hash) return false;
      if (slots_[i] == kEmpty) {
        slots_[i] = hash;
        ++size_;
        return true;
      }
    }
  }

  bool contains(uint64_t hash) const {
    if (hash == kEmpty) return has_empty_value_;
    if (slots_.empty()) return false;
    const size_t mask = slots_.size() - 1;
    for (size_t i = home(hash, mask); slots_[i] != kEmpty; i = (i + 1) & mask) {
      if (slots_[i] == hash) return true;
    }
    return false;
  }

  size_t size() const { return size_ + (has_empty_value_ ? 1 : 0); }

  // Every member, in table order.
  std::vector<uint64_t> values() const {
    std::vector<uint64_t> out;
    out.reserve(size());
    if (has_empty_value_) out.push_back(kEmpty);
    for (const uint64_t slot : slots_) {
      if (slot != kEmpty) out.push_back(slot);
    }
    return out;
  }

  void clear() {
    slots_.clear();
    size_ = 0;
    has_empty_value_ = false;
  }

 private:
  // 0 marks a free slot; the hash 0 itself is remembered by a flag.
  static constexpr uint64_t kEmpty = 0;

  // The members are hashes already: their low bits are uniform and pick the slot directly.
  static size_t home(uint64_t hash, size_t mask) { return static_cast<size_t>(hash) & mask; }

  void grow() {
    std::vector<uint64_t> old = std::move(slots_);
    slots_.assign(old.empty() ? 1024 : old.size() * 2, kEmpty);
    const size_t mask = slots_.size() - 1;
    for (const uint64_t hash : old) {
      if (hash == kEmpty) continue;
      size_t i = home(hash, mask);
      while (slots_[i] != kEmpty) i = (i + 1) & mask;
      slots_[i] = hash;
    }
  }

  std::vector<uint64_t> slots_;  // capacity a power of two, at most half full
  size_t size_ = 0;              // occupied slots
  bool has_empty_value_ = false;
};

}  // namespace temper
