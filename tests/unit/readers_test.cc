#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "data/readers.hpp"
#include "data/token_shard.hpp"
#include "test_support.hpp"
#include "util/strings.hpp"

using namespace temper;
using namespace temper::testing;

namespace {

void write_bytes(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

SourceSpec spec_of(SourceFormat format, std::vector<std::filesystem::path> paths,
                   MalformedPolicy policy = MalformedPolicy::kSkip) {
  SourceSpec spec;
  spec.name = "test";
  spec.format = format;
  spec.paths = std::move(paths);
  spec.on_malformed = policy;
  return spec;
}

std::unique_ptr<DocumentReader> open_ok(const SourceSpec& spec, const ReaderLimits& limits = {}) {
  auto reader = open_reader(spec, limits);
  REQUIRE_OK(reader);
  return std::move(*reader);
}

// The documents of the rest of the current pass.
std::vector<Document> read_pass(DocumentReader& reader) {
  std::vector<Document> docs;
  for (;;) {
    auto doc = reader.next();
    REQUIRE_OK(doc);
    if (!doc->has_value()) return docs;
    docs.push_back(std::move(**doc));
  }
}

std::vector<std::string> texts(const std::vector<Document>& docs) {
  std::vector<std::string> out;
  for (const Document& doc : docs) out.push_back(doc.text);
  return out;
}

// A comparable rendering of everything a document carries.
std::string describe(const Document& doc) {
  nlohmann::json out;
  out["text"] = doc.text;
  out["origin"] = doc.origin;
  out["tokens"] = doc.tokens;
  for (const ChatMessage& m : doc.messages) out["messages"].push_back({m.role, m.content});
  return out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// Reads two passes, taking position() before every next(); then, from each position, a fresh
// reader seeks there and must yield exactly the rest of that pass.
void check_resume_everywhere(const SourceSpec& spec, const ReaderLimits& limits, size_t expected_docs) {
  auto reader = open_ok(spec, limits);
  std::vector<std::pair<std::string, std::vector<std::string>>> checkpoints;  // position -> rest of its pass
  for (int pass = 0; pass < 2; ++pass) {
    std::vector<std::string> positions;
    std::vector<std::string> docs;
    for (;;) {
      positions.push_back(reader->position());
      auto doc = reader->next();
      REQUIRE_OK(doc);
      if (!doc->has_value()) break;
      docs.push_back(describe(**doc));
    }
    REQUIRE(docs.size() == expected_docs);
    for (size_t i = 0; i < positions.size(); ++i) {
      checkpoints.emplace_back(positions[i], std::vector<std::string>(docs.begin() + static_cast<std::ptrdiff_t>(i), docs.end()));
    }
    REQUIRE_OK(reader->rewind());
  }
  for (const auto& [position, rest] : checkpoints) {
    INFO("position " << position);
    auto resumed = open_ok(spec, limits);
    REQUIRE_OK(resumed->seek(position));
    CHECK(resumed->position() == position);
    std::vector<std::string> got;
    for (const Document& doc : read_pass(*resumed)) got.push_back(describe(doc));
    REQUIRE(got == rest);
    // The pass after a resumed one is a whole pass again.
    REQUIRE_OK(resumed->rewind());
    CHECK(read_pass(*resumed).size() == expected_docs);
  }
}

}  // namespace

TEST_CASE("text lines: one document per non-blank line, path:line origins, bytes passed through", "[unit]") {
  TempDir dir;
  const auto path = dir / "a.txt";
  // A byte-order mark, CRLF endings, blank and white-space-only lines, invalid UTF-8, and a last
  // line without a newline.
  write_bytes(path, "\xEF\xBB\xBF" "first line\r\n\n   \t\nbad \xFF\xFE bytes\nlast line");
  auto reader = open_ok(spec_of(SourceFormat::kTextLines, {path}));
  const auto docs = read_pass(*reader);
  REQUIRE(texts(docs) == std::vector<std::string>{"first line", "bad \xFF\xFE bytes", "last line"});
  CHECK(docs[0].origin == path.string() + ":1");
  CHECK(docs[1].origin == path.string() + ":4");
  CHECK(docs[2].origin == path.string() + ":5");
  CHECK(reader->stats().documents == 3);
  CHECK(reader->stats().malformed == 0);
  // nullopt until rewind, then the same pass again.
  auto after = reader->next();
  REQUIRE_OK(after);
  CHECK_FALSE(after->has_value());
  REQUIRE_OK(reader->rewind());
  CHECK(texts(read_pass(*reader)) == texts(docs));
  CHECK(reader->stats().documents == 6);
}

TEST_CASE("text blocks: documents separated by blank lines, never across files", "[unit]") {
  TempDir dir;
  write_bytes(dir / "a.txt", "\n\npara one\nline two\n\n  \n\npara two\n");
  write_bytes(dir / "b.txt", "para three\r\nstill three");
  auto reader = open_ok(spec_of(SourceFormat::kTextBlocks, {dir / "a.txt", dir / "b.txt"}));
  const auto docs = read_pass(*reader);
  REQUIRE(texts(docs) == std::vector<std::string>{"para one\nline two", "para two", "para three\nstill three"});
  CHECK(docs[0].origin == (dir / "a.txt").string() + ":3");
  CHECK(docs[1].origin == (dir / "a.txt").string() + ":8");
  CHECK(docs[2].origin == (dir / "b.txt").string() + ":1");
}

TEST_CASE("text files: one document per file; over-long files per policy", "[unit]") {
  TempDir dir;
  write_bytes(dir / "a.txt", "\xEF\xBB\xBF" "whole file\n\nwith blank lines\n");
  write_bytes(dir / "big.txt", std::string(200, 'x'));
  write_bytes(dir / "empty.txt", "");
  write_bytes(dir / "b.txt", "second");
  const std::vector<std::filesystem::path> paths = {dir / "a.txt", dir / "big.txt", dir / "empty.txt", dir / "b.txt"};
  ReaderLimits limits;
  limits.max_document_bytes = 100;

  auto reader = open_ok(spec_of(SourceFormat::kTextFiles, paths), limits);
  const auto docs = read_pass(*reader);
  REQUIRE(texts(docs) == std::vector<std::string>{"whole file\n\nwith blank lines\n", "second"});
  CHECK(docs[0].origin == (dir / "a.txt").string());
  CHECK(reader->stats().malformed == 1);
  REQUIRE(reader->stats().malformed_examples.size() == 1);
  CHECK(reader->stats().malformed_examples[0] == (dir / "big.txt").string() + ": file longer than 100 bytes (one document)");

  auto strict = open_ok(spec_of(SourceFormat::kTextFiles, paths, MalformedPolicy::kFail), limits);
  REQUIRE_OK(strict->next());
  auto failed = strict->next();
  REQUIRE(failed.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(failed.status().message()), Catch::Contains((dir / "big.txt").string() + ": file longer than 100 bytes"));
}

TEST_CASE("streaming: files many times the read buffer are read exactly; over-long lines skipped or fatal", "[unit]") {
  TempDir dir;
  std::mt19937 rng(7);
  std::vector<std::string> expected;
  std::string contents;
  for (int i = 0; i < 3000; ++i) {
    // Lengths from 1 to 300 bytes around a 64-byte buffer: lines inside one buffer, spanning
    // several refills, and ending exactly at a buffer boundary all occur.
    std::string line = "l" + std::to_string(i) + ":" + std::string(rng() % 300, static_cast<char>('a' + i % 26));
    expected.push_back(line);
    contents += line + (i % 3 == 0 ? "\r\n" : "\n");
  }
  write_bytes(dir / "big.txt", contents);
  ReaderLimits limits;
  limits.buffer_bytes = 64;
  auto reader = open_ok(spec_of(SourceFormat::kTextLines, {dir / "big.txt"}), limits);
  CHECK(texts(read_pass(*reader)) == expected);

  // With documents limited to 200 bytes, longer lines are dropped whole (never split into parts)
  // and the following lines are intact.
  limits.max_document_bytes = 200;
  std::vector<std::string> kept;
  int64_t dropped = 0;
  for (const std::string& line : expected) {
    if (line.size() <= 200) kept.push_back(line);
    else ++dropped;
  }
  REQUIRE(dropped > 0);
  auto limited = open_ok(spec_of(SourceFormat::kTextLines, {dir / "big.txt"}), limits);
  CHECK(texts(read_pass(*limited)) == kept);
  CHECK(limited->stats().malformed == dropped);
  CHECK(limited->stats().malformed_examples.size() == 5);
  CHECK_THAT(limited->stats().malformed_examples[0],
             Catch::StartsWith((dir / "big.txt").string() + ":") && Catch::EndsWith(": line longer than 200 bytes"));

  auto strict = open_ok(spec_of(SourceFormat::kTextLines, {dir / "big.txt"}, MalformedPolicy::kFail), limits);
  absl::Status status;
  for (;;) {
    auto doc = strict->next();
    if (!doc.ok()) {
      status = doc.status();
      break;
    }
    REQUIRE(doc->has_value());
  }
  CHECK(status.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(status.message()), Catch::Contains("line longer than 200 bytes"));
}

TEST_CASE("jsonl text: malformed lines are counted with path:line and skipped, or fatal", "[unit]") {
  TempDir dir;
  const auto path = dir / "t.jsonl";
  write_bytes(path,
              "{\"text\": \"good one\", \"id\": 1}\n"
              "{\"text\": \"unterminated\n"
              "\n"
              "{\"text\": 42}\n"
              "{\"body\": \"no text field\"}\n"
              "{\"text\": \"   \"}\n"
              "[\"not\", \"an object\"]\n"
              "{\"text\": null}\n"
              "{\"text\": \"good two\"}\n"
              "{\"text\": \"bad \xFF utf8\"}\n");
  auto reader = open_ok(spec_of(SourceFormat::kJsonlText, {path}));
  const auto docs = read_pass(*reader);
  REQUIRE(texts(docs) == std::vector<std::string>{"good one", "good two"});
  CHECK(docs[1].origin == path.string() + ":9");
  const ReaderStats& stats = reader->stats();
  CHECK(stats.documents == 2);
  CHECK(stats.malformed == 7);
  REQUIRE(stats.malformed_examples.size() == 5);
  const std::string p = path.string();
  CHECK_THAT(stats.malformed_examples[0], Catch::StartsWith(p + ":2: invalid JSON: "));
  CHECK(stats.malformed_examples[1] == p + ":4: field \"text\" must be a string, not number");
  CHECK(stats.malformed_examples[2] == p + ":5: field \"text\" is missing");
  CHECK(stats.malformed_examples[3] == p + ":6: field \"text\" is empty");
  CHECK(stats.malformed_examples[4] == p + ":7: a record must be a JSON object, not array");

  // A second pass counts again but keeps no duplicate examples.
  REQUIRE_OK(reader->rewind());
  read_pass(*reader);
  CHECK(reader->stats().malformed == 14);
  CHECK(reader->stats().malformed_examples.size() == 5);

  auto strict = open_ok(spec_of(SourceFormat::kJsonlText, {path}, MalformedPolicy::kFail));
  REQUIRE_OK(strict->next());
  auto failed = strict->next();
  REQUIRE(failed.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(failed.status().message()), Catch::StartsWith(p + ":2: invalid JSON: "));

  // A custom field name.
  write_bytes(dir / "c.jsonl", "{\"content\": \"here\"}\n");
  SourceSpec custom = spec_of(SourceFormat::kJsonlText, {dir / "c.jsonl"});
  custom.text_field = "content";
  CHECK(texts(read_pass(*open_ok(custom))) == std::vector<std::string>{"here"});
}

TEST_CASE("jsonl instruction records become user and assistant turns", "[unit]") {
  TempDir dir;
  const auto path = dir / "i.jsonl";
  write_bytes(path,
              "{\"instruction\": \"Define fever.\", \"output\": \"A raised body temperature.\"}\n"
              "{\"instruction\": \"Translate.\", \"input\": \"fièvre\", \"output\": \"fever\", \"system\": \"Be brief.\"}\n"
              "{\"instruction\": \"Name a bone.\", \"input\": \"\", \"output\": \"Femur.\", \"system\": null}\n"
              "{\"instruction\": \"No output.\"}\n"
              "{\"instruction\": [\"list\"], \"output\": \"x\"}\n"
              "{\"instruction\": \"Empty output.\", \"output\": \"\"}\n"
              "{\"instruction\": \"Bad input.\", \"input\": 3, \"output\": \"x\"}\n");
  auto reader = open_ok(spec_of(SourceFormat::kJsonlInstruction, {path}));
  const auto docs = read_pass(*reader);
  REQUIRE(docs.size() == 3);
  const std::vector<ChatMessage>& a = docs[0].messages;
  REQUIRE(a.size() == 2);
  CHECK((a[0].role == "user" && a[0].content == "Define fever."));
  CHECK((a[1].role == "assistant" && a[1].content == "A raised body temperature."));
  const std::vector<ChatMessage>& b = docs[1].messages;
  REQUIRE(b.size() == 3);
  CHECK((b[0].role == "system" && b[0].content == "Be brief."));
  CHECK((b[1].role == "user" && b[1].content == "Translate.\n\nfièvre"));
  CHECK(b[2].content == "fever");
  CHECK(docs[2].messages.size() == 2);
  CHECK(docs[2].messages[0].content == "Name a bone.");
  CHECK(docs[0].text.empty());

  const auto& examples = reader->stats().malformed_examples;
  REQUIRE(examples.size() == 4);
  const std::string p = path.string();
  CHECK(examples[0] == p + ":4: field \"output\" is missing");
  CHECK(examples[1] == p + ":5: field \"instruction\" must be a string, not array");
  CHECK(examples[2] == p + ":6: field \"output\" is empty");
  CHECK(examples[3] == p + ":7: field \"input\" must be a string, not number");
}

TEST_CASE("jsonl chat records keep their roles and need an assistant turn", "[unit]") {
  TempDir dir;
  const auto path = dir / "c.jsonl";
  write_bytes(path,
              R"({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}, {"role": "assistant", "content": "A", "name": "x"}]})"
              "\n"
              R"({"messages": [{"role": "user", "content": "only a question"}]})"
              "\n"
              R"({"messages": [{"role": "tool", "content": "T"}, {"role": "assistant", "content": "A"}]})"
              "\n"
              R"({"messages": {"role": "user"}})"
              "\n"
              R"({"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "A"}]})"
              "\n"
              R"({"messages": [{"role": "user", "content": "U"}, {"role": "assistant", "content": ""}]})"
              "\n"
              R"({"messages": []})"
              "\n"
              R"({"messages": ["user"]})"
              "\n"
              R"({"conversation": []})"
              "\n"
              R"({"messages": [{"content": "no role"}, {"role": "assistant", "content": "A"}]})"
              "\n");
  auto reader = open_ok(spec_of(SourceFormat::kJsonlChat, {path}));
  const auto docs = read_pass(*reader);
  REQUIRE(docs.size() == 1);
  REQUIRE(docs[0].messages.size() == 3);
  CHECK(docs[0].messages[2].role == "assistant");
  CHECK(docs[0].messages[2].content == "A");
  CHECK(reader->stats().malformed == 9);

  // Every reason, through the fatal policy line by line.
  const std::vector<std::string> reasons = {
      "no assistant message",
      "messages[0].role \"tool\" is not system, user or assistant",
      "field \"messages\" must be an array, not object",
      "messages[0].content must be a string, not number",
      "messages[1].content is empty",
      "field \"messages\" is empty",
      "messages[0] must be an object, not string",
      "field \"messages\" is missing",
      "messages[0].role is missing",
  };
  auto strict = open_ok(spec_of(SourceFormat::kJsonlChat, {path}, MalformedPolicy::kFail));
  REQUIRE_OK(strict->next());
  for (size_t i = 0; i < reasons.size(); ++i) {
    auto failed = strict->next();
    REQUIRE_FALSE(failed.ok());
    CHECK_THAT(std::string(failed.status().message()),
               Catch::StartsWith(str_cat(path.string(), ":", i + 2, ": ", reasons[i])));
  }
}

