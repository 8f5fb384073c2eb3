#include "ingress/provider_ingress/ingress_store.h"

#include <map>
#include <memory>
#include <set>
#include <tuple>

#include "core/ids.h"
#include "core/json.h"
#include "core/pg.h"

namespace unidesk::ingress {

namespace proto = core::protocol;

namespace {

StoreFailure Unavailable(const std::exception& e) {
  return StoreFailure{StoreError::kUnavailable, std::string("database unavailable: ") + e.what()};
}

/// Transient store errors are worth a retry; the others are about the content and final.
StoreFailure Failure(const core::TypedError<core::AppendError>& e) {
  bool transient = e.code == core::AppendError::kUnavailable ||
                   e.code == core::AppendError::kCommitUnknown ||
                   e.code == core::AppendError::kStopped;
  return StoreFailure{transient ? StoreError::kUnavailable : StoreError::kRefused,
                      std::string(core::AppendErrorName(e.code)) + ": " + e.message};
}

core::NewEvent Event(std::string type, std::string data, core::EventMetadata meta) {
  core::NewEvent e;
  e.type = std::move(type);
  e.data_json = std::move(data);
  e.metadata = std::move(meta);
  return e;
}

}  // namespace

IngressStore::IngressStore(std::string conninfo, std::string ingress_id, core::EventStore& events)
    : conninfo_(std::move(conninfo)), ingress_id_(std::move(ingress_id)), events_(events) {}

namespace {
/// One connection per database thread (and per database, for tests running several servers).
thread_local std::map<std::string, std::unique_ptr<pqxx::connection>> tl_connections;
}  // namespace

pqxx::connection& ThreadConnection(const std::string& conninfo) {
  auto& c = tl_connections[conninfo];
  if (!c || !c->is_open()) c = core::Connect(conninfo);
  return *c;
}

void DropThreadConnectionIfLost(const std::string& conninfo, const std::exception& e) {
  if (core::IsConnectionLost(e)) tl_connections.erase(conninfo);
}

StoreFailure StoreUnavailable(const std::exception& e) { return Unavailable(e); }

pqxx::connection& IngressStore::Db() { return ThreadConnection(conninfo_); }

void IngressStore::DropConnectionIfLost(const std::exception& e) {
  DropThreadConnectionIfLost(conninfo_, e);
}

core::EventMetadata IngressStore::NodeMetadata(const std::string& node,
                                               const std::string& correlation) const {
  return {"node:" + node, correlation, "", "server/ingress"};
}

core::Result<NodeIdentity, StoreFailure> IngressStore::Authenticate(const std::string& token) {
  try {
    pqxx::read_transaction tx(Db());
    std::string hash = core::Sha256Hex(token);
    // The current token, or the previous one within its grace after `nodes rotate`.
    auto r = tx.exec_params(
        "SELECT node, labels::text, revoked_at IS NOT NULL, token_sha256 = $1, "
        "  coalesce(previous_valid_until > now(), false), "
        "  coalesce(to_char(rotated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), '') "
        "FROM node_credentials WHERE token_sha256 = $1 OR previous_token_sha256 = $1",
        hash);
    if (r.empty()) return StoreFailure{StoreError::kUnknownToken, "no node has this token"};
    NodeIdentity id{r[0][0].as<std::string>(), r[0][1].as<std::string>()};
    if (r[0][2].as<bool>()) {
      return StoreFailure{StoreError::kRevokedToken,
                          "the token of node '" + id.node + "' was revoked"};
    }
    if (!r[0][3].as<bool>() && !r[0][4].as<bool>()) {
      return StoreFailure{StoreError::kReplacedToken,
                          "the token of node '" + id.node +
                              "' was replaced (`unidesk nodes rotate` at " +
                              r[0][5].as<std::string>() + "); give the agent the new token"};
    }
    return id;
  } catch (const std::exception& e) {
    DropConnectionIfLost(e);
    return Unavailable(e);
  }
}

core::Result<IngressStore::HelloRecorded, StoreFailure> IngressStore::RecordHello(
    const NodeIdentity& id, const proto::Hello& hello, const std::string& session,
    const std::string& remote) {
  // Operator labels win over the labels an agent declares for itself.
  try {
    pqxx::work tx(Db());
    core::LockStreamForAppend(tx, "node-" + id.node);
    auto prev = tx.exec_params("SELECT session_id::text, status FROM node_liveness WHERE node = $1",
                               id.node);
    std::optional<std::string> previous_session;
    std::string previous_status = "never connected";
    if (!prev.empty()) {
      if (!prev[0][0].is_null()) previous_session = prev[0][0].as<std::string>();
      previous_status = prev[0][1].as<std::string>();
    }
    std::string correlation = core::NewUuid();
    core::AppendRequest req;
    req.stream_id = "node-" + id.node;
    auto meta = NodeMetadata(id.node, correlation);
    if (previous_session) {
      req.events.push_back(Event("node.session_superseded",
                                 core::JsonObject()
                                     .Str("node", id.node)
                                     .Str("old_session", *previous_session)
                                     .Str("new_session", session)
                                     .Done(),
                                 meta));
    }
    req.events.push_back(Event(
        "node.connected",
        core::JsonObject()
            .Str("node", id.node)
            .Str("session", session)
            .Str("ingress", ingress_id_)
            .Str("remote", remote)
            .Str("agent_version", hello.agent_version)
            .Int("protocol_version", hello.protocol_version)
            .Raw("resources", proto::ToJson(hello.resources))
            .Raw("labels", core::MergeJsonObjects(proto::ToJson(hello.labels), id.labels_json))
            .Raw("runtimes", proto::ToJson(hello.runtimes))
            .Raw("running_tasks", hello.running_tasks_json)
            .Raw("health", proto::ToJson(hello.health))
            .Done(),
        meta));
    if (previous_status != "online") {
      req.events.push_back(Event("node.online",
                                 core::JsonObject()
                                     .Str("node", id.node)
                                     .Str("from", previous_status)
                                     .Str("reason", "connected")
                                     .Done(),
                                 meta));
    }
    auto appended = events_.AppendInTransaction(tx, std::move(req));
    if (!appended.ok()) return Failure(appended.error());
    tx.exec_params(
        "INSERT INTO node_liveness (node, session_id, ingress_id, connected_at, last_seen_at, "
        "  health, status, status_since) "
        "VALUES ($1, $2, $3, now(), now(), $4, 'online', now()) "
        "ON CONFLICT (node) DO UPDATE SET session_id = EXCLUDED.session_id, "
        "  ingress_id = EXCLUDED.ingress_id, connected_at = now(), last_seen_at = now(), "
        "  health = EXCLUDED.health, "
        "  status_since = CASE WHEN node_liveness.status = 'online' "
        "                 THEN node_liveness.status_since ELSE now() END, "
        "  status = 'online'",
        id.node, session, ingress_id_, proto::ToJson(hello.health));
    tx.commit();
    events_.NotifyCommitted();
    return HelloRecorded{previous_session, appended.value().first.value};
  } catch (const std::exception& e) {
    DropConnectionIfLost(e);
    return Unavailable(e);
  }
}

core::Result<std::string, StoreFailure> IngressStore::RecordReport(const std::string& node,
                                                                   const std::string& session,
                                                                   const proto::Report& report) {
  if (report.kind != "resources") {
    std::string why = "unknown report kind '" + report.kind + "' (resources, task, log)";
    RecordRejection({"unknown_report_kind", why, 0, "", node, session});
    return why;
  }
  auto resources = proto::ParseResources(report.body_json);
  if (!resources.ok()) {
    std::string why = "bad resources report: " + resources.error().message;
    RecordRejection({"bad_report", why, 0, "", node, session});
    return why;
  }
  core::AppendRequest req;
  req.stream_id = "node-" + node;
  // The key makes a resent report (after a lost ack or an agent restart) a no-op.
  req.idempotency_key = "report/" + node + "/" + report.outbox + "/" + std::to_string(report.seq);
  req.events.push_back(Event("node.resources_changed",
                             core::JsonObject()
                                 .Str("node", node)
                                 .Raw("resources", proto::ToJson(resources.value()))
                                 .Str("outbox", report.outbox)
                                 .Int("seq", report.seq)
                                 .Done(),
                             NodeMetadata(node, core::NewUuid())));
  auto r = Append(std::move(req));
  if (!r.ok() && r.error().code == StoreError::kRefused) {
    // Resending cannot help (e.g. the same (outbox, seq) with another body): ack it as rejected.
    RecordRejection({"report_refused", r.error().message, 0, "", node, session});
    return r.error().message;
  }
  if (!r.ok()) return r.error();
  return std::string();
}

void IngressStore::RecordDisconnect(const std::string& node, const std::string& session, int code,
                                    const std::string& reason, bool agent_stopped) {
  try {
    pqxx::work tx(Db());
    core::LockStreamForAppend(tx, "node-" + node);
    auto live = tx.exec_params(
        "SELECT status FROM node_liveness WHERE node = $1 AND session_id = $2", node, session);
    if (live.empty()) return;  // superseded or revoked: that event said it already
    std::string status = live[0][0].as<std::string>();
    core::AppendRequest req;
    req.stream_id = "node-" + node;
    auto meta = NodeMetadata(node, core::NewUuid());
    req.events.push_back(Event("node.disconnected",
                               core::JsonObject()
                                   .Str("node", node)
                                   .Str("session", session)
                                   .Int("code", code)
                                   .Str("reason", reason)
                                   .Done(),
                               meta));
    bool offline_now = agent_stopped && status != "offline";
    if (offline_now) {
      req.events.push_back(Event("node.offline",
                                 core::JsonObject()
                                     .Str("node", node)
                                     .Str("from", status)
                                     .Str("reason", "the agent shut down")
                                     .Done(),
                                 meta));
    }
    auto appended = events_.AppendInTransaction(tx, std::move(req));
    if (!appended.ok()) return;
    tx.exec_params(
        "UPDATE node_liveness SET session_id = NULL, ingress_id = NULL, "
        "  status = CASE WHEN $2 THEN 'offline' ELSE status END, "
        "  status_since = CASE WHEN $2 THEN now() ELSE status_since END "
        "WHERE node = $1",
        node, offline_now);
    tx.commit();
    events_.NotifyCommitted();
  } catch (const std::exception& e) {
    DropConnectionIfLost(e);
  }
}

void IngressStore::RecordRejection(const Rejection& r) {
  core::AppendRequest req;
  req.stream_id = "ingress";
  req.events.push_back(Event("ingress.rejected",
                             core::JsonObject()
                                 .Str("reason", r.reason)
                                 .Str("detail", r.detail.substr(0, 1024))
                                 .Int("close_code", r.close_code)
                                 .Str("remote", r.remote)
                                 .Str("node", r.node)
                                 .Str("session", r.session)
                                 .Str("ingress", ingress_id_)
                                 .Done(),
                             {r.node.empty() ? "remote:" + r.remote : "node:" + r.node,
                              core::NewUuid(), "", "server/ingress"}));
  (void)Append(std::move(req));
}

core::Result<std::vector<StaleSession>, StoreFailure> IngressStore::FlushHeartbeats(
    const std::vector<HeartbeatEntry>& beats) {
  std::vector<std::string> nodes, sessions, health;
  for (const auto& b : beats) {
    nodes.push_back(b.node);
    sessions.push_back(b.session);
    health.push_back(b.health_json);
  }
  std::vector<StaleSession> stale;
  std::vector<std::tuple<std::string, std::string, std::string>> changed;  // node, new, old
  try {
    pqxx::work tx(Db());
    // Rows are locked in node order (the input is sorted) so concurrent flushes cannot deadlock.
    auto r = tx.exec_params(
        "WITH h AS (SELECT * FROM unnest($1::text[], $2::uuid[], $3::jsonb[]) "
        "             AS h(node, session_id, health)), "
        "old AS (SELECT l.node, l.health FROM node_liveness l JOIN h USING (node, session_id) "
        "        ORDER BY l.node FOR UPDATE OF l) "
        "UPDATE node_liveness l SET last_seen_at = now(), health = h.health "
        "FROM h JOIN old USING (node) WHERE l.node = h.node "
        "RETURNING l.node, l.health::text, old.health::text, "
        "  old.health IS DISTINCT FROM h.health",
        core::PgArrayLiteral(nodes), core::PgArrayLiteral(sessions), core::PgArrayLiteral(health));
    std::set<std::string> refreshed;
    for (const auto& row : r) {
      refreshed.insert(row[0].as<std::string>());
      if (row[3].as<bool>()) {
        changed.emplace_back(row[0].as<std::string>(), row[1].as<std::string>(),
                             row[2].as<std::string>());
      }
    }
    std::vector<std::string> missing;
    for (const auto& b : beats) {
      if (!refreshed.count(b.node)) missing.push_back(b.node);
    }
    if (!missing.empty()) {
      auto gone = tx.exec_params(
          "SELECT c.node, c.revoked_at IS NOT NULL FROM node_credentials c "
          "WHERE c.node = ANY($1::text[])",
          core::PgArrayLiteral(missing));
      std::map<std::string, bool> revoked;
      for (const auto& row : gone) revoked[row[0].as<std::string>()] = row[1].as<bool>();
      for (const auto& b : beats) {
        if (!refreshed.count(b.node)) stale.push_back({b.node, b.session, revoked[b.node]});
      }
    }
    tx.commit();
  } catch (const std::exception& e) {
    DropConnectionIfLost(e);
    return Unavailable(e);
  }
  for (const auto& [node, now_health, old_health] : changed) {
    core::AppendRequest req;
    req.stream_id = "node-" + node;
    req.events.push_back(Event("node.health_changed",
                               core::JsonObject()
                                   .Str("node", node)
                                   .Raw("health", now_health)
                                   .Raw("previous", old_health)
                                   .Done(),
                               NodeMetadata(node, core::NewUuid())));
    (void)Append(std::move(req));
  }
  return stale;
}

core::Result<core::Unit, StoreFailure> IngressStore::Ping() {
  try {
    pqxx::nontransaction tx(Db());
    tx.exec("SELECT 1");
    return core::Unit{};
  } catch (const std::exception& e) {
    DropConnectionIfLost(e);
    return Unavailable(e);
  }
}

core::Result<core::AppendOutcome, StoreFailure> IngressStore::Append(core::AppendRequest request) {
  auto r = events_.Append(std::move(request));
  if (!r.ok()) return Failure(r.error());
  return r.value();
}

}  // namespace unidesk::ingress
