#pragma once
// Everything the provider ingress writes to or reads from Postgres. Blocking: called on the
// ingress's database threads, never on a socket thread. Each calling thread has a connection.

#include <optional>
#include <string>
#include <vector>

#include "core/event_store.h"
#include "core/protocol.h"
#include "core/result.h"

namespace unidesk::ingress {

/// The node a token belongs to.
struct NodeIdentity {
  std::string node;
  std::string labels_json = "{}";  // labels set by the operator (`nodes add --label`)
};

enum class StoreError {
  kUnknownToken,
  kReplacedToken,  // a rotated-out token past its grace
  kRevokedToken,
  kUnavailable,  // Postgres unreachable or the write failed: nothing recorded; retry later
  kRefused,      // the event store refused the content (too large, conflicting key): final
};

using StoreFailure = core::TypedError<StoreError>;

/// One heartbeat to fold into the liveness rows.
struct HeartbeatEntry {
  std::string node;
  std::string session;
  std::string health_json;
};

/// A session whose node has moved on: another session took over, or the token was revoked.
struct StaleSession {
  std::string node;
  std::string session;
  bool revoked = false;
};

/// What a rejection event says (`ingress.rejected`).
struct Rejection {
  std::string reason;  // stable name: token_missing, frame_too_big, rate_limited, ...
  std::string detail;
  int close_code = 0;  // WebSocket close code, or the HTTP status before the upgrade
  std::string remote;
  std::string node;
  std::string session;
};

/// The calling database thread's connection to `conninfo` (opened on first use or after loss).
pqxx::connection& ThreadConnection(const std::string& conninfo);
/// Forgets the thread's connection when `e` says it was lost.
void DropThreadConnectionIfLost(const std::string& conninfo, const std::exception& e);
StoreFailure StoreUnavailable(const std::exception& e);

class IngressStore {
 public:
  IngressStore(std::string conninfo, std::string ingress_id, core::EventStore& events);

  core::Result<NodeIdentity, StoreFailure> Authenticate(const std::string& token);
  struct HelloRecorded {
    std::optional<std::string> superseded;  // the session it took over from
    std::int64_t position = 0;  // first of its events: any older node.connected sorts before
  };
  /// Records an accepted hello: the liveness row now names `session`; events node.connected
  /// (after node.session_superseded when another session was live, and followed by node.online
  /// when the node was not online).
  core::Result<HelloRecorded, StoreFailure> RecordHello(const NodeIdentity& id,
                                                        const core::protocol::Hello& hello,
                                                        const std::string& session,
                                                        const std::string& remote);
  /// Applies a report once per (outbox, seq): returns "" when applied (now or before), else why
  /// it was rejected (recorded as ingress.rejected).
  core::Result<std::string, StoreFailure> RecordReport(const std::string& node,
                                                       const std::string& session,
                                                       const core::protocol::Report& report);
  /// The session ended. Writes only when it is still the node's live session; `agent_stopped`
  /// (the agent said goodbye) marks the node offline at once.
  void RecordDisconnect(const std::string& node, const std::string& session, int code,
                        const std::string& reason, bool agent_stopped);
  void RecordRejection(const Rejection& r);
  /// Refreshes the liveness rows of live sessions in one statement; records health changes.
  /// Returns the sessions that are no longer their node's live one.
  core::Result<std::vector<StaleSession>, StoreFailure> FlushHeartbeats(
      const std::vector<HeartbeatEntry>& beats);
  /// Ok when Postgres answers.
  core::Result<core::Unit, StoreFailure> Ping();

  core::Result<core::AppendOutcome, StoreFailure> Append(core::AppendRequest request);

 private:
  pqxx::connection& Db();
  void DropConnectionIfLost(const std::exception& e);
  core::EventMetadata NodeMetadata(const std::string& node, const std::string& correlation) const;

  std::string conninfo_;
  std::string ingress_id_;
  core::EventStore& events_;
};

}  // namespace unidesk::ingress
