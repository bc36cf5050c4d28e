// Options of the data pipeline (DataMixer): where documents come from, how noise is filtered,
// how duplicates are removed. Plain aggregates with documented defaults; the reasons for the
// defaults are in docs/data.md.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace temper {

class RecordStream;  // temper/record_stream.hpp

enum class SourceFormat {
  kTextLines,         // one document per line
  kTextBlocks,        // documents separated by blank lines
  kTextFiles,         // one document per file
  kJsonlText,         // JSONL, the document in `text_field`
  kJsonlInstruction,  // JSONL {"instruction", "input"?, "output"} -> a user turn and an assistant turn
  kJsonlChat,         // JSONL {"messages": [{"role", "content"}, ...]}
  kTokenShard,        // pre-tokenized: <path> = flat little-endian uint16/uint32 tokens, <path>.idx = document offsets
};

enum class MalformedPolicy {
  kSkip,  // count it, keep a few examples (file:line) in the report, go on
  kFail,  // stop with INVALID_ARGUMENT naming file:line
};

struct FilterOptions {
  // Each filter can be switched off; a document failing one is dropped and counted under that
  // filter's name in the report.
  bool check_utf8 = true;               // "utf8": invalid UTF-8 or control characters (other than \t \n \r)
  bool check_length = true;            // "length": characters, and tokens after tokenization
  int64_t min_chars = 20;
  int64_t max_chars = 200000;
  int64_t min_tokens = 8;
  int64_t max_tokens = 0;               // 0 = no upper bound (long documents are split by packing)
  bool check_repetition = true;        // "repetition"
  int64_t max_char_run = 30;            // same character repeated
  int64_t max_word_run = 8;             // same word repeated consecutively
  double max_top_ngram_fraction = 0.20; // characters covered by the most frequent word 2-gram (Gopher)
  double max_duplicate_ngram_fraction = 0.15;  // characters in repeated word 5-grams (Gopher)
  bool check_non_word = true;          // "non_word"
  double min_letter_fraction = 0.55;   // letters (any script; CJK counts as letters) among non-space characters
  double max_symbol_word_ratio = 0.10; // '#' and '…'/'...' per word (Gopher)
  bool check_boilerplate = true;       // "boilerplate"
  double max_duplicate_line_fraction = 0.30;  // lines repeated within the document (Gopher)
};

struct DedupOptions {
  bool exact = true;   // normalised text (NFKC casefold, whitespace collapsed) hashed with XXH3
  bool near = true;    // MinHash over word shingles + LSH banding
  int64_t shingle_words = 5;
  int64_t num_permutations = 128;
  int64_t bands = 16;  // rows per band = num_permutations / bands
  double threshold = 0.8;  // estimated Jaccard at or above which a candidate counts as a near duplicate
  bool across_sources = true;  // one index for all sources (false: one per source)
};

struct SourceSpec {
  std::string name;              // unique; used in reports and state
  std::string role = "domain";   // a tag: "domain", "general", ...
  double weight = 1.0;           // target share of *tokens* (normalised over sources)
  SourceFormat format = SourceFormat::kTextLines;
  std::vector<std::filesystem::path> paths;
  // Documents from the host instead of files (`paths` then empty; at most one of the two below).
  // One document per record, read as `format` reads one line: text formats take the record as the
  // text, JSONL formats parse it as one JSON object; kTokenShard is refused. Blank records are
  // skipped as blank lines are; origins in reports read "<name>#<index>".
  // `records`: held in memory, shared and never copied again; each reader keeps its own cursor,
  // so one list may feed several sources and mixers.
  std::shared_ptr<const std::vector<std::string>> records;
  // `stream`: implemented by the host (temper/record_stream.hpp); one mixer reads it at a time.
  std::shared_ptr<RecordStream> stream;
  std::string text_field = "text";  // kJsonlText
  MalformedPolicy on_malformed = MalformedPolicy::kSkip;
  FilterOptions filters;
};

}  // namespace temper
