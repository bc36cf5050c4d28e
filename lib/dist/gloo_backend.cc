// The Gloo process group (CPU tensors). Compiled with USE_C10D_GLOO where Gloo's headers exist
// (Debian's libgloo-dev; Debian's libtorch carries ProcessGroupGloo itself). PyTorch's wheels ship
// no Gloo headers, so the GPU world builds the stub and uses NCCL.
#include <cstdlib>

#include "dist/communicator_impl.hpp"
#include "util/strings.hpp"

#if defined(TEMPER_HAVE_GLOO)
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif

namespace temper {

StatusOr<c10::intrusive_ptr<compat::C10dGroup>> make_gloo_backend(const c10::intrusive_ptr<c10d::Store>& store,
                                                             const DistributedEnvironment& env,
                                                             std::chrono::milliseconds timeout) {
#if defined(TEMPER_HAVE_GLOO)
  try {
    auto options = c10d::ProcessGroupGloo::Options::create(timeout);
    // The transport's interface: GLOO_SOCKET_IFNAME as torch.distributed reads it; a loopback
    // master means one node, where the loopback interface always works (a container's hostname
    // may not resolve); otherwise the address the hostname resolves to.
    const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
    if (ifname != nullptr && *ifname != '\0') {
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    } else if (env.master_addr == "127.0.0.1" || env.master_addr == "localhost") {
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    } else {
      options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    return c10::intrusive_ptr<compat::C10dGroup>(
        c10::make_intrusive<c10d::ProcessGroupGloo>(store, env.rank, env.world_size, options));
  } catch (const std::exception& e) {
    return c10d_failure_status("creating the Gloo process group failed: ", e,
                                 " (every rank must start within the timeout)");
  }
#else
  (void)store;
  (void)env;
  (void)timeout;
  return absl::UnimplementedError(
      "this temper was built without Gloo (its headers were not found at build time: install libgloo-dev); "
      "CPU data parallelism is unavailable, use NCCL on CUDA devices");
#endif
}

bool gloo_backend_compiled() {
#if defined(TEMPER_HAVE_GLOO)
  return true;
#else
  return false;
#endif
}

}  // namespace temper