TEST_CASE("missing files are NOT_FOUND naming the file; a spec without paths is refused", "[unit]") {
  TempDir dir;
  write_bytes(dir / "here.txt", "x\n");
  auto missing = open_reader(spec_of(SourceFormat::kTextLines, {dir / "here.txt", dir / "gone.txt"}));
  REQUIRE(missing.status().code() == absl::StatusCode::kNotFound);
  CHECK_THAT(std::string(missing.status().message()), Catch::Contains((dir / "gone.txt").string()));

  REQUIRE_OK(write_token_shard(dir / "s.bin", {{1, 2, 3}}));
  std::filesystem::remove(dir / "s.bin.idx");
  auto no_index = open_reader(spec_of(SourceFormat::kTokenShard, {dir / "s.bin"}));
  REQUIRE(no_index.status().code() == absl::StatusCode::kNotFound);
  CHECK_THAT(std::string(no_index.status().message()), Catch::Contains((dir / "s.bin.idx").string()));

  auto directory = open_reader(spec_of(SourceFormat::kTextFiles, {dir.path()}));
  CHECK(directory.status().code() == absl::StatusCode::kInvalidArgument);

  auto none = open_reader(spec_of(SourceFormat::kJsonlChat, {}));
  CHECK(none.status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("empty sources end the pass at once with zero counts", "[unit]") {
  TempDir dir;
  write_bytes(dir / "empty.txt", "");
  write_bytes(dir / "blank.txt", "\n  \n\r\n");
  REQUIRE_OK(write_token_shard(dir / "none.bin", {}));
  const std::vector<SourceSpec> specs = {
      spec_of(SourceFormat::kTextLines, {dir / "empty.txt", dir / "blank.txt"}),
      spec_of(SourceFormat::kTextBlocks, {dir / "blank.txt"}),
      spec_of(SourceFormat::kTextFiles, {dir / "empty.txt", dir / "blank.txt"}),
      spec_of(SourceFormat::kJsonlText, {dir / "empty.txt", dir / "blank.txt"}),
      spec_of(SourceFormat::kJsonlChat, {dir / "blank.txt"}),
      spec_of(SourceFormat::kTokenShard, {dir / "none.bin"}),
  };
  for (const SourceSpec& spec : specs) {
    INFO("format " << static_cast<int>(spec.format));
    auto reader = open_ok(spec);
    for (int pass = 0; pass < 2; ++pass) {
      auto doc = reader->next();
      REQUIRE_OK(doc);
      CHECK_FALSE(doc->has_value());
      REQUIRE_OK(reader->rewind());
    }
    CHECK(reader->stats().documents == 0);
    CHECK(reader->stats().malformed == 0);
  }
}

TEST_CASE("position and seek resume exactly, within and across files and passes, for every format", "[unit]") {
  TempDir dir;
  ReaderLimits limits;
  limits.buffer_bytes = 32;  // positions fall at every kind of buffer boundary

  SECTION("text lines") {
    write_bytes(dir / "a.txt", "\xEF\xBB\xBF" "one\r\ntwo\n\nthree is a longer line than the buffer holds, by far\n");
    write_bytes(dir / "b.txt", "four\nfive");
    check_resume_everywhere(spec_of(SourceFormat::kTextLines, {dir / "a.txt", dir / "b.txt"}), limits, 5);
  }
  SECTION("text blocks") {
    write_bytes(dir / "a.txt", "\xEF\xBB\xBF\none\ntwo\n\n\nthree three three three three three three\n");
    write_bytes(dir / "b.txt", "four\n\nfive\nsix\n\n");
    check_resume_everywhere(spec_of(SourceFormat::kTextBlocks, {dir / "a.txt", dir / "b.txt"}), limits, 4);
  }
  SECTION("text files") {
    write_bytes(dir / "a.txt", "one");
    write_bytes(dir / "b.txt", "");
    write_bytes(dir / "c.txt", "three");
    check_resume_everywhere(spec_of(SourceFormat::kTextFiles, {dir / "a.txt", dir / "b.txt", dir / "c.txt"}), limits, 2);
  }
  SECTION("jsonl instruction, with malformed lines skipped") {
    write_bytes(dir / "a.jsonl",
                "{\"instruction\": \"i1\", \"output\": \"o1\"}\nnot json\n{\"instruction\": \"i2\", \"output\": \"o2\"}\n");
    write_bytes(dir / "b.jsonl", "{\"instruction\": \"i3\", \"input\": \"x\", \"output\": \"o3\"}");
    check_resume_everywhere(spec_of(SourceFormat::kJsonlInstruction, {dir / "a.jsonl", dir / "b.jsonl"}), limits, 3);
  }
  SECTION("jsonl chat") {
    const std::string record = R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})";
    write_bytes(dir / "a.jsonl", record + "\n" + record + "\n");
    write_bytes(dir / "b.jsonl", record + "\n");
    check_resume_everywhere(spec_of(SourceFormat::kJsonlChat, {dir / "a.jsonl", dir / "b.jsonl"}), limits, 3);
  }
  SECTION("token shards") {
    REQUIRE_OK(write_token_shard(dir / "a.bin", {{1, 2}, {3}, {4, 5, 6}}));
    REQUIRE_OK(write_token_shard(dir / "b.bin", {}));
    REQUIRE_OK(write_token_shard(dir / "c.bin", {{70000, 1}}));
    check_resume_everywhere(spec_of(SourceFormat::kTokenShard, {dir / "a.bin", dir / "b.bin", dir / "c.bin"}), limits, 4);
  }
}

