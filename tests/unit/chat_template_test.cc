#include <fstream>

#include <nlohmann/json.hpp>

#include "data/chat_segments.hpp"
#include "data/chat_template.hpp"
#include "test_support.hpp"
#include "temper/tokenizer.hpp"

using namespace temper;
using namespace temper::testing;

namespace {

const Tokenizer& bundled() {
  static const std::unique_ptr<Tokenizer> tokenizer = load_tokenizer(bundled_model_dir()).value();
  return *tokenizer;
}

const std::vector<std::string> kMarkers = {"<|im_start|>",        "<|im_end|>",        "<|begin_of_text|>",
                                           "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"};

// The bundled tokenizer plus the chat markers as special pieces (ids after its vocabulary), as
// the tokenizers of chat models have them. Decoding spells the markers out.
class MarkerTokenizer final : public Tokenizer {
 public:
  explicit MarkerTokenizer(const Tokenizer& inner) : inner_(inner) { special_ = inner.special_tokens(); }

  StatusOr<std::vector<TokenId>> encode(std::string_view text) const override { return inner_.encode(text); }

  StatusOr<std::string> decode(const std::vector<TokenId>& ids) const override {
    std::string text;
    std::vector<TokenId> run;
    const auto flush = [&]() -> Status {
      if (run.empty()) return absl::OkStatus();
      StatusOr<std::string> part = inner_.decode(run);
      if (!part.ok()) return part.status();
      text += *part;
      run.clear();
      return absl::OkStatus();
    };
    for (TokenId id : ids) {
      if (std::optional<std::string> marker = marker_of(id)) {
        Status status = flush();
        if (!status.ok()) return status;
        text += *marker;
      } else {
        run.push_back(id);
      }
    }
    Status status = flush();
    if (!status.ok()) return status;
    return text;
  }

  int32_t vocab_size() const override { return inner_.vocab_size() + static_cast<int32_t>(kMarkers.size()); }

  std::optional<TokenId> piece_to_id(std::string_view piece) const override {
    for (size_t i = 0; i < kMarkers.size(); ++i) {
      if (kMarkers[i] == piece) return inner_.vocab_size() + static_cast<TokenId>(i);
    }
    return inner_.piece_to_id(piece);
  }

  std::optional<std::string> marker_of(TokenId id) const {
    const TokenId index = id - inner_.vocab_size();
    if (index < 0 || index >= static_cast<TokenId>(kMarkers.size())) return std::nullopt;
    return kMarkers[static_cast<size_t>(index)];
  }

 private:
  const Tokenizer& inner_;
};

// The text one token stands for, spaces included (decode() drops the space that opens a
// sequence, so the token is decoded after an anchor token and the anchor's text removed). BOS and
// EOS, which decode to nothing, are spelt <s> and </s>.
std::string surface(const Tokenizer& tokenizer, TokenId id) {
  const SpecialTokens& special = tokenizer.special_tokens();
  if (special.bos && id == *special.bos) return "<s>";
  if (special.eos && id == *special.eos) return "</s>";
  const TokenId anchor = tokenizer.encode("a").value().at(0);
  const std::string base = tokenizer.decode({anchor}).value();
  const std::string both = tokenizer.decode({anchor, id}).value();
  REQUIRE(both.compare(0, base.size(), base) == 0);
  return both.substr(base.size());
}

// The surfaces of each maximal run of target tokens.
std::vector<std::string> target_runs(const Tokenizer& tokenizer, const RenderedExample& example) {
  REQUIRE(example.ids.size() == example.is_target.size());
  std::vector<std::string> runs;
  bool in_run = false;
  for (size_t i = 0; i < example.ids.size(); ++i) {
    if (!example.is_target[i]) {
      in_run = false;
      continue;
    }
    if (!in_run) runs.emplace_back();
    in_run = true;
    runs.back() += surface(tokenizer, example.ids[i]);
  }
  return runs;
}

std::string without(std::string text, const std::string& what) {
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at)) text.erase(at, what.size());
  return text;
}

std::string replaced(std::string text, const std::string& what, const std::string& with) {
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + with.size())) {
    text.replace(at, what.size(), with);
  }
  return text;
}

size_t count_of(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++n;
  return n;
}

