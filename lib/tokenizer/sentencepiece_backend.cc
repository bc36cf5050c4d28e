// No Abseil header may be included here (see sentencepiece_backend.hpp).
#include "tokenizer/sentencepiece_backend.hpp"

#include <sentencepiece_processor.h>

namespace temper {
namespace {

class Backend final : public SentencePieceBackend {
 public:
  bool load(const std::string& path, std::string* error) {
    const auto status = processor_.Load(path);
    if (!status.ok()) {
      *error = status.ToString();
      return false;
    }
    return true;
  }

  bool encode(std::string_view text, std::vector<int>* ids, std::string* error) const override {
    const auto status = processor_.Encode(text, ids);
    if (!status.ok()) *error = status.ToString();
    return status.ok();
  }

  bool decode(const std::vector<int>& ids, std::string* text, std::string* error) const override {
    const auto status = processor_.Decode(ids, text);
    if (!status.ok()) *error = status.ToString();
    return status.ok();
  }

  int vocab_size() const override { return processor_.GetPieceSize(); }

  int piece_to_id(std::string_view piece) const override {
    const int id = processor_.PieceToId(piece);
    // PieceToId answers unk for unknown pieces; only "<unk>" itself may map there.
    if (id == processor_.unk_id() && processor_.IdToPiece(id) != piece) return -1;
    return id;
  }

  int bos_id() const override { return processor_.bos_id(); }
  int eos_id() const override { return processor_.eos_id(); }
  int pad_id() const override { return processor_.pad_id(); }
  int unk_id() const override { return processor_.unk_id(); }

 private:
  sentencepiece::SentencePieceProcessor processor_;
};

}  // namespace

std::unique_ptr<SentencePieceBackend> SentencePieceBackend::load(const std::string& path, std::string* error) {
  auto backend = std::make_unique<Backend>();
  if (!backend->load(path, error)) return nullptr;
  return backend;
}

}  // namespace temper
