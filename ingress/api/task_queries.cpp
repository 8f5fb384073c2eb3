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
    "coalesce(extract(epoch FROM now() - t.submitted_at)::float8, 0), "
    "coalesce(t.phase, ''), coalesce(t.exit_code, -1), coalesce(t.failure_class, ''), "
    "coalesce(t.blame, ''), coalesce(t.reason, ''), coalesce(t.image, ''), "
    "coalesce(t.code_fetched::text, 'null'), coalesce(t.env_fetched::text, 'null'), "
    "coalesce(t.image_built::text, 'null'), coalesce(t.git_ms, -1), coalesce(t.build_ms, -1), "
    "coalesce(t.prepare_ms, -1), coalesce(t.run_ms, -1), "
    "coalesce(to_char(t.started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), '')";

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
      .Str("phase", r[17].c_str())
      .Int("exit_code", r[18].as<std::int64_t>())
      .Str("failure_class", r[19].c_str())
      .Str("blame", r[20].c_str())
      .Str("reason", r[21].c_str())
      .Str("image", r[22].c_str())
      .Raw("code_fetched", r[23].c_str())
      .Raw("env_fetched", r[24].c_str())
      .Raw("image_built", r[25].c_str())
      .Int("git_ms", r[26].as<std::int64_t>())
      .Int("build_ms", r[27].as<std::int64_t>())
      .Int("prepare_ms", r[28].as<std::int64_t>())
      .Int("run_ms", r[29].as<std::int64_t>())
      .Str("started_at", r[30].c_str())
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

std::optional<TaskLogPage> ReadTaskLog(pqxx::transaction_base& tx, const std::string& id,
                                       long long attempt, std::int64_t after, long long limit) {
  // The state first: chunks committed before the ending that state shows are all read below.
  auto t = tx.exec_params("SELECT state, attempt FROM tasks WHERE id = $1::uuid", id);
  if (t.empty()) return std::nullopt;
  TaskLogPage page;
  page.state = t[0][0].as<std::string>();
  page.latest = t[0][1].as<long long>();
  page.attempt = attempt > 0 ? attempt : page.latest;
  page.next = after;
  if (page.attempt == 0) return page;  // never placed: no output yet
  auto rows = tx.exec_params(
      "SELECT stream_version, data->>'stream', data->>'text', (data->>'seq')::bigint "
      "FROM events WHERE stream_id = $1 AND stream_version > $2 "
      "  AND (data->>'attempt')::bigint = $3 ORDER BY stream_version LIMIT $4",
      "tasklog-" + id, after, page.attempt, limit);
  for (const auto& r : rows) {
    page.next = r[0].as<std::int64_t>();
    page.chunks.push_back({r[3].as<std::int64_t>(), r[1].c_str(), r[2].c_str()});
  }
  bool ended = page.latest > page.attempt ||
               (page.latest == page.attempt &&
                (page.state == "succeeded" || page.state == "failed" || page.state == "timed_out" ||
                 page.state == "cancelled" || page.state == "lost" || page.state == "queued"));
  page.complete = ended && static_cast<long long>(rows.size()) < limit;
  return page;
}

}  // namespace unidesk::ingress::api
