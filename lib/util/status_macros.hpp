// Early-return helpers for absl::Status / absl::StatusOr (Debian's Abseil 20220623 does not ship
// public ones).
#pragma once

#include <utility>

#include <absl/status/status.h>
#include <absl/status/statusor.h>

#define TEMPER_STATUS_CONCAT_INNER(a, b) a##b
#define TEMPER_STATUS_CONCAT(a, b) TEMPER_STATUS_CONCAT_INNER(a, b)

// Returns the status from the enclosing function when `expr` is not OK.
#define TEMPER_RETURN_IF_ERROR(expr)              \
  do {                                            \
    ::absl::Status temper_status_ = (expr);       \
    if (!temper_status_.ok()) return temper_status_; \
  } while (false)

// `TEMPER_ASSIGN_OR_RETURN(auto x, f());` declares x from the value of a StatusOr, or returns its
// status from the enclosing function.
#define TEMPER_ASSIGN_OR_RETURN(lhs, expr) \
  TEMPER_ASSIGN_OR_RETURN_IMPL(TEMPER_STATUS_CONCAT(temper_statusor_, __LINE__), lhs, expr)

#define TEMPER_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return std::move(tmp).status();     \
  lhs = std::move(tmp).value()
