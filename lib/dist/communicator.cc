#include "temper/distributed.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <optional>
#include <limits>

#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <c10/util/Exception.h>

#include "dist/communicator_impl.hpp"
#include "util/status_macros.hpp"
#include "util/strings.hpp"

namespace temper {
namespace {

// An integer environment variable; nullopt when unset or empty.
StatusOr<std::optional<long long>> env_int(const char* name, long long lo, long long hi) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return std::optional<long long>();
  char* end = nullptr;
  errno = 0;
  const long long value = std::strtoll(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || value < lo || value > hi) {
    return absl::InvalidArgumentError(str_cat("distributed environment: ", name, "=\"", text,
                                              "\" is not an integer in [", lo, ", ", hi, "]"));
  }
  return std::optional<long long>(value);
}

// The message of a c10d exception without the C++ backtrace libtorch appends to what().
std::string message_of(const std::exception& e) {
  const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
  const std::string text = c10_error != nullptr ? std::string(c10_error->what_without_backtrace()) : std::string(e.what());
  return text.substr(0, std::min(text.size(), size_t{600}));
}

bool is_timeout(const std::string& message) {
  for (const char* needle : {"Timed out", "timed out", "timeout", "Timeout"}) {
    if (message.find(needle) != std::string::npos) return true;
  }
  return false;
}

}  // namespace

StatusOr<DistributedEnvironment> DistributedEnvironment::from_environment() {
  DistributedEnvironment env;
  constexpr long long kMaxRanks = 1 << 20;
  TEMPER_ASSIGN_OR_RETURN(auto world, env_int("WORLD_SIZE", 1, kMaxRanks));
  TEMPER_ASSIGN_OR_RETURN(auto rank, env_int("RANK", 0, kMaxRanks));
  TEMPER_ASSIGN_OR_RETURN(auto local_rank, env_int("LOCAL_RANK", 0, kMaxRanks));
  TEMPER_ASSIGN_OR_RETURN(auto port, env_int("MASTER_PORT", 1, 65535));
  env.world_size = static_cast<int>(world.value_or(1));
  if (env.world_size > 1 && (!rank.has_value() || !port.has_value())) {
    return absl::InvalidArgumentError(str_cat("distributed environment: WORLD_SIZE=", env.world_size,
                                              " needs RANK and MASTER_PORT as well (as torchrun or tools/temper-launch set them)"));
  }
  env.rank = static_cast<int>(rank.value_or(0));
  if (env.rank >= env.world_size) {
    return absl::InvalidArgumentError(
        str_cat("distributed environment: RANK=", env.rank, " is not below WORLD_SIZE=", env.world_size));
  }
  env.local_rank = static_cast<int>(local_rank.value_or(env.rank));
  if (port.has_value()) env.master_port = static_cast<int>(*port);
  if (const char* addr = std::getenv("MASTER_ADDR"); addr != nullptr && *addr != '\0') env.master_addr = addr;
  return env;
}

bool Communicator::available(DistributedBackend backend) {
  switch (backend) {
    case DistributedBackend::kGloo:
      return gloo_backend_compiled();
    case DistributedBackend::kNccl:
      return nccl_backend_compiled();
    case DistributedBackend::kAuto:
      break;
  }
  return gloo_backend_compiled() || nccl_backend_compiled();
}

Status c10d_failure_status(const std::string& context, const std::exception& e, const std::string& hint) {
  const std::string message = message_of(e);
  return is_timeout(message) ? Status(absl::DeadlineExceededError(str_cat(context, message, hint)))
                             : Status(absl::UnavailableError(str_cat(context, message, hint)));
}

Status Communicator::Impl::fail(const std::string& what, const std::exception& e) {
  const std::string context = str_cat(what, " on rank ", env.rank, " of ", env.world_size, " (", backend_name, "): ");
  const std::string hint = "; another rank may have failed or been killed, or be unreachable. The run cannot continue; "
                           "resume from the last checkpoint";
  failure = c10d_failure_status(context, e, hint);
  return failure;
}

StatusOr<c10::intrusive_ptr<c10d::Work>> Communicator::Impl::start(
    const std::string& what, const std::function<c10::intrusive_ptr<c10d::Work>()>& op) {
  if (!failure.ok()) return failure;
  try {
    return op();
  } catch (const std::exception& e) {
    return fail(what, e);
  }
}

Status Communicator::Impl::wait(const std::string& what, const c10::intrusive_ptr<c10d::Work>& work) {
  if (!failure.ok()) return failure;
  try {
    work->wait(options.timeout);
    return absl::OkStatus();
  } catch (const std::exception& e) {
    return fail(what, e);
  }
}

Status Communicator::Impl::run(const std::string& what, const std::function<c10::intrusive_ptr<c10d::Work>()>& op) {
  TEMPER_ASSIGN_OR_RETURN(c10::intrusive_ptr<c10d::Work> work, start(what, op));
  return wait(what, work);
}

Communicator::Communicator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Communicator::~Communicator() = default;

StatusOr<std::shared_ptr<Communicator>> Communicator::from_environment(const DistributedOptions& options,
                                                                       at::Device device) {
  TEMPER_ASSIGN_OR_RETURN(DistributedEnvironment env, DistributedEnvironment::from_environment());
  return create(env, options, device);
}

