#include "tokenizer/special_tokens.hpp"

#include "util/strings.hpp"
#include <nlohmann/json.hpp>

#include "io/json_file.hpp"
#include "util/status_macros.hpp"

namespace temper {

absl::StatusOr<SpecialTokens> read_special_tokens(
    const std::filesystem::path& path, const SpecialTokens& defaults,
    const std::function<std::optional<TokenId>(std::string_view)>& piece_to_id) {
  TEMPER_ASSIGN_OR_RETURN(nlohmann::json config, read_json_file(path));
  const std::string source = path.string();
  if (!config.is_object()) return absl::InvalidArgumentError(str_cat(source, ": not a JSON object"));

  SpecialTokens tokens = defaults;
  const std::pair<const char*, std::optional<TokenId>*> fields[] = {
      {"bos_token", &tokens.bos}, {"eos_token", &tokens.eos}, {"pad_token", &tokens.pad}, {"unk_token", &tokens.unk}};
  for (const auto& [field, slot] : fields) {
    auto it = config.find(field);
    if (it == config.end() || it->is_null()) continue;
    std::string piece;
    if (it->is_string()) {
      piece = it->get<std::string>();
    } else if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
      piece = (*it)["content"].get<std::string>();
    } else {
      return absl::InvalidArgumentError(
          str_cat(source, ": field \"", field, "\" must be a string or an object with \"content\""));
    }
    const std::optional<TokenId> id = piece_to_id(piece);
    if (!id) {
      return absl::InvalidArgumentError(
          str_cat(source, ": ", field, " \"", piece, "\" is not in the tokenizer's vocabulary"));
    }
    *slot = id;
  }
  TEMPER_ASSIGN_OR_RETURN(std::optional<bool> add_bos, json_optional_bool(config, "add_bos_token", source));
  TEMPER_ASSIGN_OR_RETURN(std::optional<bool> add_eos, json_optional_bool(config, "add_eos_token", source));
  tokens.add_bos = add_bos.value_or(defaults.add_bos);
  tokens.add_eos = add_eos.value_or(defaults.add_eos);
  return tokens;
}

}  // namespace temper
