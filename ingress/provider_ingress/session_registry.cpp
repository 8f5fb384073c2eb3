#include "ingress/provider_ingress/session_registry.h"

namespace unidesk::ingress {

std::shared_ptr<ProviderSession> SessionRegistry::Put(const std::string& node,
                                                      std::shared_ptr<ProviderSession> s) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = sessions_[node];
  auto previous = slot.lock();
  slot = s;
  return previous == s ? nullptr : previous;
}

void SessionRegistry::Remove(const std::string& node, const ProviderSession* s) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = sessions_.find(node);
  if (it == sessions_.end()) return;
  auto held = it->second.lock();
  if (!held || held.get() == s) sessions_.erase(it);
}

std::shared_ptr<ProviderSession> SessionRegistry::Find(const std::string& node) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = sessions_.find(node);
  return it == sessions_.end() ? nullptr : it->second.lock();
}

std::vector<std::shared_ptr<ProviderSession>> SessionRegistry::All() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::shared_ptr<ProviderSession>> out;
  for (const auto& [node, weak] : sessions_) {
    if (auto s = weak.lock()) out.push_back(s);
  }
  return out;
}

std::size_t SessionRegistry::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return sessions_.size();
}

}  // namespace unidesk::ingress
