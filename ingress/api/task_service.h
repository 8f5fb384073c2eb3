#pragma once
// Task commands of the core API: submit, cancel and retry. Each is one event appended under the
// task stream's rules; the CLI calls these now, the REST routes (/api/v1/tasks) will too.

#include <functional>
#include <pqxx/pqxx>
#include <string>

#include "core/event_store.h"
#include "core/result.h"
#include "core/task_spec.h"

namespace unidesk::ingress::api {

enum class TaskErrorCode {
  kInvalid,              // a field is wrong (400); `field` names it
  kIdempotencyConflict,  // the key was used for a different submission (409)
  kNotFound,             // no such task (404)
  kConflict,             // the task's state does not allow it (409)
  kUnavailable,          // Postgres is down or the store stopped (503)
};
struct TaskError {
  TaskErrorCode code;
  std::string field;
  std::string message;
};
/// A short stable name: "invalid", "idempotency_conflict", "not_found", "conflict", "unavailable".
const char* TaskErrorName(TaskErrorCode c);

struct SubmitRequest {
  std::string body_json;        // the submission (core/task_spec.h)
  std::string idempotency_key;  // empty: a fresh one (no repeat protection)
  std::string actor;            // "cli:alice", "user:alice"
  std::string source;           // "cli", "server/api"
};
struct Submitted {
  std::string task_id;
  bool repeated = false;  // the key was seen with the same submission: nothing new written
  core::TaskSpec spec;
};

/// The task id a key maps to for an actor: a UUID made from SHA-256(actor, key).
std::string TaskIdFor(const std::string& actor, const std::string& idempotency_key);

using SubmitResult = core::Result<Submitted, TaskError>;

/// Validates and appends task.submitted, waiting for the commit.
SubmitResult SubmitTask(core::EventStore& store, const core::TaskLimits& limits,
                        const SubmitRequest& request);

/// SubmitTask without waiting: `done` runs once the append's group has committed, on the event
/// store's writer thread (or in this call when the request is refused before any I/O), so it must
/// only hand the result on.
void SubmitTaskAsync(core::EventStore& store, const core::TaskLimits& limits,
                     const SubmitRequest& request, std::function<void(SubmitResult)> done);

struct CancelOutcome {
  std::string state;  // "cancelling" (requested now or before)
  bool already = false;
};
/// Who asks, and through what: the event's actor and source ("cli", "server/api").
struct Requester {
  std::string actor;
  std::string source;
};

/// Records task.cancel_requested unless the task has ended. The scheduler ends a task that was
/// not placed yet; a placed one is stopped by its node. On `conn`, the caller's (the API's
/// worker keeps one per thread): a connection per call would cost a Postgres backend start each.
core::Result<CancelOutcome, TaskError> CancelTask(pqxx::connection& conn, core::EventStore& store,
                                                  const std::string& task_id,
                                                  const std::string& reason, const Requester& by);

struct RetryOutcome {
  int next_attempt = 0;
  std::string ended_as;  // the state the task had ended in
};
/// Records task.requeued for an ended task: the scheduler places attempt `next_attempt`.
core::Result<RetryOutcome, TaskError> RetryTask(pqxx::connection& conn, core::EventStore& store,
                                                const std::string& task_id, const Requester& by);

/// True for a task id in canonical UUID form.
bool IsTaskId(const std::string& id);

}  // namespace unidesk::ingress::api
