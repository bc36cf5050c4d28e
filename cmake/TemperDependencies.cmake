# Finds what temper builds against. Every dependency is a Debian 12 package on the CPU side;
# on the GPU machine the same packages are unpacked into a prefix (tools/gpu/build.sh) and
# libtorch comes from the PyTorch install.

find_package(Torch REQUIRED)
find_package(absl REQUIRED)
find_package(fmt REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(Threads REQUIRED)
find_package(SentencePiece REQUIRED)
find_package(Utf8proc REQUIRED)
find_package(Pcre2 REQUIRED)  # tokenizer.json regexes (lib/tokenizer/hf_regex.hpp)
find_package(Xxhash REQUIRED)

# The sentencepiece CLI encodes the tests' reference token ids in its own process.
find_program(TEMPER_SPM_ENCODE spm_encode)

# Torch's include folder (2.x) carries fmt v12 headers that shadow Debian's fmt 9, so the
# compiled libfmt would not match the headers in use: fmt is used header-only, everywhere.
set(TEMPER_FMT_TARGET fmt::fmt-header-only)

# A CUDA libtorch lists its CUDA libraries; Debian's CPU build does not.
if(TORCH_CUDA_LIBRARIES OR TARGET torch_cuda)
  set(TEMPER_TORCH_HAS_CUDA ON)
else()
  set(TEMPER_TORCH_HAS_CUDA OFF)
endif()
message(STATUS "temper: libtorch ${Torch_VERSION}, CUDA in libtorch: ${TEMPER_TORCH_HAS_CUDA}")
