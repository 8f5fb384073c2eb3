#include "core/task_stream.h"

#include <set>

#include "core/ids.h"
#include "core/pg.h"

namespace unidesk::core {

namespace {

// What the fold reads of an event: its data, except that of a submission it needs the task id
// and the retry policy alone. The spec is most of a stream's bytes, and every report, loss and
// request reads its task's stream again.
const std::string kFoldColumns =
    "type, CASE WHEN type = 'task.submitted' THEN jsonb_build_object('task', data->'task', "
    "'spec', jsonb_build_object('retry', data->'spec'->'retry'))::text ELSE data::text END";

}  // namespace

LoadedTask LoadTaskLocked(pqxx::work& tx, const std::string& task_id) {
  std::string stream = "task-" + task_id;
  LockStreamForAppend(tx, stream);
  std::vector<TaskEventView> events;
  LoadedTask out;
  for (const auto& row : tx.exec_params("SELECT " + kFoldColumns +
                                            ", stream_version FROM events WHERE stream_id = $1 "
                                            "ORDER BY stream_version",
                                        stream)) {
    events.push_back({row[0].as<std::string>(), row[1].as<std::string>()});
    out.version = row[2].as<std::int64_t>();
  }
  out.status = FoldTask(events);
  return out;
}

LoadedTasks LoadTasksLocked(pqxx::work& tx, const std::vector<std::string>& task_ids,
                            const std::vector<std::string>& idempotency_keys) {
  LoadedTasks out;
  if (task_ids.empty()) return out;
  std::set<std::int64_t> keys;
  std::vector<std::string> streams;
  for (const auto& id : task_ids) {
    streams.push_back("task-" + id);
    keys.insert(LockKey("stream", streams.back()));
  }
  // A pipeline sends plain SQL: the arrays go in as quoted literals.
  pqxx::pipeline p(tx);
  p.retain(3);
  auto locks = p.insert(LockAllInOrderSql(tx, keys));
  auto rows =
      p.insert("SELECT substr(stream_id, 6), " + kFoldColumns +
               ", stream_version FROM events WHERE stream_id = ANY(" +
               tx.quote(PgArrayLiteral(streams)) + "::text[]) ORDER BY stream_id, stream_version");
  pqxx::pipeline::query_id stored = 0;
  if (!idempotency_keys.empty()) {
    stored = p.insert("SELECT key FROM idempotency_keys WHERE key = ANY(" +
                      tx.quote(PgArrayLiteral(idempotency_keys)) + "::text[])");
  }
  p.complete();
  p.retrieve(locks);  // in order: an error surfaces as itself
  std::map<std::string, std::vector<TaskEventView>> events;
  for (const auto& row : p.retrieve(rows)) {
    std::string id = row[0].as<std::string>();
    events[id].push_back({row[1].as<std::string>(), row[2].as<std::string>()});
    out.tasks[id].version = row[3].as<std::int64_t>();
  }
  if (!idempotency_keys.empty()) {
    for (const auto& row : p.retrieve(stored)) out.stored_keys.insert(row[0].as<std::string>());
  }
  for (const auto& id : task_ids) out.tasks[id].status = FoldTask(events[id]);
  return out;
}

void ReleasePlacements(pqxx::work& tx,
                       const std::vector<std::pair<std::string, std::int64_t>>& attempts) {
  if (attempts.empty()) return;
  std::vector<std::string> tasks, numbers;
  for (const auto& [task, attempt] : attempts) {
    tasks.push_back(task);
    numbers.push_back(std::to_string(attempt));
  }
  ExecPrepared(
      tx, "release_placements",
      "DELETE FROM scheduler_placements p USING unnest($1::uuid[], $2::int[]) AS e(task, attempt) "
      "WHERE p.task_id = e.task AND p.attempt = e.attempt",
      PgArrayLiteral(tasks), PgArrayLiteral(numbers));
}

AppendRequest TaskAppend(const LoadedTask& t, const TaskDecision& d, const EventMetadata& meta,
                         std::optional<std::string> idempotency_key) {
  AppendRequest req;
  req.stream_id = "task-" + t.status.task_id;
  req.expected = ExpectedVersion::Exactly(t.version);
  req.idempotency_key = std::move(idempotency_key);
  for (const auto& e : d.events) {
    NewEvent n;
    n.type = e.type;
    n.data_json = e.data_json;
    n.metadata = meta;
    req.events.push_back(std::move(n));
  }
  return req;
}

AppendResult ApplyTaskDecision(pqxx::work& tx, EventStore& store, const LoadedTask& t,
                               const TaskDecision& d, const EventMetadata& meta,
                               std::optional<std::string> idempotency_key) {
  auto r = store.AppendInTransaction(tx, TaskAppend(t, d, meta, std::move(idempotency_key)));
  if (r.ok() && d.attempt_ended) ReleasePlacements(tx, {{t.status.task_id, t.status.attempt}});
  return r;
}

}  // namespace unidesk::core
