// Token shard indexes (TokenShard::open, docs/data.md): the index and the token file split from
// one input (fuzz_support.hpp's TwoParts), then every document read.
#include "data/token_shard.hpp"
#include "fuzz_support.hpp"

using namespace temper;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const fuzz::TwoParts parts = fuzz::split_two(data, size);
  const std::filesystem::path path = fuzz::scratch_dir() / "shard.bin";
  fuzz::write_bytes(token_shard_index_path(path), parts.first);
  fuzz::write_bytes(path, parts.second);
  absl::StatusOr<TokenShard> shard = TokenShard::open(path);
  if (!shard.ok()) {
    fuzz::expect_code(shard.status(), {absl::StatusCode::kInvalidArgument});
    return 0;
  }
  uint64_t total = 0;
  std::vector<TokenId> ids;
  for (uint64_t doc = 0; doc < shard->num_documents(); ++doc) {
    const absl::Status status = shard->read_document(doc, &ids);
    if (!status.ok()) {
      fuzz::expect_code(status, {absl::StatusCode::kInvalidArgument});
      continue;
    }
    fuzz::expect(ids.size() == shard->document_size(doc), "document size differs from the index");
    total += ids.size();
  }
  fuzz::expect(total * shard->bytes_per_token() <= parts.second.size(), "documents reach past the token file");
  return 0;
}
