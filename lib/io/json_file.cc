#include "io/json_file.hpp"

#include <cmath>
#include <limits>

#include "util/strings.hpp"

#include "io/read_file.hpp"

namespace temper {
namespace {

constexpr size_t kPreviewChars = 100;
constexpr size_t kPreviewElements = 8;

template <typename Json>
std::string preview(const Json& value) {
  bool flat = !value.is_structured();
  if (value.is_structured() && value.size() <= kPreviewElements) {
    flat = true;
    for (const auto& element : value) flat = flat && !element.is_structured();
  }
  std::string text;
  if (flat) {
    // Replace invalid UTF-8 rather than throw: the value may come from any file.
    text = value.dump(-1, ' ', false, Json::error_handler_t::replace);
  } else {
    text = str_cat(value.is_array() ? "an array of " : "an object of ", value.size(),
                   value.is_array() ? " elements" : " fields");
  }
  if (text.size() > kPreviewChars) {
    text.resize(kPreviewChars);
    // Do not end inside a UTF-8 sequence.
    while (!text.empty() && (static_cast<unsigned char>(text.back()) & 0xC0) == 0x80) text.pop_back();
    if (!text.empty() && (static_cast<unsigned char>(text.back()) & 0x80) != 0) text.pop_back();
    text += "...";
  }
  return text;
}

absl::Status wrong_type(std::string_view source, std::string_view field, std::string_view expected,
                        const nlohmann::json& value) {
  return absl::InvalidArgumentError(str_cat(source, ": field \"", field, "\" must be ", expected,
                                                 ", found ", value.type_name(), " ", json_preview(value)));
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

std::string json_preview(const nlohmann::json& value) { return preview(value); }
std::string json_preview(const nlohmann::ordered_json& value) { return preview(value); }

absl::StatusOr<nlohmann::json> read_json_file(const std::filesystem::path& path) {
  absl::StatusOr<std::string> text = read_file(path);
  if (!text.ok()) return text.status();
  return parse_json(*text, path.string());
}

absl::StatusOr<std::optional<int64_t>> json_optional_int(const nlohmann::json& obj, std::string_view field,
                                                         std::string_view source) {
  const nlohmann::json* value = find_field(obj, field);
  if (value == nullptr) return std::optional<int64_t>();
  if (value->is_number_unsigned()) {
    // Above 2^63-1 an unsigned JSON integer has no int64 value.
    const uint64_t u = value->get<uint64_t>();
    if (u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::optional<int64_t>(static_cast<int64_t>(u));
    return wrong_type(source, field, "an integer below 2^63", *value);
  }
  if (value->is_number_integer()) return std::optional<int64_t>(value->get<int64_t>());
  // Some configs write integral values as 8.0. The range check comes first: converting a double
  // outside int64's range (1e300, or the infinity 1e400 parses to) is undefined behaviour.
  if (value->is_number_float()) {
    const double d = value->get<double>();
    if (std::isfinite(d) && d >= -9.2e18 && d <= 9.2e18 && d == std::trunc(d)) {
      return std::optional<int64_t>(static_cast<int64_t>(d));
    }
  }
  return wrong_type(source, field, "an integer", *value);
}

absl::StatusOr<std::optional<double>> json_optional_number(const nlohmann::json& obj, std::string_view field,
                                                           std::string_view source) {
  const nlohmann::json* value = find_field(obj, field);
  if (value == nullptr) return std::optional<double>();
  // JSON has no infinity; nlohmann 3.11 refuses an overflowing literal (1e400) while parsing, and
  // this keeps any other route to a non-finite value (another parser, a value built in code) out.
  if (value->is_number() && std::isfinite(value->get<double>())) return std::optional<double>(value->get<double>());
  return wrong_type(source, field, "a finite number", *value);
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
