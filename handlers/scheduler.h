#pragma once
// The `scheduler` role: scheduling passes over the queued tasks and the fleet, each one
// transaction that records its decisions as events (task.assigned, task.waiting,
// task.cancelled) together with its placement rows.
//
// Where the queue comes from: each copy keeps it in memory (task_queue.h), seeded from the
// `tasks` projection at the projection's checkpoint and then fed the task events straight from
// the log, woken by the store's NOTIFY. Submissions committed by this process's own store are
// also handed over in-process (Offer), so a pass need not wait for the NOTIFY and the read; the
// log's later copy is told apart by its cursor and the stream version. A pass runs when the queue
// changed (a submission, a requeue, a cancel, capacity returned) or every `interval` while tasks
// wait, and never waits for the projector.
//
// Why it is safe with several copies: a pass takes a transaction-scoped advisory lock first, so
// passes take turns and each reads what the previous one committed; capacity in use comes from
// `scheduler_placements`, written in the same transaction as the assignments; every append
// expects the task stream's version this copy's queue holds, so a task that moved on meanwhile
// (cancelled, assigned by the other copy) is skipped, never assigned twice.

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <pqxx/pqxx>
#include <string>
#include <thread>
#include <vector>

#include "core/event_store.h"
#include "core/log.h"
#include "handlers/task_queue.h"

namespace unidesk::handlers {

struct SchedulerSettings {
  /// At most this long between passes while tasks wait (nodes may have joined or freed up), and
  /// between sweeps for lost attempts; a change in the queue wakes a pass at once.
  std::chrono::milliseconds interval{100};
  /// Between sweeps for lost attempts (their windows are seconds long).
  std::chrono::milliseconds sweep_interval{1000};
  int max_tasks_per_pass = 2000;  // the queue's head considered in one pass
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

/// A placement a pass committed, with what its node needs to start it.
struct CommittedPlacement {
  std::string task;
  std::int64_t attempt = 0;
  std::string node;
  std::string gpu_indices_json;  // e.g. [0,1]
  std::string spec_json;         // the task's canonical spec, from task.submitted
};
/// Called on the scheduler's thread after a pass that placed tasks committed.
using PlacementsCommitted = std::function<void(const std::vector<CommittedPlacement>&)>;

class Scheduler {
 public:
  Scheduler(std::string conninfo, SchedulerSettings settings, core::EventStore& store,
            core::LoggerPtr log);
  ~Scheduler();
  /// Before Start: where this copy hands its committed placements in-process (its own provider
  /// ingress), so a node connected here hears of them without waiting for the bus. The bus
  /// still carries every task.assigned to every copy; this only shortens the way.
  void OnPlacementsCommitted(PlacementsCommitted f) { on_committed_ = std::move(f); }
  /// Thread-safe, cheap: wire to EventStore::OnCommitted. A task.submitted this process
  /// committed joins the queue at the scheduler's next turn instead of after the log's NOTIFY
  /// and read; other appends are ignored.
  void Offer(const core::AppendRequest& request, const core::AppendOutcome& outcome);
  void Start();
  void Stop();
  /// Reads the log into the queue, then one pass, in the caller's thread. Throws what libpqxx
  /// throws.
  PassOutcome PassOnce();
  /// The `source` this copy's events carry ("server/scheduler/<pid>": audit, and the ingress
  /// telling its own copy's assignments apart).
  static const std::string& Source();
  /// What every pass of this copy did so far (thread-safe).
  PassOutcome Totals() const;

 private:
  class Wakeup;
  void Run();
  void Connect();
  void Disconnect();
  /// Seeds the queue when it has none, then applies the task events after its cursor.
  void Follow();
  void Seed();
  /// Applies the submissions Offer handed over that the log has not delivered yet.
  void TakeOffered();
  /// Until a NOTIFY, an Offer, or `wait_us`.
  void AwaitWake(long wait_us);
  /// Sweeps lost attempts and releases placements of ended tasks.
  void Housekeeping();
  PassOutcome Pass();

  std::string conninfo_;
  SchedulerSettings settings_;
  core::EventStore& store_;
  core::LoggerPtr log_;
  std::unique_ptr<pqxx::connection> conn_;
  std::unique_ptr<pqxx::connection> listen_;
  std::unique_ptr<Wakeup> wakeup_;
  bool seeded_ = false;
  bool held_back_ = false;
  core::LogCursor cursor_;
  TaskQueue queue_;
  PlacementsCommitted on_committed_;
  std::mutex offered_mu_;
  std::vector<core::RecordedEvent> offered_;
  int wake_fd_ = -1;  // an eventfd Offer writes to
  std::atomic<bool> stopping_{false};
  mutable std::mutex totals_mu_;
  PassOutcome totals_;
  std::thread thread_;
};

}  // namespace unidesk::handlers
