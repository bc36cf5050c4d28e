// tokenizer_config.json: special tokens (read_special_tokens) against a small vocabulary, and the
// chat-template detection that reads the same file (detect_chat_template).
#include <map>

#include "data/chat_template.hpp"
#include "fuzz_support.hpp"
#include "tokenizer/special_tokens.hpp"

using namespace temper;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::map<std::string, TokenId, std::less<>> kVocab = {
      {"<unk>", 0}, {"<s>", 1}, {"</s>", 2}, {"<pad>", 3}, {"<|im_start|>", 4}, {"<|im_end|>", 5}, {"<|eot_id|>", 6}};
  const std::filesystem::path dir = fuzz::scratch_dir();
  const std::filesystem::path path = dir / "tokenizer_config.json";
  fuzz::write_bytes(path, fuzz::as_text(data, size));

  SpecialTokens defaults;
  defaults.bos = 1;
  defaults.eos = 2;
  absl::StatusOr<SpecialTokens> tokens =
      read_special_tokens(path, defaults, [](std::string_view piece) -> std::optional<TokenId> {
        auto it = kVocab.find(piece);
        if (it == kVocab.end()) return std::nullopt;
        return it->second;
      });
  if (!tokens.ok()) {
    fuzz::expect_code(tokens.status(), {absl::StatusCode::kInvalidArgument});
  } else {
    for (const std::optional<TokenId>* id : {&tokens->bos, &tokens->eos, &tokens->pad, &tokens->unk}) {
      fuzz::expect(!id->has_value() || (**id >= 0 && **id < 7), "a special token id outside the vocabulary");
    }
  }
  (void)detect_chat_template(dir);
  return 0;
}
