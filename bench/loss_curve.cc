// temper's half of the loss-curve comparison with transformers + PEFT (bench/loss_curve.py runs
// both and compares; bench/peer_loss_curve.py is the peer). Everything the peer needs to start
// from the same point is written before training: the token batches and, for LoRA, the initial
// adapter in PEFT's format. Then temper's Trainer takes one optimizer step per stored batch and
// each step's loss and gradient norm go to stdout and DIR/temper.jsonl.
//
//   loss_curve --model assets/model --text data/corpora/medical_train.txt --out DIR --mode lora|full
//              [--steps 30] [--batch 8] [--seq 256] [--lr 1e-3] [--device cpu|cuda] [--dtype f32|bf16]
//              [--max-grad-norm 1.0] [--seed 0]
//
// Writes into DIR (created if missing):
//   tokens.safetensors  "input_ids" int64 [steps, batch, seq]: each line of --text is a document
//                       (BOS + text + EOS, as examples/cpp read them), concatenated and cut into
//                       rows; the first steps*batch*seq tokens, row-major. No padding, no segments:
//                       every row is one causal sequence with positions 0..seq-1, labels = input_ids
//                       (the model shifts, as transformers does), so each step scores batch*(seq-1)
//                       tokens and its loss is their mean.
//   initial_adapter/    lora only: the adapter before training (r 16, alpha 32, dropout 0; q, k, v,
//                       o, gate, up, down), LoraAdapter::save, for PeftModel.from_pretrained.
//   temper.jsonl        one line per step: {"impl":"temper","step":k,"loss":..,"grad_norm":..,...}
//
// The training semantics the peer must reproduce (lib/train/trainer.cc, lib/train/optimizer.cc):
// loss = sum of token losses / scored tokens of the step (one micro-batch: the token mean that
// transformers' loss is); grad_norm = the 2-norm of the per-tensor 2-norms of the fp32 gradients,
// before clipping, as torch.nn.utils.clip_grad_norm_ returns it; clipping multiplies every
// gradient by min(1, max_grad_norm / (grad_norm + 1e-6)), clip_grad_norm_'s coefficient; AdamW
// as torch.optim.AdamW (fused kernel on CUDA with libtorch >= 2.0) on fp32 masters, copied back
// into bf16 weights after each step; constant learning rate, no warm-up, no weight decay.
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/safetensors.hpp"
#include "temper/lora_adapter.hpp"
#include "temper/model.hpp"
#include "temper/tokenizer.hpp"
#include "temper/trainer.hpp"
#include "util/status_macros.hpp"
#include "util/strings.hpp"
#include "util/torch_errors.hpp"

