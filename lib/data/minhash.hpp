// MinHash signatures of a document's word shingles (Broder 1997): the fraction of equal entries
// of two signatures estimates the Jaccard similarity of the two shingle sets.
//
// Stable by construction: words and shingles are hashed with XXH3 under fixed seeds, and the
// num_permutations hash functions are drawn from a fixed seed, so a signature is the same in
// every run and build (on little-endian machines, which XXH3 over hash arrays assumes), and a
// saved deduplication state stays valid.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "data/text_stats.hpp"

namespace temper {

class MinHasher {
 public:
  // shingle_words >= 1 and num_permutations >= 1 (the Deduplicator validates them).
  MinHasher(size_t shingle_words, size_t num_permutations);

  // The signature (num_permutations values) of the shingles of `normalized` (dedup-normalised
  // text: words as text_stats splits them, so punctuation is not part of any shingle). False,
  // and `signature` untouched, when the text has fewer words than one shingle.
  bool signature(std::string_view normalized, std::vector<uint32_t>* signature);

  size_t num_permutations() const { return multipliers_.size(); }
  size_t shingle_words() const { return shingle_words_; }

 private:
  size_t shingle_words_;
  // h_i(x) = ((a_i * x + b_i) mod 2^64) >> 32 on 32-bit shingle hashes x: Dietzfelbinger's
  // multiply-add-shift family, 2-independent, one multiplication per value.
  std::vector<uint64_t> multipliers_;  // a_i
  std::vector<uint64_t> increments_;   // b_i
  TextStats stats_;                    // reused across documents
  std::vector<uint64_t> word_hashes_;
};

// The fraction of equal entries of two signatures of `size` values.
double estimated_jaccard(const uint32_t* a, const uint32_t* b, size_t size);

}  // namespace temper
