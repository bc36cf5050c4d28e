#include "data/packer.hpp"

#include "model/loss.hpp"
#include "util/strings.hpp"

namespace temper {

void SequencePacker::add(const std::vector<TokenId>& tokens) {
  size_t cursor = 0;
  while (cursor < tokens.size()) {
    const size_t room = static_cast<size_t>(seq_len_) - open_.ids.size();
    const size_t n = std::min(room, tokens.size() - cursor);
    for (size_t i = 0; i < n; ++i) {
      open_.ids.push_back(tokens[cursor + i]);
      open_.positions.push_back(static_cast<int32_t>(i));
    }
    cursor += n;
    if (static_cast<int64_t>(open_.ids.size()) == seq_len_) close_row();
  }
}

void SequencePacker::close_row() {
  ready_.push_back(std::move(open_));
  open_ = Row();
}

Batch SequencePacker::take(int64_t rows) {
  Batch batch;
  batch.input_ids = at::empty({rows, seq_len_}, at::kLong);
  batch.labels = at::empty({rows, seq_len_}, at::kLong);
  batch.position_ids = at::empty({rows, seq_len_}, at::kLong);
  batch.segment_ids = at::empty({rows, seq_len_}, at::kLong);
  auto ids = batch.input_ids.accessor<int64_t, 2>();
  auto labels = batch.labels.accessor<int64_t, 2>();
  auto positions = batch.position_ids.accessor<int64_t, 2>();
  auto segments = batch.segment_ids.accessor<int64_t, 2>();
  for (int64_t r = 0; r < rows; ++r) {
    const Row& row = ready_.front();
    int64_t segment = -1;
    for (int64_t t = 0; t < seq_len_; ++t) {
      const bool starts = row.positions[t] == 0;
      if (starts) ++segment;
      ids[r][t] = row.ids[t];
      labels[r][t] = starts ? kIgnoreIndex : row.ids[t];
      positions[r][t] = row.positions[t];
      segments[r][t] = segment;
    }
    ready_.pop_front();
  }
  return batch;
}

nlohmann::json SequencePacker::state() const {
  auto row_json = [](const Row& row) { return nlohmann::json{{"ids", row.ids}, {"positions", row.positions}}; };
  nlohmann::json ready = nlohmann::json::array();
  for (const Row& row : ready_) ready.push_back(row_json(row));
  return {{"seq_len", seq_len_}, {"open", row_json(open_)}, {"ready", ready}};
}

absl::Status SequencePacker::restore(const nlohmann::json& state) {
  try {
    if (state.at("seq_len").get<int64_t>() != seq_len_) {
      return absl::FailedPreconditionError(str_cat("packer state is for rows of ", state.at("seq_len").dump(),
                                                   " tokens, this mixer packs ", seq_len_));
    }
    auto parse_row = [this](const nlohmann::json& j, bool complete) -> absl::StatusOr<Row> {
      Row row{j.at("ids").get<std::vector<TokenId>>(), j.at("positions").get<std::vector<int32_t>>()};
      const size_t want = static_cast<size_t>(seq_len_);
      if (row.ids.size() != row.positions.size() || (complete ? row.ids.size() != want : row.ids.size() >= want)) {
        return absl::InvalidArgumentError("packer state: a row has the wrong length");
      }
      return row;
    };
    auto open = parse_row(state.at("open"), false);
    if (!open.ok()) return open.status();
    std::deque<Row> ready;
    for (const auto& j : state.at("ready")) {
      auto row = parse_row(j, true);
      if (!row.ok()) return row.status();
      ready.push_back(std::move(*row));
    }
    open_ = std::move(*open);
    ready_ = std::move(ready);
    return absl::OkStatus();
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(str_cat("packer state: ", e.what()));
  }
}

}  // namespace temper