namespace {

constexpr char kUsage[] =
    "usage: loss_curve --model DIR --text FILE --out DIR --mode lora|full [--steps 30] [--batch 8] [--seq 256]\n"
    "                  [--lr 1e-3] [--device cpu|cuda] [--dtype f32|bf16] [--max-grad-norm 1.0] [--seed 0]\n";

struct Args {
  std::string model_dir;
  std::string text;
  std::filesystem::path out;
  std::string mode;
  int64_t steps = 30;
  int64_t batch = 8;
  int64_t seq = 256;
  double lr = 1e-3;
  std::string device = "cpu";
  std::string dtype = "f32";
  double max_grad_norm = 1.0;
  uint64_t seed = 0;
};

temper::StatusOr<int64_t> parse_positive(const std::string& flag, const std::string& value) {
  int64_t out = 0;
  const char* end = value.data() + value.size();
  const auto [ptr, ec] = std::from_chars(value.data(), end, out);
  if (ec != std::errc() || ptr != end || out < 1) {
    return absl::InvalidArgumentError(temper::str_cat(flag, " wants a positive integer, got \"", value, "\""));
  }
  return out;
}

temper::StatusOr<double> parse_non_negative(const std::string& flag, const std::string& value) {
  char* end = nullptr;
  const double out = std::strtod(value.c_str(), &end);
  if (value.empty() || end != value.c_str() + value.size() || !(out >= 0) || !std::isfinite(out)) {
    return absl::InvalidArgumentError(temper::str_cat(flag, " wants a non-negative number, got \"", value, "\""));
  }
  return out;
}

temper::StatusOr<Args> parse_args(int argc, char** argv) {
  std::map<std::string, std::string> given;
  const std::set<std::string> known = {"--model", "--text",   "--out",           "--mode", "--steps", "--batch",
                                       "--seq",   "--lr",     "--device",        "--dtype", "--max-grad-norm",
                                       "--seed"};
  for (int i = 1; i < argc; i += 2) {
    const std::string flag = argv[i];
    if (!known.count(flag)) return absl::InvalidArgumentError(temper::str_cat("unknown argument \"", flag, "\""));
    if (i + 1 >= argc) return absl::InvalidArgumentError(temper::str_cat(flag, " needs a value"));
    given[flag] = argv[i + 1];
  }
  for (const char* required : {"--model", "--text", "--out", "--mode"}) {
    if (!given.count(required)) return absl::InvalidArgumentError(temper::str_cat(required, " is required"));
  }
  Args a;
  a.model_dir = given["--model"];
  a.text = given["--text"];
  a.out = given["--out"];
  a.mode = given["--mode"];
  if (a.mode != "lora" && a.mode != "full") {
    return absl::InvalidArgumentError(temper::str_cat("--mode is lora or full, got \"", a.mode, "\""));
  }
  auto positive = [&](const char* flag, int64_t& field) -> absl::Status {
    if (!given.count(flag)) return absl::OkStatus();
    TEMPER_ASSIGN_OR_RETURN(field, parse_positive(flag, given[flag]));
    return absl::OkStatus();
  };
  TEMPER_RETURN_IF_ERROR(positive("--steps", a.steps));
  TEMPER_RETURN_IF_ERROR(positive("--batch", a.batch));
  TEMPER_RETURN_IF_ERROR(positive("--seq", a.seq));
  if (a.seq < 2) return absl::InvalidArgumentError("--seq must be >= 2 (a row of one token scores nothing)");
  if (given.count("--lr")) {
    TEMPER_ASSIGN_OR_RETURN(a.lr, parse_non_negative("--lr", given["--lr"]));
  }
  if (given.count("--max-grad-norm")) {
    TEMPER_ASSIGN_OR_RETURN(a.max_grad_norm, parse_non_negative("--max-grad-norm", given["--max-grad-norm"]));
  }
  if (given.count("--seed")) {
    int64_t seed = 0;
    const std::string& s = given["--seed"];
    const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), seed);
    if (ec != std::errc() || ptr != s.data() + s.size() || seed < 0) {
      return absl::InvalidArgumentError(temper::str_cat("--seed wants a non-negative integer, got \"", s, "\""));
    }
    a.seed = static_cast<uint64_t>(seed);
  }
  if (given.count("--device")) a.device = given["--device"];
  if (given.count("--dtype")) a.dtype = given["--dtype"];
  if (a.device != "cpu" && a.device != "cuda") {
    return absl::InvalidArgumentError(temper::str_cat("--device is cpu or cuda, got \"", a.device, "\""));
  }
  if (a.dtype != "f32" && a.dtype != "bf16") {
    return absl::InvalidArgumentError(temper::str_cat("--dtype is f32 or bf16, got \"", a.dtype, "\""));
  }
  return a;
}

