#include "core/task_stream.h"

#include <set>

#include "core/ids.h"
#include "core/pg.h"

namespace unidesk::core {

LoadedTask LoadTaskLocked(pqxx::work& tx, const std::string& task_id) {
  std::string stream = "task-" + task_id;
  LockStreamForAppend(tx, stream);
  std::vector<TaskEventView> events;
  LoadedTask out;
  for (const auto& row :
       tx.exec_params("SELECT type, data::text, stream_version FROM events WHERE stream_id = $1 "
                      "ORDER BY stream_version",
                      stream)) {
    events.push_back({row[0].as<std::string>(), row[1].as<std::string>()});
    out.version = row[2].as<std::int64_t>();
  }
  out.status = FoldTask(events);
  return out;
}

std::map<std::string, LoadedTask> LoadTasksLocked(pqxx::work& tx,
                                                  const std::vector<std::string>& task_ids) {
  std::map<std::string, LoadedTask> out;
  if (task_ids.empty()) return out;
  std::set<std::int64_t> keys;
  std::vector<std::string> streams;
  for (const auto& id : task_ids) {
    streams.push_back("task-" + id);
    keys.insert(LockKey("stream", streams.back()));
  }
  LockAllInOrder(tx, keys);
  std::map<std::string, std::vector<TaskEventView>> events;
  for (const auto& row :
       ExecPrepared(tx, "load_tasks",
                    "SELECT substr(stream_id, 6), type, data::text, stream_version FROM events "
                    "WHERE stream_id = ANY($1::text[]) ORDER BY stream_id, stream_version",
                    PgArrayLiteral(streams))) {
    std::string id = row[0].as<std::string>();
    events[id].push_back({row[1].as<std::string>(), row[2].as<std::string>()});
    out[id].version = row[3].as<std::int64_t>();
  }
  for (const auto& id : task_ids) out[id].status = FoldTask(events[id]);
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
