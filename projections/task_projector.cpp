#include "projections/task_projector.h"

#include "core/json.h"

namespace unidesk::projections {

namespace {

using Values = std::vector<std::optional<std::string>>;

std::optional<std::string> IntText(std::optional<std::int64_t> v) {
  return v ? std::optional(std::to_string(*v)) : std::nullopt;
}

}  // namespace

std::vector<std::string> TaskProjector::types() const {
  return {"task.submitted", "task.waiting",   "task.assigned", "task.cancel_requested",
          "task.accepted",  "task.preparing", "task.running",  "task.succeeded",
          "task.failed",    "task.timed_out", "task.lost",     "task.cancelled",
          "task.requeued"};
}

void TaskProjector::Apply(const core::RecordedEvent& e, core::RowChanges& out) const {
  if (e.type.rfind("task.", 0) != 0) return;
  core::JsonReader data(e.data_json);
  std::string task = data.Str("task").value_or(e.stream_id.substr(5));
  auto set = [&](std::vector<std::string> columns, Values values) {
    columns.insert(columns.begin(), {"id", "version", "updated_at"});
    values.insert(values.begin(), {task, std::to_string(e.stream_version), e.recorded_at});
    out.Upsert("tasks", {"id"}, std::move(columns), std::move(values));
  };
  if (e.type == "task.submitted") {
    std::string spec = data.Raw("spec").value_or("{}");
    core::JsonReader s(spec);
    core::JsonReader res(s.Raw("resources").value_or("{}"));
    // cpu is a number of cores with up to three decimals; keep the integer millis.
    std::optional<std::string> cpu_millis;
    if (auto cpu = res.Raw("cpu")) {
      cpu_millis = std::to_string(static_cast<std::int64_t>(std::stod(*cpu) * 1000.0 + 0.5));
    }
    auto memory_mb = res.Int("memory_mb");
    set({"name", "state", "priority", "submitted_position", "cpu_millis", "memory_bytes", "gpus",
         "labels", "spec", "submitted_by", "submitted_at", "attempt"},
        {s.Str("name").value_or(""), "queued", IntText(s.Int("priority")).value_or("0"),
         std::to_string(e.position.value), cpu_millis,
         memory_mb ? std::optional(std::to_string(*memory_mb << 20)) : std::nullopt,
         IntText(res.Int("gpus")), s.Raw("labels").value_or("{}"), spec,
         data.Str("submitted_by").value_or(e.metadata.actor), e.recorded_at, "0"});
  } else if (e.type == "task.waiting") {
    set({"waiting_reason"}, {data.Str("reason")});
  } else if (e.type == "task.assigned") {
    set({"state", "attempt", "node", "gpu_indices", "assigned_at", "queued_ms", "waiting_reason"},
        {"assigned", IntText(data.Int("attempt")), data.Str("node"),
         data.Raw("gpu_indices").value_or("[]"), e.recorded_at, IntText(data.Int("queued_ms")),
         std::nullopt});
  } else if (e.type == "task.cancel_requested") {
    // A placed attempt keeps its state until its node stops it; the reason says it is asked.
    if (data.Int("attempt").value_or(0) == 0) {
      set({"state", "cancel_reason"}, {"cancelling", data.Str("reason").value_or("")});
    } else {
      set({"cancel_reason"}, {data.Str("reason").value_or("")});
    }
  } else if (e.type == "task.cancelled") {
    set({"state", "cancel_reason", "finished_at", "waiting_reason", "reason"},
        {"cancelled", data.Str("reason").value_or(""), e.recorded_at, std::nullopt,
         data.Str("reason").value_or("")});
  } else if (e.type == "task.accepted") {
    set({"state", "accepted_at"}, {"accepted", e.recorded_at});
  } else if (e.type == "task.preparing") {
    set({"state", "phase"}, {"preparing", data.Str("phase")});
  } else if (e.type == "task.running") {
    set({"state", "phase", "started_at", "image", "code_fetched", "env_fetched", "image_built",
         "git_ms", "build_ms", "prepare_ms"},
        {"running", std::nullopt, e.recorded_at, data.Str("image"), data.Raw("code_fetched"),
         data.Raw("env_fetched"), data.Raw("image_built"), IntText(data.Int("git_ms")),
         IntText(data.Int("build_ms")), IntText(data.Int("prepare_ms"))});
  } else if (e.type == "task.succeeded") {
    set({"state", "finished_at", "exit_code", "run_ms", "failure_class", "blame", "reason"},
        {"succeeded", e.recorded_at, IntText(data.Int("exit_code")), IntText(data.Int("run_ms")),
         std::nullopt, std::nullopt, std::nullopt});
  } else if (e.type == "task.failed" || e.type == "task.timed_out" || e.type == "task.lost") {
    set({"state", "finished_at", "exit_code", "run_ms", "failure_class", "blame", "reason",
         "phase"},
        {e.type.substr(5), e.recorded_at, IntText(data.Int("exit_code")),
         IntText(data.Int("run_ms")), data.Str("class"), data.Str("blame"), data.Str("reason"),
         std::nullopt});
  } else if (e.type == "task.requeued") {
    // The ended attempt's outcome stays visible (failure_class, reason) until the next one.
    set({"state", "finished_at", "cancel_reason", "waiting_reason"},
        {"queued", std::nullopt, std::nullopt, std::nullopt});
  }
}

}  // namespace unidesk::projections