// The first steps*batch*seq tokens of the documents of `path` (one per non-empty line, BOS + text
// + EOS), as [steps, batch, seq] int64 on the CPU. Reads only as many lines as it needs.
temper::StatusOr<at::Tensor> pack_tokens(const std::string& path, const temper::Tokenizer& tokenizer, int64_t steps,
                                         int64_t batch, int64_t seq) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(temper::str_cat(path, ": cannot open (scripts/corpora.sh makes data/corpora)"));
  const int64_t needed = steps * batch * seq;
  std::vector<int64_t> stream;
  stream.reserve(static_cast<size_t>(needed));
  std::string line;
  int64_t line_number = 0;
  while (static_cast<int64_t>(stream.size()) < needed && std::getline(in, line)) {
    ++line_number;
    if (line.empty()) continue;
    auto ids = tokenizer.encode_with(line, /*add_bos=*/true, /*add_eos=*/true);
    if (!ids.ok()) {
      return absl::InvalidArgumentError(
          temper::str_cat(path, ":", line_number, ": ", std::string(ids.status().message())));
    }
    stream.insert(stream.end(), ids->begin(), ids->end());
  }
  if (static_cast<int64_t>(stream.size()) < needed) {
    return absl::InvalidArgumentError(temper::str_cat(path, " holds ", stream.size(), " tokens; ", steps, " steps of ",
                                                      batch, " x ", seq, " need ", needed,
                                                      " (fewer --steps, --batch or --seq, or a longer text)"));
  }
  stream.resize(static_cast<size_t>(needed));
  return temper::guarded("packing the tokens", [&]() -> temper::StatusOr<at::Tensor> {
    return at::tensor(stream, at::TensorOptions().dtype(at::kLong)).reshape({steps, batch, seq});
  });
}

// The stored batches in order, one per step, labels = input_ids; OUT_OF_RANGE after the last.
class StoredBatches final : public temper::BatchSource {
 public:
  // `tokens`: [steps, B, T] int64 on the model's device.
  explicit StoredBatches(at::Tensor tokens) : tokens_(std::move(tokens)) {}
  temper::StatusOr<temper::Batch> next() override {
    if (cursor_ >= tokens_.size(0)) {
      return absl::OutOfRangeError(temper::str_cat("loss_curve: all ", tokens_.size(0), " stored batches were used"));
    }
    const at::Tensor ids = tokens_[cursor_++];  // [B, T]
    return temper::Batch{ids, ids, {}, {}};
  }
  int64_t epochs_completed() const override { return 0; }
  temper::Objective objective() const override { return temper::Objective::kContinuedPretraining; }
  std::string save_state() const override { return nlohmann::json{{"cursor", cursor_}}.dump(); }
  temper::Status restore_state(const std::string& state) override {
    const nlohmann::json j = nlohmann::json::parse(state, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("cursor") || !j["cursor"].is_number_integer()) {
      return absl::InvalidArgumentError("loss_curve: bad batch-source state");
    }
    cursor_ = j["cursor"].get<int64_t>();
    return absl::OkStatus();
  }

 private:
  at::Tensor tokens_;
  int64_t cursor_ = 0;
};

