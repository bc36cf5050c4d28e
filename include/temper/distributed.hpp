// Data-parallel training across processes through libtorch's own distributed engine, c10d:
// a TCPStore rendezvous and a process group over NCCL (CUDA tensors) or Gloo (CPU tensors).
//
// One process per device, started by torchrun or tools/temper-launch, which set RANK,
// WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. Each process builds the same model and
// the same data source, creates a Communicator and gives it to the Trainer
// (TrainerOptions::communicator); the Trainer then gives each rank a disjoint slice of every
// global batch, all-reduces gradients in buckets during the backward pass, reduces the metrics,
// optionally shards the optimizer state (ZeRO-1) and writes checkpoints from rank 0.
// docs/distributed.md tells the whole story.
//
// Without those variables (or with WORLD_SIZE=1) from_environment() describes a single
// process, and a Trainer without a communicator runs exactly as before: no collective is made.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include <ATen/ATen.h>

#include "temper/api.hpp"
#include "temper/status.hpp"

namespace temper {

enum class DistributedBackend {
  kAuto,  // NCCL for a CUDA device, Gloo for the CPU
  kGloo,
  kNccl,
};

struct DistributedEnvironment {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;  // the rank within this node: which GPU this process drives
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;

  // Reads torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT).
  // None set: a single process (rank 0 of 1). INVALID_ARGUMENT for values that are not
  // integers, out of range (RANK >= WORLD_SIZE, a port outside 1..65535), or a partial set
  // (WORLD_SIZE > 1 without RANK or MASTER_PORT, say).
  static StatusOr<DistributedEnvironment> from_environment();
};

struct DistributedOptions {
  DistributedBackend backend = DistributedBackend::kAuto;
  // Bounds the rendezvous (every rank must arrive within it) and every collective: a rank that
  // died or hangs ends the others with DEADLINE_EXCEEDED or UNAVAILABLE instead of a hang.
  std::chrono::milliseconds timeout = std::chrono::minutes(10);
};

// A process group of world_size processes. Collectives are made by every rank in the same order;
// a failed one (a rank died, a timeout, a transport error) is UNAVAILABLE/DEADLINE_EXCEEDED with
// the rank, the operation and the backend's message, after which the communicator is unusable
// (the run ends; the last checkpoint stays intact).
class TEMPER_API Communicator {
 public:
  // Rendezvous at master_addr:master_port (rank 0 hosts the TCPStore) and builds the process
  // group for `device`: NCCL needs device = cuda:<local_rank>'s GPU (it is made current), Gloo
  // takes the CPU. A world of one makes no connection at all.
  static StatusOr<std::shared_ptr<Communicator>> create(const DistributedEnvironment& env,
                                                        const DistributedOptions& options, at::Device device);
  // create(DistributedEnvironment::from_environment(), options, device).
  static StatusOr<std::shared_ptr<Communicator>> from_environment(const DistributedOptions& options,
                                                                  at::Device device);

  // Whether this build carries the backend (Gloo needs libgloo-dev's headers at build time, NCCL
  // a CUDA libtorch and nccl.h); kAuto: either. Without it create() answers UNIMPLEMENTED.
  static bool available(DistributedBackend backend);

  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const;
  int world_size() const;
  int local_rank() const;
  at::Device device() const;
  std::string backend_name() const;  // "gloo", "nccl", or "none" for a world of one

  // In place, over every rank: sum. `tensor` is contiguous on device() (any float or int64 dtype).
  Status all_reduce_sum(at::Tensor& tensor);
  // In place: every rank receives root's `tensor` (same shape and dtype everywhere).
  Status broadcast(at::Tensor& tensor, int root);
  Status barrier();

  struct Impl;
  Impl& impl() { return *impl_; }

 private:
  explicit Communicator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace temper
