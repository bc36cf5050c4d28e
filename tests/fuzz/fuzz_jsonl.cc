// JSONL data records through the readers (text, instruction, chat), with a tiny read buffer and
// document limit so that buffer refills and over-long lines are reached by short inputs. Then
// the readers' promises: a second pass yields the same documents, and seeking a fresh reader to
// any recorded position yields exactly what followed it.
//
// Input: byte 0 picks the format and the malformed-record policy, byte 1 the position to seek
// to; the rest is the file.
#include "data/readers.hpp"
#include "fuzz_support.hpp"

using namespace temper;

namespace {

std::string describe(const Document& doc) {
  std::string out = doc.origin + "\x1f" + doc.text;
  for (const ChatMessage& m : doc.messages) out += "\x1f" + m.role + "\x1e" + m.content;
  return out;
}

struct Pass {
  std::vector<std::string> docs;
  std::vector<std::string> positions;  // before each document, then at the end
  absl::Status status;
};

Pass read_pass(DocumentReader& reader) {
  Pass pass;
  for (;;) {
    pass.positions.push_back(reader.position());
    absl::StatusOr<std::optional<Document>> doc = reader.next();
    if (!doc.ok()) {
      pass.status = doc.status();
      return pass;
    }
    if (!doc->has_value()) return pass;
    pass.docs.push_back(describe(**doc));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  static const SourceFormat kFormats[] = {SourceFormat::kJsonlText, SourceFormat::kJsonlInstruction,
                                          SourceFormat::kJsonlChat};
  SourceSpec spec;
  spec.name = "fuzz";
  spec.format = kFormats[data[0] % 3];
  spec.on_malformed = (data[0] & 0x80) != 0 ? MalformedPolicy::kFail : MalformedPolicy::kSkip;
  const std::filesystem::path path = fuzz::scratch_dir() / "records.jsonl";
  fuzz::write_bytes(path, fuzz::as_text(data + 2, size - 2));
  spec.paths = {path};
  ReaderLimits limits;
  limits.buffer_bytes = 64;
  limits.max_document_bytes = 512;

  absl::StatusOr<std::unique_ptr<DocumentReader>> reader = open_reader(spec, limits);
  fuzz::expect(reader.ok(), "open_reader failed on an existing file");
  const Pass first = read_pass(**reader);
  if (!first.status.ok()) {
    fuzz::expect_code(first.status, {absl::StatusCode::kInvalidArgument});
    fuzz::expect(spec.on_malformed == MalformedPolicy::kFail, "a reader under kSkip failed");
    return 0;
  }
  fuzz::expect((*reader)->rewind().ok(), "rewind failed");
  const Pass second = read_pass(**reader);
  fuzz::expect(second.status.ok() && second.docs == first.docs, "the second pass differs from the first");

  const size_t at = data[1] % first.positions.size();
  absl::StatusOr<std::unique_ptr<DocumentReader>> fresh = open_reader(spec, limits);
  fuzz::expect(fresh.ok(), "open_reader failed on an existing file");
  const absl::Status sought = (*fresh)->seek(first.positions[at]);
  if (!sought.ok()) fuzz::fail(std::string(sought.ToString()));
  const Pass rest = read_pass(**fresh);
  fuzz::expect(rest.status.ok(), "reading after seek failed");
  fuzz::expect(std::equal(rest.docs.begin(), rest.docs.end(), first.docs.begin() + at, first.docs.end()) &&
                   rest.docs.size() == first.docs.size() - at,
               "seek to a recorded position does not resume exactly");
  return 0;
}
