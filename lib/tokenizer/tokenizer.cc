#include "temper/tokenizer.hpp"

#include "util/strings.hpp"

#include "tokenizer/hf_tokenizer.hpp"
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

StatusOr<std::string> Tokenizer::decode_with_special(const std::vector<TokenId>&) const {
  return absl::UnimplementedError(
      "decode_with_special: only tokenizer.json tokenizers render special tokens as text; use decode()");
}

StatusOr<std::vector<TokenId>> Tokenizer::encode_for_model(std::string_view text) const {
  return encode_with(text, special_.add_bos, special_.add_eos);
}

StatusOr<std::unique_ptr<Tokenizer>> load_sentencepiece(const std::filesystem::path& model_file) {
  return make_sentencepiece_tokenizer(model_file);
}

StatusOr<std::unique_ptr<Tokenizer>> load_tokenizer_json(const std::filesystem::path& file) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec)) {
    return absl::NotFoundError(str_cat(file.string(), ": tokenizer.json not found"));
  }
  return make_hf_tokenizer(file);
}

StatusOr<std::unique_ptr<Tokenizer>> load_tokenizer(const std::filesystem::path& model_dir,
                                                    const TokenizerLoadOptions& options) {
  const std::filesystem::path spm = model_dir / "tokenizer.model";
  const std::filesystem::path hf = model_dir / "tokenizer.json";
  std::error_code ec;
  const bool have_spm = std::filesystem::is_regular_file(spm, ec);
  const bool have_hf = std::filesystem::is_regular_file(hf, ec);
  std::unique_ptr<Tokenizer> tokenizer;
  switch (options.format) {
    case TokenizerFormat::kAuto: {
      if (!have_spm && !have_hf) {
        return absl::NotFoundError(str_cat(model_dir.string(), ": no tokenizer.model or tokenizer.json found"));
      }
      if (have_spm) {
        TEMPER_ASSIGN_OR_RETURN(tokenizer, make_sentencepiece_tokenizer(spm));
      } else {
        TEMPER_ASSIGN_OR_RETURN(tokenizer, make_hf_tokenizer(hf));
      }
      break;
    }
    case TokenizerFormat::kSentencePiece: {
      if (!have_spm) return absl::NotFoundError(str_cat(model_dir.string(), ": no tokenizer.model found"));
      TEMPER_ASSIGN_OR_RETURN(tokenizer, make_sentencepiece_tokenizer(spm));
      break;
    }
    case TokenizerFormat::kTokenizerJson: {
      if (!have_hf) return absl::NotFoundError(str_cat(model_dir.string(), ": no tokenizer.json found"));
      TEMPER_ASSIGN_OR_RETURN(tokenizer, make_hf_tokenizer(hf));
      break;
    }
  }
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
