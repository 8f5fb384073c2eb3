#include "ingress/api/task_service.h"

#include <future>
#include <pqxx/pqxx>

#include "core/ids.h"
#include "core/json.h"
#include "core/pg.h"
#include "core/task_stream.h"

namespace unidesk::ingress::api {

namespace {

TaskError Err(TaskErrorCode c, std::string message, std::string field = "") {
  return TaskError{c, std::move(field), std::move(message)};
}

TaskError FromAppend(const core::TypedError<core::AppendError>& e) {
  switch (e.code) {
    case core::AppendError::kIdempotencyMismatch:
      return Err(TaskErrorCode::kIdempotencyConflict,
                 "this Idempotency-Key was used for a different submission");
    case core::AppendError::kUnavailable:
    case core::AppendError::kStopped:
    case core::AppendError::kCommitUnknown:
      return Err(TaskErrorCode::kUnavailable, e.message);
    case core::AppendError::kEventTooLarge:
      return Err(TaskErrorCode::kInvalid, "the submission is too large: " + e.message);
    default:
      return Err(TaskErrorCode::kConflict,
                 std::string(core::AppendErrorName(e.code)) + ": " + e.message);
  }
}

}  // namespace

const char* TaskErrorName(TaskErrorCode c) {
  switch (c) {
    case TaskErrorCode::kInvalid:
      return "invalid";
    case TaskErrorCode::kIdempotencyConflict:
      return "idempotency_conflict";
    case TaskErrorCode::kNotFound:
      return "not_found";
    case TaskErrorCode::kConflict:
      return "conflict";
    case TaskErrorCode::kUnavailable:
      return "unavailable";
  }
  return "unknown";
}

std::string TaskIdFor(const std::string& actor, const std::string& idempotency_key) {
  std::string h = core::Sha256Hex(actor + '\n' + idempotency_key);
  // RFC 4122 layout: version 5 (name-based, SHA), variant 10.
  h[12] = '5';
  h[16] = "89ab"[std::stoi(h.substr(16, 1), nullptr, 16) & 3];
  return h.substr(0, 8) + "-" + h.substr(8, 4) + "-" + h.substr(12, 4) + "-" + h.substr(16, 4) +
         "-" + h.substr(20, 12);
}

bool IsTaskId(const std::string& id) {
  if (id.size() != 36) return false;
  for (std::size_t i = 0; i < id.size(); ++i) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? id[i] != '-' : !std::isxdigit(static_cast<unsigned char>(id[i]))) return false;
  }
  return true;
}

SubmitResult SubmitTask(core::EventStore& store, const core::TaskLimits& limits,
                        const SubmitRequest& request) {
  auto done = std::make_shared<std::promise<SubmitResult>>();
  std::future<SubmitResult> result = done->get_future();
  SubmitTaskAsync(store, limits, request,
                  [done](SubmitResult r) { done->set_value(std::move(r)); });
  return result.get();
}

void SubmitTaskAsync(core::EventStore& store, const core::TaskLimits& limits,
                     const SubmitRequest& request, std::function<void(SubmitResult)> done) {
  auto spec = core::ParseTaskSpec(request.body_json, limits);
  if (!spec.ok()) {
    return done(Err(TaskErrorCode::kInvalid, spec.error().message, spec.error().field));
  }
  if (request.idempotency_key.size() > 255) {
    return done(Err(TaskErrorCode::kInvalid, "at most 255 characters", "Idempotency-Key"));
  }
  std::string key = request.idempotency_key.empty() ? core::NewUuid() : request.idempotency_key;
  Submitted out;
  out.task_id = TaskIdFor(request.actor, key);
  out.spec = spec.value();
  core::NewEvent e;
  e.type = "task.submitted";
  e.data_json = core::JsonObject()
                    .Str("task", out.task_id)
                    .Raw("spec", core::ToJson(out.spec))
                    .Str("submitted_by", request.actor)
                    .Done();
  e.metadata = {request.actor, out.task_id, "", request.source};
  // Built before the callback takes `out`: argument evaluation order is unspecified.
  core::AppendRequest append{
      "task-" + out.task_id, core::ExpectedVersion::NoStream(), {e}, "task.submit/" + out.task_id};
  store.AppendAsync(std::move(append),
                    [out = std::move(out), done = std::move(done)](core::AppendResult r) mutable {
                      if (!r.ok()) return done(FromAppend(r.error()));
                      out.repeated = r.value().repeated;
                      done(std::move(out));
                    });
}

core::Result<CancelOutcome, TaskError> CancelTask(pqxx::connection& conn, core::EventStore& store,
                                                  const std::string& task_id,
                                                  const std::string& reason, const Requester& by) {
  if (!IsTaskId(task_id)) {
    return Err(TaskErrorCode::kInvalid, "'" + task_id + "' is not a task id (a UUID)", "task");
  }
  if (reason.size() > 1000) return Err(TaskErrorCode::kInvalid, "at most 1000 bytes", "reason");
  try {
    pqxx::work tx(conn);
    // Under the stream's lock nothing can be appended between this read and the append.
    core::LoadedTask t = core::LoadTaskLocked(tx, task_id);
    const core::TaskStatus& s = t.status;
    if (!s.exists) return Err(TaskErrorCode::kNotFound, "no task " + task_id);
    if (s.Ended()) {
      return Err(TaskErrorCode::kConflict, "task " + task_id + " has ended (" + s.state + ")");
    }
    if (s.cancel_requested) return CancelOutcome{"cancelling", true};
    bool placed = s.AttemptLive();
    core::TaskDecision d;
    d.events.push_back({"task.cancel_requested", core::JsonObject()
                                                     .Str("task", task_id)
                                                     .Str("reason", reason)
                                                     .Int("attempt", placed ? s.attempt : 0)
                                                     .Str("node", placed ? s.node : "")
                                                     .Done()});
    auto a = core::ApplyTaskDecision(tx, store, t, d, {by.actor, task_id, "", by.source});
    if (!a.ok()) return FromAppend(a.error());
    tx.commit();
    store.NotifyCommitted();
    return CancelOutcome{"cancelling", false};
  } catch (const pqxx::broken_connection& e) {
    return Err(TaskErrorCode::kUnavailable, std::string("Postgres unavailable: ") + e.what());
  }
}

core::Result<RetryOutcome, TaskError> RetryTask(pqxx::connection& conn, core::EventStore& store,
                                                const std::string& task_id, const Requester& by) {
  if (!IsTaskId(task_id)) {
    return Err(TaskErrorCode::kInvalid, "'" + task_id + "' is not a task id (a UUID)", "task");
  }
  try {
    pqxx::work tx(conn);
    core::LoadedTask t = core::LoadTaskLocked(tx, task_id);
    if (!t.status.exists) return Err(TaskErrorCode::kNotFound, "no task " + task_id);
    core::TaskDecision d = core::DecideManualRetry(t.status, by.actor);
    if (!d.rejected.empty()) {
      return Err(TaskErrorCode::kConflict, "task " + task_id + ": " + d.rejected);
    }
    auto a = core::ApplyTaskDecision(tx, store, t, d, {by.actor, task_id, "", by.source});
    if (!a.ok()) return FromAppend(a.error());
    tx.commit();
    store.NotifyCommitted();
    return RetryOutcome{t.status.attempt + 1, t.status.state};
  } catch (const pqxx::broken_connection& e) {
    return Err(TaskErrorCode::kUnavailable, std::string("Postgres unavailable: ") + e.what());
  }
}

}  // namespace unidesk::ingress::api
