#include "quant/bnb_checkpoint.hpp"

#include "absl/strings/match.h"
#include "io/json_file.hpp"
#include "util/strings.hpp"

namespace temper {
namespace {

const char* dtype_name(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return "float32";
    case at::kBFloat16: return "bfloat16";
    case at::kHalf: return "float16";
    default: return nullptr;
  }
}

}  // namespace

absl::StatusOr<std::optional<BnbQuantizationConfig>> parse_bnb_quantization_config(std::string_view config_json,
                                                                                   std::string_view source) {
  absl::StatusOr<nlohmann::json> parsed = parse_json(config_json, source);
  if (!parsed.ok()) return parsed.status();
  const nlohmann::json& config = *parsed;
  if (!config.is_object()) return std::nullopt;  // parse_model_config reports that
  auto it = config.find("quantization_config");
  if (it == config.end() || it->is_null()) return std::nullopt;
  const std::string where = str_cat(source, ": quantization_config");
  if (!it->is_object()) return absl::InvalidArgumentError(str_cat(where, " must be an object"));
  const nlohmann::json& q = *it;
  const std::string method = q.value("quant_method", std::string());
  if (method != "bitsandbytes") {
    return absl::UnimplementedError(str_cat(where, ": quant_method \"", method,
                                            "\" is not supported (bitsandbytes 4-bit NF4 only)"));
  }
  auto flag = [&](const char* key) -> absl::StatusOr<bool> {
    auto f = q.find(key);
    if (f == q.end() || f->is_null()) return false;
    if (!f->is_boolean()) return absl::InvalidArgumentError(str_cat(where, ": \"", key, "\" must be true or false"));
    return f->get<bool>();
  };
  absl::StatusOr<bool> four_bit = flag("load_in_4bit");
  if (!four_bit.ok()) return four_bit.status();
  absl::StatusOr<bool> eight_bit = flag("load_in_8bit");
  if (!eight_bit.ok()) return eight_bit.status();
  if (*eight_bit || !*four_bit) {
    return absl::UnimplementedError(str_cat(where, ": only load_in_4bit checkpoints are supported (8-bit is not)"));
  }
  const std::string type = q.value("bnb_4bit_quant_type", std::string("fp4"));  // bitsandbytes' default is fp4
  if (type != "nf4") {
    return absl::UnimplementedError(str_cat(where, ": bnb_4bit_quant_type \"", type, "\" is not supported (nf4 only)"));
  }
  BnbQuantizationConfig out;
  absl::StatusOr<bool> dq = flag("bnb_4bit_use_double_quant");
  if (!dq.ok()) return dq.status();
  out.double_quant = *dq;
  auto compute = q.find("bnb_4bit_compute_dtype");
  if (compute != q.end() && !compute->is_null()) {
    const std::string name = compute->is_string() ? compute->get<std::string>() : std::string();
    if (name == "float32") {
      out.compute_dtype = at::kFloat;
    } else if (name == "bfloat16") {
      out.compute_dtype = at::kBFloat16;
    } else if (name == "float16") {
      out.compute_dtype = at::kHalf;
    } else {
      return absl::InvalidArgumentError(str_cat(where, ": bnb_4bit_compute_dtype ", json_preview(*compute),
                                                " is not float32, bfloat16 or float16"));
    }
  }
  return std::optional<BnbQuantizationConfig>(out);
}

nlohmann::ordered_json bnb_quantization_config(const Nf4Options& options, at::ScalarType compute_dtype) {
  const char* compute = dtype_name(compute_dtype);
  return nlohmann::ordered_json{{"_load_in_4bit", true},
                                {"_load_in_8bit", false},
                                {"bnb_4bit_compute_dtype", compute != nullptr ? compute : "float32"},
                                {"bnb_4bit_quant_storage", "uint8"},
                                {"bnb_4bit_quant_type", "nf4"},
                                {"bnb_4bit_use_double_quant", options.double_quant},
                                {"llm_int8_enable_fp32_cpu_offload", false},
                                {"llm_int8_has_fp16_weight", false},
                                {"llm_int8_skip_modules", nullptr},
                                {"llm_int8_threshold", 6.0},
                                {"load_in_4bit", true},
                                {"load_in_8bit", false},
                                {"quant_method", "bitsandbytes"}};
}

std::string bnb_quant_state_name(const std::string& weight_name) {
  return weight_name + ".quant_state.bitsandbytes__nf4";
}

bool is_bnb_quant_state_tensor(const std::string& name) {
  for (const char* suffix : {".weight.absmax", ".weight.quant_map", ".weight.nested_absmax", ".weight.nested_quant_map",
                             ".weight.quant_state.bitsandbytes__nf4", ".weight.quant_state.bitsandbytes__fp4"}) {
    if (absl::EndsWith(name, suffix)) return true;
  }
  return false;
}

}  // namespace temper