temper::Status run(const Args& a) {
  std::error_code ec;
  std::filesystem::create_directories(a.out, ec);
  if (ec) return absl::InternalError(temper::str_cat(a.out.string(), ": cannot create: ", ec.message()));

  TEMPER_ASSIGN_OR_RETURN(std::unique_ptr<temper::Tokenizer> tokenizer, temper::load_tokenizer(a.model_dir));
  TEMPER_ASSIGN_OR_RETURN(at::Tensor tokens, pack_tokens(a.text, *tokenizer, a.steps, a.batch, a.seq));
  TEMPER_RETURN_IF_ERROR(temper::write_safetensors(
      a.out / "tokens.safetensors", {{"input_ids", tokens}},
      {{"text", a.text}, {"model", a.model_dir}, {"packing", "lines as documents, BOS + text + EOS, concatenated"}}));

  temper::ModelOptions model_options;
  model_options.dtype = a.dtype == "bf16" ? at::kBFloat16 : at::kFloat;
  model_options.device = a.device == "cuda" ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
  TEMPER_ASSIGN_OR_RETURN(temper::Model model, temper::Model::load(a.model_dir, model_options));

  std::optional<temper::LoraAdapter> adapter;
  if (a.mode == "lora") {
    temper::LoraOptions lora;
    lora.rank = 16;
    lora.alpha = 32.0;
    lora.dropout = 0.0;
    lora.target_modules = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
    lora.seed = a.seed;
    TEMPER_ASSIGN_OR_RETURN(temper::LoraAdapter created, temper::LoraAdapter::create(model, lora));
    adapter.emplace(std::move(created));
    // Before any step: the peer starts from exactly these A (B is zero).
    TEMPER_RETURN_IF_ERROR(adapter->save(a.out / "initial_adapter", a.model_dir));
  }

  TEMPER_ASSIGN_OR_RETURN(at::Tensor on_device,
                          temper::guarded("moving the tokens to the device",
                                          [&]() -> temper::StatusOr<at::Tensor> { return tokens.to(model_options.device); }));
  StoredBatches data(on_device);

  const std::filesystem::path jsonl = a.out / "temper.jsonl";
  std::ofstream metrics(jsonl, std::ios::trunc);
  if (!metrics) return absl::InternalError(temper::str_cat(jsonl.string(), ": cannot open for writing"));

  temper::TrainerOptions options;
  options.max_steps = a.steps;
  options.gradient_accumulation_steps = 1;
  options.optimizer.kind = temper::OptimizerKind::kAdamW;
  options.optimizer.lr = a.lr;
  options.optimizer.beta1 = 0.9;
  options.optimizer.beta2 = 0.999;
  options.optimizer.eps = 1e-8;
  options.optimizer.weight_decay = 0.0;
  options.schedule.kind = temper::ScheduleKind::kConstant;
  options.schedule.warmup_steps = 0;
  options.max_grad_norm = a.max_grad_norm;
  options.seed = a.seed;
  options.on_step = [&](const temper::StepMetrics& m) {
    const nlohmann::json line = {{"impl", "temper"}, {"mode", a.mode},       {"step", m.step},
                                 {"loss", m.loss},   {"grad_norm", m.grad_norm}, {"tokens", m.tokens},
                                 {"lr", m.lr},       {"skipped", m.skipped}};
    const std::string text = line.dump();
    std::printf("%s\n", text.c_str());
    std::fflush(stdout);
    metrics << text << "\n" << std::flush;
  };
  std::fprintf(stderr, "loss_curve: %s, %s on %s, %lld steps of %lld x %lld tokens, lr %g, into %s\n", a.mode.c_str(),
               a.dtype.c_str(), a.device.c_str(), static_cast<long long>(a.steps), static_cast<long long>(a.batch),
               static_cast<long long>(a.seq), a.lr, a.out.string().c_str());
  TEMPER_ASSIGN_OR_RETURN(temper::Trainer trainer,
                          temper::Trainer::create(model, data, options, adapter ? &*adapter : nullptr));
  TEMPER_ASSIGN_OR_RETURN(temper::TrainResult result, trainer.train());
  metrics.close();
  if (!metrics) return absl::InternalError(temper::str_cat(jsonl.string(), ": write failed"));
  if (result.steps != a.steps) {
    return absl::InternalError(temper::str_cat("training stopped after ", result.steps, " of ", a.steps, " steps (",
                                               result.stop_reason, ")"));
  }
  if (result.skipped_steps > 0) {
    return absl::DataLossError(temper::str_cat(result.skipped_steps,
                                               " steps had a non-finite loss or gradient and were skipped; the curves "
                                               "cannot be compared"));
  }
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0)) {
    std::printf("%s", kUsage);
    return 0;
  }
  const auto args = parse_args(argc, argv);
  if (!args.ok()) {
    std::fprintf(stderr, "loss_curve: %s\n%s", std::string(args.status().message()).c_str(), kUsage);
    return 2;
  }
  const absl::Status status = run(*args);
  if (!status.ok()) {
    std::fprintf(stderr, "loss_curve: %s\n", std::string(status.ToString()).c_str());
    return 1;
  }
  return 0;
}
