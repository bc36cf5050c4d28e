// Locality-sensitive hashing over MinHash signatures (banding, Leskovec/Rajaraman/Ullman,
// "Mining of Massive Datasets" ch. 3): a signature of bands x rows values is cut into `bands`
// bands; two documents become candidates when all rows of at least one band agree, which for
// Jaccard similarity s happens with probability 1 - (1 - s^rows)^bands.
//
// Each band is stored as a 32-bit key (a hash of the band's rows and its index) next to a 32-bit
// document number in one open-addressing table: 8 bytes per band and document, no node per
// entry. Two bands with different rows can share a key; that only adds a candidate, which the
// caller confirms against the full signatures.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace temper {

class LshIndex {
 public:
  // bands >= 1, rows >= 1.
  LshIndex(size_t bands, size_t rows) : bands_(bands), rows_(rows) {}

  // Files document `doc` (< 2^32 - 1) under every band of `signature` (bands * rows values).
  void insert(const uint32_t* signature, uint32_t doc);
  // The documents sharing at least one band with `signature`, each once, in first-found order.
  void candidates(const uint32_t* signature, std::vector<uint32_t>* docs) const;
  void clear();

 private:
  static constexpr uint32_t kEmpty = 0xffffffffu;
  struct Slot {
    uint32_t key = 0;
    uint32_t doc = kEmpty;
  };

  uint32_t band_key(const uint32_t* signature, size_t band) const;
  void place(uint32_t key, uint32_t doc);
  void grow();

  size_t bands_;
  size_t rows_;
  std::vector<Slot> slots_;  // capacity a power of two, at most half full
  size_t used_ = 0;
};

}  // namespace temper
