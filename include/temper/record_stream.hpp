// RecordStream: documents that the host program produces itself (a database cursor, a network
// feed, the C ABI's callback table) rather than files or a list in memory. A DataMixer source
// whose SourceSpec::stream is set reads its records from it; each record is one document,
// interpreted per the source's format (see SourceSpec).
//
// Positions: a checkpoint must bring the source back to where it was. A stream that can name
// its position (position() returns text) is sought there on resume; one that cannot is rewound
// and the records read before are skipped again, which is exact when the stream yields the same
// records in the same order pass after pass (and costs the time to re-read them).
//
// Ownership: a SourceSpec shares the stream; one DataMixer reads it at a time (two readers of one
// stream would take each other's records). Its methods are called on the thread that drives the
// DataMixer.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "temper/api.hpp"
#include "temper/status.hpp"

namespace temper {

class TEMPER_API RecordStream {
 public:
  virtual ~RecordStream();

  // The next record, or nullopt at the end of a pass. The view stays valid until the next call
  // of any method of this stream. After nullopt, next() is called again only after rewind().
  virtual StatusOr<std::optional<std::string_view>> next() = 0;
  // Starts the next pass at the first record.
  virtual Status rewind() = 0;
  // Where the next call of next() reads, as text the stream understands; nullopt when the
  // stream cannot say (then resuming replays, see above).
  virtual StatusOr<std::optional<std::string>> position() const;
  // Returns to a position() taken from this stream over the same data. Called only with a
  // position the stream gave.
  virtual Status seek(const std::string& position);
};

}  // namespace temper
