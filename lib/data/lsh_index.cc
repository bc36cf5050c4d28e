#include "data/lsh_index.hpp"

#include <algorithm>
#include <utility>

#include <xxhash.h>

namespace temper {

uint32_t LshIndex::band_key(const uint32_t* signature, size_t band) const {
  // The band's index seeds the hash so that equal rows in different bands do not match.
  const uint64_t h = XXH3_64bits_withSeed(signature + band * rows_, rows_ * sizeof(uint32_t), band);
  return static_cast<uint32_t>(h ^ (h >> 32));
}

void LshIndex::place(uint32_t key, uint32_t doc) {
  // Keys are hashes already, so their low bits pick the home slot; linear probing keeps every
  // entry of one key in one run before the next free slot, where candidates() stops.
  const size_t mask = slots_.size() - 1;
  size_t i = key & mask;
  while (slots_[i].doc != kEmpty) i = (i + 1) & mask;
  slots_[i] = Slot{key, doc};
  ++used_;
}

void LshIndex::grow() {
  std::vector<Slot> old = std::move(slots_);
  slots_.assign(old.empty() ? 1024 : old.size() * 2, Slot{});
  used_ = 0;
  for (const Slot& slot : old) {
    if (slot.doc != kEmpty) place(slot.key, slot.doc);
  }
}

void LshIndex::insert(const uint32_t* signature, uint32_t doc) {
  while ((used_ + bands_) * 2 > slots_.size()) grow();
  for (size_t band = 0; band < bands_; ++band) place(band_key(signature, band), doc);
}

void LshIndex::candidates(const uint32_t* signature, std::vector<uint32_t>* docs) const {
  docs->clear();
  if (slots_.empty()) return;
  const size_t mask = slots_.size() - 1;
  for (size_t band = 0; band < bands_; ++band) {
    const uint32_t key = band_key(signature, band);
    for (size_t i = key & mask; slots_[i].doc != kEmpty; i = (i + 1) & mask) {
      // Candidates are few (usually none), so a linear search beats a set.
      if (slots_[i].key == key && std::find(docs->begin(), docs->end(), slots_[i].doc) == docs->end()) {
        docs->push_back(slots_[i].doc);
      }
    }
  }
}

void LshIndex::clear() {
  slots_.clear();
  used_ = 0;
}

}  // namespace temper
