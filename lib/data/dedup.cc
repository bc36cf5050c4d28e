#include "data/dedup.hpp"

#include <algorithm>
#include <cstring>
#include <utility>

#include <absl/strings/escaping.h>
#include <xxhash.h>

#include "data/dedup_normalize.hpp"
#include "util/strings.hpp"

namespace temper {
namespace {

// The saved state, little-endian:
//   magic "TMPDEDUP", u32 version,
//   u8 exact, u8 near, u32 shingle_words, u32 num_permutations,  (what the hashes depend on)
//   u64 documents, u64 n_exact, n_exact x u64 (sorted), u64 n_signatures,
//   n_signatures x num_permutations x u32 (insertion order), u64 XXH3 of everything before it.
// The LSH table is not saved: it is rebuilt from the signatures, so bands may change between runs.
constexpr char kMagic[8] = {'T', 'M', 'P', 'D', 'E', 'D', 'U', 'P'};
constexpr uint32_t kVersion = 1;

class Writer {
 public:
  void bytes(const void* data, size_t size) { out_.append(static_cast<const char*>(data), size); }
  void u8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void u32(uint32_t v) {
    for (int i = 0; i < 4; ++i) out_.push_back(static_cast<char>(v >> (8 * i)));
  }
  void u64(uint64_t v) {
    for (int i = 0; i < 8; ++i) out_.push_back(static_cast<char>(v >> (8 * i)));
  }
  std::string& str() { return out_; }

 private:
  std::string out_;
};

class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  bool u8(uint8_t* v) {
    if (in_.size() - pos_ < 1) return false;
    *v = static_cast<uint8_t>(in_[pos_++]);
    return true;
  }
  bool u32(uint32_t* v) {
    if (in_.size() - pos_ < 4) return false;
    *v = 0;
    for (int i = 0; i < 4; ++i) *v |= static_cast<uint32_t>(static_cast<uint8_t>(in_[pos_++])) << (8 * i);
    return true;
  }
  bool u64(uint64_t* v) {
    if (in_.size() - pos_ < 8) return false;
    *v = 0;
    for (int i = 0; i < 8; ++i) *v |= static_cast<uint64_t>(static_cast<uint8_t>(in_[pos_++])) << (8 * i);
    return true;
  }
  size_t remaining() const { return in_.size() - pos_; }

 private:
  std::string_view in_;
  size_t pos_ = 0;
};

absl::Status damaged(std::string_view what) {
  return absl::DataLossError(str_cat("dedup state: ", what, "; the state is damaged (restore from another checkpoint)"));
}

}  // namespace

absl::StatusOr<Deduplicator> Deduplicator::create(const DedupOptions& options) {
  if (options.shingle_words < 1) {
    return absl::InvalidArgumentError(str_cat("DedupOptions.shingle_words = ", options.shingle_words, ": must be >= 1"));
  }
  // Signature rows and document numbers are 32-bit in the index and in the saved state.
  if (options.num_permutations < 1 || options.num_permutations > 65536) {
    return absl::InvalidArgumentError(
        str_cat("DedupOptions.num_permutations = ", options.num_permutations, ": must be in [1, 65536]"));
  }
  if (options.bands < 1 || options.bands > options.num_permutations || options.num_permutations % options.bands != 0) {
    return absl::InvalidArgumentError(str_cat("DedupOptions.bands = ", options.bands, " does not divide num_permutations = ",
                                              options.num_permutations,
                                              ": each band takes num_permutations / bands signature rows"));
  }
  if (!(options.threshold > 0.0 && options.threshold <= 1.0)) {
    return absl::InvalidArgumentError(
        str_cat("DedupOptions.threshold = ", options.threshold, ": must be an estimated Jaccard similarity in (0, 1]"));
  }
  return Deduplicator(options);
}

Deduplicator::Deduplicator(const DedupOptions& options)
    : options_(options),
      hasher_(static_cast<size_t>(options.shingle_words), static_cast<size_t>(options.num_permutations)),
      lsh_(static_cast<size_t>(options.bands), static_cast<size_t>(options.num_permutations / options.bands)) {}

bool Deduplicator::is_near_duplicate(const std::vector<uint32_t>& signature) {
  lsh_.candidates(signature.data(), &candidates_);
  const size_t p = signature.size();
  for (const uint32_t doc : candidates_) {
    if (estimated_jaccard(signature.data(), signatures_.data() + static_cast<size_t>(doc) * p, p) >= options_.threshold) {
      return true;
    }
  }
  return false;
}

Deduplicator::Verdict Deduplicator::check_and_insert(std::string_view text) {
  normalize_for_dedup(text, &normalized_);
  const uint64_t exact_hash = XXH3_64bits(normalized_.data(), normalized_.size());
  if (options_.exact && exact_.contains(exact_hash)) return Verdict::kExactDuplicate;

  const bool has_signature = options_.near && hasher_.signature(normalized_, &signature_);
  if (has_signature && is_near_duplicate(signature_)) return Verdict::kNearDuplicate;

  if (options_.exact) exact_.insert(exact_hash);
  if (has_signature) {
    const auto doc = static_cast<uint32_t>(signatures_.size() / signature_.size());
    signatures_.insert(signatures_.end(), signature_.begin(), signature_.end());
    lsh_.insert(signature_.data(), doc);
  }
  ++documents_;
  return Verdict::kUnique;
}

