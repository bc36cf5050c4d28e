// DataMixer: the data side of domain adaptation. Streams documents from several sources
// (files of any size, memory bounded), drops noise and duplicates, tokenizes, mixes sources at
// target shares of *tokens* (e.g. domain 1 : general 5 against forgetting), formats SFT records
// with a chat template, packs continued-pre-training text into fixed-length rows with
// per-document positions and segments, and yields Batches for the Trainer. Its whole state
// (positions, epochs, counters, dedup index, partially packed row) saves and restores, so a
// resumed run sees exactly the batches an uninterrupted one would.
//
// Ownership: keeps a reference to the Tokenizer, which must outlive it. One thread at a time.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "temper/api.hpp"
#include "temper/batch.hpp"
#include "temper/data_options.hpp"
#include "temper/status.hpp"
#include "temper/tokenizer.hpp"

namespace temper {

enum class ExhaustionPolicy {
  kRestart,      // a source that runs out starts a new epoch (the default: shares hold forever)
  kRenormalize,  // it leaves the mix and the remaining shares are renormalised; all out -> end
  kStop,         // the first source to run out ends the stream
};

// From `at_tokens` mixed tokens on, the target weights are `weights` (by source name); between
// two points they are interpolated linearly. Before the first point the sources' own weights hold.
struct ShareSchedulePoint {
  int64_t at_tokens = 0;
  std::map<std::string, double> weights;
};

struct MixerOptions {
  std::vector<SourceSpec> sources;
  Objective objective = Objective::kContinuedPretraining;
  int64_t batch_size = 8;
  int64_t seq_len = 512;  // packed row length (pre-training) or maximum example length (SFT)
  ExhaustionPolicy on_exhausted = ExhaustionPolicy::kRestart;
  std::vector<ShareSchedulePoint> schedule;
  DedupOptions dedup;
  bool add_bos = true;  // pre-training: each document as BOS + text + EOS
  bool add_eos = true;
  // SFT: the chat template by name ("chatml", "llama2", "llama3", "alpaca", "plain"); empty =
  // detect from `model_dir`'s tokenizer_config.json, else "plain".
  std::string chat_template;
  std::filesystem::path model_dir;
  uint64_t seed = 0;  // breaks ties between sources with equal deficit
};

struct FilterCount {
  int64_t documents = 0;
  int64_t bytes = 0;
  std::vector<std::string> examples;  // up to 3: "origin: reason"
};

struct SourceReport {
  std::string name;
  std::string role;
  double target_share = 0.0;      // normalised weight (current schedule point)
  double achieved_share = 0.0;    // share of mixed tokens so far
  int64_t documents_in = 0;
  int64_t bytes_in = 0;
  int64_t malformed = 0;
  std::vector<std::string> malformed_examples;
  std::map<std::string, FilterCount> dropped;  // by filter: utf8, length, repetition, non_word, boilerplate,
                                               // exact_duplicate, near_duplicate; SFT: not_a_conversation,
                                               // unrenderable (the template refuses the turns), too_long
  int64_t documents_kept = 0;
  int64_t tokens_kept = 0;        // tokens that went into the mix
  int64_t truncated = 0;          // SFT examples cut at seq_len
  int64_t epochs = 0;             // completed passes over the source
  bool exhausted = false;
};

struct TEMPER_API MixReport {
  std::vector<SourceReport> sources;
  int64_t tokens_mixed = 0;
  int64_t batches = 0;
  std::string to_json() const;
};

class TEMPER_API DataMixer final : public BatchSource {
 public:
  // Validates the options (unique non-empty names, finite positive weights, readable paths,
  // filter thresholds) and opens every source.
  static StatusOr<std::unique_ptr<DataMixer>> create(const MixerOptions& options, const Tokenizer& tokenizer);
  ~DataMixer() override;

  // The next batch; OUT_OF_RANGE when the stream has ended (kStop / kRenormalize policies), and
  // FAILED_PRECONDITION naming the source when one yields no document at all after filtering.
  StatusOr<Batch> next() override;
  int64_t epochs_completed() const override;  // the smallest epoch count among sources
  Objective objective() const override;
  std::string save_state() const override;
  Status restore_state(const std::string& state) override;

  const MixReport& report() const;
  Status write_report(const std::filesystem::path& path) const;  // JSON, atomic

  struct Impl;

 private:
  explicit DataMixer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace temper
