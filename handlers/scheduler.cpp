#include "handlers/scheduler.h"

#include <rapidjson/document.h>
#include <unistd.h>

#include <map>

#include "core/ids.h"
#include "core/json.h"
#include "core/pg.h"
#include "core/protocol.h"
#include "handlers/lost_attempts.h"
#include "handlers/scheduling_rules.h"

namespace unidesk::handlers {

namespace {

using Millis = std::chrono::milliseconds;

std::map<std::string, std::string> ParseLabels(const char* json) {
  std::map<std::string, std::string> out;
  rapidjson::Document d;
  d.Parse(json ? json : "{}");
  if (!d.IsObject()) return out;
  for (auto m = d.MemberBegin(); m != d.MemberEnd(); ++m) {
    if (m->value.IsString()) out[m->name.GetString()] = m->value.GetString();
  }
  return out;
}

/// "{0,2}" (an int[] column as text) -> {0, 2}.
std::vector<int> ParseIntArray(const std::string& text) {
  std::vector<int> out;
  std::string digits;
  for (char c : text) {
    if (std::isdigit(static_cast<unsigned char>(c)) || c == '-') {
      digits += c;
    } else if (!digits.empty()) {
      out.push_back(std::stoi(digits));
      digits.clear();
    }
  }
  if (!digits.empty()) out.push_back(std::stoi(digits));
  return out;
}

std::string IntArray(const std::vector<int>& v, char open = '{', char close = '}') {
  std::string s(1, open);
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s + close;
}

/// The row of a task the pass needs.
struct QueuedRow {
  SchedTask task;
  std::int64_t version = 0;
  std::string state;  // queued | cancelling
  int attempt = 0;
  std::int64_t queued_ms = 0;
  std::string cancel_reason;
};

/// Names this copy in the events it appends (audit: which scheduler decided).
const std::string& Source() {
  static const std::string source = "server/scheduler/" + std::to_string(getpid());
  return source;
}

/// One event on the task's stream, expecting the version the pass read: a task that moved on
/// since then is refused (version conflict), never decided twice.
core::AppendRequest Fenced(const QueuedRow& q, const std::string& type, std::string data) {
  core::NewEvent e;
  e.type = type;
  e.data_json = std::move(data);
  e.metadata = {"handler:scheduler", q.task.id, "", Source()};
  return {"task-" + q.task.id, core::ExpectedVersion::Exactly(q.version), {e}, std::nullopt};
}

}  // namespace

Scheduler::Scheduler(std::string conninfo, SchedulerSettings settings, core::EventStore& store,
                     core::LoggerPtr log)
    : conninfo_(std::move(conninfo)), settings_(settings), store_(store), log_(std::move(log)) {}

Scheduler::~Scheduler() { Stop(); }

void Scheduler::Start() {
  thread_ = std::thread([this] { Run(); });
}

void Scheduler::Stop() {
  stopping_ = true;
  if (thread_.joinable()) thread_.join();
}

void Scheduler::Run() {
  bool failing = false;
  while (!stopping_) {
    try {
      if (!conn_) conn_ = core::Connect(conninfo_);
      SweepLostAttempts(*conn_, store_, settings_.accept_timeout, log_);
      PassOutcome o = PassOnce();
      if (failing) log_->info("scheduler: Postgres is back; passes resume");
      failing = false;
      if (o.placed || o.cancelled || o.conflicts) {
        log_->debug("scheduler pass: {} placed, {} waiting changed, {} cancelled, {} skipped",
                    o.placed, o.waiting, o.cancelled, o.conflicts);
      }
    } catch (const std::exception& e) {
      if (!failing) log_->warn("scheduler: {}; retrying", e.what());
      failing = true;
      conn_.reset();
    }
    for (auto waited = Millis(0); waited < settings_.interval && !stopping_; waited += Millis(10)) {
      std::this_thread::sleep_for(Millis(10));
    }
  }
  conn_.reset();
}

PassOutcome Scheduler::PassOnce() {
  if (!conn_) conn_ = core::Connect(conninfo_);
  PassOutcome out;
  pqxx::work tx(*conn_);
  // Passes take turns; the lock is released at commit, after this pass's rows are visible.
  tx.exec_params("SELECT pg_advisory_xact_lock($1)", core::LockKey("scheduler", "pass"));

  std::vector<QueuedRow> queue;
  for (const auto& r : tx.exec_params(
           "SELECT t.id, t.version, t.state, t.priority, t.submitted_position, t.cpu_millis, "
           "  t.memory_bytes, t.gpus, t.labels::text, coalesce(t.waiting_reason, ''), t.attempt, "
           "  (extract(epoch FROM clock_timestamp() - t.submitted_at) * 1000)::bigint, "
           "  coalesce(t.cancel_reason, '') "
           "FROM tasks t WHERE t.state IN ('queued', 'cancelling') "
           "  AND NOT EXISTS (SELECT 1 FROM scheduler_placements p WHERE p.task_id = t.id) "
           "ORDER BY t.priority DESC, t.submitted_position LIMIT $1",
           settings_.max_tasks_per_pass)) {
    QueuedRow q;
    q.task.id = r[0].c_str();
    q.version = r[1].as<std::int64_t>();
    q.state = r[2].c_str();
    q.task.priority = r[3].as<int>();
    q.task.submitted_position = r[4].as<std::int64_t>(0);
    q.task.cpu_millis = r[5].as<std::int64_t>(0);
    q.task.memory_bytes = r[6].as<std::int64_t>(0);
    q.task.gpus = r[7].as<int>(0);
    q.task.labels = ParseLabels(r[8].is_null() ? "{}" : r[8].c_str());
    q.task.waiting_reason = r[9].c_str();
    q.attempt = r[10].as<int>();
    q.queued_ms = r[11].as<std::int64_t>(0);
    q.cancel_reason = r[12].c_str();
    queue.push_back(std::move(q));
  }

  // Queued tasks whose cancel was requested end here; the rest are scheduled.
  std::vector<core::AppendRequest> requests;
  enum class Kind { kAssigned, kWaiting, kCancelled };
  struct Pending {
    Kind kind;
    const QueuedRow* row;
    Placement placement;
  };
  std::vector<Pending> pending;
  std::map<std::string, const QueuedRow*> by_id;
  std::vector<SchedTask> to_place;
  for (const QueuedRow& q : queue) {
    by_id[q.task.id] = &q;
    if (q.state == "cancelling") {
      requests.push_back(
          Fenced(q, "task.cancelled",
                 core::JsonObject()
                     .Str("task", q.task.id)
                     .Int("attempt", q.attempt)
                     .Str("reason", q.cancel_reason.empty() ? "cancelled before it was placed"
                                                            : q.cancel_reason)
                     .Done()));
      pending.push_back({Kind::kCancelled, &q, {}});
    } else {
      to_place.push_back(q.task);
    }
  }

  if (!to_place.empty()) {
    std::vector<SchedNode> nodes;
    std::map<std::string, std::size_t> node_at;
    for (const auto& r :
         tx.exec("SELECT name, status, coalesce(labels::text, '{}'), coalesce(resources::text, "
                 "'{}'), coalesce(health->>'docker_ok', 'false') FROM nodes")) {
      SchedNode n;
      n.name = r[0].c_str();
      n.status = r[1].c_str();
      n.labels = ParseLabels(r[2].c_str());
      auto res = core::protocol::ParseResources(r[3].c_str());
      if (res.ok()) {
        n.cpu_millis = static_cast<std::int64_t>(res.value().cpu_cores) * 1000;
        n.memory_bytes = res.value().memory_bytes;
        for (const auto& g : res.value().gpus) n.gpu_indices.push_back(g.index);
      }
      n.docker_ok = std::string(r[4].c_str()) == "true";
      node_at[n.name] = nodes.size();
      nodes.push_back(std::move(n));
    }
    for (const auto& r : tx.exec("SELECT node, sum(cpu_millis), sum(memory_bytes), "
                                 "  coalesce((SELECT array_agg(g) FROM scheduler_placements q, "
                                 "    unnest(q.gpu_indices) g WHERE q.node = p.node), '{}') "
                                 "FROM scheduler_placements p GROUP BY node")) {
      auto it = node_at.find(r[0].c_str());
      if (it == node_at.end()) continue;
      SchedNode& n = nodes[it->second];
      n.used_cpu_millis = r[1].as<std::int64_t>();
      n.used_memory_bytes = r[2].as<std::int64_t>();
      n.used_gpu_indices = ParseIntArray(r[3].c_str());
    }
    SchedulePlan plan = Schedule(to_place, nodes);
    for (const Placement& p : plan.placements) {
      const QueuedRow& q = *by_id.at(p.task_id);
      requests.push_back(Fenced(
          q, "task.assigned",
          core::JsonObject()
              .Str("task", q.task.id)
              .Int("attempt", q.attempt + 1)
              .Str("node", p.node)
              .Raw("resources", core::JsonObject()
                                    .Num("cpu", static_cast<double>(q.task.cpu_millis) / 1000.0)
                                    .Int("memory_mb", q.task.memory_bytes >> 20)
                                    .Int("gpus", q.task.gpus)
                                    .Done())
              .Raw("gpu_indices", IntArray(p.gpu_indices, '[', ']'))
              .Int("queued_ms", q.queued_ms)
              .Done()));
      pending.push_back({Kind::kAssigned, &q, p});
    }
    for (const Wait& w : plan.waiting) {
      const QueuedRow& q = *by_id.at(w.task_id);
      if (q.task.waiting_reason == w.reason) continue;  // recorded already
      requests.push_back(
          Fenced(q, "task.waiting",
                 core::JsonObject().Str("task", q.task.id).Str("reason", w.reason).Done()));
      pending.push_back({Kind::kWaiting, &q, {}});
    }
  }

  // Appends first (their xid orders delivery), then the placement rows of those that landed.
  std::vector<core::AppendResult> results;
  if (!requests.empty()) results = store_.AppendAllInTransaction(tx, requests);
  for (std::size_t i = 0; i < results.size(); ++i) {
    const Pending& p = pending[i];
    if (!results[i].ok()) {
      if (results[i].error().code != core::AppendError::kVersionConflict) {
        throw std::runtime_error(std::string("scheduler append failed: ") +
                                 core::AppendErrorName(results[i].error().code) + ": " +
                                 results[i].error().message);
      }
      ++out.conflicts;
      continue;
    }
    switch (p.kind) {
      case Kind::kAssigned:
        tx.exec_params(
            "INSERT INTO scheduler_placements (task_id, attempt, node, cpu_millis, memory_bytes, "
            "gpu_indices) VALUES ($1, $2, $3, $4, $5, $6::int[])",
            p.row->task.id, p.row->attempt + 1, p.placement.node, p.row->task.cpu_millis,
            p.row->task.memory_bytes, IntArray(p.placement.gpu_indices));
        ++out.placed;
        break;
      case Kind::kWaiting:
        ++out.waiting;
        break;
      case Kind::kCancelled:
        ++out.cancelled;
        break;
    }
  }
  // Capacity of ended tasks returns to the pool.
  out.released = static_cast<int>(
      tx.exec("DELETE FROM scheduler_placements p USING tasks t WHERE t.id = p.task_id AND "
              "t.state IN ('cancelled', 'succeeded', 'failed', 'timed_out', 'lost')")
          .affected_rows());
  tx.commit();
  if (!requests.empty()) store_.NotifyCommitted();
  return out;
}

}  // namespace unidesk::handlers