TEST_CASE("seek refuses positions of other files and positions that are not positions", "[unit]") {
  TempDir dir;
  write_bytes(dir / "a.txt", "first\nsecond\n");
  write_bytes(dir / "b.txt", "other\n");
  auto reader = open_ok(spec_of(SourceFormat::kTextLines, {dir / "a.txt"}));
  REQUIRE_OK(reader->next());
  const std::string position = reader->position();
  const auto parsed = nlohmann::json::parse(position);
  CHECK(parsed["file"] == 0);
  CHECK(parsed["path"] == (dir / "a.txt").string());
  CHECK(parsed["offset"] == 6);
  CHECK(parsed["line"] == 2);

  auto other = open_ok(spec_of(SourceFormat::kTextLines, {dir / "b.txt"}));
  const absl::Status wrong_file = other->seek(position);
  CHECK(wrong_file.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(wrong_file.message()), Catch::Contains("was taken over other files"));

  CHECK(reader->seek("not json").code() == absl::StatusCode::kInvalidArgument);
  CHECK(reader->seek(R"({"file": 3})").code() == absl::StatusCode::kInvalidArgument);
  nlohmann::json beyond = parsed;
  beyond["offset"] = 1000;
  CHECK(reader->seek(beyond.dump()).code() == absl::StatusCode::kInvalidArgument);
  nlohmann::json mid_line = parsed;
  mid_line["offset"] = 3;
  const absl::Status not_at_line = reader->seek(mid_line.dump());
  CHECK(not_at_line.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(not_at_line.message()), Catch::Contains("not at the start of a line"));

  // After the refusals the reader still resumes from a good position.
  REQUIRE_OK(reader->seek(position));
  CHECK(texts(read_pass(*reader)) == std::vector<std::string>{"second"});

  REQUIRE_OK(write_token_shard(dir / "s.bin", {{1}, {2}}));
  auto shard = open_ok(spec_of(SourceFormat::kTokenShard, {dir / "s.bin"}));
  const std::string too_far = nlohmann::json{{"file", 0}, {"path", (dir / "s.bin").string()}, {"doc", 3}}.dump();
  CHECK(shard->seek(too_far).code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("token shards round trip as uint16 or uint32 and are memory-mapped documents", "[unit]") {
  TempDir dir;
  const std::vector<std::vector<TokenId>> small = {{1, 2, 3}, {65535}, {0, 7}};
  REQUIRE_OK(write_token_shard(dir / "small.bin", small));
  CHECK(std::filesystem::file_size(dir / "small.bin") == 6 * 2);
  CHECK(std::filesystem::file_size(dir / "small.bin.idx") == 24 + 8 * 4);
  const std::vector<std::vector<TokenId>> large = {{65536, 1}, {2147483647}};
  REQUIRE_OK(write_token_shard(dir / "large.bin", large));
  CHECK(std::filesystem::file_size(dir / "large.bin") == 3 * 4);

  auto reader = open_ok(spec_of(SourceFormat::kTokenShard, {dir / "small.bin", dir / "large.bin"}));
  const auto docs = read_pass(*reader);
  REQUIRE(docs.size() == 5);
  for (size_t i = 0; i < 3; ++i) CHECK(docs[i].tokens == small[i]);
  for (size_t i = 0; i < 2; ++i) CHECK(docs[3 + i].tokens == large[i]);
  CHECK(docs[1].origin == (dir / "small.bin").string() + "#1");
  CHECK(docs[0].text.empty());

  // Rewriting replaces the shard whole.
  REQUIRE_OK(write_token_shard(dir / "small.bin", {{9}}));
  auto rewritten = open_ok(spec_of(SourceFormat::kTokenShard, {dir / "small.bin"}));
  const auto again = read_pass(*rewritten);
  REQUIRE(again.size() == 1);
  CHECK(again[0].tokens == std::vector<TokenId>{9});

  CHECK(write_token_shard(dir / "neg.bin", {{1, -1}}).code() == absl::StatusCode::kInvalidArgument);
  CHECK(write_token_shard(dir / "empty.bin", {{1}, {}}).code() == absl::StatusCode::kInvalidArgument);
  CHECK_FALSE(std::filesystem::exists(dir / "neg.bin"));
}

namespace {

std::string le(uint64_t value, int bytes) {
  std::string out;
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
  return out;
}

// An index with the given width, document count and offsets.
std::string index_bytes(uint32_t width, uint64_t docs, const std::vector<uint64_t>& offsets,
                        const std::string& magic = "TMPRSHD1") {
  std::string out = magic + le(width, 4) + le(0, 4) + le(docs, 8);
  for (uint64_t offset : offsets) out += le(offset, 8);
  return out;
}

}  // namespace

TEST_CASE("corrupt token shard indexes are refused naming the file and the fault", "[unit]") {
  TempDir dir;
  const auto tokens = dir / "s.bin";
  const auto index = dir / "s.bin.idx";
  write_bytes(tokens, le(1, 2) + le(2, 2) + le(3, 2));  // three uint16 tokens
  const auto expect_refused = [&](const std::string& index_contents, const std::string& fault) {
    write_bytes(index, index_contents);
    auto reader = open_reader(spec_of(SourceFormat::kTokenShard, {tokens}));
    INFO(fault);
    REQUIRE(reader.status().code() == absl::StatusCode::kInvalidArgument);
    const std::string message(reader.status().message());
    CHECK_THAT(message, Catch::Contains(index.string()) && Catch::Contains(fault));
  };
  expect_refused("short", "not a token shard index");
  expect_refused(index_bytes(2, 1, {0, 3}, "NOTSHARD"), "not a token shard index");
  expect_refused(index_bytes(3, 1, {0, 3}), "3 bytes per token");
  expect_refused(index_bytes(2, 2, {0, 3}), "header says 2 documents");
  expect_refused(index_bytes(2, 1, {0, 3}) + "xyz", "header says 1 documents");
  expect_refused(index_bytes(2, 1, {1, 3}), "the first offset is 1");
  expect_refused(index_bytes(2, 2, {0, 2, 1}), "offsets decrease at document 1");
  expect_refused(index_bytes(2, 1, {0, 2}), "the index ends at token 2");
  expect_refused(index_bytes(4, 1, {0, 3}), "the index ends at token 3");
  expect_refused(index_bytes(2, 0xFFFFFFFFFFFFFFFFull, {0}), "more bytes than a file can hold");

  // A valid index: an empty document and an id above 2^31-1 are malformed documents.
  write_bytes(tokens, le(5, 4) + le(0x80000000ull, 4) + le(6, 4));
  write_bytes(index, index_bytes(4, 4, {0, 1, 1, 2, 3}));
  auto reader = open_ok(spec_of(SourceFormat::kTokenShard, {tokens}));
  const auto docs = read_pass(*reader);
  REQUIRE(docs.size() == 2);
  CHECK(docs[0].tokens == std::vector<TokenId>{5});
  CHECK(docs[1].tokens == std::vector<TokenId>{6});
  REQUIRE(reader->stats().malformed_examples.size() == 2);
  CHECK(reader->stats().malformed_examples[0] == tokens.string() + "#1: empty document");
  CHECK(reader->stats().malformed_examples[1] ==
        tokens.string() + "#2: token id 2147483648 at position 0 exceeds 2^31-1");
  auto strict = open_ok(spec_of(SourceFormat::kTokenShard, {tokens}, MalformedPolicy::kFail));
  REQUIRE_OK(strict->next());
  CHECK(strict->next().status().code() == absl::StatusCode::kInvalidArgument);
}
