// temper's demo: load the bundled base model, measure how well it knows general English and
// medical text (held-out perplexity), and let it continue a prompt.
//
//   temper_demo --model assets/model --corpora data/corpora --prompt "The patient was"
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <absl/flags/flag.h>
#include <absl/flags/parse.h>
#include <absl/flags/usage.h>

#include <temper/temper.hpp>

ABSL_FLAG(std::string, model, "assets/model", "Hugging Face model directory (config.json, safetensors, tokenizer)");
ABSL_FLAG(std::string, corpora, "data/corpora", "folder with general_heldout.txt and medical_heldout.txt");
ABSL_FLAG(int64_t, eval_tokens, 20000, "held-out tokens to score per corpus");
ABSL_FLAG(std::string, prompt, "The patient complained of pain in the", "text to continue");
ABSL_FLAG(int64_t, max_new_tokens, 40, "tokens to generate");
ABSL_FLAG(double, temperature, 0.7, "sampling temperature (0 = greedy)");
ABSL_FLAG(double, top_p, 0.9, "nucleus sampling mass");
ABSL_FLAG(uint64_t, seed, 1, "sampling seed");

namespace {

int fail(const absl::Status& status) {
  std::fprintf(stderr, "temper_demo: %s\n", std::string(status.ToString()).c_str());
  return 1;
}

// One document per line, each tokenized with BOS and EOS, concatenated until `limit` tokens.
temper::StatusOr<std::vector<temper::TokenId>> read_stream(const std::string& path, const temper::Tokenizer& tokenizer,
                                                           int64_t limit) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(path + ": not found (run scripts/corpora.sh to derive the corpora)");
  }
  std::vector<temper::TokenId> stream;
  std::string line;
  while (static_cast<int64_t>(stream.size()) < limit && std::getline(in, line)) {
    if (line.empty()) continue;
    auto ids = tokenizer.encode_with(line, /*add_bos=*/true, /*add_eos=*/true);
    if (!ids.ok()) return ids.status();
    stream.insert(stream.end(), ids->begin(), ids->end());
  }
  if (static_cast<int64_t>(stream.size()) > limit) stream.resize(limit);
  return stream;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Load the bundled model, report held-out perplexity and generate a continuation.");
  absl::ParseCommandLine(argc, argv);
  std::printf("%s\n", temper::build_info().c_str());

  const std::string model_dir = absl::GetFlag(FLAGS_model);
  auto model = temper::Model::load(model_dir);
  if (!model.ok()) return fail(model.status());
  auto tokenizer = temper::load_tokenizer(model_dir);
  if (!tokenizer.ok()) return fail(tokenizer.status());
  const temper::ModelConfig& config = model->config();
  std::printf("model: %s (%s, %lld layers, hidden %lld, %.1fM parameters), vocabulary %d\n", model_dir.c_str(),
              config.model_type.c_str(), static_cast<long long>(config.num_layers),
              static_cast<long long>(config.hidden_size), model->num_parameters() / 1e6, (*tokenizer)->vocab_size());

  std::printf("\nheld-out perplexity (lower is better):\n");
  for (const char* corpus : {"general", "medical"}) {
    const std::string path = absl::GetFlag(FLAGS_corpora) + "/" + corpus + "_heldout.txt";
    auto stream = read_stream(path, **tokenizer, absl::GetFlag(FLAGS_eval_tokens));
    if (!stream.ok()) return fail(stream.status());
    temper::PerplexityOptions options;
    options.window = 256;
    auto ppl = temper::evaluate_perplexity(*model, *stream, options);
    if (!ppl.ok()) return fail(ppl.status());
    std::printf("  %-8s %8.2f  (%lld tokens of %s)\n", corpus, ppl->perplexity, static_cast<long long>(ppl->tokens),
                path.c_str());
  }

  const std::string prompt = absl::GetFlag(FLAGS_prompt);
  auto prompt_ids = (*tokenizer)->encode_for_model(prompt);
  if (!prompt_ids.ok()) return fail(prompt_ids.status());
  temper::GenerationOptions gen;
  gen.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
  gen.temperature = absl::GetFlag(FLAGS_temperature);
  gen.top_p = absl::GetFlag(FLAGS_top_p);
  gen.seed = absl::GetFlag(FLAGS_seed);
  auto continuation = temper::generate(*model, *prompt_ids, gen);
  if (!continuation.ok()) return fail(continuation.status());
  auto text = (*tokenizer)->decode(*continuation);
  if (!text.ok()) return fail(text.status());
  std::printf("\nprompt:       %s\ncontinuation: %s\n", prompt.c_str(), text->c_str());
  return 0;
}
