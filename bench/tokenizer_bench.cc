// tokenizer.json encode speed on one core: tokens per second of Tokenizer::encode (no special
// tokens) over the held-out corpora, for each fixture tokenizer. Mirrors
// tools/fixtures/make_tokenizer_fixtures.py --bench (which times Hugging Face tokenizers on the
// same lines): the first 4 MiB of each file read line by line (newline stripped), 200 lines of
// warm-up, then the best of 3 passes over all lines. Before timing, every case of the style's
// cases.json is checked (ids, ids with special tokens, decode), so the timed tokenizer is the
// correct one. Prints one JSON line per style.
//
//   tokenizer_bench [--fixtures tests/fixtures/tokenizers] [--corpora data/corpora]
//                   [--styles bloom,qwen2,llama3,gpt2] [--passes 3]
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "temper/tokenizer.hpp"
#include "util/cli_args.hpp"

namespace {

using temper::cli::arg;

std::vector<std::string> read_lines(const std::string& path, size_t limit_bytes) {
  std::vector<std::string> lines;
  std::ifstream in(path, std::ios::binary);
  std::string line;
  size_t total = 0;
  while (std::getline(in, line)) {
    total += line.size() + 1;
    lines.push_back(line);
    if (total > limit_bytes) break;
  }
  return lines;
}

std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  return out;
}

// Checks every case; returns the number of failures (and prints the first few).
int verify(const temper::Tokenizer& tokenizer, const std::string& cases_path, const std::string& style) {
  std::ifstream in(cases_path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  const nlohmann::json cases = nlohmann::json::parse(buffer.str());
  int failures = 0;
  for (const auto& c : cases) {
    const std::string text = c.contains("bytes_hex") ? from_hex(c["bytes_hex"].get<std::string>()) : c["text"].get<std::string>();
    const auto want = c["ids"].get<std::vector<temper::TokenId>>();
    const auto want_special = c["ids_with_special"].get<std::vector<temper::TokenId>>();
    auto ids = tokenizer.encode(text);
    auto special = tokenizer.encode_for_model(text);
    auto decoded = tokenizer.decode_with_special(want);
    const bool ok = ids.ok() && *ids == want && special.ok() && *special == want_special && decoded.ok() &&
                    *decoded == c["decoded"].get<std::string>();
    if (!ok && ++failures <= 5) {
      std::fprintf(stderr, "%s: mismatch on %s\n", style.c_str(), nlohmann::json(c["text"]).dump().substr(0, 200).c_str());
      if (ids.ok()) std::fprintf(stderr, "  got  %s\n  want %s\n", nlohmann::json(*ids).dump().substr(0, 300).c_str(),
                                 nlohmann::json(want).dump().substr(0, 300).c_str());
      if (decoded.ok() && *decoded != c["decoded"].get<std::string>()) std::fprintf(stderr, "  decoded differs\n");
    }
  }
  std::fprintf(stderr, "%s: %zu cases, %d failures\n", style.c_str(), cases.size(), failures);
  return failures;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string fixtures = arg(argc, argv, "--fixtures", "tests/fixtures/tokenizers");
  const std::string corpora = arg(argc, argv, "--corpora", "data/corpora");
  const std::string styles_arg = arg(argc, argv, "--styles", "bloom,qwen2,llama3,gpt2");
  const int passes = std::stoi(arg(argc, argv, "--passes", "3"));
  std::vector<std::string> texts;
  for (const char* name : {"general_heldout.txt", "medical_heldout.txt"}) {
    auto lines = read_lines(corpora + "/" + name, 4u << 20);
    texts.insert(texts.end(), lines.begin(), lines.end());
  }
  size_t bytes = 0;
  for (const auto& t : texts) bytes += t.size();
  int failures = 0;
  std::stringstream styles(styles_arg);
  for (std::string style; std::getline(styles, style, ',');) {
    auto tokenizer = temper::load_tokenizer_json(fixtures + "/" + style + "/tokenizer.json");
    if (!tokenizer.ok()) {
      std::fprintf(stderr, "tokenizer_bench: %s\n", std::string(tokenizer.status().ToString()).c_str());
      return 1;
    }
    failures += verify(**tokenizer, fixtures + "/" + style + "/cases.json", style);
    for (size_t i = 0; i < texts.size() && i < 200; ++i) (void)(*tokenizer)->encode(texts[i]);
    double best = 1e30;
    size_t tokens = 0;
    for (int p = 0; p < passes; ++p) {
      tokens = 0;
      const auto t0 = std::chrono::steady_clock::now();
      for (const auto& t : texts) {
        auto ids = (*tokenizer)->encode(t);
        if (!ids.ok()) return 1;
        tokens += ids->size();
      }
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::printf("{\"bench\": \"temper_tokenizer_json_encode\", \"style\": \"%s\", \"threads\": 1, \"lines\": %zu, "
                "\"bytes\": %zu, \"tokens\": %zu, \"best_seconds\": %.4f, \"tokens_per_second\": %.0f, "
                "\"mb_per_second\": %.2f}\n",
                style.c_str(), texts.size(), bytes, tokens, best, tokens / best, bytes / best / 1e6);
    std::fflush(stdout);
  }
  return failures == 0 ? 0 : 2;
}
