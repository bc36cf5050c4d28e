#!/usr/bin/env bash
# On the GPU machine (Ubuntu, PyTorch 2.11 + CUDA 13, no network): unpack the carried Debian
# packages into a private prefix (never into /), configure against PyTorch's libtorch and build
# into build-gpu. Source it (`. tools/gpu/build.sh`) to keep LD_LIBRARY_PATH/PATH for running.
#
# sentencepiece: PyTorch's libtorch does not export protobuf, so Debian's shared
# libsentencepiece (which embeds its own) runs beside it; the CPU build uses the static build
# from scripts/deps.sh instead (docs/architecture.md).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
prefix="$root/.deps/root"
if [ ! -d "$prefix/usr/include/absl" ]; then
  for f in "$root"/.deps/debs/*.deb; do dpkg -x "$f" "$prefix"; done
fi
export LD_LIBRARY_PATH="$prefix/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
export PATH="$prefix/usr/bin:$PATH"
torch_prefix=$(python3 -c "import torch; print(torch.utils.cmake_prefix_path)")
# nccl.h for c10d's ProcessGroupNCCL comes with the nvidia-nccl wheel PyTorch depends on (the
# wheel ships no Gloo headers, so GPU builds have NCCL data parallelism only).
nccl_include=$(python3 -c "import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], 'include'))" 2>/dev/null || true)
cmake -S "$root" -B "$root/build-gpu" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$torch_prefix;$prefix/usr" -DCMAKE_CUDA_ARCHITECTURES=90a \
  -DTEMPER_SPM_ENCODE="$prefix/usr/bin/spm_encode" ${nccl_include:+-DTEMPER_NCCL_INCLUDE_DIR="$nccl_include"} >/dev/null
cmake --build "$root/build-gpu" -j "$(nproc)" ${TEMPER_GPU_TARGETS:+--target $TEMPER_GPU_TARGETS}
