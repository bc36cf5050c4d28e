#include <cmath>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "model_support.hpp"
#include "temper/data_mixer.hpp"
#include "temper/tokenizer.hpp"
#include "temper/trainer.hpp"

using namespace temper;
using namespace temper::testing;

namespace {

const Tokenizer& tokenizer() {
  static const std::unique_ptr<Tokenizer> t = load_tokenizer(bundled_model_dir()).value();
  return *t;
}

// `count` distinct, clean English-like documents, one per line, deterministic.
void write_lines(const std::filesystem::path& path, int count, uint32_t seed, int min_words = 12, int max_words = 40) {
  static const char* kWords[] = {"the", "patient", "heart", "blood", "doctor", "city", "river", "court", "law",
                                 "market", "price", "school", "child", "table", "light", "water", "stone", "music",
                                 "winter", "garden", "letter", "window", "morning", "history", "science", "nurse",
                                 "fever", "muscle", "bone", "skin", "vessel", "tissue", "nerve", "kidney", "liver"};
  std::mt19937 rng(seed);
  std::ofstream out(path);
  for (int d = 0; d < count; ++d) {
    const int words = min_words + static_cast<int>(rng() % static_cast<uint32_t>(max_words - min_words + 1));
    std::string line = "Document " + std::to_string(seed) + "-" + std::to_string(d) + ":";
    for (int w = 0; w < words; ++w) line += std::string(" ") + kWords[rng() % (sizeof kWords / sizeof *kWords)];
    out << line << ".\n";
  }
}

SourceSpec text_source(const std::string& name, const std::filesystem::path& path, double weight) {
  SourceSpec spec;
  spec.name = name;
  spec.role = name;
  spec.weight = weight;
  spec.format = SourceFormat::kTextLines;
  spec.paths = {path};
  return spec;
}

MixerOptions two_sources(const TempDir& dir) {
  write_lines(dir / "domain.txt", 300, 1);
  write_lines(dir / "general.txt", 900, 2);
  MixerOptions options;
  options.sources = {text_source("domain", dir / "domain.txt", 1.0), text_source("general", dir / "general.txt", 5.0)};
  options.batch_size = 4;
  options.seq_len = 64;
  options.dedup.near = false;  // the generated documents share many 5-grams by construction
  return options;
}

}  // namespace

TEST_CASE("the mixer meets token shares over every window of the stream", "[unit]") {
  TempDir dir;
  MixerOptions options = two_sources(dir);
  auto mixer = DataMixer::create(options, tokenizer());
  REQUIRE_OK(mixer);
  int64_t last_total = 0, last_domain = 0;
  for (int b = 0; b < 400; ++b) {
    REQUIRE_OK((*mixer)->next());
    if ((b + 1) % 40 == 0) {  // windows of 40 x 4 x 64 = 10,240 tokens
      const MixReport& r = (*mixer)->report();
      const double window = static_cast<double>(r.tokens_mixed - last_total);
      const double domain = static_cast<double>(r.sources[0].tokens_kept - last_domain);
      INFO("window ending at batch " << b + 1);
      // One document is at most ~60 tokens: the share stays within 1% of 1/6 per 10k-token window.
      CHECK(std::abs(domain / window - 1.0 / 6.0) < 0.01);
      last_total = r.tokens_mixed;
      last_domain = r.sources[0].tokens_kept;
    }
  }
  const MixReport& r = (*mixer)->report();
  CHECK(r.sources[0].achieved_share == Approx(1.0 / 6.0).margin(0.002));
  CHECK(r.sources[0].target_share == Approx(1.0 / 6.0));
  CHECK(r.sources[0].epochs >= 1);  // the small domain source was restarted
  CHECK(r.batches == 400);
}

