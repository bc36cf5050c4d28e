// Small helpers shared by the example programs: reading one-document-per-line text, building
// held-out evaluation sets, and printing progress (a bar on a terminal, plain lines otherwise).
// Everything here uses temper's public API only, so the examples can be copied as they are.
#pragma once

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <temper/temper.hpp>

namespace temper_examples {

// Each non-empty line of `path` is one document, tokenized with BOS and EOS. Stops after
// `max_documents` (0 = all).
inline temper::StatusOr<std::vector<std::vector<temper::TokenId>>> read_documents(const std::string& path,
                                                                                   const temper::Tokenizer& tokenizer,
                                                                                   size_t max_documents = 0) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(path + ": cannot open (run scripts/corpora.sh for the bundled corpora)");
  std::vector<std::vector<temper::TokenId>> docs;
  std::string line;
  size_t line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    if (line.empty()) continue;
    auto ids = tokenizer.encode_with(line, /*add_bos=*/true, /*add_eos=*/true);
    if (!ids.ok()) {
      return absl::InvalidArgumentError(path + ":" + std::to_string(line_number) + ": " + std::string(ids.status().message()));
    }
    docs.push_back(std::move(*ids));
    if (max_documents > 0 && docs.size() == max_documents) break;
  }
  if (docs.empty()) return absl::InvalidArgumentError(path + ": no documents");
  return docs;
}

// A held-out set: the documents packed into `batches` batches of batch_size x seq_len, in order.
inline temper::StatusOr<temper::EvalSet> make_eval_set(const std::string& name,
                                                       const std::vector<std::vector<temper::TokenId>>& docs,
                                                       int64_t batch_size, int64_t seq_len, int64_t batches) {
  temper::PackedTextOptions options;
  options.batch_size = batch_size;
  options.seq_len = seq_len;
  options.shuffle = false;
  auto source = temper::PackedTextSource::create(docs, options);
  if (!source.ok()) return source.status();
  temper::EvalSet set{name, {}};
  const int64_t available = (*source)->num_sequences() / batch_size;
  for (int64_t i = 0; i < std::max<int64_t>(1, std::min(batches, available)); ++i) {
    auto batch = (*source)->next();
    if (!batch.ok()) return batch.status();
    set.batches.push_back(std::move(*batch));
  }
  return set;
}

// Progress for a run of `total` steps: a redrawn bar on a terminal, one line every `every`
// steps otherwise (logs, CI).
class Progress {
 public:
  Progress(int64_t total, int64_t every) : total_(total), every_(every), tty_(::isatty(STDOUT_FILENO) != 0) {}

  void step(const temper::StepMetrics& m) {
    if (tty_) {
      const int width = 30;
      const int filled = static_cast<int>(width * m.step / std::max<int64_t>(1, total_));
      std::printf("\r[%-*s] %lld/%lld loss %.4f lr %.2e %.0f tok/s", width, std::string(filled, '#').c_str(),
                  static_cast<long long>(m.step), static_cast<long long>(total_), m.loss, m.lr, m.tokens_per_second);
      std::fflush(stdout);
    } else if (m.step % every_ == 0 || m.step == total_) {
      std::printf("step %lld/%lld loss %.4f lr %.2e grad-norm %.3f %.0f tok/s%s\n", static_cast<long long>(m.step),
                  static_cast<long long>(total_), m.loss, m.lr, m.grad_norm, m.tokens_per_second,
                  m.skipped ? " (skipped: non-finite)" : "");
    }
  }

  void eval(const temper::EvalMetrics& e) {
    if (tty_) std::printf("\n");
    std::printf("eval @ step %lld:", static_cast<long long>(e.step));
    for (const auto& set : e.sets) {
      std::printf("  %s ppl %.2f (%+.3f loss vs base)", set.name.c_str(), set.perplexity, set.loss_delta_from_base);
    }
    std::printf("\n");
  }

  void log(const std::string& line) { std::printf("%s%s\n", tty_ ? "\n" : "", line.c_str()); }

 private:
  int64_t total_;
  int64_t every_;
  bool tty_;
};

}  // namespace temper_examples
