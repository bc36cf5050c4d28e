// Tokenizer: text <-> token ids, with the model's special tokens.
//
// load_tokenizer() reads a Hugging Face model directory: `tokenizer.model` (sentencepiece:
// LLaMA-1/2, Mistral) plus `tokenizer_config.json` for the special tokens and whether BOS/EOS are
// added. tokenizer.json (byte-level BPE) follows with the BLOOM work.
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

  // UTF-8 text -> ids, without special tokens. Invalid UTF-8 is INVALID_ARGUMENT naming the
  // byte offset; empty text gives no ids.
  virtual StatusOr<std::vector<TokenId>> encode(std::string_view text) const = 0;
  // ids -> text. Special (control) tokens decode to nothing; ids outside the vocabulary are
  // INVALID_ARGUMENT naming the position.
  virtual StatusOr<std::string> decode(const std::vector<TokenId>& ids) const = 0;
  virtual int32_t vocab_size() const = 0;
  virtual std::optional<TokenId> piece_to_id(std::string_view piece) const = 0;

  const SpecialTokens& special_tokens() const { return special_; }
  // Overrides the special tokens (e.g. to give a model without one a pad token).
  void set_special_tokens(const SpecialTokens& special) { special_ = special; }

  // encode() plus BOS/EOS as the tokenizer config asks (special_tokens().add_bos/add_eos).
  StatusOr<std::vector<TokenId>> encode_for_model(std::string_view text) const;
  // encode() plus BOS and EOS when asked and defined.
  StatusOr<std::vector<TokenId>> encode_with(std::string_view text, bool add_bos, bool add_eos) const;

 protected:
  SpecialTokens special_;
};

// Loads the tokenizer of a Hugging Face model directory (see above).
TEMPER_API StatusOr<std::unique_ptr<Tokenizer>> load_tokenizer(const std::filesystem::path& model_dir);

// A sentencepiece model file alone; special tokens come from the model's own ids.
TEMPER_API StatusOr<std::unique_ptr<Tokenizer>> load_sentencepiece(const std::filesystem::path& model_file);

}  // namespace temper
