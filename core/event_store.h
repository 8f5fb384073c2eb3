#pragma once
// The event store: appends with optimistic concurrency, idempotency and group commit.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <pqxx/pqxx>
#include <string>
#include <vector>

#include "core/event.h"
#include "core/event_catalogue.h"
#include "core/log.h"
#include "core/result.h"

namespace unidesk::core {

/// What the appender believes the stream's current version is.
struct ExpectedVersion {
  enum class Kind { kAny, kNoStream, kExact };
  Kind kind = Kind::kAny;
  std::int64_t version = -1;  // with kExact: the version of the stream's last event

  static ExpectedVersion Any() { return {Kind::kAny, -1}; }
  static ExpectedVersion NoStream() { return {Kind::kNoStream, -1}; }
  static ExpectedVersion Exactly(std::int64_t v) { return {Kind::kExact, v}; }
};

/// One atomic append of one or more events to one stream.
struct AppendRequest {
  std::string stream_id;
  ExpectedVersion expected = ExpectedVersion::Any();
  std::vector<NewEvent> events;
  std::optional<std::string> idempotency_key;  // a repeat with the same body returns the original
};

/// Where the events went.
struct AppendOutcome {
  Position first;
  Position last;
  std::int64_t last_version = -1;
  bool repeated = false;  // true when this was an idempotent repeat and nothing was written
  /// The appending transaction's id (the events' `tx_id`); 0 when not known (a repeat).
  std::uint64_t tx_id = 0;
};

enum class AppendError {
  kVersionConflict,          // the stream is not at the expected version
  kIdempotencyMismatch,      // the key was used before with a different body
  kDuplicateEventId,         // an event id exists already with different content
  kInvalidRequest,           // empty, too many events, bad stream id, bad event id, bad metadata
  kUnknownEventType,         // type not declared in the catalogue
  kInvalidJson,              // data is not one JSON object
  kEventTooLarge,            // data over kMaxEventDataBytes
  kTransactionAlreadyWrote,  // AppendInTransaction after the transaction wrote something else
  kUnavailable,              // Postgres unreachable; nothing written
  kCommitUnknown,            // the connection died during COMMIT: retry with the same event ids
  kStopped,                  // the store is stopping
};

/// A short stable name for `e` ("version_conflict"), used in logs, JSON and docs.
const char* AppendErrorName(AppendError e);

using AppendResult = Result<AppendOutcome, TypedError<AppendError>>;
/// Receives the outcome of an asynchronous append (EventStore::AppendAsync).
using AppendCallback = std::function<void(AppendResult)>;

/// One append a group of the store committed (EventStore::OnCommitted).
using CommittedAppend = std::function<void(const AppendRequest&, const AppendOutcome&)>;

/// Settings of the store; see docs/architecture.md ("Group commit").
struct EventStoreOptions {
  std::string conninfo;
  int writer_connections = 2;    // transactions in flight at once
  int max_group_requests = 256;  // appends merged into one transaction at most
  bool notify = true;            // send the debounced wake-up NOTIFY after commits
  std::chrono::microseconds notify_min_interval{2000};  // at most one NOTIFY per interval
  std::string channel = "unidesk_events";
};

namespace detail {
class AppendBatcher;
class Notifier;
}  // namespace detail

/// The Postgres event store. Thread-safe; Append blocks until the group holding it commits.
class EventStore {
 public:
  EventStore(EventStoreOptions options, const EventCatalogue& catalogue, LoggerPtr log);
  ~EventStore();
  EventStore(const EventStore&) = delete;
  EventStore& operator=(const EventStore&) = delete;

  /// Appends atomically; concurrent calls share commits. Never throws for expected failures.
  AppendResult Append(AppendRequest request);

  /// Append without waiting: `done` gets the same result Append would return. It runs on a
  /// writer thread once the group has committed (or in this call, for a request refused before
  /// any I/O), so it must only hand the result on. A caller with many appends in flight, such as
  /// the API's submit route, lets one group carry them all instead of one per blocked thread.
  void AppendAsync(AppendRequest request, AppendCallback done);

  /// Call before the first append. `f` hears of every append a group committed (not repeats, not
  /// AppendInTransaction), on the writer thread, before the appender does: a follower in this
  /// process can act on it without waiting for the log. The log still delivers it later, so
  /// `f` must only hand it on, and its receiver must tell the two copies apart.
  void OnCommitted(CommittedAppend f);

  /// Appends inside the caller's transaction (outbox: business rows and events commit together).
  /// Must come before any other write in `tx`; call NotifyCommitted() after the caller commits.
  AppendResult AppendInTransaction(pqxx::work& tx, AppendRequest request);

  /// AppendInTransaction for several streams at once, one result per request in order (a
  /// failed request writes nothing; the others still append). Every stream lock is taken first,
  /// sorted, so the transaction's xid follows them all. Must be the first write of `tx`.
  std::vector<AppendResult> AppendAllInTransaction(pqxx::work& tx,
                                                   std::vector<AppendRequest>& requests);

  /// Wakes subscribers after a commit made outside Append (debounced).
  void NotifyCommitted();

  /// Fails new appends with kStopped, finishes the groups in flight, closes connections.
  void Stop();

  const EventCatalogue& catalogue() const { return catalogue_; }

 private:
  EventStoreOptions options_;
  const EventCatalogue& catalogue_;
  LoggerPtr log_;
  std::unique_ptr<detail::Notifier> notifier_;
  std::unique_ptr<detail::AppendBatcher> batcher_;
};

/// Takes `stream_id`'s append lock in `tx` without giving `tx` an xid. A transaction that decides
/// what to append from rows it reads takes it first, then reads, then AppendInTransaction: every
/// other appender to the stream waits, so the read cannot go stale before the append.
void LockStreamForAppend(pqxx::transaction_base& tx, const std::string& stream_id);

/// Validates `request` against the catalogue and the limits, filling generated event ids.
/// Pure: no I/O. Used by the store before anything is sent to Postgres.
std::optional<TypedError<AppendError>> ValidateAppend(const EventCatalogue& catalogue,
                                                      AppendRequest& request);

}  // namespace unidesk::core
