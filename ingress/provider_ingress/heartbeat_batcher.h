#pragma once
// Heartbeats are not events (DESIGN §3): they refresh the durable liveness rows, many per
// statement. A flush also finds sessions that are no longer their node's live one (taken over by
// another ingress copy, or revoked) and closes them: the backstop of the bus tail.

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

#include "core/log.h"
#include "ingress/provider_ingress/ingress_store.h"
#include "ingress/provider_ingress/session_registry.h"

namespace unidesk::ingress {

class HeartbeatBatcher {
 public:
  HeartbeatBatcher(IngressStore& store, SessionRegistry& registry,
                   std::chrono::milliseconds interval, core::LoggerPtr log);
  ~HeartbeatBatcher();
  void Start();
  void Stop();
  /// Thread-safe; the newest heartbeat of a node replaces an unflushed older one.
  void Add(HeartbeatEntry beat);
  /// Heartbeats written so far (for the benchmark and tests).
  std::int64_t written() const { return written_; }

 private:
  void Run();
  void Flush();

  IngressStore& store_;
  SessionRegistry& registry_;
  std::chrono::milliseconds interval_;
  core::LoggerPtr log_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, HeartbeatEntry> pending_;
  bool stopping_ = false;
  std::atomic<std::int64_t> written_{0};
  bool failing_ = false;
  std::thread thread_;
};

}  // namespace unidesk::ingress
