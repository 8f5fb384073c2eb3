#include "projections/registry.h"

#include "projections/audit_projector.h"

namespace unidesk::projections {

std::vector<std::unique_ptr<core::Projector>> AllProjectors() {
  std::vector<std::unique_ptr<core::Projector>> out;
  out.push_back(std::make_unique<AuditProjector>());
  return out;
}

}  // namespace unidesk::projections
