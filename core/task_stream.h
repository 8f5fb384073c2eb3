#pragma once
// A task's stream as the authority on where the task is: read and folded under the stream's
// append lock, then the decision appended in the same transaction (core/task_lifecycle.h). Used
// by every writer that decides from the task's state: node reports (ingress), lost attempts
// (scheduler), cancel and retry requests (core API).

#include <map>
#include <optional>
#include <pqxx/pqxx>
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

/// The same for many tasks at once: every stream's lock in key order (so two callers never
/// deadlock), then all streams in one read. Tasks without a stream map to version -1.
std::map<std::string, LoadedTask> LoadTasksLocked(pqxx::work& tx,
                                                  const std::vector<std::string>& task_ids);

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
