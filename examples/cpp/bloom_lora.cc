// LoRA training of a BLOOM-architecture model (model_type "bloom": ALiBi attention, LayerNorm,
// fused query_key_value) on domain text. With --model it adapts a Hugging Face BLOOM/BLOOMZ
// checkpoint (e.g. bigscience/bloomz-560m); without it, a tiny BLOOM (2 layers, hidden 64,
// 4 heads) is initialised at random, so the whole path (tokenizer.json, packing, ALiBi with
// packed documents, LoRA on query_key_value/dense/dense_h_to_4h/dense_4h_to_h, gradient
// checkpointing, optional QLoRA, PEFT save) runs on a CPU in seconds. A random base learns
// little, but the held-out loss must fall: the program exits with 2 when it does not.
//
//   temper_bloom_lora --tokenizer tests/fixtures/tokenizers/bloom --train data/corpora/medical_train.txt
//     --eval data/corpora/medical_heldout.txt --steps 40 --output out/bloom-lora
//
// --tokenizer bytes encodes text as its UTF-8 bytes (ids 0-255, BOS 256, EOS 257) instead of a
// tokenizer file.
#include <cstdio>
#include <string>

#include <absl/flags/flag.h>
#include <absl/flags/parse.h>
#include <absl/flags/usage.h>

#include <temper/temper.hpp>

#include "example_support.hpp"

ABSL_FLAG(std::string, model, "", "Hugging Face BLOOM directory (empty: a tiny BLOOM initialised at random)");
ABSL_FLAG(std::string, tokenizer, "tests/fixtures/tokenizers/bloom",
          "directory with tokenizer.json (or tokenizer.model); \"bytes\" for UTF-8 byte ids");
ABSL_FLAG(std::string, train, "data/corpora/medical_train.txt", "domain text, one document per line");
ABSL_FLAG(std::string, eval, "data/corpora/medical_heldout.txt", "held-out domain text");
ABSL_FLAG(std::string, output, "out/bloom-lora", "where the PEFT adapter is written (and, for a random base, the base in <output>/base)");
ABSL_FLAG(int64_t, steps, 40, "optimizer steps");
ABSL_FLAG(int64_t, batch_size, 8, "sequences per batch");
ABSL_FLAG(int64_t, seq_len, 64, "tokens per sequence");
ABSL_FLAG(int64_t, rank, 8, "LoRA rank (alpha = 2 x rank)");
ABSL_FLAG(double, lr, 5e-3, "peak learning rate (cosine schedule with warm-up)");
ABSL_FLAG(bool, qlora, false, "hold the base's linear layers in NF4 (QLoRA)");
ABSL_FLAG(bool, checkpointing, true, "activation checkpointing (recompute each block in the backward pass)");
ABSL_FLAG(uint64_t, seed, 0, "seed for initialisation and data order");

