// The form of a document that exact deduplication hashes and near deduplication shingles: the
// same text typed with other case, other spacing or compatibility characters (full-width forms,
// ligatures, non-breaking spaces) normalises to the same bytes.
#pragma once

#include <string>
#include <string_view>

namespace temper {

// NFKC, Unicode case folding and removal of default-ignorable code points (utf8proc), then every
// run of whitespace collapsed to one space and the ends trimmed. Text that is not valid UTF-8
// cannot be normalised by utf8proc; it is lower-cased (ASCII) and collapsed byte by byte instead,
// so that it is still deduplicated against its own copies. `out` is overwritten.
void normalize_for_dedup(std::string_view text, std::string* out);

}  // namespace temper
