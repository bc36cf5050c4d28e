#include "tokenizer/bpe_model.hpp"

#include <algorithm>

#include "io/json_file.hpp"
#include "util/strings.hpp"

namespace temper {
namespace {

// Ids above this are refused: a hostile file must not make us allocate gigabytes of lookup table.
constexpr int64_t kMaxTokenId = int64_t{1} << 26;

uint64_t pair_key(TokenId a, TokenId b) { return (uint64_t{static_cast<uint32_t>(a)} << 32) | static_cast<uint32_t>(b); }

absl::string_view absl_view(std::string_view s) { return absl::string_view(s.data(), s.size()); }

size_t utf8_char_length(unsigned char c) { return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }

struct Symbol {
  TokenId id;
  int32_t prev;
  int32_t next;
  uint32_t len;  // bytes of the piece it covers; 0 once merged into its left neighbour
};

struct QueuedMerge {
  uint32_t rank;
  int32_t pos;
  TokenId new_id;
  // A min-heap on (rank, pos): the lowest rank first, the leftmost first among equal ranks.
  bool operator>(const QueuedMerge& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

}  // namespace

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::from_json(const nlohmann::json& model, std::string_view source) {
  const auto invalid = [&](auto&&... parts) {
    return absl::InvalidArgumentError(str_cat(source, ": model: ", parts...));
  };
  std::unique_ptr<BpeModel> bpe(new BpeModel());
  if (auto it = model.find("dropout"); it != model.end() && !it->is_null()) {
    if (!it->is_number() || it->get<double>() != 0.0) {
      return absl::UnimplementedError(str_cat(source, ": model: BPE dropout ", json_preview(*it),
                                              " is not supported (temper tokenizes deterministically; use null)"));
    }
  }
  auto vocab_it = model.find("vocab");
  if (vocab_it == model.end() || !vocab_it->is_object()) return invalid("\"vocab\" must be an object of token -> id");
  int64_t max_id = -1;
  bpe->vocab_.reserve(vocab_it->size());
  for (const auto& [token, id_json] : vocab_it->items()) {
    if (!id_json.is_number_integer() || id_json.get<int64_t>() < 0 || id_json.get<int64_t>() >= kMaxTokenId) {
      return invalid("vocab id of \"", token, "\" is ", json_preview(id_json), ", not an integer in [0, ", kMaxTokenId,
                     ")");
    }
    const int64_t id = id_json.get<int64_t>();
    bpe->vocab_[token] = static_cast<TokenId>(id);
    max_id = std::max(max_id, id);
  }
  bpe->vocab_r_.assign(static_cast<size_t>(max_id + 1), std::string());
  bpe->has_id_.assign(static_cast<size_t>(max_id + 1), false);
  for (const auto& [token, id] : bpe->vocab_) {
    if (bpe->has_id_[id]) {
      // Two tokens share an id: tokenizers keeps whichever its map holds; refuse the ambiguity.
      return invalid("vocab id ", id, " is given to both \"", bpe->vocab_r_[id], "\" and \"", token, "\"");
    }
    bpe->vocab_r_[id] = token;
    bpe->has_id_[id] = true;
  }

  {
    absl::StatusOr<std::optional<std::string>> prefix = json_optional_string(model, "continuing_subword_prefix", source);
    if (!prefix.ok()) return prefix.status();
    bpe->continuing_subword_prefix_ = prefix->value_or("");
    absl::StatusOr<std::optional<std::string>> suffix = json_optional_string(model, "end_of_word_suffix", source);
    if (!suffix.ok()) return suffix.status();
    bpe->end_of_word_suffix_ = suffix->value_or("");
    absl::StatusOr<std::optional<std::string>> unk = json_optional_string(model, "unk_token", source);
    if (!unk.ok()) return unk.status();
    if (*unk) {
      auto found = bpe->vocab_.find(**unk);
      if (found == bpe->vocab_.end()) return invalid("unk_token \"", **unk, "\" is not in the vocabulary");
      bpe->unk_id_ = found->second;
    }
    for (const auto& [field, slot] : {std::pair<const char*, bool*>{"fuse_unk", &bpe->fuse_unk_},
                                      {"byte_fallback", &bpe->byte_fallback_},
                                      {"ignore_merges", &bpe->ignore_merges_}}) {
      absl::StatusOr<std::optional<bool>> flag = json_optional_bool(model, field, source);
      if (!flag.ok()) return flag.status();
      *slot = flag->value_or(false);
    }
  }

  auto merges_it = model.find("merges");
  if (merges_it == model.end() || merges_it->is_null()) {
    // A vocabulary without merges is a valid (character-level) BPE.
  } else if (!merges_it->is_array()) {
    return invalid("\"merges\" must be an array");
  } else {
    bpe->merges_.reserve(merges_it->size());
    const size_t prefix_len = bpe->continuing_subword_prefix_.size();
    uint32_t rank = 0;
    for (const auto& merge : *merges_it) {
      std::string left, right;
      if (merge.is_string()) {  // "a b" (files before tokenizers 0.20)
        const std::string& line = merge.get_ref<const std::string&>();
        const size_t space = line.find(' ');
        if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) {
          return invalid("merge ", rank, " \"", line, "\" is not two tokens separated by one space");
        }
        left = line.substr(0, space);
        right = line.substr(space + 1);
      } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {
        left = merge[0].get<std::string>();
        right = merge[1].get<std::string>();
      } else {
        return invalid("merge ", rank, " is ", json_preview(merge), ", not \"a b\" or [\"a\", \"b\"]");
      }
      auto a = bpe->vocab_.find(left);
      auto b = bpe->vocab_.find(right);
      if (a == bpe->vocab_.end() || b == bpe->vocab_.end()) {
        return invalid("merge ", rank, " uses \"", a == bpe->vocab_.end() ? left : right,
                       "\", which is not in the vocabulary");
      }
      const std::string merged = left + (right.size() >= prefix_len && prefix_len > 0 &&
                                                 right.compare(0, prefix_len, bpe->continuing_subword_prefix_) == 0
                                             ? right.substr(prefix_len)
                                             : right);
      auto m = bpe->vocab_.find(merged);
      if (m == bpe->vocab_.end()) return invalid("merge ", rank, " makes \"", merged, "\", which is not in the vocabulary");
      // A repeated pair takes its later rank, as tokenizers' map construction does.
      bpe->merges_[pair_key(a->second, b->second)] = Merge{rank, m->second};
      ++rank;
    }
  }

