// tokenizer.json (Hugging Face tokenizers) support: hand-checkable tiny tokenizers for each
// component, and parity with HF tokenizers 0.23 on the fixtures of four pre-tokenizer styles
// (tools/fixtures/make_tokenizer_fixtures.py).
#include <fstream>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "temper/tokenizer.hpp"
#include "test_support.hpp"
#include "tokenizer/hf_regex.hpp"
#include "tokenizer/utf8_repair.hpp"

using namespace temper;
using namespace temper::testing;
using json = nlohmann::json;

namespace {

std::unique_ptr<Tokenizer> load_json(const TempDir& dir, const json& doc, const std::string& name = "tokenizer.json") {
  std::ofstream(dir / name) << doc.dump();
  auto tokenizer = load_tokenizer_json(dir / name);
  REQUIRE_OK(tokenizer);
  return *std::move(tokenizer);
}

absl::Status load_error(const json& doc) {
  TempDir dir;
  std::ofstream(dir / "tokenizer.json") << doc.dump();
  auto tokenizer = load_tokenizer_json(dir / "tokenizer.json");
  return tokenizer.ok() ? absl::OkStatus() : tokenizer.status();
}

std::vector<TokenId> encode(const Tokenizer& t, std::string_view text) {
  auto ids = t.encode(text);
  REQUIRE_OK(ids);
  return *ids;
}

// A GPT-2 style tokenizer small enough to check by hand. ByteLevel maps ' ' to 'Ġ'.
// Merges by rank: (a,b)=0, (b,c)=1, (ab,c)=2, (Ġ,a)=3.
json tiny_byte_level(bool pair_merges = false, bool ignore_merges = false) {
  json merges = pair_merges ? json::array({{"a", "b"}, {"b", "c"}, {"ab", "c"}, {"Ġ", "a"}})
                            : json::array({"a b", "b c", "ab c", "Ġ a"});
  return {
      {"version", "1.0"},
      {"added_tokens",
       json::array({{{"id", 9}, {"content", "<s>"}, {"special", true}, {"single_word", false}, {"lstrip", false},
                     {"rstrip", false}, {"normalized", false}},
                    {{"id", 10}, {"content", "[M]"}, {"special", false}, {"single_word", false}, {"lstrip", true},
                     {"rstrip", true}, {"normalized", false}},
                    {{"id", 11}, {"content", "cc"}, {"special", false}, {"single_word", true}, {"lstrip", false},
                     {"rstrip", false}, {"normalized", false}}})},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
        {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {9}}, {"tokens", {"<s>"}}}}}}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"ignore_merges", ignore_merges},
        {"vocab", {{"a", 0}, {"b", 1}, {"c", 2}, {"Ġ", 3}, {"ab", 4}, {"abc", 5}, {"Ġa", 6}, {"bc", 7}, {"cab", 8}}},
        {"merges", merges}}}};
}

// A tokenizer without ByteLevel: `pre_tokenizer` over a character vocabulary with merges
// (a,-)=0 -> "a-", (-,b)=1 -> "-b", (-,-)=2 -> "--".
json tiny_plain(const json& pre_tokenizer) {
  return {{"model",
           {{"type", "BPE"},
            {"vocab", {{"a", 0}, {"b", 1}, {"-", 2}, {"a-", 3}, {"-b", 4}, {"--", 6}}},
            {"merges", json::array({"a -", "- b", "- -"})}}},
          {"pre_tokenizer", pre_tokenizer}};
}

json split_dash(const std::string& behavior, bool invert = false) {
  return {{"type", "Split"}, {"pattern", {{"String", "-"}}}, {"behavior", behavior}, {"invert", invert}};
}

std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  return out;
}

}  // namespace

TEST_CASE("tokenizer.json BPE merges by rank, leftmost first, in both merge spellings", "[unit]") {
  TempDir dir;
  for (bool pair_merges : {false, true}) {
    auto t = load_json(dir, tiny_byte_level(pair_merges));
    CHECK(encode(*t, "abc") == std::vector<TokenId>{5});      // ab (rank 0), then abc (rank 2)
    CHECK(encode(*t, "bcab") == std::vector<TokenId>{7, 4});  // ab (0) before bc (1)
    // " abc" is one GPT-2 regex piece "Ġabc": ab (0) takes the a from (Ġ,a) (3), then abc.
    CHECK(encode(*t, " abc ab") == std::vector<TokenId>{3, 5, 3, 4});
    CHECK(encode(*t, "cab") == std::vector<TokenId>{2, 4});  // "cab" is in the vocabulary but no merge makes it
    CHECK(encode(*t, "") == std::vector<TokenId>{});
    CHECK(t->vocab_size() == 12);
  }
}

