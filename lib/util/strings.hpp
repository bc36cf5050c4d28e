// Message building. Debian's Abseil has its own absl::string_view (not std::string_view), so
// absl::StrCat does not take std::string_view; fmt takes everything, so messages use fmt.
#pragma once

#include <iterator>
#include <string>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace temper {

// Concatenates the fmt rendering of each argument.
template <typename... Args>
std::string str_cat(const Args&... args) {
  fmt::memory_buffer buffer;
  (fmt::format_to(std::back_inserter(buffer), "{}", args), ...);
  return fmt::to_string(buffer);
}

}  // namespace temper
