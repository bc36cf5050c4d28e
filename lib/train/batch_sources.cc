#include <random>

#include <nlohmann/json.hpp>

#include "io/json_file.hpp"
#include "model/loss.hpp"
#include "temper/batch.hpp"
#include "util/status_macros.hpp"
#include "util/strings.hpp"
#include "util/torch_errors.hpp"

namespace temper {
namespace {

// The order of `n` items in epoch `epoch`: a Fisher-Yates shuffle driven by mt19937_64 (whose
// output the C++ standard fixes), so the order is the same in every build and after a resume.
std::vector<int64_t> epoch_order(int64_t n, bool shuffle, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  if (!shuffle) return order;
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(epoch));
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = static_cast<int64_t>(rng() % static_cast<uint64_t>(i + 1));
    std::swap(order[i], order[j]);
  }
  return order;
}

std::string position_state(int64_t epoch, int64_t cursor, int64_t n) {
  return nlohmann::json({{"epoch", epoch}, {"cursor", cursor}, {"items", n}}).dump();
}

// Parses a state written by position_state() for a source of `n` items.
absl::Status parse_position(const std::string& state, int64_t n, const char* source, int64_t* epoch, int64_t* cursor) {
  TEMPER_ASSIGN_OR_RETURN(nlohmann::json obj, parse_json(state, source));
  TEMPER_ASSIGN_OR_RETURN(const int64_t items, json_int(obj, "items", source));
  TEMPER_ASSIGN_OR_RETURN(*epoch, json_int(obj, "epoch", source));
  TEMPER_ASSIGN_OR_RETURN(*cursor, json_int(obj, "cursor", source));
  if (items != n) {
    return absl::FailedPreconditionError(str_cat(source, ": the saved position is for ", items,
                                                 " items but this source holds ", n, " (different data?)"));
  }
  if (*epoch < 0 || *cursor < 0 || *cursor > n) return absl::InvalidArgumentError(str_cat(source, ": position out of range"));
  return absl::OkStatus();
}

}  // namespace

BatchSource::~BatchSource() = default;

int64_t scored_tokens(const Batch& batch) {
  if (!batch.labels.defined() || batch.labels.dim() != 2 || batch.labels.size(1) < 2) return 0;
  return batch.labels.narrow(1, 1, batch.labels.size(1) - 1).ne(kIgnoreIndex).sum().item<int64_t>();
}

// ---- PackedTextSource ----

StatusOr<std::unique_ptr<PackedTextSource>> PackedTextSource::create(const std::vector<std::vector<TokenId>>& documents,
                                                                     const PackedTextOptions& options) {
  if (options.batch_size < 1 || options.seq_len < 2) {
    return absl::InvalidArgumentError("PackedTextSource: batch_size must be >= 1 and seq_len >= 2");
  }
  std::vector<int64_t> stream;
  for (const auto& doc : documents) stream.insert(stream.end(), doc.begin(), doc.end());
  const int64_t n = static_cast<int64_t>(stream.size()) / options.seq_len;
  if (n == 0) {
    return absl::InvalidArgumentError(str_cat("PackedTextSource: ", stream.size(), " tokens do not fill one sequence of ",
                                              options.seq_len));
  }
  std::unique_ptr<PackedTextSource> source(new PackedTextSource());
  source->options_ = options;
  source->dropped_tokens_ = static_cast<int64_t>(stream.size()) - n * options.seq_len;
  source->sequences_ = at::from_blob(stream.data(), {n, options.seq_len}, at::kLong).clone();
  source->reshuffle();
  return source;
}

void PackedTextSource::reshuffle() { order_ = epoch_order(sequences_.size(0), options_.shuffle, options_.seed, epoch_); }

StatusOr<Batch> PackedTextSource::next() {
  return guarded("PackedTextSource::next", [&]() -> StatusOr<Batch> {
    std::vector<int64_t> rows;
    rows.reserve(options_.batch_size);
    while (static_cast<int64_t>(rows.size()) < options_.batch_size) {
      if (cursor_ == static_cast<int64_t>(order_.size())) {
        ++epoch_;
        cursor_ = 0;
        reshuffle();
      }
      rows.push_back(order_[cursor_++]);
    }
    Batch batch;
    batch.input_ids = sequences_.index_select(0, at::tensor(rows, at::kLong));
    batch.labels = batch.input_ids;
    return batch;
  });
}

