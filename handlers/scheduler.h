#pragma once
// The `scheduler` role: scheduling passes over the queued tasks and the fleet, each one
// transaction that records its decisions as events (task.assigned, task.waiting,
// task.cancelled) together with its placement rows.
//
// Why it is safe with several copies: a pass takes a transaction-scoped advisory lock first, so
// passes take turns and each reads what the previous one committed; capacity in use comes from
// `scheduler_placements`, written in the same transaction as the assignments; every append
// expects the task stream's version the pass read (from the `tasks` projection), so a task that
// moved on meanwhile (cancelled, assigned by a pass that read a lagging projection) is skipped,
// never assigned twice.

#include <atomic>
#include <chrono>
#include <memory>
#include <pqxx/pqxx>
#include <string>
#include <thread>

#include "core/event_store.h"
#include "core/log.h"

namespace unidesk::handlers {

struct SchedulerSettings {
  std::chrono::milliseconds interval{100};  // between passes (a pass with nothing to do is cheap)
  int max_tasks_per_pass = 2000;            // the queue's head considered in one pass
  /// An assignment the node has not acknowledged after this is lost, and moved by the retry
  /// policy (the node may have crashed between receiving it and writing to its outbox).
  std::chrono::milliseconds accept_timeout{30000};
};

/// What one pass did (lost attempts are swept before each pass: handlers/lost_attempts.h).
struct PassOutcome {
  int placed = 0;
  int waiting = 0;    // task.waiting appended (a reason changed)
  int cancelled = 0;  // queued tasks whose cancel was requested
  int conflicts = 0;  // skipped: the task's stream moved on since the projection was read
  int released = 0;   // placement rows of ended tasks removed
};

class Scheduler {
 public:
  Scheduler(std::string conninfo, SchedulerSettings settings, core::EventStore& store,
            core::LoggerPtr log);
  ~Scheduler();
  void Start();
  void Stop();
  /// One pass in the caller's thread. Throws what libpqxx throws.
  PassOutcome PassOnce();

 private:
  void Run();

  std::string conninfo_;
  SchedulerSettings settings_;
  core::EventStore& store_;
  core::LoggerPtr log_;
  std::unique_ptr<pqxx::connection> conn_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace unidesk::handlers
