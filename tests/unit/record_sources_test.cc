// Sources whose documents come from the host program: a list of records in memory, and a
// RecordStream the host implements, with and without positions of its own.
#include <fstream>

#include "model_support.hpp"
#include "temper/data_mixer.hpp"
#include "temper/record_stream.hpp"
#include "temper/tokenizer.hpp"
#include "temper/trainer.hpp"

using namespace temper;
using namespace temper::testing;

namespace {

const Tokenizer& tokenizer() {
  static const std::unique_ptr<Tokenizer> t = load_tokenizer(bundled_model_dir()).value();
  return *t;
}

std::vector<std::string> lines(int count) {
  static const char* kWords[] = {"the", "patient", "heart", "blood", "doctor", "river", "court", "market",
                                 "school", "water", "stone", "music", "winter", "nurse", "fever", "muscle"};
  std::vector<std::string> out;
  for (int d = 0; d < count; ++d) {
    std::string line = "Record " + std::to_string(d) + ":";
    for (int w = 0; w < 12 + d % 7; ++w) line += std::string(" ") + kWords[(d * 7 + w * 3) % 16];
    out.push_back(line + ".");
  }
  return out;
}

// A host stream over a list; `positions` says whether it can name its position.
class ListStream final : public RecordStream {
 public:
  ListStream(std::vector<std::string> records, bool positions) : records_(std::move(records)), positions_(positions) {}
  StatusOr<std::optional<std::string_view>> next() override {
    if (fail_at_ >= 0 && cursor_ == static_cast<size_t>(fail_at_)) return absl::UnavailableError("feed went away");
    if (cursor_ == records_.size()) return std::optional<std::string_view>();
    return std::optional<std::string_view>(records_[cursor_++]);
  }
  Status rewind() override {
    cursor_ = 0;
    ++rewinds;
    return absl::OkStatus();
  }
  StatusOr<std::optional<std::string>> position() const override {
    if (!positions_) return std::optional<std::string>();
    return std::optional<std::string>("at " + std::to_string(cursor_));
  }
  Status seek(const std::string& position) override {
    cursor_ = std::stoul(position.substr(3));
    return absl::OkStatus();
  }
  int rewinds = 0;
  int fail_at_ = -1;

 private:
  std::vector<std::string> records_;
  bool positions_;
  size_t cursor_ = 0;
};

MixerOptions one_source(SourceSpec spec) {
  MixerOptions options;
  options.sources = {std::move(spec)};
  options.batch_size = 2;
  options.seq_len = 32;
  return options;
}

SourceSpec named(const std::string& name) {
  SourceSpec spec;
  spec.name = name;
  return spec;
}

std::vector<Batch> take(DataMixer& mixer, int count) {
  std::vector<Batch> out;
  for (int i = 0; i < count; ++i) out.push_back(mixer.next().value());
  return out;
}

void check_same(const std::vector<Batch>& a, const std::vector<Batch>& b) {
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    CHECK(at::equal(a[i].input_ids, b[i].input_ids));
    CHECK(at::equal(a[i].segment_ids, b[i].segment_ids));
  }
}

}  // namespace

TEST_CASE("records in memory and from a host stream mix as the same lines in a file do", "[unit]") {
  TempDir dir;
  const std::vector<std::string> text = lines(40);
  {
    std::ofstream out(dir / "lines.txt");
    for (const std::string& line : text) out << line << "\n";
  }
  SourceSpec file = named("s");
  file.paths = {dir / "lines.txt"};
  SourceSpec memory = named("s");
  memory.records = std::make_shared<const std::vector<std::string>>(text);
  SourceSpec stream = named("s");
  stream.stream = std::make_shared<ListStream>(text, false);

  auto from_file = DataMixer::create(one_source(file), tokenizer());
  auto from_memory = DataMixer::create(one_source(memory), tokenizer());
  auto from_stream = DataMixer::create(one_source(stream), tokenizer());
  REQUIRE_OK(from_file);
  REQUIRE_OK(from_memory);
  REQUIRE_OK(from_stream);
  const std::vector<Batch> want = take(**from_file, 60);  // several passes
  check_same(take(**from_memory, 60), want);
  check_same(take(**from_stream, 60), want);
  CHECK((*from_memory)->report().sources[0].epochs > 1);

  // One list may feed two sources at once: each reader keeps its own cursor.
  MixerOptions two = one_source(memory);
  SourceSpec again = memory;
  again.name = "t";
  two.sources.push_back(again);
  two.dedup.across_sources = false;
  REQUIRE_OK(DataMixer::create(two, tokenizer()));
}