std::string Deduplicator::save_state() const {
  Writer w;
  w.bytes(kMagic, sizeof kMagic);
  w.u32(kVersion);
  w.u8(options_.exact ? 1 : 0);
  w.u8(options_.near ? 1 : 0);
  w.u32(static_cast<uint32_t>(options_.shingle_words));
  w.u32(static_cast<uint32_t>(options_.num_permutations));
  w.u64(documents_);
  // Sorted, so that the same set of documents saves to the same bytes whatever the table layout.
  std::vector<uint64_t> hashes = exact_.values();
  std::sort(hashes.begin(), hashes.end());
  w.u64(hashes.size());
  for (const uint64_t hash : hashes) w.u64(hash);
  const size_t p = static_cast<size_t>(options_.num_permutations);
  w.u64(signatures_.size() / p);
  for (const uint32_t value : signatures_) w.u32(value);
  w.u64(XXH3_64bits(w.str().data(), w.str().size()));
  return absl::Base64Escape(absl::string_view(w.str().data(), w.str().size()));
}

absl::Status Deduplicator::restore_state(std::string_view state) {
  std::string binary;
  if (!absl::Base64Unescape(absl::string_view(state.data(), state.size()), &binary)) {
    return absl::InvalidArgumentError("dedup state: not base64; expected a string from Deduplicator::save_state()");
  }
  if (binary.size() < sizeof kMagic + 4 || std::memcmp(binary.data(), kMagic, sizeof kMagic) != 0) {
    return absl::InvalidArgumentError("dedup state: no TMPDEDUP header; expected a string from Deduplicator::save_state()");
  }
  if (binary.size() < sizeof kMagic + 4 + 8) return damaged("truncated");
  const size_t body = binary.size() - 8;
  Reader checksum_reader(std::string_view(binary).substr(body));
  uint64_t checksum = 0;
  checksum_reader.u64(&checksum);
  if (checksum != XXH3_64bits(binary.data(), body)) return damaged("checksum mismatch");

  Reader r(std::string_view(binary).substr(sizeof kMagic, body - sizeof kMagic));
  uint32_t version = 0, shingle_words = 0, permutations = 0;
  uint8_t exact = 0, near = 0;
  uint64_t documents = 0, n_exact = 0, n_signatures = 0;
  if (!r.u32(&version)) return damaged("truncated header");
  if (version != kVersion) {
    return absl::FailedPreconditionError(
        str_cat("dedup state: format version ", version, ", this build reads version ", kVersion));
  }
  if (!r.u8(&exact) || !r.u8(&near) || !r.u32(&shingle_words) || !r.u32(&permutations) || !r.u64(&documents)) {
    return damaged("truncated header");
  }
  if ((exact != 0) != options_.exact || (near != 0) != options_.near ||
      static_cast<int64_t>(shingle_words) != options_.shingle_words ||
      static_cast<int64_t>(permutations) != options_.num_permutations) {
    return absl::FailedPreconditionError(str_cat(
        "dedup state was saved with exact=", exact != 0, " near=", near != 0, " shingle_words=", shingle_words,
        " num_permutations=", permutations, "; this Deduplicator has exact=", options_.exact, " near=", options_.near,
        " shingle_words=", options_.shingle_words, " num_permutations=", options_.num_permutations,
        " (resume with the options of the run that saved it)"));
  }
  if (!r.u64(&n_exact) || n_exact > r.remaining() / 8) return damaged("exact hash count exceeds the data");
  Hash64Set exact_set;
  for (uint64_t i = 0; i < n_exact; ++i) {
    uint64_t hash = 0;
    r.u64(&hash);
    exact_set.insert(hash);
  }
  const size_t p = permutations;
  if (!r.u64(&n_signatures) || n_signatures > r.remaining() / (4 * p)) return damaged("signature count exceeds the data");
  std::vector<uint32_t> signatures(static_cast<size_t>(n_signatures) * p);
  for (uint32_t& value : signatures) r.u32(&value);
  if (r.remaining() != 0) return damaged("trailing bytes");
  if (exact_set.size() != n_exact || documents < n_exact || documents < n_signatures) {
    return damaged("counts disagree");
  }

  exact_ = std::move(exact_set);
  signatures_ = std::move(signatures);
  documents_ = static_cast<size_t>(documents);
  rebuild_lsh();
  return absl::OkStatus();
}

void Deduplicator::rebuild_lsh() {
  lsh_.clear();
  const size_t p = static_cast<size_t>(options_.num_permutations);
  for (size_t doc = 0; doc * p < signatures_.size(); ++doc) {
    lsh_.insert(signatures_.data() + doc * p, static_cast<uint32_t>(doc));
  }
}

}  // namespace temper
