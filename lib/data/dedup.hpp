// Deduplication of a document stream: exact duplicates by a hash of the normalised text, near
// duplicates by MinHash + LSH over word shingles (Broder 1997; Lee et al. 2021, "Deduplicating
// Training Data Makes Language Models Better"). The first copy of a document is kept and later
// copies are reported; the knobs and their defaults are explained in docs/data.md
// ("Deduplication").
//
// Memory grows with the unique documents seen: 16-32 bytes (exact hash), num_permutations * 4
// bytes (signature) and bands * 16-32 bytes (LSH table) each: 0.8-1 KB at the defaults.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <absl/status/status.h>
#include <absl/status/statusor.h>

#include "data/hash64_set.hpp"
#include "data/lsh_index.hpp"
#include "data/minhash.hpp"
#include "temper/data_options.hpp"

namespace temper {

class Deduplicator {
 public:
  enum class Verdict { kUnique, kExactDuplicate, kNearDuplicate };

  // INVALID_ARGUMENT naming the option when shingle_words, num_permutations or bands is below 1,
  // bands does not divide num_permutations, or threshold is outside (0, 1].
  static absl::StatusOr<Deduplicator> create(const DedupOptions& options);

  // Move-only: the index can hold gigabytes.
  Deduplicator(Deduplicator&&) = default;
  Deduplicator& operator=(Deduplicator&&) = default;
  Deduplicator(const Deduplicator&) = delete;
  Deduplicator& operator=(const Deduplicator&) = delete;

  // Judges `text` against every document inserted so far and inserts it when it is unique.
  // Exact duplicates are looked for first. A document with fewer words than one shingle is only
  // checked for exact duplicates. Deterministic: the same stream gives the same verdicts in
  // every run. Not thread-safe.
  Verdict check_and_insert(std::string_view text);

  // The index as a compact string (a binary record in base64, with a checksum), which
  // restore_state() turns back into an index giving the same verdicts.
  std::string save_state() const;
  // Replaces the index with a saved one. INVALID_ARGUMENT when `state` is not a saved state,
  // DATA_LOSS when it is damaged, FAILED_PRECONDITION when it was saved with options that make
  // other hashes (exact/near, shingle_words, num_permutations); bands and threshold may differ.
  // On error the index is unchanged.
  absl::Status restore_state(std::string_view state);

  // Unique documents inserted.
  size_t size() const { return documents_; }
  const DedupOptions& options() const { return options_; }

 private:
  explicit Deduplicator(const DedupOptions& options);
  bool is_near_duplicate(const std::vector<uint32_t>& signature);
  void rebuild_lsh();

  DedupOptions options_;
  MinHasher hasher_;
  Hash64Set exact_;
  std::vector<uint32_t> signatures_;  // num_permutations values per document with a signature
  LshIndex lsh_;
  size_t documents_ = 0;

  // Buffers reused across documents.
  std::string normalized_;
  std::vector<uint32_t> signature_;
  std::vector<uint32_t> candidates_;
};

}  // namespace temper
