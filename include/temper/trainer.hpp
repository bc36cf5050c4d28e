// Trainer: continued pre-training or supervised fine-tuning of a Model, full fine-tuning or
// LoRA, with the guard rails fine-tuning practice asks for: held-out sets evaluated from the
// start (the base model's score) so forgetting is visible, epoch counting with a warning past 3
// epochs of SFT, early stopping, non-finite steps skipped and counted, and checkpoints that
// resume bit-exactly.
//
// Ownership: the Trainer keeps references to the Model, the BatchSource and the LoraAdapter it
// is created with; they must outlive it. One thread at a time; request_stop() may be called from
// any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "temper/api.hpp"
#include "temper/batch.hpp"
#include "temper/distributed.hpp"
#include "temper/model.hpp"
#include "temper/status.hpp"

namespace temper {

class LoraAdapter;

enum class OptimizerKind { kAdamW, kSgd };
enum class ScheduleKind { kConstant, kLinear, kCosine };

struct OptimizerOptions {
  OptimizerKind kind = OptimizerKind::kAdamW;
  double lr = 2e-4;
  double beta1 = 0.9;     // AdamW
  double beta2 = 0.999;   // AdamW
  double eps = 1e-8;      // AdamW
  double momentum = 0.9;  // SGD
  // Decoupled (AdamW) or L2 (SGD) weight decay, applied to linear and embedding weights only:
  // never to norms, biases, LoRA B or DoRA magnitudes (they hold scales and offsets that decay
  // would pull towards zero for no regularising benefit).
  double weight_decay = 0.0;
};

struct ScheduleOptions {
  ScheduleKind kind = ScheduleKind::kCosine;
  int64_t warmup_steps = 0;  // linear ramp from 0, as transformers' schedules
};

struct EvalSet {
  std::string name;            // e.g. "domain", "general"
  std::vector<Batch> batches;  // evaluated in full each time
};

struct EarlyStopping {
  std::string eval_set;    // which held-out set decides; empty = off
  int64_t patience = 3;    // evaluations without improvement before stopping
  double min_delta = 0.0;  // an improvement smaller than this does not count
};

struct StepMetrics {
  int64_t step = 0;         // optimizer steps completed
  double loss = 0.0;        // token-normalised over the step's micro-batches
  double lr = 0.0;
  double grad_norm = 0.0;   // before clipping
  int64_t tokens = 0;       // scored tokens in the step
  double tokens_per_second = 0.0;
  int64_t epoch = 0;        // epochs the data source completed
  bool skipped = false;     // non-finite loss or gradient: no update
};

struct EvalResult {
  std::string name;
  double loss = 0.0;
  double perplexity = 0.0;
  double loss_delta_from_base = 0.0;  // loss now minus loss at step 0 (the base model)
  int64_t tokens = 0;
};

struct EvalMetrics {
  int64_t step = 0;
  std::vector<EvalResult> sets;
};

struct TrainerOptions {
  int64_t max_steps = 100;                 // optimizer steps
  int64_t gradient_accumulation_steps = 1; // micro-batches per optimizer step
  OptimizerOptions optimizer;
  ScheduleOptions schedule;
  double max_grad_norm = 1.0;              // global-norm clipping; 0 = off
  // Full fine-tuning only: glob patterns over Hugging Face parameter names that train
  // ("model.layers.*.mlp.*"); empty = every parameter. Ignored with a LoRA adapter.
  std::vector<std::string> trainable_patterns;
  bool gradient_checkpointing = false;     // recompute each block in the backward pass
  uint64_t seed = 0;                       // dropout and any sampling inside training

  std::vector<EvalSet> eval_sets;
  int64_t eval_every = 0;                  // steps between evaluations; 0 = only at start and end
  EarlyStopping early_stopping;
  int64_t max_consecutive_nonfinite = 5;   // then training stops with ABORTED

  std::filesystem::path checkpoint_dir;    // empty = no automatic checkpoints
  int64_t checkpoint_every = 0;            // steps; 0 = only at the end (when a dir is set)
  int64_t keep_last_checkpoints = 2;
  std::filesystem::path metrics_jsonl;     // empty = none; one JSON object per step/eval appended

