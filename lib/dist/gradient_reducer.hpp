// Sums the gradients of the trained tensors over every rank, in buckets that start while the
// backward pass is still running (as PyTorch's DDP does), into flat buffers the optimizer reads.
//
// Why not c10d::Reducer (DDP's engine): its constructor and hooks are internal API that differ
// between libtorch 1.13 and 2.x and assume DDP's Python wrapper; what temper needs is small —
// tensor hooks, a few flat buffers, and launches in a fixed order.
//
// Buckets hold tensors in reverse order of the list given (the order backward produces them for
// a decoder: last layer first). A bucket holds one dtype: by default its members' own (a bf16
// model's gradients are summed in bf16, as DDP does: half the bytes on the wire and in memory of
// fp32, and no conversion pass), so a run of consecutive tensors of one dtype is cut where the
// dtype changes or where `bucket_bytes` (counted in that dtype's element size) is reached; under
// BucketDtype::kFloat32 every bucket is fp32 and every gradient is converted on its way in.
// During the last micro-batch's backward (arm()), each tensor's hook adds its incoming gradient
// to what earlier micro-batches accumulated in .grad and writes the sum into its bucket; a
// bucket whose tensors are all in is all-reduced at once, provided every earlier bucket has been
// launched: every rank launches the same collectives in the same order, whatever order its hooks
// fire in. finish() launches the rest (a tensor that got no gradient contributes zeros), waits,
// and returns the summed gradients as views of the buffers.
//
// Memory: a bucket exists from its first gradient's arrival until the caller drops the sums
// finish() returned (and any .grad aliasing them), so between steps, and during the forward and
// the early backward, when activations peak, no gradient memory is held (buckets held for good
// kept a 1B model's full fine-tuning 2.3 GiB above one GPU's peak, measured with train_bench
// --local-reducer). A gradient copied into its bucket would otherwise also stay in .grad until the
// step ends, holding every gradient twice at the end of the backward. Where nothing was
// accumulated before it (the step's only micro-batch) and the bucket has its dtype, the hook hands
// autograd a view of the bucket as the gradient, which autograd keeps as .grad instead of the
// original (as DDP's gradient_as_bucket_view): .grad is then the bucket, and the original is
// freed. Callers drop every .grad before the next step's first backward (the Trainer does).
//
// A tensor whose hook fires again in the same backward (reached by two separate backward
// passes, e.g. shared by two reentrant-checkpointed segments) has its first sum in a bucket that
// may be on the wire already: the hook clears its .grad, so that autograd collects only the late
// gradients there, and finish() sums those over ranks and adds them (one more all-reduce per
// such tensor, in tensor order on every rank).
#pragma once

#include <mutex>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/Work.hpp>

#include "temper/distributed.hpp"

namespace temper {

// The dtype the gradients are summed in.
enum class BucketDtype {
  kGradient,  // each tensor's own: sums round in it (bf16: one more rounding per all-reduce)
  kFloat32,   // fp32 for every tensor: sums as exact as fp32, twice the bytes of bf16
};

class GradientReducer {
 public:
  // `params`: the trained tensors (requires_grad leaves, any float dtype, all on the
  // communicator's device), in the order the model creates them. `bucket_bytes` >= 1.
  GradientReducer(Communicator& communicator, std::vector<std::pair<std::string, at::Tensor>> params,
                  int64_t bucket_bytes, BucketDtype bucket_dtype = BucketDtype::kGradient);
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // The next backward is the step's last: hooks reduce as gradients arrive.
  void arm();
  // Completes the reduction. Returns, per tensor in the constructor's order, its gradient summed
  // over ranks (the tensor's shape, in its bucket's dtype: the tensor's own, or fp32 under
  // BucketDtype::kFloat32; a view into the bucket, which the reducer no longer holds: the bucket
  // is freed when the caller drops these and .grad). The tensors' .grad afterwards is not the
  // local gradient (it may be the bucket, or a late part only).
  StatusOr<std::vector<at::Tensor>> finish();
  // Disarms after a failed backward (dropping its buckets), so that the next step starts clean.
  void reset();

 private:
  struct Bucket {
    at::ScalarType dtype = at::kFloat;  // the members' own, or fp32 (BucketDtype::kFloat32)
    int64_t numel = 0;
    at::Tensor buffer;            // [numel] dtype; defined from the first arrival until finish()
    std::vector<size_t> members;  // indices into params_
    size_t pending = 0;           // members whose gradient has not arrived this backward
  };

  // From autograd threads: the gradient autograd should keep instead of `grad` (the tensor's
  // bucket view), or an undefined tensor for `grad` itself.
  at::Tensor on_gradient(size_t index, const at::Tensor& grad);
  void allocate_locked(size_t bucket);  // its buffer and its members' views, if not yet there
  void release_buffers_locked();
  void launch_ready_locked();
  Status launch_locked(size_t bucket);

  Communicator& communicator_;
  std::vector<std::pair<std::string, at::Tensor>> params_;
  std::vector<at::Tensor> views_;      // per param: [shape] view into its bucket (while allocated)
  std::vector<size_t> bucket_of_;      // per param
  std::vector<int64_t> offset_of_;     // per param: its first element in its bucket
  std::vector<bool> arrived_;          // per param, this backward
  std::vector<bool> late_;             // per param, this backward: its hook fired again; .grad holds the rest
  std::vector<Bucket> buckets_;
  std::vector<c10::intrusive_ptr<c10d::Work>> works_;  // per bucket, this step
  std::vector<unsigned> hook_handles_;
  std::mutex mutex_;
  bool armed_ = false;
  size_t next_launch_ = 0;
  Status error_;
};

}  // namespace temper
