#include "core/task_stream.h"

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

AppendResult ApplyTaskDecision(pqxx::work& tx, EventStore& store, const LoadedTask& t,
                               const TaskDecision& d, const EventMetadata& meta,
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
  auto r = store.AppendInTransaction(tx, std::move(req));
  if (r.ok() && d.attempt_ended) {
    tx.exec_params("DELETE FROM scheduler_placements WHERE task_id = $1 AND attempt = $2",
                   t.status.task_id, t.status.attempt);
  }
  return r;
}

}  // namespace unidesk::core
