#include "data/token_shard.hpp"

#include <cstring>
#include <limits>

#include "io/atomic_file.hpp"
#include "util/status_macros.hpp"
#include "util/strings.hpp"

namespace temper {
namespace {

constexpr char kMagic[8] = {'T', 'M', 'P', 'R', 'S', 'H', 'D', '1'};
constexpr uint64_t kHeaderBytes = 24;

// Little-endian loads and stores written byte by byte, so the format is the same on any host
// (compilers turn these into single loads on little-endian machines).
uint64_t load_le(const uint8_t* p, int bytes) {
  uint64_t value = 0;
  for (int i = bytes - 1; i >= 0; --i) value = (value << 8) | p[i];
  return value;
}

void store_le(std::string* out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
}

}  // namespace

std::filesystem::path token_shard_index_path(const std::filesystem::path& path) {
  std::filesystem::path index = path;
  index += ".idx";
  return index;
}

uint64_t TokenShard::offset(uint64_t i) const { return load_le(index_->data() + kHeaderBytes + 8 * i, 8); }

absl::StatusOr<TokenShard> TokenShard::open(const std::filesystem::path& path) {
  const std::filesystem::path index_path = token_shard_index_path(path);
  const std::string where = index_path.string();
  TokenShard shard;
  TEMPER_ASSIGN_OR_RETURN(shard.tokens_, MappedFile::open(path));
  TEMPER_ASSIGN_OR_RETURN(shard.index_, MappedFile::open(index_path));
  const uint64_t index_size = shard.index_->size();
  const uint8_t* index = shard.index_->data();
  if (index_size < kHeaderBytes || std::memcmp(index, kMagic, sizeof kMagic) != 0) {
    return absl::InvalidArgumentError(
        str_cat(where, ": not a token shard index (expected the magic \"TMPRSHD1\" and a 24-byte header)"));
  }
  const uint64_t width = load_le(index + 8, 4);
  if (width != 2 && width != 4) {
    return absl::InvalidArgumentError(
        str_cat(where, ": ", width, " bytes per token; expected 2 (uint16) or 4 (uint32)"));
  }
  shard.bytes_per_token_ = static_cast<int>(width);
  const uint64_t n = load_le(index + 16, 8);
  const uint64_t offsets_bytes = index_size - kHeaderBytes;
  if (offsets_bytes == 0 || offsets_bytes % 8 != 0 || n != offsets_bytes / 8 - 1) {
    return absl::InvalidArgumentError(str_cat(where, ": header says ", n, " documents, which needs ",
                                              n < std::numeric_limits<uint64_t>::max() / 8 - 4
                                                  ? str_cat(kHeaderBytes + 8 * (n + 1), " bytes")
                                                  : std::string("more bytes than a file can hold"),
                                              "; the file has ", index_size));
  }
  shard.num_documents_ = n;
  if (shard.offset(0) != 0) {
    return absl::InvalidArgumentError(str_cat(where, ": the first offset is ", shard.offset(0), ", expected 0"));
  }
  uint64_t previous = 0;
  for (uint64_t i = 1; i <= n; ++i) {
    const uint64_t current = shard.offset(i);
    if (current < previous) {
      return absl::InvalidArgumentError(str_cat(where, ": offsets decrease at document ", i - 1, " (", previous,
                                                " then ", current, ")"));
    }
    previous = current;
  }
  const uint64_t token_bytes = shard.tokens_->size();
  if (previous > token_bytes / width || previous * width != token_bytes) {
    return absl::InvalidArgumentError(str_cat(where, ": the index ends at token ", previous, " (", width,
                                              " bytes each) but ", path.string(), " holds ", token_bytes, " bytes"));
  }
  return shard;
}

absl::Status TokenShard::read_document(uint64_t doc, std::vector<TokenId>* ids) const {
  const uint64_t begin = offset(doc);
  const uint64_t count = offset(doc + 1) - begin;
  ids->resize(count);
  const uint8_t* p = tokens_->data() + begin * bytes_per_token_;
  if (bytes_per_token_ == 2) {
    for (uint64_t i = 0; i < count; ++i) (*ids)[i] = static_cast<TokenId>(p[2 * i] | (p[2 * i + 1] << 8));
    return absl::OkStatus();
  }
  constexpr uint64_t kMaxId = static_cast<uint64_t>(std::numeric_limits<TokenId>::max());
  for (uint64_t i = 0; i < count; ++i) {
    const uint64_t id = load_le(p + 4 * i, 4);
    if (id > kMaxId) {
      return absl::InvalidArgumentError(str_cat("token id ", id, " at position ", i, " exceeds 2^31-1"));
    }
    (*ids)[i] = static_cast<TokenId>(id);
  }
  return absl::OkStatus();
}

absl::Status write_token_shard(const std::filesystem::path& path, const std::vector<std::vector<TokenId>>& docs) {
  TokenId max_id = 0;
  for (size_t d = 0; d < docs.size(); ++d) {
    if (docs[d].empty()) {
      return absl::InvalidArgumentError(str_cat(path.string(), ": document ", d, " is empty"));
    }
    for (size_t i = 0; i < docs[d].size(); ++i) {
      if (docs[d][i] < 0) {
        return absl::InvalidArgumentError(
            str_cat(path.string(), ": document ", d, " has the negative token id ", docs[d][i], " at position ", i));
      }
      max_id = std::max(max_id, docs[d][i]);
    }
  }
  const int width = max_id < 65536 ? 2 : 4;

  TEMPER_ASSIGN_OR_RETURN(AtomicFileWriter tokens, AtomicFileWriter::create(path));
  std::string bytes;
  std::string index(kMagic, sizeof kMagic);
  store_le(&index, static_cast<uint64_t>(width), 4);
  store_le(&index, 0, 4);
  store_le(&index, docs.size(), 8);
  uint64_t offset = 0;
  store_le(&index, offset, 8);
  for (const std::vector<TokenId>& doc : docs) {
    bytes.clear();
    for (TokenId id : doc) store_le(&bytes, static_cast<uint64_t>(id), width);
    TEMPER_RETURN_IF_ERROR(tokens.append(bytes));
    offset += doc.size();
    store_le(&index, offset, 8);
  }
  TEMPER_RETURN_IF_ERROR(tokens.commit());
  // The index goes last: readers find a shard through its index, so a shard is not visible
  // before its tokens are complete.
  return write_file_atomic(token_shard_index_path(path), index);
}

}  // namespace temper
