// The NCCL process group (CUDA tensors). Compiled with USE_C10D_NCCL where libtorch has CUDA and
// nccl.h was found (PyTorch's wheels: the nvidia-nccl package); otherwise a stub that says so.
#include <cstdlib>

#include "dist/communicator_impl.hpp"
#include "util/strings.hpp"

#if defined(TEMPER_HAVE_NCCL)
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace temper {

StatusOr<c10::intrusive_ptr<compat::C10dGroup>> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>& store,
                                                             const DistributedEnvironment& env, at::Device device,
                                                             std::chrono::milliseconds timeout) {
#if defined(TEMPER_HAVE_NCCL)
  try {
    // NCCL's default on a timed-out or failed collective is to tear the process down from a
    // watchdog thread. A library in a host process must answer with a status instead: blocking
    // wait makes Work::wait() throw after the timeout, and error handling 2 cleans the
    // communicator up without killing the process. A user's own settings win (overwrite = 0).
    ::setenv("TORCH_NCCL_BLOCKING_WAIT", "1", 0);
    ::setenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", "2", 0);
    c10::cuda::set_device(static_cast<c10::DeviceIndex>(device.index() < 0 ? 0 : device.index()));
    auto options = c10d::ProcessGroupNCCL::Options::create();
    options->timeout = timeout;
    return c10::intrusive_ptr<compat::C10dGroup>(
        c10::make_intrusive<c10d::ProcessGroupNCCL>(store, env.rank, env.world_size, options));
  } catch (const std::exception& e) {
    return c10d_failure_status("creating the NCCL process group failed: ", e,
                                 " (every rank must start within the timeout)");
  }
#else
  (void)store;
  (void)env;
  (void)device;
  (void)timeout;
  return absl::UnimplementedError(
      "this temper was built without NCCL (a CUDA libtorch and nccl.h are needed at build time)");
#endif
}

bool nccl_backend_compiled() {
#if defined(TEMPER_HAVE_NCCL)
  return true;
#else
  return false;
#endif
}

}  // namespace temper
