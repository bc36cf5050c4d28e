// Where temper's notices and warnings go when no more specific receiver takes them (a Trainer
// with TrainerOptions::on_log set gets its own). By default nowhere: a library embedded in a
// host must not write to the host's terminal unasked.
#pragma once

#include <functional>
#include <string_view>

#include "temper/api.hpp"

namespace temper {

enum class LogLevel {
  kInfo,     // progress notices: early stopping, data exhausted
  kWarning,  // something the user should look at: skipped steps, too many SFT epochs
};

// Called on the thread that logs; several threads may log at once, so a sink that touches shared
// state locks it. The message has no trailing newline.
using LogSink = std::function<void(LogLevel level, std::string_view message)>;

// Replaces the sink (an empty function: none). Thread-safe; a message being delivered to the old
// sink at that moment still completes.
TEMPER_API void set_log_sink(LogSink sink);

}  // namespace temper