TEST_CASE("tokenizer.json ignore_merges looks whole pieces up first (LLaMA-3)", "[unit]") {
  TempDir dir;
  auto t = load_json(dir, tiny_byte_level(false, /*ignore_merges=*/true));
  CHECK(encode(*t, "cab") == std::vector<TokenId>{8});
  CHECK(encode(*t, "bcab") == std::vector<TokenId>{7, 4});
}

TEST_CASE("tokenizer.json added tokens split the text first, with their flags", "[unit]") {
  TempDir dir;
  auto t = load_json(dir, tiny_byte_level());
  CHECK(encode(*t, "ab<s>abc") == std::vector<TokenId>{4, 9, 5});
  // lstrip/rstrip: the spaces around [M] belong to it.
  CHECK(encode(*t, "ab  [M]  c") == std::vector<TokenId>{4, 10, 2});
  // single_word: "cc" only between non-word characters.
  CHECK(encode(*t, "a cc b") == std::vector<TokenId>{0, 3, 11, 3, 1});
  CHECK(encode(*t, "acc") == std::vector<TokenId>{0, 2, 2});
  CHECK(t->piece_to_id("<s>") == 9);
  CHECK(t->piece_to_id("abc") == 5);
  CHECK(!t->piece_to_id("zz").has_value());
}

TEST_CASE("tokenizer.json post-processor, decoder and special tokens", "[unit]") {
  TempDir dir;
  auto t = load_json(dir, tiny_byte_level());
  auto with_special = t->encode_for_model("abc");
  REQUIRE_OK(with_special);
  CHECK(*with_special == std::vector<TokenId>{9, 5});
  CHECK(t->special_tokens().bos == 9);
  CHECK(t->special_tokens().add_bos);
  CHECK(!t->special_tokens().eos.has_value());

  auto decoded = t->decode({3, 5, 9, 4});
  REQUIRE_OK(decoded);
  CHECK(*decoded == " abcab");  // the special <s> decodes to nothing
  auto rendered = t->decode_with_special({3, 5, 9, 4, 10});
  REQUIRE_OK(rendered);
  CHECK(*rendered == " abc<s>ab[M]");
  auto bad = t->decode({0, 12});
  REQUIRE(!bad.ok());
  CHECK(bad.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(bad.status().message()).find("position 1") != std::string::npos);
}

TEST_CASE("tokenizer.json Split behaviors and invert", "[unit]") {
  TempDir dir;
  const std::vector<std::pair<json, std::vector<TokenId>>> cases = {
      {split_dash("Isolated"), {0, 2, 1}},
      {split_dash("Removed"), {0, 1}},
      {split_dash("MergedWithPrevious"), {3, 1}},
      {split_dash("MergedWithNext"), {0, 4}},
      {split_dash("Removed", /*invert=*/true), {2}},
      {nullptr, {3, 1}},  // no pre-tokenizer: one piece; (a,-) has the lower rank
  };
  for (const auto& [pre, want] : cases) {
    auto t = load_json(dir, tiny_plain(pre));
    CHECK(encode(*t, "a-b") == want);
  }
  auto isolated = load_json(dir, tiny_plain(split_dash("Isolated")));
  CHECK(encode(*isolated, "a--b") == std::vector<TokenId>{0, 2, 2, 1});
  auto contiguous = load_json(dir, tiny_plain(split_dash("Contiguous")));
  CHECK(encode(*contiguous, "a--b") == std::vector<TokenId>{0, 6, 1});
  // No decoder: tokens joined with spaces, as tokenizers does.
  auto decoded = isolated->decode({3, 1});
  REQUIRE_OK(decoded);
  CHECK(*decoded == "a- b");
}

