#include "export/export_support.hpp"

#include <sys/stat.h>

#include "io/atomic_directory.hpp"
#include "io/atomic_file.hpp"
#include "io/read_file.hpp"
#include "util/status_macros.hpp"
#include "util/strings.hpp"

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

}  // namespace

const char* export_dtype_name(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return "float32";
    case at::kBFloat16: return "bfloat16";
    case at::kHalf: return "float16";
    default: return nullptr;
  }
}

absl::StatusOr<nlohmann::ordered_json> exported_config(const Model::Impl& model, at::ScalarType dtype) {
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
      config[key] = export_dtype_name(dtype);
      named = true;
    }
  }
  if (!named) config["torch_dtype"] = export_dtype_name(dtype);
  config.erase("quantization_config");  // the weights written are what the caller says, not the source's
  return config;
}

absl::Status write_model_directory(const Model::Impl& model, const std::filesystem::path& dir,
                                   const NamedTensors& tensors, const nlohmann::ordered_json& config) {
  const std::string config_json = config.dump(2) + "\n";
  return write_directory_atomic(
      dir,
      [&](const std::filesystem::path& tmp) -> absl::Status {
        TEMPER_RETURN_IF_ERROR(write_checkpoint(tmp, tensors, kMaxShardBytes));
        TEMPER_RETURN_IF_ERROR(write_file_atomic(tmp / "config.json", config_json));
        if (model.source_dir.empty()) return absl::OkStatus();
        for (const char* name : kCarriedFiles) {
          const std::filesystem::path from = model.source_dir / name;
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
