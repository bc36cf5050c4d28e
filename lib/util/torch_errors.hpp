// libtorch reports errors by throwing (c10::Error and friends). temper's public API never
// throws, so every entry point that calls into libtorch runs its body through guarded(): an
// exception becomes a status carrying the context, and an allocation failure becomes
// RESOURCE_EXHAUSTED so that callers can retry with a smaller batch.
#pragma once

#include <exception>
#include <string_view>
#include <type_traits>
#include <utility>

#include <absl/status/status.h>
#include <absl/status/statusor.h>

namespace temper {

// The status for an exception caught while doing `context`.
absl::Status status_from_exception(std::string_view context, const std::exception& e);
absl::Status status_from_unknown_exception(std::string_view context);

// Runs `fn` (returning absl::Status or absl::StatusOr<T>) and turns any exception into a status.
template <typename Fn>
auto guarded(std::string_view context, Fn&& fn) -> decltype(fn()) {
  try {
    return std::forward<Fn>(fn)();
  } catch (const std::exception& e) {
    return status_from_exception(context, e);
  } catch (...) {
    return status_from_unknown_exception(context);
  }
}

}  // namespace temper