  // Direct table for one-character pieces below U+0800 (all of ByteLevel's alphabet).
  if (bpe->continuing_subword_prefix_.empty() && bpe->end_of_word_suffix_.empty()) {
    bpe->small_char_id_.assign(0x800, -1);
    for (uint32_t cp = 0; cp < 0x800; ++cp) {
      std::string ch;
      if (cp < 0x80) {
        ch = std::string(1, static_cast<char>(cp));
      } else {
        ch = {static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3F))};
      }
      auto found = bpe->vocab_.find(ch);
      if (found != bpe->vocab_.end()) bpe->small_char_id_[cp] = found->second;
    }
  }
  return bpe;
}

std::optional<TokenId> BpeModel::token_to_id(std::string_view token) const {
  auto found = vocab_.find(absl_view(token));
  if (found == vocab_.end()) return std::nullopt;
  return found->second;
}

const std::string* BpeModel::id_to_token(TokenId id) const {
  if (id < 0 || static_cast<size_t>(id) >= vocab_r_.size() || !has_id_[id]) return nullptr;
  return &vocab_r_[id];
}

std::optional<TokenId> BpeModel::char_id(std::string_view ch) const {
  if (!small_char_id_.empty()) {
    const auto c0 = static_cast<unsigned char>(ch[0]);
    if (ch.size() == 1) {
      const TokenId id = small_char_id_[c0];
      return id >= 0 ? std::optional<TokenId>(id) : std::nullopt;
    }
    if (ch.size() == 2) {
      const uint32_t cp = ((c0 & 0x1Fu) << 6) | (static_cast<unsigned char>(ch[1]) & 0x3Fu);
      const TokenId id = small_char_id_[cp];
      return id >= 0 ? std::optional<TokenId>(id) : std::nullopt;
    }
  }
  return token_to_id(ch);
}

void BpeModel::tokenize(std::string_view piece, std::vector<TokenId>* ids) const {
  if (piece.empty()) return;
  if (ignore_merges_) {
    if (std::optional<TokenId> whole = token_to_id(piece)) {
      ids->push_back(*whole);
      return;
    }
  }
  const bool cacheable = piece.size() <= kCacheMaxPiece;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto hit = cache_.find(absl_view(piece));
    if (hit != cache_.end()) {
      ids->insert(ids->end(), hit->second.begin(), hit->second.end());
      return;
    }
  }
  const size_t before = ids->size();
  merge_word(piece, ids);
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() < kCacheCapacity) cache_.emplace(std::string(piece), std::vector<TokenId>(ids->begin() + before, ids->end()));
  }
}