TEST_CASE("tokenizer.json unk, fuse_unk and byte_fallback", "[unit]") {
  TempDir dir;
  json doc = {{"model",
               {{"type", "BPE"},
                {"unk_token", "<unk>"},
                {"byte_fallback", true},
                {"vocab", {{"<unk>", 0}, {"a", 1}, {"<0x62>", 2}}},
                {"merges", json::array()}}}};
  CHECK(encode(*load_json(dir, doc), "abc") == std::vector<TokenId>{1, 2, 0});  // c has no <0x63>
  doc["model"]["byte_fallback"] = false;
  CHECK(encode(*load_json(dir, doc), "acc") == std::vector<TokenId>{1, 0, 0});
  doc["model"]["fuse_unk"] = true;
  CHECK(encode(*load_json(dir, doc), "acca") == std::vector<TokenId>{1, 0, 1});
  doc["model"]["unk_token"] = nullptr;
  CHECK(encode(*load_json(dir, doc), "acca") == std::vector<TokenId>{1, 1});  // tokenizers drops unknown chars
}

TEST_CASE("tokenizer.json normalizers: NFC, NFKC, Sequence with Prepend/Replace", "[unit]") {
  TempDir dir;
  json doc = {{"model", {{"type", "BPE"}, {"vocab", {{"\xC3\xA9", 0}, {"e", 1}, {"\xCC\x81", 2}, {"1", 3}, {"_", 4}}}}},
              {"normalizer", {{"type", "NFC"}}}};
  CHECK(encode(*load_json(dir, doc), "e\xCC\x81") == std::vector<TokenId>{0});  // e + U+0301 -> é
  doc["normalizer"] = {{"type", "NFD"}};
  CHECK(encode(*load_json(dir, doc), "\xC3\xA9") == std::vector<TokenId>{1, 2});
  doc["normalizer"] = {{"type", "NFKC"}};
  CHECK(encode(*load_json(dir, doc), "\xC2\xB9") == std::vector<TokenId>{3});  // superscript one -> 1
  doc["normalizer"] = {{"type", "Sequence"},
                       {"normalizers", json::array({{{"type", "Prepend"}, {"prepend", "_"}},
                                                    {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "_"}}})}};
  CHECK(encode(*load_json(dir, doc), "e e") == std::vector<TokenId>{4, 1, 4, 1});
}

TEST_CASE("tokenizer.json components temper does not run are refused by name", "[unit]") {
  const json base = tiny_byte_level();
  const auto refused = [&](const char* field, const json& value, const char* name) {
    json doc = base;
    if (std::string(field) == "dropout") {
      doc["model"]["dropout"] = value;
    } else if (std::string(field) == "model") {
      doc["model"]["type"] = value;
    } else {
      doc[field] = value;
    }
    const absl::Status status = load_error(doc);
    CHECK(status.code() == absl::StatusCode::kUnimplemented);
    CHECK(std::string(status.message()).find(name) != std::string::npos);
  };
  refused("normalizer", {{"type", "Lowercase"}}, "Lowercase");
  refused("normalizer", {{"type", "Sequence"}, {"normalizers", json::array({{{"type", "NFC"}}, {{"type", "Strip"}}})}},
          "Strip");
  refused("pre_tokenizer", {{"type", "Metaspace"}}, "Metaspace");
  refused("decoder", {{"type", "WordPiece"}}, "WordPiece");
  refused("post_processor", {{"type", "Whatever"}}, "Whatever");
  refused("dropout", 0.1, "dropout");
  refused("model", "Unigram", "Unigram");

  json bad_merge = base;
  bad_merge["model"]["merges"].push_back("a zz");
  const absl::Status status = load_error(bad_merge);
  CHECK(status.code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(status.message()).find("zz") != std::string::npos);
}

