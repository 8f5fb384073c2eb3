#include "handlers/lost_attempts.h"

#include "core/ids.h"
#include "core/task_stream.h"

namespace unidesk::handlers {

int SweepLostAttempts(pqxx::connection& conn, core::EventStore& store,
                      std::chrono::milliseconds accept_timeout, const core::LoggerPtr& log) {
  struct Candidate {
    std::string task, node, reason;
    int attempt = 0;
  };
  std::vector<Candidate> found;
  {
    pqxx::read_transaction tx(conn);
    for (const auto& r : tx.exec_params(
             "SELECT p.task_id::text, p.attempt, p.node, "
             "  CASE WHEN c.revoked_at IS NOT NULL THEN 'the node''s token was revoked' "
             "       WHEN l.status IN ('offline', 'dormant') THEN 'the node went offline' "
             "       ELSE 'the node did not acknowledge the assignment within ' || "
             "            ($1::bigint / 1000) || ' s' END "
             "FROM scheduler_placements p "
             "LEFT JOIN node_liveness l ON l.node = p.node "
             "LEFT JOIN node_credentials c ON c.node = p.node "
             "LEFT JOIN tasks t ON t.id = p.task_id "
             "WHERE c.revoked_at IS NOT NULL OR l.status IN ('offline', 'dormant') "
             "   OR (t.state = 'assigned' AND t.attempt = p.attempt "
             "       AND p.placed_at < now() - $1::bigint * interval '1 millisecond') "
             "ORDER BY p.placed_at LIMIT 500",
             static_cast<long long>(accept_timeout.count()))) {
      found.push_back(
          {r[0].as<std::string>(), r[2].as<std::string>(), r[3].as<std::string>(), r[1].as<int>()});
    }
  }
  int ended = 0;
  for (const Candidate& c : found) {
    pqxx::work tx(conn);
    core::LoadedTask t = core::LoadTaskLocked(tx, c.task);
    // The acknowledgement may have landed since the projection was read.
    if (c.reason.rfind("the node did not", 0) == 0 && t.status.state != "assigned") continue;
    core::TaskDecision d = core::DecideLost(t.status, c.node, c.attempt, c.reason);
    if (d.events.empty()) {
      // The attempt ended already; only its placement row was left.
      tx.exec_params("DELETE FROM scheduler_placements WHERE task_id = $1 AND attempt = $2", c.task,
                     c.attempt);
      tx.commit();
      continue;
    }
    auto a = core::ApplyTaskDecision(tx, store, t, d,
                                     {"handler:scheduler", c.task, "", "server/scheduler"});
    if (!a.ok()) {
      log->warn("task {}: could not record the lost attempt {}: {}", c.task, c.attempt,
                a.error().message);
      continue;
    }
    tx.commit();
    store.NotifyCommitted();
    log->info("task {}: attempt {} on {} lost ({})", c.task, c.attempt, c.node, c.reason);
    ++ended;
  }
  return ended;
}

}  // namespace unidesk::handlers