TEST_CASE("JSONL records in memory are parsed, and malformed ones are named by index", "[unit]") {
  SourceSpec spec = named("chat");
  spec.format = SourceFormat::kJsonlInstruction;
  spec.records = std::make_shared<const std::vector<std::string>>(std::vector<std::string>{
      R"({"instruction": "Name the organ that pumps blood.", "output": "The heart pumps blood through the body."})",
      "not json",
      "   ",
      R"({"instruction": "What does a nurse do?", "output": "A nurse cares for patients in a hospital."})"});
  MixerOptions options = one_source(spec);
  options.objective = Objective::kSft;
  options.chat_template = "chatml";
  options.seq_len = 128;  // a chatml-rendered example does not fit 32 tokens (it would be dropped as truncated)
  auto mixer = DataMixer::create(options, tokenizer());
  REQUIRE_OK(mixer);
  auto batch = (*mixer)->next();
  INFO((*mixer)->report().to_json());
  REQUIRE_OK(batch);
  CHECK(scored_tokens(*batch) > 0);
  const SourceReport& report = (*mixer)->report().sources[0];
  CHECK(report.malformed == 1);
  REQUIRE(report.malformed_examples.size() == 1);
  CHECK_THAT(report.malformed_examples[0], Catch::StartsWith("chat#1: invalid JSON"));

  spec.on_malformed = MalformedPolicy::kFail;
  MixerOptions strict_options = one_source(spec);
  strict_options.objective = Objective::kSft;
  auto failing = DataMixer::create(strict_options, tokenizer());
  CHECK((*failing)->next().status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("a host stream resumes at its own position or by replaying the pass", "[unit]") {
  for (const bool positions : {true, false}) {
    INFO("stream positions: " << positions);
    SourceSpec spec = named("host");
    auto first = std::make_shared<ListStream>(lines(25), positions);
    spec.stream = first;
    auto a = DataMixer::create(one_source(spec), tokenizer());
    REQUIRE_OK(a);
    take(**a, 17);  // into the second pass
    const std::string state = (*a)->save_state();
    const std::vector<Batch> want = take(**a, 10);

    auto second = std::make_shared<ListStream>(lines(25), positions);
    spec.stream = second;
    auto b = DataMixer::create(one_source(spec), tokenizer());
    REQUIRE_OK(b);
    REQUIRE_OK((*b)->restore_state(state));
    CHECK(second->rewinds == (positions ? 0 : 1));  // sought, or replayed from the start of the pass
    check_same(take(**b, 10), want);
  }
}

TEST_CASE("host record sources: errors carry the source, bad specs are refused", "[unit]") {
  SourceSpec spec = named("feed");
  auto stream = std::make_shared<ListStream>(lines(10), true);
  stream->fail_at_ = 1;
  spec.stream = stream;
  auto mixer = DataMixer::create(one_source(spec), tokenizer());
  REQUIRE_OK(mixer);
  const Status failed = (*mixer)->next().status();
  CHECK(failed.code() == absl::StatusCode::kUnavailable);
  CHECK_THAT(std::string(failed.message()), Catch::Contains("source \"feed\"") && Catch::Contains("feed went away"));

  SourceSpec both = named("both");
  both.records = std::make_shared<const std::vector<std::string>>(lines(3));
  both.paths = {"x.txt"};
  CHECK(DataMixer::create(one_source(both), tokenizer()).status().code() == absl::StatusCode::kInvalidArgument);
  both.paths.clear();
  both.stream = stream;
  CHECK(DataMixer::create(one_source(both), tokenizer()).status().code() == absl::StatusCode::kInvalidArgument);
  SourceSpec shard = named("shard");
  shard.format = SourceFormat::kTokenShard;
  shard.records = std::make_shared<const std::vector<std::string>>(lines(3));
  CHECK(DataMixer::create(one_source(shard), tokenizer()).status().code() == absl::StatusCode::kInvalidArgument);

  // A state taken over a list of another length is refused.
  SourceSpec memory = named("m");
  memory.records = std::make_shared<const std::vector<std::string>>(lines(30));
  auto a = DataMixer::create(one_source(memory), tokenizer());
  take(**a, 3);
  memory.records = std::make_shared<const std::vector<std::string>>(lines(31));
  auto b = DataMixer::create(one_source(memory), tokenizer());
  CHECK((*b)->restore_state((*a)->save_state()).code() == absl::StatusCode::kFailedPrecondition);
}

TEST_CASE("collect_eval_set draws batches until the limit or the end of a finite source", "[unit]") {
  SourceSpec spec = named("heldout");
  spec.records = std::make_shared<const std::vector<std::string>>(lines(12));
  MixerOptions options = one_source(spec);
  options.on_exhausted = ExhaustionPolicy::kStop;
  auto mixer = DataMixer::create(options, tokenizer());
  auto all = collect_eval_set("heldout", **mixer, 1000);
  REQUIRE_OK(all);
  CHECK(all->name == "heldout");
  CHECK(all->batches.size() >= 2);
  CHECK(all->batches.size() < 12);
  auto mixer2 = DataMixer::create(options, tokenizer());
  auto two = collect_eval_set("heldout", **mixer2, 2);
  REQUIRE_OK(two);
  CHECK(two->batches.size() == 2);
  CHECK(collect_eval_set("x", **mixer2, 0).status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(collect_eval_set("x", **mixer, 1).status().code() == absl::StatusCode::kFailedPrecondition);  // ended
}
