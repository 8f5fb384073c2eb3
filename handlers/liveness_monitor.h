#pragma once
// The `monitor` role: evaluates the liveness rule over `node_liveness` and records transitions.
// One copy evaluates at a time (a Postgres advisory lock); any copy takes over when it goes away.

#include <atomic>
#include <memory>
#include <pqxx/pqxx>
#include <string>
#include <thread>

#include "core/event_store.h"
#include "core/log.h"
#include "handlers/liveness_rules.h"

namespace unidesk::handlers {

class LivenessMonitor {
 public:
  LivenessMonitor(std::string conninfo, LivenessSettings settings, core::EventStore& store,
                  core::LoggerPtr log);
  ~LivenessMonitor();
  void Start();
  void Stop();
  /// One evaluation in the caller's thread: takes the lock if free; returns the transitions
  /// recorded (0 when another copy evaluates). Throws what libpqxx throws.
  int EvaluateOnce();

 private:
  void Run();
  bool RecordTransition(const std::string& node, const std::string& old_status,
                        const LivenessDecision& d);

  std::string conninfo_;
  LivenessSettings settings_;
  core::EventStore& store_;
  core::LoggerPtr log_;
  std::unique_ptr<pqxx::connection> conn_;
  bool owner_ = false;
  std::string takeover_at_;  // Postgres's now() when this copy took over
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace unidesk::handlers
