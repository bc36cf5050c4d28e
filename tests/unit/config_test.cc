#include <fstream>

#include "temper/config.hpp"
#include "test_support.hpp"

using temper::ModelConfig;
using temper::parse_model_config;

namespace {

const char* kLlama = R"({
  "model_type": "llama", "vocab_size": 1000, "hidden_size": 64, "intermediate_size": 128,
  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
  "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
  "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                   "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
  "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": [2, 7], "torch_dtype": "bfloat16"})";

}  // namespace

TEST_CASE("llama config.json with GQA and llama3 rope scaling parses", "[unit]") {
  auto c = parse_model_config(kLlama, "config.json");
  REQUIRE_OK(c);
  CHECK(c->family == temper::ModelFamily::kLlama);
  CHECK(c->num_key_value_heads == 2);
  CHECK(c->head_dim == 16);
  CHECK(c->rope_theta == 500000.0);
  CHECK(c->rope_scaling.type == temper::RopeScalingType::kLlama3);
  CHECK(c->rope_scaling.original_max_position_embeddings == 8192);
  CHECK(c->tie_word_embeddings);
  CHECK_FALSE(c->qkv_bias);
  CHECK(c->eos_token_ids == std::vector<int64_t>{2, 7});
  CHECK(c->torch_dtype == "bfloat16");
}

TEST_CASE("transformers 5 rope_parameters form parses like the 4.x form", "[unit]") {
  auto c = parse_model_config(R"({"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
    "num_hidden_layers": 1, "num_attention_heads": 2, "dtype": "float32",
    "rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1234.0}})",
                              "config.json");
  REQUIRE_OK(c);
  CHECK(c->rope_theta == 1234.0);
  CHECK(c->rope_scaling.type == temper::RopeScalingType::kLinear);
  CHECK(c->rope_scaling.factor == 2.0);
  CHECK(c->num_key_value_heads == 2);  // defaults to the head count
  CHECK(c->torch_dtype == "float32");
  auto legacy = parse_model_config(R"({"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
    "num_hidden_layers": 1, "num_attention_heads": 2, "rope_scaling": {"type": "linear", "factor": 4}})",
                                   "config.json");
  REQUIRE_OK(legacy);
  CHECK(legacy->rope_scaling.factor == 4.0);
  CHECK(legacy->rope_theta == 10000.0);
}

TEST_CASE("mistral and qwen2 configs carry their family's differences", "[unit]") {
  auto mistral = parse_model_config(R"({"model_type": "mistral", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
    "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "sliding_window": 4096, "head_dim": null})",
                                    "m.json");
  REQUIRE_OK(mistral);
  CHECK(mistral->sliding_window == 4096);
  CHECK(mistral->head_dim == 4);
  auto qwen = parse_model_config(R"({"model_type": "qwen2", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
    "num_hidden_layers": 1, "num_attention_heads": 2, "use_sliding_window": false, "sliding_window": 32})",
                                 "q.json");
  REQUIRE_OK(qwen);
  CHECK(qwen->qkv_bias);
  CHECK_FALSE(qwen->o_bias);
  CHECK_FALSE(qwen->sliding_window.has_value());
}

TEST_CASE("bad config.json gets a status naming the field", "[unit]") {
  const std::string good_tail = R"("vocab_size": 10, "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2)";
  struct Case {
    std::string json;
    absl::StatusCode code;
    const char* mention;
  };
  const Case cases[] = {
      {R"({"model_type": "gpt2", )" + good_tail + "}", absl::StatusCode::kUnimplemented, "gpt2"},
      {R"({)" + good_tail + "}", absl::StatusCode::kInvalidArgument, "model_type"},
      {R"({"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8, "num_attention_heads": 2})",
       absl::StatusCode::kInvalidArgument, "num_hidden_layers"},
      {R"({"model_type": "llama", "vocab_size": "ten", "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2})",
       absl::StatusCode::kInvalidArgument, "vocab_size"},
      {R"({"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 3, "num_key_value_heads": 2, "head_dim": 4})",
       absl::StatusCode::kInvalidArgument, "num_key_value_heads"},
      {R"({"model_type": "llama", "vocab_size": 10, "hidden_size": 9, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2})",
       absl::StatusCode::kInvalidArgument, "head_dim"},
      {R"({"model_type": "llama", )" + good_tail + R"(, "rope_scaling": {"rope_type": "yarn", "factor": 4}})",
       absl::StatusCode::kUnimplemented, "yarn"},
      {R"({"model_type": "llama", )" + good_tail + R"(, "hidden_act": "gelu"})", absl::StatusCode::kUnimplemented, "gelu"},
      {R"({"model_type": "llama", )" + good_tail + R"(, "vocab_size": 0})", absl::StatusCode::kInvalidArgument, "positive"},
      {R"({"model_type": "qwen2", )" + good_tail + R"(, "use_sliding_window": true})", absl::StatusCode::kUnimplemented,
       "use_sliding_window"},
      {"[]", absl::StatusCode::kInvalidArgument, "not a JSON object"},
      {"{\"model_type\": ", absl::StatusCode::kInvalidArgument, "invalid JSON"},
  };
  for (const Case& c : cases) {
    INFO(c.json);
    auto result = parse_model_config(c.json, "some/config.json");
    REQUIRE_FALSE(result.ok());
    CHECK(result.status().code() == c.code);
    CHECK_THAT(std::string(result.status().message()), Catch::Contains(c.mention) && Catch::Contains("some/config.json"));
  }
}

TEST_CASE("load_model_config reports a directory without config.json", "[unit]") {
  temper::testing::TempDir dir;
  auto result = temper::load_model_config(dir.path());
  CHECK(result.status().code() == absl::StatusCode::kNotFound);
  std::ofstream(dir / "config.json") << kLlama;
  REQUIRE_OK(temper::load_model_config(dir.path()));
}
