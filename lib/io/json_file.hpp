// JSON documents read with nlohmann::json, reported as statuses (the parser's exceptions never
// leave this file), plus typed field accessors whose errors name the source and the field.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include <absl/status/statusor.h>
#include <nlohmann/json.hpp>

namespace temper {

absl::StatusOr<nlohmann::json> parse_json(std::string_view text, std::string_view source);

// A short rendering of `value` for an error message: scalars and flat arrays or objects of a
// few scalars as JSON, anything larger as its type and size, at most about 100 characters.
// Messages must not dump a hostile value whole: nlohmann's dump() recurses once per nesting
// level (a 1,000,000-deep array overflows the stack) and a 100 MB string would make a 100 MB
// message.
std::string json_preview(const nlohmann::json& value);
// The same for ordered_json (PEFT configs keep their file order).
std::string json_preview(const nlohmann::ordered_json& value);
absl::StatusOr<nlohmann::json> read_json_file(const std::filesystem::path& path);

// Field readers for a JSON object `obj` read from `source`. The required forms fail with
// INVALID_ARGUMENT naming the field when it is absent or has the wrong type; the optional forms
// return nullopt when the field is absent or null and fail only on a wrong type.
absl::StatusOr<int64_t> json_int(const nlohmann::json& obj, std::string_view field, std::string_view source);
absl::StatusOr<double> json_number(const nlohmann::json& obj, std::string_view field, std::string_view source);
absl::StatusOr<std::string> json_string(const nlohmann::json& obj, std::string_view field, std::string_view source);
absl::StatusOr<std::optional<int64_t>> json_optional_int(const nlohmann::json& obj, std::string_view field,
                                                         std::string_view source);
absl::StatusOr<std::optional<double>> json_optional_number(const nlohmann::json& obj, std::string_view field,
                                                           std::string_view source);
absl::StatusOr<std::optional<bool>> json_optional_bool(const nlohmann::json& obj, std::string_view field,
                                                       std::string_view source);
absl::StatusOr<std::optional<std::string>> json_optional_string(const nlohmann::json& obj, std::string_view field,
                                                                std::string_view source);

}  // namespace temper
