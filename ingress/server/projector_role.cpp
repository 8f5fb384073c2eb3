#include "ingress/server/projector_role.h"

#include "projections/registry.h"

namespace unidesk::ingress {

namespace {
constexpr std::chrono::milliseconds kProjectorStepInterval{50};
}  // namespace

ProjectorRole::ProjectorRole(const std::string& conninfo, const core::EventCatalogue& catalogue,
                             core::LoggerPtr log)
    : projectors_(projections::AllProjectors()) {
  for (const auto& p : projectors_) {
    handlers_.push_back(std::make_unique<core::ProjectionHandler>(*p));
    core::SubscriptionOptions options;
    options.name = p->name();
    options.conninfo = conninfo;
    options.types = p->types();
    options.data = p->reads_data() ? core::EventData::kRead : core::EventData::kSkip;
    // Read models may trail by up to 50 ms (people read them); the scheduler and dispatch do not
    // wait for them, and fewer, larger batches leave the CPU to what they do wait for.
    options.min_step_interval = kProjectorStepInterval;
    subscriptions_.push_back(
        std::make_unique<core::Subscription>(options, catalogue, *handlers_.back(), log));
  }
}

void ProjectorRole::Start() {
  for (auto& s : subscriptions_) s->Start();
}

void ProjectorRole::Stop() {
  for (auto& s : subscriptions_) s->Stop();
}

}  // namespace unidesk::ingress