// A system message and three exchanges; the last question carries surrounding spaces, which
// the Llama and Alpaca templates strip and ChatML and plain keep.
const std::vector<ChatMessage> kConversation = {
    {"system", "You are a careful medical assistant."},
    {"user", "What is hypertension?"},
    {"assistant", "High blood pressure."},
    {"user", "Is it common?\nAnswer briefly."},
    {"assistant", "Yes, very common."},
    {"user", "  How is it treated?  "},
    {"assistant", "Diet, exercise and medication."},
};

struct Expected {
  ChatTemplate chat_template;
  bool add_bos;
  std::string bos;                   // how the template's text spells BOS
  std::string text;                  // what the Hugging Face template renders for kConversation
  std::vector<std::string> targets;  // what the loss covers, run by run
};

// Written by hand from the templates' definitions (tokenizer_config.json chat_template of
// Qwen2-Instruct, Llama-2-chat, Meta-Llama-3-Instruct; the Alpaca chat template), with
// bos_token "<s>" (Llama-3: "<|begin_of_text|>") and eos_token "</s>".
const std::vector<Expected>& expectations() {
  static const std::vector<Expected> cases = {
      {ChatTemplate::kChatML, false, "",
       "<|im_start|>system\nYou are a careful medical assistant.<|im_end|>\n"
       "<|im_start|>user\nWhat is hypertension?<|im_end|>\n"
       "<|im_start|>assistant\nHigh blood pressure.<|im_end|>\n"
       "<|im_start|>user\nIs it common?\nAnswer briefly.<|im_end|>\n"
       "<|im_start|>assistant\nYes, very common.<|im_end|>\n"
       "<|im_start|>user\n  How is it treated?  <|im_end|>\n"
       "<|im_start|>assistant\nDiet, exercise and medication.<|im_end|>\n",
       {"High blood pressure.<|im_end|>", "Yes, very common.<|im_end|>", "Diet, exercise and medication.<|im_end|>"}},
      {ChatTemplate::kLlama2, true, "<s>",
       "<s>[INST] <<SYS>>\nYou are a careful medical assistant.\n<</SYS>>\n\nWhat is hypertension? [/INST]"
       " High blood pressure. </s>"
       "<s>[INST] Is it common?\nAnswer briefly. [/INST] Yes, very common. </s>"
       "<s>[INST] How is it treated? [/INST] Diet, exercise and medication. </s>",
       {" High blood pressure. </s>", " Yes, very common. </s>", " Diet, exercise and medication. </s>"}},
      {ChatTemplate::kLlama3, true, "<|begin_of_text|>",
       "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a careful medical assistant.<|eot_id|>"
       "<|start_header_id|>user<|end_header_id|>\n\nWhat is hypertension?<|eot_id|>"
       "<|start_header_id|>assistant<|end_header_id|>\n\nHigh blood pressure.<|eot_id|>"
       "<|start_header_id|>user<|end_header_id|>\n\nIs it common?\nAnswer briefly.<|eot_id|>"
       "<|start_header_id|>assistant<|end_header_id|>\n\nYes, very common.<|eot_id|>"
       "<|start_header_id|>user<|end_header_id|>\n\nHow is it treated?<|eot_id|>"
       "<|start_header_id|>assistant<|end_header_id|>\n\nDiet, exercise and medication.<|eot_id|>",
       {"High blood pressure.<|eot_id|>", "Yes, very common.<|eot_id|>", "Diet, exercise and medication.<|eot_id|>"}},
      {ChatTemplate::kAlpaca, true, "<s>",
       "<s>You are a careful medical assistant.\n\n"
       "### Instruction:\nWhat is hypertension?\n\n### Response:\nHigh blood pressure.</s>\n\n"
       "### Instruction:\nIs it common?\nAnswer briefly.\n\n### Response:\nYes, very common.</s>\n\n"
       "### Instruction:\nHow is it treated?\n\n### Response:\nDiet, exercise and medication.</s>\n\n",
       {"High blood pressure.</s>", "Yes, very common.</s>", "Diet, exercise and medication.</s>"}},
      {ChatTemplate::kPlain, false, "",
       "system: You are a careful medical assistant.\n"
       "user: What is hypertension?\n"
       "assistant: High blood pressure.</s>\n"
       "user: Is it common?\nAnswer briefly.\n"
       "assistant: Yes, very common.</s>\n"
       "user:   How is it treated?  \n"
       "assistant: Diet, exercise and medication.</s>\n",
       {"High blood pressure.</s>", "Yes, very common.</s>", "Diet, exercise and medication.</s>"}},
  };
  return cases;
}

}  // namespace