std::string PackedTextSource::save_state() const { return position_state(epoch_, cursor_, sequences_.size(0)); }

Status PackedTextSource::restore_state(const std::string& state) {
  int64_t epoch = 0, cursor = 0;
  TEMPER_RETURN_IF_ERROR(parse_position(state, sequences_.size(0), "PackedTextSource state", &epoch, &cursor));
  epoch_ = epoch;
  cursor_ = cursor;
  reshuffle();
  return absl::OkStatus();
}

// ---- SftSource ----

StatusOr<std::unique_ptr<SftSource>> SftSource::create(std::vector<SftExample> examples, const SftOptions& options) {
  if (options.batch_size < 1 || options.max_seq_len < 2) {
    return absl::InvalidArgumentError("SftSource: batch_size must be >= 1 and max_seq_len >= 2");
  }
  if (examples.empty()) return absl::InvalidArgumentError("SftSource: no examples");
  std::unique_ptr<SftSource> source(new SftSource());
  source->options_ = options;
  std::vector<SftExample> kept;
  kept.reserve(examples.size());
  for (size_t i = 0; i < examples.size(); ++i) {
    SftExample& ex = examples[i];
    if (ex.response.empty()) return absl::InvalidArgumentError(str_cat("SftSource: example ", i, " has an empty response"));
    const int64_t prompt = static_cast<int64_t>(ex.prompt.size());
    if (prompt >= options.max_seq_len) {  // nothing of the response would be learnt
      ++source->dropped_;
      continue;
    }
    const int64_t room = options.max_seq_len - prompt;
    if (static_cast<int64_t>(ex.response.size()) > room) {
      ex.response.resize(room);
      ++source->truncated_;
    }
    kept.push_back(std::move(ex));
  }
  if (kept.empty()) {
    return absl::InvalidArgumentError(str_cat("SftSource: all ", examples.size(),
                                              " examples have prompts of max_seq_len (", options.max_seq_len,
                                              ") tokens or more"));
  }
  examples = std::move(kept);
  source->examples_ = std::move(examples);
  source->reshuffle();
  return source;
}

void SftSource::reshuffle() {
  order_ = epoch_order(static_cast<int64_t>(examples_.size()), options_.shuffle, options_.seed, epoch_);
}

StatusOr<Batch> SftSource::next() {
  return guarded("SftSource::next", [&]() -> StatusOr<Batch> {
    std::vector<const SftExample*> rows;
    while (static_cast<int64_t>(rows.size()) < options_.batch_size) {
      if (cursor_ == static_cast<int64_t>(order_.size())) {
        ++epoch_;
        cursor_ = 0;
        reshuffle();
      }
      rows.push_back(&examples_[order_[cursor_++]]);
    }
    int64_t width = 0;
    for (const SftExample* ex : rows) width = std::max<int64_t>(width, ex->prompt.size() + ex->response.size());
    Batch batch;
    batch.input_ids = at::full({options_.batch_size, width}, static_cast<int64_t>(options_.pad_id), at::kLong);
    batch.labels = at::full({options_.batch_size, width}, kIgnoreIndex, at::kLong);
    auto ids = batch.input_ids.accessor<int64_t, 2>();
    auto labels = batch.labels.accessor<int64_t, 2>();
    for (int64_t r = 0; r < options_.batch_size; ++r) {
      int64_t t = 0;
      for (TokenId id : rows[r]->prompt) ids[r][t++] = id;
      for (TokenId id : rows[r]->response) {
        ids[r][t] = id;
        labels[r][t++] = id;
      }
    }
    return batch;
  });
}

std::string SftSource::save_state() const {
  return position_state(epoch_, cursor_, static_cast<int64_t>(examples_.size()));
}

Status SftSource::restore_state(const std::string& state) {
  int64_t epoch = 0, cursor = 0;
  TEMPER_RETURN_IF_ERROR(
      parse_position(state, static_cast<int64_t>(examples_.size()), "SftSource state", &epoch, &cursor));
  epoch_ = epoch;
  cursor_ = cursor;
  reshuffle();
  return absl::OkStatus();
}

}  // namespace temper
