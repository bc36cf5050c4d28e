#include "temper/trainer.hpp"

#include <fnmatch.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <nlohmann/json.hpp>
#include <xxhash.h>

#include "dist/gradient_reducer.hpp"
#include "dist/optimizer_shards.hpp"
#include "io/atomic_file.hpp"
#include "io/json_file.hpp"
#include "io/read_file.hpp"
#include "io/safetensors.hpp"
#include "lora/lora_adapter_impl.hpp"
#include "model/model_impl.hpp"
#include "model/projection_group.hpp"
#include "ops/compat.hpp"
#include "temper/lora_adapter.hpp"
#include "train/checkpoint_dir.hpp"
#include "train/optimizer.hpp"
#include "util/log.hpp"
#include "util/status_macros.hpp"
#include "util/strings.hpp"
#include "util/torch_errors.hpp"

namespace temper {
namespace {

constexpr int kCheckpointVersion = 1;
constexpr char kCheckpointPrefix[] = "step-";
constexpr char kTrainableFile[] = "trainable.safetensors";
constexpr char kOptimizerFile[] = "optimizer.safetensors";
constexpr char kRngFile[] = "rng.safetensors";
constexpr char kStateFile[] = "trainer_state.json";

// Tensors that hold scales or offsets rather than projections: decaying them towards zero
// regularises nothing and distorts the model (norm weights, biases), and LoRA B / DoRA
// magnitudes start at their intended values (zero / the weight norm).
bool takes_weight_decay(const std::string& name, const at::Tensor& t) {
  if (t.dim() < 2) return false;
  return name.find("lora_B") == std::string::npos && name.find("lora_magnitude_vector") == std::string::npos;
}

std::string checkpoint_name(int64_t step) { return fmt::format("{}{:06d}", kCheckpointPrefix, step); }

// Rank `rank`'s rows of a global batch: the rank-th of `world` near-equal consecutive slices (the
// first batch_size % world ranks take one row more). May be empty.
Batch rows_of_rank(const Batch& batch, int rank, int world) {
  if (world <= 1) return batch;
  const int64_t rows = batch.input_ids.size(0);
  const int64_t base = rows / world;
  const int64_t extra = rows % world;
  const int64_t begin = rank * base + std::min<int64_t>(rank, extra);
  const int64_t count = base + (rank < extra ? 1 : 0);
  auto slice = [&](const at::Tensor& t) { return t.defined() ? t.narrow(0, begin, count) : t; };
  return Batch{slice(batch.input_ids), slice(batch.labels), slice(batch.position_ids), slice(batch.segment_ids)};
}

// 52 bits of a hash of a batch's token ids: exact in a double, for checking that every rank drew
// the same global batch.
double batch_fingerprint(const std::vector<Batch>& batches) {
  XXH64_hash_t h = 0;
  for (const Batch& b : batches) {
    const at::Tensor ids = b.input_ids.to(at::kCPU, at::kLong).contiguous();
    h = XXH3_64bits_withSeed(ids.data_ptr(), static_cast<size_t>(ids.numel()) * sizeof(int64_t), h);
  }
  return static_cast<double>(h & ((uint64_t{1} << 52) - 1));
}

nlohmann::json model_fingerprint(const ModelConfig& c) {
  return {{"model_type", c.model_type}, {"vocab_size", c.vocab_size}, {"hidden_size", c.hidden_size},
          {"num_layers", c.num_layers}, {"num_attention_heads", c.num_attention_heads},
          {"num_key_value_heads", c.num_key_value_heads}, {"intermediate_size", c.intermediate_size}};
}

}  // namespace

struct Trainer::Impl {
  Model* model = nullptr;
  BatchSource* data = nullptr;
  LoraAdapter* adapter = nullptr;
  TrainerOptions options;

  // The tensors that train: the model's (or adapter's) own, and their fp32 masters (the same
  // tensor when it already is fp32), for the tensors this rank updates: all of them, or its
  // shard under shard_optimizer_state (owned[j] is the index in `trainable` of the optimizer's
  // tensor j).
  std::vector<std::pair<std::string, at::Tensor>> trainable;
  std::unique_ptr<Optimizer> optimizer;
  std::vector<size_t> owned;
  std::vector<int> owner;  // per trainable tensor: the rank that updates it

  // Data parallelism; all null/0 on a single process.
  Communicator* comm = nullptr;  // set only for a world of more than one
  std::unique_ptr<GradientReducer> reducer;
  int rank = 0;
  int world = 1;