TEST_CASE("Oniguruma patterns run the same under PCRE2", "[unit]") {
  // BLOOM's pattern: `[` inside a class opens a nested class in Oniguruma (a union), a literal in PCRE2.
  auto bloom = translate_onig_pattern(" ?[^(\\s|[.,!?…。，、।۔،])]+");
  REQUIRE_OK(bloom);
  CHECK(*bloom == " ?[^(\\t\\n\\x{0B}\\f\\r\\x{85}\\p{Z}|.,!?…。，、।۔،)]+");
  auto regex = HfRegex::compile(" ?[^(\\s|[.,!?…。，、।۔،])]+", false);
  REQUIRE_OK(regex);
  std::vector<std::pair<size_t, size_t>> matches;
  REQUIRE_OK((*regex)->find_all("x[y, z", &matches));
  // "x[y" is one match ('[' is not in the set), then " z".
  CHECK(matches == std::vector<std::pair<size_t, size_t>>{{0, 3}, {4, 6}});

  // Oniguruma's \s is [\t\n\v\f\r\x85] + Z: U+3000 yes, U+180E (Cf, in PCRE2's own \s) no.
  auto space = HfRegex::compile("\\s+", false);
  REQUIRE_OK(space);
  matches.clear();
  REQUIRE_OK((*space)->find_all("a\xE3\x80\x80" "b\xE1\xA0\x8E" "c", &matches));
  CHECK(matches == std::vector<std::pair<size_t, size_t>>{{1, 4}});
  // (?i:...) and \p{...}.
  auto gpt2 = HfRegex::compile("(?i:'s|'t)|\\p{L}+|\\p{N}", false);
  REQUIRE_OK(gpt2);
  matches.clear();
  REQUIRE_OK((*gpt2)->find_all("IT'S 42", &matches));
  CHECK(matches == std::vector<std::pair<size_t, size_t>>{{0, 2}, {2, 4}, {5, 6}, {6, 7}});

  CHECK(translate_onig_pattern("[a[^b]]").status().code() == absl::StatusCode::kUnimplemented);
  CHECK(translate_onig_pattern("[a-z&&[^aeiou]]").status().code() == absl::StatusCode::kUnimplemented);
}

TEST_CASE("invalid UTF-8 becomes U+FFFD per maximal subpart, as Python's errors='replace'", "[unit]") {
  const std::string r = "\xEF\xBF\xBD";
  // Expected values follow Unicode 15 section 3.9 (Table 3-8's examples), which CPython implements.
  CHECK(replace_invalid_utf8("a\xFF" "b") == "a" + r + "b");
  CHECK(replace_invalid_utf8("\xE6\x82 x") == r + " x");                 // truncated 3-byte sequence: one
  CHECK(replace_invalid_utf8("\xC0\xAF") == r + r);                      // C0 never starts a sequence
  CHECK(replace_invalid_utf8("\xED\xA0\x80") == r + r + r);              // surrogate: ED allows 80-9F only
  CHECK(replace_invalid_utf8("\xF4\x90\x80\x80") == r + r + r + r);      // above U+10FFFF
  CHECK(replace_invalid_utf8("\xE0\x80\x80") == r + r + r);              // overlong
  CHECK(replace_invalid_utf8("\xF0\x9F\x98") == r);                      // truncated emoji at the end
  CHECK(replace_invalid_utf8("\xF0\x9F\x98\x80") == "\xF0\x9F\x98\x80");  // valid
  CHECK(is_valid_utf8("plain ascii, \xE6\x82\xA3"));
  CHECK(!is_valid_utf8("plain ascii, \xE6\x82"));
}

TEST_CASE("load_tokenizer picks tokenizer.json without tokenizer.model, and applies tokenizer_config.json",
          "[unit]") {
  TempDir dir;
  std::ofstream(dir / "tokenizer.json") << tiny_byte_level().dump();
  {
    auto t = load_tokenizer(dir.path());
    REQUIRE_OK(t);
    CHECK(encode(**t, "abc") == std::vector<TokenId>{5});
    CHECK(load_tokenizer(dir.path(), {TokenizerFormat::kSentencePiece}).status().code() ==
          absl::StatusCode::kNotFound);
  }
  std::ofstream(dir / "tokenizer_config.json") << R"({"eos_token": "[M]", "add_bos_token": false, "add_eos_token": true})";
  auto t = load_tokenizer(dir.path(), {TokenizerFormat::kTokenizerJson});
  REQUIRE_OK(t);
  CHECK((*t)->special_tokens().eos == 10);
  auto ids = (*t)->encode_with("abc", false, true);
  REQUIRE_OK(ids);
  CHECK(*ids == std::vector<TokenId>{5, 10});
}

