// `unidesk nodes add|revoke|list|show`: node tokens and the fleet's state.

#include <openssl/rand.h>

#include <cstdio>

#include "core/duration.h"
#include "core/event_store.h"
#include "core/ids.h"
#include "core/json.h"
#include "core/pg.h"
#include "core/protocol.h"
#include "ingress/cli/commands.h"

namespace unidesk::ingress {

namespace {

/// "udn_" and 32 random bytes in unpadded base64url (43 characters).
std::string NewNodeToken() {
  static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  unsigned char bytes[33] = {0};
  if (RAND_bytes(bytes, 32) != 1) throw std::runtime_error("no randomness for a token");
  std::string out = "udn_";
  for (int i = 0; i < 33; i += 3) {
    std::uint32_t v = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    for (int k = 3; k >= 0; --k) out.push_back(kAlphabet[(v >> (6 * k)) & 63]);
  }
  return out.substr(0, 47);
}

core::EventStore MakeStore(const CliContext& ctx) {
  core::EventStoreOptions o;
  o.conninfo = ctx.conninfo;
  o.writer_connections = 1;
  return core::EventStore(o, ctx.catalogue, ctx.log);
}

const char* kNodeColumns =
    "n.name, n.status, coalesce(n.status_reason, ''), coalesce(n.labels::text, '{}'), "
    "coalesce(n.resources::text, 'null'), coalesce(n.health::text, 'null'), "
    "coalesce(n.agent_version, ''), coalesce(n.session_id::text, ''), "
    "coalesce(to_char(n.connected_since AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
    "''), "
    "coalesce(to_char(l.last_seen_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), ''), "
    "coalesce(extract(epoch FROM now() - l.last_seen_at)::float8, -1), "
    "coalesce(to_char(n.status_since AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), ''), "
    "coalesce(to_char(n.registered_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), ''), "
    "coalesce(n.runtimes::text, '[]'), coalesce(n.protocol_version, 0)";

std::string NodeJson(const pqxx::row& r) {
  return core::JsonObject()
      .Str("name", r[0].c_str())
      .Str("status", r[1].c_str())
      .Str("status_reason", r[2].c_str())
      .Str("status_since", r[11].c_str())
      .Raw("labels", r[3].c_str())
      .Raw("resources", r[4].c_str())
      .Raw("health", r[5].c_str())
      .Raw("runtimes", r[13].c_str())
      .Str("agent_version", r[6].c_str())
      .Int("protocol_version", r[14].as<int>())
      .Str("session", r[7].c_str())
      .Str("connected_since", r[8].c_str())
      .Str("last_heartbeat", r[9].c_str())
      .Str("registered_at", r[12].c_str())
      .Done();
}

/// "8 cpu, 31.2 GiB, 2 gpu" from a resources object.
std::string ResourceSummary(const std::string& json) {
  auto r = core::protocol::ParseResources(json);
  if (!r.ok()) return "-";
  char buf[96];
  std::snprintf(buf, sizeof buf, "%d cpu, %.1f GiB, %zu gpu", r.value().cpu_cores,
                static_cast<double>(r.value().memory_bytes) / (1024.0 * 1024 * 1024),
                r.value().gpus.size());
  return buf;
}

}  // namespace

int RunNodesAdd(const CliContext& ctx, const Args& args) {
  const std::string& name = args.positional.at(2);
  if (!core::protocol::IsValidNodeName(name)) {
    return Fail("'" + name +
                    "' is not a node name: 1-63 of a-z 0-9 - _ . starting with a letter "
                    "or digit",
                2);
  }
  std::map<std::string, std::string> labels;
  for (const auto& kv : args.GetAll("label")) {
    auto eq = kv.find('=');
    std::string key = kv.substr(0, eq);
    if (eq == std::string::npos || !core::protocol::IsValidLabelKey(key) ||
        kv.size() - eq - 1 > core::protocol::kMaxLabelValue) {
      return Fail("--label '" + kv + "': expected KEY=VALUE, KEY of A-Z a-z 0-9 - _ . /", 2);
    }
    labels[key] = kv.substr(eq + 1);
  }
  try {
    std::string token = NewNodeToken();
    std::string hash = core::Sha256Hex(token);
    auto store = MakeStore(ctx);
    auto conn = core::Connect(ctx.conninfo);
    pqxx::work tx(*conn);
    core::NewEvent e;
    e.type = "node.registered";
    e.data_json = core::JsonObject()
                      .Str("node", name)
                      .Raw("labels", core::protocol::ToJson(labels))
                      .Str("token_sha256", hash)
                      .Done();
    e.metadata = {ctx.actor, core::NewUuid(), "", "cli"};
    auto r = store.AppendInTransaction(
        tx, {"node-" + name, core::ExpectedVersion::NoStream(), {e}, std::nullopt});
    if (!r.ok()) {
      if (r.error().code == core::AppendError::kVersionConflict) {
        return Fail("node '" + name + "' exists already (`unidesk nodes show " + name + "`)");
      }
      return Fail("could not record the node: " + r.error().message);
    }
    tx.exec_params("INSERT INTO node_credentials (node, token_sha256, labels) VALUES ($1, $2, $3)",
                   name, hash, core::protocol::ToJson(labels));
    tx.commit();
    store.NotifyCommitted();
    store.Stop();
    if (args.Has("json")) {
      std::printf("%s\n", core::JsonObject().Str("node", name).Str("token", token).Done().c_str());
    } else {
      std::printf(
          "node %s registered. Its token (shown once, only a hash is kept):\n\n  %s\n\n"
          "Start the agent on the node with:\n"
          "  unidesk-provider --server ws://THIS-SERVER:8470 --name %s --token-file FILE\n",
          name.c_str(), token.c_str(), name.c_str());
    }
    return 0;
  } catch (const pqxx::broken_connection& e) {
    return Fail(DatabaseDown(ctx.conninfo, e));
  } catch (const std::exception& e) {
    return Fail(e.what());
  }
}

int RunNodesRevoke(const CliContext& ctx, const Args& args) {
  const std::string& name = args.positional.at(2);
  try {
    auto store = MakeStore(ctx);
    auto conn = core::Connect(ctx.conninfo);
    pqxx::work tx(*conn);
    core::LockStreamForAppend(tx, "node-" + name);
    auto cred =
        tx.exec_params("SELECT revoked_at IS NOT NULL FROM node_credentials WHERE node = $1", name);
    if (cred.empty()) return Fail("no node named '" + name + "' (`unidesk nodes list`)");
    if (cred[0][0].as<bool>()) return Fail("the token of node '" + name + "' is revoked already");
    core::NewEvent e;
    e.type = "node.token_revoked";
    e.data_json = core::JsonObject().Str("node", name).Done();
    e.metadata = {ctx.actor, core::NewUuid(), "", "cli"};
    auto r = store.AppendInTransaction(tx, {"node-" + name, core::ExpectedVersion::Any(), {e}, {}});
    if (!r.ok()) return Fail("could not record the revocation: " + r.error().message);
    tx.exec_params("UPDATE node_credentials SET revoked_at = now() WHERE node = $1", name);
    // The live session no longer matches: the ingress closes it (bus tail, or the next heartbeat).
    tx.exec_params(
        "UPDATE node_liveness SET session_id = NULL, status = 'revoked', status_since = now() "
        "WHERE node = $1",
        name);
    tx.commit();
    store.NotifyCommitted();
    store.Stop();
    if (args.Has("json")) {
      std::printf("%s\n",
                  core::JsonObject().Str("node", name).Bool("revoked", true).Done().c_str());
    } else {
      std::printf("node %s: token revoked; its session is closed and reconnects are refused\n",
                  name.c_str());
    }
    return 0;
  } catch (const pqxx::broken_connection& e) {
    return Fail(DatabaseDown(ctx.conninfo, e));
  } catch (const std::exception& e) {
    return Fail(e.what());
  }
}

int RunNodesRotate(const CliContext& ctx, const Args& args) {
  const std::string& name = args.positional.at(2);
  std::string grace_text = args.Get("grace").value_or("1h");
  std::optional<std::chrono::milliseconds> grace;
  if (grace_text == "0" || grace_text == "0s") {
    grace = std::chrono::milliseconds(0);
  } else {
    grace = core::ParseDuration(grace_text);
  }
  if (!grace) return Fail("--grace: '" + grace_text + "' is not a duration (0s, 15m, 1h, 7d)", 2);
  try {
    auto store = MakeStore(ctx);
    auto conn = core::Connect(ctx.conninfo);
    pqxx::work tx(*conn);
    core::LockStreamForAppend(tx, "node-" + name);
    auto cred = tx.exec_params(
        "SELECT revoked_at IS NOT NULL, (now() + $2 * interval '1 millisecond')::text "
        "FROM node_credentials WHERE node = $1",
        name, static_cast<long long>(grace->count()));
    if (cred.empty()) return Fail("no node named '" + name + "' (`unidesk nodes list`)");
    if (cred[0][0].as<bool>()) {
      return Fail("the token of node '" + name + "' is revoked; a revoked node stays revoked");
    }
    std::string token = NewNodeToken();
    std::string hash = core::Sha256Hex(token);
    core::NewEvent e;
    e.type = "node.token_rotated";
    e.data_json = core::JsonObject()
                      .Str("node", name)
                      .Str("token_sha256", hash)
                      .Int("grace_ms", grace->count())
                      .Done();
    e.metadata = {ctx.actor, core::NewUuid(), "", "cli"};
    auto r = store.AppendInTransaction(tx, {"node-" + name, core::ExpectedVersion::Any(), {e}, {}});
    if (!r.ok()) return Fail("could not record the rotation: " + r.error().message);
    auto until = tx.exec_params(
        "UPDATE node_credentials SET previous_token_sha256 = token_sha256, "
        "  previous_valid_until = now() + $3 * interval '1 millisecond', token_sha256 = $2, "
        "  rotated_at = now() WHERE node = $1 "
        "RETURNING to_char(previous_valid_until AT TIME ZONE 'UTC', "
        "  'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')",
        name, hash, static_cast<long long>(grace->count()));
    tx.commit();
    store.NotifyCommitted();
    store.Stop();
    std::string valid_until = until[0][0].as<std::string>();
    if (args.Has("json")) {
      std::printf("%s\n", core::JsonObject()
                              .Str("node", name)
                              .Str("token", token)
                              .Str("previous_valid_until", valid_until)
                              .Done()
                              .c_str());
    } else {
      std::printf(
          "node %s: new token (shown once, only a hash is kept):\n\n  %s\n\n"
          "The previous token keeps working for new connections until %s; the live session\n"
          "goes on. Put the new token in the agent's token file and restart the agent.\n",
          name.c_str(), token.c_str(), valid_until.c_str());
    }
    return 0;
  } catch (const pqxx::broken_connection& e) {
    return Fail(DatabaseDown(ctx.conninfo, e));
  } catch (const std::exception& e) {
    return Fail(e.what());
  }
}

int RunNodesList(const CliContext& ctx, const Args& args) {
  bool json = args.Has("json");
  try {
    auto conn = core::Connect(ctx.conninfo);
    pqxx::read_transaction tx(*conn);
    auto rows = tx.exec(std::string("SELECT ") + kNodeColumns +
                        " FROM nodes n LEFT JOIN node_liveness l ON l.node = n.name "
                        "ORDER BY n.name");
    if (!json) {
      std::printf("%-20s %-10s %-28s %-10s %s\n", "NAME", "STATUS", "RESOURCES", "HEARTBEAT",
                  "REASON");
    }
    for (const auto& r : rows) {
      if (json) {
        std::printf("%s\n", NodeJson(r).c_str());
        continue;
      }
      double age = r[10].as<double>();
      char beat[32] = "-";
      if (age >= 0) std::snprintf(beat, sizeof beat, "%.0fs ago", age);
      std::printf("%-20s %-10s %-28s %-10s %s\n", r[0].c_str(), r[1].c_str(),
                  ResourceSummary(r[4].c_str()).c_str(), beat, r[2].c_str());
    }
    return 0;
  } catch (const pqxx::broken_connection& e) {
    return Fail(DatabaseDown(ctx.conninfo, e));
  } catch (const std::exception& e) {
    return Fail(e.what());
  }
}

int RunNodesShow(const CliContext& ctx, const Args& args) {
  const std::string& name = args.positional.at(2);
  try {
    auto conn = core::Connect(ctx.conninfo);
    pqxx::read_transaction tx(*conn);
    auto rows = tx.exec_params(std::string("SELECT ") + kNodeColumns +
                                   " FROM nodes n LEFT JOIN node_liveness l ON l.node = n.name "
                                   "WHERE n.name = $1",
                               name);
    if (rows.empty()) return Fail("no node named '" + name + "' (`unidesk nodes list`)");
    const auto& r = rows[0];
    if (args.Has("json")) {
      std::printf("%s\n", NodeJson(r).c_str());
      return 0;
    }
    std::printf("name:             %s\n", r[0].c_str());
    std::printf("status:           %s since %s (%s)\n", r[1].c_str(), r[11].c_str(), r[2].c_str());
    std::printf("labels:           %s\n", r[3].c_str());
    std::printf("resources:        %s\n", r[4].c_str());
    std::printf("health:           %s\n", r[5].c_str());
    std::printf("runtimes:         %s\n", r[13].c_str());
    std::printf("agent version:    %s (protocol %s)\n", r[6].c_str(), r[14].c_str());
    std::printf("session:          %s\n", r[7].size() ? r[7].c_str() : "-");
    std::printf("connected since:  %s\n", r[8].size() ? r[8].c_str() : "-");
    std::printf("last heartbeat:   %s\n", r[9].size() ? r[9].c_str() : "-");
    std::printf("registered at:    %s\n", r[12].c_str());
    return 0;
  } catch (const pqxx::broken_connection& e) {
    return Fail(DatabaseDown(ctx.conninfo, e));
  } catch (const std::exception& e) {
    return Fail(e.what());
  }
}

}  // namespace unidesk::ingress
