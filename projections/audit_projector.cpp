#include "projections/audit_projector.h"

namespace unidesk::projections {

void AuditProjector::Apply(const core::RecordedEvent& e, core::RowChanges& out) const {
  static const std::vector<std::string> kColumns = {"position",     "recorded_at", "actor",
                                                    "action",       "subject",     "correlation_id",
                                                    "causation_id", "source",      "event_id"};
  out.Insert("audit_log", kColumns,
             {std::to_string(e.position.value), e.recorded_at,
              e.metadata.actor.empty() ? "unknown" : e.metadata.actor, e.type, e.stream_id,
              e.metadata.correlation_id, e.metadata.causation_id, e.metadata.source, e.event_id});
}

}  // namespace unidesk::projections
