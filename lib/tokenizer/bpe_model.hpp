// The BPE model of a tokenizer.json ("model": {"type": "BPE", ...}), as Hugging Face tokenizers
// runs it: a piece is split into characters (with continuing_subword_prefix / end_of_word_suffix
// when set), characters missing from the vocabulary become byte_fallback tokens <0xXX>, the unk
// token (fused when fuse_unk) or nothing (tokenizers drops them when there is no unk token), then
// merges apply lowest rank first, leftmost first among equal ranks. ignore_merges (LLaMA-3) looks a
// whole piece up in the vocabulary before merging. dropout must be null (or 0).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <absl/container/flat_hash_map.h>
#include <absl/status/statusor.h>
#include <nlohmann/json.hpp>

#include "temper/token.hpp"

namespace temper {

class BpeModel {
 public:
  // `model` is tokenizer.json's "model" object; `source` names the file in messages.
  static absl::StatusOr<std::unique_ptr<BpeModel>> from_json(const nlohmann::json& model, std::string_view source);

  // Appends the ids of one pre-tokenized piece to *ids.
  void tokenize(std::string_view piece, std::vector<TokenId>* ids) const;

  std::optional<TokenId> token_to_id(std::string_view token) const;
  // Null when `id` is not in the model's vocabulary.
  const std::string* id_to_token(TokenId id) const;
  // One past the largest id in the vocabulary.
  int32_t id_limit() const { return static_cast<int32_t>(vocab_r_.size()); }
  std::optional<TokenId> unk_id() const { return unk_id_; }

 private:
  struct Merge {
    uint32_t rank;
    TokenId new_id;
  };
  BpeModel() = default;
  void merge_word(std::string_view piece, std::vector<TokenId>* ids) const;
  std::optional<TokenId> char_id(std::string_view ch) const;

  absl::flat_hash_map<std::string, TokenId> vocab_;
  std::vector<std::string> vocab_r_;
  std::vector<bool> has_id_;
  absl::flat_hash_map<uint64_t, Merge> merges_;  // key: left id << 32 | right id
  std::vector<TokenId> small_char_id_;           // code points below 0x800 -> id or -1 (no prefix/suffix)
  std::optional<TokenId> unk_id_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  std::string continuing_subword_prefix_;
  std::string end_of_word_suffix_;

  // Piece -> ids, for pieces up to kCacheMaxPiece bytes; stops growing at kCacheCapacity entries
  // (as tokenizers' own cache does). Shared by threads under one mutex.
  static constexpr size_t kCacheMaxPiece = 256;
  static constexpr size_t kCacheCapacity = 100000;
  mutable std::mutex cache_mutex_;
  mutable absl::flat_hash_map<std::string, std::vector<TokenId>> cache_;
};

}  // namespace temper
