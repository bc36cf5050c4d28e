// Deduplication: exact duplicates through normalisation, near duplicates by MinHash + LSH with
// measured recall and precision on a constructed set, determinism, and a saved state that
// gives the same verdicts after restore.
#include <cmath>
#include <cstdint>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "data/dedup.hpp"
#include "data/dedup_normalize.hpp"
#include "data/minhash.hpp"
#include "test_support.hpp"

using namespace temper;
using namespace temper::testing;

namespace {

using Verdict = Deduplicator::Verdict;

Deduplicator make_dedup(const DedupOptions& options = {}) {
  auto dedup = Deduplicator::create(options);
  REQUIRE_OK(dedup);
  return *std::move(dedup);
}

// Deterministic paragraphs of made-up words: std::mt19937_64's output is fixed by the standard
// (its distributions are not, so none is used).
class ParagraphMaker {
 public:
  ParagraphMaker() : rng_(20240607) {
    const char* const onsets[] = {"b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "st", "tr"};
    const char* const vowels[] = {"a", "e", "i", "o", "u", "ai", "ou"};
    std::set<std::string> seen;
    while (vocabulary_.size() < 3000) {
      std::string word;
      const size_t syllables = 1 + next(3);
      for (size_t s = 0; s < syllables; ++s) word += std::string(onsets[next(17)]) + vowels[next(7)];
      if (seen.insert(word).second) vocabulary_.push_back(word);
    }
  }

  size_t next(size_t n) { return static_cast<size_t>(rng_() % n); }
  const std::string& word() { return vocabulary_[next(vocabulary_.size())]; }

  std::vector<std::string> words(size_t count) {
    std::vector<std::string> out;
    for (size_t i = 0; i < count; ++i) out.push_back(word());
    return out;
  }

  // `edits` single-word edits (substitution, insertion or deletion) at random places.
  std::vector<std::string> edited(std::vector<std::string> words, int edits) {
    for (int e = 0; e < edits; ++e) {
      const size_t at = next(words.size());
      switch (next(3)) {
        case 0: words[at] = word(); break;
        case 1: words.insert(words.begin() + static_cast<std::ptrdiff_t>(at), word()); break;
        default: words.erase(words.begin() + static_cast<std::ptrdiff_t>(at)); break;
      }
    }
    return words;
  }

  static std::string text(const std::vector<std::string>& words) {
    std::string out;
    for (size_t i = 0; i < words.size(); ++i) {
      if (i > 0) out += (i % 17 == 0) ? ". " : " ";
      out += words[i];
    }
    return out + ".";
  }

 private:
  std::mt19937_64 rng_;
  std::vector<std::string> vocabulary_;
};

}  // namespace

TEST_CASE("dedup normalisation folds case, width, ligatures and whitespace", "[unit]") {
  std::string out;
  normalize_for_dedup("  The QUICK\tbrown\n\n fox.  ", &out);
  CHECK(out == "the quick brown fox.");
  normalize_for_dedup("ﬁnal ＦＯＲＭ\u00a0here\u3000now", &out);
  CHECK(out == "final form here now");
  normalize_for_dedup("STRASSE", &out);
  std::string folded;
  normalize_for_dedup("Straße", &folded);
  CHECK(out == folded);
  normalize_for_dedup("soft\u00adhyphen", &out);  // default-ignorable code points vanish
  CHECK(out == "softhyphen");
  normalize_for_dedup("Bad \xff BYTES", &out);  // not UTF-8: folded byte by byte
  CHECK(out == "bad \xff bytes");
}

TEST_CASE("exact duplicates are caught through case and whitespace variation", "[unit]") {
  Deduplicator dedup = make_dedup();
  CHECK(dedup.check_and_insert("The quick brown fox jumps over the lazy dog.") == Verdict::kUnique);
  CHECK(dedup.check_and_insert("  the QUICK brown\tfox jumps\n\nover the lazy dog. ") == Verdict::kExactDuplicate);
  CHECK(dedup.check_and_insert("The quick brown fox jumps over the lazy dog.") == Verdict::kExactDuplicate);
  CHECK(dedup.check_and_insert("ＴＨＥ quick brown fox jumps over the lazy dog.") == Verdict::kExactDuplicate);
  // Chinese: full-width and ASCII spaces are the same space.
  CHECK(dedup.check_and_insert("高血压是最常见的慢性病之一。") == Verdict::kUnique);
  CHECK(dedup.check_and_insert(" 高血压是最常见的慢性病之一。\u3000") == Verdict::kExactDuplicate);
  // Short documents (fewer words than a shingle) are only deduplicated exactly.
  CHECK(dedup.check_and_insert("Take two tablets daily.") == Verdict::kUnique);
  CHECK(dedup.check_and_insert("Take three tablets daily.") == Verdict::kUnique);
  CHECK(dedup.size() == 4);
}

TEST_CASE("near duplicates: recall and precision on a constructed set", "[unit]") {
  ParagraphMaker maker;
  Deduplicator dedup = make_dedup();
  std::vector<std::vector<std::string>> bases;
  for (int i = 0; i < 200; ++i) {
    bases.push_back(maker.words(200 + maker.next(101)));
    REQUIRE(dedup.check_and_insert(ParagraphMaker::text(bases.back())) == Verdict::kUnique);
  }

  int variants = 0, found = 0, exact_found = 0;
  for (const auto& base : bases) {
    for (int edits = 1; edits <= 3; ++edits) {
      const Verdict verdict = dedup.check_and_insert(ParagraphMaker::text(maker.edited(base, edits)));
      ++variants;
      found += verdict != Verdict::kUnique;
      exact_found += verdict == Verdict::kExactDuplicate;
    }
  }

  // Negatives: unrelated paragraphs, and paragraphs sharing half of a base (Jaccard ~ 1/3).
  int negatives = 0, false_positives = 0;
  for (int i = 0; i < 200; ++i) {
    false_positives += dedup.check_and_insert(ParagraphMaker::text(maker.words(200 + maker.next(101)))) != Verdict::kUnique;
    ++negatives;
  }
  for (const auto& base : bases) {
    std::vector<std::string> half(base.begin(), base.begin() + static_cast<std::ptrdiff_t>(base.size() / 2));
    const std::vector<std::string> fresh = maker.words(base.size() - half.size());
    half.insert(half.end(), fresh.begin(), fresh.end());
    false_positives += dedup.check_and_insert(ParagraphMaker::text(half)) != Verdict::kUnique;
    ++negatives;
  }

  const double recall = static_cast<double>(found) / variants;
  const double precision = static_cast<double>(found) / (found + false_positives);
  INFO("recall " << recall << " (" << found << "/" << variants << ", exact " << exact_found << "), precision "
                 << precision << " (" << false_positives << " false positives in " << negatives << ")");
  CHECK(recall >= 0.9);
  CHECK(precision >= 0.95);
}

TEST_CASE("near duplicates in Chinese: one character changed", "[unit]") {
  // About 80 characters; each Chinese character is a word, so a shingle is 5 characters.
  const std::string base =
      "糖尿病是一种以高血糖为特征的代谢性疾病。长期高血糖会导致眼、肾、心脏、血管和神经的慢性损害。"
      "患者应在医生指导下控制饮食、规律运动并按时服药，同时定期监测血糖和糖化血红蛋白。";
  std::string variant = base;
  const std::string from = "规律运动";  // "regular exercise" -> "appropriate exercise"
  variant.replace(variant.find(from), from.size(), "适当运动");
  Deduplicator dedup = make_dedup();
  CHECK(dedup.check_and_insert(base) == Verdict::kUnique);
  CHECK(dedup.check_and_insert(variant) == Verdict::kNearDuplicate);
  CHECK(dedup.check_and_insert("高血压是最常见的慢性病之一，患者应定期测量血压，减少食盐摄入，并遵医嘱服用降压药物。") ==
        Verdict::kUnique);
}

TEST_CASE("dedup verdicts and signatures are deterministic", "[unit]") {
  // Golden values: they change only when the hashing changes, which invalidates saved states.
  MinHasher hasher(5, 128);
  std::vector<uint32_t> signature;
  REQUIRE(hasher.signature("the quick brown fox jumps over the lazy dog", &signature));
  REQUIRE(signature.size() == 128);
  const std::vector<uint32_t> first(signature.begin(), signature.begin() + 4);
  CHECK(first == std::vector<uint32_t>{688489215u, 523989365u, 774110097u, 905716049u});
  CHECK_FALSE(hasher.signature("only four words here", &signature));

  ParagraphMaker maker;
  std::vector<std::string> stream;
  for (int i = 0; i < 50; ++i) {
    const std::vector<std::string> words = maker.words(60);
    stream.push_back(ParagraphMaker::text(words));
    stream.push_back(ParagraphMaker::text(maker.edited(words, 1)));
  }
  Deduplicator a = make_dedup(), b = make_dedup();
  for (const std::string& text : stream) CHECK(a.check_and_insert(text) == b.check_and_insert(text));
  CHECK(a.save_state() == b.save_state());
}

TEST_CASE("dedup state saved and restored gives the same verdicts", "[unit]") {
  ParagraphMaker maker;
  std::vector<std::string> stream;
  for (int i = 0; i < 120; ++i) {
    const std::vector<std::string> words = maker.words(80 + maker.next(80));
    stream.push_back(ParagraphMaker::text(words));
    if (i % 3 == 0) stream.push_back(ParagraphMaker::text(maker.edited(words, 1)));
    if (i % 5 == 0) stream.push_back(ParagraphMaker::text(words));
    if (i % 7 == 0) stream.push_back("Short line " + std::to_string(i % 4));
  }
  const size_t half = stream.size() / 2;

  Deduplicator original = make_dedup();
  for (size_t i = 0; i < half; ++i) original.check_and_insert(stream[i]);
  const std::string state = original.save_state();

  Deduplicator restored = make_dedup();
  restored.check_and_insert("something that the restore must forget, with enough words to shingle");
  REQUIRE_OK(restored.restore_state(state));
  CHECK(restored.size() == original.size());
  CHECK(restored.save_state() == state);

  int duplicates = 0;
  for (size_t i = half; i < stream.size(); ++i) {
    const Verdict expected = original.check_and_insert(stream[i]);
    CHECK(restored.check_and_insert(stream[i]) == expected);
    duplicates += expected != Verdict::kUnique;
  }
  CHECK(duplicates > 10);
  CHECK(restored.save_state() == original.save_state());

  // The LSH table is rebuilt from the signatures, so bands and threshold may change on resume.
  DedupOptions other_bands;
  other_bands.bands = 32;
  REQUIRE_OK(make_dedup(other_bands).restore_state(state));
}

TEST_CASE("damaged or mismatched dedup states are refused and change nothing", "[unit]") {
  Deduplicator dedup = make_dedup();
  dedup.check_and_insert("The patient was given fluids and rest for three days.");
  const std::string state = dedup.save_state();
  const std::string before = dedup.save_state();

  CHECK(dedup.restore_state("not a state!").code() == absl::StatusCode::kInvalidArgument);
  CHECK(dedup.restore_state("").code() == absl::StatusCode::kInvalidArgument);
  std::string damaged = state;
  damaged[damaged.size() / 2] = damaged[damaged.size() / 2] == 'A' ? 'B' : 'A';
  CHECK(dedup.restore_state(damaged).code() == absl::StatusCode::kDataLoss);
  CHECK(dedup.restore_state(state.substr(0, state.size() - 8)).code() == absl::StatusCode::kDataLoss);
  CHECK(dedup.save_state() == before);

  DedupOptions other;
  other.num_permutations = 64;
  other.bands = 8;
  const absl::Status mismatch = make_dedup(other).restore_state(state);
  CHECK(mismatch.code() == absl::StatusCode::kFailedPrecondition);
  CHECK(std::string(mismatch.message()).find("num_permutations=128") != std::string::npos);
  other = {};
  other.shingle_words = 3;
  CHECK(make_dedup(other).restore_state(state).code() == absl::StatusCode::kFailedPrecondition);
}

TEST_CASE("exact and near dedup can each be switched off", "[unit]") {
  ParagraphMaker maker;
  const std::vector<std::string> words = maker.words(150);
  const std::string text = ParagraphMaker::text(words);
  const std::string variant = ParagraphMaker::text(maker.edited(words, 1));

  DedupOptions options;
  options.near = false;
  Deduplicator exact_only = make_dedup(options);
  CHECK(exact_only.check_and_insert(text) == Verdict::kUnique);
  CHECK(exact_only.check_and_insert(variant) == Verdict::kUnique);
  CHECK(exact_only.check_and_insert(text) == Verdict::kExactDuplicate);

  options = {};
  options.exact = false;
  Deduplicator near_only = make_dedup(options);
  CHECK(near_only.check_and_insert(text) == Verdict::kUnique);
  CHECK(near_only.check_and_insert(variant) == Verdict::kNearDuplicate);
  CHECK(near_only.check_and_insert(text) == Verdict::kNearDuplicate);
  CHECK(near_only.check_and_insert("Too short to shingle.") == Verdict::kUnique);
  CHECK(near_only.check_and_insert("Too short to shingle.") == Verdict::kUnique);
}

TEST_CASE("dedup options are validated", "[unit]") {
  auto refused = [](DedupOptions options, const std::string& name) {
    auto dedup = Deduplicator::create(options);
    INFO(status_text(dedup));
    REQUIRE_FALSE(dedup.ok());
    CHECK(dedup.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(std::string(dedup.status().message()).find(name) != std::string::npos);
  };
  DedupOptions o;
  o.bands = 20;  // does not divide 128
  refused(o, "bands");
  o = {};
  o.bands = 0;
  refused(o, "bands");
  o = {};
  o.num_permutations = 0;
  refused(o, "num_permutations");
  o = {};
  o.shingle_words = 0;
  refused(o, "shingle_words");
  for (const double threshold : {0.0, -0.5, 1.01, std::nan("")}) {
    o = {};
    o.threshold = threshold;
    refused(o, "threshold");
  }
  o = {};
  o.threshold = 1.0;
  o.num_permutations = 64;
  o.bands = 64;
  REQUIRE_OK(Deduplicator::create(o));
}