TEST_CASE("chat templates render the Hugging Face templates' text for a three-exchange conversation", "[unit]") {
  for (const Expected& expected : expectations()) {
    INFO(chat_template_name(expected.chat_template));
    auto text = render_chat_text(expected.chat_template, kConversation, expected.add_bos, expected.bos, "</s>");
    REQUIRE_OK(text);
    CHECK(*text == expected.text);
  }
}

TEST_CASE("chat templates: the loss mask covers exactly the assistant contents and their end-of-turn tokens",
          "[unit]") {
  const MarkerTokenizer with_markers(bundled());
  for (const Expected& expected : expectations()) {
    for (const Tokenizer* tokenizer : {&bundled(), static_cast<const Tokenizer*>(&with_markers)}) {
      const bool markers_are_tokens = tokenizer == &with_markers;
      INFO(chat_template_name(expected.chat_template) << (markers_are_tokens ? " with marker tokens" : " markers as text"));
      auto example = render_chat(expected.chat_template, kConversation, *tokenizer, expected.add_bos);
      REQUIRE_OK(example);
      REQUIRE(example->ids.size() == example->is_target.size());

      // Token by token: each run of target tokens spells one assistant content and its end of
      // turn, and nothing else is a target.
      CHECK(target_runs(*tokenizer, *example) == expected.targets);

      // The whole sequence decodes to the template's text (BOS and EOS decode to nothing). Later
      // Llama-2 turns follow a BOS and are encoded as a sequence start, as Meta's reference
      // encoder encodes each "[INST] ..." turn: decode shows their dummy-prefix space.
      std::string decodable = expected.text;
      if (expected.chat_template == ChatTemplate::kLlama2) decodable = replaced(decodable, "</s><s>[INST]", "</s> [INST]");
      decodable = without(without(decodable, "</s>"), "<s>");
      if (!expected.bos.empty()) decodable = without(decodable, expected.bos);
      CHECK(tokenizer->decode(example->ids).value() == decodable);

      if (expected.add_bos) CHECK(example->ids.front() == *tokenizer->special_tokens().bos);
      CHECK(static_cast<size_t>(std::count(example->ids.begin(), example->ids.end(), *tokenizer->special_tokens().eos)) ==
            count_of(expected.text, "</s>"));
      if (markers_are_tokens) {
        // Every marker of the text is one token.
        for (size_t m = 0; m < kMarkers.size(); ++m) {
          if (kMarkers[m] == "<|begin_of_text|>") continue;  // BOS here is the tokenizer's own
          const TokenId id = *with_markers.piece_to_id(kMarkers[m]);
          CHECK(static_cast<size_t>(std::count(example->ids.begin(), example->ids.end(), id)) ==
                count_of(expected.text, kMarkers[m]));
        }
      }
    }
  }
}

TEST_CASE("chat templates: text after a marker token continues without a dummy-prefix space", "[unit]") {
  const MarkerTokenizer with_markers(bundled());
  auto example = render_chat(ChatTemplate::kChatML, {{"user", "hello"}, {"assistant", "world"}}, with_markers, false);
  REQUIRE_OK(example);
  // <|im_start|> "user\nhello" <|im_end|> "\n" <|im_start|> "assistant\n" "world" <|im_end|> "\n"
  REQUIRE(example->ids.front() == *with_markers.piece_to_id("<|im_start|>"));
  CHECK(surface(with_markers, example->ids[1]).front() == 'u');
  std::string targets;
  for (size_t i = 0; i < example->ids.size(); ++i) {
    if (example->is_target[i]) targets += surface(with_markers, example->ids[i]);
  }
  CHECK(targets == "world<|im_end|>");
  // The same text as a whole string tokenizes the same way where no boundary intervenes.
  CHECK(with_markers.decode(example->ids).value() ==
        "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\nworld<|im_end|>\n");
}

