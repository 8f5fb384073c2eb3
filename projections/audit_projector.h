#pragma once
// The audit read model: one row per event saying who did what to which subject, when.

#include "core/projection.h"

namespace unidesk::projections {

/// Projects every event into `audit_log` (see docs/audit.md for the questions it answers).
class AuditProjector : public core::Projector {
 public:
  std::string name() const override { return "audit"; }
  std::vector<std::string> tables() const override { return {"audit_log"}; }
  bool reads_data() const override { return false; }  // who, what, which subject: no data
  void Apply(const core::RecordedEvent& event, core::RowChanges& out) const override;
};

}  // namespace unidesk::projections
