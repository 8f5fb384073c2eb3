#pragma once
// A durable subscription: LISTEN as a wake-up, reads from the checkpoint in delivery order,
// handler effects and checkpoint in one transaction, one active owner across processes.

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <pqxx/pqxx>
#include <string>
#include <thread>
#include <vector>

#include "core/checkpoint.h"
#include "core/event.h"
#include "core/event_catalogue.h"
#include "core/event_reader.h"
#include "core/log.h"

namespace unidesk::core {

/// What a subscriber does with events. Handle runs inside the transaction that also moves the
/// checkpoint, so its database effects happen exactly once. It may be called again with the
/// same batch after a failure (the transaction rolled back), so effects outside it must be
/// idempotent.
class SubscriptionHandler {
 public:
  virtual ~SubscriptionHandler() = default;
  virtual void Handle(pqxx::work& tx, const std::vector<RecordedEvent>& batch) = 0;
};

struct SubscriptionOptions {
  std::string name;
  std::string conninfo;
  std::string channel = "unidesk_events";
  int batch_size = 1000;
  std::chrono::milliseconds poll_interval{1000};  // read even without a wake-up
  std::chrono::milliseconds held_back_retry{3};   // an older transaction holds delivery back
  /// At least this long from one read to the next: under a steady stream of events a follower
  /// off the critical path (a projector) then reads larger batches in fewer transactions,
  /// instead of one read per wake-up. 0: read at every wake-up.
  std::chrono::milliseconds min_step_interval{0};
  std::chrono::milliseconds reconnect_min{100};
  std::chrono::milliseconds reconnect_max{5000};
  bool listen = true;     // false: poll only
  bool exclusive = true;  // hold the owner lock; false only in tests of the checkpoint CAS
  /// The event types delivered: exact names, or prefixes ending in '.' ("task."); empty: all.
  /// The rest never leaves Postgres; the checkpoint still moves past it (at most once a second
  /// while nothing matches).
  std::vector<std::string> types;
  /// kSkip: events arrive without their data ("{}"), for a handler of the metadata alone.
  EventData data = EventData::kRead;
};

/// A point-in-time view of a running subscription.
struct SubscriptionStatus {
  bool owner = false;
  bool connected = false;
  Checkpoint checkpoint;
  std::int64_t reconnects = 0;
  std::string last_error;
};

/// Outcome of one step of the loop.
struct StepResult {
  int delivered = 0;
  bool held_back = false;
  bool stale = false;  // the checkpoint moved under us; reloaded
};

class Subscription {
 public:
  Subscription(SubscriptionOptions options, const EventCatalogue& catalogue,
               SubscriptionHandler& handler, LoggerPtr log);
  ~Subscription();
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;

  /// Runs the loop on a thread of its own until Stop().
  void Start();
  /// Ends the loop within about 100 ms plus the batch in flight.
  void Stop();
  SubscriptionStatus status() const;

  /// In the caller's thread: takes ownership (waits for it), then delivers until nothing safe is
  /// left and nothing is held back. `progress(delivered_so_far)` after each batch.
  /// Throws what libpqxx throws.
  std::int64_t CatchUp(const std::function<void(std::int64_t)>& progress = {});
  /// As CatchUp, but gives up (nullopt) when another process keeps ownership for `own_within`.
  std::optional<std::int64_t> TryCatchUp(const std::function<void(std::int64_t)>& progress,
                                         std::chrono::milliseconds own_within);

 private:
  class Wakeup;
  void Run();
  void Connect();
  void Disconnect();
  bool TryOwn();
  StepResult Step();
  void WaitForWakeup(std::chrono::milliseconds timeout);

  SubscriptionOptions options_;
  const EventCatalogue& catalogue_;
  SubscriptionHandler& handler_;
  LoggerPtr log_;
  std::unique_ptr<pqxx::connection> work_;
  std::unique_ptr<pqxx::connection> listen_;
  std::unique_ptr<Wakeup> wakeup_;
  Checkpoint checkpoint_;
  /// Where the next read starts: the checkpoint, or past events the filter skipped since.
  LogCursor read_from_;
  std::chrono::steady_clock::time_point last_advance_{};
  bool owner_ = false;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
  mutable std::mutex status_mu_;
  SubscriptionStatus status_;
};

}  // namespace unidesk::core
