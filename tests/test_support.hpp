// Helpers shared by temper's tests.
#pragma once

#include <algorithm>

#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <absl/status/status.h>
#include <absl/status/statusor.h>
#include <catch2/catch.hpp>

#include "io/directory.hpp"

namespace temper::testing {

inline std::filesystem::path source_dir() { return TEMPER_SOURCE_DIR; }
inline std::filesystem::path fixtures_dir() { return source_dir() / "tests" / "fixtures"; }
inline std::filesystem::path bundled_model_dir() { return source_dir() / "assets" / "model"; }

inline std::string status_text(const absl::Status& status) { return std::string(status.ToString()); }
template <typename T>
std::string status_text(const absl::StatusOr<T>& value) {
  return value.ok() ? std::string("OK") : std::string(value.status().ToString());
}

// A fresh directory under the system temp dir, removed with everything in it at scope exit.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() / ("temper-test-" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { (void)remove_tree(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

inline double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kCPU, at::kDouble) - b.to(at::kCPU, at::kDouble)).abs().max().item<double>();
}

// ||got - want|| / ||want|| in fp64 on the CPU (any devices and float dtypes; a zero `want` counts
// as 1e-30, so the ratio stays finite).
inline double rel_err(const at::Tensor& got, const at::Tensor& want) {
  const at::Tensor w = want.detach().to(at::kCPU, at::kDouble);
  return (got.detach().to(at::kCPU, at::kDouble) - w).norm().item<double>() / std::max(w.norm().item<double>(), 1e-30);
}

inline bool has_cuda_device() { return at::hasCUDA(); }

}  // namespace temper::testing

// REQUIRE that a Status or StatusOr is OK, printing the status otherwise.
#define REQUIRE_OK(expr)                                                    \
  do {                                                                      \
    const auto& temper_test_result_ = (expr);                               \
    INFO(::temper::testing::status_text(temper_test_result_));              \
    REQUIRE(temper_test_result_.ok());                                      \
  } while (false)

// Skips the rest of a [cuda] test case when no GPU is usable (Catch2 v2 has no SKIP).
#define SKIP_WITHOUT_CUDA()                                \
  do {                                                     \
    if (!::temper::testing::has_cuda_device()) {           \
      WARN("no CUDA device: [cuda] test skipped");         \
      return;                                              \
    }                                                      \
  } while (false)
