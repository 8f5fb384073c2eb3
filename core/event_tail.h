#pragma once
// A non-durable follower of the log: from "now" on, in delivery order, of chosen types. For a
// process that reacts to what happens while it runs (the ingress closing the session of a node
// revoked or taken over by another copy) and keeps no checkpoint: what it missed while down no
// longer concerns it.

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "core/event.h"
#include "core/event_catalogue.h"
#include "core/log.h"

namespace unidesk::core {

class EventTail {
 public:
  using Callback = std::function<void(const RecordedEvent&)>;
  EventTail(std::string conninfo, const EventCatalogue& catalogue, std::vector<std::string> types,
            Callback callback, LoggerPtr log, std::string channel = "unidesk_events");
  ~EventTail();
  /// Before Start: at least this long from one read to the next while events keep coming (fewer,
  /// larger reads under load; SubscriptionOptions::min_step_interval). Default 0: every wake-up.
  void SetMinReadInterval(std::chrono::milliseconds d) { min_read_interval_ = d; }
  /// Starts following from the events committing after this call (and possibly a few before).
  void Start();
  void Stop();

 private:
  void Run();

  std::string conninfo_;
  const EventCatalogue& catalogue_;
  std::vector<std::string> types_;
  Callback callback_;
  LoggerPtr log_;
  std::string channel_;
  std::chrono::milliseconds min_read_interval_{0};
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace unidesk::core
