// The one door to sentencepiece. Its header declares absl::string_view itself, which clashes
// with Debian's Abseil in one translation unit, so sentencepiece_backend.cc includes
// sentencepiece and the standard library only, and this interface speaks std types only.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace temper {

class SentencePieceBackend {
 public:
  // Null on failure, with the reason in *error.
  static std::unique_ptr<SentencePieceBackend> load(const std::string& path, std::string* error);
  virtual ~SentencePieceBackend() = default;

  virtual bool encode(std::string_view text, std::vector<int>* ids, std::string* error) const = 0;
  virtual bool decode(const std::vector<int>& ids, std::string* text, std::string* error) const = 0;
  virtual int vocab_size() const = 0;
  // -1 when the piece is not in the vocabulary.
  virtual int piece_to_id(std::string_view piece) const = 0;
  // The model's own special ids, -1 when undefined.
  virtual int bos_id() const = 0;
  virtual int eos_id() const = 0;
  virtual int pad_id() const = 0;
  virtual int unk_id() const = 0;
};

}  // namespace temper
