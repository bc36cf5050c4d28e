#include "dist/gradient_reducer.hpp"

#include <ATen/core/grad_mode.h>

#include "dist/communicator_impl.hpp"
#include "util/strings.hpp"
#include "util/torch_errors.hpp"

namespace temper {

GradientReducer::GradientReducer(Communicator& communicator, std::vector<std::pair<std::string, at::Tensor>> params,
                                 int64_t bucket_bytes, BucketDtype bucket_dtype)
    : communicator_(communicator), params_(std::move(params)) {
  const size_t n = params_.size();
  views_.resize(n);
  bucket_of_.resize(n);
  offset_of_.resize(n);
  arrived_.assign(n, false);
  late_.assign(n, false);
  auto dtype_of = [&](size_t k) {
    return bucket_dtype == BucketDtype::kFloat32 ? at::kFloat : params_[k].second.scalar_type();
  };
  // Reverse creation order: the backward of a decoder produces the last layer's gradients first.
  // A bucket is one flat buffer, hence one dtype: a change of dtype starts a new one.
  std::vector<std::vector<size_t>> groups;
  int64_t filled = 0;  // elements in the last group
  for (size_t k = n; k-- > 0;) {
    const at::ScalarType dtype = dtype_of(k);
    const int64_t cap = std::max<int64_t>(bucket_bytes / static_cast<int64_t>(c10::elementSize(dtype)), 1);
    const int64_t numel = params_[k].second.numel();
    if (groups.empty() || dtype != dtype_of(groups.back().front()) || (filled > 0 && filled + numel > cap)) {
      groups.emplace_back();
      filled = 0;
    }
    groups.back().push_back(k);
    filled += numel;
  }
  for (auto& members : groups) {
    Bucket bucket;
    bucket.dtype = dtype_of(members.front());
    for (size_t k : members) {
      offset_of_[k] = bucket.numel;
      bucket_of_[k] = buckets_.size();
      bucket.numel += params_[k].second.numel();
    }
    bucket.members = std::move(members);
    buckets_.push_back(std::move(bucket));
  }
  works_.resize(buckets_.size());
  for (size_t k = 0; k < n; ++k) {
    hook_handles_.push_back(
        params_[k].second.register_hook([this, k](const at::Tensor& grad) { return on_gradient(k, grad); }));
  }
}

GradientReducer::~GradientReducer() {
  for (size_t k = 0; k < hook_handles_.size(); ++k) params_[k].second.remove_hook(hook_handles_[k]);
}

void GradientReducer::arm() {
  std::lock_guard<std::mutex> lock(mutex_);
  armed_ = true;
  next_launch_ = 0;
  std::fill(arrived_.begin(), arrived_.end(), false);
  std::fill(late_.begin(), late_.end(), false);
  for (Bucket& b : buckets_) {
    b.pending = b.members.size();
  }
  for (auto& w : works_) w.reset();
}

void GradientReducer::reset() {
  std::lock_guard<std::mutex> lock(mutex_);
  armed_ = false;
  release_buffers_locked();
}

void GradientReducer::allocate_locked(size_t b) {
  Bucket& bucket = buckets_[b];
  if (bucket.buffer.defined()) return;
  // Uninitialised: every member is written before the bucket is sent (its gradient, or zeros in
  // finish()).
  bucket.buffer = at::empty({bucket.numel}, at::TensorOptions().dtype(bucket.dtype).device(communicator_.device()));
  for (size_t k : bucket.members) {
    const at::Tensor& p = params_[k].second;
    views_[k] = bucket.buffer.narrow(0, offset_of_[k], p.numel()).view(p.sizes());
  }
}

void GradientReducer::release_buffers_locked() {
  for (Bucket& b : buckets_) b.buffer = at::Tensor();
  for (at::Tensor& v : views_) v = at::Tensor();
}

at::Tensor GradientReducer::on_gradient(size_t index, const at::Tensor& grad) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!armed_ || !error_.ok()) return {};
  at::NoGradGuard no_grad;
  if (arrived_[index]) {
    // Its bucket holds the first sum and may be on the wire: autograd, which runs right after
    // this hook, stores this gradient afresh in the cleared .grad (never into the bucket).
    if (!late_[index]) params_[index].second.mutable_grad() = at::Tensor();
    late_[index] = true;
    return {};
  }
  arrived_[index] = true;
  allocate_locked(bucket_of_[index]);
  at::Tensor& view = views_[index];
  const at::Tensor& accumulated = params_[index].second.grad();  // earlier micro-batches of this step
  at::Tensor replacement;
  if (accumulated.defined() && accumulated.scalar_type() == view.scalar_type() &&
      grad.scalar_type() == view.scalar_type()) {
    at::add_out(view, accumulated, grad);  // one pass, rounded as autograd's own accumulation
  } else if (accumulated.defined()) {
    view.copy_(accumulated).add_(grad);  // widened first: summed in the bucket's dtype (fp32)
  } else {
    view.copy_(grad);
    // Autograd keeps a fresh view of the bucket as .grad (one it alone holds, which it adopts
    // without a copy where the layout matches the tensor's), and the original is freed.
    if (grad.scalar_type() == view.scalar_type()) replacement = view.view(view.sizes());
  }
  Bucket& bucket = buckets_[bucket_of_[index]];
  if (--bucket.pending == 0) launch_ready_locked();
  return replacement;
}

