// tokenizer.json loading (load_tokenizer_json: BPE model, normalizers, pre-tokenizers with
// Oniguruma patterns translated to PCRE2, added tokens, post-processor, decoder) and then
// encoding text with the loaded tokenizer. The input is split (fuzz_support.hpp's TwoParts) into
// the tokenizer.json and the text. Every tokenizer that loads must encode any text (invalid UTF-8
// is replaced, never refused), produce ids inside its vocabulary, and decode them again.
#include "fuzz_support.hpp"
#include "temper/tokenizer.hpp"

using namespace temper;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const fuzz::TwoParts parts = fuzz::split_two(data, size);
  const std::filesystem::path file = fuzz::scratch_dir() / "tokenizer.json";
  fuzz::write_bytes(file, parts.first);
  StatusOr<std::unique_ptr<Tokenizer>> tokenizer = load_tokenizer_json(file);
  if (!tokenizer.ok()) {
    fuzz::expect_code(tokenizer.status(), {absl::StatusCode::kInvalidArgument, absl::StatusCode::kUnimplemented});
    return 0;
  }
  const Tokenizer& t = **tokenizer;
  for (bool for_model : {false, true}) {
    StatusOr<std::vector<TokenId>> ids = for_model ? t.encode_for_model(parts.second) : t.encode(parts.second);
    if (!ids.ok()) {
      // A text whose pieces have no token and no byte fallback (no unk_token) cannot be encoded.
      fuzz::expect_code(ids.status(), {absl::StatusCode::kInvalidArgument});
      continue;
    }
    for (TokenId id : *ids) fuzz::expect(id >= 0 && id < t.vocab_size(), "an encoded id is outside the vocabulary");
    StatusOr<std::string> text = t.decode(*ids);
    fuzz::expect_code(text.status(), {});
    StatusOr<std::string> with_special = t.decode_with_special(*ids);
    fuzz::expect_code(with_special.status(), {});
  }
  return 0;
}
