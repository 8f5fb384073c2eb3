#pragma once
// A task's stream as the authority on where the task is: read and folded under the stream's
// append lock, then the decision appended in the same transaction (core/task_lifecycle.h). Used
// by every writer that decides from the task's state: node reports (ingress), lost attempts
// (scheduler), cancel and retry requests (core API).

#include <map>
#include <optional>
#include <pqxx/pqxx>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "core/event_store.h"
#include "core/task_lifecycle.h"

namespace unidesk::core {

struct LoadedTask {
  TaskStatus status;
  std::int64_t version = -1;  // of the stream; -1 when there is none
};

/// Takes the stream's append lock in `tx` and folds its events.
LoadedTask LoadTaskLocked(pqxx::work& tx, const std::string& task_id);

/// What LoadTasksLocked read.
struct LoadedTasks {
  std::map<std::string, LoadedTask> tasks;  // every task asked for
  std::set<std::string> stored_keys;        // those of the keys asked for the log holds already
};

/// The same for many tasks at once: every stream's lock in key order (so two callers never
/// deadlock), then all streams in one read, and which of `idempotency_keys` are stored (a
/// resent report). One round trip: the reads run after the locks and each takes its snapshot
/// then, so they see what the previous holder committed. Tasks without a stream map to
/// version -1.
LoadedTasks LoadTasksLocked(pqxx::work& tx, const std::vector<std::string>& task_ids,
                            const std::vector<std::string>& idempotency_keys = {});

/// Releases the placements of ended attempts (task, attempt) in one statement.
void ReleasePlacements(pqxx::work& tx,
                       const std::vector<std::pair<std::string, std::int64_t>>& attempts);

/// The append of `d.events` at the version read.
AppendRequest TaskAppend(const LoadedTask& t, const TaskDecision& d, const EventMetadata& meta,
                         std::optional<std::string> idempotency_key);

/// Appends `d.events` at the version read, then, when the attempt ended, releases its
/// placement (the scheduler's capacity). Call with a decision that has events; commit after.
AppendResult ApplyTaskDecision(pqxx::work& tx, EventStore& store, const LoadedTask& t,
                               const TaskDecision& d, const EventMetadata& meta,
                               std::optional<std::string> idempotency_key = std::nullopt);

}  // namespace unidesk::core
