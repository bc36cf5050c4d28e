// Packing tokenized documents into rows of a fixed length for continued pre-training.
//
// Documents are laid end to end; one that does not fit the room left in a row continues in the
// next row as a new segment (nothing is dropped). Every segment's positions start at 0 and its
// segment id differs from its neighbours', so with block-diagonal attention (ForwardInput::
// segment_ids) a document never sees another. The first token of each segment is context only
// (label -100): predicting it would need the previous document.
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

#include <absl/status/status.h>
#include <nlohmann/json.hpp>

#include "temper/batch.hpp"
#include "temper/token.hpp"

namespace temper {

class SequencePacker {
 public:
  explicit SequencePacker(int64_t seq_len) : seq_len_(seq_len) {}

  // Appends a document's tokens (split across rows as needed).
  void add(const std::vector<TokenId>& tokens);
  int64_t ready_rows() const { return static_cast<int64_t>(ready_.size()); }
  // The next `rows` complete rows as a Batch (input_ids, labels, position_ids, segment_ids
  // [rows, seq_len] int64). Needs ready_rows() >= rows.
  Batch take(int64_t rows);

  nlohmann::json state() const;
  absl::Status restore(const nlohmann::json& state);

 private:
  struct Row {
    std::vector<TokenId> ids;
    std::vector<int32_t> positions;  // restart at 0 per segment
  };
  void close_row();

  int64_t seq_len_;
  Row open_;
  std::deque<Row> ready_;
};

}  // namespace temper
