#include "util/log.hpp"

#include <memory>
#include <mutex>

namespace temper {
namespace {

// The sink is swapped under a mutex but called outside it, through a shared_ptr copy: a sink
// may log or replace itself without deadlocking, and a replaced sink stays alive until the
// messages already handed to it return.
std::mutex sink_mutex;
std::shared_ptr<const LogSink> current_sink;

}  // namespace

void set_log_sink(LogSink sink) {
  std::shared_ptr<const LogSink> next = sink ? std::make_shared<const LogSink>(std::move(sink)) : nullptr;
  std::lock_guard<std::mutex> lock(sink_mutex);
  current_sink.swap(next);
}

void log_message(LogLevel level, std::string_view message) {
  std::shared_ptr<const LogSink> sink;
  {
    std::lock_guard<std::mutex> lock(sink_mutex);
    sink = current_sink;
  }
  if (sink) (*sink)(level, message);
}

}  // namespace temper
