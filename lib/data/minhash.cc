#include "data/minhash.hpp"

#include <algorithm>
#include <limits>

#include <xxhash.h>

namespace temper {
namespace {

// Fixed seeds: changing any of them changes every signature and invalidates saved states.
constexpr uint64_t kWordSeed = 0x74656d7065722d77;      // "temper-w"
constexpr uint64_t kShingleSeed = 0x74656d7065722d73;   // "temper-s"
constexpr uint64_t kPermutationSeed = 0x74656d7065722d70;  // "temper-p"

// splitmix64 (Steele, Lea, Flood 2014): a fixed, portable stream of well-mixed 64-bit values,
// unlike std:: distributions, whose output differs between standard libraries.
uint64_t splitmix64(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace

MinHasher::MinHasher(size_t shingle_words, size_t num_permutations) : shingle_words_(shingle_words) {
  uint64_t state = kPermutationSeed;
  multipliers_.resize(num_permutations);
  increments_.resize(num_permutations);
  for (size_t i = 0; i < num_permutations; ++i) {
    multipliers_[i] = splitmix64(&state);
    increments_[i] = splitmix64(&state);
  }
}

bool MinHasher::signature(std::string_view normalized, std::vector<uint32_t>* signature) {
  measure_text(normalized, /*collect_words=*/true, &stats_);
  const std::vector<WordSpan>& words = stats_.words;
  const size_t k = shingle_words_;
  if (words.size() < k) return false;

  word_hashes_.clear();
  for (const WordSpan& word : words) {
    word_hashes_.push_back(XXH3_64bits_withSeed(normalized.data() + word.begin, word.size, kWordSeed));
  }

  const size_t p = multipliers_.size();
  signature->assign(p, std::numeric_limits<uint32_t>::max());
  uint32_t* sig = signature->data();
  const uint64_t* a = multipliers_.data();
  const uint64_t* b = increments_.data();
  for (size_t i = 0; i + k <= words.size(); ++i) {
    const uint64_t h = XXH3_64bits_withSeed(&word_hashes_[i], k * sizeof(uint64_t), kShingleSeed);
    const uint64_t x = static_cast<uint32_t>(h ^ (h >> 32));
    for (size_t j = 0; j < p; ++j) {
      const auto value = static_cast<uint32_t>((a[j] * x + b[j]) >> 32);
      sig[j] = std::min(sig[j], value);
    }
  }
  return true;
}

double estimated_jaccard(const uint32_t* a, const uint32_t* b, size_t size) {
  if (size == 0) return 0.0;
  size_t equal = 0;
  for (size_t i = 0; i < size; ++i) equal += a[i] == b[i];
  return static_cast<double>(equal) / static_cast<double>(size);
}

}  // namespace temper