namespace {

int fail(const absl::Status& status) {
  std::fprintf(stderr, "temper_bloom_lora: %s\n", std::string(status.ToString()).c_str());
  return 1;
}

// UTF-8 bytes as token ids: a stand-in where no tokenizer file is at hand.
class ByteTokenizer final : public temper::Tokenizer {
 public:
  ByteTokenizer() {
    special_.bos = 256;
    special_.eos = 257;
    special_.add_bos = true;
  }
  temper::StatusOr<std::vector<temper::TokenId>> encode(std::string_view text) const override {
    std::vector<temper::TokenId> ids;
    for (unsigned char c : text) ids.push_back(c);
    return ids;
  }
  temper::StatusOr<std::string> decode(const std::vector<temper::TokenId>& ids) const override {
    std::string text;
    for (temper::TokenId id : ids) {
      if (id < 256) text.push_back(static_cast<char>(id));
    }
    return text;
  }
  int32_t vocab_size() const override { return 258; }
  std::optional<temper::TokenId> piece_to_id(std::string_view piece) const override {
    if (piece.size() == 1) return static_cast<unsigned char>(piece[0]);
    return std::nullopt;
  }
};

// A tiny BLOOM as transformers' BloomConfig would describe it.
temper::ModelConfig tiny_bloom(const temper::Tokenizer& tokenizer) {
  temper::ModelConfig c;
  c.model_type = "bloom";
  c.family = temper::ModelFamily::kBloom;
  c.vocab_size = tokenizer.vocab_size();
  c.hidden_size = 64;
  c.num_attention_heads = c.num_key_value_heads = 4;
  c.head_dim = 16;
  c.intermediate_size = 4 * c.hidden_size;
  c.num_layers = 2;
  c.max_position_embeddings = 2048;
  c.tie_word_embeddings = true;
  c.qkv_bias = c.o_bias = c.mlp_bias = true;
  if (tokenizer.special_tokens().bos) c.bos_token_id = *tokenizer.special_tokens().bos;
  if (tokenizer.special_tokens().eos) c.eos_token_ids = {*tokenizer.special_tokens().eos};
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("LoRA training of a BLOOM-architecture model on domain text.");
  absl::ParseCommandLine(argc, argv);
  std::printf("%s\n", temper::build_info().c_str());

  std::unique_ptr<temper::Tokenizer> tokenizer;
  const std::string tokenizer_dir = absl::GetFlag(FLAGS_tokenizer);
  if (tokenizer_dir == "bytes") {
    tokenizer = std::make_unique<ByteTokenizer>();
  } else {
    auto loaded = temper::load_tokenizer(tokenizer_dir.empty() ? absl::GetFlag(FLAGS_model) : tokenizer_dir);
    if (!loaded.ok()) return fail(loaded.status());
    tokenizer = std::move(*loaded);
  }
  std::printf("tokenizer: %s (%d ids)\n", tokenizer_dir.c_str(), tokenizer->vocab_size());

  temper::ModelOptions model_options;
  model_options.quantize_nf4 = absl::GetFlag(FLAGS_qlora);
  const std::string model_dir = absl::GetFlag(FLAGS_model);
  auto model = model_dir.empty() ? temper::Model::random(tiny_bloom(*tokenizer), model_options, absl::GetFlag(FLAGS_seed))
                                 : temper::Model::load(model_dir, model_options);
  if (!model.ok()) return fail(model.status());
  if (model->config().family != temper::ModelFamily::kBloom) {
    return fail(absl::InvalidArgumentError(model_dir + " is a " + model->config().model_type + " model, not bloom"));
  }
  std::printf("model: %s (bloom, %lld layers, %lld heads, %.2fM parameters%s)\n",
              model_dir.empty() ? "tiny random BLOOM" : model_dir.c_str(),
              static_cast<long long>(model->config().num_layers),
              static_cast<long long>(model->config().num_attention_heads), model->num_parameters() / 1e6,
              model_options.quantize_nf4 ? ", linear layers in NF4" : "");

  temper::MixerOptions mix;
  mix.batch_size = absl::GetFlag(FLAGS_batch_size);
  mix.seq_len = absl::GetFlag(FLAGS_seq_len);
  mix.seed = absl::GetFlag(FLAGS_seed);
  temper::SourceSpec domain;
  domain.name = "domain";
  domain.paths = {absl::GetFlag(FLAGS_train)};
  mix.sources.push_back(domain);
  auto data = temper::DataMixer::create(mix, *tokenizer);
  if (!data.ok()) return fail(data.status());

  temper::TrainerOptions options;
  auto docs = temper_examples::read_documents(absl::GetFlag(FLAGS_eval), *tokenizer);
  if (!docs.ok()) return fail(docs.status());
  auto set = temper_examples::make_eval_set("held-out", *docs, mix.batch_size, mix.seq_len, 2);
  if (!set.ok()) return fail(set.status());
  options.eval_sets.push_back(std::move(*set));

  temper::LoraOptions lora;  // default targets: every projection of every block
  lora.rank = absl::GetFlag(FLAGS_rank);
  lora.seed = absl::GetFlag(FLAGS_seed);
  auto adapter = temper::LoraAdapter::create(*model, lora);
  if (!adapter.ok()) return fail(adapter.status());
  const std::vector<std::string> targets = adapter->target_modules();
  std::printf("LoRA: rank %lld on %zu modules (%s, ...), %.3fM trainable parameters\n",
              static_cast<long long>(lora.rank), targets.size(), targets.front().c_str(), adapter->num_parameters() / 1e6);

  const int64_t steps = absl::GetFlag(FLAGS_steps);
  options.max_steps = steps;
  options.optimizer.lr = absl::GetFlag(FLAGS_lr);
  options.schedule = {temper::ScheduleKind::kCosine, std::max<int64_t>(1, steps / 10)};
  options.gradient_checkpointing = absl::GetFlag(FLAGS_checkpointing);
  options.seed = absl::GetFlag(FLAGS_seed);
  temper_examples::Progress progress(steps, 10);
  options.on_step = [&](const temper::StepMetrics& m) { progress.step(m); };
  options.on_eval = [&](const temper::EvalMetrics& e) { progress.eval(e); };
  options.on_log = [&](const std::string& line) { progress.log(line); };
  auto trainer = temper::Trainer::create(*model, **data, options, &*adapter);
  if (!trainer.ok()) return fail(trainer.status());
  auto result = trainer->train();
  if (!result.ok()) return fail(result.status());

  // A random base is saved beside the adapter so that the adapter has a base to load onto.
  const std::string output = absl::GetFlag(FLAGS_output);
  std::string base = model_dir;
  if (model_dir.empty()) {
    base = output + "/base";
    const absl::Status saved = temper::export_merged_model(*model, nullptr, base, at::kFloat);
    if (!saved.ok()) return fail(saved);
  }
  const absl::Status saved = adapter->save(output + "/adapter", base);
  if (!saved.ok()) return fail(saved);

  const double before = result->evaluations.front().sets.front().loss;
  const double after = result->evaluations.back().sets.front().loss;
  std::printf("\n%lld steps: held-out loss %.4f -> %.4f; PEFT adapter in %s/adapter, base %s\n",
              static_cast<long long>(result->steps), before, after, output.c_str(), base.c_str());
  return after < before ? 0 : 2;
}
