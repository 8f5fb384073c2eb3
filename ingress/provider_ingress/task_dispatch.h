#pragma once
// Tasks over the provider session: the messages that hand an attempt to its node (`assign`,
// `cancel`) and the node's `task` and `log` reports, applied once and fenced by (task, attempt,
// node): a report about an attempt the server no longer runs is recorded as rejected and never
// applied. Blocking: called on the ingress's database threads.

#include <optional>
#include <string>
#include <vector>

#include "core/event_store.h"
#include "core/protocol.h"
#include "core/result.h"
#include "ingress/provider_ingress/ingress_store.h"

namespace unidesk::ingress {

struct ReportApplied {
  std::string rejected;  // empty: applied (now or before)
  /// Sent to the node with the ack: stop an attempt the server no longer runs.
  std::optional<core::protocol::Cancel> stop;
};

/// A node's report of kind "task", as it arrived on a session.
struct TaskReportIn {
  std::string node;
  std::string session;
  core::protocol::Report report;
};

using ReportResult = core::Result<ReportApplied, StoreFailure>;

/// The `assign` frame of an attempt: its spec (canonical JSON) and GPU indices ("[0,2]").
std::string AssignText(const std::string& task, std::int64_t attempt, const std::string& spec,
                       const std::string& gpus_json);

class TaskDispatch {
 public:
  TaskDispatch(std::string conninfo, core::EventStore& events, IngressStore& store);

  /// A report of kind "task": its decision (core/task_lifecycle.h) appended under the task
  /// stream's lock with the idempotency key report/<node>/<outbox>/<seq>.
  ReportResult RecordTaskReport(const std::string& node, const std::string& session,
                                const core::protocol::Report& r);
  /// Many such reports in one transaction (what arrived together, see TaskReportQueue): every
  /// task stream locked at once, each decision taken as if alone. Two reports on one task are
  /// applied in order, in successive transactions. Results are in the order of `in`.
  std::vector<ReportResult> RecordTaskReports(const std::vector<TaskReportIn>& in);
  /// A report of kind "log": task.log on the stream tasklog-<task>, if the attempt is live there.
  core::Result<ReportApplied, StoreFailure> RecordLogReport(const std::string& node,
                                                            const std::string& session,
                                                            const core::protocol::Report& r);
  /// What a node that just said hello is sent: `assign` for every attempt placed on it (the
  /// agent ignores the ones it runs), `cancel` for a cancel requested meanwhile, and `cancel`
  /// for each attempt it runs (`running_tasks` [{task, attempt}]) that the server no longer does.
  core::Result<std::vector<std::string>, StoreFailure> CatchUp(
      const std::string& node, const std::string& running_tasks_json);
  /// The `assign` frame of (task, attempt) when that attempt is placed on `node`.
  core::Result<std::optional<std::string>, StoreFailure> AssignFrame(const std::string& task,
                                                                     std::int64_t attempt,
                                                                     const std::string& node);

 private:
  pqxx::connection& Db();
  bool KeySeen(pqxx::transaction_base& tx, const std::string& key);
  struct Parsed;
  /// Applies reports on distinct tasks in one transaction; fills out[p.index].
  void ApplyGroup(const std::vector<Parsed>& group, std::vector<ReportResult>& out);
  ReportApplied Reject(const std::string& node, const std::string& session,
                       const std::string& reason, const std::string& why,
                       std::optional<core::protocol::Cancel> stop);

  std::string conninfo_;
  core::EventStore& events_;
  IngressStore& store_;
};

}  // namespace unidesk::ingress