TEST_CASE("packing keeps every token, restarts positions per document and masks segment starts", "[unit]") {
  TempDir dir;
  write_lines(dir / "a.txt", 40, 3, 5, 60);
  MixerOptions options;
  options.sources = {text_source("a", dir / "a.txt", 1.0)};
  options.batch_size = 2;
  options.seq_len = 32;
  options.on_exhausted = ExhaustionPolicy::kStop;
  options.dedup.near = false;
  auto mixer = DataMixer::create(options, tokenizer());
  REQUIRE_OK(mixer);

  // Reference: the documents tokenized one by one with BOS/EOS, concatenated.
  std::vector<int64_t> expected;
  std::ifstream in(dir / "a.txt");
  std::string line;
  while (std::getline(in, line)) {
    const auto ids = tokenizer().encode_with(line, true, true).value();
    expected.insert(expected.end(), ids.begin(), ids.end());
  }
  std::vector<int64_t> seen;
  for (;;) {
    auto batch = (*mixer)->next();
    if (!batch.ok()) {
      CHECK(batch.status().code() == absl::StatusCode::kOutOfRange);
      break;
    }
    for (int64_t r = 0; r < 2; ++r) {
      for (int64_t t = 0; t < 32; ++t) {
        const int64_t id = batch->input_ids[r][t].item<int64_t>();
        const int64_t pos = batch->position_ids[r][t].item<int64_t>();
        const bool starts = pos == 0;
        CHECK((batch->labels[r][t].item<int64_t>() == -100) == starts);
        if (t > 0) {
          const bool same = batch->segment_ids[r][t].item<int64_t>() == batch->segment_ids[r][t - 1].item<int64_t>();
          CHECK(same != starts);
          if (same) CHECK(pos == batch->position_ids[r][t - 1].item<int64_t>() + 1);
        }
        seen.push_back(id);
      }
    }
  }
  // Only the final partial row is missing (stated policy at the end of a finite stream).
  REQUIRE(seen.size() <= expected.size());
  CHECK(expected.size() - seen.size() < 64);
  CHECK(std::equal(seen.begin(), seen.end(), expected.begin()));
}

TEST_CASE("a restored mixer yields exactly the batches of an uninterrupted one", "[unit]") {
  TempDir dir;
  MixerOptions options = two_sources(dir);
  options.dedup.near = true;
  options.schedule = {{2000, {{"domain", 3.0}}}, {6000, {{"domain", 1.0}}}};
  auto a = DataMixer::create(options, tokenizer());
  REQUIRE_OK(a);
  std::string state;
  std::vector<Batch> tail;
  for (int b = 0; b < 60; ++b) {
    if (b == 23) state = (*a)->save_state();
    auto batch = (*a)->next();
    REQUIRE_OK(batch);
    if (b >= 23) tail.push_back(*batch);
  }
  auto b = DataMixer::create(options, tokenizer());
  REQUIRE_OK(b);
  REQUIRE_OK((*b)->restore_state(state));
  for (const Batch& want : tail) {
    auto got = (*b)->next();
    REQUIRE_OK(got);
    CHECK(at::equal(got->input_ids, want.input_ids));
    CHECK(at::equal(got->labels, want.labels));
    CHECK(at::equal(got->segment_ids, want.segment_ids));
  }
  CHECK((*b)->report().to_json() == (*a)->report().to_json());

  MixerOptions other = options;
  other.sources[1].name = "renamed";
  auto c = DataMixer::create(other, tokenizer());
  CHECK((*c)->restore_state(state).code() == absl::StatusCode::kFailedPrecondition);
}

TEST_CASE("a schedule changes the shares as the stream goes", "[unit]") {
  TempDir dir;
  MixerOptions options = two_sources(dir);
  options.schedule = {{0, {{"domain", 5.0}}}, {20000, {{"domain", 5.0}}}, {20001, {{"domain", 1.0}}}};
  auto mixer = DataMixer::create(options, tokenizer());
  REQUIRE_OK(mixer);
  while ((*mixer)->report().tokens_mixed < 20000) REQUIRE_OK((*mixer)->next());
  CHECK((*mixer)->report().sources[0].achieved_share == Approx(0.5).margin(0.01));
  const int64_t total0 = (*mixer)->report().tokens_mixed, domain0 = (*mixer)->report().sources[0].tokens_kept;
  while ((*mixer)->report().tokens_mixed < 60000) REQUIRE_OK((*mixer)->next());
  const double later = static_cast<double>((*mixer)->report().sources[0].tokens_kept - domain0) /
                       static_cast<double>((*mixer)->report().tokens_mixed - total0);
  CHECK(later == Approx(1.0 / 6.0).margin(0.01));
}

TEST_CASE("exhaustion policies: renormalise the rest, or stop", "[unit]") {
  TempDir dir;
  MixerOptions options = two_sources(dir);
  options.on_exhausted = ExhaustionPolicy::kRenormalize;
  auto mixer = DataMixer::create(options, tokenizer());
  REQUIRE_OK(mixer);
  absl::Status status;
  int batches = 0;
  for (; batches < 10000; ++batches) {
    auto batch = (*mixer)->next();
    if (!batch.ok()) {
      status = batch.status();
      break;
    }
  }
  CHECK(status.code() == absl::StatusCode::kOutOfRange);
  CHECK((*mixer)->report().sources[0].exhausted);
  CHECK((*mixer)->report().sources[1].exhausted);
  CHECK((*mixer)->report().sources[0].documents_kept == 300);
  CHECK((*mixer)->report().sources[1].documents_kept == 900);

  options.on_exhausted = ExhaustionPolicy::kStop;
  auto stopping = DataMixer::create(options, tokenizer());
  int stop_batches = 0;
  while ((*stopping)->next().ok()) ++stop_batches;
  CHECK(stop_batches < batches);
  // At 1:5 the general source (900 documents) runs out while the domain one (300) has 120 left.
  CHECK((*stopping)->report().sources[1].exhausted);
  CHECK_FALSE((*stopping)->report().sources[0].exhausted);
}

