#pragma once
// The scheduler's own view of the queue: the tasks waiting for a node (queued, or cancelling
// before placement), kept in memory from the task streams of the log. Pure: the scheduling
// pass (scheduler.h) seeds it from the `tasks` projection at that projection's checkpoint and
// feeds it every task event after it, so a pass never waits for the projector.
//
// It is a hint, not the authority: every decision a pass appends expects the version the view
// holds, so a task that moved on meanwhile (another scheduler copy placed it) is refused by the
// store and never decided twice.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/event.h"
#include "handlers/scheduling_rules.h"

namespace unidesk::handlers {

struct QueuedTask {
  SchedTask task;
  /// The canonical spec of task.submitted: the assignment carries it to the node, so a pass
  /// need not read it again.
  std::string spec_json = "{}";
  std::int64_t version = 0;  // of the task's stream, as the view last saw it
  int attempt = 0;           // attempts made so far
  bool cancelling = false;   // cancel requested before placement: the pass ends it
  std::string cancel_reason;
  std::int64_t submitted_ms = 0;  // epoch milliseconds
  /// False for a task requeued while the view did not hold it: its resources are read from
  /// its `task.submitted` event before the next pass (Unloaded(), Load()).
  bool loaded = true;
};

/// A JSON object of string values ({"gpu": "a100"}); other members are skipped.
std::map<std::string, std::string> LabelsFromJson(const std::string& json);

/// The resources, labels and priority of a canonical task spec (the `spec` of task.submitted).
SchedTask SchedTaskFromSpec(const std::string& id, const std::string& spec_json);

/// "2026-11-22T08:00:00.123456Z" (RecordedEvent::recorded_at) as epoch milliseconds; 0 when
/// it does not parse.
std::int64_t EpochMillis(const std::string& recorded_at);

class TaskQueue {
 public:
  /// A row of the projection (or a loaded submission). Replaces what the view holds.
  void Add(QueuedTask t);
  /// One event of a `task-` stream, as the log delivers it, in order; events at or below the
  /// version held are ignored.
  void Apply(const core::RecordedEvent& e);
  /// An event this process committed, before the log delivers it (the pass's own decisions, a
  /// submission handed over in-process). A task it removes from the queue leaves a tombstone
  /// until the log reaches that version, so the log's older copies of the task's events (its
  /// task.submitted) do not bring it back.
  void ApplyAhead(const core::RecordedEvent& e);
  /// Fills in a task that was requeued while the view did not hold it.
  void Load(const std::string& id, const std::string& spec_json, std::int64_t submitted_position,
            std::int64_t submitted_ms);

  /// Tasks whose submission must be read before a pass.
  std::vector<std::string> Unloaded() const;
  /// The loaded tasks, higher priority first, FIFO within a priority, at most `limit`.
  std::vector<const QueuedTask*> Head(std::size_t limit) const;
  const QueuedTask* Find(const std::string& id) const;
  std::size_t size() const { return tasks_.size(); }
  std::size_t tombstones() const { return tombstones_.size(); }

  /// Whether something a pass could act on changed since the last TakeChanged().
  bool TakeChanged();

 private:
  void ApplyOne(const core::RecordedEvent& e, bool ahead);

  std::map<std::string, QueuedTask> tasks_;
  /// Tasks removed by an event applied ahead of the log: the version that removed them.
  std::map<std::string, std::int64_t> tombstones_;
  bool changed_ = false;
};

}  // namespace unidesk::handlers