StatusOr<std::shared_ptr<Communicator>> Communicator::create(const DistributedEnvironment& env,
                                                             const DistributedOptions& options, at::Device device) {
  if (env.world_size < 1 || env.rank < 0 || env.rank >= env.world_size || env.local_rank < 0) {
    return absl::InvalidArgumentError(str_cat("Communicator: rank ", env.rank, " / local rank ", env.local_rank,
                                              " do not fit a world of ", env.world_size));
  }
  if (env.master_port < 1 || env.master_port > 65535) {
    return absl::InvalidArgumentError(str_cat("Communicator: master port ", env.master_port, " is outside 1..65535"));
  }
  if (options.timeout.count() <= 0) return absl::InvalidArgumentError("Communicator: timeout must be positive");
  DistributedBackend backend = options.backend;
  if (backend == DistributedBackend::kAuto) backend = device.is_cuda() ? DistributedBackend::kNccl : DistributedBackend::kGloo;
  if (backend == DistributedBackend::kNccl && !device.is_cuda()) {
    return absl::InvalidArgumentError(str_cat("Communicator: NCCL needs a CUDA device, got ", device.str()));
  }
  if (backend == DistributedBackend::kGloo && !device.is_cpu()) {
    return absl::InvalidArgumentError(str_cat("Communicator: temper uses Gloo for CPU tensors only, got ", device.str(),
                                              " (use NCCL for CUDA)"));
  }
  auto impl = std::make_unique<Impl>();
  impl->env = env;
  impl->options = options;
  impl->device = device;
  if (env.world_size == 1) return std::shared_ptr<Communicator>(new Communicator(std::move(impl)));
  if (!available(backend)) {
    // Before any rendezvous, so the other ranks are not left waiting: the stub's UNIMPLEMENTED
    // says what the build lacks.
    return (backend == DistributedBackend::kNccl ? make_nccl_backend({}, env, device, options.timeout)
                                                 : make_gloo_backend({}, env, options.timeout))
        .status();
  }

  impl->backend_name = backend == DistributedBackend::kNccl ? "nccl" : "gloo";
  const std::string where = str_cat("rendezvous of rank ", env.rank, " of ", env.world_size, " at ", env.master_addr,
                                    ":", env.master_port);
  try {
    c10d::TCPStoreOptions store_options;
    store_options.port = static_cast<uint16_t>(env.master_port);
    store_options.isServer = env.rank == 0;
    store_options.numWorkers = static_cast<size_t>(env.world_size);
    store_options.waitWorkers = true;
    store_options.timeout = options.timeout;
    impl->store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, store_options);
  } catch (const std::exception& e) {
    return c10d_failure_status(str_cat(where, " failed: "), e,
                                 env.rank == 0 ? " (is the port free? do all ranks start within the timeout?)"
                                               : " (is rank 0 running and reachable at that address?)");
  }
  StatusOr<c10::intrusive_ptr<compat::C10dGroup>> made =
      backend == DistributedBackend::kNccl ? make_nccl_backend(impl->store, env, device, options.timeout)
                                           : make_gloo_backend(impl->store, env, options.timeout);
  if (!made.ok()) return Status(made.status().code(), str_cat(where, ": ", std::string(made.status().message())));
  impl->backend = *std::move(made);
  auto communicator = std::shared_ptr<Communicator>(new Communicator(std::move(impl)));
  // Every rank arrives before anyone trains: a mismatched world fails here, not mid-step.
  TEMPER_RETURN_IF_ERROR(communicator->barrier());
  return communicator;
}

int Communicator::rank() const { return impl_->env.rank; }
int Communicator::world_size() const { return impl_->env.world_size; }
int Communicator::local_rank() const { return impl_->env.local_rank; }
at::Device Communicator::device() const { return impl_->device; }
std::string Communicator::backend_name() const { return impl_->backend_name; }

Status Communicator::all_reduce_sum(at::Tensor& tensor) {
  if (!impl_->backend) return absl::OkStatus();
  if (!tensor.is_contiguous() || tensor.device() != impl_->device) {
    return absl::InvalidArgumentError(str_cat("all_reduce_sum: the tensor must be contiguous on ", impl_->device.str()));
  }
  std::vector<at::Tensor> tensors{tensor};
  return impl_->run("all-reduce", [&] { return impl_->backend->allreduce(tensors); });
}

Status Communicator::broadcast(at::Tensor& tensor, int root) {
  if (root < 0 || root >= world_size()) {
    return absl::InvalidArgumentError(str_cat("broadcast: root ", root, " is not a rank of a world of ", world_size()));
  }
  if (!impl_->backend) return absl::OkStatus();
  if (!tensor.is_contiguous() || tensor.device() != impl_->device) {
    return absl::InvalidArgumentError(str_cat("broadcast: the tensor must be contiguous on ", impl_->device.str()));
  }
  std::vector<at::Tensor> tensors{tensor};
  c10d::BroadcastOptions opts;
  opts.rootRank = root;
  return impl_->run(str_cat("broadcast from rank ", root), [&] { return impl_->backend->broadcast(tensors, opts); });
}

Status Communicator::barrier() {
  if (!impl_->backend) return absl::OkStatus();
  // A barrier is an all-reduce of one number: c10d's NCCL barrier guesses the device from the
  // rank, and this one uses the communicator's own.
  at::Tensor one = at::ones({1}, at::TensorOptions().dtype(at::kFloat).device(impl_->device));
  std::vector<at::Tensor> tensors{one};
  return impl_->run("barrier", [&] { return impl_->backend->allreduce(tensors); });
}

}  // namespace temper
