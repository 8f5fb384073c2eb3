#pragma once
// A task's stream as the authority on where the task is: read and folded under the stream's
// append lock, then the decision appended in the same transaction (core/task_lifecycle.h). Used
// by every writer that decides from the task's state: node reports (ingress), lost attempts
// (scheduler), cancel and retry requests (core API).

#include <optional>
#include <pqxx/pqxx>
#include <string>

#include "core/event_store.h"
#include "core/task_lifecycle.h"

namespace unidesk::core {

struct LoadedTask {
  TaskStatus status;
  std::int64_t version = -1;  // of the stream; -1 when there is none
};

/// Takes the stream's append lock in `tx` and folds its events.
LoadedTask LoadTaskLocked(pqxx::work& tx, const std::string& task_id);

/// Appends `d.events` at the version read, then, when the attempt ended, releases its
/// placement (the scheduler's capacity). Call with a decision that has events; commit after.
AppendResult ApplyTaskDecision(pqxx::work& tx, EventStore& store, const LoadedTask& t,
                               const TaskDecision& d, const EventMetadata& meta,
                               std::optional<std::string> idempotency_key = std::nullopt);

}  // namespace unidesk::core
