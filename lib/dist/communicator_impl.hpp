// The c10d objects behind a Communicator, and the two backend factories (gloo_backend.cc,
// nccl_backend.cc), each compiled only where its headers exist: Gloo's come with Debian's
// libgloo-dev (the CPU world), NCCL's with a CUDA libtorch and nccl.h (the GPU world).
#pragma once

#include <chrono>
#include <functional>
#include <string>

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include "ops/compat.hpp"
#include "temper/distributed.hpp"

namespace temper {

struct Communicator::Impl {
  DistributedEnvironment env;
  DistributedOptions options;
  at::Device device = at::kCPU;
  std::string backend_name = "none";
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<compat::C10dGroup> backend;  // null in a world of one
  // Set by the first failed collective: c10d's state after a failure is undefined (a peer may be
  // gone), so every later call answers with the first failure instead of hanging.
  Status failure;

  // Starts a collective; `op` calls the backend. Exceptions become statuses naming `what`.
  StatusOr<c10::intrusive_ptr<c10d::Work>> start(const std::string& what,
                                                 const std::function<c10::intrusive_ptr<c10d::Work>()>& op);
  // Waits for a started collective (for NCCL: the current stream waits, or the host under
  // blocking wait, which temper turns on to get timeouts as errors).
  Status wait(const std::string& what, const c10::intrusive_ptr<c10d::Work>& work);
  Status run(const std::string& what, const std::function<c10::intrusive_ptr<c10d::Work>()>& op);
  // The status for an exception thrown by c10d while doing `what`; remembered as the failure.
  Status fail(const std::string& what, const std::exception& e);
};

// A c10d exception as a status: DEADLINE_EXCEEDED when it says it timed out, else UNAVAILABLE;
// the message is `context` + the exception's own (without libtorch's C++ backtrace) + `hint`.
Status c10d_failure_status(const std::string& context, const std::exception& e, const std::string& hint = "");

bool gloo_backend_compiled();
bool nccl_backend_compiled();

StatusOr<c10::intrusive_ptr<compat::C10dGroup>> make_gloo_backend(const c10::intrusive_ptr<c10d::Store>& store,
                                                             const DistributedEnvironment& env,
                                                             std::chrono::milliseconds timeout);
StatusOr<c10::intrusive_ptr<compat::C10dGroup>> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>& store,
                                                             const DistributedEnvironment& env, at::Device device,
                                                             std::chrono::milliseconds timeout);

}  // namespace temper