void GradientReducer::launch_ready_locked() {
  while (next_launch_ < buckets_.size() && buckets_[next_launch_].pending == 0 && error_.ok()) {
    error_ = launch_locked(next_launch_);
    ++next_launch_;
  }
}

Status GradientReducer::launch_locked(size_t b) {
  Communicator::Impl& comm = communicator_.impl();
  if (!comm.backend) return absl::OkStatus();
  std::vector<at::Tensor> tensors{buckets_[b].buffer};
  auto started = comm.start(str_cat("gradient all-reduce (bucket ", b + 1, " of ", buckets_.size(), ")"),
                            [&] { return comm.backend->allreduce(tensors); });
  if (!started.ok()) return started.status();
  works_[b] = *std::move(started);
  return absl::OkStatus();
}

StatusOr<std::vector<at::Tensor>> GradientReducer::finish() {
  std::lock_guard<std::mutex> lock(mutex_);
  armed_ = false;
  Communicator::Impl& comm = communicator_.impl();
  return guarded("reducing gradients across ranks", [&]() -> StatusOr<std::vector<at::Tensor>> {
    at::NoGradGuard no_grad;
    auto fill_from_grad = [&](size_t k) {
      const at::Tensor& g = params_[k].second.grad();
      if (g.defined()) {
        views_[k].copy_(g);
      } else {
        views_[k].zero_();  // a tensor the loss did not reach: zero, as on a single process
      }
    };
    // The first pass completes on every rank with the same launches in the same order.
    for (size_t b = next_launch_; b < buckets_.size() && error_.ok(); ++b) {
      allocate_locked(b);
      for (size_t k : buckets_[b].members) {
        if (!arrived_[k]) fill_from_grad(k);
      }
      error_ = launch_locked(b);
      next_launch_ = b + 1;
    }
    // Then the late gradients of tensors whose hook fired again, in tensor order.
    std::vector<std::pair<size_t, at::Tensor>> late;
    std::vector<c10::intrusive_ptr<c10d::Work>> late_works;
    for (size_t k = 0; k < params_.size() && error_.ok(); ++k) {
      if (!late_[k]) continue;
      std::vector<at::Tensor> tensors{params_[k].second.grad().to(views_[k].scalar_type()).contiguous()};
      late.emplace_back(k, tensors[0]);
      if (!comm.backend) continue;
      auto started = comm.start(str_cat("gradient all-reduce (late gradients of \"", params_[k].first, "\")"),
                                [&] { return comm.backend->allreduce(tensors); });
      if (!started.ok()) {
        error_ = started.status();
        break;
      }
      late_works.push_back(*std::move(started));
    }
    for (size_t b = 0; b < buckets_.size() && error_.ok(); ++b) {
      if (works_[b]) error_ = comm.wait("gradient all-reduce", works_[b]);
    }
    for (size_t w = 0; w < late_works.size() && error_.ok(); ++w) {
      error_ = comm.wait("gradient all-reduce (late gradients)", late_works[w]);
    }
    if (error_.ok()) {
      for (auto& [k, sum] : late) views_[k].add_(sum);
    }
    // The sums now live in the returned views alone (and in .grad where autograd adopted a view):
    // the buckets are freed with them, so the next step's forward has their memory.
    for (auto& w : works_) w.reset();
    std::vector<at::Tensor> sums = views_;
    release_buffers_locked();
    if (!error_.ok()) return error_;
    return sums;
  });
}

}  // namespace temper
