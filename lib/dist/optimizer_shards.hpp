// ZeRO-1 style sharding of the optimizer state: each rank owns the fp32 masters and AdamW
// moments of a subset of the trained tensors, updates only those, and sends the new values to
// the others. The gradients stay whole on every rank (the all-reduce of GradientReducer), so
// the global gradient norm needs no further communication.
//
// Ownership is by whole tensor, balanced greedily by size (largest first to the least loaded
// rank): no tensor is split, so the optimizer code is the same as on one process, and for
// decoders with hundreds of similar tensors the imbalance is a few percent.
#pragma once

#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "temper/distributed.hpp"

namespace temper {

// owner[i] for tensors of numels[i], deterministic (ties: lower index, lower rank).
std::vector<int> partition_by_size(const std::vector<int64_t>& numels, int world_size);

// Every rank receives the values of each tensor from its owner: per owner and dtype, one
// broadcast of the owner's tensors packed into one buffer. `params` hold the same shapes on
// every rank; owner[i] updated params[i].
Status broadcast_from_owners(Communicator& communicator, const std::vector<at::Tensor>& params,
                             const std::vector<int>& owner);

// `tensor` from rank `owner` to every rank (others pass an empty tensor and get a new one of
// `shape`, fp32, on the communicator's device): how rank 0 collects sharded state to save it.
StatusOr<at::Tensor> broadcast_tensor(Communicator& communicator, const at::Tensor& tensor, int owner,
                                      at::IntArrayRef shape);

}  // namespace temper
