#include "util/torch_errors.hpp"

#include <new>
#include <string>

#include "util/strings.hpp"
#include <c10/util/Exception.h>

namespace temper {
namespace {

// c10::Error's what() carries a C++ backtrace in debug builds; the first line is the message.
std::string first_lines(std::string_view text, int max_lines) {
  size_t end = 0;
  for (int i = 0; i < max_lines && end != std::string_view::npos; ++i) {
    end = text.find('\n', end == 0 ? 0 : end + 1);
  }
  return std::string(text.substr(0, end));
}

// libtorch's CPU allocator reports a failed allocation as a plain c10::Error (only the CUDA
// caching allocator throws OutOfMemoryError), with one of these messages (c10/core/impl/alloc_cpu.cpp,
// 1.13 and 2.x).
bool is_cpu_allocation_failure(const c10::Error& e) {
  const std::string& msg = e.msg();
  return msg.find("DefaultCPUAllocator: can't allocate memory") != std::string::npos ||
         msg.find("DefaultCPUAllocator: not enough memory") != std::string::npos;
}

// Device memory that runs out outside the caching allocator (which throws OutOfMemoryError):
// cuBLAS/cuDNN creating a handle or workspace, or a raw CUDA call checked by C10_CUDA_CHECK.
// Their c10::Error messages name the library's status (1.13 and 2.x alike).
bool is_device_allocation_failure(const c10::Error& e) {
  const std::string& msg = e.msg();
  for (const char* needle : {"CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED", "CUDA error: out of memory",
                             "CUSOLVER_STATUS_ALLOC_FAILED"}) {
    if (msg.find(needle) != std::string::npos) return true;
  }
  return false;
}

}  // namespace

absl::Status status_from_exception(std::string_view context, const std::exception& e) {
  const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
  if (dynamic_cast<const c10::OutOfMemoryError*>(&e) != nullptr ||
      dynamic_cast<const std::bad_alloc*>(&e) != nullptr ||
      (c10_error != nullptr && (is_cpu_allocation_failure(*c10_error) || is_device_allocation_failure(*c10_error)))) {
    return absl::ResourceExhaustedError(
        str_cat(context, ": out of memory (", first_lines(e.what(), 1),
                     "); try a smaller batch or sequence length"));
  }
  if (c10_error != nullptr) {
    return absl::InternalError(
        str_cat(context, ": libtorch error: ", first_lines(c10_error->msg(), 3)));
  }
  return absl::InternalError(str_cat(context, ": ", first_lines(e.what(), 3)));
}

absl::Status status_from_unknown_exception(std::string_view context) {
  return absl::InternalError(str_cat(context, ": unknown exception"));
}

}  // namespace temper
