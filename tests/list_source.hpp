// A BatchSource over batches given up front, for tests.
#pragma once

#include <sstream>
#include <string>
#include <vector>

#include "temper/batch.hpp"

namespace temper::testing {

// Batches given up front, cycled; the position is its state.
class ListSource final : public BatchSource {
 public:
  explicit ListSource(std::vector<Batch> batches, Objective objective = Objective::kContinuedPretraining)
      : batches_(std::move(batches)), objective_(objective) {}
  StatusOr<Batch> next() override {
    if (cursor_ == batches_.size()) {
      cursor_ = 0;
      ++epoch_;
    }
    return batches_[cursor_++];
  }
  int64_t epochs_completed() const override { return epoch_; }
  Objective objective() const override { return objective_; }
  std::string save_state() const override { return std::to_string(cursor_) + " " + std::to_string(epoch_); }
  Status restore_state(const std::string& state) override {
    std::istringstream in(state);
    in >> cursor_ >> epoch_;
    return absl::OkStatus();
  }

 private:
  std::vector<Batch> batches_;
  Objective objective_;
  size_t cursor_ = 0;
  int64_t epoch_ = 0;
};

}  // namespace temper::testing
