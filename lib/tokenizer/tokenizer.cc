#include "temper/tokenizer.hpp"

#include "util/strings.hpp"

#include "tokenizer/sentencepiece_tokenizer.hpp"
#include "tokenizer/special_tokens.hpp"
#include "util/status_macros.hpp"

namespace temper {

Tokenizer::~Tokenizer() = default;

StatusOr<std::vector<TokenId>> Tokenizer::encode_with(std::string_view text, bool add_bos, bool add_eos) const {
  TEMPER_ASSIGN_OR_RETURN(std::vector<TokenId> body, encode(text));
  std::vector<TokenId> ids;
  ids.reserve(body.size() + 2);
  if (add_bos && special_.bos) ids.push_back(*special_.bos);
  ids.insert(ids.end(), body.begin(), body.end());
  if (add_eos && special_.eos) ids.push_back(*special_.eos);
  return ids;
}

StatusOr<std::vector<TokenId>> Tokenizer::encode_for_model(std::string_view text) const {
  return encode_with(text, special_.add_bos, special_.add_eos);
}

StatusOr<std::unique_ptr<Tokenizer>> load_sentencepiece(const std::filesystem::path& model_file) {
  return make_sentencepiece_tokenizer(model_file);
}

StatusOr<std::unique_ptr<Tokenizer>> load_tokenizer(const std::filesystem::path& model_dir) {
  const std::filesystem::path spm = model_dir / "tokenizer.model";
  std::error_code ec;
  if (!std::filesystem::exists(spm, ec)) {
    if (std::filesystem::exists(model_dir / "tokenizer.json", ec)) {
      return absl::UnimplementedError(str_cat(model_dir.string(),
                                                   ": only tokenizer.json is present; byte-level BPE tokenizers are not "
                                                   "supported yet (sentencepiece tokenizer.model is)"));
    }
    return absl::NotFoundError(str_cat(model_dir.string(), ": no tokenizer.model found"));
  }
  TEMPER_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, make_sentencepiece_tokenizer(spm));
  const std::filesystem::path config = model_dir / "tokenizer_config.json";
  if (std::filesystem::exists(config, ec)) {
    Tokenizer* raw = tokenizer.get();
    TEMPER_ASSIGN_OR_RETURN(
        SpecialTokens special,
        read_special_tokens(config, tokenizer->special_tokens(),
                            [raw](std::string_view piece) { return raw->piece_to_id(piece); }));
    tokenizer->set_special_tokens(special);
  }
  return tokenizer;
}

}  // namespace temper
