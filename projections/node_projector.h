#pragma once
// The `nodes` read model: one row per registered node with its status, resources and session.

#include "core/projection.h"

namespace unidesk::projections {

/// Projects node.* events into `nodes` (docs/events.md lists them). The last heartbeat is not
/// here: heartbeats are not events; readers join `node_liveness` for it.
class NodeProjector : public core::Projector {
 public:
  std::string name() const override { return "nodes"; }
  std::vector<std::string> tables() const override { return {"nodes"}; }
  std::vector<std::string> types() const override { return {"node."}; }
  void Apply(const core::RecordedEvent& event, core::RowChanges& out) const override;
};

}  // namespace unidesk::projections
