#include "handlers/liveness_monitor.h"

#include "core/ids.h"
#include "core/json.h"
#include "core/pg.h"
#include "core/thread_name.h"

namespace unidesk::handlers {

LivenessMonitor::LivenessMonitor(std::string conninfo, LivenessSettings settings,
                                 core::EventStore& store, core::LoggerPtr log)
    : conninfo_(std::move(conninfo)), settings_(settings), store_(store), log_(std::move(log)) {}

LivenessMonitor::~LivenessMonitor() { Stop(); }

void LivenessMonitor::Start() {
  stopping_ = false;
  thread_ = std::thread([this] {
    core::NameThisThread("ud-liveness");
    Run();
  });
}

void LivenessMonitor::Stop() {
  stopping_ = true;
  if (thread_.joinable()) thread_.join();
}

void LivenessMonitor::Run() {
  while (!stopping_) {
    try {
      EvaluateOnce();
    } catch (const std::exception& e) {
      log_->warn("liveness monitor: {}; reconnecting", e.what());
      conn_.reset();
      owner_ = false;
    }
    for (auto waited = Millis(0); waited < settings_.tick && !stopping_; waited += Millis(20)) {
      std::this_thread::sleep_for(Millis(20));
    }
  }
  conn_.reset();
}

int LivenessMonitor::EvaluateOnce() {
  if (!conn_) conn_ = core::Connect(conninfo_);
  if (!owner_) {
    pqxx::nontransaction tx(*conn_);
    auto r = tx.exec_params("SELECT pg_try_advisory_lock($1), now()::text",
                            core::LockKey("monitor", "liveness"));
    if (!r[0][0].as<bool>()) return 0;
    // The takeover time is Postgres's: the grace is measured by the same clock as heartbeats.
    takeover_at_ = r[0][1].as<std::string>();
    owner_ = true;
    log_->info("liveness monitor evaluates (grace {} ms, offline after {} ms)",
               settings_.grace.count(), settings_.offline_after.count());
  }
  pqxx::result rows;
  {
    pqxx::read_transaction tx(*conn_);
    rows = tx.exec_params(
        "SELECT l.node, l.status, l.session_id IS NOT NULL, "
        "  (extract(epoch FROM now() - l.last_seen_at) * 1000)::bigint, "
        "  (extract(epoch FROM now() - l.status_since) * 1000)::bigint, "
        "  (extract(epoch FROM now() - $2::timestamptz) * 1000)::bigint "
        "FROM node_liveness l JOIN node_credentials c USING (node) "
        "WHERE c.revoked_at IS NULL AND ("
        "  (l.status = 'online' AND l.last_seen_at < now() - $1 * interval '1 millisecond') "
        "  OR l.status IN ('suspect', 'offline') "
        "  OR (l.status = 'dormant' AND l.session_id IS NOT NULL)) "
        "ORDER BY l.node",
        static_cast<long long>(settings_.suspect_after.count()), takeover_at_);
  }
  int recorded = 0;
  for (const auto& row : rows) {
    LivenessView v;
    v.status = row[1].as<std::string>();
    v.has_session = row[2].as<bool>();
    v.silent = Millis(row[3].as<long long>());
    v.in_status = Millis(row[4].as<long long>());
    v.since_takeover = Millis(row[5].as<long long>());
    auto d = DecideLiveness(v, settings_);
    if (d && RecordTransition(row[0].as<std::string>(), v.status, *d)) ++recorded;
  }
  return recorded;
}

bool LivenessMonitor::RecordTransition(const std::string& node, const std::string& old_status,
                                       const LivenessDecision& d) {
  pqxx::work tx(*conn_);
  core::AppendRequest req;
  req.stream_id = "node-" + node;
  core::NewEvent e;
  e.type = d.event_type;
  e.data_json =
      core::JsonObject().Str("node", node).Str("from", old_status).Str("reason", d.reason).Done();
  e.metadata = {"handler:monitor", core::NewUuid(), "", "server/monitor"};
  req.events.push_back(std::move(e));
  auto appended = store_.AppendInTransaction(tx, std::move(req));
  if (!appended.ok()) {
    log_->warn("node {}: could not record {}: {}", node, d.event_type, appended.error().message);
    return false;
  }
  // Conditional on the status we decided from: a hello or another copy may have moved it.
  auto r = tx.exec_params(
      "UPDATE node_liveness SET status = $2, status_since = now() WHERE node = $1 AND status = $3",
      node, d.new_status, old_status);
  if (r.affected_rows() != 1) return false;  // rolled back with tx
  tx.commit();
  store_.NotifyCommitted();
  log_->info("node {}: {} -> {} ({})", node, old_status, d.new_status, d.reason);
  return true;
}

}  // namespace unidesk::handlers