TEST_CASE("chat templates: a single instruction turn and add_bos", "[unit]") {
  const std::vector<ChatMessage> turn = {{"user", "Define fever."}, {"assistant", "A raised temperature."}};
  auto with_bos = render_chat(ChatTemplate::kChatML, turn, bundled(), true);
  auto without_bos = render_chat(ChatTemplate::kChatML, turn, bundled(), false);
  REQUIRE_OK(with_bos);
  REQUIRE_OK(without_bos);
  CHECK(with_bos->ids.front() == *bundled().special_tokens().bos);
  CHECK(std::vector<TokenId>(with_bos->ids.begin() + 1, with_bos->ids.end()) == without_bos->ids);
  CHECK_FALSE(with_bos->is_target.front());

  // Llama-2 writes BOS itself: add_bos decides only the first one.
  auto llama2 = render_chat(ChatTemplate::kLlama2, turn, bundled(), false);
  REQUIRE_OK(llama2);
  CHECK(llama2->ids.front() != *bundled().special_tokens().bos);
  CHECK(render_chat_text(ChatTemplate::kLlama2, turn, false).value() ==
        "[INST] Define fever. [/INST] A raised temperature. </s>");

  // Without a system message nothing is invented.
  CHECK(render_chat_text(ChatTemplate::kAlpaca, turn, false).value() ==
        "### Instruction:\nDefine fever.\n\n### Response:\nA raised temperature.</s>\n\n");
  CHECK(render_chat_text(ChatTemplate::kChatML, turn, false).value() ==
        "<|im_start|>user\nDefine fever.<|im_end|>\n<|im_start|>assistant\nA raised temperature.<|im_end|>\n");
}

TEST_CASE("chat templates refuse conversations they cannot render", "[unit]") {
  const auto refused = [](ChatTemplate t, const std::vector<ChatMessage>& messages, const std::string& why) {
    auto example = render_chat(t, messages, bundled(), true);
    INFO(chat_template_name(t) << ": " << why);
    REQUIRE(example.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(example.status().message()), Catch::Contains(why));
  };
  for (ChatTemplate t : {ChatTemplate::kChatML, ChatTemplate::kLlama2, ChatTemplate::kLlama3, ChatTemplate::kAlpaca,
                         ChatTemplate::kPlain}) {
    refused(t, {}, "no messages");
    refused(t, {{"user", "q"}, {"tool", "x"}, {"assistant", "a"}}, "message 1 has the role \"tool\"");
    refused(t, {{"system", "s"}, {"user", "q"}}, "no assistant message");
  }
  for (ChatTemplate t : {ChatTemplate::kLlama2, ChatTemplate::kAlpaca}) {
    refused(t, {{"user", "q"}, {"user", "q2"}, {"assistant", "a"}}, "message 1 is \"user\" where \"assistant\"");
    refused(t, {{"assistant", "a"}}, "message 0 is \"assistant\" where \"user\"");
    refused(t, {{"user", "q"}, {"system", "s"}, {"assistant", "a"}}, "message 1 is \"system\"");
  }
  // ChatML, Llama-3 and plain take any order.
  REQUIRE_OK(render_chat(ChatTemplate::kLlama3, {{"assistant", "a"}, {"system", "s"}}, bundled(), true));

  // Templates that end turns with EOS need one.
  auto no_eos_tokenizer = load_tokenizer(bundled_model_dir());
  REQUIRE_OK(no_eos_tokenizer);
  SpecialTokens special = (*no_eos_tokenizer)->special_tokens();
  special.eos.reset();
  (*no_eos_tokenizer)->set_special_tokens(special);
  auto no_eos = render_chat(ChatTemplate::kAlpaca, {{"user", "q"}, {"assistant", "a"}}, **no_eos_tokenizer, false);
  CHECK(no_eos.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(no_eos.status().message()), Catch::Contains("no EOS"));
  REQUIRE_OK(render_chat(ChatTemplate::kChatML, {{"user", "q"}, {"assistant", "a"}}, **no_eos_tokenizer, false));

  // Contents must be UTF-8 for the tokenizer.
  CHECK_FALSE(render_chat(ChatTemplate::kPlain, {{"user", "q"}, {"assistant", "bad \xFF"}}, bundled(), false).ok());
}

TEST_CASE("chat template names parse case-insensitively and unknown names are refused", "[unit]") {
  CHECK(parse_chat_template_name("ChatML").value() == ChatTemplate::kChatML);
  CHECK(parse_chat_template_name("qwen2").value() == ChatTemplate::kChatML);
  CHECK(parse_chat_template_name("Llama-2").value() == ChatTemplate::kLlama2);
  CHECK(parse_chat_template_name("llama3").value() == ChatTemplate::kLlama3);
  CHECK(parse_chat_template_name("alpaca").value() == ChatTemplate::kAlpaca);
  CHECK(parse_chat_template_name("plain").value() == ChatTemplate::kPlain);
  auto unknown = parse_chat_template_name("vicuna");
  CHECK(unknown.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(unknown.status().message()), Catch::Contains("chatml"));
  for (ChatTemplate t : {ChatTemplate::kChatML, ChatTemplate::kLlama2, ChatTemplate::kLlama3, ChatTemplate::kAlpaca,
                         ChatTemplate::kPlain}) {
    CHECK(parse_chat_template_name(chat_template_name(t)).value() == t);
  }
}

