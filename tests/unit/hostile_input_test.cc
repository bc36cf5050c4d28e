// Hostile inputs that the per-component tests did not cover (docs/reliability.md lists every
// row of the bad-input table with the test behind it): sizes that would overflow, numbers JSON
// cannot hold, nesting that would exhaust the stack, invalid UTF-8, regular expressions that
// would hang the host, non-finite adapters, quant_states that lie.
#include <cstring>
#include <fstream>
#include <map>

#include "io/json_file.hpp"
#include "io/safetensors.hpp"
#include "lora/lora_targets.hpp"
#include "model_support.hpp"
#include "temper/config.hpp"
#include "temper/generation.hpp"
#include "temper/lora_adapter.hpp"
#include "temper/nf4_quantizer.hpp"
#include "temper/runtime.hpp"
#include "temper/tokenizer.hpp"

using namespace temper;
using namespace temper::testing;

namespace {

const std::string kTail = R"("intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2)";

absl::Status config_status(const std::string& json) { return parse_model_config(json, "hostile/config.json").status(); }

std::string message(const absl::Status& status) { return std::string(status.message()); }

}  // namespace

TEST_CASE("config.json sizes that would overflow size computations are refused", "[unit][reliability]") {
  struct Case {
    std::string json;
    const char* mention;
  };
  const Case cases[] = {
      // 2^40: a weight of hidden x vocab elements would not fit int64 bytes.
      {R"({"model_type": "llama", "vocab_size": 1099511627776, "hidden_size": 8, )" + kTail + "}", "above temper's limit"},
      {R"({"model_type": "llama", "vocab_size": 10, "hidden_size": 1099511627776, )" + kTail + "}", "above temper's limit"},
      // 10^12 layers: the loader would list parameters forever.
      {R"({"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1000000000000, "num_attention_heads": 2})",
       "num_hidden_layers"},
      // heads x head_dim overflows 31 bits although each is in range.
      {R"({"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 65536, "head_dim": 65536})",
       "num_attention_heads x head_dim"},
      // Numbers JSON writes but int64/double cannot hold: 2^64, 1e400 (beyond double's range).
      {R"({"model_type": "llama", "vocab_size": 18446744073709551615, "hidden_size": 8, )" + kTail + "}", "below 2^63"},
      {R"({"model_type": "llama", "vocab_size": 1e400, "hidden_size": 8, )" + kTail + "}", "number overflow"},
      {R"({"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "rms_norm_eps": 1e400, )" + kTail + "}", "number overflow"},
      {R"({"model_type": "llama", "vocab_size": 10.5, "hidden_size": 8, )" + kTail + "}", "must be an integer"},
      {R"({"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "max_position_embeddings": -5, )" + kTail + "}",
       "max_position_embeddings"},
  };
  for (const Case& c : cases) {
    INFO(c.json);
    const absl::Status status = config_status(c.json);
    CHECK(status.code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(message(status), Catch::Contains(c.mention) && Catch::Contains("hostile/config.json"));
  }
}

TEST_CASE("deeply nested, invalid UTF-8 and huge JSON values get INVALID_ARGUMENT with a short message",
          "[unit][reliability]") {
  // 200,000 nested arrays: parsing, destroying and quoting it must not recurse that deep.
  const std::string deep = std::string(200000, '[') + std::string(200000, ']');
  CHECK(config_status(deep).code() == absl::StatusCode::kInvalidArgument);
  const std::string deep_field =
      R"({"model_type": "llama", "vocab_size": )" + deep + R"(, "hidden_size": 8, )" + kTail + "}";
  const absl::Status nested = config_status(deep_field);
  CHECK(nested.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(message(nested), Catch::Contains("an array of 1 elements"));
  CHECK(message(nested).size() < 400);

  // Invalid UTF-8 inside a string (a lone continuation byte, an overlong encoding).
  for (const char* bad : {"\x80", "\xc0\xaf", "\xed\xa0\x80"}) {
    const std::string json = std::string(R"({"model_type": "llama)") + bad + R"(", "vocab_size": 10, "hidden_size": 8, )" + kTail + "}";
    const absl::Status status = config_status(json);
    CHECK(status.code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(message(status), Catch::Contains("invalid JSON"));
  }

  // A 10 MB string where a number belongs is quoted in at most ~100 characters.
  const std::string huge = R"({"model_type": "llama", "vocab_size": ")" + std::string(10 << 20, 'x') +
                           R"(", "hidden_size": 8, )" + kTail + "}";
  const absl::Status big = config_status(huge);
  CHECK(big.code() == absl::StatusCode::kInvalidArgument);
  CHECK(message(big).size() < 400);
  CHECK_THAT(message(big), Catch::Contains("..."));
  // The preview never ends inside a UTF-8 sequence.
  const std::string preview = json_preview(nlohmann::json(std::string(98, 'a') + "\xc3\xa9\xc3\xa9"));
  CHECK(preview == "\"" + std::string(98, 'a') + "...");
}

