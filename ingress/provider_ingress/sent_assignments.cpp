#include "ingress/provider_ingress/sent_assignments.h"

namespace unidesk::ingress {

bool SentAssignments::Claim(const std::string& task, std::int64_t attempt) {
  std::lock_guard<std::mutex> lock(mu_);
  Key key{task, attempt};
  if (!claimed_.insert(key).second) return false;
  order_.push_back(std::move(key));
  if (order_.size() > capacity_) {
    claimed_.erase(order_.front());
    order_.pop_front();
  }
  return true;
}

}  // namespace unidesk::ingress
