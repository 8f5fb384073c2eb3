#pragma once
// The `tasks` read model: one row per task with its state, placement and why it waits.

#include "core/projection.h"

namespace unidesk::projections {

/// Projects task.* events into `tasks` (docs/events.md lists them). `version` is the task
/// stream's version last applied: writers that decide from this row append with it as the
/// expected version, so a lagging row can delay a decision but never make a wrong one.
class TaskProjector : public core::Projector {
 public:
  std::string name() const override { return "tasks"; }
  std::vector<std::string> tables() const override { return {"tasks"}; }
  /// Every task.* type but `task.log`: output chunks, up to 8 KiB each and most of a busy
  /// log's events, change no row, so the projector never reads them.
  std::vector<std::string> types() const override;
  void Apply(const core::RecordedEvent& event, core::RowChanges& out) const override;
};

}  // namespace unidesk::projections
