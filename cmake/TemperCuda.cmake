# CUDA kernels (lib/kernels) are compiled whenever nvcc is present, also against a CPU-only
# libtorch, so that they cannot rot where no GPU runs them (CI). They are *used* only when
# libtorch itself has CUDA (TEMPER_WITH_CUDA).

set(TEMPER_HAVE_KERNELS OFF)
if(TEMPER_BUILD_KERNELS)
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      # Ampere and Hopper; the GPU build (tools/gpu/build.sh) asks for 90a explicitly.
      set(CMAKE_CUDA_ARCHITECTURES "80;90")
    endif()
    enable_language(CUDA)
    set(CMAKE_CUDA_STANDARD 17)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    set(TEMPER_HAVE_KERNELS ON)
  endif()
endif()

if(TEMPER_TORCH_HAS_CUDA AND NOT TEMPER_HAVE_KERNELS)
  message(FATAL_ERROR "libtorch has CUDA but nvcc was not found: temper's kernels cannot be built")
endif()
if(TEMPER_TORCH_HAS_CUDA)
  set(TEMPER_WITH_CUDA ON)
else()
  set(TEMPER_WITH_CUDA OFF)
endif()
message(STATUS "temper: kernels compiled: ${TEMPER_HAVE_KERNELS}, used: ${TEMPER_WITH_CUDA}")