  // Data parallelism (temper/distributed.hpp). Null, or a communicator of a world of one: a
  // single process, and no collective is ever made. Otherwise every rank must be given the
  // same model, adapter, options and an identical BatchSource: each global batch is split by
  // rows between the ranks (rank r takes the r-th of world_size near-equal slices), so the ranks
  // see disjoint data, the mixing ratios hold globally, and the run computes the same
  // token-normalised loss and gradient as one process would on the whole batch. Metrics are
  // global (every rank's on_step sees the same values); rank 0 alone writes metrics_jsonl and
  // checkpoints, which every rank can resume, with any world size.
  std::shared_ptr<Communicator> communicator;
  // ZeRO-1: each rank keeps the fp32 masters and optimizer moments of ~1/world_size of the
  // trained tensors and updates only those, then sends them to the others.
  bool shard_optimizer_state = false;
  // Gradients are all-reduced in buckets of this many bytes while the backward runs.
  int64_t gradient_bucket_bytes = int64_t{25} << 20;
  // Gradients are summed over ranks in their own dtype by default, as PyTorch's DDP does: a bf16
  // model's in bf16, which moves half the bytes of fp32 and keeps no fp32 copy of them, but each
  // all-reduce rounds the sum to bf16 once more than one process would. true sums in fp32
  // buckets instead (every gradient converted on the way in, twice the bytes on the wire and
  // 4 bytes per trained parameter held), and the sums are not rounded to bf16. No effect on fp32
  // models.
  bool reduce_gradients_in_fp32 = false;

  // Progress and control; called on the training thread between steps.
  std::function<void(const StepMetrics&)> on_step;
  std::function<void(const EvalMetrics&)> on_eval;
  std::function<void(const std::string&)> on_log;  // warnings and notices
};

struct TrainResult {
  int64_t steps = 0;
  int64_t skipped_steps = 0;
  std::string stop_reason;  // "max_steps", "early_stopping", "requested", "data_exhausted"
  std::vector<EvalMetrics> evaluations;
};

// An EvalSet named `name` of up to `max_batches` (>= 1) batches drawn from `source`, which
// advances: typically a DataMixer over held-out data with ExhaustionPolicy::kStop, so that it
// ends after one pass (its last partial batch is not drawn). Stops early when the source ends
// (OUT_OF_RANGE); FAILED_PRECONDITION when it yields no batch at all.
TEMPER_API StatusOr<EvalSet> collect_eval_set(const std::string& name, BatchSource& source, int64_t max_batches);

class TEMPER_API Trainer {
 public:
  // Full fine-tuning when `adapter` is null (parameters chosen by trainable_patterns), LoRA
  // otherwise (only the adapter's tensors train; the model is frozen).
  static StatusOr<Trainer> create(Model& model, BatchSource& data, const TrainerOptions& options,
                                  LoraAdapter* adapter = nullptr);

  Trainer(Trainer&&) noexcept;
  Trainer& operator=(Trainer&&) noexcept;
  ~Trainer();

  // One optimizer step over gradient_accumulation_steps micro-batches.
  StatusOr<StepMetrics> step();
  // Evaluates every EvalSet now.
  StatusOr<EvalMetrics> evaluate();
  // Evaluates at the start (unless resumed past it), then steps until max_steps, early stopping
  // or request_stop(), evaluating and checkpointing as configured.
  StatusOr<TrainResult> train();

  // Writes a checkpoint directory (weights being trained, optimizer, schedule position, RNG,
  // data position, guard state, manifest with checksums); the directory appears whole or not at all.
  Status save_checkpoint(const std::filesystem::path& dir);
  // Restores a checkpoint written by save_checkpoint() for the same model, adapter shapes, data
  // and options; the run then continues exactly as if it had never stopped.
  Status resume(const std::filesystem::path& dir);

  // Thread-safe; train() returns after the current step.
  void request_stop();
  int64_t global_step() const;

  // The metrics of the last step taken by step() or train(); nullopt before the first step (and
  // right after resume()). Valid inside on_step, which sees the same values.
  const std::optional<StepMetrics>& last_step_metrics() const;
  // Every evaluation since creation (or since resume()), oldest first; the last is the one an
  // on_eval callback is being told about.
  const std::vector<EvalMetrics>& evaluations() const;
  const TrainerOptions& options() const;

  struct Impl;

 private:
  explicit Trainer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace temper
