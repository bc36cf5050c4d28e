#include "temper/trainer.hpp"
#include "util/strings.hpp"

namespace temper {

StatusOr<EvalSet> collect_eval_set(const std::string& name, BatchSource& source, int64_t max_batches) {
  if (name.empty()) return absl::InvalidArgumentError("collect_eval_set: the eval set needs a name");
  if (max_batches < 1) {
    return absl::InvalidArgumentError(str_cat("collect_eval_set: \"", name, "\": max_batches must be >= 1, got ", max_batches));
  }
  EvalSet set{name, {}};
  while (static_cast<int64_t>(set.batches.size()) < max_batches) {
    StatusOr<Batch> batch = source.next();
    if (absl::IsOutOfRange(batch.status())) break;  // a finite source ended: the set is what it gave
    if (!batch.ok()) return batch.status();
    set.batches.push_back(std::move(*batch));
  }
  if (set.batches.empty()) {
    return absl::FailedPreconditionError(str_cat("collect_eval_set: \"", name, "\": the source ended before its first ",
                                                 "batch (too little text for one batch of batch_size x seq_len?)"));
  }
  return set;
}

}  // namespace temper
