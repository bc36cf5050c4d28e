// Continued pre-training with LoRA (or full fine-tuning): adapt a model to a domain's text mixed
// with general text (by default 1 domain token : 5 general tokens, against forgetting) while
// watching held-out sets of both. With its defaults this is temper's demo: the bundled model
// learns the bundled medical text on a CPU in a few minutes.
//
//   temper_pretrain --model assets/model --train data/corpora/medical_train.txt
//     --eval_domain data/corpora/medical_heldout.txt --eval_general data/corpora/general_heldout.txt
//     --steps 150 --output out/medical-lora
#include <cstdio>
#include <string>

#include <absl/flags/flag.h>
#include <absl/flags/parse.h>
#include <absl/flags/usage.h>

#include <temper/temper.hpp>

#include "example_support.hpp"

ABSL_FLAG(std::string, model, "assets/model", "Hugging Face model directory");
ABSL_FLAG(std::string, train, "data/corpora/medical_train.txt", "domain text, one document per line");
ABSL_FLAG(std::string, general_train, "data/corpora/general_train.txt",
          "general text mixed in against forgetting (empty: domain only)");
ABSL_FLAG(double, general_share, 5.0, "tokens of general text per token of domain text");
ABSL_FLAG(std::string, eval_domain, "data/corpora/medical_heldout.txt", "held-out domain text");
ABSL_FLAG(std::string, eval_general, "data/corpora/general_heldout.txt", "held-out general text (forgetting)");
ABSL_FLAG(std::string, output, "out/medical-lora", "where the PEFT adapter (or full model) is written");
ABSL_FLAG(std::string, metrics, "", "JSONL metrics file (default: <output>.metrics.jsonl)");
ABSL_FLAG(std::string, checkpoint_dir, "", "checkpoints every --checkpoint_every steps (empty: none)");
ABSL_FLAG(int64_t, checkpoint_every, 0, "steps between checkpoints");
ABSL_FLAG(std::string, resume, "", "checkpoint directory to resume from");
ABSL_FLAG(int64_t, steps, 150, "optimizer steps");
ABSL_FLAG(int64_t, batch_size, 8, "sequences per micro-batch");
ABSL_FLAG(int64_t, seq_len, 128, "tokens per sequence");
ABSL_FLAG(int64_t, accumulation, 1, "micro-batches per optimizer step");
ABSL_FLAG(double, lr, 1e-3, "peak learning rate (cosine schedule with warm-up)");
ABSL_FLAG(int64_t, warmup, 20, "warm-up steps");
ABSL_FLAG(bool, full, false, "full fine-tuning instead of LoRA");
ABSL_FLAG(int64_t, rank, 16, "LoRA rank (alpha = 2 x rank)");
ABSL_FLAG(int64_t, eval_every, 50, "steps between evaluations");
ABSL_FLAG(int64_t, eval_batches, 4, "batches per held-out set");
ABSL_FLAG(std::string, prompt, "The patient complained of pain in the", "text to continue before and after");
ABSL_FLAG(uint64_t, seed, 0, "seed for data order, initialisation and sampling");

