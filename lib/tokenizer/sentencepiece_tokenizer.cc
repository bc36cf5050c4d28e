#include "tokenizer/sentencepiece_tokenizer.hpp"

#include "util/strings.hpp"

#include "text/utf8.hpp"
#include "tokenizer/sentencepiece_backend.hpp"

namespace temper {
namespace {

std::optional<TokenId> optional_id(int id) { return id >= 0 ? std::optional<TokenId>(id) : std::nullopt; }

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(std::unique_ptr<SentencePieceBackend> backend, std::string source)
      : backend_(std::move(backend)), source_(std::move(source)) {
    special_.bos = optional_id(backend_->bos_id());
    special_.eos = optional_id(backend_->eos_id());
    special_.pad = optional_id(backend_->pad_id());
    special_.unk = optional_id(backend_->unk_id());
  }

  StatusOr<std::vector<TokenId>> encode(std::string_view text) const override {
    if (const std::optional<size_t> bad = first_invalid_utf8(text)) {
      return absl::InvalidArgumentError(str_cat("tokenizer ", source_, ": text is not valid UTF-8 at byte ", *bad,
                                                     " (of ", text.size(), ")"));
    }
    std::vector<int> ids;
    std::string error;
    if (!backend_->encode(text, &ids, &error)) {
      return absl::InternalError(str_cat("tokenizer ", source_, ": sentencepiece encode failed: ", error));
    }
    return std::vector<TokenId>(ids.begin(), ids.end());
  }

  StatusOr<std::string> decode(const std::vector<TokenId>& ids) const override {
    const int vocab = backend_->vocab_size();
    for (size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] < 0 || ids[i] >= vocab) {
        return absl::InvalidArgumentError(str_cat("tokenizer ", source_, ": id ", ids[i], " at position ", i,
                                                       " is outside the vocabulary [0, ", vocab, ")"));
      }
    }
    std::string text;
    std::string error;
    if (!backend_->decode(std::vector<int>(ids.begin(), ids.end()), &text, &error)) {
      return absl::InternalError(str_cat("tokenizer ", source_, ": sentencepiece decode failed: ", error));
    }
    return text;
  }

  int32_t vocab_size() const override { return backend_->vocab_size(); }

  std::optional<TokenId> piece_to_id(std::string_view piece) const override {
    return optional_id(backend_->piece_to_id(piece));
  }

 private:
  std::unique_ptr<SentencePieceBackend> backend_;
  std::string source_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> make_sentencepiece_tokenizer(const std::filesystem::path& model_file) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(model_file, ec)) {
    return absl::NotFoundError(str_cat(model_file.string(), ": sentencepiece model not found"));
  }
  std::string error;
  std::unique_ptr<SentencePieceBackend> backend = SentencePieceBackend::load(model_file.string(), &error);
  if (backend == nullptr) {
    return absl::InvalidArgumentError(str_cat(model_file.string(), ": not a sentencepiece model: ", error));
  }
  return std::unique_ptr<Tokenizer>(new SentencePieceTokenizer(std::move(backend), model_file.string()));
}

}  // namespace temper