TEST_CASE("PEFT regular expressions that could hang or crash the host are refused", "[unit][reliability]") {
  // Too long, nested too deep for libstdc++'s recursive compiler, and not a regular expression.
  CHECK(compile_peft_regex(std::string(kMaxPeftRegexBytes + 1, 'a'), "target_modules").status().code() ==
        absl::StatusCode::kInvalidArgument);
  const std::string deep = std::string(kMaxPeftRegexNesting + 1, '(') + "q" + std::string(kMaxPeftRegexNesting + 1, ')');
  const absl::Status nested = compile_peft_regex(deep, "target_modules").status();
  CHECK(nested.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(message(nested), Catch::Contains("nests groups 33 deep"));
  CHECK(compile_peft_regex("q_proj(", "target_modules").status().code() == absl::StatusCode::kInvalidArgument);
  // Brackets and escapes do not count as groups; a deep but allowed pattern compiles.
  REQUIRE_OK(compile_peft_regex(R"([(((((]\(\(\(.*q_proj)", "target_modules"));
  REQUIRE_OK(compile_peft_regex(std::string(kMaxPeftRegexNesting, '(') + "q" + std::string(kMaxPeftRegexNesting, ')'),
                                "target_modules"));
  // Numbers libstdc++ 12 would convert with an unchecked overflow (fuzz_peft_config found the
  // back-reference in a rank_pattern key): refused by their length, before compiling.
  for (const std::string pattern : {R"(layers\18446744073709551615.0\..*)", "q{99999999999999999999}",
                                    "q{1,18446744073709551616}", "[{]{0,1234567890}"}) {
    INFO(pattern);
    const absl::Status refused = compile_peft_regex(pattern, "rank_pattern key").status();
    CHECK(refused.code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(message(refused), Catch::Contains("-digit number at byte") && Catch::Contains("rank_pattern key"));
  }
  REQUIRE_OK(compile_peft_regex("layers\\.[0-9]{1,3}\\.q_proj", "rank_pattern key"));
  // A pattern with catastrophic backtracking in a backtracking engine, on a long module name:
  // matched in polynomial time, so this returns (quickly) instead of hanging.
  auto evil = compile_peft_regex("(a|a)*(a|a)*b", "target_modules");
  REQUIRE_OK(evil);
  CHECK_FALSE(std::regex_match(std::string(40, 'a'), *evil));
}

TEST_CASE("an adapter holding NaN or infinity is refused, naming the tensor", "[unit][reliability]") {
  TempDir tmp;
  const ModelConfig config = tiny_config();
  Model model = tiny_model(config, 41);
  {
    LoraOptions options;
    options.rank = 2;
    auto adapter = LoraAdapter::create(model, options);
    REQUIRE_OK(adapter);
    REQUIRE_OK(adapter->save(tmp / "good", "tiny"));
    adapter->remove();
  }
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    auto file = SafetensorsFile::open(tmp / "good" / "adapter_model.safetensors");
    REQUIRE_OK(file);
    NamedTensors tensors;
    for (const SafetensorsEntry& e : file->entries()) tensors.emplace_back(e.name, file->tensor(e.name).value().clone());
    const std::string target = "base_model.model.model.layers.1.mlp.up_proj.lora_A.weight";
    bool found = false;
    for (auto& [name, t] : tensors) {
      if (name == target) {
        t.view(-1)[7] = bad;
        found = true;
      }
    }
    REQUIRE(found);
    std::filesystem::create_directories(tmp / "bad");
    std::filesystem::copy_file(tmp / "good" / "adapter_config.json", tmp / "bad" / "adapter_config.json",
                               std::filesystem::copy_options::overwrite_existing);
    REQUIRE_OK(write_safetensors(tmp / "bad" / "adapter_model.safetensors", tensors));
    auto loaded = LoraAdapter::load(model, tmp / "bad");
    INFO(status_text(loaded));
    REQUIRE_FALSE(loaded.ok());
    CHECK(loaded.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(message(loaded.status()), Catch::Contains(target) && Catch::Contains("flat index 7"));
    // Nothing was installed: the model still takes a fresh adapter.
    auto fresh = LoraAdapter::load(model, tmp / "good");
    REQUIRE_OK(fresh);
    fresh->remove();
  }
}

TEST_CASE("a quant_state whose shape overflows or disagrees with its tensors is refused", "[unit][reliability]") {
  std::map<std::string, at::Tensor> tensors;
  auto lookup = [&](const std::string& name) -> StatusOr<at::Tensor> {
    auto it = tensors.find(name);
    if (it == tensors.end()) return absl::NotFoundError(name);
    return it->second;
  };
  auto set_json = [&](const std::string& json) {
    at::Tensor bytes = at::empty({static_cast<int64_t>(json.size())}, at::kByte);
    std::memcpy(bytes.data_ptr(), json.data(), json.size());
    tensors["p.weight.quant_state.bitsandbytes__nf4"] = bytes;
  };
  tensors["p.weight"] = at::zeros({8, 1}, at::kByte);
  tensors["p.weight.quant_map"] = Nf4Quantizer::nf4_levels();
  tensors["p.weight.absmax"] = at::ones({1});
  set_json(R"({"quant_type":"nf4","blocksize":64,"dtype":"bfloat16","shape":[4,4]})");
  REQUIRE_OK(Nf4Quantizer::from_tensors(lookup, "p"));
  struct Case {
    const char* json;
    const char* mention;
  };
  const Case cases[] = {
      // Each dimension is in range but the product overflows int64.
      {R"({"quant_type":"nf4","blocksize":64,"dtype":"bfloat16","shape":[1099511627776,1099511627776]})", "shape"},
      {R"({"quant_type":"nf4","blocksize":64,"dtype":"bfloat16","shape":[4,5]})", "p.weight: expected"},
      {R"({"quant_type":"nf4","blocksize":64,"dtype":"bfloat16","shape":[4,-4]})", "invalid shape"},
      {R"({"quant_type":"nf4","blocksize":64,"dtype":"int8","shape":[4,4]})", "dtype"},
      {R"({"quant_type":"nf4","blocksize":64,"dtype":"bfloat16","shape":[4,4],"nested_offset":0.1,"nested_blocksize":256})",
       "p.weight.absmax: expected Byte"},
      {R"({"quant_type":"nf4","blocksize":64,"dtype":"bfloat16","shape":[4,4],"nested_offset":"x"})", "nested_offset"},
      {R"({"quant_type":"nf4","blocksize":64,"dtype":"bfloat16","shape":[4,4],"nested_offset":1e400})", "number overflow"},
      {R"(not json)", "invalid JSON"},
  };
  for (const Case& c : cases) {
    INFO(c.json);
    set_json(c.json);
    const absl::Status status = Nf4Quantizer::from_tensors(lookup, "p").status();
    CHECK(status.code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(message(status), Catch::Contains(c.mention));
  }
  // quant_map of the wrong dtype, or packed bytes stored as float.
  set_json(R"({"quant_type":"nf4","blocksize":64,"dtype":"bfloat16","shape":[4,4]})");
  tensors["p.weight"] = at::zeros({8, 1}, at::kFloat);
  CHECK(Nf4Quantizer::from_tensors(lookup, "p").status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("sampling with a vanishing or huge temperature stays a valid distribution", "[unit][reliability]") {
  // Found by fuzz_capi_options: logits / 5e-324 overflowed to inf and the softmax gave NaN, which
  // libtorch's multinomial refused (INTERNAL).
  const ModelConfig config = tiny_config();
  const Model model = tiny_model(config, 43);
  GenerationOptions options;
  options.max_new_tokens = 4;
  options.stop_token_ids = {-1};
  options.temperature = 0.0;
  auto greedy = generate(model, {1, 5, 9}, options);
  REQUIRE_OK(greedy);
  for (double t : {5e-324, 1e-300}) {
    options.temperature = t;
    auto sampled = generate(model, {1, 5, 9}, options);
    REQUIRE_OK(sampled);
    CHECK(*sampled == *greedy);  // all mass on the most likely token
  }
  options.temperature = 1e300;
  REQUIRE_OK(generate(model, {1, 5, 9}, options));
  options.temperature = std::numeric_limits<double>::infinity();
  REQUIRE_OK(generate(model, {1, 5, 9}, options));
}

TEST_CASE("a LoRA alpha whose scale no adapter dtype can hold is refused", "[unit][reliability]") {
  // Found by fuzz_capi_options: alpha 1e300 passed the checks and made libtorch throw while
  // scaling the DoRA magnitude (INTERNAL).
  TempDir tmp;
  const ModelConfig config = tiny_config();
  Model model = tiny_model(config, 44);
  for (double alpha : {1e300, 65505.0}) {
    LoraOptions options;
    options.rank = 2;
    options.alpha = alpha;
    options.use_dora = true;
    const absl::Status status = LoraAdapter::create(model, options).status();
    CHECK(status.code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(message(status), Catch::Contains("at most 65504"));
  }
  LoraOptions largest;
  largest.rank = 2;
  largest.alpha = 65504.0;
  auto adapter = LoraAdapter::create(model, largest);
  REQUIRE_OK(adapter);
  REQUIRE_OK(adapter->save(tmp / "good", "tiny"));
  adapter->remove();
  // The same bound for adapter_config.json's lora_alpha and alpha_pattern.
  std::ifstream in(tmp / "good" / "adapter_config.json");
  nlohmann::json cfg = nlohmann::json::parse(in);
  for (const char* field : {"lora_alpha", "alpha_pattern"}) {
    nlohmann::json bad = cfg;
    if (std::string(field) == "lora_alpha") bad["lora_alpha"] = 1e300;
    else bad["alpha_pattern"] = {{"q_proj", -1e300}};
    std::filesystem::create_directories(tmp / field);
    std::filesystem::copy_file(tmp / "good" / "adapter_model.safetensors", tmp / field / "adapter_model.safetensors");
    std::ofstream(tmp / field / "adapter_config.json") << bad.dump();
    const absl::Status status = LoraAdapter::load(model, tmp / field).status();
    CHECK(status.code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(message(status), Catch::Contains(field) && Catch::Contains("at most 65504"));
  }
}

TEST_CASE("a tokenizer.json post-processor id that names no token is refused at load", "[unit][reliability]") {
  // Found by fuzz_tokenizer_json: id 9 lay inside the id range (added token 10 exists) but named
  // no token, so encode_for_model emitted an id that decode refused.
  TempDir dir;
  nlohmann::json doc = {
      {"added_tokens", nlohmann::json::array({{{"id", 10}, {"content", "[M]"}, {"special", true}}})},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", nlohmann::json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                          {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
        {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {9}}, {"tokens", {"<s>"}}}}}}}},
      {"model", {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", 1}}}, {"merges", nlohmann::json::array()}}}};
  for (const nlohmann::json& id : {nlohmann::json(9), nlohmann::json(4294967306LL), nlohmann::json(-1)}) {
    doc["post_processor"]["special_tokens"]["<s>"]["ids"] = {id};
    std::ofstream(dir / "tokenizer.json") << doc.dump();
    const absl::Status status = load_tokenizer_json(dir / "tokenizer.json").status();
    INFO(id.dump());
    CHECK(status.code() == absl::StatusCode::kInvalidArgument);
  }
  doc["post_processor"]["special_tokens"]["<s>"]["ids"] = {10};
  std::ofstream(dir / "tokenizer.json") << doc.dump();
  auto tokenizer = load_tokenizer_json(dir / "tokenizer.json");
  REQUIRE_OK(tokenizer);
  auto ids = (*tokenizer)->encode_for_model("ab");
  REQUIRE_OK(ids);
  REQUIRE_OK((*tokenizer)->decode_with_special(*ids));
}

TEST_CASE("a model on a CUDA device the process lacks is FAILED_PRECONDITION", "[unit][reliability]") {
  // Found by fuzz_capi_options: libtorch's exception from the first CUDA allocation was INTERNAL.
  if (cuda_device_count() > 0) {
    ModelOptions options;
    options.device = at::Device(at::kCUDA, static_cast<at::DeviceIndex>(cuda_device_count()));
    CHECK(Model::random(tiny_config(), options, 1).status().code() == absl::StatusCode::kFailedPrecondition);
    return;
  }
  ModelOptions options;
  options.device = at::kCUDA;
  const absl::Status status = Model::random(tiny_config(), options, 1).status();
  CHECK(status.code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(message(status), Catch::Contains("cuda:0") && Catch::Contains("0 CUDA device"));
}

TEST_CASE("a tokenizer.json field of the wrong JSON type is INVALID_ARGUMENT, never an escaped exception",
          "[unit][reliability]") {
  // Found by fuzz_tokenizer_json: "type": 1 in the model threw nlohmann's type_error out of
  // load_tokenizer_json, which terminates a host that does not catch it.
  TempDir dir;
  const nlohmann::json model = {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", 1}}}, {"merges", nlohmann::json::array()}};
  for (const auto& [field, value] : std::vector<std::pair<std::string, nlohmann::json>>{
           {"model", {{"type", 1}, {"vocab", {{"a", 0}}}, {"merges", nlohmann::json::array()}}},
           {"pre_tokenizer", {{"type", 5}}},
           {"normalizer", {{"type", nlohmann::json::array()}}},
           {"decoder", {{"type", nullptr}}}}) {
    nlohmann::json doc = {{"model", model}};
    doc[field] = value;
    std::ofstream(dir / "tokenizer.json") << doc.dump();
    INFO(doc.dump());
    CHECK(load_tokenizer_json(dir / "tokenizer.json").status().code() == absl::StatusCode::kInvalidArgument);
  }
}
