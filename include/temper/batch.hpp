// Batch and BatchSource: what the Trainer consumes. A Batch is plain tensors; a BatchSource is
// anything that yields batches deterministically and can save and restore its position, so a
// resumed run sees exactly the batches an uninterrupted one would have seen.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "temper/api.hpp"
#include "temper/status.hpp"
#include "temper/token.hpp"

namespace temper {

struct Batch {
  at::Tensor input_ids;     // [B, T] int64
  at::Tensor labels;        // [B, T] int64, unshifted; -100 where no loss is taken (prompt, padding)
  at::Tensor position_ids;  // [B, T] int64, optional (restarting at packed document boundaries)
  at::Tensor segment_ids;   // [B, T] int64, optional: attention stays within a segment (packed documents)
};

// The number of positions a batch scores: labels[:, 1:] != -100 (the model shifts by one).
TEMPER_API int64_t scored_tokens(const Batch& batch);

enum class Objective {
  kContinuedPretraining,  // every token of packed text is scored
  kSft,                   // only response tokens are scored
};

class TEMPER_API BatchSource {
 public:
  virtual ~BatchSource();
  // The next batch. Sources cycle through their data epoch after epoch; epochs_completed()
  // counts the passes finished.
  virtual StatusOr<Batch> next() = 0;
  virtual int64_t epochs_completed() const = 0;
  virtual Objective objective() const = 0;
  // The position (and any RNG state) as JSON text, and its inverse. restore_state() of a state
  // saved by the same source over the same data continues exactly where it was taken.
  virtual std::string save_state() const = 0;
  virtual Status restore_state(const std::string& state) = 0;
};

struct PackedTextOptions {
  int64_t batch_size = 8;
  int64_t seq_len = 256;
  bool shuffle = true;  // sequence order reshuffled each epoch, deterministically from `seed`
  uint64_t seed = 0;
};

// Continued pre-training: documents (already tokenized, BOS/EOS included as wanted) concatenated
// and cut into sequences of seq_len; labels = input_ids. The tail shorter than one sequence is
// dropped (stated policy; its size is reported by dropped_tokens()).
class TEMPER_API PackedTextSource final : public BatchSource {
 public:
  static StatusOr<std::unique_ptr<PackedTextSource>> create(const std::vector<std::vector<TokenId>>& documents,
                                                            const PackedTextOptions& options);
  StatusOr<Batch> next() override;
  int64_t epochs_completed() const override { return epoch_; }
  Objective objective() const override { return Objective::kContinuedPretraining; }
  std::string save_state() const override;
  Status restore_state(const std::string& state) override;

  int64_t num_sequences() const { return sequences_.size(0); }
  int64_t dropped_tokens() const { return dropped_tokens_; }

 private:
  PackedTextSource() = default;
  void reshuffle();

  PackedTextOptions options_;
  at::Tensor sequences_;  // [N, seq_len] int64
  std::vector<int64_t> order_;
  int64_t cursor_ = 0;
  int64_t epoch_ = 0;
  int64_t dropped_tokens_ = 0;
};

struct SftExample {
  std::vector<TokenId> prompt;    // scored nowhere
  std::vector<TokenId> response;  // scored (include EOS to teach the model to stop)
};

struct SftOptions {
  int64_t batch_size = 8;
  int64_t max_seq_len = 512;  // longer examples are truncated from the end of the response
  TokenId pad_id = 0;
  bool shuffle = true;
  uint64_t seed = 0;
};

// Supervised fine-tuning: prompt + response per row, right-padded to the longest row of the
// batch; labels are -100 on prompt and padding. Over-long responses are cut at max_seq_len
// (counted in truncated_examples()); an example whose prompt alone fills max_seq_len is dropped
// (counted in dropped_examples()); create() fails only when nothing is left.
class TEMPER_API SftSource final : public BatchSource {
 public:
  static StatusOr<std::unique_ptr<SftSource>> create(std::vector<SftExample> examples, const SftOptions& options);
  StatusOr<Batch> next() override;
  int64_t epochs_completed() const override { return epoch_; }
  Objective objective() const override { return Objective::kSft; }
  std::string save_state() const override;
  Status restore_state(const std::string& state) override;

  int64_t truncated_examples() const { return truncated_; }
  int64_t dropped_examples() const { return dropped_; }
  int64_t num_examples() const { return static_cast<int64_t>(examples_.size()); }

 private:
  SftSource() = default;
  void reshuffle();

  SftOptions options_;
  std::vector<SftExample> examples_;
  std::vector<int64_t> order_;
  int64_t cursor_ = 0;
  int64_t epoch_ = 0;
  int64_t truncated_ = 0;
  int64_t dropped_ = 0;
};

}  // namespace temper
