#include "projections/registry.h"

#include "projections/audit_projector.h"
#include "projections/node_projector.h"
#include "projections/task_projector.h"

namespace unidesk::projections {

std::vector<std::unique_ptr<core::Projector>> AllProjectors() {
  std::vector<std::unique_ptr<core::Projector>> out;
  out.push_back(std::make_unique<AuditProjector>());
  out.push_back(std::make_unique<NodeProjector>());
  out.push_back(std::make_unique<TaskProjector>());
  return out;
}

}  // namespace unidesk::projections
