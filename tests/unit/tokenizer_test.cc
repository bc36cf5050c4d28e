#include <cstdio>
#include <fstream>
#include <sstream>

#include "model_support.hpp"
#include "temper/tokenizer.hpp"

using namespace temper;
using namespace temper::testing;

namespace {

std::filesystem::path bundled_tokenizer() { return bundled_model_dir() / "tokenizer.model"; }

const std::vector<std::string> kSamples = {
    "The patient presented with acute myocardial infarction.",
    "Hypertension, diabetes mellitus (type 2) and 3 prior surgeries in 1998.",
    "  leading and   repeated   spaces  ",
    "Ünïcödé façade — naïve café",
    "中文医学文本：高血压患者",
    "emoji 🩺💊 and symbols <>{}[]#@~",
    "tab\tseparated\tfields",
};

// Reference ids from the sentencepiece command-line tool, in its own process.
std::vector<std::vector<TokenId>> spm_encode_reference(const std::vector<std::string>& lines) {
  TempDir dir;
  {
    std::ofstream in(dir / "in.txt");
    for (const auto& line : lines) in << line << "\n";
  }
  const std::string command = std::string(TEMPER_SPM_ENCODE) + " --model=" + bundled_tokenizer().string() +
                              " --output_format=id < " + (dir / "in.txt").string() + " > " +
                              (dir / "out.txt").string();
  REQUIRE(std::system(command.c_str()) == 0);
  std::ifstream out(dir / "out.txt");
  std::vector<std::vector<TokenId>> result;
  std::string line;
  while (std::getline(out, line)) {
    std::istringstream fields(line);
    std::vector<TokenId> ids;
    TokenId id;
    while (fields >> id) ids.push_back(id);
    result.push_back(ids);
  }
  return result;
}

}  // namespace

TEST_CASE("sentencepiece tokenizer encodes exactly as the sentencepiece CLI and round-trips", "[unit]") {
  if (std::string(TEMPER_SPM_ENCODE).find("NOTFOUND") != std::string::npos) {
    WARN("spm_encode not installed: reference comparison skipped");
    return;
  }
  auto tokenizer = load_sentencepiece(bundled_tokenizer());
  REQUIRE_OK(tokenizer);
  const auto reference = spm_encode_reference(kSamples);
  REQUIRE(reference.size() == kSamples.size());
  for (size_t i = 0; i < kSamples.size(); ++i) {
    INFO(kSamples[i]);
    auto ids = (*tokenizer)->encode(kSamples[i]);
    REQUIRE_OK(ids);
    CHECK(*ids == reference[i]);
    auto text = (*tokenizer)->decode(*ids);
    REQUIRE_OK(text);
    CHECK(*text == kSamples[i]);
  }
}

TEST_CASE("the bundled tokenizer follows LLaMA's special-token conventions", "[unit]") {
  auto tokenizer = load_tokenizer(bundled_model_dir());
  REQUIRE_OK(tokenizer);
  const SpecialTokens& special = (*tokenizer)->special_tokens();
  CHECK(special.unk == 0);
  CHECK(special.bos == 1);
  CHECK(special.eos == 2);
  CHECK(special.add_bos);
  CHECK_FALSE(special.add_eos);
  auto ids = (*tokenizer)->encode_for_model("hello");
  REQUIRE_OK(ids);
  CHECK(ids->front() == 1);
  CHECK(ids->back() != 2);
  auto both = (*tokenizer)->encode_with("hello", true, true);
  REQUIRE_OK(both);
  CHECK(both->back() == 2);
  CHECK(both->size() == ids->size() + 1);
  CHECK((*tokenizer)->decode(*both).value() == "hello");  // control tokens decode to nothing
  CHECK((*tokenizer)->encode("").value().empty());
}

TEST_CASE("tokenizer_config.json overrides special tokens and add_bos/add_eos", "[unit]") {
  TempDir dir;
  std::filesystem::copy_file(bundled_tokenizer(), dir / "tokenizer.model");
  std::ofstream(dir / "tokenizer_config.json")
      << R"({"bos_token": {"content": "</s>", "lstrip": false}, "eos_token": "<s>", "add_bos_token": false, "add_eos_token": true})";
  auto tokenizer = load_tokenizer(dir.path());
  REQUIRE_OK(tokenizer);
  CHECK((*tokenizer)->special_tokens().bos == 2);
  CHECK((*tokenizer)->special_tokens().eos == 1);
  auto ids = (*tokenizer)->encode_for_model("x");
  REQUIRE_OK(ids);
  CHECK(ids->front() != 2);
  CHECK(ids->back() == 1);

  std::ofstream(dir / "tokenizer_config.json") << R"({"pad_token": "<not-a-piece>"})";
  auto bad = load_tokenizer(dir.path());
  CHECK(bad.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(bad.status().message()), Catch::Contains("<not-a-piece>"));
  std::ofstream(dir / "tokenizer_config.json") << R"({"bos_token": 5})";
  CHECK(load_tokenizer(dir.path()).status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("tokenizer rejects invalid UTF-8 and out-of-vocabulary ids with positions", "[unit]") {
  auto tokenizer = load_sentencepiece(bundled_tokenizer());
  REQUIRE_OK(tokenizer);
  for (const std::string& bad : {std::string("ok \xff bytes"), std::string("ok \xc3"), std::string("ok \xed\xa0\x80"),
                                 std::string("ok \xc0\xaf")}) {
    auto ids = (*tokenizer)->encode(bad);
    CHECK(ids.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(ids.status().message()), Catch::Contains("byte 3"));
  }
  auto text = (*tokenizer)->decode({5, -1});
  CHECK(text.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(text.status().message()), Catch::Contains("position 1"));
  CHECK((*tokenizer)->decode({(*tokenizer)->vocab_size()}).status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("missing or corrupt tokenizer files get clear statuses", "[unit]") {
  TempDir dir;
  CHECK(load_tokenizer(dir.path()).status().code() == absl::StatusCode::kNotFound);
  CHECK(load_sentencepiece(dir / "none.model").status().code() == absl::StatusCode::kNotFound);
  std::ofstream(dir / "tokenizer.json") << "{}";  // no "model"
  CHECK(load_tokenizer(dir.path()).status().code() == absl::StatusCode::kInvalidArgument);
  std::ofstream(dir / "tokenizer.json") << "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}";
  CHECK(load_tokenizer(dir.path()).status().code() == absl::StatusCode::kUnimplemented);
  std::ofstream(dir / "tokenizer.model") << "definitely not a protobuf";
  CHECK(load_tokenizer(dir.path()).status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("a tokenizer and a model live in one process (no protobuf clash)", "[unit]") {
  // Debian's shared libsentencepiece crashes a process that also loads libtorch; this binary
  // links both, and the two work together here.
  auto tokenizer = load_sentencepiece(bundled_tokenizer());
  REQUIRE_OK(tokenizer);
  ModelConfig config = tiny_config();
  config.vocab_size = (*tokenizer)->vocab_size();
  const Model model = tiny_model(config);
  auto ids = (*tokenizer)->encode_with("The heart pumps blood.", true, false);
  REQUIRE_OK(ids);
  at::Tensor input = at::empty({1, static_cast<int64_t>(ids->size())}, at::kLong);
  for (size_t i = 0; i < ids->size(); ++i) input[0][static_cast<int64_t>(i)] = (*ids)[i];
  ForwardInput forward_input;
  forward_input.input_ids = input;
  auto out = model.forward(forward_input);
  REQUIRE_OK(out);
  CHECK(out->logits.size(2) == (*tokenizer)->vocab_size());
}
