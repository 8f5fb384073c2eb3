#include "ingress/api/task_queries.h"

#include "core/json.h"

namespace unidesk::ingress::api {

const char* const kTaskColumns =
    "t.id::text, t.name, t.state, t.priority, coalesce(t.node, ''), t.attempt, "
    "coalesce(t.waiting_reason, ''), coalesce(t.spec::text, '{}'), coalesce(t.submitted_by, ''), "
    "coalesce(to_char(t.submitted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), ''), "
    "coalesce(to_char(t.assigned_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), ''), "
    "coalesce(to_char(t.finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), ''), "
    "coalesce(t.cancel_reason, ''), coalesce(t.gpu_indices::text, '[]'), "
    "coalesce(t.queued_ms, -1), t.version, "
    "coalesce(extract(epoch FROM now() - t.submitted_at)::float8, 0)";

std::string TaskJson(const pqxx::row& r) {
  return core::JsonObject()
      .Str("id", r[0].c_str())
      .Str("name", r[1].c_str())
      .Str("state", r[2].c_str())
      .Int("priority", r[3].as<int>())
      .Str("node", r[4].c_str())
      .Int("attempt", r[5].as<int>())
      .Str("waiting_reason", r[6].c_str())
      .Raw("spec", r[7].c_str())
      .Str("submitted_by", r[8].c_str())
      .Str("submitted_at", r[9].c_str())
      .Str("assigned_at", r[10].c_str())
      .Str("finished_at", r[11].c_str())
      .Str("cancel_reason", r[12].c_str())
      .Raw("gpu_indices", r[13].c_str())
      .Int("queued_ms", r[14].as<std::int64_t>())
      .Int("version", r[15].as<std::int64_t>())
      .Done();
}

std::optional<std::string> FindTaskJson(pqxx::transaction_base& tx, const std::string& id) {
  auto rows = tx.exec_params(
      std::string("SELECT ") + kTaskColumns + " FROM tasks t WHERE t.id = $1::uuid", id);
  if (rows.empty()) return std::nullopt;
  return TaskJson(rows[0]);
}

std::vector<std::string> ListTaskJson(pqxx::transaction_base& tx, const std::string& state,
                                      long long limit) {
  std::vector<std::string> out;
  for (const auto& r : tx.exec_params(std::string("SELECT ") + kTaskColumns +
                                          " FROM tasks t WHERE ($1 = '' OR t.state = $1) "
                                          "ORDER BY t.submitted_at DESC NULLS LAST, t.id LIMIT $2",
                                      state, limit)) {
    out.push_back(TaskJson(r));
  }
  return out;
}

}  // namespace unidesk::ingress::api
