// Tokenizer: text <-> token ids, with the model's special tokens.
//
// load_tokenizer() reads a Hugging Face model directory: `tokenizer.model` (sentencepiece:
// LLaMA-1/2, Mistral) or `tokenizer.json` (Hugging Face tokenizers, byte-level BPE: BLOOM, Qwen2,
// LLaMA-3, GPT-2), plus `tokenizer_config.json` for the special tokens and whether BOS/EOS are
// added. docs/tokenizers.md lists the supported tokenizer.json components.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "temper/api.hpp"
#include "temper/status.hpp"
#include "temper/token.hpp"

namespace temper {

struct SpecialTokens {
  std::optional<TokenId> bos;
  std::optional<TokenId> eos;
  std::optional<TokenId> pad;
  std::optional<TokenId> unk;
  bool add_bos = true;   // tokenizer_config.json add_bos_token (LLaMA default: true)
  bool add_eos = false;  // tokenizer_config.json add_eos_token
};

class TEMPER_API Tokenizer {
 public:
  virtual ~Tokenizer();

  // UTF-8 text -> ids, without special tokens; empty text gives no ids. Invalid UTF-8: the
  // sentencepiece tokenizer refuses it (INVALID_ARGUMENT naming the byte offset); the
  // tokenizer.json one replaces each maximal invalid subpart with U+FFFD first, as Python's
  // bytes.decode("utf-8", errors="replace") does, and encodes the result.
  // Added tokens of a tokenizer.json (special or not) in the text become their ids.
  virtual StatusOr<std::vector<TokenId>> encode(std::string_view text) const = 0;
  // ids -> text. Special (control) tokens decode to nothing; ids outside the vocabulary are
  // INVALID_ARGUMENT naming the position.
  virtual StatusOr<std::string> decode(const std::vector<TokenId>& ids) const = 0;
  // ids -> text with special tokens rendered as their text (Hugging Face decode with
  // skip_special_tokens=False). tokenizer.json only; sentencepiece gives UNIMPLEMENTED.
  virtual StatusOr<std::string> decode_with_special(const std::vector<TokenId>& ids) const;
  virtual int32_t vocab_size() const = 0;
  virtual std::optional<TokenId> piece_to_id(std::string_view piece) const = 0;

  const SpecialTokens& special_tokens() const { return special_; }
  // Overrides the special tokens (e.g. to give a model without one a pad token).
  void set_special_tokens(const SpecialTokens& special) { special_ = special; }

  // encode() plus the special tokens the model expects. sentencepiece: BOS/EOS as the tokenizer
  // config asks (special_tokens().add_bos/add_eos). tokenizer.json: what its post_processor adds
  // (Hugging Face encode(add_special_tokens=True)).
  virtual StatusOr<std::vector<TokenId>> encode_for_model(std::string_view text) const;
  // encode() plus BOS and EOS when asked and defined.
  StatusOr<std::vector<TokenId>> encode_with(std::string_view text, bool add_bos, bool add_eos) const;

 protected:
  SpecialTokens special_;
};

enum class TokenizerFormat {
  kAuto,           // tokenizer.model when present, else tokenizer.json
  kSentencePiece,  // tokenizer.model only
  kTokenizerJson,  // tokenizer.json only
};

struct TokenizerLoadOptions {
  TokenizerFormat format = TokenizerFormat::kAuto;
};

// Loads the tokenizer of a Hugging Face model directory (see above), then applies the directory's
// tokenizer_config.json (special tokens, add_bos_token/add_eos_token) when there is one.
TEMPER_API StatusOr<std::unique_ptr<Tokenizer>> load_tokenizer(const std::filesystem::path& model_dir,
                                                               const TokenizerLoadOptions& options = {});

// A tokenizer.json file alone: BOS/EOS from its post-processor template, UNK from its model.
TEMPER_API StatusOr<std::unique_ptr<Tokenizer>> load_tokenizer_json(const std::filesystem::path& file);

// A sentencepiece model file alone; special tokens come from the model's own ids.
TEMPER_API StatusOr<std::unique_ptr<Tokenizer>> load_sentencepiece(const std::filesystem::path& model_file);

}  // namespace temper
