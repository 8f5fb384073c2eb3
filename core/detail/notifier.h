#pragma once
// The debounced wake-up: at most one NOTIFY per interval, sent from its own connection so no
// append transaction ever carries a NOTIFY (which would serialise commits cluster-wide).

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include "core/log.h"

namespace unidesk::core::detail {

class Notifier {
 public:
  Notifier(std::string conninfo, std::string channel, std::chrono::microseconds min_interval,
           LoggerPtr log);
  ~Notifier();

  /// Something committed: a NOTIFY follows within the interval. Never blocks.
  void Signal();
  /// Sends what is pending and stops the thread.
  void Stop();

 private:
  void Run();

  std::string conninfo_;
  std::string channel_;
  std::chrono::microseconds min_interval_;
  LoggerPtr log_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool pending_ = false;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace unidesk::core::detail