  int64_t step = 0;
  int64_t skipped = 0;
  int64_t consecutive_nonfinite = 0;
  std::map<std::string, double> base_loss;  // eval loss at step 0, per set
  double best_loss = std::numeric_limits<double>::infinity();
  int64_t evals_without_improvement = 0;
  bool warned_sft_epochs = false;
  std::vector<EvalMetrics> evaluations;
  std::optional<StepMetrics> last_step;
  std::atomic<bool> stop_requested{false};

  // To the run's own receiver when it has one, else to the process-wide sink (temper/log.hpp).
  void log(LogLevel level, const std::string& message) const {
    if (options.on_log) {
      options.on_log(message);
    } else {
      log_message(level, message);
    }
  }

  void append_metrics(const nlohmann::json& record) const {
    if (options.metrics_jsonl.empty() || rank != 0) return;
    std::ofstream out(options.metrics_jsonl, std::ios::app);
    out << record.dump() << "\n";
  }

  // After the owners updated their tensors: every rank gets every tensor's new value.
  Status share_updated_params() {
    if (comm == nullptr || !options.shard_optimizer_state) return absl::OkStatus();
    std::vector<at::Tensor> params;
    for (auto& [name, p] : trainable) params.push_back(p);
    return broadcast_from_owners(*comm, params, owner);
  }

  // Makes every rank answer alike for an operation each did locally (saving on rank 0, resuming
  // everywhere): when any rank failed, the others fail too instead of stepping into a collective
  // that the failed one will never join.
  Status agree(const Status& local, const std::string& what) {
    if (comm == nullptr) return local;
    const at::TensorOptions f64 = at::TensorOptions().dtype(at::kDouble).device(comm->device());
    at::Tensor failed = at::zeros({world}, f64);
    if (!local.ok()) failed[rank] = static_cast<double>(static_cast<int>(local.code()));
    TEMPER_RETURN_IF_ERROR(comm->all_reduce_sum(failed));
    if (!local.ok()) return local;
    const at::Tensor cpu = failed.cpu();
    for (int r = 0; r < world; ++r) {
      const int code = static_cast<int>(cpu[r].item<double>());
      if (code != 0) {
        return Status(static_cast<absl::StatusCode>(code),
                      str_cat(what, " failed on rank ", r, " of ", world, " (its own status says why)"));
      }
    }
    return absl::OkStatus();
  }

  nlohmann::json run_fingerprint() const {
    nlohmann::json names = nlohmann::json::array();
    for (const auto& [name, t] : trainable) names.push_back({name, t.sizes().vec()});
    return {{"model", model_fingerprint(model->config())},
            {"mode", adapter != nullptr ? "lora" : "full"},
            {"trainable", names},
            {"optimizer", options.optimizer.kind == OptimizerKind::kAdamW ? "adamw" : "sgd"}};
  }

