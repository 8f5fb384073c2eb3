#pragma once
// A task's lifecycle as decisions over its event stream: fold the stream into where the task
// is, then decide what a node's report, a lost node or a retry request appends. Pure: the
// callers read the stream under its lock and append what is decided in the same transaction.
//
//   submitted -> assigned -> accepted -> preparing (git, build) -> running
//     -> succeeded | failed | timed_out | cancelled | lost
//   failed | timed_out | lost -> requeued (retry policy, or `tasks retry`) -> assigned ...

#include <cstdint>
#include <string>
#include <vector>

#include "core/protocol.h"
#include "core/task_spec.h"

namespace unidesk::core {

/// One event of a task stream, as the fold needs it.
struct TaskEventView {
  std::string type;
  std::string data_json;
};

/// Where a task is. `attempt` and `node` name the latest attempt (0 and "" before the first).
struct TaskStatus {
  bool exists = false;
  std::string task_id;
  std::string state;  // queued, assigned, accepted, preparing, running, or an end state
  int attempt = 0;
  std::string node;
  std::string phase;  // preparing: git or build
  bool cancel_requested = false;
  std::string cancel_reason;
  RetryPolicy retry;
  /// True when nothing more will happen unless someone retries it.
  bool Ended() const;
  /// True while an attempt is placed on `node` and has not ended.
  bool AttemptLive() const;
};

TaskStatus FoldTask(const std::vector<TaskEventView>& events);

/// An event to append to the task's stream.
struct TaskEventOut {
  std::string type;
  std::string data_json;
};

/// What a report, a loss or a retry does.
struct TaskDecision {
  std::string rejected;  // non-empty: refused (stale attempt, ended task); nothing appended
  std::vector<TaskEventOut> events;
  bool attempt_ended = false;  // the attempt's placement is to be released
};

/// What happens when an attempt ends with `failure` class: retried (a `task.requeued` event)
/// when the policy covers the class's category and attempts remain; never after a cancel.
/// Categories: exit, start, git, build -> failed; timeout -> timed_out; lost, runtime -> lost.
const char* RetryCategory(const std::string& failure);
/// Who is to blame for a failure class: "task" (exit, start, timeout) or "infrastructure".
const char* Blame(const std::string& failure);

/// A node's report on an attempt. Reports of another attempt or another node, or after the
/// attempt ended, are rejected; repeats and reports older than the known state append nothing.
TaskDecision DecideReport(const TaskStatus& s, const std::string& node,
                          const protocol::TaskReport& r);

/// The attempt on `node` is lost (the node went offline, did not acknowledge, was revoked).
/// Nothing when that attempt is no longer the live one.
TaskDecision DecideLost(const TaskStatus& s, const std::string& node, int attempt,
                        const std::string& reason);

/// A person asks for another attempt of an ended task (`unidesk tasks retry`).
TaskDecision DecideManualRetry(const TaskStatus& s, const std::string& actor);

}  // namespace unidesk::core