void BpeModel::merge_word(std::string_view piece, std::vector<TokenId>* ids) const {
  thread_local std::vector<Symbol> symbols;
  thread_local std::vector<QueuedMerge> queue;
  symbols.clear();
  queue.clear();
  const auto add = [&](TokenId id, uint32_t len) {
    const auto index = static_cast<int32_t>(symbols.size());
    if (index > 0) symbols.back().next = index;
    symbols.push_back(Symbol{id, index - 1, -1, len});
  };
  std::optional<std::pair<TokenId, uint32_t>> pending_unk;
  const bool plain = continuing_subword_prefix_.empty() && end_of_word_suffix_.empty();
  std::string decorated;
  for (size_t i = 0; i < piece.size();) {
    const size_t n = std::min(utf8_char_length(static_cast<unsigned char>(piece[i])), piece.size() - i);
    const std::string_view ch = piece.substr(i, n);
    const bool first = i == 0;
    i += n;
    const bool last = i >= piece.size();
    std::optional<TokenId> id;
    std::string_view symbol = ch;
    if (plain) {
      id = char_id(ch);
    } else {
      decorated.clear();
      if (!first) decorated += continuing_subword_prefix_;
      decorated.append(ch);
      if (last) decorated += end_of_word_suffix_;
      symbol = decorated;
      id = token_to_id(decorated);
    }
    if (id) {
      if (pending_unk) {
        add(pending_unk->first, pending_unk->second);
        pending_unk.reset();
      }
      add(*id, static_cast<uint32_t>(n));
      continue;
    }
    if (byte_fallback_) {
      std::vector<TokenId> bytes;
      for (unsigned char b : symbol) {
        static const char* kHex = "0123456789ABCDEF";
        const std::string code = {'<', '0', 'x', kHex[b >> 4], kHex[b & 15], '>'};
        std::optional<TokenId> byte_id = token_to_id(code);
        if (!byte_id) break;
        bytes.push_back(*byte_id);
      }
      if (bytes.size() == symbol.size()) {
        for (TokenId b : bytes) add(b, 1);
        continue;
      }
    }
    if (unk_id_) {
      if (pending_unk && fuse_unk_) {
        pending_unk->second += static_cast<uint32_t>(n);
      } else {
        if (pending_unk) add(pending_unk->first, pending_unk->second);
        pending_unk = std::make_pair(*unk_id_, static_cast<uint32_t>(n));
      }
    }
    // No unk token: tokenizers drops the character.
  }
  if (pending_unk) add(pending_unk->first, pending_unk->second);

  const auto lookup = [&](TokenId a, TokenId b) -> const Merge* {
    auto found = merges_.find(pair_key(a, b));
    return found == merges_.end() ? nullptr : &found->second;
  };
  const std::greater<QueuedMerge> heap_order;
  for (size_t k = 0; k + 1 < symbols.size(); ++k) {
    if (const Merge* m = lookup(symbols[k].id, symbols[k + 1].id)) {
      queue.push_back(QueuedMerge{m->rank, static_cast<int32_t>(k), m->new_id});
    }
  }
  std::make_heap(queue.begin(), queue.end(), heap_order);
  while (!queue.empty()) {
    std::pop_heap(queue.begin(), queue.end(), heap_order);
    const QueuedMerge top = queue.back();
    queue.pop_back();
    Symbol& left = symbols[top.pos];
    if (left.len == 0 || left.next < 0) continue;
    const int32_t right_pos = left.next;
    const Symbol right = symbols[right_pos];
    const Merge* current = lookup(left.id, right.id);
    if (current == nullptr || current->new_id != top.new_id) continue;  // a stale entry
    left.id = top.new_id;
    left.len += right.len;
    left.next = right.next;
    symbols[right_pos].len = 0;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (left.prev >= 0) {
      if (const Merge* m = lookup(symbols[left.prev].id, left.id)) {
        queue.push_back(QueuedMerge{m->rank, left.prev, m->new_id});
        std::push_heap(queue.begin(), queue.end(), heap_order);
      }
    }
    if (left.next >= 0) {
      if (const Merge* m = lookup(left.id, symbols[left.next].id)) {
        queue.push_back(QueuedMerge{m->rank, top.pos, m->new_id});
        std::push_heap(queue.begin(), queue.end(), heap_order);
      }
    }
  }
  for (const Symbol& s : symbols) {
    if (s.len != 0) ids->push_back(s.id);
  }
}

}  // namespace temper
