#include "dist/optimizer_shards.hpp"

#include <algorithm>
#include <map>
#include <numeric>

#include <ATen/core/grad_mode.h>

#include "util/status_macros.hpp"
#include "util/strings.hpp"
#include "util/torch_errors.hpp"

namespace temper {

std::vector<int> partition_by_size(const std::vector<int64_t>& numels, int world_size) {
  std::vector<size_t> order(numels.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return numels[a] > numels[b]; });
  std::vector<int64_t> load(static_cast<size_t>(std::max(world_size, 1)), 0);
  std::vector<int> owner(numels.size(), 0);
  for (size_t i : order) {
    const size_t r = static_cast<size_t>(std::min_element(load.begin(), load.end()) - load.begin());
    owner[i] = static_cast<int>(r);
    load[r] += numels[i];
  }
  return owner;
}

Status broadcast_from_owners(Communicator& communicator, const std::vector<at::Tensor>& params,
                             const std::vector<int>& owner) {
  return guarded("sending updated parameters from their owners", [&]() -> Status {
    at::NoGradGuard no_grad;
    for (int r = 0; r < communicator.world_size(); ++r) {
      // One buffer per dtype of rank r's tensors, in index order (the same on every rank).
      std::map<at::ScalarType, std::vector<size_t>> groups;
      for (size_t i = 0; i < params.size(); ++i) {
        if (owner[i] == r) groups[params[i].scalar_type()].push_back(i);
      }
      for (const auto& [dtype, members] : groups) {
        int64_t numel = 0;
        for (size_t i : members) numel += params[i].numel();
        at::Tensor buffer;
        if (communicator.rank() == r) {
          std::vector<at::Tensor> flat;
          for (size_t i : members) flat.push_back(params[i].reshape({-1}));
          buffer = at::cat(flat);
        } else {
          buffer = at::empty({numel}, at::TensorOptions().dtype(dtype).device(communicator.device()));
        }
        TEMPER_RETURN_IF_ERROR(communicator.broadcast(buffer, r));
        if (communicator.rank() == r) continue;
        int64_t offset = 0;
        for (size_t i : members) {
          params[i].copy_(buffer.narrow(0, offset, params[i].numel()).view(params[i].sizes()));
          offset += params[i].numel();
        }
      }
    }
    return absl::OkStatus();
  });
}

StatusOr<at::Tensor> broadcast_tensor(Communicator& communicator, const at::Tensor& tensor, int owner,
                                      at::IntArrayRef shape) {
  return guarded("collecting sharded optimizer state", [&]() -> StatusOr<at::Tensor> {
    at::Tensor buffer = communicator.rank() == owner
                            ? tensor.to(communicator.device(), at::kFloat).contiguous()
                            : at::empty(shape, at::TensorOptions().dtype(at::kFloat).device(communicator.device()));
    TEMPER_RETURN_IF_ERROR(communicator.broadcast(buffer, owner));
    return buffer;
  });
}

}  // namespace temper
