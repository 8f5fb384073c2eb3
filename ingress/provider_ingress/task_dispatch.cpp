#include "ingress/provider_ingress/task_dispatch.h"

#include <rapidjson/document.h>

#include <map>
#include <set>
#include <utility>

#include "core/ids.h"
#include "core/json.h"
#include "core/pg.h"
#include "core/task_stream.h"

namespace unidesk::ingress {

namespace proto = core::protocol;

namespace {

std::string ReportKey(const std::string& node, const proto::Report& r) {
  return "report/" + node + "/" + r.outbox + "/" + std::to_string(r.seq);
}

core::EventMetadata NodeMeta(const std::string& node, const std::string& task) {
  return {"node:" + node, task, "", "server/ingress"};
}

/// "[0,2]" -> {0, 2}.
std::vector<int> IntList(const std::string& json) {
  std::vector<int> out;
  rapidjson::Document d;
  d.Parse(json.c_str());
  if (!d.IsArray()) return out;
  for (const auto& v : d.GetArray()) {
    if (v.IsInt()) out.push_back(v.GetInt());
  }
  return out;
}

}  // namespace

std::string AssignText(const std::string& task, std::int64_t attempt, const std::string& spec,
                       const std::string& gpus_json) {
  return proto::Write(proto::Assign{task, attempt, spec, IntList(gpus_json)});
}

TaskDispatch::TaskDispatch(std::string conninfo, core::EventStore& events, IngressStore& store)
    : conninfo_(std::move(conninfo)), events_(events), store_(store) {}

pqxx::connection& TaskDispatch::Db() { return ThreadConnection(conninfo_); }

bool TaskDispatch::KeySeen(pqxx::transaction_base& tx, const std::string& key) {
  return !tx.exec_params("SELECT 1 FROM idempotency_keys WHERE key = $1", key).empty();
}

ReportApplied TaskDispatch::Reject(const std::string& node, const std::string& session,
                                   const std::string& reason, const std::string& why,
                                   std::optional<proto::Cancel> stop) {
  store_.RecordRejection({reason, why, 0, "", node, session});
  return ReportApplied{why, std::move(stop)};
}

struct TaskDispatch::Parsed {
  std::size_t index;  // in the caller's vector
  const TaskReportIn* in;
  proto::TaskReport report;
  std::string key;
};

ReportResult TaskDispatch::RecordTaskReport(const std::string& node, const std::string& session,
                                            const proto::Report& report) {
  return RecordTaskReports({TaskReportIn{node, session, report}})[0];
}

std::vector<ReportResult> TaskDispatch::RecordTaskReports(const std::vector<TaskReportIn>& in) {
  std::vector<ReportResult> out(in.size(), ReportApplied{});
  std::vector<Parsed> pending;
  for (std::size_t i = 0; i < in.size(); ++i) {
    const TaskReportIn& r = in[i];
    auto parsed = proto::ParseTaskReport(r.report.body_json);
    if (!parsed.ok()) {
      out[i] =
          Reject(r.node, r.session, "bad_report", "bad task report: " + parsed.error().message, {});
    } else if (!core::IsUuid(parsed.value().task)) {
      out[i] = Reject(r.node, r.session, "bad_report",
                      "bad task report: '" + parsed.value().task + "' is not a task id", {});
    } else {
      pending.push_back({i, &r, parsed.value(), ReportKey(r.node, r.report)});
    }
  }
  // Each round takes the first report of every task still pending, so one task's reports are
  // decided in the order they arrived.
  while (!pending.empty()) {
    std::vector<Parsed> group, later;
    std::set<std::string> tasks;
    for (auto& p : pending) {
      (tasks.insert(p.report.task).second ? group : later).push_back(std::move(p));
    }
    ApplyGroup(group, out);
    pending = std::move(later);
  }
  return out;
}

void TaskDispatch::ApplyGroup(const std::vector<Parsed>& group, std::vector<ReportResult>& out) {
  struct Refusal {
    const Parsed* p;
    std::string reason, why;
    std::optional<proto::Cancel> stop;
  };
  std::vector<Refusal> refused;  // recorded after the commit, never under the stream locks
  try {
    pqxx::work tx(Db());
    std::vector<std::string> ids, keys;
    for (const auto& p : group) {
      ids.push_back(p.report.task);
      keys.push_back(p.key);
    }
    core::LoadedTasks read = core::LoadTasksLocked(tx, ids, keys);
    const std::map<std::string, core::LoadedTask>& loaded = read.tasks;
    const std::set<std::string>& seen = read.stored_keys;
    std::vector<core::AppendRequest> requests;
    std::vector<const Parsed*> appended;
    std::vector<bool> ends;
    for (const auto& p : group) {
      if (seen.count(p.key)) continue;  // a resend after a lost ack
      const core::LoadedTask& t = loaded.at(p.report.task);
      core::TaskDecision d = core::DecideReport(t.status, p.in->node, p.report);
      if (!d.rejected.empty()) {
        // The node runs something the server does not: it is told to stop it.
        refused.push_back({&p, "stale_report",
                           "task " + p.report.task + " attempt " +
                               std::to_string(p.report.attempt) + ": " + d.rejected,
                           proto::Cancel{p.report.task, p.report.attempt,
                                         "the server no longer runs this attempt"}});
        continue;
      }
      if (d.events.empty()) continue;  // a repeat, or older than what is known
      requests.push_back(core::TaskAppend(t, d, NodeMeta(p.in->node, p.report.task), p.key));
      appended.push_back(&p);
      ends.push_back(d.attempt_ended);
    }
    std::vector<core::AppendResult> results = events_.AppendAllInTransaction(tx, requests);
    std::vector<std::pair<std::string, std::int64_t>> released;
    bool wrote = false;
    for (std::size_t k = 0; k < results.size(); ++k) {
      const Parsed& p = *appended[k];
      const core::AppendResult& a = results[k];
      if (a.ok()) {
        wrote = true;
        if (ends[k]) released.emplace_back(p.report.task, loaded.at(p.report.task).status.attempt);
        continue;
      }
      std::string why =
          std::string(core::AppendErrorName(a.error().code)) + ": " + a.error().message;
      if (a.error().code == core::AppendError::kUnavailable ||
          a.error().code == core::AppendError::kCommitUnknown ||
          a.error().code == core::AppendError::kStopped) {
        out[p.index] = StoreFailure{StoreError::kUnavailable, why};
      } else {
        refused.push_back({&p, "report_refused", why, {}});
      }
    }
    core::ReleasePlacements(tx, released);
    tx.commit();
    if (wrote) events_.NotifyCommitted();
  } catch (const std::exception& e) {
    DropThreadConnectionIfLost(conninfo_, e);
    if (group.size() > 1 && !core::IsConnectionLost(e)) {
      // One report Postgres refuses must not hold back the others that shared its transaction.
      for (const auto& p : group) ApplyGroup({p}, out);
      return;
    }
    for (const auto& p : group) out[p.index] = StoreUnavailable(e);
    return;
  }
  for (auto& r : refused) {
    out[r.p->index] = Reject(r.p->in->node, r.p->in->session, r.reason, r.why, std::move(r.stop));
  }
}

core::Result<ReportApplied, StoreFailure> TaskDispatch::RecordLogReport(
    const std::string& node, const std::string& session, const proto::Report& report) {
  auto parsed = proto::ParseLogChunk(report.body_json);
  if (!parsed.ok()) {
    return Reject(node, session, "bad_report", "bad log report: " + parsed.error().message, {});
  }
  const proto::LogChunk& c = parsed.value();
  if (!core::IsUuid(c.task)) {
    return Reject(node, session, "bad_report", "bad log report: '" + c.task + "' is not a task id",
                  {});
  }
  std::string key = ReportKey(node, report);
  try {
    {
      pqxx::read_transaction tx(Db());
      if (KeySeen(tx, key)) return ReportApplied{};
      auto live = tx.exec_params(
          "SELECT 1 FROM scheduler_placements WHERE task_id = $1::uuid AND attempt = $2 "
          "AND node = $3",
          c.task, c.attempt, node);
      if (live.empty()) {
        return Reject(node, session, "stale_report",
                      "log of task " + c.task + " attempt " + std::to_string(c.attempt) +
                          ": the attempt is not live on this node",
                      proto::Cancel{c.task, c.attempt, "the server no longer runs this attempt"});
      }
    }
  } catch (const std::exception& e) {
    DropThreadConnectionIfLost(conninfo_, e);
    return StoreUnavailable(e);
  }
  core::AppendRequest req;
  req.stream_id = "tasklog-" + c.task;
  req.idempotency_key = key;
  core::NewEvent e;
  e.type = "task.log";
  e.data_json = proto::ToJson(c);
  e.metadata = NodeMeta(node, c.task);
  req.events.push_back(std::move(e));
  auto r = store_.Append(std::move(req));
  if (!r.ok() && r.error().code == StoreError::kRefused) {
    return Reject(node, session, "report_refused", r.error().message, {});
  }
  if (!r.ok()) return r.error();
  return ReportApplied{};
}

core::Result<std::vector<std::string>, StoreFailure> TaskDispatch::CatchUp(
    const std::string& node, const std::string& running_tasks_json) {
  std::vector<std::string> out;
  std::set<std::pair<std::string, std::int64_t>> placed;
  try {
    pqxx::read_transaction tx(Db());
    for (const auto& row : tx.exec_params(
             "SELECT p.task_id::text, p.attempt, array_to_json(p.gpu_indices)::text, "
             "  (SELECT e.data->'spec' FROM events e WHERE e.stream_id = 'task-' || p.task_id "
             "     AND e.type = 'task.submitted')::text, "
             "  (SELECT e.data->>'reason' FROM events e WHERE e.stream_id = 'task-' || p.task_id "
             "     AND e.type = 'task.cancel_requested' "
             "     AND (e.data->>'attempt')::int = p.attempt LIMIT 1) "
             "FROM scheduler_placements p WHERE p.node = $1 ORDER BY p.placed_at",
             node)) {
      std::string task = row[0].as<std::string>();
      std::int64_t attempt = row[1].as<std::int64_t>();
      placed.insert({task, attempt});
      out.push_back(
          AssignText(task, attempt, row[3].is_null() ? "{}" : row[3].c_str(), row[2].c_str()));
      if (!row[4].is_null()) {
        out.push_back(proto::Write(proto::Cancel{task, attempt, row[4].as<std::string>()}));
      }
    }
  } catch (const std::exception& e) {
    DropThreadConnectionIfLost(conninfo_, e);
    return StoreUnavailable(e);
  }
  rapidjson::Document d;
  d.Parse(running_tasks_json.c_str());
  if (d.IsArray()) {
    for (const auto& v : d.GetArray()) {
      if (!v.IsObject() || !v.HasMember("task") || !v["task"].IsString() ||
          !v.HasMember("attempt") || !v["attempt"].IsInt64()) {
        continue;
      }
      std::pair<std::string, std::int64_t> k{v["task"].GetString(), v["attempt"].GetInt64()};
      if (!placed.count(k)) {
        out.push_back(proto::Write(
            proto::Cancel{k.first, k.second, "the server no longer runs this attempt"}));
      }
    }
  }
  return out;
}

core::Result<std::optional<std::string>, StoreFailure> TaskDispatch::AssignFrame(
    const std::string& task, std::int64_t attempt, const std::string& node) {
  try {
    pqxx::read_transaction tx(Db());
    auto r = tx.exec_params(
        "SELECT array_to_json(p.gpu_indices)::text, "
        "  (SELECT e.data->'spec' FROM events e WHERE e.stream_id = 'task-' || p.task_id "
        "     AND e.type = 'task.submitted')::text "
        "FROM scheduler_placements p WHERE p.task_id = $1::uuid AND p.attempt = $2 "
        "AND p.node = $3",
        task, attempt, node);
    if (r.empty()) return std::optional<std::string>();
    return std::optional<std::string>(
        AssignText(task, attempt, r[0][1].is_null() ? "{}" : r[0][1].c_str(), r[0][0].c_str()));
  } catch (const std::exception& e) {
    DropThreadConnectionIfLost(conninfo_, e);
    return StoreUnavailable(e);
  }
}

}  // namespace unidesk::ingress
