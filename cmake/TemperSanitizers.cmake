# Sanitizer and fuzzing builds (docs/reliability.md).
#
# TEMPER_SANITIZE instruments temper's own C++ (library, tests, helpers) with AddressSanitizer and
# UndefinedBehaviorSanitizer; libtorch and the other Debian libraries stay uninstrumented, which
# ASan allows (their allocations go through the intercepted malloc, so overflows of our buffers
# are still caught). Every UB report aborts: a sanitizer finding fails the test that met it.
#
# TEMPER_FUZZ adds libFuzzer's coverage instrumentation (-fsanitize=fuzzer-no-link) to the same
# objects and builds the targets in tests/fuzz. It needs clang and implies TEMPER_SANITIZE, so one
# instrumented build serves both the sanitized test suite and the fuzzers (scripts/sanitize.sh).
#
# The flags are set for the whole project (CXX only: nvcc would not take them) because every
# target must agree on the ASan ABI.

option(TEMPER_SANITIZE "Build temper's own code with ASan + UBSan" OFF)
option(TEMPER_FUZZ "Build the libFuzzer targets in tests/fuzz (clang; implies TEMPER_SANITIZE)" OFF)

if(TEMPER_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "TEMPER_FUZZ needs clang (libFuzzer): configure with -DCMAKE_CXX_COMPILER=clang++")
  endif()
  set(TEMPER_SANITIZE ON CACHE BOOL "Build temper's own code with ASan + UBSan" FORCE)
endif()

if(TEMPER_SANITIZE)
  set(temper_sanitize_flags
    -fsanitize=address,undefined
    # Abort on the first UB report instead of printing and going on, so tests and fuzzers fail.
    -fno-sanitize-recover=all
    -fno-omit-frame-pointer
    -g)
  if(TEMPER_FUZZ)
    list(APPEND temper_sanitize_flags -fsanitize=fuzzer-no-link)
  endif()
  add_compile_options("$<$<COMPILE_LANGUAGE:CXX>:${temper_sanitize_flags}>")
  add_link_options(-fsanitize=address,undefined)
  message(STATUS "temper: ASan + UBSan on temper's code; fuzz targets: ${TEMPER_FUZZ}")
endif()
