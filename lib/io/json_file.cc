#include "io/json_file.hpp"

#include "util/strings.hpp"

#include "io/read_file.hpp"

namespace temper {
namespace {

const char* type_name(const nlohmann::json& value) { return value.type_name(); }

absl::Status wrong_type(std::string_view source, std::string_view field, std::string_view expected,
                        const nlohmann::json& value) {
  return absl::InvalidArgumentError(str_cat(source, ": field \"", field, "\" must be ", expected,
                                                 ", found ", type_name(value), " ", value.dump()));
}

// The field's value, or nullptr when absent or null.
const nlohmann::json* find_field(const nlohmann::json& obj, std::string_view field) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(std::string(field));
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::Status missing(std::string_view source, std::string_view field) {
  return absl::InvalidArgumentError(str_cat(source, ": required field \"", field, "\" is missing"));
}

}  // namespace

absl::StatusOr<nlohmann::json> parse_json(std::string_view text, std::string_view source) {
  try {
    return nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::parse_error& e) {
    return absl::InvalidArgumentError(str_cat(source, ": invalid JSON at byte ", e.byte, ": ", e.what()));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(str_cat(source, ": invalid JSON: ", e.what()));
  }
}

absl::StatusOr<nlohmann::json> read_json_file(const std::filesystem::path& path) {
  absl::StatusOr<std::string> text = read_file(path);
  if (!text.ok()) return text.status();
  return parse_json(*text, path.string());
}

absl::StatusOr<std::optional<int64_t>> json_optional_int(const nlohmann::json& obj, std::string_view field,
                                                         std::string_view source) {
  const nlohmann::json* value = find_field(obj, field);
  if (value == nullptr) return std::optional<int64_t>();
  if (value->is_number_integer()) return std::optional<int64_t>(value->get<int64_t>());
  // Some configs write integral values as 8.0.
  if (value->is_number_float()) {
    const double d = value->get<double>();
    if (d == static_cast<double>(static_cast<int64_t>(d))) return std::optional<int64_t>(static_cast<int64_t>(d));
  }
  return wrong_type(source, field, "an integer", *value);
}

absl::StatusOr<std::optional<double>> json_optional_number(const nlohmann::json& obj, std::string_view field,
                                                           std::string_view source) {
  const nlohmann::json* value = find_field(obj, field);
  if (value == nullptr) return std::optional<double>();
  if (value->is_number()) return std::optional<double>(value->get<double>());
  return wrong_type(source, field, "a number", *value);
}

absl::StatusOr<std::optional<bool>> json_optional_bool(const nlohmann::json& obj, std::string_view field,
                                                       std::string_view source) {
  const nlohmann::json* value = find_field(obj, field);
  if (value == nullptr) return std::optional<bool>();
  if (value->is_boolean()) return std::optional<bool>(value->get<bool>());
  return wrong_type(source, field, "true or false", *value);
}

absl::StatusOr<std::optional<std::string>> json_optional_string(const nlohmann::json& obj, std::string_view field,
                                                                std::string_view source) {
  const nlohmann::json* value = find_field(obj, field);
  if (value == nullptr) return std::optional<std::string>();
  if (value->is_string()) return std::optional<std::string>(value->get<std::string>());
  return wrong_type(source, field, "a string", *value);
}

absl::StatusOr<int64_t> json_int(const nlohmann::json& obj, std::string_view field, std::string_view source) {
  absl::StatusOr<std::optional<int64_t>> value = json_optional_int(obj, field, source);
  if (!value.ok()) return value.status();
  if (!value->has_value()) return missing(source, field);
  return **value;
}

absl::StatusOr<double> json_number(const nlohmann::json& obj, std::string_view field, std::string_view source) {
  absl::StatusOr<std::optional<double>> value = json_optional_number(obj, field, source);
  if (!value.ok()) return value.status();
  if (!value->has_value()) return missing(source, field);
  return **value;
}

absl::StatusOr<std::string> json_string(const nlohmann::json& obj, std::string_view field, std::string_view source) {
  absl::StatusOr<std::optional<std::string>> value = json_optional_string(obj, field, source);
  if (!value.ok()) return value.status();
  if (!value->has_value()) return missing(source, field);
  return **value;
}

}  // namespace temper
