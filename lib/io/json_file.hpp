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
