// Sends a message to the sink set with temper::set_log_sink (temper/log.hpp), if any.
#pragma once

#include <string_view>

#include "temper/log.hpp"

namespace temper {

void log_message(LogLevel level, std::string_view message);

}  // namespace temper