  StatusOr<StepMetrics> step_once();
  StatusOr<EvalMetrics> evaluate_all();
  Status save(const std::filesystem::path& dir);
  Status resume_from(const std::filesystem::path& dir);
};

Trainer::Trainer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Trainer::Trainer(Trainer&&) noexcept = default;
Trainer& Trainer::operator=(Trainer&&) noexcept = default;
Trainer::~Trainer() = default;

StatusOr<Trainer> Trainer::create(Model& model, BatchSource& data, const TrainerOptions& options, LoraAdapter* adapter) {
  if (options.max_steps < 1) return absl::InvalidArgumentError("Trainer: max_steps must be >= 1");
  if (options.gradient_accumulation_steps < 1) {
    return absl::InvalidArgumentError("Trainer: gradient_accumulation_steps must be >= 1");
  }
  if (!(options.optimizer.lr > 0) || !std::isfinite(options.optimizer.lr)) {
    return absl::InvalidArgumentError(str_cat("Trainer: learning rate must be positive, got ", options.optimizer.lr));
  }
  if (options.max_grad_norm < 0 || options.schedule.warmup_steps < 0 || options.optimizer.weight_decay < 0) {
    return absl::InvalidArgumentError("Trainer: max_grad_norm, warmup_steps and weight_decay must be >= 0");
  }
  if (!options.early_stopping.eval_set.empty()) {
    bool found = false;
    for (const EvalSet& set : options.eval_sets) found |= set.name == options.early_stopping.eval_set;
    if (!found) {
      return absl::InvalidArgumentError(str_cat("Trainer: early stopping watches eval set \"",
                                                options.early_stopping.eval_set, "\", which is not among the eval sets"));
    }
  }
  // An adapter of another model would train tensors the model's forward never uses.
  if (adapter != nullptr && (adapter->impl().model != &model.impl() || adapter->impl().removed)) {
    return absl::InvalidArgumentError("Trainer: the adapter is not installed on this model (created on another model, or removed)");
  }
  for (const EvalSet& set : options.eval_sets) {
    if (set.name.empty() || set.batches.empty()) {
      return absl::InvalidArgumentError("Trainer: every eval set needs a name and at least one batch");
    }
  }

  return guarded("creating the Trainer", [&]() -> StatusOr<Trainer> {
    auto impl = std::make_unique<Impl>();
    impl->model = &model;
    impl->data = &data;
    impl->adapter = adapter;
    impl->options = options;
    at::manual_seed(static_cast<uint64_t>(options.seed));

    // Freeze everything, then unfreeze what trains.
    for (auto& [name, p] : model.named_parameters()) {
      p.requires_grad_(false);
      p.mutable_grad() = at::Tensor();
    }
    // Full fine-tuning on the GPU: q/k/v and gate/up as one grouped GEMM each (forward, input and
    // weight gradients; model/projection_group.hpp), packed while still frozen. The parameters
    // collected below are then the packed tensors' row views.
    if (adapter == nullptr && model.impl().options.device.is_cuda()) {
      for (DecoderLayer& layer : model.impl().layers) pack_projections(layer);
    }
    if (adapter != nullptr) {
      impl->trainable = adapter->named_parameters();
    } else {
      std::vector<bool> used(options.trainable_patterns.size(), false);
      for (auto& [name, p] : model.named_parameters()) {
        bool selected = options.trainable_patterns.empty();
        for (size_t i = 0; i < options.trainable_patterns.size(); ++i) {
          if (::fnmatch(options.trainable_patterns[i].c_str(), name.c_str(), 0) == 0) selected = used[i] = true;
        }
        if (selected) impl->trainable.emplace_back(name, p);
      }
      for (size_t i = 0; i < used.size(); ++i) {
        if (!used[i]) {
          return absl::InvalidArgumentError(str_cat("Trainer: trainable pattern \"", options.trainable_patterns[i],
                                                    "\" matches no parameter"));
        }
      }
    }
    if (impl->trainable.empty()) return absl::InvalidArgumentError("Trainer: nothing to train");
    for (auto& [name, p] : impl->trainable) {
      if (!at::isFloatingType(p.scalar_type())) {
        return absl::InvalidArgumentError(str_cat("Trainer: ", name, " is not a floating-point tensor"));
      }
    }
    if (options.communicator != nullptr && options.communicator->world_size() > 1) {
      Communicator& comm = *options.communicator;
      for (auto& [name, p] : impl->trainable) {
        if (p.device() != comm.device()) {
          return absl::InvalidArgumentError(str_cat("Trainer: ", name, " is on ", p.device().str(),
                                                    " but the communicator's device is ", comm.device().str()));
        }
      }
      if (options.gradient_bucket_bytes < 1) {
        return absl::InvalidArgumentError("Trainer: gradient_bucket_bytes must be >= 1");
      }
      // Gloo (data parallelism on CPUs) cannot move bf16 in some libtorch builds (1.13: "Invalid
      // scalar type"). Asked once with one element on every rank (all hold the same model), so
      // that such a model ends here with a status that says so, not with a failed broadcast that
      // seems to blame another rank.
      if (comm.backend_name() == "gloo") {
        for (auto& [name, p] : impl->trainable) {
          if (p.scalar_type() != at::kBFloat16) continue;
          at::Tensor probe = at::zeros({1}, at::TensorOptions().dtype(at::kBFloat16));
          if (const Status reduced = comm.all_reduce_sum(probe); !reduced.ok()) {
            return absl::UnimplementedError(
                str_cat("Trainer: ", name, " is bf16, and this libtorch's Gloo backend (data parallelism on CPUs) "
                        "cannot reduce bf16 (", std::string(reduced.message()), "); train in fp32 on CPUs, or in bf16 on GPUs (NCCL)"));
          }
          break;
        }
      }
      impl->comm = &comm;
      impl->rank = comm.rank();
      impl->world = comm.world_size();
      // Every rank starts from rank 0's values (as DDP does): a differently seeded adapter or
      // model elsewhere would otherwise drift apart silently.
      std::vector<at::Tensor> params;
      for (auto& [name, p] : impl->trainable) params.push_back(p.detach());
      TEMPER_RETURN_IF_ERROR(broadcast_from_owners(comm, params, std::vector<int>(params.size(), 0)));
    }
    std::vector<int64_t> numels;
    for (auto& [name, p] : impl->trainable) numels.push_back(p.numel());
    impl->owner = options.shard_optimizer_state && impl->world > 1 ? partition_by_size(numels, impl->world)
                                                                   : std::vector<int>(numels.size(), impl->rank);
    std::vector<OptimizedTensor> optimized;
    for (size_t i = 0; i < impl->trainable.size(); ++i) {
      auto& [name, p] = impl->trainable[i];
      p.requires_grad_(true);
      if (impl->owner[i] != impl->rank) continue;
      at::Tensor master = p.scalar_type() == at::kFloat ? p : p.detach().to(at::kFloat).clone();
      // The optimizer writes `p` (rounded to its dtype) from the master after every update.
      optimized.push_back({name, master, takes_weight_decay(name, p), p});
      impl->owned.push_back(i);
    }
    impl->optimizer = std::make_unique<Optimizer>(options.optimizer, std::move(optimized));
    if (impl->comm != nullptr) {
      impl->reducer = std::make_unique<GradientReducer>(
          *impl->comm, impl->trainable, options.gradient_bucket_bytes,
          options.reduce_gradients_in_fp32 ? BucketDtype::kFloat32 : BucketDtype::kGradient);
    }
    model.impl().gradient_checkpointing = options.gradient_checkpointing;
    return Trainer(std::move(impl));
  });
}

StatusOr<StepMetrics> Trainer::Impl::step_once() {
  const auto start = std::chrono::steady_clock::now();
  // Fetch the whole step first: the loss is normalised by the scored tokens of all its
  // micro-batches (transformers PR 34191), not averaged over micro-batch means.
  std::vector<Batch> micro;
  int64_t tokens = 0;
  for (int64_t i = 0; i < options.gradient_accumulation_steps; ++i) {
    TEMPER_ASSIGN_OR_RETURN(Batch batch, data->next());
    TEMPER_ASSIGN_OR_RETURN(const int64_t scored,
                            guarded("counting the scored tokens of a batch", [&]() -> StatusOr<int64_t> {
                              // Labels go to the host once, here: this count and the forward's own
                              // then read no device memory. Labels left on a GPU made every forward
                              // wait for the device before its backward could be issued (a 4 ms idle
                              // gap per 1B step in train_bench's profile).
                              if (batch.labels.defined() && !batch.labels.device().is_cpu()) {
                                batch.labels = batch.labels.cpu();
                              }
                              return scored_tokens(batch);
                            }));
    tokens += scored;
    micro.push_back(std::move(batch));
  }
  if (tokens == 0) {
    return absl::InvalidArgumentError(str_cat("Trainer: step ", step + 1,
                                              " has no scored token (every label is -100); check the data's loss mask"));
  }
  if (data->objective() == Objective::kSft && data->epochs_completed() >= 3 && !warned_sft_epochs) {
    warned_sft_epochs = true;
    log(LogLevel::kWarning, str_cat("warning: training has entered epoch ", data->epochs_completed() + 1,
                " of the SFT data; more than 3 epochs over a small static set tends to overfit and can damage the "
                "model's general language ability (watch the general eval set, consider early stopping)"));
  }

  for (auto& [name, p] : trainable) p.mutable_grad() = at::Tensor();
  if (adapter != nullptr) adapter->set_training(true);  // dropout on while training only
  // Summed on the device and read once with the gradient norm: a read here would wait for the
  // whole backward, and the host would then issue the optimizer's launches to an idle GPU.
  at::Tensor loss_total;  // [] fp64
  for (size_t m = 0; m < micro.size(); ++m) {
    const Batch batch = rows_of_rank(micro[m], rank, world);
    if (reducer != nullptr && m + 1 == micro.size()) reducer->arm();
    if (batch.input_ids.size(0) == 0) continue;  // more ranks than rows: this rank only reduces
    ForwardInput input;
    input.input_ids = batch.input_ids;
    input.labels = batch.labels;
    input.position_ids = batch.position_ids;
    input.segment_ids = batch.segment_ids;
    input.return_logits = false;  // the loss only: no [B, T, vocab] logits (the largest activation)
    absl::StatusOr<ForwardOutput> out = model->forward(input);
    absl::Status backward = out.status();
    if (out.ok()) {
      backward = guarded("backward", [&]() -> absl::Status {
        (out->loss_sum / static_cast<double>(tokens)).backward();
        return absl::OkStatus();
      });
    }
    if (!backward.ok()) {
      if (reducer != nullptr) reducer->reset();
      for (auto& [name, p] : trainable) p.mutable_grad() = at::Tensor();
      return backward;
    }
    const at::Tensor micro_loss = out->loss_sum.detach().to(at::kDouble);
    loss_total = loss_total.defined() ? loss_total + micro_loss : micro_loss;
  }
  // Gradients summed over ranks (a world of more than one): in each tensor's dtype, or fp32 under
  // reduce_gradients_in_fp32; the norm and the optimizer take either.
  std::vector<at::Tensor> reduced;
  at::Tensor totals;  // a world of more than one: [1 + world] fp64, the loss and each rank's batch fingerprint
  if (reducer != nullptr) {
    TEMPER_ASSIGN_OR_RETURN(reduced, reducer->finish());
    // The loss, and a fingerprint of the global batch each rank drew: ranks given different data
    // would train on a mixture nobody asked for.
    totals = at::zeros({1 + world}, at::TensorOptions().dtype(at::kDouble).device(comm->device()));
    if (loss_total.defined()) totals[0] = loss_total.to(totals.device());
    totals[1 + rank] = batch_fingerprint(micro);
    TEMPER_RETURN_IF_ERROR(comm->all_reduce_sum(totals));
  }

  // The gradients as the optimizer takes them and their global norm, as torch.nn.utils.
  // clip_grad_norm_ computes it (the norm of the per-tensor norms, each in fp32, here in a few
  // multi-tensor launches). The norm is read together with the loss (and the fingerprints): the
  // step's one wait for the device.
  std::vector<at::Tensor> grads;
  at::Tensor host;  // [n] fp64 on the CPU: the loss sum, then the fingerprints (several ranks), then the norm
  TEMPER_RETURN_IF_ERROR(guarded("gradient norm", [&]() -> absl::Status {
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < trainable.size(); ++i) {
      const at::Tensor& p = trainable[i].second;
      grads.push_back(!reduced.empty()       ? reduced[i]
                      : p.grad().defined() ? p.grad()  // in p's dtype: the optimizer reads it as is
                                           : at::zeros(p.sizes(), p.options().dtype(at::kFloat)));
    }
    const at::Tensor norm64 = at::stack(compat::foreach_norm_fp32(grads)).norm().to(at::kDouble).reshape({1});
    const at::Tensor front = totals.defined()      ? totals
                             : loss_total.defined() ? loss_total.reshape({1})
                                                    : at::zeros({1}, norm64.options());
    host = at::cat({front.to(norm64.device()), norm64}).cpu();
    return absl::OkStatus();
  }));
  const double loss_sum = host[0].item<double>();
  const double grad_norm = host[host.size(0) - 1].item<double>();
  for (int r = 1; r < world && reducer != nullptr; ++r) {
    if (host[1 + r].item<double>() != host[1].item<double>()) {
      for (auto& [name, p] : trainable) p.mutable_grad() = at::Tensor();
      return absl::FailedPreconditionError(str_cat(
          "Trainer: at step ", step + 1, " rank ", r, " drew another global batch than rank 0: every rank must be "
          "given an identical data source (same files, options, seed and position); the Trainer splits each batch "
          "between the ranks itself"));
    }
  }