namespace {

// The chat_template strings of the models' tokenizer_config.json files.
const char* const kQwen2Template =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou "
    "are a helpful assistant.<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' "
    "}}{% endif %}";
const char* const kLlama2Template =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
    "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif "
    "%}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ "
    "raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if "
    "loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
    "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if "
    "message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == "
    "'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";
const char* const kLlama3Template =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 "
    "%}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";
const char* const kAlpacaTemplate =
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '### Instruction:\\n' + "
    "message['content'] | trim + '\\n\\n' }}{% elif message['role'] == 'assistant' %}{{ '### Response:\\n' + "
    "message['content'] | trim + eos_token + '\\n\\n' }}{% endif %}{% endfor %}";
const char* const kMistralTemplate =
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + "
    "' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% endif %}{% endfor %}";

void write_config(const std::filesystem::path& dir, const nlohmann::json& config) {
  std::ofstream(dir / "tokenizer_config.json") << config.dump(2);
}

}  // namespace

TEST_CASE("chat templates are detected from tokenizer_config.json by their markers", "[unit]") {
  const std::vector<std::pair<const char*, std::optional<ChatTemplate>>> cases = {
      {kQwen2Template, ChatTemplate::kChatML},   {kLlama2Template, ChatTemplate::kLlama2},
      {kLlama3Template, ChatTemplate::kLlama3},  {kAlpacaTemplate, ChatTemplate::kAlpaca},
      {kMistralTemplate, std::nullopt},
  };
  for (const auto& [source, expected] : cases) {
    TempDir dir;
    write_config(dir.path(), {{"bos_token", "<s>"}, {"chat_template", source}});
    INFO(source);
    CHECK(detect_chat_template(dir.path()) == expected);
    CHECK(detect_chat_template_source(source) == expected);
  }

  SECTION("a list of named templates: the default one") {
    TempDir dir;
    write_config(dir.path(), {{"chat_template", nlohmann::json::array({{{"name", "tool_use"}, {"template", kQwen2Template}},
                                                                       {{"name", "default"}, {"template", kLlama3Template}}})}});
    CHECK(detect_chat_template(dir.path()) == ChatTemplate::kLlama3);
  }
  SECTION("chat_template.jinja beside a config without one") {
    TempDir dir;
    write_config(dir.path(), {{"bos_token", "<s>"}});
    std::ofstream(dir / "chat_template.jinja") << kLlama2Template;
    CHECK(detect_chat_template(dir.path()) == ChatTemplate::kLlama2);
  }
  SECTION("nothing to recognise") {
    TempDir dir;
    CHECK_FALSE(detect_chat_template(dir.path()).has_value());  // no files at all
    CHECK_FALSE(detect_chat_template(bundled_model_dir()).has_value());  // a base model without a template
    std::ofstream(dir / "tokenizer_config.json") << "{ not json";
    CHECK_FALSE(detect_chat_template(dir.path()).has_value());
    write_config(dir.path(), {{"chat_template", 42}});
    CHECK_FALSE(detect_chat_template(dir.path()).has_value());
    CHECK_FALSE(detect_chat_template(dir / "missing").has_value());
  }
}

TEST_CASE("python_strip strips what Python's str.strip() strips", "[unit]") {
  CHECK(python_strip("  \t\n x y \r\n") == "x y");
  CHECK(python_strip("\u3000\u00a0x\u2003\u2029") == "x");
  CHECK(python_strip("\x1fx\x1c") == "x");
  CHECK(python_strip("\u200bx") == "\u200bx");  // a zero-width space is not white space to Python
  CHECK(python_strip("x \xFF") == "x \xFF");     // invalid UTF-8 is left alone
  CHECK(python_strip(" \xE3\x80") == "\xE3\x80");
  CHECK(python_strip("   ").empty());
  CHECK(python_strip("") == "");
}