TEST_CASE("noise, duplicates and malformed records are dropped, counted and reported", "[unit]") {
  TempDir dir;
  write_lines(dir / "clean.txt", 50, 4);
  {
    std::ofstream out(dir / "clean.txt", std::ios::app);
    out << "short\n";
    out << "==================================================================================\n";
    out << "Document 4-0: the patient heart.\n";  // an exact duplicate after normalisation? no: kept below
  }
  std::ofstream(dir / "dups.txt") << "The heart pumps blood through the vessels of the body every day.\n"
                                  << "the  HEART pumps blood through the vessels of the body every day.\n";
  {
    std::ofstream out(dir / "chat.jsonl");
    out << R"({"text": "A perfectly fine medical sentence about the liver and kidney."})" << "\n";
    out << "{not json\n";
    out << R"({"text": 42})" << "\n";
  }
  MixerOptions options;
  options.sources = {text_source("clean", dir / "clean.txt", 1.0), text_source("dups", dir / "dups.txt", 1.0)};
  SourceSpec jsonl;
  jsonl.name = "jsonl";
  jsonl.format = SourceFormat::kJsonlText;
  jsonl.paths = {dir / "chat.jsonl"};
  options.sources.push_back(jsonl);
  options.batch_size = 1;
  options.seq_len = 16;
  options.on_exhausted = ExhaustionPolicy::kRenormalize;
  options.dedup.near = false;
  auto mixer = DataMixer::create(options, tokenizer());
  REQUIRE_OK(mixer);
  while ((*mixer)->next().ok()) {
  }
  const MixReport& r = (*mixer)->report();
  CHECK(r.sources[0].dropped.at("length").documents == 1);
  CHECK(r.sources[0].dropped.count("repetition") + r.sources[0].dropped.count("non_word") >= 1);
  CHECK(r.sources[1].dropped.at("exact_duplicate").documents == 1);
  CHECK(r.sources[1].documents_kept == 1);
  CHECK(r.sources[2].malformed == 2);
  REQUIRE(r.sources[2].malformed_examples.size() == 2);
  CHECK_THAT(r.sources[2].malformed_examples[0], Catch::Contains("chat.jsonl:2"));
  const auto json = nlohmann::json::parse(r.to_json());
  CHECK(json["sources"][1]["dropped"]["exact_duplicate"]["examples"].size() == 1);
  TempDir out;
  REQUIRE_OK((*mixer)->write_report(out / "report.json"));
  CHECK(nlohmann::json::parse(std::ifstream(out / "report.json"))["sources"].size() == 3);

  jsonl.on_malformed = MalformedPolicy::kFail;
  options.sources = {jsonl};
  auto strict = DataMixer::create(options, tokenizer());
  REQUIRE_OK(strict);
  absl::Status status = absl::OkStatus();
  for (int i = 0; i < 5 && status.ok(); ++i) status = (*strict)->next().status();
  CHECK(status.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(status.message()), Catch::Contains("chat.jsonl:2"));
}

