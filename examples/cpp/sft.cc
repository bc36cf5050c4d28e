// Supervised fine-tuning with LoRA: the loss covers only the response tokens. Data is a JSONL
// file of {"prompt": ..., "response": ...} records, or, for the bundled corpus, a glossary of
// "Term: definition" lines turned into questions and answers.
//
//   temper_sft --model assets/model --data data/corpora/medical_train.txt
//     --eval data/corpora/medical_heldout.txt --steps 100 --output out/medical-sft
#include <cstdio>
#include <fstream>
#include <string>

#include <absl/flags/flag.h>
#include <absl/flags/parse.h>
#include <absl/flags/usage.h>
#include <nlohmann/json.hpp>

#include <temper/temper.hpp>

#include "example_support.hpp"

ABSL_FLAG(std::string, model, "assets/model", "Hugging Face model directory");
ABSL_FLAG(std::string, data, "data/corpora/medical_train.txt", "JSONL prompt/response records or a glossary");
ABSL_FLAG(std::string, eval, "data/corpora/medical_heldout.txt", "held-out records, same format");
ABSL_FLAG(std::string, output, "out/medical-sft", "where the PEFT adapter is written");
ABSL_FLAG(int64_t, steps, 100, "optimizer steps");
ABSL_FLAG(int64_t, batch_size, 8, "examples per batch");
ABSL_FLAG(int64_t, max_seq_len, 128, "longer examples are truncated");
ABSL_FLAG(double, lr, 2e-3, "peak learning rate");
ABSL_FLAG(int64_t, rank, 16, "LoRA rank (alpha = 2 x rank)");
ABSL_FLAG(int64_t, eval_every, 25, "steps between evaluations");
ABSL_FLAG(uint64_t, seed, 0, "seed");

namespace {

int fail(const absl::Status& status) {
  std::fprintf(stderr, "temper_sft: %s\n", std::string(status.ToString()).c_str());
  return 1;
}

struct Record {
  std::string prompt, response;
};

// JSONL records, or "Term: definition" glossary lines rendered as a question and its answer.
temper::StatusOr<std::vector<Record>> read_records(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(path + ": cannot open");
  const bool jsonl = path.size() > 6 && path.substr(path.size() - 6) == ".jsonl";
  std::vector<Record> records;
  std::string line;
  size_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.empty()) continue;
    if (jsonl) {
      const auto obj = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (obj.is_discarded() || !obj.is_object() || !obj.contains("prompt") || !obj.contains("response") ||
          !obj["prompt"].is_string() || !obj["response"].is_string()) {
        return absl::InvalidArgumentError(path + ":" + std::to_string(number) +
                                          ": expected {\"prompt\": string, \"response\": string}");
      }
      records.push_back({obj["prompt"].get<std::string>(), obj["response"].get<std::string>()});
    } else {
      const size_t colon = line.find(": ");
      if (colon == std::string::npos || colon == 0) continue;
      records.push_back({"Question: What does \"" + line.substr(0, colon) + "\" mean in medicine?\nAnswer:",
                         " " + line.substr(colon + 2)});
    }
  }
  if (records.empty()) return absl::InvalidArgumentError(path + ": no records");
  return records;
}

