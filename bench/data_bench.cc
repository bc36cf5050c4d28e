// The data pipeline's throughput on one core: DataMixer batches per second from (a) text with
// filters, dedup and sentencepiece tokenization, (b) pre-tokenized shards, (c) sentencepiece
// tokenization alone for reference. Prints one JSON line per case.
//
//   data_bench --model assets/model --text data/corpora/general_train.txt [--seconds 5]
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include <ATen/Parallel.h>

#include "data/token_shard.hpp"
#include "io/directory.hpp"
#include "temper/data_mixer.hpp"
#include "temper/tokenizer.hpp"
#include "util/cli_args.hpp"

namespace {

using temper::cli::arg;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Batches of 8 x 2048 for `budget` seconds (or until the data ends); tokens per second.
double mixer_tokens_per_second(temper::DataMixer& mixer, double budget, int64_t* tokens) {
  const auto t0 = std::chrono::steady_clock::now();
  *tokens = 0;
  while (seconds_since(t0) < budget) {
    auto batch = mixer.next();
    if (!batch.ok()) break;
    *tokens += batch->input_ids.numel();
  }
  return static_cast<double>(*tokens) / seconds_since(t0);
}

int fail(const absl::Status& status) {
  std::fprintf(stderr, "data_bench: %s\n", std::string(status.ToString()).c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  at::set_num_threads(1);
  const std::string model_dir = arg(argc, argv, "--model", "assets/model");
  const std::string text = arg(argc, argv, "--text", "data/corpora/general_train.txt");
  const double budget = std::stod(arg(argc, argv, "--seconds", "5"));
  auto tokenizer = temper::load_tokenizer(model_dir);
  if (!tokenizer.ok()) return fail(tokenizer.status());

  // (c) tokenization alone: every line once.
  {
    std::ifstream in(text);
    std::string line;
    int64_t tokens = 0, bytes = 0;
    std::vector<std::vector<temper::TokenId>> docs;
    const auto t0 = std::chrono::steady_clock::now();
    while (std::getline(in, line)) {
      auto ids = (*tokenizer)->encode(line);
      if (!ids.ok()) return fail(ids.status());
      tokens += static_cast<int64_t>(ids->size());
      bytes += static_cast<int64_t>(line.size());
      docs.push_back(std::move(*ids));
    }
    const double s = seconds_since(t0);
    std::printf("{\"bench\":\"sentencepiece_encode\",\"tokens\":%lld,\"MB\":%.1f,\"tokens_per_s\":%.0f}\n",
                static_cast<long long>(tokens), bytes / 1e6, tokens / s);

    // (b) the same tokens as a pre-tokenized shard, repeated to make the run long enough.
    const std::string shard = "/tmp/temper_data_bench.tokens";
    std::vector<std::vector<temper::TokenId>> many;
    for (int r = 0; r < 20; ++r) many.insert(many.end(), docs.begin(), docs.end());
    const absl::Status written = temper::write_token_shard(shard, many);
    if (!written.ok()) return fail(written);
    temper::MixerOptions options;
    options.batch_size = 8;
    options.seq_len = 2048;
    options.dedup.exact = options.dedup.near = false;  // shards arrive cleaned
    temper::SourceSpec spec;
    spec.name = "shard";
    spec.format = temper::SourceFormat::kTokenShard;
    spec.paths = {shard};
    options.sources = {spec};
    auto mixer = temper::DataMixer::create(options, **tokenizer);
    if (!mixer.ok()) return fail(mixer.status());
    int64_t mixed = 0;
    const double rate = mixer_tokens_per_second(**mixer, budget, &mixed);
    std::printf("{\"bench\":\"mixer_pretokenized\",\"tokens\":%lld,\"tokens_per_s\":%.0f}\n",
                static_cast<long long>(mixed), rate);
  }

  // (a) text: filters + exact and near dedup + tokenization + packing.
  for (bool dedup : {true, false}) {
    temper::MixerOptions options;
    options.batch_size = 8;
    options.seq_len = 2048;
    options.dedup.exact = options.dedup.near = dedup;
    temper::SourceSpec spec;
    spec.name = "text";
    spec.paths = {text};
    spec.format = temper::SourceFormat::kTextLines;
    options.sources = {spec};
    options.on_exhausted = temper::ExhaustionPolicy::kStop;  // one pass: duplicates of a repeat would all be dropped
    auto mixer = temper::DataMixer::create(options, **tokenizer);
    if (!mixer.ok()) return fail(mixer.status());
    int64_t mixed = 0;
    const double rate = mixer_tokens_per_second(**mixer, budget, &mixed);
    std::printf("{\"bench\":\"mixer_text\",\"filters\":true,\"dedup\":%s,\"tokens\":%lld,\"tokens_per_s\":%.0f}\n",
                dedup ? "true" : "false", static_cast<long long>(mixed), rate);
  }
  return 0;
}