TEST_CASE("bad mixer options and empty sources get clear statuses", "[unit]") {
  TempDir dir;
  write_lines(dir / "ok.txt", 10, 5);
  std::ofstream(dir / "empty.txt") << "";
  std::ofstream(dir / "noise.txt") << "#### $$$$ %%%% ^^^^ &&&& **** ((((\n";
  auto create = [&](std::vector<SourceSpec> sources) {
    MixerOptions options;
    options.sources = std::move(sources);
    options.batch_size = 1;
    options.seq_len = 16;
    return DataMixer::create(options, tokenizer());
  };
  for (double w : {0.0, -1.0, std::nan("")}) {
    CHECK(create({text_source("a", dir / "ok.txt", w)}).status().code() == absl::StatusCode::kInvalidArgument);
  }
  CHECK(create({}).status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(create({text_source("a", dir / "ok.txt", 1), text_source("a", dir / "ok.txt", 1)}).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(create({text_source("a", dir / "missing.txt", 1)}).status().code() == absl::StatusCode::kNotFound);
  for (const char* file : {"empty.txt", "noise.txt"}) {
    auto mixer = create({text_source("ok", dir / "ok.txt", 1), text_source("bad", dir / file, 1)});
    REQUIRE_OK(mixer);
    absl::Status status = absl::OkStatus();
    for (int i = 0; i < 50 && status.ok(); ++i) status = (*mixer)->next().status();
    INFO(file);
    CHECK(status.code() == absl::StatusCode::kFailedPrecondition);
    CHECK_THAT(std::string(status.message()), Catch::Contains("\"bad\""));
  }
}

TEST_CASE("SFT batches from chat records score only the assistant's tokens", "[unit]") {
  TempDir dir;
  {
    std::ofstream out(dir / "chat.jsonl");
    for (int i = 0; i < 6; ++i) {
      out << R"({"messages": [{"role": "user", "content": "What is the femur number )" << i
          << R"(?"}, {"role": "assistant", "content": "It is the thigh bone, the longest bone of the body."}]})" << "\n";
    }
  }
  SourceSpec spec;
  spec.name = "chat";
  spec.format = SourceFormat::kJsonlChat;
  spec.paths = {dir / "chat.jsonl"};
  MixerOptions options;
  options.sources = {spec};
  options.objective = Objective::kSft;
  options.chat_template = "plain";
  options.batch_size = 2;
  options.seq_len = 64;
  options.dedup.near = false;
  auto mixer = DataMixer::create(options, tokenizer());
  REQUIRE_OK(mixer);
  auto batch = (*mixer)->next();
  REQUIRE_OK(batch);
  const auto answer = tokenizer().encode(" It is the thigh bone, the longest bone of the body.").value();
  for (int64_t r = 0; r < 2; ++r) {
    std::vector<int64_t> scored;
    for (int64_t t = 0; t < batch->labels.size(1); ++t) {
      const int64_t label = batch->labels[r][t].item<int64_t>();
      if (label != -100) {
        CHECK(label == batch->input_ids[r][t].item<int64_t>());
        scored.push_back(label);
      }
    }
    INFO("row " << r);
    // The assistant content (plus its end-of-turn marker) and nothing of the question.
    REQUIRE(scored.size() >= answer.size());
    const std::string text = tokenizer().decode(std::vector<TokenId>(scored.begin(), scored.end())).value();
    CHECK_THAT(text, Catch::Contains("thigh bone") && !Catch::Contains("femur"));
  }
  options.sources[0].format = SourceFormat::kTextLines;
  CHECK(DataMixer::create(options, tokenizer()).status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("the Trainer consumes the mixer and stops when finite data ends", "[unit]") {
  TempDir dir;
  MixerOptions options = two_sources(dir);
  options.on_exhausted = ExhaustionPolicy::kStop;
  auto mixer = DataMixer::create(options, tokenizer());
  REQUIRE_OK(mixer);
  ModelConfig config = tiny_config();
  config.vocab_size = tokenizer().vocab_size();
  Model model = tiny_model(config, 99);
  TrainerOptions trainer_options;
  trainer_options.max_steps = 100000;
  trainer_options.optimizer.lr = 1e-3;
  auto trainer = Trainer::create(model, **mixer, trainer_options);
  REQUIRE_OK(trainer);
  auto result = trainer->train();
  REQUIRE_OK(result);
  CHECK(result->stop_reason == "data_exhausted");
  CHECK(result->steps > 10);
}

TEST_CASE("SFT records a template cannot render are dropped and counted, not fatal", "[unit]") {
  TempDir dir;
  {
    std::ofstream out(dir / "chat.jsonl");
    out << R"({"messages": [{"role": "user", "content": "Hello there, doctor."}, {"role": "user", "content": "Again?"}, {"role": "assistant", "content": "Yes, I am listening to you."}]})" << "\n";
    for (int i = 0; i < 3; ++i) {
      out << R"({"messages": [{"role": "user", "content": "Question )" << i
          << R"( about the heart?"}, {"role": "assistant", "content": "The heart pumps blood."}]})" << "\n";
    }
  }
  SourceSpec spec;
  spec.name = "chat";
  spec.format = SourceFormat::kJsonlChat;
  spec.paths = {dir / "chat.jsonl"};
  MixerOptions options;
  options.sources = {spec};
  options.objective = Objective::kSft;
  options.chat_template = "llama2";  // needs alternating user/assistant turns
  options.batch_size = 2;
  options.seq_len = 64;
  options.dedup.near = false;
  auto mixer = DataMixer::create(options, tokenizer());
  REQUIRE_OK(mixer);
  REQUIRE_OK((*mixer)->next());
  CHECK((*mixer)->report().sources[0].dropped.at("unrenderable").documents == 1);
}