temper::StatusOr<std::vector<temper::SftExample>> tokenize(const std::vector<Record>& records,
                                                           const temper::Tokenizer& tokenizer) {
  std::vector<temper::SftExample> examples;
  for (const Record& r : records) {
    auto prompt = tokenizer.encode_with(r.prompt, /*add_bos=*/true, /*add_eos=*/false);
    if (!prompt.ok()) return prompt.status();
    auto response = tokenizer.encode_with(r.response, /*add_bos=*/false, /*add_eos=*/true);
    if (!response.ok()) return response.status();
    examples.push_back({std::move(*prompt), std::move(*response)});
  }
  return examples;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Supervised fine-tuning (loss on responses only) with LoRA.");
  absl::ParseCommandLine(argc, argv);
  const std::string model_dir = absl::GetFlag(FLAGS_model);
  auto model = temper::Model::load(model_dir);
  if (!model.ok()) return fail(model.status());
  auto tokenizer = temper::load_tokenizer(model_dir);
  if (!tokenizer.ok()) return fail(tokenizer.status());

  auto records = read_records(absl::GetFlag(FLAGS_data));
  if (!records.ok()) return fail(records.status());
  auto examples = tokenize(*records, **tokenizer);
  if (!examples.ok()) return fail(examples.status());
  temper::SftOptions sft;
  sft.batch_size = absl::GetFlag(FLAGS_batch_size);
  sft.max_seq_len = absl::GetFlag(FLAGS_max_seq_len);
  sft.seed = absl::GetFlag(FLAGS_seed);
  sft.pad_id = (*tokenizer)->special_tokens().eos.value_or(0);  // masked out of the loss anyway
  const size_t count = examples->size();
  auto data = temper::SftSource::create(std::move(*examples), sft);
  if (!data.ok()) return fail(data.status());
  std::printf("SFT: %zu examples (%lld truncated to %lld tokens, %lld dropped: prompt too long)\n", count,
              static_cast<long long>((*data)->truncated_examples()), static_cast<long long>(sft.max_seq_len),
              static_cast<long long>((*data)->dropped_examples()));

  temper::TrainerOptions options;
  if (!absl::GetFlag(FLAGS_eval).empty()) {
    auto eval_records = read_records(absl::GetFlag(FLAGS_eval));
    if (!eval_records.ok()) return fail(eval_records.status());
    eval_records->resize(std::min<size_t>(eval_records->size(), 64));
    auto eval_examples = tokenize(*eval_records, **tokenizer);
    if (!eval_examples.ok()) return fail(eval_examples.status());
    temper::SftOptions eval_sft = sft;
    eval_sft.shuffle = false;
    const int64_t batches = static_cast<int64_t>(eval_examples->size()) / sft.batch_size;
    auto eval_source = temper::SftSource::create(std::move(*eval_examples), eval_sft);
    if (!eval_source.ok()) return fail(eval_source.status());
    temper::EvalSet set{"domain_answers", {}};
    for (int64_t i = 0; i < std::max<int64_t>(1, batches); ++i) set.batches.push_back((*eval_source)->next().value());
    options.eval_sets.push_back(std::move(set));
  }

  temper::LoraOptions lora;
  lora.rank = absl::GetFlag(FLAGS_rank);
  lora.seed = absl::GetFlag(FLAGS_seed);
  auto adapter = temper::LoraAdapter::create(*model, lora);
  if (!adapter.ok()) return fail(adapter.status());

  const int64_t steps = absl::GetFlag(FLAGS_steps);
  const std::string output = absl::GetFlag(FLAGS_output);
  options.max_steps = steps;
  options.optimizer.lr = absl::GetFlag(FLAGS_lr);
  options.schedule = {temper::ScheduleKind::kCosine, steps / 10};
  options.eval_every = absl::GetFlag(FLAGS_eval_every);
  options.seed = absl::GetFlag(FLAGS_seed);
  options.metrics_jsonl = output + ".metrics.jsonl";
  temper_examples::Progress progress(steps, 10);
  options.on_step = [&](const temper::StepMetrics& m) { progress.step(m); };
  options.on_eval = [&](const temper::EvalMetrics& e) { progress.eval(e); };
  options.on_log = [&](const std::string& line) { progress.log(line); };
  auto trainer = temper::Trainer::create(*model, **data, options, &*adapter);
  if (!trainer.ok()) return fail(trainer.status());
  auto result = trainer->train();
  if (!result.ok()) return fail(result.status());
  const absl::Status saved = adapter->save(output, model_dir);
  if (!saved.ok()) return fail(saved);
  std::printf("\n%lld steps (%s); PEFT adapter written to %s\n", static_cast<long long>(result->steps),
              result->stop_reason.c_str(), output.c_str());
  return 0;
}
