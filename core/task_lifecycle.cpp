#include "core/task_lifecycle.h"

#include "core/json.h"

namespace unidesk::core {

namespace {

/// Lifecycle order of the live states: a report never moves a task backwards.
int Rank(const std::string& state) {
  if (state == "assigned") return 1;
  if (state == "accepted") return 2;
  if (state == "preparing") return 3;
  if (state == "running") return 4;
  return 0;
}

bool IsEndState(const std::string& s) {
  return s == "succeeded" || s == "failed" || s == "timed_out" || s == "cancelled" || s == "lost";
}

void Base(const std::string& task, int attempt, const std::string& node, JsonObject& o) {
  o.Str("task", task).Int("attempt", attempt).Str("node", node);
}

/// Appends the retry decision after an attempt ended in `category` (failed, timed_out, lost).
void MaybeRequeue(const TaskStatus& s, const std::string& task, const std::string& category,
                  TaskDecision& d) {
  if (s.cancel_requested) return;
  bool covered = (category == std::string("failed") && s.retry.on_failed) ||
                 (category == std::string("timed_out") && s.retry.on_timed_out) ||
                 (category == std::string("lost") && s.retry.on_lost);
  if (!covered || s.attempt >= s.retry.max_attempts) return;
  d.events.push_back(
      {"task.requeued",
       JsonObject()
           .Str("task", task)
           .Int("attempt", s.attempt)
           .Int("next_attempt", s.attempt + 1)
           .Str("reason", "retry policy: " + category + ", " + std::to_string(s.attempt) + " of " +
                              std::to_string(s.retry.max_attempts) + " attempts used")
           .Str("by", "policy")
           .Done()});
}

}  // namespace

bool TaskStatus::Ended() const { return IsEndState(state); }

bool TaskStatus::AttemptLive() const { return Rank(state) > 0; }

TaskStatus FoldTask(const std::vector<TaskEventView>& events) {
  TaskStatus s;
  for (const auto& e : events) {
    JsonReader d(e.data_json);
    if (e.type == "task.submitted") {
      s.exists = true;
      s.state = "queued";
      s.task_id = d.Str("task").value_or("");
      s.retry = RetryPolicyOf(d.Raw("spec").value_or("{}"));
    } else if (e.type == "task.assigned") {
      s.state = "assigned";
      s.attempt = static_cast<int>(d.Int("attempt").value_or(s.attempt + 1));
      s.node = d.Str("node").value_or("");
      s.phase.clear();
    } else if (e.type == "task.accepted" || e.type == "task.running") {
      s.state = e.type.substr(5);
    } else if (e.type == "task.preparing") {
      s.state = "preparing";
      s.phase = d.Str("phase").value_or("");
    } else if (e.type == "task.cancel_requested") {
      s.cancel_requested = true;
      s.cancel_reason = d.Str("reason").value_or("");
    } else if (e.type == "task.requeued") {
      s.state = "queued";
      s.cancel_requested = false;
      s.cancel_reason.clear();
    } else if (e.type.rfind("task.", 0) == 0 && IsEndState(e.type.substr(5))) {
      s.state = e.type.substr(5);
    }
  }
  return s;
}

const char* RetryCategory(const std::string& failure) {
  if (failure == "timeout") return "timed_out";
  if (failure == "lost" || failure == "runtime") return "lost";
  return "failed";
}

const char* Blame(const std::string& failure) {
  if (failure == "exit" || failure == "start" || failure == "timeout" || failure == "cancelled") {
    return "task";
  }
  return "infrastructure";
}

TaskDecision DecideReport(const TaskStatus& s, const std::string& node,
                          const protocol::TaskReport& r) {
  TaskDecision d;
  if (!s.exists) {
    d.rejected = "no task " + r.task;
    return d;
  }
  if (r.attempt != s.attempt || node != s.node) {
    d.rejected = "stale attempt: the task is at attempt " + std::to_string(s.attempt) +
                 (s.node.empty() ? "" : " on node '" + s.node + "'") + ", not attempt " +
                 std::to_string(r.attempt) + " on '" + node + "'";
    return d;
  }
  if (!s.AttemptLive()) {
    d.rejected = "attempt " + std::to_string(r.attempt) + " has already ended (" + s.state + ")";
    return d;
  }
  JsonObject o;
  Base(r.task, static_cast<int>(r.attempt), node, o);
  int rank = Rank(r.state);
  if (rank > 0) {
    // Progress: applied only forwards; a new build phase after git is forwards too.
    bool forwards = rank > Rank(s.state) || (r.state == "preparing" && s.state == "preparing" &&
                                             r.phase != s.phase && r.phase == "build");
    if (!forwards) return d;
    if (r.state == "preparing") o.Str("phase", r.phase);
    if (r.state == "running") {
      o.Str("image", r.image)
          .Bool("code_fetched", r.code_fetched)
          .Bool("env_fetched", r.env_fetched)
          .Bool("image_built", r.image_built)
          .Int("git_ms", r.git_ms)
          .Int("build_ms", r.build_ms)
          .Int("prepare_ms", r.prepare_ms);
    }
    d.events.push_back({"task." + r.state, o.Done()});
    return d;
  }
  // The attempt ended on the node.
  d.attempt_ended = true;
  if (r.state == "succeeded") {
    o.Int("exit_code", r.exit_code).Int("run_ms", r.run_ms);
    d.events.push_back({"task.succeeded", o.Done()});
    return d;
  }
  if (r.state == "cancelled") {
    o.Str("reason", s.cancel_requested && !s.cancel_reason.empty() ? s.cancel_reason : r.reason);
    d.events.push_back({"task.cancelled", o.Done()});
    return d;
  }
  std::string failure = r.failure;
  if (r.state == "timed_out") failure = "timeout";
  if (r.state == "lost") failure = "lost";
  if (failure.empty()) failure = "exit";
  o.Str("class", failure)
      .Str("blame", Blame(failure))
      .Str("reason", r.reason)
      .Int("exit_code", r.exit_code)
      .Int("run_ms", r.run_ms);
  std::string type = r.state == "timed_out" ? "task.timed_out"
                     : r.state == "lost"    ? "task.lost"
                                            : "task.failed";
  d.events.push_back({type, o.Done()});
  MaybeRequeue(s, r.task, RetryCategory(failure), d);
  return d;
}

TaskDecision DecideLost(const TaskStatus& s, const std::string& node, int attempt,
                        const std::string& reason) {
  TaskDecision d;
  if (!s.exists || s.attempt != attempt || s.node != node || !s.AttemptLive()) return d;
  d.attempt_ended = true;
  JsonObject o;
  Base(s.task_id, attempt, node, o);
  if (s.cancel_requested) {
    // Nobody will stop it on that node any more; the person wanted it stopped: it is.
    o.Str("reason",
          s.cancel_reason.empty() ? "cancelled; " + reason : s.cancel_reason + " (" + reason + ")");
    d.events.push_back({"task.cancelled", o.Done()});
    return d;
  }
  o.Str("class", "lost")
      .Str("blame", Blame("lost"))
      .Str("reason", reason)
      .Int("exit_code", -1)
      .Int("run_ms", 0);
  d.events.push_back({"task.lost", o.Done()});
  MaybeRequeue(s, s.task_id, "lost", d);
  return d;
}

TaskDecision DecideManualRetry(const TaskStatus& s, const std::string& actor) {
  TaskDecision d;
  if (!s.exists) {
    d.rejected = "no such task";
  } else if (!s.Ended()) {
    d.rejected = "the task has not ended (" + s.state + "); cancel it first";
  } else {
    d.events.push_back({"task.requeued", JsonObject()
                                             .Str("task", s.task_id)
                                             .Int("attempt", s.attempt)
                                             .Int("next_attempt", s.attempt + 1)
                                             .Str("reason", "retried by " + actor)
                                             .Str("by", actor)
                                             .Done()});
  }
  return d;
}

}  // namespace unidesk::core