TEST_CASE("tokenizer.json encodes exactly as Hugging Face tokenizers (BLOOM, Qwen2, LLaMA-3, GPT-2 styles)",
          "[parity]") {
  for (const std::string style : {"bloom", "qwen2", "llama3", "gpt2"}) {
    const auto root = fixtures_dir() / "tokenizers" / style;
    auto tokenizer = load_tokenizer_json(root / "tokenizer.json");
    REQUIRE_OK(tokenizer);
    const Tokenizer& t = **tokenizer;
    std::ifstream in(root / "cases.json");
    std::stringstream buffer;
    buffer << in.rdbuf();
    const json cases = json::parse(buffer.str());
    REQUIRE(cases.size() > 200);
    for (const json& c : cases) {
      const bool invalid_input = c.contains("bytes_hex");
      const std::string text = c["text"].get<std::string>();
      // Invalid input is given as its bytes; the fixture's text is Python's replaced decoding.
      const std::string input = invalid_input ? from_hex(c["bytes_hex"].get<std::string>()) : text;
      INFO(style << ": " << json(text).dump());
      const auto want = c["ids"].get<std::vector<TokenId>>();
      auto ids = t.encode(input);
      REQUIRE_OK(ids);
      CHECK(*ids == want);
      auto with_special = t.encode_for_model(input);
      REQUIRE_OK(with_special);
      CHECK(*with_special == c["ids_with_special"].get<std::vector<TokenId>>());
      auto decoded = t.decode_with_special(want);
      REQUIRE_OK(decoded);
      CHECK(*decoded == c["decoded"].get<std::string>());
      // Round trip: exact unless the normalizer changed the text (Qwen2's NFC on decomposed accents).
      auto plain = t.decode(want);
      REQUIRE_OK(plain);
      if (c["decoded"].get<std::string>() == text && text.find("<s>") == std::string::npos &&
          text.find("<|") == std::string::npos) {
        CHECK(*plain == text);
      }
    }
  }
}

TEST_CASE("tokenizer.json encoding is thread-safe (shared BPE cache)", "[unit]") {
  auto tokenizer = load_tokenizer_json(fixtures_dir() / "tokenizers" / "qwen2" / "tokenizer.json");
  REQUIRE_OK(tokenizer);
  const Tokenizer& t = **tokenizer;
  std::vector<std::string> lines;
  {
    std::ifstream in(fixtures_dir() / "tokenizers" / "qwen2" / "cases.json");
    std::stringstream buffer;
    buffer << in.rdbuf();
    for (const json& c : json::parse(buffer.str())) lines.push_back(c["text"].get<std::string>());
  }
  std::vector<std::vector<TokenId>> serial;
  for (const auto& line : lines) serial.push_back(encode(t, line));
  auto fresh = load_tokenizer_json(fixtures_dir() / "tokenizers" / "qwen2" / "tokenizer.json");
  REQUIRE_OK(fresh);
  std::vector<std::vector<TokenId>> results[2];
  std::thread workers[2];
  for (int w = 0; w < 2; ++w) {
    workers[w] = std::thread([&, w] {
      for (const auto& line : lines) results[w].push_back((*fresh)->encode(line).value());
    });
  }
  for (auto& worker : workers) worker.join();
  CHECK(results[0] == serial);
  CHECK(results[1] == serial);
}

TEST_CASE("tokenizer.json handles long runs (one huge piece) and round-trips them", "[unit]") {
  for (const std::string style : {"qwen2", "gpt2"}) {
    auto tokenizer = load_tokenizer_json(fixtures_dir() / "tokenizers" / style / "tokenizer.json");
    REQUIRE_OK(tokenizer);
    const Tokenizer& t = **tokenizer;
    // These fixture vocabularies have no "ĠĠ", "xx" or "ĊĊ": a run is one token per character.
    REQUIRE(!t.piece_to_id("ĠĠ").has_value());
    REQUIRE(!t.piece_to_id("xx").has_value());
    REQUIRE(!t.piece_to_id("ĊĊ").has_value());
    const size_t n = 1 << 20;
    const std::vector<std::pair<std::string, std::vector<TokenId>>> runs = {
        {std::string(n, ' '), std::vector<TokenId>(n, *t.piece_to_id("Ġ"))},
        {std::string(n, 'x'), std::vector<TokenId>(n, *t.piece_to_id("x"))},
    };
    for (const auto& [text, want] : runs) CHECK(encode(t, text) == want);
    std::vector<TokenId> newlines(1 << 16, *t.piece_to_id("Ċ"));
    newlines.push_back(*t.piece_to_id("a"));
    CHECK(encode(t, std::string(1 << 16, '\n') + "a") == newlines);
    std::string chinese;
    for (int i = 0; i < 20000; ++i) chinese += "患者";
    auto decoded = t.decode(encode(t, chinese));
    REQUIRE_OK(decoded);
    CHECK(*decoded == chinese);
  }
}
