#include <sys/stat.h>

#include <string>

#include <nlohmann/json.hpp>

#include "io/atomic_directory.hpp"
#include "io/atomic_file.hpp"
#include "io/checkpoint.hpp"
#include "io/read_file.hpp"
#include "lora/lora_adapter_impl.hpp"
#include "model/model_impl.hpp"
#include "temper/export.hpp"
#include "util/status_macros.hpp"
#include "util/strings.hpp"
#include "util/torch_errors.hpp"

namespace temper {
namespace {

// transformers' default max_shard_size ("5GB", decimal).
constexpr uint64_t kMaxShardBytes = 5'000'000'000ULL;

// Files of a Hugging Face model directory that describe tokenization and generation, copied
// as they are. The weights and config.json are written, not copied.
constexpr const char* kCarriedFiles[] = {
    "tokenizer.model",    "tokenizer.json",     "tokenizer_config.json", "special_tokens_map.json",
    "added_tokens.json",  "vocab.json",         "merges.txt",            "chat_template.jinja",
    "chat_template.json", "generation_config.json",
};

bool is_file(const std::filesystem::path& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

const char* dtype_name(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return "float32";
    case at::kBFloat16: return "bfloat16";
    case at::kHalf: return "float16";
    default: return nullptr;
  }
}

// The model's config.json with its dtype field(s) naming `dtype`: transformers 5 writes "dtype",
// earlier versions "torch_dtype"; both are kept where present.
absl::StatusOr<std::string> exported_config(const Model::Impl& model, at::ScalarType dtype) {
  if (model.config_json.empty()) {
    return absl::FailedPreconditionError(
        "export: this model has no config.json to write (its configuration cannot be expressed as a Hugging Face "
        "config)");
  }
  nlohmann::ordered_json config;
  try {
    config = nlohmann::ordered_json::parse(model.config_json);
  } catch (const std::exception& e) {
    return absl::InternalError(str_cat("export: the model's config.json no longer parses: ", e.what()));
  }
  bool named = false;
  for (const char* key : {"dtype", "torch_dtype"}) {
    if (config.contains(key)) {
      config[key] = dtype_name(dtype);
      named = true;
    }
  }
  if (!named) config["torch_dtype"] = dtype_name(dtype);
  return config.dump(2) + "\n";
}

}  // namespace

Status export_merged_model(const Model& model, const LoraAdapter* adapter, const std::filesystem::path& dir,
                           at::ScalarType dtype) {
  if (dtype_name(dtype) == nullptr) {
    return absl::InvalidArgumentError(
        str_cat("export: dtype must be float32, bfloat16 or float16, not ", c10::toString(dtype)));
  }
  const Model::Impl& mi = model.impl();
  const LoraAdapter::Impl* lora = adapter != nullptr ? &adapter->impl() : nullptr;
  if (lora != nullptr && (lora->model != &mi || lora->removed)) {
    return absl::InvalidArgumentError(
        "export: the adapter is not installed on this model (created on another model, or removed)");
  }
  TEMPER_ASSIGN_OR_RETURN(std::string config_json, exported_config(mi, dtype));

  // One tensor at a time: fold, cast, move to the CPU, so that the peak is one export copy of
  // the weights plus one fp32 temporary.
  TEMPER_ASSIGN_OR_RETURN(NamedTensors tensors, guarded("export: preparing the weights", [&]() -> StatusOr<NamedTensors> {
                            NamedTensors out;
                            const_cast<Model&>(model).impl().for_each_dense_parameter(
                                [&](const ParamSpec& spec, const at::Tensor& tensor) {
                                  const at::Tensor folded = lora != nullptr ? lora->folded(spec.name, tensor) : tensor;
                                  out.emplace_back(spec.name, folded.detach().to(at::kCPU, dtype).contiguous());
                                });
                            return out;
                          }));

  return write_directory_atomic(
      dir,
      [&](const std::filesystem::path& tmp) -> absl::Status {
        TEMPER_RETURN_IF_ERROR(write_checkpoint(tmp, tensors, kMaxShardBytes));
        TEMPER_RETURN_IF_ERROR(write_file_atomic(tmp / "config.json", config_json));
        if (mi.source_dir.empty()) return absl::OkStatus();
        for (const char* name : kCarriedFiles) {
          const std::filesystem::path from = mi.source_dir / name;
          if (!is_file(from)) continue;
          TEMPER_ASSIGN_OR_RETURN(std::string bytes, read_file(from));
          TEMPER_RETURN_IF_ERROR(write_file_atomic(tmp / name, bytes));
        }
        return absl::OkStatus();
      },
      [](const std::filesystem::path& existing) -> absl::Status {
        if (is_file(existing / "config.json")) return absl::OkStatus();
        return absl::FailedPreconditionError(str_cat(existing.string(), " exists and is not a model directory (no "
                                                     "config.json); refusing to replace it; choose a new or empty "
                                                     "directory"));
      });
}

}  // namespace temper