namespace {

int fail(const absl::Status& status) {
  std::fprintf(stderr, "temper_pretrain: %s\n", std::string(status.ToString()).c_str());
  return 1;
}

std::string continue_text(const temper::Model& model, const temper::Tokenizer& tokenizer, const std::string& prompt) {
  auto ids = tokenizer.encode_for_model(prompt);
  if (!ids.ok()) return "(" + std::string(ids.status().message()) + ")";
  temper::GenerationOptions options;
  options.max_new_tokens = 30;
  auto out = temper::generate(model, *ids, options);
  if (!out.ok()) return "(" + std::string(out.status().message()) + ")";
  // Decode prompt and continuation together: sentencepiece drops a leading space when a
  // fragment is decoded alone.
  std::vector<temper::TokenId> all = *ids;
  all.insert(all.end(), out->begin(), out->end());
  return tokenizer.decode(all).value_or("");
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Continued pre-training of a Hugging Face model on domain text, LoRA or full.");
  absl::ParseCommandLine(argc, argv);
  std::printf("%s\n", temper::build_info().c_str());
  const std::string model_dir = absl::GetFlag(FLAGS_model);
  auto model = temper::Model::load(model_dir);
  if (!model.ok()) return fail(model.status());
  auto tokenizer = temper::load_tokenizer(model_dir);
  if (!tokenizer.ok()) return fail(tokenizer.status());
  std::printf("model: %s (%s, %.1fM parameters)\n", model_dir.c_str(), model->config().model_type.c_str(),
              model->num_parameters() / 1e6);

  temper::MixerOptions mix;
  mix.batch_size = absl::GetFlag(FLAGS_batch_size);
  mix.seq_len = absl::GetFlag(FLAGS_seq_len);
  mix.seed = absl::GetFlag(FLAGS_seed);
  temper::SourceSpec domain;
  domain.name = "domain";
  domain.role = "domain";
  domain.paths = {absl::GetFlag(FLAGS_train)};
  mix.sources.push_back(domain);
  if (!absl::GetFlag(FLAGS_general_train).empty()) {
    temper::SourceSpec general = domain;
    general.name = general.role = "general";
    general.weight = absl::GetFlag(FLAGS_general_share);
    general.paths = {absl::GetFlag(FLAGS_general_train)};
    mix.sources.push_back(general);
  }
  auto data = temper::DataMixer::create(mix, **tokenizer);
  if (!data.ok()) return fail(data.status());
  std::printf("training data: %zu sources mixed by tokens, rows of %lld tokens\n", mix.sources.size(),
              static_cast<long long>(mix.seq_len));

  temper::TrainerOptions options;
  for (const auto& [name, path] : {std::pair<std::string, std::string>{"domain", absl::GetFlag(FLAGS_eval_domain)},
                                   {"general", absl::GetFlag(FLAGS_eval_general)}}) {
    if (path.empty()) continue;
    auto docs = temper_examples::read_documents(path, **tokenizer);
    if (!docs.ok()) return fail(docs.status());
    auto set = temper_examples::make_eval_set(name, *docs, mix.batch_size, mix.seq_len,
                                              absl::GetFlag(FLAGS_eval_batches));
    if (!set.ok()) return fail(set.status());
    options.eval_sets.push_back(std::move(*set));
  }

  std::optional<temper::LoraAdapter> adapter;
  if (!absl::GetFlag(FLAGS_full)) {
    temper::LoraOptions lora;
    lora.rank = absl::GetFlag(FLAGS_rank);
    lora.seed = absl::GetFlag(FLAGS_seed);
    auto created = temper::LoraAdapter::create(*model, lora);
    if (!created.ok()) return fail(created.status());
    adapter.emplace(std::move(*created));
    std::printf("LoRA: rank %lld, alpha %.0f, %zu modules, %.2fM trainable parameters\n",
                static_cast<long long>(lora.rank), adapter->options().alpha.value_or(0.0),
                adapter->target_modules().size(), adapter->num_parameters() / 1e6);
  }
  const std::string prompt = absl::GetFlag(FLAGS_prompt);
  std::printf("\nbefore: %s\n", continue_text(*model, **tokenizer, prompt).c_str());

  const std::string output = absl::GetFlag(FLAGS_output);
  const int64_t steps = absl::GetFlag(FLAGS_steps);
  options.max_steps = steps;
  options.gradient_accumulation_steps = absl::GetFlag(FLAGS_accumulation);
  options.optimizer.lr = absl::GetFlag(FLAGS_lr);
  options.optimizer.weight_decay = 0.01;
  options.schedule = {temper::ScheduleKind::kCosine, absl::GetFlag(FLAGS_warmup)};
  options.eval_every = absl::GetFlag(FLAGS_eval_every);
  options.seed = absl::GetFlag(FLAGS_seed);
  options.checkpoint_dir = absl::GetFlag(FLAGS_checkpoint_dir);
  options.checkpoint_every = absl::GetFlag(FLAGS_checkpoint_every);
  options.metrics_jsonl = absl::GetFlag(FLAGS_metrics).empty() ? output + ".metrics.jsonl" : absl::GetFlag(FLAGS_metrics);
  temper_examples::Progress progress(steps, 10);
  options.on_step = [&](const temper::StepMetrics& m) { progress.step(m); };
  options.on_eval = [&](const temper::EvalMetrics& e) { progress.eval(e); };
  options.on_log = [&](const std::string& line) { progress.log(line); };
  std::filesystem::create_directories(std::filesystem::path(output).parent_path().empty()
                                          ? std::filesystem::path(".")
                                          : std::filesystem::path(output).parent_path());

  auto trainer = temper::Trainer::create(*model, **data, options, adapter ? &*adapter : nullptr);
  if (!trainer.ok()) return fail(trainer.status());
  if (!absl::GetFlag(FLAGS_resume).empty()) {
    const absl::Status resumed = trainer->resume(absl::GetFlag(FLAGS_resume));
    if (!resumed.ok()) return fail(resumed);
    std::printf("resumed at step %lld\n", static_cast<long long>(trainer->global_step()));
  }
  auto result = trainer->train();
  if (!result.ok()) return fail(result.status());

  std::printf("\nmix report:\n");
  for (const auto& source : (*data)->report().sources) {
    int64_t dropped = 0;
    for (const auto& [filter, count] : source.dropped) dropped += count.documents;
    std::printf("  %-8s target %.3f achieved %.3f | %lld documents read, %lld kept, %lld dropped", source.name.c_str(),
                source.target_share, source.achieved_share, static_cast<long long>(source.documents_in),
                static_cast<long long>(source.documents_kept), static_cast<long long>(dropped));
    for (const auto& [filter, count] : source.dropped) {
      std::printf(" [%s %lld]", filter.c_str(), static_cast<long long>(count.documents));
    }
    std::printf(" | %lld tokens, %lld epochs\n", static_cast<long long>(source.tokens_kept),
                static_cast<long long>(source.epochs));
  }
  const absl::Status report_written = (*data)->write_report(output + ".mix_report.json");
  if (!report_written.ok()) return fail(report_written);

  const absl::Status saved = adapter ? adapter->save(output, model_dir)
                                     : temper::export_merged_model(*model, nullptr, output, at::kFloat);
  if (!saved.ok()) return fail(saved);
  std::printf("\nafter:  %s\n", continue_text(*model, **tokenizer, prompt).c_str());
  std::printf("\n%lld steps (%s); %s written to %s, metrics to %s, mix report to %s.mix_report.json\n",
              static_cast<long long>(result->steps), result->stop_reason.c_str(), adapter ? "PEFT adapter" : "model",
              output.c_str(), options.metrics_jsonl.string().c_str(), output.c_str());
  return 0;
}