  StepMetrics metrics;
  TEMPER_RETURN_IF_ERROR(guarded("optimizer step", [&]() -> absl::Status {
    at::NoGradGuard no_grad;
    const double loss = loss_sum / static_cast<double>(tokens);
    metrics.loss = loss;
    metrics.grad_norm = grad_norm;
    metrics.tokens = tokens;
    metrics.lr = options.optimizer.lr * schedule_factor(options.schedule, step, options.max_steps);
    if (!std::isfinite(loss) || !std::isfinite(grad_norm)) {
      metrics.skipped = true;
      return absl::OkStatus();
    }
    std::vector<at::Tensor> owned_grads;
    for (size_t i : owned) owned_grads.push_back(grads[i]);
    // Clipping as a scale the update applies while it reads each gradient (no pass of its own).
    const double coef = options.max_grad_norm > 0 ? std::min(1.0, options.max_grad_norm / (grad_norm + 1e-6)) : 1.0;
    optimizer->step(owned_grads, metrics.lr, coef);
    return share_updated_params();
  }));
  for (auto& [name, p] : trainable) p.mutable_grad() = at::Tensor();

  ++step;
  metrics.step = step;
  metrics.epoch = data->epochs_completed();
  if (metrics.skipped) {
    ++skipped;
    ++consecutive_nonfinite;
    log(LogLevel::kWarning, str_cat("warning: step ", step, " skipped: non-finite loss or gradient (", consecutive_nonfinite, " in a row)"));
  } else {
    consecutive_nonfinite = 0;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  metrics.tokens_per_second = seconds > 0 ? static_cast<double>(tokens) / seconds : 0.0;
  append_metrics({{"type", "step"}, {"step", metrics.step}, {"loss", metrics.loss}, {"lr", metrics.lr},
                  {"grad_norm", metrics.grad_norm}, {"tokens", metrics.tokens},
                  {"tokens_per_second", metrics.tokens_per_second}, {"epoch", metrics.epoch},
                  {"skipped", metrics.skipped}});
  last_step = metrics;
  if (options.on_step) options.on_step(metrics);
  if (consecutive_nonfinite > options.max_consecutive_nonfinite) {
    return absl::AbortedError(str_cat("Trainer: ", consecutive_nonfinite,
                                      " consecutive steps had a non-finite loss or gradient; training stopped at step ",
                                      step, " (lower the learning rate, check the data, or use fp32/bf16 instead of fp16)"));
  }
  return metrics;
}

StatusOr<EvalMetrics> Trainer::Impl::evaluate_all() {
  EvalMetrics metrics;
  metrics.step = step;
  at::NoGradGuard no_grad;
  if (adapter != nullptr) adapter->set_training(false);
  nlohmann::json record = {{"type", "eval"}, {"step", step}};
  for (const EvalSet& set : options.eval_sets) {
    double nll = 0.0;
    int64_t tokens = 0;
    for (const Batch& global_batch : set.batches) {
      const Batch batch = rows_of_rank(global_batch, rank, world);
      if (batch.input_ids.size(0) == 0) continue;
      ForwardInput input;
      input.input_ids = batch.input_ids;
      input.labels = batch.labels;
      input.position_ids = batch.position_ids;
      input.segment_ids = batch.segment_ids;
      input.return_logits = false;
      TEMPER_ASSIGN_OR_RETURN(ForwardOutput out, model->forward(input));
      nll += out.loss_sum.item<double>();
      tokens += out.num_tokens;
    }
    if (comm != nullptr) {
      at::Tensor totals = at::tensor({nll, static_cast<double>(tokens)}, at::TensorOptions().dtype(at::kDouble)).to(comm->device());
      TEMPER_RETURN_IF_ERROR(comm->all_reduce_sum(totals));
      const at::Tensor cpu = totals.cpu();
      nll = cpu[0].item<double>();
      tokens = static_cast<int64_t>(cpu[1].item<double>());
    }
    if (tokens == 0) {
      return absl::InvalidArgumentError(str_cat("Trainer: eval set \"", set.name, "\" scores no token"));
    }
    EvalResult result;
    result.name = set.name;
    result.loss = nll / static_cast<double>(tokens);
    result.perplexity = std::exp(result.loss);
    result.tokens = tokens;
    if (step == 0 && !base_loss.count(set.name)) base_loss[set.name] = result.loss;
    auto base = base_loss.find(set.name);
    result.loss_delta_from_base = base != base_loss.end() ? result.loss - base->second : 0.0;
    record[set.name] = {{"loss", result.loss}, {"perplexity", result.perplexity},
                        {"loss_delta_from_base", result.loss_delta_from_base}, {"tokens", tokens}};
    metrics.sets.push_back(result);
  }
  evaluations.push_back(metrics);
  append_metrics(record);
  if (options.on_eval) options.on_eval(metrics);
  return metrics;
}

StatusOr<StepMetrics> Trainer::step() { return impl_->step_once(); }

StatusOr<EvalMetrics> Trainer::evaluate() { return impl_->evaluate_all(); }

void Trainer::request_stop() { impl_->stop_requested = true; }

int64_t Trainer::global_step() const { return impl_->step; }

const std::optional<StepMetrics>& Trainer::last_step_metrics() const { return impl_->last_step; }

const std::vector<EvalMetrics>& Trainer::evaluations() const { return impl_->evaluations; }

const TrainerOptions& Trainer::options() const { return impl_->options; }

StatusOr<TrainResult> Trainer::train() {
  Impl& s = *impl_;
  const TrainerOptions& o = s.options;
  TrainResult result;
  result.stop_reason = "max_steps";
  const bool evaluating = !o.eval_sets.empty();
  if (evaluating && s.step == 0 && s.evaluations.empty()) {
    TEMPER_RETURN_IF_ERROR(s.evaluate_all().status());
  }
  bool evaluated_last = s.step == 0;
  while (s.step < o.max_steps) {
    if (s.stop_requested.exchange(false)) {
      result.stop_reason = "requested";
      break;
    }
    const absl::Status stepped = s.step_once().status();
    if (absl::IsOutOfRange(stepped)) {  // a finite data stream ended (DataMixer exhaustion policies)
      result.stop_reason = "data_exhausted";
      s.log(LogLevel::kInfo, str_cat("data exhausted at step ", s.step, ": ", std::string(stepped.message())));
      break;
    }
    TEMPER_RETURN_IF_ERROR(stepped);
    evaluated_last = false;
    if (evaluating && o.eval_every > 0 && s.step % o.eval_every == 0) {
      TEMPER_ASSIGN_OR_RETURN(EvalMetrics eval, s.evaluate_all());
      evaluated_last = true;
      if (!o.early_stopping.eval_set.empty()) {
        for (const EvalResult& r : eval.sets) {
          if (r.name != o.early_stopping.eval_set) continue;
          if (r.loss < s.best_loss - o.early_stopping.min_delta) {
            s.best_loss = r.loss;
            s.evals_without_improvement = 0;
          } else {
            ++s.evals_without_improvement;
          }
        }
        if (s.evals_without_improvement >= o.early_stopping.patience) {
          result.stop_reason = "early_stopping";
          s.log(LogLevel::kInfo, str_cat("early stopping at step ", s.step, ": \"", o.early_stopping.eval_set, "\" did not improve for ",
                        s.evals_without_improvement, " evaluations"));
        }
      }
    }
    if (!o.checkpoint_dir.empty() && o.checkpoint_every > 0 && s.step % o.checkpoint_every == 0) {
      TEMPER_RETURN_IF_ERROR(save_checkpoint(o.checkpoint_dir / checkpoint_name(s.step)));
      TEMPER_RETURN_IF_ERROR(s.agree(s.rank == 0 ? prune_checkpoints(o.checkpoint_dir, kCheckpointPrefix, o.keep_last_checkpoints)
                                              : absl::OkStatus(),
                                  "pruning old checkpoints"));
    }
    if (result.stop_reason == "early_stopping") break;
  }
  if (evaluating && !evaluated_last) TEMPER_RETURN_IF_ERROR(s.evaluate_all().status());
  if (!o.checkpoint_dir.empty() && (o.checkpoint_every == 0 || s.step % o.checkpoint_every != 0)) {
    TEMPER_RETURN_IF_ERROR(save_checkpoint(o.checkpoint_dir / checkpoint_name(s.step)));
    TEMPER_RETURN_IF_ERROR(s.agree(s.rank == 0 ? prune_checkpoints(o.checkpoint_dir, kCheckpointPrefix, o.keep_last_checkpoints)
                                              : absl::OkStatus(),
                                  "pruning old checkpoints"));
  }
  if (s.adapter != nullptr) s.adapter->set_training(false);
  result.steps = s.step;
  result.skipped_steps = s.skipped;
  result.evaluations = s.evaluations;
  return result;
}

Status Trainer::save_checkpoint(const std::filesystem::path& dir) { return impl_->save(dir); }

Status Trainer::Impl::save(const std::filesystem::path& dir) {
  const std::string what = str_cat("saving checkpoint ", dir.string());
  const Status local = guarded(what, [&]() -> Status {
    // The full state of every trained tensor, on rank 0: its own, and under sharding the
    // others' (collected tensor by tensor, so no rank ever holds the whole state twice).
    NamedTensors masters;
    NamedTensors moments;
    const NamedTensors own_state = optimizer->state();
    std::map<std::string, at::Tensor> own_moments(own_state.begin(), own_state.end());
    std::map<size_t, size_t> local_index;
    for (size_t j = 0; j < owned.size(); ++j) local_index[owned[j]] = j;
    const std::vector<std::string> suffixes = Optimizer::state_suffixes(options.optimizer.kind);
    for (size_t i = 0; i < trainable.size(); ++i) {
      const std::string& name = trainable[i].first;
      const bool mine = owner[i] == rank;
      if (owner[i] == 0 || !options.shard_optimizer_state || comm == nullptr) {
        if (rank != 0) continue;
        masters.emplace_back(name, optimizer->tensors()[local_index.at(i)].master);
        for (const std::string& suffix : suffixes) moments.emplace_back(name + suffix, own_moments.at(name + suffix));
        continue;
      }
      const at::IntArrayRef shape = trainable[i].second.sizes();
      TEMPER_ASSIGN_OR_RETURN(at::Tensor master,
                              broadcast_tensor(*comm, mine ? optimizer->tensors()[local_index.at(i)].master : at::Tensor(),
                                               owner[i], shape));
      if (rank == 0) masters.emplace_back(name, master.cpu());
      for (const std::string& suffix : suffixes) {
        TEMPER_ASSIGN_OR_RETURN(at::Tensor moment,
                                broadcast_tensor(*comm, mine ? own_moments.at(name + suffix) : at::Tensor(), owner[i], shape));
        if (rank == 0) moments.emplace_back(name + suffix, moment.cpu());
      }
    }
    if (rank != 0) return absl::OkStatus();  // rank 0 writes; the others only contributed
    nlohmann::json base_json = nlohmann::json::object();
    for (const auto& [name, loss] : base_loss) base_json[name] = loss;
    const nlohmann::json state = {
        {"format", "temper-trainer-state"},
        {"version", kCheckpointVersion},
        {"step", step},
        {"skipped", skipped},
        {"consecutive_nonfinite", consecutive_nonfinite},
        {"base_loss", base_json},
        {"best_loss", std::isfinite(best_loss) ? nlohmann::json(best_loss) : nlohmann::json(nullptr)},
        {"evals_without_improvement", evals_without_improvement},
        {"warned_sft_epochs", warned_sft_epochs},
        {"data_state", data->save_state()},
        {"world_size", world},
        {"run", run_fingerprint()},
    };
    const at::Tensor rng = at::detail::getDefaultCPUGenerator().get_state();
    return write_checkpoint_dir(dir, [&](const std::filesystem::path& tmp) -> Status {
      TEMPER_RETURN_IF_ERROR(write_safetensors(tmp / kTrainableFile, masters));
      TEMPER_RETURN_IF_ERROR(write_safetensors(tmp / kOptimizerFile, moments));
      TEMPER_RETURN_IF_ERROR(write_safetensors(tmp / kRngFile, {{"cpu", rng}}));
      return write_file_atomic(tmp / kStateFile, state.dump(2) + "\n");
    });
  });
  return agree(local, what);
}

Status Trainer::resume(const std::filesystem::path& dir) {
  return impl_->agree(impl_->resume_from(dir), str_cat("resuming from ", dir.string()));
}

// Every rank reads the whole checkpoint (written with any world size) and keeps what it owns.
Status Trainer::Impl::resume_from(const std::filesystem::path& dir) {
  Impl& s = *this;
  TEMPER_RETURN_IF_ERROR(verify_checkpoint_dir(dir));
  const std::string where = dir.string();
  TEMPER_ASSIGN_OR_RETURN(nlohmann::json state, read_json_file(dir / kStateFile));
  if (!state.is_object() || state.value("format", "") != "temper-trainer-state") {
    return absl::InvalidArgumentError(str_cat(where, ": not a temper trainer checkpoint"));
  }
  if (state.value("version", 0) != kCheckpointVersion) {
    return absl::FailedPreconditionError(str_cat(where, ": checkpoint version ", state.value("version", 0),
                                                 " is not supported (this temper writes version ", kCheckpointVersion, ")"));
  }
  if (state["run"] != s.run_fingerprint()) {
    return absl::FailedPreconditionError(str_cat(where, ": the checkpoint was written for another model, adapter or "
                                                 "optimizer (its run description differs from this trainer's)"));
  }
  TEMPER_ASSIGN_OR_RETURN(SafetensorsFile trainable, SafetensorsFile::open(dir / kTrainableFile));
  TEMPER_ASSIGN_OR_RETURN(SafetensorsFile optimizer, SafetensorsFile::open(dir / kOptimizerFile));
  TEMPER_ASSIGN_OR_RETURN(SafetensorsFile rng, SafetensorsFile::open(dir / kRngFile));
  TEMPER_ASSIGN_OR_RETURN(const int64_t step, json_int(state, "step", where));
  TEMPER_RETURN_IF_ERROR(s.data->restore_state(state.value("data_state", "")));
  return guarded(str_cat("resuming from ", where), [&]() -> Status {
    at::NoGradGuard no_grad;
    std::map<size_t, size_t> local_index;
    for (size_t j = 0; j < s.owned.size(); ++j) local_index[s.owned[j]] = j;
    for (size_t i = 0; i < s.trainable.size(); ++i) {
      const auto& [name, param] = s.trainable[i];
      TEMPER_ASSIGN_OR_RETURN(at::Tensor saved, trainable.tensor(name));
      if (saved.sizes() != param.sizes()) {
        return absl::FailedPreconditionError(str_cat(where, ": ", name, " has another shape in the checkpoint"));
      }
      auto mine = local_index.find(i);
      if (mine != local_index.end()) {
        s.optimizer->tensors()[mine->second].master.copy_(saved);
      } else {
        s.trainable[i].second.copy_(saved);  // another rank's shard: its value only
      }
    }
    TEMPER_RETURN_IF_ERROR(s.optimizer->load_state(optimizer, step));
    s.optimizer->write_params();
    TEMPER_ASSIGN_OR_RETURN(at::Tensor rng_state, rng.tensor("cpu"));
    at::Generator generator = at::detail::getDefaultCPUGenerator();
    generator.set_state(rng_state.clone());
    s.step = step;
    s.skipped = state.value("skipped", 0);
    s.consecutive_nonfinite = state.value("consecutive_nonfinite", 0);
    s.base_loss.clear();
    for (auto it = state["base_loss"].begin(); it != state["base_loss"].end(); ++it) s.base_loss[it.key()] = it->get<double>();
    s.best_loss = state["best_loss"].is_number() ? state["best_loss"].get<double>() : std::numeric_limits<double>::infinity();
    s.evals_without_improvement = state.value("evals_without_improvement", 0);
    s.warned_sft_epochs = state.value("warned_sft_epochs", false);
    s.evaluations.clear();
    s.last_step.reset();
    return absl::OkStatus();
  });
}

}  // namespace temper
