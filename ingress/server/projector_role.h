#pragma once
// The `projector` role: one subscription per projector of this build.

#include <memory>
#include <vector>

#include "core/projection.h"
#include "core/subscription.h"

namespace unidesk::ingress {

class ProjectorRole {
 public:
  ProjectorRole(const std::string& conninfo, const core::EventCatalogue& catalogue,
                core::LoggerPtr log);
  void Start();
  /// Stops every subscription (each finishes its batch in flight).
  void Stop();

 private:
  std::vector<std::unique_ptr<core::Projector>> projectors_;
  std::vector<std::unique_ptr<core::ProjectionHandler>> handlers_;
  std::vector<std::unique_ptr<core::Subscription>> subscriptions_;
};

}  // namespace unidesk::ingress
