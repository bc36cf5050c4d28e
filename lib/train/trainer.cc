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

#include "io/atomic_file.hpp"
#include "io/json_file.hpp"
#include "io/read_file.hpp"
#include "io/safetensors.hpp"
#include "lora/lora_adapter_impl.hpp"
#include "model/model_impl.hpp"
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
  // tensor when it already is fp32).
  std::vector<std::pair<std::string, at::Tensor>> trainable;
  std::unique_ptr<Optimizer> optimizer;

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
    if (options.metrics_jsonl.empty()) return;
    std::ofstream out(options.metrics_jsonl, std::ios::app);
    out << record.dump() << "\n";
  }

  void copy_masters_to_params() {
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < trainable.size(); ++i) {
      const at::Tensor& master = optimizer->tensors()[i].master;
      if (!trainable[i].second.is_same(master)) trainable[i].second.copy_(master);
    }
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
    std::vector<OptimizedTensor> optimized;
    for (auto& [name, p] : impl->trainable) {
      if (!at::isFloatingType(p.scalar_type())) {
        return absl::InvalidArgumentError(str_cat("Trainer: ", name, " is not a floating-point tensor"));
      }
      p.requires_grad_(true);
      at::Tensor master = p.scalar_type() == at::kFloat ? p : p.detach().to(at::kFloat).clone();
      optimized.push_back({name, master, takes_weight_decay(name, p)});
    }
    impl->optimizer = std::make_unique<Optimizer>(options.optimizer, std::move(optimized));
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
    tokens += scored_tokens(batch);
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
  double loss_sum = 0.0;
  for (const Batch& batch : micro) {
    ForwardInput input;
    input.input_ids = batch.input_ids;
    input.labels = batch.labels;
    input.position_ids = batch.position_ids;
    input.segment_ids = batch.segment_ids;
    input.return_logits = false;  // the loss only: no [B, T, vocab] logits (the largest activation)
    TEMPER_ASSIGN_OR_RETURN(ForwardOutput out, model->forward(input));
    TEMPER_RETURN_IF_ERROR(guarded("backward", [&]() -> absl::Status {
      (out.loss_sum / static_cast<double>(tokens)).backward();
      return absl::OkStatus();
    }));
    loss_sum += out.loss_sum.item<double>();
  }

  StepMetrics metrics;
  TEMPER_RETURN_IF_ERROR(guarded("optimizer step", [&]() -> absl::Status {
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> grads;
    std::vector<at::Tensor> norms;
    for (auto& [name, p] : trainable) {
      at::Tensor g = p.grad().defined() ? p.grad().to(at::kFloat) : at::zeros(p.sizes(), p.options().dtype(at::kFloat));
      norms.push_back(g.norm());
      grads.push_back(std::move(g));
    }
    // Global norm as torch.nn.utils.clip_grad_norm_ computes it: the norm of the per-tensor norms.
    const double grad_norm = at::stack(norms).norm().item<double>();
    const double loss = loss_sum / static_cast<double>(tokens);
    metrics.loss = loss;
    metrics.grad_norm = grad_norm;
    metrics.tokens = tokens;
    metrics.lr = options.optimizer.lr * schedule_factor(options.schedule, step, options.max_steps);
    if (!std::isfinite(loss) || !std::isfinite(grad_norm)) {
      metrics.skipped = true;
      return absl::OkStatus();
    }
    if (options.max_grad_norm > 0) {
      const double coef = std::min(1.0, options.max_grad_norm / (grad_norm + 1e-6));
      for (at::Tensor& g : grads) g.mul_(coef);
    }
    optimizer->step(grads, metrics.lr);
    copy_masters_to_params();
    return absl::OkStatus();
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
    for (const Batch& batch : set.batches) {
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
      TEMPER_RETURN_IF_ERROR(prune_checkpoints(o.checkpoint_dir, kCheckpointPrefix, o.keep_last_checkpoints));
    }
    if (result.stop_reason == "early_stopping") break;
  }
  if (evaluating && !evaluated_last) TEMPER_RETURN_IF_ERROR(s.evaluate_all().status());
  if (!o.checkpoint_dir.empty() && (o.checkpoint_every == 0 || s.step % o.checkpoint_every != 0)) {
    TEMPER_RETURN_IF_ERROR(save_checkpoint(o.checkpoint_dir / checkpoint_name(s.step)));
    TEMPER_RETURN_IF_ERROR(prune_checkpoints(o.checkpoint_dir, kCheckpointPrefix, o.keep_last_checkpoints));
  }
  if (s.adapter != nullptr) s.adapter->set_training(false);
  result.steps = s.step;
  result.skipped_steps = s.skipped;
  result.evaluations = s.evaluations;
  return result;
}

Status Trainer::save_checkpoint(const std::filesystem::path& dir) {
  Impl& s = *impl_;
  return guarded(str_cat("saving checkpoint ", dir.string()), [&]() -> Status {
    NamedTensors trainable;
    for (const OptimizedTensor& t : s.optimizer->tensors()) trainable.emplace_back(t.name, t.master);
    nlohmann::json base = nlohmann::json::object();
    for (const auto& [name, loss] : s.base_loss) base[name] = loss;
    const nlohmann::json state = {
        {"format", "temper-trainer-state"},
        {"version", kCheckpointVersion},
        {"step", s.step},
        {"skipped", s.skipped},
        {"consecutive_nonfinite", s.consecutive_nonfinite},
        {"base_loss", base},
        {"best_loss", std::isfinite(s.best_loss) ? nlohmann::json(s.best_loss) : nlohmann::json(nullptr)},
        {"evals_without_improvement", s.evals_without_improvement},
        {"warned_sft_epochs", s.warned_sft_epochs},
        {"data_state", s.data->save_state()},
        {"run", s.run_fingerprint()},
    };
    const at::Tensor rng = at::detail::getDefaultCPUGenerator().get_state();
    return write_checkpoint_dir(dir, [&](const std::filesystem::path& tmp) -> Status {
      TEMPER_RETURN_IF_ERROR(write_safetensors(tmp / kTrainableFile, trainable));
      TEMPER_RETURN_IF_ERROR(write_safetensors(tmp / kOptimizerFile, s.optimizer->state()));
      TEMPER_RETURN_IF_ERROR(write_safetensors(tmp / kRngFile, {{"cpu", rng}}));
      return write_file_atomic(tmp / kStateFile, state.dump(2) + "\n");
    });
  });
}

Status Trainer::resume(const std::filesystem::path& dir) {
  Impl& s = *impl_;
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
    for (const OptimizedTensor& t : s.optimizer->tensors()) {
      TEMPER_ASSIGN_OR_RETURN(at::Tensor saved, trainable.tensor(t.name));
      if (saved.sizes() != t.master.sizes()) {
        return absl::FailedPreconditionError(str_cat(where, ": ", t.name, " has another shape in the checkpoint"));
      }
      t.master.copy_(saved);
    }
    TEMPER_RETURN_IF_ERROR(s.optimizer->load_state(optimizer, step));
    s.copy_masters_to_params();
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
